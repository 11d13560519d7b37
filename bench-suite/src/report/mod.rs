//! `ksmith report` and `ksmith leaderboard`: KernelBench's fast_p (failures count in N, the
//! comparison strict), geometric-mean speedups vs reference / eager / torch.compile, % of speed-of-light,
//! correctness, per-category numbers, cost and tokens — as Markdown, JSON, CSV or one
//! self-contained HTML page with SVG charts.

mod html;
pub mod metrics;
mod summary;
pub mod svg;
mod text;

pub use summary::{
    summarize, summarize_run, Baseline, BaselineStats, CategoryStats, CostStats, GenerationPoint,
    RunInfo, RunSummary, TaskSummary,
};

pub use text::utc as format_utc;

use crate::store::{Store, StoreError};
use serde::Serialize;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown format `{0}`: use md, json, csv or html")]
    UnknownFormat(String),
    #[error("unknown baseline `{0}`: use reference, eager or compile")]
    UnknownBaseline(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Json,
    Csv,
    Html,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Markdown => "md",
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Html => "html",
        }
    }
}

impl FromStr for Format {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, ReportError> {
        match s.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Ok(Format::Markdown),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "html" => Ok(Format::Html),
            _ => Err(ReportError::UnknownFormat(s.to_string())),
        }
    }
}

impl FromStr for Baseline {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, ReportError> {
        match s.to_ascii_lowercase().as_str() {
            "reference" | "ref" => Ok(Baseline::Reference),
            "eager" => Ok(Baseline::Eager),
            "compile" | "torch.compile" => Ok(Baseline::Compile),
            _ => Err(ReportError::UnknownBaseline(s.to_string())),
        }
    }
}

/// Runs ranked against each other.
#[derive(Debug, Clone, Serialize)]
pub struct Leaderboard {
    /// The baseline fast_p and the ranking use.
    pub baseline: Baseline,
    pub rows: Vec<RunSummary>,
}

/// Which runs a leaderboard shows. Runs without tasks never appear.
#[derive(Debug, Clone, Default)]
pub struct LeaderboardFilter {
    pub suite: Option<String>,
    pub kind: Option<String>,
    pub agent: Option<String>,
    /// Keep only the most recent run of each agent.
    pub latest_per_agent: bool,
}

/// The summary of run `run` (the latest run when None) rendered in `format`.
pub fn run_report(
    store: &Store,
    run: Option<&str>,
    format: Format,
) -> Result<(RunSummary, String), ReportError> {
    let run = match run {
        Some(name) => store.run_by_name(name)?,
        None => store.latest_run()?,
    };
    let summary = summarize_run(store, &run)?;
    let text = render_run(&summary, format)?;
    Ok((summary, text))
}

pub fn render_run(summary: &RunSummary, format: Format) -> Result<String, ReportError> {
    Ok(match format {
        Format::Markdown => text::run_markdown(summary),
        Format::Json => serde_json::to_string_pretty(summary)?,
        Format::Csv => text::run_csv(summary)?,
        Format::Html => html::run_html(summary),
    })
}

/// Summaries of the runs `filter` selects, ranked by fast_1 vs `baseline`, then by
/// geometric-mean speedup vs `baseline`, then by name.
pub fn build_leaderboard(
    store: &Store,
    filter: &LeaderboardFilter,
    baseline: Baseline,
) -> Result<Leaderboard, ReportError> {
    let keep = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    let mut runs: Vec<_> = store
        .runs()?
        .into_iter()
        .filter(|run| {
            keep(&filter.suite, &run.run.suite)
                && keep(&filter.kind, &run.run.kind)
                && keep(&filter.agent, &run.run.agent)
        })
        .collect();
    if filter.latest_per_agent {
        let mut latest: std::collections::HashMap<String, (i64, i64)> = Default::default();
        for r in &runs {
            let e = latest
                .entry(r.run.agent.clone())
                .or_insert((r.created_at_ms, r.id));
            *e = (*e).max((r.created_at_ms, r.id));
        }
        runs.retain(|r| latest.get(&r.run.agent) == Some(&(r.created_at_ms, r.id)));
    }
    let mut rows = Vec::new();
    for run in runs {
        let s = summarize_run(store, &run)?;
        if s.tasks_total > 0 {
            rows.push(s);
        }
    }
    let geo = |s: &RunSummary| {
        s.baseline(baseline)
            .and_then(|b| b.geomean_speedup)
            .unwrap_or(0.0)
    };
    rows.sort_by(|a, b| {
        b.fast(baseline, 1.0)
            .total_cmp(&a.fast(baseline, 1.0))
            .then(geo(b).total_cmp(&geo(a)))
            .then(a.run.name.cmp(&b.run.name))
    });
    Ok(Leaderboard { baseline, rows })
}

pub fn render_leaderboard(board: &Leaderboard, format: Format) -> Result<String, ReportError> {
    Ok(match format {
        Format::Markdown => text::leaderboard_markdown(board),
        Format::Json => serde_json::to_string_pretty(board)?,
        Format::Csv => text::leaderboard_csv(board)?,
        Format::Html => html::leaderboard_html(board),
    })
}
