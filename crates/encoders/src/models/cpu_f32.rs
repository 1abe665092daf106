//! Fused f32 kernels for the CPU forward pass.
//!
//! candle runs one op at a time: a linear layer is a matmul, then a bias pass, then an
//! activation pass, each allocating a fresh output, and attention is a batched matmul over
//! small per-head matrices followed by a separate softmax. On a 2-core machine those extra
//! passes, page faults and per-op thread hand-offs cost as much as the matmuls themselves.
//! These kernels work on the tensors' f32 buffers directly:
//!
//! - [`linear`]: the output is pre-filled with bias (+ residual), the matmul accumulates into
//!   it, and the activation runs in place.
//! - [`attention`]: reads q, k and v straight out of the fused projection (grouped key/value
//!   heads included), normalises and rotates queries and keys once when asked, and runs one
//!   task per (sequence, head, block of query rows): scores, softmax and the value product
//!   stay in a per-thread scratch buffer (the softmax's division is applied to the small
//!   output rows, not to the scores). Sliding-window and causal layers only compute the keys
//!   they can see.
//! - [`glu`]: ModernBERT's `act(input) * gate` (and Qwen's `silu(gate) * up`) in one pass.
//! - [`layer_norm`], [`rms_norm`]: one pass per row.
//!
//! Activations and `exp` use branch-free polynomial approximations (about 1e-7 absolute
//! error) that the compiler vectorises; the AVX2 build is chosen at run time.
//!
//! The `CpuF32` backend runs these for models loaded in f32 on the CPU; every other device or
//! dtype has its own backend, and the parity tests run each against transformers.

use std::mem::MaybeUninit;

use candle_core::{Device, Storage, Tensor};
use rayon::prelude::*;

use super::attention::AttentionSpec;
use super::ops::Activation;

type CResult<T> = candle_core::Result<T>;

/// `pub fn name / generic(args) -> ret`: `name(path, args)` runs `generic`, an
/// `#[inline(always)]` function, compiled for AVX-512 or AVX2+FMA when `path` is one of those
/// and the CPU has it, and plain otherwise.
macro_rules! dispatched {
    ($(#[$doc:meta])* $vis:vis fn $name:ident / $generic:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$doc])*
        $vis fn $name(path: CpuPath, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                if path.available() {
                    match path {
                        // SAFETY: the CPU has the features each variant is compiled for.
                        CpuPath::Avx512 => return unsafe { avx512($($arg),*) },
                        CpuPath::Avx2 => return unsafe { avx2($($arg),*) },
                        CpuPath::Generic => {}
                    }
                }
            }
            let _ = path;
            $generic($($arg),*)
        }
    };
}

pub(crate) use dispatched;

fn kernel_error(msg: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(format!("cpu kernel: {}", msg.into()))
}

/// Run `f` on the contiguous f32 buffer of a CPU tensor.
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

fn with_opt_f32<R>(t: Option<&Tensor>, f: impl FnOnce(Option<&[f32]>) -> CResult<R>) -> CResult<R> {
    match t {
        Some(t) => with_f32(t, |s| f(Some(s))),
        None => f(None),
    }
}

/// A buffer of `len` f32s that `fill` writes completely (every element, before any is read);
/// it is not zeroed first. Zeroing cost a memset of every layer output (1.5 % of a
/// ModernBERT-base forward pass on an AMD EPYC) that the matmul or copy then overwrote.
///
/// # Safety
/// `fill` must initialise all `len` elements.
unsafe fn uninit_filled(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<f32>]) -> CResult<()>,
) -> CResult<Vec<f32>> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len])?;
    // SAFETY: the caller's `fill` wrote all `len` elements.
    out.set_len(len);
    Ok(out)
}

/// The buffer as a raw f32 pointer, for writers (gemm) that fill it without reading it first;
/// nothing may read an element through it before it is written.
fn as_f32_ptr(buf: &mut [MaybeUninit<f32>]) -> *mut f32 {
    buf.as_mut_ptr().cast::<f32>()
}

/// A raw pointer that rayon tasks may share; every task writes a disjoint region.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

