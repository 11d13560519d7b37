//! `ksmith tasks emulate`: each reference kernel through the strict protocol on the PTX
//! emulator, against the task's spec.py (PyTorch on the CPU). No GPU needed.

use super::{select, table, Global, EXIT_FAILED, EXIT_HARNESS, EXIT_OK};
use bench_suite::suite::{Entry, Suite, REFERENCE_PLAN};
use bench_suite::torch::{RunnerConfig, TorchDevice, TorchOracle};
use clap::Args;
use comfy_table::{Cell, Color};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use verifier::emulator::{self, Emulator, DEFAULT_BUDGET};
use verifier::heldout::{self, HeldoutOptions};
use verifier::nvrtc::{Arch, Compiler};
use verifier::protocol::{EvalOptions, EvaluateRequest, Oracle};
use verifier::runtime::evaluate::evaluate_with;
use verifier::runtime::strict::{NoHooks, ReferenceCache};

#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// Task ids [default: all]
    ids: Vec<String>,
    /// Run this public shape (repeatable) instead of held-out draws; the suite's public shapes
    /// are GPU-sized and can take minutes here
    #[arg(long = "shape", value_name = "NAME")]
    shapes: Vec<String>,
    /// Held-out shapes to draw per task (small, awkward sizes inside the task's ranges)
    #[arg(long, value_name = "N", default_value_t = 1)]
    heldout: u32,
    /// Cap on a drawn shape's bytes of inputs and outputs (e.g. 4M, 64M)
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = super::parse_bytes)]
    max_bytes: u64,
    /// Seed of the inputs and of the held-out draw
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also run every case a second time with other poison and compare (the determinism check)
    #[arg(long)]
    twice: bool,
    /// Instructions (summed over threads) one launch may execute before it counts as hung
    #[arg(long, default_value_t = DEFAULT_BUDGET)]
    budget: u64,
    /// Tasks emulated at once [default: number of CPUs]
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    shape: String,
    /// `correct`, a verdict kind, or `error` (the harness could not evaluate).
    status: String,
    correct: bool,
    /// Thread-instructions the emulator executed.
    instructions: u64,
    /// Tensor-core instructions among them: warp-level mma, warpgroup-level wgmma.
    mma: u64,
    wgmma: u64,
    secs: f64,
    detail: String,
}

impl Row {
    /// A row for a task the harness could not evaluate (and the base of the others).
    fn error(id: String, shape: String, detail: String) -> Row {
        Row {
            id,
            shape,
            status: "error".into(),
            correct: false,
            instructions: 0,
            mma: 0,
            wgmma: 0,
            secs: 0.0,
            detail,
        }
    }
}

/// The shapes a run covers, described (`heldout-0 (M=37 N=5)`), and the byte cap the
/// held-out ones were drawn under; or why there are none.
fn shapes_for(t: &verifier::task::Task, a: &EmulateArgs) -> Result<(Vec<String>, u64), String> {
    if !a.shapes.is_empty() {
        let named = a
            .shapes
            .iter()
            .map(|n| {
                t.shape(n)
                    .map(|s| format!("{n} ({})", s.describe()))
                    .ok_or_else(|| format!("no public shape `{n}`"))
            })
            .collect::<Result<_, _>>()?;
        return Ok((named, a.max_bytes));
    }
    let (cap, drawn) = draw(t, a).ok_or_else(|| {
        format!(
            "no held-out shape fits in {} bytes (nor in 16 times that); pass --max-bytes or --shape",
            a.max_bytes
        )
    })?;
    let described = drawn
        .iter()
        .map(|s| format!("{} ({})", s.name, s.describe()))
        .collect();
    Ok((described, cap))
}

/// Held-out shapes under the byte cap, or under 4 and 16 times it for tasks whose smallest
/// legal shape is bigger (a sparse MLP's weight matrices): the cap used and the shapes.
fn draw(t: &verifier::task::Task, a: &EmulateArgs) -> Option<(u64, Vec<verifier::task::Shape>)> {
    [1, 4, 16].into_iter().find_map(|k| {
        let cap = a.max_bytes.saturating_mul(k);
        let drawn = heldout::draw(
            t,
            a.seed,
            &HeldoutOptions {
                count: a.heldout as usize,
                max_bytes: cap,
                ..HeldoutOptions::default()
            },
        );
        (!drawn.is_empty()).then_some((cap, drawn))
    })
}

