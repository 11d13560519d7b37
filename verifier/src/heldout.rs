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
                name: format!("heldout-{k}"),
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
    let m = p.multiple_of.filter(|m| *m > 0).unwrap_or(1);
    let lo = p.min.unwrap_or(1);
    // Without a declared maximum, stay within the largest public value (and a bit above the
    // minimum when there are none).
    let hi = p
        .max
        .unwrap_or_else(|| {
            public
                .iter()
                .copied()
                .max()
                .unwrap_or(lo.saturating_add(1024))
        })
        .max(lo);
    let klo = div_ceil(lo, m);
    let khi = hi.div_euclid(m);
    if klo > khi {
        return lo;
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
