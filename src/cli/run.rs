//! `ksmith run` (an agent run over tasks, resumable) and `ksmith replay` (re-evaluate a run's
//! candidates on this machine's GPU, no LLM involved).
//!
//! On a GPU each candidate that passes the static checks gets the strict protocol in a
//! `ksmith worker`; a correct one is then timed side by side with the task's reference in a
//! `ksmith gpu serve` child (as `ksmith bench` times candidates), so the store records its
//! speedup and % of speed-of-light and the Judge's optimization prompt reads them. A timing
//! failure leaves the kernel correct and untimed, the reason in its feedback.
//!
//! `--gpus` picks the GPUs (default: every GPU of GPU 0's model), one worker each; a kernel is
//! verified and timed on one GPU, which does nothing else meanwhile, and GPUs work in parallel
//! (tasks of a run, candidates of a replay).
//!
//! Exit codes: 0 every task ended with a passing kernel (correct; `compiled` in a dry run);
//! 1 the run finished but some task has none; 3 the harness could not run or was interrupted
//! (no config, NVRTC or GPU; provider or store failure) — `--resume RUN` continues it.

mod gpus;
mod slots;

pub(crate) use gpus::{choose_here, parse_gpus, Chosen, GpuSelection, SelectError};
pub(crate) use slots::{GpuSlot, Slots};

use super::bench::{run_child_on, ChildFailure};
use super::gpu::{new_gpu, results_dir};
use super::profile::{AgentProfiling, NcuProfiler, ProfileRows};
use super::tasks::compiler;
use super::{Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK, EXIT_USAGE};
use agent::evaluate::{DryRunEvaluator, GpuEvaluator, KernelRun, KernelRunner, TaskMap};
use agent::llm::{ClientPool, LlmConfig};
use agent::prompt::{DeviceFacts, PromptRenderer, ShapeTiming};
use agent::r#loop::Evaluator;
use agent::record::{CachedEvaluator, EvalTarget, ProgressFn, RunBudget, RunEvent};
use agent::run::{execute, load_config, RunConfig, RunReport, RunSetup, Strategy};
use anyhow::{bail, Context};
use bench_suite::pool::{Pool, PoolConfig, WorkerCommand};
use bench_suite::store::{self, EvalKey, NewGpu, Store};
use bench_suite::suite::{self, Entry, Suite, TaskDir};
use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use verifier::nvrtc::Arch;
use verifier::protocol::{EvalOptions, EvaluateRequest};
use verifier::runtime::bench::{BenchCandidate, BenchReport, BenchRequest};
use verifier::runtime::calibrate::{gpu_key, load_calibration, sol, Calibration};
use verifier::runtime::DeviceInfo;
use verifier::task::Task;

/// Protocol label of GPU evaluations made by the agent and by replays (part of the cache key):
/// the strict check, then the timing protocol side by side with the reference for a correct
/// kernel. Runs restricted to the first N public shapes get their own label
/// ([`gpu_protocol`]), so that their weaker results never stand in for a full evaluation.
const GPU_PROTOCOL: &str = "strict-timed-v1";

/// The kernel's name in its timing run (the task's reference is `reference` there).
const TIMED_NAME: &str = "candidate";

