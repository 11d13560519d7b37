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

/// The longest wait or limit the agent uses (2^32 s, over a century): seconds from a server
/// header, a config file or the command line are clamped to it, so no value converts to a
/// `Duration` that panics (`from_secs_f64` does above ~1.8e19 s) or overflows an `Instant`.
pub const LONGEST_WAIT: std::time::Duration = std::time::Duration::from_secs(1 << 32);

/// Seconds as a `Duration`, clamped to `[0, LONGEST_WAIT]`; NaN is zero.
pub fn seconds(s: f64) -> std::time::Duration {
    if s.is_nan() || s <= 0.0 {
        std::time::Duration::ZERO
    } else if s >= LONGEST_WAIT.as_secs_f64() {
        LONGEST_WAIT
    } else {
        std::time::Duration::from_secs_f64(s)
    }
}

pub use r#loop::{
    Budget, CandidateOutcome, CandidateRecord, CoderJudgeLoop, Evaluation, Evaluator,
    EvaluatorError, LoopObserver, LoopOutcome, LoopSettings, NoObserver, Seed, Spend, StopReason,
    Verdict, VerdictKind,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seconds_clamp_instead_of_panicking() {
        assert_eq!(seconds(1.5), Duration::from_millis(1500));
        assert_eq!(seconds(-3.0), Duration::ZERO);
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
        assert_eq!(seconds(f64::INFINITY), LONGEST_WAIT);
        assert_eq!(seconds(1e300), LONGEST_WAIT);
    }
}
