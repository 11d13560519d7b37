//! Which public shapes `ksmith bench` times, by name or by role.
//!
//! The task format has no shape roles, so roles are read from the names the suite uses and
//! from the roofline: `realistic` is the shape named so, else the largest roofline floor among
//! the shapes not named `small*` / `awkward*` (the suite's production-size shapes go by model
//! names: `llama3_b64`, `prefill_m256_b5`...). `small` is the first shape named `small*`, else
//! the one with the smallest floor.

use verifier::task::{Peak, Shape, Task};
use verifier::timing::{bound, floor_ms, Bound, Rates};

/// Role keywords accepted by `--shapes` next to shape names.
pub const ROLES: &[&str] = &["all", "realistic", "small"];

/// Nominal H100 SXM rates (datasheet: 3.35 TB/s, dense peaks), used to rank one task's shapes
/// against each other (the ratio of bandwidth to peak decides which shape has the larger floor)
/// and, labelled as such, in `tasks show`. No timing result is ever computed from them: SOL% uses
/// the rates `gpu calibrate` measured.
fn nominal_rates(peak: Peak) -> Rates {
    let ops_per_s = match peak {
        Peak::Fp64 => 34e12,
        Peak::Fp32 => 67e12,
        Peak::Int32 => 33e12,
        Peak::Tf32Tensor => 495e12,
        Peak::Fp16Tensor | Peak::Bf16Tensor => 989e12,
        Peak::Fp8Tensor | Peak::Int8Tensor => 1979e12,
    };
    Rates {
        bytes_per_s: 3.35e12,
        ops_per_s,
    }
}

/// The roofline floor of `shape` in milliseconds at nominal rates, and the term that sets it;
/// `None` when the roofline does not evaluate there.
pub(crate) fn nominal_roofline(task: &Task, shape: &Shape) -> Option<(f64, Bound)> {
    let r = &task.roofline;
    let (b, f) = (r.bytes.eval(shape).ok()?, r.flops.eval(shape).ok()?);
    let rates = nominal_rates(r.peak);
    Some((floor_ms(b, f, &rates)?, bound(b, f, &rates)?))
}

/// The roofline floor of `shape` at nominal rates; 0 when the roofline does not evaluate.
fn nominal_floor(task: &Task, shape: &Shape) -> f64 {
    nominal_roofline(task, shape).map_or(0.0, |(ms, _)| ms)
}

fn is_minor(name: &str) -> bool {
    name.starts_with("small") || name.starts_with("awkward")
}

/// The shape a one-number-per-task summary uses. `None` only for a task without shapes.
pub fn realistic_shape(task: &Task) -> Option<&Shape> {
    if let Some(s) = task.shape("realistic") {
        return Some(s);
    }
    let major: Vec<&Shape> = task.shapes.iter().filter(|s| !is_minor(&s.name)).collect();
    let pool = if major.is_empty() {
        task.shapes.iter().collect()
    } else {
        major
    };
    // The first of equal floors: max_by keeps the last maximum, so compare reversed positions.
    pool.into_iter()
        .enumerate()
        .max_by(|(i, a), (j, b)| {
            nominal_floor(task, a)
                .total_cmp(&nominal_floor(task, b))
                .then(j.cmp(i))
        })
        .map(|(_, s)| s)
}

/// The cheap shape: the first named `small*`, else the smallest floor.
pub fn small_shape(task: &Task) -> Option<&Shape> {
    if let Some(s) = task.shapes.iter().find(|s| s.name.starts_with("small")) {
        return Some(s);
    }
    task.shapes
        .iter()
        .enumerate()
        .min_by(|(i, a), (j, b)| {
            nominal_floor(task, a)
                .total_cmp(&nominal_floor(task, b))
                .then(i.cmp(j))
        })
        .map(|(_, s)| s)
}

/// The public shapes `choices` (names or [`ROLES`]) select in `task`, in the task's order,
/// each once. Empty `choices` means all. A name the task does not have is an error naming the
/// task's shapes.
pub fn resolve(task: &Task, choices: &[String]) -> Result<Vec<String>, String> {
    if choices.is_empty() {
        return Ok(task.shapes.iter().map(|s| s.name.clone()).collect());
    }
    let mut wanted: Vec<&str> = Vec::new();
    for c in choices {
        let c = c.trim();
        // A shape literally named like a role is that shape (`realistic` is both anyway).
        if let Some(s) = task.shape(c) {
            wanted.push(&s.name);
            continue;
        }
        match c {
            "all" => wanted.extend(task.shapes.iter().map(|s| s.name.as_str())),
            "realistic" => wanted.extend(realistic_shape(task).map(|s| s.name.as_str())),
            "small" => wanted.extend(small_shape(task).map(|s| s.name.as_str())),
            _ => {
                return Err(format!(
                    "task `{}` has no public shape `{c}` (its shapes: {}; roles: {})",
                    task.id,
                    task.shapes
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    ROLES.join(", ")
                ))
            }
        }
    }
    Ok(task
        .shapes
        .iter()
        .filter(|s| wanted.contains(&s.name.as_str()))
        .map(|s| s.name.clone())
        .collect())
}
