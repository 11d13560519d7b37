//! The rows of `ksmith bench`'s table, built from a task's [`BenchReport`] and PyTorch's times,
//! and their rendering: the full table (every kernel at every shape) and the per-task summary
//! on each task's realistic shape.

use serde::Serialize;
use std::collections::HashMap;
use verifier::runtime::bench::BenchReport;
use verifier::runtime::calibrate::{sol, Calibration};
use verifier::task::Task;
use verifier::timing::{quarantine_reason, sol_ceiling, Bound};

/// One line of the table: one kernel at one shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    pub task: String,
    pub shape: String,
    pub kernel: String,
    pub median_ms: Option<f64>,
    pub p20_ms: Option<f64>,
    pub p80_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub samples: usize,
    pub amortized_ms: Option<f64>,
    pub eager_ms: Option<f64>,
    pub compile_ms: Option<f64>,
    /// eager / this kernel (> 1: faster than PyTorch eager).
    pub vs_eager: Option<f64>,
    pub vs_compile: Option<f64>,
    /// The same ratios between CUDA-graph amortized times (short calls only): the comparison
    /// without launch overhead on either side.
    pub vs_eager_amortized: Option<f64>,
    pub vs_compile_amortized: Option<f64>,
    /// Candidates: reference / candidate, from the interleaved samples.
    pub vs_reference: Option<f64>,
    pub floor_ms: Option<f64>,
    pub sol_pct: Option<f64>,
    /// Which roofline term sets the floor at this shape on this GPU.
    pub bound: Option<Bound>,
    /// The most SOL% any kernel with a single launch can show at this shape, given the
    /// calibrated launch overhead (`None` without it).
    pub sol_ceiling_pct: Option<f64>,
    /// None: no telemetry.
    pub throttled: Option<bool>,
    pub quarantine: Option<String>,
    /// Why this row has no time, or why its last output failed re-validation.
    pub problem: Option<String>,
}

/// PyTorch's medians at one shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TorchTimes {
    pub eager_ms: Option<f64>,
    pub compile_ms: Option<f64>,
    /// Per-call times from CUDA-graph replays, for calls under the graph threshold.
    pub eager_amortized_ms: Option<f64>,
    pub compile_amortized_ms: Option<f64>,
}

/// `base / t`: how many times faster than `base` a time `t` is; `None` when either is missing
/// or not a positive finite number.
pub fn ratio(base: Option<f64>, t: Option<f64>) -> Option<f64> {
    match (base, t) {
        (Some(b), Some(t)) if t > 0.0 && b > 0.0 && b.is_finite() && t.is_finite() => Some(b / t),
        _ => None,
    }
}

/// Geometric mean of the positive finite values; `None` when there are none.
pub fn geomean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v.filter(|x| *x > 0.0 && x.is_finite()) {
        s += x.ln();
        n += 1;
    }
    (n > 0).then(|| (s / n as f64).exp())
}

/// The table's rows for one task's report.
pub fn rows_for(
    task: &Task,
    report: &BenchReport,
    torch: &HashMap<String, TorchTimes>,
    cal: Option<&Calibration>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for st in &report.shapes {
        let shape = task.shape(&st.shape);
        let tt = torch.get(&st.shape).cloned().unwrap_or_default();
        let throttled = st.telemetry.throttled();
        for (i, s) in st.subjects.iter().enumerate() {
            let median = s.summary.median_ms;
            let sol_result = match (shape, cal) {
                (Some(sh), Some(c)) => sol(task, sh, c, median).ok(),
                _ => None,
            };
            // Subject 0 is the reference; speedups[i - 1] is subject i's over it.
            let vs_reference = if i == 0 {
                None
            } else {
                st.speedups
                    .get(i - 1)
                    .and_then(|s| s.as_ref())
                    .map(|s| s.ratio_of_medians)
            };
            let vs_eager = ratio(tt.eager_ms, Some(median));
            let baseline_speedup = if i == 0 { vs_eager } else { vs_reference };
            rows.push(Row {
                task: task.id.clone(),
                shape: st.shape.clone(),
                kernel: s.name.clone(),
                median_ms: Some(median),
                p20_ms: Some(s.summary.p20_ms),
                p80_ms: Some(s.summary.p80_ms),
                min_ms: Some(s.summary.min_ms),
                samples: s.summary.n,
                amortized_ms: s.amortized_ms,
                eager_ms: tt.eager_ms,
                compile_ms: tt.compile_ms,
                vs_eager,
                vs_compile: ratio(tt.compile_ms, Some(median)),
                vs_eager_amortized: ratio(tt.eager_amortized_ms, s.amortized_ms),
                vs_compile_amortized: ratio(tt.compile_amortized_ms, s.amortized_ms),
                vs_reference,
                floor_ms: sol_result.as_ref().map(|x| x.floor_ms),
                sol_pct: sol_result.as_ref().map(|x| x.percent),
                bound: sol_result.as_ref().map(|x| x.bound),
                sol_ceiling_pct: match (&sol_result, cal.and_then(|c| c.launch.as_ref())) {
                    (Some(x), Some(l)) => sol_ceiling(x.floor_ms, l.median_ms),
                    _ => None,
                },
                throttled: throttled.map(|t| t || s.throttled_samples > 0),
                quarantine: quarantine_reason(
                    median,
                    sol_result.as_ref().map(|x| x.floor_ms),
                    baseline_speedup,
                ),
                problem: s
                    .revalidation_failure
                    .as_ref()
                    .map(|f| format!("re-validation failed: {f}")),
            });
        }
    }
    for f in &report.failures {
        rows.push(Row {
            task: task.id.clone(),
            shape: f.shape.clone(),
            kernel: f
                .subject
                .and_then(|i| report.subjects.get(i).cloned())
                .unwrap_or_else(|| "-".into()),
            problem: Some(f.message.clone()),
            ..Row::default()
        });
    }
    for c in report.candidates.iter().filter(|c| !c.timed) {
        rows.push(Row {
            task: task.id.clone(),
            shape: "-".into(),
            kernel: c.name.clone(),
            problem: Some(format!("not timed: {}", c.verdict.kind())),
            ..Row::default()
        });
    }
    rows
}

