//! Input generation: every input tensor of a task, for a shape, a seed and a variant, as host
//! bytes. Deterministic from (task id, tensor name, shape values, seed, variant): identical on
//! every machine, for every candidate and however the work is split across threads.
//!
//! - [`codec`]: correctly rounded f64 -> dtype encoding (f16, bf16, e4m3, e5m2) and decoding;
//! - [`rng`]: the counter-based random source;
//! - [`generators`]: the structured generators of `tasks/README.md`.

pub mod codec;
pub mod generators;
pub mod huffman;
pub mod qmoe;
pub mod rng;

use crate::dtype::DType;
use crate::task::{Init, InitKind, Shape, Task, TensorDecl};
use codec::Overflow;
use rng::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A tensor in host memory: little-endian elements in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTensor {
    pub dtype: DType,
    pub dims: Vec<u64>,
    pub bytes: Vec<u8>,
}

impl HostTensor {
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Element `i` as f64 (see [`codec::read_f64`]).
    pub fn get_f64(&self, i: usize) -> f64 {
        let s = self.dtype.size_bytes();
        codec::read_f64(self.dtype, &self.bytes[i * s..(i + 1) * s])
    }

    /// Element `i`'s raw bits.
    pub fn get_bits(&self, i: usize) -> u64 {
        let s = self.dtype.size_bytes();
        codec::read_bits(self.dtype, &self.bytes[i * s..(i + 1) * s])
    }

    /// SHA-256 of the bytes, hex: what "bit-identical after the run" is checked with.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }
}

/// Which distribution family the inputs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The distributions the task declares.
    Base,
    /// Heavy-tailed (Student's t, 3 degrees of freedom) around the declared centre and spread,
    /// rescaled up or down by a power of two suited to the dtype, for float inputs whose
    /// `init.stress` is true. Integer inputs, constants and structured generators are unchanged.
    Stress(StressScale),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StressScale {
    Up,
    Down,
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Variant::Base => f.write_str("base"),
            Variant::Stress(StressScale::Up) => f.write_str("stress (heavy-tailed, scaled up)"),
            Variant::Stress(StressScale::Down) => f.write_str("stress (heavy-tailed, scaled down)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("input `{tensor}`: {message}")]
pub struct GenError {
    pub tensor: String,
    pub message: String,
}

/// Generates one input tensor. `decl` must be one of `task.inputs`.
pub fn generate(
    task: &Task,
    decl: &TensorDecl,
    shape: &Shape,
    seed: u64,
    variant: Variant,
) -> Result<HostTensor, GenError> {
    let err = |message: String| GenError {
        tensor: decl.name.clone(),
        message,
    };
    let init = decl
        .init
        .as_ref()
        .ok_or_else(|| err("has no `init` (is it an output?)".to_string()))?;
    let dims = dims_of(decl, shape).map_err(err)?;
    let numel = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err("element count overflows".to_string()))?;
    let len = numel
        .checked_mul(decl.dtype.size_bytes() as u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| err(format!("{numel} elements do not fit in memory")))?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|e| err(format!("cannot allocate {len} bytes: {e}")))?;
    bytes.resize(len, 0);
    let key = tensor_key(task, &decl.name, shape, seed, variant);
    // A generator that reads other inputs regenerates them: generation is a pure function of
    // (task, name, shape, seed, variant), so it gets exactly the bytes the kernel will see.
    // The task loader only lets it name inputs declared before this one, so this terminates.
    let deps = |name: &str| -> Result<HostTensor, String> {
        let d = task
            .inputs
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| format!("reads `{name}`, which is not an input"))?;
        generate(task, d, shape, seed, variant).map_err(|e| e.to_string())
    };
    let at = Site {
        shape,
        key,
        variant,
        deps: &deps,
    };
    fill(init, decl.dtype, &dims, &at, &mut bytes).map_err(err)?;
    Ok(HostTensor {
        dtype: decl.dtype,
        dims,
        bytes,
    })
}

