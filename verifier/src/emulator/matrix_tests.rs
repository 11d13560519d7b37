//! Tests for `matrix`: operands are distributed with the PTX ISA's fragment formulas transcribed
//! per section below (independently of the module's generic index functions), and D is compared
//! with a plain matrix product.

use super::*;
use crate::emulator::exact::Rng;
use half::{bf16, f16};

/// "mma.sync.aligned." + the rest of an opcode.
fn dense(rest: &str) -> String {
    format!("mma.sync.aligned.{rest}")
}

fn gt(lane: usize) -> (usize, usize) {
    (lane >> 2, lane % 4)
}

type At = fn(usize, usize) -> (usize, usize);

// ---- ISA fragment formulas, one per section ("groupID" = g, "threadID_in_group" = t). ----

/// "Matrix Fragments for mma.m16n8k16 with floating point type", A (.f16/.bf16).
fn a_16816_f16(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    let row = if i < 2 || (4..6).contains(&i) {
        g
    } else {
        g + 8
    };
    let col = if i < 4 {
        t * 2 + (i & 1)
    } else {
        t * 2 + (i & 1) + 8
    };
    (row, col)
}
/// Same section, B (.f16/.bf16).
fn b_16816_f16(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    let row = if i < 2 {
        t * 2 + (i & 1)
    } else {
        t * 2 + (i & 1) + 8
    };
    (row, g)
}
/// Accumulators C/D of m16n8k8/k16/k32 (the same formula in every section).
fn c_16816(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    (if i < 2 { g } else { g + 8 }, t * 2 + (i & 1))
}
/// "Matrix Fragments for mma.m16n8k8", A (.f16/.bf16).
fn a_1688_f16(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    (if i < 2 { g } else { g + 8 }, t * 2 + (i & 1))
}
/// Same section, B (.f16/.bf16).
fn b_1688_f16(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    (t * 2 + i, g)
}
/// "Matrix Fragments for mma.m16n8k32", A (.u8/.s8/.e4m3/.e5m2).
fn a_16832_i8(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    let row = if i < 4 || (8..12).contains(&i) {
        g
    } else {
        g + 8
    };
    let col = if i < 8 {
        t * 4 + (i & 3)
    } else {
        t * 4 + (i & 3) + 16
    };
    (row, col)
}
/// Same section, B.
fn b_16832_i8(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    (
        if i < 4 {
            t * 4 + (i & 3)
        } else {
            t * 4 + (i & 3) + 16
        },
        g,
    )
}
/// "Matrix Fragments for mma.m16n8k16 with integer type", A (.u8/.s8/.e4m3/.e5m2).
fn a_16816_i8(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    (if i < 4 { g } else { g + 8 }, t * 4 + (i & 3))
}
/// Same section, B.
fn b_16816_i8(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    (t * 4 + i, g)
}
/// "Matrix Fragments for sparse mma.m16n8k32 with .f16 and .bf16 types", A: elements i and i^1
/// are the two non-zeros (in order) of the 4-wide chunk starting at `firstcol`; returned as
/// (row, compressed column) = (row, 2 * chunk + slot).
fn a_sp16832_f16(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    let row = if i < 2 || (4..6).contains(&i) {
        g
    } else {
        g + 8
    };
    let firstcol = if i < 4 { t * 4 } else { t * 4 + 16 };
    (row, 2 * (firstcol / 4) + (i & 1))
}
/// Same section, B (its figure only; as loaded by LLVM's sparse-mma-2-4-f16.mlir: four 8x8
/// quadrants along K, each like m16n8k16's b0,b1).
fn b_sp16832_f16(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = gt(lane);
    (t * 2 + (i & 1) + 8 * (i >> 1), g)
}

/// Registers of every lane: element i goes to register i / (32 / bits), at bit (i % ..) * bits.
fn pack(nregs: usize, bits: usize, elem: impl Fn(usize, usize) -> u32) -> Vec<Vec<u32>> {
    let per = 32 / bits;
    (0..32)
        .map(|lane| {
            let mut regs = vec![0u32; nregs];
            for i in 0..nregs * per {
                regs[i / per] |= elem(lane, i) << ((i % per) * bits);
            }
            regs
        })
        .collect()
}

