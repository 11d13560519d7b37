//! A synthetic but realistic results database: `tasks` tasks in five categories, one run per
//! agent, each an evolutionary search of several generations with LLM calls, failures of every
//! kind, a quarantined result and baselines missing for some tasks. Deterministic.
#![allow(dead_code)]

use bench_suite::store::*;
use serde_json::json;

/// xorshift64*: a deterministic stream without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub const CATEGORIES: [&str; 5] = [
    "gemm",
    "normalization",
    "attention",
    "quantization",
    "reduction",
];

/// Builds the fixture; returns the run names (one per agent, skill descending).
pub fn build(store: &Store, tasks: usize, agents: &[(&str, f64)]) -> Vec<String> {
    build_runs(store, tasks, agents, "search")
}

/// As [`build`], with runs named `PREFIX-AGENT`; tasks and the GPU are shared between calls.
pub fn build_runs(
    store: &Store,
    tasks: usize,
    agents: &[(&str, f64)],
    prefix: &str,
) -> Vec<String> {
    let gpu = store
        .write(|tx| {
            tx.upsert_gpu(&NewGpu {
                gpu_key: "NVIDIA H100 80GB HBM3|sm_90|driver 570.86".into(),
                name: "NVIDIA H100 80GB HBM3".into(),
                compute_capability: "9.0".into(),
                sm_count: Some(132),
                memory_bytes: Some(85_520_809_984),
                driver_version: "570.86".into(),
                details: json!({"bandwidth_gbs": 3010.0}),
            })
        })
        .expect("gpu");
    let task_ids: Vec<i64> = (0..tasks)
        .map(|i| {
            store
                .write(|tx| {
                    tx.upsert_task(&NewTask {
                        name: format!("{}_{i:02}", CATEGORIES[i % 5]),
                        category: CATEGORIES[i % 5].into(),
                        title: format!("Task {i}"),
                        content_hash: format!("hash{i}"),
                        details: json!({}),
                    })
                })
                .expect("task")
        })
        .collect();
    let mut names = Vec::new();
    for (a, (agent, skill)) in agents.iter().enumerate() {
        let name = format!("{prefix}-{agent}");
        let mut rng = Rng::new(a as u64 + 7);
        store
            .write(|tx| {
                let run = tx.create_run(&NewRun {
                    name: name.clone(),
                    kind: "agent".into(),
                    agent: agent.to_string(),
                    suite: "seed".into(),
                    config: json!({"generations": 5}),
                    git_rev: "deadbeef".into(),
                })?;
                for (i, &task_id) in task_ids.iter().enumerate() {
                    // The reference seed: counted only in bench runs.
                    let (seed, _) = tx.add_candidate(&NewCandidate {
                        run_id: run.id,
                        task_id,
                        origin: Origin::Reference,
                        source: format!("// reference {i}"),
                        plan: "[[launch]]".into(),
                        generation: 0,
                        island: 0,
                        llm_call_id: None,
                        parents: vec![],
                        notes: json!({}),
                    })?;
                    let has_eager = i % 4 != 3;
                    let has_compile = i % 3 != 2;
                    let mut parent = seed;
                    for g in 0..5i64 {
                        for k in 0..3 {
                            let call = tx.add_llm_call(&NewLlmCall {
                                run_id: run.id,
                                task_id: Some(task_id),
                                role: if k == 0 { "coder" } else { "judge" }.into(),
                                provider: "fixture".into(),
                                model: agent.to_string(),
                                tokens_in: 1500 + (rng.next() % 3000) as i64,
                                tokens_out: 400 + (rng.next() % 1200) as i64,
                                cost_usd: 0.002 + rng.unit() * 0.01,
                                latency_ms: 800.0 + rng.unit() * 4000.0,
                                request: "{}".into(),
                                response: String::new(),
                                error: None,
                            })?;
                            let (cand, _) = tx.add_candidate(&NewCandidate {
                                run_id: run.id,
                                task_id,
                                origin: Origin::Llm,
                                source: format!("// {agent} task {i} gen {g} k {k}"),
                                plan: "[[launch]]".into(),
                                generation: g,
                                island: k,
                                llm_call_id: Some(call),
                                parents: vec![Parent {
                                    candidate_id: parent,
                                    relation: "mutation".into(),
                                }],
                                notes: json!({}),
                            })?;
                            let roll = rng.unit();
                            let verdict = if roll < skill * (0.15 + 0.05 * g as f64) {
                                Verdict::Correct
                            } else {
                                [
                                    Verdict::CompileError,
                                    Verdict::WrongOutput,
                                    Verdict::RuntimeFault,
                                    Verdict::InvalidPlan,
                                    Verdict::Timeout,
                                ][(rng.next() % 5) as usize]
                            };
                            let correct = verdict == Verdict::Correct;
                            let speed = (0.4 + rng.unit() * 1.4 * skill * (1.0 + g as f64 * 0.25))
                                .max(0.05);
                            let quarantined = correct && i == 7 && g == 4 && k == 0;
                            tx.add_evaluation(&NewEvaluation {
                                candidate_id: cand,
                                gpu_id: Some(gpu),
                                cache_key: format!("{agent}-{i}-{g}-{k}"),
                                protocol: "strict-v1".into(),
                                verdict,
                                details: json!({}),
                                compile_ms: Some(300.0 + rng.unit() * 900.0),
                                timings: vec![],
                                speedup_ref: correct.then_some(if quarantined {
                                    40.0
                                } else {
                                    speed
                                }),
                                speedup_eager: (correct && has_eager).then_some(speed * 1.3),
                                speedup_compile: (correct && has_compile).then_some(speed * 0.9),
                                sol_pct: correct.then_some((speed * 35.0).min(98.0)),
                                quarantined,
                                quarantine_reason: quarantined
                                    .then(|| "faster than 10x baseline".to_string()),
                                cached_from: None,
                            })?;
                            if correct {
                                parent = cand;
                            }
                        }
                    }
                }
                Ok(())
            })
            .expect("fixture run");
        names.push(name);
    }
    names
}
