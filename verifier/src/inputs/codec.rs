//! Element encoding: f64 values to the bytes of every dtype (correctly rounded, round to nearest
//! even), and back. Inputs are generated in f64 and rounded once, so the bits are the same on
//! every machine; outputs are decoded to f64 for comparison.
//!
//! The `half` crate's `from_f64` is not used for encoding: it rounds f64 to f16 through f32 on
//! x86 (double rounding) and drops the low 32 mantissa bits for bf16 (ties are misjudged). One
//! generic narrow-float encoder handles f16, bf16, e4m3 and e5m2 instead; `half` decodes.

use crate::dtype::DType;

/// What happens to a finite value beyond the largest finite value of a narrow float format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// IEEE behaviour: infinity where the format has one, NaN for e4m3 (PyTorch's conversion).
    Ieee,
    /// Clamp to the largest finite value (CUDA's `__NV_SATFINITE`); infinities clamp too.
    Saturate,
}

/// A binary floating-point format narrower than f64, described by its bit fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarrowFloat {
    pub exp_bits: u32,
    pub man_bits: u32,
    pub bias: i32,
    /// IEEE-style: the all-ones exponent holds only infinities and NaNs. When false (OCP E4M3,
    /// "fn"), it holds finite values too and only the all-ones exponent+mantissa is NaN.
    pub has_inf: bool,
    /// The code this encoder produces for NaN.
    pub canonical_nan: u16,
}

pub const F16: NarrowFloat = NarrowFloat {
    exp_bits: 5,
    man_bits: 10,
    bias: 15,
    has_inf: true,
    canonical_nan: 0x7E00,
};
pub const BF16: NarrowFloat = NarrowFloat {
    exp_bits: 8,
    man_bits: 7,
    bias: 127,
    has_inf: true,
    canonical_nan: 0x7FC0,
};
/// OCP FP8 E4M3 (`__nv_fp8_e4m3`, `torch.float8_e4m3fn`): no infinities, max 448, NaN = S.1111.111.
pub const E4M3: NarrowFloat = NarrowFloat {
    exp_bits: 4,
    man_bits: 3,
    bias: 7,
    has_inf: false,
    canonical_nan: 0x7F,
};
/// OCP FP8 E5M2 (`__nv_fp8_e5m2`): IEEE-like, max 57344, infinities at S.11111.00.
pub const E5M2: NarrowFloat = NarrowFloat {
    exp_bits: 5,
    man_bits: 2,
    bias: 15,
    has_inf: true,
    canonical_nan: 0x7E,
};

impl NarrowFloat {
    pub fn for_dtype(d: DType) -> Option<NarrowFloat> {
        match d {
            DType::F16 => Some(F16),
            DType::Bf16 => Some(BF16),
            DType::E4m3 => Some(E4M3),
            DType::E5m2 => Some(E5M2),
            _ => None,
        }
    }

    fn sign_bit(&self) -> u16 {
        1 << (self.exp_bits + self.man_bits)
    }

    fn exp_all_ones(&self) -> u16 {
        ((1u16 << self.exp_bits) - 1) << self.man_bits
    }

    fn man_mask(&self) -> u16 {
        (1u16 << self.man_bits) - 1
    }

    /// Magnitude code of the largest finite value.
    pub fn max_finite_code(&self) -> u16 {
        if self.has_inf {
            self.exp_all_ones() - 1
        } else {
            (self.exp_all_ones() | self.man_mask()) - 1
        }
    }

    pub fn max_finite(&self) -> f64 {
        self.decode(self.max_finite_code())
    }

    /// Magnitude code of +infinity, if the format has one.
    pub fn inf_code(&self) -> Option<u16> {
        self.has_inf.then(|| self.exp_all_ones())
    }

    pub fn is_nan(&self, code: u16) -> bool {
        let mag = code & !self.sign_bit();
        if self.has_inf {
            mag & self.exp_all_ones() == self.exp_all_ones() && mag & self.man_mask() != 0
        } else {
            mag == self.exp_all_ones() | self.man_mask()
        }
    }

