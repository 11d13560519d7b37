//! `ksmith bench [--suite seed] [--tasks a,b] [--candidate DIR ...] [--baseline torch]`: the
//! reference kernels (and candidates, timed interleaved with them) at every public shape,
//! against PyTorch eager and torch.compile on the same inputs, as % of speed-of-light, with
//! throttling and quarantine flags; printed as a table and recorded in the result store.
//!
//! The GPU work of each task runs in a `ksmith gpu serve` subprocess under a wall-clock limit,
//! so a kernel that faults or hangs costs that task, not the run. PyTorch baselines run in the
//! torch runner's own subprocess (bench-suite::torch) after the kernels.
//! Exit codes: 0 everything timed and re-validated; 1 a candidate failed its check, a shape
//! could not be timed or an output failed re-validation; 3 the harness could not run (no GPU).

use super::gpu::{new_gpu, open_gpu, results_dir};
use super::{Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK};
use anyhow::{bail, Context};
use bench_suite::store::{
    candidate_hash, EvalKey, NewCandidate, NewEvaluation, NewRun, NewTask, Origin, ShapeTiming,
    Store, Verdict as StoreVerdict,
};
use bench_suite::suite::{self, Entry, Suite, TaskDir};
use bench_suite::torch::{self, Mode, ModeResult, RunnerConfig, TorchJob};
use clap::Args;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use verifier::inputs::{generate_inputs, Variant};
use verifier::runtime::bench::{BenchCandidate, BenchReport, BenchRequest};
use verifier::runtime::calibrate::{gpu_key, load_calibration, sol, Calibration};
use verifier::task::Task;
use verifier::timing::{quarantine_reason, Protocol};

/// The protocol name results are stored under (a changed timing protocol gets a new name).
pub const BENCH_PROTOCOL: &str = "bench-v1";

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which tasks: `seed` (every task of the suite) or a category name
    #[arg(long, default_value = "seed", value_name = "SUITE")]
    pub suite: String,
    /// Only these tasks, comma-separated
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub tasks: Vec<String>,
    /// A candidate kernel (directory with kernel.cu and launch.toml), timed interleaved with
    /// the reference; repeatable; needs exactly one task in --tasks
    #[arg(long, value_name = "DIR")]
    pub candidate: Vec<PathBuf>,
    /// PyTorch baselines: torch (eager and torch.compile, when PyTorch imports) or none
    #[arg(long, default_value = "torch", value_name = "torch|none")]
    pub baseline: String,
    /// Only these public shapes, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub shapes: Vec<String>,
    /// Print one JSON object instead of the table
    #[arg(long)]
    pub json: bool,
    /// The result store [default: $KSMITH_DB or results/ksmith.db]
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Do not record the results in the store
    #[arg(long)]
    pub no_db: bool,
    /// Where calibrations are kept [default: results]
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Wall-clock limit per task, in seconds
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub timeout: u64,
}

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
    /// Candidates: reference / candidate, from the interleaved samples.
    pub vs_reference: Option<f64>,
    pub floor_ms: Option<f64>,
    pub sol_pct: Option<f64>,
    /// None: no telemetry.
    pub throttled: Option<bool>,
    pub quarantine: Option<String>,
    /// Why this row has no time, or why its last output failed re-validation.
    pub problem: Option<String>,
}

/// PyTorch's medians at one shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TorchTimes {
    pub eager_ms: Option<f64>,
    pub compile_ms: Option<f64>,
}

fn ratio(base: Option<f64>, t: Option<f64>) -> Option<f64> {
    match (base, t) {
        (Some(b), Some(t)) if t > 0.0 => Some(b / t),
        _ => None,
    }
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
                vs_reference,
                floor_ms: sol_result.as_ref().map(|x| x.floor_ms),
                sol_pct: sol_result.as_ref().map(|x| x.percent),
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

fn ms(v: Option<f64>) -> String {
    match v {
        Some(t) if t >= 1.0 => format!("{t:.3} ms"),
        Some(t) => format!("{:.2} us", t * 1e3),
        None => String::new(),
    }
}

fn times(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}x")).unwrap_or_default()
}

