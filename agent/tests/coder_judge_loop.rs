//! The Coder/Judge loop against the scripted server and a scripted evaluator.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::llm::{LlmCallRecord, LlmClient, Profile};
use agent::prompt::{PromptContext, PromptRenderer, Rules, ShapeTiming, TaskContext};
use agent::{
    Budget, CandidateOutcome, CandidateRecord, CoderJudgeLoop, Evaluation, Evaluator,
    EvaluatorError, LoopObserver, LoopOutcome, LoopSettings, Seed, StopReason, Verdict,
    VerdictKind,
};
use support::{Captured, ScriptedServer, Step};

const TEST_LIMIT: Duration = Duration::from_secs(30);

/// Compile error when the source says BUG, a harness failure on FAULT, "compiled" on DRYRUN,
/// otherwise correct with the median given by a `// median_us=N` comment (reference: 500 µs).
struct ScriptedEvaluator {
    seen: Mutex<Vec<String>>,
}

impl Evaluator for ScriptedEvaluator {
    fn evaluate(
        &self,
        task_id: &str,
        source: &str,
        plan: &str,
    ) -> Result<Evaluation, EvaluatorError> {
        assert_eq!(task_id, "demo");
        assert!(plan.contains("[[launch]]"));
        self.seen.lock().expect("lock").push(source.to_string());
        if source.contains("FAULT") {
            return Err(EvaluatorError("NVRTC not found".into()));
        }
        if source.contains("BUG") {
            return Ok(Evaluation {
                verdict: Verdict::Checked(VerdictKind::CompileError),
                feedback: "kernel.cu(3): error: identifier \"BUG\" is undefined\n1 error detected"
                    .into(),
                timings: vec![],
                resources: None,
                profile_summary: None,
            });
        }
        if source.contains("DRYRUN") {
            return Ok(Evaluation {
                verdict: Verdict::Compiled,
                feedback: "compiled".into(),
                timings: vec![],
                resources: Some("k: 20 registers".into()),
                profile_summary: None,
            });
        }
        let median = source
            .split("median_us=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<f64>().ok())
            .expect("test kernels state their median");
        Ok(Evaluation {
            verdict: Verdict::CORRECT,
            feedback: "correct on 3 shapes x 3 seeds".into(),
            timings: vec![ShapeTiming {
                shape: "main".into(),
                median_us: Some(median),
                reference_us: Some(500.0),
                sol_pct: Some(50.0),
                floor_us: None,
            }],
            resources: Some("k: 32 registers, 0 spills".into()),
            profile_summary: None,
        })
    }
}

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    candidates: Mutex<Vec<u32>>,
}

impl LoopObserver for Recorder {
    fn on_llm_call(&self, task_id: &str, record: &LlmCallRecord) {
        assert_eq!(task_id, "demo");
        self.calls.lock().expect("lock").push(record.role.clone());
    }
    fn on_candidate(&self, _task_id: &str, c: &CandidateRecord) {
        self.candidates.lock().expect("lock").push(c.round);
    }
}

fn kernel_reply(tag: &str) -> Step {
    Step::ok(&format!(
        "Version {tag}.\n\n```cuda\n// {tag}\nextern \"C\" __global__ void k(float* y, int n) {{ if (threadIdx.x < n) y[threadIdx.x] = 0.f; }}\n```\n\n```toml\n[[launch]]\nkernel = \"k\"\ngrid = [1]\nblock = [32]\nargs = [\"y\", \"N\"]\n```\n"
    ))
}

fn judge_reply(json: &str) -> Step {
    Step::ok(&format!("<think>hmm</think>\n```json\n{json}\n```"))
}

fn context() -> PromptContext {
    PromptContext {
        task: TaskContext {
            id: "demo".into(),
            title: "Zero fill".into(),
            category: "test".into(),
            spec_py: "class Model: ...".into(),
            tolerance: "exact".into(),
            ..TaskContext::default()
        },
        rules: Rules {
            header_allowlist: vec!["cuda_fp16.h".into()],
            ..Rules::default()
        },
        ..PromptContext::default()
    }
}

