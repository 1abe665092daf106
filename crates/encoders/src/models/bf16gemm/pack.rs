//! The packed weight layout shared by all three paths.
//!
//! The n output columns are cut into panels of 16 (the last one zero-padded), k is zero-padded to
//! `kpad`, a multiple of 32. Panel `p` is `kpad / 2` rows of 64 bytes; row `kk` holds, for each of
//! the panel's 16 columns `c`, the pair `(B[2kk][c], B[2kk+1][c])` where `B = Wᵀ` (the "VNNI"
//! pair layout). 16 consecutive rows (1 KiB) are exactly one AMX B tile for a k-step of 32, and
//! one row is one VDPBF16PS operand for the AVX512-BF16 kernel.
use super::{bf16, Align64};

pub struct PackedB {
    n: usize,
    k: usize,
    kpad: usize,
    buf: Vec<Align64>,
}

impl Default for PackedB {
    fn default() -> Self {
        PackedB::empty()
    }
}

impl PackedB {
    pub const fn empty() -> PackedB {
        PackedB {
            n: 0,
            k: 0,
            kpad: 0,
            buf: Vec::new(),
        }
    }
    /// Output columns (rows of W).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Reduction length (columns of W).
    pub fn k(&self) -> usize {
        self.k
    }
    pub(crate) fn kpad(&self) -> usize {
        self.kpad
    }
    pub(crate) fn ptr(&self) -> *const u16 {
        self.buf.as_ptr() as *const u16
    }
    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.buf.len() * 64
    }

    fn shape(&mut self, n: usize, k: usize) {
        self.n = n;
        self.k = k;
        self.kpad = k.max(1).div_ceil(32) * 32;
        let elems = n.div_ceil(16) * 16 * self.kpad;
        let lines = (elems * 2).div_ceil(64);
        if self.buf.len() < lines || self.buf.len() > 2 * lines + 64 {
            self.buf = vec![Align64([0; 64]); lines];
        }
    }

    fn fill(&mut self, get: impl Fn(usize, usize) -> u16) {
        let (n, k, kpad) = (self.n, self.k, self.kpad);
        let dst = self.buf.as_mut_ptr() as *mut u16;
        for p in 0..n.div_ceil(16) {
            for c in 0..16 {
                let col = p * 16 + c;
                for kk in 0..kpad / 2 {
                    let (k0, k1) = (2 * kk, 2 * kk + 1);
                    let v0 = if col < n && k0 < k { get(col, k0) } else { 0 };
                    let v1 = if col < n && k1 < k { get(col, k1) } else { 0 };
                    let o = p * kpad * 16 + kk * 32 + c * 2;
                    // SAFETY: o + 1 < panels * kpad * 16 <= buffer length.
                    unsafe {
                        *dst.add(o) = v0;
                        *dst.add(o + 1) = v1;
                    }
                }
            }
        }
    }

    /// Pack W `[n, k]` (row stride `ldw`), f32, rounded to bf16 (nearest even).
    pub fn from_f32_nk(w: &[f32], n: usize, k: usize, ldw: usize) -> PackedB {
        super::need(w.len(), n, k, ldw, "W");
        let mut p = PackedB::empty();
        p.shape(n, k);
        p.fill(|c, kk| bf16::from_f32(w[c * ldw + kk]).0);
        p
    }

    /// Pack W `[n, k]` (row stride `ldw`) given in bf16.
    pub fn from_bf16_nk(w: &[bf16], n: usize, k: usize, ldw: usize) -> PackedB {
        let mut p = PackedB::empty();
        p.repack_nk_bf16(w, n, k, ldw);
        p
    }

    /// Pack B `[k, n]` (row stride `ldb`) given in bf16, for `out = A · B`.
    pub fn from_kn_bf16(b: &[bf16], k: usize, n: usize, ldb: usize) -> PackedB {
        let mut p = PackedB::empty();
        p.repack_kn_bf16(b, k, n, ldb);
        p
    }

    /// Pack B `[k, n]` (row stride `ldb`) given in f32.
    pub fn from_kn_f32(b: &[f32], k: usize, n: usize, ldb: usize) -> PackedB {
        super::need(b.len(), k, n, ldb, "B");
        let mut p = PackedB::empty();
        p.shape(n, k);
        p.fill(|c, kk| bf16::from_f32(b[kk * ldb + c]).0);
        p
    }

    /// Repack in place (reusing the buffer) from W `[n, k]` bf16.
    pub fn repack_nk_bf16(&mut self, w: &[bf16], n: usize, k: usize, ldw: usize) {
        super::need(w.len(), n, k, ldw, "W");
        self.shape(n, k);
        #[cfg(target_arch = "x86_64")]
        if super::avx512bf16_available() {
            // SAFETY: features checked; shape() sized the buffer; `need` checked the source.
            unsafe {
                pack_nk_bf16_avx512(
                    w.as_ptr() as *const u16,
                    n,
                    k,
                    ldw,
                    self.kpad,
                    self.buf.as_mut_ptr() as *mut u16,
                )
            };
            return;
        }
        self.fill(|c, kk| w[c * ldw + kk].0);
    }

    /// Repack in place from B `[k, n]` bf16.
    pub fn repack_kn_bf16(&mut self, b: &[bf16], k: usize, n: usize, ldb: usize) {
        super::need(b.len(), k, n, ldb, "B");
        self.shape(n, k);
        #[cfg(target_arch = "x86_64")]
        if super::avx512bf16_available() {
            // SAFETY: as above.
            unsafe {
                pack_kn_bf16_avx512(
                    b.as_ptr() as *const u16,
                    k,
                    n,
                    ldb,
                    self.kpad,
                    self.buf.as_mut_ptr() as *mut u16,
                )
            };
            return;
        }
        self.fill(|c, kk| b[kk * ldb + c].0);
    }
}

