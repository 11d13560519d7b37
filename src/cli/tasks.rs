//! `ksmith tasks list|show|check|spec|launches`.

use super::{Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK};
use anyhow::{bail, Context};
use bench_suite::check::{self, CheckOptions, CheckRow, Status};
use bench_suite::spec_check::{self, ShapePick, SpecCheckOptions, SpecRow, SpecStatus};
use bench_suite::suite::{self, Entry, Suite, TaskDir};
use bench_suite::torch::RunnerConfig;
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, Color, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};
use verifier::nvrtc::{Arch, CompileCache, Compiler};
use verifier::source::{INCLUDE_ALLOWED_PREFIXES, INCLUDE_ALLOWLIST};

mod emulate;
mod launches;

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// One line per task
    List(ListArgs),
    /// A task's parameters, shapes, tensors, tolerance, roofline and reference launch plan
    Show(ShowArgs),
    /// Validate tasks and compile every reference kernel with NVRTC
    #[command(after_help = include_allowlist_help())]
    Check(CheckArgs),
    /// Run every task's spec.py with PyTorch on the CPU, on harness-generated inputs, and check
    /// it returns the declared outputs with finite, non-constant values that depend on every
    /// input (needs torch, no GPU)
    #[command(
        after_help = "Exit status: 0 every spec passes, 1 a spec fails or is degenerate, \
3 PyTorch cannot be used (no python3 or no torch; KSMITH_PYTHON picks the interpreter)."
    )]
    Spec(SpecArgs),
    /// Each reference launch's grid, block, registers, shared memory, theoretical occupancy and
    /// waves at the public shapes on a device model (no GPU needed), with hints where a launch
    /// leaves SMs idle
    Launches(launches::LaunchesArgs),
    /// Run reference kernels on the CPU in a PTX interpreter, through the strict protocol, against
    /// spec.py (PyTorch on the CPU): correctness without a GPU, on a small shape
    #[command(
        after_help = "Only the suite's own reference kernels run here; candidates are GPU code and never run on the host.\n\
Exit status: 0 every reference is correct, 1 one is not, 3 one could not be evaluated (NVRTC or PyTorch missing, unreadable PTX)."
    )]
    Emulate(emulate::EmulateArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Task id
    id: String,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Task ids to check [default: all]
    ids: Vec<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    /// Parallel compilations [default: number of CPUs]
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Treat register spills as failures
    #[arg(long)]
    deny_spills: bool,
    /// Print the full compile log of every task (ptxas's report per kernel), and problems unshortened
    #[arg(long)]
    log: bool,
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Task ids to check [default: all]
    ids: Vec<String>,
    /// Run this public shape (repeatable) [default: each task's smallest]
    #[arg(long = "shape", value_name = "NAME", conflicts_with = "all_shapes")]
    shapes: Vec<String>,
    /// Run every public shape (large ones take long on a CPU)
    #[arg(long)]
    all_shapes: bool,
    /// With --all-shapes: skip public shapes with more bytes of inputs and outputs than this
    /// (e.g. 256M, 2G) [default: no limit]
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    max_bytes: Option<u64>,
    /// Also run N held-out shapes per task, drawn as the verifier draws them (no input
    /// sensitivity check on those)
    #[arg(long, value_name = "N", default_value_t = 0)]
    heldout: usize,
    /// Seed of the held-out draw
    #[arg(long, default_value_t = 1)]
    heldout_seed: u64,
    /// Input seed
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip the check that every input matters (one more spec.py run per input, each with that
    /// input drawn from another seed)
    #[arg(long)]
    no_sensitivity: bool,
    /// Skip the run on the verifier's stress variants (heavy-tailed inputs scaled up and down),
    /// which fails a task whose outputs turn NaN or infinite there
    #[arg(long)]
    no_stress: bool,
    /// Longest one (task, shape) may run, torch's import included, in seconds
    #[arg(long, default_value_t = 600, value_parser = super::timeout_secs())]
    timeout: u64,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

fn include_allowlist_help() -> String {
    format!(
        "Headers a kernel may #include: {}, and anything under {}.",
        INCLUDE_ALLOWLIST.join(", "),
        INCLUDE_ALLOWED_PREFIXES.join(", ")
    )
}

pub fn run(g: &Global, cmd: TasksCommand) -> anyhow::Result<u8> {
    let root = suite::locate(g.tasks_dir.as_deref())?;
    let suite = Suite::discover(&root)?;
    match cmd {
        TasksCommand::List(a) => list(&suite, &a),
        TasksCommand::Show(a) => show(&suite, &a),
        TasksCommand::Check(a) => check_cmd(g, &suite, &a),
        TasksCommand::Spec(a) => spec_cmd(&suite, &a),
        TasksCommand::Launches(a) => launches::launches_cmd(g, &suite, &a),
        TasksCommand::Emulate(a) => emulate::emulate_cmd(g, &suite, &a),
    }
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

fn list(suite: &Suite, a: &ListArgs) -> anyhow::Result<u8> {
    if a.json {
        let rows: Vec<serde_json::Value> = suite
            .entries
            .iter()
            .map(|e| match e {
                Entry::Ok(t) => serde_json::json!({
                    "id": t.task.id, "category": t.task.category, "title": t.task.title,
                    "shapes": t.task.shapes.iter().map(|s| &s.name).collect::<Vec<_>>(),
                    "valid": true, "content_hash": t.content_hash,
                }),
                Entry::Broken {
                    id,
                    category,
                    diagnostics,
                    ..
                } => serde_json::json!({
                    "id": id, "category": category, "valid": false,
                    "problems": diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(EXIT_OK);
    }
    let mut t = table();
    t.set_header(vec![
        "task",
        "category",
        "title",
        "shapes",
        "inputs → outputs",
    ]);
    let mut broken = 0;
    for e in &suite.entries {
        match e {
            Entry::Ok(td) => {
                let io = format!(
                    "{} → {}",
                    td.task
                        .inputs
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    td.task
                        .outputs
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                t.add_row(vec![
                    Cell::new(&td.task.id),
                    Cell::new(&td.task.category),
                    Cell::new(&td.task.title),
                    Cell::new(
                        td.task
                            .shapes
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    Cell::new(io),
                ]);
            }
            Entry::Broken { id, category, .. } => {
                broken += 1;
                t.add_row(vec![
                    Cell::new(id),
                    Cell::new(category),
                    Cell::new("INVALID (see `ksmith tasks check`)").fg(Color::Red),
                    Cell::new(""),
                    Cell::new(""),
                ]);
            }
        }
    }
    println!("{t}");
    println!(
        "{} tasks in {}{}",
        suite.entries.len(),
        suite.root.display(),
        if broken > 0 {
            format!(", {broken} invalid")
        } else {
            String::new()
        }
    );
    Ok(EXIT_OK)
}

fn find<'a>(suite: &'a Suite, id: &str) -> anyhow::Result<&'a Entry> {
    suite.get(id).with_context(|| suite.unknown_task(id))
}

fn show(suite: &Suite, a: &ShowArgs) -> anyhow::Result<u8> {
    let td = match find(suite, &a.id)? {
        Entry::Ok(td) => td,
        Entry::Broken { diagnostics, .. } => {
            for d in diagnostics {
                eprintln!("{d}");
            }
            return Ok(EXIT_FAILED);
        }
    };
    if a.json {
        let realistic = super::bench::shapes::realistic_shape(&td.task).map(|s| s.name.clone());
        let shapes: Vec<serde_json::Value> = td
            .task
            .shapes
            .iter()
            .map(|s| {
                let (floor, bound) = super::bench::shapes::nominal_roofline(&td.task, s).unzip();
                serde_json::json!({
                    "shape": s.name,
                    "realistic": realistic.as_deref() == Some(s.name.as_str()),
                    "h100_datasheet_floor_ms": floor,
                    "bound": bound,
                })
            })
            .collect();
        let v = serde_json::json!({
            "task": td.task, "plan": td.plan, "content_hash": td.content_hash,
            "dir": td.dir, "kernels": td.kernels, "shapes": shapes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(EXIT_OK);
    }
    print_task(td)?;
    Ok(EXIT_OK)
}

fn print_task(td: &TaskDir) -> anyhow::Result<()> {
    let t = &td.task;
    println!("{} — {}", t.id, t.title);
    println!("category: {}", t.category);
    if let Some(s) = &t.source {
        println!("source:   {s}");
    }
    println!("dir:      {}", td.dir.display());
    if let Some(d) = &t.description {
        println!("\n{}", d.trim());
    }
    println!("\nparameters:");
    for p in &t.params {
        let mut r = Vec::new();
        if let Some(v) = p.min {
            r.push(format!("min {v}"));
        }
        if let Some(v) = p.max {
            r.push(format!("max {v}"));
        }
        if let Some(v) = p.multiple_of {
            r.push(format!("multiple of {v}"));
        }
        if let Some(v) = &p.values {
            r.push(format!("one of {v:?}"));
        }
        let desc = p
            .description
            .as_deref()
            .map(|d| format!("  ({d})"))
            .unwrap_or_default();
        println!("  {:<8} {}{desc}", p.name, r.join(", "));
    }
    for c in &t.constraints {
        println!("  constraint: {c}");
    }

    let mut io = table();
    io.set_header(vec!["", "name", "tensor", "role / check", "init"]);
    for i in &t.inputs {
        let init = i
            .init
            .as_ref()
            .map(|x| serde_json::to_string(&x.kind))
            .transpose()?
            .unwrap_or_default();
        io.add_row(vec![
            "in".to_string(),
            i.name.clone(),
            i.signature(),
            format!("{:?}", i.role).to_lowercase(),
            init,
        ]);
    }
    for o in &t.outputs {
        let check = o.check.unwrap_or(t.check);
        io.add_row(vec![
            "out".to_string(),
            o.name.clone(),
            o.signature(),
            format!("{check:?}"),
            String::new(),
        ]);
    }
    println!("\n{io}");
    println!("check: {:?}", t.check);

    let mut sh = table();
    sh.set_header(vec![
        "shape",
        "params",
        "bytes",
        "flops",
        "floor (H100 datasheet)",
        "launches (grid × block, smem)",
    ]);
    let realistic = super::bench::shapes::realistic_shape(t).map(|s| s.name.clone());
    for s in &t.shapes {
        let bytes = t
            .roofline
            .bytes
            .eval(s)
            .map(|v| human(v as f64, "B"))
            .unwrap_or_else(|e| e.to_string());
        let flops = t
            .roofline
            .flops
            .eval(s)
            .map(|v| human(v as f64, "FLOP"))
            .unwrap_or_else(|e| e.to_string());
        let launches = match td.plan.resolve(s) {
            Ok(ls) => ls
                .iter()
                .map(|l| {
                    format!(
                        "{} {:?}×{:?}{}",
                        l.kernel,
                        trim_dims(l.grid),
                        trim_dims(l.block),
                        if l.shared_bytes > 0 {
                            format!(", {} B", l.shared_bytes)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => e,
        };
        let name = if realistic.as_deref() == Some(s.name.as_str()) {
            format!("{} *", s.name)
        } else {
            s.name.clone()
        };
        sh.add_row(vec![
            name,
            s.describe(),
            bytes,
            flops,
            nominal_floor_cell(t, s),
            launches,
        ]);
    }
    println!("\n{sh}");
    if let Some(r) = &realistic {
        println!("* {r}: the realistic shape (bench's per-task summary)");
    }
    println!(
        "roofline peak: {:?}; bytes = {}; flops = {}",
        t.roofline.peak, t.roofline.bytes, t.roofline.flops
    );
    if !td.plan.scratch.is_empty() {
        println!("\nscratch:");
        for s in &td.plan.scratch {
            println!(
                "  {} {}[{}]{}",
                s.name,
                s.dtype,
                s.len,
                if s.persistent { " (persistent)" } else { "" }
            );
        }
    }
    Ok(())
}

fn trim_dims(d: [u32; 3]) -> Vec<u32> {
    let n = if d[2] > 1 {
        3
    } else if d[1] > 1 {
        2
    } else {
        1
    };
    d[..n].to_vec()
}

fn human(v: f64, unit: &str) -> String {
    let (d, p) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(d, _)| v >= *d)
        .unwrap_or((1.0, ""));
    format!("{:.3} {p}{unit}", v / d)
}

pub(crate) fn compiler(g: &Global) -> anyhow::Result<(Compiler, Arch)> {
    let nvrtc = g.nvrtc_locator().load()?;
    let arch = match &g.arch {
        Some(a) => a.parse::<Arch>().map_err(anyhow::Error::msg)?,
        None => Arch::detect().unwrap_or(Arch::DEFAULT),
    };
    let cache = if g.no_cache {
        None
    } else {
        match &g.cache_dir {
            Some(d) => Some(CompileCache::new(d.join("nvrtc"))),
            None => CompileCache::default_location(),
        }
    };
    tracing::debug!(
        "NVRTC {}.{} from {}, headers {:?}, target {arch}",
        nvrtc.version.0,
        nvrtc.version.1,
        nvrtc.library_path.display(),
        nvrtc.include_dirs
    );
    Ok((Compiler::new(nvrtc, cache), arch))
}

fn select<'s>(suite: &'s Suite, ids: &[String]) -> anyhow::Result<Vec<&'s Entry>> {
    let selected: Vec<&Entry> = if ids.is_empty() {
        suite.entries.iter().collect()
    } else {
        ids.iter()
            .map(|id| find(suite, id))
            .collect::<anyhow::Result<_>>()?
    };
    if selected.is_empty() {
        bail!("no tasks found in {}", suite.root.display());
    }
    Ok(selected)
}

fn check_cmd(g: &Global, suite: &Suite, a: &CheckArgs) -> anyhow::Result<u8> {
    let selected = select(suite, &a.ids)?;
    let (compiler, arch) = compiler(g)?;
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let bar = ProgressBar::new(selected.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    let opts = CheckOptions {
        arch,
        jobs,
        deny_spills: a.deny_spills,
    };
    let rows = check::check(suite, &selected, &compiler, &opts, &|r: &CheckRow| {
        bar.set_message(r.id.clone());
        bar.inc(1);
    })?;
    bar.finish_and_clear();

    let failed = rows.iter().filter(|r| r.failed()).count();
    if a.json {
        let v = serde_json::json!({
            "arch": arch.to_string(),
            "nvrtc": format!("{}.{}", compiler.nvrtc.version.0, compiler.nvrtc.version.1),
            "tasks": rows,
            "failed": failed,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_check_table(&rows, a.log);
        println!(
            "{} tasks checked for {arch} with NVRTC {}.{}: {} ok, {} failed{}{}",
            rows.len(),
            compiler.nvrtc.version.0,
            compiler.nvrtc.version.1,
            rows.len() - failed,
            failed,
            match rows.iter().filter(|r| r.status == Status::Spills).count() {
                0 => String::new(),
                n => format!(", {n} with spills"),
            },
            match rows.iter().filter(|r| r.performance_losses() > 0).count() {
                0 => String::new(),
                n => format!(", {n} with ptxas performance losses (see above)"),
            }
        );
    }
    Ok(if failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

fn print_check_table(rows: &[CheckRow], full_log: bool) {
    let mut t = table();
    t.set_header(vec![
        "task",
        "status",
        "compile ms",
        "kernel",
        "regs",
        "spills (st/ld B)",
        "smem B",
    ]);
    for r in rows {
        let (status, color) = match r.status {
            Status::Ok => ("ok", Color::Green),
            Status::Spills => ("spills", Color::Yellow),
            Status::Invalid => ("invalid", Color::Red),
            Status::CompileError => ("compile error", Color::Red),
        };
        let ms = r
            .compile_ms
            .map(|m| format!("{m:.0}{}", if r.cache_hit { " (cached)" } else { "" }))
            .unwrap_or_default();
        let col = |f: &dyn Fn(&verifier::nvrtc::KernelResources) -> String| {
            r.kernels
                .iter()
                .map(|k| k.resources.as_ref().map(f).unwrap_or_else(|| "?".into()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        t.add_row(vec![
            Cell::new(&r.id),
            Cell::new(status).fg(color),
            Cell::new(ms),
            Cell::new(
                r.kernels
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Cell::new(col(&|x| x.registers.to_string())),
            Cell::new(col(&|x| format!("{}/{}", x.spill_stores, x.spill_loads))),
            Cell::new(col(&|x| x.smem.to_string())),
        ]);
    }
    println!("{t}");
    if full_log {
        for r in rows.iter().filter(|r| !r.log.trim().is_empty()) {
            println!("\n{} compile log:", r.id);
            for line in r.log.trim_end().lines() {
                println!("  {line}");
            }
        }
    }
    for r in rows.iter().filter(|r| !r.problems.is_empty()) {
        println!("\n{} ({}):", r.id, r.category);
        for p in &r.problems {
            let p = if full_log { p.clone() } else { shorten(p, 40) };
            for line in p.lines() {
                println!("  {line}");
            }
        }
    }
}

/// The first `n` lines of a long compile log; `--log` prints it all.
pub(super) fn shorten(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    if lines.len() <= n {
        return s.to_string();
    }
    format!(
        "{}\n... ({} more lines; --log prints all)",
        lines[..n].join("\n"),
        lines.len() - n
    )
}

fn spec_cmd(suite: &Suite, a: &SpecArgs) -> anyhow::Result<u8> {
    let selected = select(suite, &a.ids)?;
    let opts = SpecCheckOptions {
        shapes: if a.all_shapes {
            ShapePick::All
        } else if a.shapes.is_empty() {
            ShapePick::Smallest
        } else {
            ShapePick::Named(a.shapes.clone())
        },
        seed: a.seed,
        sensitivity: !a.no_sensitivity,
        stress: !a.no_stress,
        max_bytes: a.max_bytes,
        heldout: a.heldout,
        heldout_seed: a.heldout_seed,
        runner: RunnerConfig {
            timeout: std::time::Duration::from_secs(a.timeout.max(1)),
            ..RunnerConfig::default()
        },
    };
    let bar = ProgressBar::new(selected.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    let mut last = String::new();
    let result = spec_check::check(&selected, &opts, &mut |r: &SpecRow| {
        if r.id != last {
            bar.inc(1);
            last = r.id.clone();
        }
        bar.set_message(format!("{} {}", r.id, r.shape));
    });
    bar.finish_and_clear();
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("ksmith: {e}");
            return Ok(EXIT_HARNESS);
        }
    };
    let skipped = rows
        .iter()
        .filter(|r| r.status == SpecStatus::Skipped)
        .count();
    let bad = rows
        .iter()
        .filter(|r| {
            !matches!(
                r.status,
                SpecStatus::Ok | SpecStatus::Skipped | SpecStatus::Warning
            )
        })
        .count();
    let warned = rows
        .iter()
        .filter(|r| r.status == SpecStatus::Warning)
        .count();
    if a.json {
        let v = serde_json::json!({ "seed": a.seed, "checks": rows, "failed": bad });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_spec_table(&rows);
        let secs: f64 = rows.iter().map(|r| r.secs).sum();
        println!(
            "{} (task, shape) spec checks on the CPU in {secs:.1} s: {} ok, {bad} failed{}{}",
            rows.len() - skipped,
            rows.len() - bad - skipped,
            if warned > 0 {
                format!(", {warned} held-out with warnings")
            } else {
                String::new()
            },
            if skipped > 0 {
                format!(", {skipped} skipped (over --max-bytes)")
            } else {
                String::new()
            }
        );
    }
    Ok(if bad > 0 { EXIT_FAILED } else { EXIT_OK })
}

fn print_spec_table(rows: &[SpecRow]) {
    let mut t = table();
    t.set_header(vec![
        "task",
        "shape",
        "status",
        "secs",
        "outputs (max |value|)",
    ]);
    for r in rows {
        let (status, color) = match r.status {
            SpecStatus::Ok => ("ok", Color::Green),
            SpecStatus::Degenerate => ("degenerate", Color::Red),
            SpecStatus::Failed => ("failed", Color::Red),
            SpecStatus::Skipped => ("skipped", Color::Yellow),
            SpecStatus::Warning => ("warning", Color::Yellow),
        };
        let outs = r
            .outputs
            .iter()
            .map(|o| {
                let dims: Vec<String> = o.dims.iter().map(|d| d.to_string()).collect();
                format!(
                    "{} {}[{}] {:.3e}",
                    o.name,
                    o.dtype,
                    dims.join(","),
                    o.max_abs
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        t.add_row(vec![
            Cell::new(&r.id),
            Cell::new(&r.shape),
            Cell::new(status).fg(color),
            Cell::new(format!("{:.2}", r.secs)),
            Cell::new(outs),
        ]);
    }
    println!("{t}");
    for r in rows.iter().filter(|r| !r.problems.is_empty()) {
        println!("\n{} {} ({}):", r.id, r.shape, r.category);
        for p in &r.problems {
            for line in shorten(p, 40).lines() {
                println!("  {line}");
            }
        }
    }
}

/// `560.9 us memory`: the roofline floor at the H100's datasheet rates and the term that sets
/// it, for reading a task before any GPU has calibrated one.
fn nominal_floor_cell(t: &verifier::task::Task, s: &verifier::task::Shape) -> String {
    match super::bench::shapes::nominal_roofline(t, s) {
        Some((ms, bound)) => format!("{} {bound}", super::bench::rows::ms(Some(ms))),
        None => "-".into(),
    }
}

/// A byte count with an optional K/M/G suffix (binary: 1K = 1024).
pub(super) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&t[..i], 1u64 << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&t[..i], 1u64 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&t[..i], 1u64 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a byte count (e.g. 4096, 256M, 2G)"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("256M"), Ok(256 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("3k"), Ok(3 << 10));
        for bad in ["", "M", "-1", "1.5G", "99999999999999999999G", "12T"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
