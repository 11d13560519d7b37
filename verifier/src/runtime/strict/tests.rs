//! The strict protocol on a fake device: host memory for buffers (with guard bytes after each),
//! Rust closures for kernels, faults injected the way CUDA reports them (refused at launch, or
//! asynchronously at the next synchronisation).

use super::*;
use crate::compare::Poison;
use crate::inputs::StressScale;
use crate::runtime::error::{CudaError, OverLimits};
use crate::runtime::fake::{Fake, Fault, Kernel};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

const TASK: &str = r#"
id = "add"
title = "y = a + b"
category = "test"
[params]
N = { min = 1, max = 100000 }
[[shapes]]
name = "small"
N = 64
[[shapes]]
name = "odd"
N = 37
[[inputs]]
name = "a"
dtype = "f32"
shape = ["N"]
init = { dist = "normal" }
[[inputs]]
name = "b"
dtype = "f32"
shape = ["N"]
init = { dist = "normal" }
[[outputs]]
name = "y"
dtype = "f32"
shape = ["N"]
[check]
metric = "normalized_max"
tol = 1e-5
[roofline]
bytes = "12*N"
flops = "N"
peak = "fp32"
"#;

const PLAN: &str = r#"
[[scratch]]
name = "tmp"
dtype = "f32"
len = "N"
[[launch]]
kernel = "add"
grid = ["ceil_div(N, 32)"]
block = [32]
args = ["a", "b", "y", "tmp", "N"]
"#;

fn task() -> Task {
    Task::parse(Path::new("tasks/test/add/task.toml"), TASK).unwrap()
}

fn plan(t: &Task) -> Plan {
    let k: BTreeSet<String> = ["add".to_string()].into();
    Plan::parse(Path::new("launch.toml"), PLAN, t, &k).unwrap()
}

fn n_of(l: &ResolvedLaunch) -> usize {
    match l.args[4] {
        crate::plan::ResolvedArg::I32(n) => n as usize,
        _ => panic!("N"),
    }
}

/// y[i] = f(i, a[i], b[i]) for i in 0..n (n from the launch), `None` leaves y[i] unwritten.
fn elementwise(
    f: impl Fn(usize, usize, f32, f32, u32) -> Option<f32> + 'static,
) -> HashMap<String, Kernel> {
    let k: Kernel = Box::new(move |l, buf, call| {
        let n = n_of(l);
        let (a, b, y) = (buf("a").f32s(), buf("b").f32s(), buf("y"));
        for i in 0..n {
            if let Some(v) = f(i, n, a[i], b[i], call) {
                y.set_f32(i, v);
            }
        }
        Ok(())
    });
    [("add".to_string(), k)].into()
}

fn opts() -> EvalOptions {
    EvalOptions {
        seeds: vec![0, 1],
        fresh_seed: Some(12345),
        heldout_shapes: 2,
        heldout_max_bytes: 1 << 20,
        ..EvalOptions::default()
    }
}

fn run(program: HashMap<String, Kernel>) -> Outcome {
    let t = task();
    let p = plan(&t);
    let dev = Fake::default();
    let reference = elementwise(|_, _, a, b, _| Some(a + b));
    let mut cache = ReferenceCache::new(1 << 30);
    let mut oracle = KernelOracle::new(&dev, &t, &p, &reference, "add-v1".into(), &mut cache);
    check(&dev, &t, &p, &program, &mut oracle, &opts(), &NoHooks).unwrap()
}

#[test]
fn a_correct_kernel_passes_every_case() {
    let o = run(elementwise(|_, _, a, b, _| Some(a + b)));
    match &o.verdict {
        // 4 shapes (2 public, 2 held-out) x 3 seeds x 3 variants.
        Verdict::Correct {
            cases,
            nondeterministic_within_tolerance,
        } => {
            assert_eq!(*cases, 4 * 3 * 3, "{:?}", o.log);
            assert!(nondeterministic_within_tolerance.is_empty());
        }
        v => panic!("{v:?}"),
    }
    assert!(!o.context_lost);
    assert!(
        o.log.iter().any(|l| l.contains("held-out shapes")),
        "{:?}",
        o.log
    );
    assert!(
        o.log.iter().any(|l| l.contains("[0, 1, 12345]")),
        "{:?}",
        o.log
    );
}

