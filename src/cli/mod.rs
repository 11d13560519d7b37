//! Command-line interface: argument parsing and dispatch. Each subcommand lives in its own
//! module and returns an exit code.

mod bench;
mod eval;
mod gpu;
mod parallel;
mod profile;
mod report;
mod run;
mod tasks;
mod worker;

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Everything passed; every task / kernel checked is fine.
pub const EXIT_OK: u8 = 0;
/// The harness ran, and a task or kernel failed (invalid, does not compile, wrong output).
pub const EXIT_FAILED: u8 = 1;
/// Bad command line (clap exits with this code itself; listed for the documentation).
#[allow(dead_code)]
pub const EXIT_USAGE: u8 = 2;
/// The harness could not run: no NVRTC, no task suite, no GPU or driver where one is needed.
pub const EXIT_HARNESS: u8 = 3;

/// `--timeout` values: 1 s to 7 days. A deadline is `now + timeout`, which a typo such as
/// 18446744073709551615 would overflow.
pub fn timeout_secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::new().range(1..=604_800)
}

#[derive(Debug, Parser)]
#[command(
    name = "ksmith",
    version,
    about = "kernelsmith: verified, fast CUDA kernels from PyTorch specs, benchmarked honestly",
    after_help = "Exit codes: 0 all good; 1 a task or kernel failed; 2 bad usage; 3 the harness could not run (e.g. NVRTC or the task suite not found)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The task suite directory [default: tasks/ in the current directory or an ancestor]
    #[arg(long, global = true, env = "KSMITH_TASKS_DIR", value_name = "DIR")]
    pub tasks_dir: Option<PathBuf>,
    /// libnvrtc.so to use, or a directory holding it [default: tools/cuda, then system locations]
    #[arg(long, global = true, env = "KSMITH_NVRTC", value_name = "PATH")]
    pub nvrtc: Option<PathBuf>,
    /// Directory holding the CUDA headers (cuda_fp16.h) [default: next to NVRTC]
    #[arg(long, global = true, env = "KSMITH_CUDA_INCLUDE", value_name = "DIR")]
    pub cuda_include: Option<PathBuf>,
    /// Compile target, e.g. sm_90a or sm_89 [default: the GPU's own, arch-specific where it has such a target (sm_90a on an H100), else sm_90a]
    #[arg(long, global = true, env = "KSMITH_ARCH", value_name = "ARCH")]
    pub arch: Option<String>,
    /// Compile cache directory [default: $KSMITH_CACHE_DIR, else ~/.cache/kernelsmith]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the compile cache
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Global {
    /// The global flags again, for a child `ksmith` (worker, timing child, profiling target), so
    /// that it finds the same suite, NVRTC, headers, compile target and cache as the parent and
    /// logs as much. Globals are `global = true`, so they may follow the subcommand.
    pub fn child_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        let paths = [
            ("--tasks-dir", &self.tasks_dir),
            ("--nvrtc", &self.nvrtc),
            ("--cuda-include", &self.cuda_include),
            ("--cache-dir", &self.cache_dir),
        ];
        for (flag, v) in paths {
            if let Some(v) = v {
                out.push(flag.into());
                out.push(v.into());
            }
        }
        if let Some(arch) = &self.arch {
            out.push("--arch".into());
            out.push(arch.into());
        }
        if self.no_cache {
            out.push("--no-cache".into());
        }
        out.extend((0..self.verbose).map(|_| OsString::from("-v")));
        out
    }

    /// `ksmith worker` from this executable, with the global flags.
    pub fn worker_command(&self) -> anyhow::Result<bench_suite::pool::WorkerCommand> {
        use anyhow::Context;
        let mut cmd = bench_suite::pool::WorkerCommand::current_exe_worker()
            .context("locating the ksmith executable")?;
        cmd.args.extend(
            self.child_args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        Ok(cmd)
    }

    /// Where NVRTC and the CUDA headers are looked for.
    pub fn nvrtc_locator(&self) -> verifier::nvrtc::Locator {
        verifier::nvrtc::Locator {
            library: self.nvrtc.clone(),
            include: self.cuda_include.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, show and check the task suite
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
    /// Run the agent over tasks (Coder/Judge or evolution), recorded in the store; resumable
    Run(Box<run::RunArgs>),
    /// Re-evaluate a run's candidates on this machine's GPU (no LLM calls)
    Replay(run::ReplayArgs),
    /// Check one kernel against a task with the strict protocol (needs a GPU)
    Eval(eval::EvalArgs),
    /// Time reference kernels (and candidates) vs PyTorch eager/compile, with % of speed-of-light
    Bench(Box<bench::BenchArgs>),
    /// Device facts (`info`) and speed-of-light calibration (`calibrate`)
    #[command(subcommand)]
    Gpu(gpu::GpuCommand),
    /// Summarize a run: fast_p, geometric-mean speedups, % of speed-of-light, cost (md/json/csv/html)
    Report(report::ReportArgs),
    /// Rank runs (agents) across tasks: fast_p, speedups, correctness, cost
    Leaderboard(report::LeaderboardArgs),
    /// Inspect the result store; export and import runs as JSON
    #[command(subcommand)]
    Db(report::DbCommand),
    /// Nsight Compute on one call of one kernel: curated metrics and the Judge's summary
    Profile(Box<profile::ProfileArgs>),
    /// compute-sanitizer memcheck / racecheck / initcheck on one call of one kernel
    Audit(Box<profile::AuditArgs>),
    /// Serve GPU requests as JSON lines on stdin/stdout (internal; started by the harness)
    #[command(hide = true)]
    Worker,
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Tasks(cmd) => tasks::run(&cli.global, cmd),
        Command::Run(a) => run::run(&cli.global, &a),
        Command::Replay(a) => run::replay(&cli.global, &a),
        Command::Eval(a) => eval::run(&cli.global, &a),
        Command::Bench(a) => bench::run(&cli.global, &a),
        Command::Gpu(c) => gpu::run(&cli.global, c),
        Command::Report(a) => report::run_report(&a, None),
        Command::Leaderboard(a) => report::run_leaderboard(&a, None),
        Command::Db(c) => report::run_db(&c, None),
        Command::Profile(a) => profile::run_profile(&cli.global, &a),
        Command::Audit(a) => profile::run_audit(&cli.global, &a),
        Command::Worker => worker::run(&cli.global),
    }
}

/// An error and its causes on one line, `outer: cause: root`, as anyhow's `{:#}` prints them,
/// but without a cause whose text its parent's message already ends with: many library errors
/// write their source into their own message (`cannot read X: No such file`) and also report it
/// as their source, which `{:#}` would print twice.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut parent = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parent.is_empty() && parent.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        parent = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Wraps {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_its_parents_message_is_printed_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(Wraps {
            path: "x.toml",
            source: io(),
        });
        assert_eq!(
            format!("{e:#}"),
            "cannot read x.toml: No such file: No such file"
        );
        assert_eq!(describe(&e), "cannot read x.toml: No such file");
        // Context added on top keeps every distinct level.
        let e = e.context("loading the suite");
        assert_eq!(
            describe(&e),
            "loading the suite: cannot read x.toml: No such file"
        );
        let plain = anyhow::Error::new(io()).context("opening");
        assert_eq!(describe(&plain), "opening: No such file");
    }

    #[test]
    fn child_args_give_a_child_the_parents_globals() {
        let parent = Cli::try_parse_from([
            "ksmith",
            "--tasks-dir",
            "/suite",
            "--nvrtc",
            "/n/libnvrtc.so",
            "--cuda-include",
            "/n/include",
            "--arch",
            "sm_90a",
            "--cache-dir",
            "/c",
            "--no-cache",
            "-vv",
            "worker",
        ])
        .expect("parent parses");
        let mut argv = vec![OsString::from("ksmith"), OsString::from("worker")];
        argv.extend(parent.global.child_args());
        let child = Cli::try_parse_from(argv).expect("child parses");
        assert_eq!(
            format!("{:?}", child.global),
            format!("{:?}", parent.global)
        );
        let bare = Cli::try_parse_from(["ksmith", "worker"]).expect("parses");
        assert!(!bare.global.no_cache && bare.global.verbose == 0);
    }
}
