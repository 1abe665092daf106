//! Transformer encoders over a packed (unpadded) batch.
//!
//! Every linear layer, norm and MLP runs on the tokens of all sequences concatenated
//! (`[total_tokens, hidden]`), so no FLOPs are spent on padding. Attention is the only step
//! that needs sequence boundaries: [`PackedBatch`] carries them, and [`attention`] pads
//! inside attention only (or, with the `flash-attn` feature on CUDA, uses varlen kernels).

pub mod bert;
pub(crate) mod cpu;
pub mod modernbert;

use std::path::Path;
use std::sync::OnceLock;

use candle_core::{DType, Device, IndexOp, Tensor};

use crate::error::{EncoderError, Result};
use crate::tokenizer::EncodedPair;
use crate::weights::Weights;

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

    pub(crate) fn apply(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
            Activation::Silu => xs.silu(),
            Activation::Tanh => xs.tanh(),
        }
    }
}

/// `nn.Linear`: `y = x W^T + b`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Load `name.weight` (`[out, in]`) and, if `bias` is true, `name.bias`.
    pub(crate) fn load(w: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&[out_dim, in_dim], "weight")?;
        let bias = if bias {
            Some(w.get(&[out_dim], "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// `act(x W^T + b + residual)`: with `cpu_kernels` as one fused CPU kernel, otherwise as
    /// candle ops.
    pub(crate) fn apply(
        &self,
        xs: &Tensor,
        residual: Option<&Tensor>,
        act: Option<Activation>,
        cpu_kernels: bool,
    ) -> candle_core::Result<Tensor> {
        if cpu_kernels {
            return cpu::linear(xs, &self.weight, self.bias.as_ref(), residual, act);
        }
        let mut ys = self.forward(xs)?;
        if let Some(r) = residual {
            ys = (ys + r)?;
        }
        match act {
            Some(act) => act.apply(&ys),
            None => Ok(ys),
        }
    }

    /// Apply to `[n, in]`.
    pub(crate) fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = xs.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => ys.broadcast_add(b),
            None => Ok(ys),
        }
    }
}

/// `nn.LayerNorm` with an optional bias (ModernBERT's `norm_bias=false`).
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub(crate) fn load(w: &Weights, dim: usize, bias: bool, eps: f64) -> Result<Self> {
        let weight = w.get(&[dim], "weight")?;
        let bias = if bias {
            w.get(&[dim], "bias")?
        } else {
            Tensor::zeros(dim, weight.dtype(), weight.device())?
        };
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(xs, false)
    }

    /// With `cpu_kernels`, the fused CPU kernel (`[n, dim]` f32 on the CPU); otherwise
    /// candle's op.
    pub(crate) fn apply(&self, xs: &Tensor, cpu_kernels: bool) -> candle_core::Result<Tensor> {
        let xs = xs.contiguous()?;
        if cpu_kernels && xs.rank() == 2 {
            return cpu::layer_norm(&xs, &self.weight, Some(&self.bias), self.eps);
        }
        candle_nn::ops::layer_norm(&xs, &self.weight, &self.bias, self.eps)
    }
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

/// How the token states of a sequence become one vector: for a classification head
/// (ModernBERT's `classifier_pooling`) and for an embedding model (sentence-transformers'
/// `Pooling` module) alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token (`[CLS]`).
    Cls,
    /// The mean over the sequence's tokens.
    Mean,
}

impl Pooling {
    /// Pool `hidden` (`[total_tokens, hidden]` of `batch`) into `[batch, hidden]`.
    pub(crate) fn apply(self, batch: &PackedBatch, hidden: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Pooling::Cls => batch.first_tokens(hidden),
            Pooling::Mean => batch.mean_pool(hidden),
        }
    }
}