/// A row for a task whose GPU process produced no report at all.
pub fn task_failure_row(task: &str, message: &str) -> Row {
    Row {
        task: task.to_string(),
        shape: "-".into(),
        kernel: "-".into(),
        problem: Some(message.to_string()),
        ..Row::default()
    }
}

/// `1.234 ms` from 1 ms up, `56.78 us` below.
pub fn ms(v: Option<f64>) -> String {
    match v {
        Some(t) if t >= 1.0 => format!("{t:.3} ms"),
        Some(t) => format!("{:.2} us", t * 1e3),
        None => String::new(),
    }
}

fn times(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}x")).unwrap_or_default()
}

/// `3.00x`, and `3.00x (2.10x amortized)` where both sides have a CUDA-graph time.
fn times_amortized(v: Option<f64>, amortized: Option<f64>) -> String {
    match amortized {
        Some(a) if v.is_some() => format!("{} ({a:.2}x amortized)", times(v)),
        _ => times(v),
    }
}

fn throttle_cell(t: Option<bool>) -> String {
    match t {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "?".into(),
    }
}

fn note(r: &Row) -> String {
    match (&r.quarantine, &r.problem) {
        (Some(q), _) => format!("QUARANTINED: {q}"),
        (None, Some(p)) => p.clone(),
        _ => String::new(),
    }
}

/// The table: task, shape, kernel, time, vs eager, vs compile, vs reference, SOL%, throttled,
/// note (quarantine or problem). Empty cells where nothing was measured; `?` under throttled
/// when no telemetry could be read.
pub fn render_table(rows: &[Row]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header(vec![
        "task",
        "shape",
        "kernel",
        "time (median)",
        "vs eager",
        "vs compile",
        "vs ref",
        "SOL%",
        "throttled",
        "note",
    ]);
    for r in rows {
        let mut time = ms(r.median_ms);
        if let Some(a) = r.amortized_ms {
            time.push_str(&format!(" ({} amortized)", ms(Some(a))));
        }
        t.add_row(vec![
            r.task.clone(),
            r.shape.clone(),
            r.kernel.clone(),
            time,
            times_amortized(r.vs_eager, r.vs_eager_amortized),
            times_amortized(r.vs_compile, r.vs_compile_amortized),
            times(r.vs_reference),
            r.sol_pct.map(|p| format!("{p:.1}")).unwrap_or_default(),
            throttle_cell(r.throttled),
            note(r),
        ]);
    }
    t.to_string()
}

/// Per task, the timed rows at its realistic shape (every kernel), in the order of `tasks`.
/// `realistic` maps a task id to its realistic shape's name.
pub fn summary_rows<'a>(
    rows: &'a [Row],
    tasks: &[String],
    realistic: &HashMap<String, String>,
) -> Vec<&'a Row> {
    let mut out = Vec::new();
    for t in tasks {
        let Some(shape) = realistic.get(t) else {
            continue;
        };
        out.extend(
            rows.iter()
                .filter(|r| &r.task == t && &r.shape == shape && r.median_ms.is_some()),
        );
    }
    out
}

/// Geometric means over summary rows of one kernel kind (`reference` or the candidates).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub tasks: usize,
    pub geomean_vs_eager: Option<f64>,
    pub geomean_vs_compile: Option<f64>,
    pub geomean_sol_pct: Option<f64>,
    pub throttled: usize,
    pub quarantined: usize,
    /// Rows whose floor is set by memory traffic.
    pub memory_bound: usize,
    /// Of those, the ones at or above [`MEMORY_BOUND_TARGET_PCT`] of speed-of-light.
    pub memory_bound_on_target: usize,
    /// The others, slowest first.
    pub memory_bound_short: Vec<Short>,
}

