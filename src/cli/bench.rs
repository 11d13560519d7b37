//! `ksmith bench [--suite seed] [--tasks a,b] [--shapes realistic] [--candidate DIR ...]
//! [--baseline torch|eager|none]`: the reference kernels (and candidates, timed interleaved with
//! them) at the chosen public shapes, against PyTorch eager and torch.compile on the same
//! inputs, as % of speed-of-light, with throttling and quarantine flags; printed as a table
//! plus a per-task summary on each task's realistic shape, and recorded in the result store.
//!
//! The GPU work of each task runs in a `ksmith gpu serve` subprocess under a wall-clock limit,
//! so a kernel that faults or hangs costs that task, not the run. With several GPUs (`--gpus`,
//! default: every GPU of GPU 0's model) tasks are spread over them, one task per GPU at a time,
//! each GPU with its own GPU processes and PyTorch runner. PyTorch baselines run in the
//! torch runner's own subprocess (bench-suite::torch) after the kernels, one per shape;
//! torch.compile costs tens of seconds per shape, so by default it runs only on each task's
//! realistic shape (`--compile-shapes all` for every timed shape).
//! Exit codes: 0 everything timed and re-validated; 1 a candidate failed its check, a shape
//! could not be timed or an output failed re-validation; 2 bad arguments (unknown task or
//! shape, unreadable candidate); 3 the harness could not run (no GPU, no NVRTC).

mod child;
mod record;
pub(crate) mod rows;
pub(crate) mod shapes;
#[cfg(test)]
mod tests;

pub use child::{run_child_on, ChildFailure};
pub use record::BENCH_PROTOCOL;
pub use rows::{render_summary, render_table, rows_for, summary_rows, totals, Row, TorchTimes};

use super::gpu::{new_gpu, results_dir};
use super::run::{choose_here, parse_gpus, GpuSelection, GpuSlot, SelectError};
use super::{Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK, EXIT_USAGE};
use anyhow::Context as _;
use bench_suite::store::Store;
use bench_suite::suite::{self, Entry, Suite, TaskDir};
use bench_suite::torch::{self, Mode, ModeResult, RunnerConfig, TorchJob};
use clap::{Args, ValueEnum};
use record::{store_results, Recorded};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use verifier::inputs::{generate_inputs, Variant};
use verifier::protocol::EvalOptions;
use verifier::runtime::bench::{BenchCandidate, BenchReport, BenchRequest};
use verifier::runtime::calibrate::{gpu_key, load_calibration, Calibration};
use verifier::timing::Protocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// PyTorch eager and torch.compile (when PyTorch imports)
    Torch,
    /// PyTorch eager only
    Eager,
    /// No PyTorch baselines
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompileShapes {
    /// Only each task's realistic shape (when it is timed)
    Realistic,
    /// Every timed shape
    All,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which tasks: `seed` (every task of the suite) or a category name
    #[arg(long, default_value = "seed", value_name = "SUITE")]
    pub suite: String,
    /// Only these tasks, comma-separated
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub tasks: Vec<String>,
    /// Only the I-th of N equal slices of the selected tasks (1-based), to split a suite across
    /// machines or time-limited sessions
    #[arg(long, value_name = "I/N")]
    pub chunk: Option<String>,
    /// A candidate kernel (directory with kernel.cu and launch.toml), strict-checked, then timed
    /// interleaved with the reference; repeatable; needs exactly one task in --tasks
    #[arg(long, value_name = "DIR")]
    pub candidate: Vec<PathBuf>,
    /// PyTorch baselines
    #[arg(long, value_enum, default_value_t = Baseline::Torch)]
    pub baseline: Baseline,
    /// Where torch.compile runs (it compiles for tens of seconds per shape)
    #[arg(long, value_enum, default_value_t = CompileShapes::Realistic)]
    pub compile_shapes: CompileShapes,
    /// Public shapes to time, comma-separated: names, or the roles `all`, `realistic` (the
    /// shape named so, else the largest roofline floor not named small*/awkward*), `small`
    /// [default: all]
    #[arg(long, value_delimiter = ',', value_name = "NAMES|ROLES")]
    pub shapes: Vec<String>,
    /// Public shapes a candidate's strict check runs on (held-out shapes are drawn as well)
    /// [default: all]
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub check_shapes: Vec<String>,
    /// Print one JSON object instead of the tables
    #[arg(long)]
    pub json: bool,
    /// Also write that JSON object to this file (the tables still print)
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// The result store [default: $KSMITH_DB or results/ksmith.db]
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Do not record the results in the store
    #[arg(long)]
    pub no_db: bool,
    /// Where calibrations are kept [default: results]
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Wall-clock limit per task (its GPU process), in seconds
    #[arg(long, default_value_t = 1800, value_name = "SECS", value_parser = crate::cli::timeout_secs())]
    pub timeout: u64,
    /// GPUs to time on, one task per GPU at a time: ordinals (`0,1`) or `all` [default: every
    /// GPU of GPU 0's model]
    #[arg(long, value_name = "LIST|all", value_parser = parse_gpus)]
    pub gpus: Option<GpuSelection>,
}