/// The table: task, shape, kernel, time, vs eager, vs compile, vs reference, SOL%, throttled,
/// note (quarantine or problem). Empty cells where nothing was measured.
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
        let note = match (&r.quarantine, &r.problem) {
            (Some(q), _) => format!("QUARANTINED: {q}"),
            (None, Some(p)) => p.clone(),
            _ => String::new(),
        };
        t.add_row(vec![
            r.task.clone(),
            r.shape.clone(),
            r.kernel.clone(),
            time,
            times(r.vs_eager),
            times(r.vs_compile),
            times(r.vs_reference),
            r.sol_pct.map(|p| format!("{p:.1}")).unwrap_or_default(),
            match r.throttled {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "?".into(),
            },
            note,
        ]);
    }
    t.to_string()
}

fn select_tasks<'a>(suite: &'a Suite, a: &BenchArgs) -> anyhow::Result<Vec<&'a TaskDir>> {
    let mut out = Vec::new();
    if !a.tasks.is_empty() {
        for id in &a.tasks {
            match suite.get(id) {
                Some(Entry::Ok(td)) => out.push(td.as_ref()),
                Some(Entry::Broken { diagnostics, .. }) => {
                    let d: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
                    bail!("task `{id}` is invalid:\n{}", d.join("\n"))
                }
                None => bail!(
                    "no task `{id}` in {} (known: {})",
                    suite.root.display(),
                    suite.ids().join(", ")
                ),
            }
        }
        return Ok(out);
    }
    for e in &suite.entries {
        if let Entry::Ok(td) = e {
            if a.suite == "seed" || td.task.category == a.suite {
                out.push(td.as_ref());
            }
        }
    }
    if out.is_empty() {
        bail!(
            "suite `{}` selects no valid task in {} (use `seed` for all, or a category name)",
            a.suite,
            suite.root.display()
        );
    }
    Ok(out)
}

fn candidates(a: &BenchArgs) -> anyhow::Result<Vec<BenchCandidate>> {
    if !a.candidate.is_empty() && a.tasks.len() != 1 {
        bail!("--candidate needs exactly one task in --tasks (a candidate implements one task)");
    }
    a.candidate
        .iter()
        .map(|dir| {
            let read = |f: &str| {
                let p = dir.join(f);
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
            };
            Ok(BenchCandidate {
                name: dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| dir.display().to_string()),
                source: read("kernel.cu")?,
                plan: read("launch.toml")?,
            })
        })
        .collect()
}

/// How a `ksmith gpu serve` child ended when it produced no report.
#[derive(Debug)]
pub(super) enum ChildFailure {
    /// The harness could not run (no GPU, no NVRTC, a broken request).
    Harness(String),
    /// The task's kernels failed the run (fault, hang, lost context).
    Task(String),
}

fn serve_command(g: &Global) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("locating the ksmith executable")?;
    let mut cmd = Command::new(exe);
    let mut flag = |name: &str, v: &Option<PathBuf>| {
        if let Some(v) = v {
            cmd.arg(name).arg(v);
        }
    };
    flag("--nvrtc", &g.nvrtc);
    flag("--cuda-include", &g.cuda_include);
    flag("--cache-dir", &g.cache_dir);
    if g.no_cache {
        cmd.arg("--no-cache");
    }
    for _ in 0..g.verbose {
        cmd.arg("-v");
    }
    cmd.args(["gpu", "serve"]);
    Ok(cmd)
}

pub(super) fn run_child(
    g: &Global,
    req: &BenchRequest,
    limit: Duration,
) -> anyhow::Result<Result<BenchReport, ChildFailure>> {
    let mut cmd = serve_command(g)?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("starting `ksmith gpu serve`")?;
    let body = serde_json::to_vec(req)?;
    if let Some(mut stdin) = child.stdin.take() {
        // The child reads everything before it starts; a failed write shows up as its exit.
        let _ = stdin.write_all(&body);
    }
    let mut stdout = child.stdout.take().context("the child has no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Ok(Err(ChildFailure::Task(format!(
            "did not finish within {} s and was killed",
            limit.as_secs()
        ))));
    };
    let text = String::from_utf8_lossy(&out);
    let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Ok(Err(ChildFailure::Task(format!(
            "the GPU process ended ({status}) without a reply"
        ))));
    };
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Err(ChildFailure::Harness(format!(
                "unreadable reply from the GPU process ({e}): {}",
                line.chars().take(200).collect::<String>()
            ))))
        }
    };
    if let Some(r) = v.get("report") {
        return Ok(serde_json::from_value::<BenchReport>(r.clone())
            .map_err(|e| ChildFailure::Harness(format!("malformed report: {e}"))));
    }
    let message = v
        .get("error")
        .and_then(|m| m.as_str())
        .unwrap_or("unknown error")
        .to_string();
    if v.get("harness").and_then(|h| h.as_bool()) == Some(true) {
        Ok(Err(ChildFailure::Harness(message)))
    } else {
        Ok(Err(ChildFailure::Task(message)))
    }
}

