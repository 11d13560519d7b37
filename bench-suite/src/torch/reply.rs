//! The runner's reply: one JSON object on stdout, read leniently (unknown fields are ignored,
//! metadata of the wrong type is dropped) but strictly where results are concerned (a sample
//! that is not a finite non-negative number is an error naming it, never a plausible number).

use super::tensors::{self, key};
use super::{TorchError, TorchJob, EXIT_OK};
use serde::Serialize;
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use verifier::inputs::HostTensor;
use verifier::timing::{StopReason, Summary};

#[derive(Debug, Clone)]
pub struct TorchReport {
    pub torch_version: Option<String>,
    pub torch_cuda: Option<String>,
    pub device_name: Option<String>,
    pub l2_bytes: Option<u64>,
    pub flush_bytes: Option<u64>,
    pub tf32_matmul: Option<bool>,
    pub tf32_cudnn: Option<bool>,
    pub compile_mode: Option<String>,
    /// Present when the mode was requested.
    pub oracle: Option<ModeResult<OracleOutputs>>,
    pub eager: Option<ModeResult<Baseline>>,
    pub compile: Option<ModeResult<Baseline>>,
}

/// One mode's outcome: a mode can fail (out of memory, torch.compile error, a spec whose output
/// does not match its declaration) while the others succeed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ModeResult<T> {
    Ok(T),
    Failed {
        error: String,
        traceback: Option<String>,
    },
}

/// A PyTorch baseline's timings; `summary` is recomputed here from the raw samples with
/// `verifier::timing`, so baselines and kernels are summarised by the same code.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    pub samples_ms: Vec<f64>,
    pub summary: Summary,
    pub warmup_calls: Option<u64>,
    pub warmup_elapsed_ms: Option<f64>,
    pub stop_reason: Option<StopReason>,
    /// Per-call time amortized over CUDA-graph replays, for calls under the protocol's threshold.
    pub graph_ms: Option<f64>,
    pub graph_error: Option<String>,
}

/// The oracle's outputs, per requested set: `(set index, outputs in declared order)`.
#[derive(Debug, Clone, PartialEq)]
pub struct OracleOutputs {
    pub sets: Vec<(usize, Vec<HostTensor>)>,
}

pub(super) fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "ended".to_string(),
        },
        None => "ended with an unknown status".to_string(),
    }
}

fn excerpt(s: &str) -> String {
    let t: String = s.chars().take(300).collect();
    if t.len() < s.len() {
        format!("{t}...")
    } else {
        t
    }
}

/// The reply object, or the error the runner reported (unavailable, spec error, bad request),
/// or what went wrong with the process.
pub(super) fn parse(
    stdout: &[u8],
    status: Option<ExitStatus>,
    stderr_tail: &str,
) -> Result<Value, TorchError> {
    let text = String::from_utf8_lossy(stdout);
    let exit_ok = status.and_then(|s| s.code()) == Some(EXIT_OK);
    let malformed = |detail: String| TorchError::Malformed {
        detail,
        stdout_excerpt: excerpt(&text),
        stderr_tail: stderr_tail.to_string(),
    };
    let crashed = || TorchError::Crashed {
        how: describe(status),
        stderr_tail: stderr_tail.to_string(),
    };
    let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Err(if exit_ok {
            malformed("no reply on stdout".into())
        } else {
            crashed()
        });
    };
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(_) if !exit_ok => return Err(crashed()),
        Err(e) => return Err(malformed(format!("the last line is not JSON: {e}"))),
    };
    let Some(obj) = v.as_object() else {
        return Err(malformed("the reply is not a JSON object".into()));
    };
    let field = |k: &str| -> Result<String, TorchError> {
        obj.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| malformed(format!("field `{k}` is missing or not a string")))
    };
    match field("status")?.as_str() {
        "ok" if exit_ok => Ok(v),
        "ok" => Err(malformed(format!(
            "status `ok` but the runner {}",
            describe(status)
        ))),
        "unavailable" => Err(TorchError::Unavailable {
            reason: field("reason")?,
        }),
        "spec_error" => Err(TorchError::Spec {
            message: field("message")?,
            traceback: obj
                .get("traceback")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }),
        "bad_request" => Err(TorchError::BadRequest {
            message: field("message")?,
        }),
        other => Err(malformed(format!("unknown status `{other}`"))),
    }
}

