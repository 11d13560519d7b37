//! A run killed with SIGKILL at arbitrary moments and resumed loses only the work in flight:
//! afterwards every item is done exactly once, with exactly one candidate, one evaluation and
//! one LLM call, and nothing else.
//!
//! The worker is this test binary itself, re-executed with `--exact child_worker --ignored`
//! and the database in its environment, so no extra binary has to be built.

mod common;

use bench_suite::store::*;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ITEMS: usize = 40;
const CHILD_DB: &str = "KSMITH_KILL_TEST_DB";
const CHILD_RUN: &str = "KSMITH_KILL_TEST_RUN";

/// Stand-in for the real evaluator: deterministic results, with sleeps so that kills land
/// both between transactions and inside one.
fn process_items(url: &str, run_name: &str) {
    let store = Store::open(url).expect("child: open store");
    let run = store.run_by_name(run_name).expect("child: run");
    let gpu = store
        .write(|tx| {
            tx.upsert_gpu(&NewGpu {
                gpu_key: "test-gpu".into(),
                name: "Test GPU".into(),
                compute_capability: "9.0".into(),
                sm_count: None,
                memory_bytes: None,
                driver_version: String::new(),
                details: json!({}),
            })
        })
        .expect("child: gpu");
    let worker = WorkerId::this_process();
    while let Some(claim) = store
        .claim_next(run.id, &worker, DEFAULT_LEASE)
        .expect("child: claim")
    {
        std::thread::sleep(Duration::from_millis(25)); // "evaluating"
        let task_id = claim.task_id.expect("items carry tasks");
        let mut tx = store.transaction().expect("child: tx");
        let call = tx
            .add_llm_call(&NewLlmCall {
                run_id: run.id,
                task_id: Some(task_id),
                role: "coder".into(),
                provider: "stand-in".into(),
                model: "none".into(),
                tokens_in: 100,
                tokens_out: 50,
                cost_usd: 0.001,
                latency_ms: 25.0,
                request: "{}".into(),
                response: claim.item_key.clone(),
                error: None,
            })
            .expect("child: llm call");
        let source = format!("__global__ void k_{}() {{}}", claim.item_key);
        let (cand, _) = tx
            .add_candidate(&NewCandidate {
                run_id: run.id,
                task_id,
                origin: Origin::Llm,
                plan: "[[launch]]".into(),
                generation: 0,
                island: 0,
                llm_call_id: Some(call),
                parents: vec![],
                notes: json!({}),
                source: source.clone(),
            })
            .expect("child: candidate");
        std::thread::sleep(Duration::from_millis(10)); // a kill here hits an open transaction
        let key = EvalKey {
            candidate_hash: &candidate_hash(&source, "[[launch]]"),
            task_hash: "h",
            gpu_key: "test-gpu",
            protocol: "stand-in",
        }
        .digest();
        tx.add_evaluation(&NewEvaluation {
            candidate_id: cand,
            gpu_id: Some(gpu),
            cache_key: key,
            protocol: "stand-in".into(),
            verdict: Verdict::Correct,
            details: json!({}),
            compile_ms: Some(1.0),
            timings: vec![],
            speedup_ref: Some(1.0 + claim.seq as f64 / 10.0),
            speedup_eager: None,
            speedup_compile: None,
            sol_pct: Some(50.0),
            quarantined: false,
            quarantine_reason: None,
            cached_from: None,
        })
        .expect("child: evaluation");
        tx.finish_item(&claim, ItemStatus::Done, None)
            .expect("child: finish");
        tx.commit().expect("child: commit");
    }
    store
        .finish_run_if_complete(run.id)
        .expect("child: finish run");
}

#[test]
#[ignore = "helper process of killed_runs_resume_without_duplicates; started by it"]
fn child_worker() {
    let (Ok(url), Ok(run)) = (std::env::var(CHILD_DB), std::env::var(CHILD_RUN)) else {
        eprintln!("child_worker only runs as the helper of the SIGKILL test");
        return;
    };
    process_items(&url, &run);
}

fn spawn_child(url: &str, run: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "child_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, url)
        .env(CHILD_RUN, run)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child worker")
}