/// Distributes A (16 x stored K), B (K x 8) and C (16 x 8), all row-major raw element bits,
/// with the given ISA formulas, runs `op` and gathers D (16 x 8 raw bits).
fn run_mma(
    op: &str,
    (a, a_at): (&[u32], At),
    (b, b_at): (&[u32], At),
    c: &[u32],
    meta: Option<(&[u32], u32)>,
) -> Result<Vec<u32>, String> {
    let spec = parse_mma(op)?;
    let (na, nb, nc, nd) = spec.regs();
    let bits = |t: ElemType| {
        if matches!(t, ElemType::F16 | ElemType::Bf16) {
            16
        } else {
            8
        }
    };
    let a_cols = if spec.sparse { spec.k / 2 } else { spec.k };
    let a_regs = pack(na, bits(spec.a), |lane, i| {
        let (r, col) = a_at(lane, i);
        a[r * a_cols + col]
    });
    let b_regs = pack(nb, bits(spec.b), |lane, i| {
        let (kk, n) = b_at(lane, i);
        b[kk * 8 + n]
    });
    let c_regs = pack(nc, 8 * nc, |lane, i| {
        let (r, n) = c_16816(lane, i);
        c[r * 8 + n]
    });
    let d = mma(&spec, &a_regs, &b_regs, &c_regs, meta)?;
    assert_eq!(d.len(), 32);
    // 4 accumulator elements per lane: one per register, or two 16-bit ones per register.
    let (d_bits, per) = (8 * nd, 4 / nd);
    let mut out = vec![None; 128];
    for (lane, regs) in d.iter().enumerate() {
        assert_eq!(regs.len(), nd);
        for i in 0..4 {
            let (r, n) = c_16816(lane, i);
            let v = (u64::from(regs[i / per]) >> ((i % per) * d_bits)) & ((1 << d_bits) - 1);
            out[r * 8 + n] = Some(v as u32);
        }
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("every D element is written"))
        .collect())
}

fn f16b(x: f64) -> u32 {
    let h = f16::from_f64(x);
    assert_eq!(h.to_f64(), x, "{x} is not an f16");
    u32::from(h.to_bits())
}
fn bf16b(x: f64) -> u32 {
    let h = bf16::from_f64(x);
    assert_eq!(h.to_f64(), x, "{x} is not a bf16");
    u32::from(h.to_bits())
}
fn f32b(x: f64) -> u32 {
    assert_eq!(x as f32 as f64, x, "{x} is not an f32");
    (x as f32).to_bits()
}

