//! Multi-head attention over a packed batch, with candle's ops (any device and dtype).
//!
//! Every architecture describes its attention with one [`AttentionSpec`] (heads, grouped
//! key/value heads, sliding window, causal mask, rotary positions, query/key norms); the
//! backend the model was loaded with runs it: these ops, varlen FlashAttention on CUDA, or
//! the fused CPU kernels. A token never sees another sequence's tokens.

use candle_core::Tensor;

use super::ops::Rope;
use super::packed::{causal_mask, window_mask, PackedBatch};

type CResult<T> = candle_core::Result<T>;

/// Qwen3's RMSNorm of every query and key head before the rotation.
pub(crate) struct QkNorm<'a> {
    /// `[head_dim]` weight of the query heads' norm.
    pub(crate) q: &'a Tensor,
    /// `[head_dim]` weight of the key heads' norm.
    pub(crate) k: &'a Tensor,
    pub(crate) eps: f32,
}

/// What one attention layer computes from the fused projection
/// `qkv = [q (heads * head_dim) | k (kv_heads * head_dim) | v (kv_heads * head_dim)]`.
pub(crate) struct AttentionSpec<'a> {
    pub(crate) heads: usize,
    /// Key/value heads; each serves `heads / kv_heads` query heads (grouped-query attention).
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    /// Keys farther than this from the query are hidden (ModernBERT's local layers).
    pub(crate) half_window: Option<usize>,
    /// Keys after the query are hidden (decoder models).
    pub(crate) causal: bool,
    /// Rotary position embeddings of queries and keys, by position inside the sequence.
    pub(crate) rope: Option<&'a Rope>,
    pub(crate) qk_norm: Option<QkNorm<'a>>,
    /// transformers applies this model's RoPE and query/key norms as separate operations in
    /// the activation dtype (Qwen), not in f32 with one rounding (ModernBERT): the bf16
    /// backend rounds where those operations do.
    pub(crate) rounds_each_op: bool,
}

impl AttentionSpec<'_> {
    /// Columns of the fused projection.
    pub(crate) fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Query heads per key/value head.
    pub(crate) fn group(&self) -> usize {
        self.heads / self.kv_heads.max(1)
    }
}

/// Attention of `qkv: [n, qkv_width]` over `batch` with candle's ops: `[n, heads * head_dim]`.
///
/// On the CPU each sequence attends on its own (no padding, small temporaries); on an
/// accelerator the batch is padded inside attention so it stays a few large kernels, or, with
/// the `flash-attn` feature, runs as varlen FlashAttention.
pub(crate) fn attention(
    qkv: &Tensor,
    batch: &PackedBatch,
    spec: &AttentionSpec<'_>,
) -> CResult<Tensor> {
    let (q, k, v) = split(qkv, batch, spec)?;
    // FlashAttention takes f16/bf16 and head sizes that are multiples of 8 up to 256;
    // anything else (f32 on CUDA, TinyBERT's 26) uses the padded path.
    #[cfg(feature = "flash-attn")]
    if q.device().is_cuda()
        && matches!(
            q.dtype(),
            candle_core::DType::F16 | candle_core::DType::BF16
        )
        && spec.head_dim % 8 == 0
        && spec.head_dim <= 256
    {
        return flash::varlen(&q, &k, &v, batch, spec);
    }
    let (k, v) = (repeat_kv(&k, spec.group())?, repeat_kv(&v, spec.group())?);
    if q.device().is_cpu() {
        per_sequence(&q, &k, &v, batch, spec)
    } else {
        padded(&q, &k, &v, batch, spec, MAX_SCORE_ELEMENTS)
    }
}

