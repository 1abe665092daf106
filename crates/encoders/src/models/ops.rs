//! The small value types the kernels and the layers share: hidden activations and rotary
//! tables. A leaf of `models`: the backends, attention and the bf16 GEMM read them without
//! depending on the layers built over those backends.

use candle_core::{DType, Device, Tensor};

use std::path::Path;

use crate::error::{EncoderError, Result};

type CResult<T> = candle_core::Result<T>;

/// Hidden activations named in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU: transformers' `gelu`.
    Gelu,
    /// Tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`.
    GeluTanh,
    Relu,
    Silu,
    Tanh,
}

impl Activation {
    pub(crate) fn parse(name: &str, field: &str, path: &Path) -> Result<Self> {
        match name {
            "gelu" | "gelu_python" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            "tanh" => Ok(Activation::Tanh),
            other => Err(EncoderError::InvalidConfig {
                path: path.to_path_buf(),
                field: field.into(),
                value: other.into(),
                reason: "supported: gelu, gelu_python, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, swish, tanh".into(),
            }),
        }
    }

    /// Apply with candle's ops (any device and dtype).
    pub(crate) fn apply(&self, xs: &Tensor) -> CResult<Tensor> {
        match self {
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
            Activation::Silu => xs.silu(),
            Activation::Tanh => xs.tanh(),
        }
    }
}

/// Precomputed rotary tables for one base, `[max_positions, head_dim / 2]` in f32 (what the
/// CPU kernels read) and in the activation dtype (what candle's `rope_thd` reads).
pub(crate) struct Rope {
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
    cos_act: Tensor,
    sin_act: Tensor,
}

/// The most positions a RoPE table is built for (ModernBERT uses 8,192, Qwen3 40,960).
pub(crate) const MAX_ROPE_POSITIONS: usize = 1 << 20;

impl Rope {
    /// Computed in f32 exactly as transformers does (`inv_freq` then `pos * inv_freq`).
    pub(crate) fn new(
        theta: f64,
        head_dim: usize,
        max_pos: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let base = theta as f32;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0f32 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for &f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (max_pos, half), device)?;
        let sin = Tensor::from_vec(sin, (max_pos, half), device)?;
        Ok(Self {
            cos_act: cos.to_dtype(dtype)?,
            sin_act: sin.to_dtype(dtype)?,
            cos,
            sin,
        })
    }

    /// Rotate packed `[n, heads, head_dim]` (rotate-half convention) by each token's
    /// position, with candle's ops.
    pub(crate) fn rotate(&self, xs: &Tensor, positions: &Tensor) -> CResult<Tensor> {
        let (n, h, d) = xs.dims3()?;
        let cos = self.cos_act.index_select(positions, 0)?;
        let sin = self.sin_act.index_select(positions, 0)?;
        candle_nn::rotary_emb::rope_thd(&xs.reshape((1, n, h, d))?, &cos, &sin)?.reshape((n, h, d))
    }
}
