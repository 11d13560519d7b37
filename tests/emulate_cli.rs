//! `ksmith tasks emulate` end to end: a reference kernel run by the PTX emulator through the
//! strict protocol against spec.py, and two broken copies of it that must not pass.

mod support;

use std::path::Path;
use support::cli::{code, have_nvrtc, ksmith, repo, show, stdout, tasks_dir};

/// torch importable as the harness will import it (tools/torch, where setup.sh installs it).
fn have_torch() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import torch"])
        .env("PYTHONPATH", repo().join("tools/torch"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: torch does not import (scripts/setup.sh --with-torch installs it)");
    }
    ok
}

/// A one-task suite holding swiglu with `edit` applied to its reference.cu.
fn swiglu_with(edit: &dyn Fn(&str) -> String) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let from = tasks_dir().join("activation/swiglu");
    let to = root.path().join("activation/swiglu");
    std::fs::create_dir_all(&to).expect("mkdir");
    for f in ["task.toml", "spec.py", "reference.toml", "reference.cu"] {
        let text = std::fs::read_to_string(from.join(f)).expect("read the task");
        let text = if f == "reference.cu" {
            edit(&text)
        } else {
            text
        };
        std::fs::write(to.join(f), text).expect("write the copy");
    }
    root
}

fn emulate(suite: &Path) -> (i32, serde_json::Value, String) {
    let py = repo().join("tools/torch");
    let mut c = support::cli::command();
    c.env("PYTHONPATH", py).args([
        "--tasks-dir",
        suite.to_str().expect("utf-8"),
        "tasks",
        "emulate",
        "--json",
        "-j1",
    ]);
    let o = c.output().expect("ksmith runs");
    let v = serde_json::from_str(&stdout(&o)).unwrap_or(serde_json::Value::Null);
    (code(&o), v, show(&o))
}

#[test]
fn the_reference_passes_and_broken_copies_do_not() {
    if !have_nvrtc("emulate_cli") || !have_torch() {
        return;
    }
    let fine = swiglu_with(&|s| s.to_string());
    let (c, v, out) = emulate(fine.path());
    assert_eq!(c, 0, "{out}");
    assert_eq!(v["results"][0]["status"], "correct", "{out}");
    assert!(
        v["results"][0]["shape"]
            .as_str()
            .unwrap_or("")
            .starts_with("heldout-0 ("),
        "{out}"
    );
    assert!(
        v["results"][0]["instructions"].as_u64().unwrap_or(0) > 0,
        "{out}"
    );

    // Every odd element's gate multiplied by the wrong input.
    let swapped = swiglu_with(&|s| s.replace("silu_mul(fa.y, fb.y)", "silu_mul(fa.y, fb.x)"));
    let (c, v, out) = emulate(swapped.path());
    assert_eq!(c, 1, "{out}");
    assert_eq!(v["results"][0]["correct"], false, "{out}");
    assert_ne!(v["results"][0]["status"], "error", "{out}");

    // One element past the end: an illegal address here, named with the buffer it overran.
    let over = swiglu_with(&|s| s.replace("i < total; i += stride", "i <= total; i += stride"));
    let (c, v, out) = emulate(over.path());
    assert_eq!(c, 1, "{out}");
    let detail = v["results"][0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("CUDA_ERROR_ILLEGAL_ADDRESS") && detail.contains("past the end"),
        "{out}"
    );
}

#[test]
fn an_unknown_shape_is_an_error_not_a_pass() {
    if !have_nvrtc("emulate_cli") {
        return;
    }
    let o = ksmith(&["tasks", "emulate", "swiglu", "--shape", "nope", "--json"]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    assert!(
        stdout(&o).contains("no public shape `nope`"),
        "{}",
        show(&o)
    );
}
