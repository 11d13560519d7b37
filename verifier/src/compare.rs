//! Output comparison: the three metrics of `[check]`, poison patterns for unwritten-element
//! detection, mismatch reports an LLM can act on, and the two-run determinism comparison.
//!
//! Rules that hold for every metric: a NaN or infinity in the output where the reference is
//! finite is a mismatch; a NaN in the reference is matched by any NaN except the poison; an
//! infinity in the reference only by the same infinity. An element still holding the poison
//! pattern it was filled with (and differing from the reference) counts as unwritten.

use crate::dtype::DType;
use crate::inputs::codec;
use crate::inputs::HostTensor;
use crate::task::Check;
use serde::{Deserialize, Serialize};

/// How many of the worst elements a report lists.
pub const WORST_K: usize = 8;

/// The two fill patterns written into outputs and scratch before a run. Run twice with
/// different patterns: an element that is never written keeps whichever pattern it had, so
/// it differs between runs even where an integer pattern happens to be a legal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Poison {
    A,
    B,
}

impl Poison {
    /// The element bits of this pattern for a dtype. Floats get quiet NaNs with payloads that
    /// no arithmetic produces (GPUs emit the canonical NaN); e4m3 has a single NaN per sign,
    /// so its patterns are those. Integers get 0xFF.. (pattern A) and 0xA5.. (pattern B).
    pub fn bits(self, dtype: DType) -> u64 {
        use Poison::*;
        match (dtype, self) {
            (DType::F64, A) => 0x7FFD_A5A5_A5A5_A5A5,
            (DType::F64, B) => 0xFFFA_5A5A_5A5A_5A5A,
            (DType::F32, A) => 0x7FE5_A5A5,
            (DType::F32, B) => 0xFFDA_5A5A,
            (DType::F16, A) => 0x7E5A,
            (DType::F16, B) => 0xFEA5,
            (DType::Bf16, A) => 0x7FE5,
            (DType::Bf16, B) => 0xFFDA,
            (DType::E4m3, A) => 0x7F,
            (DType::E4m3, B) => 0xFF,
            (DType::E5m2, A) => 0x7D,
            (DType::E5m2, B) => 0xFE,
            (d, A) => mask(d),
            (d, B) => 0xA5A5_A5A5_A5A5_A5A5 & mask(d),
        }
    }

    /// One element of the pattern, little endian.
    pub fn element(self, dtype: DType) -> Vec<u8> {
        self.bits(dtype).to_le_bytes()[..dtype.size_bytes()].to_vec()
    }

    /// Fills a buffer of `dtype` elements with the pattern.
    pub fn fill(self, dtype: DType, buf: &mut [u8]) {
        let e = self.element(dtype);
        for chunk in buf.chunks_exact_mut(e.len()) {
            chunk.copy_from_slice(&e);
        }
    }

    pub fn other(self) -> Poison {
        match self {
            Poison::A => Poison::B,
            Poison::B => Poison::A,
        }
    }
}

fn mask(d: DType) -> u64 {
    match d.size_bytes() {
        8 => u64::MAX,
        n => (1u64 << (8 * n)) - 1,
    }
}

/// `[check]` in a form that travels (serde both ways) inside reports and verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "metric", rename_all = "snake_case")]
pub enum Metric {
    NormalizedMax {
        tol: f64,
    },
    AllClose {
        atol: f64,
        rtol: f64,
        #[serde(default)]
        max_bad_fraction: f64,
    },
    Exact,
}

impl From<&Check> for Metric {
    fn from(c: &Check) -> Metric {
        match *c {
            Check::NormalizedMax { tol } => Metric::NormalizedMax { tol },
            Check::AllClose {
                atol,
                rtol,
                max_bad_fraction,
            } => Metric::AllClose {
                atol,
                rtol,
                max_bad_fraction,
            },
            Check::Exact => Metric::Exact,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Metric::NormalizedMax { tol } => {
                write!(f, "normalized_max: max|y - ref| / max|ref| <= {tol:e}")
            }
            Metric::AllClose {
                atol,
                rtol,
                max_bad_fraction,
            } => {
                write!(f, "allclose: |y - ref| <= {atol:e} + {rtol:e} * |ref|")?;
                if *max_bad_fraction > 0.0 {
                    write!(
                        f,
                        " for all but a fraction {max_bad_fraction:e} of the elements"
                    )?;
                }
                Ok(())
            }
            Metric::Exact => f.write_str("exact: bit-identical"),
        }
    }
}

