//! `ksmith tasks launches`: compile every reference (as `tasks check` does) and show each
//! launch's grid, block, registers, shared memory, theoretical occupancy and waves at the public
//! shapes on a device model, with hints where a launch leaves the GPU idle.

use super::{compiler, select, table, trim_dims};
use crate::cli::{Global, EXIT_FAILED, EXIT_OK};
use anyhow::bail;
use bench_suite::check::{self, CheckOptions};
use bench_suite::launches::{self, LaunchRow};
use bench_suite::suite::{Entry, Suite};
use clap::Args;
use verifier::runtime::device::{DeviceInfo, PRESETS};

#[derive(Debug, Args)]
pub struct LaunchesArgs {
    /// Task ids [default: all]
    ids: Vec<String>,
    /// The device to assume: h100, h200 or a100 (SXM parts; the driver's figures), or `gpu`
    /// for this machine's GPU 0 as its driver reports it
    #[arg(long, default_value = "h100", value_name = "NAME",
          value_parser = clap::builder::PossibleValuesParser::new(PRESETS.iter().copied().chain(["gpu"])))]
    device: String,
    /// Only this public shape (repeatable) [default: all]
    #[arg(long = "shape", value_name = "NAME")]
    shapes: Vec<String>,
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
    for (entry, row) in selected.iter().zip(&checked) {
        let Entry::Ok(td) = entry else {
            failed.push(format!(
                "{}: invalid task (see `ksmith tasks check`)",
                row.id
            ));
            continue;
        };
        if row.failed() {
            failed.push(format!("{}: {:?}", row.id, row.status));
            continue;
        }
        match launches::analyze(&td.task, &td.plan, &row.kernels, &a.shapes, &device) {
            Ok(r) => rows.extend(r),
            Err(e) => failed.push(format!("{}: {e}", row.id)),
        }
    }
    let hinted = rows.iter().filter(|r| !r.hints.is_empty()).count();
    if a.hints_only {
        rows.retain(|r| !r.hints.is_empty());
    }
    if a.json {
        let v = serde_json::json!({
            "device": device.name,
            "sm_count": device.sm_count,
            "arch": arch.to_string(),
            "launches": rows,
            "with_hints": hinted,
            "failed": failed,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_table(&rows);
        for f in &failed {
            eprintln!("error: {f}");
        }
        println!(
            "{} launches of {} tasks on {} ({} SMs, {arch}, theoretical occupancy): {hinted} with hints{}",
            rows.len(),
            selected.len(),
            device.name,
            device.sm_count,
            if failed.is_empty() {
                String::new()
            } else {
                format!(", {} tasks not analysed", failed.len())
            }
        );
    }
    Ok(if failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
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
            r.shape.clone(),
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
            r.hints.join("; "),
        ]);
    }
    println!("{t}");
}
