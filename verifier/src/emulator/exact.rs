//! Exact arithmetic shared by [`super::matrix`] (`mma`) and [`super::wgmma`]: decoding the input
//! formats into f64 (exactly), and the dot product of one output element: the exact sum of the
//! (exact) products and C, rounded once, to nearest even, to D's type (see `matrix`'s module doc
//! for why: a plain f64 sum would round twice).

use super::matrix::ElemType;
use half::f16;

/// Decodes an IEEE-style binary format with `e` exponent bits and `m` mantissa bits, exactly;
/// `ieee_top` says whether the all-ones exponent means inf/NaN (false for e4m3, whose only NaN
/// is S.1111.111 and which has no infinity; "Alternate Floating-Point Data Formats").
pub(super) fn decode_ieee(bits: u32, e: u32, m: u32, ieee_top: bool) -> f64 {
    let sign = if (bits >> (e + m)) & 1 == 1 {
        -1.0
    } else {
        1.0
    };
    let exp_field = (bits >> m) & ((1 << e) - 1);
    let mant = bits & ((1 << m) - 1);
    let bias = (1i32 << (e - 1)) - 1;
    if exp_field == (1 << e) - 1 && (ieee_top || mant == (1 << m) - 1) {
        return if ieee_top && mant == 0 {
            sign * f64::INFINITY
        } else {
            f64::NAN
        };
    }
    // Subnormals: mant * 2^(1 - bias - m); normals: (2^m + mant) * 2^(exp - bias - m).
    let (mant, exp) = if exp_field == 0 {
        (mant, 1 - bias)
    } else {
        (mant | (1 << m), exp_field as i32 - bias)
    };
    sign * f64::from(mant) * pow2(exp - m as i32)
}

pub(super) fn decode_elem(t: ElemType, bits: u32) -> f64 {
    match t {
        ElemType::F16 => decode_ieee(bits, 5, 10, true),
        ElemType::Bf16 => decode_ieee(bits, 8, 7, true),
        ElemType::E4m3 => decode_ieee(bits, 4, 3, false),
        ElemType::E5m2 => decode_ieee(bits, 5, 2, true),
        ElemType::S8 => f64::from(bits as u8 as i8),
        ElemType::U8 => f64::from(bits as u8),
    }
}

/// Floating-point dot product of one output element: the exact sum of the (exact) products and
/// C, rounded once to nearest even with `prec` significant bits, subnormal spacing 2^min_exp
/// and overflow at 2^max_exp; the result is exactly representable in D's type. NaN inputs,
/// inf * 0 and inf - inf give NaN, otherwise an infinite term gives that infinity (payloads
/// are not modelled), and an exact zero is -0 only if every addend is -0 (IEEE addition).
///
/// Fast path: an f64 sum whose every step is exact (TwoSum error 0, the common case) is the
/// exact sum, and then one conversion rounds once. Otherwise the terms go through `Fixed`, whose
/// errors (a term outside its range, which the supported types cannot produce) name `op`.
pub(super) fn dot_float(
    products: impl Iterator<Item = f64> + Clone,
    c: f64,
    prec: usize,
    min_exp: i32,
    max_exp: i32,
    op: &str,
) -> Result<f64, String> {
    let (mut sum, mut exact) = (c, true);
    for p in products.clone() {
        let s = sum + p;
        let pv = s - sum;
        exact &= (sum - (s - pv)) + (p - pv) == 0.0;
        sum = s;
    }
    if !sum.is_finite() {
        // Only inf/NaN inputs get here (finite sums stay below 2^262). One quiet NaN for all.
        return Ok(if sum.is_nan() { f64::NAN } else { sum });
    }
    if exact {
        return Ok(round_f64(sum, prec, min_exp, max_exp));
    }
    let mut acc = Fixed([0; FIX_LIMBS]);
    acc.add(c, op)?;
    for p in products {
        acc.add(p, op)?;
    }
    // An exact zero from non-zero addends is +0 under IEEE addition.
    Ok(acc.round(prec, min_exp, max_exp))
}

/// Rounds a finite f64 once, to nearest even, to `prec` significant bits with subnormal
/// spacing 2^min_exp and overflow at 2^max_exp (f32: 24, -149, 128; f16: 11, -24, 16).
/// Zeros keep their sign. Scaling by powers of two is exact, so this is one rounding.
fn round_f64(x: f64, prec: usize, min_exp: i32, max_exp: i32) -> f64 {
    if x == 0.0 {
        return x;
    }
    let exp = ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023; // x is normal: |x| >= 2^-266
    let ulp = pow2((exp - (prec as i32 - 1)).max(min_exp));
    let r = (x / ulp).round_ties_even() * ulp;
    if r.abs() >= pow2(max_exp) {
        x.signum() * f64::INFINITY
    } else {
        r
    }
}

/// The bits of an f64 that holds an f16 value exactly (or inf/NaN). Only such values may go
/// through `half::f16::from_f64`: where F16C is available it converts via f32, rounding twice.
pub(super) fn f16_bits(x: f64) -> u32 {
    u32::from(f16::from_f64(x).to_bits())
}

