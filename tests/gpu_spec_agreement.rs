//! GPU test: every task's reference kernel agrees with its spec.py run by PyTorch — the strict
//! check of the reference with the PyTorch oracle (`oracle = "pytorch"`): same generated inputs
//! (written as safetensors for the torch process the worker keeps), the task's own tolerance,
//! poisoned outputs, guard zones, input-mutation checks. One request per (task, public shape),
//! seed 0, declared distributions only, no held-out shapes: the reference's robustness is
//! gpu_references.rs's business; this test is about the reference and the spec meaning the same.
//!
//! By default the first public shape of each task; KSMITH_GPU_FULL=1 every public shape;
//! KSMITH_GPU_TASKS=id,id,... only those tasks (to split the run across device calls);
//! KSMITH_SPEC_STRESS=1 adds the heavy-tailed / rescaled input variants. Prints one row per
//! (task, shape, output): the largest error against spec.py, the tolerance, the verdict; with
//! KSMITH_SPEC_AGREEMENT_OUT=FILE also writes them as JSON lines there.
//!
//! Without a CUDA driver it prints "skipped: no GPU" and passes; without a usable PyTorch it
//! prints "skipped: PyTorch ..." and passes; KSMITH_REQUIRE_GPU=1 (or KSMITH_REQUIRE_TORCH=1)
//! makes either a failure. KSMITH_BIN / KSMITH_ROOT as in gpu_references.rs.

mod support;
use bench_suite::pool::{Limits, Pool, PoolConfig, Reply, WorkerCommand};
use bench_suite::suite::{Entry, Suite};
use std::io::Write;
use std::time::{Duration, Instant};
use support::gpu::{flag, gpu_or_skip, ksmith, only_tasks, root};
use verifier::compare::Metric;
use verifier::protocol::{
    EvalOptions, EvaluateRequest, Oracle, OutputError, RequestBody, ResponseBody,
};
use verifier::runtime::strict::SPEC_ORACLE_SKIPPED;

fn tolerance(m: &Metric) -> String {
    match m {
        Metric::NormalizedMax { tol } => format!("norm<={tol:.0e}"),
        Metric::AllClose {
            atol,
            rtol,
            max_bad_fraction,
        } => {
            let mut s = format!("atol {atol:.0e} rtol {rtol:.0e}");
            if *max_bad_fraction > 0.0 {
                s.push_str(&format!(" bad<={max_bad_fraction:.0e}"));
            }
            s
        }
        Metric::Exact => "exact".into(),
    }
}

fn error(e: &OutputError) -> String {
    match e.metric {
        Metric::NormalizedMax { .. } => format!(
            "norm {:.2e} ({:.0}% of tol)",
            e.normalized_error,
            e.fraction_of_tolerance().unwrap_or(f64::NAN) * 100.0
        ),
        Metric::AllClose { .. } => format!(
            "abs {:.2e}, {}/{} out",
            e.max_abs_error, e.mismatches, e.elements
        ),
        Metric::Exact => format!("{} differ", e.mismatches),
    }
}

struct Job {
    task: String,
    shape: String,
    body: RequestBody,
}

