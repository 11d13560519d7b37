//! `ksmith tasks spec`: every task's spec.py run by PyTorch on the CPU, on the inputs the harness
//! generates for it, and its outputs checked against the task's declarations.
//!
//! The GPU machine is lent rarely and briefly; a spec.py that does not load, returns the wrong
//! dtype or shape, computes NaN from the declared distributions, or returns a constant (which a
//! kernel writing that constant would "match") is a task bug that should be found before a GPU
//! session spends minutes on it. On the CPU the check needs only `pip install torch`.
//!
//! It also checks that the outputs depend on every input, and on both halves of the last
//! dimension of every input drawn from a distribution: spec.py runs again with that part drawn
//! from another seed, and a part whose redraw changes no output (on several draws and larger
//! public shapes) is reported — on such inputs a kernel that never reads it would pass (logits
//! whose argmax always sits in the first few entries of a row). Inputs that are the same for
//! every seed (constants, fixed tables) are exempt; structured inputs are redrawn whole.
//!
//! And it runs spec.py on the verifier's stress variants (heavy-tailed inputs scaled up and
//! down): an output that turns NaN or infinite there makes the strict check compare overflow
//! with overflow, where summation order decides between inf and the largest finite value, so
//! a correct kernel fails at random. Such inputs (typically weights multiplied through several
//! layers) need `stress = false`.

use crate::suite::{Entry, TaskDir};
use crate::torch::{
    skip_message, Mode, ModeResult, RunnerConfig, Session, TorchDevice, TorchError, TorchJob,
};
use serde::Serialize;
use std::time::Instant;
use verifier::heldout::{self, HeldoutOptions};
use verifier::inputs::{self, HostTensor, StressScale, Variant};
use verifier::task::{InitKind, Shape, Task};
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
    /// Also run spec.py once per input redrawn from another seed (see the module docs), on the
    /// public shapes checked.
    pub sensitivity: bool,
    /// Also run spec.py on the stress variants and report outputs that turn NaN or infinite.
    pub stress: bool,
    /// Public shapes with more bytes of inputs and outputs than this are skipped (reported as
    /// skipped), except a task's smallest.
    pub max_bytes: Option<u64>,
    /// Also check this many held-out shapes per task, drawn as the verifier draws them (inside
    /// the declared ranges and constraints, at most 64 MiB), from `heldout_seed`.
    pub heldout: usize,
    pub heldout_seed: u64,
    pub runner: RunnerConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecStatus {
    Ok,
    /// The task does not load, its inputs cannot be generated, or spec.py fails or returns
    /// something other than the declared outputs.
    Failed,
    /// spec.py runs, but an output holds NaN/Inf or is constant, or no output depends on some
    /// input.
    Degenerate,
    /// Not run: the shape is over `max_bytes`.
    Skipped,
    /// A held-out shape whose outputs are degenerate: a warning, not a failure. Edge cases
    /// inside the declared ranges (K = 1, K = E) can make an output constant by the math itself,
    /// and the public shapes, which must not be degenerate, still check the real work.
    Warning,
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
    /// Inputs redrawn from another seed to check that the outputs depend on them.
    pub redrawn: Vec<String>,
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
                    redrawn: Vec::new(),
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
        let smallest = pick_shapes(&td.task, &ShapePick::Smallest)
            .ok()
            .and_then(|s| s.first().map(|s| s.name.clone()));
        for shape in shapes {
            let bytes = bytes_of(&td.task, shape).unwrap_or(u64::MAX);
            let over = opts.max_bytes.is_some_and(|m| bytes > m);
            let row = if over && smallest.as_deref() != Some(shape.name.as_str()) {
                row_for(
                    td,
                    &shape.name,
                    SpecStatus::Skipped,
                    0.0,
                    vec![format!(
                        "{:.0} MiB of inputs and outputs, over --max-bytes",
                        bytes as f64 / (1u64 << 20) as f64
                    )],
                )
            } else {
                check_shape(td, shape, &shape.name, opts.sensitivity, opts, &mut session)?
            };
            progress(&row);
            rows.push(row);
        }
        if opts.heldout > 0 {
            let hopts = HeldoutOptions {
                count: opts.heldout,
                ..HeldoutOptions::default()
            };
            for shape in heldout::draw(&td.task, opts.heldout_seed, &hopts) {
                let label = format!("{} ({})", shape.name, shape.describe());
                let mut row = check_shape(td, &shape, &label, false, opts, &mut session)?;
                if row.status == SpecStatus::Degenerate {
                    row.status = SpecStatus::Warning;
                }
                progress(&row);
                rows.push(row);
            }
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
        redrawn: Vec::new(),
        problems,
    }
}

