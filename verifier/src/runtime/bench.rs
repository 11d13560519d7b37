//! One task's benchmark on the device (`ksmith bench`): the reference kernel timed at each
//! public shape, with candidates interleaved after it once each has passed the strict check.
//! The request and report are JSON so a `ksmith gpu serve` subprocess can run this isolated.

use super::backend::Device;
use super::evaluate::{self, compile, CompileFailure, TaskBundle};
use super::strict::{EvalError, NoHooks, ReferenceCache};
use super::telemetry::Telemetry;
use super::timing::{
    time_shape_with, Flush, ShapeTimings, Subject, TimingDevice, TimingOptions, FLUSH_KERNEL,
    FLUSH_KERNEL_NAME,
};
use crate::nvrtc::{CompileRequest, Compiler};
use crate::protocol::{EvalOptions, EvaluateRequest};
use crate::verdict::Verdict;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchCandidate {
    pub name: String,
    pub source: String,
    pub plan: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRequest {
    pub task_dir: PathBuf,
    #[serde(default)]
    pub candidates: Vec<BenchCandidate>,
    /// Public shapes to time, by name; empty: all.
    #[serde(default)]
    pub shapes: Vec<String>,
    #[serde(default)]
    pub timing: TimingOptions,
    /// The strict check each candidate passes before it is timed.
    #[serde(default)]
    pub check: EvalOptions,
}

/// What became of a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateStatus {
    pub name: String,
    /// The strict check's verdict; only `correct` candidates are timed.
    pub verdict: Verdict,
    pub timed: bool,
}

/// A shape that could not be timed, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeFailure {
    pub shape: String,
    pub message: String,
    /// The subject at fault (0 is the reference), when one is.
    pub subject: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub task: String,
    /// Content hash of task + reference.
    pub content: String,
    pub device: String,
    /// Subject names in timing order: the reference first, then the timed candidates.
    pub subjects: Vec<String>,
    pub candidates: Vec<CandidateStatus>,
    pub shapes: Vec<ShapeTimings>,
    pub failures: Vec<ShapeFailure>,
    pub log: Vec<String>,
}

