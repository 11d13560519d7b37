//! Per-kernel resource usage from ptxas's verbose report (`-Xptxas=-v`), for the task table and
//! for the Judge (registers and spills explain many slow kernels).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelResources {
    /// The symbol in the CUBIN (mangled unless `extern "C"`).
    pub symbol: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub stack_frame: u32,
    /// Static shared memory in bytes (dynamic shared memory comes from the launch plan).
    pub smem: u32,
    pub barriers: u32,
    pub cmem0: u32,
}

impl KernelResources {
    pub fn spills(&self) -> bool {
        self.spill_stores > 0 || self.spill_loads > 0
    }
}

fn number_before(s: &str, suffix: &str) -> Option<u32> {
    let idx = s.find(suffix)?;
    s[..idx].split_whitespace().next_back()?.parse().ok()
}

fn quoted(s: &str) -> Option<&str> {
    let a = s.find('\'')?;
    let rest = &s[a + 1..];
    Some(&rest[..rest.find('\'')?])
}

/// Parses every entry function's report; lines it does not understand are skipped, so a changed
/// ptxas wording degrades to missing numbers, never to an error.
pub fn parse(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    let mut current: Option<usize> = None;
    let mut props_for: Option<String> = None;
    for line in log.lines() {
        let body = line
            .split_once(':')
            .map(|(_, b)| b.trim())
            .unwrap_or(line.trim());
        if line.contains("Compiling entry function") {
            if let Some(name) = quoted(line) {
                out.push(KernelResources {
                    symbol: name.to_string(),
                    ..Default::default()
                });
                current = Some(out.len() - 1);
                props_for = None;
            }
        } else if let Some(rest) = body.strip_prefix("Function properties for ") {
            props_for = Some(rest.trim().to_string());
        } else if line.contains("bytes stack frame") {
            let target = props_for
                .as_deref()
                .and_then(|p| out.iter().position(|k| k.symbol == p))
                .or(current.filter(|_| props_for.is_none()));
            if let Some(i) = target {
                let k = &mut out[i];
                k.stack_frame = number_before(line, "bytes stack frame").unwrap_or(0);
                k.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                k.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            }
        } else if body.starts_with("Used ") {
            if let Some(i) = current {
                let k = &mut out[i];
                k.registers = number_before(body, "registers").unwrap_or(0);
                k.barriers = body
                    .split(',')
                    .find(|p| p.contains("barriers"))
                    .and_then(|p| number_before(p, "barriers"))
                    .unwrap_or(0);
                k.smem = body
                    .split(',')
                    .find(|p| p.contains("bytes smem"))
                    .and_then(|p| number_before(p, "bytes smem"))
                    .unwrap_or(0);
                k.cmem0 = body
                    .split(',')
                    .find(|p| p.contains("cmem[0]"))
                    .and_then(|p| number_before(p, "bytes cmem[0]"))
                    .unwrap_or(0);
            }
        }
    }
    out
}

/// ptxas's "Potential Performance Loss" notes (C75xx: wgmma serialized, and the like), one per
/// line, as `ptxas: (C7515) Potential Performance Loss: ...`. They are `info`, not warnings, so nothing else in
/// the log says a correct kernel has lost its tensor-core overlap.
pub fn performance_losses(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("Potential Performance Loss"))
        .map(|l| {
            let body = l.split_once("ptxas info").map_or(l, |(_, b)| b);
            format!("ptxas: {}", body.trim_start_matches([' ', ':']).trim())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from NVRTC 13.0 (sm_90, -Xptxas=-v) on this project's set-up.
    const REAL_LOG: &str = "ptxas info    : 6134 bytes gmem
ptxas info    : Compiling entry function '_Z1kILi128EEvPfi' for 'sm_90'
ptxas info    : Function properties for _Z1kILi128EEvPfi
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 10 registers, used 1 barriers, 512 bytes smem
ptxas info    : Compile time = 13.146 ms
ptxas info    : Compiling entry function 'plain' for 'sm_90'
ptxas info    : Function properties for plain
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 6 registers, used 0 barriers
ptxas info    : Compile time = 3.033 ms
";

    #[test]
    fn parses_real_report() {
        let k = parse(REAL_LOG);
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].symbol, "_Z1kILi128EEvPfi");
        assert_eq!((k[0].registers, k[0].barriers, k[0].smem), (10, 1, 512));
        assert_eq!(k[1].symbol, "plain");
        assert_eq!((k[1].registers, k[1].smem), (6, 0));
        assert!(!k[0].spills());
    }

    #[test]
    fn parses_spills_and_device_function_properties() {
        let log = "ptxas info    : Compiling entry function 'big' for 'sm_90'
ptxas info    : Function properties for _Z6helperv
ptxas         .     16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Function properties for big
ptxas         .     96 bytes stack frame, 88 bytes spill stores, 120 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 49152 bytes smem, 400 bytes cmem[0]
";
        let k = parse(log);
        assert_eq!(k.len(), 1);
        assert_eq!(
            (k[0].spill_stores, k[0].spill_loads, k[0].stack_frame),
            (88, 120, 96)
        );
        assert_eq!((k[0].registers, k[0].smem, k[0].cmem0), (255, 49152, 400));
        assert!(k[0].spills());
    }

    #[test]
    fn garbage_is_ignored() {
        assert!(parse("nonsense\n: : :\nUsed registers\n'").is_empty());
        assert!(parse("").is_empty());
    }

    #[test]
    fn performance_losses_are_picked_out_of_the_log() {
        let log = "ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized due to non wgmma instructions defining accumulator registers of a wgmma between start and end of the pipeline stage in the function 'k'\nptxas info    : 0 bytes gmem\nptxas info    : Used 30 registers, used 0 barriers\n";
        let p = performance_losses(log);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "ptxas: (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized"
            ),
            "{}",
            p[0]
        );
        assert!(p[0].ends_with("in the function 'k'"), "{}", p[0]);
        assert!(performance_losses("ptxas info    : Used 30 registers\n").is_empty());
    }
}