    pub fn decode(&self, code: u16) -> f64 {
        let neg = code & self.sign_bit() != 0;
        let mag = code & !self.sign_bit();
        if self.is_nan(code) {
            return f64::NAN;
        }
        let be = (mag >> self.man_bits) as i32;
        let man = (mag & self.man_mask()) as f64;
        let v = if self.has_inf && mag == self.exp_all_ones() {
            f64::INFINITY
        } else if be == 0 {
            man * pow2(1 - self.bias - self.man_bits as i32)
        } else {
            (man + pow2(self.man_bits as i32)) * pow2(be - self.bias - self.man_bits as i32)
        };
        if neg {
            -v
        } else {
            v
        }
    }

    /// Rounds `x` to this format, to nearest with ties to even.
    pub fn encode(&self, x: f64, overflow: Overflow) -> u16 {
        if x.is_nan() {
            return self.canonical_nan;
        }
        let sign = if x.is_sign_negative() {
            self.sign_bit()
        } else {
            0
        };
        let a = x.abs();
        let overflowed = || match (overflow, self.inf_code()) {
            (Overflow::Saturate, _) => sign | self.max_finite_code(),
            (Overflow::Ieee, Some(inf)) => sign | inf,
            (Overflow::Ieee, None) => sign | (self.exp_all_ones() | self.man_mask()),
        };
        if a.is_infinite() {
            return overflowed();
        }
        // Far below half the smallest subnormal of every format here: rounds to zero.
        if a < pow2(-200) {
            return sign;
        }
        let emin = 1 - self.bias;
        let e = exponent_of(a).max(emin);
        let mut q = e - self.man_bits as i32;
        // a / 2^q is exact (a power-of-two scale) and below 2^(man_bits+1).
        let n = (a * pow2(-q)).round_ties_even();
        let mut n = n as u64;
        if n == 0 {
            return sign;
        }
        if n >= 1 << (self.man_bits + 1) {
            n >>= 1;
            q += 1;
        }
        let code = if n < 1 << self.man_bits {
            n as i64
        } else {
            let be = (q + self.man_bits as i32 + self.bias) as i64;
            (be << self.man_bits) | (n as i64 - (1 << self.man_bits))
        };
        if code > self.max_finite_code() as i64 {
            return overflowed();
        }
        sign | code as u16
    }

    /// The next representable value above `code`'s value (toward +infinity), as a code;
    /// `None` past the largest finite value or for NaN.
    pub fn next_up(&self, code: u16) -> Option<u16> {
        if self.is_nan(code) {
            return None;
        }
        let mag = code & !self.sign_bit();
        let neg = code & self.sign_bit() != 0;
        let next = if mag == 0 {
            1
        } else if neg {
            self.sign_bit() | (mag - 1)
        } else if mag >= self.max_finite_code() {
            return None;
        } else {
            mag + 1
        };
        // -smallest_subnormal steps to -0; normalise to +0.
        Some(if next == self.sign_bit() { 0 } else { next })
    }
}

/// `2^e` for exponents in f64's normal range, built from bits (exact and fast).
fn pow2(e: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&e));
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// `floor(log2(a))` for a positive finite normal f64.
fn exponent_of(a: f64) -> i32 {
    ((a.to_bits() >> 52) & 0x7FF) as i32 - 1023
}

/// Writes `v` rounded to `dtype` (a float dtype) into `out` (little endian).
/// Integer and bool dtypes take `v` as an exact integer; see [`write_int`].
#[inline]
pub fn write_float(dtype: DType, v: f64, overflow: Overflow, out: &mut [u8]) {
    match dtype {
        DType::F64 => out.copy_from_slice(&v.to_le_bytes()),
        DType::F32 => {
            let f = v as f32;
            let f = if f.is_infinite() && v.is_finite() && overflow == Overflow::Saturate {
                f32::MAX.copysign(f)
            } else {
                f
            };
            out.copy_from_slice(&f.to_le_bytes())
        }
        DType::F16 => out.copy_from_slice(&F16.encode(v, overflow).to_le_bytes()),
        DType::Bf16 => out.copy_from_slice(&BF16.encode(v, overflow).to_le_bytes()),
        DType::E4m3 => out[0] = E4M3.encode(v, overflow) as u8,
        DType::E5m2 => out[0] = E5M2.encode(v, overflow) as u8,
        _ => {
            // Callers route integers through write_int; keep bytes defined anyway.
            out.fill(0)
        }
    }
}

