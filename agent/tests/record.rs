//! The store-backed observer on a temporary SQLite database: calls and candidates recorded with
//! lineage, replay of recorded calls after a restart (successes only, each once), idempotent
//! candidates, and run-wide budgets.

use std::collections::BTreeMap;
use std::sync::Arc;

use agent::llm::LlmCallRecord;
use agent::record::{EvalTarget, RunBudget, RunRecorder, TaskRef};
use agent::{CandidateOutcome, CandidateRecord, Evaluation, LoopObserver, StopReason, Verdict};
use bench_suite::store::{NewRun, NewTask, Store};
use serde_json::json;

fn setup(dir: &std::path::Path) -> (Arc<Store>, i64, BTreeMap<String, TaskRef>) {
    let url = format!("sqlite://{}", dir.join("r.db").display());
    let store = Arc::new(Store::open(&url).expect("open store"));
    let (run, task) = store
        .write(|tx| {
            let task = tx.upsert_task(&NewTask {
                name: "demo".into(),
                category: "test".into(),
                title: "Demo".into(),
                content_hash: "h1".into(),
                details: json!({}),
            })?;
            let run = tx.create_run(&NewRun {
                name: "r".into(),
                kind: "agent".into(),
                agent: "p".into(),
                suite: "custom".into(),
                config: json!({}),
                git_rev: String::new(),
            })?;
            Ok((run.id, task))
        })
        .expect("setup");
    let tasks = [(
        "demo".to_string(),
        TaskRef {
            store_id: task,
            content_hash: "h1".into(),
        },
    )]
    .into_iter()
    .collect();
    (store, run, tasks)
}

/// A successful call whose response body is a real completion with `content`.
fn call(role: &str, prompt: &str, content: &str, error: Option<&str>) -> LlmCallRecord {
    let response = json!({
        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50}
    })
    .to_string();
    LlmCallRecord {
        role: role.into(),
        profile: "p".into(),
        provider: "prov".into(),
        model: "m".into(),
        started_at_unix_ms: 0,
        tokens_in: 100,
        tokens_out: 50,
        usage_estimated: false,
        cost_usd: 0.01,
        latency_ms: 12,
        attempts: 1,
        request: json!({"model": "m", "messages": [{"role": "user", "content": prompt}]}),
        response: Some(response),
        finish_reason: Some("stop".into()),
        error: error.map(str::to_string),
        attempt_errors: Vec::new(),
    }
}

fn candidate(round: u32, parent: Option<u32>, source: &str, call_index: usize) -> CandidateRecord {
    CandidateRecord {
        round,
        action: if parent.is_some() {
            "repair"
        } else {
            "initial"
        }
        .into(),
        parent_round: parent,
        source: Some(source.into()),
        plan: Some("[[launch]]".into()),
        raw_reply: Some("reply".into()),
        extract_notes: Vec::new(),
        advice: None,
        outcome: CandidateOutcome::Evaluated(Evaluation {
            verdict: Verdict::Compiled,
            feedback: "ok".into(),
            timings: Vec::new(),
            resources: None,
            profile_summary: None,
        }),
        llm_call_index: Some(call_index),
        generation: 0,
        island: 0,
        second_parent_round: None,
    }
}

#[test]
fn records_calls_and_lineage_and_replays_after_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, run, tasks) = setup(tmp.path());
    let rec = RunRecorder::new(
        Arc::clone(&store),
        run,
        tasks.clone(),
        EvalTarget::DryRun,
        RunBudget::default(),
        None,
    )
    .expect("recorder");
    rec.on_llm_call("demo", &call("coder", "write it", "v1", None));
    rec.on_candidate("demo", &candidate(1, None, "k1", 0));
    rec.on_llm_call("demo", &call("coder", "fix it", "", Some("HTTP 503")));
    rec.on_llm_call("demo", &call("coder", "fix it", "v2", None));
    rec.on_candidate("demo", &candidate(2, Some(1), "k2", 2));
    assert_eq!(rec.failure(), None);
    let t = rec.totals();
    assert_eq!((t.llm_calls, t.tokens_in, t.tokens_out), (3, 300, 150));

    let calls = store.llm_calls_of_run(run).expect("calls");
    assert_eq!(calls.len(), 3);
    let cands = store.candidates_of_run(run).expect("cands");
    assert_eq!(cands.len(), 2);
    assert_eq!(cands[0].candidate.llm_call_id, Some(calls[0].id));
    assert_eq!(cands[1].candidate.llm_call_id, Some(calls[2].id));
    assert_eq!(cands[1].candidate.parents.len(), 1);
    assert_eq!(cands[1].candidate.parents[0].candidate_id, cands[0].id);
    assert_eq!(cands[1].candidate.parents[0].relation, "correction");
    assert_eq!(
        cands[1].candidate.notes["evaluation"]["verdict"],
        "compiled"
    );

    // A restart: the recorded successes come back from the store, once each, in order; the
    // failed call is not relived.
    let again = RunRecorder::new(
        Arc::clone(&store),
        run,
        tasks,
        EvalTarget::DryRun,
        RunBudget {
            max_llm_calls: Some(3),
            ..RunBudget::default()
        },
        None,
    )
    .expect("recorder");
    assert_eq!(again.should_stop(), Some(StopReason::CallBudget));
    let req = |p: &str| call("coder", p, "", None).request;
    let first = again
        .replay_call("demo", "coder", &req("write it"), "write it")
        .expect("replayed");
    assert_eq!(first.outcome.as_ref().expect("ok").content, "v1");
    again.on_llm_replayed("demo", &first.record);
    assert!(again
        .replay_call("demo", "coder", &req("write it"), "write it")
        .is_none());
    let fix = again
        .replay_call("demo", "coder", &req("fix it"), "fix it")
        .expect("the success of `fix it`");
    assert_eq!(fix.outcome.as_ref().expect("ok").content, "v2");
    again.on_llm_replayed("demo", &fix.record);
    assert!(again
        .replay_call("demo", "judge_correction", &req("fix it"), "fix it")
        .is_none());
    // The retraced candidates map onto the rows already there: no new rows.
    again.on_candidate("demo", &candidate(1, None, "k1", 0));
    again.on_candidate("demo", &candidate(2, Some(1), "k2", 1));
    assert_eq!(again.failure(), None);
    assert_eq!(store.llm_calls_of_run(run).expect("calls").len(), 3);
    assert_eq!(store.candidates_of_run(run).expect("cands").len(), 2);
    assert_eq!(again.replayed(), 2);
}

