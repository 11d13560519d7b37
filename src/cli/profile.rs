//! `ksmith profile` (Nsight Compute on one call of one kernel, curated metrics and the Judge's
//! summary) and `ksmith audit` (compute-sanitizer memcheck / racecheck / initcheck, parsed
//! findings), both wrapped around the hidden `ksmith gpu run-once` target (DESIGN §4.6, §6).
//!
//! The target compiles the kernel, generates the inputs of one public shape, runs `[[prepare]]`,
//! a few warm-up calls of the plan and then exactly one more call. Every kernel it launches is
//! one of the plan's, so the launches ncu must skip to reach that last call are known before it
//! runs ([`ncu_target`]), and nothing depends on timing. Tools are located (`--ncu`,
//! `--sanitizer`, then PATH and the CUDA install) before the GPU is probed; a missing tool, no
//! GPU, or counters the user may not read is exit 3 with a message that says what to do. The
//! GPU's settings are never changed (`--clock-control none`).
//!
//! Exit codes: profile — 0 profiled, 1 the kernel failed in the target, 3 the harness or the
//! tool could not run; audit — 0 clean, 1 findings (or the kernel failed), 3 as above.
//!
//! Standalone runs are not stored: the store's `profiles` rows belong to an evaluation, which
//! `ksmith profile` does not make; `ksmith run --profile` stores them with its evaluations.

use super::eval::KernelSource;
use super::{Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK};
use anyhow::Context;
use bench_suite::profile::ncu::{Curated, KernelProfile, NcuError, NcuReport, NcuTarget};
use bench_suite::profile::sanitizer::{SanitizerReport, Tool};
use bench_suite::profile::{self, judge, ToolError};
use clap::{Args, ValueEnum};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use verifier::plan::{base_name, Plan};
use verifier::task::{Shape, Task};

mod agent;
mod target;
pub(crate) use agent::{AgentProfiling, NcuProfiler, ProfileRows};
pub use target::{run_once, RunOnceArgs};

/// Prefix of the target's status lines on stderr; the wrappers find them in the tool's output.
pub const TARGET_MARK: &str = "ksmith run-once:";

/// Warm-up calls of the plan before the profiled call.
pub const PROFILE_WARMUPS: u32 = 3;

/// The kernel to run, as `ksmith eval` takes it, and how.
#[derive(Debug, Args)]
pub struct KernelArgs {
    #[command(flatten)]
    pub src: KernelSource,
    /// The public shape to run [profile: the first; audit: the smallest]
    #[arg(long, value_name = "NAME")]
    pub shape: Option<String>,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Wall-clock limit of each tool run, in seconds
    #[arg(long, default_value_t = 600, value_name = "SECS", value_parser = crate::cli::timeout_secs())]
    pub timeout: u64,
    /// Do not probe for a CUDA driver first (for stand-in tools that do not run the target)
    #[arg(long, hide = true)]
    pub no_gpu_check: bool,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub k: KernelArgs,
    /// Profile only this kernel of the plan [default: every launch of one call]
    #[arg(long = "only", value_name = "KERNEL")]
    pub only: Option<String>,
    /// The ncu executable [default: ncu on PATH, then the CUDA install]
    #[arg(long, env = "KSMITH_NCU", value_name = "PATH")]
    pub ncu: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ToolArg {
    Memcheck,
    Racecheck,
    Initcheck,
    Synccheck,
}

impl From<ToolArg> for Tool {
    fn from(t: ToolArg) -> Tool {
        match t {
            ToolArg::Memcheck => Tool::Memcheck,
            ToolArg::Racecheck => Tool::Racecheck,
            ToolArg::Initcheck => Tool::Initcheck,
            ToolArg::Synccheck => Tool::Synccheck,
        }
    }
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub k: KernelArgs,
    /// compute-sanitizer tools to run, comma-separated
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "memcheck,racecheck,initcheck"
    )]
    pub tools: Vec<ToolArg>,
    /// The compute-sanitizer executable [default: on PATH, then the CUDA install]
    #[arg(long, env = "KSMITH_SANITIZER", value_name = "PATH")]
    pub sanitizer: Option<PathBuf>,
}

/// A kernel resolved for one run of the target.
pub(crate) struct Target {
    pub tasks_root: PathBuf,
    pub task: Task,
    pub kernel_path: PathBuf,
    pub plan_path: PathBuf,
    pub plan: Plan,
    pub shape: Shape,
}

/// Which public shape a run defaults to.
#[derive(Clone, Copy)]
pub(crate) enum ShapePick {
    First,
    Smallest,
}

/// Elements of every input and output at `shape` (what "smallest" compares).
fn shape_size(task: &Task, shape: &Shape) -> u64 {
    task.tensors()
        .map(|d| {
            verifier::inputs::dims_of(d, shape)
                .map(|dims| dims.iter().product::<u64>())
                .unwrap_or(u64::MAX)
        })
        .fold(0u64, u64::saturating_add)
}