/// Writes an integer that fits `dtype` (checked by the caller) in little endian.
#[inline]
pub fn write_int(dtype: DType, v: i128, out: &mut [u8]) {
    let bytes = v.to_le_bytes();
    let n = dtype.size_bytes();
    out[..n].copy_from_slice(&bytes[..n]);
}

/// The raw bits of one element, zero-extended.
#[inline]
pub fn read_bits(dtype: DType, b: &[u8]) -> u64 {
    match dtype.size_bytes() {
        1 => b[0] as u64,
        2 => u16::from_le_bytes([b[0], b[1]]) as u64,
        4 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64,
        _ => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
    }
}

/// An integer or bool element, exactly.
#[inline]
pub fn read_int(dtype: DType, b: &[u8]) -> i128 {
    let bits = read_bits(dtype, b);
    match dtype {
        DType::I8 => bits as u8 as i8 as i128,
        DType::I16 => bits as u16 as i16 as i128,
        DType::I32 => bits as u32 as i32 as i128,
        DType::I64 => bits as i64 as i128,
        _ => bits as i128,
    }
}

/// Any element as f64 (integers above 2^53 lose precision; use [`read_int`] for exactness).
#[inline]
pub fn read_f64(dtype: DType, b: &[u8]) -> f64 {
    let bits = read_bits(dtype, b);
    match dtype {
        DType::F64 => f64::from_bits(bits),
        DType::F32 => f32::from_bits(bits as u32) as f64,
        DType::F16 => half::f16::from_bits(bits as u16).to_f64(),
        DType::Bf16 => half::bf16::from_bits(bits as u16).to_f64(),
        DType::E4m3 => E4M3.decode(bits as u16),
        DType::E5m2 => E5M2.decode(bits as u16),
        _ => read_int(dtype, b) as f64,
    }
}

/// Rounds `v` to the nearest value of a float dtype and returns it as f64.
pub fn round_to(dtype: DType, v: f64, overflow: Overflow) -> f64 {
    let mut buf = [0u8; 8];
    let n = dtype.size_bytes();
    write_float(dtype, v, overflow, &mut buf[..n]);
    read_f64(dtype, &buf[..n])
}

/// The next value above `v` (itself a value of the float dtype) in that dtype.
pub fn next_up(dtype: DType, v: f64) -> Option<f64> {
    let up = match dtype {
        DType::F64 => {
            let n = v.next_up();
            n.is_finite().then_some(n)
        }
        DType::F32 => {
            let n = (v as f32).next_up();
            n.is_finite().then_some(n as f64)
        }
        _ => {
            let f = NarrowFloat::for_dtype(dtype)?;
            let c = f.next_up(f.encode(v, Overflow::Ieee))?;
            Some(f.decode(c))
        }
    };
    up.map(|u| if u == 0.0 { 0.0 } else { u })
}

/// The next value below `v` in a float dtype.
pub fn next_down(dtype: DType, v: f64) -> Option<f64> {
    next_up(dtype, -v).map(|u| if u == 0.0 { 0.0 } else { -u })
}

/// Largest finite value of a float dtype.
pub fn max_finite(dtype: DType) -> Option<f64> {
    match dtype {
        DType::F64 => Some(f64::MAX),
        DType::F32 => Some(f32::MAX as f64),
        _ => NarrowFloat::for_dtype(dtype).map(|f| f.max_finite()),
    }
}

