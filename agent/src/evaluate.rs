//! Evaluators for the agent's loops: compile-only (`--dry-run`, no GPU needed) and GPU
//! verification through a worker backend (DESIGN §4, §6).
//!
//! Both check the launch plan against the task first (`invalid_plan` with located diagnostics),
//! then the includes and NVRTC (`compile_error` with the log). The dry run stops there with the
//! verdict `compiled` and the ptxas resources for the Judge; the GPU evaluator hands the kernel
//! to a [`KernelRunner`] (the `ksmith worker` pool) for the strict protocol.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use bench_suite::suite::TaskDir;
use verifier::nvrtc::{Arch, CompileError, CompileRequest, Compiled, Compiler};
use verifier::plan::Plan;
use verifier::runtime::device::DeviceInfo;

use crate::r#loop::{Evaluation, Evaluator, EvaluatorError, Verdict, VerdictKind};

/// Name the candidate's files carry in diagnostics and compile logs, so that the model reads
/// `kernel.cu(12): error ...` and `launch.toml:3:9: ...` about its own reply.
pub const SOURCE_NAME: &str = "kernel.cu";
pub const PLAN_NAME: &str = "launch.toml";

/// A counting semaphore for blocking threads: compilations are CPU work, and the loops call the
/// evaluator from tokio's blocking pool, which would otherwise run as many at once as there are
/// tasks.
pub struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    pub fn new(n: usize) -> Self {
        Slots {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }

    pub fn acquire(&self) -> SlotGuard<'_> {
        // A poisoned lock only means another holder panicked; the count itself is intact.
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        SlotGuard { slots: self }
    }
}

pub struct SlotGuard<'a> {
    slots: &'a Slots,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut free = self.slots.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.slots.cv.notify_one();
    }
}

/// What the static part of an evaluation found: the parsed plan and the compiled module, or the
/// candidate's failure as an [`Evaluation`].
pub enum StaticCheck {
    Passed { plan: Box<Plan>, compiled: Compiled },
    Failed(Evaluation),
}

fn failed(verdict: Verdict, feedback: String) -> Evaluation {
    Evaluation {
        verdict,
        feedback,
        timings: Vec::new(),
        resources: None,
        profile_summary: None,
    }
}

