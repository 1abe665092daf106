//! bf16 GEMM for CPU inference: `out = epilogue(A · Wᵀ)` with W pre-packed once.
//!
//! Three compute paths, picked at run time or named explicitly:
//! - [`Path::Amx`]: Intel AMX tiles (TDPBF16PS through inline asm), 2x2 blocks of 16x16 f32
//!   accumulator tiles (Sapphire Rapids and later).
//! - [`Path::Avx512Bf16`]: AVX512-BF16 VDPBF16PS register-blocked kernel (Cooper Lake, Sapphire
//!   Rapids, AMD Zen 4/5).
//! - [`Path::Fallback`]: portable Rust, bf16 widened to f32; correct everywhere.
//!
//! All paths accumulate in f32 and round the product inputs to bf16 first; they differ only in
//! the order of the f32 additions. Outputs are f32 or bf16 (round to nearest even).
//!
//! Layout conventions: matrices are row-major with an explicit row stride (in elements). The
//! weight W is `[n, k]` (nn.Linear layout, `y = x Wᵀ`); [`PackedB::from_kn_bf16`] packs a `[k, n]`
//! matrix instead (the V of attention).

// A complete bf16 GEMM of which the backend uses a part (bf16 A, bf16 residuals); the tests
// cover all of it (f32 A, f32 and in-place residuals, every packer).
#![cfg_attr(not(test), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod detect;
mod epilogue;
mod fallback;
mod pack;
#[cfg(test)]
mod tests;

use std::cell::RefCell;

pub(crate) use super::ops::Activation;
pub use detect::{amx_available, avx512bf16_available};
pub use pack::PackedB;

/// A bfloat16 value, stored as its bit pattern (same layout as `half::bf16`, so slices of either
/// can be reinterpreted as the other).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug, Hash)]
#[repr(transparent)]
pub struct bf16(pub u16);

impl bf16 {
    /// Round to nearest even; NaN stays NaN (quiet).
    #[inline]
    pub fn from_f32(x: f32) -> bf16 {
        let b = x.to_bits();
        if (b & 0x7fff_ffff) > 0x7f80_0000 {
            return bf16(((b >> 16) as u16) | 0x0040);
        }
        bf16((b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16)
    }
    #[inline]
    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

/// Which kernel family computes the product.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Path {
    /// The best available one: AMX, else AVX512-BF16, else the fallback.
    Auto,
    Amx,
    Avx512Bf16,
    Fallback,
}

impl Path {
    /// Whether this CPU (and OS, for AMX) can run the path. `Auto` and `Fallback` always can.
    pub fn available(self) -> bool {
        match self {
            Path::Auto | Path::Fallback => true,
            Path::Amx => amx_available(),
            Path::Avx512Bf16 => avx512bf16_available(),
        }
    }
    /// `Auto` resolved to a concrete path; any other value is returned as is.
    pub fn resolve(self) -> Path {
        match self {
            Path::Auto => {
                if amx_available() {
                    Path::Amx
                } else if avx512bf16_available() {
                    Path::Avx512Bf16
                } else {
                    Path::Fallback
                }
            }
            p => p,
        }
    }
}

/// The requested path cannot run on this machine.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Unavailable(pub Path);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bf16 gemm path {:?} is not available on this CPU/OS",
            self.0
        )
    }
}
impl std::error::Error for Unavailable {}

/// What is added to the f32 accumulator before the store: `out = scale·acc + bias + residual`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub scale: f32,
    /// Per output column, length >= n.
    pub bias: Option<&'a [f32]>,
    pub residual: Residual<'a>,
    /// With a bf16 output and a residual: round `scale·acc + bias` to bf16 before the residual
    /// is added (and round again after), as a framework that runs the linear layer and the
    /// residual addition as two bf16 operations does.
    pub round_before_residual: bool,
    /// An activation applied last (bf16 output, no residual): to `scale·acc + bias` rounded to
    /// bf16, as a framework that runs the activation as its own bf16 operation does.
    pub activation: Option<Activation>,
}

impl Default for Epilogue<'_> {
    fn default() -> Self {
        Epilogue {
            scale: 1.0,
            bias: None,
            residual: Residual::None,
            round_before_residual: false,
            activation: None,
        }
    }
}

impl<'a> Epilogue<'a> {
    pub fn none() -> Self {
        Self::default()
    }
    pub fn bias(bias: &'a [f32]) -> Self {
        Epilogue {
            bias: Some(bias),
            ..Self::default()
        }
    }
}

/// A row-major m x n matrix added to the result.
#[derive(Clone, Copy, Debug)]
pub enum Residual<'a> {
    None,
    F32 {
        data: &'a [f32],
        ld: usize,
    },
    Bf16 {
        data: &'a [bf16],
        ld: usize,
    },
    /// Add what the output already holds (in-place `out += ...`).
    InPlace,
}

