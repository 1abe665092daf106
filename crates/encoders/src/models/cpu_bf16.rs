//! The bf16 backend of the CPU: weights packed once at load for the CPU's bf16 matrix
//! instructions (AMX tiles, else AVX512-BF16), activations in bf16 between layers, every
//! product accumulated in f32.
//!
//! - Linear layers: `bf16 x packed bf16 -> f32`, with bias and residual added to the f32
//!   accumulator and the result rounded once to bf16 ([`super::bf16gemm`]); an activation runs
//!   in f32 on the rounded row.
//! - Attention: queries and keys normalised (Qwen3) and rotated in f32, stored in bf16; scores
//!   `Q K^T` and the value product `P V` on the matrix instructions with f32 accumulation; the
//!   softmax in f32 (its probabilities rounded to bf16 for the value product, as torch does).
//! - Layer norm, RMSNorm, GELU/SiLU/GLU: each row widened to f32, computed with the f32 row
//!   kernels ([`super::cpu_f32`]), rounded back once.
//!
//! The loader picks this backend for `--dtype bf16` on a CPU that has AMX or AVX512-BF16
//! ([`available_path`]); elsewhere bf16 runs the f32 kernels, said in one log line.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use candle_core::{DType, Device, Storage, Tensor};
use half::bf16;
use rayon::prelude::*;

use super::attention::AttentionSpec;
use super::backend::Backend;
use super::bf16gemm::{self, Epilogue, PackedB, Path, Residual};
use super::cpu_f32::{self, CpuPath};
use super::ops::Activation;
use super::packed::PackedBatch;
use crate::error::{EncoderError, Result};

type CResult<T> = candle_core::Result<T>;

/// The bf16 matrix path this CPU has: AMX (with the OS's permission for tile data), else
/// AVX512-BF16; `None` on CPUs with neither.
pub(crate) fn available_path() -> Option<Path> {
    #[cfg(test)]
    if let Some(forced) = tests::FORCED_PATH.with(|f| f.get()) {
        return forced.available().then_some(forced);
    }
    match Path::Auto.resolve() {
        Path::Fallback | Path::Auto => None,
        p => Some(p),
    }
}

fn kernel_error(msg: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(format!("bf16 kernel: {}", msg.into()))
}

/// The kernels' bf16 type has `half::bf16`'s layout (a `u16` bit pattern).
fn as_kernel(x: &[bf16]) -> &[bf16gemm::bf16] {
    // SAFETY: both types are `#[repr(transparent)]` over `u16`.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) }
}

fn as_kernel_mut(x: &mut [MaybeUninit<bf16>]) -> &mut [bf16gemm::bf16] {
    // SAFETY: same layout as above. The kernels only write these elements (their outputs),
    // never read them first.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) }
}

/// Run `f` on the contiguous bf16 buffer of a CPU tensor.
fn with_bf16<R>(t: &Tensor, f: impl FnOnce(&[bf16]) -> CResult<R>) -> CResult<R> {
    let (storage, layout) = t.storage_and_layout();
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| kernel_error("tensor is not contiguous"))?;
    match &*storage {
        Storage::Cpu(s) => f(&s.as_slice::<bf16>()?[start..end]),
        _ => Err(kernel_error("tensor is not on the CPU")),
    }
}

fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> CResult<R>) -> CResult<R> {
    let (storage, layout) = t.storage_and_layout();
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| kernel_error("tensor is not contiguous"))?;
    match &*storage {
        Storage::Cpu(s) => f(&s.as_slice::<f32>()?[start..end]),
        _ => Err(kernel_error("tensor is not on the CPU")),
    }
}

/// A bf16 tensor of `shape` whose `len` elements `fill` writes completely before any is read.
///
/// Its data starts on a 64-byte boundary (the buffer has 64 bytes to spare and the tensor is a
/// view into it): the AMX kernel then reads a row-major input's tile rows in place instead of
/// packing them (packing was 5 % of a bf16 MiniLM forward pass).
///
/// # Safety
/// `fill` must initialise all `len` elements.
unsafe fn filled(
    len: usize,
    shape: (usize, usize),
    fill: impl FnOnce(&mut [MaybeUninit<bf16>]) -> CResult<()>,
) -> CResult<Tensor> {
    const PAD: usize = 64 / std::mem::size_of::<bf16>();
    let total = len + PAD;
    let mut out: Vec<bf16> = Vec::with_capacity(total);
    let offset = out.as_ptr().align_offset(64).min(PAD);
    let spare = &mut out.spare_capacity_mut()[..total];
    let (head, rest) = spare.split_at_mut(offset);
    let (body, tail) = rest.split_at_mut(len);
    head.iter_mut().chain(tail.iter_mut()).for_each(|v| {
        v.write(bf16::ZERO);
    });
    fill(body)?;
    // SAFETY: the padding was zeroed and the caller's `fill` wrote the `len` elements.
    out.set_len(total);
    Tensor::from_vec(out, total, &Device::Cpu)?
        .narrow(0, offset, len)?
        .reshape(shape)
}

/// Widen a bf16 row to f32.
#[inline(always)]
fn widen(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits((s.to_bits() as u32) << 16);
    }
}

