//! The Coder/Judge loop (CudaForge-style, DESIGN §7), independent of how kernels are evaluated.
//!
//! Per round: the Coder writes a kernel + launch plan; the [`Evaluator`] judges it. A failure goes
//! to the Judge in correction mode and the Coder repairs it next round; a pass goes to the Judge
//! in optimization mode and the Coder applies its proposal. Unlike CudaForge the loop keeps the
//! best kernel, not only the latest: a correct-but-slower candidate does not replace it, the next
//! optimization starts again from the best, and repeated failed repairs fall back to the best too.
//! The Coder sees a short history. Budgets (rounds, calls, tokens, dollars, wall time) are checked
//! before every LLM call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
pub use verifier::verdict::VerdictKind;

use crate::extract::{extract_judge_advice, extract_kernel, ExtractError};
use crate::llm::{ChatMessage, LlmCall, LlmCallRecord, LlmClient};
use crate::prompt::{
    tail_lines, CoderMode, HistoryEntry, KernelSnapshot, PromptContext, PromptError,
    PromptRenderer, ShapeTiming,
};

/// What an evaluator concluded: the strict check's verdict (DESIGN §4), or, in a compile-only
/// dry run, that the candidate compiled and its plan checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Checked(VerdictKind),
    /// Dry run: compiled and the plan checked out, nothing was run.
    Compiled,
}

impl Verdict {
    pub const CORRECT: Verdict = Verdict::Checked(VerdictKind::Correct);

    /// Whether the candidate passed what the evaluator checks (and so goes to optimization).
    pub fn passed(self) -> bool {
        matches!(self, Verdict::CORRECT | Verdict::Compiled)
    }

    /// The strict check's verdict; `None` for a dry run's `compiled`.
    pub fn checked(self) -> Option<VerdictKind> {
        match self {
            Verdict::Checked(k) => Some(k),
            Verdict::Compiled => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Checked(k) => k.as_str(),
            Verdict::Compiled => "compiled",
        }
    }
}

impl From<VerdictKind> for Verdict {
    fn from(k: VerdictKind) -> Verdict {
        Verdict::Checked(k)
    }
}

impl std::str::FromStr for Verdict {
    type Err = verifier::verdict::UnknownVerdict;
    fn from_str(s: &str) -> Result<Verdict, Self::Err> {
        match s {
            "compiled" => Ok(Verdict::Compiled),
            _ => s.parse().map(Verdict::Checked),
        }
    }
}

/// As its name (`correct`, `wrong_output`, ..., `compiled`), like the store's column.
impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Verdict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Verdict, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// What an evaluator says about one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub verdict: Verdict,
    /// Text for the models: the compile log, the mismatch details, ... (trimmed by the loop).
    pub feedback: String,
    /// Per public shape; empty when nothing was timed (failures, dry runs).
    pub timings: Vec<ShapeTiming>,
    /// Registers / spills / shared memory from ptxas.
    pub resources: Option<String>,
    /// Profile metrics summary, when profiled.
    pub profile_summary: Option<String>,
}

impl Evaluation {
    /// Geometric-mean speedup over the reference across shapes with both timings known.
    pub fn speedup(&self) -> Option<f64> {
        let ratios: Vec<f64> = self
            .timings
            .iter()
            .filter_map(|t| match (t.median_us, t.reference_us) {
                (Some(m), Some(r)) if m > 0.0 && r > 0.0 => Some(r / m),
                _ => None,
            })
            .collect();
        if ratios.is_empty() {
            return None;
        }
        let mean_log = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
        Some(mean_log.exp())
    }
}

/// The evaluator could not evaluate at all (a harness problem, not the candidate's fault):
/// the loop stops instead of spending money on candidates it cannot judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("evaluator failed: {0}")]
pub struct EvaluatorError(pub String);

/// Evaluates candidates: compile-only (dry run), or compile + verify + time on a GPU worker.
/// Called from a blocking thread; it may take seconds.
pub trait Evaluator: Send + Sync {
    fn evaluate(
        &self,
        task_id: &str,
        source: &str,
        plan_toml: &str,
    ) -> Result<Evaluation, EvaluatorError>;
}