/// Largest integer `m` such that every integer in `[-m, m]` is exact in a float dtype.
pub fn exact_int_limit(dtype: DType) -> Option<i128> {
    match dtype {
        DType::F64 => Some(1 << 53),
        DType::F32 => Some(1 << 24),
        _ => NarrowFloat::for_dtype(dtype).map(|f| 1i128 << (f.man_bits + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [(NarrowFloat, &str); 4] =
        [(F16, "f16"), (BF16, "bf16"), (E4M3, "e4m3"), (E5M2, "e5m2")];

    fn width(f: &NarrowFloat) -> u32 {
        1 + f.exp_bits + f.man_bits
    }

    /// Decoding against independent references: e5m2 is the top byte of an f16, bf16 the top
    /// half of an f32, f16 is `half`'s decoder; e4m3 against constants from the OCP FP8 spec.
    #[test]
    fn decoding_matches_reference_tables() {
        for c in 0..=u16::MAX {
            let a = F16.decode(c);
            let b = half::f16::from_bits(c).to_f64();
            assert!(a == b || (a.is_nan() && b.is_nan()), "f16 {c:#06x}");
            let a = BF16.decode(c);
            let b = f32::from_bits((c as u32) << 16) as f64;
            assert!(a == b || (a.is_nan() && b.is_nan()), "bf16 {c:#06x}");
        }
        for c in 0..=255u16 {
            let a = E5M2.decode(c);
            let b = half::f16::from_bits(c << 8).to_f64();
            assert!(a == b || (a.is_nan() && b.is_nan()), "e5m2 {c:#04x}");
        }
        let e4m3_known: [(u16, f64); 10] = [
            (0x00, 0.0),
            (0x01, 2f64.powi(-9)),
            (0x07, 7.0 * 2f64.powi(-9)),
            (0x08, 2f64.powi(-6)),
            (0x38, 1.0),
            (0x3C, 1.5),
            (0x7E, 448.0),
            (0xFE, -448.0),
            (0x80, -0.0),
            (0x77, 240.0),
        ];
        for (c, v) in e4m3_known {
            assert_eq!(E4M3.decode(c), v, "e4m3 {c:#04x}");
        }
        let nans: Vec<u16> = (0..=255).filter(|&c| E4M3.decode(c).is_nan()).collect();
        assert_eq!(nans, vec![0x7F, 0xFF]);
        assert_eq!(E5M2.max_finite(), 57344.0);
        assert_eq!(E5M2.decode(0x7C), f64::INFINITY);
        assert_eq!(F16.max_finite(), 65504.0);
    }

    /// Every finite code round-trips; every midpoint between neighbours goes to the even code;
    /// a hair either side of a midpoint goes to the nearer neighbour; overflow per mode.
    #[test]
    fn encoding_is_round_to_nearest_even_exhaustively() {
        for (f, name) in ALL {
            let n_codes = 1u32 << width(&f);
            for c in 0..n_codes {
                let c = c as u16;
                if f.is_nan(c) {
                    assert!(f.is_nan(f.encode(f.decode(c), Overflow::Ieee)));
                    continue;
                }
                let v = f.decode(c);
                if v.is_infinite() {
                    continue;
                }
                assert_eq!(f.encode(v, Overflow::Ieee), c, "{name} {c:#x} = {v}");
            }
            for c in 0..f.max_finite_code() {
                let (lo, hi) = (f.decode(c), f.decode(c + 1));
                let mid = (lo + hi) / 2.0;
                let even = if c % 2 == 0 { c } else { c + 1 };
                assert_eq!(f.encode(mid, Overflow::Ieee), even, "{name} mid {c:#x}");
                assert_eq!(f.encode(-mid, Overflow::Ieee), even | f.sign_bit());
                let eps = (hi - lo) * 1e-6;
                assert_eq!(
                    f.encode(mid - eps, Overflow::Ieee),
                    c,
                    "{name} below mid {c:#x}"
                );
                assert_eq!(
                    f.encode(mid + eps, Overflow::Ieee),
                    c + 1,
                    "{name} above mid"
                );
            }
            // Overflow: half a step above max rounds away; saturation clamps.
            let max = f.max_finite();
            let step = max - f.decode(f.max_finite_code() - 1);
            let beyond = max + step * 0.75;
            assert_eq!(f.encode(beyond, Overflow::Saturate), f.max_finite_code());
            let ieee = f.encode(beyond, Overflow::Ieee);
            match f.inf_code() {
                Some(inf) => assert_eq!(ieee, inf, "{name}"),
                None => assert!(f.is_nan(ieee), "{name}"),
            }
            assert_eq!(
                f.encode(max + step * 0.25, Overflow::Ieee),
                f.max_finite_code()
            );
            assert_eq!(
                f.encode(f64::NEG_INFINITY, Overflow::Saturate),
                f.sign_bit() | f.max_finite_code()
            );
            assert!(f.is_nan(f.encode(f64::NAN, Overflow::Ieee)));
            assert_eq!(f.encode(-0.0, Overflow::Ieee), f.sign_bit());
            assert_eq!(f.encode(1e-300, Overflow::Ieee), 0);
        }
    }

    /// f32 -> f16 and f32 -> bf16 in `half` are correctly rounded; agree with them on random
    /// f32 values of every magnitude.
    #[test]
    fn agrees_with_half_on_f32_inputs() {
        let mut s = 0x1234_5678_9abc_def0u64;
        for _ in 0..200_000 {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let x = f32::from_bits((z ^ (z >> 31)) as u32);
            if x.is_nan() {
                continue;
            }
            assert_eq!(
                F16.encode(x as f64, Overflow::Ieee),
                half::f16::from_f32(x).to_bits(),
                "f16 {x:e}"
            );
            assert_eq!(
                BF16.encode(x as f64, Overflow::Ieee),
                half::bf16::from_f32(x).to_bits(),
                "bf16 {x:e}"
            );
        }
    }

    /// The double-rounding case that f64 -> f32 -> bf16 gets wrong.
    #[test]
    fn no_double_rounding_from_f64() {
        let tie_plus = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        assert_eq!(
            BF16.decode(BF16.encode(tie_plus, Overflow::Ieee)),
            1.0 + 2f64.powi(-7)
        );
        let tie = 1.0 + 2f64.powi(-8);
        assert_eq!(BF16.decode(BF16.encode(tie, Overflow::Ieee)), 1.0);
        let f16_tie_plus = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(
            F16.decode(F16.encode(f16_tie_plus, Overflow::Ieee)),
            1.0 + 2f64.powi(-10)
        );
    }

    #[test]
    fn next_up_steps_one_code() {
        assert_eq!(next_up(DType::E4m3, 1.0), Some(1.125));
        assert_eq!(next_up(DType::E4m3, 448.0), None);
        assert_eq!(next_up(DType::E4m3, -2f64.powi(-9)), Some(0.0));
        assert_eq!(
            next_up(DType::Bf16, 0.0),
            Some(f64::from(f32::from_bits(1 << 16)))
        );
        assert_eq!(next_up(DType::F32, 1.0), Some(1.0 + 2f64.powi(-23)));
        assert_eq!(next_up(DType::F16, -1.0), Some(-1.0 + 2f64.powi(-11)));
    }

    #[test]
    fn int_helpers_and_limits() {
        let mut b = [0u8; 8];
        write_int(DType::I16, -2, &mut b);
        assert_eq!(read_int(DType::I16, &b), -2);
        write_int(DType::U64, u64::MAX as i128, &mut b);
        assert_eq!(read_int(DType::U64, &b), u64::MAX as i128);
        assert_eq!(exact_int_limit(DType::Bf16), Some(256));
        assert_eq!(exact_int_limit(DType::E4m3), Some(16));
        assert_eq!(round_to(DType::F16, 1e6, Overflow::Saturate), 65504.0);
        assert_eq!(
            round_to(DType::F32, 1e300, Overflow::Saturate),
            f32::MAX as f64
        );
    }
}
