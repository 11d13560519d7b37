//! Theoretical occupancy and waves of a launch, by the CUDA occupancy calculator's rules, from
//! what is known before running: the device's limits, the kernel's registers and static shared
//! memory (ptxas) and the plan's geometry and dynamic shared memory. `ksmith tasks launches`
//! reports it for every reference kernel on a device model, so a grid that leaves SMs idle or a
//! block that registers starve shows up without a GPU.

use super::device::DeviceInfo;
use super::launch::registers_per_warp;
use serde::Serialize;

/// Warps are allocated registers in groups of 4 (one per SM sub-partition).
const WARP_GRANULARITY: u64 = 4;
/// Shared memory is allocated per block in units of 128 bytes.
const SMEM_UNIT: u64 = 128;

/// What bounds the number of resident blocks per SM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limiter {
    /// The SM's thread (warp) slots.
    Warps,
    /// The SM's block slots.
    Blocks,
    Registers,
    SharedMemory,
}

impl Limiter {
    pub fn name(self) -> &'static str {
        match self {
            Limiter::Warps => "warps",
            Limiter::Blocks => "blocks",
            Limiter::Registers => "registers",
            Limiter::SharedMemory => "shared memory",
        }
    }
}

/// One launch's residency on a device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Occupancy {
    /// Resident blocks per SM (0: the block does not fit at all).
    pub blocks_per_sm: u32,
    pub limiter: Limiter,
    /// Resident warps over the SM's warp slots.
    pub fraction: f64,
    pub grid_blocks: u64,
    /// Grid blocks over the blocks the whole device holds at once.
    pub waves: f64,
    /// SMs that get at least one block.
    pub busy_sms: u32,
}

/// Residency of `grid_blocks` blocks of `threads` threads using `registers` per thread and
/// `smem_bytes` (static + dynamic) per block on `d`.
pub fn occupancy(
    grid_blocks: u64,
    threads: u64,
    registers: u32,
    smem_bytes: u64,
    d: &DeviceInfo,
) -> Occupancy {
    let warp = u64::from(d.warp_size.max(1));
    let warps_per_block = threads.div_ceil(warp).max(1);
    let max_warps = u64::from(d.max_threads_per_sm) / warp;
    let mut limits = vec![
        (Limiter::Warps, max_warps / warps_per_block),
        (Limiter::Blocks, u64::from(d.max_blocks_per_sm)),
    ];
    if registers > 0 {
        let per_warp = registers_per_warp(registers, d.warp_size.max(1));
        let warps = u64::from(d.registers_per_sm) / per_warp / WARP_GRANULARITY * WARP_GRANULARITY;
        limits.push((Limiter::Registers, warps / warps_per_block));
    }
    let per_block =
        (smem_bytes + u64::from(d.reserved_shared_mem_per_block)).div_ceil(SMEM_UNIT) * SMEM_UNIT;
    if smem_bytes > 0 && per_block > 0 {
        limits.push((
            Limiter::SharedMemory,
            u64::from(d.shared_mem_per_sm) / per_block,
        ));
    }
    // The first of the smallest: ties name the more fundamental limit.
    let (limiter, blocks) = limits
        .iter()
        .copied()
        .reduce(|a, b| if b.1 < a.1 { b } else { a })
        .unwrap_or((Limiter::Blocks, 0));
    let blocks = blocks.min(u64::from(u32::MAX)) as u32;
    let resident = u64::from(blocks) * u64::from(d.sm_count);
    Occupancy {
        blocks_per_sm: blocks,
        limiter,
        fraction: if max_warps == 0 {
            0.0
        } else {
            (u64::from(blocks) * warps_per_block) as f64 / max_warps as f64
        },
        grid_blocks,
        waves: if resident == 0 {
            f64::INFINITY
        } else {
            grid_blocks as f64 / resident as f64
        },
        busy_sms: grid_blocks.min(u64::from(d.sm_count)) as u32,
    }
}