/// A batch of token sequences stored back to back without padding.
#[derive(Debug, Clone)]
pub struct PackedBatch {
    /// `[total_tokens]` u32 token ids.
    pub input_ids: Tensor,
    /// `[total_tokens]` u32 segment ids.
    pub token_type_ids: Tensor,
    /// `[total_tokens]` u32 positions, restarting at 0 for every sequence.
    pub position_ids: Tensor,
    /// Length of each sequence.
    pub seq_lens: Vec<usize>,
    /// Offsets of each sequence's first token, plus the total (`cu_seqlens`).
    pub cu_seqlens: Vec<u32>,
    /// Longest sequence.
    pub max_len: usize,
    pad_index: Tensor,
    unpad_index: Tensor,
    key_mask: Tensor,
    first_token_index: Tensor,
    device: Device,
    dtype: DType,
    /// Sliding window of the local layers, `[1, 1, max_len, max_len]`, built on first use and
    /// shared by every local layer of the forward pass (a model's local layers share one
    /// window; another window is built uncached). It is added to the key mask one slice of
    /// sequences at a time, so no `[batch, 1, max_len, max_len]` mask is ever held.
    window_mask: OnceLock<(usize, Tensor)>,
    /// `cu_seqlens` as a device tensor for the varlen kernels, copied once per batch instead
    /// of once per layer.
    #[cfg(feature = "flash-attn")]
    cu_seqlens_tensor: OnceLock<Tensor>,
}

impl PackedBatch {
    /// Pack encodings for one forward pass; `dtype` is the model's compute dtype.
    pub fn new(encodings: &[&EncodedPair], device: &Device, dtype: DType) -> Result<Self> {
        let total: usize = encodings.iter().map(|e| e.len()).sum();
        let max_len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let b = encodings.len();
        let mut ids = Vec::with_capacity(total);
        let mut types = Vec::with_capacity(total);
        let mut pos = Vec::with_capacity(total);
        let mut cu = Vec::with_capacity(b + 1);
        let mut pad_index = vec![0u32; b * max_len];
        let mut unpad_index = Vec::with_capacity(total);
        let mut key_mask = vec![f32::NEG_INFINITY; b * max_len];
        let mut offset = 0u32;
        for (i, e) in encodings.iter().enumerate() {
            cu.push(offset);
            ids.extend_from_slice(&e.ids);
            if e.type_ids.len() == e.ids.len() {
                types.extend_from_slice(&e.type_ids);
            } else {
                types.extend(std::iter::repeat_n(0u32, e.ids.len()));
            }
            for t in 0..e.len() {
                pos.push(t as u32);
                pad_index[i * max_len + t] = offset + t as u32;
                unpad_index.push((i * max_len + t) as u32);
                key_mask[i * max_len + t] = 0.0;
            }
            offset += e.len() as u32;
        }
        cu.push(offset);
        let seq_lens = encodings.iter().map(|e| e.len()).collect();
        let first: Vec<u32> = cu[..b].to_vec();
        Ok(Self {
            input_ids: Tensor::from_vec(ids, total, device)?,
            token_type_ids: Tensor::from_vec(types, total, device)?,
            position_ids: Tensor::from_vec(pos, total, device)?,
            seq_lens,
            cu_seqlens: cu,
            max_len,
            pad_index: Tensor::from_vec(pad_index, b * max_len, device)?,
            unpad_index: Tensor::from_vec(unpad_index, total, device)?,
            key_mask: Tensor::from_vec(key_mask, (b, 1, 1, max_len), device)?.to_dtype(dtype)?,
            first_token_index: Tensor::from_vec(first, b, device)?,
            device: device.clone(),
            dtype,
            window_mask: OnceLock::new(),
            #[cfg(feature = "flash-attn")]
            cu_seqlens_tensor: OnceLock::new(),
        })
    }

    /// Number of sequences.
    pub fn batch_size(&self) -> usize {
        self.seq_lens.len()
    }

    /// Total number of real tokens.
    pub fn total_tokens(&self) -> usize {
        self.cu_seqlens.last().copied().unwrap_or(0) as usize
    }

