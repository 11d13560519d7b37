//! The rows of the store as Rust values. `New*` structs are what writers hand in; the plain
//! structs are what readers get back (with ids and timestamps). Field names follow DESIGN §8.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::str::FromStr;

/// The verifier's verdict on one candidate (DESIGN §4) without its details, as the
/// `evaluations.verdict` column holds it; the details go to `evaluations.details`.
pub use verifier::verdict::VerdictKind as Verdict;

/// Where a candidate's code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The task's hand-written reference kernel (the seed of every search).
    Reference,
    Llm,
    Human,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Reference => "reference",
            Origin::Llm => "llm",
            Origin::Human => "human",
        }
    }
}

impl FromStr for Origin {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "reference" => Ok(Origin::Reference),
            "llm" => Ok(Origin::Llm),
            "human" => Ok(Origin::Human),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
    /// Stopped by a signal or a crash; `--resume` continues it.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl FromStr for RunStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "running" => Ok(RunStatus::Running),
            "finished" => Ok(RunStatus::Finished),
            "failed" => Ok(RunStatus::Failed),
            "interrupted" => Ok(RunStatus::Interrupted),
            _ => Err(()),
        }
    }
}

/// A GPU (plus the software stack whose timings are interchangeable on it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewGpu {
    /// Identity for caching and joins, e.g. "NVIDIA H100 80GB HBM3|sm_90|driver 550.54".
    /// Two machines with the same key are assumed to time kernels alike.
    pub gpu_key: String,
    pub name: String,
    pub compute_capability: String,
    pub sm_count: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub driver_version: String,
    /// Calibration and other facts (bandwidth, peaks, L2 size) as JSON.
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub id: i64,
    #[serde(flatten)]
    pub gpu: NewGpu,
    pub created_at_ms: i64,
}

/// A task at one content version: a changed task.toml / spec / reference gets a new row, so
/// results of the old version are never mixed with the new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    pub name: String,
    pub category: String,
    pub title: String,
    pub content_hash: String,
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: i64,
    #[serde(flatten)]
    pub task: NewTask,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    /// Unique, human-usable handle (`--run NAME`, `--resume NAME`).
    pub name: String,
    /// `bench` (reference kernels vs baselines), `agent`, `eval`, `replay`, ...
    pub kind: String,
    /// The label a leaderboard row shows: a model profile, "reference", a person.
    pub agent: String,
    pub suite: String,
    /// The run's configuration as JSON (budgets, model profile, flags). Never API keys.
    pub config: Value,
    pub git_rev: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: i64,
    #[serde(flatten)]
    pub run: NewRun,
    pub status: RunStatus,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewLlmCall {
    pub run_id: i64,
    pub task_id: Option<i64>,
    /// coder | judge | mutate | crossover | ...
    pub role: String,
    pub provider: String,
    pub model: String,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub latency_ms: f64,
    /// The request body as sent (messages, parameters) — never headers, never keys.
    pub request: String,
    pub response: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    pub id: i64,
    #[serde(flatten)]
    pub call: NewLlmCall,
    pub created_at_ms: i64,
}

/// One parent of a candidate in a search's lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    pub candidate_id: i64,
    /// mutation | crossover | correction | ... (free text for the agent)
    pub relation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCandidate {
    pub run_id: i64,
    pub task_id: i64,
    pub origin: Origin,
    pub source: String,
    pub plan: String,
    pub generation: i64,
    pub island: i64,
    pub llm_call_id: Option<i64>,
    pub parents: Vec<Parent>,
    pub notes: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: i64,
    #[serde(flatten)]
    pub candidate: NewCandidate,
    pub content_hash: String,
    pub created_at_ms: i64,
}

