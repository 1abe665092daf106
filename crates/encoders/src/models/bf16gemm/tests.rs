//! Every path against an f64 reference on bf16-rounded inputs, so the only error left is the f32
//! accumulation order (and the final bf16 rounding for bf16 outputs).
//!
//! Tolerance, per element: |got - ref| <= 1e-5·Σ|a·b| + 1e-6·(|scale·acc| + |bias| + |residual|)
//! (+ 2^-8·|ref| for bf16
//! output, which is one bf16 rounding: at most 2^-9 relative, doubled for the rounding of the
//! f32 value first). Σ|a·b| is the sum of the absolute products of the dot product, so this
//! is relative to the size of the terms; dropping or doubling a single term (k up to 1000) is
//! still ~100x above it.
//!
//! Debug builds test a reduced grid; `cargo test --release` runs the full one. A path this CPU
//! lacks is reported as SKIPPED.
use super::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec_bf16(&mut self, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| bf16::from_f32(self.next()).to_f32())
            .collect()
    }
}

fn paths() -> Vec<Path> {
    let mut v = vec![Path::Fallback];
    if Path::Avx512Bf16.available() {
        v.push(Path::Avx512Bf16);
    } else {
        eprintln!("bf16 gemm on Avx512Bf16: SKIPPED (this CPU lacks AVX512-BF16)");
    }
    if Path::Amx.available() {
        v.push(Path::Amx);
    } else {
        eprintln!("bf16 gemm on Amx: SKIPPED (this CPU or OS lacks AMX)");
    }
    v
}

/// Reference: ref[i][j] = Σ_k a[i][k]·w[j][k] in f64, plus Σ|a·w|.
fn reference(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    w: &[f32],
    ldw: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut r = vec![0f64; m * n];
    let mut s = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut acc, mut abs) = (0f64, 0f64);
            for kk in 0..k {
                let p = a[i * lda + kk] as f64 * w[j * ldw + kk] as f64;
                acc += p;
                abs += p.abs();
            }
            r[i * n + j] = acc;
            s[i * n + j] = abs;
        }
    }
    (r, s)
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    PlainF32,
    BiasF32,
    BiasResidualF32,
    Bf16Out,
    Bf16OutBiasResidualBf16,
    InPlaceScaledF32,
    InPlaceBf16,
}
const VARIANTS: [Variant; 7] = [
    Variant::PlainF32,
    Variant::BiasF32,
    Variant::BiasResidualF32,
    Variant::Bf16Out,
    Variant::Bf16OutBiasResidualBf16,
    Variant::InPlaceScaledF32,
    Variant::InPlaceBf16,
];

