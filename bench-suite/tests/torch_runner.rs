//! The PyTorch runner seen from Rust: its Python unit tests, every way a runner can misbehave
//! (fake runner scripts), a full request/reply/outputs round trip through a fake that uses the
//! real Python safetensors code, and the embedded runner itself (skips visibly without torch
//! here; on a machine with torch and a GPU it runs a real task; `KSMITH_REQUIRE_TORCH=1` makes
//! a missing torch a failure).

mod common;

use bench_suite::torch::{
    self, InputDecl, Mode, ModeResult, OutputDecl, RunnerConfig, RunnerScript, TorchDevice,
    TorchError, TorchJob,
};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use verifier::dtype::DType;
use verifier::inputs::HostTensor;
use verifier::task::Role;
use verifier::timing::{Protocol, StopReason};

use common::python::{have_python, python_dir};

#[test]
fn python_unit_tests_pass() {
    if !have_python() {
        return;
    }
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests", "-t", "."])
        .current_dir(python_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python unit tests failed:\n{err}");
    assert!(err.contains("\nOK"), "{err}");
    eprintln!(
        "{}",
        err.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    );
}

fn host(dtype: DType, dims: &[u64], seed: u8) -> HostTensor {
    let n = dims.iter().product::<u64>() * dtype.size_bytes() as u64;
    HostTensor {
        dtype,
        dims: dims.to_vec(),
        bytes: (0..n)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
            .collect(),
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    sets: Vec<Vec<HostTensor>>,
}

impl Fixture {
    fn new() -> Fixture {
        let w = host(DType::U64, &[3], 7);
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            sets: vec![
                vec![host(DType::Bf16, &[2, 4], 1), w.clone()],
                vec![host(DType::Bf16, &[2, 4], 2), w],
            ],
        }
    }

    fn job(&self, modes: Vec<Mode>) -> TorchJob<'_> {
        TorchJob {
            spec: self.dir.path().join("spec.py"),
            params: vec![("M".into(), 2), ("N".into(), 4)],
            inputs: vec![
                InputDecl {
                    name: "x".into(),
                    dtype: DType::Bf16,
                    role: Role::Activation,
                },
                InputDecl {
                    name: "w".into(),
                    dtype: DType::U64,
                    role: Role::Weight,
                },
            ],
            sets: &self.sets,
            outputs: vec![OutputDecl {
                name: "y".into(),
                dtype: DType::Bf16,
                dims: vec![2, 4],
            }],
            modes,
            oracle_sets: None,
            protocol: Protocol::default(),
            l2_bytes: Some(50 << 20),
            compile_mode: None,
            device: TorchDevice::Cuda(0),
        }
    }

    fn fake(&self, body: &str, timeout: Duration) -> RunnerConfig {
        let path = self.dir.path().join("fake_runner.py");
        let prelude = format!(
            "import json, os, sys, time, signal, subprocess\nsys.path.insert(0, {:?})\nreq = json.load(open(sys.argv[1]))\n",
            python_dir()
        );
        std::fs::write(&path, prelude + body).unwrap();
        RunnerConfig {
            python: "python3".into(),
            script: RunnerScript::Path(path),
            timeout,
            env: Vec::new(),
        }
    }

    fn run_fake(&self, body: &str, modes: Vec<Mode>) -> Result<torch::TorchReport, TorchError> {
        torch::run(&self.fake(body, Duration::from_secs(60)), &self.job(modes))
    }
}

fn expect_err(r: Result<torch::TorchReport, TorchError>, what: &str) -> TorchError {
    match r {
        Ok(rep) => panic!("{what}: expected an error, got {rep:?}"),
        Err(e) => e,
    }
}

/// A fake that does what the real runner does with the files: reads the inputs with the real
/// Python reader, writes `y` = the bytes of `x` for every oracle set, and reports timings.
const ROUND_TRIP: &str = r#"
import ksmith_tensors as kt
assert req["version"] == 1 and req["params"] == {"M": 2, "N": 4}, req
assert req["sets"] == [{"x": "0/x", "w": "0/w"}, {"x": "1/x", "w": "0/w"}], req["sets"]
assert [i["role"] for i in req["inputs"]] == ["activation", "weight"]
assert req["protocol"]["warmup_ms"] == 25.0 and req["protocol"]["max_samples"] == 100
assert req["l2_bytes"] == 50 << 20
raw, _ = kt.read_file(req["inputs_file"])
assert sorted(raw) == ["0/w", "0/x", "1/x"], sorted(raw)
out = {f"{k}/y": kt.RawTensor("bf16", [2, 4], bytes(raw[f"{k}/x"].data)) for k in req["oracle_sets"]}
kt.write_file(req["outputs_file"], out)
print("noise before the reply")
print(json.dumps({"version": 1, "status": "ok", "torch_version": "2.11.0", "flush_bytes": 100 << 20,
  "extra_field": [1, 2],
  "oracle": {"ok": True},
  "eager": {"ok": True, "samples_ms": [1.0, 1.2, 0.9, 1.1], "warmup_calls": 12,
            "warmup_elapsed_ms": 30.5, "stop_reason": "converged"},
  "compile": {"ok": False, "error": "BackendCompilerFailed: inductor", "traceback": "tb"}}))
