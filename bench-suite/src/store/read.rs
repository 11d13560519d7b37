//! Queries. Reports load a whole run with a handful of queries and aggregate in Rust, which keeps
//! the SQL portable and the numbers computed in one place.

use super::error::{Result, StoreError};
use super::model::*;
use super::rows::{self, get};
use super::Store;
use sqlx::{Any, AssertSqlSafe, Executor};
use std::collections::HashMap;

pub(crate) async fn cached_evaluation<'c, E>(exec: E, cache_key: &str) -> Result<Option<Evaluation>>
where
    E: Executor<'c, Database = Any>,
{
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {} FROM evaluations WHERE cache_key = $1 AND verdict <> 'timeout' \
         ORDER BY id LIMIT 1",
        rows::EVALUATION_COLUMNS
    )))
    .bind(cache_key)
    .fetch_optional(exec)
    .await
    .map_err(StoreError::db("looking up the evaluation cache"))?;
    row.as_ref().map(rows::evaluation).transpose()
}

impl Store {
    fn fetch_all<T>(
        &self,
        sql: String,
        binds: &[i64],
        context: &str,
        decode: fn(&super::Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let pool = self.pool();
        let rows = self.block_on(async move {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for b in binds {
                q = q.bind(*b);
            }
            q.fetch_all(pool).await
        });
        let rows = rows.map_err(StoreError::db(context.to_string()))?;
        rows.iter().map(decode).collect()
    }

    /// An evaluation of the same cache key recorded earlier (by any run, on any machine sharing
    /// this database), if one exists. Timeouts are never served from the cache.
    pub fn cached_evaluation(&self, cache_key: &str) -> Result<Option<Evaluation>> {
        self.block_on(cached_evaluation(self.pool(), cache_key))
    }

    pub fn runs(&self) -> Result<Vec<Run>> {
        self.fetch_all(
            format!("SELECT {} FROM runs ORDER BY id", rows::RUN_COLUMNS),
            &[],
            "listing runs",
            rows::run,
        )
    }

    pub fn run_by_name(&self, name: &str) -> Result<Run> {
        let pool = self.pool();
        let row = self
            .block_on(async move {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {} FROM runs WHERE name = $1",
                    rows::RUN_COLUMNS
                )))
                .bind(name)
                .fetch_optional(pool)
                .await
            })
            .map_err(StoreError::db(format!("looking up run `{name}`")))?;
        match row {
            Some(row) => rows::run(&row),
            None => Err(StoreError::NoSuchRun(name.to_string())),
        }
    }

    /// The most recently created run.
    pub fn latest_run(&self) -> Result<Run> {
        let mut runs = self.fetch_all(
            format!(
                "SELECT {} FROM runs ORDER BY created_at_ms DESC, id DESC LIMIT 1",
                rows::RUN_COLUMNS
            ),
            &[],
            "finding the latest run",
            rows::run,
        )?;
        runs.pop().ok_or(StoreError::NoRuns)
    }

    /// The tasks a run set out to do (its work items) and the tasks it has candidates for.
    pub fn tasks_of_run(&self, run_id: i64) -> Result<Vec<Task>> {
        self.fetch_all(
            format!(
                "SELECT {} FROM tasks WHERE id IN (SELECT task_id FROM run_items WHERE run_id = $1) \
                 OR id IN (SELECT task_id FROM candidates WHERE run_id = $1) ORDER BY category, name",
                rows::TASK_COLUMNS
            ),
            &[run_id],
            "listing the tasks of a run",
            rows::task,
        )
    }

    /// Every candidate of a run with its parents filled in, in creation order.
    pub fn candidates_of_run(&self, run_id: i64) -> Result<Vec<Candidate>> {
        let mut cands = self.fetch_all(
            format!(
                "SELECT {} FROM candidates WHERE run_id = $1 ORDER BY id",
                rows::CANDIDATE_COLUMNS
            ),
            &[run_id],
            "listing the candidates of a run",
            rows::candidate,
        )?;
        let links = self.fetch_all(
            "SELECT p.candidate_id, p.parent_id, p.relation FROM candidate_parents p \
             JOIN candidates c ON c.id = p.candidate_id WHERE c.run_id = $1 \
             ORDER BY p.candidate_id, p.position"
                .to_string(),
            &[run_id],
            "listing the lineage of a run",
            |row| {
                Ok((
                    get::<i64>(row, "candidate_parents", "candidate_id")?,
                    Parent {
                        candidate_id: get(row, "candidate_parents", "parent_id")?,
                        relation: get(row, "candidate_parents", "relation")?,
                    },
                ))
            },
        )?;
        let index: HashMap<i64, usize> = cands.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
        for (child, parent) in links {
            if let Some(&i) = index.get(&child) {
                cands[i].candidate.parents.push(parent);
            }
        }
        Ok(cands)
    }

    /// One task's candidates in a run with their evaluations, in creation order: what a
    /// resumed search needs to rebuild its population and lineage.
    pub fn candidates_of_task(
        &self,
        run_id: i64,
        task_id: i64,
    ) -> Result<Vec<(Candidate, Vec<Evaluation>)>> {
        let cands: Vec<Candidate> = self
            .candidates_of_run(run_id)?
            .into_iter()
            .filter(|c| c.candidate.task_id == task_id)
            .collect();
        let mut evals = self.fetch_all(
            format!(
                "SELECT {} FROM evaluations WHERE candidate_id IN \
                 (SELECT id FROM candidates WHERE run_id = $1 AND task_id = $2) ORDER BY id",
                rows::EVALUATION_COLUMNS
            ),
            &[run_id, task_id],
            "listing the evaluations of a task",
            rows::evaluation,
        )?;
        Ok(cands
            .into_iter()
            .map(|c| {
                let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut evals)
                    .into_iter()
                    .partition(|e| e.evaluation.candidate_id == c.id);
                evals = rest;
                (c, mine)
            })
            .collect())
    }

    pub fn evaluations_of_run(&self, run_id: i64) -> Result<Vec<Evaluation>> {
        self.fetch_all(
            format!(
                "SELECT {} FROM evaluations WHERE candidate_id IN \
                 (SELECT id FROM candidates WHERE run_id = $1) ORDER BY id",
                rows::EVALUATION_COLUMNS
            ),
            &[run_id],
            "listing the evaluations of a run",
            rows::evaluation,
        )
    }

    pub fn llm_calls_of_run(&self, run_id: i64) -> Result<Vec<LlmCall>> {
        self.fetch_all(
            format!(
                "SELECT {} FROM llm_calls WHERE run_id = $1 ORDER BY id",
                rows::LLM_CALL_COLUMNS
            ),
            &[run_id],
            "listing the LLM calls of a run",
            rows::llm_call,
        )
    }

    pub fn profiles_of_run(&self, run_id: i64) -> Result<Vec<Profile>> {
        self.fetch_all(
            format!(
                "SELECT {} FROM profiles WHERE evaluation_id IN (SELECT e.id FROM evaluations e \
                 JOIN candidates c ON c.id = e.candidate_id WHERE c.run_id = $1) ORDER BY id",
                rows::PROFILE_COLUMNS
            ),
            &[run_id],
            "listing the profiles of a run",
            rows::profile,
        )
    }

    pub fn gpus_of_run(&self, run_id: i64) -> Result<Vec<Gpu>> {
        self.fetch_all(
            format!(
                "SELECT {} FROM gpus WHERE id IN (SELECT e.gpu_id FROM evaluations e \
                 JOIN candidates c ON c.id = e.candidate_id WHERE c.run_id = $1) ORDER BY id",
                rows::GPU_COLUMNS
            ),
            &[run_id],
            "listing the GPUs of a run",
            rows::gpu,
        )
    }

    /// Row counts per table, for tests and `ksmith db info`.
    pub fn table_counts(&self) -> Result<Vec<(&'static str, i64)>> {
        const TABLES: [&str; 10] = [
            "gpus",
            "tasks",
            "runs",
            "run_items",
            "llm_calls",
            "candidates",
            "candidate_parents",
            "evaluations",
            "profiles",
            "_sqlx_migrations",
        ];
        let mut out = Vec::new();
        for t in TABLES {
            let n = self.fetch_all(
                format!("SELECT COUNT(*) AS n FROM {t}"),
                &[],
                "counting rows",
                |row| get::<i64>(row, "count", "n"),
            )?;
            out.push((t, n.first().copied().unwrap_or(0)));
        }
        Ok(out)
    }

    /// What a report needs about a run, without the bulky text columns (sources, LLM bodies,
    /// per-shape timings), so that reports over large runs stay fast.
    pub fn run_facts(&self, run_id: i64) -> Result<RunFacts> {
        const C: &str = "candidates";
        const E: &str = "evaluations";
        const L: &str = "llm_calls";
        let candidates = self.fetch_all(
            "SELECT id, task_id, origin, generation, llm_call_id, created_at_ms FROM candidates \
             WHERE run_id = $1 ORDER BY id"
                .to_string(),
            &[run_id],
            "reading the candidates of a run",
            |row| {
                let id: i64 = get(row, C, "id")?;
                let origin: String = get(row, C, "origin")?;
                Ok(CandidateFacts {
                    id,
                    task_id: get(row, C, "task_id")?,
                    origin: origin.parse().map_err(|()| StoreError::BadEnum {
                        table: C,
                        column: "origin",
                        id,
                        value: origin.clone(),
                        what: "candidate origin",
                    })?,
                    generation: get(row, C, "generation")?,
                    llm_call_id: get(row, C, "llm_call_id")?,
                    created_at_ms: get(row, C, "created_at_ms")?,
                })
            },
        )?;
        let evaluations = self.fetch_all(
            "SELECT e.id, e.candidate_id, e.verdict, e.speedup_ref, e.speedup_eager, \
             e.speedup_compile, e.sol_pct, e.quarantined FROM evaluations e \
             JOIN candidates c ON c.id = e.candidate_id WHERE c.run_id = $1 ORDER BY e.id"
                .to_string(),
            &[run_id],
            "reading the evaluations of a run",
            |row| {
                let id: i64 = get(row, E, "id")?;
                let verdict: String = get(row, E, "verdict")?;
                let quarantined: i64 = get(row, E, "quarantined")?;
                Ok(EvaluationFacts {
                    candidate_id: get(row, E, "candidate_id")?,
                    verdict: verdict.parse().map_err(|_| StoreError::BadEnum {
                        table: E,
                        column: "verdict",
                        id,
                        value: verdict.clone(),
                        what: "verdict",
                    })?,
                    speedup_ref: get(row, E, "speedup_ref")?,
                    speedup_eager: get(row, E, "speedup_eager")?,
                    speedup_compile: get(row, E, "speedup_compile")?,
                    sol_pct: get(row, E, "sol_pct")?,
                    quarantined: quarantined != 0,
                })
            },
        )?;
        let calls = self.fetch_all(
            "SELECT id, task_id, tokens_in, tokens_out, cost_usd, created_at_ms FROM llm_calls \
             WHERE run_id = $1 ORDER BY id"
                .to_string(),
            &[run_id],
            "reading the LLM calls of a run",
            |row| {
                Ok(CallFacts {
                    id: get(row, L, "id")?,
                    task_id: get(row, L, "task_id")?,
                    tokens_in: get(row, L, "tokens_in")?,
                    tokens_out: get(row, L, "tokens_out")?,
                    cost_usd: get(row, L, "cost_usd")?,
                    created_at_ms: get(row, L, "created_at_ms")?,
                })
            },
        )?;
        Ok(RunFacts {
            tasks: self.tasks_of_run(run_id)?,
            gpus: self
                .gpus_of_run(run_id)?
                .into_iter()
                .map(|g| g.gpu.name)
                .collect(),
            candidates,
            evaluations,
            calls,
        })
    }
}