/// Round an f32 row to bf16 (to nearest, ties to even; NaN stays NaN).
#[inline(always)]
fn narrow(src: &[f32], dst: &mut [MaybeUninit<bf16>]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        let b = s.to_bits();
        let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
        let bits = if s.is_nan() { 0x7fc0 } else { rounded };
        d.write(bf16::from_bits(bits));
    }
}

cpu_f32::dispatched! {
    /// [`widen`] on `path`.
    fn widen_compiled_on / widen(src: &[bf16], dst: &mut [f32])
}

cpu_f32::dispatched! {
    /// [`narrow`] on `path`.
    fn narrow_compiled_on / narrow(src: &[f32], dst: &mut [MaybeUninit<bf16>])
}

/// [`widen`] on `path`: the CPU's own conversion where it has AVX512-BF16.
fn widen_on(path: CpuPath, src: &[bf16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if path == CpuPath::Avx512 && bf16gemm::avx512bf16_available() {
        // SAFETY: the CPU has the features; `convert` reads `min(len)` elements of each.
        return unsafe { convert::widen(src, dst) };
    }
    widen_compiled_on(path, src, dst)
}

/// [`narrow`] on `path`: `VCVTNEPS2BF16` (round to nearest even, NaN kept) where the CPU has
/// AVX512-BF16.
fn narrow_on(path: CpuPath, src: &[f32], dst: &mut [MaybeUninit<bf16>]) {
    #[cfg(target_arch = "x86_64")]
    if path == CpuPath::Avx512 && bf16gemm::avx512bf16_available() {
        // SAFETY: as above.
        return unsafe { convert::narrow(src, dst) };
    }
    narrow_compiled_on(path, src, dst)
}

#[cfg(target_arch = "x86_64")]
mod convert {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use half::bf16;

    fn mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F/BW/VL and BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn widen(src: &[bf16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr().cast::<u16>(), dst.as_mut_ptr());
        let mut i = 0;
        while i < n {
            let m = mask(n - i);
            let h = _mm256_maskz_loadu_epi16(m, s.add(i).cast());
            let v = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
            _mm512_mask_storeu_ps(d.add(i), m, _mm512_castsi512_ps(v));
            i += 16;
        }
    }

    /// # Safety
    /// As [`widen`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn narrow(src: &[f32], dst: &mut [MaybeUninit<bf16>]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr().cast::<u16>());
        let mut i = 0;
        while i < n {
            let m = mask(n - i);
            let v = _mm512_maskz_loadu_ps(m, s.add(i));
            let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
            _mm256_mask_storeu_epi16(d.add(i).cast(), m, h);
            i += 16;
        }
    }
}

/// Round each value to the nearest bf16 value, in place.
#[inline(always)]
fn round_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        let b = v.to_bits();
        let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
        if !v.is_nan() {
            *v = f32::from_bits(rounded);
        }
    }
}

cpu_f32::dispatched! {
    /// [`round_in_place`] on `path`.
    fn round_in_place_on / round_in_place(x: &mut [f32])
}

/// RoPE as transformers applies it in bf16: `x * cos + rotate_half(x) * sin` with `cos` and
/// `sin` rounded to bf16, each product and the sum rounded to bf16.
fn rotate_half_rounded(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let r = |v: f32| bf16::from_f32(v).to_f32();
    let half = x.len() / 2;
    let (lo, hi) = x.split_at_mut(half);
    for ((l, h), (&c, &s)) in lo.iter_mut().zip(hi.iter_mut()).zip(cos.iter().zip(sin)) {
        let (a, b, c, s) = (*l, *h, r(c), r(s));
        *l = r(r(a * c) + r(-b * s));
        *h = r(r(b * c) + r(a * s));
    }
}

/// `x / sqrt(mean(x^2) + eps)` in place (RMSNorm without its weight).
#[inline(always)]
fn rms_normalize(x: &mut [f32], eps: f32) {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            acc[l] += c[l] * c[l];
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    let mean = (acc.iter().sum::<f32>() + tail) / x.len().max(1) as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    x.iter_mut().for_each(|v| *v *= inv);
}

cpu_f32::dispatched! {
    /// [`rms_normalize`] on `path`.
    fn rms_normalize_on / rms_normalize(x: &mut [f32], eps: f32)
}