/// PyTorch eager and torch.compile at one shape on the timing pool's inputs. `Err(reason)`
/// when PyTorch cannot run here at all (the caller stops asking).
fn torch_times(
    td: &TaskDir,
    shape_name: &str,
    pool_sets: usize,
    seed: u64,
    protocol: &Protocol,
    l2_bytes: Option<u64>,
) -> Result<Result<TorchTimes, String>, String> {
    let task = &td.task;
    let Some(shape) = task.shape(shape_name) else {
        return Ok(Err(format!("no shape {shape_name}")));
    };
    let mut sets = Vec::new();
    for k in 0..pool_sets.max(1) {
        match generate_inputs(task, shape, seed + k as u64, Variant::Base) {
            Ok(s) => sets.push(s),
            Err(e) => return Ok(Err(e.to_string())),
        }
    }
    let mut job = match TorchJob::for_task(
        task,
        shape,
        &sets,
        vec![Mode::Eager, Mode::Compile],
        protocol.clone(),
    ) {
        Ok(j) => j,
        Err(e) => return Ok(Err(e.to_string())),
    };
    job.l2_bytes = l2_bytes;
    match torch::run(&RunnerConfig::default(), &job) {
        Ok(r) => {
            let median = |m: &Option<ModeResult<torch::Baseline>>| match m {
                Some(ModeResult::Ok(b)) => Some(b.summary.median_ms),
                _ => None,
            };
            Ok(Ok(TorchTimes {
                eager_ms: median(&r.eager),
                compile_ms: median(&r.compile),
            }))
        }
        Err(e) => match e.skip_reason() {
            Some(reason) => Err(reason),
            None => Ok(Err(e.to_string())),
        },
    }
}

fn shape_timings(rows: &[Row], task: &str, kernel: &str) -> Vec<ShapeTiming> {
    rows.iter()
        .filter(|r| r.task == task && r.kernel == kernel && r.median_ms.is_some())
        .map(|r| ShapeTiming {
            shape: r.shape.clone(),
            median_us: r.median_ms.unwrap_or(0.0) * 1e3,
            p20_us: r.p20_ms.unwrap_or(0.0) * 1e3,
            p80_us: r.p80_ms.unwrap_or(0.0) * 1e3,
            min_us: r.min_ms.unwrap_or(0.0) * 1e3,
            samples: r.samples as u32,
            reference_us: r
                .vs_reference
                .and_then(|s| r.median_ms.map(|m| m * s * 1e3)),
            eager_us: r.eager_ms.map(|m| m * 1e3),
            compile_us: r.compile_ms.map(|m| m * 1e3),
            floor_us: r.floor_ms.map(|m| m * 1e3),
        })
        .collect()
}

fn geomean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v.filter(|x| *x > 0.0 && x.is_finite()) {
        s += x.ln();
        n += 1;
    }
    (n > 0).then(|| (s / n as f64).exp())
}

struct Recorded<'a> {
    td: &'a TaskDir,
    report: &'a BenchReport,
    rows: &'a [Row],
    candidates: &'a [BenchCandidate],
}

