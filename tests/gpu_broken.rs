//! GPU test: every kernel of the broken-kernel corpus (verifier/tests/broken/), each against
//! its task (swiglu unless its expect.toml names another), runs through `ksmith worker` processes (bench_suite's pool, with per-entry wall-clock limits) and must get
//! its expected verdict; the batch must go on after hangs and faults (a correct control kernel
//! runs again at the end). Without a CUDA driver it prints "skipped: no GPU" and passes, unless
//! KSMITH_REQUIRE_GPU=1 (scripts/gpu-check.sh sets it).
//!
//! Paths can be overridden for prebuilt binaries run elsewhere: KSMITH_BIN (the ksmith
//! executable), KSMITH_ROOT (the repository: tasks/ and verifier/tests/broken/).

mod support;
use bench_suite::pool::{Limits, Pool, PoolConfig, Reply, WorkerCommand};
use std::time::{Duration, Instant};
use support::gpu::{gpu_or_skip, ksmith, root};
use verifier::protocol::{EvaluateRequest, RequestBody, ResponseBody};
use verifier::runtime::corpus;

#[test]
fn broken_kernels_get_their_verdicts_and_the_batch_goes_on() {
    if !gpu_or_skip() {
        return;
    }
    let root = root();
    let entries = corpus::load(&root.join("verifier/tests/broken")).unwrap();
    let mut order: Vec<&corpus::Entry> = entries.iter().collect();
    // The control again at the end: after a timeout and a lost context, a fresh worker must
    // still pass a correct kernel.
    if let Some(c) = entries.iter().find(|e| e.name == "control_correct") {
        order.push(c);
    }
    let tasks_root = root.join("tasks");
    let jobs = order
        .iter()
        .map(|e| {
            (
                RequestBody::Evaluate(EvaluateRequest {
                    task_dir: e.task_dir(&tasks_root).unwrap_or_else(|m| panic!("{m}")),
                    source: e.source.clone(),
                    plan: e.plan.clone(),
                    options: e.options(),
                }),
                Some(Duration::from_secs(e.timeout_s())),
            )
        })
        .collect();
    let pool = Pool::new(PoolConfig {
        command: WorkerCommand {
            program: ksmith(),
            args: vec!["worker".into()],
            // The worker's own watchdog answers a hang with the case before the pool kills it.
            env: vec![("KSMITH_KERNEL_TIMEOUT".into(), "10".into())],
        },
        workers: vec![Vec::new()],
        request_timeout: Duration::from_secs(corpus::DEFAULT_TIMEOUT_S),
        limits: Limits::default(),
    });
    let start = Instant::now();
    let replies = pool.run_batch(jobs);
    let starts = pool.starts();
    pool.shutdown(Duration::from_secs(5));
    let mut failures = Vec::new();
    println!("{:<22} {:<34} {:<18} result", "kernel", "expected", "got");
    for (e, r) in order.iter().zip(&replies) {
        let (got, outcome) = match r.verdict() {
            Ok(v) => (v.kind().to_string(), e.check(v)),
            Err(h) => ("harness error".to_string(), Err(h)),
        };
        let elapsed = match r {
            Reply::Answered(ResponseBody::Evaluated(ev)) => {
                format!("{:.1} s", ev.elapsed_ms as f64 / 1e3)
            }
            _ => "-".into(),
        };
        println!(
            "{:<22} {:<34} {:<18} {} ({elapsed})",
            e.name,
            e.expect
                .verdict
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join("|"),
            got,
            match &outcome {
                Ok(()) => "ok".to_string(),
                Err(m) => format!("FAIL: {m}"),
            }
        );
        if let Err(m) = outcome {
            failures.push(format!("{}: {m}", e.name));
        }
    }
    println!(
        "{} kernels in {:.0} s; worker processes started: {:?}",
        order.len(),
        start.elapsed().as_secs_f64(),
        starts
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