fn mode<'v>(v: &'v Value, name: &str, requested: bool) -> Result<Option<&'v Value>, String> {
    match (requested, v.get(name)) {
        (false, _) => Ok(None),
        (true, Some(m)) if m.is_object() => Ok(Some(m)),
        (true, Some(_)) => Err(format!("`{name}` is not an object")),
        (true, None) => Err(format!(
            "mode `{name}` was requested but the reply has no `{name}`"
        )),
    }
}

fn failed<T>(m: &Value, name: &str) -> Result<Option<ModeResult<T>>, String> {
    match m.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(None),
        Some(false) => Ok(Some(ModeResult::Failed {
            error: m
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the runner gave no error message")
                .to_string(),
            traceback: m
                .get("traceback")
                .and_then(Value::as_str)
                .map(str::to_string),
        })),
        None => Err(format!("`{name}.ok` is missing or not a boolean")),
    }
}

fn baseline(m: &Value, name: &str) -> Result<ModeResult<Baseline>, String> {
    if let Some(f) = failed(m, name)? {
        return Ok(f);
    }
    let raw = m
        .get("samples_ms")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("`{name}.samples_ms` is missing or not a list"))?;
    let samples_ms = raw
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("`{name}.samples_ms[{i}]` is {x}, not a time in ms"))
        })
        .collect::<Result<Vec<f64>, String>>()?;
    let summary =
        Summary::of(&samples_ms).ok_or_else(|| format!("`{name}.samples_ms` is empty"))?;
    let stop_reason = match m.get("stop_reason") {
        None | Some(Value::Null) => None,
        Some(s) => Some(
            serde_json::from_value(s.clone())
                .map_err(|_| format!("`{name}.stop_reason` {s} is not a known stop reason"))?,
        ),
    };
    Ok(ModeResult::Ok(Baseline {
        samples_ms,
        summary,
        warmup_calls: m.get("warmup_calls").and_then(Value::as_u64),
        warmup_elapsed_ms: m.get("warmup_elapsed_ms").and_then(Value::as_f64),
        stop_reason,
        graph_ms: m
            .get("graph_ms")
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite() && *v > 0.0),
        graph_error: m
            .get("graph_error")
            .and_then(Value::as_str)
            .map(str::to_string),
    }))
}

/// The typed report of an `ok` reply, with the oracle's outputs read back from `outputs_file`.
pub(super) fn finish(
    v: Value,
    job: &TorchJob,
    oracle_sets: &[usize],
    outputs_file: &Path,
) -> Result<TorchReport, TorchError> {
    let malformed = |detail: String| TorchError::Malformed {
        detail,
        stdout_excerpt: excerpt(&v.to_string()),
        stderr_tail: String::new(),
    };
    let wants = |m: super::Mode| job.modes.contains(&m);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let mut report = TorchReport {
        torch_version: s("torch_version"),
        torch_cuda: s("torch_cuda"),
        device_name: s("device_name"),
        l2_bytes: v.get("l2_bytes").and_then(Value::as_u64),
        flush_bytes: v.get("flush_bytes").and_then(Value::as_u64),
        tf32_matmul: v.get("tf32_matmul").and_then(Value::as_bool),
        tf32_cudnn: v.get("tf32_cudnn").and_then(Value::as_bool),
        compile_mode: s("compile_mode"),
        oracle: None,
        eager: None,
        compile: None,
    };
    for (name, m) in [
        ("eager", super::Mode::Eager),
        ("compile", super::Mode::Compile),
    ] {
        if let Some(obj) = mode(&v, name, wants(m)).map_err(malformed)? {
            let r = baseline(obj, name).map_err(malformed)?;
            match m {
                super::Mode::Eager => report.eager = Some(r),
                _ => report.compile = Some(r),
            }
        }
    }
    if let Some(obj) = mode(&v, "oracle", wants(super::Mode::Oracle)).map_err(malformed)? {
        report.oracle = Some(match failed(obj, "oracle").map_err(malformed)? {
            Some(f) => f,
            None => {
                let mut sets = Vec::with_capacity(oracle_sets.len());
                for &k in oracle_sets {
                    let wanted: Vec<_> = job
                        .outputs
                        .iter()
                        .map(|o| (key(k, &o.name), o.dtype, o.dims.clone()))
                        .collect();
                    sets.push((k, tensors::read_tensors(outputs_file, &wanted)?));
                }
                ModeResult::Ok(OracleOutputs { sets })
            }
        });
    }
    Ok(report)
}