/// One element of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadElement {
    pub index: u64,
    /// Coordinates in the output's shape (row-major).
    pub coords: Vec<u64>,
    pub got: String,
    pub expected: String,
    /// `None` when a NaN or infinity is involved.
    pub abs_error: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MismatchReport {
    pub metric: Metric,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub elements: u64,
    /// Elements that fail the metric (all kinds below included).
    pub mismatches: u64,
    /// NaN or infinity in the output where the reference is finite.
    pub nonfinite: u64,
    /// Elements still holding the poison pattern (never written by the kernel).
    pub unwritten: u64,
    /// Largest |y - ref| over elements where both are finite.
    #[serde(with = "lenient_f64")]
    pub max_abs_error: f64,
    /// Largest finite |ref|.
    #[serde(with = "lenient_f64")]
    pub max_abs_reference: f64,
    /// `max_abs_error / max_abs_reference`, or `max_abs_error` when the reference is all zero.
    #[serde(with = "lenient_f64")]
    pub normalized_error: f64,
    /// The reference is zero everywhere: normalized_max then bounds the absolute error by
    /// `tol` (a relative bound would demand exact zeros).
    pub reference_all_zero: bool,
    pub first_bad: Option<BadElement>,
    /// The worst elements, largest error first (non-finite first of all).
    pub worst: Vec<BadElement>,
}

impl MismatchReport {
    pub fn passed(&self) -> bool {
        self.mismatches <= self.allowed_mismatches()
    }

    /// Misses the metric tolerates: `floor(max_bad_fraction * elements)` for allclose, and only
    /// when no element is NaN/Inf where the reference is finite and none is left unwritten.
    pub fn allowed_mismatches(&self) -> u64 {
        match self.metric {
            Metric::AllClose {
                max_bad_fraction, ..
            } if self.nonfinite == 0 && self.unwritten == 0 => {
                (max_bad_fraction * self.elements as f64).floor() as u64
            }
            _ => 0,
        }
    }

    /// A few lines for logs and LLM feedback.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} of {} elements mismatch ({}); max abs error {:.3e}, max |ref| {:.3e}, normalized error {:.3e}",
            self.mismatches,
            self.elements,
            self.metric,
            self.max_abs_error,
            self.max_abs_reference,
            self.normalized_error
        );
        if self.reference_all_zero {
            s.push_str(" (the reference is all zeros: the tolerance applies to |y| directly)");
        }
        if self.nonfinite > 0 {
            s.push_str(&format!(
                "\n{} elements are NaN/Inf where the reference is finite",
                self.nonfinite
            ));
        }
        if self.unwritten > 0 {
            s.push_str(&format!(
                "\n{} elements were never written (they still hold the poison fill)",
                self.unwritten
            ));
        }
        if let Some(b) = &self.first_bad {
            s.push_str(&format!(
                "\nfirst bad element at {:?}: got {}, expected {}",
                b.coords, b.got, b.expected
            ));
        }
        for b in &self.worst {
            s.push_str(&format!(
                "\n  at {:?}: got {}, expected {}{}",
                b.coords,
                b.got,
                b.expected,
                b.abs_error
                    .map(|e| format!(" (|err| {e:.3e})"))
                    .unwrap_or_default()
            ));
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    #[error("dtype mismatch: output is {got}, reference is {expected}")]
    DType { got: DType, expected: DType },
    #[error("shape mismatch: output is {got:?}, reference is {expected:?}")]
    Shape { got: Vec<u64>, expected: Vec<u64> },
    #[error("buffer of {len} bytes does not hold {numel} {dtype} elements")]
    Length {
        len: usize,
        numel: u64,
        dtype: DType,
    },
}

fn check_compatible(got: &HostTensor, expected: &HostTensor) -> Result<(), CompareError> {
    if got.dtype != expected.dtype {
        return Err(CompareError::DType {
            got: got.dtype,
            expected: expected.dtype,
        });
    }
    if got.dims != expected.dims {
        return Err(CompareError::Shape {
            got: got.dims.clone(),
            expected: expected.dims.clone(),
        });
    }
    for t in [got, expected] {
        if t.bytes.len() as u64 != t.numel() * t.dtype.size_bytes() as u64 {
            return Err(CompareError::Length {
                len: t.bytes.len(),
                numel: t.numel(),
                dtype: t.dtype,
            });
        }
    }
    Ok(())
}

/// Compares an output with the reference output under a metric. `poison` is the pattern the
/// output was filled with before the run (for counting unwritten elements).
pub fn compare(
    got: &HostTensor,
    expected: &HostTensor,
    metric: Metric,
    poison: Option<Poison>,
) -> Result<MismatchReport, CompareError> {
    check_compatible(got, expected)?;
    let max_ref = max_abs_finite(expected);
    Ok(scan(got, expected, metric, poison, max_ref))
}