/// Threads to hand to gemm for an `m x n x k` product.
fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && m * n * k >= 48 * 48 * 48 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// `act(x W^T + bias + residual)` for `x: [n, in]`, `w: [out, in]`; act only without residual
/// (BERT and ModernBERT never need both).
pub(crate) fn linear(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    act: Option<Activation>,
) -> CResult<Tensor> {
    let (n, k) = x.dims2()?;
    let (o, k2) = w.dims2()?;
    if k != k2 {
        return Err(kernel_error(format!(
            "linear: input has {k} features, weight expects {k2}"
        )));
    }
    if let Some(r) = residual {
        if r.dims2()? != (n, o) {
            return Err(kernel_error(format!(
                "linear: residual {:?} does not match output ({n}, {o})",
                r.dims()
            )));
        }
    }
    let prefilled = bias.is_some() || residual.is_some();
    let fill = |buf: &mut [MaybeUninit<f32>]| -> CResult<()> {
        with_opt_f32(bias, |b| {
            with_opt_f32(residual, |r| {
                if let Some(b) = b {
                    if b.len() != o {
                        return Err(kernel_error(format!(
                            "linear: bias has {} values, expected {o}",
                            b.len()
                        )));
                    }
                }
                if prefilled && o > 0 {
                    // One pass: residual + bias, the residual, or the bias.
                    buf.par_chunks_mut(o).enumerate().for_each(|(i, row)| {
                        let r = r.map(|r| &r[i * o..(i + 1) * o]);
                        match (r, b) {
                            (Some(r), Some(b)) => {
                                for ((y, &r), &b) in row.iter_mut().zip(r).zip(b) {
                                    y.write(r + b);
                                }
                            }
                            (Some(v), None) | (None, Some(v)) => {
                                for (y, &v) in row.iter_mut().zip(v) {
                                    y.write(v);
                                }
                            }
                            (None, None) => {}
                        }
                    });
                }
                Ok(())
            })
        })?;
        with_f32(x, |xs| {
            with_f32(w, |ws| {
                if n == 0 || o == 0 {
                    return Ok(());
                }
                if k == 0 {
                    // An empty product: the output is the prefill, or zeros.
                    if !prefilled {
                        buf.iter_mut().for_each(|y| {
                            y.write(0.0);
                        });
                    }
                    return Ok(());
                }
                // SAFETY: the pointers cover `n*k`, `o*k` and `n*o` f32s with the strides given
                // (row-major x and out; w read transposed), checked by the shape tests above.
                // Without a prefill gemm does not read the output (`read_dst` false), only
                // writes every element of it.
                unsafe {
                    gemm::gemm(
                        n,
                        o,
                        k,
                        as_f32_ptr(buf),
                        1,
                        o as isize,
                        prefilled,
                        xs.as_ptr(),
                        1,
                        k as isize,
                        ws.as_ptr(),
                        k as isize,
                        1,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm_parallelism(n, o, k),
                    );
                }
                Ok(())
            })
        })
    };
    // SAFETY: the prefill writes every row (or there is none) and gemm writes every element.
    let mut out = unsafe { uninit_filled(n * o, fill)? };
    if let Some(act) = act {
        out.par_chunks_mut(16 * 1024)
            .for_each(|chunk| activate(chunk, act));
    }
    Tensor::from_vec(out, (n, o), &Device::Cpu)
}

/// ModernBERT's GLU: `[n, 2 * inter]` -> `act(first half) * second half`, `[n, inter]`.
pub(crate) fn glu(wi: &Tensor, inter: usize, act: Activation) -> CResult<Tensor> {
    let (n, two) = wi.dims2()?;
    if two != 2 * inter {
        return Err(kernel_error(format!(
            "glu: input width {two} is not 2 x {inter}"
        )));
    }
    let path = CpuPath::best();
    let fill = |buf: &mut [MaybeUninit<f32>]| {
        if inter == 0 {
            return Ok(());
        }
        with_f32(wi, |src| {
            buf.par_chunks_mut(inter).enumerate().for_each(|(i, row)| {
                let s = &src[i * two..(i + 1) * two];
                for (y, &v) in row.iter_mut().zip(&s[..inter]) {
                    y.write(v);
                }
                // SAFETY: the row was just written in full.
                let row = unsafe { std::slice::from_raw_parts_mut(as_f32_ptr(row), inter) };
                glu_row_on(path, row, &s[inter..], act);
            });
            Ok(())
        })
    };
    // SAFETY: every row is copied from the input before the gate is applied.
    let out = unsafe { uninit_filled(n * inter, fill)? };
    Tensor::from_vec(out, (n, inter), &Device::Cpu)
}

/// Query rows per attention task.
const QUERY_BLOCK: usize = 256;

/// Where one operand of attention lives: a row-major buffer, the column of its first head and
/// the distance between rows.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    offset: usize,
    stride: usize,
}

impl Rows<'_> {
    /// Pointer to row `row`, head `head` (of `d` columns).
    fn at(&self, row: usize, head: usize, d: usize) -> *const f32 {
        self.data[self.offset + row * self.stride + head * d..].as_ptr()
    }
}

/// Multi-head attention over the fused projection `qkv: [n, (heads + 2 * kv_heads) * d]` of a
/// packed batch with boundaries `cu_seqlens`, as `spec` describes it; returns
/// `[n, heads * d]`.
///
/// Queries and keys are normalised (Qwen3) and rotated (RoPE) once, by their position inside
/// their own sequence, into one buffer; then one task per (sequence, head, block of query
/// rows) computes scores, softmax and the value product in a per-thread scratch buffer (the
/// softmax's division is applied to the small output rows, not to the scores). Sliding-window
/// and causal layers only compute the keys they can see.
pub(crate) fn attention(
    qkv: &Tensor,
    cu_seqlens: &[u32],
    spec: &AttentionSpec<'_>,
) -> CResult<Tensor> {
    let (heads, kv_heads, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(kernel_error(format!(
            "attention: {kv_heads} key/value heads do not divide {heads} heads"
        )));
    }
    let hidden = heads * d;
    let width = spec.qkv_width();
    let (n, got) = qkv.dims2()?;
    if got != width {
        return Err(kernel_error(format!(
            "attention: qkv width {got} is not ({heads} + 2 x {kv_heads}) x {d}"
        )));
    }
    // Offsets from 0 to n, never decreasing: every token belongs to exactly one sequence, so
    // the tasks below write every row of the output.
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
    let shape = TaskShape {
        d,
        group: spec.group(),
        scale: 1.0 / (d as f32).sqrt(),
        half_window: spec.half_window,
        causal: spec.causal,
    };
    // Written in full by the tasks (each query block of each head of each sequence), so not
    // zeroed first.
    let mut out: Vec<f32> = Vec::with_capacity(n * hidden);
    let dst = SharedMut(out.as_mut_ptr());
    with_f32(qkv, |src| {
        let v = Rows {
            data: src,
            offset: (heads + kv_heads) * d,
            stride: width,
        };
        let run = |q: Rows<'_>, k: Rows<'_>| {
            tasks
                .par_iter()
                .for_each_init(Scratch::default, |scratch, &task| {
                    // SAFETY: each task writes rows [start + q0, start + q1) of head h's
                    // columns only; tasks never overlap and `out` outlives the loop.
                    unsafe { attend_block(q, k, v, dst, task, hidden, &shape, scratch) }
                });
        };
        if spec.rope.is_none() && spec.qk_norm.is_none() {
            run(
                Rows {
                    data: src,
                    offset: 0,
                    stride: width,
                },
                Rows {
                    data: src,
                    offset: heads * d,
                    stride: width,
                },
            );
            return Ok(());
        }
        let prepared = prepare_queries_and_keys(src, cu_seqlens, max_len, spec)?;
        let qk_width = (heads + kv_heads) * d;
        run(
            Rows {
                data: &prepared,
                offset: 0,
                stride: qk_width,
            },
            Rows {
                data: &prepared,
                offset: heads * d,
                stride: qk_width,
            },
        );
        Ok(())
    })?;
    // SAFETY: the offsets were checked to cover every token once; each token's row gets all
    // `heads` blocks of `d` columns from the gemm of its task (`read_dst` false).
    unsafe { out.set_len(n * hidden) };
    Tensor::from_vec(out, (n, hidden), &Device::Cpu)
}

