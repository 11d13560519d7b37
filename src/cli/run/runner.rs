//! The GPU side of an agent run: the strict protocol on a `ksmith worker`, then, for a correct
//! kernel, the timing protocol side by side with the reference in a `ksmith gpu serve` child on
//! the same GPU (and, with `--profile`, ncu on a new best).

use super::{GpuSlot, Slots, TIMED_NAME};
use crate::cli::bench::{run_child_on, ChildFailure};
use crate::cli::profile::AgentProfiling;
use crate::cli::Global;
use agent::evaluate::{KernelRun, KernelRunner};
use agent::prompt::ShapeTiming;
use bench_suite::pool::{Pool, PoolConfig};
use bench_suite::suite::TaskDir;
use std::time::Duration;
use verifier::protocol::{EvalOptions, EvaluateRequest};
use verifier::runtime::bench::{BenchCandidate, BenchReport, BenchRequest};
use verifier::runtime::calibrate::{sol, Calibration};
use verifier::task::Task;

/// The public shapes a run checks and times (`--first-shapes`); empty: all of them.
pub(super) fn shapes_of(task: &Task, first_shapes: Option<u32>) -> Vec<String> {
    match first_shapes {
        None => Vec::new(),
        Some(n) => task
            .shapes
            .iter()
            .take(n.max(1) as usize)
            .map(|s| s.name.clone())
            .collect(),
    }
}

/// Times a correct kernel side by side with its task's reference (DESIGN §5).
pub(super) trait KernelTimer: Send + Sync {
    /// The timing report from GPU `gpu` (the one that verified the kernel), or why there is none.
    fn time(
        &self,
        gpu: &GpuSlot,
        task: &TaskDir,
        source: &str,
        plan_toml: &str,
        shapes: &[String],
    ) -> Result<BenchReport, String>;
}

/// Timing in a `ksmith gpu serve` child, as `ksmith bench` times a candidate: a kernel that
/// faults or hangs while it is timed costs that child, not the run.
pub(super) struct ServeTimer {
    global: Global,
    limit: Duration,
}

impl KernelTimer for ServeTimer {
    fn time(
        &self,
        gpu: &GpuSlot,
        task: &TaskDir,
        source: &str,
        plan_toml: &str,
        shapes: &[String],
    ) -> Result<BenchReport, String> {
        let req = BenchRequest {
            task_dir: std::fs::canonicalize(&task.dir).unwrap_or_else(|_| task.dir.clone()),
            candidates: vec![BenchCandidate {
                name: TIMED_NAME.into(),
                source: source.to_string(),
                plan: plan_toml.to_string(),
            }],
            shapes: shapes.to_vec(),
            timing: Default::default(),
            // The kernel has just passed the full strict check in a worker; the timing run's
            // own check is only the gate that keeps a kernel which misbehaves in this process
            // from being timed (one seed at the timed shapes), and re-validation of the last
            // timed call still compares every output.
            check: EvalOptions {
                seeds: vec![0],
                fresh_seed: None,
                shapes: shapes.to_vec(),
                heldout_shapes: 0,
                stress: false,
                determinism: false,
                ..EvalOptions::default()
            },
        };
        match run_child_on(&self.global, &req, self.limit, Some(&gpu.visible)) {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(ChildFailure::Harness(m))) => {
                Err(format!("the timing process could not run: {m}"))
            }
            Ok(Err(ChildFailure::Task(m))) => Err(format!("the timing run failed: {m}")),
            Err(e) => Err(format!(
                "the timing process could not start: {}",
                crate::cli::describe(&e)
            )),
        }
    }
}

pub(super) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max).collect();
    s.push_str(" ...");
    s
}