/// Timing of one public shape (DESIGN §5), all times in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeTiming {
    pub shape: String,
    pub median_us: f64,
    pub p20_us: f64,
    pub p80_us: f64,
    pub min_us: f64,
    pub samples: u32,
    /// Reference / eager / torch.compile medians on the same inputs, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eager_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_us: Option<f64>,
    /// The speed-of-light floor for this shape on this GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_us: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvaluation {
    pub candidate_id: i64,
    pub gpu_id: Option<i64>,
    /// See [`super::cache::EvalKey`]; identical keys are never evaluated twice.
    pub cache_key: String,
    /// Verification protocol and harness version, e.g. "strict-v1" or "compile-only-v1".
    pub protocol: String,
    pub verdict: Verdict,
    /// Verdict details an LLM needs to fix the kernel (shape, seed, errors, compile log, ...).
    pub details: Value,
    pub compile_ms: Option<f64>,
    pub timings: Vec<ShapeTiming>,
    /// Aggregates over the public shapes (geometric means), baseline time / candidate time.
    pub speedup_ref: Option<f64>,
    pub speedup_eager: Option<f64>,
    pub speedup_compile: Option<f64>,
    /// floor / measured, in percent.
    pub sol_pct: Option<f64>,
    /// Faster than its floor or implausibly faster than its baseline: kept, never ranked.
    pub quarantined: bool,
    pub quarantine_reason: Option<String>,
    /// Set when this row copies a cached evaluation of the same key instead of re-running it.
    pub cached_from: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub id: i64,
    #[serde(flatten)]
    pub evaluation: NewEvaluation,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewProfile {
    pub evaluation_id: i64,
    /// ncu | compute-sanitizer | ...
    pub tool: String,
    pub kernel: String,
    pub metrics: Value,
    pub raw: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: i64,
    #[serde(flatten)]
    pub profile: NewProfile,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Pending,
    /// Being worked on by `claimed_by` until `claim_expires_at_ms`.
    Claimed,
    Done,
    /// Finished without a usable result (the item's own failure, recorded, not retried).
    Failed,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Claimed => "claimed",
            ItemStatus::Done => "done",
            ItemStatus::Failed => "failed",
        }
    }
}

impl FromStr for ItemStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pending" => Ok(ItemStatus::Pending),
            "claimed" => Ok(ItemStatus::Claimed),
            "done" => Ok(ItemStatus::Done),
            "failed" => Ok(ItemStatus::Failed),
            _ => Err(()),
        }
    }
}

/// One unit of a run's work (usually one task), in the run's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunItem {
    pub run_id: i64,
    pub seq: i64,
    pub item_key: String,
    pub task_id: Option<i64>,
    pub payload: Value,
    pub status: ItemStatus,
    pub claimed_by: Option<String>,
    pub claim_expires_at_ms: Option<i64>,
    pub attempts: i64,
    /// What the worker reported when it finished the item (JSON), e.g. a failure message.
    pub outcome: Option<Value>,
    pub finished_at_ms: Option<i64>,
}

/// The columns of a candidate a report needs (no source, plan or notes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateFacts {
    pub id: i64,
    pub task_id: i64,
    pub origin: Origin,
    pub generation: i64,
    pub llm_call_id: Option<i64>,
    pub created_at_ms: i64,
}

/// The columns of an evaluation a report needs (no details or per-shape timings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationFacts {
    pub candidate_id: i64,
    pub verdict: Verdict,
    pub speedup_ref: Option<f64>,
    pub speedup_eager: Option<f64>,
    pub speedup_compile: Option<f64>,
    pub sol_pct: Option<f64>,
    pub quarantined: bool,
}

/// The columns of an LLM call a report needs (no request or response bodies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallFacts {
    pub id: i64,
    pub task_id: Option<i64>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub created_at_ms: i64,
}

/// Everything a report reads about one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFacts {
    pub tasks: Vec<Task>,
    pub gpus: Vec<String>,
    pub candidates: Vec<CandidateFacts>,
    pub evaluations: Vec<EvaluationFacts>,
    pub calls: Vec<CallFacts>,
}