thread_local! {
    /// Two f32 rows of scratch per thread (input and output of a row kernel).
    static ROWS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `out[i] = f(x[i])` row by row: each input row (`in_dim` bf16) widened to f32, `f` writes
/// the f32 output row (`out_dim`), which is rounded to bf16.
fn map_rows(
    x: &[bf16],
    in_dim: usize,
    out: &mut [MaybeUninit<bf16>],
    out_dim: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let path = CpuPath::best();
    const ROWS_PER_TASK: usize = 16;
    out.par_chunks_mut(out_dim * ROWS_PER_TASK)
        .zip(x.par_chunks(in_dim * ROWS_PER_TASK))
        .for_each(|(out_rows, in_rows)| {
            ROWS.with(|scratch| {
                let (a, b) = &mut *scratch.borrow_mut();
                a.resize(in_dim, 0.0);
                b.resize(out_dim, 0.0);
                for (o, i) in out_rows
                    .chunks_exact_mut(out_dim)
                    .zip(in_rows.chunks_exact(in_dim))
                {
                    widen_on(path, i, a);
                    f(a, b);
                    narrow_on(path, b, o);
                }
            })
        });
}

/// A linear layer's weights packed for the bf16 kernels, and its bias in f32.
pub(crate) struct PackedLinear {
    weight: PackedB,
    bias: Option<Vec<f32>>,
    path: Path,
}

/// The bf16 backend (see the module's documentation).
pub(crate) struct CpuBf16;

impl Backend for CpuBf16 {
    const FFN_BLOCKS: bool = true;
    const ROUND_BF16: bool = true;
    type Linear = PackedLinear;

    /// A bf16 addition (f32 sum, rounded once), without candle's bf16 element loop (which
    /// took 14 % of a bf16 MiniLM forward pass for the embedding sums alone).
    fn add(a: &Tensor, b: &Tensor) -> CResult<Tensor> {
        let (a, b) = (
            a.to_dtype(DType::BF16)?.contiguous()?,
            b.to_dtype(DType::BF16)?.contiguous()?,
        );
        if a.dims() != b.dims() {
            return Err(kernel_error(format!(
                "add: shapes {:?} and {:?} differ",
                a.dims(),
                b.dims()
            )));
        }
        let len = a.elem_count();
        let path = CpuPath::best();
        let fill = |out: &mut [MaybeUninit<bf16>]| -> CResult<()> {
            with_bf16(&a, |xs| {
                with_bf16(&b, |ys| {
                    const CHUNK: usize = 4096;
                    out.par_chunks_mut(CHUNK)
                        .zip(xs.par_chunks(CHUNK).zip(ys.par_chunks(CHUNK)))
                        .for_each(|(o, (x, y))| {
                            ROWS.with(|scratch| {
                                let (fx, fy) = &mut *scratch.borrow_mut();
                                fx.resize(x.len(), 0.0);
                                fy.resize(y.len(), 0.0);
                                widen_on(path, x, fx);
                                widen_on(path, y, fy);
                                fx.iter_mut().zip(fy.iter()).for_each(|(p, q)| *p += q);
                                narrow_on(path, fx, o);
                            })
                        });
                    Ok(())
                })
            })
        };
        let shape = a.dims2()?;
        // SAFETY: the chunks cover every element.
        unsafe { filled(len, shape, fill) }
    }

    fn prepare_linear(weight: Tensor, bias: Option<Tensor>) -> Result<Self::Linear> {
        let path = available_path().ok_or_else(|| EncoderError::InvalidOption {
            name: "dtype".into(),
            value: "bf16".into(),
            reason: "this CPU has no bf16 matrix instructions".into(),
        })?;
        let (n, k) = weight.dims2()?;
        let weight = weight.to_dtype(DType::F32)?.contiguous()?;
        let packed = with_f32(&weight, |w| Ok(PackedB::from_f32_nk(w, n, k, k)))?;
        // Biases as bf16 values, as a bf16 checkpoint holds them.
        let bias = match bias {
            Some(b) => Some(
                b.to_dtype(DType::BF16)?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?,
            ),
            None => None,
        };
        if bias.as_ref().is_some_and(|b| b.len() != n) {
            return Err(EncoderError::Candle(kernel_error(format!(
                "bias of {} values for {n} outputs",
                bias.as_ref().map_or(0, Vec::len)
            ))));
        }
        Ok(PackedLinear {
            weight: packed,
            bias,
            path,
        })
    }

    /// Norm parameters as bf16 values (what a bf16 checkpoint holds), kept in f32 for the row
    /// kernels.
    fn prepare_norm(t: Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?)
    }

    fn prepare_activations(t: Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(DType::BF16)?)
    }

    fn linear(
        l: &Self::Linear,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Option<Activation>,
    ) -> CResult<Tensor> {
        let x = x.to_dtype(DType::BF16)?.contiguous()?;
        let (m, k) = x.dims2()?;
        let n = l.weight.n();
        if k != l.weight.k() {
            return Err(kernel_error(format!(
                "linear: input has {k} features, weight expects {}",
                l.weight.k()
            )));
        }
        let residual = residual
            .map(|r| r.to_dtype(DType::BF16)?.contiguous())
            .transpose()?;
        if let Some(r) = &residual {
            if r.dims2()? != (m, n) {
                return Err(kernel_error(format!(
                    "linear: residual {:?} does not match output ({m}, {n})",
                    r.dims()
                )));
            }
        }
        let fill = |out: &mut [MaybeUninit<bf16>]| -> CResult<()> {
            with_bf16(&x, |xs| {
                let mut run = |res: Residual<'_>| {
                    // The activation runs in the epilogue (on the rounded product, as
                    // its own bf16 operation would), unless a residual comes first.
                    let epi = Epilogue {
                        scale: 1.0,
                        bias: l.bias.as_deref(),
                        residual: res,
                        round_before_residual: true,
                        activation: if residual.is_none() { act } else { None },
                    };
                    bf16gemm::gemm_bf16(
                        l.path,
                        m,
                        as_kernel(xs),
                        k,
                        &l.weight,
                        bf16gemm::Output::Bf16 {
                            data: as_kernel_mut(out),
                            ld: n,
                        },
                        &epi,
                    )
                    .map_err(|e| kernel_error(e.to_string()))
                };
                match &residual {
                    Some(r) => with_bf16(r, |rs| {
                        run(Residual::Bf16 {
                            data: as_kernel(rs),
                            ld: n,
                        })
                    }),
                    None => run(Residual::None),
                }
            })
        };
        // SAFETY: the gemm writes every element of the m x n output.
        let out = unsafe { filled(m * n, (m, n), fill)? };
        match act {
            Some(act) if residual.is_some() => activate(&out, act),
            _ => Ok(out),
        }
    }

    fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f32) -> CResult<Tensor> {
        let x = x.to_dtype(DType::BF16)?.contiguous()?;
        let (n, dim) = x.dims2()?;
        let path = CpuPath::best();
        let fill = |out: &mut [MaybeUninit<bf16>]| -> CResult<()> {
            with_bf16(&x, |xs| {
                with_f32(weight, |w| {
                    let mut run = |b: Option<&[f32]>| {
                        if w.len() != dim || b.is_some_and(|b| b.len() != dim) {
                            return Err(kernel_error(format!(
                                "layer_norm: weight or bias is not of size {dim}"
                            )));
                        }
                        map_rows(xs, dim, out, dim, |row, o| {
                            // SAFETY: `MaybeUninit<f32>` has `f32`'s layout; the kernel
                            // writes every element.
                            let o = unsafe {
                                std::slice::from_raw_parts_mut(
                                    o.as_mut_ptr().cast::<MaybeUninit<f32>>(),
                                    o.len(),
                                )
                            };
                            cpu_f32::layer_norm_row_on(path, row, o, w, b, eps)
                        });
                        Ok(())
                    };
                    match bias {
                        Some(b) => with_f32(b, |b| run(Some(b))),
                        None => run(None),
                    }
                })
            })
        };
        // SAFETY: `map_rows` writes every row.
        unsafe { filled(n * dim, (n, dim), fill) }
    }

    fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> CResult<Tensor> {
        let x = x.to_dtype(DType::BF16)?.contiguous()?;
        let (n, dim) = x.dims2()?;
        let path = CpuPath::best();
        let fill = |out: &mut [MaybeUninit<bf16>]| -> CResult<()> {
            with_bf16(&x, |xs| {
                with_f32(weight, |w| {
                    if w.len() != dim {
                        return Err(kernel_error(format!(
                            "rms_norm: weight is not of size {dim}"
                        )));
                    }
                    // Normalised in f32, rounded to bf16, then scaled by the weight (and
                    // rounded again), as transformers' Qwen RMSNorm does in bf16.
                    map_rows(xs, dim, out, dim, |row, o| {
                        o.copy_from_slice(row);
                        rms_normalize_on(path, o, eps);
                        round_in_place_on(path, o);
                        o.iter_mut().zip(w).for_each(|(v, &w)| *v *= w);
                    });
                    Ok(())
                })
            })
        };
        // SAFETY: `map_rows` writes every row.
        unsafe { filled(n * dim, (n, dim), fill) }
    }

    fn glu(x: &Tensor, inter: usize, act: Activation) -> CResult<Tensor> {
        let x = x.to_dtype(DType::BF16)?.contiguous()?;
        let (n, two) = x.dims2()?;
        if two != 2 * inter {
            return Err(kernel_error(format!(
                "glu: input width {two} is not 2 x {inter}"
            )));
        }
        let path = CpuPath::best();
        let fill = |out: &mut [MaybeUninit<bf16>]| -> CResult<()> {
            if inter == 0 {
                return Ok(());
            }
            with_bf16(&x, |xs| {
                map_rows(xs, two, out, inter, |row, o| {
                    // The activation is rounded to bf16 before the product, as two bf16
                    // operations round it.
                    o.copy_from_slice(&row[..inter]);
                    cpu_f32::activate_on(path, o, act);
                    round_in_place_on(path, o);
                    o.iter_mut().zip(&row[inter..]).for_each(|(y, g)| *y *= g);
                });
                Ok(())
            })
        };
        // SAFETY: `map_rows` writes every row.
        unsafe { filled(n * inter, (n, inter), fill) }
    }

    fn attention(qkv: &Tensor, batch: &PackedBatch, spec: &AttentionSpec<'_>) -> CResult<Tensor> {
        attention(
            &qkv.to_dtype(DType::BF16)?.contiguous()?,
            &batch.cu_seqlens,
            spec,
        )
    }
}