/// The agent's per-shape timings of the kernel named [`TIMED_NAME`] in a timing report: median,
/// the reference's median from the same interleaved run, and % of speed-of-light (and its
/// floor) where the GPU is calibrated. The note says why the kernel is untimed or only partly
/// timed. A kernel whose output failed re-validation after timing gets no timings at all: its
/// result changed under the timing loop's input refresh, so no time of it can be credited.
pub(super) fn timings_from_report(
    task: &Task,
    report: &BenchReport,
    cal: Option<&Calibration>,
) -> (Vec<ShapeTiming>, Option<String>) {
    const UNTIMED: &str = "the kernel is correct but untimed";
    match report.candidates.iter().find(|c| c.name == TIMED_NAME) {
        Some(c) if c.timed => {}
        Some(c) => {
            return (
                Vec::new(),
                Some(format!(
                    "the check before timing found {}: {}; {UNTIMED}",
                    c.verdict.kind(),
                    clip(&c.verdict.feedback(), 600)
                )),
            )
        }
        None => {
            return (
                Vec::new(),
                Some(format!(
                    "the timing report does not list the kernel; {UNTIMED}"
                )),
            )
        }
    }
    let mut timings = Vec::new();
    let mut notes = Vec::new();
    for st in &report.shapes {
        if let Some(f) = st
            .subjects
            .first()
            .filter(|r| r.name == "reference")
            .and_then(|r| r.revalidation_failure.as_ref())
        {
            notes.push(format!(
                "the reference's output at shape {} failed re-validation after timing: {f}",
                st.shape
            ));
        }
        let Some(j) = st.subjects.iter().position(|s| s.name == TIMED_NAME) else {
            notes.push(format!("shape {}: the kernel was not timed", st.shape));
            continue;
        };
        let s = &st.subjects[j];
        if let Some(f) = &s.revalidation_failure {
            return (
                Vec::new(),
                Some(format!(
                    "at shape {} the output of the last timed call was wrong ({}): a kernel \
                     whose results change under the timing loop is credited with no time",
                    st.shape,
                    clip(f, 400)
                )),
            );
        }
        let median_ms = s.summary.median_ms;
        let reference_ms = j
            .checked_sub(1)
            .and_then(|i| st.speedups.get(i))
            .and_then(|x| x.as_ref())
            .map(|sp| median_ms * sp.ratio_of_medians)
            .or_else(|| {
                st.subjects
                    .first()
                    .filter(|r| r.name == "reference")
                    .map(|r| r.summary.median_ms)
            });
        let sol = match (task.shape(&st.shape), cal) {
            (Some(shape), Some(c)) => sol(task, shape, c, median_ms).ok(),
            _ => None,
        };
        timings.push(ShapeTiming {
            shape: st.shape.clone(),
            median_us: Some(median_ms * 1e3),
            reference_us: reference_ms.map(|r| r * 1e3),
            sol_pct: sol.as_ref().map(|x| x.percent),
            floor_us: sol.as_ref().map(|x| x.floor_ms * 1e3),
        });
    }
    for f in &report.failures {
        notes.push(format!(
            "shape {} could not be timed: {}",
            f.shape,
            clip(&f.message, 400)
        ));
    }
    if timings.is_empty() {
        if notes.is_empty() {
            notes.push("no shape was timed".into());
        }
        notes.push(UNTIMED.into());
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    (timings, note)
}

/// A verifier verdict, timed on `gpu` when it is `correct` and a timer is given. A timing
/// failure never changes the verdict: the kernel stays correct, untimed, with the reason as its
/// note.
#[allow(clippy::too_many_arguments)]
pub(super) fn verdict_with_timings(
    verdict: verifier::verdict::Verdict,
    timer: Option<&dyn KernelTimer>,
    gpu: &GpuSlot,
    task: &TaskDir,
    source: &str,
    plan_toml: &str,
    shapes: &[String],
    cal: Option<&Calibration>,
) -> KernelRun {
    let (timings, note) = match timer {
        Some(t) if verdict.is_correct() => match t.time(gpu, task, source, plan_toml, shapes) {
            Ok(report) => timings_from_report(&task.task, &report, cal),
            Err(m) => (
                Vec::new(),
                Some(format!("{m}; the kernel is correct but untimed")),
            ),
        },
        _ => (Vec::new(), None),
    };
    if let Some(n) = &note {
        tracing::warn!("{}: {n}", task.task.id);
    }
    KernelRun {
        verdict,
        timings,
        note,
        profile_summary: None,
        profile_note: None,
    }
}

/// Runs the strict protocol for one kernel on one GPU's worker.
pub(super) trait Verify: Send + Sync {
    /// The verdict from the worker of GPU slot `gpu`, or a harness failure.
    fn verify(
        &self,
        gpu: usize,
        request: EvaluateRequest,
    ) -> Result<verifier::verdict::Verdict, String>;
}

impl Verify for Pool {
    fn verify(
        &self,
        gpu: usize,
        request: EvaluateRequest,
    ) -> Result<verifier::verdict::Verdict, String> {
        self.evaluate_on(gpu, request).verdict().cloned()
    }
}

/// The strict protocol on `ksmith worker` subprocesses (one per GPU), then, for a correct
/// kernel, the timing protocol in a `ksmith gpu serve` child on the same GPU.
pub(super) struct PoolRunner {
    /// Worker `i` runs on `gpus[i]`.
    verifier: Box<dyn Verify>,
    gpus: Vec<GpuSlot>,
    /// A kernel holds its GPU from verification to the end of its timing, so that no
    /// measurement shares the device with another kernel's work; other GPUs go on meanwhile.
    slots: Slots,
    timer: Option<Box<dyn KernelTimer>>,
    cal: Option<Calibration>,
    first_shapes: Option<u32>,
    /// `--profile`: each task's new best kernel is profiled for the Judge.
    pub(super) profiling: Option<AgentProfiling>,
}

impl PoolRunner {
    pub(super) fn new(
        verifier: Box<dyn Verify>,
        gpus: Vec<GpuSlot>,
        timer: Option<Box<dyn KernelTimer>>,
        cal: Option<Calibration>,
        first_shapes: Option<u32>,
    ) -> PoolRunner {
        PoolRunner {
            verifier,
            slots: Slots::new(gpus.len()),
            gpus,
            timer,
            cal,
            first_shapes,
            profiling: None,
        }
    }

    pub(super) fn with_profiling(mut self, p: AgentProfiling) -> PoolRunner {
        self.profiling = Some(p);
        self
    }

    /// Stores the profiles whose evaluations are recorded; how many still wait.
    pub(super) fn flush_profiles(&self) -> usize {
        self.profiling.as_ref().map_or(0, |p| p.flush())
    }

    /// One worker per GPU of the run.
    pub(super) fn on_workers(
        g: &Global,
        gpus: Vec<GpuSlot>,
        verify_limit: Duration,
        timing_limit: Duration,
        cal: Option<Calibration>,
        first_shapes: Option<u32>,
    ) -> anyhow::Result<PoolRunner> {
        let ordinals: Vec<u32> = gpus.iter().map(|s| s.ordinal).collect();
        let pool = Pool::new(PoolConfig::per_gpu(
            g.worker_command()?,
            &ordinals,
            verify_limit,
        ));
        Ok(PoolRunner::new(
            Box::new(pool),
            gpus,
            Some(Box::new(ServeTimer {
                global: g.clone(),
                limit: timing_limit,
            })),
            cal,
            first_shapes,
        ))
    }
}

impl KernelRunner for PoolRunner {
    fn run(&self, task: &TaskDir, source: &str, plan_toml: &str) -> Result<KernelRun, String> {
        let slot = self.slots.checkout();
        let gpu = self
            .gpus
            .get(slot.index)
            .ok_or_else(|| format!("no GPU for slot {}", slot.index))?;
        let shapes = shapes_of(&task.task, self.first_shapes);
        let fresh = verifier::inputs::fresh_seed();
        let options = EvalOptions {
            fresh_seed: Some(fresh),
            heldout_seed: fresh,
            shapes: shapes.clone(),
            ..EvalOptions::default()
        };
        let req = EvaluateRequest {
            task_dir: task.dir.clone(),
            source: source.to_string(),
            plan: plan_toml.to_string(),
            options,
        };
        let verdict = self.verifier.verify(slot.index, req)?;
        let mut run = verdict_with_timings(
            verdict,
            self.timer.as_deref(),
            gpu,
            task,
            source,
            plan_toml,
            &shapes,
            self.cal.as_ref(),
        );
        // Still holding the GPU: the profile shares it with nothing else.
        if let Some(p) = &self.profiling {
            p.after_run(&gpu.visible, task, source, plan_toml, &mut run);
        }
        Ok(run)
    }
}
