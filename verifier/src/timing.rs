//! The statistics of the timing protocol (DESIGN §5), independent of the GPU so it can be tested
//! anywhere: sample summaries, the warm-up and adaptive stopping rules, side-by-side speedups,
//! speed-of-light and the quarantine rule.
//!
//! Order statistics are computed by hand: they are a few lines, and the statistics crates that
//! offer them (statrs) pull a linear-algebra stack into every build.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Summary of one set of per-call times, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub median_ms: f64,
    pub p20_ms: f64,
    pub p80_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub stddev_ms: f64,
    /// Relative standard error of the mean: stddev / sqrt(n) / mean.
    pub rse: f64,
}

/// Linear-interpolation quantile (the "type 7" definition NumPy and R use by default) of sorted
/// data; `q` in [0, 1].
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

impl Summary {
    /// `None` for an empty sample or one holding a non-finite or negative time (a timing bug
    /// that must not turn into a plausible number).
    pub fn of(samples_ms: &[f64]) -> Option<Summary> {
        if samples_ms.is_empty() || samples_ms.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return None;
        }
        let mut s = samples_ms.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let stddev = var.sqrt();
        let rse = if n > 1 && mean > 0.0 {
            stddev / (n as f64).sqrt() / mean
        } else {
            f64::INFINITY
        };
        Some(Summary {
            n,
            median_ms: quantile_sorted(&s, 0.5)?,
            p20_ms: quantile_sorted(&s, 0.2)?,
            p80_ms: quantile_sorted(&s, 0.8)?,
            min_ms: s[0],
            max_ms: s[n - 1],
            mean_ms: mean,
            stddev_ms: stddev,
            rse,
        })
    }
}

/// When to stop warming up and when to stop sampling.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Protocol {
    /// Warm up for at least this many calls...
    pub warmup_calls: usize,
    /// ...and at least this long.
    pub warmup_time: Duration,
    /// Never stop sampling before this many samples.
    pub min_samples: usize,
    pub max_samples: usize,
    /// Stop once the relative standard error falls below this.
    pub target_rse: f64,
    /// Stop sampling after this much wall time whatever the other rules say.
    pub time_cap: Duration,
    /// Calls shorter than this are also timed as a CUDA graph, amortizing launch overhead.
    pub graph_below: Duration,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            warmup_calls: 10,
            warmup_time: Duration::from_millis(25),
            min_samples: 10,
            max_samples: 100,
            target_rse: 0.005,
            time_cap: Duration::from_secs(10),
            graph_below: Duration::from_micros(20),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    MaxSamples,
    Converged,
    TimeCap,
}

impl Protocol {
    pub fn warm_enough(&self, calls: usize, elapsed: Duration) -> bool {
        calls >= self.warmup_calls && elapsed >= self.warmup_time
    }

    /// Whether sampling should stop, and why.
    pub fn stop(&self, samples_ms: &[f64], elapsed: Duration) -> Option<StopReason> {
        if samples_ms.len() >= self.max_samples {
            return Some(StopReason::MaxSamples);
        }
        if elapsed >= self.time_cap && !samples_ms.is_empty() {
            return Some(StopReason::TimeCap);
        }
        if samples_ms.len() >= self.min_samples {
            if let Some(s) = Summary::of(samples_ms) {
                if s.rse < self.target_rse {
                    return Some(StopReason::Converged);
                }
            }
        }
        None
    }
}

/// A speedup measured side by side: candidate and baseline timed interleaved (A B A B) in one
/// process, so slow drifts of clock or temperature hit both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speedup {
    /// median(baseline) / median(candidate): > 1 means the candidate is faster.
    pub ratio_of_medians: f64,
    /// Median of the per-pair ratios baseline[i] / candidate[i]; robust to drift between pairs.
    pub median_of_pair_ratios: f64,
    pub pairs: usize,
}

pub fn speedup(candidate_ms: &[f64], baseline_ms: &[f64]) -> Option<Speedup> {
    let c = Summary::of(candidate_ms)?;
    let b = Summary::of(baseline_ms)?;
    if c.median_ms <= 0.0 {
        return None;
    }
    let mut ratios: Vec<f64> = candidate_ms
        .iter()
        .zip(baseline_ms)
        .filter(|(c, _)| **c > 0.0)
        .map(|(c, b)| b / c)
        .collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    Some(Speedup {
        ratio_of_medians: b.median_ms / c.median_ms,
        median_of_pair_ratios: quantile_sorted(&ratios, 0.5)?,
        pairs: ratios.len(),
    })
}

