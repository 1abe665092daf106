//! The layers every architecture is built from, each with its own `load` and `forward`.
//!
//! A layer is generic over the [`Backend`] the loader picked for the model's device and
//! dtype, so the kernels of a forward pass are fixed when the model loads: nothing chooses a
//! code path per call.

use std::marker::PhantomData;
use std::path::Path;

use candle_core::{DType, Tensor};

use super::backend::Backend;
pub use super::ops::Activation;
pub(crate) use super::ops::{Rope, MAX_ROPE_POSITIONS};
use crate::error::{EncoderError, Result};
use crate::weights::Weights;

type CResult<T> = candle_core::Result<T>;

/// `nn.Linear` (`y = x W^T + b`) in the layout of backend `B`'s kernel.
pub(crate) struct Linear<B: Backend> {
    params: B::Linear,
}

impl<B: Backend> Linear<B> {
    /// Load `weight` (`[out, in]`) and, if `bias`, `bias` from `w`.
    pub(crate) fn load(w: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&[out_dim, in_dim], "weight")?;
        let bias = if bias {
            Some(w.get(&[out_dim], "bias")?)
        } else {
            None
        };
        Self::from_tensors(weight, bias)
    }

    /// Several linear layers of the same input fused into one (their outputs side by side):
    /// BERT's query/key/value, Qwen's q/k/v and gate/up projections. `parts` are
    /// `(weights, out_dim)`; biases are loaded when `bias`.
    pub(crate) fn load_fused(
        parts: &[(Weights, usize)],
        in_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        for (w, out_dim) in parts {
            weights.push(w.get(&[*out_dim, in_dim], "weight")?);
            if bias {
                biases.push(w.get(&[*out_dim], "bias")?);
            }
        }
        let weight = Tensor::cat(&weights, 0)?;
        let bias = if bias {
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        Self::from_tensors(weight, bias)
    }

    pub(crate) fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            params: B::prepare_linear(weight, bias)?,
        })
    }

    /// `act(x W^T + b + residual)` for `x: [n, in]`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Option<Activation>,
    ) -> CResult<Tensor> {
        B::linear(&self.params, x, residual, act)
    }
}

/// `nn.LayerNorm` with an optional bias (ModernBERT's `norm_bias=false`).
pub(crate) struct LayerNorm<B: Backend> {
    weight: Tensor,
    bias: Option<Tensor>,
    eps: f32,
    backend: PhantomData<B>,
}

impl<B: Backend> LayerNorm<B> {
    pub(crate) fn load(w: &Weights, dim: usize, bias: bool, eps: f64) -> Result<Self> {
        let weight = B::prepare_norm(w.get(&[dim], "weight")?)?;
        let bias = if bias {
            Some(B::prepare_norm(w.get(&[dim], "bias")?)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
            backend: PhantomData,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        B::layer_norm(x, &self.weight, self.bias.as_ref(), self.eps)
    }
}

/// `RMSNorm` as Qwen2/Qwen3 write it: `x / sqrt(mean(x^2) + eps) * weight`, computed in f32.
pub(crate) struct RmsNorm<B: Backend> {
    pub(crate) weight: Tensor,
    pub(crate) eps: f32,
    backend: PhantomData<B>,
}

impl<B: Backend> RmsNorm<B> {
    pub(crate) fn load(w: &Weights, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: B::prepare_norm(w.get(&[dim], "weight")?)?,
            eps: eps as f32,
            backend: PhantomData,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        B::rms_norm(x, &self.weight, self.eps)
    }
}

/// An embedding table in the activation dtype of backend `B`.
pub(crate) struct Embedding<B: Backend> {
    table: Tensor,
    backend: PhantomData<B>,
}

impl<B: Backend> Embedding<B> {
    pub(crate) fn load(w: &Weights, rows: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            table: B::prepare_activations(w.get(&[rows, dim], "weight")?)?,
            backend: PhantomData,
        })
    }

    /// Rows of `ids` (`[n]` u32): `[n, dim]`.
    pub(crate) fn forward(&self, ids: &Tensor) -> CResult<Tensor> {
        self.table.index_select(ids, 0)
    }

    /// The table (for tied output projections).
    pub(crate) fn table(&self) -> &Tensor {
        &self.table
    }
}