#[allow(clippy::too_many_arguments)]
fn check_one(
    path: Path,
    variant: Variant,
    a_f32: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &PackedB,
    r: &[f64],
    s: &[f64],
    rng: &mut Rng,
) -> f64 {
    let ldc = n + (m % 3); // some padding in the output rows
    let bias: Vec<f32> = (0..n).map(|_| rng.next()).collect();
    let res: Vec<f32> = rng.vec_bf16(m * ldc);
    let res_b: Vec<bf16> = res.iter().map(|&x| bf16::from_f32(x)).collect();
    let a_b: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
    let scale = 0.125f32 * 3.0;
    let (use_bias, use_res, out_bf16, sc) = match variant {
        Variant::PlainF32 => (false, false, false, 1.0),
        Variant::BiasF32 => (true, false, false, 1.0),
        Variant::BiasResidualF32 => (true, true, false, 1.0),
        Variant::Bf16Out => (false, false, true, 1.0),
        Variant::Bf16OutBiasResidualBf16 => (true, true, true, 1.0),
        Variant::InPlaceScaledF32 => (false, true, false, scale),
        Variant::InPlaceBf16 => (true, true, true, 1.0),
    };
    let in_place = matches!(variant, Variant::InPlaceScaledF32 | Variant::InPlaceBf16);
    let mut out_f = if in_place {
        res.clone()
    } else {
        vec![f32::NAN; m * ldc]
    };
    let mut out_b = if in_place {
        res_b.clone()
    } else {
        vec![bf16(0x7fc0); m * ldc]
    };
    let residual = if !use_res {
        Residual::None
    } else if in_place {
        Residual::InPlace
    } else if out_bf16 {
        Residual::Bf16 {
            data: &res_b,
            ld: ldc,
        }
    } else {
        Residual::F32 {
            data: &res,
            ld: ldc,
        }
    };
    let epi = Epilogue {
        scale: sc,
        bias: if use_bias { Some(&bias) } else { None },
        residual,
        round_before_residual: false,
        activation: None,
    };
    let out = if out_bf16 {
        Output::Bf16 {
            data: &mut out_b,
            ld: ldc,
        }
    } else {
        Output::F32 {
            data: &mut out_f,
            ld: ldc,
        }
    };
    if a_f32 {
        gemm_f32a(path, m, a, lda, packed, out, &epi).unwrap();
    } else {
        gemm_bf16(path, m, &a_b, lda, packed, out, &epi).unwrap();
    }
    let mut worst = 0f64;
    for i in 0..m {
        for j in 0..ldc {
            let got = if out_bf16 {
                out_b[i * ldc + j].to_f32() as f64
            } else {
                out_f[i * ldc + j] as f64
            };
            if j >= n {
                // Padding columns must be untouched.
                let before = if in_place {
                    res[i * ldc + j] as f64
                } else {
                    f64::NAN
                };
                let before = if out_bf16 && in_place {
                    res_b[i * ldc + j].to_f32() as f64
                } else {
                    before
                };
                assert!(
                    got.to_bits() == before.to_bits() || (got.is_nan() && before.is_nan()),
                    "{path:?} {variant:?} wrote padding ({i},{j})"
                );
                continue;
            }
            let mut want = r[i * n + j] * sc as f64;
            let mut parts = want.abs();
            if use_bias {
                want += bias[j] as f64;
                parts += (bias[j] as f64).abs();
            }
            if use_res {
                want += res[i * ldc + j] as f64;
                parts += (res[i * ldc + j] as f64).abs();
            }
            let tol = 1e-5 * s[i * n + j] * sc as f64
                + 1e-6 * parts
                + if out_bf16 { want.abs() / 256.0 } else { 0.0 }
                + 1e-30;
            let err = (got - want).abs();
            assert!(err <= tol, "{path:?} {variant:?} a_f32={a_f32} m={m} n={n} k={k} at ({i},{j}): got {got} want {want} err {err:e} tol {tol:e}");
            // The accumulation-order error alone: plain f32 output, nothing added.
            if matches!(variant, Variant::PlainF32) && s[i * n + j] > 0.0 {
                worst = worst.max(err / s[i * n + j]);
            }
        }
    }
    worst
}

#[test]
fn gemm_all_paths_odd_shapes() {
    let full = !cfg!(debug_assertions);
    let ms: &[usize] = if full { &[1, 7, 33, 257] } else { &[1, 7, 33] };
    let ks: &[usize] = if full {
        &[1, 31, 32, 33, 384, 768, 1000]
    } else {
        &[1, 31, 32, 33, 100]
    };
    let ns: &[usize] = if full {
        &[1, 15, 16, 17, 384, 3072]
    } else {
        &[1, 15, 16, 17, 50]
    };
    let paths = paths();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut combo = 0usize;
    let mut worst = 0f64;
    let mut checks = 0usize;
    for &k in ks {
        for &n in ns {
            let ldw = k + (n % 2);
            let w = rng.vec_bf16(n * ldw);
            let packed = PackedB::from_f32_nk(&w, n, k, ldw);
            for &m in ms {
                let lda = k + (m % 2) * 3;
                let a = rng.vec_bf16(m * lda);
                let (r, s) = reference(m, n, k, &a, lda, &w, ldw);
                for &path in &paths {
                    let v = VARIANTS[combo % VARIANTS.len()];
                    worst = worst.max(check_one(
                        path,
                        v,
                        combo.is_multiple_of(5),
                        m,
                        n,
                        k,
                        &a,
                        lda,
                        &packed,
                        &r,
                        &s,
                        &mut rng,
                    ));
                    // Plain f32 on every shape too.
                    worst = worst.max(check_one(
                        path,
                        Variant::PlainF32,
                        false,
                        m,
                        n,
                        k,
                        &a,
                        lda,
                        &packed,
                        &r,
                        &s,
                        &mut rng,
                    ));
                    checks += 2;
                    combo += 1;
                }
            }
        }
    }
    eprintln!(
        "{checks} checks over {:?}; worst |err| / Σ|a·b| on plain f32 outputs = {worst:e}",
        paths
    );
}

#[test]
fn every_variant_every_path_medium() {
    let mut rng = Rng(12345);
    let (m, n, k) = (45, 70, 130);
    let w = rng.vec_bf16(n * k);
    let packed = PackedB::from_f32_nk(&w, n, k, k);
    let a = rng.vec_bf16(m * k);
    let (r, s) = reference(m, n, k, &a, k, &w, k);
    for path in paths() {
        for v in VARIANTS {
            for a_f32 in [false, true] {
                check_one(path, v, a_f32, m, n, k, &a, k, &packed, &r, &s, &mut rng);
            }
        }
    }
}