/// RoPE's `(cos, sin)` tables, `[positions, d / 2]` each.
type RopeRows<'a> = Option<(&'a [f32], &'a [f32])>;
/// The query and key norms' weights and epsilon.
type NormRows<'a> = Option<(&'a [f32], &'a [f32], f32)>;

/// The query and key heads of `src` (the fused projection), normalised and rotated by their
/// position inside their sequence: `[n, (heads + kv_heads) * d]`.
fn prepare_queries_and_keys(
    src: &[f32],
    cu_seqlens: &[u32],
    max_len: usize,
    spec: &AttentionSpec<'_>,
) -> CResult<Vec<f32>> {
    let (heads, kv_heads, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    let width = spec.qkv_width();
    let qk_width = (heads + kv_heads) * d;
    let n = cu_seqlens.last().copied().unwrap_or(0) as usize;
    let half = d / 2;
    let with_tables = |f: &dyn Fn(RopeRows<'_>) -> CResult<Vec<f32>>| match spec.rope {
        Some(rope) => with_f32(&rope.cos, |c| with_f32(&rope.sin, |s| f(Some((c, s))))),
        None => f(None),
    };
    let with_norms = |f: &dyn Fn(NormRows<'_>) -> CResult<Vec<f32>>| match &spec.qk_norm {
        Some(norm) => with_f32(norm.q, |q| with_f32(norm.k, |k| f(Some((q, k, norm.eps))))),
        None => f(None),
    };
    let path = CpuPath::best();
    with_tables(&|tables| {
        if let Some((cos, _)) = tables {
            if d % 2 != 0 || cos.len() < max_len * half {
                return Err(kernel_error(format!(
                    "attention: RoPE table covers {} positions of head size {d}, a sequence has {max_len}",
                    cos.len() / half.max(1)
                )));
            }
        }
        with_norms(&|norms| {
            if let Some((qw, kw, _)) = norms {
                if qw.len() != d || kw.len() != d {
                    return Err(kernel_error(format!(
                        "attention: query/key norm weights are not of head size {d}"
                    )));
                }
            }
            let mut positions = vec![0usize; n];
            for w in cu_seqlens.windows(2) {
                for (p, t) in (w[0] as usize..w[1] as usize).enumerate() {
                    positions[t] = p;
                }
            }
            let mut buf = vec![0f32; n * qk_width];
            buf.par_chunks_mut(qk_width)
                .zip(src.par_chunks(width))
                .zip(&positions)
                .for_each(|((row, x), &pos)| {
                    for (head, (out, x)) in row
                        .chunks_exact_mut(d)
                        .zip(x[..qk_width].chunks_exact(d))
                        .enumerate()
                    {
                        out.copy_from_slice(x);
                        if let Some((qw, kw, eps)) = norms {
                            let w = if head < heads { qw } else { kw };
                            rms_norm_row_on(path, out, w, eps);
                        }
                        if let Some((cos, sin)) = tables {
                            let c = &cos[pos * half..(pos + 1) * half];
                            let s = &sin[pos * half..(pos + 1) * half];
                            rotate_half_on(path, out, c, s);
                        }
                    }
                });
            Ok(buf)
        })
    })
}

#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    inv_sums: Vec<f32>,
}

/// What every task of one attention call shares.
struct TaskShape {
    d: usize,
    group: usize,
    scale: f32,
    half_window: Option<usize>,
    causal: bool,
}

dispatched! {
    /// Rotate one head row in place (rotate-half convention) by the `cos`/`sin` row of its
    /// position.
    pub fn rotate_half_on / rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32])
}

#[inline(always)]
fn rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (lo, hi) = x.split_at_mut(half);
    // Zipped slices of one length: no bounds checks, so the loop vectorises.
    for ((l, h), (&c, &s)) in lo.iter_mut().zip(hi.iter_mut()).zip(cos.iter().zip(sin)) {
        let (a, b) = (*l, *h);
        *l = a * c - b * s;
        *h = b * c + a * s;
    }
}

dispatched! {
    /// RMSNorm of one row in place: `x / sqrt(mean(x^2) + eps) * weight`.
    pub fn rms_norm_row_on / rms_norm_row(x: &mut [f32], weight: &[f32], eps: f32)
}