fn pick_shape(task: &Task, name: Option<&str>, pick: ShapePick) -> anyhow::Result<Shape> {
    if let Some(n) = name {
        return task.shape(n).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "task `{}` has no public shape `{n}` (known: {})",
                task.id,
                task.shapes
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    let s = match pick {
        ShapePick::First => task.shapes.first(),
        ShapePick::Smallest => task.shapes.iter().min_by_key(|s| shape_size(task, s)),
    };
    s.cloned()
        .ok_or_else(|| anyhow::anyhow!("task `{}` has no public shapes", task.id))
}

/// The kernel, its parsed plan and the public shape to run (`shape`, else `pick`'s).
pub(crate) fn resolve(
    g: &Global,
    src: &KernelSource,
    shape: Option<&str>,
    pick: ShapePick,
) -> anyhow::Result<Target> {
    let (root, td) = super::eval::find_task(g, &src.task)?;
    let (kernel_path, plan_path) = src.files(&td.dir)?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let source = read(&kernel_path)?;
    let plan_text = read(&plan_path)?;
    let plan = verifier::runtime::evaluate::candidate_plan(&td.task, &source, &plan_text)
        .map_err(|v| anyhow::anyhow!("{}: {}", plan_path.display(), v.feedback()))?;
    let shape = pick_shape(&td.task, shape, pick)?;
    let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    Ok(Target {
        tasks_root: abs(root),
        task: td.task.clone(),
        kernel_path: abs(kernel_path),
        plan_path: abs(plan_path),
        plan,
        shape,
    })
}

/// The kernels one target run launches, in order: `[[prepare]]` once, then the plan's calls.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Launches {
    pub prepare: Vec<String>,
    pub call: Vec<String>,
}

impl Launches {
    pub fn of(plan: &Plan, shape: &Shape) -> Result<Launches, String> {
        let names =
            |v: Vec<verifier::plan::ResolvedLaunch>| v.into_iter().map(|l| l.kernel).collect();
        Ok(Launches {
            prepare: names(plan.resolve_prepare(shape)?),
            call: names(plan.resolve(shape)?),
        })
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The ncu target for the last of `warmups + 1` calls: `-k` matches the selected kernels' base
/// names (ncu's default name base drops template arguments and searches, not anchors), `-s`
/// skips every matching launch before that call and `-c` takes that call's matching launches.
/// Launches are counted with the same substring rule ncu applies, so a prepare kernel whose
/// name contains a selected one is skipped too.
pub(crate) fn ncu_target(
    launches: &Launches,
    only: Option<&str>,
    warmups: u32,
) -> Result<NcuTarget, String> {
    if launches.call.is_empty() {
        return Err("the plan launches nothing at this shape".into());
    }
    let mut selected: Vec<&str> = Vec::new();
    match only {
        Some(k) => {
            let b = base_name(k);
            if !launches.call.iter().any(|c| base_name(c) == b) {
                return Err(format!(
                    "the plan does not launch `{k}` at this shape (it launches {})",
                    launches.call.join(", ")
                ));
            }
            selected.push(b);
        }
        None => {
            for c in &launches.call {
                let b = base_name(c);
                if !selected.contains(&b) {
                    selected.push(b);
                }
            }
        }
    }
    let matches = |k: &String| selected.iter().any(|s| base_name(k).contains(s));
    let per_call = launches.call.iter().filter(|k| matches(k)).count() as u64;
    let before = launches.prepare.iter().filter(|k| matches(k)).count() as u64;
    let regex = selected
        .iter()
        .map(|s| regex_escape(s))
        .collect::<Vec<_>>()
        .join("|");
    let mut t = NcuTarget::new(regex, before + u64::from(warmups) * per_call);
    t.launch_count = per_call;
    Ok(t)
}

/// `ksmith [globals] gpu run-once ...` for a target; `poison: false` leaves outputs and
/// scratch unwritten, so that initcheck sees a kernel read what it never wrote.
pub(crate) fn target_program(
    g: &Global,
    t: &Target,
    warmups: u32,
    poison: bool,
) -> anyhow::Result<Vec<OsString>> {
    let exe = std::env::current_exe().context("locating the ksmith executable")?;
    // The resolved suite, and no -v: the tool's output carries the target's status line.
    let child = Global {
        tasks_dir: Some(t.tasks_root.clone()),
        verbose: 0,
        ..g.clone()
    };
    let mut p: Vec<OsString> = vec![exe.into()];
    p.extend(child.child_args());
    for x in ["gpu", "run-once", "--task", &t.task.id] {
        p.push(x.into());
    }
    p.push("--kernel".into());
    p.push(t.kernel_path.clone().into());
    p.push("--plan".into());
    p.push(t.plan_path.clone().into());
    p.push("--shape".into());
    p.push(t.shape.name.clone().into());
    p.push("--warmups".into());
    p.push(warmups.to_string().into());
    if !poison {
        p.push("--no-poison".into());
    }
    Ok(p)
}

/// What the target said about itself, from its status line in a tool's output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TargetStatus {
    /// It ran every call.
    Ran,
    /// The kernel failed (a launch refused, a fault, an out-of-bounds write).
    Failed(String),
    /// The harness could not run it (no GPU, NVRTC, a compile error of the harness).
    Error(String),
    /// No status line: the tool did not run it, or it died without a word.
    Silent,
}

pub(crate) fn target_status(text: &str) -> TargetStatus {
    let mut status = TargetStatus::Silent;
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix(TARGET_MARK) else {
            continue;
        };
        let rest = rest.trim();
        // The last word counts: a run that printed progress and then failed failed.
        status = if let Some(m) = rest.strip_prefix("failed:") {
            TargetStatus::Failed(m.trim().to_string())
        } else if let Some(m) = rest.strip_prefix("error:") {
            TargetStatus::Error(m.trim().to_string())
        } else if rest.starts_with("ok") {
            TargetStatus::Ran
        } else {
            status
        };
    }
    status
}

