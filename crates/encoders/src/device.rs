//! Device and dtype selection (`--device auto|cpu|cuda:N`, `--dtype f32|f16|bf16`).

use std::str::FromStr;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::{EncoderError, Result};

/// Where to run a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeviceSpec {
    /// CUDA device 0 when compiled in and present, otherwise the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device `n`.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = EncoderError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| EncoderError::InvalidOption {
                    name: "device".into(),
                    value: other.into(),
                    reason: "expected auto, cpu, cuda or cuda:N".into(),
                }),
        }
    }
}

impl DeviceSpec {
    /// Open the device.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => open_cuda(n),
            DeviceSpec::Auto => match open_cuda(0) {
                Ok(d) => Ok(d),
                Err(e) => {
                    // A CUDA build without a usable GPU deserves a visible line; a CPU-only
                    // build runs on the CPU by design.
                    if cfg!(feature = "cuda") {
                        tracing::warn!("device auto: using the CPU ({e})");
                    } else {
                        tracing::info!("device auto: using the CPU ({e})");
                    }
                    Ok(Device::Cpu)
                }
            },
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> Result<Device> {
    Device::new_cuda(n).map_err(|e| EncoderError::Device {
        requested: format!("cuda:{n}"),
        // candle appends a backtrace to driver errors; the first line says what failed.
        reason: e.to_string().lines().next().unwrap_or_default().to_string(),
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> Result<Device> {
    Err(EncoderError::Device {
        requested: format!("cuda:{n}"),
        reason: "this build has no CUDA support (rebuild with --features cuda)".into(),
    })
}

/// Compute precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl FromStr for Precision {
    type Err = EncoderError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(Precision::F32),
            "f16" | "float16" | "fp16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(EncoderError::InvalidOption {
                name: "dtype".into(),
                value: other.into(),
                reason: "expected f32, f16 or bf16".into(),
            }),
        }
    }
}

impl Precision {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// Default for a device: bf16 on CUDA (f16 before compute capability 8.0, where candle
    /// has no bf16 kernels: T4, V100), f32 on the CPU.
    pub fn default_for(device: &Device) -> Self {
        if !device.is_cuda() {
            return Precision::F32;
        }
        match compute_capability(device) {
            Some((major, _)) if major < 8 => {
                tracing::info!(
                    major,
                    "no bf16 kernels before compute capability 8.0: using f16"
                );
                Precision::F16
            }
            _ => Precision::Bf16,
        }
    }
}

/// A dtype as transformers names it: `float32`, `bfloat16`, `float16` (others in candle's
/// words).
pub fn dtype_name(dtype: DType) -> String {
    match dtype {
        DType::F32 => "float32".into(),
        DType::BF16 => "bfloat16".into(),
        DType::F16 => "float16".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A device as `--device` names it: `cpu` or `cuda:N` (`metal:N` on Apple GPUs).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Peak memory in use on a device, sampled with [`sample`](Self::sample): on CUDA the
/// device's `total - free` (so it includes the CUDA context and other processes); the CPU
/// reports nothing here (use the process's peak RSS).
#[derive(Debug, Clone)]
pub struct DeviceMemory {
    device: Device,
    peak: Option<u64>,
}

impl DeviceMemory {
    /// Start tracking `device`, taking a first sample.
    pub fn new(device: &Device) -> Self {
        let mut m = Self {
            device: device.clone(),
            peak: None,
        };
        m.sample();
        m
    }

    /// Read the memory in use now and keep the maximum.
    pub fn sample(&mut self) {
        if let Some(used) = used_bytes(&self.device) {
            self.peak = Some(self.peak.map_or(used, |p| p.max(used)));
        }
    }

    /// The largest sample, in bytes; `None` on devices that cannot report it.
    pub fn peak_bytes(&self) -> Option<u64> {
        self.peak
    }
}

/// `(major, minor)` compute capability of a CUDA device.
fn compute_capability(device: &Device) -> Option<(i32, i32)> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d.cuda_stream().context().compute_capability().ok(),
        _ => None,
    }
}

fn used_bytes(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
            Some(total.saturating_sub(free) as u64)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_devices() {
        assert_eq!("cuda:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(1));
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!(DeviceSpec::Auto.open().is_ok());
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert!("int8".parse::<Precision>().is_err());
    }
}
