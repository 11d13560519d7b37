//! Verdicts: the outcome of evaluating one kernel (source + launch plan) against a task, with
//! the detail an LLM needs to fix it. Serialized in worker responses and stored with results.

use crate::compare::MismatchReport;
use crate::inputs::Variant;
use crate::task::Shape;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// One verification case: a shape, a seed and an input variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// A public shape's name, or `heldout-N` for a drawn one.
    pub shape: String,
    pub values: IndexMap<String, i64>,
    pub seed: u64,
    pub variant: Variant,
}

impl Case {
    pub fn new(shape: &Shape, seed: u64, variant: Variant) -> Case {
        Case {
            shape: shape.name.clone(),
            values: shape.values.clone(),
            seed,
            variant,
        }
    }

    pub fn shape(&self) -> Shape {
        Shape {
            name: self.shape.clone(),
            values: self.values.clone(),
        }
    }

    /// `shape heldout-2 (M=37 N=1021), seed 7, base inputs`.
    pub fn describe(&self) -> String {
        let vals: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "shape {} ({}), seed {}, {} inputs",
            self.shape,
            vals.join(" "),
            self.seed,
            self.variant
        )
    }
}

/// How a worker process ended, when it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (_, Some(s)) => write!(f, "killed by signal {s} ({})", signal_name(s)),
            (Some(c), None) => write!(f, "exited with status {c}"),
            (None, None) => f.write_str("ended (no status)"),
        }
    }
}

pub fn signal_name(s: i32) -> &'static str {
    match s {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// A buffer whose bytes changed during a run although the kernel may only read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutatedBuffer {
    pub name: String,
    /// `input` or `persistent scratch`.
    pub kind: String,
    pub changed_elements: u64,
    /// Coordinates of the first changed element.
    pub first_changed: Vec<u64>,
}

/// A batch-invariance failure: one row computed alone (the batch parameter set to 1, that
/// row of the batch inputs, every other input the same bytes) differs from the same row of the
/// full batch. The report of such a [`Verdict::WrongOutput`] compares the row alone (`got`)
/// with the row in the batch (`expected`) bit for bit, at coordinates of the full output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProbe {
    /// The batch parameter (`M`).
    pub param: String,
    /// Its value in the full run.
    pub batch: i64,
    /// The row that was run alone.
    pub row: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// NVRTC rejected the source (or a static check did): the log says why.
    CompileError { log: String },
    /// The launch plan does not parse, names unknown kernels or buffers, or does not resolve
    /// for a shape.
    InvalidPlan { message: String },
    /// A launch was refused (bad geometry, too much shared memory, too many registers...).
    LaunchError {
        case: Option<Case>,
        kernel: String,
        /// Position in the plan's launch sequence.
        launch: usize,
        message: String,
    },
    /// The kernel faulted (illegal address, misaligned access, trap) or killed its worker.
    RuntimeFault {
        case: Option<Case>,
        message: String,
        exit: Option<ExitInfo>,
        /// The last lines the worker wrote to stderr.
        stderr_tail: String,
    },
    /// The run did not finish within the wall-clock limit.
    Timeout { case: Option<Case>, limit_ms: u64 },
    WrongOutput {
        case: Case,
        output: String,
        report: Box<MismatchReport>,
        /// Set when the output matched the oracle but a row computed alone did not match its
        /// row of the batch (the task's `[checks.batch_invariant]`). Still `wrong_output` for
        /// storage and counting: the single-row run's output is wrong.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<Box<BatchProbe>>,
    },
    /// The kernel wrote to an input or to persistent scratch.
    InputMutated {
        case: Case,
        buffers: Vec<MutatedBuffer>,
    },
    /// Two runs on the same inputs (with different poison fills) disagree beyond the
    /// tolerance: a race, or reads of memory the kernel never wrote.
    Nondeterministic {
        case: Case,
        output: String,
        report: Box<MismatchReport>,
    },
    Correct {
        /// Cases checked (shape x seed x variant).
        cases: u32,
        /// Outputs whose bits differed between two runs but stayed within tolerance
        /// (e.g. atomics reordering a sum); not a failure, reported apart.
        nondeterministic_within_tolerance: Vec<String>,
    },
}