struct Harness {
    server: ScriptedServer,
    evaluator: Arc<ScriptedEvaluator>,
    recorder: Arc<Recorder>,
    outcome: LoopOutcome,
}

async fn run(script: Vec<Step>, budget: Budget) -> Harness {
    run_seeded(script, budget, None).await
}

async fn run_seeded(script: Vec<Step>, budget: Budget, seed: Option<Seed>) -> Harness {
    let server = ScriptedServer::start(script);
    let mut p = Profile::new(&server.base_url, "m");
    p.backoff_base_ms = 10;
    p.max_retries = 0;
    p.price_input_per_mtok = 2.0;
    p.price_output_per_mtok = 8.0;
    let evaluator = Arc::new(ScriptedEvaluator {
        seen: Mutex::new(vec![]),
    });
    let recorder = Arc::new(Recorder::default());
    let lp = CoderJudgeLoop {
        coder: LlmClient::new("coder", p.clone(), None).expect("client"),
        judge: LlmClient::new("judge", p, None).expect("client"),
        renderer: Arc::new(PromptRenderer::builtin().expect("templates")),
        evaluator: evaluator.clone(),
        observer: recorder.clone(),
        budget,
        settings: LoopSettings::default(),
    };
    let outcome = tokio::time::timeout(TEST_LIMIT, lp.run_from("demo", context(), seed))
        .await
        .expect("loop finished within the test limit");
    Harness {
        server,
        evaluator,
        recorder,
        outcome,
    }
}

fn prompt_of(r: &Captured) -> String {
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("request is JSON");
    body["messages"][0]["content"]
        .as_str()
        .expect("content")
        .to_string()
}

fn rounds(n: u32) -> Budget {
    Budget {
        max_rounds: n,
        ..Budget::default()
    }
}

