//! The profile as the Judge reads it: the top bottleneck in one or two sentences with numbers,
//! plus a line of secondary findings (bank conflicts, spills) when there are any.
//!
//! The classification follows Nsight Compute's own speed-of-light reading: a kernel whose
//! compute or memory throughput is at least [`BOUND_PCT`] of peak is bound by that unit; below
//! that on both, it is latency-bound and the stall reasons and occupancy say why.

use super::ncu::{Curated, KernelProfile};

/// Throughput (% of peak) from which a unit counts as the bottleneck.
pub const BOUND_PCT: f64 = 60.0;

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0}%"))
}

fn time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else {
        format!("{:.1} us", ns / 1e3)
    }
}

fn occupancy(c: &Curated) -> Option<String> {
    let achieved = c.achieved_occupancy_pct?;
    let mut s = format!(
        "achieved occupancy {achieved:.0}% of a theoretical {}",
        pct(c.theoretical_occupancy_pct)
    );
    let lim = c.limiters();
    if !lim.is_empty() && c.theoretical_occupancy_pct.is_some_and(|t| t < 100.0) {
        let names: Vec<&str> = lim.iter().map(|(n, _)| *n).collect();
        s += &format!(
            ", limited by {} ({} blocks/SM",
            names.join(" and "),
            lim[0].1
        );
        if names.contains(&"registers") {
            if let Some(r) = c.registers_per_thread {
                s += &format!(", {r:.0} registers/thread");
            }
        }
        if names.contains(&"shared memory") {
            let smem = c.smem_static_bytes.unwrap_or(0.0) + c.smem_dynamic_bytes.unwrap_or(0.0);
            if smem > 0.0 {
                s += &format!(", {:.1} KiB shared/block", smem / 1024.0);
            }
        }
        s += ")";
    }
    Some(s)
}

fn ratio(conflicts: Option<f64>, wavefronts: Option<f64>) -> Option<f64> {
    let (c, w) = (conflicts?, wavefronts?);
    (w > 0.0).then(|| c / w)
}

/// The busier of the tensor pipe measures: all tensor instructions where ncu has that metric, the
/// HMMA pipe (`mma.sync`) otherwise.
pub fn tensor_pipe(c: &Curated) -> Option<f64> {
    match (c.tensor_any_pct, c.tensor_pipe_pct) {
        (Some(a), Some(h)) => Some(a.max(h)),
        (a, h) => a.or(h),
    }
}

/// Whether the launch certainly ran no tensor-core instruction. The HMMA count misses Hopper's
/// and Blackwell's warpgroup MMAs, so on compute capability 9.0 and newer it takes the all-kinds
/// tensor pipe metric at zero as well; without that metric nothing is claimed.
fn no_tensor_instructions(k: &KernelProfile) -> bool {
    let c = &k.curated;
    if c.tensor_inst != Some(0.0) {
        return false;
    }
    match c.tensor_any_pct {
        Some(p) => p == 0.0,
        None => {
            let major =
                k.cc.as_deref()
                    .and_then(|cc| cc.split('.').next())
                    .and_then(|m| m.trim().parse::<u32>().ok());
            major.is_some_and(|m| m < 9)
        }
    }
}

/// The summary text for one profiled launch.
pub fn summary(k: &KernelProfile) -> String {
    let c = &k.curated;
    let mut out = format!("`{}`", k.kernel_name);
    if let Some(ns) = c.duration_ns {
        out += &format!(" ({})", time(ns));
    }
    let (sm, mem) = (c.sm_throughput_pct, c.memory_throughput_pct);
    match (sm, mem) {
        (None, None) => {
            out += ": Nsight Compute returned no speed-of-light metrics, so the bottleneck is unknown.";
        }
        _ if mem.unwrap_or(0.0) >= BOUND_PCT && mem >= sm => {
            out += &format!(
                " is memory-bound: memory throughput at {} of peak (DRAM {}, L1 hit {}, L2 hit {}), compute at {}.",
                pct(mem),
                pct(c.dram_throughput_pct),
                pct(c.l1_hit_pct),
                pct(c.l2_hit_pct),
                pct(sm)
            );
            if c.dram_throughput_pct.is_some_and(|d| d >= BOUND_PCT) {
                out += " DRAM is near its peak: only moving fewer bytes (fusion, narrower types, reuse) makes it faster.";
            } else {
                out += " The pressure is on the caches / shared memory rather than DRAM: look at access patterns and bank conflicts.";
            }
        }
        _ if sm.unwrap_or(0.0) >= BOUND_PCT => {
            out += &format!(
                " is compute-bound: SM throughput at {} of peak (issue slots busy {}, tensor pipe {}), memory at {}.",
                pct(sm),
                pct(c.issue_active_pct),
                pct(tensor_pipe(c)),
                pct(mem)
            );
            if no_tensor_instructions(k) {
                out += " No tensor-core instructions ran: for matrix work, mma/wgmma would raise the ceiling.";
            }
        }
        _ => {
            out += &format!(
                " is latency-bound: neither compute ({}) nor memory ({}) is near peak",
                pct(sm),
                pct(mem)
            );
            match c.stalls.as_ref().and_then(|s| s.top()) {
                Some((reason, share)) => {
                    out +=
                        &format!("; warps mostly stall on {reason} ({share:.0}% of stall cycles)")
                }
                None => out += "; no stall breakdown was collected",
            }
            match occupancy(c) {
                Some(o) => out += &format!(", with {o}."),
                None => out += ".",
            }
            if c.waves_per_sm.is_some_and(|w| w < 1.0) {
                out += &format!(
                    " The grid fills only {:.0}% of one wave: more, smaller blocks would use more SMs.",
                    100.0 * c.waves_per_sm.unwrap_or(0.0)
                );
            }
        }
    }
    let mut also = Vec::new();
    for (what, conf, wave) in [
        ("loads", c.smem_conflicts_ld, c.smem_wavefronts_ld),
        ("stores", c.smem_conflicts_st, c.smem_wavefronts_st),
    ] {
        if let Some(r) = ratio(conf, wave).filter(|r| *r >= 0.1) {
            also.push(format!(
                "shared-memory bank conflicts on {what}: {:.0} extra wavefronts ({:.0}% of {:.0})",
                conf.unwrap_or(0.0),
                100.0 * r,
                wave.unwrap_or(0.0)
            ));
        }
    }
    let local = c.local_ld_sectors.unwrap_or(0.0) + c.local_st_sectors.unwrap_or(0.0);
    if local > 0.0 {
        also.push(format!(
            "local-memory traffic of {local:.0} sectors (register spills or local arrays{})",
            c.registers_per_thread
                .map_or(String::new(), |r| format!(", {r:.0} registers/thread"))
        ));
    }
    if !also.is_empty() {
        out += &format!(" Also: {}.", also.join("; "));
    }
    out
}