/// Rows the run holds, per table, and the checks that must hold after every kill.
fn check_consistent(store: &Store, run_id: i64) -> Progress {
    let items = store.items(run_id).expect("items");
    let cands = store.candidates_of_run(run_id).expect("candidates");
    let evals = store.evaluations_of_run(run_id).expect("evaluations");
    let calls = store.llm_calls_of_run(run_id).expect("calls");
    let done: Vec<i64> = items
        .iter()
        .filter(|i| i.status == ItemStatus::Done)
        .map(|i| i.task_id.expect("task"))
        .collect();
    // Every finished item has exactly its rows; unfinished items have none (atomic commits).
    assert_eq!(cands.len(), done.len(), "one candidate per finished item");
    assert_eq!(evals.len(), done.len(), "one evaluation per finished item");
    assert_eq!(calls.len(), done.len(), "one LLM call per finished item");
    let mut cand_tasks: Vec<i64> = cands.iter().map(|c| c.candidate.task_id).collect();
    cand_tasks.sort_unstable();
    let mut done_sorted = done.clone();
    done_sorted.sort_unstable();
    assert_eq!(
        cand_tasks, done_sorted,
        "candidates belong to exactly the finished items"
    );
    let cand_ids: std::collections::HashSet<i64> = cands.iter().map(|c| c.id).collect();
    assert!(evals
        .iter()
        .all(|e| cand_ids.contains(&e.evaluation.candidate_id)));
    store.progress(run_id).expect("progress")
}

fn killed_runs_resume_without_duplicates(url: &str) {
    let store = Store::open(url).expect("open");
    let run = store
        .write(|tx| {
            tx.create_run(&NewRun {
                name: "killme".into(),
                kind: "eval".into(),
                agent: "stand-in".into(),
                suite: "test".into(),
                config: json!({}),
                git_rev: String::new(),
            })
        })
        .expect("run");
    let items: Vec<WorkItem> = (0..ITEMS)
        .map(|i| {
            let t = store
                .write(|tx| {
                    tx.upsert_task(&NewTask {
                        name: format!("task_{i:02}"),
                        category: "test".into(),
                        title: String::new(),
                        content_hash: "h".into(),
                        details: json!({}),
                    })
                })
                .expect("task");
            WorkItem {
                key: format!("task_{i:02}"),
                task_id: Some(t),
                payload: json!({}),
            }
        })
        .collect();
    store.add_items(run.id, &items).expect("items");

    let mut reclaimed_total = 0;
    let mut kills = 0;
    // Kill once the run has made some progress (so the timing does not depend on how fast this
    // machine starts processes), then at a varying offset inside an item.
    for (target_done, offset_ms) in [(4i64, 3u64), (11, 17), (19, 29), (27, 8)] {
        let mut child = spawn_child(url, "killme");
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.progress(run.id).expect("progress").done < target_done {
            assert!(Instant::now() < deadline, "the worker made no progress");
            assert!(
                child.try_wait().expect("child status").is_none(),
                "worker exited early"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(offset_ms));
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        child.wait().expect("reap");
        kills += 1;
        let before = check_consistent(&store, run.id);
        assert!(before.done < ITEMS as i64, "killed before the end");
        let report = store.resume_run("killme").expect("resume");
        reclaimed_total += report.reclaimed.len();
        assert_eq!(
            report.progress.claimed, 0,
            "the dead worker's claim was reclaimed"
        );
        check_consistent(&store, run.id);
    }
    eprintln!("{kills} kills, {reclaimed_total} in-flight items reclaimed");
    assert!(
        reclaimed_total >= 1,
        "no kill landed mid-item; the test proved nothing"
    );

    let started = Instant::now();
    let status = spawn_child(url, "killme").wait().expect("final child");
    assert!(status.success(), "final worker failed: {status}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let p = check_consistent(&store, run.id);
    assert_eq!(
        (p.done, p.pending, p.claimed, p.failed),
        (ITEMS as i64, 0, 0, 0)
    );
    assert_eq!(
        store.run_by_name("killme").expect("run").status,
        RunStatus::Finished
    );
    let items = store.items(run.id).expect("items");
    assert!(
        items.iter().any(|i| i.attempts > 1),
        "a reclaimed item was retried"
    );
}
both_backends!(
    killed_runs_resume_without_duplicates,
    super::killed_runs_resume_without_duplicates
);
