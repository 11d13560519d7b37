//! `ksmith run --dry-run` end to end against a scripted OpenAI-compatible server on 127.0.0.1
//! (tests/support/scripted.rs): 3 real tasks × 5 rounds, replies that contain a compile error
//! fixed in the next reply, and every fault the client must survive (429 with Retry-After, 429
//! without it and with an HTML body, 500s, a stalled reply, malformed JSON, an empty
//! finish_reason, reasoning_content and other extra fields, a reply cut off by the token limit
//! in the middle of its code). Then the database must show every call with tokens and cost, and
//! a run killed with SIGKILL and resumed must end with exactly the rows of an uninterrupted run:
//! nothing duplicated, nothing missing.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bench_suite::store::Store;
use support::cli::{command, have_nvrtc, repo};
use support::scripted::{
    broken, completion, completion_with, judge_reply, kernel_reply, reference, report, run_to_end,
    write_config, Fault, Script, Server, KEY_VAR, SECRET,
};

const TASKS: [&str; 3] = ["swiglu", "softmax_row", "rmsnorm_residual"];
const TASK_DIRS: [&str; 3] = [
    "activation/swiglu",
    "reduction/softmax_row",
    "normalization/rmsnorm_residual",
];

/// Per task: round 1 does not compile, round 2 fixes it, rounds 3-5 vary the plan text (new
/// candidates, same source, so compiles come from the cache). With faults, rmsnorm_residual's
/// fourth reply is cut off by the token limit in the middle of its code (no kernel: the same
/// request goes out again with a notice, and the fifth reply is used).
fn script(delay: Duration, with_faults: bool) -> Script {
    let mut sc = Script::new(&TASKS);
    for (task, dir) in TASKS.iter().zip(TASK_DIRS) {
        let (src, plan) = reference(&repo().join("tasks").join(dir));
        let mut replies = vec![completion(
            &kernel_reply(&broken(&src), &plan, "First version with a helper."),
            false,
        )];
        for v in 2..=5 {
            if with_faults && *task == "rmsnorm_residual" && v == 4 {
                let cut = src.len() / 2;
                let cut = (0..=cut)
                    .rev()
                    .find(|i| src.is_char_boundary(*i))
                    .unwrap_or(0);
                replies.push(completion_with(
                    &format!("Vectorized the loads.\n\n```cuda\n{}", &src[..cut]),
                    false,
                    "length",
                ));
                continue;
            }
            replies.push(completion(
                &kernel_reply(
                    &src,
                    &format!("# variant {v}\n{plan}"),
                    "Fixed: dropped the helper.",
                ),
                with_faults && v == 3,
            ));
        }
        sc.coder.insert(*task, replies);
    }
    sc.judge = vec![judge_reply(with_faults)];
    if with_faults {
        sc.faults.insert(("swiglu", "coder", 1), Fault::TooMany);
        sc.faults
            .insert(("softmax_row", "coder", 2), Fault::ServerError);
        sc.faults
            .insert(("rmsnorm_residual", "coder", 1), Fault::Stall);
        sc.faults
            .insert(("swiglu", "coder", 3), Fault::MalformedJson);
        sc.faults
            .insert(("softmax_row", "judge", 0), Fault::ServerError);
        sc.faults
            .insert(("rmsnorm_residual", "coder", 2), Fault::TooManyPlain);
    }
    sc.delay = delay;
    sc
}

fn ksmith(dir: &Path, config: &Path, db: &str, extra: &[&str]) -> Command {
    let mut c = command();
    c.env(KEY_VAR, SECRET)
        .args(["--tasks-dir", &repo().join("tasks").display().to_string()])
        .args(["--cache-dir", &dir.join("cache").display().to_string()])
        .args([
            "run",
            "--config",
            &config.display().to_string(),
            "--db",
            db,
            "--json",
        ])
        .args(extra);
    c
}

