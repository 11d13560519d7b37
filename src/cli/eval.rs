//! `ksmith eval --task ID KERNEL.cu --plan PLAN.toml` (or `ksmith eval --task ID DIR` with
//! DIR/kernel.cu and DIR/launch.toml, or `--reference` for the task's own reference kernel):
//! the strict check of one kernel, run in a `ksmith worker` subprocess under a wall-clock limit
//! so a hang or a crash becomes a verdict. `--oracle pytorch` takes the expected outputs from
//! the task's spec.py run by PyTorch instead of the reference kernel; `--reference --oracle
//! pytorch` is how a task's reference is checked against its spec. `--sanitize` adds the deep
//! audit of DESIGN §4 step 6 and `--profile` an Nsight Compute profile of a correct kernel, each
//! as its own command (`ksmith audit`, `ksmith profile`) runs it, reported with the verdict.
//! Exit codes: 0 correct (and clean, with --sanitize), 1 any failing verdict or audit finding,
//! 3 the harness could not run (PyTorch missing included: "skipped: PyTorch ...", or an audit
//! tool that could not run).

use super::profile::{self, ShapePick, TakenAudit, TakenProfile, Target};
use super::{Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK};
use anyhow::{bail, Context};
use bench_suite::pool::{Limits, Pool, PoolConfig};
use bench_suite::profile::sanitizer::Tool;
use bench_suite::suite::{self, Suite, TaskDir};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use verifier::protocol::{EvalOptions, EvaluateRequest, Oracle, OutputError};
use verifier::runtime::strict::SPEC_ORACLE_SKIPPED;
use verifier::verdict::{Verdict, VerdictKind};

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
        if !kernel.exists() {
            bail!(
                "{}: no such file or directory (give KERNEL.cu --plan PLAN.toml, or a directory holding kernel.cu and launch.toml)",
                kernel.display()
            );
        }
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
    #[arg(long, default_value_t = 900, value_name = "SECS", value_parser = crate::cli::timeout_secs())]
    pub timeout: u64,
    /// After a correct verdict, profile one call at the first public shape with Nsight Compute,
    /// as `ksmith profile` does (advisory: a profile that cannot be taken is a note)
    #[arg(long)]
    pub profile: bool,
    /// After the check, audit one call at the smallest public shape with compute-sanitizer
    /// memcheck, racecheck and initcheck, as `ksmith audit` does: findings fail the kernel
    /// (exit 1), a tool that cannot run is exit 3. Skipped when the kernel never ran or hung
    #[arg(long)]
    pub sanitize: bool,
    /// The ncu executable for --profile [default: ncu on PATH, then the CUDA install]
    #[arg(long, env = "KSMITH_NCU", value_name = "PATH")]
    pub ncu: Option<PathBuf>,
    /// The compute-sanitizer executable for --sanitize [default: on PATH, then the CUDA install]
    #[arg(long, env = "KSMITH_SANITIZER", value_name = "PATH")]
    pub sanitizer: Option<PathBuf>,
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
    let td = suite.valid_task(id).map_err(anyhow::Error::msg)?.clone();
    Ok((root, td))
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
        Err(e) => Ok(harness_error(a, &super::describe(&e))),
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
    // Tools are looked for before the GPU, as `ksmith profile` and `audit` do: a missing
    // compute-sanitizer is found before minutes of checking. ncu is advisory (a note).
    let sanitizer = match a.sanitize {
        true => Some(bench_suite::profile::locate(
            "compute-sanitizer",
            a.sanitizer.as_deref(),
        )?),
        false => None,
    };
    let ncu = a
        .profile
        .then(|| bench_suite::profile::locate("ncu", a.ncu.as_deref()).map_err(|e| e.to_string()));
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
    let limit = Duration::from_secs(a.timeout.max(1));
    let deep = Deep {
        profile: ncu.map(|ncu| deep_profile(g, a, &verdict, ncu, limit)),
        audit: sanitizer.map(|s| deep_audit(g, a, &verdict, &s, limit)),
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
        &deep,
    );
    Ok(deep.exit(&verdict))
}

/// What `--profile` and `--sanitize` add to the strict check; `None` when not asked for.
struct Deep {
    profile: Option<Step<TakenProfile>>,
    audit: Option<Step<TakenAudit>>,
}

/// One added step: done (with its target), skipped (why), or failed to run (why).
enum Step<T> {
    Done(Box<Target>, T),
    Skipped(String),
    Failed(String),
}

impl Deep {
    /// The verdict's code, made 1 by audit findings or 3 by an audit that could not run. A
    /// profile never changes it.
    fn exit(&self, verdict: &Verdict) -> u8 {
        let audit = match &self.audit {
            None | Some(Step::Skipped(_)) => None,
            Some(Step::Done(_, taken)) => Some(taken.exit()),
            Some(Step::Failed(_)) => Some(EXIT_HARNESS),
        };
        exit_code(verdict.is_correct(), audit)
    }
}

/// Failing verdicts and audit findings are 1; otherwise an audit that could not run is 3.
fn exit_code(correct: bool, audit: Option<u8>) -> u8 {
    match (correct, audit) {
        (false, _) | (_, Some(EXIT_FAILED)) => EXIT_FAILED,
        (true, Some(EXIT_HARNESS)) => EXIT_HARNESS,
        (true, _) => EXIT_OK,
    }
}

