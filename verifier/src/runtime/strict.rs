//! The strict verification protocol (DESIGN §4.3-4.5), generic over the device:
//! for each public shape and the held-out shapes, each seed (fixed ones plus one drawn at run
//! time) and each input variant (declared distributions, then heavy-tailed scaled up and down):
//! generate the inputs, get the reference outputs from an [`Oracle`], copy the inputs into the
//! candidate's own buffers, run its `[[prepare]]` launches, poison outputs and scratch, run the
//! plan, synchronise, check every error code and the guard zones, check that inputs and
//! persistent scratch are bit-identical, compare, then run again with the other poison and
//! compare the two runs. Where the task declares `[checks.batch_invariant]`, probed rows are
//! then each run alone at the same shape with the batch parameter set to 1 and compared bitwise
//! with their rows of the full run ([`batch`]). The first failure is the verdict.
//!
//! `[[prepare]]` runs once per case rather than once per task: weight inputs are regenerated
//! for every (shape, seed, variant), and prepare's output depends on them. Persistent scratch
//! is snapshotted after it and must not change during the runs.
//!
//! The timing code (DESIGN §5) reuses [`PlanBuffers`] and [`execute`], and re-validates the
//! output of the last timed call with [`revalidate`].

use super::backend::Backend;
use super::error::RuntimeError;
use super::gpu::GuardDamage;
use crate::compare::{compare, compare_runs, coords, Metric, MismatchReport, Poison, RunAgreement};
use crate::dtype::DType;
use crate::heldout::{self, HeldoutOptions};
use crate::inputs::{dims_of, generate_inputs, HostTensor, StressScale, Variant};
use crate::plan::{Plan, ResolvedLaunch};
use crate::protocol::{EvalOptions, OutputError};
use crate::task::{Shape, Task};
use crate::verdict::{Case, MutatedBuffer, Verdict};
use indexmap::IndexMap;
use std::rc::Rc;

/// Why an evaluation produced no verdict: the harness (or the task's reference) failed, not
/// the candidate.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    pub message: String,
    /// The CUDA context is unusable: the worker must exit after answering.
    pub context_lost: bool,
}

impl EvalError {
    pub fn new(message: impl Into<String>) -> EvalError {
        EvalError {
            message: message.into(),
            context_lost: false,
        }
    }

