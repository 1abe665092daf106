//! [`PackedBatch`]: token sequences stored back to back, without padding.
//!
//! Every linear layer, norm and MLP runs on the tokens of all sequences concatenated
//! (`[total_tokens, hidden]`), so no FLOPs are spent on padding. Attention is the only step
//! that needs the sequence boundaries, and pooling the only one that reads whole sequences.

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::tokenizer::EncodedPair;

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
    ids: Vec<u32>,
    pad_index: Tensor,
    unpad_index: Tensor,
    key_mask: Tensor,
    first_token_index: Tensor,
    last_token_index: Tensor,
    device: Device,
    dtype: DType,
    /// Sliding window of the local layers, `[1, 1, max_len, max_len]`, built on first use and
    /// shared by every local layer of the forward pass (a model's local layers share one
    /// window; another window is built uncached).
    window_mask: OnceLock<(usize, Tensor)>,
    /// `cu_seqlens` as a device tensor for the varlen kernels, copied once per batch instead
    /// of once per layer.
    #[cfg(feature = "flash-attn")]
    cu_seqlens_tensor: OnceLock<Tensor>,
}

impl PackedBatch {
    /// Pack encodings for one forward pass; `dtype` is the model's activation dtype (of the
    /// attention masks the padded path adds).
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
        // An empty sequence has no last token; the checks before a forward pass refuse one.
        let last: Vec<u32> = cu[1..].iter().map(|&end| end.saturating_sub(1)).collect();
        Ok(Self {
            input_ids: Tensor::from_vec(ids.clone(), total, device)?,
            ids,
            token_type_ids: Tensor::from_vec(types, total, device)?,
            position_ids: Tensor::from_vec(pos, total, device)?,
            seq_lens,
            cu_seqlens: cu,
            max_len,
            pad_index: Tensor::from_vec(pad_index, b * max_len, device)?,
            unpad_index: Tensor::from_vec(unpad_index, total, device)?,
            key_mask: Tensor::from_vec(key_mask, (b, 1, 1, max_len), device)?.to_dtype(dtype)?,
            first_token_index: Tensor::from_vec(first, b, device)?,
            last_token_index: Tensor::from_vec(last, b, device)?,
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

    /// The device the batch lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// RoBERTa's positions: each token that is not `pad_id` gets `pad_id + 1 + (the count of
    /// such tokens before it in its sequence)`, a `pad_id` token gets `pad_id` (transformers'
    /// `create_position_ids_from_input_ids`, which reads the ids, not the attention mask).
    pub(crate) fn padding_offset_position_ids(&self, pad_id: u32) -> candle_core::Result<Tensor> {
        let mut out = Vec::with_capacity(self.ids.len());
        for w in self.cu_seqlens.windows(2) {
            let mut count = 0u32;
            for &id in &self.ids[w[0] as usize..w[1] as usize] {
                if id == pad_id {
                    out.push(pad_id);
                } else {
                    count += 1;
                    out.push(pad_id + count);
                }
            }
        }
        Tensor::from_vec(out, self.ids.len(), &self.device)
    }

    /// The hidden state of each sequence's first token (`[CLS]`): `[batch, hidden]`.
    pub(crate) fn first_tokens(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        hidden.index_select(&self.first_token_index, 0)
    }

    /// The hidden state of each sequence's last token (what a causal model predicts the next
    /// token from): `[batch, hidden]`.
    pub(crate) fn last_tokens(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        hidden.index_select(&self.last_token_index, 0)
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

    /// `[total, ...]` packed rows -> `[batch * max_len, ...]` padded rows (pad rows repeat row 0).
    pub(crate) fn pad_rows(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.index_select(&self.pad_index, 0)
    }

    /// The inverse of [`pad_rows`](Self::pad_rows).
    pub(crate) fn unpad_rows(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.index_select(&self.unpad_index, 0)
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

    /// `cu_seqlens` on the device, for the varlen kernels (copied once per batch).
    #[cfg(feature = "flash-attn")]
    pub(crate) fn cu_seqlens_tensor(&self) -> candle_core::Result<Tensor> {
        if let Some(cu) = self.cu_seqlens_tensor.get() {
            return Ok(cu.clone());
        }
        let cu = Tensor::new(self.cu_seqlens.as_slice(), &self.device)?;
        let _ = self.cu_seqlens_tensor.set(cu.clone());
        Ok(cu)
    }
}

/// `[len, len]` additive mask hiding keys farther than `half_window` from the query. Built
/// on `device` from two position ranges, so an 8,192-token mask is not a 256 MiB host
/// array copied over.
pub(crate) fn window_mask(
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

/// `[len, len]` additive mask hiding keys after the query (causal attention).
pub(crate) fn causal_mask(
    len: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let positions = Tensor::arange(0u32, len as u32, device)?;
    let later = positions
        .unsqueeze(0)?
        .broadcast_gt(&positions.unsqueeze(1)?)?;
    let zeros = Tensor::zeros((len, len), DType::F32, device)?;
    let neg_inf = Tensor::full(f32::NEG_INFINITY, (len, len), device)?;
    later.where_cond(&neg_inf, &zeros)?.to_dtype(dtype)
}