#[inline(always)]
fn rms_norm_row(x: &mut [f32], weight: &[f32], eps: f32) {
    let mean_sq = lanes_sum(x, |v| v * v) / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    x.iter_mut()
        .zip(weight)
        .for_each(|(v, &w)| *v = w * (*v * inv));
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
#[allow(clippy::too_many_arguments)]
unsafe fn attend_block(
    q: Rows<'_>,
    k: Rows<'_>,
    v: Rows<'_>,
    dst: SharedMut,
    (start, len, h, q0, q1): (usize, usize, usize, usize, usize),
    hidden: usize,
    shape: &TaskShape,
    scratch: &mut Scratch,
) {
    let d = shape.d;
    let kv = h / shape.group;
    // The keys any query of the block sees.
    let (k0, _) = visible_keys(q0, len, shape.half_window, shape.causal);
    let (_, k1) = visible_keys(q1 - 1, len, shape.half_window, shape.causal);
    let (m, kl) = (q1 - q0, k1 - k0);
    scratch.scores.clear();
    scratch.scores.resize(m * kl, 0.0);
    let scores = &mut scratch.scores;
    // scores[m, kl] = scale * q[m, d] . k[kl, d]^T
    gemm::gemm(
        m,
        kl,
        d,
        scores.as_mut_ptr(),
        1,
        kl as isize,
        false,
        q.at(start + q0, h, d),
        1,
        q.stride as isize,
        k.at(start + k0, kv, d),
        k.stride as isize,
        1,
        0.0,
        shape.scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
    // Unnormalised softmax per row over the keys the row sees; the 1/sum scaling is applied
    // to the [m, d] output rows instead of the [m, kl] probabilities.
    scratch.inv_sums.clear();
    for (i, row) in scores.chunks_exact_mut(kl).enumerate() {
        let (lo, hi) = visible_keys(q0 + i, len, shape.half_window, shape.causal);
        let (lo, hi) = (lo - k0, hi - k0);
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
        let sum = exp_shifted_sum(&mut row[lo..hi]);
        scratch.inv_sums.push(1.0 / sum);
    }
    // out[m, d] = probs[m, kl] . v[kl, d]
    let out_at = (start + q0) * hidden + h * d;
    gemm::gemm(
        m,
        d,
        kl,
        dst.0.add(out_at),
        1,
        hidden as isize,
        false,
        scores.as_ptr(),
        1,
        kl as isize,
        v.at(start + k0, kv, d),
        1,
        v.stride as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
    for (i, &inv) in scratch.inv_sums.iter().enumerate() {
        let row = std::slice::from_raw_parts_mut(dst.0.add(out_at + i * hidden), d);
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// `RMSNorm` over the rows of `xs: [n, dim]`.
pub(crate) fn rms_norm(xs: &Tensor, weight: &Tensor, eps: f32) -> CResult<Tensor> {
    let (n, dim) = xs.dims2()?;
    let path = CpuPath::best();
    let mut out = with_f32(xs, |x| Ok(x.to_vec()))?;
    with_f32(weight, |w| {
        if w.len() != dim {
            return Err(kernel_error(format!(
                "rms_norm: weight is not of size {dim}"
            )));
        }
        if dim > 0 {
            out.par_chunks_mut(dim)
                .for_each(|row| rms_norm_row_on(path, row, w, eps));
        }
        Ok(())
    })?;
    Tensor::from_vec(out, (n, dim), &Device::Cpu)
}

/// A set of CPU instructions the element-wise kernels are compiled for; the best one the CPU
/// has is chosen at run time (matrix products go through gemm, which dispatches itself, to
/// AVX-512 kernels too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPath {
    /// Plain Rust, any CPU.
    Generic,
    /// AVX2 and FMA (x86-64-v3).
    Avx2,
    /// AVX-512 F/BW/VL/DQ with AVX2 and FMA (x86-64-v4).
    Avx512,
}

impl CpuPath {
    /// Every path, best last.
    pub const ALL: [CpuPath; 3] = [CpuPath::Generic, CpuPath::Avx2, CpuPath::Avx512];

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            CpuPath::Generic => true,
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx512 => {
                CpuPath::Avx2.available()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best path this CPU has (detected once).
    pub fn best() -> CpuPath {
        static BEST: std::sync::OnceLock<CpuPath> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let best = CpuPath::ALL
                .into_iter()
                .rev()
                .find(|p| p.available())
                .unwrap_or(CpuPath::Generic);
            tracing::debug!(?best, "CPU kernels");
            best
        })
    }
}

dispatched! {
    /// One GLU row: `row = act(row) * gate`.
    pub fn glu_row_on / glu_row(row: &mut [f32], gate: &[f32], act: Activation)
}

#[inline(always)]
fn glu_row(row: &mut [f32], gate: &[f32], act: Activation) {
    activate_generic(row, act);
    row.iter_mut().zip(gate).for_each(|(y, g)| *y *= g);
}

/// `nn.LayerNorm` over the rows of `xs: [n, dim]` with `weight` and an optional `bias`.
pub(crate) fn layer_norm(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    eps: f32,
) -> CResult<Tensor> {
    let (n, dim) = xs.dims2()?;
    let path = CpuPath::best();
    let fill = |buf: &mut [MaybeUninit<f32>]| -> CResult<()> {
        if dim == 0 {
            return Ok(());
        }
        with_f32(xs, |x| {
            with_f32(weight, |w| {
                with_opt_f32(bias, |b| {
                    if w.len() != dim || b.is_some_and(|b| b.len() != dim) {
                        return Err(kernel_error(format!(
                            "layer_norm: weight or bias is not of size {dim}"
                        )));
                    }
                    buf.par_chunks_mut(dim).enumerate().for_each(|(i, row)| {
                        layer_norm_row_on(path, &x[i * dim..(i + 1) * dim], row, w, b, eps);
                    });
                    Ok(())
                })
            })
        })
    };
    // SAFETY: every output row is written from its input row.
    let out = unsafe { uninit_filled(n * dim, fill)? };
    Tensor::from_vec(out, (n, dim), &Device::Cpu)
}

dispatched! {
    /// One row of [`layer_norm`]: `out` from `x`, both of the row's length.
    pub fn layer_norm_row_on / layer_norm_row(
        x: &[f32],
        out: &mut [MaybeUninit<f32>],
        weight: &[f32],
        bias: Option<&[f32]>,
        eps: f32,
    )
}

/// Mean, then the mean of squared deviations (two passes over `x`, as torch computes it),
/// then `out = (x - mean) / sqrt(var + eps) * weight + bias`, written in one pass.
#[inline(always)]
fn layer_norm_row(
    x: &[f32],
    out: &mut [MaybeUninit<f32>],
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
) {
    let dim = x.len() as f32;
    let mean = lanes_sum(x, |v| v) / dim;
    let var = lanes_sum(x, |v| (v - mean) * (v - mean)) / dim;
    let inv = 1.0 / (var + eps).sqrt();
    let normed = out.iter_mut().zip(x).zip(weight);
    match bias {
        Some(b) => normed.zip(b).for_each(|(((y, &v), &w), &b)| {
            y.write((v - mean) * inv * w + b);
        }),
        None => normed.for_each(|((y, &v), &w)| {
            y.write((v - mean) * inv * w);
        }),
    }
}

/// Apply `act` element-wise.
pub(crate) fn activate(xs: &mut [f32], act: Activation) {
    activate_on(CpuPath::best(), xs, act)
}

/// [`activate`] on `path` (an unavailable one runs the generic code). On AVX-512 the GELUs and
/// SiLU run hand-vectorised kernels ([`avx512`]); the rest the compiled generic code.
pub fn activate_on(path: CpuPath, xs: &mut [f32], act: Activation) {
    #[cfg(target_arch = "x86_64")]
    if path == CpuPath::Avx512 && path.available() {
        // SAFETY: the CPU has the AVX-512 features the kernel is compiled for.
        if unsafe { avx512::activate(xs, act) } {
            return;
        }
    }
    activate_compiled_on(path, xs, act)
}

dispatched! {
    /// The generic activation compiled for `path`.
    fn activate_compiled_on / activate_generic(xs: &mut [f32], act: Activation)
}

#[inline(always)]
fn activate_generic(xs: &mut [f32], act: Activation) {
    match act {
        Activation::Gelu => xs.iter_mut().for_each(|x| *x = gelu_erf(*x)),
        Activation::GeluTanh => xs.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
        Activation::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Silu => xs.iter_mut().for_each(|x| *x /= 1.0 + exp(-*x)),
        Activation::Tanh => xs.iter_mut().for_each(|x| *x = tanh(*x)),
    }
}

/// `row[i] = exp(row[i] - max(row))` in place; returns the sum (softmax without the final
/// division, which the caller applies where it is cheaper).
pub(crate) fn exp_shifted_sum(row: &mut [f32]) -> f32 {
    exp_shifted_sum_on(CpuPath::best(), row)
}

/// [`exp_shifted_sum`] on `path` (an unavailable one runs the generic code; AVX-512 a
/// hand-vectorised kernel, [`avx512::exp_shifted_sum`]).
pub fn exp_shifted_sum_on(path: CpuPath, row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if path == CpuPath::Avx512 && path.available() {
        // SAFETY: the CPU has the AVX-512 features the kernel is compiled for.
        return unsafe { avx512::exp_shifted_sum(row) };
    }
    exp_shifted_sum_compiled_on(path, row)
}

dispatched! {
    /// The generic softmax numerator compiled for `path`.
    fn exp_shifted_sum_compiled_on / exp_shifted_sum_generic(row: &mut [f32]) -> f32
}

/// Hand-vectorised AVX-512 kernels for the element-wise work the compiler vectorised poorly:
/// the softmax's max, `exp` and sum (with masked tails instead of a scalar remainder), and
/// the GELUs and SiLU (`vscalefps` for `2^n`, a refined reciprocal instead of a division).
/// The same polynomials as the generic code.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::Activation;

    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;

    /// `e^x` of 16 lanes (Cephes polynomial, as [`super::exp`]).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-87.3)),
            _mm512_set1_ps(88.3),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_199_9e-3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666_666_5e-1));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
        let r2 = _mm512_mul_ps(r, r);
        let y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
        _mm512_scalef_ps(y, n)
    }

    /// `1 / d` to about 2^-23 relative: the 14-bit estimate and one Newton step.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn recip16(d: __m512) -> __m512 {
        let t = _mm512_rcp14_ps(d);
        _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0)))
    }

    #[inline]
    fn tail_mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// `row[i] = exp(row[i] - max(row))`; returns the sum.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp_shifted_sum(row: &mut [f32]) -> f32 {
        let n = row.len();
        let p = row.as_mut_ptr();
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < n {
            let m = tail_mask(n - i);
            let v = _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), m, p.add(i));
            vmax = _mm512_max_ps(vmax, v);
            i += 16;
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
        let mut sum = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            let m = tail_mask(n - i);
            let v = _mm512_maskz_loadu_ps(m, p.add(i));
            let e = exp16(_mm512_sub_ps(v, max));
            _mm512_mask_storeu_ps(p.add(i), m, e);
            sum = _mm512_mask_add_ps(sum, m, sum, e);
            i += 16;
        }
        _mm512_reduce_add_ps(sum)
    }

    /// `erf(x)` of 16 lanes (Abramowitz & Stegun 7.1.26, as [`super::erf`]).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn erf16(x: __m512) -> __m512 {
        let a = _mm512_abs_ps(x);
        let t = recip16(_mm512_fmadd_ps(
            a,
            _mm512_set1_ps(0.327_591_1),
            _mm512_set1_ps(1.0),
        ));
        let mut p = _mm512_set1_ps(1.061_405_4);
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453_152));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421_413_7));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284_496_74));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254_829_6));
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
        let y = _mm512_fnmadd_ps(_mm512_mul_ps(p, t), e, _mm512_set1_ps(1.0));
        // copysign(y, x)
        let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign))
    }

    /// `tanh(x) = 1 - 2 / (e^{2x} + 1)` of 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tanh16(x: __m512) -> __m512 {
        let e = exp16(_mm512_add_ps(x, x));
        let q = recip16(_mm512_add_ps(e, _mm512_set1_ps(1.0)));
        _mm512_fnmadd_ps(_mm512_set1_ps(2.0), q, _mm512_set1_ps(1.0))
    }

    /// Apply `act` in place when it is one this module vectorises (GELU, tanh-GELU, SiLU);
    /// returns whether it did.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn activate(xs: &mut [f32], act: Activation) -> bool {
        match act {
            Activation::Gelu => map16(xs, |v| gelu16(v)),
            Activation::GeluTanh => map16(xs, |v| gelu_tanh16(v)),
            Activation::Silu => map16(xs, |v| silu16(v)),
            Activation::Relu | Activation::Tanh => return false,
        }
        true
    }

    /// `act` of 16 lanes (every activation: ReLU and tanh too).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn activate16(x: __m512, act: Activation) -> __m512 {
        match act {
            Activation::Gelu => gelu16(x),
            Activation::GeluTanh => gelu_tanh16(x),
            Activation::Silu => silu16(x),
            Activation::Relu => _mm512_max_ps(x, _mm512_setzero_ps()),
            Activation::Tanh => tanh16(x),
        }
    }

    /// `xs[i] = f(xs[i])`, 16 lanes at a time (masked tail); `f` is inlined.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn map16(xs: &mut [f32], f: impl Fn(__m512) -> __m512) {
        let n = xs.len();
        let p = xs.as_mut_ptr();
        let mut i = 0;
        while i < n {
            let m = tail_mask(n - i);
            let v = _mm512_maskz_loadu_ps(m, p.add(i));
            _mm512_mask_storeu_ps(p.add(i), m, f(v));
            i += 16;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gelu16(x: __m512) -> __m512 {
        let e = erf16(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
        ));
        _mm512_mul_ps(
            _mm512_mul_ps(_mm512_set1_ps(0.5), x),
            _mm512_add_ps(_mm512_set1_ps(1.0), e),
        )
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gelu_tanh16(x: __m512) -> __m512 {
        let x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        let inner = _mm512_mul_ps(
            _mm512_set1_ps(0.797_884_6),
            _mm512_fmadd_ps(_mm512_set1_ps(0.044_715), x3, x),
        );
        _mm512_mul_ps(
            _mm512_mul_ps(_mm512_set1_ps(0.5), x),
            _mm512_add_ps(_mm512_set1_ps(1.0), tanh16(inner)),
        )
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn silu16(x: __m512) -> __m512 {
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        _mm512_mul_ps(x, recip16(_mm512_add_ps(e, _mm512_set1_ps(1.0))))
    }
}

#[inline(always)]
fn exp_shifted_sum_generic(row: &mut [f32]) -> f32 {
    // A comparison, not `f32::max`: its NaN rule kept the reduction scalar (11 % of a bf16
    // MiniLM forward pass in `perf`). A NaN score makes every output NaN either way, and the
    // scores are checked to be finite at the end.
    let max = lanes_reduce(row, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
    let mut acc = [0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for c in &mut chunks {
        for l in 0..16 {
            c[l] = exp(c[l] - max);
            acc[l] += c[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    sum
}

/// `sum(f(x))` with 16 independent lanes (one AVX-512 or two AVX2 registers) so the loop
/// vectorises.
#[inline(always)]
fn lanes_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            acc[l] += f(c[l]);
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|&v| f(v)).sum::<f32>()
}

/// Reduce with 16 independent lanes (one AVX-512 or two AVX2 registers) so the loop
/// vectorises.
#[inline(always)]
fn lanes_reduce(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            acc[l] = f(acc[l], c[l]);
        }
    }
    let mut r = init;
    for a in acc.into_iter().chain(tail.iter().copied()) {
        r = f(r, a);
    }
    r
}

/// `e^x` for f32, branch-free (Cephes polynomial, about 2 ulp); saturates outside the range
/// of normal floats.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E).round_ties_even();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n without a float-to-int cast (which does not vectorise): 2^23 + n + 127 holds the
    // biased exponent in its low mantissa bits.
    let biased = (n + (8_388_608.0 + 127.0)).to_bits();
    y * f32::from_bits(biased << 23)
}

/// `tanh(x) = 1 - 2 / (e^{2x} + 1)`.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// `erf(x)` (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let mut p = 1.061_405_4f32;
    p = p * t - 1.453_152;
    p = p * t + 1.421_413_7;
    p = p * t - 0.284_496_74;
    p = p * t + 0.254_829_6;
    let y = 1.0 - p * t * exp(-a * a);
    y.copysign(x)
}