/// The device's measured rates (from `ksmith gpu calibrate`) that a roofline needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rates {
    /// Bytes per second of device-memory copy bandwidth.
    pub bytes_per_s: f64,
    /// Operations per second of the peak the task names.
    pub ops_per_s: f64,
}

/// The fastest any kernel could be: `max(bytes / bandwidth, flops / peak)`, in milliseconds.
pub fn floor_ms(bytes: i64, flops: i64, rates: &Rates) -> Option<f64> {
    if bytes < 0 || flops < 0 || rates.bytes_per_s <= 0.0 || rates.ops_per_s <= 0.0 {
        return None;
    }
    let t = (bytes as f64 / rates.bytes_per_s).max(flops as f64 / rates.ops_per_s);
    Some(t * 1e3)
}

/// Which side of the roofline sets the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// Moving the bytes takes at least as long as the arithmetic.
    Memory,
    Compute,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bound::Memory => "memory",
            Bound::Compute => "compute",
        })
    }
}

/// The term of [`floor_ms`] that is the larger; a tie counts as memory-bound. `None` where
/// [`floor_ms`] is.
pub fn bound(bytes: i64, flops: i64, rates: &Rates) -> Option<Bound> {
    floor_ms(bytes, flops, rates)?;
    Some(
        if bytes as f64 / rates.bytes_per_s >= flops as f64 / rates.ops_per_s {
            Bound::Memory
        } else {
            Bound::Compute
        },
    )
}

/// The highest percent of speed-of-light a call can reach when each launch costs at least
/// `launch_ms` of the timed window on top of its work: with one launch (a fully fused kernel),
/// `100 * floor / (floor + launch_ms)`. For a floor of a few microseconds this is well under
/// 100, whatever the kernel does: such a shape measures launch latency, not bandwidth.
pub fn sol_ceiling(floor_ms: f64, launch_ms: f64) -> Option<f64> {
    (floor_ms > 0.0 && launch_ms >= 0.0 && floor_ms.is_finite() && launch_ms.is_finite())
        .then(|| 100.0 * floor_ms / (floor_ms + launch_ms))
}

/// Percent of speed-of-light: 100 means the kernel runs at its roofline floor.
pub fn sol_percent(floor_ms: f64, measured_ms: f64) -> Option<f64> {
    (measured_ms > 0.0 && floor_ms >= 0.0).then(|| 100.0 * floor_ms / measured_ms)
}

/// Results that are too good to rank without a human look.
pub const MAX_PLAUSIBLE_SPEEDUP: f64 = 10.0;

