//! One evaluation request end to end on the real device: read the task and its reference,
//! check the candidate's plan, compile both with NVRTC for the device's architecture, load them,
//! and run the strict protocol with the reference kernel as the oracle.

use super::error::RuntimeError;
use super::gpu::Gpu;
use super::strict::{self, EvalError, KernelOracle, Outcome, ReferenceCache};
use crate::diag::LoadError;
use crate::nvrtc::{Arch, CompileError, CompileRequest, Compiled, Compiler};
use crate::plan::Plan;
use crate::protocol::{EvaluateRequest, Oracle as OracleKind};
use crate::task::Task;
use crate::verdict::Verdict;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A task with its reference kernel, read from `tasks/<category>/<id>/`.
pub struct TaskBundle {
    pub task: Task,
    pub reference_source: String,
    pub reference_plan: Plan,
    /// SHA-256 over task.toml, reference.cu and reference.toml: keys cached reference outputs.
    pub content: String,
    pub dir: PathBuf,
}

impl TaskBundle {
    pub fn load(dir: &Path) -> Result<TaskBundle, EvalError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p)
                .map_err(|e| EvalError::new(format!("cannot read {}: {e}", p.display())))
        };
        let task_text = read("task.toml")?;
        let reference_source = read("reference.cu")?;
        let plan_text = read("reference.toml")?;
        let bad =
            |e: LoadError| EvalError::new(format!("task in {} is invalid:\n{e}", dir.display()));
        let task = Task::parse(&dir.join("task.toml"), &task_text).map_err(bad)?;
        let kernels = crate::source::kernel_names(&reference_source);
        let reference_plan =
            Plan::parse(&dir.join("reference.toml"), &plan_text, &task, &kernels).map_err(bad)?;
        let mut h = Sha256::new();
        for part in [&task_text, &reference_source, &plan_text] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        Ok(TaskBundle {
            task,
            reference_source,
            reference_plan,
            content: hex::encode(h.finalize()),
            dir: dir.to_path_buf(),
        })
    }
}

/// Parses a candidate's plan against the task and the kernels its source defines; a bad plan
/// is the candidate's fault (`invalid_plan`).
pub fn candidate_plan(task: &Task, source: &str, plan_text: &str) -> Result<Plan, Box<Verdict>> {
    let kernels = crate::source::kernel_names(source);
    Plan::parse(Path::new("launch.toml"), plan_text, task, &kernels).map_err(|e| {
        Box::new(Verdict::InvalidPlan {
            message: e.to_string(),
        })
    })
}

/// What a failed compilation means: a verdict when the source is at fault, a harness error
/// when NVRTC itself could not run.
pub enum CompileFailure {
    Verdict(Box<Verdict>),
    Harness(EvalError),
}

/// Compiles with the fixed policy for `arch` (fast-math only where the task allows it).
pub fn compile(
    compiler: &Compiler,
    task: &Task,
    source: &str,
    plan: &Plan,
    arch: Arch,
    program_name: &str,
) -> Result<Compiled, CompileFailure> {
    let mut req = CompileRequest::new(source.to_string(), plan.kernel_names(), arch);
    req.fast_math = task.compile.fast_math;
    req.program_name = program_name.to_string();
    compiler.compile(&req).map_err(|e| match e {
        CompileError::Nvrtc(n) => {
            CompileFailure::Harness(EvalError::new(format!("NVRTC could not run: {n}")))
        }
        other => CompileFailure::Verdict(Box::new(Verdict::CompileError {
            log: other.to_string(),
        })),
    })
}