#[tokio::test]
async fn compile_error_is_fixed_and_the_best_is_kept() {
    let h = run(
        vec![
            kernel_reply("v1 BUG"),
            judge_reply(r#"{"critical_issue": "BUG is not declared", "why_it_matters": "no compile", "minimal_fix_hint": "remove it"}"#),
            kernel_reply("v2 median_us=400"),
            judge_reply(r#"{"bottleneck": "one warp only", "optimisation": "more blocks"}"#),
            kernel_reply("v3 median_us=450"),
            judge_reply(r#"{"bottleneck": "still one warp", "optimisation": "grid-stride"}"#),
            kernel_reply("v4 median_us=250"),
        ],
        rounds(4),
    )
    .await;
    let o = &h.outcome;
    assert_eq!(o.stop, StopReason::RoundsDone);
    assert_eq!(o.candidates.len(), 4);
    let verdicts: Vec<_> = o
        .candidates
        .iter()
        .map(|c| c.evaluation().map(|e| e.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            Some(Verdict::Checked(VerdictKind::CompileError)),
            Some(Verdict::CORRECT),
            Some(Verdict::CORRECT),
            Some(Verdict::CORRECT)
        ]
    );
    assert_eq!(o.best().expect("a best").round, 4);
    let roles: Vec<_> = o.llm_calls.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(
        roles,
        [
            "coder",
            "judge_correction",
            "coder",
            "judge_optimization",
            "coder",
            "judge_optimization",
            "coder"
        ]
    );
    assert_eq!(*h.recorder.calls.lock().expect("lock"), roles);
    assert_eq!(*h.recorder.candidates.lock().expect("lock"), [1, 2, 3, 4]);
    assert_eq!(h.evaluator.seen.lock().expect("lock").len(), 4);
    assert_eq!(o.spend.llm_calls, 7);
    assert_eq!((o.spend.tokens_in, o.spend.tokens_out), (700, 350));
    assert!((o.spend.usd - 7.0 * 0.0006).abs() < 1e-9);

    let reqs = h.server.requests();
    assert_eq!(reqs.len(), 7, "no Judge call after the last round");
    let p: Vec<String> = reqs.iter().map(prompt_of).collect();
    // Round 1 failure goes to the Judge in correction mode with the compile log...
    assert!(p[1].contains("identifier \"BUG\" is undefined"), "{}", p[1]);
    assert!(p[1].contains("// v1 BUG"));
    // ...and round 2's Coder gets the log, the failing code and the Judge's diagnosis.
    assert!(p[2].contains("## Your job: fix this kernel"));
    assert!(p[2].contains("identifier \"BUG\" is undefined"));
    assert!(p[2].contains("critical_issue: BUG is not declared"));
    assert!(
        p[2].contains("- round 1 (initial): compile_error — kernel.cu(3)"),
        "{}",
        p[2]
    );
    // The correct kernel goes to the Judge in optimization mode with its timings.
    assert!(
        p[3].contains("| main | 400 | 500 | 1.25x | 50.0% |"),
        "{}",
        p[3]
    );
    assert!(p[4].contains("make this correct kernel faster"));
    assert!(p[4].contains("bottleneck: one warp only"));
    assert_eq!(o.candidates[2].parent_round, Some(2));
    // v3 was slower: the best stays v2, and the next optimization starts from v2, not v3.
    let job = p[6].split("## Your job").nth(1).expect("job section");
    assert!(
        job.contains("// v2 median_us=400") && !job.contains("// v3"),
        "{job}"
    );
    assert!(p[5].contains("// v2 median_us=400"));
    assert_eq!(o.candidates[3].parent_round, Some(2));
    assert!(p[6].contains("## Best kernel so far"));
    assert!(
        p[6].contains("- round 3 (optimize): correct, speedup 1.11x — bottleneck: one warp only"),
        "{}",
        p[6]
    );
}

#[tokio::test]
async fn malformed_reply_becomes_a_notice_not_an_evaluation() {
    let h = run(
        vec![
            Step::ok("I would use shared memory here. Let me know if you want code!"),
            kernel_reply("ok median_us=100"),
        ],
        rounds(2),
    )
    .await;
    let o = &h.outcome;
    assert!(matches!(
        o.candidates[0].outcome,
        CandidateOutcome::Malformed(_)
    ));
    assert!(o.candidates[0]
        .raw_reply
        .as_deref()
        .is_some_and(|r| r.contains("shared memory")));
    assert_eq!(h.evaluator.seen.lock().expect("lock").len(), 1);
    let reqs = h.server.requests();
    assert_eq!(reqs.len(), 2, "no Judge for a reply without code");
    let p = prompt_of(&reqs[1]);
    assert!(p.contains("## Your previous reply could not be used"));
    assert!(p.contains("no CUDA code block"));
    assert!(p.contains("Write a first kernel"));
    assert_eq!(o.best().expect("best").round, 2);
}

#[tokio::test]
async fn budgets_stop_the_loop() {
    let failing = || {
        (0..6)
            .flat_map(|_| {
                [
                    kernel_reply("BUG"),
                    judge_reply(r#"{"critical_issue": "x"}"#),
                ]
            })
            .collect::<Vec<_>>()
    };
    let h = run(
        failing(),
        Budget {
            max_rounds: 10,
            max_llm_calls: Some(3),
            ..Budget::default()
        },
    )
    .await;
    assert_eq!(h.outcome.stop, StopReason::CallBudget);
    assert_eq!(h.server.requests().len(), 3);
    assert!(h.outcome.best.is_none());

    // $0.0006 per call: the second call crosses $0.001.
    let h = run(
        failing(),
        Budget {
            max_rounds: 10,
            max_usd: Some(0.001),
            ..Budget::default()
        },
    )
    .await;
    assert_eq!(h.outcome.stop, StopReason::DollarBudget);
    assert_eq!(h.server.requests().len(), 2);

    let h = run(
        failing(),
        Budget {
            max_rounds: 10,
            max_tokens: Some(150),
            ..Budget::default()
        },
    )
    .await;
    assert_eq!(h.outcome.stop, StopReason::TokenBudget);
    assert_eq!(h.server.requests().len(), 1);

    let h = run(
        failing(),
        Budget {
            max_rounds: 10,
            max_wall: Some(Duration::ZERO),
            ..Budget::default()
        },
    )
    .await;
    assert_eq!(h.outcome.stop, StopReason::WallTime);
    assert_eq!(h.server.requests().len(), 0);
}

#[tokio::test]
async fn evaluator_failure_and_provider_failure_stop_the_loop() {
    let h = run(
        vec![kernel_reply("FAULT"), kernel_reply("unused")],
        rounds(5),
    )
    .await;
    assert_eq!(
        h.outcome.stop,
        StopReason::Evaluator("NVRTC not found".into())
    );
    assert_eq!(h.server.requests().len(), 1);

    let h = run(vec![Step::new(400, "bad request"); 5], rounds(5)).await;
    assert_eq!(h.outcome.stop, StopReason::LlmUnavailable);
    assert_eq!(h.server.requests().len(), 3);
    assert!(h
        .outcome
        .candidates
        .iter()
        .all(|c| matches!(c.outcome, CandidateOutcome::LlmFailed(_))));
}

#[tokio::test]
async fn dry_run_skips_the_optimization_judge() {
    let h = run(
        vec![kernel_reply("DRYRUN a"), kernel_reply("DRYRUN b")],
        rounds(2),
    )
    .await;
    let reqs = h.server.requests();
    assert_eq!(reqs.len(), 2, "no numbers, no optimization Judge");
    let p = prompt_of(&reqs[1]);
    assert!(p.contains("make this correct kernel faster"));
    assert!(p.contains("Verdict: compiled"));
    // Both compiled; the first stays best (untimed candidates do not displace each other).
    assert_eq!(h.outcome.best().expect("best").round, 1);
}

fn seed(tag: &str) -> Seed {
    Seed {
        source: format!("// {tag}\nextern \"C\" __global__ void k(float* y, int n) {{}}\n"),
        plan: "[[launch]]\nkernel = \"k\"\ngrid = [1]\nblock = [32]\nargs = [\"y\", \"N\"]\n"
            .into(),
        origin: "reference".into(),
    }
}

#[tokio::test]
async fn a_passing_seed_is_optimized_first() {
    let h = run_seeded(
        vec![
            judge_reply(r#"{"bottleneck": "reference is scalar"}"#),
            kernel_reply("fast median_us=100"),
        ],
        rounds(1),
        Some(seed("reference median_us=500")),
    )
    .await;
    let o = &h.outcome;
    assert_eq!(o.candidates.len(), 2);
    assert_eq!(
        (o.candidates[0].round, o.candidates[0].action.as_str()),
        (0, "reference")
    );
    assert_eq!(o.candidates[1].parent_round, Some(0));
    assert_eq!(o.best().expect("best").round, 1);
    let reqs = h.server.requests();
    assert_eq!(reqs.len(), 2);
    assert!(prompt_of(&reqs[0]).contains("| main | 500 | 500 | 1.00x |"));
    let coder = prompt_of(&reqs[1]);
    assert!(coder.contains("make this correct kernel faster"));
    assert!(coder.contains("// reference median_us=500"));
    assert!(coder.contains("bottleneck: reference is scalar"));
}

#[tokio::test]
async fn a_failing_seed_is_recorded_but_not_built_on() {
    let h = run_seeded(
        vec![kernel_reply("new median_us=300")],
        rounds(1),
        Some(seed("BUG")),
    )
    .await;
    let o = &h.outcome;
    assert_eq!(o.candidates.len(), 2);
    assert_eq!(o.best().expect("best").round, 1);
    let reqs = h.server.requests();
    assert_eq!(reqs.len(), 1, "no Judge for a failing seed");
    assert!(prompt_of(&reqs[0]).contains("Write a first kernel"));
}

#[tokio::test]
async fn a_failed_provider_call_is_retried_next_round_and_kept_out_of_history() {
    let h = run(
        vec![
            Step::new(400, "bad request"),
            kernel_reply("ok median_us=100"),
        ],
        rounds(2),
    )
    .await;
    let o = &h.outcome;
    assert!(matches!(
        o.candidates[0].outcome,
        CandidateOutcome::LlmFailed(_)
    ));
    assert_eq!(o.best().expect("best").round, 2);
    let reqs = h.server.requests();
    let p = prompt_of(&reqs[1]);
    assert!(p.contains("Write a first kernel"));
    assert!(
        !p.contains("llm_error") && !p.contains("## Earlier attempts"),
        "{p}"
    );
}