/// Benchmarks one task. `Err` means the harness (or the reference) failed; a candidate's
/// failure is its status or a shape failure.
pub fn bench<D: Device + TimingDevice>(
    dev: &D,
    compiler: &Compiler,
    cache: &mut ReferenceCache,
    req: &BenchRequest,
    telemetry: &Telemetry,
) -> Result<BenchReport, EvalError> {
    let bundle = TaskBundle::load(&req.task_dir)?;
    let task = &bundle.task;
    let arch = dev.arch();
    let mut log = vec![format!("device: {}", dev.describe())];
    let mut statuses = Vec::new();
    let mut accepted = Vec::new();
    for c in &req.candidates {
        let out = evaluate::evaluate(
            dev,
            compiler,
            cache,
            &EvaluateRequest {
                task_dir: req.task_dir.clone(),
                source: c.source.clone(),
                plan: c.plan.clone(),
                options: req.check.clone(),
            },
            &NoHooks,
        )?;
        if out.context_lost {
            return Err(EvalError {
                message: format!(
                    "candidate `{}` left the CUDA context unusable: {}",
                    c.name,
                    out.verdict.feedback()
                ),
                context_lost: true,
            });
        }
        let correct = out.verdict.is_correct();
        statuses.push(CandidateStatus {
            name: c.name.clone(),
            verdict: out.verdict,
            timed: correct,
        });
        if correct {
            accepted.push(c);
        }
    }
    let harness = |what: &str, f: CompileFailure| match f {
        CompileFailure::Harness(e) => e,
        CompileFailure::Verdict(v) => EvalError::new(format!(
            "{what} does not compile for {arch}: {}",
            v.feedback()
        )),
    };
    let reference = compile(
        compiler,
        task,
        &bundle.reference_source,
        &bundle.reference_plan,
        arch,
        "reference.cu",
    )
    .map_err(|f| harness("the reference kernel", f))?;
    let load_err = |what: &str, e: super::RuntimeError| EvalError {
        context_lost: e.is_sticky(),
        message: format!("loading {what}: {e}"),
    };
    let ref_module = dev
        .load(&reference)
        .map_err(|e| load_err("the reference module", e))?;
    let mut plans = Vec::new();
    for c in &accepted {
        let plan = evaluate::candidate_plan(task, &c.source, &c.plan)
            .map_err(|v| EvalError::new(format!("`{}`: {}", c.name, v.feedback())))?;
        let compiled = compile(compiler, task, &c.source, &plan, arch, "kernel.cu")
            .map_err(|f| harness(&format!("candidate `{}`", c.name), f))?;
        let module = dev
            .load(&compiled)
            .map_err(|e| load_err(&format!("candidate `{}`", c.name), e))?;
        plans.push((c.name.clone(), plan, module));
    }
    let mut subjects = vec![Subject {
        name: "reference".to_string(),
        plan: &bundle.reference_plan,
        program: &ref_module,
    }];
    for (name, plan, module) in &plans {
        subjects.push(Subject {
            name: name.clone(),
            plan,
            program: module,
        });
    }
    let shapes: Vec<_> = if req.shapes.is_empty() {
        task.shapes.clone()
    } else {
        let mut v = Vec::new();
        for n in &req.shapes {
            let s = task.shape(n).ok_or_else(|| {
                EvalError::new(format!("task `{}` has no public shape `{n}`", task.id))
            })?;
            v.push(s.clone());
        }
        v
    };
    // The read-based L2 flush (see runtime::timing); a memset where it cannot be built.
    let flush_module = match compiler.compile(&CompileRequest::new(
        FLUSH_KERNEL,
        vec![FLUSH_KERNEL_NAME.to_string()],
        arch,
    )) {
        Ok(c) => Some(
            dev.load(&c)
                .map_err(|e| load_err("the L2 flush kernel", e))?,
        ),
        Err(e) => {
            log.push(format!(
                "the L2 flush kernel does not compile ({e}): flushing L2 by memset"
            ));
            None
        }
    };
    let flush = match &flush_module {
        Some(m) => Flush::Read(m),
        None => Flush::Write,
    };
    log.push(format!(
        "L2 flush before each timed call: {} {} bytes",
        flush.method(),
        2 * dev.l2_bytes().max(1 << 20)
    ));
    let mut timings = Vec::new();
    let mut failures = Vec::new();
    for shape in &shapes {
        match time_shape_with(dev, task, shape, &subjects, &req.timing, telemetry, &flush) {
            Ok(t) => {
                log.push(format!(
                    "{}: {} samples, stopped: {:?}, {:.0} ms",
                    shape.name,
                    t.subjects.first().map(|s| s.summary.n).unwrap_or(0),
                    t.stop_reason,
                    t.elapsed_ms
                ));
                timings.push(t);
            }
            Err(e) if e.context_lost => {
                return Err(EvalError {
                    message: format!("shape {}: {}", shape.name, e.message),
                    context_lost: true,
                })
            }
            Err(e) => failures.push(ShapeFailure {
                shape: shape.name.clone(),
                message: e.message,
                subject: e.subject,
            }),
        }
    }
    Ok(BenchReport {
        task: task.id.clone(),
        content: bundle.content.clone(),
        device: dev.describe(),
        subjects: subjects.iter().map(|s| s.name.clone()).collect(),
        candidates: statuses,
        shapes: timings,
        failures,
        log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_default() {
        let r: BenchRequest =
            serde_json::from_str(r#"{"task_dir": "tasks/activation/swiglu"}"#).unwrap();
        assert!(r.candidates.is_empty() && r.shapes.is_empty());
        assert_eq!(r.timing.protocol.max_samples, 100);
        assert_eq!(r.check, EvalOptions::default());
        let text = serde_json::to_string(&BenchRequest {
            candidates: vec![BenchCandidate {
                name: "mine".into(),
                source: "k".into(),
                plan: "p".into(),
            }],
            ..r
        })
        .unwrap();
        let back: BenchRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(back.candidates[0].name, "mine");
        assert!(serde_json::from_str::<BenchRequest>(r#"{"candidates": []}"#).is_err());
    }
}