/// A small linear layer of a head, run with candle's ops in f32 (heads see one row per
/// sequence). Under a backend that computes like a bf16 framework (`Backend::ROUND_BF16`) its
/// weights, inputs and outputs are rounded to bf16 values, as that framework stores them.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
    bf16: bool,
}

/// `t` in f32, its values rounded to bf16 when `bf16`.
fn as_f32(t: &Tensor, bf16: bool) -> CResult<Tensor> {
    if bf16 {
        t.to_dtype(DType::BF16)?.to_dtype(DType::F32)
    } else {
        t.to_dtype(DType::F32)
    }
}

impl Dense {
    pub(crate) fn load<B: Backend>(
        w: &Weights,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = w.get(&[out_dim, in_dim], "weight")?;
        let bias = if bias {
            Some(w.get(&[out_dim], "bias")?)
        } else {
            None
        };
        Self::new::<B>(weight, bias)
    }

    pub(crate) fn new<B: Backend>(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            weight: as_f32(&weight, B::ROUND_BF16)?,
            bias: bias.map(|b| as_f32(&b, B::ROUND_BF16)).transpose()?,
            bf16: B::ROUND_BF16,
        })
    }

    /// `x W^T + b` for `x: [n, in]` (any dtype; the result is f32).
    pub(crate) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let mut ys = as_f32(x, self.bf16)?.matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            ys = ys.broadcast_add(b)?;
        }
        as_f32(&ys, self.bf16)
    }
}

/// `nn.LayerNorm` of a head, with candle's op in f32 (rounded like [`Dense`]).
#[derive(Debug, Clone)]
pub(crate) struct DenseNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
    bf16: bool,
}

impl DenseNorm {
    pub(crate) fn load<B: Backend>(w: &Weights, dim: usize, bias: bool, eps: f64) -> Result<Self> {
        let weight = as_f32(&w.get(&[dim], "weight")?, B::ROUND_BF16)?;
        let bias = if bias {
            as_f32(&w.get(&[dim], "bias")?, B::ROUND_BF16)?
        } else {
            Tensor::zeros(dim, DType::F32, weight.device())?
        };
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
            bf16: B::ROUND_BF16,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let y =
            candle_nn::ops::layer_norm(&as_f32(x, self.bf16)?, &self.weight, &self.bias, self.eps)?;
        as_f32(&y, self.bf16)
    }
}

/// Load a `[num_labels, hidden]` classifier, checking the label count against the config.
pub(crate) fn load_classifier<B: Backend>(
    w: &Weights,
    name: &str,
    hidden: usize,
    num_labels: usize,
    config_path: &Path,
) -> Result<Dense> {
    let key = format!("{name}.weight");
    if let Some(shape) = w.shape_of(&key) {
        if shape.len() == 2 && shape[1] == hidden && shape[0] != num_labels {
            return Err(EncoderError::LabelCountMismatch {
                config: config_path.to_path_buf(),
                config_labels: num_labels,
                tensor: key,
                weights: w.file().to_path_buf(),
                tensor_labels: shape[0],
            });
        }
    }
    // transformers builds every classifier as `nn.Linear(hidden, num_labels)`. A checkpoint
    // without its bias loads there with the bias initialised to zero, so it is scored the
    // same way here, with a warning.
    let w = w.pp(name);
    let weight = w.get(&[num_labels, hidden], "weight")?;
    let bias = w.get_opt(&[num_labels], "bias")?;
    if bias.is_none() {
        tracing::warn!(
            weights = %w.file().display(),
            tensor = %format!("{name}.bias"),
            "the checkpoint has no classifier bias: scoring with a zero bias, as transformers does"
        );
    }
    Dense::new::<B>(weight, bias)
}

/// The largest dimension a config may give (hidden, intermediate, vocabulary sizes): far
/// above any real model, and small enough that products of two or three never overflow.
const MAX_DIM: usize = 1 << 24;

/// Check the sizes in `dims` (`(field, value)` from `path`) before any shape or buffer is
/// computed from them: each between 1 and [`MAX_DIM`].
pub(crate) fn check_dims(path: &Path, dims: &[(&str, usize)]) -> Result<()> {
    for &(field, value) in dims {
        if value == 0 || value > MAX_DIM {
            return Err(EncoderError::InvalidConfig {
                path: path.to_path_buf(),
                field: field.into(),
                value: value.to_string(),
                reason: format!("must be between 1 and {MAX_DIM}"),
            });
        }
    }
    Ok(())
}

