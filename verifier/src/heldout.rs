//! Held-out shapes: random parameter assignments inside a task's declared ranges, never shown to
//! the LLM, so a kernel cannot be tuned to the public shapes only. Draws prefer awkward values
//! (odd, prime, range edges; multiples of `multiple_of` only where it is required) and small
//! sizes, keep every constraint and `check_shape` satisfied, and cap the bytes of inputs plus
//! outputs so verification stays fast. Deterministic from (task id, seed); the caller draws a
//! fresh seed at run time.

use crate::inputs::rng::Stream;
use crate::task::{Param, Shape, Task};
use indexmap::IndexMap;
use sha2::{Digest, Sha256};

/// Held-out shapes are named `heldout-0`, `heldout-1`, ...
pub const NAME_PREFIX: &str = "heldout-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldoutOptions {
    pub count: usize,
    /// Cap on the bytes of all inputs and outputs of a shape.
    pub max_bytes: u64,
    /// Tries per shape before giving up on it.
    pub attempts: usize,
}

impl Default for HeldoutOptions {
    fn default() -> Self {
        HeldoutOptions {
            count: 2,
            max_bytes: 64 << 20,
            attempts: 2000,
        }
    }
}

/// Bytes of every input and output of the task at a shape.
pub fn shape_bytes(task: &Task, shape: &Shape) -> Result<u64, String> {
    let mut total: u64 = 0;
    for t in task.tensors() {
        let b = t
            .numel(shape)?
            .checked_mul(t.dtype.size_bytes() as u64)
            .ok_or_else(|| format!("`{}`: byte size overflows", t.name))?;
        total = total
            .checked_add(b)
            .ok_or_else(|| "total byte size overflows".to_string())?;
    }
    Ok(total)
}

/// Draws up to `opts.count` distinct held-out shapes named `heldout-0`, `heldout-1`, ...
/// Fewer come back when the ranges, constraints and byte cap leave too little room (the
/// caller reports that; it is not an error of the kernel).
pub fn draw(task: &Task, seed: u64, opts: &HeldoutOptions) -> Vec<Shape> {
    let key = {
        let mut h = Sha256::new();
        h.update(b"kernelsmith-heldout-v1\0");
        h.update(task.id.as_bytes());
        h.update([0]);
        h.update(seed.to_le_bytes());
        let d = h.finalize();
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    };
    let mut out: Vec<Shape> = Vec::new();
    let mut s = Stream::at(key, 0);
    for k in 0..opts.count {
        for attempt in 0..opts.attempts {
            // Every 100 failed tries, halve the (log) size range: big draws that break the
            // byte cap give way to small ones.
            let shrink = (attempt / 100) as u32;
            let values: IndexMap<String, i64> = task
                .params
                .iter()
                .map(|p| (p.name.clone(), draw_param(task, p, shrink, &mut s)))
                .collect();
            let shape = Shape {
                name: format!("{NAME_PREFIX}{k}"),
                values,
            };
            let dup = out
                .iter()
                .chain(task.shapes.iter())
                .any(|o| o.values == shape.values);
            if dup && attempt + 1 < opts.attempts {
                continue;
            }
            if task.check_shape(&shape).is_err() {
                continue;
            }
            match shape_bytes(task, &shape) {
                Ok(b) if b <= opts.max_bytes => {
                    out.push(shape);
                    break;
                }
                _ => continue,
            }
        }
    }
    out
}

/// Corner shapes are named `corner-0`, `corner-1`, ...
pub const CORNER_PREFIX: &str = "corner-";

/// Multiples of `multiple_of` taken at each end of a range by [`corners`].
const CORNER_EDGE: i64 = 8;