fn gpu_protocol(first_shapes: Option<u32>) -> String {
    match first_shapes {
        None => GPU_PROTOCOL.to_string(),
        Some(n) => format!("{GPU_PROTOCOL}+first{}", n.max(1)),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StrategyArg {
    CoderJudge,
    Evolve,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// LLM profile (a `[profiles.NAME]` of the config) for the Coder
    #[arg(long, value_name = "PROFILE", required_unless_present = "resume")]
    pub model: Option<String>,
    /// LLM profile for the Judge [default: the --model profile]
    #[arg(long, value_name = "PROFILE")]
    pub judge_model: Option<String>,
    /// LLM config file [default: ./ksmith.toml]
    #[arg(long, env = "KSMITH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Every valid task of the suite (`seed`: the suite in tasks/)
    #[arg(long, value_name = "NAME", conflicts_with = "tasks")]
    pub suite: Option<String>,
    /// Tasks to run, comma-separated
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub tasks: Vec<String>,
    /// Coder rounds per task (generations per island with --strategy evolve)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub rounds: u32,
    #[arg(long, value_enum, default_value = "coder-judge")]
    pub strategy: StrategyArg,
    /// Islands of the evolutionary search
    #[arg(long, value_name = "N")]
    pub islands: Option<u32>,
    /// Stop starting LLM calls once the run has spent this many US dollars
    #[arg(long, value_name = "USD")]
    pub budget_usd: Option<f64>,
    /// ... or this many tokens (input + output)
    #[arg(long, value_name = "N")]
    pub budget_tokens: Option<u64>,
    /// ... or after this many seconds of wall time (per invocation)
    #[arg(long, value_name = "SECS")]
    pub max_wall: Option<f64>,
    /// Compile only (NVRTC, plan checks): no GPU needed, verdict `compiled`
    #[arg(long)]
    pub dry_run: bool,
    /// Continue the run named RUN (its stored settings apply; other flags are ignored)
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
    /// Name of the new run [default: PROFILE-UNIXTIME]
    #[arg(long, value_name = "NAME", conflicts_with = "resume")]
    pub name: Option<String>,
    /// Result database URL [default: $KSMITH_DB, else sqlite://results/ksmith.db]
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Tasks searched at once [default: min(tasks, max(4, GPUs))]
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Do not start from the task's reference kernel
    #[arg(long)]
    pub no_seed: bool,
    /// Verify and time each task at its first N public shapes only (held-out shapes are still
    /// drawn): quicker, weaker evaluations, stored under their own protocol label
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub first_shapes: Option<u32>,
    /// GPUs to evaluate on, one worker each: ordinals (`0,1`) or `all`; applies to --resume
    /// too, ignored with --dry-run [default: every GPU of GPU 0's model]
    #[arg(long, value_name = "LIST|all", value_parser = parse_gpus)]
    pub gpus: Option<GpuSelection>,
    /// Where GPU calibrations are kept, for % of speed-of-light [default: results]
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Profile each task's new best kernel with Nsight Compute at its first timed shape and
    /// show the Judge the summary (needs ncu; a failed profile never fails the kernel)
    #[arg(long)]
    pub profile: bool,
    /// The ncu executable for --profile [default: ncu on PATH, then the CUDA install]
    #[arg(long, env = "KSMITH_NCU", value_name = "PATH")]
    pub ncu: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The run whose candidates to re-evaluate
    #[arg(long, value_name = "RUN")]
    pub run: String,
    /// Result database URL [default: $KSMITH_DB, else sqlite://results/ksmith.db]
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Wall-clock limit per candidate, in seconds (verification and timing each)
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
    /// GPUs to evaluate on, one worker each: ordinals (`0,1`) or `all` [default: every GPU of
    /// GPU 0's model]
    #[arg(long, value_name = "LIST|all", value_parser = parse_gpus)]
    pub gpus: Option<GpuSelection>,
    /// Where GPU calibrations are kept, for % of speed-of-light [default: results]
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

fn config_path(a: &RunArgs) -> PathBuf {
    a.config
        .clone()
        .unwrap_or_else(|| PathBuf::from("ksmith.toml"))
}

fn load_llm_config(path: &Path) -> anyhow::Result<LlmConfig> {
    if !path.is_file() {
        bail!(
            "no LLM config at {}: pass --config PATH or set KSMITH_CONFIG (agent/llm.example.toml shows the format)",
            path.display()
        );
    }
    Ok(LlmConfig::load(path)?)
}

fn valid_tasks(suite: &Suite, ids: &[String]) -> anyhow::Result<Vec<TaskDir>> {
    let mut out = Vec::new();
    for id in ids {
        match suite.get(id) {
            Some(Entry::Ok(td)) => out.push((**td).clone()),
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
    Ok(out)
}

fn worker_command(g: &Global) -> anyhow::Result<WorkerCommand> {
    let mut cmd = WorkerCommand::current_exe_worker().context("locating the ksmith executable")?;
    for (flag, v) in [
        ("--nvrtc", &g.nvrtc),
        ("--cuda-include", &g.cuda_include),
        ("--cache-dir", &g.cache_dir),
        ("--tasks-dir", &g.tasks_dir),
    ] {
        if let Some(v) = v {
            cmd.args.push(flag.to_string());
            cmd.args.push(v.display().to_string());
        }
    }
    if g.no_cache {
        cmd.args.push("--no-cache".into());
    }
    Ok(cmd)
}

/// A copy of the global flags for the timing children (`Global` itself is not `Clone`).
fn global_copy(g: &Global) -> Global {
    Global {
        tasks_dir: g.tasks_dir.clone(),
        nvrtc: g.nvrtc.clone(),
        cuda_include: g.cuda_include.clone(),
        arch: g.arch.clone(),
        cache_dir: g.cache_dir.clone(),
        no_cache: g.no_cache,
        verbose: g.verbose,
    }
}

/// The public shapes a run checks and times (`--first-shapes`); empty: all of them.
fn shapes_of(task: &Task, first_shapes: Option<u32>) -> Vec<String> {
    match first_shapes {
        None => Vec::new(),
        Some(n) => task
            .shapes
            .iter()
            .take(n.max(1) as usize)
            .map(|s| s.name.clone())
            .collect(),
    }
}

/// Times a correct kernel side by side with its task's reference (DESIGN §5).
trait KernelTimer: Send + Sync {
    /// The timing report from GPU `gpu` (the one that verified the kernel), or why there is none.
    fn time(
        &self,
        gpu: &GpuSlot,
        task: &TaskDir,
        source: &str,
        plan_toml: &str,
        shapes: &[String],
    ) -> Result<BenchReport, String>;
}

/// Timing in a `ksmith gpu serve` child, as `ksmith bench` times a candidate: a kernel that
/// faults or hangs while it is timed costs that child, not the run.
struct ServeTimer {
    global: Global,
    limit: Duration,
}

impl KernelTimer for ServeTimer {
    fn time(
        &self,
        gpu: &GpuSlot,
        task: &TaskDir,
        source: &str,
        plan_toml: &str,
        shapes: &[String],
    ) -> Result<BenchReport, String> {
        let req = BenchRequest {
            task_dir: std::fs::canonicalize(&task.dir).unwrap_or_else(|_| task.dir.clone()),
            candidates: vec![BenchCandidate {
                name: TIMED_NAME.into(),
                source: source.to_string(),
                plan: plan_toml.to_string(),
            }],
            shapes: shapes.to_vec(),
            timing: Default::default(),
            // The kernel has just passed the full strict check in a worker; the timing run's
            // own check is only the gate that keeps a kernel which misbehaves in this process
            // from being timed (one seed at the timed shapes), and re-validation of the last
            // timed call still compares every output.
            check: EvalOptions {
                seeds: vec![0],
                fresh_seed: None,
                shapes: shapes.to_vec(),
                heldout_shapes: 0,
                stress: false,
                determinism: false,
                ..EvalOptions::default()
            },
        };
        match run_child_on(&self.global, &req, self.limit, Some(&gpu.visible)) {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(ChildFailure::Harness(m))) => {
                Err(format!("the timing process could not run: {m}"))
            }
            Ok(Err(ChildFailure::Task(m))) => Err(format!("the timing run failed: {m}")),
            Err(e) => Err(format!("the timing process could not start: {e:#}")),
        }
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max).collect();
    s.push_str(" ...");
    s
}

/// The agent's per-shape timings of the kernel named [`TIMED_NAME`] in a timing report: median,
/// the reference's median from the same interleaved run, and % of speed-of-light (and its
/// floor) where the GPU is calibrated. The note says why the kernel is untimed or only partly
/// timed. A kernel whose output failed re-validation after timing gets no timings at all: its
/// result changed under the timing loop's input refresh, so no time of it can be credited.
fn timings_from_report(
    task: &Task,
    report: &BenchReport,
    cal: Option<&Calibration>,
) -> (Vec<ShapeTiming>, Option<String>) {
    const UNTIMED: &str = "the kernel is correct but untimed";
    match report.candidates.iter().find(|c| c.name == TIMED_NAME) {
        Some(c) if c.timed => {}
        Some(c) => {
            return (
                Vec::new(),
                Some(format!(
                    "the check before timing found {}: {}; {UNTIMED}",
                    c.verdict.kind(),
                    clip(&c.verdict.feedback(), 600)
                )),
            )
        }
        None => {
            return (
                Vec::new(),
                Some(format!(
                    "the timing report does not list the kernel; {UNTIMED}"
                )),
            )
        }
    }
    let mut timings = Vec::new();
    let mut notes = Vec::new();
    for st in &report.shapes {
        if let Some(f) = st
            .subjects
            .first()
            .filter(|r| r.name == "reference")
            .and_then(|r| r.revalidation_failure.as_ref())
        {
            notes.push(format!(
                "the reference's output at shape {} failed re-validation after timing: {f}",
                st.shape
            ));
        }
        let Some(j) = st.subjects.iter().position(|s| s.name == TIMED_NAME) else {
            notes.push(format!("shape {}: the kernel was not timed", st.shape));
            continue;
        };
        let s = &st.subjects[j];
        if let Some(f) = &s.revalidation_failure {
            return (
                Vec::new(),
                Some(format!(
                    "at shape {} the output of the last timed call was wrong ({}): a kernel \
                     whose results change under the timing loop is credited with no time",
                    st.shape,
                    clip(f, 400)
                )),
            );
        }
        let median_ms = s.summary.median_ms;
        let reference_ms = j
            .checked_sub(1)
            .and_then(|i| st.speedups.get(i))
            .and_then(|x| x.as_ref())
            .map(|sp| median_ms * sp.ratio_of_medians)
            .or_else(|| {
                st.subjects
                    .first()
                    .filter(|r| r.name == "reference")
                    .map(|r| r.summary.median_ms)
            });
        let sol = match (task.shape(&st.shape), cal) {
            (Some(shape), Some(c)) => sol(task, shape, c, median_ms).ok(),
            _ => None,
        };
        timings.push(ShapeTiming {
            shape: st.shape.clone(),
            median_us: Some(median_ms * 1e3),
            reference_us: reference_ms.map(|r| r * 1e3),
            sol_pct: sol.as_ref().map(|x| x.percent),
            floor_us: sol.as_ref().map(|x| x.floor_ms * 1e3),
        });
    }
    for f in &report.failures {
        notes.push(format!(
            "shape {} could not be timed: {}",
            f.shape,
            clip(&f.message, 400)
        ));
    }
    if timings.is_empty() {
        if notes.is_empty() {
            notes.push("no shape was timed".into());
        }
        notes.push(UNTIMED.into());
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    (timings, note)
}

/// A verifier verdict, timed on `gpu` when it is `correct` and a timer is given. A timing
/// failure never changes the verdict: the kernel stays correct, untimed, with the reason as its
/// note.
#[allow(clippy::too_many_arguments)]
fn verdict_with_timings(
    verdict: verifier::verdict::Verdict,
    timer: Option<&dyn KernelTimer>,
    gpu: &GpuSlot,
    task: &TaskDir,
    source: &str,
    plan_toml: &str,
    shapes: &[String],
    cal: Option<&Calibration>,
) -> KernelRun {
    let (timings, note) = match timer {
        Some(t) if verdict.is_correct() => match t.time(gpu, task, source, plan_toml, shapes) {
            Ok(report) => timings_from_report(&task.task, &report, cal),
            Err(m) => (
                Vec::new(),
                Some(format!("{m}; the kernel is correct but untimed")),
            ),
        },
        _ => (Vec::new(), None),
    };
    if let Some(n) = &note {
        tracing::warn!("{}: {n}", task.task.id);
    }
    KernelRun {
        verdict,
        timings,
        note,
        profile_summary: None,
        profile_note: None,
    }
}

/// Runs the strict protocol for one kernel on one GPU's worker.
trait Verify: Send + Sync {
    /// The verdict from the worker of GPU slot `gpu`, or a harness failure.
    fn verify(
        &self,
        gpu: usize,
        request: EvaluateRequest,
    ) -> Result<verifier::verdict::Verdict, String>;
}

impl Verify for Pool {
    fn verify(
        &self,
        gpu: usize,
        request: EvaluateRequest,
    ) -> Result<verifier::verdict::Verdict, String> {
        self.evaluate_on(gpu, request).verdict().cloned()
    }
}

/// The strict protocol on `ksmith worker` subprocesses (one per GPU), then, for a correct
/// kernel, the timing protocol in a `ksmith gpu serve` child on the same GPU.
struct PoolRunner {
    /// Worker `i` runs on `gpus[i]`.
    verifier: Box<dyn Verify>,
    gpus: Vec<GpuSlot>,
    /// A kernel holds its GPU from verification to the end of its timing, so that no
    /// measurement shares the device with another kernel's work; other GPUs go on meanwhile.
    slots: Slots,
    timer: Option<Box<dyn KernelTimer>>,
    cal: Option<Calibration>,
    first_shapes: Option<u32>,
    /// `--profile`: each task's new best kernel is profiled for the Judge.
    profiling: Option<AgentProfiling>,
}

impl PoolRunner {
    fn new(
        verifier: Box<dyn Verify>,
        gpus: Vec<GpuSlot>,
        timer: Option<Box<dyn KernelTimer>>,
        cal: Option<Calibration>,
        first_shapes: Option<u32>,
    ) -> PoolRunner {
        PoolRunner {
            verifier,
            slots: Slots::new(gpus.len()),
            gpus,
            timer,
            cal,
            first_shapes,
            profiling: None,
        }
    }

    fn with_profiling(mut self, p: AgentProfiling) -> PoolRunner {
        self.profiling = Some(p);
        self
    }

    /// Stores the profiles whose evaluations are recorded; how many still wait.
    fn flush_profiles(&self) -> usize {
        self.profiling.as_ref().map_or(0, |p| p.flush())
    }

    /// One worker per GPU of the run.
    fn on_workers(
        g: &Global,
        gpus: Vec<GpuSlot>,
        verify_limit: Duration,
        timing_limit: Duration,
        cal: Option<Calibration>,
        first_shapes: Option<u32>,
    ) -> anyhow::Result<PoolRunner> {
        let ordinals: Vec<u32> = gpus.iter().map(|s| s.ordinal).collect();
        let pool = Pool::new(PoolConfig::per_gpu(
            worker_command(g)?,
            &ordinals,
            verify_limit,
        ));
        Ok(PoolRunner::new(
            Box::new(pool),
            gpus,
            Some(Box::new(ServeTimer {
                global: global_copy(g),
                limit: timing_limit,
            })),
            cal,
            first_shapes,
        ))
    }
}

impl KernelRunner for PoolRunner {
    fn run(&self, task: &TaskDir, source: &str, plan_toml: &str) -> Result<KernelRun, String> {
        let slot = self.slots.checkout();
        let gpu = self
            .gpus
            .get(slot.index)
            .ok_or_else(|| format!("no GPU for slot {}", slot.index))?;
        let shapes = shapes_of(&task.task, self.first_shapes);
        let fresh = verifier::inputs::fresh_seed();
        let options = EvalOptions {
            fresh_seed: Some(fresh),
            heldout_seed: fresh,
            shapes: shapes.clone(),
            ..EvalOptions::default()
        };
        let req = EvaluateRequest {
            task_dir: task.dir.clone(),
            source: source.to_string(),
            plan: plan_toml.to_string(),
            options,
        };
        let verdict = self.verifier.verify(slot.index, req)?;
        let mut run = verdict_with_timings(
            verdict,
            self.timer.as_deref(),
            gpu,
            task,
            source,
            plan_toml,
            &shapes,
            self.cal.as_ref(),
        );
        // Still holding the GPU: the profile shares it with nothing else.
        if let Some(p) = &self.profiling {
            p.after_run(&gpu.visible, task, source, plan_toml, &mut run);
        }
        Ok(run)
    }
}

/// The run's GPUs (`--gpus`), or the exit code after saying why there are none: 3 when this
/// machine has no usable GPU (`no_gpu` frames the message), 2 when `--gpus` is wrong.
fn choose_gpus(
    selection: Option<&GpuSelection>,
    no_gpu: impl FnOnce(&str) -> String,
) -> Result<Chosen, u8> {
    match choose_here(selection) {
        Ok(c) => {
            for n in &c.notes {
                eprintln!("note: {n}");
            }
            if c.ordinals.len() > 1 {
                eprintln!(
                    "evaluating on GPUs {} ({})",
                    c.ordinals
                        .iter()
                        .map(|o| o.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    c.info.name
                );
            }
            Ok(c)
        }
        Err(SelectError::NoGpu(e)) => {
            eprintln!("error: {}", no_gpu(&e));
            Err(EXIT_HARNESS)
        }
        Err(SelectError::Usage(m)) => {
            eprintln!("error: {m}");
            Err(EXIT_USAGE)
        }
    }
}

/// The run's GPU as the store and the prompts know it (all GPUs of a run share its key), with
/// its calibration (for % of speed-of-light) when `ksmith gpu calibrate` has measured it.
fn gpu_identity(
    i: &DeviceInfo,
    results: Option<&Path>,
) -> (NewGpu, DeviceFacts, Option<Calibration>) {
    let cal = match load_calibration(&results_dir(results), &gpu_key(i)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("note: {e}: no % of speed-of-light");
            None
        }
    };
    let new = new_gpu(i, cal.as_ref());
    let driver = new.driver_version.clone();
    let facts = DeviceFacts {
        name: Some(i.name.clone()),
        compute_capability: Some(i.compute_capability),
        sm_count: Some(i.sm_count),
        smem_per_block_bytes: Some(u64::from(i.shared_mem_per_block)),
        smem_per_block_optin_bytes: Some(u64::from(i.shared_mem_per_block_optin)),
        smem_per_sm_bytes: Some(u64::from(i.shared_mem_per_sm)),
        registers_per_block: Some(u64::from(i.registers_per_block)),
        registers_per_sm: Some(u64::from(i.registers_per_sm)),
        max_threads_per_block: Some(i.max_threads_per_block),
        max_threads_per_sm: Some(i.max_threads_per_sm),
        l2_bytes: Some(i.l2_cache_bytes),
        measured_bandwidth_gbps: cal
            .as_ref()
            .and_then(|c| c.bandwidth.as_ref())
            .map(|r| r.per_s / 1e9),
        peaks_tflops: cal
            .as_ref()
            .map(|c| {
                c.peaks
                    .iter()
                    .map(|(k, r)| (k.clone(), r.per_s / 1e12))
                    .collect()
            })
            .unwrap_or_default(),
        driver_version: Some(driver),
        ..DeviceFacts::default()
    };
    (new, facts, cal)
}

fn progress_bar(total: u64, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} candidates {msg}") {
        bar.set_style(style);
    }
    bar
}

pub fn run(g: &Global, a: &RunArgs) -> anyhow::Result<u8> {
    let db_url = Store::resolve_url(a.db.as_deref());
    let store = Arc::new(Store::open(&db_url)?);
    let root = suite::locate(g.tasks_dir.as_deref())?;
    let suite = Suite::discover(&root)?;

    let (config, name, resume) = match &a.resume {
        Some(name) => (load_config(&store, name)?, name.clone(), true),
        None => {
            let Some(model) = a.model.clone() else {
                bail!("--model PROFILE is required for a new run");
            };
            let ids: Vec<String> = match (&a.suite, a.tasks.is_empty()) {
                (Some(s), _) if s == "seed" || s == "all" => suite
                    .entries
                    .iter()
                    .filter_map(|e| match e {
                        Entry::Ok(td) => Some(td.task.id.clone()),
                        Entry::Broken { id, .. } => {
                            eprintln!("warning: skipping invalid task `{id}` (see `ksmith tasks check {id}`)");
                            None
                        }
                    })
                    .collect(),
                (Some(s), _) => bail!("unknown suite `{s}` (known: seed)"),
                (None, false) => a.tasks.clone(),
                (None, true) => bail!("choose tasks with --tasks a,b,c or --suite seed"),
            };
            let mut ids = ids;
            let mut seen = std::collections::BTreeSet::new();
            ids.retain(|id| seen.insert(id.clone()));
            let tds = valid_tasks(&suite, &ids)?;
            let arch = match &g.arch {
                Some(x) => x.parse::<Arch>().map_err(anyhow::Error::msg)?,
                None => Arch::detect().unwrap_or(Arch::DEFAULT),
            };
            let mut evolve = agent::evolve::EvolveSettings::default();
            if let Some(n) = a.islands {
                evolve.islands = n.max(1);
            }
            let cfg = RunConfig {
                strategy: match a.strategy {
                    StrategyArg::CoderJudge => Strategy::CoderJudge,
                    StrategyArg::Evolve => Strategy::Evolve,
                },
                judge_profile: a.judge_model.clone().unwrap_or_else(|| model.clone()),
                coder_profile: model.clone(),
                tasks: ids,
                task_hashes: tds
                    .iter()
                    .map(|t| (t.task.id.clone(), t.content_hash.clone()))
                    .collect(),
                rounds: a.rounds,
                budget: RunBudget {
                    max_usd: a.budget_usd,
                    max_tokens: a.budget_tokens,
                    max_llm_calls: None,
                    max_wall_s: a.max_wall,
                },
                dry_run: a.dry_run,
                arch: arch.to_string(),
                seed_with_reference: !a.no_seed,
                evolve,
                first_shapes: a.first_shapes,
            };
            let name = a
                .name
                .clone()
                .unwrap_or_else(|| format!("{model}-{}", now_s()));
            (cfg, name, false)
        }
    };

    // Without a GPU a real run cannot evaluate anything: say so before any LLM is configured.
    let gpu = if config.dry_run {
        None
    } else {
        let chosen = match choose_gpus(a.gpus.as_ref(), |e| {
            format!(
                "`ksmith run` without --dry-run verifies and times kernels on a CUDA GPU, and this \
                 machine has none usable: {e}\n(--dry-run compiles the candidates without a GPU)"
            )
        }) {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        let (new, facts, cal) = gpu_identity(&chosen.info, a.results.as_deref());
        Some((new, facts, cal, GpuSlot::for_ordinals(&chosen.ordinals)))
    };
    // --profile: ncu is found before any LLM is configured, or the run does not start.
    let ncu = match (a.profile, gpu.is_some()) {
        (false, _) => None,
        (true, false) => {
            eprintln!("note: --profile is ignored in a dry run (nothing runs on a GPU)");
            None
        }
        (true, true) => match bench_suite::profile::locate("ncu", a.ncu.as_deref()) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: --profile needs Nsight Compute: {e}");
                return Ok(EXIT_HARNESS);
            }
        },
    };

    let tds = valid_tasks(&suite, &config.tasks)?;
    let tasks: TaskMap = tds
        .into_iter()
        .map(|t| (t.task.id.clone(), Arc::new(t)))
        .collect();
    let llm = load_llm_config(&config_path(a))?;
    let clients = ClientPool::new(llm);
    let coder = clients.get(&config.coder_profile)?;
    let judge = clients.get(&config.judge_profile)?;

    let (comp, _) = compiler(g)?;
    let arch: Arch = config.arch.parse().map_err(anyhow::Error::msg)?;
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut device = DeviceFacts {
        compute_capability: Some((arch.major, arch.minor)),
        nvrtc_version: Some(format!("{}.{}", comp.nvrtc.version.0, comp.nvrtc.version.1)),
        ..DeviceFacts::default()
    };
    let mut gpu_count = 1;
    let mut profiled_runner: Option<Arc<PoolRunner>> = None;
    let (evaluator, target): (Arc<dyn Evaluator>, EvalTarget) = match gpu {
        None => (
            Arc::new(DryRunEvaluator::new(tasks.clone(), comp, arch, jobs)),
            EvalTarget::DryRun,
        ),
        Some((gpu, facts, cal, slots)) => {
            device = DeviceFacts {
                nvrtc_version: device.nvrtc_version,
                ..facts
            };
            gpu_count = slots.len();
            let gpu_id = store.write(|tx| tx.upsert_gpu(&gpu))?;
            let protocol = gpu_protocol(config.first_shapes);
            let mut runner = PoolRunner::on_workers(
                g,
                slots,
                Duration::from_secs(300),
                Duration::from_secs(600),
                cal,
                config.first_shapes,
            )?;
            if let Some(ncu) = ncu {
                runner = runner.with_profiling(AgentProfiling::new(
                    Box::new(NcuProfiler {
                        global: global_copy(g),
                        ncu,
                        tasks_root: std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone()),
                        limit: Duration::from_secs(600),
                    }),
                    Some(ProfileRows::new(
                        Arc::clone(&store),
                        config.task_hashes.clone(),
                        gpu.gpu_key.clone(),
                        protocol.clone(),
                    )),
                ));
            }
            let runner = Arc::new(runner);
            if runner.profiling.is_some() {
                profiled_runner = Some(Arc::clone(&runner));
            }
            let gpu_eval = Arc::new(GpuEvaluator::new(tasks.clone(), comp, arch, runner, jobs));
            (
                Arc::new(CachedEvaluator {
                    inner: gpu_eval,
                    store: Arc::clone(&store),
                    task_hashes: config.task_hashes.clone(),
                    gpu_key: gpu.gpu_key.clone(),
                    protocol: protocol.clone(),
                }),
                EvalTarget::Gpu {
                    gpu_id,
                    gpu_key: gpu.gpu_key,
                    protocol,
                },
            )
        }
    };

    let per_task = u64::from(config.rounds.max(1))
        * match config.strategy {
            Strategy::CoderJudge => 1,
            Strategy::Evolve => {
                u64::from(config.evolve.islands.max(1)) * u64::from(config.evolve.offspring.max(1))
            }
        }
        + 1;
    let bar = progress_bar(per_task * config.tasks.len() as u64, a.json);
    let bar_cb = bar.clone();
    let progress: ProgressFn = Arc::new(move |e: &RunEvent| match e {
        RunEvent::Candidate {
            task,
            round,
            verdict,
        } => {
            bar_cb.inc(1);
            bar_cb.set_message(format!("{task} r{round}: {verdict}"));
        }
        RunEvent::LlmCall {
            task,
            role,
            replayed,
            ..
        } => bar_cb.set_message(format!(
            "{task}: {role}{}",
            if *replayed { " (replayed)" } else { "" }
        )),
    });

    let parallel = a
        .parallel
        .unwrap_or_else(|| default_parallel(config.tasks.len(), gpu_count));
    let report = execute(RunSetup {
        store: Arc::clone(&store),
        name,
        config: config.clone(),
        tasks,
        coder,
        judge,
        renderer: Arc::new(PromptRenderer::builtin()?),
        evaluator,
        target,
        parallel,
        progress: Some(progress),
        device,
        resume,
        suite_label: if a.suite.is_some() {
            "seed".into()
        } else {
            "custom".into()
        },
        git_rev: git_rev(),
        handle_signals: true,
    })?;
    bar.finish_and_clear();
    if let Some(r) = &profiled_runner {
        let left = r.flush_profiles();
        if left > 0 {
            eprintln!("note: {left} profile(s) not stored: their evaluations are not in the store");
        }
    }
    print_report(&report, a.json)?;
    Ok(exit_code(&report))
}

/// Tasks searched at once by default: up to 4 (LLM calls overlap with evaluations), and at
/// least one per GPU so that no GPU of the run waits idle while tasks are left.
fn default_parallel(tasks: usize, gpus: usize) -> usize {
    tasks.clamp(1, gpus.max(4))
}

fn exit_code(r: &RunReport) -> u8 {
    if r.harness_error.is_some() || r.status != "finished" {
        return EXIT_HARNESS;
    }
    if r.tasks.iter().any(|t| t.passed == 0) {
        return EXIT_FAILED;
    }
    EXIT_OK
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

fn print_report(r: &RunReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        if r.harness_error.is_some() {
            eprintln!("continue with: ksmith run --resume {}", r.run);
        }
        return Ok(());
    }
    let mut t = table();
    t.set_header(vec![
        "task",
        "status",
        "stop",
        "kernels",
        "passed",
        "best",
        "calls",
        "tokens in/out",
        "cost $",
    ]);
    for s in &r.tasks {
        let best = match (&s.best_round, &s.best_verdict) {
            (Some(round), Some(v)) => match s.best_speedup {
                Some(x) => format!("r{round} {v} {x:.2}x"),
                None => format!("r{round} {v}"),
            },
            _ => "-".into(),
        };
        t.add_row(vec![
            Cell::new(&s.task),
            Cell::new(&s.status),
            Cell::new(s.stop.as_deref().unwrap_or("")),
            Cell::new(s.candidates),
            Cell::new(s.passed),
            Cell::new(best),
            Cell::new(s.llm_calls),
            Cell::new(format!("{}/{}", s.tokens_in, s.tokens_out)),
            Cell::new(format!("{:.4}", s.usd)),
        ]);
    }
    println!("{t}");
    println!(
        "run `{}` ({}{}): {}; {} LLM calls, {} tokens in, {} out, ${:.4}{}; {:.1} s",
        r.run,
        r.strategy,
        if r.dry_run { ", dry run" } else { "" },
        r.status,
        r.totals.llm_calls,
        r.totals.tokens_in,
        r.totals.tokens_out,
        r.totals.usd,
        if r.replayed_calls > 0 {
            format!(" ({} replayed from the store)", r.replayed_calls)
        } else {
            String::new()
        },
        r.wall_s
    );
    if let Some(e) = &r.harness_error {
        eprintln!("error: {e}");
        eprintln!("continue with: ksmith run --resume {}", r.run);
    }
    Ok(())
}

/// `f` over `items` on `threads` threads, results in the order of `items`. The first error
/// stops the threads from starting new items and is returned.
fn map_in_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { return };
                match f(item) {
                    Ok(r) => results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r),
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.ok_or_else(|| anyhow::anyhow!("item {i} was never processed")))
        .collect()
}