/// What to run, worked out from the arguments and the suite before any GPU is touched.
#[derive(Debug)]
pub struct BenchPlan<'a> {
    pub tasks: Vec<&'a TaskDir>,
    /// Per task (same order), the shapes to time.
    pub shapes: Vec<Vec<String>>,
    /// Task id -> its realistic shape.
    pub realistic: HashMap<String, String>,
    pub candidates: Vec<BenchCandidate>,
}

/// Resolves tasks, shapes and candidates; `Err` is a usage error for the user.
pub fn plan<'a>(suite: &'a Suite, a: &BenchArgs) -> Result<BenchPlan<'a>, String> {
    let mut tasks = select_tasks(suite, a)?;
    if let Some(c) = &a.chunk {
        let (i, n) = parse_chunk(c)?;
        tasks = chunk_of(&tasks, i, n).to_vec();
        if tasks.is_empty() {
            return Err(format!(
                "--chunk {c} selects no task (fewer tasks than chunks)"
            ));
        }
    }
    let candidates = read_candidates(a)?;
    let mut shapes = Vec::new();
    let mut realistic = HashMap::new();
    for td in &tasks {
        let t = &td.task;
        shapes.push(shapes::resolve(t, &a.shapes)?);
        if let Some(s) = shapes::realistic_shape(t) {
            realistic.insert(t.id.clone(), s.name.clone());
        }
        for c in &a.check_shapes {
            if t.shape(c).is_none() {
                return Err(format!(
                    "--check-shapes: task `{}` has no public shape `{c}`",
                    t.id
                ));
            }
        }
    }
    Ok(BenchPlan {
        tasks,
        shapes,
        realistic,
        candidates,
    })
}

