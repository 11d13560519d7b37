use std::path::PathBuf;

/// What can go wrong in the result store. Every variant says which operation failed so that a
/// message reaching the user names the run, item or file involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{url}`: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl { url: String },
    #[error("cannot create the directory {path} for the SQLite database: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime the database driver needs: {0}")]
    Runtime(std::io::Error),
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrating the schema of {url} failed: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error while {context}: {source}")]
    Db {
        context: String,
        source: sqlx::Error,
    },
    #[error("column `{column}` of {table} row {id} holds invalid JSON: {source}")]
    BadJson {
        table: &'static str,
        column: &'static str,
        id: i64,
        source: serde_json::Error,
    },
    #[error("column `{column}` of {table} row {id} holds `{value}`, which is not a known {what}")]
    BadEnum {
        table: &'static str,
        column: &'static str,
        id: i64,
        value: String,
        what: &'static str,
    },
    #[error("no run named `{0}` in the store")]
    NoSuchRun(String),
    #[error("a run named `{0}` already exists")]
    RunExists(String),
    #[error("the store holds no runs yet")]
    NoRuns,
    #[error("{what} {id} does not exist")]
    Missing { what: &'static str, id: i64 },
    #[error("candidate {parent} cannot be a parent of a candidate of run {run}, task {task}: lineage stays inside one run and task")]
    ForeignParent { parent: i64, run: i64, task: i64 },
    #[error("item {seq} of run {run} is no longer claimed by {worker} (reclaimed by a resume or after its lease ran out); its result was not recorded")]
    ClaimLost { run: i64, seq: i64, worker: String },
    #[error("cannot serialize {what} to JSON: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{path}: not a kernelsmith run export: {source}")]
    BadExport {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: export format version {found} is not supported (this build reads version {supported})")]
    ExportVersion {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("{path}: inconsistent export: {problem}")]
    InconsistentExport { path: String, problem: String },
}

impl StoreError {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Db { context, source }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
