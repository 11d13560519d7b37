//! Inserts and updates, all inside a [`StoreTx`]. Every insert is idempotent on its natural key
//! (task version, GPU key, run name, candidate content, evaluation cache key), so a work item
//! that is redone after a crash finds its rows instead of duplicating them.

use super::cache::candidate_hash;
use super::error::{Result, StoreError};
use super::model::*;
use super::rows::{self, get};
use super::{now_ms, StoreTx};
use serde_json::Value;
use sqlx::{AnyConnection, AssertSqlSafe};

fn json_text(value: &Value) -> String {
    // Serializing a serde_json::Value cannot fail (all keys are strings).
    value.to_string()
}

impl StoreTx<'_> {
    pub(crate) fn conn(&mut self) -> (&super::Store, &mut AnyConnection) {
        match &mut self.tx {
            Some(tx) => (self.store, &mut **tx),
            // `tx` is only taken by commit (which consumes self) and drop.
            None => unreachable!("a StoreTx is used after commit"),
        }
    }

    /// Records a GPU, refreshing its facts (a new calibration) when the key is known already.
    pub fn upsert_gpu(&mut self, gpu: &NewGpu) -> Result<i64> {
        let (store, conn) = self.conn();
        store.block_on(async move {
            let row = sqlx::query(
                "INSERT INTO gpus (gpu_key, name, compute_capability, sm_count, memory_bytes, \
                 driver_version, details, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (gpu_key) DO UPDATE SET name = excluded.name, \
                 compute_capability = excluded.compute_capability, sm_count = excluded.sm_count, \
                 memory_bytes = excluded.memory_bytes, driver_version = excluded.driver_version, \
                 details = excluded.details RETURNING id",
            )
            .bind(&gpu.gpu_key)
            .bind(&gpu.name)
            .bind(&gpu.compute_capability)
            .bind(gpu.sm_count)
            .bind(gpu.memory_bytes)
            .bind(&gpu.driver_version)
            .bind(json_text(&gpu.details))
            .bind(now_ms())
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::db(format!("recording GPU `{}`", gpu.gpu_key)))?;
            get(&row, "gpus", "id")
        })
    }

    /// Records a task version; the same name and content hash always map to the same row.
    pub fn upsert_task(&mut self, task: &NewTask) -> Result<i64> {
        let (store, conn) = self.conn();
        store.block_on(async move {
            let row = sqlx::query(
                "INSERT INTO tasks (name, category, title, content_hash, details, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, content_hash) DO UPDATE SET \
                 category = excluded.category, title = excluded.title, details = excluded.details \
                 RETURNING id",
            )
            .bind(&task.name)
            .bind(&task.category)
            .bind(&task.title)
            .bind(&task.content_hash)
            .bind(json_text(&task.details))
            .bind(now_ms())
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::db(format!("recording task `{}`", task.name)))?;
            get(&row, "tasks", "id")
        })
    }

    /// Creates a run in status `running`. Names are unique: a second run of the same name is
    /// an error, not a silent merge (use `--resume NAME` to continue one).
    pub fn create_run(&mut self, run: &NewRun) -> Result<Run> {
        let (store, conn) = self.conn();
        store.block_on(async move {
            let now = now_ms();
            let row = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO runs (name, kind, agent, suite, config, git_rev, status, \
                 created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $7) \
                 ON CONFLICT (name) DO NOTHING RETURNING {}",
                rows::RUN_COLUMNS
            )))
            .bind(&run.name)
            .bind(&run.kind)
            .bind(&run.agent)
            .bind(&run.suite)
            .bind(json_text(&run.config))
            .bind(&run.git_rev)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::db(format!("creating run `{}`", run.name)))?;
            match row {
                Some(row) => rows::run(&row),
                None => Err(StoreError::RunExists(run.name.clone())),
            }
        })
    }

    pub fn set_run_status(&mut self, run_id: i64, status: RunStatus) -> Result<()> {
        let (store, conn) = self.conn();
        store.block_on(async move {
            let now = now_ms();
            let finished = match status {
                RunStatus::Finished | RunStatus::Failed => Some(now),
                RunStatus::Running | RunStatus::Interrupted => None,
            };
            let res = sqlx::query(
                "UPDATE runs SET status = $1, updated_at_ms = $2, finished_at_ms = $3 WHERE id = $4",
            )
            .bind(status.as_str())
            .bind(now)
            .bind(finished)
            .bind(run_id)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db(format!("setting the status of run {run_id}")))?;
            if res.rows_affected() == 0 {
                return Err(StoreError::Missing {
                    what: "run",
                    id: run_id,
                });
            }
            Ok(())
        })
    }

    /// Records one LLM request and its reply (or error). Money spent is recorded even when the
    /// work item it served is later redone, so cost totals stay honest across crashes.
    pub fn add_llm_call(&mut self, call: &NewLlmCall) -> Result<i64> {
        let (store, conn) = self.conn();
        store.block_on(async move {
            let row = sqlx::query(
                "INSERT INTO llm_calls (run_id, task_id, role, provider, model, tokens_in, \
                 tokens_out, cost_usd, latency_ms, request, response, error, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            )
            .bind(call.run_id)
            .bind(call.task_id)
            .bind(&call.role)
            .bind(&call.provider)
            .bind(&call.model)
            .bind(call.tokens_in)
            .bind(call.tokens_out)
            .bind(call.cost_usd)
            .bind(call.latency_ms)
            .bind(&call.request)
            .bind(&call.response)
            .bind(call.error.as_deref())
            .bind(now_ms())
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::db(format!(
                "recording an LLM call of run {}",
                call.run_id
            )))?;
            get(&row, "llm_calls", "id")
        })
    }

    /// Records a candidate kernel and its lineage. The same source + plan for the same task in
    /// the same run is one candidate: the id of the existing row is returned with `false`.
    pub fn add_candidate(&mut self, cand: &NewCandidate) -> Result<(i64, bool)> {
        let hash = candidate_hash(&cand.source, &cand.plan);
        let (store, conn) = self.conn();
        store.block_on(async move {
            for parent in &cand.parents {
                let row = sqlx::query("SELECT run_id, task_id FROM candidates WHERE id = $1")
                    .bind(parent.candidate_id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(StoreError::db("looking up a parent candidate"))?;
                let foreign = match row {
                    None => true,
                    Some(row) => {
                        let run: i64 = get(&row, "candidates", "run_id")?;
                        let task: i64 = get(&row, "candidates", "task_id")?;
                        run != cand.run_id || task != cand.task_id
                    }
                };
                if foreign {
                    return Err(StoreError::ForeignParent {
                        parent: parent.candidate_id,
                        run: cand.run_id,
                        task: cand.task_id,
                    });
                }
            }
            let inserted = sqlx::query(
                "INSERT INTO candidates (run_id, task_id, origin, source, plan, content_hash, \
                 generation, island, llm_call_id, notes, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (run_id, task_id, content_hash) DO NOTHING RETURNING id",
            )
            .bind(cand.run_id)
            .bind(cand.task_id)
            .bind(cand.origin.as_str())
            .bind(&cand.source)
            .bind(&cand.plan)
            .bind(&hash)
            .bind(cand.generation)
            .bind(cand.island)
            .bind(cand.llm_call_id)
            .bind(json_text(&cand.notes))
            .bind(now_ms())
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::db(format!(
                "recording a candidate of run {} task {}",
                cand.run_id, cand.task_id
            )))?;
            let Some(row) = inserted else {
                let row = sqlx::query(
                    "SELECT id FROM candidates WHERE run_id = $1 AND task_id = $2 AND content_hash = $3",
                )
                .bind(cand.run_id)
                .bind(cand.task_id)
                .bind(&hash)
                .fetch_one(&mut *conn)
                .await
                .map_err(StoreError::db("looking up an existing candidate"))?;
                return Ok((get(&row, "candidates", "id")?, false));
            };
            let id: i64 = get(&row, "candidates", "id")?;
            for (position, parent) in cand.parents.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO candidate_parents (candidate_id, parent_id, relation, position) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (candidate_id, parent_id) DO NOTHING",
                )
                .bind(id)
                .bind(parent.candidate_id)
                .bind(&parent.relation)
                .bind(position as i64)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db(format!("recording the parents of candidate {id}")))?;
            }
            Ok((id, true))
        })
    }

    /// Records an evaluation. A second evaluation of the same candidate under the same cache key
    /// is not stored again: the existing row's id comes back.
    pub fn add_evaluation(&mut self, eval: &NewEvaluation) -> Result<i64> {
        let timings =
            serde_json::to_string(&eval.timings).map_err(|source| StoreError::Serialize {
                what: "shape timings",
                source,
            })?;
        let (store, conn) = self.conn();
        store.block_on(async move {
            let inserted = sqlx::query(
                "INSERT INTO evaluations (candidate_id, gpu_id, cache_key, protocol, verdict, \
                 details, compile_ms, timings, speedup_ref, speedup_eager, speedup_compile, \
                 sol_pct, quarantined, quarantine_reason, cached_from, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT (candidate_id, cache_key) DO NOTHING RETURNING id",
            )
            .bind(eval.candidate_id)
            .bind(eval.gpu_id)
            .bind(&eval.cache_key)
            .bind(&eval.protocol)
            .bind(eval.verdict.as_str())
            .bind(json_text(&eval.details))
            .bind(eval.compile_ms)
            .bind(timings)
            .bind(eval.speedup_ref)
            .bind(eval.speedup_eager)
            .bind(eval.speedup_compile)
            .bind(eval.sol_pct)
            .bind(i64::from(eval.quarantined))
            .bind(eval.quarantine_reason.as_deref())
            .bind(eval.cached_from)
            .bind(now_ms())
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::db(format!(
                "recording an evaluation of candidate {}",
                eval.candidate_id
            )))?;
            let row = match inserted {
                Some(row) => row,
                None => sqlx::query(
                    "SELECT id FROM evaluations WHERE candidate_id = $1 AND cache_key = $2",
                )
                .bind(eval.candidate_id)
                .bind(&eval.cache_key)
                .fetch_one(&mut *conn)
                .await
                .map_err(StoreError::db("looking up an existing evaluation"))?,
            };
            get(&row, "evaluations", "id")
        })
    }

    /// Records `cached` (an evaluation of the same cache key) as the evaluation of `candidate_id`
    /// without running anything, pointing back at the row it came from.
    pub fn reuse_evaluation(&mut self, candidate_id: i64, cached: &Evaluation) -> Result<i64> {
        let mut copy = cached.evaluation.clone();
        copy.candidate_id = candidate_id;
        copy.cached_from = Some(cached.evaluation.cached_from.unwrap_or(cached.id));
        self.add_evaluation(&copy)
    }

    /// The cached evaluation for `cache_key`, if any (see [`super::Store::cached_evaluation`]).
    pub fn cached_evaluation(&mut self, cache_key: &str) -> Result<Option<Evaluation>> {
        let (store, conn) = self.conn();
        store.block_on(super::read::cached_evaluation(conn, cache_key))
    }

    pub fn add_profile(&mut self, profile: &NewProfile) -> Result<i64> {
        let (store, conn) = self.conn();
        store.block_on(async move {
            let row = sqlx::query(
                "INSERT INTO profiles (evaluation_id, tool, kernel, metrics, raw, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(profile.evaluation_id)
            .bind(&profile.tool)
            .bind(&profile.kernel)
            .bind(json_text(&profile.metrics))
            .bind(&profile.raw)
            .bind(now_ms())
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::db(format!(
                "recording a profile of evaluation {}",
                profile.evaluation_id
            )))?;
            get(&row, "profiles", "id")
        })
    }
}