/// Rounds to the nearest-even f16. Not `half::f16::from_f64`: with F16C it converts through f32
/// and so rounds twice (2049 + 2^-30 becomes 2048 instead of 2050).
fn to_f16_bits(x: f64) -> u32 {
    let r = if x.is_finite() {
        let ulp = 2f64.powi((((x.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(-14) - 10);
        (x / ulp).round_ties_even() * ulp
    } else {
        x
    };
    let r = if r.abs() >= 65536.0 {
        r.signum() * f64::INFINITY
    } else {
        r
    };
    let h = f16::from_f64(r);
    assert!(h.to_f64() == r || r.is_nan());
    u32::from(h.to_bits())
}

#[test]
fn f16_reference_rounds_once() {
    assert_eq!(to_f16_bits(2049.0 + 2f64.powi(-30)), f16b(2050.0));
    assert_eq!(to_f16_bits(2049.0), f16b(2048.0));
    assert_eq!(to_f16_bits(2051.0), f16b(2052.0));
    assert_eq!(to_f16_bits(65519.0), f16b(65504.0));
    assert_eq!(
        to_f16_bits(-65520.0),
        u32::from(f16::NEG_INFINITY.to_bits())
    );
    assert_eq!(to_f16_bits(3.0 * 2f64.powi(-26)), f16b(2f64.powi(-24)));
}

/// Reference D = A (16 x K) * B (K x 8) + C in f64 (exact for the test data), rounded once.
fn reference(a: &[f64], b: &[f64], c: &[f64], k: usize, to_f16: bool) -> Vec<u32> {
    (0..128)
        .map(|idx| {
            let (r, n) = (idx / 8, idx % 8);
            let v = (0..k).map(|kk| a[r * k + kk] * b[kk * 8 + n]).sum::<f64>() + c[idx];
            if to_f16 {
                to_f16_bits(v)
            } else {
                (v as f32).to_bits()
            }
        })
        .collect()
}

#[test]
fn parse_accepts_supported_forms_and_counts_registers() {
    let cases = [
        ("m16n8k16.row.col.f32.bf16.bf16.f32", (4, 2, 4, 4)),
        ("m16n8k16.row.col.f32.f16.f16.f32", (4, 2, 4, 4)),
        ("m16n8k16.row.col.f16.f16.f16.f16", (4, 2, 2, 2)),
        ("m16n8k16.row.col.f32.f16.f16.f16", (4, 2, 2, 4)),
        ("m16n8k8.row.col.f32.bf16.bf16.f32", (2, 1, 4, 4)),
        ("m16n8k32.row.col.s32.s8.s8.s32", (4, 2, 4, 4)),
        ("m16n8k32.row.col.satfinite.s32.u8.s8.s32", (4, 2, 4, 4)),
        ("m16n8k16.row.col.s32.s8.s8.s32", (2, 1, 4, 4)),
        ("m16n8k32.row.col.f32.e4m3.e4m3.f32", (4, 2, 4, 4)),
        ("m16n8k32.row.col.f16.e4m3.e5m2.f16", (4, 2, 2, 2)),
        ("m16n8k16.row.col.f32.e5m2.e4m3.f32", (2, 1, 4, 4)),
    ];
    for (rest, regs) in cases {
        let spec = parse_mma(&dense(rest)).unwrap_or_else(|e| panic!("{rest}: {e}"));
        assert!(!spec.sparse);
        assert_eq!(spec.regs(), regs, "{rest}");
    }
    let sp =
        |v: &str, rest: &str| parse_mma(&format!("mma.{v}.sync.aligned.m16n8k32.row.col.{rest}"));
    let s = sp("sp::ordered_metadata", "f32.f16.f16.f32").unwrap();
    assert!(s.sparse && s.ordered_metadata && (s.m, s.n, s.k) == (16, 8, 32));
    assert_eq!(s.regs(), (4, 4, 4, 4));
    let s = sp("sp", "f32.bf16.bf16.f32").unwrap();
    assert!(s.sparse && !s.ordered_metadata && s.a == ElemType::Bf16);
    assert_eq!(sp("sp", "f16.f16.f16.f16").unwrap().regs(), (4, 4, 2, 2));
    let want = MmaSpec {
        m: 16,
        n: 8,
        k: 32,
        a: ElemType::S8,
        b: ElemType::U8,
        c: AccType::S32,
        d: AccType::S32,
        sparse: false,
        ordered_metadata: false,
        satfinite: true,
    };
    assert_eq!(
        parse_mma(&dense("m16n8k32.row.col.satfinite.s32.s8.u8.s32")),
        Ok(want)
    );
}

#[test]
fn parse_rejects_unsupported_forms_naming_what() {
    let cases = [
        (dense("m8n8k4.row.col.f32.f16.f16.f32"), "m8n8k4"),
        (dense("m16n8k16.row.row.f32.f16.f16.f32"), ".row.col"),
        (dense("m16n8k8.row.col.f32.tf32.tf32.f32"), "A type `.tf32`"),
        (
            dense("m16n8k16.row.col.f16.bf16.bf16.f32"),
            "C/D types F32/F16",
        ),
        (
            dense("m16n8k16.row.col.f32.f16.bf16.f32"),
            "F16 with B type Bf16",
        ),
        (
            dense("m16n8k32.row.col.f32.f16.f16.f32"),
            "m16n8k32 with F16",
        ),
        (
            dense("m16n8k32.row.col.kind::f8f6f4.f32.e4m3.e4m3.f32"),
            "kind::f8f6f4",
        ),
        (
            dense("m16n8k32.row.col.satfinite.f32.e4m3.e4m3.f32"),
            "satfinite",
        ),
        (
            dense("m16n8k16.row.col.f32.f16.f16.f32.x"),
            "qualifier `.x`",
        ),
        (
            "mma.sp.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32".into(),
            "mma.sp m16n8k16",
        ),
        (
            "mma.sp.sync.aligned.m16n8k32.row.col.f32.f16.f16.f16".into(),
            "same C and D",
        ),
        (
            "mma.sp.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32".into(),
            "mma.sp m16n8k32 with S8",
        ),
        (
            "mma.sync.m16n8k16.row.col.f32.f16.f16.f32".into(),
            ".aligned",
        ),
        (
            "wmma.mma.sync.aligned.row.col.m16n16k16.f32.f32".into(),
            "not an mma",
        ),
    ];
    for (op, needle) in cases {
        let err = parse_mma(&op).expect_err(&op);
        assert!(err.contains(needle), "{op}: `{err}` lacks `{needle}`");
    }
}

#[test]
fn dense_16bit_float_matches_the_matrix_product() {
    // (opcode, K, A formula, B formula)
    let cases: [(&str, usize, At, At); 6] = [
        (
            "m16n8k16.row.col.f32.f16.f16.f32",
            16,
            a_16816_f16,
            b_16816_f16,
        ),
        (
            "m16n8k16.row.col.f32.bf16.bf16.f32",
            16,
            a_16816_f16,
            b_16816_f16,
        ),
        (
            "m16n8k16.row.col.f16.f16.f16.f16",
            16,
            a_16816_f16,
            b_16816_f16,
        ),
        (
            "m16n8k16.row.col.f32.f16.f16.f16",
            16,
            a_16816_f16,
            b_16816_f16,
        ),
        ("m16n8k8.row.col.f32.f16.f16.f32", 8, a_1688_f16, b_1688_f16),
        (
            "m16n8k8.row.col.f32.bf16.bf16.f32",
            8,
            a_1688_f16,
            b_1688_f16,
        ),
    ];
    let mut rng = Rng(1);
    for (rest, k, a_at, b_at) in cases {
        let spec = parse_mma(&dense(rest)).unwrap();
        let (bf, c_f16) = (spec.a == ElemType::Bf16, spec.c == AccType::F16);
        let enc = if bf { bf16b } else { f16b };
        // With f16 accumulators keep |D| well below 65504 so that most results are finite.
        let (max_n, s_lo, s_hi) = match (bf, c_f16) {
            (true, _) => (256, 0, 12),
            (false, false) => (2048, 0, 10),
            (false, true) => (2048, 6, 12),
        };
        for _ in 0..4 {
            let a: Vec<f64> = (0..16 * k).map(|_| rng.scaled(max_n, s_lo, s_hi)).collect();
            let b: Vec<f64> = (0..k * 8).map(|_| rng.scaled(max_n, s_lo, s_hi)).collect();
            let c: Vec<f64> = if c_f16 {
                (0..128).map(|_| rng.scaled(2047, 0, 10)).collect()
            } else {
                (0..128).map(|_| rng.scaled(1 << 20, 4, 24)).collect()
            };
            let ab: Vec<u32> = a.iter().map(|&x| enc(x)).collect();
            let bb: Vec<u32> = b.iter().map(|&x| enc(x)).collect();
            let cb: Vec<u32> = c
                .iter()
                .map(|&x| if c_f16 { f16b(x) } else { f32b(x) })
                .collect();
            let d = run_mma(&dense(rest), (&ab, a_at), (&bb, b_at), &cb, None).unwrap();
            let want = reference(&a, &b, &c, k, spec.d == AccType::F16);
            assert_eq!(d, want, "{rest}");
            let finite = want.iter().filter(|&&x| x & 0x7c00 != 0x7c00).count();
            assert!(
                spec.d == AccType::F32 || finite > 100,
                "{rest}: data overflows f16"
            );
        }
    }
}

#[test]
fn int8_wraps_or_saturates_like_the_isa() {
    let cases: [(&str, usize, At, At); 4] = [
        ("m16n8k32.row.col.s32.s8.s8.s32", 32, a_16832_i8, b_16832_i8),
        ("m16n8k32.row.col.s32.u8.s8.s32", 32, a_16832_i8, b_16832_i8),
        (
            "m16n8k32.row.col.satfinite.s32.s8.u8.s32",
            32,
            a_16832_i8,
            b_16832_i8,
        ),
        ("m16n8k16.row.col.s32.u8.u8.s32", 16, a_16816_i8, b_16816_i8),
    ];
    let mut rng = Rng(2);
    for (rest, k, a_at, b_at) in cases {
        let spec = parse_mma(&dense(rest)).unwrap();
        let val = |t: ElemType, v: u32| {
            if t == ElemType::S8 {
                i64::from(v as u8 as i8)
            } else {
                i64::from(v as u8)
            }
        };
        for round in 0..4 {
            let ab: Vec<u32> = (0..16 * k).map(|_| rng.next() as u32 & 0xff).collect();
            let bb: Vec<u32> = (0..k * 8).map(|_| rng.next() as u32 & 0xff).collect();
            // Round 0 puts C at the s32 limits so that the sums overflow.
            let cb: Vec<u32> = (0..128)
                .map(|i| match (round, i % 2) {
                    (0, 0) => i32::MAX as u32,
                    (0, _) => i32::MIN as u32,
                    _ => rng.next() as u32,
                })
                .collect();
            let d = run_mma(&dense(rest), (&ab, a_at), (&bb, b_at), &cb, None).unwrap();
            let mut clamped = 0;
            for idx in 0..128 {
                let (r, n) = (idx / 8, idx % 8);
                let dot: i64 = (0..k)
                    .map(|kk| val(spec.a, ab[r * k + kk]) * val(spec.b, bb[kk * 8 + n]))
                    .sum();
                let exact = dot + i64::from(cb[idx] as i32);
                let want = if spec.satfinite {
                    exact.clamp(i32::MIN.into(), i32::MAX.into()) as i32
                } else {
                    exact as i32
                };
                clamped += usize::from(i64::from(want) != exact);
                assert_eq!(d[idx] as i32, want, "{rest} D[{r}][{n}]");
            }
            assert!(round > 0 || clamped > 0, "{rest}: no overflow exercised");
        }
    }
}

/// Independent FP8 decoders, from "Alternate Floating-Point Data Formats" (e4m3: bias 7, no
/// infinity, NaN only S.1111.111; e5m2: IEEE-like, bias 15).
fn e4m3_ref(b: u32) -> f64 {
    let (s, e, m) = (
        if b & 0x80 != 0 { -1.0 } else { 1.0 },
        (b >> 3) & 0xf,
        b & 7,
    );
    match (e, m) {
        (15, 7) => f64::NAN,
        (0, _) => s * f64::from(m) / 8.0 * 2f64.powi(-6),
        _ => s * (1.0 + f64::from(m) / 8.0) * 2f64.powi(e as i32 - 7),
    }
}
fn e5m2_ref(b: u32) -> f64 {
    let (s, e, m) = (
        if b & 0x80 != 0 { -1.0 } else { 1.0 },
        (b >> 2) & 0x1f,
        b & 3,
    );
    match (e, m) {
        (31, 0) => s * f64::INFINITY,
        (31, _) => f64::NAN,
        (0, _) => s * f64::from(m) / 4.0 * 2f64.powi(-14),
        _ => s * (1.0 + f64::from(m) / 4.0) * 2f64.powi(e as i32 - 15),
    }
}

#[test]
fn fp8_decoding_matches_the_formats() {
    for (t, reference) in [
        (ElemType::E4m3, e4m3_ref as fn(u32) -> f64),
        (ElemType::E5m2, e5m2_ref),
    ] {
        for bits in 0..256u32 {
            let (got, want) = (decode_elem(t, bits), reference(bits));
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "{t:?} {bits:#04x}: {got} vs {want}"
            );
            assert!(want.is_nan() || got.is_sign_negative() == want.is_sign_negative());
        }
    }
    assert_eq!(e4m3_ref(0x7e), 448.0);
    assert_eq!(e4m3_ref(0x01), 2f64.powi(-9));
    assert!(e4m3_ref(0xff).is_nan() && e4m3_ref(0x7f).is_nan() && e4m3_ref(0x78) == 256.0);
    assert_eq!(e5m2_ref(0x7b), 57344.0);
    assert_eq!(e5m2_ref(0x01), 2f64.powi(-16));
    assert_eq!(e5m2_ref(0xfc), f64::NEG_INFINITY);
}

#[test]
fn fp8_matches_the_matrix_product() {
    let cases: [(&str, usize, At, At); 4] = [
        (
            "m16n8k32.row.col.f32.e4m3.e4m3.f32",
            32,
            a_16832_i8,
            b_16832_i8,
        ),
        (
            "m16n8k32.row.col.f32.e5m2.e4m3.f32",
            32,
            a_16832_i8,
            b_16832_i8,
        ),
        (
            "m16n8k32.row.col.f16.e4m3.e5m2.f32",
            32,
            a_16832_i8,
            b_16832_i8,
        ),
        (
            "m16n8k16.row.col.f32.e4m3.e5m2.f32",
            16,
            a_16816_i8,
            b_16816_i8,
        ),
    ];
    let mut rng = Rng(3);
    // e4m3: any non-NaN byte. e5m2: zero/subnormal or exponent field 8..=22, so that the f64
    // reference stays exact.
    let mut draw = |t: ElemType| loop {
        let b = rng.next() as u32 & 0xff;
        let ok = match t {
            ElemType::E4m3 => b & 0x7f != 0x7f,
            _ => (b >> 2) & 0x1f == 0 || (8..=22).contains(&((b >> 2) & 0x1f)),
        };
        if ok {
            return b;
        }
    };
    let dec = |t: ElemType, v: &[u32]| -> Vec<f64> {
        v.iter()
            .map(|&x| {
                if t == ElemType::E4m3 {
                    e4m3_ref(x)
                } else {
                    e5m2_ref(x)
                }
            })
            .collect()
    };
    let mut rng_c = Rng(4);
    for (rest, k, a_at, b_at) in cases {
        let spec = parse_mma(&dense(rest)).unwrap();
        for _ in 0..4 {
            let ab: Vec<u32> = (0..16 * k).map(|_| draw(spec.a)).collect();
            let bb: Vec<u32> = (0..k * 8).map(|_| draw(spec.b)).collect();
            let c: Vec<f64> = (0..128).map(|_| rng_c.scaled(1 << 20, 4, 24)).collect();
            let cb: Vec<u32> = c.iter().map(|&x| f32b(x)).collect();
            let d = run_mma(&dense(rest), (&ab, a_at), (&bb, b_at), &cb, None).unwrap();
            let to_f16 = spec.d == AccType::F16;
            let want = reference(&dec(spec.a, &ab), &dec(spec.b, &bb), &c, k, to_f16);
            assert_eq!(d, want, "{rest}");
        }
    }
}

/// bf16 m16n8k16 where only row 0 of A, column 0 of B and C[0][0] (f32) are non-zero; D[0][0].
fn bf16_dot(a0: &[f64], b0: &[f64], c00: f64) -> u32 {
    let (mut ab, mut bb, mut cb) = (vec![0u32; 256], vec![0u32; 128], vec![0u32; 128]);
    for (kk, (&x, &y)) in a0.iter().zip(b0).enumerate() {
        ab[kk] = bf16b(x);
        bb[kk * 8] = bf16b(y);
    }
    cb[0] = (c00 as f32).to_bits();
    let op = dense("m16n8k16.row.col.f32.bf16.bf16.f32");
    run_mma(&op, (&ab, a_16816_f16), (&bb, b_16816_f16), &cb, None).unwrap()[0]
}

#[test]
fn accumulation_is_exact_and_rounds_once() {
    let p = |e: i32| 2f64.powi(e);
    // Catastrophic cancellation: 2^200 + 2^-120 - 2^200 (a naive f64 sum gives 0).
    assert_eq!(
        bf16_dot(&[p(100), p(-60), -p(100)], &[p(100), p(-60), p(100)], 0.0),
        f32b(p(-120))
    );
    // Double rounding: 1 + 2^-24 + 2^-80 rounds up to 1 + 2^-23 (f64 first would give 1.0).
    assert_eq!(
        bf16_dot(&[p(-12), p(-40)], &[p(-12), p(-40)], 1.0),
        0x3f80_0001
    );
    // Exactly halfway: 1 + 2^-24 ties to even, 1.0.
    assert_eq!(bf16_dot(&[p(-12)], &[p(-12)], 1.0), 0x3f80_0000);
    // f32 subnormal result: 2^-140 + 2^-150 + 2^-170 = 2^-140 + 2^-149 after rounding.
    assert_eq!(
        bf16_dot(&[p(-70), p(-75), p(-85)], &[p(-70), p(-75), p(-85)], 0.0),
        0x201
    );
    // Below half the smallest subnormal: rounds to zero keeping the sign.
    assert_eq!(bf16_dot(&[-p(-80)], &[p(-80)], 0.0), 0x8000_0000);
    // Overflow to infinity, and an exact cancellation of huge terms that does not overflow.
    assert_eq!(bf16_dot(&[p(100)], &[p(100)], 0.0), f32::INFINITY.to_bits());
    assert_eq!(
        bf16_dot(&[-p(100)], &[p(100)], 0.0),
        f32::NEG_INFINITY.to_bits()
    );
    assert_eq!(
        bf16_dot(&[p(100), -p(100)], &[p(100), p(100)], 1.0),
        1f32.to_bits()
    );
    // Signed zeros: -0 only when every addend (all 16 products and C) is -0.
    assert_eq!(bf16_dot(&[-0.0; 16], &[1.0; 16], -0.0), 0x8000_0000);
    assert_eq!(bf16_dot(&[-0.0; 15], &[1.0; 15], -0.0), 0);
    assert_eq!(bf16_dot(&[-0.0; 16], &[1.0; 16], 0.0), 0);
    assert_eq!(bf16_dot(&[1.0, -1.0], &[1.0, 1.0], -0.0), 0);
    // inf and NaN propagate: inf * 0 and inf - inf are NaN, inf + finite is inf.
    let inf = f64::INFINITY;
    assert!(f32::from_bits(bf16_dot(&[inf], &[0.0], 0.0)).is_nan());
    assert!(f32::from_bits(bf16_dot(&[inf, inf], &[1.0, -1.0], 0.0)).is_nan());
    assert_eq!(
        bf16_dot(&[inf, 1.0], &[-1.0, 1.0], 5.0),
        f32::NEG_INFINITY.to_bits()
    );
    assert!(f32::from_bits(bf16_dot(&[1.0], &[1.0], f64::NAN)).is_nan());
    assert_eq!(bf16_dot(&[1.0], &[1.0], inf), f32::INFINITY.to_bits());
}

/// Distributes per-row 2:4 metadata (chunk j's nibble at bits 4j, slot 0's index in its low 2
/// bits) by the figure "Sparse MMA .m16n8k32 metadata layout for .f16/.bf16 type" as LLVM's
/// sparse-mma-2-4-f16.mlir reads it (metadata 16x2xi16; a lane loads [quad][lane % 2] into
/// bits 0-15 and [quad + 8][lane % 2] into bits 16-31): lane 4g + 2*selector + t holds dense
/// columns 16t..16t+15 of rows g (low half) and g+8 (high half). Other lanes get `filler`.
fn distribute_meta(meta_rows: &[u32], selector: u32, filler: u32) -> Vec<u32> {
    (0..32)
        .map(|lane| {
            let (g, t) = gt(lane);
            if t / 2 != selector as usize {
                return filler;
            }
            let half = |r: usize| (meta_rows[r] >> (16 * (t % 2))) & 0xffff;
            half(g) | (half(g + 8) << 16)
        })
        .collect()
}

/// A random 2:4-sparse 16x32 A: (dense values, compressed 16x16 values, metadata rows).
/// `swap` stores each chunk's pair in decreasing position order. Values are integers below
/// `max` in magnitude.
fn sparse_a(rng: &mut Rng, swap: bool, max: i64) -> (Vec<f64>, Vec<f64>, Vec<u32>) {
    const PAIRS: [(usize, usize); 6] = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
    let (mut dense, mut comp, mut meta) = (vec![0.0; 512], vec![0.0; 256], vec![0u32; 16]);
    for r in 0..16 {
        for j in 0..8 {
            let (mut i0, mut i1) = PAIRS[rng.int(0, 5) as usize];
            if swap {
                (i0, i1) = (i1, i0);
            }
            let (v0, v1) = (rng.int(-max, max) as f64, rng.int(-max, max) as f64);
            dense[r * 32 + 4 * j + i0] = v0;
            dense[r * 32 + 4 * j + i1] = v1;
            comp[r * 16 + 2 * j] = v0;
            comp[r * 16 + 2 * j + 1] = v1;
            meta[r] |= ((i0 | (i1 << 2)) as u32) << (4 * j);
        }
    }
    (dense, comp, meta)
}

const SP_PLAIN: &str = "mma.sp.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32";
const SP_ORDERED: &str = "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32";

#[test]
fn sparse_matches_the_dense_product() {
    let mut rng = Rng(6);
    let bf16_op = "mma.sp.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32";
    for op in [SP_ORDERED, SP_PLAIN, bf16_op] {
        let bf = op == bf16_op;
        let (enc, max): (fn(f64) -> u32, i64) = if bf { (bf16b, 256) } else { (f16b, 2048) };
        for selector in [0, 1] {
            let (full, comp, meta) = sparse_a(&mut rng, false, max);
            let b: Vec<f64> = (0..256).map(|_| rng.scaled(max, 0, 8)).collect();
            let c: Vec<f64> = (0..128).map(|_| rng.scaled(1 << 20, 4, 24)).collect();
            // Unselected lanes hold 0, which is invalid metadata: reading it would be an error.
            let e = distribute_meta(&meta, selector, 0);
            let ab: Vec<u32> = comp.iter().map(|&x| enc(x)).collect();
            let bb: Vec<u32> = b.iter().map(|&x| enc(x)).collect();
            let cb: Vec<u32> = c.iter().map(|&x| f32b(x)).collect();
            let meta = Some((e.as_slice(), selector));
            let d = run_mma(op, (&ab, a_sp16832_f16), (&bb, b_sp16832_f16), &cb, meta).unwrap();
            assert_eq!(
                d,
                reference(&full, &b, &c, 32, false),
                "{op} selector {selector}"
            );
        }
    }
}

#[test]
fn sparse_metadata_order_selector_and_validity() {
    let mut rng = Rng(7);
    let (full, comp, meta) = sparse_a(&mut rng, true, 2048);
    let b: Vec<f64> = (0..256).map(|_| rng.scaled(2048, 0, 8)).collect();
    let ab: Vec<u32> = comp.iter().map(|&x| f16b(x)).collect();
    let bb: Vec<u32> = b.iter().map(|&x| f16b(x)).collect();
    let zero = vec![0u32; 128];
    let run = |op: &str, e: &[u32], sel: u32| {
        run_mma(
            op,
            (&ab, a_sp16832_f16),
            (&bb, b_sp16832_f16),
            &zero,
            Some((e, sel)),
        )
    };
    let e = distribute_meta(&meta, 1, 0);
    // Decreasing indices: meaningful for mma.sp, undefined for ::ordered_metadata.
    assert_eq!(
        run(SP_PLAIN, &e, 1).unwrap(),
        reference(&full, &b, &[0.0; 128], 32, false)
    );
    assert!(run(SP_ORDERED, &e, 1)
        .unwrap_err()
        .contains("invalid metadata"));
    // The selector must name the pair holding the metadata, and only 0 or 1 exist.
    assert!(run(SP_PLAIN, &e, 0)
        .unwrap_err()
        .contains("invalid metadata"));
    assert!(run(SP_PLAIN, &e, 2).unwrap_err().contains("selector 2"));
    // Equal indices (0b0101) are invalid: lane 6 holds rows 1 and 9, columns 0-15.
    let mut bad = e.clone();
    bad[6] = (bad[6] & !0xf0) | 0x50;
    let err = run(SP_PLAIN, &bad, 1).unwrap_err();
    assert!(err.contains("row 1, columns 4..8"), "{err}");
    // Metadata is mandatory for mma.sp and refused for a dense mma.
    let spec = parse_mma(SP_PLAIN).unwrap();
    let regs = |n: usize| vec![vec![0u32; n]; 32];
    let err = mma(&spec, &regs(4), &regs(4), &regs(4), None).unwrap_err();
    assert!(err.contains("needs metadata"), "{err}");
    let dense_spec = parse_mma(&dense("m16n8k16.row.col.f32.f16.f16.f32")).unwrap();
    let err = mma(&dense_spec, &regs(4), &regs(2), &regs(4), Some((&e, 0))).unwrap_err();
    assert!(err.contains("dense"), "{err}");
}

#[test]
fn sparse_pruned_positions_are_not_multiplied() {
    // Row 0 keeps positions 1 and 2 of chunk 0; B row 0 (pruned) is infinite.
    let (mut ab, mut bb) = (vec![0u32; 256], vec![0u32; 256]);
    (ab[0], ab[1]) = (f16b(2.0), f16b(3.0));
    (bb[0], bb[8], bb[16]) = (u32::from(f16::INFINITY.to_bits()), f16b(1.0), f16b(10.0));
    let e = distribute_meta(&[0x9999_9999; 16], 0, 0); // every nibble 0b1001: positions 1, 2
    let zero = vec![0u32; 128];
    let d = run_mma(
        SP_PLAIN,
        (&ab, a_sp16832_f16),
        (&bb, b_sp16832_f16),
        &zero,
        Some((&e, 0)),
    );
    assert_eq!(f32::from_bits(d.unwrap()[0]), 2.0 + 30.0);
}

#[test]
fn sparse_reproduces_llvm_sm80_integration_test_output() {
    // mlir/test/Integration/GPU/CUDA/sm80/sparse-mma-2-4-f16.mlir: compressed A[i][j] = i+j+1,
    // metadata 0x8888 (positions 0 and 2 of every chunk), B[k][n] = n - k, C = 0, f16 result.
    // The expected rows are that test's CHECK lines, printed from the GPU's result.
    let ab: Vec<u32> = (0..256)
        .map(|idx| f16b((idx / 16 + idx % 16 + 1) as f64))
        .collect();
    let bb: Vec<u32> = (0..256)
        .map(|idx| f16b((idx % 8) as f64 - (idx / 8) as f64))
        .collect();
    let e = distribute_meta(&[0x8888_8888; 16], 0, 0);
    let op = "mma.sp.sync.aligned.m16n8k32.row.col.f16.f16.f16.f16";
    let zero = vec![0u32; 128];
    let d = run_mma(
        op,
        (&ab, a_sp16832_f16),
        (&bb, b_sp16832_f16),
        &zero,
        Some((&e, 0)),
    )
    .unwrap();
    let first = [
        -2720.0, -2584.0, -2448.0, -2312.0, -2176.0, -2040.0, -1904.0, -1768.0,
    ];
    let last = [
        -6320.0, -5944.0, -5568.0, -5192.0, -4816.0, -4440.0, -4064.0, -3688.0,
    ];
    // The CHECK rows are in arithmetic progression: row r = first + r * (last - first) / 15.
    for r in 0..16 {
        for n in 0..8 {
            let want = first[n] + (last[n] - first[n]) / 15.0 * r as f64;
            assert_eq!(
                f16::from_bits(d[r * 8 + n] as u16).to_f64(),
                want,
                "D[{r}][{n}]"
            );
        }
    }
}

/// The 16 bytes at `addr`: one 8-element row of 16-bit values.
fn row_bytes(mem: &[u8], addr: usize) -> [u8; 16] {
    let mut r = [0u8; 16];
    r.copy_from_slice(&mem[addr..addr + 16]);
    r
}

#[test]
fn ldmatrix_yields_the_mma_fragments() {
    let mut rng = Rng(8);
    let tile: Vec<f64> = (0..256).map(|_| rng.scaled(2048, 0, 10)).collect();
    let mem: Vec<u8> = tile
        .iter()
        .flat_map(|&x| (f16b(x) as u16).to_le_bytes())
        .collect();
    let bits = |i: usize| u32::from(u16::from_le_bytes([mem[2 * i], mem[2 * i + 1]]));

    // A: row-major 16x16; lane l addresses row l % 16, column block (l / 16) * 8, x4.
    let rows: Vec<[u8; 16]> = (0..32)
        .map(|l| row_bytes(&mem, (l % 16) * 32 + (l / 16) * 16))
        .collect();
    let a_frag = ldmatrix(4, false, &rows);
    let want_a = pack(4, 16, |lane, i| {
        let (r, c) = a_16816_f16(lane, i);
        bits(r * 16 + c)
    });
    assert_eq!(a_frag, want_a);

    // B (16x8) stored [k][n] (16 bytes per k): .trans x2, lane l addresses row k = l.
    let b_rows: Vec<[u8; 16]> = (0..16).map(|l| row_bytes(&mem, l * 16)).collect();
    let b_frag = ldmatrix(2, true, &b_rows);
    let want_b = pack(2, 16, |lane, i| {
        let (k, n) = b_16816_f16(lane, i);
        bits(k * 8 + n)
    });
    assert_eq!(b_frag, want_b);

    // The same B stored K-contiguous, [n][k] (32 bytes per n): no .trans, lanes 0-7 address
    // k 0..8 of row n = l, lanes 8-15 k 8..16.
    let m = &mem;
    let bt: Vec<u8> = (0..8)
        .flat_map(|n| (0..16).flat_map(move |k| [m[2 * (k * 8 + n)], m[2 * (k * 8 + n) + 1]]))
        .collect();
    let bt_rows: Vec<[u8; 16]> = (0..16)
        .map(|l| row_bytes(&bt, (l % 8) * 32 + (l / 8) * 16))
        .collect();
    assert_eq!(ldmatrix(2, false, &bt_rows), want_b);

    // x1: lane l gets row l / 4, columns 2*(l % 4) and the next, low half first.
    let one = ldmatrix(1, false, &rows[..8]);
    assert_eq!(one.len(), 32);
    assert_eq!(one[5], vec![bits(16 + 2) | (bits(16 + 3) << 16)]);

    // End to end: the loaded fragments multiply to A * B.
    let spec = parse_mma(&dense("m16n8k16.row.col.f32.f16.f16.f32")).unwrap();
    let d = mma(&spec, &a_frag, &b_frag, &vec![vec![0u32; 4]; 32], None).unwrap();
    let want = reference(&tile, &tile[..128], &[0.0; 128], 16, false);
    for (lane, regs) in d.iter().enumerate() {
        for (i, &v) in regs.iter().enumerate() {
            let (r, n) = c_16816(lane, i);
            assert_eq!(v, want[r * 8 + n], "D[{r}][{n}]");
        }
    }
}

#[test]
fn malformed_operands_are_errors() {
    let spec = parse_mma(&dense("m16n8k16.row.col.f32.f16.f16.f32")).unwrap();
    let regs = |lanes: usize, n: usize| vec![vec![0u32; n]; lanes];
    let err = mma(&spec, &regs(31, 4), &regs(32, 2), &regs(32, 4), None).unwrap_err();
    assert!(err.contains("A: 31 lanes"), "{err}");
    let mut b = regs(32, 2);
    b[7].push(0);
    let err = mma(&spec, &regs(32, 4), &b, &regs(32, 4), None).unwrap_err();
    assert!(
        err.contains("B: lane 7 has 3 registers, expected 2"),
        "{err}"
    );
    let err = mma(&spec, &regs(32, 4), &regs(32, 2), &regs(32, 2), None).unwrap_err();
    assert!(err.contains("operand C"), "{err}");
    let sp = parse_mma(SP_PLAIN).unwrap();
    let err = mma(
        &sp,
        &regs(32, 4),
        &regs(32, 4),
        &regs(32, 4),
        Some((&[0; 16], 0)),
    )
    .unwrap_err();
    assert!(err.contains("metadata: 16 lanes"), "{err}");
    let weird = MmaSpec { m: 8, ..spec };
    assert!(mma(&weird, &regs(32, 2), &regs(32, 2), &regs(32, 4), None).is_err());
}