/// `I/N` with 1 <= I <= N.
pub fn parse_chunk(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--chunk `{text}`: expected I/N with 1 <= I <= N, e.g. 2/3");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let i: usize = i.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if i == 0 || n == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The `i`-th (1-based) of `n` contiguous slices whose sizes differ by at most one.
pub fn chunk_of<T>(items: &[T], i: usize, n: usize) -> &[T] {
    let (len, n) = (items.len(), n.max(1));
    let i = i.clamp(1, n);
    let start = (i - 1) * len / n;
    let end = i * len / n;
    &items[start..end]
}

fn select_tasks<'a>(suite: &'a Suite, a: &BenchArgs) -> Result<Vec<&'a TaskDir>, String> {
    let mut out: Vec<&TaskDir> = Vec::new();
    if !a.tasks.is_empty() {
        for id in &a.tasks {
            let id = id.trim();
            let td = suite.valid_task(id)?;
            if !out.iter().any(|t| t.task.id == td.task.id) {
                out.push(td);
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
        return Err(format!(
            "suite `{}` selects no valid task in {} (use `seed` for all, or a category name)",
            a.suite,
            suite.root.display()
        ));
    }
    Ok(out)
}

fn read_candidates(a: &BenchArgs) -> Result<Vec<BenchCandidate>, String> {
    if !a.candidate.is_empty() && a.tasks.len() != 1 {
        return Err(format!(
            "--candidate needs exactly one task in --tasks (a candidate implements one task; got {})",
            a.tasks.len()
        ));
    }
    let mut out: Vec<BenchCandidate> = Vec::new();
    for dir in &a.candidate {
        let read = |f: &str| {
            let p = dir.join(f);
            std::fs::read_to_string(&p).map_err(|e| format!("candidate {}: {e}", p.display()))
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        if name == "reference" || out.iter().any(|c| c.name == name) {
            return Err(format!(
                "candidate name `{name}` (from {}) is taken: give each candidate directory its own name, not `reference`",
                dir.display()
            ));
        }
        out.push(BenchCandidate {
            name,
            source: read("kernel.cu")?,
            plan: read("launch.toml")?,
        });
    }
    Ok(out)
}

/// The PyTorch modes to run at one shape.
pub fn torch_modes(baseline: Baseline, compile: CompileShapes, is_realistic: bool) -> Vec<Mode> {
    match baseline {
        Baseline::None => Vec::new(),
        Baseline::Eager => vec![Mode::Eager],
        Baseline::Torch if compile == CompileShapes::All || is_realistic => {
            vec![Mode::Eager, Mode::Compile]
        }
        Baseline::Torch => vec![Mode::Eager],
    }
}

/// A seed nobody could have known in advance, for the candidates' strict check.
fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    verifier::inputs::rng::mix64(t ^ ((std::process::id() as u64) << 32) ^ 0x62656e6368)
}

/// PyTorch at one shape on the timing pool's inputs, in the run's runner session (torch is
/// imported once per `ksmith bench`). `Err(reason)` when PyTorch cannot run here at all (the
/// caller stops asking).
fn torch_times(
    session: &mut torch::Session,
    job: &TorchRequest,
    l2_bytes: Option<u64>,
) -> TorchOutcome {
    let task = &job.td.task;
    let shape_name = job.shape.as_str();
    let Some(shape) = task.shape(shape_name) else {
        return Ok(Err(format!("no shape {shape_name}")));
    };
    let mut sets = Vec::new();
    for k in 0..job.pool_sets.max(1) {
        match generate_inputs(task, shape, job.seed + k as u64, Variant::Base) {
            Ok(s) => sets.push(s),
            Err(e) => return Ok(Err(e.to_string())),
        }
    }
    let mut tj =
        match TorchJob::for_task(task, shape, &sets, job.modes.clone(), job.protocol.clone()) {
            Ok(j) => j,
            Err(e) => return Ok(Err(e.to_string())),
        };
    tj.l2_bytes = l2_bytes;
    match session.run(&tj) {
        Ok(r) => {
            let median = |m: &Option<ModeResult<torch::Baseline>>, what: &str| match m {
                Some(ModeResult::Ok(b)) => Some(b.summary.median_ms),
                Some(ModeResult::Failed { error, .. }) => {
                    eprintln!("PyTorch {what} of {} at {shape_name}: {error}", task.id);
                    None
                }
                None => None,
            };
            let graph = |m: &Option<ModeResult<torch::Baseline>>, what: &str| match m {
                Some(ModeResult::Ok(b)) => {
                    if let Some(e) = &b.graph_error {
                        eprintln!(
                            "PyTorch {what} of {} at {shape_name}: no CUDA-graph time: {e}",
                            task.id
                        );
                    }
                    b.graph_ms
                }
                _ => None,
            };
            Ok(Ok(TorchTimes {
                eager_ms: median(&r.eager, "eager"),
                compile_ms: median(&r.compile, "torch.compile"),
                eager_amortized_ms: graph(&r.eager, "eager"),
                compile_amortized_ms: graph(&r.compile, "torch.compile"),
            }))
        }
        Err(e) => match e.skip_reason() {
            Some(reason) => Err(reason),
            None => Ok(Err(e.to_string())),
        },
    }
}

/// Wall time spent per task, for planning device time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Elapsed {
    pub task: String,
    pub kernels_s: f64,
    pub torch_s: f64,
}

