//! GPU test of `ksmith run` (no --dry-run) end to end: a scripted OpenAI-compatible server on
//! 127.0.0.1 (tests/support/scripted.rs) plays Coder and Judge for 3 small seed tasks, 2 rounds
//! each. Per task: the reference kernel is verified and timed as round 0, the Judge (optimization
//! mode) reads its timings, the Coder's first reply does not compile, the Judge (correction mode)
//! diagnoses it, and the Coder's second reply (the task's reference with a changed plan text, so
//! a new candidate) is verified in a `ksmith worker` and timed side by side with the reference in
//! a `ksmith gpu serve` child. The database must then hold, per task, a correct LLM candidate
//! with a recorded speedup (> 0) and per-shape timings, the reference's evaluation, the compile
//! error, and every LLM call with tokens and cost.
//!
//! `--first-shapes 1` keeps the device time small (about 1-2 minutes on an H100: 6 strict
//! checks and 6 timing runs at each task's first public shape, plus held-out shapes in the
//! checks). A quick `ksmith gpu calibrate` first lets it check % of speed-of-light as well. Without a CUDA driver the GPU test prints "skipped: no GPU" and passes, unless
//! KSMITH_REQUIRE_GPU=1. KSMITH_BIN / KSMITH_ROOT point at the kit's binary and root as in
//! gpu_references.rs. A CPU twin runs the same script with --dry-run, so the plumbing (server,
//! config, flags) is proven wherever NVRTC is.

mod support;
use support::gpu::{gpu_or_skip, ksmith, root};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bench_suite::store::Store;
use support::scripted::{
    broken, completion, judge_optimization_reply, judge_reply, kernel_reply, reference, report,
    run_to_end, write_config, Script, Server, KEY_VAR, SECRET,
};

const TASKS: [(&str, &str); 3] = [
    ("swiglu", "activation/swiglu"),
    ("softmax_row", "reduction/softmax_row"),
    ("rmsnorm_residual", "normalization/rmsnorm_residual"),
];

fn task_ids() -> String {
    TASKS.iter().map(|t| t.0).collect::<Vec<_>>().join(",")
}

/// Per task: a reply that does not compile, then the reference kernel with a plan comment.
fn script(deadline: Duration) -> Script {
    let ids: Vec<&'static str> = TASKS.iter().map(|t| t.0).collect();
    let mut sc = Script::new(&ids);
    for (task, dir) in TASKS {
        let (src, plan) = reference(&root().join("tasks").join(dir));
        sc.coder.insert(
            task,
            vec![
                completion(
                    &kernel_reply(&broken(&src), &plan, "Vectorized with a helper."),
                    false,
                ),
                completion(
                    &kernel_reply(
                        &src,
                        &format!("# scripted repair: the helper is gone\n{plan}"),
                        "Fixed: dropped the helper.",
                    ),
                    // One reply with the quirks real servers send.
                    task == "softmax_row",
                ),
            ],
        );
    }
    sc.judge = vec![judge_reply(false)];
    sc.judge_optimization = vec![judge_optimization_reply()];
    sc.deadline = deadline;
    sc
}

fn command(
    dir: &Path,
    config: &Path,
    db: &str,
    name: &str,
    dry_run: bool,
    results: &Path,
) -> Command {
    let mut c = Command::new(ksmith());
    c.current_dir(root())
        .env(KEY_VAR, SECRET)
        .env_remove("KSMITH_DB")
        .env_remove("KSMITH_CONFIG")
        .args(["--tasks-dir", &root().join("tasks").display().to_string()])
        .args(["--cache-dir", &dir.join("cache").display().to_string()])
        .args(["run", "--config", &config.display().to_string()])
        .args(["--db", db, "--json", "--model", "scripted"])
        .args([
            "--tasks",
            &task_ids(),
            "--rounds",
            "2",
            "--first-shapes",
            "1",
        ])
        .args(["--name", name])
        .args(["--results", &results.display().to_string()]);
    if dry_run {
        c.arg("--dry-run");
    }
    c
}

/// Task store id → task id, for one run.
fn task_names(store: &Store, run_id: i64) -> BTreeMap<i64, String> {
    store
        .tasks_of_run(run_id)
        .expect("tasks")
        .into_iter()
        .map(|t| (t.id, t.task.name))
        .collect()
}

/// Every call succeeded and carries the scripted usage and its price; per task, the roles.
fn check_calls(store: &Store, run_id: i64, want: &[(&str, usize)]) {
    let tasks = task_names(store, run_id);
    let calls = store.llm_calls_of_run(run_id).expect("calls");
    for c in &calls {
        let call = &c.call;
        assert!(call.error.is_none(), "a call failed: {:?}", call.error);
        assert_eq!((call.tokens_in, call.tokens_out), (1200, 300));
        assert!((call.cost_usd - (1200.0 * 2.0 + 300.0 * 8.0) / 1e6).abs() < 1e-12);
        assert!(!call.request.contains(SECRET) && !call.response.contains(SECRET));
    }
    for (task, _) in TASKS {
        for (role, n) in want {
            let got = calls
                .iter()
                .filter(|c| {
                    c.call.role == *role
                        && c.call
                            .task_id
                            .and_then(|t| tasks.get(&t))
                            .map(String::as_str)
                            == Some(task)
                })
                .count();
            assert_eq!(got, *n, "{task}: {role} calls");
        }
    }
}