    /// The hidden state of each sequence's first token (`[CLS]`): `[batch, hidden]`.
    pub(crate) fn first_tokens(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        hidden.index_select(&self.first_token_index, 0)
    }

    /// Mean over each sequence's tokens: `[batch, hidden]`. Computed in f32 whatever the
    /// model's dtype (in bf16 the 1/len weights alone would be off by up to 0.4%).
    pub(crate) fn mean_pool(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let total = self.total_tokens();
        let mut weights = vec![0f32; self.batch_size() * total];
        for (i, (&start, &len)) in self.cu_seqlens.iter().zip(&self.seq_lens).enumerate() {
            let start = start as usize;
            let w = 1.0 / len.max(1) as f32;
            weights[i * total + start..i * total + start + len].fill(w);
        }
        let m = Tensor::from_vec(weights, (self.batch_size(), total), &self.device)?;
        m.matmul(&hidden.to_dtype(DType::F32)?)?
            .to_dtype(hidden.dtype())
    }

    /// Additive masks for attention: the key padding of sequences `start..start + len`,
    /// `[len, 1, 1, max_len]`, plus the sliding window `|i - j| <= half_window` when one is
    /// given and shorter than the batch, which makes it `[len, 1, max_len, max_len]`.
    pub(crate) fn attention_mask(
        &self,
        start: usize,
        len: usize,
        half_window: Option<usize>,
    ) -> candle_core::Result<Tensor> {
        let keys = self.key_mask.narrow(0, start, len)?;
        match half_window {
            Some(w) if w + 1 < self.max_len => keys.broadcast_add(&self.window(w)?),
            _ => Ok(keys),
        }
    }

    fn window(&self, half_window: usize) -> candle_core::Result<Tensor> {
        if let Some((cached, mask)) = self.window_mask.get() {
            if *cached == half_window {
                return Ok(mask.clone());
            }
        }
        let mask = window_mask(self.max_len, half_window, self.dtype, &self.device)?
            .unsqueeze(0)?
            .unsqueeze(0)?;
        // The first window asked for is kept (`set` fails harmlessly afterwards).
        let _ = self.window_mask.set((half_window, mask.clone()));
        Ok(mask)
    }
}

/// Scaled dot-product attention of packed `q`, `k`, `v` (`[total_tokens, heads, head_dim]`)
/// that never lets a token see another sequence. Returns `[total_tokens, heads * head_dim]`.
///
/// On the CPU each sequence attends on its own (no padding, no key mask, small temporaries);
/// on an accelerator the batch is padded inside attention so it stays a few large kernels,
/// or, with the `flash-attn` feature, runs as varlen FlashAttention.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    batch: &PackedBatch,
    half_window: Option<usize>,
) -> candle_core::Result<Tensor> {
    // FlashAttention takes f16/bf16 and head sizes that are multiples of 8 up to 512;
    // anything else (f32 on CUDA, TinyBERT's 26) uses the padded path.
    #[cfg(feature = "flash-attn")]
    if q.device().is_cuda()
        && matches!(q.dtype(), DType::F16 | DType::BF16)
        && q.dim(2)? % 8 == 0
        && q.dim(2)? <= 512
    {
        let scale = 1.0 / (q.dim(2)? as f64).sqrt();
        return flash::varlen(q, k, v, batch, half_window, scale as f32);
    }
    if q.device().is_cpu() {
        attention_per_sequence(q, k, v, batch, half_window)
    } else {
        attention_padded(q, k, v, batch, half_window)
    }
}

/// `[len, len]` additive mask hiding keys farther than `half_window` from the query. Built
/// on `device` from two position ranges, so an 8,192-token mask is not a 256 MiB host
/// array copied over.
fn window_mask(
    len: usize,
    half_window: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let positions = Tensor::arange(0f32, len as f32, device)?;
    let distance = positions
        .unsqueeze(1)?
        .broadcast_sub(&positions.unsqueeze(0)?)?
        .abs()?;
    let hidden = distance.gt(half_window as f64)?;
    let zeros = Tensor::zeros((len, len), DType::F32, device)?;
    let neg_inf = Tensor::full(f32::NEG_INFINITY, (len, len), device)?;
    hidden.where_cond(&neg_inf, &zeros)?.to_dtype(dtype)
}