fn usage(json: bool, message: &str) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::json!({ "error": message, "exit": EXIT_USAGE })
        );
    } else {
        eprintln!("error: {message}");
    }
    EXIT_USAGE
}

/// What [`measure`] needs besides the plan and the arguments.
pub struct Context<'c> {
    /// The candidates' fresh seed.
    pub seed: u64,
    pub cal: Option<&'c Calibration>,
    pub key: &'c str,
    pub started: Instant,
}

/// A GPU process's answer: `Err` it could not be started; `Ok(Err)` it failed.
pub type ChildOutcome = anyhow::Result<Result<BenchReport, ChildFailure>>;

/// PyTorch's answer at one shape: `Ok(Ok)` the medians; `Ok(Err)` this shape failed (said
/// why); `Err(reason)` PyTorch cannot run here at all.
pub type TorchOutcome = Result<Result<TorchTimes, String>, String>;

/// One PyTorch baseline request: a task at one timed shape.
pub struct TorchRequest<'t> {
    pub td: &'t TaskDir,
    pub shape: String,
    pub modes: Vec<Mode>,
    pub pool_sets: usize,
    pub seed: u64,
    pub protocol: Protocol,
}

/// Everything measured, before it is stored and printed.
pub struct Measured<'a> {
    pub all_rows: Vec<Row>,
    pub reports: Vec<(&'a TaskDir, BenchReport)>,
    pub elapsed: Vec<Elapsed>,
    /// A task failed, a shape could not be timed, or an output failed re-validation.
    pub failed: bool,
    /// The harness could not run (the run stopped there).
    pub harness: Option<String>,
    /// Why PyTorch baselines were not (or no longer) run.
    pub torch_skip: Option<String>,
}

/// One GPU's means to measure a task: its GPU process (`child`, a `gpu serve` process in
/// `run`) and its PyTorch baselines (`torch`; `Err(reason)`: PyTorch cannot run here).
pub struct Lane<'l> {
    /// Which GPU, for the progress lines (`None` with a single GPU).
    pub label: Option<String>,
    pub child: Box<dyn FnMut(&BenchRequest) -> ChildOutcome + Send + 'l>,
    pub torch: Box<dyn FnMut(TorchRequest) -> TorchOutcome + Send + 'l>,
}

/// What one task came to.
enum TaskResult {
    /// The harness could not run: the run stops (no new task starts).
    Harness(String),
    /// The task's GPU process failed: one row saying why.
    Failed { row: Row, elapsed: Elapsed },
    Timed {
        rows: Vec<Row>,
        report: BenchReport,
        elapsed: Elapsed,
    },
}

/// [`measure_on`] with a single GPU.
#[cfg(test)]
pub fn measure<'a>(
    p: &BenchPlan<'a>,
    a: &BenchArgs,
    cx: &Context,
    child: &mut (dyn FnMut(&BenchRequest) -> ChildOutcome + Send),
    torch: &mut (dyn FnMut(TorchRequest) -> TorchOutcome + Send),
) -> anyhow::Result<Measured<'a>> {
    measure_on(
        p,
        a,
        cx,
        vec![Lane {
            label: None,
            child: Box::new(|r: &BenchRequest| child(r)),
            torch: Box::new(|j: TorchRequest| torch(j)),
        }],
    )
}

