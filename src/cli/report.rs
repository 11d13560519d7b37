//! `ksmith report`, `ksmith leaderboard` and `ksmith db ...`: reading the result store.

use anyhow::Context;
use bench_suite::report::{self, Baseline, Format, LeaderboardFilter};
use bench_suite::store::{RunExport, Store};
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Md,
    Json,
    Csv,
    Html,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Md => Format::Markdown,
            FormatArg::Json => Format::Json,
            FormatArg::Csv => Format::Csv,
            FormatArg::Html => Format::Html,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BaselineArg {
    Reference,
    Eager,
    Compile,
}

impl From<BaselineArg> for Baseline {
    fn from(b: BaselineArg) -> Baseline {
        match b {
            BaselineArg::Reference => Baseline::Reference,
            BaselineArg::Eager => Baseline::Eager,
            BaselineArg::Compile => Baseline::Compile,
        }
    }
}

/// Where results live: `--db URL`, else $KSMITH_DB, else sqlite://results/ksmith.db.
#[derive(Debug, Clone, Args)]
pub struct DbArg {
    /// Result database: sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://results/ksmith.db]
    #[arg(long = "db", env = "KSMITH_DB", value_name = "URL")]
    pub db: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run to report on [default: the latest run]
    #[arg(long, value_name = "RUN")]
    pub run: Option<String>,
    #[arg(long, value_enum, default_value = "md")]
    pub format: FormatArg,
    /// Write here instead of stdout ("-" for stdout); HTML goes to results/report-RUN.html by default
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct LeaderboardArgs {
    /// Only runs of this suite
    #[arg(long)]
    pub suite: Option<String>,
    /// Only runs of this kind (agent, bench, eval, replay, ...)
    #[arg(long)]
    pub kind: Option<String>,
    /// Only runs of this agent
    #[arg(long)]
    pub agent: Option<String>,
    /// Only the most recent run of each agent
    #[arg(long)]
    pub latest_per_agent: bool,
    /// The baseline fast_p and the ranking use
    #[arg(long, value_enum, default_value = "reference")]
    pub baseline: BaselineArg,
    #[arg(long, value_enum, default_value = "md")]
    pub format: FormatArg,
    /// Write here instead of stdout ("-" for stdout); HTML goes to results/leaderboard.html by default
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Where the database is, and how many rows each table holds
    Info {
        #[command(flatten)]
        db: DbArg,
    },
    /// List runs with their status and work-item progress
    Runs {
        #[command(flatten)]
        db: DbArg,
    },
    /// Write a run (items, candidates, evaluations, LLM calls, profiles) as one JSON document
    Export {
        #[arg(long, value_name = "RUN")]
        run: String,
        /// Output file [default: stdout]
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
    /// Add a run exported elsewhere to this database
    Import {
        /// The export file
        file: PathBuf,
        /// Import under this run name instead of the exported one
        #[arg(long = "as", value_name = "NAME")]
        rename: Option<String>,
        #[command(flatten)]
        db: DbArg,
    },
}

fn open(db: &DbArg, override_url: Option<&str>) -> anyhow::Result<Store> {
    let url = Store::resolve_url(override_url.or(db.db.as_deref()));
    Store::open(&url).with_context(|| "opening the result store".to_string())
}

fn emit(text: &str, out: Option<&Path>, default_file: Option<PathBuf>) -> anyhow::Result<()> {
    let target = match out {
        Some(p) if p == Path::new("-") => None,
        Some(p) => Some(p.to_path_buf()),
        None => default_file,
    };
    match target {
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .context("writing to stdout")?;
            stdout.flush().context("writing to stdout")?;
        }
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// A file name made of the run name's safe characters.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `ksmith report`. `db_url` overrides `--db` (for a global option, should one be added).
pub fn run_report(args: &ReportArgs, db_url: Option<&str>) -> anyhow::Result<u8> {
    let store = open(&args.db, db_url)?;
    let format: Format = args.format.into();
    let (summary, text) = report::run_report(&store, args.run.as_deref(), format)?;
    let default_file = (format == Format::Html).then(|| {
        PathBuf::from(format!(
            "results/report-{}.html",
            file_stem(&summary.run.name)
        ))
    });
    emit(&text, args.out.as_deref(), default_file)?;
    Ok(super::EXIT_OK)
}

/// `ksmith leaderboard`.
pub fn run_leaderboard(args: &LeaderboardArgs, db_url: Option<&str>) -> anyhow::Result<u8> {
    let store = open(&args.db, db_url)?;
    let filter = LeaderboardFilter {
        suite: args.suite.clone(),
        kind: args.kind.clone(),
        agent: args.agent.clone(),
        latest_per_agent: args.latest_per_agent,
    };
    let board = report::build_leaderboard(&store, &filter, args.baseline.into())?;
    let format: Format = args.format.into();
    let text = report::render_leaderboard(&board, format)?;
    let default_file = (format == Format::Html).then(|| PathBuf::from("results/leaderboard.html"));
    emit(&text, args.out.as_deref(), default_file)?;
    Ok(super::EXIT_OK)
}

/// `ksmith db ...`.
pub fn run_db(cmd: &DbCommand, db_url: Option<&str>) -> anyhow::Result<u8> {
    match cmd {
        DbCommand::Info { db } => {
            let store = open(db, db_url)?;
            println!("database: {} ({:?})", store.url(), store.backend());
            for (table, n) in store.table_counts()? {
                println!("{table:>18}  {n}");
            }
        }
        DbCommand::Runs { db } => {
            let store = open(db, db_url)?;
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            table.set_header([
                "run",
                "kind",
                "agent",
                "suite",
                "status",
                "items done",
                "created",
            ]);
            for run in store.runs()? {
                let p = store.progress(run.id)?;
                table.add_row([
                    run.run.name.clone(),
                    run.run.kind.clone(),
                    run.run.agent.clone(),
                    run.run.suite.clone(),
                    run.status.as_str().to_string(),
                    format!("{}/{}", p.done + p.failed, p.total()),
                    report::format_utc(run.created_at_ms),
                ]);
            }
            println!("{table}");
        }
        DbCommand::Export { run, out, db } => {
            let store = open(db, db_url)?;
            let export = store.export_run(run)?;
            emit(&export.to_json()?, out.as_deref(), None)?;
        }
        DbCommand::Import { file, rename, db } => {
            let store = open(db, db_url)?;
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let shown = file.display().to_string();
            let export = RunExport::from_json(&text, &shown)?;
            let run = store.import_run(&export, rename.as_deref(), &shown)?;
            eprintln!(
                "imported run `{}`: {} candidates, {} evaluations, {} LLM calls",
                run.run.name,
                export.candidates.len(),
                export.evaluations.len(),
                export.llm_calls.len()
            );
        }
    }
    Ok(super::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bench_suite::store::{NewRun, NewTask, WorkItem};
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        cmd: TestCmd,
    }

    #[derive(Debug, clap::Subcommand)]
    enum TestCmd {
        Report(ReportArgs),
        Leaderboard(LeaderboardArgs),
        #[command(subcommand)]
        Db(DbCommand),
    }

    fn exec(args: &[&str]) -> anyhow::Result<u8> {
        let cli = TestCli::try_parse_from(std::iter::once("ksmith").chain(args.iter().copied()))?;
        match &cli.cmd {
            TestCmd::Report(a) => run_report(a, None),
            TestCmd::Leaderboard(a) => run_leaderboard(a, None),
            TestCmd::Db(c) => run_db(c, None),
        }
    }

    fn seeded(dir: &Path) -> String {
        let url = format!("sqlite://{}/r.db", dir.display());
        let store = Store::open(&url).expect("open");
        let run = store
            .write(|tx| {
                tx.create_run(&NewRun {
                    name: "cli run/1".into(),
                    kind: "agent".into(),
                    agent: "m".into(),
                    suite: "seed".into(),
                    config: serde_json::json!({}),
                    git_rev: String::new(),
                })
            })
            .expect("run");
        let task = store
            .write(|tx| {
                tx.upsert_task(&NewTask {
                    name: "t".into(),
                    category: "c".into(),
                    title: String::new(),
                    content_hash: "h".into(),
                    details: serde_json::json!({}),
                })
            })
            .expect("task");
        store
            .add_items(
                run.id,
                &[WorkItem {
                    key: "t".into(),
                    task_id: Some(task),
                    payload: serde_json::json!({}),
                }],
            )
            .expect("items");
        url
    }

    #[test]
    fn report_leaderboard_and_db_commands() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = seeded(dir.path());
        let out = |name: &str| dir.path().join(name).display().to_string();

        assert_eq!(
            exec(&[
                "report",
                "--db",
                &url,
                "--format",
                "json",
                "-o",
                &out("r.json")
            ])
            .expect("report"),
            0
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out("r.json")).expect("read"))
                .expect("json");
        assert_eq!(v["tasks_total"], 1);
        assert_eq!(v["run"]["name"], "cli run/1");
        exec(&[
            "report",
            "--db",
            &url,
            "--run",
            "cli run/1",
            "--format",
            "html",
            "-o",
            &out("r.html"),
        ])
        .expect("html");
        assert!(std::fs::read_to_string(out("r.html"))
            .expect("html")
            .starts_with("<!DOCTYPE html>"));
        exec(&[
            "leaderboard",
            "--db",
            &url,
            "--format",
            "csv",
            "-o",
            &out("l.csv"),
        ])
        .expect("board");
        assert_eq!(
            std::fs::read_to_string(out("l.csv"))
                .expect("csv")
                .lines()
                .count(),
            2
        );
        let err = exec(&["report", "--db", &url, "--run", "missing"]).expect_err("unknown run");
        assert!(format!("{err:#}").contains("missing"));
        assert!(
            exec(&["report", "--format", "xml"]).is_err(),
            "bad format is a usage error"
        );

        exec(&[
            "db",
            "export",
            "--db",
            &url,
            "--run",
            "cli run/1",
            "-o",
            &out("e.json"),
        ])
        .expect("export");
        let other = format!("sqlite://{}/other.db", dir.path().display());
        exec(&["db", "import", "--db", &other, &out("e.json")]).expect("import");
        exec(&[
            "db",
            "import",
            "--db",
            &other,
            "--as",
            "copy",
            &out("e.json"),
        ])
        .expect("import as");
        let store = Store::open(&other).expect("open other");
        let names: Vec<String> = store
            .runs()
            .expect("runs")
            .into_iter()
            .map(|r| r.run.name)
            .collect();
        assert_eq!(names, vec!["cli run/1".to_string(), "copy".to_string()]);
        std::fs::write(out("bad.json"), "{\"format\": 1}").expect("write");
        let err =
            exec(&["db", "import", "--db", &other, &out("bad.json")]).expect_err("bad export");
        assert!(format!("{err:#}").contains("bad.json"), "{err:#}");
        assert_eq!(file_stem("a/b c"), "a_b_c");
    }
}