/// Check that `heads` divides `hidden` and return the head size (even when `even`, as RoPE
/// needs).
pub(crate) fn head_size(path: &Path, hidden: usize, heads: usize, even: bool) -> Result<usize> {
    let invalid = |reason: String| EncoderError::InvalidConfig {
        path: path.to_path_buf(),
        field: "num_attention_heads".into(),
        value: heads.to_string(),
        reason,
    };
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(invalid(format!("must divide hidden_size {hidden}")));
    }
    let d = hidden / heads;
    if even && !d.is_multiple_of(2) {
        return Err(invalid(format!(
            "gives an odd head size {d} (hidden_size {hidden}); RoPE needs an even one"
        )));
    }
    Ok(d)
}

/// The most layers a config may ask for (no model has close to this many).
const MAX_LAYERS: usize = 4_096;

/// Check `num_hidden_layers` (`n`, from `path`) against the checkpoint before anything is
/// sized by it: `layer(i)` names a tensor every layer `i` has. Every layer the config names
/// must be there, and no more: a config of fewer layers than the checkpoint holds would run a
/// truncated model without a word.
pub(crate) fn check_layer_count(
    w: &Weights,
    n: usize,
    layer: impl Fn(usize) -> String,
    path: &Path,
) -> Result<()> {
    let held = || {
        (0..MAX_LAYERS)
            .take_while(|&i| w.contains(&layer(i)))
            .count()
    };
    let err = |reason: String| EncoderError::InvalidConfig {
        path: path.to_path_buf(),
        field: "num_hidden_layers".into(),
        value: n.to_string(),
        reason,
    };
    if n == 0 {
        return Err(err("must be at least 1".into()));
    }
    if n > MAX_LAYERS || !w.contains(&layer(n - 1)) {
        return Err(err(format!(
            "the checkpoint {} holds {} layers (no {})",
            w.file().display(),
            held(),
            layer(n.min(MAX_LAYERS) - 1)
        )));
    }
    if w.contains(&layer(n)) {
        return Err(err(format!(
            "the checkpoint {} holds {} layers: the model would run truncated to the first {n}",
            w.file().display(),
            held()
        )));
    }
    Ok(())
}

/// Rows per block of the feed-forward network on the CPU.
const FFN_BLOCK_ROWS: usize = 1024;

/// Run the feed-forward network `f` (row-wise: each output row depends on its own input row)
/// over blocks of [`FFN_BLOCK_ROWS`] rows of `xs: [n, ...]` when backend `B` asks for blocks,
/// or in one call. The intermediate activations, four times the hidden size and the largest
/// buffer of a layer, then exist for one block at a time: 25 MB less at the CPU's default
/// batch of 4,096 tokens for MiniLM, 42 MB less for ModernBERT-base.
pub(crate) fn feed_forward_in_blocks<B: Backend>(
    xs: &Tensor,
    mut f: impl FnMut(&Tensor, std::ops::Range<usize>) -> CResult<Tensor>,
) -> CResult<Tensor> {
    let n = xs.dim(0)?;
    if !B::FFN_BLOCKS || n <= FFN_BLOCK_ROWS {
        return f(xs, 0..n);
    }
    let parts = (0..n)
        .step_by(FFN_BLOCK_ROWS)
        .map(|start| {
            let len = FFN_BLOCK_ROWS.min(n - start);
            f(&xs.narrow(0, start, len)?, start..start + len)
        })
        .collect::<CResult<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

/// The checkpoint prefix of a model's encoder: `prefix.` when the checkpoint stores it under
/// the task model's attribute (`bert.`, `roberta.`, `model.`), else the root (a base model
/// saved on its own, as embedding models are). `probe` names a tensor the encoder has.
pub(crate) fn encoder_root(w: &Weights, prefix: &str, probe: &str) -> Weights {
    if w.contains(&format!("{prefix}.{probe}")) {
        w.pp(prefix)
    } else {
        w.clone()
    }
}
