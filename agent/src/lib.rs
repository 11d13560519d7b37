//! kernelsmith's agent: LLM providers, prompt rendering, the Coder/Judge loop and evolutionary
//! search. Nothing here touches CUDA directly.

pub mod evaluate;
pub mod evolve;
pub mod extract;
pub mod llm;
pub mod r#loop;
pub mod prompt;
pub mod record;
pub mod run;
pub mod task_context;

pub use r#loop::{
    Budget, CandidateOutcome, CandidateRecord, CoderJudgeLoop, Evaluation, Evaluator,
    EvaluatorError, LoopObserver, LoopOutcome, LoopSettings, NoObserver, Seed, Spend, StopReason,
    Verdict, VerdictKind,
};
