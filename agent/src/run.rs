//! A whole agent run (`ksmith run`): tasks as the store's work items, one search per task,
//! several tasks at once (their LLM calls overlap; evaluations queue on the evaluator's slots),
//! everything recorded as it happens, and resumable after a kill (DESIGN §7, §8).
//!
//! One work item per task. A task's search is recorded step by step (each LLM call when it
//! returns, each candidate with its evaluation in one transaction) and its item is marked done
//! in a last transaction with its summary. A killed run leaves its item claimed by a dead
//! process; `--resume` hands it back, and the task's search starts again from the top, retracing
//! the recorded calls from the store instead of the provider (same prompts, same replies, no new
//! money, no duplicate rows) until it reaches the point where it was killed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bench_suite::store::{
    self, ItemStatus, NewRun, NewTask, RunStatus, Store, WorkItem, WorkerId, DEFAULT_LEASE,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::evaluate::TaskMap;
use crate::evolve::{self, EvolveSettings};
use crate::llm::LlmClient;
use crate::prompt::{DeviceFacts, PromptContext, PromptRenderer};
use crate::r#loop::{
    Budget, CoderJudgeLoop, Evaluator, LoopObserver, LoopOutcome, LoopSettings, Seed, StopReason,
};
use crate::record::{EvalTarget, ProgressFn, RunBudget, RunRecorder, TaskRef, Totals};
use crate::task_context::{task_context, task_rules};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    CoderJudge,
    Evolve,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::CoderJudge => "coder-judge",
            Strategy::Evolve => "evolve",
        }
    }
}

/// Everything that defines a run, stored in `runs.config` so that `--resume` continues it with
/// the same settings. Holds profile names, never keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub strategy: Strategy,
    pub coder_profile: String,
    pub judge_profile: String,
    /// Task ids, in run order.
    pub tasks: Vec<String>,
    /// Content hash of each task when the run started (a resumed run refuses changed tasks).
    pub task_hashes: BTreeMap<String, String>,
    /// Coder rounds per task (Coder/Judge), or generations per island (evolution).
    pub rounds: u32,
    pub budget: RunBudget,
    pub dry_run: bool,
    /// Compile target, e.g. sm_90a.
    pub arch: String,
    /// Start every search from the task's reference kernel.
    pub seed_with_reference: bool,
    #[serde(default)]
    pub evolve: EvolveSettings,
    /// Verify and time each task at its first N public shapes only (held-out shapes are still
    /// drawn): quicker, weaker runs. `None`: every public shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_shapes: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("run `{run}` cannot be resumed: {message}")]
    Resume { run: String, message: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// What `execute` needs besides the config.
pub struct RunSetup {
    pub store: Arc<Store>,
    pub name: String,
    pub config: RunConfig,
    pub tasks: TaskMap,
    pub coder: LlmClient,
    pub judge: LlmClient,
    pub renderer: Arc<PromptRenderer>,
    pub evaluator: Arc<dyn Evaluator>,
    pub target: EvalTarget,
    /// Tasks searched at once.
    pub parallel: usize,
    pub progress: Option<ProgressFn>,
    pub device: DeviceFacts,
    /// Continue the run named `name` instead of creating it.
    pub resume: bool,
    pub suite_label: String,
    pub git_rev: String,
    /// Stop gracefully on SIGINT / SIGTERM (the CLI; a second signal exits at once).
    pub handle_signals: bool,
}

/// One task's result, as stored in its work item's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub task: String,
    /// pending | claimed | done | failed
    pub status: String,
    pub stop: Option<String>,
    pub candidates: usize,
    /// LLM-written candidates whose evaluation passed (correct; compiled in a dry run). The
    /// reference seed does not count: it says nothing about the model.
    pub passed: usize,
    pub best_round: Option<u32>,
    pub best_verdict: Option<String>,
    pub best_speedup: Option<f64>,
    pub llm_calls: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub usd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run: String,
    pub run_id: i64,
    pub status: String,
    pub strategy: String,
    pub dry_run: bool,
    pub tasks: Vec<TaskSummary>,
    /// All calls the run has recorded (earlier invocations included).
    pub totals: Totals,
    /// Calls answered from the store in this invocation (a resume).
    pub replayed_calls: u64,
    /// A harness failure that stopped work (NVRTC gone, provider down, store failing).
    pub harness_error: Option<String>,
    pub wall_s: f64,
}