/// `act` applied to every element of a bf16 `[n, dim]` tensor, in f32.
fn activate(x: &Tensor, act: Activation) -> CResult<Tensor> {
    let (n, dim) = x.dims2()?;
    let path = CpuPath::best();
    let fill = |out: &mut [MaybeUninit<bf16>]| -> CResult<()> {
        with_bf16(x, |xs| {
            map_rows(xs, dim, out, dim, |row, o| {
                o.copy_from_slice(row);
                cpu_f32::activate_on(path, o, act);
            });
            Ok(())
        })
    };
    // SAFETY: `map_rows` writes every row.
    unsafe { filled(n * dim, (n, dim), fill) }
}

/// Query rows per attention task.
const QUERY_BLOCK: usize = 256;

/// Multi-head attention over the fused bf16 projection `qkv: [n, (heads + 2 kv_heads) d]` of a
/// packed batch; returns `[n, heads d]` in bf16. The same tasks and masks as the f32 kernel
/// ([`cpu_f32::attention`]), with both products on the bf16 matrix instructions.
pub(crate) fn attention(
    qkv: &Tensor,
    cu_seqlens: &[u32],
    spec: &AttentionSpec<'_>,
) -> CResult<Tensor> {
    let path = available_path().ok_or_else(|| kernel_error("no bf16 matrix instructions"))?;
    let (heads, kv_heads, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(kernel_error(format!(
            "attention: {kv_heads} key/value heads do not divide {heads} heads"
        )));
    }
    let width = spec.qkv_width();
    let hidden = heads * d;
    let (n, got) = qkv.dims2()?;
    if got != width {
        return Err(kernel_error(format!(
            "attention: qkv width {got} is not ({heads} + 2 x {kv_heads}) x {d}"
        )));
    }
    let ordered =
        cu_seqlens.first().is_none_or(|&f| f == 0) && cu_seqlens.windows(2).all(|w| w[0] <= w[1]);
    if !ordered || cu_seqlens.last().copied().unwrap_or(0) as usize != n {
        return Err(kernel_error(format!(
            "attention: sequence offsets {:?}.. are not increasing from 0 to the {n} tokens",
            &cu_seqlens[..cu_seqlens.len().min(8)]
        )));
    }
    let max_len = cu_seqlens
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .max()
        .unwrap_or(0);
    let mut tasks = Vec::new();
    for w in cu_seqlens.windows(2) {
        let (start, len) = (w[0] as usize, (w[1] - w[0]) as usize);
        for h in 0..heads {
            for q0 in (0..len).step_by(QUERY_BLOCK) {
                tasks.push((start, len, h, q0, (q0 + QUERY_BLOCK).min(len)));
            }
        }
    }
    let shape = Shape {
        d,
        group: spec.group(),
        scale: 1.0 / (d as f32).sqrt(),
        half_window: spec.half_window,
        causal: spec.causal,
        hidden,
        path,
    };
    let fill = |out: &mut [MaybeUninit<bf16>]| -> CResult<()> {
        with_bf16(qkv, |src| {
            // Queries and keys: straight from the projection, or normalised and rotated once.
            let prepared;
            let (qk, qk_stride): (&[bf16], usize) = if spec.rope.is_none() && spec.qk_norm.is_none()
            {
                (src, width)
            } else {
                prepared = prepare_queries_and_keys(src, cu_seqlens, max_len, spec)?;
                (&prepared, (heads + kv_heads) * d)
            };
            let dst = SharedOut(out.as_mut_ptr().cast::<bf16>());
            let operands = Operands {
                qk,
                qk_stride,
                k_offset: heads * d,
                v: &src[(heads + kv_heads) * d..],
                v_stride: width,
            };
            tasks
                .par_iter()
                .try_for_each_init(Scratch::default, |scratch, &task| {
                    // SAFETY: each task writes rows [start + q0, start + q1) of head h's
                    // columns only; tasks never overlap and `out` outlives the loop.
                    unsafe { attend_block(&operands, dst, task, &shape, scratch) }
                })
        })
    };
    // SAFETY: the offsets cover every token once; each token's row gets all `heads` blocks of
    // `d` columns from its tasks.
    unsafe { filled(n * hidden, (n, hidden), fill) }
}