impl Occupancy {
    /// What a kernel author should look at, if anything: a grid that leaves SMs idle, a second
    /// wave that runs mostly empty, a block that does not fit, fewer than 8 resident warps per
    /// SM (too few to hide memory latency; tensor-core kernels often run there on purpose).
    pub fn hints(&self, sm_count: u32, warps_per_sm: u32) -> Vec<String> {
        let mut h = Vec::new();
        if self.blocks_per_sm == 0 {
            h.push(format!(
                "the block does not fit on an SM ({})",
                self.limiter.name()
            ));
            return h;
        }
        if self.busy_sms < sm_count {
            h.push(format!(
                "{} of {sm_count} SMs busy ({} blocks)",
                self.busy_sms, self.grid_blocks
            ));
        } else if self.waves > 1.0 && self.waves <= 1.5 {
            h.push(format!(
                "{:.2} waves: the second runs {:.0}% full",
                self.waves,
                100.0 * self.waves.fract()
            ));
        }
        let warps = self.fraction * f64::from(warps_per_sm);
        if warps < 8.0 {
            h.push(format!(
                "{warps:.0} warps per SM (limited by {})",
                self.limiter.name()
            ));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::device::DeviceInfo;

    #[test]
    fn h100_residency_by_each_limit() {
        let d = DeviceInfo::preset("h100").unwrap();
        // 256 threads, 32 registers, no shared memory: 8 blocks fill the 64 warp slots.
        let o = occupancy(132 * 8, 256, 32, 0, &d);
        assert_eq!((o.blocks_per_sm, o.limiter), (8, Limiter::Warps));
        assert_eq!((o.fraction, o.waves, o.busy_sms), (1.0, 1.0, 132));
        assert!(o.hints(132, 64).is_empty());
        // 128 threads x 168 registers: 168*32 = 5376 -> 5376 registers per warp; 65536 / 5376
        // = 12 warps, rounded to 12; 3 blocks of 4 warps.
        let o = occupancy(1000, 128, 168, 0, &d);
        assert_eq!((o.blocks_per_sm, o.limiter), (3, Limiter::Registers));
        // 100 KiB of shared memory (+1 KiB reserved) per block: 2 per SM.
        let o = occupancy(264, 128, 32, 100 << 10, &d);
        assert_eq!((o.blocks_per_sm, o.limiter), (2, Limiter::SharedMemory));
        assert_eq!(o.waves, 1.0);
        // 32-thread blocks: the 32 block slots bind first.
        let o = occupancy(10_000, 32, 16, 0, &d);
        assert_eq!((o.blocks_per_sm, o.limiter), (32, Limiter::Blocks));
        assert!((o.fraction - 0.5).abs() < 1e-12);
    }

    #[test]
    fn hints_name_idle_sms_tails_few_warps_and_misfits() {
        let d = DeviceInfo::preset("h100").unwrap();
        let o = occupancy(64, 256, 32, 0, &d);
        assert_eq!(o.hints(132, 64), ["64 of 132 SMs busy (64 blocks)"]);
        // 1.25 waves of 8 blocks per SM; 2.25 waves lose less and are not flagged.
        let o = occupancy(132 * 10, 256, 32, 0, &d);
        assert_eq!(o.hints(132, 64), ["1.25 waves: the second runs 25% full"]);
        assert!(occupancy(132 * 18, 256, 32, 0, &d)
            .hints(132, 64)
            .is_empty());
        // 64 threads x 255 registers: 8192 registers per warp, 8 warps, 4 blocks of 2 warps:
        // 8 warps is enough; 32-thread blocks with 2 blocks' worth of shared memory are not.
        let o = occupancy(132 * 4, 64, 255, 0, &d);
        assert_eq!(o.limiter, Limiter::Registers);
        assert!(o.hints(132, 64).is_empty(), "{:?}", o.hints(132, 64));
        let o = occupancy(132 * 2, 32, 32, 100 << 10, &d);
        assert_eq!(
            o.hints(132, 64),
            ["2 warps per SM (limited by shared memory)"]
        );
        let o = occupancy(132, 128, 32, 300 << 10, &d);
        assert_eq!(o.blocks_per_sm, 0);
        assert_eq!(
            o.hints(132, 64),
            ["the block does not fit on an SM (shared memory)"]
        );
        assert!(o.waves.is_infinite());
    }
}