/// Limits for one loop run. `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Coder rounds (each is one candidate).
    pub max_rounds: u32,
    pub max_llm_calls: Option<u32>,
    /// Input + output tokens over all calls.
    pub max_tokens: Option<u64>,
    pub max_usd: Option<f64>,
    pub max_wall: Option<Duration>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_rounds: 10,
            max_llm_calls: None,
            max_tokens: None,
            max_usd: None,
            max_wall: None,
        }
    }
}

/// What has been spent so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    pub llm_calls: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub usd: f64,
    pub wall: Duration,
    /// Some calls' tokens were estimated (no usage from the server).
    pub usage_estimated: bool,
}

impl Spend {
    pub(crate) fn add(&mut self, r: &LlmCallRecord) {
        self.llm_calls += 1;
        self.tokens_in += r.tokens_in;
        self.tokens_out += r.tokens_out;
        self.usd += r.cost_usd;
        self.usage_estimated |= r.usage_estimated;
    }

    pub(crate) fn exhausted(&self, b: &Budget) -> Option<StopReason> {
        if b.max_llm_calls.is_some_and(|m| self.llm_calls >= m) {
            return Some(StopReason::CallBudget);
        }
        if b.max_tokens
            .is_some_and(|m| self.tokens_in + self.tokens_out >= m)
        {
            return Some(StopReason::TokenBudget);
        }
        if b.max_usd.is_some_and(|m| self.usd >= m) {
            return Some(StopReason::DollarBudget);
        }
        if b.max_wall.is_some_and(|m| self.wall >= m) {
            return Some(StopReason::WallTime);
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    RoundsDone,
    CallBudget,
    TokenBudget,
    DollarBudget,
    WallTime,
    /// The Coder's provider failed several rounds in a row.
    LlmUnavailable,
    Evaluator(String),
    Prompt(String),
    /// The observer stopped the loop: a run-wide budget ran out, or the result store failed.
    External(String),
}

/// What a round's Coder reply came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateOutcome {
    Evaluated(Evaluation),
    /// The reply held no usable kernel + plan.
    Malformed(ExtractError),
    /// The Coder call itself failed (after retries).
    LlmFailed(String),
}

/// One round's candidate, for the store (`candidates` + `evaluations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub round: u32,
    /// "initial", "repair" or "optimize".
    pub action: String,
    /// Round of the kernel this one was derived from.
    pub parent_round: Option<u32>,
    pub source: Option<String>,
    pub plan: Option<String>,
    /// The Coder's raw reply, always kept.
    pub raw_reply: Option<String>,
    pub extract_notes: Vec<String>,
    /// The Judge advice the Coder was given for this round.
    pub advice: Option<String>,
    pub outcome: CandidateOutcome,
    /// Index into the loop's LLM calls of the call that wrote this candidate (none for seeds).
    #[serde(default)]
    pub llm_call_index: Option<usize>,
    /// Evolutionary search: generation and island (0 for the Coder/Judge loop).
    #[serde(default)]
    pub generation: u32,
    #[serde(default)]
    pub island: u32,
    /// Round of a second parent (crossover).
    #[serde(default)]
    pub second_parent_round: Option<u32>,
}

