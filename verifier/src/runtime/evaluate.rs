//! One evaluation request end to end on the real device: read the task and its reference,
//! check the candidate's plan, compile both with NVRTC for the device's architecture, load them,
//! and run the strict protocol with the reference kernel as the oracle — or, when the request
//! asks for the PyTorch oracle, with the task's spec.py through the caller's [`SpecOracle`]
//! (the reference kernel is then not compiled at all).

use super::backend::Device;
use super::error::RuntimeError;
use super::strict::{
    self, EvalError, KernelOracle, Oracle, Outcome, ReferenceCache, RunHooks, SpecOracle,
    SpecOracleFor,
};
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
    /// task.toml as read (keys the PyTorch oracle's cached outputs, with spec.py).
    pub task_text: String,
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
            task_text,
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

/// Evaluates one request on an open GPU (or any [`Device`]) with the reference kernel as the only
/// oracle this caller offers. `Ok` carries the verdict; `Err` means the harness failed
/// (unreadable task, NVRTC missing, the reference itself failing, an oracle not offered here).
pub fn evaluate<D: Device>(
    gpu: &D,
    compiler: &Compiler,
    cache: &mut ReferenceCache,
    req: &EvaluateRequest,
    hooks: &dyn RunHooks,
) -> Result<Outcome, EvalError> {
    evaluate_with(gpu, compiler, cache, req, hooks, None)
}

/// [`evaluate`], with `spec` answering requests for the PyTorch oracle (`None`: such requests
/// are a harness error saying this process has no PyTorch oracle).
pub fn evaluate_with<D: Device>(
    gpu: &D,
    compiler: &Compiler,
    cache: &mut ReferenceCache,
    req: &EvaluateRequest,
    hooks: &dyn RunHooks,
    spec: Option<&mut dyn SpecOracle>,
) -> Result<Outcome, EvalError> {
    let bundle = TaskBundle::load(&req.task_dir)?;
    let task = &bundle.task;
    let spec = match (req.options.oracle, spec) {
        (OracleKind::ReferenceKernel, _) => None,
        (OracleKind::PyTorch, Some(s)) => Some(s),
        (OracleKind::PyTorch, None) => {
            return Err(EvalError::new(
                "this process offers no PyTorch oracle (only a `ksmith worker` runs spec.py)",
            ))
        }
    };
    let verdict_only = |verdict: Verdict, log: Vec<String>| Outcome {
        verdict,
        log,
        context_lost: false,
        errors: Vec::new(),
    };
    let plan = match candidate_plan(task, &req.source, &req.plan) {
        Ok(p) => p,
        Err(v) => return Ok(verdict_only(*v, vec![])),
    };
    let arch = gpu.arch();
    let reference = match spec {
        Some(_) => None,
        None => match compile(
            compiler,
            task,
            &bundle.reference_source,
            &bundle.reference_plan,
            arch,
            "reference.cu",
        ) {
            Ok(c) => Some(c),
            Err(CompileFailure::Harness(e)) => return Err(e),
            Err(CompileFailure::Verdict(v)) => {
                return Err(EvalError::new(format!(
                    "the reference kernel of `{}` does not compile for {arch}: {}",
                    task.id,
                    v.feedback()
                )))
            }
        },
    };
    let candidate = match compile(compiler, task, &req.source, &plan, arch, "kernel.cu") {
        Ok(c) => c,
        Err(CompileFailure::Harness(e)) => return Err(e),
        Err(CompileFailure::Verdict(v)) => return Ok(verdict_only(*v, vec![])),
    };
    let mut log = vec![
        format!("device: {}", gpu.describe()),
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
    let ref_module = match &reference {
        Some(r) => Some(gpu.load(r).map_err(|e| EvalError {
            context_lost: e.is_sticky(),
            message: format!("loading the reference module: {e}"),
        })?),
        None => None,
    };
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
                    errors: Vec::new(),
                });
            }
            return Err(EvalError {
                message: format!("loading the candidate module: {e}"),
                context_lost: lost,
            });
        }
    };
    let mut oracle: Box<dyn Oracle + '_> = match (spec, &ref_module) {
        (Some(s), _) => Box::new(SpecOracleFor::new(s, task, &bundle.task_text, cache)?),
        (None, Some(m)) => Box::new(KernelOracle::new(
            gpu,
            task,
            &bundle.reference_plan,
            m,
            format!("{}:{arch}", bundle.content),
            cache,
        )),
        (None, None) => return Err(EvalError::new("no oracle: the reference was not loaded")),
    };
    let mut out = strict::check(
        gpu,
        task,
        &plan,
        &module,
        oracle.as_mut(),
        &req.options,
        hooks,
    )?;
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

#[cfg(test)]
mod fake_device_tests {
    //! `evaluate` end to end on CPU: real task files and real NVRTC, with the fake device
    //! running Rust stand-ins for the compiled kernels.