fn fail(json: bool, code: u8, message: &str) -> u8 {
    if json {
        println!("{}", serde_json::json!({ "error": message, "exit": code }));
    } else {
        eprintln!("error: {message}");
    }
    code
}

/// What `profile` and `audit` do before running anything: locate the tool (`given`, then PATH
/// and the CUDA install), check for a driver (not with `--no-gpu-check`), then resolve the
/// kernel, its plan and the shape. `Err` is the exit code of a failure already reported.
fn prepare(
    g: &Global,
    a: &KernelArgs,
    command: &str,
    tool: &str,
    given: Option<&Path>,
    pick: ShapePick,
) -> Result<(PathBuf, Target), u8> {
    let exe =
        profile::locate(tool, given).map_err(|e| fail(a.json, EXIT_HARNESS, &e.to_string()))?;
    if !a.no_gpu_check {
        if let Err(e) = verifier::runtime::probe_driver() {
            let message = format!("`ksmith {command}` needs a GPU: {e}");
            return Err(fail(a.json, EXIT_HARNESS, &message));
        }
    }
    let t = resolve(g, &a.src, a.shape.as_deref(), pick)
        .map_err(|e| fail(a.json, EXIT_HARNESS, &crate::cli::describe(&e)))?;
    Ok((exe, t))
}

fn not_permitted_advice() -> &'static str {
    "ksmith never changes these settings itself; an administrator can allow it (see https://developer.nvidia.com/ERR_NVGPUCTRPERM), or run the profile as root"
}

/// Launches the Judge reads a summary of, the longest first.
const JUDGE_LAUNCHES: usize = 3;

/// The Judge's text for a profiled call: one summary per launch (the longest first when the
/// call has several, with its share of the call's time).
pub fn judge_text(report: &NcuReport) -> String {
    match report.kernels.as_slice() {
        [] => String::new(),
        [one] => judge::summary(one),
        many => {
            let total: f64 = many.iter().filter_map(|k| k.curated.duration_ns).sum();
            let mut order: Vec<&KernelProfile> = many.iter().collect();
            order.sort_by(|a, b| {
                b.curated
                    .duration_ns
                    .unwrap_or(0.0)
                    .total_cmp(&a.curated.duration_ns.unwrap_or(0.0))
            });
            let mut out = format!("One call launches {} kernels.", many.len());
            for k in order.iter().take(JUDGE_LAUNCHES) {
                out.push('\n');
                if let (Some(d), true) = (k.curated.duration_ns, total > 0.0) {
                    out += &format!("[{:.0}% of the call] ", 100.0 * d / total);
                }
                out += &judge::summary(k);
            }
            let rest = &order[JUDGE_LAUNCHES.min(order.len())..];
            if !rest.is_empty() {
                let t: f64 = rest.iter().filter_map(|k| k.curated.duration_ns).sum();
                out += &format!("\nThe other {} launches", rest.len());
                if total > 0.0 {
                    out += &format!(" take {:.0}% of the call", 100.0 * t / total);
                }
                out.push('.');
            }
            out
        }
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if unit == "%" => format!("{v:.1}%"),
        Some(v) if unit == "ns" => {
            if v >= 1e6 {
                format!("{:.3} ms", v / 1e6)
            } else {
                format!("{:.2} us", v / 1e3)
            }
        }
        Some(v) if unit == "B" => {
            if v >= 1e6 {
                format!("{:.2} MB", v / 1e6)
            } else {
                format!("{v:.0} B")
            }
        }
        Some(v) => {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        }
    }
}