fn deep_profile(
    g: &Global,
    a: &EvalArgs,
    verdict: &Verdict,
    ncu: Result<PathBuf, String>,
    limit: Duration,
) -> Step<TakenProfile> {
    if !verdict.is_correct() {
        return Step::Skipped(format!("the verdict is {}", verdict.kind()));
    }
    let ncu = match ncu {
        Ok(p) => p,
        Err(e) => return Step::Failed(e),
    };
    let t = match profile::resolve(g, &a.src, None, ShapePick::First) {
        Ok(t) => t,
        Err(e) => return Step::Failed(super::describe(&e)),
    };
    if !a.json {
        eprintln!("profile: ncu on one call at shape {} ...", t.shape.name);
    }
    match profile::take_profile(g, &t, &ncu, None, &[], limit) {
        Ok(p) => Step::Done(Box::new(t), p),
        Err(f) => Step::Failed(f.message),
    }
}

fn deep_audit(
    g: &Global,
    a: &EvalArgs,
    verdict: &Verdict,
    sanitizer: &Path,
    limit: Duration,
) -> Step<TakenAudit> {
    // A kernel that never ran has nothing to audit; one that hung would hang again, slower.
    if matches!(
        verdict.kind(),
        VerdictKind::CompileError
            | VerdictKind::InvalidPlan
            | VerdictKind::LaunchError
            | VerdictKind::Timeout
    ) {
        return Step::Skipped(format!("the verdict is {}", verdict.kind()));
    }
    let tools = [Tool::Memcheck, Tool::Racecheck, Tool::Initcheck];
    let taken = profile::resolve(g, &a.src, None, ShapePick::Smallest).and_then(|t| {
        let taken = profile::take_audit(g, &t, sanitizer, &tools, limit, !a.json)?;
        Ok((t, taken))
    });
    match taken {
        Ok((t, taken)) => Step::Done(Box::new(t), taken),
        Err(e) => Step::Failed(super::describe(&e)),
    }
}

impl<T> Step<T> {
    fn json(&self, done: impl Fn(&Target, &T) -> serde_json::Value) -> serde_json::Value {
        match self {
            Step::Done(t, x) => done(t, x),
            Step::Skipped(why) => serde_json::json!({ "skipped": why }),
            Step::Failed(why) => serde_json::json!({ "error": why }),
        }
    }
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

fn print_result(a: &EvalArgs, c: &Checked, deep: &Deep) {
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
                "profile": deep.profile.as_ref().map(|p| p.json(|t, p| p.json(t))),
                "audit": deep.audit.as_ref().map(|x| x.json(|t, x| x.json(t))),
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
    if let Some(p) = &deep.profile {
        println!();
        match p {
            Step::Done(t, p) => {
                println!("profile: shape {}", t.shape.name);
                p.print();
            }
            Step::Skipped(why) => println!("profile: skipped: {why}"),
            Step::Failed(why) => println!("profile: not taken: {why}"),
        }
    }
    if let Some(x) = &deep.audit {
        println!();
        match x {
            Step::Done(t, x) => {
                print!("audit: shape {}", t.shape.name);
                x.print();
            }
            Step::Skipped(why) => println!("audit: skipped: {why}"),
            Step::Failed(why) => println!("audit: could not run: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_findings_fail_and_an_audit_that_could_not_run_is_a_harness_error() {
        assert_eq!(exit_code(true, None), EXIT_OK);
        assert_eq!(exit_code(true, Some(EXIT_OK)), EXIT_OK);
        assert_eq!(exit_code(true, Some(EXIT_FAILED)), EXIT_FAILED);
        assert_eq!(exit_code(true, Some(EXIT_HARNESS)), EXIT_HARNESS);
        assert_eq!(exit_code(false, None), EXIT_FAILED);
        // A wrong kernel stays wrong, whatever the audit could or could not do.
        assert_eq!(exit_code(false, Some(EXIT_HARNESS)), EXIT_FAILED);
        assert_eq!(exit_code(false, Some(EXIT_OK)), EXIT_FAILED);
    }

    #[test]
    fn kernel_paths_name_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("k.cu");
        std::fs::write(&file, "").expect("write");
        let src = |kernel: &Path, plan: Option<&str>| KernelSource {
            task: "t".into(),
            kernel: Some(kernel.to_path_buf()),
            plan: plan.map(PathBuf::from),
            reference: false,
        };
        let err = |s: KernelSource| crate::cli::describe(&s.files(dir.path()).unwrap_err());
        let missing = dir.path().join("nope.cu");
        let e = err(src(&missing, None));
        assert!(e.contains("nope.cu: no such file or directory"), "{e}");
        let e = err(src(&file, None));
        assert!(
            e.contains("k.cu is a file: pass its launch plan with --plan"),
            "{e}"
        );
        let (k, p) = src(&file, Some("p.toml"))
            .files(dir.path())
            .expect("file + plan");
        assert_eq!((k, p), (file.clone(), PathBuf::from("p.toml")));
        let (k, p) = src(dir.path(), None).files(dir.path()).expect("directory");
        assert_eq!(k, dir.path().join("kernel.cu"));
        assert_eq!(p, dir.path().join("launch.toml"));
    }
}