#[test]
fn run_wide_budgets_stop_every_loop() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, run, tasks) = setup(tmp.path());
    let budget = |b: RunBudget| {
        RunRecorder::new(
            Arc::clone(&store),
            run,
            tasks.clone(),
            EvalTarget::DryRun,
            b,
            None,
        )
        .expect("recorder")
    };
    let r = budget(RunBudget {
        max_tokens: Some(300),
        ..RunBudget::default()
    });
    assert_eq!(r.should_stop(), None);
    r.on_llm_call("demo", &call("coder", "a", "x", None));
    assert_eq!(r.should_stop(), None);
    r.on_llm_call("demo", &call("coder", "b", "x", None));
    assert_eq!(r.should_stop(), Some(StopReason::TokenBudget));

    // Earlier spending of the run counts (a resume cannot reset the budget).
    let r = budget(RunBudget {
        max_usd: Some(0.02),
        ..RunBudget::default()
    });
    assert_eq!(r.should_stop(), Some(StopReason::DollarBudget));
    let r = budget(RunBudget {
        max_wall_s: Some(0.0),
        ..RunBudget::default()
    });
    assert_eq!(r.should_stop(), Some(StopReason::WallTime));
}

fn timed(
    shape: &str,
    median_us: f64,
    reference_us: f64,
    sol: Option<f64>,
    floor_us: Option<f64>,
) -> agent::prompt::ShapeTiming {
    agent::prompt::ShapeTiming {
        shape: shape.into(),
        median_us: Some(median_us),
        reference_us: Some(reference_us),
        sol_pct: sol,
        floor_us,
    }
}

#[test]
fn gpu_evaluation_rows_carry_speedup_sol_and_quarantine() {
    let mut e = Evaluation {
        verdict: Verdict::CORRECT,
        feedback: "correct".into(),
        timings: vec![
            timed("small", 50.0, 100.0, Some(20.0), Some(10.0)),
            timed("large", 400.0, 800.0, Some(80.0), Some(320.0)),
        ],
        resources: None,
        profile_summary: None,
    };
    let row = agent::record::evaluation_row(&e, 7, 3, "key".into(), "strict-timed-v1")
        .expect("a GPU verdict has a row");
    assert_eq!(row.candidate_id, 7);
    assert_eq!(row.gpu_id, Some(3));
    assert_eq!(row.verdict.as_str(), "correct");
    assert!((row.speedup_ref.expect("speedup") - 2.0).abs() < 1e-12);
    // Geometric mean of 20 % and 80 %.
    assert!((row.sol_pct.expect("sol") - 40.0).abs() < 1e-9);
    assert!(!row.quarantined && row.quarantine_reason.is_none());
    assert_eq!(row.details["timings"][1]["floor_us"], 320.0);

    // Faster than the floor at one shape: quarantined, the shape named.
    e.timings[1] = timed("large", 300.0, 800.0, Some(106.0), Some(320.0));
    let row = agent::record::evaluation_row(&e, 7, 3, "key".into(), "p").expect("row");
    assert!(row.quarantined);
    let why = row.quarantine_reason.expect("reason");
    assert!(
        why.starts_with("large: faster than its speed-of-light floor"),
        "{why}"
    );

    // More than 10x the reference, no calibration: quarantined too.
    e.timings = vec![timed("small", 5.0, 100.0, None, None)];
    let row = agent::record::evaluation_row(&e, 7, 3, "key".into(), "p").expect("row");
    assert!(row.quarantined, "{row:?}");
    assert_eq!(row.sol_pct, None);
    assert!((row.speedup_ref.expect("speedup") - 20.0).abs() < 1e-9);

    // Untimed correct kernel: no speedup, nothing to quarantine.
    e.timings.clear();
    let row = agent::record::evaluation_row(&e, 7, 3, "key".into(), "p").expect("row");
    assert_eq!(
        (row.speedup_ref, row.sol_pct, row.quarantined),
        (None, None, false)
    );

    // A dry run's `compiled` is not a verifier verdict: no row.
    e.verdict = Verdict::Compiled;
    assert!(agent::record::evaluation_row(&e, 7, 3, "key".into(), "p").is_none());
}
