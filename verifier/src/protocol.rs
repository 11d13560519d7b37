//! The worker protocol: JSON lines between the parent (`bench_suite::pool`) and a
//! `ksmith worker` process, one request or response per line, each carrying the request id.
//!
//! Contract for the worker:
//! - read requests from stdin, write exactly one response line per request to the protocol
//!   stream, in order, and flush after each;
//! - keep the protocol stream clean: device `printf` writes to the process's stdout, so a worker
//!   should move its protocol stream to a duplicate of fd 1 and point fd 1 at stderr before
//!   loading any kernel (the parent treats a line that does not parse as a broken worker);
//! - write diagnostics to stderr (the parent keeps its tail for crash reports);
//! - exit after answering `shutdown`, or when stdin closes.
//!
//! The parent enforces a wall-clock limit per request and kills (SIGKILL) and restarts a worker
//! that times out, dies, or writes anything that is not a response to the pending request.

use crate::compare::{lenient_f64, Metric};
use crate::verdict::{Case, Verdict};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line either side accepts; a longer one is a protocol error (and bounds memory when a
/// worker writes without newlines).
pub const MAX_LINE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub body: RequestBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequestBody {
    /// Liveness and identity: answered with `pong`.
    Ping,
    Evaluate(EvaluateRequest),
    /// Answered with `bye`; the worker then exits.
    Shutdown,
}

/// Evaluate one kernel against one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateRequest {
    /// `tasks/<category>/<id>`: holds task.toml (and reference.cu / reference.toml).
    pub task_dir: PathBuf,
    /// CUDA C++ device code.
    pub source: String,
    /// The launch plan (TOML text).
    pub plan: String,
    #[serde(default)]
    pub options: EvalOptions,
}

/// What to check. Defaults are the strict protocol of DESIGN §4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalOptions {
    /// Fixed seeds, run on every public shape.
    pub seeds: Vec<u64>,
    /// A seed drawn at run time by the parent (so no candidate can have seen its inputs).
    pub fresh_seed: Option<u64>,
    /// Public shapes to check, by name; empty: all of them.
    pub shapes: Vec<String>,
    /// False: no public shape at all, only the held-out ones (the emulator's small draws).
    pub public_shapes: bool,
    /// How many held-out shapes to draw, and the seed to draw them with.
    pub heldout_shapes: u32,
    pub heldout_seed: u64,
    /// Cap on a held-out shape's input + output bytes.
    pub heldout_max_bytes: u64,
    /// Also run the stress variants (heavy-tailed, rescaled inputs).
    pub stress: bool,
    /// Run every case twice with different poison and compare the runs.
    pub determinism: bool,
    /// Where reference outputs come from.
    pub oracle: Oracle,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            seeds: vec![0, 1],
            fresh_seed: None,
            shapes: Vec::new(),
            public_shapes: true,
            heldout_shapes: 2,
            heldout_seed: 0,
            heldout_max_bytes: 64 << 20,
            stress: true,
            determinism: true,
            oracle: Oracle::ReferenceKernel,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oracle {
    /// The task's reference.cu + reference.toml, run in the same worker.
    ReferenceKernel,
    /// The task's spec.py run by PyTorch in a child process of the worker, on the same inputs
    /// (exchanged as safetensors). Only a worker that can start that process offers it.
    #[serde(rename = "pytorch")]
    PyTorch,
}

impl Oracle {
    pub fn name(self) -> &'static str {
        match self {
            Oracle::ReferenceKernel => "reference_kernel",
            Oracle::PyTorch => "pytorch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    #[serde(flatten)]
    pub body: ResponseBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResponseBody {
    Pong(WorkerInfo),
    Evaluated(Evaluation),
    /// The harness itself failed (task unreadable, no device, out of host memory...): not a
    /// property of the kernel, so it gets no verdict.
    HarnessError {
        message: String,
    },
    Bye,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub pid: u32,
    pub protocol: u32,
    /// The device, in words (`NVIDIA H100 80GB HBM3, sm_90`), when one is open.
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub verdict: Verdict,
    pub elapsed_ms: u64,
    /// Notes for humans (cases skipped, held-out shapes drawn...).
    #[serde(default)]
    pub log: Vec<String>,
    /// Per output, the largest error against the oracle over the cases compared, a failing one
    /// included (how close a passing kernel came to its tolerance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<OutputError>,
}

/// The worst comparison of one output against the oracle over the cases of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputError {
    pub output: String,
    pub metric: Metric,
    /// The case with the largest normalized error.
    pub case: Case,
    /// max|y - ref| / max|ref| on that case (max|y - ref| where the reference is all zero).
    #[serde(with = "lenient_f64")]
    pub normalized_error: f64,
    /// The largest max|y - ref| over all cases.
    #[serde(with = "lenient_f64")]
    pub max_abs_error: f64,
    /// The most elements outside the metric in one case (allclose may allow a few).
    pub mismatches: u64,
    pub elements: u64,
    /// How many cases were compared.
    pub cases: u32,
}

impl OutputError {
    /// The error as a fraction of what the metric allows, where the metric has one number to
    /// compare with: normalized_max's `tol`; for allclose, max abs error over `atol + rtol * max|ref|`
    /// is not defined per element here, so `None`; exact: 0 or infinity.
    pub fn fraction_of_tolerance(&self) -> Option<f64> {
        match self.metric {
            Metric::NormalizedMax { tol } if tol > 0.0 => Some(self.normalized_error / tol),
            Metric::Exact => Some(if self.max_abs_error == 0.0 && self.mismatches == 0 {
                0.0
            } else {
                f64::INFINITY
            }),
            _ => None,
        }
    }