#[test]
fn scripted_run_on_the_gpu_yields_correct_timed_kernels() {
    if !gpu_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(script(Duration::from_secs(400)));
    let config = write_config(tmp.path(), &server.base_url);
    let db = format!("sqlite://{}", tmp.path().join("gpu.db").display());
    // A quick calibration (a few seconds), so that % of speed-of-light can be checked too;
    // if calibrating fails, that is `gpu calibrate`'s test to report, and SOL goes unchecked.
    let results = tmp.path().join("results");
    let started = Instant::now();
    let cal = Command::new(ksmith())
        .current_dir(root())
        .args([
            "gpu",
            "calibrate",
            "--repetitions",
            "3",
            "--no-db",
            "--results",
        ])
        .arg(&results)
        .output();
    let calibrated = match &cal {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            println!(
                "note: `ksmith gpu calibrate` failed ({}), SOL% not checked:\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
            false
        }
        Err(e) => {
            println!("note: `ksmith gpu calibrate` did not start ({e}), SOL% not checked");
            false
        }
    };
    println!("gpu calibrate: {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let out = run_to_end(
        command(tmp.path(), &config, &db, "gpu3", false, &results),
        Duration::from_secs(360),
    );
    println!(
        "ksmith run, 3 tasks x 2 rounds on the GPU: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let rep = report(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{rep:#}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{rep:#}\n{stderr}");
    assert_eq!(rep["status"], "finished", "{rep:#}");
    assert!(!rep["dry_run"].as_bool().unwrap_or(true), "{rep:#}");

    let store = Store::open(&db).expect("open db");
    let run = store.run_by_name("gpu3").expect("run");
    assert_eq!(run.status.as_str(), "finished");
    // Per task: the Judge reads the timed reference, the Coder's first reply fails to
    // compile, the Judge diagnoses it, the Coder repairs it (the last round: no Judge after).
    check_calls(
        &store,
        run.id,
        &[
            ("coder", 2),
            ("judge_correction", 1),
            ("judge_optimization", 1),
        ],
    );
    let tasks = task_names(&store, run.id);
    let cands = store.candidates_of_run(run.id).expect("candidates");
    let evals = store.evaluations_of_run(run.id).expect("evaluations");
    let calls = store.llm_calls_of_run(run.id).expect("calls");
    for (task, dir) in TASKS {
        let td = bench_suite::suite::load_task_dir(&root().join("tasks").join(dir))
            .unwrap_or_else(|d| panic!("{task}: {d:?}"));
        let first_shape = td.task.shapes[0].name.clone();
        let mine: Vec<_> = cands
            .iter()
            .filter(|c| tasks[&c.candidate.task_id] == task)
            .collect();
        assert_eq!(mine.len(), 3, "{task}: reference, broken, repaired");
        let eval_of = |id: i64| {
            let e: Vec<_> = evals
                .iter()
                .filter(|e| e.evaluation.candidate_id == id)
                .collect();
            assert_eq!(e.len(), 1, "{task}: one evaluation per candidate");
            e[0].evaluation.clone()
        };
        let timed = |e: &bench_suite::store::NewEvaluation, what: &str| {
            assert_eq!(
                e.verdict.as_str(),
                "correct",
                "{task} {what}: {:#}",
                e.details
            );
            assert_eq!(e.protocol, "strict-timed-v1+first1");
            let s = e
                .speedup_ref
                .unwrap_or_else(|| panic!("{task} {what}: no speedup: {:#}", e.details));
            assert!(s > 0.0 && s.is_finite(), "{task} {what}: speedup {s}");
            let t = &e.details["timings"];
            assert_eq!(t.as_array().map(Vec::len), Some(1), "{task} {what}: {t}");
            assert_eq!(t[0]["shape"], first_shape.as_str());
            for k in ["median_us", "reference_us"] {
                let v = t[0][k].as_f64().unwrap_or(-1.0);
                assert!(v > 0.0 && v.is_finite(), "{task} {what}: {k} = {v}");
            }
            if calibrated {
                let sol = e.sol_pct.unwrap_or(-1.0);
                assert!(sol > 0.0 && sol.is_finite(), "{task} {what}: SOL% {sol}");
                let floor = t[0]["floor_us"].as_f64().unwrap_or(-1.0);
                assert!(floor > 0.0, "{task} {what}: floor {floor}");
                // Not asserted: a small shape whose writes stay in L2 can legitimately beat
                // the DRAM floor; the flag is shown for whoever reads the log.
                if e.quarantined {
                    println!("{task} {what}: quarantined: {:?}", e.quarantine_reason);
                }
            }
            assert!(
                !e.details["feedback"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Timing:"),
                "{task} {what}: a timing problem was noted: {}",
                e.details["feedback"]
            );
            s
        };
        assert_eq!(mine[0].candidate.origin.as_str(), "reference");
        let s_ref = timed(&eval_of(mine[0].id), "reference");
        // The same kernel timed against itself, interleaved: a ratio near 1.
        assert!(
            (0.5..2.0).contains(&s_ref),
            "{task}: reference vs itself {s_ref}"
        );
        let broken = eval_of(mine[1].id);
        assert_eq!(broken.verdict.as_str(), "compile_error", "{task}");
        assert!(broken.speedup_ref.is_none());
        assert_eq!(mine[2].candidate.origin.as_str(), "llm");
        assert_eq!(mine[2].candidate.parents[0].candidate_id, mine[1].id);
        let s = timed(&eval_of(mine[2].id), "repaired candidate");
        println!("{task:<20} reference {s_ref:.3}x, repaired candidate {s:.3}x vs reference");

        // The Judge's optimization prompt showed the reference's measured time.
        let opt = calls
            .iter()
            .find(|c| {
                c.call.role == "judge_optimization"
                    && c.call.task_id.map(|t| tasks[&t].as_str()) == Some(task)
            })
            .expect("optimization call");
        let req: serde_json::Value = serde_json::from_str(&opt.call.request).expect("request");
        let prompt = req["messages"][0]["content"].as_str().unwrap_or("");
        let row = prompt
            .lines()
            .find(|l| l.starts_with(&format!("| {first_shape} |")))
            .unwrap_or_else(|| panic!("{task}: no timing row in the Judge's prompt:\n{prompt}"));
        let median = row.split('|').nth(2).map(str::trim).unwrap_or("");
        assert!(
            median.parse::<f64>().is_ok_and(|m| m > 0.0),
            "{task}: timing row {row}"
        );
    }
    let per_task = rep["tasks"].as_array().expect("tasks");
    for t in per_task {
        assert_eq!(t["passed"], 1, "{t}");
        assert!(t["best_speedup"].as_f64().is_some_and(|s| s > 0.0), "{t}");
    }

    // `ksmith replay` on the same GPU finds every evaluation in the cache (same GPU, same
    // protocol): no GPU work, the stored speedups come back.
    let started = Instant::now();
    let out = Command::new(ksmith())
        .current_dir(root())
        .args(["--tasks-dir", &root().join("tasks").display().to_string()])
        .args([
            "--cache-dir",
            &tmp.path().join("cache").display().to_string(),
        ])
        .args([
            "replay",
            "--run",
            "gpu3",
            "--db",
            &db,
            "--json",
            "--results",
        ])
        .arg(&results)
        .output()
        .expect("ksmith replay");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay: serde_json::Value = serde_json::from_str(&text).expect("replay JSON");
    let rows = replay["evaluations"].as_array().expect("evaluations");
    assert_eq!(rows.len(), 9, "{replay:#}");
    for r in rows {
        if r["verdict"] == "correct" {
            assert!(r["speedup"].as_f64().is_some_and(|s| s > 0.0), "{r}");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "replay of cached evaluations took {:?}",
        started.elapsed()
    );
}

/// The same script and flags with --dry-run, on the CPU: proves the server, config and
/// command line the GPU test depends on, wherever NVRTC is.
#[test]
fn the_gpu_runs_script_works_as_a_dry_run() {
    if verifier::nvrtc::nvrtc_for_tests("the_gpu_runs_script_works_as_a_dry_run").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(script(Duration::from_secs(60)));
    let config = write_config(tmp.path(), &server.base_url);
    let db = format!("sqlite://{}", tmp.path().join("dry.db").display());
    let out = run_to_end(
        command(
            tmp.path(),
            &config,
            &db,
            "dry3",
            true,
            &tmp.path().join("results"),
        ),
        Duration::from_secs(50),
    );
    let rep = report(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{rep:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&db).expect("open db");
    let run = store.run_by_name("dry3").expect("run");
    // Nothing is timed in a dry run, so the Judge is never asked to optimize.
    check_calls(
        &store,
        run.id,
        &[
            ("coder", 2),
            ("judge_correction", 1),
            ("judge_optimization", 0),
        ],
    );
    let tasks = task_names(&store, run.id);
    let cands = store.candidates_of_run(run.id).expect("candidates");
    for (task, _) in TASKS {
        let verdicts: Vec<String> = cands
            .iter()
            .filter(|c| tasks[&c.candidate.task_id] == task)
            .map(|c| {
                c.candidate.notes["evaluation"]["verdict"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(
            verdicts,
            ["compiled", "compile_error", "compiled"],
            "{task}"
        );
    }
    assert!(
        run.run.config["first_shapes"] == 1,
        "--first-shapes is stored with the run: {}",
        run.run.config
    );
}