impl CandidateRecord {
    pub fn evaluation(&self) -> Option<&Evaluation> {
        match &self.outcome {
            CandidateOutcome::Evaluated(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn passed(&self) -> bool {
        self.evaluation().is_some_and(|e| e.verdict.passed())
    }

    pub(crate) fn snapshot(&self) -> Option<KernelSnapshot> {
        let e = self.evaluation();
        Some(KernelSnapshot {
            source: self.source.clone()?,
            plan: self.plan.clone()?,
            verdict: e.map(|e| e.verdict.as_str().to_string()),
            timings: e.map(|e| e.timings.clone()).unwrap_or_default(),
            resources: e.and_then(|e| e.resources.clone()),
            profile_summary: e.and_then(|e| e.profile_summary.clone()),
        })
    }
}

/// Hooks to persist progress as it happens (the store; resumability). Default: nothing.
pub trait LoopObserver: Send + Sync {
    fn on_llm_call(&self, _task_id: &str, _record: &LlmCallRecord) {}
    fn on_candidate(&self, _task_id: &str, _candidate: &CandidateRecord) {}
    /// A call answered from an earlier, interrupted attempt of the same run (see
    /// [`LoopObserver::replay_call`]); it is not new spending and must not be recorded again.
    fn on_llm_replayed(&self, _task_id: &str, _record: &LlmCallRecord) {}
    /// Resuming: the recorded outcome of this exact request if an interrupted attempt of the run
    /// already made it, so a resumed loop retraces its steps without paying for them twice.
    fn replay_call(
        &self,
        _task_id: &str,
        _role: &str,
        _request: &serde_json::Value,
        _prompt_text: &str,
    ) -> Option<LlmCall> {
        None
    }
    /// Checked with the loop's own budget: a reason to stop that spans loops (a run-wide budget,
    /// a failed store).
    fn should_stop(&self) -> Option<StopReason> {
        None
    }
}

/// An observer that does nothing.
pub struct NoObserver;
impl LoopObserver for NoObserver {}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct LoopOutcome {
    pub candidates: Vec<CandidateRecord>,
    /// Index into `candidates` of the best passing one.
    pub best: Option<usize>,
    pub llm_calls: Vec<LlmCallRecord>,
    pub spend: Spend,
    pub stop: StopReason,
}

impl LoopOutcome {
    pub fn best(&self) -> Option<&CandidateRecord> {
        self.best.map(|i| &self.candidates[i])
    }
}

/// Loop settings besides the budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopSettings {
    /// History entries shown to the Coder and the Judge.
    pub history_len: usize,
    /// Failed repairs in a row after which the loop goes back to optimizing the best kernel.
    pub max_repairs_in_a_row: u32,
    /// Failed Coder calls in a row after which the loop stops.
    pub max_llm_failures_in_a_row: u32,
    /// Feedback shown to models: last lines / characters.
    pub feedback_lines: usize,
    pub feedback_chars: usize,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            history_len: 6,
            max_repairs_in_a_row: 3,
            max_llm_failures_in_a_row: 3,
            feedback_lines: 150,
            feedback_chars: 12_000,
        }
    }
}

/// The Coder/Judge loop for one task.
pub struct CoderJudgeLoop {
    pub coder: LlmClient,
    pub judge: LlmClient,
    pub renderer: Arc<PromptRenderer>,
    pub evaluator: Arc<dyn Evaluator>,
    pub observer: Arc<dyn LoopObserver>,
    pub budget: Budget,
    pub settings: LoopSettings,
}

/// A kernel to start from instead of an empty slate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    pub source: String,
    pub plan: String,
    /// Recorded as the round-0 candidate's action: "reference", "human", ...
    pub origin: String,
}

/// What the next Coder round is asked to do.
enum Next {
    Initial,
    Repair {
        from: usize,
        feedback: String,
        advice: Option<String>,
    },
    Optimize {
        from: usize,
        advice: Option<String>,
    },
}

struct State {
    task_id: String,
    ctx: PromptContext,
    candidates: Vec<CandidateRecord>,
    best: Option<usize>,
    calls: Vec<LlmCallRecord>,
    spend: Spend,
    started: Instant,
}

impl State {
    fn fitness(&self, i: usize) -> Option<f64> {
        let c = &self.candidates[i];
        if !c.passed() {
            return None;
        }
        // A passing but untimed candidate (dry run) ranks below every timed one.
        Some(c.evaluation().and_then(Evaluation::speedup).unwrap_or(0.0))
    }

    fn consider_best(&mut self, i: usize) {
        let Some(f) = self.fitness(i) else { return };
        let better = match self.best.and_then(|b| self.fitness(b)) {
            Some(bf) => f > bf,
            None => true,
        };
        if better {
            self.best = Some(i);
        }
    }
}

impl CoderJudgeLoop {
    /// Runs the loop for one task from scratch. `ctx` carries the task, device and rules; its
    /// `best`, `history` and `notice` are managed by the loop.
    pub async fn run(&self, task_id: &str, ctx: PromptContext) -> LoopOutcome {
        self.run_from(task_id, ctx, None).await
    }