/// How two runs of the same kernel on the same inputs relate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "agreement", rename_all = "snake_case")]
pub enum RunAgreement {
    /// Bit-identical.
    Identical,
    /// Different bits, but within the task's tolerance of each other (e.g. atomics that
    /// reorder a floating-point sum): "nondeterministic within tolerance".
    WithinTolerance {
        differing: u64,
        #[serde(with = "lenient_f64")]
        max_abs_diff: f64,
    },
    /// Beyond the tolerance (or any difference under `exact`): a race, or reads of memory the
    /// kernel never initialised.
    Racy { report: Box<MismatchReport> },
}

/// Compares the second run against the first; normalized_max takes its scale from the
/// reference, so the tolerance means the same as in the correctness check.
pub fn compare_runs(
    first: &HostTensor,
    second: &HostTensor,
    reference: &HostTensor,
    metric: Metric,
) -> Result<RunAgreement, CompareError> {
    check_compatible(second, first)?;
    check_compatible(first, reference)?;
    if first.bytes == second.bytes {
        return Ok(RunAgreement::Identical);
    }
    let size = first.dtype.size_bytes();
    let differing = first
        .bytes
        .chunks_exact(size)
        .zip(second.bytes.chunks_exact(size))
        .filter(|(a, b)| a != b)
        .count() as u64;
    let report = scan(second, first, metric, None, max_abs_finite(reference));
    if report.passed() {
        Ok(RunAgreement::WithinTolerance {
            differing,
            max_abs_diff: report.max_abs_error,
        })
    } else {
        Ok(RunAgreement::Racy {
            report: Box::new(report),
        })
    }
}

fn max_abs_finite(t: &HostTensor) -> f64 {
    if !t.dtype.is_float() {
        return (0..t.numel() as usize)
            .map(|i| t.get_f64(i).abs())
            .fold(0.0, f64::max);
    }
    (0..t.numel() as usize)
        .map(|i| t.get_f64(i))
        .filter(|v| v.is_finite())
        .fold(0.0, |a, v| a.max(v.abs()))
}

/// Per-part partial results, merged in index order.
#[derive(Default)]
struct Partial {
    mismatches: u64,
    nonfinite: u64,
    unwritten: u64,
    max_abs_error: f64,
    first_bad: Option<u64>,
    /// (error, index), error = +inf for non-finite; sorted descending, at most WORST_K.
    worst: Vec<(f64, u64)>,
}

impl Partial {
    fn note_bad(&mut self, i: u64, err: f64) {
        self.mismatches += 1;
        if self.first_bad.is_none() {
            self.first_bad = Some(i);
        }
        if self.worst.len() < WORST_K || err > self.worst[self.worst.len() - 1].0 {
            let pos = self.worst.partition_point(|(e, _)| *e >= err);
            self.worst.insert(pos, (err, i));
            self.worst.truncate(WORST_K);
        }
    }

    fn merge(mut self, o: Partial) -> Partial {
        self.mismatches += o.mismatches;
        self.nonfinite += o.nonfinite;
        self.unwritten += o.unwritten;
        self.max_abs_error = self.max_abs_error.max(o.max_abs_error);
        self.first_bad = match (self.first_bad, o.first_bad) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.worst.extend(o.worst);
        self.worst
            .sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.worst.truncate(WORST_K);
        self
    }
}

