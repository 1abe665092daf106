//! `out = scale·acc + bias + residual`, stored as f32 or bf16, from an f32 block in scratch.
use super::{bf16, Ctx};

/// Apply the epilogue to `rows x cols` accumulators at `acc` (row stride `acc_ld` floats), which
/// belong at output position `(i0, j0)`.
///
/// # Safety
/// The block must lie inside the output described by `ctx`, `acc` must hold the block.
#[inline]
pub(crate) unsafe fn apply(
    ctx: &Ctx,
    acc: *const f32,
    acc_ld: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512bf16_available() {
        return apply_avx512(ctx, acc, acc_ld, i0, rows, j0, cols);
    }
    apply_scalar(ctx, acc, acc_ld, i0, rows, j0, cols)
}

pub(crate) unsafe fn apply_scalar(
    ctx: &Ctx,
    acc: *const f32,
    acc_ld: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
) {
    for r in 0..rows {
        let i = i0 + r;
        for c in 0..cols {
            let j = j0 + c;
            let mut v = *acc.add(r * acc_ld + c);
            if ctx.scale != 1.0 {
                v *= ctx.scale;
            }
            if !ctx.bias.is_null() {
                v += *ctx.bias.add(j);
            }
            if ctx.round_first {
                v = bf16::from_f32(v).to_f32();
            }
            match ctx.res_kind {
                1 => v += *(ctx.res as *const f32).add(i * ctx.res_ld + j),
                2 => v += bf16(*(ctx.res as *const u16).add(i * ctx.res_ld + j)).to_f32(),
                3 => {
                    v += if ctx.out_bf16 {
                        bf16(*(ctx.out as *const u16).add(i * ctx.ldc + j)).to_f32()
                    } else {
                        *(ctx.out as *const f32).add(i * ctx.ldc + j)
                    }
                }
                _ => {}
            }
            if let Some(act) = ctx.act {
                let mut x = [bf16::from_f32(v).to_f32()];
                crate::models::cpu_f32::activate_on(
                    crate::models::cpu_f32::CpuPath::Generic,
                    &mut x,
                    act,
                );
                v = x[0];
            }
            if ctx.out_bf16 {
                *(ctx.out as *mut u16).add(i * ctx.ldc + j) = bf16::from_f32(v).0;
            } else {
                *(ctx.out as *mut f32).add(i * ctx.ldc + j) = v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(crate) unsafe fn apply_avx512(
    ctx: &Ctx,
    acc: *const f32,
    acc_ld: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let scale = _mm512_set1_ps(ctx.scale);
    let do_scale = ctx.scale != 1.0;
    let mut c = 0;
    while c < cols {
        let w = (cols - c).min(16);
        let mask: __mmask16 = if w == 16 { 0xffff } else { (1u16 << w) - 1 };
        let j = j0 + c;
        let bias = if ctx.bias.is_null() {
            _mm512_setzero_ps()
        } else {
            _mm512_maskz_loadu_ps(mask, ctx.bias.add(j))
        };
        for r in 0..rows {
            let i = i0 + r;
            let mut v = _mm512_maskz_loadu_ps(mask, acc.add(r * acc_ld + c));
            if do_scale {
                v = _mm512_mul_ps(v, scale);
            }
            v = _mm512_add_ps(v, bias);
            if ctx.round_first {
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                v = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
            }
            let (res_f32, res_bf16): (*const f32, *const u16) = match ctx.res_kind {
                1 => (
                    (ctx.res as *const f32).add(i * ctx.res_ld + j),
                    std::ptr::null(),
                ),
                2 => (
                    std::ptr::null(),
                    (ctx.res as *const u16).add(i * ctx.res_ld + j),
                ),
                3 if ctx.out_bf16 => (
                    std::ptr::null(),
                    (ctx.out as *const u16).add(i * ctx.ldc + j),
                ),
                3 => (
                    (ctx.out as *const f32).add(i * ctx.ldc + j),
                    std::ptr::null(),
                ),
                _ => (std::ptr::null(), std::ptr::null()),
            };
            if !res_f32.is_null() {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, res_f32));
            } else if !res_bf16.is_null() {
                let h = _mm256_maskz_loadu_epi16(mask, res_bf16 as *const _);
                v = _mm512_add_ps(
                    v,
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h))),
                );
            }
            if let Some(act) = ctx.act {
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                let rounded =
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
                v = crate::models::cpu_f32::avx512::activate16(rounded, act);
            }
            if ctx.out_bf16 {
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_mask_storeu_epi16(
                    (ctx.out as *mut u16).add(i * ctx.ldc + j) as *mut _,
                    mask,
                    h,
                );
            } else {
                _mm512_mask_storeu_ps((ctx.out as *mut f32).add(i * ctx.ldc + j), mask, v);
            }
        }
        c += 16;
    }
}