    /// Runs the loop starting from an existing kernel (the task's reference, or a human one):
    /// it is evaluated first as round 0, and when it passes the first Coder round optimizes it
    /// instead of writing a kernel from nothing.
    pub async fn run_from(
        &self,
        task_id: &str,
        ctx: PromptContext,
        seed: Option<Seed>,
    ) -> LoopOutcome {
        let mut st = State {
            task_id: task_id.to_string(),
            ctx,
            candidates: Vec::new(),
            best: None,
            calls: Vec::new(),
            spend: Spend::default(),
            started: Instant::now(),
        };
        let mut next = Next::Initial;
        let mut repairs_in_a_row = 0u32;
        let mut llm_failures_in_a_row = 0u32;
        let mut stop = StopReason::RoundsDone;

        if let Some(seed) = seed {
            match self.evaluate(task_id, &seed.source, &seed.plan).await {
                Ok(evaluation) => {
                    let passed = evaluation.verdict.passed();
                    let timed = !evaluation.timings.is_empty();
                    self.push_candidate(
                        &mut st,
                        CandidateRecord {
                            round: 0,
                            action: seed.origin,
                            parent_round: None,
                            source: Some(seed.source),
                            plan: Some(seed.plan),
                            raw_reply: None,
                            extract_notes: Vec::new(),
                            advice: None,
                            outcome: CandidateOutcome::Evaluated(evaluation),
                            llm_call_index: None,
                            generation: 0,
                            island: 0,
                            second_parent_round: None,
                        },
                    );
                    st.consider_best(0);
                    // A failing seed is recorded but not built on: the Coder starts fresh.
                    if passed && self.budget.max_rounds > 0 {
                        let advice = if timed && self.check_budget(&mut st).is_none() {
                            self.refresh_context(&mut st);
                            self.judge_optimization(&mut st, 0).await
                        } else {
                            None
                        };
                        next = Next::Optimize { from: 0, advice };
                    }
                }
                Err(e) => {
                    st.spend.wall = st.started.elapsed();
                    return LoopOutcome {
                        candidates: st.candidates,
                        best: None,
                        llm_calls: st.calls,
                        spend: st.spend,
                        stop: StopReason::Evaluator(e.0),
                    };
                }
            }
        }

        for round in 1..=self.budget.max_rounds {
            if let Some(r) = self.check_budget(&mut st) {
                stop = r;
                break;
            }
            self.refresh_context(&mut st);
            let (mode, action, parent, advice) = match &next {
                Next::Initial => (CoderMode::Initial, "initial", None, None),
                Next::Repair {
                    from,
                    feedback,
                    advice,
                } => match st.candidates[*from].snapshot() {
                    Some(current) => (
                        CoderMode::Repair {
                            current,
                            feedback: feedback.clone(),
                            advice: advice.clone(),
                        },
                        "repair",
                        Some(*from),
                        advice.clone(),
                    ),
                    None => (CoderMode::Initial, "initial", None, None),
                },
                Next::Optimize { from, advice } => match st.candidates[*from].snapshot() {
                    Some(current) => (
                        CoderMode::Optimize {
                            current,
                            advice: advice.clone(),
                        },
                        "optimize",
                        Some(*from),
                        advice.clone(),
                    ),
                    None => (CoderMode::Initial, "initial", None, None),
                },
            };
            let prompt = match self.renderer.coder(&st.ctx, &mode) {
                Ok(p) => p,
                Err(e) => {
                    stop = StopReason::Prompt(e.to_string());
                    break;
                }
            };
            let call = self.call(&mut st, &self.coder, "coder", prompt).await;
            let call_index = st.calls.len().saturating_sub(1);
            let parent_round = parent.map(|i| st.candidates[i].round);
            let reply = match call.outcome {
                Ok(c) => c,
                Err(e) => {
                    llm_failures_in_a_row += 1;
                    self.push_candidate(
                        &mut st,
                        CandidateRecord {
                            round,
                            action: action.into(),
                            parent_round,
                            source: None,
                            plan: None,
                            raw_reply: None,
                            extract_notes: Vec::new(),
                            advice,
                            outcome: CandidateOutcome::LlmFailed(e.to_string()),
                            llm_call_index: Some(call_index),
                            generation: 0,
                            island: 0,
                            second_parent_round: None,
                        },
                    );
                    if llm_failures_in_a_row >= self.settings.max_llm_failures_in_a_row {
                        stop = StopReason::LlmUnavailable;
                        break;
                    }
                    // Same request again next round.
                    continue;
                }
            };
            llm_failures_in_a_row = 0;

            let extracted = match extract_kernel(&reply.content) {
                Ok(x) => x,
                Err(e) => {
                    let mut notice = e.feedback();
                    if reply.finish_reason == crate::llm::FinishReason::Length {
                        notice.push_str(" (Your reply hit the output token limit.)");
                    }
                    st.ctx.notice = Some(notice);
                    self.push_candidate(
                        &mut st,
                        CandidateRecord {
                            round,
                            action: action.into(),
                            parent_round,
                            source: None,
                            plan: None,
                            raw_reply: Some(reply.content),
                            extract_notes: Vec::new(),
                            advice,
                            outcome: CandidateOutcome::Malformed(e),
                            llm_call_index: Some(call_index),
                            generation: 0,
                            island: 0,
                            second_parent_round: None,
                        },
                    );
                    // `next` is unchanged: the same request, with the notice.
                    continue;
                }
            };
            st.ctx.notice = None;

            let evaluation = match self
                .evaluate(task_id, &extracted.source, &extracted.plan)
                .await
            {
                Ok(e) => e,
                Err(e) => {
                    stop = StopReason::Evaluator(e.0);
                    break;
                }
            };
            let idx = st.candidates.len();
            self.push_candidate(
                &mut st,
                CandidateRecord {
                    round,
                    action: action.into(),
                    parent_round,
                    source: Some(extracted.source),
                    plan: Some(extracted.plan),
                    raw_reply: Some(reply.content),
                    extract_notes: extracted.notes,
                    advice,
                    outcome: CandidateOutcome::Evaluated(evaluation.clone()),
                    llm_call_index: Some(call_index),
                    generation: 0,
                    island: 0,
                    second_parent_round: None,
                },
            );
            st.consider_best(idx);

            if round == self.budget.max_rounds {
                // No next round: a Judge call now would be money for nothing.
                break;
            }
            if evaluation.verdict.passed() {
                repairs_in_a_row = 0;
                // Best, not latest: optimize the best kernel (this one, unless it was slower).
                let from = st.best.unwrap_or(idx);
                let advice = if st.candidates[from]
                    .evaluation()
                    .is_some_and(|e| !e.timings.is_empty())
                {
                    self.refresh_context(&mut st);
                    self.judge_optimization(&mut st, from).await
                } else {
                    // Nothing measured (dry run): there are no numbers for the Judge to read.
                    None
                };
                next = Next::Optimize { from, advice };
            } else {
                repairs_in_a_row += 1;
                if repairs_in_a_row > self.settings.max_repairs_in_a_row && st.best.is_some() {
                    repairs_in_a_row = 0;
                    let from = st.best.unwrap_or(idx);
                    next = Next::Optimize { from, advice: None };
                    continue;
                }
                let feedback = tail_lines(
                    &evaluation.feedback,
                    self.settings.feedback_lines,
                    self.settings.feedback_chars,
                );
                if let Some(r) = self.check_budget(&mut st) {
                    stop = r;
                    break;
                }
                self.refresh_context(&mut st);
                let advice = self.judge_correction(&mut st, idx, &feedback).await;
                next = Next::Repair {
                    from: idx,
                    feedback,
                    advice,
                };
            }
        }
        st.spend.wall = st.started.elapsed();
        LoopOutcome {
            candidates: st.candidates,
            best: st.best,
            llm_calls: st.calls,
            spend: st.spend,
            stop,
        }
    }

