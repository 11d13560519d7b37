//! Floating-point semantics of PTX: rounding modifiers, flush-to-zero, saturation, the 16-bit
//! and packed types, and `cvt` between everything.
//!
//! Results are exact where PTX defines them exactly (IEEE `.rn` arithmetic, conversions).
//! `.approx` functions are computed exactly too, so they can differ from hardware in the last
//! bits: within any tolerance a task sets for such code.

use super::exec::{fault, Fault, FaultKind};
use super::op::{Arith, Rnd, Ty, Unary};
use crate::dtype::DType;
use crate::inputs::codec::{NarrowFloat, Overflow};
use half::{bf16, f16};

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

fn next_down(x: f32) -> f32 {
    -next_up(-x)
}

/// Rounds an f64 (the exact result, or within an f64 rounding of it) to f32 in direction `r`.
pub fn round_f32(x: f64, r: Rnd) -> f32 {
    let n = x as f32;
    if x.is_nan() || n.is_nan() {
        return f32::NAN;
    }
    let back = n as f64;
    match r {
        Rnd::Rz | Rnd::Rzi if back.abs() > x.abs() => {
            if n > 0.0 {
                next_down(n)
            } else {
                next_up(n)
            }
        }
        Rnd::Rm | Rnd::Rmi if back > x => next_down(n),
        Rnd::Rp | Rnd::Rpi if back < x => next_up(n),
        _ => n,
    }
}