    use super::*;
    use crate::inputs::HostTensor;
    use crate::protocol::EvalOptions;
    use crate::runtime::fake::{Fake, FakeBuf, Kernel};
    use std::collections::HashMap;

    fn bf16s(b: &FakeBuf) -> Vec<f32> {
        b.data.borrow()[..b.len]
            .chunks(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    }

    /// swiglu_bf16(a, b, y, total) on the host, with `f` computing an element.
    fn swiglu(f: fn(f32, f32) -> f32) -> HashMap<String, Kernel> {
        let k: Kernel = Box::new(move |l, buf, _| {
            let (a, b, y) = (bf16s(&buf("a")), bf16s(&buf("b")), buf("y"));
            let total = match l.args[3] {
                crate::plan::ResolvedArg::I64(t) => t as usize,
                _ => panic!("total"),
            };
            let mut d = y.data.borrow_mut();
            for i in 0..total {
                let v = half::bf16::from_f32(f(a[i], b[i])).to_le_bytes();
                d[2 * i..2 * i + 2].copy_from_slice(&v);
            }
            Ok(())
        });
        [("swiglu_bf16".to_string(), k)].into()
    }

    fn silu_mul(a: f32, b: f32) -> f32 {
        a / (1.0 + (-a).exp()) * b
    }

    /// A copy of the swiglu task with tiny shapes, so a CPU run takes milliseconds.
    fn small_task() -> tempfile::TempDir {
        let src = swiglu_dir();
        let dir = tempfile::tempdir().unwrap();
        let task = std::fs::read_to_string(src.join("task.toml"))
            .unwrap()
            .replace("M = 4096\nN = 4096", "M = 4\nN = 64")
            .replace("M = 16384\nN = 28672", "M = 3\nN = 40")
            .replace("M = 777\nN = 13823", "M = 7\nN = 13");
        std::fs::write(dir.path().join("task.toml"), task).unwrap();
        for f in ["reference.cu", "reference.toml"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        dir
    }

    fn swiglu_dir() -> PathBuf {
        crate::nvrtc::project_roots()
            .into_iter()
            .map(|r| r.join("tasks/activation/swiglu"))
            .find(|d| d.join("task.toml").is_file())
            .unwrap()
    }

    fn request(dir: &Path, source: &str, plan: &str) -> EvaluateRequest {
        EvaluateRequest {
            task_dir: dir.to_path_buf(),
            source: source.into(),
            plan: plan.into(),
            options: EvalOptions {
                heldout_max_bytes: 1 << 16,
                fresh_seed: Some(99),
                ..EvalOptions::default()
            },
        }
    }

    #[test]
    fn evaluate_runs_the_whole_request() {
        let Some(compiler) = crate::nvrtc::test_compiler() else {
            return;
        };
        let dir = small_task();
        let src = std::fs::read_to_string(dir.path().join("reference.cu")).unwrap();
        let plan = std::fs::read_to_string(dir.path().join("reference.toml")).unwrap();
        let mut cache = ReferenceCache::new(1 << 30);

        let dev = Fake::default();
        dev.programs.borrow_mut().push_back(swiglu(silu_mul));
        dev.programs.borrow_mut().push_back(swiglu(silu_mul));
        let out = evaluate(
            &dev,
            &compiler,
            &mut cache,
            &request(dir.path(), &src, &plan),
            &strict::NoHooks,
        )
        .unwrap();
        assert!(out.verdict.is_correct(), "{}", out.verdict.feedback());
        let log = out.log.join("\n");
        assert!(
            log.contains("device: fake device") && log.contains("compiled for sm_90"),
            "{log}"
        );
        assert!(log.contains("held-out shapes"), "{log}");
        let Verdict::Correct { cases, .. } = out.verdict else {
            unreachable!()
        };
        // 3 public + 2 held-out shapes, seeds 0, 1 and the fresh one, 3 variants.
        assert_eq!(cases, 5 * 3 * 3);

        // Wrong arithmetic: a verdict naming the output; reference outputs come from the cache.
        let hits = cache.hits;
        dev.programs.borrow_mut().push_back(swiglu(silu_mul));
        dev.programs.borrow_mut().push_back(swiglu(|a, b| a * b));
        let out = evaluate(
            &dev,
            &compiler,
            &mut cache,
            &request(dir.path(), &src, &plan),
            &strict::NoHooks,
        )
        .unwrap();
        match &out.verdict {
            Verdict::WrongOutput { output, case, .. } => {
                assert_eq!(output, "y");
                assert_eq!(case.shape, "small");
            }
            v => panic!("{v:?}"),
        }
        assert!(
            cache.hits > hits,
            "the reference ran again instead of the cache"
        );

        // Invalid plans and compile errors stop before anything is loaded.
        let out = evaluate(
            &dev,
            &compiler,
            &mut cache,
            &request(dir.path(), &src, "[[launch]]\n"),
            &strict::NoHooks,
        )
        .unwrap();
        assert_eq!(out.verdict.kind().as_str(), "invalid_plan");
        let broken = src.replace(
            "const long long nvec = total / 8;",
            "const long long nvec = total / 8",
        );
        let out = evaluate(
            &dev,
            &compiler,
            &mut cache,
            &request(dir.path(), &broken, &plan),
            &strict::NoHooks,
        )
        .unwrap();
        match &out.verdict {
            Verdict::CompileError { log } => assert!(log.contains("kernel.cu("), "{log}"),
            v => panic!("{v:?}"),
        }
        assert_eq!(dev.programs.borrow().len(), 0);

        // A task directory that does not exist is the harness's problem, not a verdict.
        let e = evaluate(
            &dev,
            &compiler,
            &mut cache,
            &request(Path::new("/nonexistent"), &src, &plan),
            &strict::NoHooks,
        )
        .err()
        .unwrap();
        assert!(e.message.contains("/nonexistent/task.toml"), "{e}");
    }

    /// swiglu's spec on the host, standing in for PyTorch.
    struct HostSwiglu {
        calls: u32,
    }

    impl SpecOracle for HostSwiglu {
        fn describe(&self) -> String {
            "host swiglu".into()
        }

        fn outputs(&mut self, c: &strict::SpecCase) -> Result<Vec<HostTensor>, EvalError> {
            self.calls += 1;
            let f = |t: &HostTensor| -> Vec<f32> {
                t.bytes
                    .chunks(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect()
            };
            let (a, b) = (f(&c.inputs[0]), f(&c.inputs[1]));
            Ok(vec![HostTensor {
                dtype: c.inputs[0].dtype,
                dims: c.inputs[0].dims.clone(),
                bytes: a
                    .iter()
                    .zip(&b)
                    .flat_map(|(x, y)| half::bf16::from_f32(silu_mul(*x, *y)).to_le_bytes())
                    .collect(),
            }])
        }
    }

    #[test]
    fn the_pytorch_oracle_replaces_the_reference_kernel() {
        let Some(compiler) = crate::nvrtc::test_compiler() else {
            return;
        };
        let dir = small_task();
        std::fs::write(dir.path().join("spec.py"), "class Model: pass\n").unwrap();
        let src = std::fs::read_to_string(dir.path().join("reference.cu")).unwrap();
        let plan = std::fs::read_to_string(dir.path().join("reference.toml")).unwrap();
        let mut cache = ReferenceCache::new(1 << 30);
        let mut req = request(dir.path(), &src, &plan);
        req.options.oracle = OracleKind::PyTorch;
        req.options.stress = false;

        // Only the candidate is loaded: one program on the fake device's queue.
        let dev = Fake::default();
        dev.programs.borrow_mut().push_back(swiglu(silu_mul));
        let mut spec = HostSwiglu { calls: 0 };
        let out = evaluate_with(
            &dev,
            &compiler,
            &mut cache,
            &req,
            &strict::NoHooks,
            Some(&mut spec),
        )
        .unwrap();
        assert!(out.verdict.is_correct(), "{}", out.verdict.feedback());
        assert_eq!(dev.programs.borrow().len(), 0);
        // 3 public + 2 held-out shapes x 3 seeds, base inputs only.
        assert_eq!(spec.calls, 15);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].cases, 15);
        assert!(
            out.log.join("\n").contains("reference: host swiglu ("),
            "{:?}",
            out.log
        );

        // A candidate that disagrees with the spec is wrong; the spec's outputs are cached.
        dev.programs.borrow_mut().push_back(swiglu(|a, b| a * b));
        let out = evaluate_with(
            &dev,
            &compiler,
            &mut cache,
            &req,
            &strict::NoHooks,
            Some(&mut spec),
        )
        .unwrap();
        assert_eq!(out.verdict.kind().as_str(), "wrong_output");
        assert_eq!(spec.calls, 15);

        // Asked for the PyTorch oracle without one: a harness error, nothing loaded.
        let e = evaluate(&dev, &compiler, &mut cache, &req, &strict::NoHooks)
            .err()
            .unwrap();
        assert!(e.message.contains("offers no PyTorch oracle"), "{e}");

        // No spec.py: a harness error naming the file.
        std::fs::remove_file(dir.path().join("spec.py")).unwrap();
        dev.programs.borrow_mut().push_back(swiglu(silu_mul));
        let e = evaluate_with(
            &dev,
            &compiler,
            &mut cache,
            &req,
            &strict::NoHooks,
            Some(&mut spec),
        )
        .err()
        .unwrap();
        assert!(e.message.contains("spec.py"), "{e}");
    }
}