fn emulate_one(
    td: &bench_suite::suite::TaskDir,
    compiler: &Compiler,
    a: &EmulateArgs,
    arch: Arch,
) -> Row {
    let id = td.task.id.clone();
    let start = Instant::now();
    let (shape, cap) = match shapes_for(&td.task, a) {
        Ok((s, cap)) => (s.join(", "), cap),
        Err(e) => return Row::error(id, "-".into(), e),
    };
    let plan = match std::fs::read_to_string(td.dir.join(REFERENCE_PLAN)) {
        Ok(p) => p,
        Err(e) => return Row::error(id, shape, format!("cannot read {REFERENCE_PLAN}: {e}")),
    };
    let req = EvaluateRequest {
        task_dir: td.dir.clone(),
        source: td.reference_source.clone(),
        plan,
        options: EvalOptions {
            seeds: vec![a.seed],
            fresh_seed: None,
            shapes: a.shapes.clone(),
            public_shapes: !a.shapes.is_empty(),
            heldout_shapes: if a.shapes.is_empty() { a.heldout } else { 0 },
            heldout_seed: a.seed,
            heldout_max_bytes: cap,
            stress: false,
            determinism: a.twice,
            oracle: Oracle::PyTorch,
        },
    };
    let emu = Emulator::new(a.budget).with_arch(arch);
    let mut cache = ReferenceCache::new(1 << 30);
    let mut torch = TorchOracle::new(RunnerConfig::default()).on(TorchDevice::Cpu);
    let r = evaluate_with(&emu, compiler, &mut cache, &req, &NoHooks, Some(&mut torch));
    let mut row = match r {
        Ok(o) if o.verdict.is_correct() => Row {
            status: "correct".into(),
            correct: true,
            ..Row::error(id, shape, String::new())
        },
        Ok(o) => Row {
            status: format!("{:?}", o.verdict.kind()).to_lowercase(),
            ..Row::error(id, shape, o.verdict.feedback())
        },
        Err(e) => Row::error(id, shape, e.to_string()),
    };
    row.secs = start.elapsed().as_secs_f64();
    row.instructions = emu.executed();
    (row.mma, row.wgmma) = emu.tensor_instructions();
    row
}

pub fn emulate_cmd(g: &Global, suite: &Suite, a: &EmulateArgs) -> anyhow::Result<u8> {
    let selected = select(suite, &a.ids)?;
    let (compiler, _) = super::compiler(g)?;
    // The emulator's own target unless --arch names one: sm_90a runs the wgmma main loops.
    let arch = match &g.arch {
        Some(a) => a.parse::<Arch>().map_err(anyhow::Error::msg)?,
        None => emulator::ARCH,
    };
    let tasks: Vec<&bench_suite::suite::TaskDir> = selected
        .iter()
        .filter_map(|e| match e {
            Entry::Ok(td) => Some(td.as_ref()),
            Entry::Broken { .. } => None,
        })
        .collect();
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let next = AtomicUsize::new(0);
    let rows = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(tasks.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(td) = tasks.get(i) else { break };
                let row = emulate_one(td, &compiler, a, arch);
                if !a.json {
                    eprintln!(
                        "{:<40} {:<10} {:>8.1} s  {}",
                        row.id, row.status, row.secs, row.shape
                    );
                }
                if let Ok(mut r) = rows.lock() {
                    r.push(row);
                }
            });
        }
    });
    let mut rows = rows.into_inner().unwrap_or_default();
    rows.sort_by(|x, y| x.id.cmp(&y.id));
    let failed = rows
        .iter()
        .filter(|r| !r.correct && r.status != "error")
        .count();
    let errors = rows.iter().filter(|r| r.status == "error").count();
    if a.json {
        let v = serde_json::json!({ "seed": a.seed, "results": rows, "failed": failed, "errors": errors });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut t = table();
        t.set_header(vec![
            "task",
            "shape",
            "status",
            "instructions",
            "secs",
            "detail",
        ]);
        for r in &rows {
            let color = if r.correct { Color::Green } else { Color::Red };
            t.add_row(vec![
                Cell::new(&r.id),
                Cell::new(&r.shape),
                Cell::new(&r.status).fg(color),
                Cell::new(format!("{:.2e}", r.instructions as f64)),
                Cell::new(format!("{:.1}", r.secs)),
                Cell::new(super::shorten(&r.detail, 160)),
            ]);
        }
        println!("{t}");
        println!(
            "{} reference kernels emulated: {} correct, {failed} not, {errors} could not be evaluated",
            rows.len(),
            rows.len() - failed - errors
        );
    }
    Ok(if errors > 0 {
        EXIT_HARNESS
    } else if failed > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}
