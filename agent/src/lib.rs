//! kernelsmith's agent: LLM providers, prompt rendering, the Coder/Judge loop and evolutionary
//! search. Nothing here touches CUDA directly.

pub mod extract;
pub mod llm;
pub mod r#loop;
pub mod prompt;
pub mod task_context;

pub use r#loop::{
    Budget, CandidateOutcome, CandidateRecord, CoderJudgeLoop, Evaluation, Evaluator,
    EvaluatorError, LoopObserver, LoopOutcome, LoopSettings, NoObserver, Seed, Spend, StopReason,
    Verdict,
};
