//! The result store: runs, candidates, evaluations, LLM calls and profiles in SQLite (default,
//! one file under `results/`) or PostgreSQL (several machines sharing one database).
//!
//! One code path serves both: queries go through `sqlx::Any` with `$N` placeholders (SQLite
//! accepts them too) and only portable column types (BIGINT, REAL/DOUBLE, TEXT). The schema
//! lives in `bench-suite/migrations/{sqlite,postgres}` and is embedded in the binary.
//!
//! The API is synchronous: the store owns a small tokio runtime for the driver, so callers
//! (the CLI, worker pools) need no async code. Writes go through [`StoreTx`] so that a finished
//! work item and everything it produced commit together or not at all.
//!
//! The intended flow of a worker (agent, suite run, replay):
//!
//! ```text
//! let run = store.write(|tx| tx.create_run(&new_run))?;        // or store.resume_run(name)?
//! store.add_items(run.id, &items)?;                             // idempotent by key
//! while let Some(claim) = store.claim_next(run.id, &WorkerId::this_process(), DEFAULT_LEASE)? {
//!     let key = EvalKey { candidate_hash, task_hash, gpu_key, protocol }.digest();
//!     let cached = store.cached_evaluation(&key)?;              // same kernel seen before?
//!     let fresh = match cached { None => Some(evaluate_on_gpu()), Some(_) => None };
//!     // GPU and LLM work happen above, outside any transaction: on SQLite an open write
//!     // transaction blocks every other writer.
//!     store.write(|tx| {
//!         let (cand, _) = tx.add_candidate(&candidate)?;
//!         match &cached {
//!             Some(e) => tx.reuse_evaluation(cand, e)?,
//!             None => tx.add_evaluation(&fresh_with(cand))?,
//!         };
//!         tx.finish_item(&claim, ItemStatus::Done, None)
//!     })?;
//! }
//! store.finish_run_if_complete(run.id)?;
//! ```
//!
//! Long items keep their claim alive with [`heartbeat`] (or [`Store::renew_claim`]): a claim
//! whose lease runs out is taken over by the next `claim_next`, in this process or another.

mod cache;
mod error;
mod export;
mod items;
mod model;
mod read;
mod rows;
mod write;

pub use cache::{candidate_hash, EvalKey};
pub use error::{Result, StoreError};
pub use export::{RunExport, EXPORT_FORMAT, EXPORT_VERSION};
pub use items::{
    heartbeat, Claim, Heartbeat, Progress, ResumeReport, WorkItem, WorkerId, DEFAULT_LEASE,
};
pub use model::*;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr, Transaction};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Where `ksmith` keeps its results unless told otherwise (`--db URL` or `KSMITH_DB`).
pub const DEFAULT_DB_URL: &str = "sqlite://results/ksmith.db";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl {
                url: redact_url(url),
            })
        }
    }
}

/// A URL fit for messages and logs: the password, if any, is replaced.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

pub struct Store {
    // Declared before the runtime so that the pool is dropped while the runtime still exists.
    pool: AnyPool,
    backend: Backend,
    url: String,
    rt: Option<tokio::runtime::Runtime>,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub fn open(url: &str) -> Result<Store> {
        let backend = Backend::from_url(url)?;
        let shown = redact_url(url);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ksmith-store")
            .enable_all()
            .build()
            .map_err(StoreError::Runtime)?;
        sqlx::any::install_default_drivers();
        let connect_url = match backend {
            Backend::Sqlite => prepare_sqlite(url)?,
            Backend::Postgres => url.to_string(),
        };
        let pool = run_on(&rt, async {
            if backend == Backend::Sqlite {
                // Switching a fresh file to WAL needs a moment of exclusive access, which
                // another process creating the same file may hold ("database is locked").
                let mut attempt = 0u64;
                while let Err(e) = set_wal(&connect_url, &shown).await {
                    if attempt >= 20 {
                        return Err(e);
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                }
            }
            AnyPoolOptions::new()
                // SQLite has one writer anyway; a small pool keeps file handles few.
                .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
                .acquire_timeout(Duration::from_secs(30))
                .connect(&connect_url)
                .await
                .map_err(|source| StoreError::Connect {
                    url: shown.clone(),
                    source,
                })
        })?;
        let migrator = migrator(backend);
        // PostgreSQL serializes concurrent migrators with an advisory lock; SQLite has none, so
        // two processes opening a fresh file at once can collide ("table already exists").
        // The loser retries and then finds the migration applied.
        let mut attempt = 0;
        loop {
            match run_on(&rt, migrator.run(&pool)) {
                Ok(()) => break,
                Err(_) if backend == Backend::Sqlite && attempt < 5 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100 * attempt));
                }
                Err(source) => {
                    return Err(StoreError::Migrate {
                        url: shown.clone(),
                        source,
                    })
                }
            }
        }
        Ok(Store {
            pool,
            backend,
            url: shown,
            rt: Some(rt),
        })
    }

    /// The database named by `explicit`, else `$KSMITH_DB`, else [`DEFAULT_DB_URL`].
    pub fn resolve_url(explicit: Option<&str>) -> String {
        if let Some(url) = explicit {
            return url.to_string();
        }
        match std::env::var("KSMITH_DB") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => DEFAULT_DB_URL.to_string(),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL with any password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so a transaction that reads before it writes cannot fail half-way with
    /// "database is locked" when another process committed in between.
    pub fn transaction(&self) -> Result<StoreTx<'_>> {
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        let tx = self
            .block_on(self.pool.begin_with(begin))
            .map_err(StoreError::db("starting a transaction"))?;
        Ok(StoreTx {
            store: self,
            tx: Some(tx),
        })
    }

    /// Runs `f` in one transaction and commits it; an error anywhere rolls everything back.
    pub fn write<T>(&self, f: impl FnOnce(&mut StoreTx<'_>) -> Result<T>) -> Result<T> {
        let mut tx = self.transaction()?;
        let value = f(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Drives a driver future to completion from synchronous code. Inside someone else's tokio
    /// runtime (the agent may have one) blocking its thread would panic, so the future then runs
    /// on a short-lived thread of its own.
    pub(crate) fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        match &self.rt {
            Some(rt) => run_on(rt, fut),
            None => unreachable_runtime(),
        }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs `f` inside the runtime's context: dropping a pooled connection hands it back
    /// through a spawned task, which needs one.
    fn in_context<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.rt {
            Some(rt) => {
                let _guard = rt.enter();
                f()
            }
            None => f(),
        }
    }
}

impl Drop for StoreTx<'_> {
    fn drop(&mut self) {
        // An uncommitted transaction rolls back when its connection goes back to the pool.
        if let Some(tx) = self.tx.take() {
            self.store.in_context(move || drop(tx));
        }
    }
}