/// The curated metrics as (metric, value) rows for the text table.
pub(crate) fn curated_rows(c: &Curated) -> Vec<(&'static str, String)> {
    let limiters = c.limiters();
    vec![
        ("duration", opt(c.duration_ns, "ns")),
        ("SM throughput (SOL)", opt(c.sm_throughput_pct, "%")),
        ("memory throughput (SOL)", opt(c.memory_throughput_pct, "%")),
        ("DRAM throughput", opt(c.dram_throughput_pct, "%")),
        ("DRAM read", opt(c.dram_read_bytes, "B")),
        ("DRAM write", opt(c.dram_write_bytes, "B")),
        ("L1 hit rate", opt(c.l1_hit_pct, "%")),
        ("L2 hit rate", opt(c.l2_hit_pct, "%")),
        ("achieved occupancy", opt(c.achieved_occupancy_pct, "%")),
        (
            "theoretical occupancy",
            opt(c.theoretical_occupancy_pct, "%"),
        ),
        (
            "occupancy limiter",
            if limiters.is_empty() {
                "n/a".into()
            } else {
                format!(
                    "{} ({} blocks/SM)",
                    limiters
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                    limiters[0].1
                )
            },
        ),
        ("registers/thread", opt(c.registers_per_thread, "")),
        (
            "shared memory/block",
            match (c.smem_static_bytes, c.smem_dynamic_bytes) {
                (None, None) => "n/a".into(),
                (s, d) => format!("{} static + {} dynamic", opt(s, "B"), opt(d, "B")),
            },
        ),
        ("block size", opt(c.block_size, "")),
        ("grid size", opt(c.grid_size, "")),
        ("waves per SM", opt(c.waves_per_sm, "")),
        ("issue slots busy", opt(c.issue_active_pct, "%")),
        (
            "smem bank conflicts ld/st",
            format!(
                "{} / {}",
                opt(c.smem_conflicts_ld, ""),
                opt(c.smem_conflicts_st, "")
            ),
        ),
        (
            "tensor pipe active (all MMA kinds)",
            opt(c.tensor_any_pct, "%"),
        ),
        ("HMMA pipe active (mma.sync)", opt(c.tensor_pipe_pct, "%")),
        ("HMMA instructions", opt(c.tensor_inst, "")),
        (
            "local memory ld/st sectors",
            format!(
                "{} / {}",
                opt(c.local_ld_sectors, ""),
                opt(c.local_st_sectors, "")
            ),
        ),
        (
            "top warp stalls",
            match &c.stalls {
                None => "n/a".into(),
                Some(s) => s
                    .reasons
                    .iter()
                    .filter(|(r, _)| r != "selected")
                    .take(3)
                    .map(|(r, v)| format!("{r} {v:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        ),
    ]
}

/// The JSON of one profiled launch.
pub(crate) fn kernel_json(k: &KernelProfile) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "kernel": k.kernel_name,
        "block_size": k.block_size,
        "grid_size": k.grid_size,
        "device": k.device,
        "cc": k.cc,
        "curated": k.curated,
        "summary": judge::summary(k),
        "warnings": k.warnings,
    })
}

/// Why a profile could not be taken, with the exit code it means.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProfileFailure {
    pub code: u8,
    pub message: String,
}

/// A profile's outcome from what the tool printed: the report, or why there is none. The
/// target's own word comes first (a failing kernel is its failure, not ncu's).
pub(crate) fn interpret_profile(
    parsed: Result<NcuReport, NcuError>,
    text: &str,
) -> Result<NcuReport, ProfileFailure> {
    let status = target_status(text);
    let failure = |code: u8, message: String| Err(ProfileFailure { code, message });
    match (&status, parsed) {
        (_, Err(e @ NcuError::CountersNotPermitted { .. })) => {
            failure(EXIT_HARNESS, format!("{e}\n{}", not_permitted_advice()))
        }
        (TargetStatus::Failed(m), _) => failure(
            EXIT_FAILED,
            format!("the kernel failed while it was profiled: {m}"),
        ),
        (TargetStatus::Error(m), _) => failure(
            EXIT_HARNESS,
            format!("the profiled program could not run the kernel: {m}"),
        ),
        (_, Ok(r)) => Ok(r),
        (_, Err(e)) => failure(EXIT_HARNESS, format!("no profile: {e}")),
    }
}

/// One call of a target profiled by ncu.
pub(crate) struct TakenProfile {
    pub ncu: PathBuf,
    pub target: NcuTarget,
    pub report: NcuReport,
    /// Curated metrics this ncu did not know (profiled without them).
    pub dropped: Vec<String>,
    /// What ncu printed.
    pub raw: String,
}

