//! Turning database rows into model values. Column lists live next to their decoders so that a
//! SELECT and the code reading it cannot drift apart.

use super::error::{Result, StoreError};
use super::model::*;
use super::Row;
use serde_json::Value;
use sqlx::Row as _;
use std::str::FromStr;

pub(crate) fn get<'r, T>(row: &'r Row, table: &'static str, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get::<T, _>(column).map_err(StoreError::db(format!(
        "reading column `{column}` of {table}"
    )))
}

fn json(row: &Row, table: &'static str, column: &'static str, id: i64) -> Result<Value> {
    let text: String = get(row, table, column)?;
    serde_json::from_str(&text).map_err(|source| StoreError::BadJson {
        table,
        column,
        id,
        source,
    })
}

fn parse_enum<T: FromStr>(
    row: &Row,
    table: &'static str,
    column: &'static str,
    id: i64,
    what: &'static str,
) -> Result<T> {
    let text: String = get(row, table, column)?;
    T::from_str(&text).map_err(|_| StoreError::BadEnum {
        table,
        column,
        id,
        value: text,
        what,
    })
}

pub(crate) const GPU_COLUMNS: &str =
    "id, gpu_key, name, compute_capability, sm_count, memory_bytes, driver_version, details, created_at_ms";

pub(crate) fn gpu(row: &Row) -> Result<Gpu> {
    const T: &str = "gpus";
    let id: i64 = get(row, T, "id")?;
    Ok(Gpu {
        id,
        gpu: NewGpu {
            gpu_key: get(row, T, "gpu_key")?,
            name: get(row, T, "name")?,
            compute_capability: get(row, T, "compute_capability")?,
            sm_count: get(row, T, "sm_count")?,
            memory_bytes: get(row, T, "memory_bytes")?,
            driver_version: get(row, T, "driver_version")?,
            details: json(row, T, "details", id)?,
        },
        created_at_ms: get(row, T, "created_at_ms")?,
    })
}

pub(crate) const TASK_COLUMNS: &str =
    "id, name, category, title, content_hash, details, created_at_ms";

pub(crate) fn task(row: &Row) -> Result<Task> {
    const T: &str = "tasks";
    let id: i64 = get(row, T, "id")?;
    Ok(Task {
        id,
        task: NewTask {
            name: get(row, T, "name")?,
            category: get(row, T, "category")?,
            title: get(row, T, "title")?,
            content_hash: get(row, T, "content_hash")?,
            details: json(row, T, "details", id)?,
        },
        created_at_ms: get(row, T, "created_at_ms")?,
    })
}

pub(crate) const RUN_COLUMNS: &str = "id, name, kind, agent, suite, config, git_rev, status, created_at_ms, updated_at_ms, finished_at_ms";

pub(crate) fn run(row: &Row) -> Result<Run> {
    const T: &str = "runs";
    let id: i64 = get(row, T, "id")?;
    Ok(Run {
        id,
        run: NewRun {
            name: get(row, T, "name")?,
            kind: get(row, T, "kind")?,
            agent: get(row, T, "agent")?,
            suite: get(row, T, "suite")?,
            config: json(row, T, "config", id)?,
            git_rev: get(row, T, "git_rev")?,
        },
        status: parse_enum(row, T, "status", id, "run status")?,
        created_at_ms: get(row, T, "created_at_ms")?,
        updated_at_ms: get(row, T, "updated_at_ms")?,
        finished_at_ms: get(row, T, "finished_at_ms")?,
    })
}

pub(crate) const LLM_CALL_COLUMNS: &str = "id, run_id, task_id, role, provider, model, tokens_in, tokens_out, cost_usd, latency_ms, request, response, error, created_at_ms";

pub(crate) fn llm_call(row: &Row) -> Result<LlmCall> {
    const T: &str = "llm_calls";
    Ok(LlmCall {
        id: get(row, T, "id")?,
        call: NewLlmCall {
            run_id: get(row, T, "run_id")?,
            task_id: get(row, T, "task_id")?,
            role: get(row, T, "role")?,
            provider: get(row, T, "provider")?,
            model: get(row, T, "model")?,
            tokens_in: get(row, T, "tokens_in")?,
            tokens_out: get(row, T, "tokens_out")?,
            cost_usd: get(row, T, "cost_usd")?,
            latency_ms: get(row, T, "latency_ms")?,
            request: get(row, T, "request")?,
            response: get(row, T, "response")?,
            error: get(row, T, "error")?,
        },
        created_at_ms: get(row, T, "created_at_ms")?,
    })
}