/// Where the m x n result goes (row stride `ld`).
#[derive(Debug)]
pub enum Output<'a> {
    F32 { data: &'a mut [f32], ld: usize },
    Bf16 { data: &'a mut [bf16], ld: usize },
}

#[derive(Clone, Copy)]
pub(crate) enum AKind {
    Bf16,
    F32,
}

/// Everything a task needs, as raw pointers so tasks on several threads can share it.
#[derive(Clone, Copy)]
pub(crate) struct Ctx {
    #[allow(dead_code)]
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const u8,
    pub a_kind: AKind,
    pub lda: usize,
    pub b: *const u16,
    pub kpad: usize,
    pub scale: f32,
    pub bias: *const f32,
    /// 0 none, 1 f32, 2 bf16, 3 in place
    pub res_kind: u8,
    pub res: *const u8,
    pub res_ld: usize,
    /// false: f32 output, true: bf16 output
    pub out_bf16: bool,
    /// Round to bf16 before adding the residual (bf16 output only).
    pub round_first: bool,
    /// The activation of a bf16 output without residual.
    pub act: Option<Activation>,
    pub out: *mut u8,
    pub ldc: usize,
}
unsafe impl Send for Ctx {}
unsafe impl Sync for Ctx {}

fn need(len: usize, rows: usize, cols: usize, ld: usize, what: &str) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(ld >= cols, "{what}: row stride {ld} < {cols} columns");
    assert!(
        len >= (rows - 1) * ld + cols,
        "{what}: slice of {len} too short for {rows}x{cols} with stride {ld}"
    );
}

/// `out[m, n] = epilogue(A[m, k] · Wᵀ)` with A in bf16 (row stride `lda`) and W packed in `b`.
pub fn gemm_bf16(
    path: Path,
    m: usize,
    a: &[bf16],
    lda: usize,
    b: &PackedB,
    out: Output<'_>,
    epi: &Epilogue<'_>,
) -> Result<(), Unavailable> {
    need(a.len(), m, b.k(), lda, "A");
    run(
        path,
        m,
        a.as_ptr() as *const u8,
        AKind::Bf16,
        lda,
        b,
        out,
        epi,
    )
}

/// Same as [`gemm_bf16`] with A in f32, rounded to bf16 while it is packed.
pub fn gemm_f32a(
    path: Path,
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    out: Output<'_>,
    epi: &Epilogue<'_>,
) -> Result<(), Unavailable> {
    need(a.len(), m, b.k(), lda, "A");
    run(
        path,
        m,
        a.as_ptr() as *const u8,
        AKind::F32,
        lda,
        b,
        out,
        epi,
    )
}

#[allow(clippy::too_many_arguments)]
fn run(
    path: Path,
    m: usize,
    a: *const u8,
    a_kind: AKind,
    lda: usize,
    b: &PackedB,
    out: Output<'_>,
    epi: &Epilogue<'_>,
) -> Result<(), Unavailable> {
    let path = path.resolve();
    if !path.available() {
        return Err(Unavailable(path));
    }
    let (n, k) = (b.n(), b.k());
    let (out_bf16, outp, ldc, out_len) = match out {
        Output::F32 { data, ld } => (false, data.as_mut_ptr() as *mut u8, ld, data.len()),
        Output::Bf16 { data, ld } => (true, data.as_mut_ptr() as *mut u8, ld, data.len()),
    };
    need(out_len, m, n, ldc, "output");
    if let Some(bias) = epi.bias {
        assert!(bias.len() >= n, "bias shorter than n");
    }
    let (res_kind, res, res_ld) = match epi.residual {
        Residual::None => (0u8, std::ptr::null(), 0),
        Residual::F32 { data, ld } => {
            need(data.len(), m, n, ld, "residual");
            (1, data.as_ptr() as *const u8, ld)
        }
        Residual::Bf16 { data, ld } => {
            need(data.len(), m, n, ld, "residual");
            (2, data.as_ptr() as *const u8, ld)
        }
        Residual::InPlace => (3, outp as *const u8, ldc),
    };
    if m == 0 || n == 0 {
        return Ok(());
    }
    let ctx = Ctx {
        m,
        n,
        k,
        a,
        a_kind,
        lda,
        b: b.ptr(),
        kpad: b.kpad(),
        scale: epi.scale,
        bias: epi.bias.map_or(std::ptr::null(), |b| b.as_ptr()),
        res_kind,
        res,
        res_ld,
        out_bf16,
        round_first: epi.round_before_residual && out_bf16 && res_kind != 0,
        act: epi.activation.filter(|_| out_bf16 && res_kind == 0),
        out: outp,
        ldc,
    };
    // Task grid: rows in blocks of `mb`, 16-column panels in blocks of `nbp`.
    let (mb, nbp) = blocking(path, m, n, k);
    let panels = n.div_ceil(16);
    let mt = m.div_ceil(mb);
    let nt = panels.div_ceil(nbp);
    let task = |t: usize| {
        let (bi, bj) = (t % mt, t / mt);
        let i0 = bi * mb;
        let i1 = (i0 + mb).min(m);
        let p0 = bj * nbp;
        let p1 = (p0 + nbp).min(panels);
        // SAFETY: tasks write disjoint output blocks; the pointers were checked above.
        unsafe { run_task(path, &ctx, i0, i1, p0, p1) };
    };
    let ntasks = mt * nt;
    if ntasks == 1 || rayon::current_num_threads() == 1 {
        (0..ntasks).for_each(task);
    } else {
        use rayon::prelude::*;
        (0..ntasks).into_par_iter().with_max_len(1).for_each(task);
    }
    Ok(())
}

