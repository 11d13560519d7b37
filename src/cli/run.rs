//! `ksmith run` (an agent run over tasks, resumable) and `ksmith replay` (re-evaluate a run's
//! candidates on this machine's GPU, no LLM involved).
//!
//! Exit codes: 0 every task ended with a passing kernel (correct; `compiled` in a dry run);
//! 1 the run finished but some task has none; 3 the harness could not run or was interrupted
//! (no config, NVRTC or GPU; provider or store failure) — `--resume RUN` continues it.

use super::tasks::compiler;
use super::{Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK};
use agent::evaluate::{DryRunEvaluator, GpuEvaluator, KernelRun, KernelRunner, TaskMap};
use agent::llm::{ClientPool, LlmConfig};
use agent::prompt::{DeviceFacts, PromptRenderer};
use agent::r#loop::Evaluator;
use agent::record::{CachedEvaluator, EvalTarget, ProgressFn, RunBudget, RunEvent};
use agent::run::{execute, load_config, RunConfig, RunReport, RunSetup, Strategy};
use anyhow::{bail, Context};
use bench_suite::pool::{Limits, Pool, PoolConfig, WorkerCommand};
use bench_suite::store::{self, EvalKey, NewEvaluation, NewGpu, Store};
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
use verifier::protocol::{EvalOptions, EvaluateRequest};

/// Protocol label of GPU evaluations made by the agent and by replays (part of the cache key).
const GPU_PROTOCOL: &str = "strict-v1";

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
    /// Tasks searched at once [default: min(tasks, 4)]
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Do not start from the task's reference kernel
    #[arg(long)]
    pub no_seed: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The run whose candidates to re-evaluate
    #[arg(long, value_name = "RUN")]
    pub run: String,
    /// Result database URL [default: $KSMITH_DB, else sqlite://results/ksmith.db]
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Wall-clock limit per candidate, in seconds
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
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

/// The strict protocol on `ksmith worker` subprocesses (one per visible GPU 0).
struct PoolRunner {
    pool: Pool,
}

impl KernelRunner for PoolRunner {
    fn run(&self, task: &TaskDir, source: &str, plan_toml: &str) -> Result<KernelRun, String> {
        let fresh = verifier::inputs::fresh_seed();
        let options = EvalOptions {
            fresh_seed: Some(fresh),
            heldout_seed: fresh,
            ..EvalOptions::default()
        };
        let req = EvaluateRequest {
            task_dir: task.dir.clone(),
            source: source.to_string(),
            plan: plan_toml.to_string(),
            options,
        };
        // The worker's `evaluate` verifies only; timings join when it (or a bench request)
        // reports them.
        match self.pool.evaluate(vec![req]).into_iter().next() {
            Some(reply) => reply.verdict().cloned().map(|verdict| KernelRun {
                verdict,
                timings: Vec::new(),
            }),
            None => Err("the worker pool returned no reply".into()),
        }
    }
}