    fn check_budget(&self, st: &mut State) -> Option<StopReason> {
        st.spend.wall = st.started.elapsed();
        st.spend
            .exhausted(&self.budget)
            .or_else(|| self.observer.should_stop())
    }

    /// Puts the current best and the recent history into the prompt context.
    fn refresh_context(&self, st: &mut State) {
        st.ctx.best = st.best.and_then(|i| st.candidates[i].snapshot());
        // Failed provider calls produced no kernel; they would only be noise to the models.
        let tried: Vec<&CandidateRecord> = st
            .candidates
            .iter()
            .filter(|c| !matches!(c.outcome, CandidateOutcome::LlmFailed(_)))
            .collect();
        let skip = tried.len().saturating_sub(self.settings.history_len);
        st.ctx.history = tried[skip..].iter().map(|c| history_entry(c)).collect();
    }

    async fn call(
        &self,
        st: &mut State,
        client: &LlmClient,
        role: &str,
        prompt: String,
    ) -> LlmCall {
        let messages = [ChatMessage::user(prompt)];
        let request = client.request_body(&messages);
        let call =
            match self
                .observer
                .replay_call(&st.task_id, role, &request, &messages[0].content)
            {
                Some(call) => {
                    self.observer.on_llm_replayed(&st.task_id, &call.record);
                    call
                }
                None => {
                    let call = client.chat(role, &messages).await;
                    self.observer.on_llm_call(&st.task_id, &call.record);
                    call
                }
            };
        st.spend.add(&call.record);
        st.calls.push(call.record.clone());
        call
    }