/// Rows per task and 16-column panels per task.
fn blocking(path: Path, m: usize, n: usize, _k: usize) -> (usize, usize) {
    let threads = rayon::current_num_threads().max(1);
    let panels = n.div_ceil(16);
    let unit = match path {
        Path::Amx => 32,
        Path::Avx512Bf16 => avx512_mr(),
        _ => 4,
    };
    // Row blocks of up to 128 rows; split columns too when there are too few row blocks to
    // keep every thread busy.
    let mb0 = match path {
        #[cfg(target_arch = "x86_64")]
        Path::Amx => amx::params().mb,
        _ => 128,
    };
    let mut mb = mb0.div_ceil(unit) * unit;
    let m_units = m.div_ceil(unit);
    if m.div_ceil(mb) < 2 * threads {
        mb = (m_units.div_ceil(2 * threads).max(1)) * unit;
    }
    let mt = m.div_ceil(mb);
    let mut nbp = panels;
    if mt < 2 * threads && threads > 1 {
        let want = (2 * threads).div_ceil(mt);
        nbp = panels.div_ceil(want).max(1);
        if nbp > 1 && nbp % 2 == 1 {
            nbp += 1; // keep panel pairs together for the 2x2 AMX kernel
        }
    }
    (mb, nbp)
}

fn avx512_mr() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::MR
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        4
    }
}

unsafe fn run_task(path: Path, ctx: &Ctx, i0: usize, i1: usize, p0: usize, p1: usize) {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        match path {
            #[cfg(target_arch = "x86_64")]
            Path::Amx => amx::task(ctx, i0, i1, p0, p1, &mut s),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Bf16 => avx512::task(ctx, i0, i1, p0, p1, &mut s),
            _ => fallback::task(ctx, i0, i1, p0, p1, &mut s),
        }
    })
}

/// 64-byte aligned growable scratch memory, one per thread, reused across calls.
pub(crate) struct Scratch {
    buf: Vec<Align64>,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Align64([u8; 64]);

impl Scratch {
    const fn new() -> Self {
        Scratch { buf: Vec::new() }
    }
    /// At least `bytes` bytes, 64-byte aligned (contents unspecified).
    pub(crate) fn get(&mut self, bytes: usize) -> *mut u8 {
        let lines = bytes.div_ceil(64);
        if self.buf.len() < lines {
            self.buf = vec![Align64([0; 64]); lines];
        }
        self.buf.as_mut_ptr() as *mut u8
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
    static ATTN_PACK: std::cell::Cell<PackedB> = const { std::cell::Cell::new(PackedB::empty()) };
}

/// Attention scores: `out[m, kl] = scale · Q[m, d] · K[kl, d]ᵀ` (+ epilogue bias/residual, e.g. an
/// additive mask as an f32 residual). K is packed per call into a per-thread buffer.
#[allow(clippy::too_many_arguments)]
pub fn attn_scores(
    path: Path,
    m: usize,
    kl: usize,
    d: usize,
    q: &[bf16],
    ldq: usize,
    kmat: &[bf16],
    ldk: usize,
    out: Output<'_>,
    epi: &Epilogue<'_>,
) -> Result<(), Unavailable> {
    let path = path.resolve();
    if !path.available() {
        return Err(Unavailable(path));
    }
    need(kmat.len(), kl, d, ldk, "K");
    // Taken out of the thread-local while in use: a nested call (rayon may run another
    // attention call on this thread while this one waits) then packs into a fresh buffer.
    let mut pb = ATTN_PACK.with(|c| c.take());
    pb.repack_nk_bf16(kmat, kl, d, ldk);
    let r = gemm_bf16(path, m, q, ldq, &pb, out, epi);
    ATTN_PACK.with(|c| c.replace(pb));
    r
}

/// Attention output: `out[m, d] = P[m, kl] · V[kl, d]` (+ epilogue). V is packed per call.
#[allow(clippy::too_many_arguments)]
pub fn attn_pv(
    path: Path,
    m: usize,
    kl: usize,
    d: usize,
    p: &[bf16],
    ldp: usize,
    v: &[bf16],
    ldv: usize,
    out: Output<'_>,
    epi: &Epilogue<'_>,
) -> Result<(), Unavailable> {
    let path = path.resolve();
    if !path.available() {
        return Err(Unavailable(path));
    }
    need(v.len(), kl, d, ldv, "V");
    let mut pb = ATTN_PACK.with(|c| c.take());
    pb.repack_kn_bf16(v, kl, d, ldv);
    let r = gemm_bf16(path, m, p, ldp, &pb, out, epi);
    ATTN_PACK.with(|c| c.replace(pb));
    r
}
