//! The store-backed [`LoopObserver`]: every LLM call goes to `llm_calls` the moment it returns
//! (money spent is recorded even if the work it served is redone), every candidate with its
//! lineage and its evaluation goes to `candidates` (+ `evaluations` for GPU verdicts) in one
//! transaction. It also makes a resumed run retrace its steps for free: the calls an interrupted
//! attempt already paid for are answered from the store ([`LoopObserver::replay_call`]), and
//! candidates are content-addressed, so nothing is duplicated and nothing is lost.
//!
//! Run-wide budgets (dollars, tokens, calls, wall time) are enforced here, across the loops of
//! all tasks, through [`LoopObserver::should_stop`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bench_suite::store::{
    self, candidate_hash, EvalKey, NewCandidate, NewEvaluation, NewLlmCall, Origin, Parent, Store,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::llm::{parse_completion, LlmCall, LlmCallRecord, LlmError};
use crate::r#loop::{CandidateOutcome, CandidateRecord, Evaluation, LoopObserver, StopReason};

/// Limits over the whole run (all tasks together). `None`: unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct RunBudget {
    pub max_usd: Option<f64>,
    pub max_tokens: Option<u64>,
    pub max_llm_calls: Option<u64>,
    /// Wall time of this invocation (a resumed run gets the limit afresh).
    pub max_wall_s: Option<f64>,
}

/// Totals over the run's recorded calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub llm_calls: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub usd: f64,
}

/// How a task maps onto the store.
#[derive(Debug, Clone)]
pub struct TaskRef {
    pub store_id: i64,
    pub content_hash: String,
}

/// Where evaluations come from: the dry run records its compile results in the candidate's
/// notes only (`compiled` is not a verifier verdict and no GPU was involved); a GPU run also
/// writes `evaluations` rows under this GPU and protocol.
#[derive(Debug, Clone)]
pub enum EvalTarget {
    DryRun,
    Gpu {
        gpu_id: i64,
        gpu_key: String,
        protocol: String,
    },
}

/// Something that happened, for progress displays.
#[derive(Debug, Clone)]
pub enum RunEvent {
    LlmCall {
        task: String,
        role: String,
        replayed: bool,
        failed: bool,
    },
    Candidate {
        task: String,
        round: u32,
        verdict: String,
    },
}

pub type ProgressFn = Arc<dyn Fn(&RunEvent) + Send + Sync>;

#[derive(Default)]
struct TaskState {
    /// Store ids of the task's calls, in the order the loop made (or replayed) them: a
    /// candidate's `llm_call_index` points into this.
    call_ids: Vec<i64>,
    /// Candidate round → store id, for lineage.
    rounds: HashMap<u32, i64>,
}

type ReplayKey = (i64, String, String);