/// The queries and keys of the fused projection `src`, normalised and rotated in f32 by their
/// position inside their sequence, rounded to bf16: `[n, (heads + kv_heads) d]`.
fn prepare_queries_and_keys(
    src: &[bf16],
    cu_seqlens: &[u32],
    max_len: usize,
    spec: &AttentionSpec<'_>,
) -> CResult<Vec<bf16>> {
    let (heads, kv_heads, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    let half = d / 2;
    let norms = spec
        .qk_norm
        .as_ref()
        .map(|norm| -> CResult<(Vec<f32>, Vec<f32>, f32)> {
            Ok((norm.q.to_vec1()?, norm.k.to_vec1()?, norm.eps))
        })
        .transpose()?;
    if let Some((qw, kw, _)) = &norms {
        if qw.len() != d || kw.len() != d {
            return Err(kernel_error(format!(
                "attention: query/key norm weights are not of head size {d}"
            )));
        }
    }
    let run = |tables: Option<(&[f32], &[f32])>| -> CResult<Vec<bf16>> {
        if let Some((cos, _)) = tables {
            if d % 2 != 0 || cos.len() < max_len * half {
                return Err(kernel_error(format!(
                    "attention: RoPE table covers {} positions of head size {d}, a sequence has {max_len}",
                    cos.len() / half.max(1)
                )));
            }
        }
        Ok(rotate_queries_and_keys(
            src,
            cu_seqlens,
            (heads, kv_heads, d),
            spec.qkv_width(),
            tables,
            norms
                .as_ref()
                .map(|(q, k, e)| (q.as_slice(), k.as_slice(), *e)),
            spec.rounds_each_op,
        ))
    };
    match spec.rope {
        Some(rope) => with_f32(&rope.cos, |c| with_f32(&rope.sin, |s| run(Some((c, s))))),
        None => run(None),
    }
}

/// [`prepare_queries_and_keys`] once its tables are read.
fn rotate_queries_and_keys(
    src: &[bf16],
    cu_seqlens: &[u32],
    (heads, kv_heads, d): (usize, usize, usize),
    width: usize,
    tables: Option<(&[f32], &[f32])>,
    norms: Option<(&[f32], &[f32], f32)>,
    rounds_each_op: bool,
) -> Vec<bf16> {
    let qk_width = (heads + kv_heads) * d;
    let n = cu_seqlens.last().copied().unwrap_or(0) as usize;
    let half = d / 2;
    let mut positions = vec![0usize; n];
    for w in cu_seqlens.windows(2) {
        for (p, t) in (w[0] as usize..w[1] as usize).enumerate() {
            positions[t] = p;
        }
    }
    let path = CpuPath::best();
    let mut out: Vec<bf16> = Vec::with_capacity(n * qk_width);
    out.spare_capacity_mut()[..n * qk_width]
        .par_chunks_mut(qk_width)
        .zip(src.par_chunks(width))
        .zip(positions.par_iter())
        .for_each(|((dst, row), &pos)| {
            ROWS.with(|scratch| {
                let (f, _) = &mut *scratch.borrow_mut();
                f.resize(qk_width, 0.0);
                widen_on(path, &row[..qk_width], f);
                for (head, x) in f.chunks_exact_mut(d).enumerate() {
                    if let Some((qw, kw, eps)) = norms {
                        let w = if head < heads { qw } else { kw };
                        if rounds_each_op {
                            rms_normalize_on(path, x, eps);
                            round_in_place_on(path, x);
                            x.iter_mut().zip(w).for_each(|(v, &w)| *v *= w);
                            round_in_place_on(path, x);
                        } else {
                            cpu_f32::rms_norm_row_on(path, x, w, eps);
                        }
                    }
                    if let Some((cos, sin)) = tables {
                        let c = &cos[pos * half..(pos + 1) * half];
                        let s = &sin[pos * half..(pos + 1) * half];
                        if rounds_each_op {
                            rotate_half_rounded(x, c, s);
                        } else {
                            cpu_f32::rotate_half_on(path, x, c, s);
                        }
                    }
                }
                narrow_on(path, f, dst);
            })
        });
    // SAFETY: every row of `n` rows was written in full by `narrow_on`.
    unsafe { out.set_len(n * qk_width) };
    out
}

/// A raw pointer that rayon tasks may share; every task writes a disjoint region.
#[derive(Clone, Copy)]
struct SharedOut(*mut bf16);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// Where the tasks read queries, keys and values.
struct Operands<'a> {
    /// Queries, then keys, `qk_stride` apart.
    qk: &'a [bf16],
    qk_stride: usize,
    /// Column of the first key head in `qk`.
    k_offset: usize,
    /// Values (from their first column), `v_stride` apart.
    v: &'a [bf16],
    v_stride: usize,
}

