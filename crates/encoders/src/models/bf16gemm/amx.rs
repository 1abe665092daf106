//! AMX path: TDPBF16PS on 16x16 f32 accumulator tiles through inline asm (the AMX intrinsics
//! and target features are unstable in Rust 1.95; `asm!` assembles the instructions fine).
//!
//! Tiles, all 16 rows x 64 bytes (palette 1): tmm0-3 accumulate a 32x32 f32 block (2x2 tiles),
//! tmm4/5 hold two A tiles (16 rows x 32 bf16), tmm6/7 two B tiles (16 k-pairs x 16 columns x 2).
//! One k-step of 32 is 4 tile loads and 4 TDPBF16PS.
use super::{epilogue, AKind, Ctx, Scratch};
use std::arch::asm;
use std::arch::x86_64::*;

#[repr(C, align(64))]
struct TileCfg([u8; 64]);

const fn tile_cfg() -> TileCfg {
    let mut c = [0u8; 64];
    c[0] = 1; // palette 1
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (u16 little endian)
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileCfg(c)
}

static CFG: TileCfg = tile_cfg();

/// Load the tile configuration on this thread. Tiles are configured per thread (the state is
/// part of XSAVE), so every task does this before its first tile instruction.
#[inline]
unsafe fn tile_config() {
    asm!("ldtilecfg [{}]", in(reg) CFG.0.as_ptr(), options(nostack, readonly));
}

/// Return the tiles to their init state, so context switches do not save 8 KiB of tile data.
#[inline]
unsafe fn tile_release() {
    asm!("tilerelease", options(nostack, nomem));
}

/// Where the two A tiles of a 2x2 block come from: `a0`/`a1` point at the first k-step of
/// each 16-row tile, rows `stride` bytes apart, consecutive k-steps `step` bytes apart (packed
/// tiles: stride 64, step 1024; A read in place: stride = row stride in bytes, step 64).
#[derive(Clone, Copy)]
struct ATiles {
    a0: *const u8,
    a1: *const u8,
    stride: usize,
    step: usize,
}

/// Start the four accumulators: zero when `init` is null, else a 32x32 f32 block (row stride
/// `init_ld` bytes; 0 repeats one row, e.g. a bias).
#[inline(always)]
unsafe fn acc_init(init: *const f32, init_ld: usize) {
    if init.is_null() {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
    } else {
        let lower = (init as *const u8).add(16 * init_ld);
        asm!(
            "tileloadd tmm0, [{p} + {ld}*1]",
            "tileloadd tmm1, [{p} + {ld}*1 + 64]",
            "tileloadd tmm2, [{q} + {ld}*1]",
            "tileloadd tmm3, [{q} + {ld}*1 + 64]",
            p = in(reg) init, q = in(reg) lower, ld = in(reg) init_ld,
            options(nostack, readonly)
        );
    }
}

/// Store the four accumulators as a 32x32 f32 block at `c` (row stride `ldc` bytes).
#[inline(always)]
unsafe fn acc_store(c: *mut f32, ldc: usize) {
    let lower = (c as *mut u8).add(16 * ldc);
    asm!(
        "tilestored [{p} + {ld}*1], tmm0",
        "tilestored [{p} + {ld}*1 + 64], tmm1",
        "tilestored [{q} + {ld}*1], tmm2",
        "tilestored [{q} + {ld}*1 + 64], tmm3",
        p = in(reg) c, q = in(reg) lower, ld = in(reg) ldc,
        options(nostack)
    );
}