/// Every legal shape that differs from a base in one parameter, set to a value where launch
/// plans tend to switch: the first and last few legal values and those around each power of
/// two. The bases are every public shape and the shape with each parameter at its minimum.
/// There is no byte cap: a plan must cover the declared ranges, not only what the verifier
/// happens to draw (a `when` chain with a hole at L = 8191, reachable only with B = H = 1 under
/// `B * H * L * L <= 2^32`, is found here and by almost no random draw). Deterministic; meant
/// for static checks of plans, whose resolution costs microseconds, not for GPU runs.
pub fn corners(task: &Task) -> Vec<Shape> {
    let edges: Vec<Vec<i64>> = task.params.iter().map(|p| edge_values(task, p)).collect();
    let lowest: IndexMap<String, i64> = task
        .params
        .iter()
        .zip(&edges)
        .map(|(p, e)| (p.name.clone(), e.first().copied().unwrap_or(1)))
        .collect();
    let bases: Vec<&IndexMap<String, i64>> = std::iter::once(&lowest)
        .chain(task.shapes.iter().map(|s| &s.values))
        .collect();
    let mut seen: std::collections::HashSet<Vec<i64>> = task
        .shapes
        .iter()
        .map(|s| s.values.values().copied().collect())
        .collect();
    let mut out = Vec::new();
    for (p, edge) in task.params.iter().zip(&edges) {
        for base in &bases {
            for &v in edge {
                let mut values = (*base).clone();
                values.insert(p.name.clone(), v);
                if !seen.insert(values.values().copied().collect()) {
                    continue;
                }
                let shape = Shape {
                    name: format!("{CORNER_PREFIX}{}", out.len()),
                    values,
                };
                if task.check_shape(&shape).is_ok() {
                    out.push(shape);
                }
            }
        }
    }
    out
}

/// A parameter's legal values near its ends and around powers of two, ascending.
fn edge_values(task: &Task, p: &Param) -> Vec<i64> {
    if let Some(vals) = p.values.as_ref().filter(|v| !v.is_empty()) {
        return vals.clone();
    }
    let (klo, khi, m) = multiples(task, p);
    if klo > khi {
        return vec![p.min.unwrap_or(1)];
    }
    let mut ks: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
    ks.extend(klo..=khi.min(klo.saturating_add(CORNER_EDGE - 1)));
    ks.extend(khi.saturating_sub(CORNER_EDGE - 1).max(klo)..=khi);
    for j in 0..62 {
        let pow = 1i64 << j;
        if pow / m > khi {
            break;
        }
        for v in [pow - 1, pow, pow + 1] {
            for k in [v.div_euclid(m), div_ceil(v, m)] {
                if (klo..=khi).contains(&k) {
                    ks.insert(k);
                }
            }
        }
    }
    ks.into_iter().map(|k| k.saturating_mul(m)).collect()
}

/// `(klo, khi, m)`: the legal values of a ranged parameter are `k * m` for `k` in `klo..=khi`.
/// Without a declared maximum the range ends at the largest public value (a bit above the
/// minimum when there is none).
fn multiples(task: &Task, p: &Param) -> (i64, i64, i64) {
    let m = p.multiple_of.filter(|m| *m > 0).unwrap_or(1);
    let lo = p.min.unwrap_or(1);
    let hi = p
        .max
        .unwrap_or_else(|| {
            task.shapes
                .iter()
                .filter_map(|sh| sh.values.get(&p.name).copied())
                .max()
                .unwrap_or(lo.saturating_add(1024))
        })
        .max(lo);
    (div_ceil(lo, m), hi.div_euclid(m), m)
}

fn draw_param(task: &Task, p: &Param, shrink: u32, s: &mut Stream) -> i64 {
    if let Some(vals) = p.values.as_ref().filter(|v| !v.is_empty()) {
        return vals[s.below(vals.len() as u64) as usize];
    }
    let public: Vec<i64> = task
        .shapes
        .iter()
        .filter_map(|sh| sh.values.get(&p.name).copied())
        .collect();
    // Borrow a public value now and then: tied parameters (`K == 2 * N`) rarely come out of
    // independent draws.
    if !public.is_empty() && s.below(5) == 0 {
        return public[s.below(public.len() as u64) as usize];
    }
    let (klo, khi, m) = multiples(task, p);
    if klo > khi {
        return p.min.unwrap_or(1);
    }
    // Log-uniform in [max(klo, 1), khi'] where khi' shrinks toward klo as attempts fail.
    let base = klo.max(1);
    let span_log = ((khi.max(base) as f64).ln() - (base as f64).ln()) / 2f64.powi(shrink as i32);
    let top = ((base as f64).ln() + span_log).exp().floor() as i64;
    let top = top.clamp(base, khi.max(base));
    let mut k = match s.below(10) {
        0 => klo,
        1 => top,
        _ => {
            let x =
                (base as f64).ln() + s.uniform() * ((top as f64 + 1.0).ln() - (base as f64).ln());
            (x.exp().floor() as i64).clamp(base, top)
        }
    };
    // Awkward: odd most of the time, prime some of the time.
    match s.below(10) {
        0..=4 => {
            if k % 2 == 0 && k < top {
                k += 1;
            } else if k % 2 == 0 && k > klo {
                k -= 1;
            }
        }
        5..=7 => {
            if let Some(q) = next_prime(k).filter(|q| *q <= top) {
                k = q;
            }
        }
        _ => {}
    }
    (k.clamp(klo, khi)).saturating_mul(m)
}