/// `ksmith replay --run RUN`: every candidate of the run, evaluated on this machine's GPUs
/// (`--gpus`, one candidate per GPU at a time); the results become evaluations of the same
/// candidates under this GPU model's key (cached ones reused).
pub fn replay(g: &Global, a: &ReplayArgs) -> anyhow::Result<u8> {
    // First: without a GPU nothing below can work, and the user should hear that plainly.
    let chosen = match choose_gpus(a.gpus.as_ref(), |e| {
        format!(
            "`ksmith replay` re-evaluates kernels on a GPU, and this machine has none usable: {e}"
        )
    }) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let (gpu, _, cal) = gpu_identity(&chosen.info, a.results.as_deref());
    let store = Store::open(&Store::resolve_url(a.db.as_deref()))?;
    let run = store.run_by_name(&a.run)?;
    // The run's own shape restriction, so that its results compare like with like.
    let first_shapes = load_config(&store, &a.run)
        .ok()
        .and_then(|c| c.first_shapes);
    let protocol = gpu_protocol(first_shapes);
    let root = suite::locate(g.tasks_dir.as_deref())?;
    let suite = Suite::discover(&root)?;
    let tasks_by_store_id: BTreeMap<i64, store::Task> = store
        .tasks_of_run(run.id)?
        .into_iter()
        .map(|t| (t.id, t))
        .collect();
    let gpu_id = store.write(|tx| tx.upsert_gpu(&gpu))?;
    let (comp, _) = compiler(g)?;
    let arch = match &g.arch {
        Some(x) => x.parse::<Arch>().map_err(anyhow::Error::msg)?,
        None => Arch::detect().unwrap_or(Arch::DEFAULT),
    };
    let mut taskmap: TaskMap = BTreeMap::new();
    for t in tasks_by_store_id.values() {
        if let Some(Entry::Ok(td)) = suite.get(&t.task.name) {
            if td.content_hash == t.task.content_hash {
                taskmap.insert(td.task.id.clone(), Arc::new((**td).clone()));
            }
        }
    }
    let limit = Duration::from_secs(a.timeout.max(1));
    let gpus = GpuSlot::for_ordinals(&chosen.ordinals);
    let threads = gpus.len();
    let runner = PoolRunner::on_workers(g, gpus, limit, limit, cal, first_shapes)?;
    // Compiles (CPU) of one GPU's next candidate overlap with the other GPUs' work.
    let evaluator = GpuEvaluator::new(taskmap.clone(), comp, arch, Arc::new(runner), threads);
    let cands = store.candidates_of_run(run.id)?;
    let bar = progress_bar(cands.len() as u64, a.json);
    // One row per candidate, None for one skipped.
    let replayed = map_in_parallel(&cands, threads, |c| {
        bar.inc(1);
        let Some(task) = tasks_by_store_id.get(&c.candidate.task_id) else {
            return Ok(None);
        };
        if !taskmap.contains_key(&task.task.name) {
            // The task changed on disk (or is gone): its results would not be comparable.
            return Ok(None);
        }
        let key = EvalKey {
            candidate_hash: &c.content_hash,
            task_hash: &task.task.content_hash,
            gpu_key: &gpu.gpu_key,
            protocol: &protocol,
        }
        .digest();
        let (verdict, speedup) = if let Some(cached) = store.cached_evaluation(&key)? {
            store.write(|tx| tx.reuse_evaluation(c.id, &cached))?;
            (
                cached.evaluation.verdict.as_str().to_string(),
                cached.evaluation.speedup_ref,
            )
        } else {
            let e = evaluator
                .evaluate(&task.task.name, &c.candidate.source, &c.candidate.plan)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let Some(row) = agent::record::evaluation_row(&e, c.id, gpu_id, key.clone(), &protocol)
            else {
                return Ok(None);
            };
            store.write(|tx| tx.add_evaluation(&row))?;
            (row.verdict.as_str().to_string(), row.speedup_ref)
        };
        Ok(Some((task.task.name.clone(), c.id, verdict, speedup)))
    });
    let replayed = match replayed {
        Ok(r) => r,
        Err(e) => {
            bar.finish_and_clear();
            return Err(e);
        }
    };
    let skipped = replayed.iter().filter(|r| r.is_none()).count();
    let rows: Vec<_> = replayed.into_iter().flatten().collect();
    bar.finish_and_clear();
    let correct = rows.iter().filter(|r| r.2 == "correct").count();
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(t, id, v, x)| {
                serde_json::json!({ "task": t, "candidate": id, "verdict": v, "speedup": x })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "run": a.run, "gpu": gpu.gpu_key, "evaluations": v, "skipped": skipped })
        );
    } else {
        let mut t = table();
        t.set_header(vec!["task", "candidate", "verdict", "vs reference"]);
        for (task, id, v, x) in &rows {
            t.add_row(vec![
                Cell::new(task),
                Cell::new(id),
                Cell::new(v),
                Cell::new(x.map(|x| format!("{x:.2}x")).unwrap_or_default()),
            ]);
        }
        println!("{t}");
        println!(
            "replayed run `{}` on {}: {} candidates, {correct} correct, {skipped} skipped",
            a.run,
            gpu.gpu_key,
            rows.len()
        );
    }
    Ok(if correct > 0 { EXIT_OK } else { EXIT_FAILED })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use verifier::runtime::bench::{CandidateStatus, ShapeFailure};
    use verifier::runtime::calibrate::Rate;
    use verifier::runtime::telemetry::MeasurementTelemetry;
    use verifier::runtime::timing::{ShapeTimings, SubjectTiming};
    use verifier::timing::{speedup, StopReason, Summary};
    use verifier::verdict::Verdict as V;

    fn swiglu() -> TaskDir {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks/activation/swiglu");
        bench_suite::suite::load_task_dir(&dir).unwrap_or_else(|d| panic!("swiglu: {d:?}"))
    }

    fn correct() -> V {
        V::Correct {
            cases: 6,
            nondeterministic_within_tolerance: Vec::new(),
        }
    }

    fn subject(name: &str, samples: &[f64]) -> SubjectTiming {
        SubjectTiming {
            name: name.into(),
            samples_ms: samples.to_vec(),
            summary: Summary::of(samples).expect("samples"),
            warmup_calls: 10,
            warmup_ms: 25.0,
            amortized_ms: None,
            amortized_calls: None,
            revalidation_failure: None,
            throttled_samples: 0,
        }
    }

    /// The reference at 0.4 ms, the candidate at 0.2 ms, interleaved.
    fn shape(name: &str) -> ShapeTimings {
        let (r, c) = (vec![0.4, 0.41, 0.39], vec![0.2, 0.21, 0.19]);
        ShapeTimings {
            shape: name.into(),
            values: vec![("M".into(), 4096), ("N".into(), 4096)],
            pool_sets: 4,
            flush_bytes: 100 << 20,
            stop_reason: StopReason::Converged,
            speedups: vec![speedup(&c, &r)],
            subjects: vec![subject("reference", &r), subject(TIMED_NAME, &c)],
            telemetry: MeasurementTelemetry::default(),
            elapsed_ms: 12.0,
        }
    }

    fn report(shapes: Vec<ShapeTimings>, verdict: V) -> BenchReport {
        let timed = verdict.is_correct();
        BenchReport {
            task: "swiglu".into(),
            content: "h".into(),
            device: "test".into(),
            subjects: vec!["reference".into(), TIMED_NAME.into()],
            candidates: vec![CandidateStatus {
                name: TIMED_NAME.into(),
                verdict,
                timed,
            }],
            shapes,
            failures: Vec::new(),
            log: Vec::new(),
        }
    }

    /// 1 TB/s copy bandwidth, 50 TFLOP/s fp32: swiglu `small` (96 MiB moved) has a floor of
    /// about 100.7 us.
    fn calibration() -> Calibration {
        let rate = |per_s: f64| Rate {
            per_s,
            method: "test".into(),
            repetitions: 1,
            best_ms: 1.0,
        };
        Calibration {
            version: 1,
            gpu_key: "test".into(),
            device: "test".into(),
            arch: "sm_90".into(),
            measured_at: 0,
            bandwidth: Some(rate(1e12)),
            copy_kernel: None,
            memcpy_dtod: None,
            peaks: BTreeMap::from([("fp32".to_string(), rate(50e12))]),
            skipped: BTreeMap::new(),
            telemetry: MeasurementTelemetry::default(),
        }
    }

    #[test]
    fn report_becomes_per_shape_timings_with_reference_and_sol() {
        let td = swiglu();
        let (t, note) = timings_from_report(
            &td.task,
            &report(vec![shape("small")], correct()),
            Some(&calibration()),
        );
        assert_eq!(note, None);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].shape, "small");
        assert!((t[0].median_us.expect("median") - 200.0).abs() < 1e-9);
        assert!((t[0].reference_us.expect("reference") - 400.0).abs() < 1e-6);
        let floor = 2.0 * 4096.0 * 4096.0 * 3.0 / 1e12 * 1e6;
        assert!((t[0].floor_us.expect("floor") - floor).abs() < 1e-6);
        assert!((t[0].sol_pct.expect("sol") - floor / 200.0 * 100.0).abs() < 1e-6);

        // No calibration: times and speedup, no SOL.
        let (t, _) = timings_from_report(&td.task, &report(vec![shape("small")], correct()), None);
        assert_eq!((t[0].sol_pct, t[0].floor_us), (None, None));
        assert!(t[0].reference_us.is_some());
    }

    #[test]
    fn partial_failed_and_revalidated_timings_are_noted() {
        let td = swiglu();
        // One shape timed, one failed: the timed one is kept, the failure noted.
        let mut r = report(vec![shape("small")], correct());
        r.failures.push(ShapeFailure {
            shape: "realistic".into(),
            message: "out of memory".into(),
            subject: None,
        });
        let (t, note) = timings_from_report(&td.task, &r, None);
        assert_eq!(t.len(), 1);
        let note = note.expect("note");
        assert!(
            note.contains("realistic could not be timed: out of memory"),
            "{note}"
        );
        assert!(!note.contains("untimed"), "{note}");

        // Nothing timed: untimed, with the reasons.
        r.shapes.clear();
        let (t, note) = timings_from_report(&td.task, &r, None);
        assert!(t.is_empty());
        let note = note.expect("note");
        assert!(
            note.contains("out of memory") && note.ends_with("the kernel is correct but untimed"),
            "{note}"
        );

        // The candidate's output changed under the timing loop: no time is credited.
        let mut s = shape("small");
        s.subjects[1].revalidation_failure = Some("y differs at [0, 3]".into());
        let (t, note) = timings_from_report(&td.task, &report(vec![s], correct()), None);
        assert!(t.is_empty());
        assert!(note.expect("note").contains("y differs at [0, 3]"));

        // The timing run's own check rejected the kernel.
        let wrong = V::Timeout {
            case: None,
            limit_ms: 1000,
        };
        let (t, note) = timings_from_report(&td.task, &report(Vec::new(), wrong), None);
        assert!(t.is_empty());
        assert!(note.expect("note").contains("found timeout"));
    }

    fn gpu0() -> GpuSlot {
        GpuSlot {
            ordinal: 0,
            visible: "0".into(),
        }
    }

    struct FakeTimer(Result<BenchReport, String>, std::sync::atomic::AtomicUsize);

    impl KernelTimer for FakeTimer {
        fn time(
            &self,
            _: &GpuSlot,
            task: &TaskDir,
            _: &str,
            _: &str,
            shapes: &[String],
        ) -> Result<BenchReport, String> {
            assert_eq!(task.task.id, "swiglu");
            assert_eq!(shapes, ["small".to_string()]);
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.clone()
        }
    }

    #[test]
    fn only_correct_kernels_are_timed_and_a_timing_failure_keeps_them_correct() {
        let td = swiglu();
        let shapes = shapes_of(&td.task, Some(1));
        assert_eq!(shapes, ["small"]);
        assert!(shapes_of(&td.task, None).is_empty(), "None: every shape");

        let ok = FakeTimer(
            Ok(report(vec![shape("small")], correct())),
            Default::default(),
        );
        let run = verdict_with_timings(correct(), Some(&ok), &gpu0(), &td, "s", "p", &shapes, None);
        assert!(run.verdict.is_correct());
        assert_eq!(run.timings.len(), 1);
        assert_eq!(run.note, None);

        let failing = V::Timeout {
            case: None,
            limit_ms: 1000,
        };
        let run = verdict_with_timings(failing, Some(&ok), &gpu0(), &td, "s", "p", &shapes, None);
        assert!(run.timings.is_empty() && run.note.is_none());
        assert_eq!(
            ok.1.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a failing kernel is not timed"
        );

        let broken = FakeTimer(
            Err("the timing run failed: did not finish within 600 s".into()),
            Default::default(),
        );
        let run = verdict_with_timings(
            correct(),
            Some(&broken),
            &gpu0(),
            &td,
            "s",
            "p",
            &shapes,
            None,
        );
        assert!(
            run.verdict.is_correct(),
            "a timing failure is not the kernel's verdict"
        );
        assert!(run.timings.is_empty());
        let note = run.note.expect("note");
        assert!(
            note.contains("did not finish within 600 s") && note.contains("correct but untimed"),
            "{note}"
        );

        let run = verdict_with_timings(correct(), None, &gpu0(), &td, "s", "p", &shapes, None);
        assert!(run.timings.is_empty() && run.note.is_none());
    }

    #[test]
    fn restricted_runs_get_their_own_protocol_label() {
        assert_eq!(gpu_protocol(None), GPU_PROTOCOL);
        assert_eq!(gpu_protocol(Some(2)), format!("{GPU_PROTOCOL}+first2"));
        assert_ne!(gpu_protocol(Some(1)), gpu_protocol(None));
    }

    /// Two fake GPUs. Each records what runs on it; verification and timing both sleep, so
    /// that overlap would be seen. The first two verifications meet at a rendezvous that only
    /// two evaluations running at once can pass: GPUs work in parallel.
    #[derive(Default)]
    struct FakeGpus {
        /// Per GPU: how many things run on it now (must never exceed 1).
        busy: [AtomicUsize; 2],
        /// Per GPU: the most that ever ran on it at once.
        most: [AtomicUsize; 2],
        /// (kernel source, GPU index) of each verification and of each timing.
        verified: Mutex<Vec<(String, usize)>>,
        timed: Mutex<Vec<(String, u32, String)>>,
        rendezvous: (Mutex<usize>, std::sync::Condvar),
        calls: AtomicUsize,
        never_met: AtomicBool,
    }

    impl FakeGpus {
        fn enter(&self, gpu: usize) {
            let now = self.busy[gpu].fetch_add(1, Ordering::SeqCst) + 1;
            self.most[gpu].fetch_max(now, Ordering::SeqCst);
        }

        fn leave(&self, gpu: usize) {
            self.busy[gpu].fetch_sub(1, Ordering::SeqCst);
        }

        /// Waits (at most 5 s) until two callers are here; false if the other never came.
        fn meet(&self) -> bool {
            let (count, cv) = &self.rendezvous;
            let mut n = count.lock().unwrap();
            *n += 1;
            if *n >= 2 {
                cv.notify_all();
                return true;
            }
            let (n, _) = cv
                .wait_timeout_while(n, Duration::from_secs(5), |n| *n < 2)
                .unwrap();
            *n >= 2
        }
    }

    struct FakeVerify(Arc<FakeGpus>);

    impl Verify for FakeVerify {
        fn verify(&self, gpu: usize, r: EvaluateRequest) -> Result<V, String> {
            let f = &self.0;
            f.enter(gpu);
            if f.calls.fetch_add(1, Ordering::SeqCst) < 2 && !f.meet() {
                f.never_met.store(true, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(5));
            f.verified.lock().unwrap().push((r.source.clone(), gpu));
            f.leave(gpu);
            // Every third kernel is wrong, and must not be timed.
            if r.source.ends_with('2') || r.source.ends_with('5') || r.source.ends_with('8') {
                Ok(V::Timeout {
                    case: None,
                    limit_ms: 1,
                })
            } else {
                Ok(correct())
            }
        }
    }

    struct SlotTimer(Arc<FakeGpus>, Vec<GpuSlot>);

    impl KernelTimer for SlotTimer {
        fn time(
            &self,
            gpu: &GpuSlot,
            _: &TaskDir,
            source: &str,
            _: &str,
            _: &[String],
        ) -> Result<BenchReport, String> {
            let f = &self.0;
            let i = self
                .1
                .iter()
                .position(|s| s == gpu)
                .expect("a GPU of the run");
            f.enter(i);
            std::thread::sleep(Duration::from_millis(5));
            f.timed
                .lock()
                .unwrap()
                .push((source.to_string(), gpu.ordinal, gpu.visible.clone()));
            f.leave(i);
            Ok(report(vec![shape("small")], correct()))
        }
    }

    #[test]
    fn gpus_work_in_parallel_one_thing_at_a_time_each_and_time_what_they_verified() {
        let td = Arc::new(swiglu());
        let fake = Arc::new(FakeGpus::default());
        // Ordinals 3 and 5 of this process, shown to children as GPU-b and GPU-d.
        let gpus = vec![
            GpuSlot {
                ordinal: 3,
                visible: "GPU-b".into(),
            },
            GpuSlot {
                ordinal: 5,
                visible: "GPU-d".into(),
            },
        ];
        let runner = PoolRunner::new(
            Box::new(FakeVerify(Arc::clone(&fake))),
            gpus.clone(),
            Some(Box::new(SlotTimer(Arc::clone(&fake), gpus.clone()))),
            None,
            Some(1),
        );
        let runs: Vec<String> = (0..12).map(|i| format!("kernel-{i}")).collect();
        let done = map_in_parallel(&runs, 4, |src| {
            runner
                .run(&td, src, "plan")
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .expect("every run");
        assert_eq!(done.len(), 12);
        for (src, r) in runs.iter().zip(&done) {
            let wrong = src.ends_with('2') || src.ends_with('5') || src.ends_with('8');
            assert_eq!(r.verdict.is_correct(), !wrong, "{src}");
            assert_eq!(r.timings.is_empty(), wrong, "{src}");
        }
        for g in 0..2 {
            assert_eq!(
                fake.most[g].load(Ordering::SeqCst),
                1,
                "GPU {g} never ran two things at once"
            );
        }
        let verified = fake.verified.lock().unwrap().clone();
        let timed = fake.timed.lock().unwrap().clone();
        assert_eq!(verified.len(), 12);
        assert_eq!(timed.len(), 9, "only correct kernels are timed");
        for (src, ordinal, visible) in &timed {
            let (_, g) = verified.iter().find(|(s, _)| s == src).expect("verified");
            assert_eq!(
                &gpus[*g].ordinal, ordinal,
                "{src} timed where it was verified"
            );
            assert_eq!(&gpus[*g].visible, visible, "{src}");
        }
        assert!(
            verified.iter().any(|(_, g)| *g == 0) && verified.iter().any(|(_, g)| *g == 1),
            "both GPUs were used: {verified:?}"
        );
        assert!(
            !fake.never_met.load(Ordering::SeqCst),
            "the first two evaluations ran at the same time, on two GPUs"
        );
    }

    #[test]
    fn parallel_map_keeps_order_and_stops_at_the_first_error() {
        let items: Vec<u32> = (0..40).collect();
        let out = map_in_parallel(&items, 3, |x| Ok(x * 2)).unwrap();
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert!(map_in_parallel(&Vec::<u32>::new(), 2, |x| Ok(*x))
            .unwrap()
            .is_empty());

        let failing = |seen: &AtomicUsize, x: &u32| {
            seen.fetch_add(1, Ordering::SeqCst);
            if *x == 3 {
                anyhow::bail!("store is gone at {x}")
            }
            Ok(*x)
        };
        // One thread: nothing after the failing item starts.
        let seen = AtomicUsize::new(0);
        let e = map_in_parallel(&items, 1, |x| failing(&seen, x)).unwrap_err();
        assert_eq!(e.to_string(), "store is gone at 3");
        assert_eq!(seen.load(Ordering::SeqCst), 4);
        let seen = AtomicUsize::new(0);
        let e = map_in_parallel(&items, 3, |x| failing(&seen, x)).unwrap_err();
        assert_eq!(e.to_string(), "store is gone at 3");
    }

    #[test]
    fn default_parallelism_keeps_every_gpu_busy() {
        assert_eq!(default_parallel(1, 1), 1);
        assert_eq!(default_parallel(10, 1), 4);
        assert_eq!(default_parallel(3, 2), 3);
        assert_eq!(default_parallel(10, 8), 8);
        assert_eq!(default_parallel(0, 2), 1);
    }

    fn parse(args: &[&str]) -> Result<crate::cli::Cli, clap::Error> {
        use clap::Parser;
        crate::cli::Cli::try_parse_from(std::iter::once("ksmith").chain(args.iter().copied()))
    }

    fn gpus_of(cli: crate::cli::Cli) -> Option<GpuSelection> {
        match cli.command {
            crate::cli::Command::Run(a) => a.gpus,
            crate::cli::Command::Replay(a) => a.gpus,
            _ => panic!("not run or replay"),
        }
    }

    #[test]
    fn gpus_flag_parses_on_run_and_replay() {
        let run = |extra: &[&str]| {
            let mut v = vec!["run", "--model", "m", "--tasks", "swiglu"];
            v.extend_from_slice(extra);
            parse(&v)
        };
        assert_eq!(gpus_of(run(&[]).unwrap()), None);
        assert_eq!(
            gpus_of(run(&["--gpus", "0,1"]).unwrap()),
            Some(GpuSelection::List(vec![0, 1]))
        );
        assert_eq!(
            gpus_of(run(&["--gpus", "all"]).unwrap()),
            Some(GpuSelection::All)
        );
        assert_eq!(
            gpus_of(parse(&["replay", "--run", "r", "--gpus=2"]).unwrap()),
            Some(GpuSelection::List(vec![2]))
        );
        for (bad, why) in [
            ("x", "`x` is not a GPU ordinal"),
            ("0,0", "GPU 0 is listed twice"),
            ("", "empty"),
            ("1,", "empty entry"),
        ] {
            for e in [
                run(&["--gpus", bad]).expect_err(bad),
                parse(&["replay", "--run", "r", "--gpus", bad]).expect_err(bad),
            ] {
                assert_eq!(e.exit_code(), 2, "{bad}");
                let text = e.to_string();
                assert!(
                    text.contains("--gpus") && text.contains(why),
                    "{bad}: {text}"
                );
            }
        }
    }

    /// A worker stand-in that reports the device it was given as the verdict's case count.
    const DEVICE_ECHO: &str = r#"
while IFS= read -r line; do
  [[ $line =~ \"id\":([0-9]+) ]] && id=${BASH_REMATCH[1]}
  sleep 0.05
  printf '{"id":%s,"kind":"evaluated","verdict":{"verdict":"correct","cases":%s,"nondeterministic_within_tolerance":[]},"elapsed_ms":1}\n' "$id" "$CUDA_VISIBLE_DEVICES"
done
"#;

    struct VisibleTimer(Mutex<Vec<(String, String)>>);

    impl KernelTimer for Arc<VisibleTimer> {
        fn time(
            &self,
            gpu: &GpuSlot,
            _: &TaskDir,
            source: &str,
            _: &str,
            _: &[String],
        ) -> Result<BenchReport, String> {
            self.0
                .lock()
                .unwrap()
                .push((source.to_string(), gpu.visible.clone()));
            Ok(report(vec![shape("small")], correct()))
        }
    }

    /// The real worker pool behind the runner: the worker that verifies a kernel and the
    /// timing child see the same CUDA_VISIBLE_DEVICES, for every kernel, with both GPUs used.
    #[test]
    fn the_verifying_worker_and_the_timing_child_see_the_same_device() {
        if std::env::var_os("CUDA_VISIBLE_DEVICES").is_some() {
            eprintln!("SKIPPED: CUDA_VISIBLE_DEVICES is set here; the stand-in echoes numbers");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("worker.sh");
        std::fs::write(&script, DEVICE_ECHO).unwrap();
        let command = WorkerCommand {
            program: "bash".into(),
            args: vec![script.display().to_string()],
            env: Vec::new(),
        };
        let gpus = GpuSlot::for_ordinals(&[0, 1]);
        let pool = Pool::new(PoolConfig::per_gpu(
            command,
            &[0, 1],
            Duration::from_secs(10),
        ));
        let timer = Arc::new(VisibleTimer(Mutex::new(Vec::new())));
        let runner = PoolRunner::new(
            Box::new(pool),
            gpus,
            Some(Box::new(Arc::clone(&timer))),
            None,
            Some(1),
        );
        let td = swiglu();
        let sources: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
        let verdicts = map_in_parallel(&sources, 4, |src| {
            runner
                .run(&td, src, "plan")
                .map(|r| r.verdict)
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .unwrap();
        let timed = timer.0.lock().unwrap().clone();
        assert_eq!(timed.len(), 8);
        let mut seen = std::collections::BTreeSet::new();
        for (src, v) in sources.iter().zip(&verdicts) {
            let V::Correct { cases, .. } = v else {
                panic!("{src}: {v:?}")
            };
            let (_, visible) = timed.iter().find(|(s, _)| s == src).unwrap();
            assert_eq!(&cases.to_string(), visible, "{src}");
            seen.insert(visible.clone());
        }
        assert_eq!(seen.len(), 2, "both GPUs served: {seen:?}");
    }
}