pub struct RunRecorder {
    store: Arc<Store>,
    run_id: i64,
    tasks: BTreeMap<String, TaskRef>,
    target: EvalTarget,
    budget: RunBudget,
    started: Instant,
    totals: Mutex<Totals>,
    state: Mutex<HashMap<String, TaskState>>,
    /// Recorded calls of earlier attempts, not yet retraced, by (task, role, request body).
    replay: Mutex<HashMap<ReplayKey, VecDeque<store::LlmCall>>>,
    /// Store ids of replayed calls handed out and not yet acknowledged.
    replayed_ids: Mutex<HashMap<ReplayKey, VecDeque<i64>>>,
    failure: Mutex<Option<String>>,
    progress: Option<ProgressFn>,
    replayed_count: Mutex<u64>,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

impl RunRecorder {
    /// A recorder for run `run_id`. The run's calls already in the store become the replay
    /// queue and count toward the run-wide budget.
    pub fn new(
        store: Arc<Store>,
        run_id: i64,
        tasks: BTreeMap<String, TaskRef>,
        target: EvalTarget,
        budget: RunBudget,
        progress: Option<ProgressFn>,
    ) -> Result<Self, store::StoreError> {
        let mut totals = Totals::default();
        let mut replay: HashMap<ReplayKey, VecDeque<store::LlmCall>> = HashMap::new();
        for c in store.llm_calls_of_run(run_id)? {
            totals.llm_calls += 1;
            totals.tokens_in += u64::try_from(c.call.tokens_in).unwrap_or(0);
            totals.tokens_out += u64::try_from(c.call.tokens_out).unwrap_or(0);
            totals.usd += c.call.cost_usd;
            // Failed calls are not replayed: a resume after a provider outage must ask the
            // provider again, not relive the outage. The retraced loop then gets the next
            // recorded success one round early, which changes no recorded row.
            if let (Some(task), None) = (c.call.task_id, &c.call.error) {
                replay
                    .entry((task, c.call.role.clone(), c.call.request.clone()))
                    .or_default()
                    .push_back(c);
            }
        }
        Ok(RunRecorder {
            store,
            run_id,
            tasks,
            target,
            budget,
            started: Instant::now(),
            totals: Mutex::new(totals),
            state: Mutex::new(HashMap::new()),
            replay: Mutex::new(replay),
            replayed_ids: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            progress,
            replayed_count: Mutex::new(0),
            cancel: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// Asks every loop to stop before its next LLM call (Ctrl-C): the calls in flight finish
    /// and are recorded, unfinished tasks go back to the queue for `--resume`.
    pub fn cancel(&self) {
        self.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    pub fn totals(&self) -> Totals {
        *lock(&self.totals)
    }

    /// Calls answered from the store instead of the provider in this invocation.
    pub fn replayed(&self) -> u64 {
        *lock(&self.replayed_count)
    }

    /// The first store failure, if any (the loops stop on it).
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Forgets a task's in-memory mapping (its loop is about to start over on a resume).
    pub fn reset_task(&self, task_id: &str) {
        lock(&self.state).remove(task_id);
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) {
        tracing::error!("result store: {what}: {e}");
        lock(&self.failure).get_or_insert_with(|| format!("result store: {what}: {e}"));
    }

    fn emit(&self, e: RunEvent) {
        if let Some(p) = &self.progress {
            p(&e);
        }
    }

    fn task_ref(&self, task_id: &str) -> Option<&TaskRef> {
        self.tasks.get(task_id)
    }

    fn record_candidate(&self, task_id: &str, c: &CandidateRecord) -> Result<(), String> {
        let (Some(source), Some(plan)) = (&c.source, &c.plan) else {
            // Malformed replies and failed calls produced no kernel; their calls are recorded.
            return Ok(());
        };
        let task = self
            .task_ref(task_id)
            .ok_or_else(|| format!("task `{task_id}` is not part of run {}", self.run_id))?
            .clone();
        let (llm_call_id, parents) = {
            let state = lock(&self.state);
            let st = state.get(task_id);
            let call = c
                .llm_call_index
                .and_then(|i| st.and_then(|s| s.call_ids.get(i).copied()));
            let relation = relation(&c.action);
            let mut parents = Vec::new();
            for (round, rel) in [
                (c.parent_round, relation),
                (c.second_parent_round, relation),
            ] {
                if let Some(id) = round.and_then(|r| st.and_then(|s| s.rounds.get(&r).copied())) {
                    if !parents.iter().any(|p: &Parent| p.candidate_id == id) {
                        parents.push(Parent {
                            candidate_id: id,
                            relation: rel.to_string(),
                        });
                    }
                }
            }
            (call, parents)
        };
        let origin = match c.action.as_str() {
            "reference" => Origin::Reference,
            "human" => Origin::Human,
            _ => Origin::Llm,
        };
        let evaluation = c.evaluation();
        let notes = json!({
            "round": c.round,
            "action": c.action,
            "advice": c.advice,
            "extract_notes": c.extract_notes,
            "raw_reply": c.raw_reply,
            "evaluation": evaluation,
            "dry_run": matches!(self.target, EvalTarget::DryRun),
        });
        let new = NewCandidate {
            run_id: self.run_id,
            task_id: task.store_id,
            origin,
            source: source.clone(),
            plan: plan.clone(),
            generation: i64::from(c.generation),
            island: i64::from(c.island),
            llm_call_id,
            parents,
            notes,
        };
        let eval_row = match (&self.target, evaluation) {
            (
                EvalTarget::Gpu {
                    gpu_id,
                    gpu_key,
                    protocol,
                },
                Some(e),
            ) => {
                let hash = candidate_hash(source, plan);
                let key = EvalKey {
                    candidate_hash: &hash,
                    task_hash: &task.content_hash,
                    gpu_key,
                    protocol,
                }
                .digest();
                evaluation_row(e, 0, *gpu_id, key, protocol)
            }
            _ => None,
        };
        let id = self
            .store
            .write(|tx| {
                let (id, _new) = tx.add_candidate(&new)?;
                if let Some(mut ev) = eval_row {
                    ev.candidate_id = id;
                    tx.add_evaluation(&ev)?;
                }
                Ok(id)
            })
            .map_err(|e| e.to_string())?;
        lock(&self.state)
            .entry(task_id.to_string())
            .or_default()
            .rounds
            .insert(c.round, id);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data stays consistent even if a holder panicked (every update is a single step).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lineage relation a candidate's action stands for.
fn relation(action: &str) -> &'static str {
    match action {
        "repair" => "correction",
        "optimize" => "optimization",
        "mutate" => "mutation",
        "crossover" => "crossover",
        _ => "derived",
    }
}

fn geomean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for x in v.filter(|x| *x > 0.0 && x.is_finite()) {
        sum += x.ln();
        n += 1;
    }
    (n > 0).then(|| (sum / n as f64).exp())
}

/// The `evaluations` row of a GPU evaluation: verdict, the loop's view of it in `details`
/// (what a resumed run or the cache hands back, see [`evaluation_from_store`]), geometric-mean
/// speedup over the reference and % of speed-of-light across the timed shapes, and the
/// quarantine flag of DESIGN §5 (faster than the speed-of-light floor, or more than
/// [`verifier::timing::MAX_PLAUSIBLE_SPEEDUP`] times the reference, at any shape). `None` for a
/// dry run's `compiled`, which is not a verifier verdict.
pub fn evaluation_row(
    e: &Evaluation,
    candidate_id: i64,
    gpu_id: i64,
    cache_key: String,
    protocol: &str,
) -> Option<NewEvaluation> {
    let verdict = e.verdict.checked()?;
    let quarantine: Vec<String> = e
        .timings
        .iter()
        .filter_map(|t| {
            let median_ms = t.median_us? / 1e3;
            let speedup = t.reference_us.map(|r| r / t.median_us.unwrap_or(f64::NAN));
            verifier::timing::quarantine_reason(
                median_ms,
                t.floor_us.map(|f| f / 1e3),
                speedup.filter(|s| s.is_finite()),
            )
            .map(|r| format!("{}: {r}", t.shape))
        })
        .collect();
    Some(NewEvaluation {
        candidate_id,
        gpu_id: Some(gpu_id),
        cache_key,
        protocol: protocol.to_string(),
        verdict,
        details: json!({
            "feedback": e.feedback,
            "resources": e.resources,
            "timings": e.timings,
            "profile_summary": e.profile_summary,
        }),
        compile_ms: None,
        // The store's per-shape rows want the full sample summary (p20/p80/min/samples), which
        // the loop's view does not carry; the loop's timings are kept in `details`.
        timings: Vec::new(),
        speedup_ref: e.speedup(),
        speedup_eager: None,
        speedup_compile: None,
        sol_pct: geomean(e.timings.iter().filter_map(|t| t.sol_pct)),
        quarantined: !quarantine.is_empty(),
        quarantine_reason: (!quarantine.is_empty()).then(|| quarantine.join("; ")),
        cached_from: None,
    })
}

/// The call a stored row records, as the loop would have received it.
fn call_from_row(row: &store::LlmCall, prompt_text: &str) -> Option<LlmCall> {
    let request: Value = serde_json::from_str(&row.call.request).ok()?;
    let outcome = match &row.call.error {
        None => Ok(parse_completion(&row.call.response, prompt_text).ok()?),
        Some(e) => Err(LlmError::Transport(e.clone())),
    };
    let record = LlmCallRecord {
        role: row.call.role.clone(),
        profile: String::new(),
        provider: row.call.provider.clone(),
        model: row.call.model.clone(),
        started_at_unix_ms: u64::try_from(row.created_at_ms).unwrap_or(0),
        tokens_in: u64::try_from(row.call.tokens_in).unwrap_or(0),
        tokens_out: u64::try_from(row.call.tokens_out).unwrap_or(0),
        usage_estimated: false,
        cost_usd: row.call.cost_usd,
        latency_ms: row.call.latency_ms.max(0.0) as u64,
        attempts: 1,
        request,
        response: Some(row.call.response.clone()),
        finish_reason: outcome
            .as_ref()
            .ok()
            .map(|c| c.finish_reason.as_str().to_string()),
        error: row.call.error.clone(),
        attempt_errors: Vec::new(),
    };
    Some(LlmCall { record, outcome })
}

impl LoopObserver for RunRecorder {
    fn on_llm_call(&self, task_id: &str, r: &LlmCallRecord) {
        {
            let mut t = lock(&self.totals);
            t.llm_calls += 1;
            t.tokens_in += r.tokens_in;
            t.tokens_out += r.tokens_out;
            t.usd += r.cost_usd;
        }
        let task = self.task_ref(task_id).map(|t| t.store_id);
        let new = NewLlmCall {
            run_id: self.run_id,
            task_id: task,
            role: r.role.clone(),
            provider: r.provider.clone(),
            model: r.model.clone(),
            tokens_in: i64::try_from(r.tokens_in).unwrap_or(i64::MAX),
            tokens_out: i64::try_from(r.tokens_out).unwrap_or(i64::MAX),
            cost_usd: r.cost_usd,
            latency_ms: r.latency_ms as f64,
            request: r.request.to_string(),
            response: r.response.clone().unwrap_or_default(),
            error: r.error.clone(),
        };
        match self.store.write(|tx| tx.add_llm_call(&new)) {
            Ok(id) => lock(&self.state)
                .entry(task_id.to_string())
                .or_default()
                .call_ids
                .push(id),
            Err(e) => self.fail("recording an LLM call", e),
        }
        self.emit(RunEvent::LlmCall {
            task: task_id.to_string(),
            role: r.role.clone(),
            replayed: false,
            failed: r.error.is_some(),
        });
    }

    fn on_llm_replayed(&self, task_id: &str, r: &LlmCallRecord) {
        *lock(&self.replayed_count) += 1;
        let Some(task) = self.task_ref(task_id).map(|t| t.store_id) else {
            return;
        };
        let key = (task, r.role.clone(), r.request.to_string());
        let id = lock(&self.replayed_ids)
            .get_mut(&key)
            .and_then(|q| q.pop_front());
        if let Some(id) = id {
            lock(&self.state)
                .entry(task_id.to_string())
                .or_default()
                .call_ids
                .push(id);
        }
        self.emit(RunEvent::LlmCall {
            task: task_id.to_string(),
            role: r.role.clone(),
            replayed: true,
            failed: r.error.is_some(),
        });
    }

    fn replay_call(
        &self,
        task_id: &str,
        role: &str,
        request: &Value,
        prompt_text: &str,
    ) -> Option<LlmCall> {
        let task = self.task_ref(task_id)?.store_id;
        let key = (task, role.to_string(), request.to_string());
        let row = lock(&self.replay).get_mut(&key)?.pop_front()?;
        let call = call_from_row(&row, prompt_text)?;
        lock(&self.replayed_ids)
            .entry(key)
            .or_default()
            .push_back(row.id);
        Some(call)
    }

    fn on_candidate(&self, task_id: &str, c: &CandidateRecord) {
        if let Err(e) = self.record_candidate(task_id, c) {
            self.fail("recording a candidate", e);
        }
        let verdict = match &c.outcome {
            CandidateOutcome::Evaluated(e) => e.verdict.as_str().to_string(),
            CandidateOutcome::Malformed(_) => "malformed_reply".to_string(),
            CandidateOutcome::LlmFailed(_) => "llm_error".to_string(),
        };
        self.emit(RunEvent::Candidate {
            task: task_id.to_string(),
            round: c.round,
            verdict,
        });
    }

    fn should_stop(&self) -> Option<StopReason> {
        if let Some(f) = self.failure() {
            return Some(StopReason::External(f));
        }
        if self.cancelled() {
            return Some(StopReason::External("interrupted by a signal".into()));
        }
        let t = self.totals();
        let b = &self.budget;
        if b.max_llm_calls.is_some_and(|m| t.llm_calls >= m) {
            return Some(StopReason::CallBudget);
        }
        if b.max_tokens
            .is_some_and(|m| t.tokens_in + t.tokens_out >= m)
        {
            return Some(StopReason::TokenBudget);
        }
        if b.max_usd.is_some_and(|m| t.usd >= m) {
            return Some(StopReason::DollarBudget);
        }
        if b.max_wall_s
            .is_some_and(|m| self.started.elapsed() >= verifier::seconds::clamped(m))
        {
            return Some(StopReason::WallTime);
        }
        None
    }
}

/// A stored evaluation as the loop sees one (details as [`RunRecorder`] writes them).
pub fn evaluation_from_store(e: &store::Evaluation) -> Evaluation {
    let d = &e.evaluation.details;
    let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
    Evaluation {
        verdict: e.evaluation.verdict.into(),
        feedback: text("feedback").unwrap_or_default(),
        timings: d
            .get("timings")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default(),
        resources: text("resources"),
        profile_summary: text("profile_summary"),
    }
}

/// GPU evaluations are content-addressed (DESIGN §8): the same source + plan + task version +
/// GPU + protocol is looked up in the store, not measured again. This also makes a resumed run
/// see the verdicts its interrupted attempt saw.
pub struct CachedEvaluator {
    pub inner: Arc<dyn crate::r#loop::Evaluator>,
    pub store: Arc<Store>,
    /// Content hash per task id.
    pub task_hashes: BTreeMap<String, String>,
    pub gpu_key: String,
    pub protocol: String,
}

impl crate::r#loop::Evaluator for CachedEvaluator {
    fn evaluate(
        &self,
        task_id: &str,
        source: &str,
        plan_toml: &str,
    ) -> Result<Evaluation, crate::r#loop::EvaluatorError> {
        if let Some(task_hash) = self.task_hashes.get(task_id) {
            let hash = candidate_hash(source, plan_toml);
            let key = EvalKey {
                candidate_hash: &hash,
                task_hash,
                gpu_key: &self.gpu_key,
                protocol: &self.protocol,
            }
            .digest();
            match self.store.cached_evaluation(&key) {
                Ok(Some(e)) => return Ok(evaluation_from_store(&e)),
                Ok(None) => {}
                // The cache is an optimisation: a read failure costs a measurement, nothing else.
                Err(e) => tracing::warn!("evaluation cache lookup failed: {e}"),
            }
        }
        self.inner.evaluate(task_id, source, plan_toml)
    }
}