#[cold]
fn unreachable_runtime() -> ! {
    // `rt` is only taken in Drop; no method can run after that.
    panic!("the store's runtime was used after the store was dropped")
}

/// Whether tokio would panic on blocking this thread: inside another runtime, or in a
/// thread-local destructor (a Store dropped at thread exit), where tokio's own context is already
/// gone. Such work blocks on a thread of its own.
fn cannot_block_here() -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => true,
        Err(e) => e.is_thread_local_destroyed(),
    }
}

fn run_on<F>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if cannot_block_here() {
        std::thread::scope(|s| {
            let handle = s.spawn(|| rt.block_on(fut));
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    } else {
        rt.block_on(fut)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Closing the pool lets SQLite checkpoint its WAL and PostgreSQL end sessions cleanly.
            let pool = self.pool.clone();
            run_on(&rt, async move { pool.close().await });
            // Dropping a runtime blocks too.
            if cannot_block_here() {
                rt.shutdown_background();
            }
        }
    }
}

/// Makes sure the directory of a SQLite file exists and asks the driver to create the file.
fn prepare_sqlite(url: &str) -> Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::UnsupportedUrl {
            url: url.to_string(),
        });
    }
    if let Some(dir) = Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: PathBuf::from(dir),
                source,
            })?;
        }
    }
    Ok(match query {
        Some(q) if q.contains("mode=") => format!("sqlite://{path}?{q}"),
        Some(q) => format!("sqlite://{path}?{q}&mode=rwc"),
        None => format!("sqlite://{path}?mode=rwc"),
    })
}

/// WAL lets readers (a report) work while a run writes. The mode is stored in the file, so
/// setting it once on a fresh connection covers every later connection of the pool.
async fn set_wal(url: &str, shown: &str) -> Result<()> {
    use sqlx::ConnectOptions;
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .map_err(|source| StoreError::Connect {
            url: shown.to_string(),
            source,
        })?
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let conn = opts.connect().await.map_err(|source| StoreError::Connect {
        url: shown.to_string(),
        source,
    })?;
    sqlx::Connection::close(conn)
        .await
        .map_err(StoreError::db("closing the set-up connection"))
}

fn migrator(backend: Backend) -> Migrator {
    let sql: &'static str = match backend {
        Backend::Sqlite => include_str!("../../migrations/sqlite/0001_initial.sql"),
        Backend::Postgres => include_str!("../../migrations/postgres/0001_initial.sql"),
    };
    Migrator::with_migrations(vec![Migration::new(
        1,
        "initial".into(),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )])
}

/// A write transaction. Dropping it without [`StoreTx::commit`] rolls it back.
pub struct StoreTx<'s> {
    store: &'s Store,
    // Always Some until commit or drop take it.
    tx: Option<Transaction<'static, sqlx::Any>>,
}

impl StoreTx<'_> {
    pub fn commit(mut self) -> Result<()> {
        match self.tx.take() {
            Some(tx) => self
                .store
                .block_on(tx.commit())
                .map_err(StoreError::db("committing a transaction")),
            None => Ok(()),
        }
    }

    pub fn backend(&self) -> Backend {
        self.store.backend
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) type Row = AnyRow;

// Workers share one store across threads.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Store>();
};