struct Shape {
    d: usize,
    group: usize,
    scale: f32,
    half_window: Option<usize>,
    causal: bool,
    hidden: usize,
    path: Path,
}

#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    probs: Vec<bf16gemm::bf16>,
    out: Vec<f32>,
    inv_sums: Vec<f32>,
}

/// The keys query `qi` of a sequence of `len` tokens sees: `lo..hi`.
fn visible_keys(qi: usize, len: usize, half_window: Option<usize>, causal: bool) -> (usize, usize) {
    let (mut lo, mut hi) = (0, len);
    if let Some(w) = half_window {
        lo = qi.saturating_sub(w);
        hi = (qi + w + 1).min(len);
    }
    if causal {
        hi = hi.min(qi + 1);
    }
    (lo, hi)
}

/// One attention task: query rows `[q0, q1)` of head `h` of the sequence at `start`.
///
/// # Safety
/// `dst` must point to an `[n, hidden]` buffer that no other task writes in these rows and
/// columns.
unsafe fn attend_block(
    ops: &Operands<'_>,
    dst: SharedOut,
    (start, len, h, q0, q1): (usize, usize, usize, usize, usize),
    shape: &Shape,
    scratch: &mut Scratch,
) -> CResult<()> {
    let d = shape.d;
    let kv = h / shape.group;
    let (k0, _) = visible_keys(q0, len, shape.half_window, shape.causal);
    let (_, k1) = visible_keys(q1 - 1, len, shape.half_window, shape.causal);
    let (m, kl) = (q1 - q0, k1 - k0);
    let qs = &ops.qk[(start + q0) * ops.qk_stride + h * d..];
    let ks = &ops.qk[(start + k0) * ops.qk_stride + ops.k_offset + kv * d..];
    let vs = &ops.v[(start + k0) * ops.v_stride + kv * d..];
    scratch.scores.resize(m * kl, 0.0);
    bf16gemm::attn_scores(
        shape.path,
        m,
        kl,
        d,
        as_kernel(&qs[..(m - 1) * ops.qk_stride + d]),
        ops.qk_stride,
        as_kernel(&ks[..(kl - 1) * ops.qk_stride + d]),
        ops.qk_stride,
        bf16gemm::Output::F32 {
            data: &mut scratch.scores,
            ld: kl,
        },
        &Epilogue {
            scale: shape.scale,
            ..Epilogue::default()
        },
    )
    .map_err(|e| kernel_error(e.to_string()))?;
    // Unnormalised softmax per row over the keys the row sees, rounded to bf16 for the value
    // product; the 1/sum scaling is applied to the [m, d] output rows.
    scratch.inv_sums.clear();
    scratch.probs.resize(m * kl, bf16gemm::bf16(0));
    for (i, (row, probs)) in scratch
        .scores
        .chunks_exact_mut(kl)
        .zip(scratch.probs.chunks_exact_mut(kl))
        .enumerate()
    {
        let (lo, hi) = visible_keys(q0 + i, len, shape.half_window, shape.causal);
        let (lo, hi) = (lo - k0, hi - k0);
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
        let sum = cpu_f32::exp_shifted_sum(&mut row[lo..hi]);
        scratch.inv_sums.push(1.0 / sum);
        let probs: &mut [MaybeUninit<bf16>] =
            std::slice::from_raw_parts_mut(probs.as_mut_ptr().cast(), probs.len());
        narrow_on(CpuPath::best(), row, probs);
    }
    scratch.out.resize(m * d, 0.0);
    bf16gemm::attn_pv(
        shape.path,
        m,
        kl,
        d,
        &scratch.probs,
        kl,
        as_kernel(&vs[..(kl - 1) * ops.v_stride + d]),
        ops.v_stride,
        bf16gemm::Output::F32 {
            data: &mut scratch.out,
            ld: d,
        },
        &Epilogue::default(),
    )
    .map_err(|e| kernel_error(e.to_string()))?;
    let path = CpuPath::best();
    for (i, (row, &inv)) in scratch
        .out
        .chunks_exact_mut(d)
        .zip(&scratch.inv_sums)
        .enumerate()
    {
        row.iter_mut().for_each(|x| *x *= inv);
        let out = std::slice::from_raw_parts_mut(
            dst.0
                .add((start + q0 + i) * shape.hidden + h * d)
                .cast::<MaybeUninit<bf16>>(),
            d,
        );
        narrow_on(path, row, out);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{CrossEncoder, CrossEncoderOptions, DeviceSpec, EncodedPair, Precision};
    use std::cell::Cell;
    use std::path::PathBuf;

    thread_local! {
        /// The bf16 path models loaded on this thread use (tests pick each path in turn).
        pub(crate) static FORCED_PATH: Cell<Option<Path>> = const { Cell::new(None) };
    }

    /// Run `check` with every bf16 path this CPU has; the others are reported as skipped.
    fn on_every_bf16_path(what: &str, check: impl Fn(Path)) {
        for path in [Path::Amx, Path::Avx512Bf16] {
            if !path.available() {
                eprintln!("{what} on {path:?}: SKIPPED (this CPU lacks it)");
                continue;
            }
            FORCED_PATH.with(|f| f.set(Some(path)));
            check(path);
            FORCED_PATH.with(|f| f.set(None));
            eprintln!("{what} on {path:?}: checked");
        }
    }

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// bf16 conversions on every path equal `half`'s (round to nearest, ties to even), for
    /// ties, both signs, infinities and NaN, over lengths around the 16 lanes.
    #[test]
    fn conversions_round_to_nearest_even_on_every_path() {
        let mut values: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            -(1.0 + 1.0 / 256.0),
            65_504.5,
            1e-30,
        ];
        values.extend((0..200).map(|i| (i as f32 * 0.731).sin() * 10f32.powi(i % 7 - 3)));
        for path in CpuPath::ALL {
            if !path.available() {
                eprintln!("bf16 conversions on {path:?}: SKIPPED (this CPU lacks it)");
                continue;
            }
            for len in [1usize, 15, 16, 17, values.len()] {
                let src = &values[..len];
                let mut out = vec![MaybeUninit::<bf16>::uninit(); len];
                narrow_on(path, src, &mut out);
                for (v, o) in src.iter().zip(&out) {
                    // SAFETY: `narrow_on` wrote every element.
                    let o = unsafe { o.assume_init() };
                    assert_eq!(o.to_bits(), bf16::from_f32(*v).to_bits(), "{path:?} {v}");
                }
                let halves: Vec<bf16> = src.iter().map(|&v| bf16::from_f32(v)).collect();
                let mut back = vec![0f32; len];
                widen_on(path, &halves, &mut back);
                for (h, b) in halves.iter().zip(&back) {
                    assert_eq!(b.to_bits(), h.to_f32().to_bits(), "{path:?}");
                }
            }
            let mut nan = vec![MaybeUninit::<bf16>::uninit(); 1];
            narrow_on(path, &[f32::NAN], &mut nan);
            // SAFETY: written above.
            assert!(unsafe { nan[0].assume_init() }.is_nan(), "{path:?}");
            eprintln!("bf16 conversions on {path:?}: checked");
        }
    }

    fn read(name: String) -> serde_json::Value {
        let path = fixtures().join(name);
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn kendall_tau(a: &[f32], b: &[f32]) -> f64 {
        let (mut concordant, mut discordant) = (0i64, 0i64);
        for i in 0..a.len() {
            for j in i + 1..a.len() {
                let s = (a[i] - a[j]) * (b[i] - b[j]);
                if s > 0.0 {
                    concordant += 1;
                } else if s < 0.0 {
                    discordant += 1;
                }
            }
        }
        (concordant - discordant) as f64 / ((a.len() * (a.len() - 1) / 2).max(1)) as f64
    }

    /// The bf16 backend on every fixture, against the float32 logits and against transformers
    /// run in bf16 (`scripts/make_bf16_references.py`): its drift from f32 is of the size of
    /// transformers' own bf16 drift, and it ranks the cases as consistently with f32.
    #[test]
    fn bf16_models_drift_from_f32_no_more_than_transformers_bf16() {
        on_every_bf16_path("bf16 models", |path| {
            for name in [
                "bert-2label-vocab",
                "bert-3label",
                "modernbert-1label-mean",
                "modernbert-3label-cls-bias",
                "modernbert-sliding",
                "xlmr-1label",
                "electra-2label",
                "qwen3-reranker-st",
                "qwen2-reranker",
            ] {
                let reference = read(format!("{name}.reference.json"));
                let torch = read(format!("{name}.bf16.json"));
                let model = CrossEncoder::from_dir(
                    fixtures().join(name),
                    CrossEncoderOptions::default()
                        .device(DeviceSpec::Cpu)
                        .dtype(Precision::Bf16)
                        .max_batch_tokens(1 << 20),
                )
                .unwrap();
                assert_eq!(model.dtype(), DType::BF16, "{name}");
                let encodings: Vec<EncodedPair> = reference["cases"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        let ids: Vec<u32> = serde_json::from_value(c["input_ids"].clone()).unwrap();
                        let type_ids = match c.get("token_type_ids") {
                            Some(t) if !t.is_null() => serde_json::from_value(t.clone()).unwrap(),
                            _ => vec![0; ids.len()],
                        };
                        EncodedPair { ids, type_ids }
                    })
                    .collect();
                let (ours, _) = model.predict_encoded(&encodings, None).unwrap();
                let (mut vs_torch, mut ours_drift, mut torch_drift) = (0f32, 0f32, 0f32);
                let (mut ours_sum, mut torch_sum, mut count) = (0f32, 0f32, 0usize);
                let (mut ours_first, mut torch_first, mut f32_first) = (vec![], vec![], vec![]);
                for (p, case) in ours.iter().zip(torch["cases"].as_array().unwrap()) {
                    let t: Vec<f32> = serde_json::from_value(case["logits_bf16"].clone()).unwrap();
                    let f: Vec<f32> = serde_json::from_value(case["logits_f32"].clone()).unwrap();
                    for ((&o, &t), &f) in p.logits.iter().zip(&t).zip(&f) {
                        vs_torch = vs_torch.max((o - t).abs());
                        ours_drift = ours_drift.max((o - f).abs());
                        torch_drift = torch_drift.max((t - f).abs());
                        ours_sum += (o - f).abs();
                        torch_sum += (t - f).abs();
                        count += 1;
                    }
                    ours_first.push(p.logits[p.logits.len() - 1]);
                    torch_first.push(t[t.len() - 1]);
                    f32_first.push(f[f.len() - 1]);
                }
                let (ours_mean, torch_mean) = (ours_sum / count as f32, torch_sum / count as f32);
                let (ours_tau, torch_tau) = (
                    kendall_tau(&ours_first, &f32_first),
                    kendall_tau(&torch_first, &f32_first),
                );
                eprintln!(
                    "{name} ({path:?}): vs transformers bf16 max {vs_torch:.3e}; drift from f32 \
                     max {ours_drift:.3e} (transformers {torch_drift:.3e}), mean {ours_mean:.3e} \
                     (transformers {torch_mean:.3e}); Kendall tau vs f32 {ours_tau:.3} \
                     (transformers {torch_tau:.3})"
                );
                assert!(
                    ours_mean <= 1.5 * torch_mean + 2e-3,
                    "{name}: mean drift {ours_mean} vs {torch_mean}"
                );
                assert!(
                    ours_drift <= 2.0 * torch_drift + 1e-2,
                    "{name}: max drift {ours_drift} vs {torch_drift}"
                );
                assert!(
                    ours_tau >= torch_tau - 0.05,
                    "{name}: tau {ours_tau} vs {torch_tau}"
                );
            }
        });
    }
}