    /// One line: output, error, tolerance, where.
    pub fn describe(&self) -> String {
        let err = match self.metric {
            Metric::NormalizedMax { tol } => format!(
                "normalized error {:.3e} (tol {tol:.1e}), max abs error {:.3e}",
                self.normalized_error, self.max_abs_error
            ),
            Metric::AllClose {
                atol,
                rtol,
                max_bad_fraction,
            } => format!(
                "max abs error {:.3e}, normalized {:.3e}, {} of {} elements outside atol {atol:.1e} + rtol {rtol:.1e} (allowed fraction {max_bad_fraction:.1e})",
                self.max_abs_error, self.normalized_error, self.mismatches, self.elements
            ),
            Metric::Exact => format!(
                "exact: {} differing element(s), max abs error {:.3e}",
                self.mismatches, self.max_abs_error
            ),
        };
        format!(
            "`{}`: {err}; worst at {}; {} case(s)",
            self.output,
            self.case.describe(),
            self.cases
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol error: {message} (line: {excerpt})")]
pub struct ProtocolError {
    pub message: String,
    /// The start of the offending line, for logs.
    pub excerpt: String,
}

impl ProtocolError {
    pub fn new(message: impl Into<String>, line: &[u8]) -> ProtocolError {
        let text = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        ProtocolError {
            message: message.into(),
            excerpt: if line.len() > 200 {
                format!("{text}... ({} bytes)", line.len())
            } else {
                text
            },
        }
    }
}

fn to_line<T: Serialize>(v: &T) -> String {
    // serde_json escapes control characters, so the text has no newline of its own.
    let mut s = serde_json::to_string(v).unwrap_or_else(|e| {
        format!(r#"{{"id":0,"kind":"harness_error","message":"unserializable message: {e}"}}"#)
    });
    s.push('\n');
    s
}

fn from_line<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, ProtocolError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(ProtocolError::new(
            format!("line longer than {MAX_LINE_BYTES} bytes"),
            line,
        ));
    }
    let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    serde_json::from_slice(trimmed).map_err(|e| ProtocolError::new(e.to_string(), line))
}

impl Request {
    pub fn to_line(&self) -> String {
        to_line(self)
    }
    pub fn from_line(line: &[u8]) -> Result<Request, ProtocolError> {
        from_line(line)
    }
}

impl Response {
    pub fn to_line(&self) -> String {
        to_line(self)
    }
    pub fn from_line(line: &[u8]) -> Result<Response, ProtocolError> {
        from_line(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip_on_one_line() {
        let reqs = [
            Request {
                id: 1,
                body: RequestBody::Ping,
            },
            Request {
                id: 2,
                body: RequestBody::Evaluate(EvaluateRequest {
                    task_dir: "tasks/reduction/softmax_row".into(),
                    source: "extern \"C\" __global__ void k() {}\n// two\nlines".into(),
                    plan: "[[launch]]\nkernel = \"k\"\n".into(),
                    options: EvalOptions {
                        fresh_seed: Some(99),
                        ..EvalOptions::default()
                    },
                }),
            },
            Request {
                id: 3,
                body: RequestBody::Shutdown,
            },
        ];
        for r in reqs {
            let line = r.to_line();
            assert_eq!(line.matches('\n').count(), 1);
            assert!(line.ends_with('\n'));
            assert_eq!(Request::from_line(line.as_bytes()).unwrap(), r);
        }
        let resps = [
            Response {
                id: 1,
                body: ResponseBody::Pong(WorkerInfo {
                    pid: 7,
                    protocol: PROTOCOL_VERSION,
                    device: None,
                }),
            },
            Response {
                id: 2,
                body: ResponseBody::Evaluated(Evaluation {
                    verdict: Verdict::Timeout {
                        case: None,
                        limit_ms: 5,
                    },
                    elapsed_ms: 5,
                    log: vec![],
                    errors: vec![],
                }),
            },
            Response {
                id: 2,
                body: ResponseBody::Evaluated(Evaluation {
                    verdict: Verdict::Correct {
                        cases: 3,
                        nondeterministic_within_tolerance: vec![],
                    },
                    elapsed_ms: 5,
                    log: vec!["x".into()],
                    errors: vec![OutputError {
                        output: "y".into(),
                        metric: Metric::NormalizedMax { tol: 1e-2 },
                        case: Case {
                            shape: "small".into(),
                            values: [("N".to_string(), 4)].into_iter().collect(),
                            seed: 0,
                            variant: crate::inputs::Variant::Base,
                        },
                        normalized_error: 2.5e-3,
                        max_abs_error: 0.01,
                        mismatches: 0,
                        elements: 4,
                        cases: 3,
                    }],
                }),
            },
            Response {
                id: 3,
                body: ResponseBody::HarnessError {
                    message: "no GPU".into(),
                },
            },
            Response {
                id: 4,
                body: ResponseBody::Bye,
            },
        ];
        for r in resps {
            let line = r.to_line();
            assert_eq!(Response::from_line(line.as_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn options_default_when_omitted() {
        let r = Request::from_line(
            br#"{"id":5,"kind":"evaluate","task_dir":"t","source":"s","plan":"p"}"#,
        )
        .unwrap();
        match r.body {
            RequestBody::Evaluate(e) => assert_eq!(e.options, EvalOptions::default()),
            other => panic!("{other:?}"),
        }
        let r = Request::from_line(
            br#"{"id":5,"kind":"evaluate","task_dir":"t","source":"s","plan":"p","options":{"stress":false}}"#,
        )
        .unwrap();
        match r.body {
            RequestBody::Evaluate(e) => assert!(!e.options.stress && e.options.determinism),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oracles_have_stable_names() {
        for (o, name) in [
            (Oracle::ReferenceKernel, "reference_kernel"),
            (Oracle::PyTorch, "pytorch"),
        ] {
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{name}\""));
            assert_eq!(o.name(), name);
        }
        let r = Request::from_line(
            br#"{"id":5,"kind":"evaluate","task_dir":"t","source":"s","plan":"p","options":{"oracle":"pytorch"}}"#,
        )
        .unwrap();
        match r.body {
            RequestBody::Evaluate(e) => assert_eq!(e.options.oracle, Oracle::PyTorch),
            other => panic!("{other:?}"),
        }
        assert!(Request::from_line(
            br#"{"id":5,"kind":"evaluate","task_dir":"t","source":"s","plan":"p","options":{"oracle":"numpy"}}"#,
        )
        .is_err());
        // An answer without `errors` (older workers) still reads.
        let r = Response::from_line(
            br#"{"id":1,"kind":"evaluated","verdict":{"verdict":"correct","cases":1,"nondeterministic_within_tolerance":[]},"elapsed_ms":1}"#,
        )
        .unwrap();
        match r.body {
            ResponseBody::Evaluated(e) => assert!(e.errors.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn output_errors_describe_themselves_against_the_tolerance() {
        let case = Case {
            shape: "small".into(),
            values: [("N".to_string(), 4)].into_iter().collect(),
            seed: 0,
            variant: crate::inputs::Variant::Base,
        };
        let mut e = OutputError {
            output: "y".into(),
            metric: Metric::NormalizedMax { tol: 1e-2 },
            case,
            normalized_error: 5e-3,
            max_abs_error: 0.02,
            mismatches: 0,
            elements: 4,
            cases: 2,
        };
        assert_eq!(e.fraction_of_tolerance(), Some(0.5));
        let d = e.describe();
        assert!(d.contains("normalized error 5.000e-3 (tol 1.0e-2)"), "{d}");
        assert!(d.contains("shape small (N=4), seed 0"), "{d}");
        e.metric = Metric::AllClose {
            atol: 1e-3,
            rtol: 1e-3,
            max_bad_fraction: 0.0,
        };
        assert_eq!(e.fraction_of_tolerance(), None);
        assert!(
            e.describe().contains("0 of 4 elements outside"),
            "{}",
            e.describe()
        );
        e.metric = Metric::Exact;
        assert_eq!(e.fraction_of_tolerance(), Some(f64::INFINITY));
    }

    #[test]
    fn malformed_lines_are_errors_with_an_excerpt() {
        for bad in [
            &b"hello"[..],
            b"{\"id\":1}",
            b"{\"id\":1,\"kind\":\"dance\"}",
            b"{\"id\":-1,\"kind\":\"ping\"}",
            b"{\"id\":1,\"kind\":\"ping\"",
            b"",
            b"\xff\xfe",
        ] {
            let e = Request::from_line(bad).unwrap_err();
            assert!(!e.message.is_empty());
            let e = Response::from_line(bad).unwrap_err();
            assert!(e.to_string().contains("protocol error"));
        }
        let long = vec![b'x'; 500];
        let e = Response::from_line(&long).unwrap_err();
        assert!(e.excerpt.ends_with("(500 bytes)"), "{}", e.excerpt);
        assert!(Response::from_line(b"{\"id\":1,\"kind\":\"bye\"}\r\n").is_ok());
    }
}