"#;

#[test]
fn round_trip_through_a_fake_runner() {
    if !have_python() {
        return;
    }
    let f = Fixture::new();
    let rep = f
        .run_fake(ROUND_TRIP, vec![Mode::Oracle, Mode::Eager, Mode::Compile])
        .unwrap();
    assert_eq!(rep.torch_version.as_deref(), Some("2.11.0"));
    assert_eq!(rep.flush_bytes, Some(100 << 20));
    let Some(ModeResult::Ok(oracle)) = &rep.oracle else {
        panic!("{:?}", rep.oracle)
    };
    assert_eq!(oracle.sets.len(), 2);
    for (k, outs) in &oracle.sets {
        assert_eq!(outs[0].bytes, f.sets[*k][0].bytes, "set {k}");
        assert_eq!(outs[0].dims, vec![2, 4]);
    }
    let Some(ModeResult::Ok(eager)) = &rep.eager else {
        panic!("{:?}", rep.eager)
    };
    assert_eq!(eager.summary.n, 4);
    assert!((eager.summary.median_ms - 1.05).abs() < 1e-12);
    assert_eq!(eager.stop_reason, Some(StopReason::Converged));
    assert_eq!(eager.warmup_calls, Some(12));
    assert!(matches!(
        &rep.compile,
        Some(ModeResult::Failed { error, .. }) if error.contains("BackendCompilerFailed")
    ));
}

#[test]
fn misbehaving_runners_are_typed_errors() {
    if !have_python() {
        return;
    }
    let f = Fixture::new();
    let eager = || vec![Mode::Eager];
    type Check = Box<dyn Fn(&TorchError) -> bool>;
    let cases: Vec<(&str, &str, Check)> = vec![
        (
            "not JSON",
            "print('hello, this is not json')",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("not JSON"))),
        ),
        (
            "empty stdout",
            "pass",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("no reply"))),
        ),
        (
            "not an object",
            "print('[1, 2]')",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("not a JSON object"))),
        ),
        (
            "no status",
            "print(json.dumps({'version': 1}))",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("`status`"))),
        ),
        (
            "unknown status",
            "print(json.dumps({'status': 'great'}))",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("unknown status `great`"))),
        ),
        (
            "requested mode missing",
            "print(json.dumps({'status': 'ok'}))",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("mode `eager` was requested"))),
        ),
        (
            "ok missing",
            "print(json.dumps({'status': 'ok', 'eager': {'samples_ms': [1.0]}}))",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("`eager.ok`"))),
        ),
        (
            "bad sample",
            "print(json.dumps({'status': 'ok', 'eager': {'ok': True, 'samples_ms': [1.0, 'fast', 2.0]}}))",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("`eager.samples_ms[1]`"))),
        ),
        (
            "negative sample",
            "print(json.dumps({'status': 'ok', 'eager': {'ok': True, 'samples_ms': [-1.0]}}))",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("`eager.samples_ms[0]`"))),
        ),
        (
            "no samples",
            "print(json.dumps({'status': 'ok', 'eager': {'ok': True, 'samples_ms': []}}))",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("empty"))),
        ),
        (
            "bad stop reason",
            "print(json.dumps({'status': 'ok', 'eager': {'ok': True, 'samples_ms': [1.0], 'stop_reason': 'bored'}}))",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("stop_reason"))),
        ),
        (
            "ok but nonzero exit",
            "print(json.dumps({'status': 'ok'})); sys.exit(5)",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("code 5"))),
        ),
        (
            "crash",
            "sys.stderr.write('Traceback (most recent call last):\\nRuntimeError: boom\\n'); sys.exit(1)",
            Box::new(|e| matches!(e, TorchError::Crashed { how, stderr_tail } if how.contains("code 1") && stderr_tail.contains("boom"))),
        ),
        (
            "segfault",
            "print('{\"status\": \"ok\"', end=''); sys.stdout.flush(); os.kill(os.getpid(), signal.SIGSEGV)",
            Box::new(|e| matches!(e, TorchError::Crashed { how, .. } if how.contains("signal 11"))),
        ),
        (
            "unavailable",
            "print(json.dumps({'status': 'unavailable', 'reason': 'torch does not import'})); sys.exit(3)",
            Box::new(|e| e.skip_reason().as_deref() == Some("torch does not import")
                && e.to_string() == "PyTorch baselines skipped: torch does not import"),
        ),
        (
            "unavailable without reason",
            "print(json.dumps({'status': 'unavailable'})); sys.exit(3)",
            Box::new(|e| matches!(e, TorchError::Malformed { detail, .. } if detail.contains("`reason`"))),
        ),
        (
            "spec error",
            "print(json.dumps({'status': 'spec_error', 'message': 'NameError: x', 'traceback': 'line 3'})); sys.exit(4)",
            Box::new(|e| matches!(e, TorchError::Spec { message, traceback } if message == "NameError: x" && traceback == "line 3")),
        ),
        (
            "bad request",
            "print(json.dumps({'status': 'bad_request', 'message': '`request.sets` is empty'})); sys.exit(2)",
            Box::new(|e| matches!(e, TorchError::BadRequest { message } if message.contains("request.sets"))),
        ),
        (
            "oracle ok but no outputs file",
            "print(json.dumps({'status': 'ok', 'oracle': {'ok': True}}))",
            Box::new(|e| matches!(e, TorchError::Tensors(_)) && e.to_string().contains("outputs.safetensors")),
        ),
    ];
    for (name, body, check) in cases {
        let modes = if name.starts_with("oracle") {
            vec![Mode::Oracle]
        } else {
            eager()
        };
        let e = expect_err(f.run_fake(body, modes), name);
        assert!(check(&e), "{name}: unexpected error: {e:?}");
        assert_eq!(
            e.skip_reason().is_some(),
            name == "unavailable",
            "{name}: skip_reason {:?}",
            e.skip_reason()
        );
    }
}

