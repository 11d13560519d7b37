//! `ksmith tasks launches`: every reference kernel's launches at each shape asked for (public,
//! and held-out shapes drawn as the verifier draws them), with the theoretical occupancy and
//! waves they get on a device model (registers and static shared memory from ptxas, geometry and
//! dynamic shared memory from the plan), and what the device would refuse to launch. Low
//! speed-of-light often starts here: a grid that leaves SMs idle at the realistic shape, a last
//! wave that runs mostly empty, a block that registers or shared memory starve. A refusal found
//! here at a held-out shape is a reference that would fail its own strict check on a GPU.

use indexmap::IndexMap;
use serde::Serialize;
use verifier::nvrtc::KernelReport;
use verifier::plan::{Plan, ResolvedLaunch};
use verifier::runtime::device::DeviceInfo;
use verifier::runtime::error::RuntimeError;
use verifier::runtime::launch::{check_coresident, check_limits, check_params, FuncAttrs};
use verifier::runtime::occupancy::{occupancy, Occupancy};
use verifier::task::{Shape, Task};

/// One launch of a reference at one shape.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchRow {
    pub task: String,
    pub shape: String,
    /// The shape's parameter values (held-out shapes have no other description).
    pub params: IndexMap<String, i64>,
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
    /// Limits the launch breaks: the device would refuse it (or, for a cooperative grid, could
    /// not keep it resident), or its arguments miss the kernel's parameters, so the kernel
    /// fails at this shape.
    pub refused: Vec<String>,
}

/// The launches of `plan` at each of `shapes`, with the ptxas reports of its compiled kernels.
/// `Err` when the plan does not resolve at one of them (a dimension over CUDA's limits, an
/// argument out of range, no launch whose `when` holds).
pub fn analyze(
    task: &Task,
    plan: &Plan,
    kernels: &[KernelReport],
    shapes: &[&Shape],
    device: &DeviceInfo,
) -> Result<Vec<LaunchRow>, String> {
    let mut rows = Vec::new();
    for shape in shapes {
        let at = |e: String| format!("shape {} ({}): {e}", shape.name, shape.describe());
        // `resolve` also fails where no launch's `when` holds: nothing would write the outputs.
        let phases = [
            ("prepare", plan.resolve_prepare(shape).map_err(at)?),
            ("call", plan.resolve(shape).map_err(at)?),
        ];
        for (phase, launches) in phases {
            for l in launches {
                rows.push(row(task, shape, phase, &l, kernels, device));
            }
        }
    }
    Ok(rows)
}

fn row(
    task: &Task,
    shape: &Shape,
    phase: &'static str,
    l: &ResolvedLaunch,
    kernels: &[KernelReport],
    device: &DeviceInfo,
) -> LaunchRow {
    let kernel = kernels.iter().find(|k| k.name == l.kernel);
    let resources = kernel.and_then(|k| k.resources.as_ref());
    let registers = resources.map(|r| r.registers);
    let static_smem = resources.map_or(0, |r| r.smem);
    let smem_bytes = u64::from(static_smem) + u64::from(l.shared_bytes);
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
    // What the driver would say about the function: the register limit per block is checked
    // by check_limits itself, and __launch_bounds__ is not in the ptxas report, so the
    // per-function thread limit is the device's.
    let attrs = FuncAttrs {
        max_threads_per_block: device.max_threads_per_block,
        num_regs: registers.unwrap_or(0),
        static_shared_bytes: static_smem,
        local_bytes: 0,
        const_bytes: 0,
        max_dynamic_shared_bytes: device
            .shared_mem_per_block_optin
            .saturating_sub(static_smem),
        binary_version: device.compute_capability.0 * 10 + device.compute_capability.1,
    };
    let mut refused = check_limits(l, &attrs, device)
        .err()
        .map_or_else(Vec::new, |e| e.problems);
    if l.cooperative && occ.blocks_per_sm > 0 {
        if let Err(e) = check_coresident(l, occ.blocks_per_sm, device) {
            refused.extend(e.problems);
        }
    }
    // Arguments against the kernel's parameters (from the PTX), as the runtime checks them: a
    // launch that only a `when` at a held-out or corner shape selects is checked here too.
    if let Some(sizes) = kernel.and_then(|k| k.param_bytes.as_ref()) {
        if let Err(e) = check_params(l, sizes) {
            refused.push(match e {
                RuntimeError::ArgumentMismatch { problem, .. } => problem,
                other => other.to_string(),
            });
        }
    }
    LaunchRow {
        task: task.id.clone(),
        shape: shape.name.clone(),
        params: shape.values.clone(),
        phase,
        kernel: l.kernel.clone(),
        grid: l.grid,
        block: l.block,
        registers,
        smem_bytes,
        occupancy: occ,
        hints,
        refused,
    }
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
        if !self.refused.is_empty() {
            line.push_str(" -- REFUSED: ");
            line.push_str(&self.refused.join("; "));
        }
        line
    }
}
