//! AVX512-BF16 path: MR x 32 register blocks of VDPBF16PS (each instruction: 16 columns x one
//! k-pair). A rows are read in place as 32-bit pairs broadcast to all lanes; B rows are the packed
//! panel rows (16 columns x 2 k). f32 A is first rounded to bf16 rows in scratch.
use super::{epilogue, AKind, Ctx, Scratch};
use std::arch::x86_64::*;

/// Rows per register block (2 x MR accumulators of 16 f32).
pub(crate) const MR: usize = 8;

#[inline(always)]
unsafe fn bcast(p: *const u16) -> __m512bh {
    std::mem::transmute(_mm512_set1_epi32((p as *const i32).read_unaligned()))
}

/// `acc[MR][NV]` over `pairs` k-pairs (+ one half pair when `odd`), rows at `a + r·lda`,
/// then stored to `c` (row stride 32 floats).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::needless_range_loop)]
unsafe fn kernel<const NV: usize>(
    rows: [*const u16; MR],
    b: [*const u16; 2],
    pairs: usize,
    odd: bool,
    c: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for kk in 0..pairs {
        let mut bv = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); NV];
        for v in 0..NV {
            bv[v] = std::mem::transmute::<__m512i, __m512bh>(_mm512_load_si512(
                b[v].add(kk * 32) as *const _
            ));
        }
        for r in 0..MR {
            let av = bcast(rows[r].add(2 * kk));
            for v in 0..NV {
                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
            }
        }
    }
    if odd {
        // Last k is alone in its pair: the partner of A must be zero (B's is zero padding, but
        // A's memory there may hold anything, NaN included).
        let kk = pairs;
        let mut bv = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); NV];
        for v in 0..NV {
            bv[v] = std::mem::transmute::<__m512i, __m512bh>(_mm512_load_si512(
                b[v].add(kk * 32) as *const _
            ));
        }
        for r in 0..MR {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*rows[r].add(2 * kk) as i32));
            for v in 0..NV {
                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
            }
        }
    }
    for r in 0..MR {
        for v in 0..NV {
            _mm512_store_ps(c.add(r * 32 + v * 16), acc[r][v]);
        }
    }
}

pub(crate) unsafe fn task(ctx: &Ctx, i0: usize, i1: usize, p0: usize, p1: usize, s: &mut Scratch) {
    let kpad = ctx.kpad;
    let rows = i1 - i0;
    // f32 A: rounded to bf16 rows (stride kpad, zero padded) in scratch first.
    let (a, lda, k) = match ctx.a_kind {
        AKind::Bf16 => (ctx.a as *const u16, ctx.lda, ctx.k),
        AKind::F32 => (std::ptr::null(), kpad, kpad),
    };
    let a_bytes = if a.is_null() { rows * kpad * 2 } else { 0 };
    let base = s.get(a_bytes + MR * 32 * 4);
    let cbuf = base.add(a_bytes) as *mut f32;
    let (a, a_row0) = if a.is_null() {
        let dst = base as *mut u16;
        for r in 0..rows {
            let src = (ctx.a as *const f32).add((i0 + r) * ctx.lda);
            let d = dst.add(r * kpad);
            super::pack::cvt_f32_bf16_avx512(src, d, ctx.k);
            std::ptr::write_bytes(d.add(ctx.k), 0, kpad - ctx.k);
        }
        (dst as *const u16, 0)
    } else {
        (a, i0)
    };
    let pairs = k / 2;
    let odd = k % 2 == 1;
    let mut p = p0;
    while p < p1 {
        let two = p + 1 < p1;
        let b0 = ctx.b.add(p * kpad * 16);
        let b = [b0, if two { b0.add(kpad * 16) } else { b0 }];
        let j0 = p * 16;
        let cols = (ctx.n - j0).min(if two { 32 } else { 16 });
        let mut r = 0;
        while r < rows {
            let nr = (rows - r).min(MR);
            let mut rp = [a; MR];
            for (q, x) in rp.iter_mut().enumerate() {
                *x = a.add((a_row0 + r + q.min(nr - 1)) * lda);
            }
            if two {
                kernel::<2>(rp, b, pairs, odd, cbuf);
            } else {
                kernel::<1>(rp, b, pairs, odd, cbuf);
            }
            epilogue::apply_avx512(ctx, cbuf, 32, i0 + r, nr, j0, cols);
            r += nr;
        }
        p += 2;
    }
}
