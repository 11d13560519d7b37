//! The result store on SQLite and PostgreSQL through the same code path.

mod common;

use bench_suite::store::*;
use serde_json::json;
use std::time::Duration;

fn gpu() -> NewGpu {
    NewGpu {
        gpu_key: "NVIDIA H100 80GB HBM3|sm_90|driver 550.54".into(),
        name: "NVIDIA H100 80GB HBM3".into(),
        compute_capability: "9.0".into(),
        sm_count: Some(132),
        memory_bytes: Some(85_520_809_984),
        driver_version: "550.54".into(),
        details: json!({"bandwidth_gbs": 3010.5, "peaks": {"fp32_tflops": 51.2}}),
    }
}

fn task(name: &str, hash: &str) -> NewTask {
    NewTask {
        name: name.into(),
        category: "normalization".into(),
        title: format!("title of {name}"),
        content_hash: hash.into(),
        details: json!({"shapes": ["small", "serving"]}),
    }
}

fn new_run(name: &str) -> NewRun {
    NewRun {
        name: name.into(),
        kind: "agent".into(),
        agent: "model-a".into(),
        suite: "seed".into(),
        config: json!({"rounds": 3, "budget_usd": 1.5}),
        git_rev: "abc123".into(),
    }
}

fn candidate(run_id: i64, task_id: i64, source: &str, parents: Vec<Parent>) -> NewCandidate {
    NewCandidate {
        run_id,
        task_id,
        origin: Origin::Llm,
        source: source.into(),
        plan: "[[launch]]\nkernel = \"k\"\ngrid = [1]\nblock = [256]\nargs = []\n".into(),
        generation: parents.len() as i64,
        island: 1,
        llm_call_id: None,
        parents,
        notes: json!({}),
    }
}

fn evaluation(candidate_id: i64, gpu_id: i64, key: &str, verdict: Verdict) -> NewEvaluation {
    NewEvaluation {
        candidate_id,
        gpu_id: Some(gpu_id),
        cache_key: key.into(),
        protocol: "strict-v1".into(),
        verdict,
        details: json!({"note": "ok"}),
        compile_ms: Some(123.5),
        timings: vec![ShapeTiming {
            shape: "small".into(),
            median_us: 10.25,
            p20_us: 10.0,
            p80_us: 10.5,
            min_us: 9.75,
            samples: 100,
            reference_us: Some(20.5),
            eager_us: Some(30.0),
            compile_us: None,
            floor_us: Some(5.0),
        }],
        speedup_ref: Some(2.0),
        speedup_eager: Some(2.9),
        speedup_compile: None,
        sol_pct: Some(48.8),
        quarantined: false,
        quarantine_reason: None,
        cached_from: None,
    }
}

fn counts(store: &Store) -> std::collections::HashMap<&'static str, i64> {
    store.table_counts().expect("counts").into_iter().collect()
}

fn schema_is_created_once(url: &str) {
    {
        let store = Store::open(url).expect("open");
        let c = counts(&store);
        assert_eq!(c["_sqlx_migrations"], 1);
        assert_eq!(c["runs"], 0);
    }
    // Reopening applies nothing new and keeps the data.
    let store = Store::open(url).expect("reopen");
    assert_eq!(counts(&store)["_sqlx_migrations"], 1);
}
both_backends!(schema_is_created_once, super::schema_is_created_once);

