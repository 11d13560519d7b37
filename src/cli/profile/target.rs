//! The hidden `ksmith gpu run-once`: one kernel at one public shape, run so that a profiler or
//! sanitizer wrapped around the process sees a known sequence of launches — `[[prepare]]` once,
//! `warmups` calls of the plan, then one more call — and nothing else (no timing, no L2 flush,
//! no reference kernel). Its status goes to stderr as one `ksmith run-once: ok|failed:|error:`
//! line the wrappers look for (stdout is where ncu prints its table).

use super::TARGET_MARK;
use crate::cli::{Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK};
use bench_suite::suite::{self, Entry, Suite};
use clap::Args;
use std::path::PathBuf;
use verifier::compare::Poison;
use verifier::inputs::{generate_inputs, Variant};
use verifier::plan::Plan;
use verifier::runtime::backend::{Backend, Device};
use verifier::runtime::evaluate::{candidate_plan, compile, CompileFailure};
use verifier::runtime::strict::{execute, PlanBuffers};
use verifier::runtime::Gpu;
use verifier::task::{Shape, Task};
use verifier::verdict::Case;

#[derive(Debug, Args)]
pub struct RunOnceArgs {
    #[arg(long, value_name = "ID")]
    pub task: String,
    #[arg(long, value_name = "KERNEL.cu")]
    pub kernel: PathBuf,
    #[arg(long, value_name = "PLAN.toml")]
    pub plan: PathBuf,
    /// A public shape [default: the first]
    #[arg(long, value_name = "NAME")]
    pub shape: Option<String>,
    /// Calls of the plan before the last one
    #[arg(long, default_value_t = super::PROFILE_WARMUPS, value_name = "N")]
    pub warmups: u32,
    /// Seed of the inputs
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub seed: u64,
    /// Leave outputs and scratch as allocated (for initcheck: a poison fill would count as
    /// initialising them and hide a kernel that reads scratch it never wrote)
    #[arg(long)]
    pub no_poison: bool,
}

/// Why the target stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stop {
    /// The harness could not run the kernel.
    Harness(String),
    /// The kernel itself failed.
    Kernel(String),
}

/// Uploads the inputs of `shape`, poisons outputs and scratch (unless `poison` is false), runs
/// `[[prepare]]` once and the plan `warmups + 1` times, each call synchronised and its guard
/// zones checked. Returns the number of launches made.
#[allow(clippy::too_many_arguments)]
pub(crate) fn execute_once<B: Backend>(
    dev: &B,
    program: &B::Program,
    task: &Task,
    plan: &Plan,
    shape: &Shape,
    warmups: u32,
    seed: u64,
    poison: bool,
) -> Result<usize, Stop> {
    let inputs = generate_inputs(task, shape, seed, Variant::Base)
        .map_err(|e| Stop::Harness(format!("generating inputs: {e}")))?;
    let bufs = PlanBuffers::new(dev, task, plan, shape).map_err(Stop::Harness)?;
    bufs.upload_inputs(dev, &inputs)
        .map_err(|e| Stop::Harness(format!("uploading inputs: {e}")))?;
    if poison {
        bufs.poison(dev, Poison::A)
            .map_err(|e| Stop::Harness(format!("poisoning outputs: {e}")))?;
    }
    let case = Case::new(shape, seed, Variant::Base);
    let prepare = plan.resolve_prepare(shape).map_err(Stop::Kernel)?;
    let calls = plan.resolve(shape).map_err(Stop::Kernel)?;
    let mut launched = 0;
    if !prepare.is_empty() {
        execute(dev, program, &prepare, &bufs, &case)
            .map_err(|(v, _)| Stop::Kernel(format!("[[prepare]]: {}", v.feedback())))?;
        launched += prepare.len();
    }
    for i in 0..=warmups {
        execute(dev, program, &calls, &bufs, &case).map_err(|(v, _)| {
            Stop::Kernel(format!(
                "call {} of {}: {}",
                i + 1,
                warmups + 1,
                v.feedback()
            ))
        })?;
        launched += calls.len();
    }
    Ok(launched)
}

fn say(line: &str) {
    // One line, so that the wrappers read it whole.
    eprintln!("{TARGET_MARK} {}", line.replace('\n', " | "));
}

pub fn run_once(g: &Global, a: &RunOnceArgs) -> u8 {
    match run(g, a) {
        Ok(n) => {
            say(&format!("ok ({n} launches)"));
            EXIT_OK
        }
        Err(Stop::Kernel(m)) => {
            say(&format!("failed: {m}"));
            EXIT_FAILED
        }
        Err(Stop::Harness(m)) => {
            say(&format!("error: {m}"));
            EXIT_HARNESS
        }
    }
}

fn run(g: &Global, a: &RunOnceArgs) -> Result<usize, Stop> {
    let h = |e: String| Stop::Harness(e);
    let root = suite::locate(g.tasks_dir.as_deref()).map_err(|e| h(e.to_string()))?;
    let suite = Suite::discover(&root).map_err(|e| h(e.to_string()))?;
    let Some(Entry::Ok(td)) = suite.get(&a.task) else {
        return Err(h(format!(
            "no valid task `{}` in {}",
            a.task,
            root.display()
        )));
    };
    let task = &td.task;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| h(format!("cannot read {}: {e}", p.display())))
    };
    let source = read(&a.kernel)?;
    let plan_text = read(&a.plan)?;
    let plan = candidate_plan(task, &source, &plan_text).map_err(|v| Stop::Kernel(v.feedback()))?;
    let shape = match &a.shape {
        Some(n) => task
            .shape(n)
            .ok_or_else(|| h(format!("task `{}` has no public shape `{n}`", task.id)))?,
        None => task
            .shapes
            .first()
            .ok_or_else(|| h(format!("task `{}` has no public shapes", task.id)))?,
    };
    let gpu = Gpu::open(0).map_err(|e| h(format!("needs a GPU: {e}")))?;
    let (compiler, _) = crate::cli::tasks::compiler(g).map_err(|e| h(crate::cli::describe(&e)))?;
    let compiled =
        compile(&compiler, task, &source, &plan, gpu.arch(), "kernel.cu").map_err(|f| match f {
            CompileFailure::Verdict(v) => Stop::Kernel(v.feedback()),
            CompileFailure::Harness(e) => h(e.message),
        })?;
    let module = gpu
        .load(&compiled)
        .map_err(|e| Stop::Kernel(format!("loading the module: {e}")))?;
    execute_once(
        &gpu,
        &module,
        task,
        &plan,
        shape,
        a.warmups,
        a.seed,
        !a.no_poison,
    )
}