/// Opens GPU 0 to learn what it is, or says why there is none.
fn gpu_identity() -> Result<(NewGpu, DeviceFacts), String> {
    let gpu = verifier::runtime::Gpu::open(0).map_err(|e| e.to_string())?;
    let i = &gpu.info;
    let cc = format!("{}.{}", i.compute_capability.0, i.compute_capability.1);
    let driver = format!(
        "{}.{}",
        i.driver_version / 1000,
        (i.driver_version % 1000) / 10
    );
    let new = NewGpu {
        gpu_key: format!(
            "{}|sm_{}{}|driver {driver}",
            i.name, i.compute_capability.0, i.compute_capability.1
        ),
        name: i.name.clone(),
        compute_capability: cc,
        sm_count: Some(i64::from(i.sm_count)),
        memory_bytes: i64::try_from(i.total_memory_bytes).ok(),
        driver_version: driver.clone(),
        details: serde_json::json!({ "l2_cache_bytes": i.l2_cache_bytes }),
    };
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
        driver_version: Some(driver),
        ..DeviceFacts::default()
    };
    Ok((new, facts))
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
            };
            let name = a
                .name
                .clone()
                .unwrap_or_else(|| format!("{model}-{}", now_s()));
            (cfg, name, false)
        }
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
    let (evaluator, target): (Arc<dyn Evaluator>, EvalTarget) = if config.dry_run {
        (
            Arc::new(DryRunEvaluator::new(tasks.clone(), comp, arch, jobs)),
            EvalTarget::DryRun,
        )
    } else {
        let (gpu, facts) = gpu_identity()
            .map_err(|e| anyhow::anyhow!("`ksmith run` without --dry-run needs a CUDA GPU: {e}"))?;
        device = DeviceFacts {
            nvrtc_version: device.nvrtc_version,
            ..facts
        };
        let gpu_id = store.write(|tx| tx.upsert_gpu(&gpu))?;
        let pool = Pool::new(PoolConfig {
            command: worker_command(g)?,
            workers: vec![Vec::new()],
            request_timeout: Duration::from_secs(300),
            limits: Limits::default(),
        });
        let runner = Arc::new(PoolRunner { pool });
        let gpu_eval = Arc::new(GpuEvaluator::new(tasks.clone(), comp, arch, runner, jobs));
        (
            Arc::new(CachedEvaluator {
                inner: gpu_eval,
                store: Arc::clone(&store),
                task_hashes: config.task_hashes.clone(),
                gpu_key: gpu.gpu_key.clone(),
                protocol: GPU_PROTOCOL.into(),
            }),
            EvalTarget::Gpu {
                gpu_id,
                gpu_key: gpu.gpu_key,
                protocol: GPU_PROTOCOL.into(),
            },
        )
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

    let parallel = a.parallel.unwrap_or_else(|| config.tasks.len().clamp(1, 4));
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
    print_report(&report, a.json)?;
    Ok(exit_code(&report))
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

/// `ksmith replay --run RUN`: every candidate of the run, evaluated on this machine's GPU; the
/// results become evaluations of the same candidates under this GPU's key (cached ones reused).
pub fn replay(g: &Global, a: &ReplayArgs) -> anyhow::Result<u8> {
    // First: without a GPU nothing below can work, and the user should hear that plainly.
    let (gpu, _) = match gpu_identity() {
        Ok(x) => x,
        Err(e) => {
            eprintln!(
                "error: `ksmith replay` re-evaluates kernels on a GPU, and this machine has none usable: {e}"
            );
            return Ok(EXIT_HARNESS);
        }
    };
    let store = Store::open(&Store::resolve_url(a.db.as_deref()))?;
    let run = store.run_by_name(&a.run)?;
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
    let pool = Pool::new(PoolConfig {
        command: worker_command(g)?,
        workers: vec![Vec::new()],
        request_timeout: Duration::from_secs(a.timeout.max(1)),
        limits: Limits::default(),
    });
    let evaluator = GpuEvaluator::new(
        taskmap.clone(),
        comp,
        arch,
        Arc::new(PoolRunner { pool }),
        1,
    );
    let cands = store.candidates_of_run(run.id)?;
    let bar = progress_bar(cands.len() as u64, a.json);
    let mut rows = Vec::new();
    let mut skipped = 0usize;
    for c in &cands {
        bar.inc(1);
        let Some(task) = tasks_by_store_id.get(&c.candidate.task_id) else {
            skipped += 1;
            continue;
        };
        if !taskmap.contains_key(&task.task.name) {
            // The task changed on disk (or is gone): its results would not be comparable.
            skipped += 1;
            continue;
        }
        let key = EvalKey {
            candidate_hash: &c.content_hash,
            task_hash: &task.task.content_hash,
            gpu_key: &gpu.gpu_key,
            protocol: GPU_PROTOCOL,
        }
        .digest();
        let verdict = if let Some(cached) = store.cached_evaluation(&key)? {
            store.write(|tx| tx.reuse_evaluation(c.id, &cached))?;
            cached.evaluation.verdict.as_str().to_string()
        } else {
            let e = evaluator
                .evaluate(&task.task.name, &c.candidate.source, &c.candidate.plan)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let Some(v) = agent::record::store_verdict(e.verdict) else {
                skipped += 1;
                continue;
            };
            store.write(|tx| {
                tx.add_evaluation(&NewEvaluation {
                    candidate_id: c.id,
                    gpu_id: Some(gpu_id),
                    cache_key: key.clone(),
                    protocol: GPU_PROTOCOL.into(),
                    verdict: v,
                    details: serde_json::json!({ "feedback": e.feedback, "resources": e.resources }),
                    compile_ms: None,
                    timings: Vec::new(),
                    speedup_ref: e.speedup(),
                    speedup_eager: None,
                    speedup_compile: None,
                    sol_pct: None,
                    quarantined: false,
                    quarantine_reason: None,
                    cached_from: None,
                })
            })?;
            v.as_str().to_string()
        };
        rows.push((task.task.name.clone(), c.id, verdict));
    }
    bar.finish_and_clear();
    let correct = rows.iter().filter(|r| r.2 == "correct").count();
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(t, id, v)| serde_json::json!({ "task": t, "candidate": id, "verdict": v }))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "run": a.run, "gpu": gpu.gpu_key, "evaluations": v, "skipped": skipped })
        );
    } else {
        let mut t = table();
        t.set_header(vec!["task", "candidate", "verdict"]);
        for (task, id, v) in &rows {
            t.add_row(vec![Cell::new(task), Cell::new(id), Cell::new(v)]);
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