/// Reads a stored run's config (for `--resume`).
pub fn load_config(store: &Store, name: &str) -> Result<RunConfig, RunError> {
    let run = store.run_by_name(name)?;
    if run.run.kind != "agent" {
        return Err(RunError::Resume {
            run: name.to_string(),
            message: format!("it is a `{}` run, not an agent run", run.run.kind),
        });
    }
    serde_json::from_value(run.run.config).map_err(|e| RunError::Resume {
        run: name.to_string(),
        message: format!("its stored config does not parse: {e}"),
    })
}

/// Whether a stop leaves the task finished (its search ended) or interrupted by the harness
/// (to be continued by `--resume`).
fn is_harness_stop(s: &StopReason) -> bool {
    matches!(
        s,
        StopReason::Evaluator(_)
            | StopReason::LlmUnavailable
            | StopReason::External(_)
            | StopReason::Prompt(_)
    )
}

fn stop_text(s: &StopReason) -> String {
    match s {
        StopReason::RoundsDone => "rounds done".into(),
        StopReason::CallBudget => "call budget".into(),
        StopReason::TokenBudget => "token budget".into(),
        StopReason::DollarBudget => "dollar budget".into(),
        StopReason::WallTime => "wall time".into(),
        StopReason::LlmUnavailable => "LLM unavailable".into(),
        StopReason::Evaluator(e) => format!("evaluator failed: {e}"),
        StopReason::Prompt(e) => format!("prompt failed: {e}"),
        StopReason::External(e) => e.clone(),
    }
}

fn summarize(task: &str, o: &LoopOutcome) -> TaskSummary {
    let best = o.best();
    TaskSummary {
        task: task.to_string(),
        status: if is_harness_stop(&o.stop) {
            "pending".into()
        } else {
            "done".into()
        },
        stop: Some(stop_text(&o.stop)),
        candidates: o.candidates.iter().filter(|c| c.source.is_some()).count(),
        passed: o
            .candidates
            .iter()
            .filter(|c| c.llm_call_index.is_some())
            .filter(|c| c.evaluation().is_some_and(|e| e.verdict.passed()))
            .count(),
        best_round: best.map(|b| b.round),
        best_verdict: best
            .and_then(|b| b.evaluation())
            .map(|e| e.verdict.as_str().to_string()),
        best_speedup: best.and_then(|b| b.evaluation()).and_then(|e| e.speedup()),
        llm_calls: o.spend.llm_calls,
        tokens_in: o.spend.tokens_in,
        tokens_out: o.spend.tokens_out,
        usd: o.spend.usd,
    }
}

struct Shared {
    setup: RunSetup,
    recorder: Arc<RunRecorder>,
    run_id: i64,
    harness_error: std::sync::Mutex<Option<String>>,
}

