//! GPU test: every task's reference kernel passes its own strict check (the reference as both
//! oracle and candidate: poison, guard zones, input mutation, two-run agreement, held-out
//! shapes, launch limits on the real device), each in a `ksmith worker` with a time limit.
//! By default the first public shape and one held-out shape per task; KSMITH_GPU_FULL=1 checks
//! every public shape; KSMITH_GPU_TASKS=id,id,... checks only those tasks (to split the run
//! across several device calls). Without a CUDA driver it prints "skipped: no GPU" and passes, unless
//! KSMITH_REQUIRE_GPU=1. KSMITH_BIN / KSMITH_ROOT as in gpu_broken.rs.

mod support;
use bench_suite::pool::{Limits, Pool, PoolConfig, Reply, WorkerCommand};
use bench_suite::suite::{Entry, Suite};
use std::time::{Duration, Instant};
use support::gpu::{flag, gpu_or_skip, ksmith, only_tasks, root};
use verifier::protocol::{EvalOptions, EvaluateRequest, RequestBody, ResponseBody};

#[test]
fn every_reference_kernel_passes_its_own_strict_check() {
    if !gpu_or_skip() {
        return;
    }
    let full = flag("KSMITH_GPU_FULL");
    let only = only_tasks();
    let suite = Suite::discover(&root().join("tasks")).unwrap();
    let mut names = Vec::new();
    let mut invalid: Vec<String> = Vec::new();
    let mut jobs = Vec::new();
    for entry in &suite.entries {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|id| id == entry.id()))
        {
            continue;
        }
        let Entry::Ok(td) = entry else {
            invalid.push(format!("{}: the task does not load", entry.id()));
            continue;
        };
        let read = |n: &str| std::fs::read_to_string(td.dir.join(n)).unwrap();
        let shapes = if full {
            Vec::new()
        } else {
            vec![td.task.shapes[0].name.clone()]
        };
        names.push(td.task.id.clone());
        jobs.push((
            RequestBody::Evaluate(EvaluateRequest {
                task_dir: td.dir.clone(),
                source: read("reference.cu"),
                plan: read("reference.toml"),
                options: EvalOptions {
                    seeds: vec![0],
                    fresh_seed: Some(20261124),
                    shapes,
                    heldout_shapes: 1,
                    heldout_seed: 11,
                    ..EvalOptions::default()
                },
            }),
            None,
        ));
    }
    let pool = Pool::new(PoolConfig {
        command: WorkerCommand {
            program: ksmith(),
            args: vec!["worker".into()],
            env: Vec::new(),
        },
        workers: vec![Vec::new()],
        request_timeout: Duration::from_secs(600),
        limits: Limits::default(),
    });
    let start = Instant::now();
    let replies = pool.run_batch(jobs);
    pool.shutdown(Duration::from_secs(5));
    let mut failures = invalid;
    for (name, r) in names.iter().zip(&replies) {
        let line = match r {
            Reply::Answered(ResponseBody::Evaluated(ev)) => {
                if !ev.verdict.is_correct() {
                    failures.push(format!("{name}: {}", ev.verdict.feedback()));
                }
                format!(
                    "{} in {:.1} s",
                    ev.verdict.kind(),
                    ev.elapsed_ms as f64 / 1e3
                )
            }
            other => {
                let m = match other.verdict() {
                    Ok(v) => format!("{}: {}", v.kind(), v.feedback()),
                    Err(h) => format!("harness error: {h}"),
                };
                failures.push(format!("{name}: {m}"));
                m
            }
        };
        println!("{name:<40} {line}");
    }
    println!(
        "{} reference kernels in {:.0} s",
        names.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