/// Bytes of every input and output at `shape` (the held-out draw's measure), or `None` when a
/// dimension does not evaluate.
fn bytes_of(task: &Task, shape: &Shape) -> Option<u64> {
    heldout::shape_bytes(task, shape).ok()
}

fn pick_shapes<'t>(task: &'t Task, pick: &ShapePick) -> Result<Vec<&'t Shape>, String> {
    match pick {
        ShapePick::All => Ok(task.shapes.iter().collect()),
        ShapePick::Smallest => task
            .shapes
            .iter()
            .min_by_key(|s| bytes_of(task, s).unwrap_or(u64::MAX))
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
    label: &str,
    sensitivity: bool,
    opts: &SpecCheckOptions,
    session: &mut Option<Session>,
) -> Result<SpecRow, SpecUnavailable> {
    let started = Instant::now();
    let failed = |problem: String| {
        row_for(
            td,
            label,
            SpecStatus::Failed,
            started.elapsed().as_secs_f64(),
            vec![problem],
        )
    };
    let probes: Vec<Probe> = if sensitivity {
        (0..td.task.inputs.len())
            .flat_map(|i| probes_of(&td.task, i, shape))
            .collect()
    } else {
        Vec::new()
    };
    let first = match round(td, shape, opts.seed, &probes, opts, session)? {
        Ok(r) => r,
        Err(p) => return Ok(failed(p)),
    };
    let facts: Vec<OutputFacts> = td
        .task
        .outputs
        .iter()
        .zip(&first.outputs)
        .map(|(d, t)| output_facts(&d.name, t))
        .collect();
    let mut problems = degeneracies(&facts);
    if opts.stress && td.task.stressable() {
        match stress_problems(td, shape, opts, session)? {
            Ok(p) => problems.extend(p),
            Err(p) => return Ok(failed(p)),
        }
    }
    // Parts the same for every seed (constants, fixed tables) were not redrawn: exempt.
    let mut unmoved: Vec<Probe> = first
        .redrawn
        .iter()
        .filter(|p| !first.moved.contains(p))
        .copied()
        .collect();
    // One draw may simply not exercise an input (a draft chain accepted whatever the uniforms,
    // a path that never reaches the nodes whose parents were redrawn): ask again on other draws
    // of everything else, then on larger public shapes, before calling the input unread.
    let mut tried = 1;
    for (shape_k, seed_k) in retry_plan(&td.task, shape, opts.seed) {
        if unmoved.is_empty() {
            break;
        }
        tried += 1;
        let r = match round(td, shape_k, seed_k, &unmoved, opts, session)? {
            Ok(r) => r,
            Err(p) => return Ok(failed(p)),
        };
        unmoved.retain(|p| !r.moved.contains(p));
    }
    problems.extend(
        unmoved
            .iter()
            .map(|p| insensitive(&p.describe(&td.task.inputs[p.input].name), tried)),
    );
    let status = if problems.is_empty() {
        SpecStatus::Ok
    } else {
        SpecStatus::Degenerate
    };
    Ok(SpecRow {
        outputs: facts,
        redrawn: {
            let mut names: Vec<String> = Vec::new();
            for p in &first.redrawn {
                let n = &td.task.inputs[p.input].name;
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
            names
        },
        problems,
        ..row_for(
            td,
            label,
            status,
            started.elapsed().as_secs_f64(),
            Vec::new(),
        )
    })
}

/// spec.py on the stress variants of `shape` at the check's seed: one problem per output that
/// holds NaN or infinite values there.
fn stress_problems(
    td: &TaskDir,
    shape: &Shape,
    opts: &SpecCheckOptions,
    session: &mut Option<Session>,
) -> Result<Result<Vec<String>, String>, SpecUnavailable> {
    let variants = [
        Variant::Stress(StressScale::Up),
        Variant::Stress(StressScale::Down),
    ];
    let mut sets = Vec::new();
    for v in variants {
        match inputs::generate_inputs(&td.task, shape, opts.seed, v) {
            Ok(set) => sets.push(set),
            Err(e) => return Ok(Err(format!("generating {v} inputs: {e}"))),
        }
    }
    let outputs = match run_sets(td, shape, &sets, opts, session)? {
        Ok(o) => o,
        Err(p) => return Ok(Err(format!("on the stress-variant inputs: {p}"))),
    };
    let mut problems = Vec::new();
    for (v, set) in variants.iter().zip(&outputs) {
        for (d, t) in td.task.outputs.iter().zip(set) {
            let f = output_facts(&d.name, t);
            if f.non_finite > 0 {
                problems.push(format!(
                    "output `{}`: {} of {} values are NaN or infinite on the {v} inputs: \
                     overflow makes the strict check flaky; mark the inputs that must not be \
                     rescaled (weights through several layers) `stress = false`",
                    d.name,
                    f.non_finite,
                    f.dims.iter().product::<u64>()
                ));
            }
        }
    }
    Ok(Ok(problems))
}

/// A part of one input that is redrawn to see whether the outputs depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub input: usize,
    pub part: Part,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Whole,
    /// Elements in the lower half of the last dimension (index < len / 2).
    Lower,
    /// Elements in the upper half of the last dimension.
    Upper,
}