/// A [`Verdict`] without its details: what the store keeps in its `verdict` column, reports
/// count and the agent reasons about. Serialized as the same snake_case name as the verdict's
/// `verdict` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    CompileError,
    InvalidPlan,
    LaunchError,
    RuntimeFault,
    Timeout,
    WrongOutput,
    InputMutated,
    Nondeterministic,
    Correct,
}

impl VerdictKind {
    pub const ALL: [VerdictKind; 9] = [
        VerdictKind::CompileError,
        VerdictKind::InvalidPlan,
        VerdictKind::LaunchError,
        VerdictKind::RuntimeFault,
        VerdictKind::Timeout,
        VerdictKind::WrongOutput,
        VerdictKind::InputMutated,
        VerdictKind::Nondeterministic,
        VerdictKind::Correct,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::CompileError => "compile_error",
            VerdictKind::InvalidPlan => "invalid_plan",
            VerdictKind::LaunchError => "launch_error",
            VerdictKind::RuntimeFault => "runtime_fault",
            VerdictKind::Timeout => "timeout",
            VerdictKind::WrongOutput => "wrong_output",
            VerdictKind::InputMutated => "input_mutated",
            VerdictKind::Nondeterministic => "nondeterministic",
            VerdictKind::Correct => "correct",
        }
    }

    /// A timeout can be the machine's fault (a busy GPU, a slow host), so it is never served
    /// from an evaluation cache; every other verdict is a property of source + plan + task +
    /// GPU.
    pub fn cacheable(self) -> bool {
        self != VerdictKind::Timeout
    }
}

