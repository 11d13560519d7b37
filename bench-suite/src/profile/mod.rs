//! Profiling and auditing tools wrapped around the worker (DESIGN §4.6, §6): Nsight Compute
//! (`ncu`) for the Judge's metrics and compute-sanitizer for the deep audit. Both are optional
//! capabilities: a missing tool, counters the user may not read, a metric this ncu does not know —
//! each is a typed, explained outcome, and a metric that did not come back is `None` (n/a), never
//! an error.
//!
//! - [`ncu`]: the command line and a parser of `--csv --page raw` output into a curated metric set;
//! - [`judge`]: the one- or two-sentence bottleneck summary the Judge reads;
//! - [`sanitizer`]: the command line and a parser of memcheck / racecheck / initcheck / synccheck
//!   reports into findings.

pub mod judge;
pub mod ncu;
pub mod sanitizer;

use std::path::{Path, PathBuf};

/// Where a tool is: an explicit path, else the first `name` on `PATH`, else the CUDA install
/// locations. `None` when it is nowhere (the caller says "profiling unavailable: ...").
pub fn find_tool(name: &str, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cuda = [
        "/usr/local/cuda/bin",
        "/opt/nvidia/nsight-compute",
        "/usr/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name));
    on_path.into_iter().chain(cuda).find(|p| p.is_file())
}
