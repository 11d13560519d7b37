//! The batch-invariance check of a task's `[checks.batch_invariant]` (tasks/README.md), built
//! like the determinism check: a second kind of run on the same case, compared bitwise with the
//! first. Once a case has passed at a shape, each probed row `i` is run alone: the plan is
//! re-resolved with the batch parameter set to 1, the batch inputs hold row `i` of the case's
//! inputs, every other input (the weights) the very same bytes, and each named output must be
//! bit-identical to row `i` of the full batch's output. A difference is a `wrong_output` that
//! carries a [`BatchProbe`] naming the row; the first differing coordinate is in the report.
//!
//! Buffers for the single-row shape are allocated once per shape; `[[prepare]]` runs once per
//! case on them (it may read only weights, which do not change between rows).

use super::{mutated, prepare, run_plan, EvalError, PlanBuffers, Role, RunHooks};
use crate::compare::{compare, Metric, Poison};
use crate::inputs::HostTensor;
use crate::plan::{Plan, ResolvedLaunch};
use crate::runtime::backend::Backend;
use crate::task::{BatchInvariant, Shape, Task};
use crate::verdict::{BatchProbe, Case, Verdict};

/// The single-row runs of one shape.
pub(super) struct Probe<'t, B: Backend> {
    check: &'t BatchInvariant,
    /// The shape with the batch parameter set to 1.
    shape: Shape,
    /// The batch parameter's value in the full shape.
    batch: i64,
    rows: Vec<u64>,
    launches: Vec<ResolvedLaunch>,
    prep: Vec<ResolvedLaunch>,
    bufs: PlanBuffers<B>,
    /// Per input (task order): whether it is sliced to one row.
    sliced_inputs: Vec<bool>,
    /// Indices (task order) of the outputs compared.
    outputs: Vec<usize>,
    /// Single-row runs that matched their row of the batch.
    pub runs: u32,
}

/// One row of a tensor whose leading dimension is the batch: its bytes and its dims
/// (`[1, ...]`).
fn row_of(t: &HostTensor, batch: i64, row: u64) -> Result<(&[u8], Vec<u64>), String> {
    let lead = t.dims.first().copied().unwrap_or(0);
    if lead != batch as u64 || lead == 0 || !(t.bytes.len() as u64).is_multiple_of(lead) {
        return Err(format!(
            "a tensor of dims {:?} ({} bytes) does not hold {batch} rows",
            t.dims,
            t.bytes.len()
        ));
    }
    let per = t.bytes.len() / lead as usize;
    let at = row as usize * per;
    let bytes = t
        .bytes
        .get(at..at + per)
        .ok_or_else(|| format!("row {row} is outside the {lead} rows of dims {:?}", t.dims))?;
    let mut dims = t.dims.clone();
    dims[0] = 1;
    Ok((bytes, dims))
}

impl<'t, B: Backend> Probe<'t, B> {
    /// The probe of `shape`, or `None` when the task has no such check or the shape has no row
    /// to probe (a note in `log` says why). `Err`: the candidate's plan fails at the single-row
    /// shape, which the task declares legal.
    pub(super) fn new(
        dev: &B,
        task: &'t Task,
        plan: &Plan,
        shape: &Shape,
        log: &mut Vec<String>,
    ) -> Result<Option<Self>, Box<Verdict>> {
        let Some(check) = &task.checks.batch_invariant else {
            return Ok(None);
        };
        let batch = check.batch(shape);
        let skip = |log: &mut Vec<String>, why: String| {
            log.push(format!(
                "batch invariance not checked on shape {}: {why}",
                shape.name
            ));
            Ok(None)
        };
        if batch <= 1 {
            return skip(
                log,
                format!("{} = {batch}: no row to run alone", check.param),
            );
        }
        let (rows, notes) = check.rows_on(shape);
        for n in notes {
            log.push(format!(
                "batch invariance on shape {}: {n}; row skipped",
                shape.name
            ));
        }
        if rows.is_empty() {
            return skip(log, "no row expression gives a row of this shape".into());
        }
        let probe = check.probe_shape(shape);
        // Public shapes are checked at load time; a held-out shape can still make the
        // single-row shape illegal (a constraint tying the batch to another parameter).
        if let Err(why) = task.check_shape(&probe) {
            return skip(
                log,
                format!(
                    "its single-row shape ({}) is not legal: {why}",
                    probe.describe()
                ),
            );
        }
        let at = format!(
            "shape {} with {} = 1 (the single-row runs of the batch-invariance check: {})",
            shape.name,
            check.param,
            probe.describe()
        );
        let invalid = |e: String| {
            Box::new(Verdict::InvalidPlan {
                message: format!("{at}: {e}"),
            })
        };
        let launches = plan.resolve(&probe).map_err(invalid)?;
        let prep = plan.resolve_prepare(&probe).map_err(invalid)?;
        let bufs = PlanBuffers::new(dev, task, plan, &probe)
            .map_err(|e| invalid(format!("the plan's buffers cannot be allocated: {e}")))?;
        Ok(Some(Probe {
            check,
            shape: probe,
            batch,
            rows,
            launches,
            prep,
            bufs,
            sliced_inputs: task
                .inputs
                .iter()
                .map(|d| check.inputs.contains(&d.name))
                .collect(),
            outputs: task
                .outputs
                .iter()
                .enumerate()
                .filter(|(_, d)| check.outputs.contains(&d.name))
                .map(|(i, _)| i)
                .collect(),
            runs: 0,
        }))
    }

