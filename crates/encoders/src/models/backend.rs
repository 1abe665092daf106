//! The kernels a model runs on, picked once when it loads.
//!
//! Every architecture is generic over a [`Backend`]: the loader matches the device and dtype
//! once (`BackendKind::choose`, in `models`) and instantiates the model for that backend, so a forward
//! pass never decides between code paths. The backends:
//!
//! - [`Portable`]: candle's ops, on any device and dtype (CUDA, and the reference path the
//!   tests compare the others with);
//! - [`CpuF32`]: fused f32 kernels on the CPU ([`super::cpu_f32`]);
//! - `CpuBf16` (in `cpu_bf16`): bf16 weights packed once for AMX or AVX512-BF16, bf16
//!   activations, f32 accumulation.

use candle_core::{DType, Tensor};

use super::attention::{self, AttentionSpec};
use super::cpu_f32;
use super::ops::Activation;
use super::packed::PackedBatch;
use crate::error::Result;

type CResult<T> = candle_core::Result<T>;

/// The operations every architecture is written with.
pub(crate) trait Backend: Send + Sync + Sized + 'static {
    /// Run feed-forward networks in blocks of rows (bounds the widest buffer on the CPU).
    const FFN_BLOCKS: bool;
    /// Compute like a bf16 framework: the small layers of heads round their inputs, weights
    /// and outputs to bf16 (the backbone's kernels round where such a framework stores
    /// activations).
    const ROUND_BF16: bool = false;
    /// A linear layer's parameters in the layout this backend's kernel reads.
    type Linear: Send + Sync;

    /// Prepare a linear layer from its checkpoint tensors (`weight: [out, in]`).
    fn prepare_linear(weight: Tensor, bias: Option<Tensor>) -> Result<Self::Linear>;
    /// Prepare the parameters of a norm (`[dim]`).
    fn prepare_norm(t: Tensor) -> Result<Tensor>;
    /// Bring a table read by index (embeddings) into the activation dtype.
    fn prepare_activations(t: Tensor) -> Result<Tensor>;

    /// `act(x W^T + b + residual)`.
    fn linear(
        l: &Self::Linear,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Option<Activation>,
    ) -> CResult<Tensor>;
    /// `nn.LayerNorm` over the last dimension.
    fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f32) -> CResult<Tensor>;
    /// RMSNorm over the last dimension.
    fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> CResult<Tensor>;
    /// `a + b` of two tensors of one shape (embedding sums).
    fn add(a: &Tensor, b: &Tensor) -> CResult<Tensor> {
        a + b
    }
    /// `[n, 2 * inter]` -> `act(first half) * second half`, `[n, inter]`.
    fn glu(x: &Tensor, inter: usize, act: Activation) -> CResult<Tensor>;
    /// Attention of the fused projection over `batch`.
    fn attention(qkv: &Tensor, batch: &PackedBatch, spec: &AttentionSpec<'_>) -> CResult<Tensor>;
}

/// candle's ops: any device, any dtype.
pub(crate) struct Portable;

impl Backend for Portable {
    const FFN_BLOCKS: bool = false;
    type Linear = (Tensor, Option<Tensor>);

    fn prepare_linear(weight: Tensor, bias: Option<Tensor>) -> Result<Self::Linear> {
        Ok((weight, bias))
    }
    fn prepare_norm(t: Tensor) -> Result<Tensor> {
        Ok(t)
    }
    fn prepare_activations(t: Tensor) -> Result<Tensor> {
        Ok(t)
    }
    fn linear(
        (weight, bias): &Self::Linear,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Option<Activation>,
    ) -> CResult<Tensor> {
        let mut ys = x.matmul(&weight.t()?)?;
        if let Some(b) = bias {
            ys = ys.broadcast_add(b)?;
        }
        if let Some(r) = residual {
            ys = (ys + r)?;
        }
        match act {
            Some(act) => act.apply(&ys),
            None => Ok(ys),
        }
    }
    fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f32) -> CResult<Tensor> {
        let x = x.contiguous()?;
        match bias {
            Some(b) => candle_nn::ops::layer_norm(&x, weight, b, eps),
            None => {
                let zeros = weight.zeros_like()?;
                candle_nn::ops::layer_norm(&x, weight, &zeros, eps)
            }
        }
    }
    fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> CResult<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps)
    }
    fn glu(x: &Tensor, inter: usize, act: Activation) -> CResult<Tensor> {
        let input = x.narrow(1, 0, inter)?;
        let gate = x.narrow(1, inter, inter)?;
        act.apply(&input)? * gate
    }
    fn attention(qkv: &Tensor, batch: &PackedBatch, spec: &AttentionSpec<'_>) -> CResult<Tensor> {
        attention::attention(qkv, batch, spec)
    }
}

/// Fused f32 kernels on the CPU.
pub(crate) struct CpuF32;

impl Backend for CpuF32 {
    const FFN_BLOCKS: bool = true;
    type Linear = (Tensor, Option<Tensor>);

    fn prepare_linear(weight: Tensor, bias: Option<Tensor>) -> Result<Self::Linear> {
        Ok((
            weight.to_dtype(DType::F32)?.contiguous()?,
            bias.map(|b| b.to_dtype(DType::F32)).transpose()?,
        ))
    }
    fn prepare_norm(t: Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(DType::F32)?)
    }
    fn prepare_activations(t: Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(DType::F32)?)
    }
    fn linear(
        (weight, bias): &Self::Linear,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Option<Activation>,
    ) -> CResult<Tensor> {
        cpu_f32::linear(&x.contiguous()?, weight, bias.as_ref(), residual, act)
    }
    fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f32) -> CResult<Tensor> {
        cpu_f32::layer_norm(&x.contiguous()?, weight, bias, eps)
    }
    fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> CResult<Tensor> {
        cpu_f32::rms_norm(&x.contiguous()?, weight, eps)
    }
    fn glu(x: &Tensor, inter: usize, act: Activation) -> CResult<Tensor> {
        cpu_f32::glu(&x.contiguous()?, inter, act)
    }
    fn attention(qkv: &Tensor, batch: &PackedBatch, spec: &AttentionSpec<'_>) -> CResult<Tensor> {
        cpu_f32::attention(&qkv.contiguous()?, &batch.cu_seqlens, spec)
    }
}