/// Profiles the last of [`PROFILE_WARMUPS`] + 1 calls of `t` (only kernel `only`, when given),
/// with `env` added to the target's environment.
pub(crate) fn take_profile(
    g: &Global,
    t: &Target,
    ncu: &Path,
    only: Option<&str>,
    env: &[(String, String)],
    limit: Duration,
) -> Result<TakenProfile, ProfileFailure> {
    let harness = |message: String| ProfileFailure {
        code: EXIT_HARNESS,
        message,
    };
    let target = Launches::of(&t.plan, &t.shape)
        .and_then(|l| ncu_target(&l, only, PROFILE_WARMUPS))
        .map_err(harness)?;
    let program = target_program(g, t, PROFILE_WARMUPS, true)
        .map_err(|e| harness(crate::cli::describe(&e)))?;
    let run = profile::profile_known(ncu, &target, &program, env, limit)
        .map_err(|e| harness(e.to_string()))?;
    let report = interpret_profile(run.parsed, &run.text)?;
    Ok(TakenProfile {
        ncu: ncu.to_path_buf(),
        target,
        report,
        dropped: run.dropped,
        raw: run.text,
    })
}

impl TakenProfile {
    /// Metrics this ncu did not know; launches counted differently than planned.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.dropped.is_empty() {
            notes.push(format!(
                "this ncu does not know {}: profiled without them",
                self.dropped.join(", ")
            ));
        }
        let profiled = self.report.kernels.len() as u64;
        if profiled != self.target.launch_count {
            notes.push(format!(
                "ncu profiled {profiled} launch(es) where one call has {}",
                self.target.launch_count
            ));
        }
        notes
    }

    pub fn json(&self, t: &Target) -> serde_json::Value {
        serde_json::json!({
            "task": t.task.id,
            "kernel": t.kernel_path.display().to_string(),
            "plan": t.plan_path.display().to_string(),
            "shape": t.shape.name,
            "ncu": self.ncu.display().to_string(),
            "target": {
                "kernel_regex": self.target.kernel_regex,
                "launch_skip": self.target.launch_skip,
                "launch_count": self.target.launch_count,
            },
            "kernels": self.report.kernels.iter().map(kernel_json).collect::<Vec<_>>(),
            "judge_summary": judge_text(&self.report),
            "notes": self.notes(),
            "messages": self.report.messages,
        })
    }

    /// The metric table (a column per launch), the Judge's text, warnings and notes.
    pub fn print(&self) {
        println!(
            "ncu:    {} (-k regex:{} -s {} -c {}, clocks not locked)",
            self.ncu.display(),
            self.target.kernel_regex,
            self.target.launch_skip,
            self.target.launch_count
        );
        println!();
        let mut table = comfy_table::Table::new();
        let mut header = vec!["metric".to_string()];
        header.extend(self.report.kernels.iter().map(|k| k.kernel_name.clone()));
        table.set_header(header);
        let columns: Vec<Vec<(&str, String)>> = self
            .report
            .kernels
            .iter()
            .map(|k| curated_rows(&k.curated))
            .collect();
        if let Some(first) = columns.first() {
            for (i, (name, _)) in first.iter().enumerate() {
                let mut row = vec![name.to_string()];
                row.extend(columns.iter().map(|c| c[i].1.clone()));
                table.add_row(row);
            }
        }
        println!("{table}");
        println!();
        println!("for the Judge:\n{}", judge_text(&self.report));
        for k in &self.report.kernels {
            for w in &k.warnings {
                println!("warning: {}: {w}", k.kernel_name);
            }
        }
        for n in self.notes() {
            println!("note: {n}");
        }
    }
}

fn print_target(t: &Target) {
    println!("task:   {} (shape {})", t.task.id, t.shape.name);
    println!(
        "kernel: {} (plan {})",
        t.kernel_path.display(),
        t.plan_path.display()
    );
}

pub fn run_profile(g: &Global, a: &ProfileArgs) -> anyhow::Result<u8> {
    let json = a.k.json;
    let (ncu, t) = match prepare(
        g,
        &a.k,
        "profile",
        "ncu",
        a.ncu.as_deref(),
        ShapePick::First,
    ) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let limit = Duration::from_secs(a.k.timeout.max(1));
    let taken = match take_profile(g, &t, &ncu, a.only.as_deref(), &[], limit) {
        Ok(p) => p,
        Err(f) => return Ok(fail(json, f.code, &f.message)),
    };
    if json {
        println!("{}", taken.json(&t));
    } else {
        print_target(&t);
        taken.print();
    }
    Ok(EXIT_OK)
}

/// One sanitizer tool's outcome.
#[derive(Debug)]
pub(crate) enum AuditOutcome {
    Report(SanitizerReport, TargetStatus),
    /// The tool could not run, or printed nothing it recognises.
    Error(String),
}

pub(crate) fn interpret_audit(tool: Tool, out: Result<String, ToolError>) -> AuditOutcome {
    let text = match out {
        Ok(t) => t,
        Err(e) => return AuditOutcome::Error(e.to_string()),
    };
    let report = profile::sanitizer::parse(&text);
    let status = target_status(&text);
    if let TargetStatus::Error(m) = &status {
        if report.findings.is_empty() {
            return AuditOutcome::Error(format!("{}: the target could not run: {m}", tool.name()));
        }
    }
    if !report.saw_tool_output {
        return AuditOutcome::Error(format!(
            "{}: compute-sanitizer printed nothing it recognises{}",
            tool.name(),
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| format!(" (last line: {})", l.trim()))
                .unwrap_or_default()
        ));
    }
    AuditOutcome::Report(report, status)
}