/// The k loop of a 32x32 block: `steps` k-steps of 32 from the A tiles `a` and the packed B
/// panels `b0`/`b1` (consecutive k-steps 1 KiB apart), added to tmm0-3. `reverse` walks the
/// k-steps last to first: every other call does, so that a call starts on the B data the
/// previous one touched last. Each k-step also prefetches 256 bytes from `pf` on into L2 (B data
/// of a later call) and 128 bytes at `po` for writing (a row of a later output block, `po`
/// advancing `po_ld`). The operand read once per visit uses the streaming hint (TILELOADDT1), so
/// that it does not push the reused one out of L1: A when the B pair is reused by consecutive
/// calls (`STREAM_B` false), B when the A pair is (`STREAM_B` true).
///
/// The tile registers carry the accumulators from `acc_init` through here to `acc_store`:
/// nothing else on this thread touches tiles in between (the compiler never emits AMX code; the
/// AMX target features are not even enabled).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn acc_loop<const STREAM_B: bool>(
    a: ATiles,
    b0: *const u16,
    b1: *const u16,
    steps: usize,
    pf: *const u8,
    po: *const u8,
    po_ld: usize,
    reverse: bool,
) {
    let (mut a0, mut a1, mut b0, mut b1) = (a.a0, a.a1, b0 as *const u8, b1 as *const u8);
    let (mut da, mut db) = (a.step as isize, 1024isize);
    if reverse {
        let (la, lb) = ((steps - 1) * a.step, (steps - 1) * 1024);
        a0 = a0.add(la);
        a1 = a1.add(la);
        b0 = b0.add(lb);
        b1 = b1.add(lb);
        da = -da;
        db = -db;
    }
    macro_rules! k_loop {
        ($lda:literal, $ldb:literal) => {
            asm!(
                ".p2align 4",
                "2:",
                concat!($lda, " tmm4, [{a0} + {sa}*1]"),
                concat!($ldb, " tmm6, [{b0} + {s64}*1]"),
                "tdpbf16ps tmm0, tmm4, tmm6",
                concat!($ldb, " tmm7, [{b1} + {s64}*1]"),
                "tdpbf16ps tmm1, tmm4, tmm7",
                concat!($lda, " tmm5, [{a1} + {sa}*1]"),
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "prefetcht1 [{pf}]",
                "prefetcht1 [{pf} + 64]",
                "prefetcht1 [{pf} + 128]",
                "prefetcht1 [{pf} + 192]",
                "add {pf}, 256",
                "prefetchw [{po}]",
                "prefetchw [{po} + 64]",
                "add {po}, {pold}",
                "add {a0}, {da}",
                "add {a1}, {da}",
                "add {b0}, {db}",
                "add {b1}, {db}",
                "dec {n}",
                "jnz 2b",
                a0 = inout(reg) a0 => _,
                a1 = inout(reg) a1 => _,
                b0 = inout(reg) b0 => _,
                b1 = inout(reg) b1 => _,
                sa = in(reg) a.stride,
                da = in(reg) da,
                db = in(reg) db,
                n = inout(reg) steps => _,
                pf = inout(reg) pf => _,
                po = inout(reg) po => _,
                pold = in(reg) po_ld,
                s64 = in(reg) 64usize,
                options(nostack, readonly)
            )
        };
    }
    if STREAM_B {
        k_loop!("tileloadd", "tileloaddt1");
    } else {
        k_loop!("tileloaddt1", "tileloadd");
    }
}