/// Runs (or resumes) the run and returns its report. Harness failures inside a task are in the
/// report (`harness_error`), not errors: the rows recorded so far stay, and `--resume` goes on.
pub fn execute(setup: RunSetup) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let store = Arc::clone(&setup.store);
    let cfg = setup.config.clone();

    let mut refs = BTreeMap::new();
    store.write(|tx| {
        for id in &cfg.tasks {
            let Some(td) = setup.tasks.get(id) else {
                continue;
            };
            let store_id = tx.upsert_task(&NewTask {
                name: td.task.id.clone(),
                category: td.task.category.clone(),
                title: td.task.title.clone(),
                content_hash: td.content_hash.clone(),
                details: json!({ "dir": td.dir }),
            })?;
            refs.insert(
                id.clone(),
                TaskRef {
                    store_id,
                    content_hash: td.content_hash.clone(),
                },
            );
        }
        Ok(())
    })?;

    let run = if setup.resume {
        let report = store.resume_run(&setup.name)?;
        if !report.reclaimed.is_empty() {
            tracing::info!(
                "resuming run `{}`: {} interrupted task(s) handed back",
                setup.name,
                report.reclaimed.len()
            );
        }
        report.run
    } else {
        let config = serde_json::to_value(&cfg).map_err(|e| RunError::Resume {
            run: setup.name.clone(),
            message: format!("cannot serialize the config: {e}"),
        })?;
        store.write(|tx| {
            tx.create_run(&NewRun {
                name: setup.name.clone(),
                kind: "agent".into(),
                agent: cfg.coder_profile.clone(),
                suite: setup.suite_label.clone(),
                config,
                git_rev: setup.git_rev.clone(),
            })
        })?
    };
    let items: Vec<WorkItem> = cfg
        .tasks
        .iter()
        .map(|id| WorkItem {
            key: id.clone(),
            task_id: refs.get(id).map(|r| r.store_id),
            payload: json!({}),
        })
        .collect();
    store.add_items(run.id, &items)?;

    let recorder = Arc::new(RunRecorder::new(
        Arc::clone(&store),
        run.id,
        refs,
        setup.target.clone(),
        cfg.budget.clone(),
        setup.progress.clone(),
    )?);
    let parallel = setup.parallel.max(1);
    let shared = Arc::new(Shared {
        setup,
        recorder: Arc::clone(&recorder),
        run_id: run.id,
        harness_error: std::sync::Mutex::new(None),
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let worker_result: Result<(), store::StoreError> = rt.block_on(async {
        if shared.setup.handle_signals {
            tokio::spawn(watch_signals(Arc::clone(&recorder)));
        }
        let mut handles = Vec::new();
        for _ in 0..parallel {
            handles.push(tokio::spawn(worker(Arc::clone(&shared))));
        }
        let mut first_err = None;
        for h in handles {
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(join) => {
                    let mut he = lock(&shared.harness_error);
                    he.get_or_insert(format!("a task worker failed: {join}"));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    drop(rt);
    worker_result?;

    let harness_error = lock(&shared.harness_error).clone();
    let complete = store.finish_run_if_complete(run.id)?;
    if !complete {
        store.write(|tx| tx.set_run_status(run.id, RunStatus::Interrupted))?;
    }
    let status = store.run_by_name(&shared.setup.name)?.status;
    let tasks = store
        .items(run.id)?
        .into_iter()
        .map(|it| {
            let mut s: TaskSummary = it
                .outcome
                .clone()
                .and_then(|o| serde_json::from_value(o).ok())
                .unwrap_or_default();
            s.task = it.item_key.clone();
            s.status = it.status.as_str().to_string();
            s
        })
        .collect();
    Ok(RunReport {
        run: shared.setup.name.clone(),
        run_id: run.id,
        status: status.as_str().to_string(),
        strategy: cfg.strategy.as_str().to_string(),
        dry_run: cfg.dry_run,
        tasks,
        totals: recorder.totals(),
        replayed_calls: recorder.replayed(),
        harness_error,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// First signal: finish the calls in flight, record them, hand unfinished tasks back. Second
/// signal: exit at once (a later `--resume` still loses nothing that was recorded).
async fn watch_signals(recorder: Arc<RunRecorder>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot install signal handlers; Ctrl-C will stop the run abruptly");
            return;
        };
        for n in 0..2 {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                eprintln!(
                    "stopping: waiting for the LLM calls in flight (signal again to quit now; \
                     `--resume` continues either way)"
                );
                recorder.cancel();
            } else {
                std::process::exit(130);
            }
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_ok() {
            recorder.cancel();
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Claims tasks until none is left; each is searched and its item closed.
async fn worker(shared: Arc<Shared>) -> Result<(), store::StoreError> {
    let store = Arc::clone(&shared.setup.store);
    loop {
        if lock(&shared.harness_error).is_some() {
            return Ok(());
        }
        let (s, run_id) = (Arc::clone(&store), shared.run_id);
        let claim = tokio::task::spawn_blocking(move || {
            s.claim_next(run_id, &WorkerId::this_process(), DEFAULT_LEASE)
        })
        .await
        .map_err(|e| store::StoreError::Runtime(std::io::Error::other(e.to_string())))??;
        let Some(claim) = claim else { return Ok(()) };
        let task_id = claim.item_key.clone();
        shared.recorder.reset_task(&task_id);
        let summary = match search_task(&shared, &task_id).await {
            Ok(s) => s,
            Err(message) => TaskSummary {
                task: task_id.clone(),
                status: "pending".into(),
                stop: Some(message),
                ..TaskSummary::default()
            },
        };
        let outcome: Value = serde_json::to_value(&summary).unwrap_or(Value::Null);
        let s = Arc::clone(&store);
        let interrupted = summary.status == "pending";
        if interrupted {
            lock(&shared.harness_error).get_or_insert_with(|| {
                format!(
                    "task `{task_id}`: {}",
                    summary.stop.clone().unwrap_or_default()
                )
            });
        }
        tokio::task::spawn_blocking(move || {
            if interrupted {
                // Handed back: `--resume` retries it (its recorded calls are replayed).
                s.release_claim(&claim)
            } else {
                s.write(|tx| tx.finish_item(&claim, ItemStatus::Done, Some(&outcome)))
            }
        })
        .await
        .map_err(|e| store::StoreError::Runtime(std::io::Error::other(e.to_string())))??;
    }
}

/// One task's search with the configured strategy.
async fn search_task(shared: &Shared, task_id: &str) -> Result<TaskSummary, String> {
    let setup = &shared.setup;
    let cfg = &setup.config;
    let td = setup
        .tasks
        .get(task_id)
        .ok_or_else(|| format!("task `{task_id}` is not in the suite"))?;
    if let Some(h) = cfg.task_hashes.get(task_id) {
        if h != &td.content_hash {
            return Err(format!(
                "task `{task_id}` changed on disk since the run started (content hash {} now, {} then)",
                short(&td.content_hash),
                short(h)
            ));
        }
    }
    let spec = std::fs::read_to_string(&td.spec_path)
        .map_err(|e| format!("cannot read {}: {e}", td.spec_path.display()))?;
    let ctx = PromptContext {
        task: task_context(&td.task, &spec),
        device: setup.device.clone(),
        rules: task_rules(&td.task),
        ..PromptContext::default()
    };
    let seed = cfg.seed_with_reference.then(|| Seed {
        source: td.reference_source.clone(),
        plan: std::fs::read_to_string(td.dir.join(bench_suite::suite::REFERENCE_PLAN))
            .unwrap_or_default(),
        origin: "reference".into(),
    });
    let observer: Arc<dyn LoopObserver> = shared.recorder.clone();
    let budget = Budget {
        max_rounds: cfg.rounds,
        ..Budget::default()
    };
    let outcome = match cfg.strategy {
        Strategy::CoderJudge => {
            let lp = CoderJudgeLoop {
                coder: setup.coder.clone(),
                judge: setup.judge.clone(),
                renderer: Arc::clone(&setup.renderer),
                evaluator: Arc::clone(&setup.evaluator),
                observer,
                budget,
                settings: LoopSettings::default(),
            };
            lp.run_from(task_id, ctx, seed).await
        }
        Strategy::Evolve => {
            let ev = evolve::Evolution {
                coder: setup.coder.clone(),
                judge: setup.judge.clone(),
                renderer: Arc::clone(&setup.renderer),
                evaluator: Arc::clone(&setup.evaluator),
                observer,
                budget,
                settings: cfg.evolve.clone(),
            };
            ev.run(task_id, ctx, seed).await
        }
    };
    Ok(summarize(task_id, &outcome))
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}
