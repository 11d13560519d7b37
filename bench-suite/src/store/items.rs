//! Resumable runs. A run is an ordered list of work items (usually one per task). A worker
//! claims the next item, does the work, and records the result together with
//! [`StoreTx::finish_item`] in one transaction, so a kill at any moment loses at most the items
//! in flight. `--resume` reclaims the items of dead workers; items whose claim lease ran out
//! (a crashed machine sharing a PostgreSQL database) are taken over by the next claim.

use super::error::{Result, StoreError};
use super::model::*;
use super::rows::{self, get};
use super::{now_ms, Store, StoreTx};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a claim holds without [`Store::renew_claim`]; after that another worker may take
/// the item over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    /// Unique within the run (e.g. the task name); adding an existing key again is a no-op.
    pub key: String,
    pub task_id: Option<i64>,
    pub payload: Value,
}

/// Who holds a claim: `host/pid/start-time`. The start time (from /proc) tells a live process
/// from a later one that got the same pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerId(String);

impl WorkerId {
    pub fn this_process() -> WorkerId {
        static ID: OnceLock<String> = OnceLock::new();
        WorkerId(
            ID.get_or_init(|| {
                let pid = std::process::id();
                let start = process_start_time(pid).unwrap_or_default();
                format!("{}/{pid}/{start}", hostname())
            })
            .clone(),
        )
    }

    /// A worker name of the caller's choosing (tests, several workers in one process).
    pub fn named(name: impl Into<String>) -> WorkerId {
        WorkerId(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot); None off Linux.
fn process_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_string)
}

/// Whether the claimant named by `worker` is certainly dead: it ran on this host and no
/// process with its pid and start time exists any more. Unknown formats count as alive.
fn claimant_is_dead(worker: &str) -> bool {
    let mut parts = worker.rsplitn(3, '/');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if host != hostname() || !std::path::Path::new("/proc/self/stat").exists() {
        return false;
    }
    match process_start_time(pid) {
        None => true,
        Some(now) => now != start,
    }
}

/// A claimed item: do the work, then [`StoreTx::finish_item`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub run_id: i64,
    pub seq: i64,
    pub item_key: String,
    pub task_id: Option<i64>,
    pub payload: Value,
    /// 1 on the first try; more when the item was reclaimed from a dead worker.
    pub attempt: i64,
    pub worker: WorkerId,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub pending: i64,
    pub claimed: i64,
    pub done: i64,
    pub failed: i64,
}

impl Progress {
    pub fn total(&self) -> i64 {
        self.pending + self.claimed + self.done + self.failed
    }
    pub fn complete(&self) -> bool {
        self.pending == 0 && self.claimed == 0
    }
}

#[derive(Debug, Clone)]
pub struct ResumeReport {
    pub run: Run,
    /// (seq, item key, previous claimant) of every item handed back to the queue.
    pub reclaimed: Vec<(i64, String, String)>,
    pub progress: Progress,
}

impl Store {
    /// Appends work items to a run in the given order. Keys already present are skipped, so a
    /// resumed run can re-add its full list safely. Returns how many were new.
    pub fn add_items(&self, run_id: i64, items: &[WorkItem]) -> Result<usize> {
        self.write(|tx| {
            let (store, conn) = tx.conn();
            store.block_on(async move {
                let row = sqlx::query(
                    "SELECT COALESCE(MAX(seq), -1) AS m FROM run_items WHERE run_id = $1",
                )
                .bind(run_id)
                .fetch_one(&mut *conn)
                .await
                .map_err(StoreError::db(format!("reading the items of run {run_id}")))?;
                let mut next: i64 = get::<i64>(&row, "run_items", "m")? + 1;
                let mut added = 0;
                for item in items {
                    let res = sqlx::query(
                        "INSERT INTO run_items (run_id, seq, item_key, task_id, payload, status) \
                         VALUES ($1, $2, $3, $4, $5, 'pending') \
                         ON CONFLICT (run_id, item_key) DO NOTHING",
                    )
                    .bind(run_id)
                    .bind(next)
                    .bind(&item.key)
                    .bind(item.task_id)
                    .bind(item.payload.to_string())
                    .execute(&mut *conn)
                    .await
                    .map_err(StoreError::db(format!(
                        "adding item `{}` to run {run_id}",
                        item.key
                    )))?;
                    if res.rows_affected() > 0 {
                        next += 1;
                        added += 1;
                    }
                }
                Ok(added)
            })
        })
    }