/// Pack rows `i0..i1` of A into 16-row tiles: tile (t, s) at `dst + (t·ksteps + s)·512`, its row r
/// = A[i0 + 16t + r][32s .. 32s + 32], zero beyond m and k. Only tiles `t_from..` (the ones
/// before are read in place), tile `t` going to slot `t - t_from`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pack_a(ctx: &Ctx, i0: usize, i1: usize, t_from: usize, dst: *mut u16) {
    let ksteps = ctx.kpad / 32;
    let k = ctx.k;
    let mtiles = (i1 - i0).div_ceil(16);
    for t in t_from..mtiles {
        for r in 0..16 {
            let i = i0 + 16 * t + r;
            let mut d = dst.add((t - t_from) * ksteps * 512 + r * 32);
            if i >= i1 {
                for _ in 0..ksteps {
                    _mm512_store_si512(d as *mut _, _mm512_setzero_si512());
                    d = d.add(512);
                }
                continue;
            }
            match ctx.a_kind {
                AKind::Bf16 => {
                    let src = (ctx.a as *const u16).add(i * ctx.lda);
                    for s in 0..ksteps {
                        let k0 = 32 * s;
                        let v = if k0 + 32 <= k {
                            _mm512_loadu_si512(src.add(k0) as *const _)
                        } else if k0 < k {
                            let mask: __mmask32 = (1u32 << (k - k0)) - 1;
                            _mm512_maskz_loadu_epi16(mask, src.add(k0) as *const _)
                        } else {
                            _mm512_setzero_si512()
                        };
                        _mm512_store_si512(d as *mut _, v);
                        d = d.add(512);
                    }
                }
                AKind::F32 => {
                    let src = (ctx.a as *const f32).add(i * ctx.lda);
                    for s in 0..ksteps {
                        let k0 = 32 * s;
                        let (lo, hi) = if k0 + 32 <= k {
                            (
                                _mm512_loadu_ps(src.add(k0)),
                                _mm512_loadu_ps(src.add(k0 + 16)),
                            )
                        } else {
                            let m_lo = mask16(k.saturating_sub(k0));
                            let m_hi = mask16(k.saturating_sub(k0 + 16));
                            (
                                _mm512_maskz_loadu_ps(m_lo, src.add(k0)),
                                _mm512_maskz_loadu_ps(m_hi, src.add(k0 + 16)),
                            )
                        };
                        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                        _mm512_store_si512(d as *mut _, v);
                        d = d.add(512);
                    }
                }
            }
        }
    }
}

#[inline]
fn mask16(w: usize) -> __mmask16 {
    if w >= 16 {
        0xffff
    } else {
        ((1u32 << w) - 1) as __mmask16
    }
}

/// Cache blocking, in k-steps of 32 and panels of 16 columns (see `params`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    /// Rows per task.
    pub mb: usize,
    /// Max k-steps per chunk: tiles accumulate over one chunk, partial sums go through an f32
    /// buffer between chunks.
    pub kc: usize,
    /// Panels per column sub-block (the f32 partial-sum buffer is mb x 16·nbc).
    pub nbc: usize,
    /// 0: column pairs outer, row pairs inner (B pair reused from L1); 1: row pairs outer,
    /// column pairs of the sub-block inner (A pair reused from L1, rows written left to right).
    pub order: usize,
}

/// The blocking measured best on a 2-core Sapphire Rapids-class Xeon (see the bench notes in
/// the README): 256 rows per task, k chunks of up to 1,024, 256-column sub-blocks, rows outer.
pub(crate) fn params() -> Params {
    Params {
        mb: 256,
        kc: 32,
        nbc: 16,
        order: 1,
    }
}

