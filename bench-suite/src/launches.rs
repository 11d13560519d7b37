//! `ksmith tasks launches`: every reference kernel's launches at each public shape, with the
//! theoretical occupancy and waves they get on a device model (registers and static shared
//! memory from ptxas, geometry and dynamic shared memory from the plan). Low speed-of-light
//! often starts here: a grid that leaves SMs idle at the realistic shape, a last wave that runs
//! mostly empty, a block that registers or shared memory starve.

use serde::Serialize;
use verifier::nvrtc::KernelReport;
use verifier::plan::Plan;
use verifier::runtime::device::DeviceInfo;
use verifier::runtime::occupancy::{occupancy, Occupancy};
use verifier::task::Task;

/// One launch of a reference at one shape.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchRow {
    pub task: String,
    pub shape: String,
    /// `prepare` (once per input set) or `call` (every timed call).
    pub phase: &'static str,
    pub kernel: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Per thread, from ptxas; `None` when ptxas did not report the kernel.
    pub registers: Option<u32>,
    /// Static (ptxas) plus dynamic (plan) shared memory per block.
    pub smem_bytes: u64,
    pub occupancy: Occupancy,
    pub hints: Vec<String>,
}

/// The launches of `plan` at every public shape of `task` named in `shapes` (all when empty),
/// with the ptxas reports of its compiled kernels. `Err` when the plan does not resolve.
pub fn analyze(
    task: &Task,
    plan: &Plan,
    kernels: &[KernelReport],
    shapes: &[String],
    device: &DeviceInfo,
) -> Result<Vec<LaunchRow>, String> {
    let mut rows = Vec::new();
    for shape in &task.shapes {
        if !shapes.is_empty() && !shapes.contains(&shape.name) {
            continue;
        }
        let at = |e: String| format!("shape {}: {e}", shape.name);
        let phases = [
            ("prepare", plan.resolve_prepare(shape).map_err(at)?),
            ("call", plan.resolve(shape).map_err(at)?),
        ];
        for (phase, launches) in phases {
            for l in launches {
                let resources = kernels
                    .iter()
                    .find(|k| k.name == l.kernel)
                    .and_then(|k| k.resources.as_ref());
                let registers = resources.map(|r| r.registers);
                let smem_bytes =
                    u64::from(resources.map_or(0, |r| r.smem)) + u64::from(l.shared_bytes);
                let grid_blocks = l.grid.iter().map(|&g| u64::from(g)).product();
                let occ = occupancy(
                    grid_blocks,
                    l.threads_per_block(),
                    registers.unwrap_or(0),
                    smem_bytes,
                    device,
                );
                let mut hints = occ.hints(
                    device.sm_count,
                    device.max_threads_per_sm / device.warp_size.max(1),
                );
                if registers.is_none() {
                    hints.push("no ptxas report: registers not counted".into());
                }
                rows.push(LaunchRow {
                    task: task.id.clone(),
                    shape: shape.name.clone(),
                    phase,
                    kernel: l.kernel.clone(),
                    grid: l.grid,
                    block: l.block,
                    registers,
                    smem_bytes,
                    occupancy: occ,
                    hints,
                });
            }
        }
    }
    Ok(rows)
}

impl LaunchRow {
    /// One line for a prompt: geometry, residency, waves and hints.
    pub fn describe(&self) -> String {
        let o = &self.occupancy;
        let threads: u64 = self.block.iter().map(|&b| u64::from(b)).product();
        let mut line = format!(
            "{}: {} blocks x {threads} threads, {} blocks/SM (limited by {}), occupancy {:.0}%, {:.2} waves",
            self.kernel,
            o.grid_blocks,
            o.blocks_per_sm,
            o.limiter.name(),
            100.0 * o.fraction,
            o.waves
        );
        if !self.hints.is_empty() {
            line.push_str(" -- ");
            line.push_str(&self.hints.join("; "));
        }
        line
    }
}