impl Probe {
    pub fn describe(&self, name: &str) -> String {
        match self.part {
            Part::Whole => format!("input `{name}`"),
            Part::Lower => format!("the lower half of the last dimension of input `{name}`"),
            Part::Upper => format!("the upper half of the last dimension of input `{name}`"),
        }
    }
}

/// What to redraw of an input: each half of its last dimension when that has two or more
/// elements and the values come from a distribution (so a kernel that reads only the first
/// entries of each row is caught), else the whole input (a half-redrawn structured input —
/// sorted offsets, a permutation — would no longer be one). Inputs the task lists in
/// `[checks.sensitivity] whole` are redrawn whole too.
pub fn probes_of(task: &Task, input: usize, shape: &Shape) -> Vec<Probe> {
    let decl = &task.inputs[input];
    let structured = matches!(
        decl.init.as_ref().map(|i| &i.kind),
        Some(InitKind::Generator(_))
    ) || task.checks.sensitivity.whole.contains(&decl.name);
    let last = inputs::dims_of(decl, shape)
        .ok()
        .and_then(|d| d.last().copied())
        .unwrap_or(1);
    if structured || last < 2 {
        vec![Probe {
            input,
            part: Part::Whole,
        }]
    } else {
        [Part::Lower, Part::Upper]
            .into_iter()
            .map(|part| Probe { input, part })
            .collect()
    }
}

/// `base` with the elements of `part` taken from `other` (same dtype and dims).
fn mix(base: &HostTensor, other: &HostTensor, part: Part) -> HostTensor {
    if part == Part::Whole {
        return other.clone();
    }
    let size = base.dtype.size_bytes();
    let last = base.dims.last().copied().unwrap_or(1).max(1) as usize;
    let half = last / 2;
    let mut out = base.clone();
    for (e, (dst, src)) in out
        .bytes
        .chunks_exact_mut(size)
        .zip(other.bytes.chunks_exact(size))
        .enumerate()
    {
        if (e % last < half) == (part == Part::Lower) {
            dst.copy_from_slice(src);
        }
    }
    out
}

/// One draw: spec.py on the inputs of (`shape`, `seed`) and on copies with one probed part
/// drawn from another seed each.
struct Round {
    /// The outputs on the unchanged inputs.
    outputs: Vec<HostTensor>,
    /// The probes whose redraw changed the inputs (parts the same for every seed are not).
    redrawn: Vec<Probe>,
    /// The redrawn probes whose redraw changed some output.
    moved: Vec<Probe>,
}

