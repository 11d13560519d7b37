//! `ksmith eval --task ID KERNEL.cu --plan PLAN.toml` (or `ksmith eval --task ID DIR` with
//! DIR/kernel.cu and DIR/launch.toml, or `--reference` for the task's own reference kernel):
//! the strict check of one kernel, run in a `ksmith worker` subprocess under a wall-clock limit
//! so a hang or a crash becomes a verdict. `--oracle pytorch` takes the expected outputs from
//! the task's spec.py run by PyTorch instead of the reference kernel; `--reference --oracle
//! pytorch` is how a task's reference is checked against its spec.
//! Exit codes: 0 correct, 1 any failing verdict, 3 the harness could not run (PyTorch missing
//! included: "skipped: PyTorch ...").

use super::{Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK};
use anyhow::{bail, Context};
use bench_suite::pool::{Limits, Pool, PoolConfig};
use bench_suite::suite::{self, Entry, Suite, TaskDir};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use verifier::protocol::{EvalOptions, EvaluateRequest, Oracle, OutputError};
use verifier::runtime::strict::SPEC_ORACLE_SKIPPED;
use verifier::verdict::Verdict;

/// Which kernel a command runs: a source file with its plan, a directory holding both, or the
/// task's own reference. `ksmith eval`, `profile` and `audit` take it the same way.
#[derive(Debug, Args)]
pub struct KernelSource {
    /// The task's id (as in `ksmith tasks list`)
    #[arg(long, value_name = "ID")]
    pub task: String,
    /// The kernel source (.cu), or a directory holding kernel.cu and launch.toml
    #[arg(value_name = "KERNEL.cu|DIR", required_unless_present = "reference")]
    pub kernel: Option<PathBuf>,
    /// The launch plan (required when KERNEL is a file)
    #[arg(long, value_name = "PLAN.toml")]
    pub plan: Option<PathBuf>,
    /// The task's own reference kernel (reference.cu + reference.toml)
    #[arg(long, conflicts_with_all = ["kernel", "plan"])]
    pub reference: bool,
}

impl KernelSource {
    /// The kernel and plan files: the task's own with `--reference`, a directory's kernel.cu
    /// and launch.toml (`--plan` overriding), or a file with `--plan`.
    pub fn files(&self, task_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        if self.reference {
            return Ok((
                task_dir.join("reference.cu"),
                task_dir.join("reference.toml"),
            ));
        }
        let Some(kernel) = self.kernel.as_deref() else {
            bail!("give a kernel (KERNEL.cu --plan PLAN.toml, or DIR), or --reference")
        };
        if kernel.is_dir() {
            let p = self
                .plan
                .clone()
                .unwrap_or_else(|| kernel.join("launch.toml"));
            return Ok((kernel.join("kernel.cu"), p));
        }
        match &self.plan {
            Some(p) => Ok((kernel.to_path_buf(), p.clone())),
            None => bail!(
                "{} is a file: pass its launch plan with --plan PLAN.toml (or give a directory holding kernel.cu and launch.toml)",
                kernel.display()
            ),
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub src: KernelSource,
    /// Where the expected outputs come from
    #[arg(long, value_enum, default_value_t = OracleArg::Reference)]
    pub oracle: OracleArg,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Public shapes to check, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub shapes: Vec<String>,
    /// Fixed seeds, comma-separated [default: 0,1]
    #[arg(long, value_delimiter = ',', value_name = "SEEDS")]
    pub seeds: Option<Vec<u64>>,
    /// The extra seed [default: drawn at run time; printed, so a failure can be reproduced]
    #[arg(long, value_name = "SEED")]
    pub fresh_seed: Option<u64>,
    /// Held-out shapes to draw [default: 2]
    #[arg(long, value_name = "N")]
    pub heldout: Option<u32>,
    /// Seed of the held-out shape draw [default: the fresh seed]
    #[arg(long, value_name = "SEED")]
    pub heldout_seed: Option<u64>,
    /// Skip the heavy-tailed / rescaled input variants
    #[arg(long)]
    pub no_stress: bool,
    /// Wall-clock limit of the whole check, in seconds (a kernel still running then is a timeout)
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OracleArg {
    /// The task's reference kernel, on the same GPU
    Reference,
    /// The task's spec.py, run by PyTorch (python3 or KSMITH_PYTHON) beside the worker
    Pytorch,
}

impl From<OracleArg> for Oracle {
    fn from(o: OracleArg) -> Oracle {
        match o {
            OracleArg::Reference => Oracle::ReferenceKernel,
            OracleArg::Pytorch => Oracle::PyTorch,
        }
    }
}

/// A seed nobody could have known in advance: clock and pid through SplitMix64.
fn fresh_seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    verifier::inputs::rng::mix64(t ^ ((std::process::id() as u64) << 32))
}

/// The suite's root and the valid task `id`, or why there is none.
pub(super) fn find_task(g: &Global, id: &str) -> anyhow::Result<(PathBuf, TaskDir)> {
    let root = suite::locate(g.tasks_dir.as_deref())?;
    let suite = Suite::discover(&root)?;
    match suite.get(id) {
        Some(Entry::Ok(td)) => Ok((root, (**td).clone())),
        Some(Entry::Broken { diagnostics, .. }) => {
            let d: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
            bail!("task `{id}` is invalid:\n{}", d.join("\n"))
        }
        None => bail!(
            "no task `{id}` in {} (known: {})",
            root.display(),
            suite.ids().join(", ")
        ),
    }
}

fn harness_error(a: &EvalArgs, message: &str) -> u8 {
    let skipped = message.starts_with(SPEC_ORACLE_SKIPPED);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "task": a.src.task, "error": message, "skipped": skipped, "exit": EXIT_HARNESS
            })
        );
    } else if skipped {
        // Not a failure of anything: this machine has no usable PyTorch.
        eprintln!("{message}");
    } else {
        eprintln!("error: {message}");
    }
    EXIT_HARNESS
}

