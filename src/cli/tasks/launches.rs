//! `ksmith tasks launches`: compile every reference (as `tasks check` does) and show each
//! launch's grid, block, registers, shared memory, theoretical occupancy and waves at the public
//! shapes (and, with `--heldout N`, at held-out shapes drawn as the verifier draws them) on a
//! device model, with hints where a launch leaves the GPU idle, and an error where the device
//! would refuse it.

use super::{compiler, select, table, trim_dims};
use crate::cli::{Global, EXIT_FAILED, EXIT_OK};
use anyhow::bail;
use bench_suite::check::{self, CheckOptions};
use bench_suite::launches::{self, LaunchRow};
use bench_suite::suite::{Entry, Suite};
use clap::Args;
use verifier::heldout::{self, HeldoutOptions};
use verifier::runtime::device::{DeviceInfo, PRESETS};
use verifier::task::describe_values;

/// A plan broken for a whole range would list every corner shape in it: the first few say it.
const MAX_PROBLEMS_SHOWN: usize = 5;

#[derive(Debug, Args)]
pub struct LaunchesArgs {
    /// Task ids [default: all]
    ids: Vec<String>,
    /// The device to assume: h100, h200 or a100 (SXM parts; the driver's figures), or `gpu`
    /// for this machine's GPU 0 as its driver reports it
    #[arg(long, default_value = "h100", value_name = "NAME",
          value_parser = clap::builder::PossibleValuesParser::new(PRESETS.iter().copied().chain(["gpu"])))]
    device: String,
    /// Only this shape (repeatable; public, or `heldout-K`) [default: all]
    #[arg(long = "shape", value_name = "NAME")]
    shapes: Vec<String>,
    /// Also N held-out shapes per task, drawn inside the declared ranges as the verifier draws
    /// them: a launch the device would refuse there fails the task
    #[arg(long, value_name = "N", default_value_t = 0)]
    heldout: usize,
    /// Seed of the held-out draw
    #[arg(long, value_name = "SEED", default_value_t = 1)]
    heldout_seed: u64,
    /// Also every corner shape: each public shape (and the all-minimum one) with one parameter
    /// moved to a range end or next to a power of two, with no byte cap. Only their problems
    /// are listed: the plan must cover every legal shape
    #[arg(long)]
    corners: bool,
    /// Cap on a held-out shape's inputs plus outputs, in MiB: the verifier's 64 by default;
    /// larger caps reach the rest of the declared ranges, which a plan must cover too
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    heldout_max_mib: u64,
    /// Only launches with a hint (idle SMs, a mostly empty second wave, under 8 warps per SM)
    #[arg(long)]
    hints_only: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub fn launches_cmd(g: &Global, suite: &Suite, a: &LaunchesArgs) -> anyhow::Result<u8> {
    let device = if a.device == "gpu" {
        match crate::cli::gpu::open_gpu(a.json, "tasks launches --device gpu") {
            Ok(gpu) => gpu.info.clone(),
            Err(code) => return Ok(code),
        }
    } else {
        match DeviceInfo::preset(&a.device) {
            Some(d) => d,
            None => bail!(
                "unknown device `{}` (known: {}, gpu)",
                a.device,
                PRESETS.join(", ")
            ),
        }
    };
    let selected = select(suite, &a.ids)?;
    let (compiler, arch) = compiler(g)?;
    // Registers depend on the target: compile for the modelled device unless --arch says.
    let arch = if g.arch.is_some() {
        arch
    } else {
        device.arch()
    };
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = CheckOptions {
        arch,
        jobs,
        deny_spills: false,
    };
    let checked = check::check(suite, &selected, &compiler, &opts, &|_| {})?;
    let mut rows: Vec<LaunchRow> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut corner_shapes = 0usize;
    // Task-level failures (not compiled, not valid) and shapes with problems.
    let mut problem_count = 0usize;
    for (entry, row) in selected.iter().zip(&checked) {
        let Entry::Ok(td) = entry else {
            failed.push(format!(
                "{}: invalid task (see `ksmith tasks check`)",
                row.id
            ));
            problem_count += 1;
            continue;
        };
        if row.failed() {
            failed.push(format!("{}: {:?}", row.id, row.status));
            problem_count += 1;
            continue;
        }
        let drawn = if a.heldout > 0 {
            let opts = HeldoutOptions {
                count: a.heldout,
                max_bytes: a.heldout_max_mib.saturating_mul(1 << 20),
                ..HeldoutOptions::default()
            };
            heldout::draw(&td.task, a.heldout_seed, &opts)
        } else {
            Vec::new()
        };
        let corners = if a.corners {
            heldout::corners(&td.task)
        } else {
            Vec::new()
        };
        corner_shapes += corners.len();
        let shapes: Vec<_> = td
            .task
            .shapes
            .iter()
            .chain(&drawn)
            .chain(&corners)
            .filter(|s| a.shapes.is_empty() || a.shapes.contains(&s.name))
            .collect();
        // Shape by shape, so one shape the plan cannot resolve hides none of the others.
        let mut problems = Vec::new();
        for shape in shapes {
            match launches::analyze(&td.task, &td.plan, &row.kernels, &[shape], &device) {
                Ok(r) => {
                    problems.extend(r.iter().filter(|r| !r.refused.is_empty()).map(|r| {
                        format!(
                            "shape {} ({}): `{}` would be refused: {}",
                            r.shape,
                            shape.describe(),
                            r.kernel,
                            r.refused.join("; ")
                        )
                    }));
                    rows.extend(r);
                }
                Err(e) => problems.push(e),
            }
        }
        problem_count += problems.len();
        let more = problems.len().saturating_sub(MAX_PROBLEMS_SHOWN);
        failed.extend(
            problems
                .into_iter()
                .take(MAX_PROBLEMS_SHOWN)
                .map(|p| format!("{}: {p}", row.id)),
        );
        if more > 0 {
            failed.push(format!("{}: ... and {more} more shapes", row.id));
        }
    }
    // Corner shapes run to thousands: only their problems are shown.
    rows.retain(|r| !r.shape.starts_with(heldout::CORNER_PREFIX) || !r.refused.is_empty());
    let hinted = rows.iter().filter(|r| !r.hints.is_empty()).count();
    if a.hints_only {
        rows.retain(|r| !r.hints.is_empty() || !r.refused.is_empty());
    }
    if a.json {
        let v = serde_json::json!({
            "device": device.name,
            "sm_count": device.sm_count,
            "arch": arch.to_string(),
            "launches": rows,
            "with_hints": hinted,
            "corner_shapes": corner_shapes,
            "failed": failed,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_table(&rows);
        for f in &failed {
            eprintln!("error: {f}");
        }
        println!(
            "{} launches of {} tasks on {} ({} SMs, {arch}, theoretical occupancy): {hinted} with hints{}{}",
            rows.len(),
            selected.len(),
            device.name,
            device.sm_count,
            if a.corners {
                format!("; {corner_shapes} corner shapes checked")
            } else {
                String::new()
            },
            if failed.is_empty() {
                String::new()
            } else {
                format!(", {problem_count} problems (above)")
            }
        );
    }
    Ok(if failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// Held-out shapes have no meaningful name: the table shows their parameters too.
fn shape_label(r: &LaunchRow) -> String {
    if r.shape.starts_with(heldout::NAME_PREFIX) || r.shape.starts_with(heldout::CORNER_PREFIX) {
        format!("{} ({})", r.shape, describe_values(&r.params))
    } else {
        r.shape.clone()
    }
}

fn dims(d: [u32; 3]) -> String {
    let v: Vec<String> = trim_dims(d).iter().map(u32::to_string).collect();
    v.join("×")
}

fn print_table(rows: &[LaunchRow]) {
    let mut t = table();
    t.set_header(vec![
        "task",
        "shape",
        "kernel",
        "grid",
        "block",
        "regs",
        "smem B",
        "blocks/SM",
        "occupancy",
        "waves",
        "hints",
    ]);
    for r in rows {
        let o = &r.occupancy;
        t.add_row(vec![
            r.task.clone(),
            shape_label(r),
            if r.phase == "prepare" {
                format!("{} (prepare)", r.kernel)
            } else {
                r.kernel.clone()
            },
            dims(r.grid),
            dims(r.block),
            r.registers.map_or("?".into(), |x| x.to_string()),
            r.smem_bytes.to_string(),
            format!("{} ({})", o.blocks_per_sm, o.limiter.name()),
            format!("{:.0}%", 100.0 * o.fraction),
            if o.waves.is_finite() {
                format!("{:.2}", o.waves)
            } else {
                "-".into()
            },
            r.hints
                .iter()
                .cloned()
                .chain(r.refused.iter().map(|p| format!("REFUSED: {p}")))
                .collect::<Vec<_>>()
                .join("; "),
        ]);
    }
    println!("{t}");
}