    async fn evaluate(
        &self,
        task_id: &str,
        source: &str,
        plan: &str,
    ) -> Result<Evaluation, EvaluatorError> {
        let evaluator = Arc::clone(&self.evaluator);
        let (t, s, p) = (task_id.to_string(), source.to_string(), plan.to_string());
        tokio::task::spawn_blocking(move || evaluator.evaluate(&t, &s, &p))
            .await
            .map_err(|e| EvaluatorError(format!("evaluator thread failed: {e}")))?
    }

    /// The Judge's diagnosis of a failed candidate, or `None` if the Judge could not give one
    /// (the Coder then repairs from the harness feedback alone).
    async fn judge_correction(&self, st: &mut State, idx: usize, feedback: &str) -> Option<String> {
        let snap = st.candidates[idx].snapshot()?;
        let prompt = self.render(|r| r.judge_correction(&st.ctx, &snap, feedback))?;
        self.judge(st, "judge_correction", prompt).await
    }

    async fn judge_optimization(&self, st: &mut State, idx: usize) -> Option<String> {
        let snap = st.candidates[idx].snapshot()?;
        let prompt = self.render(|r| r.judge_optimization(&st.ctx, &snap))?;
        self.judge(st, "judge_optimization", prompt).await
    }

    fn render(
        &self,
        f: impl FnOnce(&PromptRenderer) -> Result<String, PromptError>,
    ) -> Option<String> {
        match f(&self.renderer) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "judge prompt failed to render; continuing without a judge");
                None
            }
        }
    }

    async fn judge(&self, st: &mut State, role: &str, prompt: String) -> Option<String> {
        if self.check_budget(st).is_some() {
            return None;
        }
        let call = self.call(st, &self.judge, role, prompt).await;
        let reply = call.outcome.ok()?;
        extract_judge_advice(&reply.content).ok().map(|a| a.text)
    }

    fn push_candidate(&self, st: &mut State, c: CandidateRecord) {
        self.observer.on_candidate(&st.task_id, &c);
        st.candidates.push(c);
    }
}

pub(crate) fn history_entry(c: &CandidateRecord) -> HistoryEntry {
    let (verdict, speedup, detail) = match &c.outcome {
        CandidateOutcome::Evaluated(e) => {
            let first_line = e
                .feedback
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            (e.verdict.as_str().to_string(), e.speedup(), first_line)
        }
        CandidateOutcome::Malformed(e) => ("malformed_reply".to_string(), None, e.to_string()),
        CandidateOutcome::LlmFailed(e) => ("llm_error".to_string(), None, e.clone()),
    };
    // The idea tried says more than "correct"; the error says more than the advice.
    let summary = match (&c.advice, c.passed()) {
        (Some(a), true) => a.lines().next().unwrap_or("").to_string(),
        _ => detail,
    };
    HistoryEntry {
        round: c.round,
        action: c.action.clone(),
        verdict,
        speedup,
        summary: shorten(&summary, 200),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}