/// W `[n, k]` -> panels: each 64-byte row of a panel gathers one 32-bit pair from 16 rows of W.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_nk_bf16_avx512(
    w: *const u16,
    n: usize,
    k: usize,
    ldw: usize,
    kpad: usize,
    dst: *mut u16,
) {
    use std::arch::x86_64::*;
    let full_pairs = k / 2;
    let lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    let idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(ldw as i32));
    for p in 0..n.div_ceil(16) {
        let rows = (n - p * 16).min(16);
        let mask: __mmask16 = if rows == 16 {
            0xffff
        } else {
            (1u16 << rows) - 1
        };
        let src = w.add(p * 16 * ldw);
        let pd = dst.add(p * kpad * 16);
        if rows == 16
            && ldw.is_multiple_of(2)
            && (src as usize).is_multiple_of(4)
            && full_pairs >= 16
        {
            // 16 x 16 pairs at a time: load 16 rows of 32 bf16, transpose as 32-bit elements.
            let mut kk = 0;
            while kk + 16 <= full_pairs {
                let mut r = [_mm512_setzero_si512(); 16];
                for (i, ri) in r.iter_mut().enumerate() {
                    *ri = _mm512_loadu_si512(src.add(i * ldw + 2 * kk) as *const _);
                }
                transpose16x16_epi32(&mut r);
                for (j, rj) in r.iter().enumerate() {
                    _mm512_store_si512(pd.add((kk + j) * 32) as *mut _, *rj);
                }
                kk += 16;
            }
            for kk in kk..full_pairs {
                let v = _mm512_i32gather_epi32::<2>(idx, src.add(2 * kk) as *const u8 as *const _);
                _mm512_store_si512(pd.add(kk * 32) as *mut _, v);
            }
        } else {
            for kk in 0..full_pairs {
                let v = _mm512_mask_i32gather_epi32::<2>(
                    _mm512_setzero_si512(),
                    mask,
                    idx,
                    src.add(2 * kk) as *const u8 as *const _,
                );
                _mm512_store_si512(pd.add(kk * 32) as *mut _, v);
            }
        }
        // Odd k: the last pair has only its first element; then the zero rows up to kpad.
        let mut kk = full_pairs;
        if k % 2 == 1 {
            let row = pd.add(kk * 32);
            for c in 0..16 {
                *row.add(2 * c) = if c < rows {
                    *src.add(c * ldw + 2 * kk)
                } else {
                    0
                };
                *row.add(2 * c + 1) = 0;
            }
            kk += 1;
        }
        for kk in kk..kpad / 2 {
            _mm512_store_si512(pd.add(kk * 32) as *mut _, _mm512_setzero_si512());
        }
    }
}