/// 1 with findings (or a kernel that failed), else 3 when a tool could not run, else 0.
pub(crate) fn audit_exit(outcomes: &[(Tool, AuditOutcome)]) -> u8 {
    let bad = outcomes.iter().any(|(_, o)| match o {
        AuditOutcome::Report(r, s) => {
            !r.findings.is_empty() || matches!(s, TargetStatus::Failed(_))
        }
        AuditOutcome::Error(_) => false,
    });
    if bad {
        EXIT_FAILED
    } else if outcomes
        .iter()
        .any(|(_, o)| matches!(o, AuditOutcome::Error(_)))
    {
        EXIT_HARNESS
    } else {
        EXIT_OK
    }
}

/// One call of a target run under each compute-sanitizer tool.
pub(crate) struct TakenAudit {
    pub sanitizer: PathBuf,
    pub outcomes: Vec<(Tool, AuditOutcome)>,
}

/// Runs one call of `t` (no warm-up, no poison) under each of `tools` once, in order.
pub(crate) fn take_audit(
    g: &Global,
    t: &Target,
    sanitizer: &Path,
    tools: &[Tool],
    limit: Duration,
    progress: bool,
) -> anyhow::Result<TakenAudit> {
    // One call, no warm-up: the sanitizers slow kernels down many times over. No poison: the
    // harness's fill would count as initialising outputs and scratch for initcheck.
    let program = target_program(g, t, 0, false)?;
    let mut unique: Vec<Tool> = Vec::new();
    for &tool in tools {
        if !unique.contains(&tool) {
            unique.push(tool);
        }
    }
    let mut outcomes = Vec::new();
    for tool in unique {
        if progress {
            eprintln!("audit: {} ...", tool.name());
        }
        let out = profile::run_tool(sanitizer, &tool.args(None), &program, limit).map(|o| o.text);
        outcomes.push((tool, interpret_audit(tool, out)));
    }
    Ok(TakenAudit {
        sanitizer: sanitizer.to_path_buf(),
        outcomes,
    })
}

impl TakenAudit {
    pub fn exit(&self) -> u8 {
        audit_exit(&self.outcomes)
    }

    pub fn json(&self, t: &Target) -> serde_json::Value {
        let tools: Vec<serde_json::Value> = self
            .outcomes
            .iter()
            .map(|(tool, o)| match o {
                AuditOutcome::Report(r, s) => serde_json::json!({
                    "tool": tool,
                    "clean": r.is_clean(),
                    "summary": r.summary(),
                    "findings": r.findings,
                    "descriptions": r.findings.iter().map(|f| f.describe()).collect::<Vec<_>>(),
                    "error_summary": r.error_summary,
                    "racecheck_summary": r.racecheck_summary,
                    "notes": r.notes,
                    "target_failed": match s { TargetStatus::Failed(m) => Some(m.clone()), _ => None },
                }),
                AuditOutcome::Error(m) => serde_json::json!({ "tool": tool, "error": m }),
            })
            .collect();
        serde_json::json!({
            "task": t.task.id,
            "kernel": t.kernel_path.display().to_string(),
            "plan": t.plan_path.display().to_string(),
            "shape": t.shape.name,
            "sanitizer": self.sanitizer.display().to_string(),
            "tools": tools,
            "exit": self.exit(),
        })
    }

    /// Each tool's summary and findings, then the overall word.
    pub fn print(&self) {
        for (tool, o) in &self.outcomes {
            println!();
            match o {
                AuditOutcome::Report(r, s) => {
                    println!("{}: {}", tool.name(), r.summary());
                    for f in &r.findings {
                        println!("  - {}", f.describe());
                    }
                    if let TargetStatus::Failed(m) = s {
                        println!("  the kernel failed under {}: {m}", tool.name());
                    }
                }
                AuditOutcome::Error(m) => println!("{}: could not run: {m}", tool.name()),
            }
        }
        println!();
        println!(
            "{}",
            match self.exit() {
                EXIT_OK => "clean",
                EXIT_FAILED => "FINDINGS",
                _ => "incomplete: a tool could not run",
            }
        );
    }
}

pub fn run_audit(g: &Global, a: &AuditArgs) -> anyhow::Result<u8> {
    let json = a.k.json;
    let given = a.sanitizer.as_deref();
    let (sanitizer, t) = match prepare(
        g,
        &a.k,
        "audit",
        "compute-sanitizer",
        given,
        ShapePick::Smallest,
    ) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let limit = Duration::from_secs(a.k.timeout.max(1));
    let tools: Vec<Tool> = a.tools.iter().map(|&x| Tool::from(x)).collect();
    let taken = take_audit(g, &t, &sanitizer, &tools, limit, !json)?;
    if json {
        println!("{}", taken.json(&t));
    } else {
        print_target(&t);
        taken.print();
    }
    Ok(taken.exit())
}

