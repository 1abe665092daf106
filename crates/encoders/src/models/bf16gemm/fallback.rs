//! Portable path: A and each B panel widened to f32 in scratch, 4x16 register blocks in plain
//! Rust (the compiler vectorizes the 16-wide column loop). Correct on every target; speed is
//! whatever the baseline target features allow.
use super::{bf16, epilogue, AKind, Ctx, Scratch};

pub(crate) unsafe fn task(ctx: &Ctx, i0: usize, i1: usize, p0: usize, p1: usize, s: &mut Scratch) {
    let rows = i1 - i0;
    let kpad = ctx.kpad;
    let k = ctx.k;
    // Scratch: A block (rows x kpad f32), one B panel (kpad x 16 f32), a 4x16 accumulator block.
    let a_len = rows * kpad;
    let base = s.get((a_len + kpad * 16 + 64) * 4) as *mut f32;
    let a = std::slice::from_raw_parts_mut(base, a_len);
    let bp = std::slice::from_raw_parts_mut(base.add(a_len), kpad * 16);
    let accbuf = base.add(a_len + kpad * 16);
    for r in 0..rows {
        let row = &mut a[r * kpad..(r + 1) * kpad];
        let i = i0 + r;
        for (kk, x) in row.iter_mut().enumerate() {
            *x = if kk >= k {
                0.0
            } else {
                match ctx.a_kind {
                    AKind::Bf16 => bf16(*(ctx.a as *const u16).add(i * ctx.lda + kk)).to_f32(),
                    AKind::F32 => {
                        bf16::from_f32(*(ctx.a as *const f32).add(i * ctx.lda + kk)).to_f32()
                    }
                }
            };
        }
    }
    for p in p0..p1 {
        let src = ctx.b.add(p * kpad * 16);
        for kk in 0..kpad / 2 {
            for c in 0..16 {
                bp[(2 * kk) * 16 + c] = bf16(*src.add(kk * 32 + 2 * c)).to_f32();
                bp[(2 * kk + 1) * 16 + c] = bf16(*src.add(kk * 32 + 2 * c + 1)).to_f32();
            }
        }
        let j0 = p * 16;
        let cols = (ctx.n - j0).min(16);
        let mut r = 0;
        while r < rows {
            let nr = (rows - r).min(4);
            let mut acc = [[0f32; 16]; 4];
            for kk in 0..k {
                let b: &[f32; 16] = bp[kk * 16..kk * 16 + 16].try_into().unwrap();
                for (q, accq) in acc.iter_mut().enumerate().take(nr) {
                    let av = a[(r + q) * kpad + kk];
                    for c in 0..16 {
                        accq[c] += av * b[c];
                    }
                }
            }
            for (q, accq) in acc.iter().enumerate().take(nr) {
                std::ptr::copy_nonoverlapping(accq.as_ptr(), accbuf.add(q * 16), 16);
            }
            epilogue::apply(ctx, accbuf, 16, i0 + r, nr, j0, cols);
            r += nr;
        }
    }
}