fn store_results(
    store: &Store,
    gpu: &bench_suite::store::NewGpu,
    suite_name: &str,
    tasks: &[Recorded],
    config: serde_json::Value,
) -> anyhow::Result<String> {
    let run_name = format!(
        "bench-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    store.write(|tx| {
        let gpu_id = tx.upsert_gpu(gpu)?;
        let run = tx.create_run(&NewRun {
            name: run_name.clone(),
            kind: "bench".into(),
            agent: "reference".into(),
            suite: suite_name.into(),
            config: config.clone(),
            git_rev: String::new(),
        })?;
        for t in tasks {
            let task_id = tx.upsert_task(&NewTask {
                name: t.td.task.id.clone(),
                category: t.td.task.category.clone(),
                title: t.td.task.title.clone(),
                content_hash: t.td.content_hash.clone(),
                details: serde_json::json!({ "path": t.td.dir.display().to_string() }),
            })?;
            let mut kernels = vec![(
                "reference".to_string(),
                Origin::Reference,
                t.td.reference_source.clone(),
                std::fs::read_to_string(t.td.dir.join("reference.toml")).unwrap_or_default(),
            )];
            for c in t.candidates {
                kernels.push((
                    c.name.clone(),
                    Origin::Human,
                    c.source.clone(),
                    c.plan.clone(),
                ));
            }
            for (name, origin, source, plan) in kernels {
                let timings = shape_timings(t.rows, &t.td.task.id, &name);
                let status = t.report.candidates.iter().find(|c| c.name == name);
                let verdict = match status {
                    Some(c) if !c.timed => StoreVerdict::from_str_opt(c.verdict.kind())
                        .unwrap_or(StoreVerdict::RuntimeFault),
                    _ if timings.is_empty() => StoreVerdict::RuntimeFault,
                    _ => StoreVerdict::Correct,
                };
                let (cand_id, _) = tx.add_candidate(&NewCandidate {
                    run_id: run.id,
                    task_id,
                    origin,
                    source: source.clone(),
                    plan: plan.clone(),
                    generation: 0,
                    island: 0,
                    llm_call_id: None,
                    parents: Vec::new(),
                    notes: serde_json::json!({ "name": name }),
                })?;
                let mine: Vec<&Row> = t
                    .rows
                    .iter()
                    .filter(|r| r.task == t.td.task.id && r.kernel == name)
                    .collect();
                let quarantine = mine.iter().find_map(|r| r.quarantine.clone());
                let hash = candidate_hash(&source, &plan);
                tx.add_evaluation(&NewEvaluation {
                    candidate_id: cand_id,
                    gpu_id: Some(gpu_id),
                    cache_key: EvalKey {
                        candidate_hash: &hash,
                        task_hash: &t.td.content_hash,
                        gpu_key: &gpu.gpu_key,
                        protocol: BENCH_PROTOCOL,
                    }
                    .digest(),
                    protocol: BENCH_PROTOCOL.into(),
                    verdict,
                    details: serde_json::json!({
                        "rows": mine,
                        "verdict": status.map(|c| &c.verdict),
                        "log": t.report.log,
                    }),
                    compile_ms: None,
                    timings,
                    speedup_ref: geomean(mine.iter().filter_map(|r| r.vs_reference)),
                    speedup_eager: geomean(mine.iter().filter_map(|r| r.vs_eager)),
                    speedup_compile: geomean(mine.iter().filter_map(|r| r.vs_compile)),
                    sol_pct: geomean(mine.iter().filter_map(|r| r.sol_pct)),
                    quarantined: quarantine.is_some(),
                    quarantine_reason: quarantine,
                    cached_from: None,
                })?;
            }
        }
        Ok(())
    })?;
    Ok(run_name)
}

trait FromKind: Sized {
    fn from_str_opt(s: &str) -> Option<Self>;
}

