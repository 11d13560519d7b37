//! A run as one JSON document, so results move between machines: `ksmith db export --run R`
//! on one, `ksmith db import FILE` on another. Ids in the document are the exporting database's;
//! import maps them to fresh ids and matches GPUs by key and tasks by name + content hash.

use super::error::{Result, StoreError};
use super::model::*;
use super::rows::{self, get};
use super::Store;
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use std::collections::HashMap;

pub const EXPORT_FORMAT: &str = "ksmith-run-export";
pub const EXPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunExport {
    pub format: String,
    pub version: u32,
    pub run: Run,
    pub items: Vec<RunItem>,
    pub gpus: Vec<Gpu>,
    pub tasks: Vec<Task>,
    pub llm_calls: Vec<LlmCall>,
    pub candidates: Vec<Candidate>,
    pub evaluations: Vec<Evaluation>,
    pub profiles: Vec<Profile>,
}

impl RunExport {
    /// Parses an export; `path` names the file in errors (serde's message gives line and column).
    pub fn from_json(text: &str, path: &str) -> Result<RunExport> {
        #[derive(Deserialize)]
        struct Header {
            format: String,
            version: u32,
        }
        let header: Header =
            serde_json::from_str(text).map_err(|source| StoreError::BadExport {
                path: path.to_string(),
                source,
            })?;
        if header.format != EXPORT_FORMAT {
            return Err(StoreError::InconsistentExport {
                path: path.to_string(),
                problem: format!(
                    "`format` is `{}`, expected `{EXPORT_FORMAT}`",
                    header.format
                ),
            });
        }
        if header.version != EXPORT_VERSION {
            return Err(StoreError::ExportVersion {
                path: path.to_string(),
                found: header.version,
                supported: EXPORT_VERSION,
            });
        }
        serde_json::from_str(text).map_err(|source| StoreError::BadExport {
            path: path.to_string(),
            source,
        })
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|source| StoreError::Serialize {
            what: "a run export",
            source,
        })
    }
}

impl Store {
    pub fn export_run(&self, name: &str) -> Result<RunExport> {
        let run = self.run_by_name(name)?;
        let items = self.items(run.id)?;
        let candidates = self.candidates_of_run(run.id)?;
        let mut tasks = self.tasks_of_run(run.id)?;
        // llm_calls may name tasks that have no item or candidate (a failed first attempt).
        let llm_calls = self.llm_calls_of_run(run.id)?;
        let mut have: std::collections::HashSet<i64> = tasks.iter().map(|t| t.id).collect();
        for id in llm_calls.iter().filter_map(|c| c.call.task_id) {
            if have.insert(id) {
                tasks.push(self.task_by_id(id)?);
            }
        }
        Ok(RunExport {
            format: EXPORT_FORMAT.to_string(),
            version: EXPORT_VERSION,
            items,
            gpus: self.gpus_of_run(run.id)?,
            tasks,
            llm_calls,
            candidates,
            evaluations: self.evaluations_of_run(run.id)?,
            profiles: self.profiles_of_run(run.id)?,
            run,
        })
    }