#[test]
fn packers_agree() {
    let mut rng = Rng(777);
    for &(n, k, ld) in &[
        (1, 1, 1),
        (17, 33, 40),
        (16, 64, 64),
        (40, 100, 101),
        (33, 1000, 1000),
        (64, 128, 130),
    ] {
        let w = rng.vec_bf16(n * ld);
        let wb: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
        let p1 = PackedB::from_f32_nk(&w, n, k, ld);
        let p2 = PackedB::from_bf16_nk(&wb, n, k, ld);
        // Same matrix given transposed ([k, n]).
        let mut t = vec![0f32; k * n];
        for j in 0..n {
            for kk in 0..k {
                t[kk * n + j] = w[j * ld + kk];
            }
        }
        let tb: Vec<bf16> = t.iter().map(|&x| bf16::from_f32(x)).collect();
        let p3 = PackedB::from_kn_bf16(&tb, k, n, n);
        let p4 = PackedB::from_kn_f32(&t, k, n, n);
        let bytes = n.div_ceil(16) * 16 * k.div_ceil(32) * 32 * 2;
        let view = |p: &PackedB| -> Vec<u8> {
            // Compare through a product with the identity-like probe: run the fallback on e_i rows.
            let mut out = vec![0f32; k * n];
            let eye: Vec<f32> = (0..k * k)
                .map(|x| if x / k == x % k { 1.0 } else { 0.0 })
                .collect();
            gemm_f32a(
                Path::Fallback,
                k,
                &eye,
                k,
                p,
                Output::F32 {
                    data: &mut out,
                    ld: n,
                },
                &Epilogue::none(),
            )
            .unwrap();
            out.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
        assert!(p1.size_bytes() >= bytes);
        let v1 = view(&p1);
        assert_eq!(v1, view(&p2), "nk bf16 packer differs n={n} k={k}");
        assert_eq!(v1, view(&p3), "kn bf16 packer differs n={n} k={k}");
        assert_eq!(v1, view(&p4), "kn f32 packer differs n={n} k={k}");
    }
}

#[test]
fn attention_products() {
    let mut rng = Rng(4242);
    for &(m, kl, d) in &[
        (1, 1, 32),
        (7, 33, 64),
        (64, 100, 64),
        (130, 257, 128),
        (256, 256, 64),
        (33, 65, 96),
        (5, 9, 40),
    ] {
        let ldq = d + 3;
        let q = rng.vec_bf16(m * ldq);
        let kmat = rng.vec_bf16(kl * ldq);
        let qb: Vec<bf16> = q.iter().map(|&x| bf16::from_f32(x)).collect();
        let kb: Vec<bf16> = kmat.iter().map(|&x| bf16::from_f32(x)).collect();
        let (r, s) = reference(m, kl, d, &q, ldq, &kmat, ldq);
        // P V: P [m, kl] with probabilities-like values, V [kl, d] row stride d + 5.
        let p = rng.vec_bf16(m * kl);
        let ldv = d + 5;
        let v = rng.vec_bf16(kl * ldv);
        let pb: Vec<bf16> = p.iter().map(|&x| bf16::from_f32(x)).collect();
        let vb: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
        let mut vt = vec![0f32; d * kl]; // V transposed, [d, kl]
        for j in 0..kl {
            for c in 0..d {
                vt[c * kl + j] = v[j * ldv + c];
            }
        }
        let (r2, s2) = reference(m, d, kl, &p, kl, &vt, kl);
        for path in paths() {
            let scale = 1.0 / (d as f32).sqrt();
            let mut sc = vec![0f32; m * kl];
            attn_scores(
                path,
                m,
                kl,
                d,
                &qb,
                ldq,
                &kb,
                ldq,
                Output::F32 {
                    data: &mut sc,
                    ld: kl,
                },
                &Epilogue {
                    scale,
                    ..Epilogue::none()
                },
            )
            .unwrap();
            for i in 0..m * kl {
                let want = r[i] * scale as f64;
                assert!(
                    (sc[i] as f64 - want).abs() <= 1e-5 * s[i] + 1e-6 * want.abs() + 1e-30,
                    "{path:?} scores m={m} kl={kl} d={d} at {i}: {} vs {want}",
                    sc[i]
                );
            }
            let mut o = vec![bf16(0); m * d];
            attn_pv(
                path,
                m,
                kl,
                d,
                &pb,
                kl,
                &vb,
                ldv,
                Output::Bf16 {
                    data: &mut o,
                    ld: d,
                },
                &Epilogue::none(),
            )
            .unwrap();
            for i in 0..m * d {
                let want = r2[i];
                let got = o[i].to_f32() as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * s2[i] + want.abs() / 256.0 + 1e-30,
                    "{path:?} pv m={m} kl={kl} d={d} at {i}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn availability_and_errors() {
    assert!(Path::Fallback.available());
    assert!(Path::Auto.available());
    let w = vec![1.0f32; 16];
    let p = PackedB::from_f32_nk(&w, 4, 4, 4);
    let a = vec![bf16::from_f32(1.0); 4];
    for path in [Path::Amx, Path::Avx512Bf16] {
        let mut out = vec![0f32; 4];
        let r = gemm_bf16(
            path,
            1,
            &a,
            4,
            &p,
            Output::F32 {
                data: &mut out,
                ld: 4,
            },
            &Epilogue::none(),
        );
        if path.available() {
            assert!(r.is_ok());
            assert_eq!(out, vec![4.0; 4]);
        } else {
            assert_eq!(r, Err(Unavailable(path)));
        }
    }
    eprintln!(
        "resolved Auto = {:?}; amx {} avx512bf16 {}",
        Path::Auto.resolve(),
        amx_available(),
        avx512bf16_available()
    );
}

#[test]
fn nan_in_a_padding_is_not_read() {
    // k odd with a NaN right after each row's last element: no path may pick it up.
    let (m, n, k) = (9, 20, 7);
    let lda = 8;
    let mut a = vec![bf16::from_f32(0.5); m * lda];
    for i in 0..m {
        a[i * lda + 7] = bf16(0x7fc0);
    }
    let w = vec![1.0f32; n * k];
    let p = PackedB::from_f32_nk(&w, n, k, k);
    for path in paths() {
        let mut out = vec![0f32; m * n];
        gemm_bf16(
            path,
            m,
            &a[..(m - 1) * lda + k],
            lda,
            &p,
            Output::F32 {
                data: &mut out,
                ld: n,
            },
            &Epilogue::none(),
        )
        .unwrap();
        assert!(out.iter().all(|&x| x == 3.5), "{path:?}: {:?}", &out[..4]);
    }
}

/// 64-byte aligned bf16 storage (A read in place by the AMX path needs aligned rows).
fn aligned_bf16(vals: &[f32]) -> (Vec<[u16; 32]>, usize) {
    let mut v = vec![[0u16; 32]; vals.len() / 32 + 2];
    let off = (64 - (v.as_ptr() as usize % 64)) % 64 / 2;
    let p = v.as_mut_ptr() as *mut u16;
    for (i, x) in vals.iter().enumerate() {
        // SAFETY: off + i < 32 * v.len().
        unsafe { *p.add(off + i) = bf16::from_f32(*x).0 };
    }
    (v, off)
}

#[test]
fn amx_a_in_place_aligned() {
    if !Path::Amx.available() {
        eprintln!("AMX not available: skipped");
        return;
    }
    let mut rng = Rng(99);
    for &(m, k, n) in &[
        (16, 32, 16),
        (40, 64, 33),
        (56, 64, 64),
        (64, 96, 48),
        (100, 768, 70),
        (300, 3072, 40),
    ] {
        for lda in [k, k + 32] {
            let a = rng.vec_bf16(m * lda);
            let w = rng.vec_bf16(n * k);
            let (store, off) = aligned_bf16(&a);
            // SAFETY: the storage holds off + m * lda values.
            let ab: &[bf16] = unsafe {
                std::slice::from_raw_parts((store.as_ptr() as *const bf16).add(off), m * lda)
            };
            assert_eq!(ab.as_ptr() as usize % 64, 0);
            let packed = PackedB::from_f32_nk(&w, n, k, k);
            let (r, s) = reference(m, n, k, &a, lda, &w, k);
            for v in [
                Variant::PlainF32,
                Variant::BiasF32,
                Variant::Bf16OutBiasResidualBf16,
            ] {
                let mut out = vec![0f32; m * n];
                let mut outb = vec![bf16(0); m * n];
                let bias: Vec<f32> = (0..n).map(|_| rng.next()).collect();
                let epi = if matches!(v, Variant::PlainF32) {
                    Epilogue::none()
                } else {
                    Epilogue::bias(&bias)
                };
                if matches!(v, Variant::Bf16OutBiasResidualBf16) {
                    gemm_bf16(
                        Path::Amx,
                        m,
                        ab,
                        lda,
                        &packed,
                        Output::Bf16 {
                            data: &mut outb,
                            ld: n,
                        },
                        &epi,
                    )
                    .unwrap();
                } else {
                    gemm_bf16(
                        Path::Amx,
                        m,
                        ab,
                        lda,
                        &packed,
                        Output::F32 {
                            data: &mut out,
                            ld: n,
                        },
                        &epi,
                    )
                    .unwrap();
                }
                for i in 0..m * n {
                    let b = if matches!(v, Variant::PlainF32) {
                        0.0
                    } else {
                        bias[i % n] as f64
                    };
                    let want = r[i] + b;
                    let (got, extra) = if matches!(v, Variant::Bf16OutBiasResidualBf16) {
                        (outb[i].to_f32() as f64, want.abs() / 256.0)
                    } else {
                        (out[i] as f64, 0.0)
                    };
                    let tol = 1e-5 * s[i] + 1e-6 * (r[i].abs() + b.abs()) + extra + 1e-30;
                    assert!(
                        (got - want).abs() <= tol,
                        "m={m} k={k} n={n} lda={lda} {v:?} at {i}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// `round_before_residual` rounds the product (with bias) to bf16 before the residual is
/// added: 1 + 3·2^-10 rounds to 1, plus a residual of 2^-8 is a tie that rounds to 1; one
/// rounding of the whole sum gives 1 + 2^-7.
#[test]
fn rounding_before_the_residual_is_two_roundings() {
    let k = 32;
    let a: Vec<bf16> = vec![bf16::from_f32(1.0); k];
    let mut w = vec![0f32; 16 * k];
    for j in 0..16 {
        w[j * k] = 1.0;
        w[j * k + 1] = 3.0 / 1024.0;
    }
    let packed = PackedB::from_f32_nk(&w, 16, k, k);
    let res: Vec<bf16> = vec![bf16::from_f32(1.0 / 256.0); 16];
    for path in paths() {
        for (round_first, want) in [(true, 1.0f32), (false, 1.0 + 1.0 / 128.0)] {
            let mut out = vec![bf16(0); 16];
            let epi = Epilogue {
                residual: Residual::Bf16 { data: &res, ld: 16 },
                round_before_residual: round_first,
                ..Epilogue::none()
            };
            gemm_bf16(
                path,
                1,
                &a,
                k,
                &packed,
                Output::Bf16 {
                    data: &mut out,
                    ld: 16,
                },
                &epi,
            )
            .unwrap();
            assert!(
                out.iter().all(|v| v.to_f32() == want),
                "{path:?} round first {round_first}: {:?}",
                out[0].to_f32()
            );
        }
    }
}

/// An activation in the epilogue equals the activation applied afterwards to the rounded
/// product (then rounded), within one bf16 step (the vectorised GELU and the generic one may
/// differ in the last f32 bit).
#[test]
fn an_activation_in_the_epilogue_is_applied_to_the_rounded_product() {
    let (m, n, k) = (37, 40, 96);
    let mut rng = Rng(0x1234_5678);
    let a: Vec<bf16> = rng
        .vec_bf16(m * k)
        .iter()
        .map(|&x| bf16::from_f32(2.0 * x))
        .collect();
    let w = rng.vec_bf16(n * k);
    let bias: Vec<f32> = (0..n).map(|_| rng.next()).collect();
    let packed = PackedB::from_f32_nk(&w, n, k, k);
    for path in paths() {
        for act in [
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Silu,
            Activation::Relu,
            Activation::Tanh,
        ] {
            let mut fused = vec![bf16(0); m * n];
            let mut plain = vec![bf16(0); m * n];
            let epi = |activation| Epilogue {
                bias: Some(&bias),
                activation,
                ..Epilogue::none()
            };
            gemm_bf16(
                path,
                m,
                &a,
                k,
                &packed,
                Output::Bf16 {
                    data: &mut fused,
                    ld: n,
                },
                &epi(Some(act)),
            )
            .unwrap();
            gemm_bf16(
                path,
                m,
                &a,
                k,
                &packed,
                Output::Bf16 {
                    data: &mut plain,
                    ld: n,
                },
                &epi(None),
            )
            .unwrap();
            for (f, p) in fused.iter().zip(&plain) {
                let mut x = [p.to_f32()];
                crate::models::cpu_f32::activate_on(
                    crate::models::cpu_f32::CpuPath::Generic,
                    &mut x,
                    act,
                );
                let want = bf16::from_f32(x[0]);
                let step = (want.to_f32().abs() / 128.0).max(1e-30);
                assert!(
                    (f.to_f32() - want.to_f32()).abs() <= step,
                    "{path:?} {act:?}: {} vs {}",
                    f.to_f32(),
                    want.to_f32()
                );
            }
        }
    }
}