fn rows_round_trip(url: &str) {
    let store = Store::open(url).expect("open");
    let (gpu_id, task_id, run) = store
        .write(|tx| {
            let g = tx.upsert_gpu(&gpu())?;
            assert_eq!(tx.upsert_gpu(&gpu())?, g, "same GPU key, same row");
            let t = tx.upsert_task(&task("rmsnorm", "h1"))?;
            assert_eq!(tx.upsert_task(&task("rmsnorm", "h1"))?, t);
            assert_ne!(
                tx.upsert_task(&task("rmsnorm", "h2"))?,
                t,
                "new content, new row"
            );
            Ok((g, t, tx.create_run(&new_run("r1"))?))
        })
        .expect("write");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.run, new_run("r1"));
    assert!(matches!(
        store.write(|tx| tx.create_run(&new_run("r1"))),
        Err(StoreError::RunExists(n)) if n == "r1"
    ));

    let call = NewLlmCall {
        run_id: run.id,
        task_id: Some(task_id),
        role: "coder".into(),
        provider: "local".into(),
        model: "m-7b".into(),
        tokens_in: 1200,
        tokens_out: 800,
        cost_usd: 0.0125,
        latency_ms: 2345.5,
        request: r#"{"messages":[{"role":"user","content":"write a kernel"}]}"#.into(),
        response: "```cuda\n__global__ void k() {}\n```".into(),
        error: None,
    };
    let (call_id, root, child, eval_id) = store
        .write(|tx| {
            let call_id = tx.add_llm_call(&call)?;
            let mut c = candidate(run.id, task_id, "__global__ void k() {}", vec![]);
            c.llm_call_id = Some(call_id);
            let (root, fresh) = tx.add_candidate(&c)?;
            assert!(fresh);
            assert_eq!(
                tx.add_candidate(&c)?,
                (root, false),
                "same content, same row"
            );
            let (child, _) = tx.add_candidate(&candidate(
                run.id,
                task_id,
                "__global__ void k() { /* v2 */ }",
                vec![Parent {
                    candidate_id: root,
                    relation: "mutation".into(),
                }],
            ))?;
            let e = evaluation(child, gpu_id, "key-1", Verdict::Correct);
            let eval_id = tx.add_evaluation(&e)?;
            assert_eq!(tx.add_evaluation(&e)?, eval_id, "same key, same row");
            tx.add_profile(&NewProfile {
                evaluation_id: eval_id,
                tool: "ncu".into(),
                kernel: "k".into(),
                metrics: json!({"dram__throughput.avg.pct_of_peak_sustained_elapsed": 81.5}),
                raw: "csv...".into(),
            })?;
            Ok((call_id, root, child, eval_id))
        })
        .expect("write candidates");

    let cands = store.candidates_of_run(run.id).expect("candidates");
    assert_eq!(cands.len(), 2);
    assert_eq!(cands[0].id, root);
    assert_eq!(cands[0].candidate.llm_call_id, Some(call_id));
    assert_eq!(
        cands[0].content_hash,
        candidate_hash(&cands[0].candidate.source, &cands[0].candidate.plan)
    );
    assert_eq!(cands[1].id, child);
    assert_eq!(
        cands[1].candidate.parents,
        vec![Parent {
            candidate_id: root,
            relation: "mutation".into()
        }]
    );
    let evals = store.evaluations_of_run(run.id).expect("evals");
    assert_eq!(evals.len(), 1);
    assert_eq!(evals[0].id, eval_id);
    assert_eq!(
        evals[0].evaluation,
        evaluation(child, gpu_id, "key-1", Verdict::Correct)
    );
    let calls = store.llm_calls_of_run(run.id).expect("calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].call, call);
    assert_eq!(store.profiles_of_run(run.id).expect("profiles").len(), 1);
    assert_eq!(store.gpus_of_run(run.id).expect("gpus")[0].gpu, gpu());
    assert_eq!(
        store.tasks_of_run(run.id).expect("tasks")[0].task,
        task("rmsnorm", "h1")
    );

    // Lineage stays within one run and task.
    let other = store.write(|tx| tx.create_run(&new_run("r2"))).expect("r2");
    let err = store
        .write(|tx| {
            tx.add_candidate(&candidate(
                other.id,
                task_id,
                "x",
                vec![Parent {
                    candidate_id: root,
                    relation: "crossover".into(),
                }],
            ))
        })
        .expect_err("foreign parent");
    assert!(
        matches!(err, StoreError::ForeignParent { parent, .. } if parent == root),
        "{err}"
    );

    store
        .write(|tx| tx.set_run_status(run.id, RunStatus::Finished))
        .expect("status");
    let r = store.run_by_name("r1").expect("run");
    assert_eq!(r.status, RunStatus::Finished);
    assert!(r.finished_at_ms.is_some());
    assert_eq!(store.latest_run().expect("latest").run.name, "r2");
    assert!(matches!(
        store.run_by_name("nope"),
        Err(StoreError::NoSuchRun(_))
    ));

    // A resumed search reads back one task's population with its evaluations.
    let state = store
        .candidates_of_task(run.id, task_id)
        .expect("task state");
    assert_eq!(state.len(), 2);
    assert_eq!((state[0].0.id, state[0].1.len()), (root, 0));
    assert_eq!((state[1].0.id, state[1].1.len()), (child, 1));
    assert_eq!(state[1].1[0].id, eval_id);
    assert!(store
        .candidates_of_task(other.id, task_id)
        .expect("empty")
        .is_empty());
}
both_backends!(rows_round_trip, super::rows_round_trip);