/// Runs the plan's tasks, each lane (GPU) taking the next task when it is free: the lane's
/// `child` times a task's kernels, then its `torch` times PyTorch at each timed shape (once
/// PyTorch cannot run here, no lane asks again). A harness failure stops every lane from
/// starting another task. Results come back in the plan's task order whatever finished first.
/// With `--json-out`, the rows so far are written after every task.
pub fn measure_on<'a>(
    p: &BenchPlan<'a>,
    a: &BenchArgs,
    cx: &Context,
    lanes: Vec<Lane<'_>>,
) -> anyhow::Result<Measured<'a>> {
    let torch_skip: Mutex<Option<String>> =
        Mutex::new((a.baseline == Baseline::None).then(|| "--baseline none".into()));
    let done = super::parallel::run_lanes(
        &p.tasks,
        lanes,
        |lane, i, _| {
            let r = measure_task(p, a, cx, i, lane, &torch_skip)?;
            let harness = matches!(r, TaskResult::Harness(_));
            Ok((r, harness))
        },
        |done| write_partial(a, cx, done),
    )?;
    let mut m = Measured {
        all_rows: Vec::new(),
        reports: Vec::new(),
        elapsed: Vec::new(),
        failed: false,
        harness: None,
        torch_skip: torch_skip.into_inner().unwrap_or_else(|e| e.into_inner()),
    };
    for (td, r) in p.tasks.iter().copied().zip(done) {
        match r {
            None => {}
            Some(TaskResult::Harness(h)) => {
                m.harness.get_or_insert(h);
            }
            Some(TaskResult::Failed { row, elapsed }) => {
                m.failed = true;
                m.all_rows.push(row);
                m.elapsed.push(elapsed);
            }
            Some(TaskResult::Timed {
                rows,
                report,
                elapsed,
            }) => {
                m.failed |= rows.iter().any(|r| r.problem.is_some());
                m.all_rows.extend(rows);
                m.reports.push((td, report));
                m.elapsed.push(elapsed);
            }
        }
    }
    Ok(m)
}

/// The rows of every task finished so far, in task order, as a partial reply (`--json-out`):
/// a run cut short still leaves them behind.
fn write_partial(a: &BenchArgs, cx: &Context, done: &[Option<TaskResult>]) {
    let Some(path) = &a.json_out else { return };
    let mut rows: Vec<&Row> = Vec::new();
    let mut elapsed: Vec<&Elapsed> = Vec::new();
    for r in done.iter().flatten() {
        match r {
            TaskResult::Harness(_) => {}
            TaskResult::Failed { row, elapsed: e } => {
                rows.push(row);
                elapsed.push(e);
            }
            TaskResult::Timed {
                rows: r,
                elapsed: e,
                ..
            } => {
                rows.extend(r);
                elapsed.push(e);
            }
        }
    }
    let partial = serde_json::json!({
        "partial": true, "gpu_key": cx.key, "rows": rows, "elapsed": elapsed,
        "wall_s": cx.started.elapsed().as_secs_f64(),
    });
    if let Err(e) = std::fs::write(path, partial.to_string()) {
        eprintln!("warning: writing {}: {e}", path.display());
    }
}