fn scan(
    got: &HostTensor,
    expected: &HostTensor,
    metric: Metric,
    poison: Option<Poison>,
    max_ref: f64,
) -> MismatchReport {
    let dtype = got.dtype;
    let n = got.numel() as usize;
    let all_zero = max_ref == 0.0;
    let denom = if all_zero { 1.0 } else { max_ref };
    let poison_bits = poison.map(|p| p.bits(dtype));
    let is_float = dtype.is_float();
    let scan_part = |lo: usize, hi: usize| -> Partial {
        let mut p = Partial::default();
        for i in lo..hi {
            let gb = got.get_bits(i);
            let rb = expected.get_bits(i);
            if gb == rb {
                continue;
            }
            let is_poison = poison_bits == Some(gb);
            if is_poison {
                p.unwritten += 1;
            }
            if !is_float {
                if metric == Metric::Exact {
                    let s = dtype.size_bytes();
                    let g = codec::read_int(dtype, &got.bytes[i * s..(i + 1) * s]);
                    let r = codec::read_int(dtype, &expected.bytes[i * s..(i + 1) * s]);
                    let e = (g - r).unsigned_abs() as f64;
                    p.max_abs_error = p.max_abs_error.max(e);
                    p.note_bad(i as u64, e);
                    continue;
                }
                let e = (got.get_f64(i) - expected.get_f64(i)).abs();
                p.max_abs_error = p.max_abs_error.max(e);
                if !within(metric, e, expected.get_f64(i), denom) || is_poison {
                    p.note_bad(i as u64, e);
                }
                continue;
            }
            let (g, r) = (got.get_f64(i), expected.get_f64(i));
            if r.is_nan() {
                if !g.is_nan() || is_poison {
                    p.note_bad(i as u64, f64::INFINITY);
                }
                continue;
            }
            if r.is_infinite() {
                if g != r {
                    p.note_bad(i as u64, f64::INFINITY);
                }
                continue;
            }
            if !g.is_finite() {
                p.nonfinite += 1;
                p.note_bad(i as u64, f64::INFINITY);
                continue;
            }
            let e = (g - r).abs();
            p.max_abs_error = p.max_abs_error.max(e);
            let ok = match metric {
                Metric::Exact => false,
                m => within(m, e, r, denom),
            };
            if !ok {
                p.note_bad(i as u64, e);
            }
        }
        p
    };
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(16);
    let total = if n < (1 << 18) || threads == 1 {
        scan_part(0, n)
    } else {
        let per = n.div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let f = &scan_part;
                    s.spawn(move || f((t * per).min(n), ((t + 1) * per).min(n)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .fold(Partial::default(), Partial::merge)
        })
    };
    let describe = |i: u64, err: f64| BadElement {
        index: i,
        coords: coords(i, &got.dims),
        got: show(got, i as usize, poison_bits),
        expected: show(expected, i as usize, None),
        abs_error: err.is_finite().then_some(err),
    };
    MismatchReport {
        metric,
        dtype,
        shape: got.dims.clone(),
        elements: n as u64,
        mismatches: total.mismatches,
        nonfinite: total.nonfinite,
        unwritten: total.unwritten,
        max_abs_error: total.max_abs_error,
        max_abs_reference: max_ref,
        normalized_error: total.max_abs_error / denom,
        reference_all_zero: all_zero,
        first_bad: total.first_bad.map(|i| {
            let err = total
                .worst
                .iter()
                .find(|(_, j)| *j == i)
                .map(|(e, _)| *e)
                .unwrap_or_else(|| element_error(got, expected, i as usize));
            describe(i, err)
        }),
        worst: total.worst.iter().map(|(e, i)| describe(*i, *e)).collect(),
    }
}

fn within(metric: Metric, err: f64, r: f64, denom: f64) -> bool {
    match metric {
        Metric::NormalizedMax { tol } => err <= tol * denom,
        Metric::AllClose { atol, rtol, .. } => err <= atol + rtol * r.abs(),
        Metric::Exact => err == 0.0,
    }
}

fn element_error(got: &HostTensor, expected: &HostTensor, i: usize) -> f64 {
    let e = (got.get_f64(i) - expected.get_f64(i)).abs();
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

/// Row-major coordinates of a flat index.
pub fn coords(mut i: u64, dims: &[u64]) -> Vec<u64> {
    let mut c = vec![0; dims.len()];
    for (k, d) in dims.iter().enumerate().rev() {
        if *d > 0 {
            c[k] = i % d;
            i /= d;
        }
    }
    c
}

/// An element as a short exact string; NaNs show their bits and whether they are the poison.
fn show(t: &HostTensor, i: usize, poison: Option<u64>) -> String {
    let bits = t.get_bits(i);
    let width = t.dtype.size_bytes() * 2;
    if poison == Some(bits) {
        return format!("unwritten (poison 0x{bits:0width$x})");
    }
    if !t.dtype.is_float() {
        let s = t.dtype.size_bytes();
        return codec::read_int(t.dtype, &t.bytes[i * s..(i + 1) * s]).to_string();
    }
    let v = t.get_f64(i);
    if v.is_nan() {
        return format!("NaN (0x{bits:0width$x})");
    }
    let sci = v != 0.0 && !(1e-4..1e7).contains(&v.abs());
    match (t.dtype, sci) {
        (DType::F32, false) => format!("{}", v as f32),
        (DType::F32, true) => format!("{:e}", v as f32),
        (_, false) => format!("{v}"),
        (_, true) => format!("{v:e}"),
    }
}

/// f64 fields that may be infinite or NaN: JSON has no such numbers, so they travel as the
/// strings "inf", "-inf" and "NaN".
pub mod lenient_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(v) => Ok(v),
            NumOrStr::Str(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(serde::de::Error::custom(format!(
                    "expected a number, \"inf\", \"-inf\" or \"NaN\", found \"{s}\""
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests;