/// A kernel profiled for the agent: the Judge's text, the curated metrics (the store's
/// `profiles.metrics`) and ncu's output (its `raw`, clipped).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Profiled {
    pub summary: String,
    /// The profiled launches' kernel names, comma-separated.
    pub kernel: String,
    pub metrics: serde_json::Value,
    pub raw: String,
}

/// Keeps the store's copy of ncu's output bounded (the CSV of one call is a few KiB).
const RAW_LIMIT: usize = 64 << 10;

/// Profiles one call of a candidate at public shape `shape` with `ncu`, as `ksmith profile`
/// does, on the GPU `CUDA_VISIBLE_DEVICES=visible` shows. The kernel's files are written to a
/// temporary directory for the target. `Err` says why there is no profile; it never means the
/// kernel is wrong (the caller has already verified it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn profile_candidate(
    g: &Global,
    ncu: &Path,
    tasks_root: &Path,
    task: &Task,
    source: &str,
    plan_toml: &str,
    shape: &str,
    visible: Option<&str>,
    limit: Duration,
) -> Result<Profiled, String> {
    let plan = verifier::runtime::evaluate::candidate_plan(task, source, plan_toml)
        .map_err(|v| v.feedback())?;
    let shape = task
        .shape(shape)
        .cloned()
        .ok_or_else(|| format!("task `{}` has no public shape `{shape}`", task.id))?;
    let dir = scratch_dir().map_err(|e| format!("cannot write the kernel for ncu: {e}"))?;
    let result = (|| {
        let kernel_path = dir.join("kernel.cu");
        let plan_path = dir.join("launch.toml");
        std::fs::write(&kernel_path, source)
            .and_then(|_| std::fs::write(&plan_path, plan_toml))
            .map_err(|e| format!("cannot write the kernel for ncu: {e}"))?;
        let t = Target {
            tasks_root: tasks_root.to_path_buf(),
            task: task.clone(),
            kernel_path,
            plan_path,
            plan,
            shape,
        };
        let env: Vec<(String, String)> = visible
            .map(|v| vec![("CUDA_VISIBLE_DEVICES".to_string(), v.to_string())])
            .unwrap_or_default();
        let taken = take_profile(g, &t, ncu, None, &env, limit).map_err(|f| f.message)?;
        let report = &taken.report;
        if report.kernels.is_empty() {
            return Err("ncu profiled no launch".to_string());
        }
        let mut raw = taken.raw.clone();
        if raw.len() > RAW_LIMIT {
            let mut cut = RAW_LIMIT;
            while !raw.is_char_boundary(cut) {
                cut -= 1;
            }
            raw.truncate(cut);
            raw.push_str("\n[clipped]");
        }
        let target = &taken.target;
        Ok(Profiled {
            summary: judge_text(report),
            kernel: report
                .kernels
                .iter()
                .map(|k| k.kernel_name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            metrics: serde_json::json!({
                "shape": t.shape.name,
                "target": {
                    "kernel_regex": target.kernel_regex,
                    "launch_skip": target.launch_skip,
                    "launch_count": target.launch_count,
                },
                "dropped_metrics": taken.dropped,
                "kernels": report.kernels.iter().map(kernel_json).collect::<Vec<_>>(),
            }),
            raw,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh private directory under the system's temporary directory.
fn scratch_dir() -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ksmith-profile-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launches(prepare: &[&str], call: &[&str]) -> Launches {
        Launches {
            prepare: prepare.iter().map(|s| s.to_string()).collect(),
            call: call.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn ncu_targets_count_by_base_name_and_substring_like_ncu() {
        // A prepare kernel whose name contains a launched one is matched by ncu's regex too.
        let l = launches(&["gemv_repack"], &["gemv", "reduce<128>", "gemv"]);
        let t = ncu_target(&l, None, 3).unwrap();
        assert_eq!(t.kernel_regex, "gemv|reduce");
        assert_eq!(t.launch_skip, 1 + 3 * 3);
        assert_eq!(t.launch_count, 3);
        let t = ncu_target(&l, Some("reduce<128>"), 2).unwrap();
        assert_eq!(
            (t.kernel_regex.as_str(), t.launch_skip, t.launch_count),
            ("reduce", 2, 1)
        );
        let t = ncu_target(&l, Some("gemv"), 0).unwrap();
        assert_eq!((t.launch_skip, t.launch_count), (1, 2));
        let e = ncu_target(&l, Some("nope"), 1).unwrap_err();
        assert!(
            e.contains("does not launch `nope`") && e.contains("gemv, reduce<128>"),
            "{e}"
        );
        assert!(ncu_target(&launches(&[], &[]), None, 1).is_err());
        assert_eq!(regex_escape("a.b(c)"), "a\\.b\\(c\\)");
    }

    #[test]
    fn the_targets_last_word_counts() {
        assert_eq!(target_status("nothing here"), TargetStatus::Silent);
        assert_eq!(
            target_status("x\nksmith run-once: ok (4 launches)\n"),
            TargetStatus::Ran
        );
        assert_eq!(
            target_status("  ksmith run-once: failed: call 2 of 4: launch 0 (`k`): boom"),
            TargetStatus::Failed("call 2 of 4: launch 0 (`k`): boom".into())
        );
        assert_eq!(
            target_status("ksmith run-once: error: needs a GPU"),
            TargetStatus::Error("needs a GPU".into())
        );
        // A failing kernel is the kernel's failure even when ncu also says something.
        let f = interpret_profile(
            Err(NcuError::NoTable { messages: vec![] }),
            "ksmith run-once: failed: boom",
        )
        .unwrap_err();
        assert_eq!(f.code, EXIT_FAILED);
        let f = interpret_profile(
            Err(NcuError::CountersNotPermitted {
                message: "ERR_NVGPUCTRPERM".into(),
            }),
            "ksmith run-once: ok",
        )
        .unwrap_err();
        assert_eq!(f.code, EXIT_HARNESS);
        assert!(f.message.contains("never changes"), "{}", f.message);
    }

    fn sample(name: &str) -> NcuReport {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("bench-suite/tests/samples")
            .join(name);
        bench_suite::profile::ncu::parse(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn a_call_of_many_launches_summarizes_the_longest_three() {
        let mut kernels = Vec::new();
        for (i, f) in [
            "ncu_raw_memory_bound.csv",
            "ncu_raw_latency_bound.csv",
            "ncu_raw_compute_bound.csv",
            "ncu_raw_memory_bound.csv",
            "ncu_raw_latency_bound.csv",
        ]
        .iter()
        .enumerate()
        {
            let mut k = sample(f).kernels.remove(0);
            k.kernel_name = format!("k{i}");
            k.curated.duration_ns = Some(1000.0 * (i + 1) as f64);
            kernels.push(k);
        }
        let r = NcuReport {
            kernels,
            messages: Vec::new(),
        };
        let t = judge_text(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "One call launches 5 kernels.");
        assert!(lines[1].starts_with("[33% of the call] `k4`"), "{t}");
        assert!(lines[3].starts_with("[20% of the call] `k2`"), "{t}");
        assert_eq!(lines[4], "The other 2 launches take 20% of the call.");
        assert_eq!(lines.len(), 5);
        let one = NcuReport {
            kernels: vec![r.kernels[0].clone()],
            messages: Vec::new(),
        };
        assert_eq!(judge_text(&one), judge::summary(&r.kernels[0]));
    }

    #[test]
    fn curated_rows_read_n_a_for_missing_metrics() {
        let rows = curated_rows(&Curated::default());
        assert!(rows.iter().all(|(_, v)| v.starts_with("n/a")), "{rows:?}");
        let c = &sample("ncu_raw_memory_bound.csv").kernels[0].curated;
        let rows = curated_rows(c);
        let get = |n: &str| rows.iter().find(|r| r.0 == n).unwrap().1.clone();
        assert_eq!(get("DRAM throughput"), "91.5%");
        assert_eq!(get("duration"), "121.47 us");
    }

    #[test]
    fn audit_exit_codes() {
        let clean = profile::sanitizer::parse("========= ERROR SUMMARY: 0 errors\n");
        let dirty = profile::sanitizer::parse(
            "========= Invalid __global__ write of size 4 bytes\n=========     at k+0x10 in a.cu:3\n========= ERROR SUMMARY: 1 errors\n",
        );
        let ok = |r: &SanitizerReport| AuditOutcome::Report(r.clone(), TargetStatus::Ran);
        assert_eq!(audit_exit(&[(Tool::Memcheck, ok(&clean))]), EXIT_OK);
        assert_eq!(
            audit_exit(&[
                (Tool::Memcheck, ok(&dirty)),
                (Tool::Racecheck, AuditOutcome::Error("x".into()))
            ]),
            EXIT_FAILED
        );
        assert_eq!(
            audit_exit(&[
                (Tool::Memcheck, ok(&clean)),
                (Tool::Racecheck, AuditOutcome::Error("x".into()))
            ]),
            EXIT_HARNESS
        );
        let failed = AuditOutcome::Report(clean, TargetStatus::Failed("guard".into()));
        assert_eq!(audit_exit(&[(Tool::Memcheck, failed)]), EXIT_FAILED);
        match interpret_audit(
            Tool::Initcheck,
            Ok("ksmith run-once: error: needs a GPU".into()),
        ) {
            AuditOutcome::Error(m) => assert!(m.contains("could not run: needs a GPU"), "{m}"),
            o => panic!("{o:?}"),
        }
    }
}