/// Evaluates one request on an open GPU. `Ok` carries the verdict; `Err` means the harness
/// failed (unreadable task, NVRTC missing, the reference itself failing).
pub fn evaluate(
    gpu: &Gpu,
    compiler: &Compiler,
    cache: &mut ReferenceCache,
    req: &EvaluateRequest,
) -> Result<Outcome, EvalError> {
    let OracleKind::ReferenceKernel = req.options.oracle;
    let bundle = TaskBundle::load(&req.task_dir)?;
    let task = &bundle.task;
    let verdict_only = |verdict: Verdict, log: Vec<String>| Outcome {
        verdict,
        log,
        context_lost: false,
    };
    let plan = match candidate_plan(task, &req.source, &req.plan) {
        Ok(p) => p,
        Err(v) => return Ok(verdict_only(*v, vec![])),
    };
    let arch = gpu.info.arch();
    let reference = match compile(
        compiler,
        task,
        &bundle.reference_source,
        &bundle.reference_plan,
        arch,
        "reference.cu",
    ) {
        Ok(c) => c,
        Err(CompileFailure::Harness(e)) => return Err(e),
        Err(CompileFailure::Verdict(v)) => {
            return Err(EvalError::new(format!(
                "the reference kernel of `{}` does not compile for {arch}: {}",
                task.id,
                v.feedback()
            )))
        }
    };
    let candidate = match compile(compiler, task, &req.source, &plan, arch, "kernel.cu") {
        Ok(c) => c,
        Err(CompileFailure::Harness(e)) => return Err(e),
        Err(CompileFailure::Verdict(v)) => return Ok(verdict_only(*v, vec![])),
    };
    let mut log = vec![
        format!("device: {}", gpu.info.summary()),
        format!(
            "compiled for {arch} in {:.0} ms{} (NVRTC {}.{})",
            candidate.compile_ms,
            if candidate.cache_hit {
                ", cache hit"
            } else {
                ""
            },
            candidate.nvrtc_version.0,
            candidate.nvrtc_version.1
        ),
    ];
    for k in &candidate.kernels {
        if let Some(r) = &k.resources {
            log.push(format!(
                "{}: {} registers, {} B static smem, {} B spill stores",
                k.name, r.registers, r.smem, r.spill_stores
            ));
        }
    }
    let ref_module = gpu.load(&reference).map_err(|e| EvalError {
        context_lost: e.is_sticky(),
        message: format!("loading the reference module: {e}"),
    })?;
    let module = match gpu.load(&candidate) {
        Ok(m) => m,
        Err(e) => {
            let lost = e.is_sticky();
            if matches!(e, RuntimeError::MissingFunction { .. }) || !lost {
                return Ok(Outcome {
                    verdict: Verdict::LaunchError {
                        case: None,
                        kernel: plan.kernel_names().join(", "),
                        launch: 0,
                        message: format!("the compiled module could not be loaded: {e}"),
                    },
                    log,
                    context_lost: lost,
                });
            }
            return Err(EvalError {
                message: format!("loading the candidate module: {e}"),
                context_lost: lost,
            });
        }
    };
    let mut oracle = KernelOracle::new(
        gpu,
        task,
        &bundle.reference_plan,
        &ref_module,
        format!("{}:{arch}", bundle.content),
        cache,
    );
    let mut out = strict::check(gpu, task, &plan, &module, &mut oracle, &req.options)?;
    log.append(&mut out.log);
    out.log = log;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swiglu() -> TaskBundle {
        let dir = crate::nvrtc::project_roots()
            .into_iter()
            .map(|r| r.join("tasks/activation/swiglu"))
            .find(|d| d.join("task.toml").is_file())
            .expect("tasks/activation/swiglu in the repository");
        TaskBundle::load(&dir).unwrap()
    }

    #[test]
    fn bundles_load_and_hash_their_content() {
        let b = swiglu();
        assert_eq!(b.task.id, "swiglu");
        assert_eq!(b.content.len(), 64);
        assert_eq!(
            b.reference_plan.kernel_names(),
            vec!["swiglu_bf16".to_string()]
        );
        let e = TaskBundle::load(Path::new("/nonexistent/task"))
            .err()
            .unwrap();
        assert!(
            e.message
                .contains("cannot read /nonexistent/task/task.toml"),
            "{e}"
        );
    }

    #[test]
    fn a_plan_naming_a_missing_kernel_is_invalid() {
        let b = swiglu();
        let src = "extern \"C\" __global__ void mine(const void* a) {}";
        let plan =
            "[[launch]]\nkernel = \"swiglu_bf16\"\ngrid = [1]\nblock = [32]\nargs = [\"a\"]\n";
        match candidate_plan(&b.task, src, plan).map_err(|v| *v) {
            Err(Verdict::InvalidPlan { message }) => {
                assert!(message.contains("launch.toml:2"), "{message}");
                assert!(
                    message.contains("`swiglu_bf16` is not defined"),
                    "{message}"
                );
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(candidate_plan(&b.task, &b.reference_source, plan).is_ok());
    }
}
