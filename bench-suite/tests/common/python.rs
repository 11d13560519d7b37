//! The PyTorch runner's tests: the python3 they need and the CPU stand-in for torch.

use bench_suite::torch::RunnerConfig;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// bench-suite/python: the runner and its tests.
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Whether python3 runs; without it a test skips with a visible message, except under CI,
/// where it fails.
pub fn have_python() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "python3 is required under CI"
        );
        eprintln!("SKIPPED: python3 not found");
    }
    ok
}

/// The embedded runner on the CPU stand-in for torch (python/tests/fake_torch), with `extra`
/// environment variables.
pub fn stand_in(extra: &[(&str, &str)]) -> RunnerConfig {
    let mut env = vec![(
        "PYTHONPATH".to_string(),
        python_dir().join("tests/fake_torch").display().to_string(),
    )];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RunnerConfig {
        env,
        timeout: Duration::from_secs(120),
        ..RunnerConfig::default()
    }
}