fn round(
    td: &TaskDir,
    shape: &Shape,
    seed: u64,
    probes: &[Probe],
    opts: &SpecCheckOptions,
    session: &mut Option<Session>,
) -> Result<Result<Round, String>, SpecUnavailable> {
    let base = match inputs::generate_inputs(&td.task, shape, seed, Variant::Base) {
        Ok(b) => b,
        Err(e) => return Ok(Err(format!("generating inputs: {e}"))),
    };
    let other = seed.wrapping_add(0x5eed);
    let mut fresh: Vec<Option<HostTensor>> = vec![None; base.len()];
    let (mut sets, mut redrawn) = (vec![base.clone()], Vec::new());
    for p in probes {
        let i = p.input;
        if fresh[i].is_none() {
            match inputs::generate(&td.task, &td.task.inputs[i], shape, other, Variant::Base) {
                Ok(t) => fresh[i] = Some(t),
                Err(e) => return Ok(Err(format!("generating inputs: {e}"))),
            }
        }
        let Some(t) = &fresh[i] else { continue };
        let mixed = mix(&base[i], t, p.part);
        if mixed.bytes != base[i].bytes {
            let mut set = base.clone();
            set[i] = mixed;
            sets.push(set);
            redrawn.push(*p);
        }
    }
    let mut results = match run_sets(td, shape, &sets, opts, session)? {
        Ok(r) => r.into_iter(),
        Err(p) => return Ok(Err(p)),
    };
    let outputs = results.next().unwrap_or_default();
    let moved = redrawn
        .iter()
        .zip(results)
        .filter(|(_, out)| *out != outputs)
        .map(|(p, _)| *p)
        .collect();
    Ok(Ok(Round {
        outputs,
        redrawn,
        moved,
    }))
}

/// spec.py's outputs for every input set, in order; `Ok(Err(problem))` when spec.py fails (a
/// task problem), `Err` when PyTorch cannot be used at all.
fn run_sets(
    td: &TaskDir,
    shape: &Shape,
    sets: &[Vec<HostTensor>],
    opts: &SpecCheckOptions,
    session: &mut Option<Session>,
) -> Result<Result<Vec<Vec<HostTensor>>, String>, SpecUnavailable> {
    let mut job = match TorchJob::for_task(
        &td.task,
        shape,
        sets,
        vec![Mode::Oracle],
        Protocol::default(),
    ) {
        Ok(j) => j,
        Err(e) => return Ok(Err(e.to_string())),
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
        Err(e) => return Ok(Err(e.to_string())),
    };
    Ok(match report.oracle {
        Some(ModeResult::Ok(mut o)) if o.sets.len() == sets.len() => {
            o.sets.sort_by_key(|(k, _)| *k);
            Ok(o.sets.into_iter().map(|(_, t)| t).collect())
        }
        Some(ModeResult::Ok(o)) => Err(format!(
            "{} output sets came back for {} input sets",
            o.sets.len(),
            sets.len()
        )),
        Some(ModeResult::Failed { error, traceback }) => {
            let mut p = format!("spec.py failed: {error}");
            if let Some(t) = traceback {
                p.push('\n');
                p.push_str(t.trim_end());
            }
            Err(p)
        }
        None => Err("the runner's reply has no oracle result".into()),
    })
}

/// Further draws of the shape checked, before larger shapes are tried.
pub const SENSITIVITY_DRAWS: u64 = 3;
/// Larger public shapes are tried only up to this many bytes of inputs and outputs (a CPU runs
/// spec.py on them), two draws each: the held-out shapes' cap. Deep positions of a chain or a
/// tree (reached only when many earlier ones accept) need the larger batches to be exercised.
pub const SENSITIVITY_MAX_BYTES: u64 = 64 << 20;

/// The (shape, seed) pairs on which an input that seemed unread is redrawn again: more draws of
/// `shape`, then two draws of each larger public shape within [`SENSITIVITY_MAX_BYTES`],
/// smallest first (more rows, more chances for a decision to depend on the input).
pub fn retry_plan<'t>(task: &'t Task, shape: &'t Shape, seed: u64) -> Vec<(&'t Shape, u64)> {
    let mut plan: Vec<(&Shape, u64)> = (1..=SENSITIVITY_DRAWS)
        .map(|k| (shape, seed.wrapping_add(k)))
        .collect();
    let here = bytes_of(task, shape).unwrap_or(0);
    let mut larger: Vec<(&Shape, u64)> = task
        .shapes
        .iter()
        .filter(|s| s.name != shape.name)
        .filter_map(|s| bytes_of(task, s).map(|b| (s, b)))
        .filter(|(_, b)| *b >= here && *b <= SENSITIVITY_MAX_BYTES)
        .collect();
    larger.sort_by_key(|(s, b)| (*b, s.name.clone()));
    for (s, _) in larger {
        plan.push((s, seed));
        plan.push((s, seed.wrapping_add(1)));
    }
    plan
}

/// The problem with a part of an input (as [`Probe::describe`] words it) that no output
/// depends on, after `tries` draws.
pub fn insensitive(what: &str, tries: usize) -> String {
    format!(
        "no output changes when {what} is drawn from another seed (tried on {tries} draws of \
         the other inputs): on such inputs a kernel that never reads it would pass"
    )
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
