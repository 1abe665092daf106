//! Checkpoint access with errors that name the file and the exact tensor key.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{EncoderError, Result};

/// Where a model's weights live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    /// One or more safetensors files (read tensor by tensor, not memory-mapped).
    Safetensors(Vec<PathBuf>),
    /// A PyTorch `pytorch_model.bin` (zip pickle format).
    Pytorch(PathBuf),
}

impl WeightFiles {
    /// Find the weights in a model directory: `model.safetensors`, a sharded
    /// `model.safetensors.index.json`, or else `pytorch_model.bin`.
    pub fn find(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        if single.exists() {
            EncoderError::check_regular(&single)?;
            return Ok(WeightFiles::Safetensors(vec![single]));
        }
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let text = EncoderError::read_text(&index)?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| EncoderError::malformed(&index, e))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    EncoderError::malformed(&index, "missing object field weight_map")
                })?;
            let mut files: Vec<PathBuf> = Vec::with_capacity(map.len().min(1024));
            for (tensor, file) in map {
                let name = file.as_str().ok_or_else(|| {
                    EncoderError::malformed(
                        &index,
                        format!("weight_map[{tensor:?}] is not a file name"),
                    )
                })?;
                // Shards live in the model directory: a path that climbs out of it (or is
                // absolute) would read files the caller never named.
                let inside = !name.is_empty()
                    && Path::new(name)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !inside {
                    return Err(EncoderError::malformed(
                        &index,
                        format!(
                            "weight_map[{tensor:?}] = {name:?} is not a file inside {}",
                            dir.display()
                        ),
                    ));
                }
                files.push(dir.join(name));
            }
            files.sort();
            files.dedup();
            if files.is_empty() {
                return Err(EncoderError::malformed(&index, "weight_map is empty"));
            }
            for f in &files {
                EncoderError::check_regular(f)?;
            }
            return Ok(WeightFiles::Safetensors(files));
        }
        let bin = dir.join("pytorch_model.bin");
        if bin.exists() {
            EncoderError::check_regular(&bin)?;
            return Ok(WeightFiles::Pytorch(bin));
        }
        Err(EncoderError::MissingFile {
            path: single,
            what: format!(
                "no model.safetensors, model.safetensors.index.json or pytorch_model.bin in {}",
                dir.display()
            ),
        })
    }

    /// A short description of the weight files for messages.
    pub fn display(&self) -> PathBuf {
        match self {
            WeightFiles::Safetensors(f) if f.len() == 1 => f[0].clone(),
            WeightFiles::Safetensors(f) => f
                .first()
                .and_then(|p| p.parent())
                .map(|p| p.join("model.safetensors.index.json"))
                .unwrap_or_default(),
            WeightFiles::Pytorch(p) => p.clone(),
        }
    }
}

/// A view into a checkpoint under a key prefix (`bert.encoder.layer.3`, ...).
#[derive(Clone)]
pub struct Weights {
    vb: VarBuilder<'static>,
    file: PathBuf,
}

impl Weights {
    /// Open the weight files for reading tensors as `dtype` on `device`.
    pub fn load(files: &WeightFiles, dtype: DType, device: &Device) -> Result<Self> {
        let file = files.display();
        let vb = match files {
            WeightFiles::Safetensors(paths) => {
                for p in paths {
                    if !p.exists() {
                        return Err(EncoderError::MissingFile {
                            path: p.clone(),
                            what: "weight shard listed in the index is missing".into(),
                        });
                    }
                }
                let files = crate::safetensors::SafetensorsFiles::open(paths)?;
                Ok(VarBuilder::from_backend(
                    Box::new(files),
                    dtype,
                    device.clone(),
                ))
            }
            WeightFiles::Pytorch(p) => VarBuilder::from_pth(p, dtype, device),
        }
        .map_err(|e| EncoderError::Weights {
            path: file.clone(),
            message: e.to_string(),
        })?;
        Ok(Self { vb, file })
    }

    /// Build from in-memory tensors (tests).
    pub fn from_tensors(
        tensors: std::collections::HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Self {
            vb: VarBuilder::from_tensors(tensors, dtype, device),
            file: PathBuf::from("<memory>"),
        }
    }

    /// Descend into a sub-module.
    pub fn pp(&self, name: impl ToString) -> Self {
        Self {
            vb: self.vb.pp(name),
            file: self.file.clone(),
        }
    }

    /// The tensor dtype models are loaded in.
    pub fn dtype(&self) -> DType {
        self.vb.dtype()
    }

    /// The device tensors are loaded on.
    pub fn device(&self) -> &Device {
        self.vb.device()
    }

    /// The weights file, for messages.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn full_name(&self, name: &str) -> String {
        let prefix = self.vb.prefix();
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    }

    /// True if the checkpoint holds `name` under this prefix (old `gamma`/`beta` names count).
    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    fn resolve(&self, name: &str) -> Option<String> {
        if self.vb.contains_tensor(name) {
            return Some(name.to_string());
        }
        // Checkpoints from 2019-2020 name LayerNorm parameters gamma/beta; transformers
        // renames them on load, so do we.
        let legacy = if let Some(stem) = name.strip_suffix("LayerNorm.weight") {
            Some(format!("{stem}LayerNorm.gamma"))
        } else {
            name.strip_suffix("LayerNorm.bias")
                .map(|stem| format!("{stem}LayerNorm.beta"))
        };
        legacy.filter(|l| self.vb.contains_tensor(l))
    }

    /// Read a tensor and check its shape.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        let key = self
            .resolve(name)
            .ok_or_else(|| EncoderError::MissingTensor {
                name: self.full_name(name),
                path: self.file.clone(),
            })?;
        let t = self
            .vb
            .get_unchecked(&key)
            .map_err(|e| EncoderError::Weights {
                path: self.file.clone(),
                message: format!("tensor {}: {e}", self.full_name(&key)),
            })?;
        if t.dims() != shape {
            return Err(EncoderError::ShapeMismatch {
                name: self.full_name(&key),
                path: self.file.clone(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        Ok(t)
    }

    /// Read a tensor that may be absent (biases switched off in the config).
    pub fn get_opt(&self, shape: &[usize], name: &str) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(shape, name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The shape of a tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        let key = self.resolve(name)?;
        self.vb.get_unchecked(&key).ok().map(|t| t.dims().to_vec())
    }
}