#[cfg(test)]
mod tests {
    use super::super::{ncu_target, Launches};
    use super::*;
    use std::cell::RefCell;
    use verifier::dtype::DType;
    use verifier::plan::ResolvedLaunch;
    use verifier::runtime::{GuardDamage, RuntimeError};

    /// Host buffers; launches recorded by kernel name, one kernel may be made to fail.
    #[derive(Default)]
    struct Recorder {
        launches: RefCell<Vec<String>>,
        next: RefCell<u64>,
        refuse: Option<String>,
    }

    impl Backend for Recorder {
        type Buffer = (u64, RefCell<Vec<u8>>);
        type Program = ();
        fn alloc(&self, _: &str, dtype: DType, numel: u64) -> Result<Self::Buffer, RuntimeError> {
            let mut n = self.next.borrow_mut();
            *n += 1;
            Ok((
                *n << 32,
                RefCell::new(vec![0; numel as usize * dtype.size_bytes()]),
            ))
        }
        fn address(&self, b: &Self::Buffer) -> u64 {
            b.0
        }
        fn upload(&self, b: &Self::Buffer, bytes: &[u8]) -> Result<(), RuntimeError> {
            b.1.borrow_mut().copy_from_slice(bytes);
            Ok(())
        }
        fn download(&self, b: &Self::Buffer) -> Result<Vec<u8>, RuntimeError> {
            Ok(b.1.borrow().clone())
        }
        fn fill(&self, _: &Self::Buffer, _: &[u8]) -> Result<(), RuntimeError> {
            Ok(())
        }
        fn check_guards(&self, _: &Self::Buffer) -> Result<Option<GuardDamage>, RuntimeError> {
            Ok(None)
        }
        fn launch(
            &self,
            _: &(),
            l: &ResolvedLaunch,
            _: &dyn Fn(&str) -> Option<u64>,
        ) -> Result<(), RuntimeError> {
            if self.refuse.as_deref() == Some(l.kernel.as_str()) {
                return Err(RuntimeError::NoDevice("refused for the test".into()));
            }
            self.launches.borrow_mut().push(l.kernel.clone());
            Ok(())
        }
        fn synchronize(&self) -> Result<(), RuntimeError> {
            Ok(())
        }
    }

    fn task_dir(id: &str) -> bench_suite::suite::TaskDir {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tasks");
        let suite = Suite::discover(&root).expect("the task suite");
        match suite.get(id) {
            Some(Entry::Ok(td)) => (**td).clone(),
            _ => panic!("task {id} missing"),
        }
    }

    /// The ncu skip computed on the CPU lands on the first launch of the last call, and the
    /// count covers that call, for a plan with `[[prepare]]` and for a plain one.
    #[test]
    fn ncu_skip_and_count_select_the_last_call() {
        for id in ["large_kernel_dwconv", "swiglu", "marlin_w4a16_gemm"] {
            let td = task_dir(id);
            let shape = td.task.shapes[0].clone();
            let dev = Recorder::default();
            let warmups = 2;
            let n = execute_once(&dev, &(), &td.task, &td.plan, &shape, warmups, 0, true)
                .unwrap_or_else(|e| panic!("{id}: {e:?}"));
            let seen = dev.launches.borrow().clone();
            assert_eq!(n, seen.len());
            let l = Launches::of(&td.plan, &shape).unwrap();
            assert_eq!(seen.len(), l.prepare.len() + 3 * l.call.len(), "{id}");
            let t = ncu_target(&l, None, warmups).unwrap();
            // What ncu would pick: launches whose name matches the regex's alternatives.
            let alts: Vec<String> = t
                .kernel_regex
                .split('|')
                .map(|s| s.replace('\\', ""))
                .collect();
            let matching: Vec<&String> = seen
                .iter()
                .filter(|k| alts.iter().any(|a| k.contains(a.as_str())))
                .collect();
            let picked: Vec<&String> = matching
                .iter()
                .skip(t.launch_skip as usize)
                .take(t.launch_count as usize)
                .copied()
                .collect();
            assert_eq!(
                picked,
                seen[seen.len() - l.call.len()..].iter().collect::<Vec<_>>(),
                "{id}"
            );
            assert_eq!(matching.len() as u64, t.launch_skip + t.launch_count);
        }
    }

    #[test]
    fn a_refused_launch_is_the_kernels_failure_naming_the_call() {
        let td = task_dir("swiglu");
        let shape = td.task.shapes[0].clone();
        let kernel = td.plan.resolve(&shape).unwrap()[0].kernel.clone();
        let dev = Recorder {
            refuse: Some(kernel.clone()),
            ..Recorder::default()
        };
        match execute_once(&dev, &(), &td.task, &td.plan, &shape, 3, 0, false) {
            Err(Stop::Kernel(m)) => {
                assert!(m.starts_with("call 1 of 4"), "{m}");
                assert!(m.contains(&kernel), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}