impl FromKind for StoreVerdict {
    fn from_str_opt(s: &str) -> Option<StoreVerdict> {
        StoreVerdict::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

pub fn run(g: &Global, a: &BenchArgs) -> anyhow::Result<u8> {
    if a.baseline != "torch" && a.baseline != "none" {
        bail!("--baseline must be `torch` or `none`, not `{}`", a.baseline);
    }
    let root = suite::locate(g.tasks_dir.as_deref())?;
    let suite = Suite::discover(&root)?;
    let tasks = select_tasks(&suite, a)?;
    let cands = candidates(a)?;
    // The device's identity (for the calibration and the store); the context is released
    // before the GPU work starts in the subprocesses.
    let info = match open_gpu(a.json, "bench") {
        Ok(gpu) => gpu.info.clone(),
        Err(code) => return Ok(code),
    };
    let key = gpu_key(&info);
    let results = results_dir(a.results.as_deref());
    let cal = match load_calibration(&results, &key) {
        Ok(Some(c)) => Some(c),
        Ok(None) => {
            eprintln!(
                "note: no calibration for this GPU in {}: SOL% column empty (run `ksmith gpu calibrate`)",
                results.display()
            );
            None
        }
        Err(e) => {
            eprintln!("note: {e}: SOL% column empty");
            None
        }
    };
    let mut torch_skip: Option<String> = (a.baseline == "none").then(|| "--baseline none".into());
    let mut all_rows = Vec::new();
    let mut reports: Vec<(&TaskDir, BenchReport)> = Vec::new();
    let mut failed = false;
    let mut harness: Option<String> = None;
    let limit = Duration::from_secs(a.timeout.max(1));
    for td in &tasks {
        eprintln!("bench: {}", td.task.id);
        let req = BenchRequest {
            task_dir: std::fs::canonicalize(&td.dir).unwrap_or_else(|_| td.dir.clone()),
            candidates: cands.clone(),
            shapes: a.shapes.clone(),
            timing: Default::default(),
            check: Default::default(),
        };
        let report = match run_child(g, &req, limit)? {
            Ok(r) => r,
            Err(ChildFailure::Harness(m)) => {
                harness = Some(m);
                break;
            }
            Err(ChildFailure::Task(m)) => {
                failed = true;
                all_rows.push(Row {
                    task: td.task.id.clone(),
                    shape: "-".into(),
                    kernel: "-".into(),
                    problem: Some(m),
                    ..Row::default()
                });
                continue;
            }
        };
        let mut torch_times_by_shape = HashMap::new();
        for st in &report.shapes {
            if torch_skip.is_some() {
                break;
            }
            match torch_times(
                td,
                &st.shape,
                st.pool_sets,
                req.timing.seed,
                &req.timing.protocol,
                Some(info.l2_cache_bytes),
            ) {
                Ok(Ok(t)) => {
                    torch_times_by_shape.insert(st.shape.clone(), t);
                }
                Ok(Err(e)) => eprintln!("PyTorch baseline of {} at {}: {e}", td.task.id, st.shape),
                Err(reason) => {
                    eprintln!("PyTorch baselines skipped: {reason}");
                    torch_skip = Some(reason);
                }
            }
        }
        let rows = rows_for(&td.task, &report, &torch_times_by_shape, cal.as_ref());
        if rows.iter().any(|r| r.problem.is_some()) {
            failed = true;
        }
        all_rows.extend(rows.iter().cloned());
        reports.push((td, report));
    }
    if let Some(m) = &harness {
        if a.json {
            println!(
                "{}",
                serde_json::json!({ "error": m, "exit": EXIT_HARNESS })
            );
        } else {
            eprintln!("error: {m}");
        }
        return Ok(EXIT_HARNESS);
    }
    let stored = if a.no_db || reports.is_empty() {
        None
    } else {
        let url = Store::resolve_url(a.db.as_deref());
        let store = Store::open(&url).with_context(|| format!("opening the result store {url}"))?;
        let recorded: Vec<Recorded> = reports
            .iter()
            .map(|(td, r)| Recorded {
                td,
                report: r,
                rows: &all_rows,
                candidates: &cands,
            })
            .collect();
        let config = serde_json::json!({
            "suite": a.suite, "tasks": a.tasks, "shapes": a.shapes, "baseline": a.baseline,
            "protocol": BENCH_PROTOCOL,
        });
        let name = store_results(
            &store,
            &new_gpu(&info, cal.as_ref()),
            &a.suite,
            &recorded,
            config,
        )?;
        Some(format!(
            "{} run {name}",
            bench_suite::store::redact_url(&url)
        ))
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "gpu_key": key,
                "rows": all_rows,
                "pytorch_skipped": torch_skip,
                "calibrated": cal.is_some(),
                "reports": reports.iter().map(|(_, r)| r).collect::<Vec<_>>(),
                "stored": stored,
            }))?
        );
    } else {
        println!("{}", render_table(&all_rows));
        if let Some(s) = &stored {
            println!("recorded in {s}");
        }
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}