#[test]
fn every_reference_agrees_with_its_spec_through_pytorch() {
    if !gpu_or_skip() {
        return;
    }
    let full = flag("KSMITH_GPU_FULL");
    let stress = flag("KSMITH_SPEC_STRESS");
    let only = only_tasks();
    let suite = Suite::discover(&root().join("tasks")).unwrap();
    let mut failures: Vec<String> = Vec::new();
    let mut jobs = Vec::new();
    for entry in &suite.entries {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|id| id == entry.id()))
        {
            continue;
        }
        let Entry::Ok(td) = entry else {
            failures.push(format!("{}: the task does not load", entry.id()));
            continue;
        };
        let read = |n: &str| std::fs::read_to_string(td.dir.join(n)).unwrap();
        let shapes: Vec<String> = td
            .task
            .shapes
            .iter()
            .take(if full { usize::MAX } else { 1 })
            .map(|s| s.name.clone())
            .collect();
        for shape in shapes {
            jobs.push(Job {
                task: td.task.id.clone(),
                shape: shape.clone(),
                body: RequestBody::Evaluate(EvaluateRequest {
                    task_dir: td.dir.clone(),
                    source: read("reference.cu"),
                    plan: read("reference.toml"),
                    options: EvalOptions {
                        seeds: vec![0],
                        fresh_seed: None,
                        shapes: vec![shape],
                        heldout_shapes: 0,
                        stress,
                        determinism: false,
                        oracle: Oracle::PyTorch,
                        ..EvalOptions::default()
                    },
                }),
            });
        }
    }
    let pool = Pool::new(PoolConfig {
        command: WorkerCommand {
            program: ksmith(),
            args: vec!["worker".into()],
            env: Vec::new(),
        },
        workers: vec![Vec::new()],
        request_timeout: Duration::from_secs(300),
        limits: Limits::default(),
    });
    let start = Instant::now();
    // The first request alone: without PyTorch there is no point in asking 60 more times.
    let mut rest = jobs.split_off(jobs.len().min(1));
    let first: Vec<_> = jobs.iter().map(|j| (j.body.clone(), None)).collect();
    let mut replies = pool.run_batch(first);
    if let Some(Reply::Answered(ResponseBody::HarnessError { message })) = replies.first() {
        if message.starts_with(SPEC_ORACLE_SKIPPED) {
            pool.shutdown(Duration::from_secs(5));
            if flag("KSMITH_REQUIRE_GPU") || flag("KSMITH_REQUIRE_TORCH") {
                panic!("PyTorch is required here: {message}");
            }
            eprintln!("{message}");
            return;
        }
    }
    replies.extend(pool.run_batch(rest.iter().map(|j| (j.body.clone(), None)).collect()));
    pool.shutdown(Duration::from_secs(5));
    jobs.append(&mut rest);

    let mut out_file = std::env::var_os("KSMITH_SPEC_AGREEMENT_OUT").map(|p| {
        std::fs::File::create(&p)
            .unwrap_or_else(|e| panic!("KSMITH_SPEC_AGREEMENT_OUT={}: {e}", p.to_string_lossy()))
    });
    println!(
        "{:<38} {:<12} {:<10} {:<28} {:<24} {:<14} {:>6}",
        "task", "shape", "output", "max error vs spec.py", "tolerance", "verdict", "secs"
    );
    for (job, r) in jobs.iter().zip(&replies) {
        let (kind, errors, secs, problem) = match r {
            Reply::Answered(ResponseBody::Evaluated(ev)) => (
                ev.verdict.kind().to_string(),
                ev.errors.clone(),
                format!("{:.1}", ev.elapsed_ms as f64 / 1e3),
                (!ev.verdict.is_correct()).then(|| ev.verdict.feedback()),
            ),
            other => {
                let m = match other.verdict() {
                    Ok(v) => format!("{}: {}", v.kind(), v.feedback()),
                    Err(h) => format!("harness error: {h}"),
                };
                let kind = match other.verdict() {
                    Ok(v) => v.kind().to_string(),
                    Err(_) => "harness_error".to_string(),
                };
                (kind, Vec::new(), "-".to_string(), Some(m))
            }
        };
        if errors.is_empty() {
            println!(
                "{:<38} {:<12} {:<10} {:<28} {:<24} {:<14} {:>6}",
                job.task, job.shape, "-", "-", "-", kind, secs
            );
        }
        for e in &errors {
            println!(
                "{:<38} {:<12} {:<10} {:<28} {:<24} {:<14} {:>6}",
                job.task,
                job.shape,
                e.output,
                error(e),
                tolerance(&e.metric),
                kind,
                secs
            );
        }
        if let Some(f) = out_file.as_mut() {
            let line = serde_json::json!({
                "task": job.task, "shape": job.shape, "verdict": kind,
                "errors": errors, "problem": problem,
            });
            writeln!(f, "{line}").unwrap();
        }
        if let Some(p) = problem {
            failures.push(format!("{} / {}: {p}", job.task, job.shape));
        }
    }
    println!(
        "{} (task, shape) checks against spec.py in {:.0} s",
        jobs.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} disagreements or failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