fn dropped_transaction_writes_nothing(url: &str) {
    let store = Store::open(url).expect("open");
    {
        let mut tx = store.transaction().expect("tx");
        tx.create_run(&new_run("ghost")).expect("create");
        tx.upsert_gpu(&gpu()).expect("gpu");
        // dropped without commit
    }
    let result: Result<()> = store.write(|tx| {
        tx.create_run(&new_run("ghost2"))?;
        Err(StoreError::NoRuns)
    });
    assert!(result.is_err());
    let c = counts(&store);
    assert_eq!(c["runs"], 0);
    assert_eq!(c["gpus"], 0);
}
both_backends!(
    dropped_transaction_writes_nothing,
    super::dropped_transaction_writes_nothing
);

fn evaluation_cache_is_content_addressed(url: &str) {
    let store = Store::open(url).expect("open");
    let source = "__global__ void k() {}";
    let plan = "[[launch]]";
    let key = EvalKey {
        candidate_hash: &candidate_hash(source, plan),
        task_hash: "h1",
        gpu_key: "gpu-a",
        protocol: "strict-v1",
    }
    .digest();
    let (g, t) = store
        .write(|tx| Ok((tx.upsert_gpu(&gpu())?, tx.upsert_task(&task("t", "h1"))?)))
        .expect("setup");
    assert!(store.cached_evaluation(&key).expect("lookup").is_none());
    let r1 = store
        .write(|tx| tx.create_run(&new_run("a")))
        .expect("run a");
    let first = store
        .write(|tx| {
            let (c, _) = tx.add_candidate(&NewCandidate {
                plan: plan.into(),
                ..candidate(r1.id, t, source, vec![])
            })?;
            tx.add_evaluation(&evaluation(c, g, &key, Verdict::Correct))
        })
        .expect("eval");
    // A second run meets the same kernel: the cache serves it and the copy says where from.
    let r2 = store
        .write(|tx| tx.create_run(&new_run("b")))
        .expect("run b");
    let cached = store.cached_evaluation(&key).expect("lookup").expect("hit");
    assert_eq!(cached.id, first);
    let copy = store
        .write(|tx| {
            let (c, _) = tx.add_candidate(&NewCandidate {
                plan: plan.into(),
                ..candidate(r2.id, t, source, vec![])
            })?;
            tx.reuse_evaluation(c, &cached)
        })
        .expect("reuse");
    let e2 = store.evaluations_of_run(r2.id).expect("evals");
    assert_eq!(e2.len(), 1);
    assert_eq!(e2[0].id, copy);
    assert_eq!(e2[0].evaluation.cached_from, Some(first));
    assert_eq!(e2[0].evaluation.verdict, Verdict::Correct);
    assert_eq!(e2[0].evaluation.speedup_ref, Some(2.0));
    // Copies of copies still point at the original.
    let again = store.cached_evaluation(&key).expect("lookup").expect("hit");
    assert_eq!(again.id, first);

    // Timeouts are never served from the cache.
    let tkey = "timeout-key";
    store
        .write(|tx| {
            let (c, _) = tx.add_candidate(&candidate(r1.id, t, "slow", vec![]))?;
            tx.add_evaluation(&evaluation(c, g, tkey, Verdict::Timeout))
        })
        .expect("timeout eval");
    assert!(store.cached_evaluation(tkey).expect("lookup").is_none());
}
both_backends!(
    evaluation_cache_is_content_addressed,
    super::evaluation_cache_is_content_addressed
);

