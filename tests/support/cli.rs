//! Running the `ksmith` binary from the root crate's CPU-side tests: one command with the
//! environment that could redirect it removed (so the flags under test decide), the output
//! rendered for assertion messages, and the "NVRTC is installed" rule (a skip on a developer's
//! machine, a failure under CI). Included by each test binary, which uses a subset of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Variables that would point ksmith at other tasks, tools, caches or databases than the
/// test's flags do.
const REDIRECTING: &[&str] = &[
    "KSMITH_TASKS_DIR",
    "KSMITH_NVRTC",
    "KSMITH_CUDA_INCLUDE",
    "KSMITH_ARCH",
    "KSMITH_CACHE_DIR",
    "KSMITH_DB",
    "KSMITH_CONFIG",
    "KSMITH_NCU",
    "KSMITH_SANITIZER",
    "RUST_LOG",
];

/// This checkout.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled task suite.
pub fn tasks_dir() -> PathBuf {
    repo().join("tasks")
}

/// `ksmith`, run from the checkout, with [`REDIRECTING`] removed.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ksmith"));
    for v in REDIRECTING {
        c.env_remove(v);
    }
    c.current_dir(repo());
    c
}

/// `ksmith ARGS`, run to completion.
pub fn ksmith(args: &[&str]) -> Output {
    command().args(args).output().expect("ksmith runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code; a test fails if ksmith died of a signal.
pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

/// Whether NVRTC loads here. Without it the test `test` is skipped with a visible message, or
/// fails under CI (`CI=true` or `CI=1`), where scripts/setup.sh has installed it.
pub fn have_nvrtc(test: &str) -> bool {
    verifier::nvrtc::nvrtc_for_tests(test).is_some()
}