#[test]
fn a_hanging_runner_and_its_children_are_killed() {
    if !have_python() {
        return;
    }
    let f = Fixture::new();
    // The child inherits stdout: if only the runner were killed, the pipe would stay open.
    let body = "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\nsys.stderr.write('compiling...\\n'); sys.stderr.flush()\ntime.sleep(120)\n";
    let cfg = f.fake(body, Duration::from_secs(2));
    let t0 = Instant::now();
    let e = expect_err(torch::run(&cfg, &f.job(vec![Mode::Eager])), "hang");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    match e {
        TorchError::Timeout { limit, stderr_tail } => {
            assert_eq!(limit, Duration::from_secs(2));
            assert!(stderr_tail.contains("compiling..."), "{stderr_tail}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn missing_python_is_a_skip() {
    let f = Fixture::new();
    let cfg = RunnerConfig {
        python: "/nonexistent/python3".into(),
        script: RunnerScript::Embedded,
        timeout: Duration::from_secs(5),
        env: Vec::new(),
    };
    let e = expect_err(torch::run(&cfg, &f.job(vec![Mode::Eager])), "no python");
    assert!(matches!(e, TorchError::NoPython { .. }), "{e:?}");
    let reason = e.skip_reason().unwrap();
    assert!(reason.contains("/nonexistent/python3"), "{reason}");
    assert!(e.to_string().starts_with("PyTorch baselines skipped: "));
}

#[test]
fn inconsistent_jobs_fail_before_running() {
    let f = Fixture::new();
    let cfg = RunnerConfig::default();
    let mut job = f.job(vec![Mode::Eager]);
    job.oracle_sets = Some(vec![5]);
    let e = expect_err(torch::run(&cfg, &job), "oracle set");
    assert!(e.to_string().contains("oracle set 5 does not exist"), "{e}");
    let mut job = f.job(vec![]);
    job.modes.clear();
    assert!(matches!(torch::run(&cfg, &job), Err(TorchError::Job(_))));
    let bad = vec![vec![
        host(DType::F32, &[2, 4], 1),
        host(DType::U64, &[3], 1),
    ]];
    let mut job = f.job(vec![Mode::Eager]);
    job.sets = &bad;
    let e = expect_err(torch::run(&cfg, &job), "dtype");
    assert!(e.to_string().contains("`x` is f32, declared bf16"), "{e}");
}

/// The embedded runner on a real task. Without torch (this machine) it must say so in a skip
/// reason; with torch and a GPU it computes the oracle and both baselines.
#[test]
fn embedded_runner_on_a_real_task() {
    if !have_python() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks/normalization/rmsnorm_residual");
    let td = bench_suite::suite::load_task_dir(&dir).expect("rmsnorm_residual loads");
    let task = &td.task;
    // A small legal shape: the point is the protocol, not the size (and CI writes the inputs).
    let mut shape = task.shapes[0].clone();
    shape.name = "tiny".into();
    shape.values.insert("M".into(), 8);
    shape.values.insert("N".into(), 256);
    task.check_shape(&shape).expect("tiny shape is legal");
    let sets: Vec<Vec<HostTensor>> = (1..=2)
        .map(|seed| {
            task.inputs
                .iter()
                .map(|d| {
                    verifier::inputs::generate(
                        task,
                        d,
                        &shape,
                        seed,
                        verifier::inputs::Variant::Base,
                    )
                    .expect("inputs generate")
                })
                .collect()
        })
        .collect();
    let protocol = Protocol {
        time_cap: Duration::from_secs(3),
        ..Protocol::default()
    };
    let job = TorchJob::for_task(
        task,
        &shape,
        &sets,
        vec![Mode::Oracle, Mode::Eager, Mode::Compile],
        protocol,
    )
    .unwrap();
    match torch::run(&RunnerConfig::default(), &job) {
        Err(e) if e.skip_reason().is_some() => {
            assert!(
                !std::env::var("KSMITH_REQUIRE_TORCH").is_ok_and(|v| v == "1"),
                "torch is required here: {e}"
            );
            let reason = e.skip_reason().unwrap();
            assert!(reason.contains("torch"), "{reason}");
            eprintln!("SKIPPED (as the harness would print): {e}");
        }
        Err(e) => panic!("runner failed: {e}"),
        Ok(rep) => {
            eprintln!("{rep:#?}");
            let Some(ModeResult::Ok(oracle)) = &rep.oracle else {
                panic!("oracle: {:?}", rep.oracle)
            };
            assert_eq!(oracle.sets.len(), 2);
            assert_ne!(oracle.sets[0].1[0].bytes, oracle.sets[1].1[0].bytes);
            for b in [&rep.eager, &rep.compile] {
                let Some(ModeResult::Ok(b)) = b else {
                    panic!("baseline: {b:?}")
                };
                assert!(b.summary.median_ms > 0.0);
            }
        }
    }
}

/// The embedded runner end to end with the CPU stand-in for torch (python/tests/fake_torch):
/// the request Rust writes is one the runner accepts, the inputs Rust writes are the ones the
/// spec sees, and the outputs the runner writes come back as the same bytes.
#[test]
fn embedded_runner_with_a_stand_in_torch() {
    if !have_python() {
        return;
    }
    let f = Fixture::new();
    std::fs::write(
        f.dir.path().join("spec.py"),
        "import torch\n\nclass Model(torch.nn.Module):\n    def __init__(self, M, N):\n        assert (M, N) == (2, 4)\n\n    def forward(self, x, w):\n        return x.clone()\n",
    )
    .unwrap();
    let cfg = common::python::stand_in(&[]);
    let mut job = f.job(vec![Mode::Oracle, Mode::Eager, Mode::Compile]);
    job.protocol = Protocol {
        time_cap: Duration::from_millis(500),
        ..Protocol::default()
    };
    job.oracle_sets = Some(vec![1]);
    // The stand-in fills its flush buffer in Python: keep it small so warm-up is not cut short
    // by the time cap.
    job.l2_bytes = Some(64 << 10);
    let rep = torch::run(&cfg, &job).unwrap();
    assert_eq!(rep.torch_version.as_deref(), Some("0.0-standin"));
    assert_eq!(rep.device_name.as_deref(), Some("Stand-in GPU"));
    assert_eq!(
        (rep.l2_bytes, rep.flush_bytes),
        (Some(64 << 10), Some(128 << 10))
    );
    let Some(ModeResult::Ok(oracle)) = &rep.oracle else {
        panic!("{:?}", rep.oracle)
    };
    assert_eq!(oracle.sets.len(), 1);
    assert_eq!(oracle.sets[0].0, 1);
    assert_eq!(
        oracle.sets[0].1[0], f.sets[1][0],
        "output = input x of set 1"
    );
    for b in [&rep.eager, &rep.compile] {
        let Some(ModeResult::Ok(b)) = b else {
            panic!("{b:?}")
        };
        assert!(b.summary.n >= 1 && b.samples_ms.len() == b.summary.n);
        assert!(b.stop_reason.is_some());
        assert!(b.warmup_calls.is_some_and(|w| w >= 10), "{b:?}");
    }
}