    pub fn task_by_id(&self, id: i64) -> Result<Task> {
        let pool = self.pool();
        let row = self
            .block_on(async move {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {} FROM tasks WHERE id = $1",
                    rows::TASK_COLUMNS
                )))
                .bind(id)
                .fetch_optional(pool)
                .await
            })
            .map_err(StoreError::db(format!("looking up task {id}")))?;
        match row {
            Some(row) => rows::task(&row),
            None => Err(StoreError::Missing { what: "task", id }),
        }
    }

    /// Imports an export as a new run (named `rename` if given, else as exported) in one
    /// transaction. Items that were in flight on the exporting machine come back as pending.
    /// `path` names the source in error messages.
    pub fn import_run(&self, export: &RunExport, rename: Option<&str>, path: &str) -> Result<Run> {
        let bad = |problem: String| StoreError::InconsistentExport {
            path: path.to_string(),
            problem,
        };
        let name = rename.unwrap_or(&export.run.run.name).to_string();
        self.write(|tx| {
            let mut gpu_ids = HashMap::new();
            for g in &export.gpus {
                gpu_ids.insert(g.id, tx.upsert_gpu(&g.gpu)?);
            }
            let mut task_ids = HashMap::new();
            for t in &export.tasks {
                task_ids.insert(t.id, tx.upsert_task(&t.task)?);
            }
            let map_task = |id: i64, what: &str| {
                task_ids
                    .get(&id)
                    .copied()
                    .ok_or_else(|| bad(format!("{what} names task {id}, which is not in `tasks`")))
            };
            let mut new_run = export.run.run.clone();
            new_run.name = name.clone();
            let run = tx.create_run(&new_run)?;
            tx.set_run_status(run.id, export.run.status)?;

            let mut call_ids = HashMap::new();
            for c in &export.llm_calls {
                let mut call = c.call.clone();
                call.run_id = run.id;
                call.task_id = call
                    .task_id
                    .map(|t| map_task(t, &format!("llm call {}", c.id)))
                    .transpose()?;
                call_ids.insert(c.id, tx.add_llm_call(&call)?);
            }
            // Parents come before children in id order, which export order preserves.
            let mut cand_ids = HashMap::new();
            for c in &export.candidates {
                let mut cand = c.candidate.clone();
                cand.run_id = run.id;
                cand.task_id = map_task(cand.task_id, &format!("candidate {}", c.id))?;
                cand.llm_call_id = match cand.llm_call_id {
                    None => None,
                    Some(id) => Some(*call_ids.get(&id).ok_or_else(|| {
                        bad(format!("candidate {} names llm call {id}, which is not in `llm_calls`", c.id))
                    })?),
                };
                for p in &mut cand.parents {
                    p.candidate_id = *cand_ids.get(&p.candidate_id).ok_or_else(|| {
                        bad(format!(
                            "candidate {} names parent {}, which is not an earlier candidate",
                            c.id, p.candidate_id
                        ))
                    })?;
                }
                let (id, _) = tx.add_candidate(&cand)?;
                cand_ids.insert(c.id, id);
            }
            let mut eval_ids = HashMap::new();
            for e in &export.evaluations {
                let mut ev = e.evaluation.clone();
                ev.candidate_id = *cand_ids.get(&ev.candidate_id).ok_or_else(|| {
                    bad(format!(
                        "evaluation {} names candidate {}, which is not in `candidates`",
                        e.id, ev.candidate_id
                    ))
                })?;
                ev.gpu_id = match ev.gpu_id {
                    None => None,
                    Some(g) => Some(*gpu_ids.get(&g).ok_or_else(|| {
                        bad(format!("evaluation {} names GPU {g}, which is not in `gpus`", e.id))
                    })?),
                };
                // A cache source outside this export does not exist in the target database.
                ev.cached_from = ev.cached_from.and_then(|id| eval_ids.get(&id).copied());
                eval_ids.insert(e.id, tx.add_evaluation(&ev)?);
            }
            for p in &export.profiles {
                let mut prof = p.profile.clone();
                prof.evaluation_id = *eval_ids.get(&prof.evaluation_id).ok_or_else(|| {
                    bad(format!(
                        "profile {} names evaluation {}, which is not in `evaluations`",
                        p.id, prof.evaluation_id
                    ))
                })?;
                tx.add_profile(&prof)?;
            }
            let (store, conn) = tx.conn();
            for item in &export.items {
                let task_id = item
                    .task_id
                    .map(|t| map_task(t, &format!("item {}", item.seq)))
                    .transpose()?;
                let (status, claimed_by, expires) = match item.status {
                    ItemStatus::Claimed => (ItemStatus::Pending, None, None),
                    s => (s, item.claimed_by.clone(), item.claim_expires_at_ms),
                };
                store
                    .block_on(async {
                        sqlx::query(
                            "INSERT INTO run_items (run_id, seq, item_key, task_id, payload, status, \
                             claimed_by, claim_expires_at_ms, attempts, outcome, finished_at_ms) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        )
                        .bind(run.id)
                        .bind(item.seq)
                        .bind(&item.item_key)
                        .bind(task_id)
                        .bind(item.payload.to_string())
                        .bind(status.as_str())
                        .bind(claimed_by)
                        .bind(expires)
                        .bind(item.attempts)
                        .bind(item.outcome.as_ref().map(|v| v.to_string()))
                        .bind(item.finished_at_ms)
                        .execute(&mut *conn)
                        .await
                    })
                    .map_err(StoreError::db(format!("importing item {} of `{name}`", item.seq)))?;
            }
            // Keep the original timestamps: reports order runs by them.
            let created = export.run.created_at_ms;
            let finished = export.run.finished_at_ms;
            let row = store
                .block_on(async {
                    sqlx::query(
                        "UPDATE runs SET created_at_ms = $1, finished_at_ms = $2 WHERE id = $3 RETURNING id",
                    )
                    .bind(created)
                    .bind(finished)
                    .bind(run.id)
                    .fetch_one(&mut *conn)
                    .await
                })
                .map_err(StoreError::db(format!("importing run `{name}`")))?;
            get::<i64>(&row, "runs", "id")?;
            Ok(())
        })?;
        self.run_by_name(&name)
    }
}