/// The speed-of-light a memory-bound kernel is expected to reach on its realistic shape
/// (issues #7 and #8 set it for the references).
pub const MEMORY_BOUND_TARGET_PCT: f64 = 50.0;

/// A memory-bound row under the target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Short {
    pub task: String,
    pub sol_pct: f64,
    pub sol_ceiling_pct: Option<f64>,
    /// Below the target even with nothing but one launch: the shape measures launch latency.
    /// Serialized so readers of the JSON (scripts/gpu-check.sh) need not know the target.
    pub launch_bound: bool,
}

pub fn totals(rows: &[&Row]) -> Totals {
    let memory: Vec<&&Row> = rows
        .iter()
        .filter(|r| r.bound == Some(Bound::Memory) && r.sol_pct.is_some())
        .collect();
    let mut short: Vec<Short> = memory
        .iter()
        .filter_map(|r| {
            let p = r.sol_pct?;
            (p < MEMORY_BOUND_TARGET_PCT).then(|| Short {
                task: r.task.clone(),
                sol_pct: p,
                sol_ceiling_pct: r.sol_ceiling_pct,
                launch_bound: r
                    .sol_ceiling_pct
                    .is_some_and(|c| c < MEMORY_BOUND_TARGET_PCT),
            })
        })
        .collect();
    short.sort_by(|a, b| a.sol_pct.total_cmp(&b.sol_pct));
    Totals {
        tasks: rows.len(),
        geomean_vs_eager: geomean(rows.iter().filter_map(|r| r.vs_eager)),
        geomean_vs_compile: geomean(rows.iter().filter_map(|r| r.vs_compile)),
        geomean_sol_pct: geomean(rows.iter().filter_map(|r| r.sol_pct)),
        throttled: rows.iter().filter(|r| r.throttled == Some(true)).count(),
        quarantined: rows.iter().filter(|r| r.quarantine.is_some()).count(),
        memory_bound: memory.len(),
        memory_bound_on_target: memory.len() - short.len(),
        memory_bound_short: short,
    }
}

/// `memory-bound at >= 50% SOL: 18 of 20; below: a 31.0% (ceiling 95.1%), b 8.0% (ceiling
/// 16.7%: launch-bound)`; `None` when no row is memory-bound.
pub fn memory_bound_line(t: &Totals) -> Option<String> {
    if t.memory_bound == 0 {
        return None;
    }
    let mut line = format!(
        "memory-bound at >= {MEMORY_BOUND_TARGET_PCT:.0}% SOL: {} of {}",
        t.memory_bound_on_target, t.memory_bound
    );
    if !t.memory_bound_short.is_empty() {
        let below: Vec<String> = t
            .memory_bound_short
            .iter()
            .map(|s| {
                let ceiling = match s.sol_ceiling_pct {
                    Some(c) if s.launch_bound => format!(" (ceiling {c:.1}%: launch-bound)"),
                    Some(c) => format!(" (ceiling {c:.1}%)"),
                    None => String::new(),
                };
                format!("{} {:.1}%{ceiling}", s.task, s.sol_pct)
            })
            .collect();
        line.push_str(&format!("; below: {}", below.join(", ")));
    }
    Some(line)
}

/// The per-task summary on realistic shapes, and a geometric-mean line under it.
pub fn render_summary(rows: &[&Row]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header(vec![
        "task",
        "realistic shape",
        "kernel",
        "time",
        "vs eager",
        "vs compile",
        "SOL%",
        "bound",
        "throttled",
    ]);
    for r in rows {
        t.add_row(vec![
            r.task.clone(),
            r.shape.clone(),
            r.kernel.clone(),
            ms(r.median_ms),
            times(r.vs_eager),
            times(r.vs_compile),
            r.sol_pct.map(|p| format!("{p:.1}")).unwrap_or_default(),
            r.bound.map(|b| b.to_string()).unwrap_or_default(),
            throttle_cell(r.throttled),
        ]);
    }
    let refs: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| r.kernel == "reference")
        .collect();
    let tot = totals(&refs);
    let g = |v: Option<f64>, unit: &str| {
        v.map(|x| format!("{x:.2}{unit}"))
            .unwrap_or_else(|| "n/a".into())
    };
    let mut out = format!(
        "{t}\nreference kernels over {} tasks: geomean {} vs eager, {} vs compile, geomean SOL {}; {} throttled, {} quarantined",
        tot.tasks,
        g(tot.geomean_vs_eager, "x"),
        g(tot.geomean_vs_compile, "x"),
        g(tot.geomean_sol_pct, "%"),
        tot.throttled,
        tot.quarantined
    );
    if let Some(line) = memory_bound_line(&tot) {
        out.push_str(&format!("\nreference kernels {line}"));
    }
    out
}