/// A seed nobody could have known in advance, for the run-time case of DESIGN §4.3: the OS's
/// per-process hash keys (std's `RandomState`) mixed with the clock and the process id.
pub fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    rng::mix64(h.finish())
}

/// Every input of the task, in declaration order.
pub fn generate_inputs(
    task: &Task,
    shape: &Shape,
    seed: u64,
    variant: Variant,
) -> Result<Vec<HostTensor>, GenError> {
    task.inputs
        .iter()
        .map(|d| generate(task, d, shape, seed, variant))
        .collect()
}

/// A tensor's dimensions for a shape.
pub fn dims_of(decl: &TensorDecl, shape: &Shape) -> Result<Vec<u64>, String> {
    decl.shape
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let v = e.eval(shape).map_err(|x| format!("dimension {i}: {x}"))?;
            u64::try_from(v).map_err(|_| format!("dimension {i} (`{e}`) is negative: {v}"))
        })
        .collect()
}

/// The 64-bit key of one input: SHA-256 over a versioned, unambiguous encoding of everything
/// that identifies it. The shape's name is left out so a held-out shape equal to a public one
/// gets the same data.
pub fn tensor_key(task: &Task, tensor: &str, shape: &Shape, seed: u64, variant: Variant) -> u64 {
    let mut h = Sha256::new();
    h.update(b"kernelsmith-inputs-v1\0");
    for part in [task.id.as_bytes(), tensor.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let mut values: Vec<(&String, &i64)> = shape.values.iter().collect();
    values.sort();
    for (k, v) in values {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update(v.to_le_bytes());
    }
    h.update(seed.to_le_bytes());
    h.update(match variant {
        Variant::Base => [0u8],
        Variant::Stress(StressScale::Up) => [1],
        Variant::Stress(StressScale::Down) => [2],
    });
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Power-of-two stress factors per dtype: large enough to expose scale assumptions, small
/// enough that the heavy tail stays mostly finite (the rest is clamped to the largest finite).
pub(crate) fn stress_factor(dtype: DType, scale: StressScale) -> f64 {
    let (up, down) = match dtype {
        DType::F16 => (4, -6),
        DType::E4m3 => (2, -3),
        DType::E5m2 => (4, -4),
        _ => (10, -10),
    };
    2f64.powi(match scale {
        StressScale::Up => up,
        StressScale::Down => down,
    })
}

/// Below this many elements, threads cost more than they save.
const PARALLEL_MIN: usize = 1 << 16;

/// Runs `f(first_element, bytes)` over contiguous parts of `bytes`, in parallel, with part
/// boundaries at multiples of `align` elements. `f` must derive every value from its element
/// index (counter-based), so the split does not change the result.
pub(crate) fn par_fill<F>(bytes: &mut [u8], elem: usize, align: usize, f: F)
where
    F: Fn(u64, &mut [u8]) + Sync,
{
    let numel = bytes.len() / elem.max(1);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(32);
    #[cfg(test)]
    let threads = if tests::SERIAL.with(|c| c.get()) {
        1
    } else {
        threads.max(3)
    };
    if numel < PARALLEL_MIN || threads == 1 {
        f(0, bytes);
        return;
    }
    let align = align.max(1);
    let per = numel.div_ceil(threads).div_ceil(align) * align;
    std::thread::scope(|s| {
        for (i, part) in bytes.chunks_mut(per * elem).enumerate() {
            let f = &f;
            s.spawn(move || f((i * per) as u64, part));
        }
    });
}

/// Generates another input of the same task, shape, seed and variant by name.
pub(crate) type Deps<'a> = dyn Fn(&str) -> Result<HostTensor, String> + 'a;

/// Where a tensor is generated: its shape, its key, the variant, and the way to its
/// dependencies.
pub(crate) struct Site<'a> {
    pub shape: &'a Shape,
    pub key: u64,
    pub variant: Variant,
    pub deps: &'a Deps<'a>,
}

fn fill(init: &Init, dtype: DType, dims: &[u64], at: &Site, out: &mut [u8]) -> Result<(), String> {
    let (shape, key, variant) = (at.shape, at.key, at.variant);
    let size = dtype.size_bytes();
    let stress = match variant {
        Variant::Stress(s) if init.stress && dtype.is_float() => Some(s),
        _ => None,
    };
    let clamp = codec::max_finite(dtype).unwrap_or(f64::MAX);
    let stressed = |center: f64, spread: f64, df: f64, scale: StressScale| {
        let factor = stress_factor(dtype, scale);
        // Unit-variance t for df > 2; for heavier declared tails keep the declared scale.
        let norm = if df > 2.0 {
            (df / (df - 2.0)).sqrt()
        } else {
            1.0
        };
        move |s: &mut Stream| {
            (factor * (center + spread * s.student_t(df) / norm)).clamp(-clamp, clamp)
        }
    };
    let float_only = |what: &str| -> Result<(), String> {
        if dtype.is_float() {
            Ok(())
        } else {
            Err(format!(
                "dist `{what}` makes floats but the dtype is {dtype}"
            ))
        }
    };
    match (&init.kind, stress) {
        (InitKind::Normal { mean, std }, None) => {
            float_only("normal")?;
            let (mean, std) = (*mean, *std);
            par_fill(out, size, 2, |first, part| {
                let n = part.len() / size;
                let mut i = 0;
                while i < n {
                    let (a, b) = Stream::at(key, (first + i as u64) / 2).normal_pair();
                    codec::write_float(
                        dtype,
                        mean + std * a,
                        Overflow::Saturate,
                        &mut part[i * size..(i + 1) * size],
                    );
                    if i + 1 < n {
                        codec::write_float(
                            dtype,
                            mean + std * b,
                            Overflow::Saturate,
                            &mut part[(i + 1) * size..(i + 2) * size],
                        );
                    }
                    i += 2;
                }
            });
        }
        (InitKind::Normal { mean, std }, Some(s)) => {
            float_only("normal")?;
            fill_each(out, dtype, key, stressed(*mean, *std, 3.0, s));
        }
        (InitKind::Uniform { low, high }, None) => {
            float_only("uniform")?;
            let (low, high) = (*low, *high);
            // Rounding can land on `high` or just below `low`; keep [low, high) in the dtype.
            let (bottom, top) = representable_range(dtype, low, high)?;
            let in_range =
                move |v: f64| codec::round_to(dtype, v, Overflow::Saturate).clamp(bottom, top);
            fill_each(out, dtype, key, move |s| {
                in_range(low + (high - low) * s.uniform())
            });
        }
        (InitKind::Uniform { low, high }, Some(sc)) => {
            float_only("uniform")?;
            let (c, w) = ((low + high) / 2.0, (high - low) / 12f64.sqrt());
            fill_each(out, dtype, key, stressed(c, w, 3.0, sc));
        }
        (InitKind::StudentT { df, scale }, None) => {
            float_only("student_t")?;
            let (df, scale) = (*df, *scale);
            fill_each(out, dtype, key, move |s| {
                (scale * s.student_t(df)).clamp(-clamp, clamp)
            });
        }
        (InitKind::StudentT { df, scale }, Some(sc)) => {
            float_only("student_t")?;
            fill_each(out, dtype, key, stressed(0.0, *scale, df.min(3.0), sc));
        }
        (InitKind::Randint { low, high }, _) => {
            let (low, high) = crate::task::randint_bounds(low, high, shape)?;
            fill_randint(out, dtype, key, low, high)?
        }
        (InitKind::Constant { value }, _) => fill_constant(out, dtype, *value)?,
        (InitKind::Generator(g), stress) => generators::fill(g, dtype, dims, at, stress, out)?,
    }
    Ok(())
}

/// The smallest value >= `low` and the largest value < `high` that `dtype` represents.
fn representable_range(dtype: DType, low: f64, high: f64) -> Result<(f64, f64), String> {
    let mut bottom = codec::round_to(dtype, low, Overflow::Saturate);
    if bottom < low {
        bottom = codec::next_up(dtype, bottom).unwrap_or(bottom);
    }
    let mut top = codec::round_to(dtype, high, Overflow::Saturate);
    while top >= high {
        match codec::next_down(dtype, top) {
            Some(t) => top = t,
            None => break,
        }
    }
    if bottom > top || top >= high {
        return Err(format!(
            "uniform range [{low}, {high}) holds no value of {dtype}"
        ));
    }
    Ok((bottom, top))
}

/// Fills a float tensor element by element, element `i` drawing from stream `i`.
fn fill_each<F>(out: &mut [u8], dtype: DType, key: u64, f: F)
where
    F: Fn(&mut Stream) -> f64 + Sync,
{
    let size = dtype.size_bytes();
    par_fill(out, size, 1, |first, part| {
        for (j, e) in part.chunks_exact_mut(size).enumerate() {
            let mut s = Stream::at(key, first + j as u64);
            codec::write_float(dtype, f(&mut s), Overflow::Saturate, e);
        }
    });
}

fn fill_randint(out: &mut [u8], dtype: DType, key: u64, low: i64, high: i64) -> Result<(), String> {
    if low >= high {
        return Err(format!("randint range [{low}, {high}) is empty"));
    }
    let span = (high as i128 - low as i128) as u64;
    let size = dtype.size_bytes();
    if dtype.is_float() {
        let limit = codec::exact_int_limit(dtype).unwrap_or(0);
        if (low as i128).abs() > limit || (high as i128 - 1).abs() > limit {
            return Err(format!(
                "randint range [{low}, {high}) is not exact in {dtype} (integers are exact only within ±{limit})"
            ));
        }
        par_fill(out, size, 1, |first, part| {
            for (j, e) in part.chunks_exact_mut(size).enumerate() {
                let v = low as i128 + Stream::at(key, first + j as u64).below(span) as i128;
                codec::write_float(dtype, v as f64, Overflow::Ieee, e);
            }
        });
        return Ok(());
    }
    let (lo, hi) = dtype
        .int_range()
        .ok_or_else(|| format!("randint cannot make dtype {dtype}"))?;
    if (low as i128) < lo || (high as i128 - 1) > hi {
        return Err(format!(
            "randint range [{low}, {high}) does not fit dtype {dtype} ([{lo}, {hi}])"
        ));
    }
    par_fill(out, size, 1, |first, part| {
        for (j, e) in part.chunks_exact_mut(size).enumerate() {
            let v = low as i128 + Stream::at(key, first + j as u64).below(span) as i128;
            codec::write_int(dtype, v, e);
        }
    });
    Ok(())
}

fn fill_constant(out: &mut [u8], dtype: DType, value: f64) -> Result<(), String> {
    let size = dtype.size_bytes();
    let mut one = [0u8; 8];
    if dtype.is_float() {
        codec::write_float(dtype, value, Overflow::Ieee, &mut one[..size]);
        let r = codec::read_f64(dtype, &one[..size]);
        if value.is_finite() && !r.is_finite() {
            return Err(format!("constant {value} overflows {dtype}"));
        }
    } else {
        let (lo, hi) = dtype
            .int_range()
            .ok_or_else(|| format!("constant cannot make dtype {dtype}"))?;
        if value.fract() != 0.0 || !value.is_finite() {
            return Err(format!(
                "constant {value} is not an integer but the dtype is {dtype}"
            ));
        }
        let v = value as i128;
        if v < lo || v > hi {
            return Err(format!(
                "constant {value} does not fit dtype {dtype} ([{lo}, {hi}])"
            ));
        }
        codec::write_int(dtype, v, &mut one[..size]);
    }
    for e in out.chunks_exact_mut(size) {
        e.copy_from_slice(&one[..size]);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
