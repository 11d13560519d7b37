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
mod runner;
mod slots;

pub(crate) use gpus::{choose_here, parse_gpus, Chosen, GpuSelection, SelectError};
use runner::PoolRunner;
pub(crate) use slots::{GpuSlot, Slots};

use super::gpu::{new_gpu, results_dir};
use super::profile::{AgentProfiling, NcuProfiler, ProfileRows};
use super::tasks::compiler;
use super::{Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK, EXIT_USAGE};
use agent::evaluate::{DryRunEvaluator, GpuEvaluator, TaskMap};
use agent::llm::{ClientPool, LlmConfig};
use agent::prompt::{DeviceFacts, PromptRenderer};
use agent::r#loop::Evaluator;
use agent::record::{CachedEvaluator, EvalTarget, ProgressFn, RunBudget, RunEvent};
use agent::run::{execute, load_config, RunConfig, RunReport, RunSetup, Strategy};
use anyhow::bail;
use bench_suite::store::{self, EvalKey, NewGpu, Store};
use bench_suite::suite::{self, Entry, Suite, TaskDir};
use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use verifier::nvrtc::Arch;
use verifier::runtime::calibrate::{gpu_key, load_calibration, Calibration};
use verifier::runtime::DeviceInfo;

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
    #[arg(long, default_value_t = 300, value_name = "SECS", value_parser = crate::cli::timeout_secs())]
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
        out.push(suite.valid_task(id).map_err(anyhow::Error::msg)?.clone());
    }
    Ok(out)
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
        compile_target: Some(i.arch().to_string()),
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
        launch_overhead_us: cal
            .as_ref()
            .and_then(|c| c.launch.as_ref())
            .map(|l| l.median_ms * 1e3),
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
        let slots = GpuSlot::for_ordinals(&chosen.ordinals);
        Some((new, facts, cal, slots, chosen.info))
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
        compile_target: Some(arch.to_string()),
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
        Some((gpu, facts, cal, slots, info)) => {
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
                        global: g.clone(),
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
            let gpu_eval = Arc::new(
                GpuEvaluator::new(tasks.clone(), comp, arch, runner, jobs).on_device(info),
            );
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
    let lanes = vec![(); threads.clamp(1, items.len().max(1))];
    super::parallel::run_lanes(items, lanes, |_, _, item| Ok((f(item)?, false)), |_| {})?
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
    let evaluator = GpuEvaluator::new(taskmap.clone(), comp, arch, Arc::new(runner), threads)
        .on_device(chosen.info.clone());
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
mod tests;