/// Exact GELU, `x * Phi(x)` (transformers' `gelu`).
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    0.5 * x * (1.0 + tanh(C * (x + 0.044_715 * x * x * x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `check` on every instruction path this CPU has; the others are reported as
    /// skipped, not passed.
    fn on_every_path(what: &str, check: impl Fn(CpuPath)) {
        for path in CpuPath::ALL {
            if !path.available() {
                eprintln!("{what} on {path:?}: SKIPPED (this CPU lacks it)");
                continue;
            }
            check(path);
            eprintln!("{what} on {path:?}: checked");
        }
    }

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert!(exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn activations_match_reference_formulas() {
        on_every_path("activations", |path| {
            activations_on(path);
        });
    }

    fn activations_on(path: CpuPath) {
        let xs: Vec<f32> = (-800..800).map(|i| i as f32 * 0.01).collect();
        let erf_ref = |x: f64| libm_erf(x);
        for &act in &[
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Relu,
            Activation::Silu,
            Activation::Tanh,
        ] {
            let mut ys = xs.clone();
            activate_on(path, &mut ys, act);
            for (&x, &y) in xs.iter().zip(&ys) {
                let x64 = x as f64;
                let want = match act {
                    Activation::Gelu => 0.5 * x64 * (1.0 + erf_ref(x64 / 2f64.sqrt())),
                    Activation::GeluTanh => {
                        let c = (2.0 / std::f64::consts::PI).sqrt();
                        0.5 * x64 * (1.0 + (c * (x64 + 0.044715 * x64.powi(3))).tanh())
                    }
                    Activation::Relu => x64.max(0.0),
                    Activation::Silu => x64 / (1.0 + (-x64).exp()),
                    Activation::Tanh => x64.tanh(),
                };
                assert!(
                    (y as f64 - want).abs() < 1e-6 * (1.0 + want.abs()),
                    "{path:?} {act:?}({x}) = {y}, want {want}"
                );
            }
        }
    }

    /// erf by its Taylor series / continued fraction, in f64, for the reference.
    fn libm_erf(x: f64) -> f64 {
        // Series converges fast for |x| < 3; beyond, erf is 1 to f32 precision.
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn softmax_sums_to_one_and_matches_naive() {
        on_every_path("softmax", |path| {
            // Lengths around the 16 lanes and their remainders.
            for len in [1, 7, 16, 37, 129, 1000] {
                let mut row: Vec<f32> = (0..len)
                    .map(|i| ((i * 7919) % 23) as f32 * 0.3 - 3.0)
                    .collect();
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
                let s: f64 = e.iter().sum();
                let sum = exp_shifted_sum_on(path, &mut row);
                assert!((sum as f64 - s).abs() < 1e-5 * s, "{path:?} {len}");
                for (y, e) in row.iter().zip(&e) {
                    assert!(
                        (*y as f64 / sum as f64 - e / s).abs() < 1e-7,
                        "{path:?} {len}"
                    );
                }
            }
        });
    }

    #[test]
    fn row_kernels_match_scalar_references_on_every_path() {
        // Lengths around the 16 lanes and their remainders.
        on_every_path("row kernels", |path| {
            for dim in [1, 7, 16, 37, 384, 1000] {
                let xs: Vec<f32> = (0..dim)
                    .map(|i| ((i * 7919) % 29) as f32 * 0.37 - 4.0)
                    .collect();
                let w: Vec<f32> = (0..dim).map(|i| 0.5 + (i % 5) as f32 * 0.1).collect();
                let b: Vec<f32> = (0..dim).map(|i| (i % 3) as f32 - 1.0).collect();
                // Layer norm, with and without bias, against f64 two-pass statistics.
                let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
                let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
                for bias in [None, Some(b.as_slice())] {
                    let mut out = vec![MaybeUninit::<f32>::uninit(); dim];
                    layer_norm_row_on(path, &xs, &mut out, &w, bias, 1e-5);
                    // SAFETY: the kernel writes every element of `out`.
                    let row: Vec<f32> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
                    for i in 0..dim {
                        let want = (xs[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64
                            + bias.map_or(0.0, |b| b[i] as f64);
                        assert!(
                            (row[i] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                            "{path:?} layer norm dim {dim}: {} vs {want}",
                            row[i]
                        );
                    }
                }
                // GLU row: act(x) * gate.
                let mut row = xs.clone();
                glu_row_on(path, &mut row, &w, Activation::Gelu);
                let mut act = xs.clone();
                activate_on(CpuPath::Generic, &mut act, Activation::Gelu);
                for i in 0..dim {
                    assert!(
                        (row[i] - act[i] * w[i]).abs() < 1e-6,
                        "{path:?} glu dim {dim}"
                    );
                }
            }
            // RoPE rows: rotate-half against the formula, at several positions.
            let d = 64;
            let half = d / 2;
            let angle = |p: usize, j: usize| p as f32 * 0.01 * (j + 1) as f32;
            for pos in [0usize, 3, 700] {
                let x: Vec<f32> = (0..d).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
                let cos: Vec<f32> = (0..half).map(|j| angle(pos, j).cos()).collect();
                let sin: Vec<f32> = (0..half).map(|j| angle(pos, j).sin()).collect();
                let mut row = x.clone();
                rotate_half_on(path, &mut row, &cos, &sin);
                for j in 0..half {
                    let (x1, x2) = (x[j], x[half + j]);
                    let (c, s) = (cos[j], sin[j]);
                    assert!((row[j] - (x1 * c - x2 * s)).abs() < 1e-6, "{path:?}");
                    assert!((row[half + j] - (x2 * c + x1 * s)).abs() < 1e-6, "{path:?}");
                }
            }
            // RMSNorm rows against f64.
            for dim in [1usize, 7, 16, 37, 128] {
                let x: Vec<f32> = (0..dim)
                    .map(|i| ((i * 31) % 13) as f32 * 0.3 - 2.0)
                    .collect();
                let w: Vec<f32> = (0..dim).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
                let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
                let mut row = x.clone();
                rms_norm_row_on(path, &mut row, &w, 1e-6);
                for i in 0..dim {
                    let want = x[i] as f64 / (ms + 1e-6).sqrt() * w[i] as f64;
                    assert!(
                        (row[i] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{path:?} rms dim {dim}"
                    );
                }
            }
        });
    }

    #[test]
    fn layer_norm_matches_candle_and_checks_sizes() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (9, 37), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 37, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 37, &dev).unwrap();
        let want = candle_nn::ops::layer_norm(&x, &w, &b, 1e-5).unwrap();
        let got = layer_norm(&x, &w, Some(&b), 1e-5).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        assert!(layer_norm(&x, &b.narrow(0, 0, 36).unwrap(), None, 1e-5).is_err());
    }

    /// The fused attention kernel matches candle's ops on sequences longer than one query
    /// block: with and without a sliding window, RoPE, a causal mask, grouped key/value heads
    /// and Qwen3's query/key norms.
    #[test]
    fn fused_attention_matches_candle_ops() {
        use crate::models::attention::{self, QkNorm};
        use crate::models::ops::Rope;
        use crate::models::packed::PackedBatch;
        use crate::tokenizer::EncodedPair;
        let dev = Device::Cpu;
        let encs: Vec<EncodedPair> = [300usize, 7, 530, 1]
            .iter()
            .map(|&len| EncodedPair {
                ids: (0..len as u32).collect(),
                type_ids: vec![0; len],
            })
            .collect();
        let refs: Vec<&EncodedPair> = encs.iter().collect();
        let batch = PackedBatch::new(&refs, &dev, candle_core::DType::F32).unwrap();
        let n = batch.total_tokens();
        let d = 8;
        let rope = Rope::new(10_000.0, d, 600, candle_core::DType::F32, &dev).unwrap();
        let qw = Tensor::randn(1f32, 0.2, d, &dev).unwrap();
        let kw = Tensor::randn(1f32, 0.2, d, &dev).unwrap();
        for (heads, kv_heads) in [(3, 3), (4, 2), (4, 1)] {
            let width = (heads + 2 * kv_heads) * d;
            let qkv = Tensor::randn(0f32, 1.0, (n, width), &dev).unwrap();
            for window in [None, Some(5), Some(400)] {
                for (causal, with_rope, norm) in [
                    (false, false, false),
                    (false, true, false),
                    (true, true, false),
                    (true, true, true),
                    (true, false, true),
                ] {
                    let spec = AttentionSpec {
                        heads,
                        kv_heads,
                        head_dim: d,
                        half_window: window,
                        causal,
                        rope: with_rope.then_some(&rope),
                        qk_norm: norm.then_some(QkNorm {
                            q: &qw,
                            k: &kw,
                            eps: 1e-6,
                        }),
                        rounds_each_op: false,
                    };
                    let want = attention::attention(&qkv, &batch, &spec).unwrap();
                    let got = attention(&qkv, &batch.cu_seqlens, &spec).unwrap();
                    let diff = (got - want)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(
                        diff < 1e-5,
                        "heads {heads}/{kv_heads} window {window:?} causal {causal} rope {with_rope} norm {norm}: {diff}"
                    );
                }
            }
        }
    }

    #[test]
    fn attention_refuses_offsets_that_do_not_cover_the_tokens() {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (6, 3 * 8), &dev).unwrap();
        let spec = AttentionSpec {
            heads: 2,
            kv_heads: 2,
            head_dim: 4,
            half_window: None,
            causal: false,
            rope: None,
            qk_norm: None,
            rounds_each_op: false,
        };
        assert!(attention(&qkv, &[0, 2, 6], &spec).is_ok());
        for bad in [&[1u32, 6][..], &[0, 4, 2, 6], &[0, 5]] {
            let err = attention(&qkv, bad, &spec).unwrap_err();
            assert!(err.to_string().contains("offsets"), "{err}");
        }
    }

    #[test]
    fn linear_fuses_bias_residual_and_activation() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (5, 7), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 7), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 3, &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (5, 3), &dev).unwrap();
        let plain = x.matmul(&w.t().unwrap()).unwrap();
        let want = plain.broadcast_add(&b).unwrap().add(&r).unwrap();
        let got = linear(&x, &w, Some(&b), Some(&r), None).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        let want = plain.broadcast_add(&b).unwrap().gelu_erf().unwrap();
        let got = linear(&x, &w, Some(&b), None, Some(Activation::Gelu)).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        let bad = Tensor::zeros((5, 6), candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&bad, &w, None, None, None).is_err());
        // No input features: zeros, or the bias.
        let (x0, w0) = (
            Tensor::zeros((5, 0), candle_core::DType::F32, &dev).unwrap(),
            Tensor::zeros((3, 0), candle_core::DType::F32, &dev).unwrap(),
        );
        let got = linear(&x0, &w0, None, None, None).unwrap();
        assert_eq!(got.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        let got = linear(&x0, &w0, Some(&b), None, None).unwrap();
        let want = b.unsqueeze(0).unwrap().broadcast_as((5, 3)).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }
}