fn attention_per_sequence(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    batch: &PackedBatch,
    half_window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let (n, heads, head_dim) = q.dims3()?;
    let q = (q * (1.0 / (head_dim as f64).sqrt()))?;
    let mut outputs = Vec::with_capacity(batch.batch_size());
    for (&start, &len) in batch.cu_seqlens.iter().zip(&batch.seq_lens) {
        let head_major = |x: &Tensor| {
            x.narrow(0, start as usize, len)?
                .transpose(0, 1)?
                .contiguous()
        };
        let (qi, ki, vi) = (head_major(&q)?, head_major(k)?, head_major(v)?); // [heads, len, d]
        let mut scores = qi.matmul(&ki.t()?)?; // [heads, len, len]
        if let Some(w) = half_window.filter(|&w| w + 1 < len) {
            scores =
                scores.broadcast_add(&window_mask(len, w, scores.dtype(), scores.device())?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        outputs.push(probs.matmul(&vi)?.transpose(0, 1)?); // [len, heads, d]
    }
    Tensor::cat(&outputs, 0)?.reshape((n, heads * head_dim))
}

/// Most elements one `[batch, heads, len, len]` score tensor of the padded path may have.
/// candle's CUDA kernels index with 32-bit integers (its softmax with a signed `int`), so a
/// larger tensor would be read at wrapped offsets: 16 articles of 8,192 tokens in
/// ModernBERT-large would be 8.6e9 elements. 2^30 also bounds the temporary to 2 GiB in
/// bf16.
const MAX_SCORE_ELEMENTS: usize = 1 << 30;

fn attention_padded(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    batch: &PackedBatch,
    half_window: Option<usize>,
) -> candle_core::Result<Tensor> {
    attention_padded_chunked(q, k, v, batch, half_window, MAX_SCORE_ELEMENTS)
}

/// [`attention_padded`] with scores computed in slices of at most `max_elements`: whole
/// sequences while one fits, else heads of one sequence at a time.
fn attention_padded_chunked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    batch: &PackedBatch,
    half_window: Option<usize>,
    max_elements: usize,
) -> candle_core::Result<Tensor> {
    let (_n, heads, head_dim) = q.dims3()?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let b = batch.batch_size();
    let l = batch.max_len;
    let to_padded = |x: &Tensor| -> candle_core::Result<Tensor> {
        x.reshape((x.dim(0)?, heads * head_dim))?
            .index_select(&batch.pad_index, 0)?
            .reshape((b, l, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (to_padded(&(q * scale)?)?, to_padded(k)?, to_padded(v)?);
    let square = l * l;
    if square > i32::MAX as usize {
        candle_core::bail!("attention over {l} tokens exceeds the 2^31 elements of one kernel");
    }
    let per_sequence = heads * square;
    let (seq_step, head_step) = if per_sequence <= max_elements {
        ((max_elements / per_sequence).clamp(1, b), heads)
    } else {
        (1, (max_elements / square).clamp(1, heads))
    };
    let mut sequences = Vec::with_capacity(b.div_ceil(seq_step));
    for s in (0..b).step_by(seq_step) {
        let sn = seq_step.min(b - s);
        let mask = batch.attention_mask(s, sn, half_window)?; // [sn, 1, 1 or l, l]
        let mut parts = Vec::with_capacity(heads.div_ceil(head_step));
        for h in (0..heads).step_by(head_step) {
            let hn = head_step.min(heads - h);
            let slice = |x: &Tensor| x.narrow(0, s, sn)?.narrow(1, h, hn)?.contiguous();
            let (q, k, v) = (slice(&q)?, slice(&k)?, slice(&v)?);
            let scores = q.matmul(&k.t()?)?.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            parts.push(probs.matmul(&v)?); // [sn, hn, l, head_dim]
        }
        sequences.push(Tensor::cat(&parts, 1)?);
    }
    let out = Tensor::cat(&sequences, 0)?; // [b, heads, l, head_dim]
    out.transpose(1, 2)?
        .reshape((b * l, heads * head_dim))?
        .index_select(&batch.unpad_index, 0)
}

#[cfg(feature = "flash-attn")]
mod flash {
    use super::*;

    /// Varlen FlashAttention over the packed layout (windowed for local layers).
    pub(super) fn varlen(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        batch: &PackedBatch,
        half_window: Option<usize>,
        scale: f32,
    ) -> candle_core::Result<Tensor> {
        let (n, heads, head_dim) = q.dims3()?;
        let cu = match batch.cu_seqlens_tensor.get() {
            Some(cu) => cu.clone(),
            None => {
                let cu = Tensor::new(batch.cu_seqlens.as_slice(), q.device())?;
                let _ = batch.cu_seqlens_tensor.set(cu.clone());
                cu
            }
        };
        let max = batch.max_len;
        let out = match half_window {
            None => {
                candle_flash_attn::flash_attn_varlen(q, k, v, &cu, &cu, max, max, scale, false)?
            }
            Some(w) => candle_flash_attn::flash_attn_varlen_windowed(
                q,
                k,
                v,
                &cu,
                &cu,
                max,
                max,
                scale,
                Some(w),
                Some(w),
            )?,
        };
        out.reshape((n, heads * head_dim))
    }
}

/// Load a `[num_labels, hidden]` classifier, checking the label count against the config.
pub(crate) fn load_classifier(
    w: &Weights,
    name: &str,
    hidden: usize,
    num_labels: usize,
    config_path: &Path,
) -> Result<Linear> {
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
    // transformers builds the classifier as `nn.Linear(hidden, num_labels)` for both BERT and
    // ModernBERT (ModernBERT's `classifier_bias` is the head's dense layer). A checkpoint
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
    Ok(Linear { weight, bias })
}

/// Rows per block of the feed-forward network on the CPU.
const FFN_BLOCK_ROWS: usize = 1024;

/// Run the feed-forward network `f` (row-wise: each output row depends on its own input row)
/// over blocks of [`FFN_BLOCK_ROWS`] rows of `xs: [n, ...]`, or in one call when `blocks` is
/// false or there are fewer rows. The intermediate activations, four times the hidden size
/// and the largest buffer of a layer, then exist for one block at a time: 25 MB less at the
/// CPU's default batch of 4,096 tokens for MiniLM, 42 MB less for ModernBERT-base.
pub(crate) fn feed_forward_in_blocks(
    xs: &Tensor,
    blocks: bool,
    mut f: impl FnMut(&Tensor, std::ops::Range<usize>) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let n = xs.dim(0)?;
    if !blocks || n <= FFN_BLOCK_ROWS {
        return f(xs, 0..n);
    }
    let parts = (0..n)
        .step_by(FFN_BLOCK_ROWS)
        .map(|start| {
            let len = FFN_BLOCK_ROWS.min(n - start);
            f(&xs.narrow(0, start, len)?, start..start + len)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

/// `[n, 3 * hidden]` -> three `[n, heads, head_dim]` tensors.
pub(crate) fn split_qkv(
    qkv: &Tensor,
    heads: usize,
    head_dim: usize,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let n = qkv.dim(0)?;
    let qkv = qkv.reshape((n, 3, heads, head_dim))?;
    let q = qkv.i((.., 0))?.contiguous()?;
    let k = qkv.i((.., 1))?.contiguous()?;
    let v = qkv.i((.., 2))?.contiguous()?;
    Ok((q, k, v))
}

/// Index of the last dim's maximum.
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn encoding(len: usize) -> EncodedPair {
        EncodedPair {
            ids: (0..len as u32).collect(),
            type_ids: vec![0; len],
        }
    }

    /// The CPU per-sequence path and the padded path (used on accelerators) agree, with and
    /// without a sliding window, on a batch of uneven lengths.
    #[test]
    fn per_sequence_and_padded_attention_agree() {
        let dev = Device::Cpu;
        let encs = [encoding(7), encoding(3), encoding(12), encoding(1)];
        let refs: Vec<&EncodedPair> = encs.iter().collect();
        let batch = PackedBatch::new(&refs, &dev, DType::F32).unwrap();
        let n = batch.total_tokens();
        let (heads, d) = (2, 4);
        let q = Tensor::randn(0f32, 1.0, (n, heads, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (n, heads, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (n, heads, d), &dev).unwrap();
        // Some(2) again after Some(4): the cached window mask must not leak into another window.
        let l2 = batch.max_len * batch.max_len;
        for window in [None, Some(2), Some(4), Some(2), Some(100)] {
            let a = attention_per_sequence(&q, &k, &v, &batch, window).unwrap();
            let b = attention_padded(&q, &k, &v, &batch, window).unwrap();
            let diff = max_abs_diff(&a, &b);
            assert!(diff < 1e-5, "window {window:?}: {diff}");
            // Score slices of three sequences, of one sequence, and of one head at a time
            // (the 32-bit indexing guard) give the same result.
            for limit in [3 * heads * l2, heads * l2, l2] {
                let c = attention_padded_chunked(&q, &k, &v, &batch, window, limit).unwrap();
                let diff = max_abs_diff(&a, &c);
                assert!(diff < 1e-5, "window {window:?}, limit {limit}: {diff}");
            }
        }
    }

    /// The fused CPU attention kernel matches candle's ops (split, RoPE, per-sequence
    /// attention) on sequences longer than one query block, with and without a window.
    #[test]
    fn fused_cpu_attention_matches_candle_ops() {
        let dev = Device::Cpu;
        let encs = [encoding(300), encoding(7), encoding(530), encoding(1)];
        let refs: Vec<&EncodedPair> = encs.iter().collect();
        let batch = PackedBatch::new(&refs, &dev, DType::F32).unwrap();
        let n = batch.total_tokens();
        let (heads, d) = (3, 8);
        let qkv = Tensor::randn(0f32, 1.0, (n, 3 * heads * d), &dev).unwrap();
        let max_pos = 600;
        let angles: Vec<f32> = (0..max_pos * d / 2)
            .map(|i| (i / (d / 2)) as f32 / 10f32.powf((i % (d / 2)) as f32))
            .collect();
        let cos = Tensor::from_vec(
            angles.iter().map(|a| a.cos()).collect(),
            (max_pos, d / 2),
            &dev,
        )
        .unwrap();
        let sin = Tensor::from_vec(
            angles.iter().map(|a| a.sin()).collect(),
            (max_pos, d / 2),
            &dev,
        )
        .unwrap();
        for window in [None, Some(5), Some(400)] {
            for rope in [false, true] {
                let (q, k, v) = split_qkv(&qkv, heads, d).unwrap();
                let (q, k) = if rope {
                    let rot = |x: &Tensor| {
                        let c = cos.index_select(&batch.position_ids, 0).unwrap();
                        let s = sin.index_select(&batch.position_ids, 0).unwrap();
                        candle_nn::rotary_emb::rope_thd(&x.unsqueeze(0).unwrap(), &c, &s)
                            .unwrap()
                            .squeeze(0)
                            .unwrap()
                    };
                    (rot(&q), rot(&k))
                } else {
                    (q, k)
                };
                let want = attention_per_sequence(&q, &k, &v, &batch, window).unwrap();
                let tables = rope.then_some(cpu::RopeTables {
                    cos: &cos,
                    sin: &sin,
                });
                let got =
                    cpu::attention(&qkv, &batch.cu_seqlens, heads, d, window, tables).unwrap();
                let diff = max_abs_diff(&got, &want);
                assert!(diff < 1e-5, "window {window:?}, rope {rope}: {diff}");
            }
        }
    }
}