    /// Claims the first item (in run order) that is pending or whose claim lease ran out.
    /// None when nothing is left to claim (items may still be in flight elsewhere).
    pub fn claim_next(
        &self,
        run_id: i64,
        worker: &WorkerId,
        lease: Duration,
    ) -> Result<Option<Claim>> {
        // Under concurrency (several workers, several machines) two claimers can pick the same
        // seq; the status re-check in the UPDATE lets exactly one win and the other retries.
        for attempt in 0..1000u32 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(u64::from(attempt.min(20))));
            }
            let now = now_ms();
            let expires = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
            let pool = self.pool();
            let row = self
                .block_on(async move {
                    sqlx::query(
                        "UPDATE run_items SET status = 'claimed', claimed_by = $1, \
                         claim_expires_at_ms = $2, attempts = attempts + 1 \
                         WHERE run_id = $3 AND seq = (SELECT MIN(seq) FROM run_items \
                           WHERE run_id = $3 AND (status = 'pending' \
                           OR (status = 'claimed' AND claim_expires_at_ms < $4))) \
                         AND (status = 'pending' OR (status = 'claimed' AND claim_expires_at_ms < $4)) \
                         RETURNING seq, item_key, task_id, payload, attempts",
                    )
                    .bind(worker.as_str())
                    .bind(expires)
                    .bind(run_id)
                    .bind(now)
                    .fetch_optional(pool)
                    .await
                })
                .map_err(StoreError::db(format!("claiming an item of run {run_id}")))?;
            if let Some(row) = row {
                const T: &str = "run_items";
                let seq: i64 = get(&row, T, "seq")?;
                let payload: String = get(&row, T, "payload")?;
                let payload =
                    serde_json::from_str(&payload).map_err(|source| StoreError::BadJson {
                        table: T,
                        column: "payload",
                        id: seq,
                        source,
                    })?;
                return Ok(Some(Claim {
                    run_id,
                    seq,
                    item_key: get(&row, T, "item_key")?,
                    task_id: get(&row, T, "task_id")?,
                    payload,
                    attempt: get(&row, T, "attempts")?,
                    worker: worker.clone(),
                }));
            }
            let p = self.progress(run_id)?;
            if p.pending == 0 {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Extends a claim's lease (a heartbeat for long items). Fails with
    /// [`StoreError::ClaimLost`] when the item was taken over meanwhile.
    pub fn renew_claim(&self, claim: &Claim, lease: Duration) -> Result<()> {
        let expires = now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let pool = self.pool();
        let res = self
            .block_on(async move {
                sqlx::query(
                    "UPDATE run_items SET claim_expires_at_ms = $1 WHERE run_id = $2 AND seq = $3 \
                     AND status = 'claimed' AND claimed_by = $4",
                )
                .bind(expires)
                .bind(claim.run_id)
                .bind(claim.seq)
                .bind(claim.worker.as_str())
                .execute(pool)
                .await
            })
            .map_err(StoreError::db("renewing a claim"))?;
        if res.rows_affected() == 0 {
            return Err(claim_lost(claim));
        }
        Ok(())
    }

    /// Hands an unfinished item back to the queue (a graceful stop).
    pub fn release_claim(&self, claim: &Claim) -> Result<()> {
        let pool = self.pool();
        self.block_on(async move {
            sqlx::query(
                "UPDATE run_items SET status = 'pending', claimed_by = NULL, \
                 claim_expires_at_ms = NULL WHERE run_id = $1 AND seq = $2 AND status = 'claimed' \
                 AND claimed_by = $3",
            )
            .bind(claim.run_id)
            .bind(claim.seq)
            .bind(claim.worker.as_str())
            .execute(pool)
            .await
        })
        .map_err(StoreError::db("releasing a claim"))?;
        Ok(())
    }

    pub fn items(&self, run_id: i64) -> Result<Vec<RunItem>> {
        let pool = self.pool();
        let rows = self
            .block_on(async move {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {} FROM run_items WHERE run_id = $1 ORDER BY seq",
                    rows::ITEM_COLUMNS
                )))
                .bind(run_id)
                .fetch_all(pool)
                .await
            })
            .map_err(StoreError::db(format!("listing the items of run {run_id}")))?;
        rows.iter().map(rows::item).collect()
    }

    pub fn progress(&self, run_id: i64) -> Result<Progress> {
        let pool = self.pool();
        let rows = self
            .block_on(async move {
                sqlx::query(
                    "SELECT status, COUNT(*) AS n FROM run_items WHERE run_id = $1 GROUP BY status",
                )
                .bind(run_id)
                .fetch_all(pool)
                .await
            })
            .map_err(StoreError::db(format!(
                "counting the items of run {run_id}"
            )))?;
        let mut p = Progress::default();
        for row in &rows {
            let status: String = get(row, "run_items", "status")?;
            let n: i64 = get(row, "run_items", "n")?;
            match status.as_str() {
                "pending" => p.pending = n,
                "claimed" => p.claimed = n,
                "done" => p.done = n,
                _ => p.failed += n,
            }
        }
        Ok(p)
    }

    /// Continues run `name`: marks it running again and hands back to the queue every item
    /// claimed by a worker that is gone (a dead process on this host, or an expired lease).
    /// Items claimed by live workers elsewhere are left to them.
    pub fn resume_run(&self, name: &str) -> Result<ResumeReport> {
        let run = self.run_by_name(name)?;
        let now = now_ms();
        let mut reclaimed = Vec::new();
        for item in self.items(run.id)? {
            if item.status != ItemStatus::Claimed {
                continue;
            }
            let claimant = item.claimed_by.clone().unwrap_or_default();
            let expired = item.claim_expires_at_ms.is_none_or(|t| t < now);
            if !(expired || claimant_is_dead(&claimant)) {
                continue;
            }
            let pool = self.pool();
            let claimant_ref = claimant.as_str();
            let res = self
                .block_on(async move {
                    sqlx::query(
                        "UPDATE run_items SET status = 'pending', claimed_by = NULL, \
                         claim_expires_at_ms = NULL WHERE run_id = $1 AND seq = $2 \
                         AND status = 'claimed' AND claimed_by = $3",
                    )
                    .bind(item.run_id)
                    .bind(item.seq)
                    .bind(claimant_ref)
                    .execute(pool)
                    .await
                })
                .map_err(StoreError::db(format!(
                    "reclaiming an item of run `{name}`"
                )))?;
            if res.rows_affected() > 0 {
                reclaimed.push((item.seq, item.item_key, claimant));
            }
        }
        self.write(|tx| tx.set_run_status(run.id, RunStatus::Running))?;
        let run = self.run_by_name(name)?;
        let progress = self.progress(run.id)?;
        Ok(ResumeReport {
            run,
            reclaimed,
            progress,
        })
    }

    /// A graceful stop (Ctrl-C): hands every item `worker` holds in run `run_id` back to the
    /// queue and marks the run interrupted, so `--resume` continues it at once. Returns how
    /// many claims were released.
    pub fn interrupt_run(&self, run_id: i64, worker: &WorkerId) -> Result<u64> {
        self.write(|tx| {
            let (store, conn) = tx.conn();
            let released = store
                .block_on(async move {
                    sqlx::query(
                        "UPDATE run_items SET status = 'pending', claimed_by = NULL, \
                         claim_expires_at_ms = NULL WHERE run_id = $1 AND status = 'claimed' \
                         AND claimed_by = $2",
                    )
                    .bind(run_id)
                    .bind(worker.as_str())
                    .execute(&mut *conn)
                    .await
                })
                .map_err(StoreError::db(format!(
                    "releasing the claims of run {run_id}"
                )))?
                .rows_affected();
            tx.set_run_status(run_id, RunStatus::Interrupted)?;
            Ok(released)
        })
    }

    /// Marks the run finished when no item is pending or in flight; returns whether it did.
    pub fn finish_run_if_complete(&self, run_id: i64) -> Result<bool> {
        if !self.progress(run_id)?.complete() {
            return Ok(false);
        }
        self.write(|tx| tx.set_run_status(run_id, RunStatus::Finished))?;
        Ok(true)
    }
}

