//! The numbers of a report, as pure functions over per-task outcomes.
//!
//! fast_p follows KernelBench (`score.py::fastp`): fast_p = (1/N) · Σ 1[correct_i ∧ speedup_i > p]
//! where N counts every task of the run — failures included — and the comparison is strict.
//! A correct kernel whose speedup against a baseline was not measured (no PyTorch for eager /
//! torch.compile) does not count as faster than anything against that baseline.

/// The p values every report shows.
pub const HEADLINE_P: [f64; 4] = [0.0, 1.0, 1.5, 2.0];

/// One task's outcome against one baseline: whether it has a correct kernel and, if measured,
/// that kernel's speedup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub correct: bool,
    pub speedup: Option<f64>,
}

/// fast_p over `outcomes` (one per task; N = outcomes.len()). 0 for an empty run.
pub fn fast_p(outcomes: &[Outcome], p: f64) -> f64 {
    if outcomes.is_empty() {
        return 0.0;
    }
    let hits = outcomes
        .iter()
        .filter(|o| o.correct && o.speedup.is_some_and(|s| s > p))
        .count();
    hits as f64 / outcomes.len() as f64
}

/// Geometric mean of the positive, finite values; None when there are none.
pub fn geomean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut n = 0usize;
    let mut log_sum = 0.0;
    for v in values {
        if v > 0.0 && v.is_finite() {
            n += 1;
            log_sum += v.ln();
        }
    }
    (n > 0).then(|| (log_sum / n as f64).exp())
}

/// Median of finite values; None for none.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Speed-of-light histogram: ten 10-point bins from 0 to 100 % and one for "over 100 %"
/// (which only quarantined or mis-calibrated results can reach).
pub fn sol_histogram(values: impl IntoIterator<Item = f64>) -> Vec<(String, usize)> {
    let mut bins: Vec<(String, usize)> = (0..10)
        .map(|i| (format!("{}–{}", i * 10, i * 10 + 10), 0))
        .collect();
    bins.push(("> 100".to_string(), 0));
    for v in values {
        if !v.is_finite() || v < 0.0 {
            continue;
        }
        let idx = if v > 100.0 {
            10
        } else {
            // 100 % exactly belongs to the last regular bin.
            ((v / 10.0).floor() as usize).min(9)
        };
        bins[idx].1 += 1;
    }
    bins
}

/// The p values at which fast_p changes (each measured speedup), plus 0 and a margin past the
/// largest: enough points to draw the step curve of fast_p over p exactly.
pub fn fast_p_curve(outcomes: &[Outcome]) -> Vec<(f64, f64)> {
    let mut ps: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.correct)
        .filter_map(|o| o.speedup)
        .filter(|s| s.is_finite() && *s > 0.0)
        .collect();
    ps.sort_by(f64::total_cmp);
    ps.dedup();
    let max = ps.last().copied().unwrap_or(2.0).max(2.0);
    let mut xs = vec![0.0];
    xs.extend(ps.iter().copied());
    xs.push(max * 1.1);
    xs.into_iter().map(|p| (p, fast_p(outcomes, p))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(correct: bool, s: Option<f64>) -> Outcome {
        Outcome {
            correct,
            speedup: s,
        }
    }

    #[test]
    fn fast_p_counts_failures_in_n_and_is_strict() {
        let runs = [
            o(true, Some(1.0)), // exactly 1: not > 1
            o(true, Some(1.5)), // exactly 1.5: not > 1.5
            o(true, Some(2.5)),
            o(false, Some(9.0)), // fast but wrong: never counts
            o(false, None),      // failed to compile
            o(true, None),       // correct, baseline not measured
        ];
        assert_eq!(fast_p(&runs, 0.0), 3.0 / 6.0);
        assert_eq!(fast_p(&runs, 1.0), 2.0 / 6.0);
        assert_eq!(fast_p(&runs, 1.5), 1.0 / 6.0);
        assert_eq!(fast_p(&runs, 2.0), 1.0 / 6.0);
        assert_eq!(fast_p(&runs, 2.5), 0.0);
        assert_eq!(fast_p(&[], 1.0), 0.0);
    }

    #[test]
    fn geomean_and_median() {
        let g = geomean([1.0, 4.0]).expect("some");
        assert!((g - 2.0).abs() < 1e-12);
        assert_eq!(geomean([0.0, -1.0, f64::NAN]), None);
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn sol_bins_edges() {
        let h = sol_histogram([0.0, 9.99, 10.0, 99.0, 100.0, 100.5, -3.0, f64::NAN]);
        assert_eq!(h.len(), 11);
        assert_eq!(h[0].1, 2);
        assert_eq!(h[1].1, 1);
        assert_eq!(h[9].1, 2);
        assert_eq!(h[10].1, 1);
    }

    #[test]
    fn curve_steps_at_each_speedup() {
        let runs = [o(true, Some(1.2)), o(true, Some(3.0)), o(false, None)];
        let c = fast_p_curve(&runs);
        assert_eq!(c[0], (0.0, 2.0 / 3.0));
        assert_eq!(c[1], (1.2, 1.0 / 3.0));
        assert_eq!(c[2], (3.0, 0.0));
        assert!((c[3].0 - 3.3).abs() < 1e-12);
    }
}