/// Why a result is quarantined (never ranked until reviewed), if it is.
pub fn quarantine_reason(
    measured_ms: f64,
    floor_ms: Option<f64>,
    speedup_vs_baseline: Option<f64>,
) -> Option<String> {
    if let Some(f) = floor_ms {
        if measured_ms < f {
            return Some(format!(
                "faster than its speed-of-light floor ({measured_ms:.4} ms < {f:.4} ms): the kernel cannot have done the declared work"
            ));
        }
    }
    if let Some(s) = speedup_vs_baseline {
        if s > MAX_PLAUSIBLE_SPEEDUP {
            return Some(format!(
                "{s:.1}x faster than its baseline (more than {MAX_PLAUSIBLE_SPEEDUP}x): review before ranking"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        let s = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(quantile_sorted(&s, 0.5), Some(3.0));
        // numpy.percentile([1,2,3,4,10], 20) == 1.8; 80 -> 5.2
        assert!((quantile_sorted(&s, 0.2).unwrap() - 1.8).abs() < 1e-12);
        assert!((quantile_sorted(&s, 0.8).unwrap() - 5.2).abs() < 1e-12);
        assert_eq!(quantile_sorted(&[], 0.5), None);
        assert_eq!(quantile_sorted(&s, 1.5), None);
    }

    #[test]
    fn summary_of_samples() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.n, s.min_ms, s.max_ms), (4, 1.0, 4.0));
        assert_eq!(s.median_ms, 2.5);
        assert!((s.mean_ms - 2.5).abs() < 1e-12);
        assert!((s.stddev_ms - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
        assert!(Summary::of(&[1.0, -2.0]).is_none());
        assert!(Summary::of(&[1.0]).unwrap().rse.is_infinite());
    }

    #[test]
    fn stopping_rules() {
        let p = Protocol::default();
        let steady = vec![1.0; 10];
        assert_eq!(p.stop(&steady, Duration::ZERO), Some(StopReason::Converged));
        assert_eq!(
            p.stop(&steady[..9], Duration::ZERO),
            None,
            "min_samples first"
        );
        let noisy: Vec<f64> = (0..50)
            .map(|i| if i % 2 == 0 { 1.0 } else { 2.0 })
            .collect();
        assert_eq!(p.stop(&noisy, Duration::ZERO), None);
        assert_eq!(
            p.stop(&noisy, Duration::from_secs(11)),
            Some(StopReason::TimeCap)
        );
        let many: Vec<f64> = (0..100).map(|i| 1.0 + (i % 7) as f64).collect();
        assert_eq!(p.stop(&many, Duration::ZERO), Some(StopReason::MaxSamples));
        assert!(!p.warm_enough(9, Duration::from_secs(1)));
        assert!(!p.warm_enough(100, Duration::from_millis(1)));
        assert!(p.warm_enough(10, Duration::from_millis(25)));
    }

    #[test]
    fn side_by_side_speedup() {
        let cand = [1.0, 1.1, 0.9, 1.0];
        let base = [2.0, 2.2, 1.8, 2.0];
        let s = speedup(&cand, &base).unwrap();
        assert!((s.ratio_of_medians - 2.0).abs() < 1e-12);
        assert!((s.median_of_pair_ratios - 2.0).abs() < 1e-12);
        assert_eq!(s.pairs, 4);
        assert!(speedup(&[], &base).is_none());
    }

    #[test]
    fn roofline_and_quarantine() {
        // 3.35 TB/s and 989 TFLOP/s: 1 GB of traffic takes ~0.2985 ms.
        let r = Rates {
            bytes_per_s: 3.35e12,
            ops_per_s: 989e12,
        };
        let f = floor_ms(1_000_000_000, 1_000_000, &r).unwrap();
        assert!((f - 1e9 / 3.35e12 * 1e3).abs() < 1e-9);
        // Compute-bound: 2*8192^3 flops.
        let g = floor_ms(3 * 2 * 8192 * 8192, 2 * 8192 * 8192 * 8192, &r).unwrap();
        assert!((g - 2.0 * 8192f64.powi(3) / 989e12 * 1e3).abs() < 1e-9);
        assert_eq!(sol_percent(0.5, 1.0), Some(50.0));
        assert!(floor_ms(-1, 0, &r).is_none());
        assert_eq!(bound(1_000_000_000, 1_000_000, &r), Some(Bound::Memory));
        assert_eq!(
            bound(3 * 2 * 8192 * 8192, 2 * 8192 * 8192 * 8192, &r),
            Some(Bound::Compute)
        );
        // Equal times: memory.
        let even = Rates {
            bytes_per_s: 1e12,
            ops_per_s: 1e12,
        };
        assert_eq!(bound(5, 5, &even), Some(Bound::Memory));
        assert_eq!(bound(-1, 5, &even), None);
        assert_eq!(Bound::Compute.to_string(), "compute");
        assert_eq!(serde_json::to_string(&Bound::Memory).unwrap(), "\"memory\"");
        // A 0.4 us floor behind a 2 us launch: at most a sixth of speed-of-light.
        let c = sol_ceiling(0.0004, 0.002).unwrap();
        assert!((c - 100.0 / 6.0).abs() < 1e-9, "{c}");
        assert_eq!(sol_ceiling(1.0, 0.0), Some(100.0));
        assert_eq!(sol_ceiling(0.0, 0.002), None);
        assert_eq!(sol_ceiling(1.0, f64::NAN), None);
        assert!(quarantine_reason(0.1, Some(0.2), None)
            .unwrap()
            .contains("floor"));
        assert!(quarantine_reason(1.0, Some(0.2), Some(12.0))
            .unwrap()
            .contains("12.0x"));
        assert!(
            quarantine_reason(1.0, Some(0.2), Some(10.0)).is_none(),
            "strictly more than 10x"
        );
        assert!(quarantine_reason(1.0, None, None).is_none());
    }
}