/// Task `i` of the plan on one lane.
fn measure_task(
    p: &BenchPlan<'_>,
    a: &BenchArgs,
    cx: &Context,
    i: usize,
    lane: &mut Lane<'_>,
    torch_skip: &Mutex<Option<String>>,
) -> anyhow::Result<TaskResult> {
    let (td, shapes) = (p.tasks[i], &p.shapes[i]);
    eprintln!(
        "bench: [{}/{}] {} ({}){}",
        i + 1,
        p.tasks.len(),
        td.task.id,
        shapes.join(", "),
        lane.label
            .as_ref()
            .map(|l| format!(" on {l}"))
            .unwrap_or_default()
    );
    let req = BenchRequest {
        task_dir: std::fs::canonicalize(&td.dir).unwrap_or_else(|_| td.dir.clone()),
        candidates: p.candidates.clone(),
        shapes: shapes.clone(),
        timing: Default::default(),
        check: EvalOptions {
            shapes: a.check_shapes.clone(),
            fresh_seed: Some(cx.seed),
            heldout_seed: cx.seed,
            ..EvalOptions::default()
        },
    };
    let t0 = Instant::now();
    let outcome = (lane.child)(&req)?;
    let kernels_s = t0.elapsed().as_secs_f64();
    let report = match outcome {
        Ok(r) => r,
        Err(ChildFailure::Harness(m)) => {
            return Ok(TaskResult::Harness(format!("{}: {m}", td.task.id)))
        }
        Err(ChildFailure::Task(m)) => {
            return Ok(TaskResult::Failed {
                row: rows::task_failure_row(&td.task.id, &m),
                elapsed: Elapsed {
                    task: td.task.id.clone(),
                    kernels_s,
                    torch_s: 0.0,
                },
            })
        }
    };
    let skipped = || {
        torch_skip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    };
    let t1 = Instant::now();
    let mut torch_by_shape = HashMap::new();
    for st in &report.shapes {
        if skipped() {
            break;
        }
        let is_realistic = p.realistic.get(&td.task.id) == Some(&st.shape);
        let job = TorchRequest {
            td,
            shape: st.shape.clone(),
            modes: torch_modes(a.baseline, a.compile_shapes, is_realistic),
            pool_sets: st.pool_sets,
            seed: req.timing.seed,
            protocol: req.timing.protocol.clone(),
        };
        match (lane.torch)(job) {
            Ok(Ok(t)) => {
                torch_by_shape.insert(st.shape.clone(), t);
            }
            Ok(Err(e)) => eprintln!("PyTorch baseline of {} at {}: {e}", td.task.id, st.shape),
            Err(reason) => {
                let mut skip = torch_skip.lock().unwrap_or_else(|e| e.into_inner());
                if skip.is_none() {
                    eprintln!("PyTorch baselines skipped: {reason}");
                    *skip = Some(reason);
                }
            }
        }
    }
    let torch_s = t1.elapsed().as_secs_f64();
    eprintln!(
        "bench: {}: kernels {kernels_s:.1} s, PyTorch {torch_s:.1} s",
        td.task.id
    );
    Ok(TaskResult::Timed {
        rows: rows_for(&td.task, &report, &torch_by_shape, cx.cal),
        report,
        elapsed: Elapsed {
            task: td.task.id.clone(),
            kernels_s,
            torch_s,
        },
    })
}

