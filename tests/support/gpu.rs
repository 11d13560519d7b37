//! What every GPU test of the root crate needs: the kit's root and binary (KSMITH_ROOT /
//! KSMITH_BIN, set by scripts/gpu-check.sh; else this checkout and cargo's binary), the
//! "skipped: no GPU" rule (a failure under KSMITH_REQUIRE_GPU=1), and the KSMITH_GPU_TASKS
//! filter. Included with `#[path]` by each test binary, which uses a subset of it.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository (or unpacked kit) holding tasks/ and verifier/tests/broken/.
pub fn root() -> PathBuf {
    std::env::var_os("KSMITH_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The ksmith executable under test.
pub fn ksmith() -> PathBuf {
    std::env::var_os("KSMITH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ksmith")))
}

/// Whether the environment variable is set to 1.
pub fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// True with a CUDA driver; otherwise prints "skipped: no GPU ..." and returns false, or
/// panics when KSMITH_REQUIRE_GPU=1 (a GPU run must not pass by skipping).
pub fn gpu_or_skip() -> bool {
    match verifier::runtime::probe_driver() {
        Ok(_) => true,
        Err(e) if flag("KSMITH_REQUIRE_GPU") => panic!("KSMITH_REQUIRE_GPU=1 but {e}"),
        Err(e) => {
            eprintln!("skipped: no GPU (libcuda.so.1 not found): {e}");
            false
        }
    }
}

/// KSMITH_GPU_TASKS=id,id,...: only these tasks (to split a sweep across device calls).
pub fn only_tasks() -> Option<Vec<String>> {
    std::env::var("KSMITH_GPU_TASKS").ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}