pub fn run(g: &Global, a: &EvalArgs) -> anyhow::Result<u8> {
    // Every failure to run is reported the same way (JSON too, with --json) and exits 3.
    match check(g, a) {
        Ok(code) => Ok(code),
        Err(e) => Ok(harness_error(a, &format!("{e:#}"))),
    }
}

fn check(g: &Global, a: &EvalArgs) -> anyhow::Result<u8> {
    // Usage errors are said before the suite is read: they are the first thing to fix.
    a.src.files(Path::new("."))?;
    let dir = find_task(g, &a.src.task)?.1.dir;
    let (kernel_path, plan_path) = a.src.files(&dir)?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let source = read(&kernel_path)?;
    let plan = read(&plan_path)?;
    // Before starting a worker: without a driver nothing below can run, and the message says
    // what was looked for.
    if let Err(e) = verifier::runtime::probe_driver() {
        return Ok(harness_error(a, &e.to_string()));
    }
    let fresh = a.fresh_seed.unwrap_or_else(fresh_seed);
    let defaults = EvalOptions::default();
    let options = EvalOptions {
        seeds: a.seeds.clone().unwrap_or(defaults.seeds.clone()),
        fresh_seed: Some(fresh),
        shapes: a.shapes.clone(),
        heldout_shapes: a.heldout.unwrap_or(defaults.heldout_shapes),
        heldout_seed: a.heldout_seed.unwrap_or(fresh),
        stress: !a.no_stress,
        oracle: a.oracle.into(),
        ..defaults
    };
    let req = EvaluateRequest {
        task_dir: dir,
        source,
        plan,
        options,
    };
    let pool = Pool::new(PoolConfig {
        command: g.worker_command()?,
        workers: vec![Vec::new()],
        request_timeout: Duration::from_secs(a.timeout.max(1)),
        limits: Limits::default(),
    });
    let reply = pool.evaluate(vec![req]).into_iter().next();
    pool.shutdown(Duration::from_secs(2));
    let (verdict, log, errors, elapsed_ms) = match reply {
        Some(bench_suite::pool::Reply::Answered(verifier::protocol::ResponseBody::Evaluated(
            e,
        ))) => (e.verdict, e.log, e.errors, Some(e.elapsed_ms)),
        Some(r) => match r.verdict() {
            Ok(v) => (v.clone(), Vec::new(), Vec::new(), None),
            Err(message) => return Ok(harness_error(a, &message)),
        },
        None => return Ok(harness_error(a, "the worker pool returned no reply")),
    };
    print_result(
        a,
        &Checked {
            kernel: &kernel_path,
            plan: &plan_path,
            verdict: &verdict,
            log: &log,
            errors: &errors,
            elapsed_ms,
            fresh,
        },
    );
    Ok(if verdict.is_correct() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// What one check produced, for printing.
struct Checked<'a> {
    kernel: &'a Path,
    plan: &'a Path,
    verdict: &'a Verdict,
    log: &'a [String],
    errors: &'a [OutputError],
    elapsed_ms: Option<u64>,
    fresh: u64,
}

fn print_result(a: &EvalArgs, c: &Checked) {
    let fresh = c.fresh;
    let oracle = Oracle::from(a.oracle).name();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "task": a.src.task,
                "kernel": c.kernel.display().to_string(),
                "plan": c.plan.display().to_string(),
                "oracle": oracle,
                "verdict": c.verdict,
                "kind": c.verdict.kind(),
                "feedback": c.verdict.feedback(),
                "errors": c.errors,
                "log": c.log,
                "elapsed_ms": c.elapsed_ms,
                "fresh_seed": fresh,
            })
        );
        return;
    }
    println!("task:    {}", a.src.task);
    println!(
        "kernel:  {} (plan {})",
        c.kernel.display(),
        c.plan.display()
    );
    println!("oracle:  {oracle}");
    println!("verdict: {}", c.verdict.kind());
    println!();
    println!("{}", c.verdict.feedback());
    if !c.errors.is_empty() {
        println!();
        println!("largest error per output against the oracle:");
        for e in c.errors {
            println!("  {}", e.describe());
        }
    }
    if !c.log.is_empty() {
        println!();
        for l in c.log {
            println!("  {l}");
        }
    }
    println!();
    match c.elapsed_ms {
        Some(ms) => println!(
            "checked in {:.1} s; fresh seed {fresh} (reproduce with --fresh-seed {fresh})",
            ms as f64 / 1e3
        ),
        None => println!("fresh seed {fresh} (reproduce with --fresh-seed {fresh})"),
    }
}