/// Binary point of the fixed-point accumulator: every term is a multiple of 2^-266, the
/// product of two bf16 subnormals 2^-133 * 2^-133 (f32's smallest is 2^-149, f16/fp8 products
/// are multiples of 2^-48).
const FIX_POINT: i32 = 266;
/// Limbs of the two's-complement accumulator: terms are below 2^256 (bf16 max squared), at
/// most 33 are summed, so every value is below 2^262 and needs 266 + 262 + 1 of 576 bits.
const FIX_LIMBS: usize = 9;

/// An exact sum of f64 terms, as a two's-complement integer scaled by 2^FIX_POINT.
struct Fixed([u64; FIX_LIMBS]);

impl Fixed {
    fn add(&mut self, x: f64, op: &str) -> Result<(), String> {
        if x == 0.0 {
            return Ok(());
        }
        let bits = x.to_bits();
        let exp_field = ((bits >> 52) & 0x7ff) as i32;
        let frac = bits & ((1 << 52) - 1);
        let (mant, exp) = if exp_field == 0 {
            (frac, -1074)
        } else {
            (frac | (1 << 52), exp_field - 1075)
        };
        let tz = mant.trailing_zeros();
        let (mant, exp) = (mant >> tz, exp + tz as i32);
        let pos = usize::try_from(exp + FIX_POINT)
            .ok()
            .filter(|&p| p / 64 + 1 < FIX_LIMBS)
            .ok_or_else(|| format!("{op}: term {x:e} outside the exact accumulator"))?;
        let wide = u128::from(mant) << (pos % 64);
        let mut addend = [0u64; FIX_LIMBS];
        addend[pos / 64] = wide as u64;
        addend[pos / 64 + 1] = (wide >> 64) as u64;
        if x < 0.0 {
            negate(&mut addend);
        }
        let mut carry = false;
        for (x, y) in self.0.iter_mut().zip(addend) {
            let (s1, c1) = x.overflowing_add(y);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *x = s2;
            carry = c1 || c2;
        }
        Ok(())
    }

    /// Rounds to nearest even with `prec` (<= 53) significant bits, the least significant bit
    /// no finer than 2^min_exp (subnormals), overflowing to infinity at 2^max_exp. The result
    /// is exactly representable in the target format (or infinite).
    fn round(&self, prec: usize, min_exp: i32, max_exp: i32) -> f64 {
        let mut mag = self.0;
        let neg = mag[FIX_LIMBS - 1] >> 63 == 1;
        if neg {
            negate(&mut mag);
        }
        let sign = if neg { -1.0 } else { 1.0 };
        let Some(hi) = (0..FIX_LIMBS).rev().find(|&i| mag[i] != 0) else {
            return 0.0;
        };
        let top = hi * 64 + 63 - mag[hi].leading_zeros() as usize;
        let pos_of = |e: i32| (e + FIX_POINT) as usize; // e >= min_exp > -FIX_POINT
        if top >= pos_of(max_exp) {
            return sign * f64::INFINITY;
        }
        // lsb >= pos_of(min_exp) > 64, and the kept bits lsb..=top are at most prec.
        let lsb = (top + 1).saturating_sub(prec).max(pos_of(min_exp));
        let window = |p: usize| {
            let next = mag.get(p / 64 + 1).copied().unwrap_or(0);
            ((u128::from(next) << 64 | u128::from(mag[p / 64])) >> (p % 64)) as u64
        };
        let mut mant = window(lsb) & ((1 << prec) - 1);
        let half = lsb - 1;
        let round_bit = (mag[half / 64] >> (half % 64)) & 1 == 1;
        let sticky = mag[..half / 64].iter().any(|&l| l != 0)
            || mag[half / 64] & ((1u64 << (half % 64)) - 1) != 0;
        if round_bit && (sticky || mant & 1 == 1) {
            mant += 1;
        }
        let value = mant as f64 * pow2(lsb as i32 - FIX_POINT);
        if value >= pow2(max_exp) {
            sign * f64::INFINITY
        } else {
            sign * value
        }
    }
}

fn negate(x: &mut [u64; FIX_LIMBS]) {
    let mut carry = true;
    for limb in x.iter_mut() {
        let (s, c) = (!*limb).overflowing_add(u64::from(carry));
        *limb = s;
        carry = c;
    }
}

/// 2^e for -1022 <= e <= 1023, built from its bits (exact).
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// SplitMix64: deterministic test data without a dependency (for `matrix`'s and `wgmma`'s tests).
#[cfg(test)]
pub(super) struct Rng(pub(super) u64);

#[cfg(test)]
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in lo..=hi.
    pub(super) fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    /// `n * 2^-s` with |n| <= max_n and s in s_lo..=s_hi: few significant bits, so every
    /// reference sum in the tests is exact in f64 and rounding it once is the exact answer.
    pub(super) fn scaled(&mut self, max_n: i64, s_lo: i64, s_hi: i64) -> f64 {
        self.int(-max_n, max_n) as f64 * 2f64.powi(-self.int(s_lo, s_hi) as i32)
    }
}
