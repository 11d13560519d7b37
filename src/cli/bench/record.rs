//! `ksmith bench` results in the result store: one run of kind `bench`, per task the reference
//! and each candidate as a candidate row with one evaluation holding its per-shape timings,
//! geometric-mean speedups, SOL% and quarantine flag.

use super::rows::{geomean, Row};
use bench_suite::store::{
    candidate_hash, EvalKey, NewCandidate, NewEvaluation, NewGpu, NewRun, NewTask, Origin,
    ShapeTiming, Store, Verdict,
};
use bench_suite::suite::TaskDir;
use verifier::runtime::bench::{BenchCandidate, BenchReport};

/// The protocol name results are stored under (a changed timing protocol gets a new name).
pub const BENCH_PROTOCOL: &str = "bench-v1";

/// One task's outcome, as recorded.
pub struct Recorded<'a> {
    pub td: &'a TaskDir,
    pub report: &'a BenchReport,
    /// Rows of every task (filtered by task id here).
    pub rows: &'a [Row],
    pub candidates: &'a [BenchCandidate],
}

/// The per-shape timings of one kernel of one task, in microseconds.
pub fn shape_timings(rows: &[Row], task: &str, kernel: &str) -> Vec<ShapeTiming> {
    rows.iter()
        .filter(|r| r.task == task && r.kernel == kernel)
        .filter_map(|r| {
            let m = r.median_ms?;
            Some(ShapeTiming {
                shape: r.shape.clone(),
                median_us: m * 1e3,
                p20_us: r.p20_ms.unwrap_or(m) * 1e3,
                p80_us: r.p80_ms.unwrap_or(m) * 1e3,
                min_us: r.min_ms.unwrap_or(m) * 1e3,
                samples: u32::try_from(r.samples).unwrap_or(u32::MAX),
                // vs_reference = reference / this, so the reference's median is this * ratio.
                reference_us: r.vs_reference.map(|s| m * s * 1e3),
                eager_us: r.eager_ms.map(|v| v * 1e3),
                compile_us: r.compile_ms.map(|v| v * 1e3),
                floor_us: r.floor_ms.map(|v| v * 1e3),
            })
        })
        .collect()
}

/// The stored verdict of one kernel: a candidate that failed its strict check keeps that
/// verdict; an output that failed re-validation after timing is `wrong_output`; a kernel with
/// no timed shape at all (every shape faulted) is `runtime_fault`; else `correct`.
pub fn kernel_verdict(report: &BenchReport, rows: &[Row], task: &str, kernel: &str) -> Verdict {
    if let Some(c) = report.candidates.iter().find(|c| c.name == kernel) {
        if !c.timed {
            return c.verdict.kind();
        }
    }
    let mine: Vec<&Row> = rows
        .iter()
        .filter(|r| r.task == task && r.kernel == kernel)
        .collect();
    if mine.iter().any(|r| {
        r.problem
            .as_deref()
            .is_some_and(|p| p.starts_with("re-validation failed"))
    }) {
        return Verdict::WrongOutput;
    }
    if !mine.iter().any(|r| r.median_ms.is_some()) {
        return Verdict::RuntimeFault;
    }
    Verdict::Correct
}

/// Records a bench run; returns its name.
pub fn store_results(
    store: &Store,
    gpu: &NewGpu,
    suite_name: &str,
    tasks: &[Recorded],
    config: serde_json::Value,
    git_rev: String,
) -> anyhow::Result<String> {
    let run_name = format!(
        "bench-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    store.write(|tx| {
        let gpu_id = tx.upsert_gpu(gpu)?;
        let run = tx.create_run(&NewRun {
            name: run_name.clone(),
            kind: "bench".into(),
            agent: "reference".into(),
            suite: suite_name.into(),
            config: config.clone(),
            git_rev: git_rev.clone(),
        })?;
        for t in tasks {
            let id = &t.td.task.id;
            let task_id = tx.upsert_task(&NewTask {
                name: id.clone(),
                category: t.td.task.category.clone(),
                title: t.td.task.title.clone(),
                content_hash: t.td.content_hash.clone(),
                details: serde_json::json!({ "path": t.td.dir.display().to_string() }),
            })?;
            let mut kernels = vec![(
                "reference".to_string(),
                Origin::Reference,
                t.td.reference_source.clone(),
                std::fs::read_to_string(t.td.dir.join("reference.toml")).unwrap_or_default(),
            )];
            for c in t.candidates {
                kernels.push((
                    c.name.clone(),
                    Origin::Human,
                    c.source.clone(),
                    c.plan.clone(),
                ));
            }
            for (name, origin, source, plan) in kernels {
                let status = t.report.candidates.iter().find(|c| c.name == name);
                let (cand_id, _) = tx.add_candidate(&NewCandidate {
                    run_id: run.id,
                    task_id,
                    origin,
                    source: source.clone(),
                    plan: plan.clone(),
                    generation: 0,
                    island: 0,
                    llm_call_id: None,
                    parents: Vec::new(),
                    notes: serde_json::json!({ "name": name }),
                })?;
                let mine: Vec<&Row> = t
                    .rows
                    .iter()
                    .filter(|r| &r.task == id && r.kernel == name)
                    .collect();
                let quarantine = mine.iter().find_map(|r| r.quarantine.clone());
                let hash = candidate_hash(&source, &plan);
                tx.add_evaluation(&NewEvaluation {
                    candidate_id: cand_id,
                    gpu_id: Some(gpu_id),
                    cache_key: EvalKey {
                        candidate_hash: &hash,
                        task_hash: &t.td.content_hash,
                        gpu_key: &gpu.gpu_key,
                        protocol: BENCH_PROTOCOL,
                    }
                    .digest(),
                    protocol: BENCH_PROTOCOL.into(),
                    verdict: kernel_verdict(t.report, t.rows, id, &name),
                    details: serde_json::json!({
                        "rows": mine,
                        "verdict": status.map(|c| &c.verdict),
                        "log": t.report.log,
                    }),
                    compile_ms: None,
                    timings: shape_timings(t.rows, id, &name),
                    speedup_ref: geomean(mine.iter().filter_map(|r| r.vs_reference)),
                    speedup_eager: geomean(mine.iter().filter_map(|r| r.vs_eager)),
                    speedup_compile: geomean(mine.iter().filter_map(|r| r.vs_compile)),
                    sol_pct: geomean(mine.iter().filter_map(|r| r.sol_pct)),
                    quarantined: quarantine.is_some(),
                    quarantine_reason: quarantine,
                    cached_from: None,
                })?;
            }
        }
        Ok(())
    })?;
    Ok(run_name)
}