pub(crate) unsafe fn task(ctx: &Ctx, i0: usize, i1: usize, p0: usize, p1: usize, s: &mut Scratch) {
    let prm = params();
    let kpad = ctx.kpad;
    let ksteps = kpad / 32;
    let mtiles = (i1 - i0).div_ceil(16);
    let nchunks = ksteps.div_ceil(prm.kc.max(1));
    let chunk = ksteps.div_ceil(nchunks);
    let nbc = (prm.nbc.max(2) / 2) * 2;
    // bf16 A with k a multiple of 32 is read in place, in whole 16-row tiles; the rest of A
    // (f32, a k tail, the last rows) is packed into tiles in scratch.
    // In place only with 64-byte aligned rows: a tile row straddling two cache lines makes the
    // loads about twice as slow (measured), and packing costs less than that.
    let in_place = matches!(ctx.a_kind, AKind::Bf16)
        && ctx.k == kpad
        && (ctx.a as usize).is_multiple_of(64)
        && (ctx.lda * 2).is_multiple_of(64);
    // An even number of tiles, so that no 2x2 block mixes the two layouts.
    let t_direct = if in_place { ((i1 - i0) / 16) & !1 } else { 0 };
    let a_bytes = (mtiles - t_direct) * ksteps * 1024;
    let acc_ld = nbc * 16; // floats
                           // Rows for an even number of m-tiles: the kernel always stores a full 32-row block.
    let acc_bytes = if nchunks > 1 {
        mtiles.div_ceil(2) * 32 * acc_ld * 4
    } else {
        0
    };
    let base = s.get(a_bytes + acc_bytes + 2 * 32 * 32 * 4);
    let pa = base as *mut u16;
    let acc = base.add(a_bytes) as *mut f32;
    let cbufs = [
        base.add(a_bytes + acc_bytes) as *mut f32,
        base.add(a_bytes + acc_bytes + 4096) as *mut f32,
    ];
    pack_a(ctx, i0, i1, t_direct, pa);
    // A tile t at k-step s0: (pointer, row stride, k-step stride) in bytes.
    let a_tile = |t: usize, s0: usize| -> (*const u8, usize, usize) {
        if t < t_direct {
            (
                (ctx.a as *const u16).add((i0 + 16 * t) * ctx.lda + 32 * s0) as *const u8,
                ctx.lda * 2,
                64,
            )
        } else {
            (
                pa.add((t - t_direct) * ksteps * 512 + s0 * 512) as *const u8,
                64,
                1024,
            )
        }
    };
    // Direct mode: f32 output whose epilogue the tiles can do themselves: the first k-chunk
    // starts from the bias (a stride-0 tile load repeats it on every row), the f32 residual or
    // the output itself, and full 32x32 blocks accumulate in and are stored straight into the
    // output. Edge blocks and every other epilogue go through scratch and the vector epilogue,
    // one block late so that the tile stores have landed before the vectors read them.
    let has_bias = !ctx.bias.is_null();
    let direct = !ctx.out_bf16
        && ctx.scale == 1.0
        && matches!(ctx.res_kind, 0 | 1 | 3)
        && !(has_bias && ctx.res_kind != 0);
    let mut pending: Option<(usize, usize, usize, usize, usize)> = None; // slot, i, rows, j, cols
    let mut slot = 0;
    tile_config();
    let rowwise = prm.order == 1;
    // One 32x32 block, rows from m-tile `t`, columns from panel `p`, k-chunk `ci` (of the
    // column block q0..q1). `pf`: B data to prefetch; `next`: the block visited next (for the
    // output prefetch), `reverse`: walk k backwards.
    let mut block = |t: usize,
                     p: usize,
                     ci: usize,
                     q0: usize,
                     q1: usize,
                     pf: *const u8,
                     next: Option<(usize, usize)>,
                     reverse: bool| {
        let s0 = ci * chunk;
        let steps = chunk.min(ksteps - s0);
        let (first, last) = (ci == 0, ci + 1 == nchunks);
        let two = p + 1 < q1;
        let b0 = ctx.b.add(p * kpad * 16 + s0 * 512);
        let b1 = if two { b0.add(kpad * 16) } else { b0 };
        let j0 = p * 16;
        let cols = (ctx.n - j0).min(if two { 32 } else { 16 });
        let (a0, sa, da) = a_tile(t, s0);
        let a1 = if t + 1 < mtiles {
            a_tile(t + 1, s0).0
        } else {
            a0
        };
        let i = i0 + 16 * t;
        let rows = (i1 - i).min(32);
        let full = direct && rows == 32 && cols == 32;
        // Full blocks of a direct-mode output accumulate in the output itself (it starts from
        // the bias / residual / old output / zero); the others in the f32 scratch, then through
        // the vector epilogue.
        let outp = (ctx.out as *mut f32).add(i * ctx.ldc + j0);
        let (accp, acc_ldb) = if full {
            (outp, ctx.ldc * 4)
        } else {
            (acc.add(t * 16 * acc_ld + (p - q0) * 16), acc_ld * 4)
        };
        let (init, init_ld) = if !first {
            (accp as *const f32, acc_ldb)
        } else if !full {
            (std::ptr::null(), 0)
        } else if has_bias {
            (ctx.bias.add(j0), 0)
        } else if ctx.res_kind == 1 {
            (
                (ctx.res as *const f32).add(i * ctx.res_ld + j0),
                ctx.res_ld * 4,
            )
        } else if ctx.res_kind == 3 {
            (outp as *const f32, acc_ldb)
        } else {
            (std::ptr::null(), 0)
        };
        // Output lines of the next block (when it is written at the end of its call), fetched
        // for writing while this one computes: a row per k-step inside the loop, the rest here.
        let (po, po_ld) = match next {
            Some((nt, np)) if last && i0 + 16 * nt + 32 <= i1 && np * 16 + 32 <= ctx.n => {
                let esz = if ctx.out_bf16 { 2 } else { 4 };
                let nxt = (ctx.out as *const u8).add(((i0 + 16 * nt) * ctx.ldc + np * 16) * esz);
                let ld = ctx.ldc * esz;
                for r in steps.min(32)..32 {
                    _mm_prefetch::<_MM_HINT_ET0>(nxt.add(r * ld) as *const i8);
                    if esz == 4 {
                        _mm_prefetch::<_MM_HINT_ET0>(nxt.add(r * ld + 64) as *const i8);
                    }
                }
                (nxt, ld)
            }
            _ => (cbufs[slot] as *const u8, 0),
        };
        acc_init(init, init_ld);
        let at = ATiles {
            a0,
            a1,
            stride: sa,
            step: da,
        };
        if rowwise {
            acc_loop::<true>(at, b0, b1, steps, pf, po, po_ld, reverse);
        } else {
            acc_loop::<false>(at, b0, b1, steps, pf, po, po_ld, reverse);
        }
        if !last || full {
            acc_store(accp, acc_ldb);
        } else {
            acc_store(cbufs[slot], 128);
            if let Some((ps, pi, pr, pj, pc)) = pending.take() {
                epilogue::apply_avx512(ctx, cbufs[ps], 32, pi, pr, pj, pc);
            }
            pending = Some((slot, i, rows, j0, cols));
            slot ^= 1;
        }
    };
    let mut q0 = p0;
    while q0 < p1 {
        let q1 = (q0 + nbc).min(p1);
        for ci in 0..nchunks {
            let s0 = ci * chunk;
            let steps = chunk.min(ksteps - s0);
            if rowwise {
                // For each row pair, sweep the column pairs of the block: the A pair stays in
                // L1, the B block (kc x 16·nbc) in L2, output rows are written left to right.
                let mut t = 0;
                while t < mtiles {
                    let mut p = q0;
                    while p < q1 {
                        let next = if p + 2 < q1 {
                            Some((t, p + 2))
                        } else if t + 2 < mtiles {
                            Some((t + 2, q0))
                        } else {
                            None
                        };
                        let pf = ctx.b.add((p + 2).min(p1.max(1) - 1) * kpad * 16 + s0 * 512)
                            as *const u8;
                        block(t, p, ci, q0, q1, pf, next, ((p - q0) / 2) % 2 == 1);
                        p += 2;
                    }
                    t += 2;
                }
            } else {
                // For each column pair, sweep the row pairs: the B pair stays in L1.
                let mut p = q0;
                while p < q1 {
                    // While this B pair chunk is used by every m-pair, prefetch the next one
                    // (the next pair's chunk, or the first pair of the next chunk / column
                    // block) into L2, a slice of it per call.
                    let (np, ns0) = if p + 2 < q1 {
                        (p + 2, s0)
                    } else if ci + 1 < nchunks {
                        (q0, s0 + chunk)
                    } else {
                        (q1, 0)
                    };
                    let next_b =
                        ctx.b.add(np.min(p1.max(1) - 1) * kpad * 16 + ns0 * 512) as *const u8;
                    let mut t = 0;
                    while t < mtiles {
                        // (May point past the end of B on the last calls: only ever prefetched.)
                        let pf = next_b.wrapping_add((t / 2) * steps * 256);
                        let next = if t + 2 < mtiles {
                            Some((t + 2, p))
                        } else {
                            None
                        };
                        block(t, p, ci, q0, q1, pf, next, (t / 2) % 2 == 1);
                        t += 2;
                    }
                    p += 2;
                }
            }
        }
        q0 = q1;
    }
    if let Some((ps, pi, pr, pj, pc)) = pending {
        epilogue::apply_avx512(ctx, cbufs[ps], 32, pi, pr, pj, pc);
    }
    tile_release();
}