fn new_run_args(name: &str) -> Vec<String> {
    [
        "--model",
        "scripted",
        "--tasks",
        &TASKS.join(","),
        "--rounds",
        "5",
        "--dry-run",
        "--name",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn dry_run_three_tasks_five_rounds_survives_faults_and_records_everything() {
    if !have_nvrtc("dry_run_three_tasks_five_rounds") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(script(Duration::ZERO, true));
    let config = write_config(tmp.path(), &server.base_url);
    let db = format!("sqlite://{}", tmp.path().join("ksmith.db").display());
    let started = Instant::now();
    let out = run_to_end(
        {
            let mut c = ksmith(tmp.path(), &config, &db, &[]);
            c.args(new_run_args("dry3"));
            c
        },
        Duration::from_secs(55),
    );
    let wall = started.elapsed();
    eprintln!(
        "3 tasks x 5 rounds dry run: {:.1} s wall",
        wall.as_secs_f64()
    );
    let rep = report(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{rep:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rep["status"], "finished", "{rep:#}");
    assert!(rep["harness_error"].is_null(), "{rep:#}");

    // Every fault was served, and the run went on.
    {
        let s = server.state();
        assert_eq!(
            s.served_faults.len(),
            6,
            "faults served: {:?}",
            s.served_faults
        );
        assert_eq!(
            s.auth_ok,
            s.bodies.len(),
            "every request carries the key in its header"
        );
        // The repair prompt carries the compile log of round 1.
        for task in TASKS {
            let repair = s
                .bodies
                .iter()
                .filter(|b| b.contains(&format!("(`{task}`,")) && !b.contains("You are reviewing"))
                .find(|b| b.contains("fix this kernel"))
                .unwrap_or_else(|| panic!("{task}: no repair prompt was sent"));
            assert!(
                repair.contains("undefined_scripted_symbol"),
                "{task}: the repair prompt lacks the compile error"
            );
        }
        // The reply cut off by the token limit became a notice in the next Coder prompt.
        assert!(
            s.bodies
                .iter()
                .any(|b| b.contains("(`rmsnorm_residual`,")
                    && b.contains("hit the output token limit")),
            "no prompt told the Coder its reply was truncated"
        );
    }

    let store = Store::open(&db).expect("open db");
    let run = store.run_by_name("dry3").expect("run");
    assert_eq!(run.status.as_str(), "finished");
    let calls = store.llm_calls_of_run(run.id).expect("calls");
    // Per task: 5 Coder calls + 1 Judge correction (after the compile error).
    assert_eq!(
        calls.len(),
        18,
        "{:#?}",
        calls.iter().map(|c| &c.call.role).collect::<Vec<_>>()
    );
    let tasks: BTreeMap<i64, String> = store
        .tasks_of_run(run.id)
        .expect("tasks")
        .into_iter()
        .map(|t| (t.id, t.task.name))
        .collect();
    for c in &calls {
        let call = &c.call;
        assert!(call.error.is_none(), "a call failed: {:?}", call.error);
        assert_eq!(call.tokens_in, 1200);
        assert_eq!(call.tokens_out, 300);
        assert!((call.cost_usd - (1200.0 * 2.0 + 300.0 * 8.0) / 1e6).abs() < 1e-12);
        assert!(call.latency_ms >= 0.0);
        assert_eq!(call.provider, "scripted");
        assert_eq!(call.model, "scripted-model");
        assert!(call.task_id.is_some_and(|t| tasks.contains_key(&t)));
        for text in [&call.request, &call.response] {
            assert!(!text.contains(SECRET), "the API key leaked into llm_calls");
        }
    }
    let roles = |task: &str, role: &str| {
        calls
            .iter()
            .filter(|c| tasks[&c.call.task_id.unwrap_or(-1)] == task && c.call.role == role)
            .count()
    };
    for task in TASKS {
        assert_eq!(roles(task, "coder"), 5, "{task}");
        assert_eq!(roles(task, "judge_correction"), 1, "{task}");
    }
    let total_cost: f64 = calls.iter().map(|c| c.call.cost_usd).sum();
    assert!((rep["totals"]["usd"].as_f64().unwrap_or(-1.0) - total_cost).abs() < 1e-9);

    // The truncated reply is on record as a call (it was paid for) with its finish_reason.
    assert!(
        calls.iter().any(
            |c| tasks[&c.call.task_id.unwrap_or(-1)] == "rmsnorm_residual"
                && c.call.role == "coder"
                && c.call.response.contains("\"finish_reason\":\"length\"")
        ),
        "the truncated reply is not on record"
    );

    // Candidates: the reference + 5 per task (4 for rmsnorm_residual, whose truncated reply held
    // no kernel), the repair a child of the broken one.
    let cands = store.candidates_of_run(run.id).expect("candidates");
    assert_eq!(cands.len(), 17);
    for task in TASKS {
        let mine: Vec<_> = cands
            .iter()
            .filter(|c| tasks[&c.candidate.task_id] == task)
            .collect();
        let truncated = task == "rmsnorm_residual";
        assert_eq!(mine.len(), if truncated { 5 } else { 6 }, "{task}");
        let verdict = |c: &bench_suite::store::Candidate| {
            c.candidate.notes["evaluation"]["verdict"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(mine[0].candidate.origin.as_str(), "reference");
        assert_eq!(verdict(mine[0]), "compiled");
        assert_eq!(verdict(mine[1]), "compile_error", "{task}");
        assert!(mine[1].candidate.notes["evaluation"]["feedback"]
            .as_str()
            .unwrap_or("")
            .contains("undefined_scripted_symbol"));
        assert_eq!(verdict(mine[2]), "compiled", "{task}: the fix compiles");
        assert_eq!(mine[2].candidate.parents.len(), 1);
        assert_eq!(mine[2].candidate.parents[0].candidate_id, mine[1].id);
        assert_eq!(mine[2].candidate.parents[0].relation, "correction");
        for c in &mine[1..] {
            assert_eq!(c.candidate.origin.as_str(), "llm");
            let call = c.candidate.llm_call_id.expect("the candidate's call");
            assert!(calls.iter().any(|x| x.id == call && x.call.role == "coder"));
        }
        assert!(mine[2..].iter().all(|c| verdict(c) == "compiled"));
    }
    for t in rep["tasks"].as_array().expect("tasks") {
        let truncated = t["task"] == "rmsnorm_residual";
        assert_eq!(t["status"], "done", "{t}");
        assert_eq!(t["candidates"], if truncated { 5 } else { 6 }, "{t}");
        assert_eq!(
            t["passed"],
            if truncated { 3 } else { 4 },
            "{t}: rounds 2-5 compile (the reference is not counted; a truncated reply has no kernel)"
        );
    }
    let items = store.items(run.id).expect("items");
    assert!(items.iter().all(|i| i.status.as_str() == "done"));
}

type CallKey = (String, String, String);
/// Task, content hash, origin, parents as `relation:parent hash`.
type CandKey = (String, String, String, Vec<String>);

fn call_keys(store: &Store, run: &str) -> (Vec<CallKey>, Vec<CandKey>) {
    let run = store.run_by_name(run).expect("run");
    let tasks: BTreeMap<i64, String> = store
        .tasks_of_run(run.id)
        .expect("tasks")
        .into_iter()
        .map(|t| (t.id, t.task.name))
        .collect();
    let mut calls: Vec<CallKey> = store
        .llm_calls_of_run(run.id)
        .expect("calls")
        .into_iter()
        .map(|c| {
            (
                c.call
                    .task_id
                    .map(|t| tasks[&t].clone())
                    .unwrap_or_default(),
                c.call.role,
                c.call.request,
            )
        })
        .collect();
    calls.sort();
    let cands = store.candidates_of_run(run.id).expect("candidates");
    let hash: HashMap<i64, String> = cands
        .iter()
        .map(|c| (c.id, c.content_hash.clone()))
        .collect();
    let mut cs: Vec<CandKey> = cands
        .iter()
        .map(|c| {
            (
                tasks[&c.candidate.task_id].clone(),
                c.content_hash.clone(),
                c.candidate.origin.as_str().to_string(),
                c.candidate
                    .parents
                    .iter()
                    .map(|p| format!("{}:{}", p.relation, hash[&p.candidate_id]))
                    .collect(),
            )
        })
        .collect();
    cs.sort();
    (calls, cs)
}

#[test]
fn sigkill_mid_run_then_resume_loses_and_duplicates_nothing() {
    if !have_nvrtc("sigkill_mid_run_then_resume") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // Slow replies, so the kill lands in the middle of the run.
    let server = Server::start(script(Duration::from_millis(250), false));
    let config = write_config(tmp.path(), &server.base_url);
    let db_b = format!("sqlite://{}", tmp.path().join("killed.db").display());
    let mut child = {
        let mut c = ksmith(tmp.path(), &config, &db_b, &[]);
        c.args(new_run_args("killme"));
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn")
    };
    let start = Instant::now();
    while server.requests.load(Ordering::SeqCst) < 8 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("ksmith ended before it could be killed: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the run made no progress"
        );
        thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let requests_before_kill = server.requests.load(Ordering::SeqCst);

    {
        let store = Store::open(&db_b).expect("open");
        let run = store.run_by_name("killme").expect("run");
        assert_eq!(
            run.status.as_str(),
            "running",
            "the killed run cannot have finished"
        );
        let done = store
            .items(run.id)
            .expect("items")
            .iter()
            .filter(|i| i.status.as_str() == "done")
            .count();
        assert!(done < 3, "the kill came too late to test anything");
    }

    let out = run_to_end(
        ksmith(tmp.path(), &config, &db_b, &["--resume", "killme"]),
        Duration::from_secs(50),
    );
    let rep = report(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{rep:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rep["status"], "finished");
    assert!(
        rep["replayed_calls"].as_u64().unwrap_or(0) > 0,
        "the resumed run should retrace recorded calls from the store: {rep:#}"
    );
    let requests_b = server.requests.load(Ordering::SeqCst);

    // The same run without interruption, against the same (deterministic) server.
    let db_a = format!("sqlite://{}", tmp.path().join("whole.db").display());
    let out = run_to_end(
        {
            let mut c = ksmith(tmp.path(), &config, &db_a, &[]);
            c.args(new_run_args("whole"));
            c
        },
        Duration::from_secs(50),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (calls_b, cands_b) = call_keys(&Store::open(&db_b).expect("b"), "killme");
    let (calls_a, cands_a) = call_keys(&Store::open(&db_a).expect("a"), "whole");
    assert_eq!(calls_a.len(), 18);
    assert_eq!(
        calls_b.len(),
        calls_a.len(),
        "LLM call rows differ after kill + resume"
    );
    assert_eq!(calls_b, calls_a, "LLM call rows differ after kill + resume");
    assert_eq!(cands_b.len(), 18);
    assert_eq!(
        cands_b, cands_a,
        "candidates or lineage differ after kill + resume"
    );
    // Finished calls were not made again: at most the calls in flight at the kill (one per
    // task) reached the server twice.
    assert!(
        requests_b <= calls_b.len() + TASKS.len(),
        "{requests_b} requests for {} recorded calls ({requests_before_kill} before the kill)",
        calls_b.len()
    );
}

/// A script for evolution: every Coder-side prompt (first translation, mutation, crossover) gets
/// the next of many distinct valid variants; the first reply per task does not compile. The
/// server stays deterministic (a repeated prompt gets its first reply again), so the search must
/// make sibling prompts differ or it would breed duplicates.
fn evolve_script() -> Script {
    let mut s = script(Duration::ZERO, false);
    for (task, dir) in TASKS.iter().zip(TASK_DIRS) {
        let d = repo().join("tasks").join(dir);
        let src = std::fs::read_to_string(d.join("reference.cu")).expect("reference.cu");
        let plan = std::fs::read_to_string(d.join("reference.toml")).expect("reference.toml");
        let replies = s.coder.get_mut(task).expect("task");
        for v in 6..=30 {
            replies.push(completion(
                &kernel_reply(&src, &format!("# evolved {v}\n{plan}"), "Another idea."),
                false,
            ));
        }
    }
    s
}

#[test]
fn evolve_dry_run_records_islands_generations_and_lineage() {
    if !have_nvrtc("evolve_dry_run") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(evolve_script());
    let config = write_config(tmp.path(), &server.base_url);
    let db = format!("sqlite://{}", tmp.path().join("evolve.db").display());
    let out = run_to_end(
        {
            let mut c = ksmith(tmp.path(), &config, &db, &[]);
            c.args([
                "--model",
                "scripted",
                "--tasks",
                "swiglu,softmax_row",
                "--rounds",
                "2",
                "--strategy",
                "evolve",
                "--islands",
                "2",
                "--dry-run",
                "--name",
                "evo",
            ]);
            c
        },
        Duration::from_secs(55),
    );
    let rep = report(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{rep:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rep["strategy"], "evolve");
    let store = Store::open(&db).expect("open");
    let run = store.run_by_name("evo").expect("run");
    let calls = store.llm_calls_of_run(run.id).expect("calls");
    let cands = store.candidates_of_run(run.id).expect("candidates");
    let tasks: BTreeMap<i64, String> = store
        .tasks_of_run(run.id)
        .expect("tasks")
        .into_iter()
        .map(|t| (t.id, t.task.name))
        .collect();
    for task in ["swiglu", "softmax_row"] {
        let mine: Vec<_> = cands
            .iter()
            .filter(|c| tasks[&c.candidate.task_id] == task)
            .collect();
        // Reference + one first translation per island + 2 islands x 2 children x 2 generations.
        assert_eq!(mine.len(), 1 + 2 + 8, "{task}");
        assert_eq!(mine[0].candidate.origin.as_str(), "reference");
        let gen0: Vec<_> = mine
            .iter()
            .filter(|c| c.candidate.generation == 0 && c.candidate.origin.as_str() == "llm")
            .collect();
        assert_eq!(gen0.len(), 2, "{task}: one first translation per island");
        let islands: std::collections::BTreeSet<i64> =
            gen0.iter().map(|c| c.candidate.island).collect();
        assert_eq!(islands.len(), 2, "{task}");
        let mut mutations = 0;
        for c in mine.iter().filter(|c| c.candidate.generation >= 1) {
            assert!((0..2).contains(&c.candidate.island), "{task}");
            let rel: Vec<&str> = c
                .candidate
                .parents
                .iter()
                .map(|p| p.relation.as_str())
                .collect();
            match rel.as_slice() {
                ["mutation"] => mutations += 1,
                ["crossover", "crossover"] => {}
                other => panic!("{task}: unexpected lineage {other:?}"),
            }
            for p in &c.candidate.parents {
                let parent = mine
                    .iter()
                    .find(|x| x.id == p.candidate_id)
                    .expect("parent in the same task");
                assert!(parent.candidate.generation < c.candidate.generation);
            }
            let call = c.candidate.llm_call_id.expect("call");
            let role = &calls
                .iter()
                .find(|x| x.id == call)
                .expect("call row")
                .call
                .role;
            assert_eq!(
                role,
                if rel.len() == 2 {
                    "crossover"
                } else {
                    "mutate"
                },
                "{task}"
            );
        }
        assert!(mutations > 0, "{task}: no mutation");
    }
    // A failing first translation is mutated only after a Judge diagnosis.
    let judge_calls = calls
        .iter()
        .filter(|c| c.call.role == "judge_correction")
        .count();
    let mutations_of_failures = cands
        .iter()
        .filter(|c| {
            c.candidate.parents.iter().any(|p| {
                p.relation == "mutation"
                    && cands.iter().any(|x| {
                        x.id == p.candidate_id
                            && x.candidate.notes["evaluation"]["verdict"] == "compile_error"
                    })
            })
        })
        .count();
    assert_eq!(judge_calls, mutations_of_failures);
}

#[test]
fn replay_without_a_gpu_says_so_and_exits_3() {
    if verifier::runtime::driver_present() {
        eprintln!("SKIPPED replay_without_a_gpu: this machine has a CUDA driver");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", tmp.path().join("r.db").display());
    let out = command()
        .args(["replay", "--run", "anything", "--db", &db])
        .output()
        .expect("run ksmith");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("GPU"), "{stderr}");
    assert!(
        stderr.contains("libcuda"),
        "says what was looked for: {stderr}"
    );
}

#[test]
fn run_without_config_or_gpu_is_a_harness_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", tmp.path().join("c.db").display());
    let missing = tmp.path().join("nope.toml");
    let out = command()
        .args([
            "run",
            "--model",
            "x",
            "--tasks",
            "swiglu",
            "--dry-run",
            "--db",
            &db,
        ])
        .args(["--config", &missing.display().to_string()])
        .output()
        .expect("run ksmith");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("nope.toml"), "{stderr}");

    let out = command()
        .args(["run", "--tasks", "swiglu", "--db", &db])
        .output()
        .expect("run ksmith");
    assert_eq!(
        out.status.code(),
        Some(2),
        "--model is required for a new run"
    );

    let out = command()
        .args(["run", "--resume", "no-such-run", "--db", &db])
        .output()
        .expect("run ksmith");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("no-such-run"), "{stderr}");
}

#[test]
fn provider_outage_interrupts_the_task_and_resume_finishes_it() {
    if !have_nvrtc("provider_outage") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let down = Arc::new(AtomicBool::new(true));
    let mut sc = script(Duration::ZERO, false);
    sc.outage = Some(("softmax_row", Arc::clone(&down)));
    let server = Server::start(sc);
    let config = write_config(tmp.path(), &server.base_url);
    let db = format!("sqlite://{}", tmp.path().join("outage.db").display());
    let out = run_to_end(
        {
            let mut c = ksmith(tmp.path(), &config, &db, &[]);
            c.args(new_run_args("outage"));
            c
        },
        Duration::from_secs(50),
    );
    let rep = report(&out);
    assert_eq!(out.status.code(), Some(3), "{rep:#}");
    assert_eq!(rep["status"], "interrupted", "{rep:#}");
    let he = rep["harness_error"].as_str().unwrap_or("");
    assert!(
        he.contains("softmax_row") && he.contains("LLM unavailable"),
        "{he}"
    );
    let status = |rep: &serde_json::Value, task: &str| {
        rep["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["task"] == task))
            .map(|t| t["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(status(&rep, "softmax_row"), "pending");
    assert_eq!(status(&rep, "swiglu"), "done");

    down.store(false, Ordering::SeqCst);
    let out = run_to_end(
        ksmith(tmp.path(), &config, &db, &["--resume", "outage"]),
        Duration::from_secs(50),
    );
    let rep = report(&out);
    assert_eq!(out.status.code(), Some(0), "{rep:#}");
    assert_eq!(status(&rep, "softmax_row"), "done");

    let store = Store::open(&db).expect("open");
    let run = store.run_by_name("outage").expect("run");
    let calls = store.llm_calls_of_run(run.id).expect("calls");
    let failed = calls.iter().filter(|c| c.call.error.is_some()).count();
    // Three failed Coder calls (after their retries) stopped the task; all are on record, and
    // the resumed task asked the provider again instead of reliving them.
    assert_eq!(
        failed,
        3,
        "{:#?}",
        calls.iter().map(|c| &c.call.error).collect::<Vec<_>>()
    );
    assert_eq!(calls.len(), 18 + 3);
    assert_eq!(store.candidates_of_run(run.id).expect("cands").len(), 18);
}

#[test]
fn dollar_budget_stops_the_whole_run() {
    if !have_nvrtc("dollar_budget") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(script(Duration::from_millis(100), false));
    let config = write_config(tmp.path(), &server.base_url);
    let db = format!("sqlite://{}", tmp.path().join("budget.db").display());
    let out = run_to_end(
        {
            let mut c = ksmith(tmp.path(), &config, &db, &["--budget-usd", "0.012"]);
            c.args(new_run_args("budget"));
            c
        },
        Duration::from_secs(50),
    );
    let rep = report(&out);
    // Each call costs $0.0048: the three tasks' first calls (made at once) use up $0.012.
    let calls = rep["totals"]["llm_calls"].as_u64().unwrap_or(0);
    assert!((3..=5).contains(&calls), "{rep:#}");
    assert!(
        rep["totals"]["usd"].as_f64().unwrap_or(0.0) >= 0.012,
        "{rep:#}"
    );
    for t in rep["tasks"].as_array().expect("tasks") {
        assert_eq!(t["stop"], "dollar budget", "{t}");
        assert_eq!(t["status"], "done", "{t}");
    }
    // Round 1 of every task does not compile and the budget allows no repair.
    assert_eq!(out.status.code(), Some(1), "{rep:#}");
}

#[test]
fn evolve_sigkill_then_resume_completes_without_duplicates() {
    if !have_nvrtc("evolve_sigkill") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut sc = evolve_script();
    sc.delay = Duration::from_millis(200);
    let server = Server::start(sc);
    let config = write_config(tmp.path(), &server.base_url);
    let db = format!("sqlite://{}", tmp.path().join("evokill.db").display());
    let args = [
        "--model",
        "scripted",
        "--tasks",
        "swiglu,softmax_row",
        "--rounds",
        "2",
        "--strategy",
        "evolve",
        "--islands",
        "2",
        "--dry-run",
        "--name",
        "evokill",
    ];
    let mut child = {
        let mut c = ksmith(tmp.path(), &config, &db, &args);
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn")
    };
    let start = Instant::now();
    while server.requests.load(Ordering::SeqCst) < 8 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("ksmith ended before it could be killed: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no progress");
        thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let out = run_to_end(
        ksmith(tmp.path(), &config, &db, &["--resume", "evokill"]),
        Duration::from_secs(50),
    );
    let rep = report(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{rep:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rep["replayed_calls"].as_u64().unwrap_or(0) > 0, "{rep:#}");
    let store = Store::open(&db).expect("open");
    let run = store.run_by_name("evokill").expect("run");
    let (calls, cands) = call_keys(&store, "evokill");
    for task in ["swiglu", "softmax_row"] {
        // Same counts as an uninterrupted search: reference + 2 first versions + 8 children.
        assert_eq!(cands.iter().filter(|c| c.0 == task).count(), 11, "{task}");
        let coder_side: Vec<&CallKey> = calls
            .iter()
            .filter(|c| c.0 == task && !c.1.starts_with("judge"))
            .collect();
        assert_eq!(coder_side.len(), 10, "{task}: one call per bred kernel");
        let distinct: std::collections::BTreeSet<&&CallKey> = coder_side.iter().collect();
        assert_eq!(
            distinct.len(),
            coder_side.len(),
            "{task}: a call was made twice"
        );
    }
    assert_eq!(run.status.as_str(), "finished");
}

#[test]
fn ctrl_c_stops_gracefully_and_resume_finishes_the_run() {
    if !have_nvrtc("ctrl_c") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(script(Duration::from_millis(250), false));
    let config = write_config(tmp.path(), &server.base_url);
    let db = format!("sqlite://{}", tmp.path().join("int.db").display());
    let child = {
        let mut c = ksmith(tmp.path(), &config, &db, &[]);
        c.args(new_run_args("intr"));
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let start = Instant::now();
    while server.requests.load(Ordering::SeqCst) < 5 {
        assert!(start.elapsed() < Duration::from_secs(30), "no progress");
        thread::sleep(Duration::from_millis(10));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let out = child.wait_with_output().expect("wait");
    let rep = report(&out);
    assert_eq!(out.status.code(), Some(3), "{rep:#}");
    assert_eq!(rep["status"], "interrupted", "{rep:#}");
    assert!(
        rep["harness_error"]
            .as_str()
            .unwrap_or("")
            .contains("interrupted by a signal"),
        "{rep:#}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--resume intr"), "{stderr}");
    {
        // Nothing in flight was lost: every call that reached the server is on record.
        let store = Store::open(&db).expect("open");
        let run = store.run_by_name("intr").expect("run");
        let recorded = store.llm_calls_of_run(run.id).expect("calls").len();
        assert_eq!(recorded, server.requests.load(Ordering::SeqCst));
        assert!(recorded < 18, "the signal came too late to test anything");
    }
    let out = run_to_end(
        ksmith(tmp.path(), &config, &db, &["--resume", "intr"]),
        Duration::from_secs(50),
    );
    let rep = report(&out);
    assert_eq!(out.status.code(), Some(0), "{rep:#}");
    let (calls, cands) = call_keys(&Store::open(&db).expect("open"), "intr");
    assert_eq!(calls.len(), 18);
    assert_eq!(cands.len(), 18);
}

#[test]
fn run_without_dry_run_on_a_machine_without_gpu_exits_3_before_any_llm_call() {
    if verifier::runtime::driver_present() {
        eprintln!("SKIPPED run_without_dry_run_without_gpu: this machine has a CUDA driver");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(script(Duration::ZERO, false));
    let config = write_config(tmp.path(), &server.base_url);
    let db = format!("sqlite://{}", tmp.path().join("nogpu.db").display());
    let out = run_to_end(
        ksmith(
            tmp.path(),
            &config,
            &db,
            &[
                "--model", "scripted", "--tasks", "swiglu", "--rounds", "2", "--name", "nogpu",
            ],
        ),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("GPU"), "{stderr}");
    assert!(
        stderr.contains("libcuda"),
        "says what was looked for: {stderr}"
    );
    assert!(
        stderr.contains("--dry-run"),
        "says what works instead: {stderr}"
    );
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        0,
        "no LLM call is paid for a run that cannot evaluate"
    );
    let store = Store::open(&db).expect("open");
    assert!(
        store.run_by_name("nogpu").is_err(),
        "no run is left behind to resume"
    );
}

/// `--gpus` on `run` and `replay`: malformed lists are usage errors (exit 2) before anything
/// runs; a well-formed list on a machine without a driver still gets the no-GPU error (exit 3,
/// naming what was looked for); on a machine with one, a GPU the driver does not see is exit 2.
#[test]
fn gpus_flag_is_checked_and_the_no_gpu_error_comes_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", tmp.path().join("g.db").display());
    let ksmith = |args: &[&str]| command().args(args).output().expect("run ksmith");
    for bad in ["x", "0,,1", "0,0", "-1", ""] {
        let flag = format!("--gpus={bad}");
        for out in [
            ksmith(&[
                "run", "--model", "m", "--tasks", "swiglu", "--db", &db, &flag,
            ]),
            ksmith(&["replay", "--run", "r", "--db", &db, &flag]),
        ] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "--gpus {bad:?}: {stderr}");
            assert!(
                stderr.contains("--gpus") && stderr.contains("all"),
                "names the flag and what it takes: {stderr}"
            );
        }
    }
    let out = ksmith(&["replay", "--run", "anything", "--db", &db, "--gpus", "0,63"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if verifier::runtime::driver_present() {
        // 63: more GPUs than any one machine here has.
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--gpus names GPU 63, but the driver sees"),
            "{stderr}"
        );
    } else {
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains("GPU") && stderr.contains("libcuda"),
            "{stderr}"
        );
    }
}