fn ftz32(x: f32, on: bool) -> f32 {
    if on && x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

fn sat01(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

fn half_lanes(ty: Ty) -> Option<(bool, usize)> {
    match ty {
        Ty::F16 => Some((false, 1)),
        Ty::F16x2 => Some((false, 2)),
        Ty::Bf16 => Some((true, 1)),
        Ty::Bf16x2 => Some((true, 2)),
        _ => None,
    }
}

fn half_get(bf: bool, bits: u64) -> f64 {
    if bf {
        bf16::from_bits(bits as u16).to_f64()
    } else {
        f16::from_bits(bits as u16).to_f64()
    }
}

/// Rounds once, from the f64 (the `half` crate's f64 conversion goes through f32 on some
/// machines, rounding twice).
fn half_put(bf: bool, x: f64) -> u64 {
    let d = if bf { DType::Bf16 } else { DType::F16 };
    NarrowFloat::for_dtype(d).map_or(0, |n| n.encode(x, Overflow::Ieee) as u64)
}

/// Applies `f` to each 16-bit lane of packed halves.
fn per_half(ty: Ty, vals: &[u64], f: &dyn Fn(&[f64]) -> f64, sat: bool) -> Option<u64> {
    let (bf, lanes) = half_lanes(ty)?;
    let mut out = 0u64;
    for l in 0..lanes {
        let xs: Vec<f64> = vals.iter().map(|v| half_get(bf, v >> (16 * l))).collect();
        let mut r = f(&xs);
        if sat {
            r = sat01(r);
        }
        out |= half_put(bf, r) << (16 * l);
    }
    Some(out)
}

fn min_max(x: f64, y: f64, max: bool) -> f64 {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => f64::NAN,
        (true, false) => y,
        (false, true) => x,
        _ if max => x.max(y),
        _ => x.min(y),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn float_arith(
    f: Arith,
    ty: Ty,
    rnd: Rnd,
    ftz: bool,
    sat: bool,
    relu: bool,
    approx: bool,
    a: u64,
    b: u64,
) -> Option<u64> {
    let op = |x: f64, y: f64| -> Option<f64> {
        Some(match f {
            Arith::Add => x + y,
            Arith::Sub => x - y,
            Arith::Mul => x * y,
            Arith::Div => x / y,
            Arith::Min => min_max(x, y, false),
            Arith::Max => min_max(x, y, true),
            Arith::Copysign => y.abs().copysign(x),
            _ => return None,
        })
    };
    match ty {
        Ty::F32 => {
            let x = ftz32(f32::from_bits(a as u32), ftz);
            let y = ftz32(f32::from_bits(b as u32), ftz);
            let r = match (f, rnd) {
                (Arith::Add, Rnd::Default | Rnd::Rn) => x + y,
                (Arith::Sub, Rnd::Default | Rnd::Rn) => x - y,
                (Arith::Mul, Rnd::Default | Rnd::Rn) => x * y,
                (Arith::Div, _) if !approx => round_f32(x as f64 / y as f64, rnd_or_rn(rnd)),
                (Arith::Div, _) => x / y,
                (Arith::Min, _) => min_max(x as f64, y as f64, false) as f32,
                (Arith::Max, _) => {
                    let m = min_max(x as f64, y as f64, true) as f32;
                    if relu && !m.is_nan() {
                        m.max(0.0)
                    } else {
                        m
                    }
                }
                (Arith::Copysign, _) => y.abs().copysign(x),
                _ => round_f32(op(x as f64, y as f64)?, rnd),
            };
            let r = ftz32(r, ftz);
            let r = if sat { sat01(r as f64) as f32 } else { r };
            Some(r.to_bits() as u64)
        }
        Ty::F64 => {
            let (x, y) = (f64::from_bits(a), f64::from_bits(b));
            let r = op(x, y)?;
            Some(if sat { sat01(r) } else { r }.to_bits())
        }
        _ => per_half(
            ty,
            &[a, b],
            &|xs: &[f64]| op(xs[0], xs[1]).unwrap_or(f64::NAN),
            sat,
        ),
    }
}

fn rnd_or_rn(r: Rnd) -> Rnd {
    if r == Rnd::Default {
        Rnd::Rn
    } else {
        r
    }
}

pub fn fma(ty: Ty, rnd: Rnd, ftz: bool, sat: bool, a: u64, b: u64, c: u64) -> u64 {
    match ty {
        Ty::F32 => {
            let x = ftz32(f32::from_bits(a as u32), ftz);
            let y = ftz32(f32::from_bits(b as u32), ftz);
            let z = ftz32(f32::from_bits(c as u32), ftz);
            let r = match rnd {
                Rnd::Default | Rnd::Rn => x.mul_add(y, z),
                // The product is exact in f64; one more rounding to f64 before the directed one.
                _ => round_f32((x as f64).mul_add(y as f64, z as f64), rnd),
            };
            let r = ftz32(r, ftz);
            (if sat { sat01(r as f64) as f32 } else { r }).to_bits() as u64
        }
        Ty::F64 => {
            let r = f64::from_bits(a).mul_add(f64::from_bits(b), f64::from_bits(c));
            (if sat { sat01(r) } else { r }).to_bits()
        }
        _ => per_half(
            ty,
            &[a, b, c],
            &|xs: &[f64]| xs[0].mul_add(xs[1], xs[2]),
            sat,
        )
        .unwrap_or(0),
    }
}

pub fn float_pair(ty: Ty, ftz: bool, a: u64, b: u64) -> (f64, f64) {
    match ty {
        Ty::F32 => (
            ftz32(f32::from_bits(a as u32), ftz) as f64,
            ftz32(f32::from_bits(b as u32), ftz) as f64,
        ),
        Ty::F64 => (f64::from_bits(a), f64::from_bits(b)),
        Ty::Bf16 | Ty::Bf16x2 => (half_get(true, a), half_get(true, b)),
        _ => (half_get(false, a), half_get(false, b)),
    }
}

pub fn float_unary(f: Unary, ty: Ty, ftz: bool, rnd: Rnd, a: u64) -> u64 {
    let g = |x: f64| -> f64 {
        match f {
            Unary::Neg => -x,
            Unary::Abs => x.abs(),
            Unary::Ex2 => x.exp2(),
            Unary::Lg2 => x.log2(),
            Unary::Rcp => 1.0 / x,
            Unary::Rsqrt => 1.0 / x.sqrt(),
            Unary::Sqrt => x.sqrt(),
            Unary::Sin => x.sin(),
            Unary::Cos => x.cos(),
            Unary::Tanh => x.tanh(),
            _ => f64::NAN,
        }
    };
    match ty {
        Ty::F32 => {
            let bits = a as u32;
            match f {
                // Sign-bit operations, exact also on NaN payloads.
                Unary::Neg => {
                    return (ftz32(f32::from_bits(bits), ftz).to_bits() ^ 0x8000_0000) as u64
                }
                Unary::Abs => {
                    return (ftz32(f32::from_bits(bits), ftz).to_bits() & 0x7fff_ffff) as u64
                }
                _ => {}
            }
            let x = ftz32(f32::from_bits(bits), ftz) as f64;
            let r = match f {
                Unary::Rcp | Unary::Sqrt if rnd != Rnd::Default => round_f32(g(x), rnd),
                _ => g(x) as f32,
            };
            ftz32(r, ftz).to_bits() as u64
        }
        Ty::F64 => match f {
            Unary::Neg => a ^ (1 << 63),
            Unary::Abs => a & !(1 << 63),
            _ => g(f64::from_bits(a)).to_bits(),
        },
        _ => per_half(ty, &[a], &|xs: &[f64]| g(xs[0]), false).unwrap_or(0),
    }
}

fn narrow(ty: Ty) -> Option<NarrowFloat> {
    match ty {
        Ty::E4m3x2 => NarrowFloat::for_dtype(DType::E4m3),
        Ty::E5m2x2 => NarrowFloat::for_dtype(DType::E5m2),
        _ => None,
    }
}

/// The value of a scalar register of type `ty` (floats as f64, integers exactly as i128).
enum Val {
    F(f64),
    I(i128),
}

fn get(ty: Ty, a: u64) -> Val {
    match ty {
        Ty::F32 => Val::F(f32::from_bits(a as u32) as f64),
        Ty::F64 => Val::F(f64::from_bits(a)),
        Ty::F16 => Val::F(half_get(false, a)),
        Ty::Bf16 => Val::F(half_get(true, a)),
        Ty::Tf32 => Val::F(f32::from_bits(a as u32) as f64),
        t if t.is_signed() => {
            let s = 64 - t.bits();
            Val::I((((a << s) as i64) >> s) as i128)
        }
        t => Val::I(
            (a & if t.bits() >= 64 {
                u64::MAX
            } else {
                (1 << t.bits()) - 1
            }) as i128,
        ),
    }
}

fn int_range(ty: Ty) -> (i128, i128) {
    let b = ty.bits();
    if ty.is_signed() {
        (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1)
    } else {
        (0, (1i128 << b) - 1)
    }
}

fn round_integral(x: f64, r: Rnd) -> f64 {
    match r {
        Rnd::Rzi => x.trunc(),
        Rnd::Rmi => x.floor(),
        Rnd::Rpi => x.ceil(),
        _ => x.round_ties_even(),
    }
}

fn put_float(dst: Ty, x: f64, rnd: Rnd, sat: bool, ftz: bool, relu: bool) -> u64 {
    let mut x = x;
    if relu && !x.is_nan() {
        x = x.max(0.0);
    }
    if sat {
        x = sat01(x);
    }
    match dst {
        Ty::F32 => {
            let r = match rnd {
                Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi => round_integral(x, rnd) as f32,
                Rnd::Default | Rnd::Rn => x as f32,
                r => round_f32(x, r),
            };
            ftz32(r, ftz).to_bits() as u64
        }
        Ty::F64 => match rnd {
            Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi => round_integral(x, rnd).to_bits(),
            _ => x.to_bits(),
        },
        Ty::F16 => match rnd {
            Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi => half_put(false, round_integral(x, rnd)),
            _ => half_put(false, x),
        },
        Ty::Bf16 => match rnd {
            Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi => half_put(true, round_integral(x, rnd)),
            _ => half_put(true, x),
        },
        Ty::Tf32 => {
            // Round to 10 mantissa bits, nearest-away (cvt.rna.tf32.f32); kept in an f32.
            let b = (x as f32).to_bits();
            ((b.wrapping_add(0x1000)) & 0xffff_e000) as u64
        }
        _ => 0,
    }
}

pub fn cvt(
    dst: Ty,
    src: Ty,
    rnd: Rnd,
    sat: bool,
    ftz: bool,
    relu: bool,
    a: u64,
) -> Result<u64, Fault> {
    if dst.bits() > 64 || src.bits() > 64 || dst == Ty::Pred || src == Ty::Pred {
        return fault(
            FaultKind::IllegalInstruction,
            format!("cvt to {dst:?} from {src:?}"),
        );
    }
    // Unpacking FP8 pairs to f16x2 / bf16x2 (low byte to low half).
    if let Some(n) = narrow(src) {
        let lo = n.decode((a & 0xff) as u16);
        let hi = n.decode(((a >> 8) & 0xff) as u16);
        let bf = dst == Ty::Bf16x2;
        if !matches!(dst, Ty::F16x2 | Ty::Bf16x2) {
            return fault(
                FaultKind::IllegalInstruction,
                format!("cvt to {dst:?} from {src:?}"),
            );
        }
        return Ok(half_put(bf, lo) | (half_put(bf, hi) << 16));
    }
    let v = get(src, a);
    if dst.is_float() {
        let x = match v {
            Val::F(x) => {
                if ftz && src == Ty::F32 {
                    ftz32(x as f32, true) as f64
                } else {
                    x
                }
            }
            Val::I(i) => {
                // Integer to float: one rounding, from the exact integer.
                return Ok(match dst {
                    Ty::F32 => (i as f32).to_bits() as u64,
                    Ty::F64 => (i as f64).to_bits(),
                    _ => put_float(dst, i as f64, rnd, sat, false, relu),
                });
            }
        };
        return Ok(put_float(dst, x, rnd, sat, ftz, relu));
    }
    let (lo, hi) = int_range(dst);
    let i = match v {
        Val::F(x) => {
            if x.is_nan() {
                0
            } else {
                let r = round_integral(x, rnd);
                if r <= lo as f64 {
                    lo
                } else if r >= hi as f64 {
                    hi
                } else {
                    r as i128
                }
            }
        }
        Val::I(i) if sat => i.clamp(lo, hi),
        Val::I(i) => i,
    };
    let bits = dst.bits();
    Ok(if bits >= 64 {
        i as u64
    } else {
        (i as u64) & ((1u64 << bits) - 1)
    })
}

/// `cvt.rn[.satfinite][.relu].{f16x2,bf16x2,e4m3x2,e5m2x2}.f32 d, a, b`: `a` to the upper half.
pub fn cvt_pair(
    dst: Ty,
    src: Ty,
    rnd: Rnd,
    sat: bool,
    relu: bool,
    a: u64,
    b: u64,
) -> Result<u64, Fault> {
    if src.bits() > 64 || src == Ty::Pred {
        return fault(
            FaultKind::IllegalInstruction,
            format!("cvt to {dst:?} from {src:?}"),
        );
    }
    let x = |v: u64| match get(src, v) {
        Val::F(f) => f,
        Val::I(i) => i as f64,
    };
    let (xa, xb) = (x(a), x(b));
    let relu_f = |v: f64| if relu && !v.is_nan() { v.max(0.0) } else { v };
    if let Some(n) = narrow(dst) {
        let ov = if sat {
            Overflow::Saturate
        } else {
            Overflow::Ieee
        };
        let ea = n.encode(relu_f(xa), ov) as u64;
        let eb = n.encode(relu_f(xb), ov) as u64;
        return Ok((ea << 8) | eb);
    }
    let scalar = match dst {
        Ty::F16x2 => Ty::F16,
        Ty::Bf16x2 => Ty::Bf16,
        _ => return fault(FaultKind::IllegalInstruction, format!("cvt to {dst:?}")),
    };
    let _ = rnd;
    let hi = put_float(scalar, xa, Rnd::Rn, false, false, relu);
    let lo = put_float(scalar, xb, Rnd::Rn, false, false, relu);
    Ok((hi << 16) | lo)
}