pub(crate) const CANDIDATE_COLUMNS: &str = "id, run_id, task_id, origin, source, plan, content_hash, generation, island, llm_call_id, notes, created_at_ms";

/// Parents are stored in their own table; the caller fills them in.
pub(crate) fn candidate(row: &Row) -> Result<Candidate> {
    const T: &str = "candidates";
    let id: i64 = get(row, T, "id")?;
    Ok(Candidate {
        id,
        candidate: NewCandidate {
            run_id: get(row, T, "run_id")?,
            task_id: get(row, T, "task_id")?,
            origin: parse_enum(row, T, "origin", id, "candidate origin")?,
            source: get(row, T, "source")?,
            plan: get(row, T, "plan")?,
            generation: get(row, T, "generation")?,
            island: get(row, T, "island")?,
            llm_call_id: get(row, T, "llm_call_id")?,
            parents: Vec::new(),
            notes: json(row, T, "notes", id)?,
        },
        content_hash: get(row, T, "content_hash")?,
        created_at_ms: get(row, T, "created_at_ms")?,
    })
}

pub(crate) const EVALUATION_COLUMNS: &str = "id, candidate_id, gpu_id, cache_key, protocol, verdict, details, compile_ms, timings, speedup_ref, speedup_eager, speedup_compile, sol_pct, quarantined, quarantine_reason, cached_from, created_at_ms";

pub(crate) fn evaluation(row: &Row) -> Result<Evaluation> {
    const T: &str = "evaluations";
    let id: i64 = get(row, T, "id")?;
    let timings_json = json(row, T, "timings", id)?;
    let timings: Vec<ShapeTiming> =
        serde_json::from_value(timings_json).map_err(|source| StoreError::BadJson {
            table: T,
            column: "timings",
            id,
            source,
        })?;
    let quarantined: i64 = get(row, T, "quarantined")?;
    Ok(Evaluation {
        id,
        evaluation: NewEvaluation {
            candidate_id: get(row, T, "candidate_id")?,
            gpu_id: get(row, T, "gpu_id")?,
            cache_key: get(row, T, "cache_key")?,
            protocol: get(row, T, "protocol")?,
            verdict: parse_enum(row, T, "verdict", id, "verdict")?,
            details: json(row, T, "details", id)?,
            compile_ms: get(row, T, "compile_ms")?,
            timings,
            speedup_ref: get(row, T, "speedup_ref")?,
            speedup_eager: get(row, T, "speedup_eager")?,
            speedup_compile: get(row, T, "speedup_compile")?,
            sol_pct: get(row, T, "sol_pct")?,
            quarantined: quarantined != 0,
            quarantine_reason: get(row, T, "quarantine_reason")?,
            cached_from: get(row, T, "cached_from")?,
        },
        created_at_ms: get(row, T, "created_at_ms")?,
    })
}

pub(crate) const PROFILE_COLUMNS: &str =
    "id, evaluation_id, tool, kernel, metrics, raw, created_at_ms";

pub(crate) fn profile(row: &Row) -> Result<Profile> {
    const T: &str = "profiles";
    let id: i64 = get(row, T, "id")?;
    Ok(Profile {
        id,
        profile: NewProfile {
            evaluation_id: get(row, T, "evaluation_id")?,
            tool: get(row, T, "tool")?,
            kernel: get(row, T, "kernel")?,
            metrics: json(row, T, "metrics", id)?,
            raw: get(row, T, "raw")?,
        },
        created_at_ms: get(row, T, "created_at_ms")?,
    })
}

pub(crate) const ITEM_COLUMNS: &str = "run_id, seq, item_key, task_id, payload, status, claimed_by, claim_expires_at_ms, attempts, outcome, finished_at_ms";

pub(crate) fn item(row: &Row) -> Result<RunItem> {
    const T: &str = "run_items";
    let seq: i64 = get(row, T, "seq")?;
    let outcome: Option<String> = get(row, T, "outcome")?;
    let outcome = outcome
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|source| StoreError::BadJson {
            table: T,
            column: "outcome",
            id: seq,
            source,
        })?;
    Ok(RunItem {
        run_id: get(row, T, "run_id")?,
        seq,
        item_key: get(row, T, "item_key")?,
        task_id: get(row, T, "task_id")?,
        payload: json(row, T, "payload", seq)?,
        status: parse_enum(row, T, "status", seq, "item status")?,
        claimed_by: get(row, T, "claimed_by")?,
        claim_expires_at_ms: get(row, T, "claim_expires_at_ms")?,
        attempts: get(row, T, "attempts")?,
        outcome,
        finished_at_ms: get(row, T, "finished_at_ms")?,
    })
}
