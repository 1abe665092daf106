//! Safetensors checkpoints read tensor by tensor with plain file reads.
//!
//! candle's own loader memory-maps the files. The mapped pages count in the process's resident
//! memory next to the tensors copied out of them until the map is dropped after loading, so
//! peak memory was about twice the model (1,173 MiB for ModernBERT-base, whose f32 weights are
//! 571 MiB). Reading each tensor into its own buffer keeps the peak at the model plus one
//! tensor, and a file truncated or rewritten under us is a read error naming the tensor instead
//! of a `SIGBUS`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use safetensors::tensor::{Dtype, Metadata};

use crate::error::{EncoderError, Result};

/// The safetensors format's limit on the JSON header.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Where one tensor's bytes are.
struct Entry {
    file: Arc<PathBuf>,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte offset in the file.
    start: u64,
    len: u64,
}

/// The tensors of one or more safetensors files (the shards of one checkpoint).
pub(crate) struct SafetensorsFiles {
    tensors: HashMap<String, Entry>,
}

impl SafetensorsFiles {
    /// Read and check the headers of `paths`; tensor data is read on demand.
    pub(crate) fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut tensors = HashMap::new();
        for path in paths {
            read_header(path, &mut tensors)?;
        }
        Ok(Self { tensors })
    }

    fn read(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.into() }.bt())?;
        let stored = DType::try_from(e.dtype)?;
        // The header's parser checked that the shape's size matches the byte span.
        let numel: usize = e.shape.iter().product();
        let io = |err: std::io::Error| {
            candle_core::Error::Msg(format!(
                "reading {} bytes at offset {} of {}: {err}",
                e.len,
                e.start,
                e.file.display()
            ))
        };
        let mut file = File::open(e.file.as_path()).map_err(io)?;
        file.seek(SeekFrom::Start(e.start)).map_err(io)?;
        let tensor = if stored == DType::F32 && cfg!(target_endian = "little") {
            // Straight into the tensor's own buffer: no second copy.
            let mut values = vec![0f32; numel];
            // SAFETY: a byte view of initialised f32s; every bit pattern is a valid f32, and
            // safetensors stores little-endian values, the host's order here.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), numel * 4)
            };
            file.read_exact(bytes).map_err(io)?;
            Tensor::from_vec(values, e.shape.as_slice(), &Device::Cpu)?
        } else {
            let mut bytes = vec![0u8; e.len as usize];
            file.read_exact(&mut bytes).map_err(io)?;
            Tensor::from_raw_buffer(&bytes, stored, &e.shape, &Device::Cpu)?
        };
        tensor.to_dtype(dtype)?.to_device(device)
    }
}

fn read_header(path: &Path, tensors: &mut HashMap<String, Entry>) -> Result<()> {
    let bad = |message: String| EncoderError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let io = |e: std::io::Error| EncoderError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(|_| {
        bad(format!(
            "{file_len} bytes is too short for a safetensors file"
        ))
    })?;
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_BYTES || header_len > file_len.saturating_sub(8) {
        return Err(bad(format!(
            "header length {header_len} does not fit the file ({file_len} bytes) or the format's \
             {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    // The format's own parser: known dtypes, offsets contiguous from 0, each span the size of
    // its shape and dtype.
    let metadata: Metadata = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("header is not valid safetensors JSON: {e}")))?;
    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    let file_name = Arc::new(path.to_path_buf());
    for (name, info) in metadata.tensors() {
        let (begin, end) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
        if end > data_len {
            return Err(bad(format!(
                "tensor {name}: data_offsets [{begin}, {end}] are outside the {data_len} data bytes"
            )));
        }
        tensors.insert(
            name,
            Entry {
                file: Arc::clone(&file_name),
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: data_start + begin,
                len: end - begin,
            },
        );
    }
    Ok(())
}

impl candle_nn::var_builder::SimpleBackend for SafetensorsFiles {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.read(name, dtype, device)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.read(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, tensors: &[(&str, Tensor)]) -> PathBuf {
        let path = dir.join("model.safetensors");
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, &path).unwrap();
        path
    }

    #[test]
    fn reads_what_candle_wrote_in_every_float_dtype() {
        let tmp = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (3, 5), &dev).unwrap();
        let path = write(
            tmp.path(),
            &[
                ("a", a.clone()),
                ("h", a.to_dtype(DType::F16).unwrap()),
                ("b", a.to_dtype(DType::BF16).unwrap()),
                ("d", a.to_dtype(DType::F64).unwrap()),
                ("i", Tensor::new(&[1i64, -2, 3], &dev).unwrap()),
            ],
        );
        let files = SafetensorsFiles::open(&[path]).unwrap();
        let reference =
            candle_core::safetensors::load(tmp.path().join("model.safetensors"), &dev).unwrap();
        for name in ["a", "h", "b", "d", "i"] {
            let want = &reference[name];
            let got = files.read(name, want.dtype(), &dev).unwrap();
            assert_eq!(got.dtype(), want.dtype(), "{name}");
            assert_eq!(got.dims(), want.dims(), "{name}");
            let same = got
                .to_dtype(DType::F64)
                .unwrap()
                .eq(&want.to_dtype(DType::F64).unwrap())
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(same, 1.0, "{name}");
        }
        // Converted on read, like candle's loader.
        let b32 = files.read("b", DType::F32, &dev).unwrap();
        assert_eq!(b32.dtype(), DType::F32);
        assert!(!files.tensors.contains_key("missing"));
        assert!(files.read("missing", DType::F32, &dev).is_err());
    }

    #[test]
    fn bad_headers_and_truncated_data_are_errors_naming_the_file_or_tensor() {
        let tmp = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let t = Tensor::randn(0f32, 1.0, (64, 64), &dev).unwrap();
        let path = write(tmp.path(), &[("w", t)]);
        let full = std::fs::read(&path).unwrap();
        // Cut inside the data: the header still opens, the read fails with the tensor's span.
        std::fs::write(&path, &full[..full.len() - 100]).unwrap();
        let err = SafetensorsFiles::open(std::slice::from_ref(&path))
            .err()
            .expect("offsets past the end");
        assert!(err.to_string().contains("outside"), "{err}");
        // A header length larger than the file.
        let mut lying = full.clone();
        lying[..8].copy_from_slice(&(full.len() as u64).to_le_bytes());
        std::fs::write(&path, &lying).unwrap();
        let err = SafetensorsFiles::open(std::slice::from_ref(&path))
            .err()
            .unwrap();
        assert!(err.to_string().contains("model.safetensors"), "{err}");
        // Too short, and not JSON.
        std::fs::write(&path, b"abc").unwrap();
        assert!(SafetensorsFiles::open(std::slice::from_ref(&path)).is_err());
        let mut junk = 4u64.to_le_bytes().to_vec();
        junk.extend_from_slice(b"nope");
        std::fs::write(&path, &junk).unwrap();
        let err = SafetensorsFiles::open(std::slice::from_ref(&path))
            .err()
            .unwrap();
        assert!(err.to_string().contains("JSON"), "{err}");
        // A file shortened after its header was read: a read error, not a crash.
        std::fs::write(&path, &full).unwrap();
        let files = SafetensorsFiles::open(std::slice::from_ref(&path)).unwrap();
        std::fs::write(&path, &full[..full.len() - 100]).unwrap();
        let err = files.read("w", DType::F32, &dev).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("reading"),
            "{err}"
        );
    }
}