    fn runtime(what: String, e: &RuntimeError) -> EvalError {
        EvalError {
            message: format!("{what}: {e}"),
            context_lost: e.is_sticky(),
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Notes for humans: shapes drawn, cases run, cache hits.
    pub log: Vec<String>,
    /// The candidate left the CUDA context unusable (a sticky fault): the worker must exit
    /// after answering.
    pub context_lost: bool,
    /// Per output, the worst comparison with the oracle among the cases that passed.
    pub errors: Vec<OutputError>,
}

/// Told when a candidate's kernels run on a case and when they have finished: the worker
/// arms its watchdog in between. `None`: nothing of the candidate is running.
pub trait RunHooks {
    fn running(&self, case: Option<&Case>);
}

/// No hooks (tests, in-process use).
pub struct NoHooks;

impl RunHooks for NoHooks {
    fn running(&self, _case: Option<&Case>) {}
}

/// Where reference outputs come from: the task's reference kernel on the same device
/// ([`KernelOracle`]), or the task's spec.py through a [`SpecOracle`] ([`SpecOracleFor`]).
pub trait Oracle {
    fn describe(&self) -> String;
    /// The outputs of the task for these inputs, in `task.outputs` order.
    fn outputs(
        &mut self,
        case: &Case,
        shape: &Shape,
        inputs: &[HostTensor],
    ) -> Result<Rc<Vec<HostTensor>>, EvalError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Input,
    Output,
    Scratch,
    Persistent,
}

struct Slot<Buf> {
    name: String,
    role: Role,
    dtype: DType,
    dims: Vec<u64>,
    buf: Buf,
}

/// One plan's buffers at one shape: the task's inputs and outputs plus the plan's scratch.
pub struct PlanBuffers<B: Backend> {
    slots: Vec<Slot<B::Buffer>>,
    /// The shape the buffers were sized for.
    pub values: IndexMap<String, i64>,
}

impl<B: Backend> PlanBuffers<B> {
    pub fn new(dev: &B, task: &Task, plan: &Plan, shape: &Shape) -> Result<Self, String> {
        let mut slots = Vec::new();
        let mut total: u64 = 0;
        let mut add =
            |name: &str, role: Role, dtype: DType, dims: Vec<u64>| -> Result<(), String> {
                let numel: u64 = dims.iter().product();
                total = total.saturating_add(numel.saturating_mul(dtype.size_bytes() as u64));
                let buf = dev.alloc(name, dtype, numel).map_err(|e| {
                    format!("allocating `{name}` ({numel} x {dtype}; {total} bytes so far): {e}")
                })?;
                slots.push(Slot {
                    name: name.to_string(),
                    role,
                    dtype,
                    dims,
                    buf,
                });
                Ok(())
            };
        for (decls, role) in [(&task.inputs, Role::Input), (&task.outputs, Role::Output)] {
            for d in decls {
                let dims = dims_of(d, shape).map_err(|e| format!("`{}`: {e}", d.name))?;
                add(&d.name, role, d.dtype, dims)?;
            }
        }
        let lens = plan.scratch_lengths(shape)?;
        for (s, len) in plan.scratch.iter().zip(lens) {
            let role = if s.persistent {
                Role::Persistent
            } else {
                Role::Scratch
            };
            add(&s.name, role, s.dtype, vec![len])?;
        }
        Ok(PlanBuffers {
            slots,
            values: shape.values.clone(),
        })
    }

    pub fn address(&self, dev: &B, name: &str) -> Option<u64> {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .map(|s| dev.address(&s.buf))
    }

    fn of(&self, role: Role) -> impl Iterator<Item = &Slot<B::Buffer>> {
        self.slots.iter().filter(move |s| s.role == role)
    }

    pub fn upload_inputs(&self, dev: &B, inputs: &[HostTensor]) -> Result<(), RuntimeError> {
        for (slot, t) in self.of(Role::Input).zip(inputs) {
            dev.upload(&slot.buf, &t.bytes)?;
        }
        Ok(())
    }

    /// Fills outputs and (non-persistent) scratch with a poison pattern.
    pub fn poison(&self, dev: &B, poison: Poison) -> Result<(), RuntimeError> {
        for s in self.slots.iter() {
            if matches!(s.role, Role::Output | Role::Scratch) {
                dev.fill(&s.buf, &poison.element(s.dtype))?;
            }
        }
        Ok(())
    }

    /// The outputs as they are on the device now, in `task.outputs` order.
    pub fn outputs(&self, dev: &B, task: &Task) -> Result<Vec<HostTensor>, RuntimeError> {
        self.of(Role::Output)
            .zip(&task.outputs)
            .map(|(s, d)| {
                Ok(HostTensor {
                    dtype: d.dtype,
                    dims: s.dims.clone(),
                    bytes: dev.download(&s.buf)?,
                })
            })
            .collect()
    }
}

/// How a run of a plan failed.
enum RunError {
    /// A launch was refused (limits checked before launching, or the driver said no).
    Launch {
        index: usize,
        kernel: String,
        error: RuntimeError,
    },
    /// Synchronising (or reading a guard zone) reported an error: the kernel faulted.
    Fault(RuntimeError),
    /// The kernel wrote just outside a buffer.
    Guard { buffer: String, damage: GuardDamage },
}

impl RunError {
    fn sticky(&self) -> bool {
        match self {
            RunError::Launch { error, .. } | RunError::Fault(error) => error.is_sticky(),
            RunError::Guard { .. } => false,
        }
    }

    fn message(&self) -> String {
        match self {
            RunError::Launch {
                index,
                kernel,
                error,
            } => format!("launch {index} (`{kernel}`): {error}"),
            RunError::Fault(e) => e.to_string(),
            RunError::Guard { buffer, damage } => guard_message(buffer, damage),
        }
    }

    fn verdict(&self, case: &Case) -> Verdict {
        match self {
            // A launch the driver refused without losing the context is a launch error; one
            // that reports an earlier asynchronous fault is that fault.
            RunError::Launch {
                index,
                kernel,
                error,
            } if !error.is_sticky() => Verdict::LaunchError {
                case: Some(case.clone()),
                kernel: kernel.clone(),
                launch: *index,
                message: error.to_string(),
            },
            other => Verdict::RuntimeFault {
                case: Some(case.clone()),
                message: other.message(),
                exit: None,
                stderr_tail: String::new(),
            },
        }
    }
}

fn guard_message(buffer: &str, d: &GuardDamage) -> String {
    let mut parts = Vec::new();
    if d.after > 0 {
        parts.push(format!(
            "{} byte(s) just past the end of `{buffer}` were overwritten (the first {} bytes past the end)",
            d.after,
            d.first_after.map(|o| o + 1).unwrap_or(0)
        ));
    }
    if d.before > 0 {
        parts.push(format!(
            "{} byte(s) just before the start of `{buffer}` were overwritten",
            d.before
        ));
    }
    format!("out-of-bounds write: {}", parts.join("; "))
}

/// Runs launches in order, synchronises and checks every guard zone.
fn run_plan<B: Backend>(
    dev: &B,
    program: &B::Program,
    launches: &[ResolvedLaunch],
    bufs: &PlanBuffers<B>,
) -> Result<(), RunError> {
    let address = |n: &str| bufs.address(dev, n);
    for (index, l) in launches.iter().enumerate() {
        if let Err(error) = dev.launch(program, l, &address) {
            // Launches queued before the refused one still run: wait for them, so a hang or a
            // fault of theirs is this candidate's, not the next request's.
            if let Err(e) = dev.synchronize() {
                if e.is_sticky() {
                    return Err(RunError::Fault(e));
                }
            }
            return Err(RunError::Launch {
                index,
                kernel: l.kernel.clone(),
                error,
            });
        }
    }
    dev.synchronize().map_err(RunError::Fault)?;
    for s in &bufs.slots {
        if let Some(damage) = dev.check_guards(&s.buf).map_err(RunError::Fault)? {
            return Err(RunError::Guard {
                buffer: s.name.clone(),
                damage,
            });
        }
    }
    Ok(())
}

/// Runs a plan's resolved launches once on `bufs` (as they are: the caller uploads and
/// poisons), synchronises and checks the guard zones. On failure: the verdict for `case`, and
/// whether the CUDA context was lost.
pub fn execute<B: Backend>(
    dev: &B,
    program: &B::Program,
    launches: &[ResolvedLaunch],
    bufs: &PlanBuffers<B>,
    case: &Case,
) -> Result<(), (Box<Verdict>, bool)> {
    run_plan(dev, program, launches, bufs).map_err(|e| (Box::new(e.verdict(case)), e.sticky()))
}

/// Poisons persistent scratch, runs `[[prepare]]`, and returns the persistent scratch bytes it
/// left (which must not change afterwards).
fn prepare<B: Backend>(
    dev: &B,
    program: &B::Program,
    launches: &[ResolvedLaunch],
    bufs: &PlanBuffers<B>,
) -> Result<Vec<Vec<u8>>, RunError> {
    for s in bufs.of(Role::Persistent) {
        dev.fill(&s.buf, &Poison::A.element(s.dtype))
            .map_err(RunError::Fault)?;
    }
    if !launches.is_empty() {
        run_plan(dev, program, launches, bufs)?;
    }
    bufs.of(Role::Persistent)
        .map(|s| dev.download(&s.buf).map_err(RunError::Fault))
        .collect()
}

/// Inputs and persistent scratch that differ from what they held before the run.
fn mutated<B: Backend>(
    dev: &B,
    bufs: &PlanBuffers<B>,
    inputs: &[&[u8]],
    persistent: &[Vec<u8>],
) -> Result<Vec<MutatedBuffer>, RuntimeError> {
    let mut out = Vec::new();
    let expected = inputs
        .iter()
        .map(|t| (Role::Input, *t))
        .chain(persistent.iter().map(|p| (Role::Persistent, p.as_slice())));
    let slots = bufs.of(Role::Input).chain(bufs.of(Role::Persistent));
    for (s, (role, before)) in slots.zip(expected) {
        debug_assert_eq!(s.role, role);
        let now = dev.download(&s.buf)?;
        if now == before {
            continue;
        }
        let size = s.dtype.size_bytes();
        let mut changed = 0u64;
        let mut first = None;
        for (i, (a, b)) in now.chunks(size).zip(before.chunks(size)).enumerate() {
            if a != b {
                changed += 1;
                first.get_or_insert(i as u64);
            }
        }
        out.push(MutatedBuffer {
            name: s.name.clone(),
            kind: match s.role {
                Role::Input => "input".to_string(),
                _ => "persistent scratch".to_string(),
            },
            changed_elements: changed,
            first_changed: coords(first.unwrap_or(0), &s.dims),
        });
    }
    Ok(out)
}

fn metric(task: &Task, i: usize) -> Metric {
    Metric::from(task.outputs[i].check.as_ref().unwrap_or(&task.check))
}

/// The shapes, seeds and variants a strict check covers, with notes on how they were chosen.
pub struct CaseSelection {
    pub shapes: Vec<Shape>,
    pub seeds: Vec<u64>,
    pub variants: Vec<Variant>,
    pub notes: Vec<String>,
}

/// Which cases `opts` asks for on this task.
pub fn cases(task: &Task, opts: &EvalOptions) -> Result<CaseSelection, EvalError> {
    let mut notes = Vec::new();
    let mut shapes = Vec::new();
    if !opts.public_shapes {
        notes.push("no public shapes asked for".to_string());
    } else if opts.shapes.is_empty() {
        shapes.extend(task.shapes.iter().cloned());
    } else {
        for n in &opts.shapes {
            let s = task.shape(n).ok_or_else(|| {
                let names: Vec<&str> = task.shapes.iter().map(|s| s.name.as_str()).collect();
                EvalError::new(format!(
                    "task `{}` has no shape `{n}` (its shapes: {})",
                    task.id,
                    names.join(", ")
                ))
            })?;
            shapes.push(s.clone());
        }
    }
    if opts.heldout_shapes > 0 {
        let drawn = heldout::draw(
            task,
            opts.heldout_seed,
            &HeldoutOptions {
                count: opts.heldout_shapes as usize,
                max_bytes: opts.heldout_max_bytes,
                ..HeldoutOptions::default()
            },
        );
        notes.push(format!(
            "held-out shapes (seed {}): {}",
            opts.heldout_seed,
            if drawn.is_empty() {
                "none could be drawn inside the ranges and byte cap".to_string()
            } else {
                drawn
                    .iter()
                    .map(|s| format!("{} ({})", s.name, s.describe()))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        if drawn.len() < opts.heldout_shapes as usize {
            notes.push(format!(
                "only {} of {} held-out shapes could be drawn",
                drawn.len(),
                opts.heldout_shapes
            ));
        }
        shapes.extend(drawn);
    }
    let mut seeds = opts.seeds.clone();
    if let Some(f) = opts.fresh_seed {
        if !seeds.contains(&f) {
            seeds.push(f);
        }
    }
    if seeds.is_empty() {
        return Err(EvalError::new(
            "no seeds to run (options.seeds is empty and no fresh seed)",
        ));
    }
    let mut variants = vec![Variant::Base];
    let stressable = task.stressable();
    if opts.stress && stressable {
        variants.push(Variant::Stress(StressScale::Up));
        variants.push(Variant::Stress(StressScale::Down));
    } else if opts.stress {
        notes.push("no stress variants: no float input opts into them".to_string());
    }
    Ok(CaseSelection {
        shapes,
        seeds,
        variants,
        notes,
    })
}

/// Runs the strict protocol on a candidate whose plan is valid and whose program is loaded.
pub fn check<B: Backend>(
    dev: &B,
    task: &Task,
    plan: &Plan,
    program: &B::Program,
    oracle: &mut dyn Oracle,
    opts: &EvalOptions,
    hooks: &dyn RunHooks,
) -> Result<Outcome, EvalError> {
    let sel = cases(task, opts)?;
    let mut log = sel.notes.clone();
    log.push(format!(
        "{} shape(s) x {} seed(s) {:?} x {} variant(s); reference: {}",
        sel.shapes.len(),
        sel.seeds.len(),
        sel.seeds,
        sel.variants.len(),
        oracle.describe()
    ));
    let mut count = 0u32;
    // (shapes, single-row runs) of the batch-invariance check.
    let mut probed = (0u32, 0u32);
    let mut within_tolerance: Vec<String> = Vec::new();
    let errors = std::cell::RefCell::new(Vec::<OutputError>::new());
    let done = |verdict: Verdict, log: Vec<String>, context_lost: bool| {
        Ok(Outcome {
            verdict,
            log,
            context_lost,
            errors: errors.take(),
        })
    };
    for shape in &sel.shapes {
        let at = format!("shape {} ({})", shape.name, shape.describe());
        let launches = match plan.resolve(shape) {
            Ok(l) => l,
            Err(e) => {
                return done(
                    Verdict::InvalidPlan {
                        message: format!("{at}: {e}"),
                    },
                    log,
                    false,
                )
            }
        };
        let prep = match plan.resolve_prepare(shape) {
            Ok(l) => l,
            Err(e) => {
                return done(
                    Verdict::InvalidPlan {
                        message: format!("{at}: {e}"),
                    },
                    log,
                    false,
                )
            }
        };
        let bufs = match PlanBuffers::new(dev, task, plan, shape) {
            Ok(b) => b,
            Err(e) => {
                return done(
                    Verdict::InvalidPlan {
                        message: format!("{at}: the plan's buffers cannot be allocated: {e}"),
                    },
                    log,
                    false,
                )
            }
        };
        let mut probe = match batch::Probe::new(dev, task, plan, shape, &mut log) {
            Ok(p) => p,
            Err(v) => return done(*v, log, false),
        };
        for &seed in &sel.seeds {
            for &variant in &sel.variants {
                let case = Case::new(shape, seed, variant);
                let inputs = generate_inputs(task, shape, seed, variant)
                    .map_err(|e| EvalError::new(format!("{}: {e}", case.describe())))?;
                let reference = oracle.outputs(&case, shape, &inputs)?;
                let fail = |e: RunError| (e.verdict(&case), e.sticky());
                let harness =
                    |e: RuntimeError| EvalError::runtime(format!("on {}", case.describe()), &e);

                bufs.upload_inputs(dev, &inputs).map_err(harness)?;
                let input_bytes: Vec<&[u8]> = inputs.iter().map(|t| t.bytes.as_slice()).collect();
                hooks.running(Some(&case));
                let prepared = prepare(dev, program, &prep, &bufs);
                hooks.running(None);
                let persistent = match prepared {
                    Ok(p) => p,
                    Err(e) => {
                        let (v, lost) = fail(e);
                        return done(v, log, lost);
                    }
                };
                let mut first: Vec<HostTensor> = Vec::new();
                for (run, poison) in [Poison::A, Poison::B].into_iter().enumerate() {
                    if run == 1 && !opts.determinism {
                        break;
                    }
                    bufs.poison(dev, poison).map_err(harness)?;
                    hooks.running(Some(&case));
                    let ran = run_plan(dev, program, &launches, &bufs);
                    hooks.running(None);
                    if let Err(e) = ran {
                        let (v, lost) = fail(e);
                        return done(v, log, lost);
                    }
                    let changed =
                        mutated(dev, &bufs, &input_bytes, &persistent).map_err(harness)?;
                    if !changed.is_empty() {
                        return done(
                            Verdict::InputMutated {
                                case: case.clone(),
                                buffers: changed,
                            },
                            log,
                            false,
                        );
                    }
                    let got = bufs.outputs(dev, task).map_err(harness)?;
                    for (i, (g, r)) in got.iter().zip(reference.iter()).enumerate() {
                        let name = &task.outputs[i].name;
                        let m = metric(task, i);
                        if run == 0 {
                            let report = compare(g, r, m, Some(poison))
                                .map_err(|e| EvalError::new(format!("comparing `{name}`: {e}")))?;
                            record_error(&mut errors.borrow_mut(), name, &case, &report);
                            if !report.passed() {
                                return done(
                                    Verdict::WrongOutput {
                                        case: case.clone(),
                                        output: name.clone(),
                                        report: Box::new(report),
                                        batch: None,
                                    },
                                    log,
                                    false,
                                );
                            }
                        } else {
                            match compare_runs(&first[i], g, r, m).map_err(|e| {
                                EvalError::new(format!("comparing runs of `{name}`: {e}"))
                            })? {
                                RunAgreement::Identical => {}
                                RunAgreement::WithinTolerance { .. } => {
                                    if !within_tolerance.contains(name) {
                                        within_tolerance.push(name.clone());
                                    }
                                }
                                RunAgreement::Racy { report } => {
                                    return done(
                                        Verdict::Nondeterministic {
                                            case: case.clone(),
                                            output: name.clone(),
                                            report,
                                        },
                                        log,
                                        false,
                                    )
                                }
                            }
                        }
                    }
                    if run == 0 {
                        first = got;
                    }
                }
                if let Some(p) = probe.as_mut() {
                    if let Err((v, lost)) =
                        p.check_case(dev, program, task, &case, &inputs, &first, hooks)?
                    {
                        return done(v, log, lost);
                    }
                }
                count += 1;
            }
        }
        if let Some(p) = probe {
            probed.0 += 1;
            probed.1 += p.runs;
        }
    }
    if let Some(b) = &task.checks.batch_invariant {
        log.push(format!(
            "batch invariance ({}): {} single-row run(s) on {} shape(s), each bitwise equal to its row of the batch",
            b.param, probed.1, probed.0
        ));
    }
    done(
        Verdict::Correct {
            cases: count,
            nondeterministic_within_tolerance: within_tolerance,
        },
        log,
        false,
    )
}

/// Folds one passing or failing comparison into the per-output worst errors.
fn record_error(errors: &mut Vec<OutputError>, output: &str, case: &Case, r: &MismatchReport) {
    let i = match errors.iter().position(|e| e.output == output) {
        Some(i) => i,
        None => {
            errors.push(OutputError {
                output: output.to_string(),
                metric: r.metric,
                case: case.clone(),
                normalized_error: r.normalized_error,
                max_abs_error: r.max_abs_error,
                mismatches: r.mismatches,
                elements: r.elements,
                cases: 1,
            });
            return;
        }
    };
    let e = &mut errors[i];
    e.cases += 1;
    // NaN never wins a comparison: a non-finite error (only possible on a failing case) is
    // taken explicitly.
    if r.normalized_error > e.normalized_error || !r.normalized_error.is_finite() {
        e.normalized_error = r.normalized_error;
        e.case = case.clone();
        e.elements = r.elements;
    }
    if r.max_abs_error > e.max_abs_error || !r.max_abs_error.is_finite() {
        e.max_abs_error = r.max_abs_error;
    }
    e.mismatches = e.mismatches.max(r.mismatches);
}

/// Re-validates the outputs currently in `bufs` (after the last timed call, DESIGN §4.5)
/// against the reference outputs for the inputs that call saw. `None`: they match.
pub fn revalidate<B: Backend>(
    dev: &B,
    task: &Task,
    bufs: &PlanBuffers<B>,
    case: &Case,
    reference: &[HostTensor],
) -> Result<Option<Verdict>, EvalError> {
    let got = bufs
        .outputs(dev, task)
        .map_err(|e| EvalError::runtime("re-validation".into(), &e))?;
    for (i, (g, r)) in got.iter().zip(reference).enumerate() {
        let report = compare(g, r, metric(task, i), None)
            .map_err(|e| EvalError::new(format!("re-validation: {e}")))?;
        if !report.passed() {
            return Ok(Some(Verdict::WrongOutput {
                case: case.clone(),
                output: task.outputs[i].name.clone(),
                report: Box::new(report),
                batch: None,
            }));
        }
    }
    Ok(None)
}

/// Key of one cached reference result.
type CacheKey = (String, Vec<(String, i64)>, u64, Variant);

/// Reference outputs kept in memory across requests, keyed by (task content hash, shape,
/// seed, variant), dropping the oldest beyond a byte budget.
pub struct ReferenceCache {
    entries: IndexMap<CacheKey, Rc<Vec<HostTensor>>>,
    bytes: u64,
    pub budget: u64,
    pub hits: u64,
}

impl ReferenceCache {
    pub fn new(budget: u64) -> ReferenceCache {
        ReferenceCache {
            entries: IndexMap::new(),
            bytes: 0,
            budget,
            hits: 0,
        }
    }

    fn key(content: &str, case: &Case) -> CacheKey {
        let mut values: Vec<(String, i64)> =
            case.values.iter().map(|(k, v)| (k.clone(), *v)).collect();
        values.sort();
        (content.to_string(), values, case.seed, case.variant)
    }

    pub fn get(&mut self, content: &str, case: &Case) -> Option<Rc<Vec<HostTensor>>> {
        let hit = self.entries.get(&Self::key(content, case)).cloned();
        if hit.is_some() {
            self.hits += 1;
        }
        hit
    }

    pub fn put(&mut self, content: &str, case: &Case, outputs: Rc<Vec<HostTensor>>) {
        let size: u64 = outputs.iter().map(|t| t.bytes.len() as u64).sum();
        if size > self.budget {
            return;
        }
        while self.bytes + size > self.budget {
            match self.entries.shift_remove_index(0) {
                Some((_, old)) => {
                    self.bytes -= old.iter().map(|t| t.bytes.len() as u64).sum::<u64>()
                }
                None => break,
            }
        }
        self.bytes += size;
        if let Some(old) = self.entries.insert(Self::key(content, case), outputs) {
            self.bytes -= old.iter().map(|t| t.bytes.len() as u64).sum::<u64>();
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The task's own reference kernel, run on the same device, as the oracle.
pub struct KernelOracle<'a, B: Backend> {
    pub dev: &'a B,
    pub task: &'a Task,
    pub plan: &'a Plan,
    pub program: &'a B::Program,
    /// Identifies task + reference (content hash) in the cache.
    pub content: String,
    pub cache: &'a mut ReferenceCache,
    buffers: Option<PlanBuffers<B>>,
}

impl<'a, B: Backend> KernelOracle<'a, B> {
    pub fn new(
        dev: &'a B,
        task: &'a Task,
        plan: &'a Plan,
        program: &'a B::Program,
        content: String,
        cache: &'a mut ReferenceCache,
    ) -> Self {
        KernelOracle {
            dev,
            task,
            plan,
            program,
            content,
            cache,
            buffers: None,
        }
    }
}

impl<B: Backend> Oracle for KernelOracle<'_, B> {
    fn describe(&self) -> String {
        format!("reference kernel of `{}`", self.task.id)
    }

    fn outputs(
        &mut self,
        case: &Case,
        shape: &Shape,
        inputs: &[HostTensor],
    ) -> Result<Rc<Vec<HostTensor>>, EvalError> {
        if let Some(hit) = self.cache.get(&self.content, case) {
            return Ok(hit);
        }
        let at = |what: &str| format!("reference kernel on {}: {what}", case.describe());
        if self.buffers.as_ref().map(|b| &b.values) != Some(&shape.values) {
            self.buffers = None;
            self.buffers = Some(
                PlanBuffers::new(self.dev, self.task, self.plan, shape)
                    .map_err(|e| EvalError::new(at(&e)))?,
            );
        }
        let Some(bufs) = self.buffers.as_ref() else {
            return Err(EvalError::new(at("no buffers")));
        };
        let launches = self
            .plan
            .resolve(shape)
            .map_err(|e| EvalError::new(at(&e)))?;
        let prep = self
            .plan
            .resolve_prepare(shape)
            .map_err(|e| EvalError::new(at(&e)))?;
        let run_err = |e: RunError| EvalError {
            message: at(&e.message()),
            context_lost: e.sticky(),
        };
        bufs.upload_inputs(self.dev, inputs)
            .map_err(|e| EvalError::runtime(at("upload"), &e))?;
        prepare(self.dev, self.program, &prep, bufs).map_err(run_err)?;
        bufs.poison(self.dev, Poison::A)
            .map_err(|e| EvalError::runtime(at("poison"), &e))?;
        run_plan(self.dev, self.program, &launches, bufs).map_err(run_err)?;
        let out = Rc::new(
            bufs.outputs(self.dev, self.task)
                .map_err(|e| EvalError::runtime(at("download"), &e))?,
        );
        self.cache.put(&self.content, case, Rc::clone(&out));
        Ok(out)
    }
}

mod batch;
mod spec;
pub use spec::{SpecCase, SpecOracle, SpecOracleFor, SPEC_ORACLE_SKIPPED};

#[cfg(test)]
mod tests;