/// In-register transpose of a 16x16 matrix of 32-bit elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose16x16_epi32(r: &mut [std::arch::x86_64::__m512i; 16]) {
    use std::arch::x86_64::*;
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for i in 0..4 {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // Now r[4i + j] holds, in each 128-bit lane L, elements (row 4i..4i+3, col 4L + j).
    for i in 0..2 {
        for j in 0..4 {
            let a = r[8 * i + j];
            let b = r[8 * i + 4 + j];
            t[8 * i + j] = _mm512_shuffle_i32x4::<0x88>(a, b); // lanes a0 a2 b0 b2
            t[8 * i + 4 + j] = _mm512_shuffle_i32x4::<0xdd>(a, b); // lanes a1 a3 b1 b3
        }
    }
    for j in 0..4 {
        for h in 0..2 {
            let a = t[4 * h + j];
            let b = t[8 + 4 * h + j];
            r[j + 4 * h] = _mm512_shuffle_i32x4::<0x88>(a, b); // lanes 0 / 1 -> columns j, 4 + j
            r[j + 8 + 4 * h] = _mm512_shuffle_i32x4::<0xdd>(a, b); // lanes 2 / 3 -> 8 + j, 12 + j
        }
    }
}

/// B `[k, n]` -> panels: a panel row interleaves 16 columns of two consecutive rows of B.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_kn_bf16_avx512(
    b: *const u16,
    k: usize,
    n: usize,
    ldb: usize,
    kpad: usize,
    dst: *mut u16,
) {
    use std::arch::x86_64::*;
    for p in 0..n.div_ceil(16) {
        let cols = (n - p * 16).min(16);
        let mask: __mmask16 = if cols == 16 {
            0xffff
        } else {
            (1u16 << cols) - 1
        };
        let pd = dst.add(p * kpad * 16);
        for kk in 0..kpad / 2 {
            let (k0, k1) = (2 * kk, 2 * kk + 1);
            let lo = if k0 < k {
                _mm256_maskz_loadu_epi16(mask, b.add(k0 * ldb + p * 16) as *const _)
            } else {
                _mm256_setzero_si256()
            };
            let hi = if k1 < k {
                _mm256_maskz_loadu_epi16(mask, b.add(k1 * ldb + p * 16) as *const _)
            } else {
                _mm256_setzero_si256()
            };
            let v = _mm512_or_si512(
                _mm512_cvtepu16_epi32(lo),
                _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(hi)),
            );
            _mm512_store_si512(pd.add(kk * 32) as *mut _, v);
        }
    }
}

/// f32 -> bf16 (nearest even) with VCVTNE2PS2BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(crate) unsafe fn cvt_f32_bf16_avx512(src: *const f32, dst: *mut u16, len: usize) {
    use std::arch::x86_64::*;
    let mut i = 0;
    while i + 32 <= len {
        let lo = _mm512_loadu_ps(src.add(i));
        let hi = _mm512_loadu_ps(src.add(i + 16));
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(dst.add(i) as *mut _, v);
        i += 32;
    }
    while i < len {
        let rem = (len - i).min(16);
        let mask: __mmask16 = if rem == 16 { 0xffff } else { (1u16 << rem) - 1 };
        let v = _mm512_maskz_loadu_ps(mask, src.add(i));
        let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
        _mm256_mask_storeu_epi16(dst.add(i) as *mut _, mask, h);
        i += rem;
    }
}