/// Split the fused projection into `q: [n, heads, d]` and `k`, `v: [n, kv_heads, d]`, with
/// the query/key norms and rotations applied.
fn split(
    qkv: &Tensor,
    batch: &PackedBatch,
    spec: &AttentionSpec<'_>,
) -> CResult<(Tensor, Tensor, Tensor)> {
    let n = qkv.dim(0)?;
    let (h, kv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    if qkv.dim(1)? != spec.qkv_width() {
        candle_core::bail!(
            "attention: projection width {} is not ({h} + 2 x {kv}) x {d}",
            qkv.dim(1)?
        );
    }
    let part = |start: usize, heads: usize| {
        qkv.narrow(1, start * d, heads * d)?
            .reshape((n, heads, d))?
            .contiguous()
    };
    let (mut q, mut k, v) = (part(0, h)?, part(h, kv)?, part(h + kv, kv)?);
    if let Some(norm) = &spec.qk_norm {
        q = candle_nn::ops::rms_norm(&q, &norm.q.to_dtype(q.dtype())?, norm.eps)?;
        k = candle_nn::ops::rms_norm(&k, &norm.k.to_dtype(k.dtype())?, norm.eps)?;
    }
    if let Some(rope) = spec.rope {
        q = rope.rotate(&q, &batch.position_ids)?;
        k = rope.rotate(&k, &batch.position_ids)?;
    }
    Ok((q, k, v))
}

/// `[n, kv_heads, d]` -> `[n, kv_heads * group, d]`, each key/value head repeated for the
/// query heads of its group.
fn repeat_kv(x: &Tensor, group: usize) -> CResult<Tensor> {
    if group == 1 {
        return Ok(x.clone());
    }
    let (n, kv, d) = x.dims3()?;
    x.unsqueeze(2)?
        .broadcast_as((n, kv, group, d))?
        .reshape((n, kv * group, d))
}

/// The additive mask of one sequence of `len` tokens, when it needs one.
fn sequence_mask(len: usize, spec: &AttentionSpec<'_>, scores: &Tensor) -> CResult<Option<Tensor>> {
    let (dtype, device) = (scores.dtype(), scores.device());
    let window = spec
        .half_window
        .filter(|&w| w + 1 < len)
        .map(|w| window_mask(len, w, dtype, device))
        .transpose()?;
    let causal = spec
        .causal
        .then(|| causal_mask(len, dtype, device))
        .transpose()?;
    Ok(match (window, causal) {
        (Some(a), Some(b)) => Some((a + b)?),
        (a, b) => a.or(b),
    })
}

fn per_sequence(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    batch: &PackedBatch,
    spec: &AttentionSpec<'_>,
) -> CResult<Tensor> {
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
        if let Some(mask) = sequence_mask(len, spec, &scores)? {
            scores = scores.broadcast_add(&mask)?;
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

/// Padded attention with scores computed in slices of at most `max_elements`: whole
/// sequences while one fits, else heads of one sequence at a time.
fn padded(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    batch: &PackedBatch,
    spec: &AttentionSpec<'_>,
    max_elements: usize,
) -> CResult<Tensor> {
    let (_n, heads, head_dim) = q.dims3()?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let b = batch.batch_size();
    let l = batch.max_len;
    let to_padded = |x: &Tensor| -> CResult<Tensor> {
        batch
            .pad_rows(&x.reshape((x.dim(0)?, heads * head_dim))?)?
            .reshape((b, l, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (to_padded(&(q * scale)?)?, to_padded(k)?, to_padded(v)?);
    let square = l * l;
    if square > i32::MAX as usize {
        candle_core::bail!("attention over {l} tokens exceeds the 2^31 elements of one kernel");
    }
    let causal = spec
        .causal
        .then(|| {
            causal_mask(l, q.dtype(), q.device())?
                .unsqueeze(0)?
                .unsqueeze(0)
        })
        .transpose()?;
    let per_sequence = heads * square;
    let (seq_step, head_step) = if per_sequence <= max_elements {
        ((max_elements / per_sequence).clamp(1, b), heads)
    } else {
        (1, (max_elements / square).clamp(1, heads))
    };
    let mut sequences = Vec::with_capacity(b.div_ceil(seq_step));
    for s in (0..b).step_by(seq_step) {
        let sn = seq_step.min(b - s);
        let mut mask = batch.attention_mask(s, sn, spec.half_window)?; // [sn, 1, 1 or l, l]
        if let Some(c) = &causal {
            mask = mask.broadcast_add(c)?;
        }
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
    batch.unpad_rows(&out.transpose(1, 2)?.reshape((b * l, heads * head_dim))?)
}

#[cfg(feature = "flash-attn")]
mod flash {
    use super::*;

    /// Varlen FlashAttention over the packed layout (windowed for local layers, causal for
    /// decoders; grouped key/value heads are read as they are).
    pub(super) fn varlen(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        batch: &PackedBatch,
        spec: &AttentionSpec<'_>,
    ) -> CResult<Tensor> {
        let (n, heads, head_dim) = q.dims3()?;
        let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
        let cu = batch.cu_seqlens_tensor()?;
        let max = batch.max_len;
        let (left, right) = match (spec.half_window, spec.causal) {
            (None, false) => (None, None),
            (None, true) => (None, Some(0)),
            (Some(w), causal) => (Some(w), Some(if causal { 0 } else { w })),
        };
        let out = match (left, right) {
            (None, None) => {
                candle_flash_attn::flash_attn_varlen(q, k, v, &cu, &cu, max, max, scale, false)?
            }
            (left, right) => candle_flash_attn::flash_attn_varlen_windowed(
                q, k, v, &cu, &cu, max, max, scale, left, right,
            )?,
        };
        out.reshape((n, heads * head_dim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::EncodedPair;
    use candle_core::{DType, Device};

    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

    fn spec(heads: usize, kv_heads: usize, d: usize) -> AttentionSpec<'static> {
        AttentionSpec {
            heads,
            kv_heads,
            head_dim: d,
            half_window: None,
            causal: false,
            rope: None,
            qk_norm: None,
            rounds_each_op: false,
        }
    }

    /// The CPU per-sequence path and the padded path (used on accelerators) agree, with and
    /// without a sliding window or a causal mask, with grouped key/value heads, on a batch of
    /// uneven lengths.
    #[test]
    fn per_sequence_and_padded_attention_agree() {
        let dev = Device::Cpu;
        let encs = [encoding(7), encoding(3), encoding(12), encoding(1)];
        let refs: Vec<&EncodedPair> = encs.iter().collect();
        let batch = PackedBatch::new(&refs, &dev, DType::F32).unwrap();
        let n = batch.total_tokens();
        for (heads, kv, d) in [(2, 2, 4), (4, 2, 4)] {
            let qkv = Tensor::randn(0f32, 1.0, (n, (heads + 2 * kv) * d), &dev).unwrap();
            let l2 = batch.max_len * batch.max_len;
            // Some(2) again after Some(4): the cached window mask must not leak into another.
            for causal in [false, true] {
                for window in [None, Some(2), Some(4), Some(2), Some(100)] {
                    let s = AttentionSpec {
                        half_window: window,
                        causal,
                        ..spec(heads, kv, d)
                    };
                    let (q, k, v) = split(&qkv, &batch, &s).unwrap();
                    let (k, v) = (
                        repeat_kv(&k, s.group()).unwrap(),
                        repeat_kv(&v, s.group()).unwrap(),
                    );
                    let a = per_sequence(&q, &k, &v, &batch, &s).unwrap();
                    // Slices of three sequences, of one sequence, and of one head at a time
                    // (the 32-bit indexing guard) give the same result.
                    for limit in [usize::MAX, 3 * heads * l2, heads * l2, l2] {
                        let c = padded(&q, &k, &v, &batch, &s, limit).unwrap();
                        let diff = max_abs_diff(&a, &c);
                        assert!(
                            diff < 1e-5,
                            "heads {heads}/{kv}, causal {causal}, window {window:?}, limit {limit}: {diff}"
                        );
                    }
                }
            }
        }
    }

    /// A causal mask hides later keys: the first token of a sequence attends only to itself,
    /// so its output is its own value row.
    #[test]
    fn causal_attention_of_the_first_token_is_its_value() {
        let dev = Device::Cpu;
        let encs = [encoding(5), encoding(3)];
        let refs: Vec<&EncodedPair> = encs.iter().collect();
        let batch = PackedBatch::new(&refs, &dev, DType::F32).unwrap();
        let n = batch.total_tokens();
        let s = AttentionSpec {
            causal: true,
            ..spec(2, 1, 4)
        };
        let qkv = Tensor::randn(0f32, 1.0, (n, s.qkv_width()), &dev).unwrap();
        let out = attention(&qkv, &batch, &s).unwrap();
        for start in [0usize, 5] {
            let got = out.narrow(0, start, 1).unwrap().reshape((2, 4)).unwrap();
            let v = qkv.narrow(0, start, 1).unwrap().narrow(1, 12, 4).unwrap();
            let want = Tensor::cat(&[&v, &v], 0).unwrap();
            assert!(max_abs_diff(&got, &want) < 1e-6);
        }
    }
}