/// Plan validation, include check and NVRTC compile of one candidate. A harness failure (NVRTC
/// unusable) is an error; everything the candidate can get wrong is a failed [`Evaluation`].
pub fn static_check(
    task: &TaskDir,
    compiler: &Compiler,
    arch: Arch,
    source: &str,
    plan_toml: &str,
) -> Result<StaticCheck, EvaluatorError> {
    let kernels = verifier::source::kernel_names(source);
    let plan = match Plan::parse(Path::new(PLAN_NAME), plan_toml, &task.task, &kernels) {
        Ok(p) => p,
        Err(e) => {
            let mut feedback = String::from("The launch plan is invalid:\n");
            for d in e.diagnostics() {
                feedback.push_str(&d.to_string());
                feedback.push('\n');
            }
            if kernels.is_empty() {
                feedback.push_str("(The CUDA source defines no __global__ function.)\n");
            } else {
                feedback.push_str(&format!(
                    "(The CUDA source defines these kernels: {}.)\n",
                    kernels.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            return Ok(StaticCheck::Failed(failed(
                VerdictKind::InvalidPlan.into(),
                feedback,
            )));
        }
    };
    let mut req = CompileRequest::new(source.to_string(), plan.kernel_names(), arch);
    req.fast_math = task.task.compile.fast_math;
    req.program_name = SOURCE_NAME.to_string();
    match compiler.compile(&req) {
        Ok(compiled) => {
            // Arguments that miss the kernel's parameters (count or width, from the PTX) are
            // refused by the runtime before launching; say so now, without a GPU.
            let mismatched =
                bench_suite::check::argument_problems(&task.task, &plan, &compiled.kernels);
            if !mismatched.is_empty() {
                return Ok(StaticCheck::Failed(failed(
                    VerdictKind::InvalidPlan.into(),
                    format!(
                        "The launch plan's arguments do not match the kernel's parameters:\n{}\n",
                        mismatched.join("\n")
                    ),
                )));
            }
            Ok(StaticCheck::Passed {
                plan: Box::new(plan),
                compiled,
            })
        }
        Err(e @ CompileError::Nvrtc(_)) => Err(EvaluatorError(format!(
            "NVRTC could not compile anything (a harness problem, not the kernel's): {e}"
        ))),
        Err(e) => Ok(StaticCheck::Failed(failed(
            VerdictKind::CompileError.into(),
            e.to_string(),
        ))),
    }
}

/// ptxas resources per kernel, one line each, for the Judge and the Coder.
pub fn resources_text(compiled: &Compiled) -> Option<String> {
    let lines: Vec<String> = compiled
        .kernels
        .iter()
        .map(|k| match &k.resources {
            Some(r) => format!(
                "{}: {} registers, {} bytes static shared memory, spills {} B stores / {} B loads, stack {} B",
                k.name, r.registers, r.smem, r.spill_stores, r.spill_loads, r.stack_frame
            ),
            None => format!("{}: no ptxas report", k.name),
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Launches of one call at the first [`LAUNCH_SHAPES`] public shapes listed in the Judge's
/// compiler report; more would crowd the prompt.
pub const LAUNCH_SHAPES: usize = 3;

/// The device whose limits the launch report assumes for `arch`: the SXM part of that
/// generation (an H200 has the H100's SMs and limits), `None` for other architectures.
pub fn device_model(arch: Arch) -> Option<DeviceInfo> {
    match (arch.major, arch.minor) {
        (9, 0) => DeviceInfo::preset("h100"),
        (8, 0) => DeviceInfo::preset("a100"),
        _ => None,
    }
}

/// Each launch of one call at the first public shapes: grid, block, theoretical residency,
/// waves and hints (idle SMs, a mostly empty second wave, few warps), so the Judge can see a
/// launch that leaves the GPU idle before any timing says so.
pub fn launches_text(
    task: &TaskDir,
    plan: &Plan,
    compiled: &Compiled,
    device: &DeviceInfo,
) -> Option<String> {
    let shapes: Vec<_> = task.task.shapes.iter().take(LAUNCH_SHAPES).collect();
    let rows = bench_suite::launches::analyze(&task.task, plan, &compiled.kernels, &shapes, device)
        .ok()?;
    let mut out = Vec::new();
    for shape in shapes.iter().map(|s| &s.name) {
        let lines: Vec<String> = rows
            .iter()
            .filter(|r| &r.shape == shape && r.phase == "call")
            .map(|r| format!("  {}", r.describe()))
            .collect();
        if !lines.is_empty() {
            out.push(format!("At shape {shape}:"));
            out.extend(lines);
        }
    }
    (!out.is_empty()).then(|| {
        format!(
            "Launches on {} ({} SMs; theoretical):\n{}",
            device.name,
            device.sm_count,
            out.join("\n")
        )
    })
}

/// ptxas resources and, when the device is known (or modelled), the launch report.
pub fn compiler_report(
    task: &TaskDir,
    plan: &Plan,
    compiled: &Compiled,
    device: Option<&DeviceInfo>,
) -> Option<String> {
    // An instruction the target only emulates is correct and slow, and the compile log is
    // silent about it: say so beside the resources.
    let emulated = compiled
        .arch
        .parse()
        .map(|arch| verifier::nvrtc::emulated::notes(&compiled.ptx, arch))
        .unwrap_or_default();
    // ptxas reports lost tensor-core overlap (wgmma serialized) as `info`, not as a warning.
    let losses = verifier::nvrtc::ptxas::performance_losses(&compiled.log);
    let parts: Vec<String> = resources_text(compiled)
        .into_iter()
        .chain(emulated)
        .chain(losses)
        .chain(device.and_then(|d| launches_text(task, plan, compiled, d)))
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// Tasks by id, shared by the evaluators.
pub type TaskMap = BTreeMap<String, Arc<TaskDir>>;

fn task<'a>(tasks: &'a TaskMap, id: &str) -> Result<&'a TaskDir, EvaluatorError> {
    tasks
        .get(id)
        .map(|t| t.as_ref())
        .ok_or_else(|| EvaluatorError(format!("task `{id}` is not part of this run")))
}

/// `--dry-run`: plan check + NVRTC compile; verdict `compiled` when both pass.
pub struct DryRunEvaluator {
    pub tasks: TaskMap,
    pub compiler: Compiler,
    pub arch: Arch,
    /// Whose limits the launch report assumes: the arch's [`device_model`].
    pub device: Option<DeviceInfo>,
    slots: Slots,
}

impl DryRunEvaluator {
    /// `jobs` bounds concurrent compilations (the CPU count is a good value).
    pub fn new(tasks: TaskMap, compiler: Compiler, arch: Arch, jobs: usize) -> Self {
        DryRunEvaluator {
            tasks,
            compiler,
            arch,
            device: device_model(arch),
            slots: Slots::new(jobs),
        }
    }
}

impl Evaluator for DryRunEvaluator {
    fn evaluate(
        &self,
        task_id: &str,
        source: &str,
        plan_toml: &str,
    ) -> Result<Evaluation, EvaluatorError> {
        let task = task(&self.tasks, task_id)?;
        let _slot = self.slots.acquire();
        match static_check(task, &self.compiler, self.arch, source, plan_toml)? {
            StaticCheck::Failed(e) => Ok(e),
            StaticCheck::Passed { compiled, plan } => Ok(Evaluation {
                verdict: Verdict::Compiled,
                feedback: format!(
                    "Compiled for {} and the launch plan is valid (dry run: nothing was executed, \
                     so correctness and speed are unknown).",
                    compiled.arch
                ),
                timings: Vec::new(),
                resources: compiler_report(task, &plan, &compiled, self.device.as_ref()),
                profile_summary: None,
            }),
        }
    }
}

/// What a GPU run of one kernel reports.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRun {
    pub verdict: verifier::verdict::Verdict,
    /// Per public shape, side by side with the reference; empty when nothing was timed (a
    /// failing kernel, or a runner that only verifies).
    pub timings: Vec<crate::prompt::ShapeTiming>,
    /// Why a correct kernel is untimed, or only partly timed (the timing run failed, a shape
    /// could not be measured): shown with the verdict's feedback, never a failure by itself.
    pub note: Option<String>,
    /// Nsight Compute's bottleneck summary for the Judge, when the runner profiled this kernel
    /// (a correct, timed kernel that is its task's new best, with profiling switched on).
    pub profile_summary: Option<String>,
    /// Why a kernel that was to be profiled has no profile (ncu missing, counters not
    /// permitted, the profile failed): shown with the feedback, never a failure by itself.
    pub profile_note: Option<String>,
}

/// Runs a statically checked kernel on a GPU under the strict protocol. Implemented over the
/// `ksmith worker` pool (`bench_suite::pool`) by the binary; a trait so that the agent does not
/// depend on how workers are spawned, and the seam where timing joins verification.
pub trait KernelRunner: Send + Sync {
    /// The verifier's verdict (and timings, when measured), or a harness failure.
    fn run(&self, task: &TaskDir, source: &str, plan_toml: &str) -> Result<KernelRun, String>;
}

/// Verification on a GPU: the static checks here (CPU, bounded by `jobs`), the rest on a worker.
pub struct GpuEvaluator {
    pub tasks: TaskMap,
    pub compiler: Compiler,
    pub arch: Arch,
    pub runner: Arc<dyn KernelRunner>,
    /// Whose limits the launch report assumes: the GPU's own ([`GpuEvaluator::on_device`]),
    /// else the arch's [`device_model`].
    pub device: Option<DeviceInfo>,
    slots: Slots,
}

impl GpuEvaluator {
    pub fn new(
        tasks: TaskMap,
        compiler: Compiler,
        arch: Arch,
        runner: Arc<dyn KernelRunner>,
        jobs: usize,
    ) -> Self {
        GpuEvaluator {
            tasks,
            compiler,
            arch,
            runner,
            device: device_model(arch),
            slots: Slots::new(jobs),
        }
    }

    /// The launch report uses `device`'s limits (an H100 PCIe has 114 SMs, not the model's 132).
    pub fn on_device(mut self, device: DeviceInfo) -> Self {
        self.device = Some(device);
        self
    }
}

impl Evaluator for GpuEvaluator {
    fn evaluate(
        &self,
        task_id: &str,
        source: &str,
        plan_toml: &str,
    ) -> Result<Evaluation, EvaluatorError> {
        let task = task(&self.tasks, task_id)?;
        let resources = {
            let _slot = self.slots.acquire();
            match static_check(task, &self.compiler, self.arch, source, plan_toml)? {
                StaticCheck::Failed(e) => return Ok(e),
                StaticCheck::Passed { compiled, plan } => {
                    compiler_report(task, &plan, &compiled, self.device.as_ref())
                }
            }
        };
        let run = self
            .runner
            .run(task, source, plan_toml)
            .map_err(EvaluatorError)?;
        let verdict = Verdict::from(run.verdict.kind());
        let mut feedback = run.verdict.feedback();
        if let Some(note) = &run.note {
            feedback.push_str("\n\nTiming: ");
            feedback.push_str(note);
        }
        let correct = verdict == Verdict::CORRECT;
        if let (true, Some(note)) = (correct, &run.profile_note) {
            feedback.push_str("\n\nProfile: ");
            feedback.push_str(note);
        }
        Ok(Evaluation {
            verdict,
            feedback,
            // Timings of a failing kernel would be meaningless.
            timings: if correct { run.timings } else { Vec::new() },
            resources,
            profile_summary: if correct { run.profile_summary } else { None },
        })
    }
}
