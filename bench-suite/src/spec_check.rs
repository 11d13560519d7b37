//! `ksmith tasks spec`: every task's spec.py run by PyTorch on the CPU, on the inputs the harness
//! generates for it, and its outputs checked against the task's declarations.
//!
//! The GPU machine is lent rarely and briefly; a spec.py that does not load, returns the wrong
//! dtype or shape, computes NaN from the declared distributions, or returns a constant (which a
//! kernel writing that constant would "match") is a task bug that should be found before a GPU
//! session spends minutes on it. On the CPU the check needs only `pip install torch`.

use crate::suite::{Entry, TaskDir};
use crate::torch::{
    skip_message, Mode, ModeResult, RunnerConfig, Session, TorchDevice, TorchError, TorchJob,
};
use serde::Serialize;
use std::time::Instant;
use verifier::inputs::{self, HostTensor, Variant};
use verifier::task::{Shape, Task};
use verifier::timing::Protocol;

/// Which public shapes of each task to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapePick {
    /// The one with the fewest input and output bytes (the default: quick, and enough to find
    /// most spec bugs).
    Smallest,
    /// Every public shape.
    All,
    /// These shape names (a task without any of them is reported, not skipped silently).
    Named(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct SpecCheckOptions {
    pub shapes: ShapePick,
    /// The input seed (the verifier's seeds 1, 2, ... are as good; 1 is its first).
    pub seed: u64,
    pub runner: RunnerConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecStatus {
    Ok,
    /// The task does not load, its inputs cannot be generated, or spec.py fails or returns
    /// something other than the declared outputs.
    Failed,
    /// spec.py runs, but an output holds NaN/Inf or is constant.
    Degenerate,
}

/// Facts about one output tensor, as spec.py computed it.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFacts {
    pub name: String,
    pub dtype: String,
    pub dims: Vec<u64>,
    /// NaN or infinite elements (floats only).
    pub non_finite: u64,
    /// The largest finite magnitude (0 for an empty tensor).
    pub max_abs: f64,
    /// Every element has the same bits (and there are at least two).
    pub constant: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpecRow {
    pub id: String,
    pub category: String,
    /// The shape's name, or "-" when the task itself does not load.
    pub shape: String,
    pub status: SpecStatus,
    pub secs: f64,
    pub outputs: Vec<OutputFacts>,
    pub problems: Vec<String>,
}

/// PyTorch could not be used at all: nothing was checked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecUnavailable(pub String);

/// Checks every selected entry, one runner session for all of them (torch is imported once);
/// `progress` is called once per finished (task, shape).
pub fn check(
    selected: &[&Entry],
    opts: &SpecCheckOptions,
    progress: &mut dyn FnMut(&SpecRow),
) -> Result<Vec<SpecRow>, SpecUnavailable> {
    let mut session: Option<Session> = None;
    let mut rows = Vec::new();
    for entry in selected {
        let td = match entry {
            Entry::Ok(td) => td,
            Entry::Broken {
                id,
                category,
                diagnostics,
                ..
            } => {
                let row = SpecRow {
                    id: id.clone(),
                    category: category.clone(),
                    shape: "-".into(),
                    status: SpecStatus::Failed,
                    secs: 0.0,
                    outputs: Vec::new(),
                    problems: diagnostics.iter().map(|d| d.to_string()).collect(),
                };
                progress(&row);
                rows.push(row);
                continue;
            }
        };
        let shapes = match pick_shapes(&td.task, &opts.shapes) {
            Ok(s) => s,
            Err(problem) => {
                let row = row_for(td, "-", SpecStatus::Failed, 0.0, vec![problem]);
                progress(&row);
                rows.push(row);
                continue;
            }
        };
        for shape in shapes {
            let row = check_shape(td, shape, opts, &mut session)?;
            progress(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

fn row_for(
    td: &TaskDir,
    shape: &str,
    status: SpecStatus,
    secs: f64,
    problems: Vec<String>,
) -> SpecRow {
    SpecRow {
        id: td.task.id.clone(),
        category: td.task.category.clone(),
        shape: shape.to_string(),
        status,
        secs,
        outputs: Vec::new(),
        problems,
    }
}

/// Bytes of every input and output at `shape`, or `None` when a dimension does not evaluate.
pub fn shape_bytes(task: &Task, shape: &Shape) -> Option<u64> {
    task.inputs
        .iter()
        .chain(&task.outputs)
        .map(|d| {
            let dims = inputs::dims_of(d, shape).ok()?;
            dims.iter()
                .try_fold(d.dtype.size_bytes() as u64, |a, &x| a.checked_mul(x))
        })
        .try_fold(0u64, |a, b| a.checked_add(b?))
}

fn pick_shapes<'t>(task: &'t Task, pick: &ShapePick) -> Result<Vec<&'t Shape>, String> {
    match pick {
        ShapePick::All => Ok(task.shapes.iter().collect()),
        ShapePick::Smallest => task
            .shapes
            .iter()
            .min_by_key(|s| shape_bytes(task, s).unwrap_or(u64::MAX))
            .map(|s| vec![s])
            .ok_or_else(|| "the task declares no shapes".to_string()),
        ShapePick::Named(names) => {
            let found: Vec<&Shape> = task
                .shapes
                .iter()
                .filter(|s| names.contains(&s.name))
                .collect();
            if found.is_empty() {
                Err(format!(
                    "no shape named {} (the task has {})",
                    names.join(" or "),
                    task.shapes
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            } else {
                Ok(found)
            }
        }
    }
}

fn check_shape(
    td: &TaskDir,
    shape: &Shape,
    opts: &SpecCheckOptions,
    session: &mut Option<Session>,
) -> Result<SpecRow, SpecUnavailable> {
    let started = Instant::now();
    let failed = |problem: String| {
        row_for(
            td,
            &shape.name,
            SpecStatus::Failed,
            started.elapsed().as_secs_f64(),
            vec![problem],
        )
    };
    let set = match inputs::generate_inputs(&td.task, shape, opts.seed, Variant::Base) {
        Ok(s) => s,
        Err(e) => return Ok(failed(format!("generating inputs: {e}"))),
    };
    let sets = vec![set];
    let mut job = match TorchJob::for_task(
        &td.task,
        shape,
        &sets,
        vec![Mode::Oracle],
        Protocol::default(),
    ) {
        Ok(j) => j,
        Err(e) => return Ok(failed(e.to_string())),
    };
    job.spec = td.spec_path.clone();
    job.device = TorchDevice::Cpu;
    let s = match session {
        Some(s) => s,
        None => session.insert(Session::new(opts.runner.clone()).map_err(unavailable)?),
    };
    let report = match s.run(&job) {
        Ok(r) => r,
        Err(e) if skip_message(&e).is_some() => return Err(unavailable(e)),
        Err(e) => return Ok(failed(e.to_string())),
    };
    let outputs = match report.oracle {
        Some(ModeResult::Ok(mut o)) if o.sets.len() == 1 => o.sets.remove(0).1,
        Some(ModeResult::Ok(o)) => {
            return Ok(failed(format!(
                "{} output sets came back for one input set",
                o.sets.len()
            )))
        }
        Some(ModeResult::Failed { error, traceback }) => {
            let mut p = format!("spec.py failed: {error}");
            if let Some(t) = traceback {
                p.push('\n');
                p.push_str(t.trim_end());
            }
            return Ok(failed(p));
        }
        None => return Ok(failed("the runner's reply has no oracle result".into())),
    };
    let facts: Vec<OutputFacts> = td
        .task
        .outputs
        .iter()
        .zip(&outputs)
        .map(|(d, t)| output_facts(&d.name, t))
        .collect();
    let problems = degeneracies(&facts);
    let status = if problems.is_empty() {
        SpecStatus::Ok
    } else {
        SpecStatus::Degenerate
    };
    Ok(SpecRow {
        outputs: facts,
        problems,
        ..row_for(
            td,
            &shape.name,
            status,
            started.elapsed().as_secs_f64(),
            Vec::new(),
        )
    })
}

fn unavailable(e: TorchError) -> SpecUnavailable {
    SpecUnavailable(
        skip_message(&e)
            .map(|m| format!("{m} (install PyTorch for this python, or point KSMITH_PYTHON at one that has it)"))
            .unwrap_or_else(|| e.to_string()),
    )
}

/// Non-finite count, largest finite magnitude and constancy of a tensor.
pub fn output_facts(name: &str, t: &HostTensor) -> OutputFacts {
    let n = t.numel() as usize;
    let (mut non_finite, mut max_abs) = (0u64, 0f64);
    for i in 0..n {
        let v = t.get_f64(i);
        if v.is_finite() {
            max_abs = max_abs.max(v.abs());
        } else {
            non_finite += 1;
        }
    }
    let size = t.dtype.size_bytes();
    let constant = n >= 2 && {
        let first = &t.bytes[..size];
        t.bytes.chunks_exact(size).all(|e| e == first)
    };
    OutputFacts {
        name: name.to_string(),
        dtype: t.dtype.to_string(),
        dims: t.dims.clone(),
        non_finite: if t.dtype.is_float() { non_finite } else { 0 },
        max_abs,
        constant,
    }
}

/// What makes outputs useless for verification: values no comparison accepts, or a constant
/// that a kernel could write without reading its inputs.
pub fn degeneracies(facts: &[OutputFacts]) -> Vec<String> {
    let mut out = Vec::new();
    for f in facts {
        let numel: u64 = f.dims.iter().product();
        if f.non_finite > 0 {
            out.push(format!(
                "output `{}`: {} of {numel} values are NaN or infinite on the declared inputs",
                f.name, f.non_finite
            ));
        }
        if f.constant {
            out.push(format!(
                "output `{}`: all {numel} values are equal, so a kernel that writes that constant \
                 without reading its inputs would pass",
                f.name
            ));
        }
    }
    out
}