fn work_queue_claims_in_order_and_resumes(url: &str) {
    let store = Store::open(url).expect("open");
    let run = store.write(|tx| tx.create_run(&new_run("q"))).expect("run");
    let items: Vec<WorkItem> = (0..5)
        .map(|i| WorkItem {
            key: format!("task-{i}"),
            task_id: None,
            payload: json!({"i": i}),
        })
        .collect();
    assert_eq!(store.add_items(run.id, &items).expect("add"), 5);
    assert_eq!(
        store.add_items(run.id, &items).expect("re-add"),
        0,
        "keys are unique"
    );
    let w1 = WorkerId::named("host-a/1/1");
    let w2 = WorkerId::named("host-b/2/2");
    let c0 = store
        .claim_next(run.id, &w1, DEFAULT_LEASE)
        .expect("claim")
        .expect("item");
    assert_eq!((c0.seq, c0.item_key.as_str(), c0.attempt), (0, "task-0", 1));
    assert_eq!(c0.payload, json!({"i": 0}));
    let c1 = store
        .claim_next(run.id, &w2, DEFAULT_LEASE)
        .expect("claim")
        .expect("item");
    assert_eq!(c1.seq, 1);
    store
        .write(|tx| tx.finish_item(&c0, ItemStatus::Done, Some(&json!({"best": 1.5}))))
        .expect("finish");
    // Finishing twice, or finishing someone else's claim, is refused.
    let twice = store.write(|tx| tx.finish_item(&c0, ItemStatus::Done, None));
    assert!(matches!(twice, Err(StoreError::ClaimLost { seq: 0, .. })));
    let stolen = Claim {
        worker: w1.clone(),
        ..c1.clone()
    };
    assert!(matches!(
        store.write(|tx| tx.finish_item(&stolen, ItemStatus::Done, None)),
        Err(StoreError::ClaimLost { .. })
    ));
    let p = store.progress(run.id).expect("progress");
    assert_eq!((p.pending, p.claimed, p.done, p.failed), (3, 1, 1, 0));

    // An expired lease lets the next claimer take the item over; the old holder then loses it.
    let c2 = store
        .claim_next(run.id, &w1, Duration::from_millis(0))
        .expect("claim")
        .expect("item");
    assert_eq!(c2.seq, 2);
    std::thread::sleep(Duration::from_millis(5));
    let c2b = store
        .claim_next(run.id, &w2, DEFAULT_LEASE)
        .expect("claim")
        .expect("item");
    assert_eq!((c2b.seq, c2b.attempt), (2, 2));
    assert!(matches!(
        store.renew_claim(&c2, DEFAULT_LEASE),
        Err(StoreError::ClaimLost { .. })
    ));
    store
        .renew_claim(&c2b, DEFAULT_LEASE)
        .expect("renew own claim");

    // Resume hands back items of workers that are gone (here: w2's claims are live by lease;
    // mark the run interrupted and expire them by hand through a zero-lease renew).
    store
        .renew_claim(&c1, Duration::from_millis(0))
        .expect("expire c1");
    std::thread::sleep(Duration::from_millis(5));
    store
        .write(|tx| tx.set_run_status(run.id, RunStatus::Interrupted))
        .expect("interrupt");
    let report = store.resume_run("q").expect("resume");
    assert_eq!(report.run.status, RunStatus::Running);
    assert_eq!(report.reclaimed.len(), 1);
    assert_eq!(report.reclaimed[0].0, 1);
    assert_eq!(report.reclaimed[0].2, w2.as_str());
    assert_eq!(report.progress.pending, 3);

    // A graceful stop releases what this worker holds and marks the run interrupted.
    assert_eq!(store.interrupt_run(run.id, &w2).expect("interrupt"), 1);
    assert_eq!(
        store.run_by_name("q").expect("run").status,
        RunStatus::Interrupted
    );
    assert_eq!(store.progress(run.id).expect("progress").claimed, 0);
    let mut seen = vec![];
    while let Some(c) = store.claim_next(run.id, &w1, DEFAULT_LEASE).expect("claim") {
        seen.push(c.seq);
        let status = if c.seq == 4 {
            ItemStatus::Failed
        } else {
            ItemStatus::Done
        };
        store
            .write(|tx| tx.finish_item(&c, status, Some(&json!({"error": "x"}))))
            .expect("finish");
    }
    assert_eq!(seen, vec![1, 2, 3, 4]);
    assert!(store.finish_run_if_complete(run.id).expect("finish run"));
    assert_eq!(
        store.run_by_name("q").expect("run").status,
        RunStatus::Finished
    );
    let items = store.items(run.id).expect("items");
    assert_eq!(items[4].status, ItemStatus::Failed);
    assert_eq!(items[4].outcome, Some(json!({"error": "x"})));
    assert_eq!(items[0].outcome, Some(json!({"best": 1.5})));
}
both_backends!(
    work_queue_claims_in_order_and_resumes,
    super::work_queue_claims_in_order_and_resumes
);