pub fn run(g: &Global, a: &BenchArgs) -> anyhow::Result<u8> {
    let root = suite::locate(g.tasks_dir.as_deref())?;
    let suite = Suite::discover(&root)?;
    let p = match plan(&suite, a) {
        Ok(p) => p,
        Err(m) => return Ok(usage(a.json, &m)),
    };
    // The devices' identity (for the calibration and the store); the contexts are released
    // before the GPU work starts in the subprocesses.
    let chosen = match choose_here(a.gpus.as_ref()) {
        Ok(c) => c,
        Err(SelectError::Usage(m)) => return Ok(usage(a.json, &m)),
        Err(SelectError::NoGpu(e)) => {
            let message = format!("`ksmith bench` needs a GPU: {e}");
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({ "error": message, "exit": EXIT_HARNESS })
                );
            } else {
                eprintln!("error: {message}");
            }
            return Ok(EXIT_HARNESS);
        }
    };
    for n in &chosen.notes {
        eprintln!("note: {n}");
    }
    let info = chosen.info.clone();
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
    let seed = fresh_seed();
    if !p.candidates.is_empty() {
        eprintln!("bench: candidates are checked with fresh seed {seed}");
    }
    let limit = Duration::from_secs(a.timeout.max(1));
    let started = Instant::now();
    let gpus = GpuSlot::for_ordinals(&chosen.ordinals);
    if gpus.len() > 1 {
        eprintln!(
            "bench: {} tasks over GPUs {} ({})",
            p.tasks.len(),
            chosen
                .ordinals
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(","),
            info.name
        );
    }
    let l2_bytes = info.l2_cache_bytes;
    let lanes: Vec<Lane> = gpus
        .iter()
        .map(|gpu| {
            let (visible, visible_torch) = (gpu.visible.clone(), gpu.visible.clone());
            // PyTorch is imported once per GPU, on first use.
            let mut session: Option<torch::Session> = None;
            Lane {
                label: (gpus.len() > 1).then(|| format!("GPU {}", gpu.ordinal)),
                child: Box::new(move |req: &BenchRequest| {
                    run_child_on(g, req, limit, Some(&visible))
                }),
                torch: Box::new(move |job: TorchRequest| -> TorchOutcome {
                    if session.is_none() {
                        let config = RunnerConfig {
                            env: vec![("CUDA_VISIBLE_DEVICES".into(), visible_torch.clone())],
                            ..RunnerConfig::default()
                        };
                        session = Some(torch::Session::new(config).map_err(|e| e.to_string())?);
                    }
                    let Some(sess) = session.as_mut() else {
                        return Err("no PyTorch session".into());
                    };
                    torch_times(sess, &job, Some(l2_bytes))
                }),
            }
        })
        .collect();
    let m = measure_on(
        &p,
        a,
        &Context {
            seed,
            cal: cal.as_ref(),
            key: &key,
            started,
        },
        lanes,
    )?;
    let Measured {
        all_rows,
        reports,
        elapsed,
        failed,
        harness,
        torch_skip,
    } = m;
    if let Some(m) = &harness {
        // What was measured before the harness failed is still printed and stored.
        eprintln!("error: {m}");
        if reports.is_empty() {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({ "error": m, "exit": EXIT_HARNESS })
                );
            }
            return Ok(EXIT_HARNESS);
        }
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
                candidates: &p.candidates,
            })
            .collect();
        let config = serde_json::json!({
            "suite": a.suite, "tasks": a.tasks, "shapes": a.shapes, "baseline": a.baseline,
            "compile_shapes": a.compile_shapes, "check_shapes": a.check_shapes,
            "protocol": BENCH_PROTOCOL,
        });
        let name = store_results(
            &store,
            &new_gpu(&info, cal.as_ref()),
            &a.suite,
            &recorded,
            config,
            git_rev(),
        )?;
        Some(format!(
            "{} run {name}",
            bench_suite::store::redact_url(&url)
        ))
    };
    let ids: Vec<String> = p.tasks.iter().map(|t| t.task.id.clone()).collect();
    let summary = summary_rows(&all_rows, &ids, &p.realistic);
    let reference_summary: Vec<&Row> = summary
        .iter()
        .copied()
        .filter(|r| r.kernel == "reference")
        .collect();
    let reply = serde_json::json!({
        "gpu_key": key,
        "rows": all_rows,
        "realistic": summary,
        "totals": totals(&reference_summary),
        "pytorch_skipped": torch_skip,
        "calibrated": cal.is_some(),
        "fresh_seed": (!p.candidates.is_empty()).then_some(seed),
        "elapsed": elapsed,
        "wall_s": started.elapsed().as_secs_f64(),
        "reports": reports.iter().map(|(_, r)| r).collect::<Vec<_>>(),
        "stored": stored,
        "error": harness,
        "exit": if harness.is_some() { EXIT_HARNESS } else if failed { EXIT_FAILED } else { EXIT_OK },
    });
    let text = serde_json::to_string_pretty(&reply)?;
    if let Some(path) = &a.json_out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{text}");
    } else {
        println!("{}", render_table(&all_rows));
        if !summary.is_empty() {
            println!(
                "\nper task on its realistic shape:\n{}",
                render_summary(&summary)
            );
        }
        if let Some(s) = &torch_skip {
            println!("PyTorch baselines skipped: {s}");
        }
        if let Some(s) = &stored {
            println!("recorded in {s}");
        }
    }
    Ok(if harness.is_some() {
        EXIT_HARNESS
    } else if failed {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

fn git_rev() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