#[test]
fn partial_output_is_wrong_with_unwritten_elements() {
    let o = run(elementwise(|i, n, a, b, _| (i < n / 2).then_some(a + b)));
    match &o.verdict {
        Verdict::WrongOutput { report, output, .. } => {
            assert_eq!(output, "y");
            assert_eq!(report.unwritten, 32, "{}", report.summary());
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn writing_past_the_end_is_a_runtime_fault() {
    let k: Kernel = Box::new(|l, buf, _| {
        let n = n_of(l);
        let (a, b, y) = (buf("a").f32s(), buf("b").f32s(), buf("y"));
        for i in 0..=n {
            // Off by one: i == n lands in the guard zone.
            y.set_f32(
                i,
                a.get(i).copied().unwrap_or(0.0) + b.get(i).copied().unwrap_or(0.0),
            );
        }
        Ok(())
    });
    let o = run([("add".to_string(), k)].into());
    match &o.verdict {
        Verdict::RuntimeFault { message, case, .. } => {
            assert!(message.contains("out-of-bounds write"), "{message}");
            assert!(message.contains("past the end of `y`"), "{message}");
            assert!(case.is_some());
        }
        v => panic!("{v:?}"),
    }
    assert!(!o.context_lost);
}

#[test]
fn mutating_an_input_is_caught_even_when_the_output_is_right() {
    let k: Kernel = Box::new(|l, buf, _| {
        let n = n_of(l);
        let (a, b, y) = (buf("a"), buf("b").f32s(), buf("y"));
        let av = a.f32s();
        for i in 0..n {
            y.set_f32(i, av[i] + b[i]);
        }
        a.set_f32(3, 0.0);
        Ok(())
    });
    let o = run([("add".to_string(), k)].into());
    match &o.verdict {
        Verdict::InputMutated { buffers, .. } => {
            assert_eq!(buffers.len(), 1);
            assert_eq!(buffers[0].name, "a");
            assert_eq!(buffers[0].kind, "input");
            assert_eq!(buffers[0].changed_elements, 1);
            assert_eq!(buffers[0].first_changed, vec![3]);
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn reading_scratch_before_writing_it_is_wrong() {
    let k: Kernel = Box::new(|l, buf, _| {
        let n = n_of(l);
        let (a, b, y, tmp) = (
            buf("a").f32s(),
            buf("b").f32s(),
            buf("y"),
            buf("tmp").f32s(),
        );
        for i in 0..n {
            // Assumes scratch starts zeroed; it holds NaN poison.
            y.set_f32(i, a[i] + b[i] + tmp[i]);
        }
        Ok(())
    });
    let o = run([("add".to_string(), k)].into());
    match &o.verdict {
        Verdict::WrongOutput { report, .. } => {
            assert!(report.nonfinite > 0, "{}", report.summary())
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn results_that_change_between_runs_are_nondeterministic() {
    // Correct on every first run, off by 1.0 on every second one (as a race would be).
    let calls = Rc::new(Cell::new(0u32));
    let c = Rc::clone(&calls);
    let o = run(elementwise(move |i, _, a, b, _| {
        if i == 0 {
            c.set(c.get() + 1);
        }
        Some(a + b + if c.get().is_multiple_of(2) { 1.0 } else { 0.0 })
    }));
    match &o.verdict {
        Verdict::Nondeterministic { output, report, .. } => {
            assert_eq!(output, "y");
            assert!(report.mismatches > 0);
        }
        v => panic!("{v:?}"),
    }
    // Tiny run-to-run differences within tolerance are reported apart, not failed.
    let c = Rc::new(Cell::new(0u32));
    let o = run(elementwise(move |i, _, a, b, _| {
        if i == 0 {
            c.set(c.get() + 1);
        }
        let s = a + b;
        Some(if c.get().is_multiple_of(2) {
            s * (1.0 + 1e-6)
        } else {
            s
        })
    }));
    match &o.verdict {
        Verdict::Correct {
            nondeterministic_within_tolerance,
            ..
        } => assert_eq!(nondeterministic_within_tolerance, &vec!["y".to_string()]),
        v => panic!("{v:?}"),
    }
}

#[test]
fn wrong_only_for_heavy_tailed_inputs_is_caught_by_the_stress_variant() {
    let o = run(elementwise(|_, _, a, b, _| Some(a.clamp(-8.0, 8.0) + b)));
    match &o.verdict {
        Verdict::WrongOutput { case, .. } => {
            assert_eq!(case.variant, Variant::Stress(StressScale::Up), "{case:?}")
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn wrong_for_one_shape_names_that_shape() {
    let o = run(elementwise(|i, n, a, b, _| {
        Some(if n == 37 && i == 36 { a } else { a + b })
    }));
    match &o.verdict {
        Verdict::WrongOutput { case, report, .. } => {
            assert_eq!(case.shape, "odd");
            assert_eq!(report.first_bad.as_ref().unwrap().coords, vec![36]);
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn a_sticky_fault_loses_the_context_and_a_refused_launch_does_not() {
    let k: Kernel = Box::new(|_, _, _| {
        Err(Fault::Async(RuntimeError::Cuda(CudaError {
            call: "cuStreamSynchronize".into(),
            code: 700,
            name: "CUDA_ERROR_ILLEGAL_ADDRESS".into(),
            message: "an illegal memory access was encountered".into(),
        })))
    });
    let o = run([("add".to_string(), k)].into());
    match &o.verdict {
        Verdict::RuntimeFault { message, .. } => {
            assert!(message.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{message}")
        }
        v => panic!("{v:?}"),
    }
    assert!(o.context_lost);

    let k: Kernel = Box::new(|l, _, _| {
        Err(Fault::Refuse(RuntimeError::OverLimits(OverLimits {
            kernel: l.kernel.clone(),
            problems: vec!["needs 300000 bytes of shared memory per block".into()],
        })))
    });
    let o = run([("add".to_string(), k)].into());
    match &o.verdict {
        Verdict::LaunchError {
            kernel,
            launch,
            message,
            ..
        } => {
            assert_eq!((kernel.as_str(), *launch), ("add", 0));
            assert!(message.contains("launch over resource limits"), "{message}");
        }
        v => panic!("{v:?}"),
    }
    assert!(!o.context_lost);
}

#[test]
fn reference_outputs_are_cached_across_checks() {
    let t = task();
    let p = plan(&t);
    let dev = Fake::default();
    let reference = elementwise(|_, _, a, b, _| Some(a + b));
    let good = elementwise(|_, _, a, b, _| Some(a + b));
    let mut cache = ReferenceCache::new(1 << 30);
    let o = EvalOptions {
        heldout_shapes: 0,
        ..opts()
    };
    for round in 0..2 {
        let mut oracle = KernelOracle::new(&dev, &t, &p, &reference, "add-v1".into(), &mut cache);
        let out = check(&dev, &t, &p, &good, &mut oracle, &o, &NoHooks).unwrap();
        assert!(out.verdict.is_correct());
        // 2 shapes x 3 seeds x 3 variants, computed once.
        assert_eq!(cache.len(), 18);
        assert_eq!(cache.hits, if round == 0 { 0 } else { 18 });
    }
    let mut small = ReferenceCache::new(300);
    let mut oracle = KernelOracle::new(&dev, &t, &p, &reference, "add-v1".into(), &mut small);
    check(&dev, &t, &p, &good, &mut oracle, &o, &NoHooks).unwrap();
    // 256 bytes per small-shape output: one fits in a 300-byte budget.
    assert!(small.len() <= 2, "{}", small.len());
}

#[test]
fn options_that_name_an_unknown_shape_are_a_harness_error() {
    let t = task();
    let e = cases(
        &t,
        &EvalOptions {
            shapes: vec!["huge".into()],
            ..opts()
        },
    )
    .err()
    .unwrap();
    assert!(
        e.message
            .contains("no shape `huge` (its shapes: small, odd)"),
        "{e}"
    );
    let c = cases(
        &t,
        &EvalOptions {
            shapes: vec!["odd".into()],
            stress: false,
            heldout_shapes: 0,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(c.shapes.len(), 1);
    assert_eq!(c.variants, vec![Variant::Base]);
    assert_eq!(c.seeds, vec![0, 1, 12345]);
    let _ = Poison::A;
}

#[test]
fn hooks_bracket_every_candidate_run() {
    struct Record(std::cell::RefCell<Vec<Option<String>>>);
    impl RunHooks for Record {
        fn running(&self, case: Option<&Case>) {
            self.0.borrow_mut().push(case.map(|c| c.describe()));
        }
    }
    let t = task();
    let p = plan(&t);
    let dev = Fake::default();
    let reference = elementwise(|_, _, a, b, _| Some(a + b));
    let good = elementwise(|_, _, a, b, _| Some(a + b));
    let mut cache = ReferenceCache::new(1 << 30);
    let mut oracle = KernelOracle::new(&dev, &t, &p, &reference, "add-v1".into(), &mut cache);
    let rec = Record(Default::default());
    let o = EvalOptions {
        heldout_shapes: 0,
        ..opts()
    };
    let out = check(&dev, &t, &p, &good, &mut oracle, &o, &rec).unwrap();
    assert!(out.verdict.is_correct());
    let calls = rec.0.into_inner();
    // 18 cases x (prepare + two runs), each armed then disarmed.
    assert_eq!(calls.len(), 18 * 3 * 2);
    for pair in calls.chunks(2) {
        assert!(pair[0].is_some() && pair[1].is_none(), "{pair:?}");
    }
    assert!(calls[0].as_deref().unwrap().contains("shape small"));
}

/// A stand-in for the PyTorch oracle: y = (a + b) * (1 + `rel`) on the host, recording the inputs
/// it was given.
struct HostSpec {
    rel: f32,
    calls: u32,
    seen: Vec<Vec<HostTensor>>,
    /// Return this many outputs instead of the declared one.
    outputs: usize,
    fail: Option<String>,
}

impl HostSpec {
    fn new(rel: f32) -> HostSpec {
        HostSpec {
            rel,
            calls: 0,
            seen: Vec::new(),
            outputs: 1,
            fail: None,
        }
    }
}

impl SpecOracle for HostSpec {
    fn describe(&self) -> String {
        "host stand-in for spec.py".into()
    }

    fn outputs(&mut self, c: &SpecCase) -> Result<Vec<HostTensor>, EvalError> {
        self.calls += 1;
        if let Some(m) = &self.fail {
            return Err(EvalError::new(m.clone()));
        }
        self.seen.push(c.inputs.to_vec());
        let f = |t: &HostTensor| -> Vec<f32> {
            t.bytes
                .chunks(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let (a, b) = (f(&c.inputs[0]), f(&c.inputs[1]));
        let y: Vec<u8> = a
            .iter()
            .zip(&b)
            .flat_map(|(x, y)| ((x + y) * (1.0 + self.rel)).to_le_bytes())
            .collect();
        let t = HostTensor {
            dtype: DType::F32,
            dims: vec![a.len() as u64],
            bytes: y,
        };
        Ok(vec![t; self.outputs])
    }
}

/// The add task written to a directory with a spec.py beside it (the spec oracle keys its
/// cache on both files).
fn task_on_disk(spec: &str) -> (tempfile::TempDir, Task) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("task.toml");
    std::fs::write(&path, TASK).unwrap();
    std::fs::write(dir.path().join("spec.py"), spec).unwrap();
    let t = Task::parse(&path, TASK).unwrap();
    (dir, t)
}

fn spec_check(
    spec: &mut HostSpec,
    t: &Task,
    cache: &mut ReferenceCache,
    program: &HashMap<String, Kernel>,
) -> Result<Outcome, EvalError> {
    let p = plan(t);
    let dev = Fake::default();
    let mut oracle = SpecOracleFor::new(spec, t, TASK, cache)?;
    assert!(oracle.content().starts_with("spec:"));
    check(&dev, t, &p, program, &mut oracle, &opts(), &NoHooks)
}

#[test]
fn the_spec_oracle_sees_the_candidates_inputs_and_is_cached() {
    let (_d, t) = task_on_disk("class Model: pass\n");
    let mut spec = HostSpec::new(0.0);
    let mut cache = ReferenceCache::new(1 << 30);
    let good = elementwise(|_, _, a, b, _| Some(a + b));
    let o = spec_check(&mut spec, &t, &mut cache, &good).unwrap();
    assert!(o.verdict.is_correct(), "{:?}", o.verdict);
    assert_eq!(spec.calls, 36);
    assert!(
        o.log
            .iter()
            .any(|l| l.contains("reference: host stand-in for spec.py (")
                && l.contains("spec.py)")),
        "{:?}",
        o.log
    );
    // Exactly the generated inputs of each case, in the order the protocol runs them.
    let sel = cases(&t, &opts()).unwrap();
    let mut k = 0;
    for shape in &sel.shapes {
        for &seed in &sel.seeds {
            for &v in &sel.variants {
                let want = crate::inputs::generate_inputs(&t, shape, seed, v).unwrap();
                assert_eq!(spec.seen[k], want, "case {k}");
                k += 1;
            }
        }
    }
    // Errors are reported per output: exact agreement here.
    assert_eq!(o.errors.len(), 1);
    assert_eq!(o.errors[0].output, "y");
    assert_eq!(o.errors[0].cases, 36);
    assert_eq!(o.errors[0].normalized_error, 0.0);

    // A second check asks the oracle nothing.
    let o = spec_check(&mut spec, &t, &mut cache, &good).unwrap();
    assert!(o.verdict.is_correct());
    assert_eq!(spec.calls, 36);
    assert_eq!(cache.hits, 36);

    // Another spec.py is another key.
    let (_d2, t2) = task_on_disk("class Model: pass  # changed\n");
    spec_check(&mut spec, &t2, &mut cache, &good).unwrap();
    assert_eq!(spec.calls, 72);
}

#[test]
fn the_spec_oracle_decides_what_is_correct() {
    let (_d, t) = task_on_disk("class Model: pass\n");
    let mut cache = ReferenceCache::new(1 << 30);
    let kernel = elementwise(|_, _, a, b, _| Some(a + b));
    // A spec that disagrees with the kernel by far more than the tolerance: wrong output.
    let mut off = HostSpec::new(0.5);
    let o = spec_check(&mut off, &t, &mut cache, &kernel).unwrap();
    match &o.verdict {
        Verdict::WrongOutput { output, case, .. } => {
            assert_eq!(output, "y");
            assert_eq!(case.shape, "small");
        }
        v => panic!("{v:?}"),
    }
    assert!(o.errors[0].normalized_error > 1e-5, "{:?}", o.errors);
    // Within the tolerance: correct, and the error is reported.
    let mut cache = ReferenceCache::new(1 << 30);
    let mut near = HostSpec::new(1e-6);
    let o = spec_check(&mut near, &t, &mut cache, &kernel).unwrap();
    assert!(o.verdict.is_correct(), "{:?}", o.verdict);
    let e = &o.errors[0];
    assert!(
        e.normalized_error > 0.0 && e.normalized_error < 1e-5,
        "{e:?}"
    );
    assert!(e.fraction_of_tolerance().is_some_and(|f| f < 1.0));
    assert!(
        e.describe().contains("normalized error"),
        "{}",
        e.describe()
    );
}

#[test]
fn spec_oracle_failures_are_harness_errors() {
    let (_d, t) = task_on_disk("class Model: pass\n");
    let kernel = elementwise(|_, _, a, b, _| Some(a + b));
    let mut two = HostSpec::new(0.0);
    two.outputs = 2;
    let mut cache = ReferenceCache::new(1 << 30);
    let e = spec_check(&mut two, &t, &mut cache, &kernel).err().unwrap();
    assert!(
        e.message
            .contains("2 output(s) came back, the task declares 1")
            && e.message.contains("spec.py"),
        "{e}"
    );
    assert!(cache.is_empty(), "a bad answer must not be cached");
    let mut skip = HostSpec::new(0.0);
    skip.fail = Some(format!(
        "{SPEC_ORACLE_SKIPPED} not importable: no module torch"
    ));
    let e = spec_check(&mut skip, &t, &mut cache, &kernel)
        .err()
        .unwrap();
    assert!(e.message.starts_with(SPEC_ORACLE_SKIPPED), "{e}");
    assert!(!e.context_lost);

    // No spec.py beside task.toml: said before anything runs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("task.toml");
    std::fs::write(&path, TASK).unwrap();
    let t = Task::parse(&path, TASK).unwrap();
    let mut spec = HostSpec::new(0.0);
    let e = SpecOracleFor::new(&mut spec, &t, TASK, &mut cache)
        .err()
        .unwrap();
    assert!(
        e.message.contains("the PyTorch oracle needs") && e.message.contains("spec.py"),
        "{e}"
    );
}

/// Y = X @ W^T with a batch-invariance check on M (f32 so that one ulp is easy to make).
const MATMUL: &str = r#"
id = "rowdot"
title = "Y = X @ W^T"
category = "test"
[params]
M = { min = 1, max = 64 }
K = { min = 1, max = 128 }
N = { min = 1, max = 32 }
[[shapes]]
name = "m8"
M = 8
K = 64
N = 16
[[shapes]]
name = "m1"
M = 1
K = 64
N = 16
[[inputs]]
name = "X"
dtype = "f32"
shape = ["M", "K"]
init = { dist = "normal" }
[[inputs]]
name = "W"
dtype = "f32"
shape = ["N", "K"]
init = { dist = "normal" }
role = "weight"
[[outputs]]
name = "Y"
dtype = "f32"
shape = ["M", "N"]
[check]
metric = "normalized_max"
tol = 1e-4
[roofline]
bytes = "4*(M*K + N*K + M*N)"
flops = "2*M*N*K"
peak = "fp32"
[checks.batch_invariant]
param = "M"
inputs = ["X"]
outputs = ["Y"]
"#;

const MATMUL_PLAN: &str = r#"
[[launch]]
kernel = "mm"
grid = ["M"]
block = [32]
args = ["X", "W", "Y", "M", "K", "N"]
"#;

fn int_arg(l: &ResolvedLaunch, i: usize) -> usize {
    match l.args[i] {
        crate::plan::ResolvedArg::I32(n) => n as usize,
        _ => panic!("argument {i} is not an int"),
    }
}

/// A matmul whose element (m, n) is `f(m, M, forward-order dot product, reverse-order one)`:
/// `None` leaves it unwritten.
fn matmul(f: impl Fn(usize, usize, f32, f32) -> Option<f32> + 'static) -> HashMap<String, Kernel> {
    let k: Kernel = Box::new(move |l, buf, _| {
        let (m_rows, k, n) = (int_arg(l, 3), int_arg(l, 4), int_arg(l, 5));
        let (x, w, y) = (buf("X").f32s(), buf("W").f32s(), buf("Y"));
        for m in 0..m_rows {
            for j in 0..n {
                let terms = (0..k).map(|p| x[m * k + p] * w[j * k + p]);
                let forward = terms.clone().fold(0.0f32, |a, t| a + t);
                let reverse = terms.rev().fold(0.0f32, |a, t| a + t);
                if let Some(v) = f(m, m_rows, forward, reverse) {
                    y.set_f32(m * n + j, v);
                }
            }
        }
        Ok(())
    });
    [("mm".to_string(), k)].into()
}

fn run_matmul(program: HashMap<String, Kernel>, heldout: u32) -> Outcome {
    let t = Task::parse(Path::new("tasks/test/rowdot/task.toml"), MATMUL).unwrap();
    let k: BTreeSet<String> = ["mm".to_string()].into();
    let p = Plan::parse(Path::new("launch.toml"), MATMUL_PLAN, &t, &k).unwrap();
    let dev = Fake::default();
    let reference = matmul(|_, _, fwd, _| Some(fwd));
    let mut cache = ReferenceCache::new(1 << 30);
    let mut oracle = KernelOracle::new(&dev, &t, &p, &reference, "mm-v1".into(), &mut cache);
    let o = EvalOptions {
        heldout_shapes: heldout,
        ..opts()
    };
    check(&dev, &t, &p, &program, &mut oracle, &o, &NoHooks).unwrap()
}

fn next_ulp(v: f32) -> f32 {
    f32::from_bits(v.to_bits() + 1)
}

#[test]
fn a_batch_invariant_kernel_passes_and_every_probe_runs() {
    let seen_single = Rc::new(Cell::new(0u32));
    let s = Rc::clone(&seen_single);
    let o = run_matmul(
        matmul(move |m, rows, fwd, _| {
            if rows == 1 && m == 0 {
                s.set(s.get() + 1);
            }
            Some(fwd)
        }),
        0,
    );
    assert!(o.verdict.is_correct(), "{:?}\n{:?}", o.verdict, o.log);
    // m8: rows 0, 4 and 7 for 3 seeds x 3 variants; m1 has no row to run alone.
    assert!(
        o.log.iter().any(|l| l
            == "batch invariance (M): 27 single-row run(s) on 1 shape(s), each bitwise equal to its row of the batch"),
        "{:?}",
        o.log
    );
    assert!(
        o.log
            .iter()
            .any(|l| l.contains("not checked on shape m1: M = 1")),
        "{:?}",
        o.log
    );
    // 16 columns per single-row run, plus the m1 shape's own 9 cases x 2 runs.
    assert_eq!(seen_single.get(), 27 * 16 + 9 * 2 * 16);
    // Held-out shapes are probed too.
    let o = run_matmul(matmul(|_, _, fwd, _| Some(fwd)), 2);
    assert!(o.verdict.is_correct(), "{:?}", o.verdict);
}

#[test]
fn a_row_that_depends_on_the_batch_size_fails_naming_row_and_coordinate() {
    // One ulp off in the last row whenever the batch has more than one row: well inside the
    // tolerance, so only the batch-invariance check can see it.
    let o = run_matmul(
        matmul(|m, rows, fwd, _| {
            Some(if rows > 1 && m == rows - 1 {
                next_ulp(fwd)
            } else {
                fwd
            })
        }),
        0,
    );
    match &o.verdict {
        Verdict::WrongOutput {
            case,
            output,
            report,
            batch: Some(b),
        } => {
            assert_eq!((output.as_str(), case.shape.as_str()), ("Y", "m8"));
            assert_eq!((b.param.as_str(), b.batch, b.row), ("M", 8, 7));
            assert_eq!(report.metric, Metric::Exact);
            assert_eq!(report.mismatches, 16, "{}", report.summary());
            let first = report.first_bad.as_ref().unwrap();
            assert_eq!(first.coords, vec![7, 0]);
            assert_eq!(first.index, 7 * 16);
            let fb = o.verdict.feedback();
            assert!(
                fb.contains("row 7 computed alone (M=1")
                    && fb.contains("first bad element at [7, 0]"),
                "{fb}"
            );
        }
        v => panic!("{v:?}"),
    }
    assert!(!o.context_lost);
    // The accumulation order chosen by M (split-K style): reversed sums when M > 1 differ
    // from the single-row forward sums in the last bits somewhere in row 0.
    let o = run_matmul(
        matmul(|_, rows, fwd, rev| Some(if rows > 1 { rev } else { fwd })),
        0,
    );
    match &o.verdict {
        Verdict::WrongOutput {
            batch: Some(b),
            report,
            ..
        } => {
            assert_eq!(b.row, 0);
            assert!(report.mismatches > 0 && report.max_abs_error < 1e-4);
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn a_row_that_depends_on_its_position_fails_on_that_row() {
    // Odd rows of a batch take the other order: row 0 and 4 pass alone, row 7 does not.
    let o = run_matmul(
        matmul(|m, rows, fwd, rev| Some(if rows > 1 && m % 2 == 1 { rev } else { fwd })),
        0,
    );
    match &o.verdict {
        Verdict::WrongOutput {
            batch: Some(b),
            report,
            ..
        } => {
            assert_eq!(b.row, 7, "{}", report.summary());
            assert_eq!(report.first_bad.as_ref().unwrap().coords[0], 7);
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn a_single_row_run_that_writes_nothing_is_caught_as_unwritten() {
    let o = run_matmul(matmul(|_, rows, fwd, _| (rows > 1).then_some(fwd)), 0);
    match &o.verdict {
        // m8's probes come first; m1 (also rows == 1) is never reached.
        Verdict::WrongOutput {
            batch: Some(b),
            report,
            case,
            ..
        } => {
            assert_eq!((b.row, case.shape.as_str()), (0, "m8"));
            assert_eq!(report.unwritten, 16, "{}", report.summary());
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn a_fault_in_a_single_row_run_names_the_row_case() {
    let k: Kernel = Box::new(|l, _, _| {
        if int_arg(l, 3) == 1 {
            return Err(Fault::Async(RuntimeError::Cuda(CudaError {
                call: "cuStreamSynchronize".into(),
                code: 700,
                name: "CUDA_ERROR_ILLEGAL_ADDRESS".into(),
                message: "an illegal memory access was encountered".into(),
            })));
        }
        Ok(())
    });
    // Its full-batch outputs are wrong too, so the reference-free order matters: make the
    // full run right and only the single-row run fault.
    let good = matmul(|_, _, fwd, _| Some(fwd));
    let both: Kernel = Box::new(move |l, buf, n| {
        k(l, buf, n)?;
        (good["mm"])(l, buf, n)
    });
    let o = run_matmul([("mm".to_string(), both)].into(), 0);
    match &o.verdict {
        Verdict::RuntimeFault {
            case: Some(c),
            message,
            ..
        } => {
            assert_eq!(c.shape, "m8, row 0 alone");
            assert_eq!(c.values["M"], 1);
            assert!(message.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{message}");
        }
        v => panic!("{v:?}"),
    }
    assert!(o.context_lost);
}
