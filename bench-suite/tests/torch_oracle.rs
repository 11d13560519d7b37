//! The PyTorch oracle without torch: a runner session (`torch_runner.py --serve`) on the CPU
//! stand-in for torch answers case after case from one process; the oracle plugged into the
//! verifier's spec-oracle interface returns exactly what spec.py computed on exactly the
//! candidate's inputs; and every way the runner can be missing or misbehave (no python, no
//! torch, garbage, a crash, a hang, a reply without outputs, a failing spec) is a clear error,
//! never a panic or a plausible result.

mod common;

use bench_suite::torch::{
    InputDecl, Mode, OutputDecl, RunnerConfig, RunnerScript, Session, TorchDevice, TorchError,
    TorchJob, TorchOracle,
};
use std::path::Path;
use std::time::{Duration, Instant};
use verifier::dtype::DType;
use verifier::inputs::{generate_inputs, HostTensor, Variant};
use verifier::runtime::strict::{Oracle, ReferenceCache, SpecOracleFor, SPEC_ORACLE_SKIPPED};
use verifier::task::{Role, Task};
use verifier::timing::Protocol;
use verifier::verdict::Case;

use common::python::have_python;

fn stand_in() -> RunnerConfig {
    common::python::stand_in(&[])
}

const TASK: &str = r#"
id = "copy"
title = "y = x"
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
name = "x"
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
bytes = "8*N"
flops = "N"
peak = "fp32"
"#;

const COPY_SPEC: &str = "import torch\n\nclass Model(torch.nn.Module):\n    def __init__(self, N):\n        self.N = N\n\n    def forward(self, x):\n        assert list(x.shape) == [self.N]\n        return x.clone()\n";

fn task_dir(spec: &str) -> (tempfile::TempDir, Task) {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("task.toml");
    std::fs::write(&path, TASK).unwrap();
    std::fs::write(d.path().join("spec.py"), spec).unwrap();
    let task = Task::parse(&path, TASK).unwrap();
    (d, task)
}

fn f32s(n: usize, seed: f32) -> HostTensor {
    HostTensor {
        dtype: DType::F32,
        dims: vec![n as u64],
        bytes: (0..n)
            .flat_map(|i| (i as f32 * seed).to_le_bytes())
            .collect(),
    }
}

fn job<'a>(spec: &Path, n: i64, sets: &'a [Vec<HostTensor>]) -> TorchJob<'a> {
    TorchJob {
        spec: spec.to_path_buf(),
        params: vec![("N".into(), n)],
        inputs: vec![InputDecl {
            name: "x".into(),
            dtype: DType::F32,
            role: Role::Activation,
        }],
        sets,
        outputs: vec![OutputDecl {
            name: "y".into(),
            dtype: DType::F32,
            dims: vec![n as u64],
        }],
        modes: vec![Mode::Oracle],
        oracle_sets: None,
        protocol: Protocol::default(),
        l2_bytes: None,
        compile_mode: None,
        device: TorchDevice::Cuda(0),
    }
}