impl std::fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`VerdictKind::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown verdict `{0}` (known: compile_error, invalid_plan, launch_error, runtime_fault, timeout, wrong_output, input_mutated, nondeterministic, correct)")]
pub struct UnknownVerdict(pub String);

impl std::str::FromStr for VerdictKind {
    type Err = UnknownVerdict;
    fn from_str(s: &str) -> Result<Self, UnknownVerdict> {
        VerdictKind::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVerdict(s.to_string()))
    }
}

impl Verdict {
    /// The verdict without its details, as stored and counted.
    pub fn kind(&self) -> VerdictKind {
        match self {
            Verdict::CompileError { .. } => VerdictKind::CompileError,
            Verdict::InvalidPlan { .. } => VerdictKind::InvalidPlan,
            Verdict::LaunchError { .. } => VerdictKind::LaunchError,
            Verdict::RuntimeFault { .. } => VerdictKind::RuntimeFault,
            Verdict::Timeout { .. } => VerdictKind::Timeout,
            Verdict::WrongOutput { .. } => VerdictKind::WrongOutput,
            Verdict::InputMutated { .. } => VerdictKind::InputMutated,
            Verdict::Nondeterministic { .. } => VerdictKind::Nondeterministic,
            Verdict::Correct { .. } => VerdictKind::Correct,
        }
    }

    pub fn is_correct(&self) -> bool {
        matches!(self, Verdict::Correct { .. })
    }

    /// What went wrong and what to look at, for the next round of an LLM (and for humans).
    pub fn feedback(&self) -> String {
        let on = |c: &Option<Case>| {
            c.as_ref()
                .map(|c| format!(" on {}", c.describe()))
                .unwrap_or_default()
        };
        match self {
            Verdict::CompileError { log } => format!(
                "Compilation failed. Fix the errors below (device code only; includes limited to the CUDA headers allowed).\n{}",
                tail(log, 4000)
            ),
            Verdict::InvalidPlan { message } => format!(
                "The launch plan is invalid: {message}\nEvery [[launch]] must name a __global__ function of the source, and its args must be buffer names, parameter expressions or typed scalars in the kernel's parameter order."
            ),
            Verdict::LaunchError { case, kernel, launch, message } => format!(
                "Launch {launch} (`{kernel}`) was refused{}: {message}\nCheck the grid and block sizes (at most 1024 threads per block), dynamic shared memory and register use against the device limits.",
                on(case)
            ),
            Verdict::RuntimeFault { case, message, exit, stderr_tail } => {
                let mut s = format!("The kernel crashed{}: {message}", on(case));
                if let Some(e) = exit {
                    s.push_str(&format!(" (worker {e})"));
                }
                s.push_str("\nLook for out-of-bounds indexing (especially in tail blocks when sizes are not multiples of the tile), misaligned vector loads, and missing bounds checks.");
                if !stderr_tail.trim().is_empty() {
                    s.push_str(&format!("\nLast output:\n{}", tail(stderr_tail, 2000)));
                }
                s
            }
            Verdict::Timeout { case, limit_ms } => format!(
                "The kernel did not finish within {:.1} s{}. Look for an infinite loop, a spin-wait on a flag no block sets, a __syncthreads() that not every thread reaches, or a grid far larger than intended.",
                *limit_ms as f64 / 1000.0,
                on(case)
            ),
            Verdict::WrongOutput { case, output, report, batch: Some(b) } => format!(
                "Output `{output}` is not batch-invariant on {}: row {row} computed alone ({param}=1, that row of the batch inputs, the same weights) differs from row {row} of the full batch ({param}={batch}). The task requires every row to be bitwise the same whatever the batch size and wherever the row sits.\n{}\n(`got` is the row computed alone, `expected` the row in the batch; coordinates are in the full output.)\nEvery output element's reduction must run in the same order whatever {param} is: no split-K, split count, tile shape or kernel choice keyed on {param} that changes how an element is accumulated, no atomics, and no reduction that mixes rows.",
                case.describe(),
                report.summary(),
                row = b.row,
                param = b.param,
                batch = b.batch,
            ),
            Verdict::WrongOutput { case, output, report, batch: None } => {
                let mut s = format!(
                    "Output `{output}` is wrong on {}.\n{}",
                    case.describe(),
                    report.summary()
                );
                if report.unwritten > 0 {
                    s.push_str("\nSome elements were never written: check that the grid covers the whole output (including the tail when a size is not a multiple of the tile) and that every thread that owns an element stores it.");
                } else if report.nonfinite > 0 {
                    s.push_str("\nNaN/Inf appear where the reference is finite: look for overflow (exp without subtracting the max, fp16 accumulation), division by zero, or reads of uninitialised shared memory.");
                } else if case.variant != Variant::Base {
                    s.push_str("\nThe inputs of this case are heavy-tailed and rescaled: avoid assumptions about the input range (fixed offsets, low-precision accumulation, unscaled exponentials).");
                }
                s
            }
            Verdict::InputMutated { case, buffers } => {
                let names: Vec<String> = buffers
                    .iter()
                    .map(|b| format!("{} `{}` ({} elements changed, first at {:?})", b.kind, b.name, b.changed_elements, b.first_changed))
                    .collect();
                format!(
                    "The kernel modified read-only buffers on {}: {}.\nInputs (and persistent scratch after [[prepare]]) are read-only; use a [[scratch]] buffer for temporaries.",
                    case.describe(),
                    names.join("; ")
                )
            }
            Verdict::Nondeterministic { case, output, report } => format!(
                "Output `{output}` differs between two runs on the same inputs ({}), beyond the tolerance.\n{}\nThis points to a data race (missing __syncthreads() or atomics), reads of shared memory or scratch before it is written, or dependence on the previous contents of an output or scratch buffer.",
                case.describe(),
                report.summary()
            ),
            Verdict::Correct { cases, nondeterministic_within_tolerance } => {
                let mut s = format!("Correct on all {cases} cases.");
                if !nondeterministic_within_tolerance.is_empty() {
                    s.push_str(&format!(
                        " Outputs {} vary slightly between runs (within tolerance), e.g. from atomic accumulation order.",
                        nondeterministic_within_tolerance.join(", ")
                    ));
                }
                s
            }
        }
    }
}

/// The last `max` bytes of a text, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{compare, Metric, Poison};
    use crate::dtype::DType;
    use crate::inputs::{HostTensor, StressScale};

    fn case() -> Case {
        Case {
            shape: "heldout-1".into(),
            values: [("M".to_string(), 37), ("N".to_string(), 1021)]
                .into_iter()
                .collect(),
            seed: 7,
            variant: Variant::Stress(StressScale::Up),
        }
    }

    fn all() -> Vec<Verdict> {
        let r = HostTensor {
            dtype: DType::F32,
            dims: vec![2],
            bytes: [1f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let mut g = r.clone();
        Poison::A.fill(DType::F32, &mut g.bytes[4..]);
        let report = compare(&g, &r, Metric::NormalizedMax { tol: 1e-3 }, Some(Poison::A)).unwrap();
        vec![
            Verdict::CompileError {
                log: "error: expected ';'".into(),
            },
            Verdict::InvalidPlan {
                message: "unknown kernel `foo`".into(),
            },
            Verdict::LaunchError {
                case: Some(case()),
                kernel: "k".into(),
                launch: 0,
                message: "block 2048 > 1024".into(),
            },
            Verdict::RuntimeFault {
                case: None,
                message: "worker died".into(),
                exit: Some(ExitInfo {
                    code: None,
                    signal: Some(11),
                }),
                stderr_tail: "CUDA_ERROR_ILLEGAL_ADDRESS".into(),
            },
            Verdict::Timeout {
                case: Some(case()),
                limit_ms: 10_000,
            },
            Verdict::WrongOutput {
                case: case(),
                output: "y".into(),
                report: Box::new(report.clone()),
                batch: None,
            },
            Verdict::InputMutated {
                case: case(),
                buffers: vec![MutatedBuffer {
                    name: "x".into(),
                    kind: "input".into(),
                    changed_elements: 3,
                    first_changed: vec![0, 5],
                }],
            },
            Verdict::Nondeterministic {
                case: case(),
                output: "y".into(),
                report: Box::new(report.clone()),
            },
            Verdict::Correct {
                cases: 12,
                nondeterministic_within_tolerance: vec!["y".into()],
            },
            Verdict::WrongOutput {
                case: case(),
                output: "y".into(),
                report: Box::new(report.clone()),
                batch: Some(Box::new(BatchProbe {
                    param: "M".into(),
                    batch: 37,
                    row: 36,
                })),
            },
        ]
    }

    #[test]
    fn verdict_kinds_parse_back_and_name_each_verdict_once() {
        let kinds: Vec<VerdictKind> = all().iter().map(Verdict::kind).collect();
        for k in VerdictKind::ALL {
            assert!(kinds.contains(&k), "no sample verdict of kind {k}");
            assert_eq!(k.as_str().parse::<VerdictKind>(), Ok(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        let e = "passed".parse::<VerdictKind>().unwrap_err();
        assert!(e.to_string().contains("`passed`") && e.to_string().contains("wrong_output"));
        assert!(!VerdictKind::Timeout.cacheable() && VerdictKind::WrongOutput.cacheable());
    }

    #[test]
    fn every_verdict_round_trips_and_has_feedback() {
        for v in all() {
            let json = serde_json::to_string(&v).unwrap();
            assert!(
                json.contains(&format!("\"verdict\":\"{}\"", v.kind())),
                "{json}"
            );
            let back: Verdict = serde_json::from_str(&json).unwrap();
            assert_eq!(back.kind(), v.kind());
            let fb = v.feedback();
            assert!(fb.len() > 20, "{fb}");
        }
        let fb = all()[5].feedback();
        assert!(
            fb.contains("never written") && fb.contains("M=37 N=1021") && fb.contains("seed 7"),
            "{fb}"
        );
        assert!(all()[3].feedback().contains("SIGSEGV"));
        assert!(all()[6].feedback().contains("input `x`"));
        assert!(all()[8].is_correct() && !all()[0].is_correct());
    }

    #[test]
    fn a_batch_invariance_failure_is_a_wrong_output_naming_the_row() {
        let v = all().pop().unwrap();
        assert_eq!(v.kind(), VerdictKind::WrongOutput);
        let json = serde_json::to_string(&v).unwrap();
        assert!(
            json.contains("\"batch\":{\"param\":\"M\",\"batch\":37,\"row\":36}"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), v);
        let fb = v.feedback();
        assert!(
            fb.contains("not batch-invariant")
                && fb.contains("row 36 computed alone (M=1")
                && fb.contains("full batch (M=37)")
                && fb.contains("split-K"),
            "{fb}"
        );
        // A plain wrong output carries no probe, and JSON written before the field existed
        // still reads.
        let plain = serde_json::to_string(&all()[5]).unwrap();
        assert!(!plain.contains("\"batch\""), "{plain}");
        match serde_json::from_str::<Verdict>(&plain).unwrap() {
            Verdict::WrongOutput { batch, .. } => assert!(batch.is_none()),
            other => panic!("{other:?}"),
        }
        assert!(!all()[5].feedback().contains("batch-invariant"));
    }

    #[test]
    fn unknown_verdicts_are_rejected() {
        assert!(serde_json::from_str::<Verdict>(r#"{"verdict":"fast"}"#).is_err());
        assert!(serde_json::from_str::<Verdict>(r#"{"verdict":"timeout"}"#).is_err());
    }

    #[test]
    fn tail_keeps_char_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }
}