fn concurrent_workers_never_share_an_item(url: &str) {
    let store = Store::open(url).expect("open");
    let run = store.write(|tx| tx.create_run(&new_run("c"))).expect("run");
    let items: Vec<WorkItem> = (0..60)
        .map(|i| WorkItem {
            key: format!("k{i}"),
            task_id: None,
            payload: json!(null),
        })
        .collect();
    store.add_items(run.id, &items).expect("add");
    let claimed: Vec<Vec<i64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let url = url.to_string();
                s.spawn(move || {
                    // Separate stores: separate pools, as separate processes would have.
                    let store = Store::open(&url).expect("open");
                    let worker = WorkerId::named(format!("w{w}"));
                    let mut mine = vec![];
                    while let Some(c) = store
                        .claim_next(run.id, &worker, DEFAULT_LEASE)
                        .expect("claim")
                    {
                        store
                            .write(|tx| tx.finish_item(&c, ItemStatus::Done, None))
                            .expect("finish");
                        mine.push(c.seq);
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let mut all: Vec<i64> = claimed.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (0..60).collect::<Vec<_>>());
    assert_eq!(store.progress(run.id).expect("progress").done, 60);
}
both_backends!(
    concurrent_workers_never_share_an_item,
    super::concurrent_workers_never_share_an_item
);

fn export_import_round_trip(url: &str) {
    let store = Store::open(url).expect("open");
    let run = store
        .write(|tx| tx.create_run(&new_run("exp")))
        .expect("run");
    let (g, t) = store
        .write(|tx| Ok((tx.upsert_gpu(&gpu())?, tx.upsert_task(&task("t", "h1"))?)))
        .expect("setup");
    store
        .add_items(
            run.id,
            &[
                WorkItem {
                    key: "t".into(),
                    task_id: Some(t),
                    payload: json!({"k": 1}),
                },
                WorkItem {
                    key: "u".into(),
                    task_id: Some(t),
                    payload: json!({}),
                },
            ],
        )
        .expect("items");
    let claim = store
        .claim_next(run.id, &WorkerId::named("x/1/1"), DEFAULT_LEASE)
        .expect("claim")
        .expect("item");
    store
        .write(|tx| {
            let call = tx.add_llm_call(&NewLlmCall {
                run_id: run.id,
                task_id: Some(t),
                role: "coder".into(),
                provider: "p".into(),
                model: "m".into(),
                tokens_in: 10,
                tokens_out: 20,
                cost_usd: 0.5,
                latency_ms: 1.0,
                request: "{}".into(),
                response: "r".into(),
                error: Some("HTTP 429".into()),
            })?;
            let (a, _) = tx.add_candidate(&NewCandidate {
                llm_call_id: Some(call),
                ..candidate(run.id, t, "a", vec![])
            })?;
            let (b, _) = tx.add_candidate(&candidate(
                run.id,
                t,
                "b",
                vec![Parent {
                    candidate_id: a,
                    relation: "mutation".into(),
                }],
            ))?;
            let e = tx.add_evaluation(&evaluation(b, g, "kb", Verdict::Correct))?;
            tx.add_evaluation(&NewEvaluation {
                cached_from: Some(e),
                ..evaluation(a, g, "ka", Verdict::WrongOutput)
            })?;
            tx.add_profile(&NewProfile {
                evaluation_id: e,
                tool: "ncu".into(),
                kernel: "k".into(),
                metrics: json!({"x": 1}),
                raw: String::new(),
            })?;
            tx.finish_item(&claim, ItemStatus::Done, Some(&json!({"ok": true})))
        })
        .expect("content");
    let export = store.export_run("exp").expect("export");
    let text = export.to_json().expect("json");
    let parsed = RunExport::from_json(&text, "exp.json").expect("parse");
    assert_eq!(parsed, export);

    // Into a fresh SQLite database (moving results between machines) and back into this one
    // under another name.
    let target = common::sqlite();
    let other = Store::open(&target.url).expect("open target");
    other.import_run(&parsed, None, "exp.json").expect("import");
    let again = other.export_run("exp").expect("re-export");
    assert_same_content(&export, &again);
    store
        .import_run(&parsed, Some("exp-copy"), "exp.json")
        .expect("import copy");
    let copy = store.export_run("exp-copy").expect("export copy");
    assert_same_content(&export, &copy);
    assert!(matches!(
        store.import_run(&parsed, None, "exp.json"),
        Err(StoreError::RunExists(_))
    ));
}
both_backends!(export_import_round_trip, super::export_import_round_trip);

/// Compares two exports ignoring ids and the run name (which import may change).
fn assert_same_content(a: &RunExport, b: &RunExport) {
    assert_eq!(a.run.run.kind, b.run.run.kind);
    assert_eq!(a.run.run.config, b.run.run.config);
    assert_eq!(a.run.status, b.run.status);
    assert_eq!(a.run.created_at_ms, b.run.created_at_ms);
    assert_eq!(
        a.gpus.iter().map(|g| &g.gpu).collect::<Vec<_>>(),
        b.gpus.iter().map(|g| &g.gpu).collect::<Vec<_>>()
    );
    assert_eq!(
        a.tasks.iter().map(|t| &t.task).collect::<Vec<_>>(),
        b.tasks.iter().map(|t| &t.task).collect::<Vec<_>>()
    );
    let strip_items = |e: &RunExport| {
        e.items
            .iter()
            .map(|i| {
                (
                    i.seq,
                    i.item_key.clone(),
                    i.status,
                    i.payload.clone(),
                    i.outcome.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip_items(a), strip_items(b));
    let calls = |e: &RunExport| {
        e.llm_calls
            .iter()
            .map(|c| {
                (
                    c.call.role.clone(),
                    c.call.tokens_in,
                    c.call.cost_usd,
                    c.call.error.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(calls(a), calls(b));
    let cands = |e: &RunExport| {
        e.candidates
            .iter()
            .map(|c| {
                (
                    c.content_hash.clone(),
                    c.candidate.parents.len(),
                    c.candidate.llm_call_id.is_some(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(cands(a), cands(b));
    let evals = |e: &RunExport| {
        e.evaluations
            .iter()
            .map(|v| {
                let mut x = v.evaluation.clone();
                x.candidate_id = 0;
                x.gpu_id = None;
                x.cached_from = x.cached_from.map(|_| 0);
                x
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(evals(a), evals(b));
    assert_eq!(a.profiles.len(), b.profiles.len());
}

/// `samples/run_export_v1.json` was written by `ksmith db export` as of format version 1 (from
/// the run `export_import_round_trip` builds). A later build must still import it: exports are
/// how results move between machines, and those machines need not run the same build.
#[test]
fn a_version_1_export_from_an_earlier_build_still_imports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/samples/run_export_v1.json"
    );
    let text = std::fs::read_to_string(path).expect("sample");
    let export = RunExport::from_json(&text, path).expect("parse");
    assert_eq!((export.items.len(), export.candidates.len()), (2, 2));
    assert_eq!((export.evaluations.len(), export.profiles.len()), (2, 1));
    let db = common::sqlite();
    let store = Store::open(&db.url).expect("open");
    store.import_run(&export, None, path).expect("import");
    let again = store.export_run(&export.run.run.name).expect("re-export");
    assert_same_content(&export, &again);
}

#[test]
fn malformed_exports_are_reported_with_file_and_position() {
    let err = RunExport::from_json(
        "{\"format\": \"ksmith-run-export\",\n \"version\": }",
        "bad.json",
    )
    .expect_err("malformed");
    let msg = err.to_string();
    assert!(msg.contains("bad.json") && msg.contains("line 2"), "{msg}");
    let err = RunExport::from_json(
        r#"{"format": "ksmith-run-export", "version": 99}"#,
        "v.json",
    )
    .expect_err("version");
    assert!(
        matches!(err, StoreError::ExportVersion { found: 99, .. }),
        "{err}"
    );
    let err = RunExport::from_json(r#"{"format": "something-else", "version": 1}"#, "f.json")
        .expect_err("format");
    assert!(err.to_string().contains("something-else"), "{err}");
    let err = RunExport::from_json(
        r#"{"format": "ksmith-run-export", "version": 1, "run": 3}"#,
        "r.json",
    )
    .expect_err("shape");
    assert!(err.to_string().contains("r.json"), "{err}");
}

#[test]
fn urls_are_checked_and_passwords_hidden() {
    assert!(matches!(
        Store::open("mysql://x/y"),
        Err(StoreError::UnsupportedUrl { .. })
    ));
    assert_eq!(
        redact_url("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact_url("sqlite://results/k.db"), "sqlite://results/k.db");
    let err = Store::open("mysql://u:secret@db.invalid/x")
        .err()
        .expect("unsupported");
    let msg = err.to_string();
    assert!(
        !msg.contains("secret") && msg.contains("db.invalid"),
        "{msg}"
    );
}

#[test]
fn processes_opening_a_fresh_sqlite_file_at_once_all_succeed() {
    let db = common::sqlite();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| Store::open(&db.url).map(|_| ())))
            .collect();
        for h in handles {
            h.join().expect("thread").expect("open");
        }
    });
    let store = Store::open(&db.url).expect("open");
    assert_eq!(counts(&store)["_sqlx_migrations"], 1);
}

/// The agent may run its own tokio runtime; the blocking store must work (and drop) inside it.
#[test]
fn usable_from_inside_an_async_runtime() {
    let db = common::sqlite();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::open(&db.url).expect("open inside a runtime");
        let run = store
            .write(|tx| tx.create_run(&new_run("async")))
            .expect("write");
        {
            let mut tx = store.transaction().expect("tx");
            tx.create_run(&new_run("rolled-back")).expect("create");
            // dropped uncommitted inside the runtime
        }
        assert_eq!(store.runs().expect("runs").len(), 1);
        assert_eq!(store.run_by_name("async").expect("run").id, run.id);
        drop(store);
    });
}

/// Found by fuzzing (fuzz/fuzz_targets/run_export.rs kept its store in a thread-local): a Store
/// dropped by a thread-local destructor, after tokio's own thread-locals are gone, panicked in
/// Drop, which aborts the process.
#[test]
fn a_store_dropped_at_thread_exit_closes_cleanly() {
    thread_local! {
        static KEPT: std::cell::RefCell<Option<Store>> = const { std::cell::RefCell::new(None) };
    }
    let db = common::sqlite();
    let url = db.url.clone();
    std::thread::spawn(move || {
        // Touched before tokio's thread-locals, so destroyed after them (last in, first out).
        KEPT.with(|k| k.borrow_mut().take());
        let store = Store::open(&url).expect("open");
        store
            .write(|tx| tx.create_run(&new_run("kept")))
            .expect("write");
        KEPT.with(|k| *k.borrow_mut() = Some(store));
    })
    .join()
    .expect("the thread exits without panicking");
    let store = Store::open(&db.url).expect("reopen");
    assert_eq!(store.run_by_name("kept").expect("run").run.name, "kept");
}

fn heartbeat_keeps_a_long_item_claimed(url: &str) {
    let store = std::sync::Arc::new(Store::open(url).expect("open"));
    let run = store
        .write(|tx| tx.create_run(&new_run("hb")))
        .expect("run");
    store
        .add_items(
            run.id,
            &[WorkItem {
                key: "long".into(),
                task_id: None,
                payload: json!({}),
            }],
        )
        .expect("items");
    let lease = Duration::from_millis(600);
    let mine = WorkerId::named("me/1/1");
    let other = WorkerId::named("other/2/2");
    let claim = store
        .claim_next(run.id, &mine, lease)
        .expect("claim")
        .expect("item");
    let hb = heartbeat(&store, &claim, lease);
    std::thread::sleep(Duration::from_millis(1500)); // two and a half leases
    assert!(
        store
            .claim_next(run.id, &other, lease)
            .expect("claim")
            .is_none(),
        "still held"
    );
    assert!(!hb.lost());
    drop(hb);
    std::thread::sleep(Duration::from_millis(700));
    let taken = store
        .claim_next(run.id, &other, lease)
        .expect("claim")
        .expect("expired");
    assert_eq!((taken.seq, taken.attempt), (0, 2));
    // The original holder's heartbeat now finds its claim gone.
    let hb = heartbeat(&store, &claim, lease);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !hb.lost() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lost claim was never noticed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
both_backends!(
    heartbeat_keeps_a_long_item_claimed,
    super::heartbeat_keeps_a_long_item_claimed
);