fn div_ceil(a: i64, b: i64) -> i64 {
    let d = a.div_euclid(b);
    if d * b < a {
        d + 1
    } else {
        d
    }
}

fn next_prime(n: i64) -> Option<i64> {
    let mut c = n.max(2);
    for _ in 0..10_000 {
        if is_prime(c) {
            return Some(c);
        }
        c = c.checked_add(1)?;
    }
    None
}

fn is_prime(n: i64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn task(params: &str, constraints: &str, shapes: &str, tensors: &str) -> Task {
        let text = format!(
            "id = \"h\"\ntitle = \"t\"\ncategory = \"c\"\n{constraints}\n[params]\n{params}\n{shapes}\n{tensors}\n\
             [check]\nmetric = \"exact\"\n[roofline]\nbytes = \"0\"\nflops = \"0\"\npeak = \"fp32\"\n"
        );
        match Task::parse(Path::new("h/task.toml"), &text) {
            Ok(t) => t,
            Err(e) => panic!("{:?}\n{text}", e.diagnostics()),
        }
    }

    fn gemm() -> Task {
        task(
            "M = { min = 1, max = 8192 }\nK = { min = 64, max = 16384, multiple_of = 64 }\nN = { min = 1 }\nD = { values = [64, 128] }",
            "constraints = [\"N % 8 == 0 || M < 16\"]",
            "[[shapes]]\nname = \"a\"\nM = 4096\nK = 4096\nN = 4096\nD = 64\n",
            "[[inputs]]\nname = \"x\"\ndtype = \"bf16\"\nshape = [\"M\", \"K\"]\ninit = { dist = \"normal\" }\n\
             [[inputs]]\nname = \"w\"\ndtype = \"bf16\"\nshape = [\"K\", \"N\"]\ninit = { dist = \"normal\" }\n\
             [[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [\"M\", \"N\"]\n",
        )
    }

    #[test]
    fn shapes_are_legal_bounded_distinct_and_deterministic() {
        let t = gemm();
        let opts = HeldoutOptions {
            count: 40,
            ..HeldoutOptions::default()
        };
        let a = draw(&t, 11, &opts);
        assert_eq!(a.len(), 40);
        assert_eq!(a, draw(&t, 11, &opts));
        assert_ne!(a, draw(&t, 12, &opts));
        for s in &a {
            t.check_shape(s).unwrap();
            assert!(shape_bytes(&t, s).unwrap() <= 64 << 20, "{}", s.describe());
            assert!(s.name.starts_with("heldout-"));
        }
        for (i, s) in a.iter().enumerate() {
            assert!(a[i + 1..].iter().all(|o| o.values != s.values));
            assert!(t.shapes.iter().all(|p| p.values != s.values));
        }
        // Awkward values show up: odd M, and N that is neither a multiple of 8 (allowed when
        // M < 16) nor large.
        let odd_m = a.iter().filter(|s| s.values["M"] % 2 == 1).count();
        assert!(odd_m >= 15, "{odd_m} odd M of 40");
        assert!(a.iter().any(|s| s.values["N"] % 8 != 0));
        assert!(a.iter().all(|s| s.values["K"] % 64 == 0));
        assert!(a.iter().all(|s| [64, 128].contains(&s.values["D"])));
    }

    #[test]
    fn corners_reach_range_ends_and_powers_of_two_around_every_base() {
        let t = gemm();
        let c = corners(&t);
        assert_eq!(c, corners(&t));
        for (i, s) in c.iter().enumerate() {
            t.check_shape(s).unwrap();
            assert_eq!(s.name, format!("corner-{i}"));
            assert!(c[i + 1..].iter().all(|o| o.values != s.values));
            assert!(t.shapes.iter().all(|p| p.values != s.values));
        }
        let has = |m: i64, k: i64, n: i64, d: i64| {
            c.iter().any(|s| {
                s.values["M"] == m && s.values["K"] == k && s.values["N"] == n && s.values["D"] == d
            })
        };
        // One parameter moved from the public shape (M = K = N = 4096, D = 64)...
        assert!(has(8192, 4096, 4096, 64) && has(8185, 4096, 4096, 64));
        assert!(has(4095, 4096, 4096, 64) && has(4097, 4096, 4096, 64));
        assert!(has(4096, 16384, 4096, 64) && has(4096, 64, 4096, 64));
        assert!(has(4096, 4096, 4096, 128));
        // ... or from the all-minimum shape (N has no maximum: the largest public value).
        assert!(has(1, 64, 1, 64) && has(15, 64, 1, 64) && has(1, 64, 4096, 64));
        // M = 8192 with N = 1 breaks N % 8 == 0 || M < 16.
        assert!(!has(8192, 64, 1, 64) && !has(16, 64, 1, 64));
        // K moves in multiples of 64 only; the constraint N % 8 == 0 || M < 16 holds.
        assert!(c.iter().all(|s| s.values["K"] % 64 == 0));
        assert!(!has(4096, 4096, 4095, 64) && has(1, 64, 4095, 64));
        assert!(c.len() < 1000, "{}", c.len());

        // The corner no random draw finds: L at its top with B = H = 1.
        let t = task(
            "B = { min = 1, max = 1024 }\nH = { min = 1, max = 256 }\nL = { min = 1, max = 8192 }",
            "constraints = [\"B * H * L * L <= 4294967296\"]",
            "[[shapes]]\nname = \"a\"\nB = 8\nH = 16\nL = 2048\n",
            "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [\"B\", \"H\", \"L\", \"L\"]\ninit = { dist = \"normal\" }\n\
             [[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [\"B\", \"H\", \"L\", \"L\"]\n",
        );
        let c = corners(&t);
        for l in 8185..=8192 {
            assert!(
                c.iter()
                    .any(|s| s.values["B"] == 1 && s.values["H"] == 1 && s.values["L"] == l),
                "no B = H = 1, L = {l}"
            );
        }
    }

    #[test]
    fn tight_caps_shrink_sizes_and_impossible_ones_return_fewer() {
        let t = gemm();
        let small = HeldoutOptions {
            count: 5,
            max_bytes: 1 << 16,
            ..HeldoutOptions::default()
        };
        let a = draw(&t, 3, &small);
        assert_eq!(a.len(), 5);
        assert!(a.iter().all(|s| shape_bytes(&t, s).unwrap() <= 1 << 16));
        let none = HeldoutOptions {
            count: 3,
            max_bytes: 10,
            attempts: 300,
        };
        assert!(draw(&t, 3, &none).is_empty());
    }

    #[test]
    fn tied_parameters_are_found_through_public_values() {
        let t = task(
            "N = { min = 1, max = 4096 }\nK = { min = 1, max = 8192 }",
            "constraints = [\"K == 2 * N\"]",
            "[[shapes]]\nname = \"a\"\nN = 1024\nK = 2048\n[[shapes]]\nname = \"b\"\nN = 77\nK = 154\n",
            "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [\"K\"]\ninit = { dist = \"normal\" }\n\
             [[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [\"N\"]\n",
        );
        let a = draw(
            &t,
            5,
            &HeldoutOptions {
                count: 2,
                ..HeldoutOptions::default()
            },
        );
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|s| s.values["K"] == 2 * s.values["N"]));
    }

    #[test]
    fn primes() {
        assert_eq!(next_prime(0), Some(2));
        assert_eq!(next_prime(14), Some(17));
        assert!(is_prime(1021) && !is_prime(1023));
    }
}