fn oracle_out(r: Result<bench_suite::torch::TorchReport, TorchError>) -> Vec<HostTensor> {
    match r.map(|r| r.oracle) {
        Ok(Some(bench_suite::torch::ModeResult::Ok(mut o))) => o.sets.remove(0).1,
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_session_answers_many_jobs() {
    if !have_python() {
        return;
    }
    let (d, _) = task_dir(COPY_SPEC);
    let spec = d.path().join("spec.py");
    let mut s = Session::new(stand_in()).unwrap();
    for (k, n) in [8usize, 3, 8, 100].into_iter().enumerate() {
        let sets = vec![vec![f32s(n, k as f32 + 0.5)]];
        let out = oracle_out(s.run(&job(&spec, n as i64, &sets)));
        assert_eq!(out, sets[0], "job {k}");
    }
    assert_eq!(s.started, 1, "one runner process for every job");
    // A failing spec is that job's error; the session goes on.
    let (bad, _) = task_dir("raise ValueError('broken spec')\n");
    let sets = vec![vec![f32s(8, 1.0)]];
    match s.run(&job(&bad.path().join("spec.py"), 8, &sets)) {
        Err(TorchError::Spec { message, .. }) => assert!(message.contains("broken spec")),
        other => panic!("{other:?}"),
    }
    let out = oracle_out(s.run(&job(&spec, 8, &sets)));
    assert_eq!(out, sets[0]);
    assert_eq!(s.started, 1);
}

#[test]
fn a_request_that_breaks_the_cuda_context_is_answered_and_the_next_gets_a_fresh_runner() {
    if !have_python() {
        return;
    }
    let (d, _) = task_dir(COPY_SPEC);
    let spec = d.path().join("spec.py");
    // The stand-in's sticky error: torch.cuda.synchronize raises from now on in this process.
    let (poison, _) = task_dir(&COPY_SPEC.replace(
        "        return x.clone()",
        "        torch._cuda_state['broken'] = 'CUDA error: device-side assert triggered'\n        return x.clone()",
    ));
    let mut s = Session::new(stand_in()).unwrap();
    let sets = vec![vec![f32s(8, 1.5)]];
    assert_eq!(oracle_out(s.run(&job(&spec, 8, &sets))), sets[0]);
    // The breaking request's own answer stands.
    assert_eq!(
        oracle_out(s.run(&job(&poison.path().join("spec.py"), 8, &sets))),
        sets[0]
    );
    assert_eq!(s.started, 1);
    // The next request is not lost to the exited runner: a new process answers it.
    assert_eq!(oracle_out(s.run(&job(&spec, 8, &sets))), sets[0]);
    assert_eq!(s.started, 2, "a fresh runner after session_ends");
    assert_eq!(oracle_out(s.run(&job(&spec, 8, &sets))), sets[0]);
    assert_eq!(s.started, 2);
}

#[test]
fn the_oracle_computes_spec_outputs_on_the_candidates_inputs() {
    if !have_python() {
        return;
    }
    let (_d, task) = task_dir(COPY_SPEC);
    let mut torch = TorchOracle::new(stand_in());
    let mut cache = ReferenceCache::new(1 << 30);
    {
        let mut bound = SpecOracleFor::new(&mut torch, &task, TASK, &mut cache).unwrap();
        assert!(bound.describe().contains("spec.py through PyTorch"));
        for shape in &task.shapes {
            for seed in [0, 1, 7] {
                for v in [Variant::Base, Variant::Base] {
                    let case = Case::new(shape, seed, v);
                    let inputs = generate_inputs(&task, shape, seed, v).unwrap();
                    let out = bound.outputs(&case, shape, &inputs).unwrap();
                    assert_eq!(out[0].bytes, inputs[0].bytes, "{}", case.describe());
                    assert_eq!(out[0].dims, vec![shape.values["N"] as u64]);
                }
            }
        }
        assert!(
            bound.describe().contains("PyTorch 0.0-standin"),
            "{}",
            bound.describe()
        );
    }
    // 2 shapes x 3 seeds asked; the repeats came from the cache.
    assert_eq!(torch.cases, 6);
    assert_eq!(cache.hits, 6);
    assert_eq!(torch.processes_started(), 1);
}

#[test]
fn a_spec_whose_outputs_do_not_match_the_task_is_a_clear_error() {
    if !have_python() {
        return;
    }
    // Returns two tensors for one declared output: the runner says so, as an oracle failure.
    let (_d, task) = task_dir(&COPY_SPEC.replace("return x.clone()", "return x.clone(), x"));
    let mut torch = TorchOracle::new(stand_in());
    let mut cache = ReferenceCache::new(1 << 30);
    let mut bound = SpecOracleFor::new(&mut torch, &task, TASK, &mut cache).unwrap();
    let shape = &task.shapes[0];
    let case = Case::new(shape, 0, Variant::Base);
    let inputs = generate_inputs(&task, shape, 0, Variant::Base).unwrap();
    let e = bound.outputs(&case, shape, &inputs).err().unwrap();
    assert!(
        e.message.starts_with("spec.py failed on shape small"),
        "{e}"
    );
    assert!(e.message.contains("returned 2 value(s)"), "{e}");
    assert!(cache.is_empty());
}

#[test]
fn no_python_and_no_torch_are_skips_said_once() {
    let (_d, task) = task_dir(COPY_SPEC);
    let shape = &task.shapes[0];
    let case = Case::new(shape, 0, Variant::Base);
    let inputs = generate_inputs(&task, shape, 0, Variant::Base).unwrap();
    let mut cache = ReferenceCache::new(1 << 30);

    let mut torch = TorchOracle::new(RunnerConfig {
        python: "/nonexistent/python3".into(),
        ..RunnerConfig::default()
    });
    let mut bound = SpecOracleFor::new(&mut torch, &task, TASK, &mut cache).unwrap();
    for _ in 0..2 {
        let e = bound.outputs(&case, shape, &inputs).err().unwrap();
        assert!(
            e.message.starts_with(&format!(
                "{SPEC_ORACLE_SKIPPED} not importable: cannot run `/nonexistent/python3`"
            )),
            "{e}"
        );
    }
    drop(bound);
    assert_eq!(torch.processes_started(), 0);

    if !have_python() {
        return;
    }
    let fake = tempfile::tempdir().unwrap();
    std::fs::create_dir(fake.path().join("torch")).unwrap();
    std::fs::write(
        fake.path().join("torch/__init__.py"),
        "raise ImportError('No module named torch (stand-in)')\n",
    )
    .unwrap();
    let mut torch = TorchOracle::new(RunnerConfig {
        env: vec![("PYTHONPATH".into(), fake.path().display().to_string())],
        ..RunnerConfig::default()
    });
    let mut bound = SpecOracleFor::new(&mut torch, &task, TASK, &mut cache).unwrap();
    for _ in 0..2 {
        let e = bound.outputs(&case, shape, &inputs).err().unwrap();
        assert!(
            e.message
                .starts_with("skipped: PyTorch not importable: torch does not import"),
            "{e}"
        );
        assert!(e.message.contains("stand-in"), "{e}");
    }
    drop(bound);
    assert_eq!(torch.processes_started(), 1, "remembered, not asked again");
    assert!(cache.is_empty());

    // torch without a GPU is a skip too, in other words.
    std::fs::write(
        fake.path().join("torch/__init__.py"),
        "import types\n__version__ = '9.9-standin'\nversion = types.SimpleNamespace(cuda=None)\ncuda = types.SimpleNamespace(is_available=lambda: False)\n",
    )
    .unwrap();
    let mut torch = TorchOracle::new(RunnerConfig {
        env: vec![("PYTHONPATH".into(), fake.path().display().to_string())],
        ..RunnerConfig::default()
    });
    let mut bound = SpecOracleFor::new(&mut torch, &task, TASK, &mut cache).unwrap();
    let e = bound.outputs(&case, shape, &inputs).err().unwrap();
    assert!(
        e.message.starts_with(
            "skipped: PyTorch cannot use a GPU: torch 9.9-standin sees no CUDA device"
        ),
        "{e}"
    );
}

fn fake_runner(dir: &Path, name: &str, body: &str) -> RunnerConfig {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    RunnerConfig {
        script: RunnerScript::Path(p),
        timeout: Duration::from_secs(20),
        ..RunnerConfig::default()
    }
}

#[test]
fn misbehaving_sessions_are_typed_errors_and_restart() {
    if !have_python() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let spec = d.path().join("spec.py");
    let sets = vec![vec![f32s(4, 1.0)]];
    let j = job(&spec, 4, &sets);

    let mut s = Session::new(fake_runner(
        d.path(),
        "garbage.py",
        "import sys\nfor line in sys.stdin:\n    print('not json', flush=True)\n",
    ))
    .unwrap();
    match s.run(&j) {
        Err(TorchError::Malformed { detail, .. }) => {
            assert!(detail.contains("not JSON"), "{detail}")
        }
        other => panic!("{other:?}"),
    }

    let mut s = Session::new(fake_runner(
        d.path(),
        "crash.py",
        "import sys\nsys.stdin.readline()\nsys.stderr.write('runner fell over\\n')\nsys.exit(7)\n",
    ))
    .unwrap();
    for round in 1..=2 {
        match s.run(&j) {
            Err(TorchError::Crashed { how, stderr_tail }) => {
                assert_eq!(how, "exited with code 7");
                assert!(stderr_tail.contains("runner fell over"), "{stderr_tail}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.started, round, "a dead runner is replaced");
    }

    let mut s = Session::new(fake_runner(
        d.path(),
        "empty.py",
        "import json, sys\nfor line in sys.stdin:\n    print(json.dumps({'version': 1, 'status': 'ok', 'exit': 0}), flush=True)\n",
    ))
    .unwrap();
    match s.run(&j) {
        Err(TorchError::Malformed { detail, .. }) => {
            assert!(detail.contains("mode `oracle` was requested"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    // The oracle says which case it was on.
    let (_t, task) = task_dir(COPY_SPEC);
    let mut torch = TorchOracle::new(fake_runner(
        d.path(),
        "empty2.py",
        "import json, sys\nfor line in sys.stdin:\n    print(json.dumps({'version': 1, 'status': 'ok', 'exit': 0}), flush=True)\n",
    ));
    let mut cache = ReferenceCache::new(1 << 30);
    let mut bound = SpecOracleFor::new(&mut torch, &task, TASK, &mut cache).unwrap();
    let shape = &task.shapes[1];
    let case = Case::new(shape, 3, Variant::Base);
    let inputs = generate_inputs(&task, shape, 3, Variant::Base).unwrap();
    let e = bound.outputs(&case, shape, &inputs).err().unwrap();
    assert!(
        e.message
            .starts_with("the PyTorch oracle on shape odd (N=37), seed 3"),
        "{e}"
    );

    // A hang: killed at the limit (its children too), and the next job gets a new process.
    let mut cfg = fake_runner(
        d.path(),
        "hang.py",
        "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\nfor line in sys.stdin:\n    time.sleep(60)\n",
    );
    cfg.timeout = Duration::from_secs(2);
    let mut s = Session::new(cfg).unwrap();
    let t = Instant::now();
    match s.run(&j) {
        Err(TorchError::Timeout { limit, .. }) => assert_eq!(limit, Duration::from_secs(2)),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(matches!(s.run(&j), Err(TorchError::Timeout { .. })));
    assert_eq!(s.started, 2);
}