    /// Runs every probed row of `case` alone and compares it with `batch_outputs` (the full
    /// run's outputs, already checked against the oracle). `Ok(Err)`: the candidate's verdict
    /// and whether the CUDA context was lost; `Err`: the harness failed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_case(
        &mut self,
        dev: &B,
        program: &B::Program,
        task: &Task,
        case: &Case,
        inputs: &[HostTensor],
        batch_outputs: &[HostTensor],
        hooks: &dyn RunHooks,
    ) -> Result<Result<(), (Verdict, bool)>, EvalError> {
        let harness = |what: &str, e: String| {
            EvalError::new(format!(
                "batch-invariance check on {}: {what}: {e}",
                case.describe()
            ))
        };
        let runtime = |e: crate::runtime::error::RuntimeError| {
            EvalError::runtime(format!("batch-invariance check on {}", case.describe()), &e)
        };
        let slots: Vec<_> = self.bufs.of(Role::Input).collect();
        if slots.len() != inputs.len() || batch_outputs.len() != task.outputs.len() {
            return Err(harness(
                "buffers",
                format!(
                    "{} input buffers for {} inputs, {} outputs for {}",
                    slots.len(),
                    inputs.len(),
                    batch_outputs.len(),
                    task.outputs.len()
                ),
            ));
        }
        for ((slot, t), sliced) in slots.iter().zip(inputs).zip(&self.sliced_inputs) {
            if !sliced {
                dev.upload(&slot.buf, &t.bytes).map_err(runtime)?;
            }
        }
        let case_of = |row: u64| {
            Case::new(
                &Shape {
                    name: format!("{}, row {row} alone", self.shape.name),
                    values: self.shape.values.clone(),
                },
                case.seed,
                case.variant,
            )
        };
        let fail = |e: super::RunError, pcase: &Case| -> Result<_, EvalError> {
            Ok(Err((e.verdict(pcase), e.sticky())))
        };
        // Weights are the same for every row, and `[[prepare]]` reads nothing else.
        let first = case_of(self.rows.first().copied().unwrap_or(0));
        hooks.running(Some(&first));
        let prepared = prepare(dev, program, &self.prep, &self.bufs);
        hooks.running(None);
        let persistent = match prepared {
            Ok(p) => p,
            Err(e) => return fail(e, &first),
        };
        for &row in &self.rows {
            let pcase = case_of(row);
            let mut expected: Vec<&[u8]> = Vec::with_capacity(inputs.len());
            for ((slot, t), sliced) in slots.iter().zip(inputs).zip(&self.sliced_inputs) {
                if *sliced {
                    let (bytes, _) = row_of(t, self.batch, row)
                        .map_err(|e| harness(&format!("input `{}`", slot.name), e))?;
                    dev.upload(&slot.buf, bytes).map_err(runtime)?;
                    expected.push(bytes);
                } else {
                    expected.push(&t.bytes);
                }
            }
            self.bufs.poison(dev, Poison::A).map_err(runtime)?;
            hooks.running(Some(&pcase));
            let ran = run_plan(dev, program, &self.launches, &self.bufs);
            hooks.running(None);
            if let Err(e) = ran {
                return fail(e, &pcase);
            }
            let changed = mutated(dev, &self.bufs, &expected, &persistent).map_err(runtime)?;
            if !changed.is_empty() {
                return Ok(Err((
                    Verdict::InputMutated {
                        case: pcase,
                        buffers: changed,
                    },
                    false,
                )));
            }
            let alone = self.bufs.outputs(dev, task).map_err(runtime)?;
            for &i in &self.outputs {
                let name = &task.outputs[i].name;
                let (bytes, dims) = row_of(&batch_outputs[i], self.batch, row)
                    .map_err(|e| harness(&format!("output `{name}`"), e))?;
                let in_batch = HostTensor {
                    dtype: batch_outputs[i].dtype,
                    dims,
                    bytes: bytes.to_vec(),
                };
                let mut report = compare(&alone[i], &in_batch, Metric::Exact, Some(Poison::A))
                    .map_err(|e| harness(&format!("comparing `{name}`"), e.to_string()))?;
                if report.passed() {
                    continue;
                }
                // Coordinates of the full output, where the agent looks for row `row`.
                let per_row = in_batch.numel();
                for b in report.first_bad.iter_mut().chain(report.worst.iter_mut()) {
                    b.index += row * per_row;
                    if let Some(c) = b.coords.first_mut() {
                        *c += row;
                    }
                }
                return Ok(Err((
                    Verdict::WrongOutput {
                        case: case.clone(),
                        output: name.clone(),
                        report: Box::new(report),
                        batch: Some(Box::new(BatchProbe {
                            param: self.check.param.clone(),
                            batch: self.batch,
                            row,
                        })),
                    },
                    false,
                )));
            }
            self.runs += 1;
        }
        Ok(Ok(()))
    }
}