/// Keeps a claim alive from a background thread while its item is worked on (searches can
/// outlast any fixed lease). Stops when dropped; [`Heartbeat::lost`] tells whether the claim
/// was taken over anyway (then the item's result will be refused with `ClaimLost`).
pub struct Heartbeat {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Heartbeat {
    pub fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts renewing `claim` every third of `lease` until the returned guard is dropped.
pub fn heartbeat(store: &std::sync::Arc<Store>, claim: &Claim, lease: Duration) -> Heartbeat {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (store, claim, flag) = (store.clone(), claim.clone(), lost.clone());
    let period = (lease / 3).max(Duration::from_millis(10));
    let thread = std::thread::spawn(move || loop {
        match rx.recv_timeout(period) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                match store.renew_claim(&claim, lease) {
                    Ok(()) => {}
                    Err(StoreError::ClaimLost { .. }) => {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    // A database hiccup: try again next period; the lease has slack.
                    Err(e) => tracing::warn!("renewing the claim on item {}: {e}", claim.seq),
                }
            }
            _ => return,
        }
    });
    Heartbeat {
        stop: Some(tx),
        thread: Some(thread),
        lost,
    }
}

fn claim_lost(claim: &Claim) -> StoreError {
    StoreError::ClaimLost {
        run: claim.run_id,
        seq: claim.seq,
        worker: claim.worker.as_str().to_string(),
    }
}

impl StoreTx<'_> {
    /// Marks a claimed item done (or failed) inside this transaction, next to the rows its work
    /// produced. Fails with [`StoreError::ClaimLost`] — and the caller should drop the
    /// transaction — when the claim was taken over meanwhile, so a result is never recorded
    /// twice.
    pub fn finish_item(
        &mut self,
        claim: &Claim,
        status: ItemStatus,
        outcome: Option<&Value>,
    ) -> Result<()> {
        let status = match status {
            ItemStatus::Failed => ItemStatus::Failed,
            _ => ItemStatus::Done,
        };
        let outcome = outcome.map(Value::to_string);
        let (store, conn) = self.conn();
        let res = store
            .block_on(async move {
                sqlx::query(
                    "UPDATE run_items SET status = $1, outcome = $2, finished_at_ms = $3 \
                     WHERE run_id = $4 AND seq = $5 AND status = 'claimed' AND claimed_by = $6",
                )
                .bind(status.as_str())
                .bind(outcome)
                .bind(now_ms())
                .bind(claim.run_id)
                .bind(claim.seq)
                .bind(claim.worker.as_str())
                .execute(&mut *conn)
                .await
            })
            .map_err(StoreError::db("finishing a work item"))?;
        if res.rows_affected() == 0 {
            return Err(claim_lost(claim));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_gone_pid_is_dead() {
        let me = WorkerId::this_process();
        assert!(!claimant_is_dead(me.as_str()));
        // pid_max is at most 2^22 on Linux, so this pid cannot exist.
        let gone = format!("{}/{}/{}", hostname(), 9_999_999u32, "1");
        assert_eq!(
            claimant_is_dead(&gone),
            std::path::Path::new("/proc/self/stat").exists()
        );
        // Another host's workers are never declared dead from here, nor malformed names.
        assert!(!claimant_is_dead("some-other-host.invalid/1/1"));
        assert!(!claimant_is_dead("garbage"));
    }
}
