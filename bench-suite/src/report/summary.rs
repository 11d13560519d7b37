//! From a run's rows to its summary: the best kernel per task, fast_p, speedups, speed-of-light,
//! costs and the search's progress per generation.
//!
//! Which kernels count: evaluations with verdict `correct` that are not quarantined. In agent
//! runs the task's reference kernel is a seed, not an answer, so candidates of origin
//! `reference` count only in `bench` runs (which measure the references themselves).

use super::metrics::{self, Outcome, HEADLINE_P};
use crate::store::{
    CallFacts, CandidateFacts, EvaluationFacts, Origin, Result, Run, RunFacts, Store, Task, Verdict,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The task's hand-written reference kernel, timed side by side (always measured).
    Reference,
    /// PyTorch eager.
    Eager,
    /// torch.compile.
    Compile,
}

impl Baseline {
    pub const ALL: [Baseline; 3] = [Baseline::Reference, Baseline::Eager, Baseline::Compile];

    pub fn label(self) -> &'static str {
        match self {
            Baseline::Reference => "reference",
            Baseline::Eager => "eager",
            Baseline::Compile => "torch.compile",
        }
    }

    fn of(self, e: &EvaluationFacts) -> Option<f64> {
        match self {
            Baseline::Reference => e.speedup_ref,
            Baseline::Eager => e.speedup_eager,
            Baseline::Compile => e.speedup_compile,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    pub task: String,
    pub category: String,
    pub candidates: usize,
    pub evaluations: usize,
    /// Evaluations per verdict.
    pub verdicts: BTreeMap<String, usize>,
    pub correct: bool,
    pub quarantined: usize,
    /// The fastest correct kernel (by speedup vs reference).
    pub best_candidate: Option<i64>,
    pub best_generation: Option<i64>,
    pub speedup_ref: Option<f64>,
    pub speedup_eager: Option<f64>,
    pub speedup_compile: Option<f64>,
    pub sol_pct: Option<f64>,
    pub llm_calls: usize,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    /// Tokens (in + out) spent on this task up to and including the call that produced the
    /// first correct kernel; None when no kernel was correct.
    pub tokens_to_first_correct: Option<i64>,
    /// Best speedup vs reference found up to each generation (index = generation).
    pub best_by_generation: Vec<Option<f64>>,
}

impl TaskSummary {
    pub fn speedup(&self, b: Baseline) -> Option<f64> {
        match b {
            Baseline::Reference => self.speedup_ref,
            Baseline::Eager => self.speedup_eager,
            Baseline::Compile => self.speedup_compile,
        }
    }

    pub fn outcome(&self, b: Baseline) -> Outcome {
        Outcome {
            correct: self.correct,
            speedup: self.speedup(b),
        }
    }

    /// The most telling verdict when no kernel was correct: the one reached most often.
    pub fn main_failure(&self) -> Option<&str> {
        if self.correct {
            return None;
        }
        self.verdicts
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(v, _)| v.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineStats {
    pub baseline: Baseline,
    /// (p, fast_p) for p in [`HEADLINE_P`].
    pub fast_p: Vec<(f64, f64)>,
    /// Geometric mean of the best speedups over tasks with a correct, measured kernel.
    pub geomean_speedup: Option<f64>,
    /// How many tasks have a correct kernel with this baseline measured.
    pub measured: usize,
    /// The exact step curve of fast_p over p (for the chart).
    pub curve: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoryStats {
    pub category: String,
    pub tasks: usize,
    pub correct: usize,
    pub fast_1_ref: f64,
    pub geomean_speedup_ref: Option<f64>,
    pub median_sol_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerationPoint {
    pub generation: i64,
    /// Tasks with a correct kernel by this generation.
    pub solved: usize,
    /// Geometric mean over those tasks of the best speedup vs reference so far.
    pub geomean_best_speedup: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CostStats {
    pub llm_calls: usize,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub cost_per_task: f64,
    pub tokens_per_task: f64,
    pub median_tokens_to_first_correct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub name: String,
    pub kind: String,
    pub agent: String,
    pub suite: String,
    pub status: String,
    pub git_rev: String,
    pub created_at_ms: i64,
    pub gpus: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run: RunInfo,
    /// N of fast_p: every task the run set out to do.
    pub tasks_total: usize,
    pub tasks_correct: usize,
    pub correctness_rate: f64,
    /// Evaluations held back from ranking (faster than speed-of-light, implausible speedups).
    pub quarantined: usize,
    pub baselines: Vec<BaselineStats>,
    pub median_sol_pct: Option<f64>,
    pub sol_histogram: Vec<(String, usize)>,
    pub cost: CostStats,
    pub categories: Vec<CategoryStats>,
    pub generations: Vec<GenerationPoint>,
    pub tasks: Vec<TaskSummary>,
}

impl RunSummary {
    pub fn baseline(&self, b: Baseline) -> Option<&BaselineStats> {
        self.baselines.iter().find(|s| s.baseline == b)
    }

    pub fn fast(&self, b: Baseline, p: f64) -> f64 {
        self.baseline(b)
            .and_then(|s| s.fast_p.iter().find(|(q, _)| *q == p).map(|(_, v)| *v))
            .unwrap_or_else(|| {
                let outcomes: Vec<Outcome> = self.tasks.iter().map(|t| t.outcome(b)).collect();
                metrics::fast_p(&outcomes, p)
            })
    }
}

/// Loads a run's rows and summarizes them.
pub fn summarize_run(store: &Store, run: &Run) -> Result<RunSummary> {
    Ok(summarize(run, &store.run_facts(run.id)?))
}

/// The summary of already loaded rows (separate from loading so it is testable without a
/// database).
pub fn summarize(run: &Run, facts: &RunFacts) -> RunSummary {
    let RunFacts {
        tasks,
        gpus,
        candidates,
        evaluations,
        calls,
    } = facts;
    let gpus = gpus.clone();
    let counts_reference = run.run.kind == "bench";
    let mut evals_by_cand: HashMap<i64, Vec<&EvaluationFacts>> = HashMap::new();
    for e in evaluations {
        evals_by_cand.entry(e.candidate_id).or_default().push(e);
    }
    let mut cands_by_task: HashMap<i64, Vec<&CandidateFacts>> = HashMap::new();
    for c in candidates {
        cands_by_task.entry(c.task_id).or_default().push(c);
    }
    let mut calls_by_task: HashMap<Option<i64>, Vec<&CallFacts>> = HashMap::new();
    for c in calls {
        calls_by_task.entry(c.task_id).or_default().push(c);
    }

    let mut summaries: Vec<TaskSummary> = tasks
        .iter()
        .map(|t| {
            summarize_task(
                t,
                cands_by_task.get(&t.id).map(Vec::as_slice).unwrap_or(&[]),
                &evals_by_cand,
                calls_by_task
                    .get(&Some(t.id))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                counts_reference,
            )
        })
        .collect();
    summaries.sort_by(|a, b| (&a.category, &a.task).cmp(&(&b.category, &b.task)));

    let n = summaries.len();
    let correct = summaries.iter().filter(|t| t.correct).count();
    let baselines = Baseline::ALL
        .iter()
        .map(|&b| {
            let outcomes: Vec<Outcome> = summaries.iter().map(|t| t.outcome(b)).collect();
            let measured: Vec<f64> = summaries
                .iter()
                .filter(|t| t.correct)
                .filter_map(|t| t.speedup(b))
                .collect();
            BaselineStats {
                baseline: b,
                fast_p: HEADLINE_P
                    .iter()
                    .map(|&p| (p, metrics::fast_p(&outcomes, p)))
                    .collect(),
                geomean_speedup: metrics::geomean(measured.iter().copied()),
                measured: measured.len(),
                curve: metrics::fast_p_curve(&outcomes),
            }
        })
        .collect();
    let sols: Vec<f64> = summaries.iter().filter_map(|t| t.sol_pct).collect();

    let mut by_cat: BTreeMap<&str, Vec<&TaskSummary>> = BTreeMap::new();
    for t in &summaries {
        by_cat.entry(t.category.as_str()).or_default().push(t);
    }
    let categories = by_cat
        .into_iter()
        .map(|(cat, ts)| {
            let outcomes: Vec<Outcome> =
                ts.iter().map(|t| t.outcome(Baseline::Reference)).collect();
            CategoryStats {
                category: cat.to_string(),
                tasks: ts.len(),
                correct: ts.iter().filter(|t| t.correct).count(),
                fast_1_ref: metrics::fast_p(&outcomes, 1.0),
                geomean_speedup_ref: metrics::geomean(
                    ts.iter()
                        .filter(|t| t.correct)
                        .filter_map(|t| t.speedup_ref),
                ),
                median_sol_pct: metrics::median(ts.iter().filter_map(|t| t.sol_pct)),
            }
        })
        .collect();

    let max_gen = summaries
        .iter()
        .map(|t| t.best_by_generation.len())
        .max()
        .unwrap_or(0);
    let generations = (0..max_gen)
        .map(|g| {
            let bests: Vec<f64> = summaries
                .iter()
                .filter_map(|t| {
                    // A task whose search stopped early keeps its last best.
                    t.best_by_generation
                        .get(g)
                        .or(t.best_by_generation.last())
                        .copied()
                        .flatten()
                })
                .collect();
            GenerationPoint {
                generation: g as i64,
                solved: bests.len(),
                geomean_best_speedup: metrics::geomean(bests.iter().copied()),
            }
        })
        .collect();

    let tokens_in: i64 = calls.iter().map(|c| c.tokens_in).sum();
    let tokens_out: i64 = calls.iter().map(|c| c.tokens_out).sum();
    let cost_usd: f64 = calls.iter().map(|c| c.cost_usd).sum();
    let per = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
    let cost = CostStats {
        llm_calls: calls.len(),
        tokens_in,
        tokens_out,
        cost_usd,
        cost_per_task: per(cost_usd),
        tokens_per_task: per((tokens_in + tokens_out) as f64),
        median_tokens_to_first_correct: metrics::median(
            summaries
                .iter()
                .filter_map(|t| t.tokens_to_first_correct.map(|x| x as f64)),
        ),
    };

    RunSummary {
        run: RunInfo {
            name: run.run.name.clone(),
            kind: run.run.kind.clone(),
            agent: run.run.agent.clone(),
            suite: run.run.suite.clone(),
            status: run.status.as_str().to_string(),
            git_rev: run.run.git_rev.clone(),
            created_at_ms: run.created_at_ms,
            gpus,
        },
        tasks_total: n,
        tasks_correct: correct,
        correctness_rate: per(correct as f64),
        quarantined: summaries.iter().map(|t| t.quarantined).sum(),
        baselines,
        median_sol_pct: metrics::median(sols.iter().copied()),
        sol_histogram: metrics::sol_histogram(sols.iter().copied()),
        cost,
        categories,
        generations,
        tasks: summaries,
    }
}

fn summarize_task(
    task: &Task,
    cands: &[&CandidateFacts],
    evals_by_cand: &HashMap<i64, Vec<&EvaluationFacts>>,
    calls: &[&CallFacts],
    counts_reference: bool,
) -> TaskSummary {
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    let mut evaluations = 0;
    let mut quarantined = 0;
    // (candidate, its best correct evaluation by speedup vs reference)
    let mut correct: Vec<(&CandidateFacts, &EvaluationFacts)> = Vec::new();
    let mut best_of = [None::<f64>; 3];
    let mut counted = 0;
    for c in cands {
        if c.origin == Origin::Reference && !counts_reference {
            continue;
        }
        counted += 1;
        let evals = evals_by_cand.get(&c.id).map(Vec::as_slice).unwrap_or(&[]);
        let mut best: Option<&EvaluationFacts> = None;
        for e in evals {
            evaluations += 1;
            *verdicts.entry(e.verdict.to_string()).or_default() += 1;
            if e.quarantined {
                quarantined += 1;
                continue;
            }
            if e.verdict != Verdict::Correct {
                continue;
            }
            for (slot, b) in best_of.iter_mut().zip(Baseline::ALL) {
                if let Some(s) = b.of(e) {
                    *slot = Some(slot.map_or(s, |x: f64| x.max(s)));
                }
            }
            let better = match best {
                None => true,
                Some(cur) => {
                    e.speedup_ref.unwrap_or(f64::NEG_INFINITY)
                        > cur.speedup_ref.unwrap_or(f64::NEG_INFINITY)
                }
            };
            if better {
                best = Some(e);
            }
        }
        if let Some(e) = best {
            correct.push((c, e));
        }
    }
    let best = correct.iter().max_by(|a, b| {
        let sa = a.1.speedup_ref.unwrap_or(f64::NEG_INFINITY);
        let sb = b.1.speedup_ref.unwrap_or(f64::NEG_INFINITY);
        sa.total_cmp(&sb)
    });

    // Tokens up to the first correct kernel, in the order things happened.
    let first_correct = correct.iter().map(|(c, _)| *c).min_by_key(|c| c.id);
    let tokens_to_first_correct = first_correct.map(|c| {
        calls
            .iter()
            .filter(|call| match c.llm_call_id {
                Some(id) => call.id <= id,
                None => call.created_at_ms <= c.created_at_ms,
            })
            .map(|call| call.tokens_in + call.tokens_out)
            .sum()
    });

    let max_gen = cands.iter().map(|c| c.generation).max().unwrap_or(-1);
    let mut best_by_generation = Vec::new();
    let mut so_far: Option<f64> = None;
    for g in 0..=max_gen {
        for (c, e) in &correct {
            if c.generation == g {
                let s = e.speedup_ref.unwrap_or(0.0);
                so_far = Some(so_far.map_or(s, |x| x.max(s)));
            }
        }
        best_by_generation.push(so_far);
    }

    TaskSummary {
        task: task.task.name.clone(),
        category: task.task.category.clone(),
        candidates: counted,
        evaluations,
        verdicts,
        correct: !correct.is_empty(),
        quarantined,
        best_candidate: best.map(|(c, _)| c.id),
        best_generation: best.map(|(c, _)| c.generation),
        speedup_ref: best_of[0],
        speedup_eager: best_of[1],
        speedup_compile: best_of[2],
        sol_pct: best.and_then(|(_, e)| e.sol_pct),
        llm_calls: calls.len(),
        tokens_in: calls.iter().map(|c| c.tokens_in).sum(),
        tokens_out: calls.iter().map(|c| c.tokens_out).sum(),
        cost_usd: calls.iter().map(|c| c.cost_usd).sum(),
        tokens_to_first_correct,
        best_by_generation,
    }
}
