//! `ksmith bench` and `ksmith gpu info|calibrate` as processes: usage errors exit 2 before any
//! GPU is looked for; without a GPU the commands exit 3 and say what they looked for (text and
//! JSON). On a machine with a CUDA driver the no-GPU checks are skipped (they would time real
//! kernels); tests/gpu_bench.rs covers that side.

mod support;

use std::process::{Command, Output};
use support::cli::{command, repo, show, tasks_dir};

/// `ksmith --tasks-dir <the bundled suite> ARGS`.
fn ksmith(args: &[&str]) -> Output {
    command()
        .arg("--tasks-dir")
        .arg(tasks_dir())
        .args(args)
        .output()
        .expect("ksmith runs")
}

fn has_gpu() -> bool {
    verifier::runtime::probe_driver().is_ok()
}

#[test]
fn usage_errors_exit_2_before_looking_for_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let cand = dir.path().join("mine");
    std::fs::create_dir(&cand).unwrap();
    let c = cand.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["bench", "--tasks", "no_such_task"],
            "no task `no_such_task`",
        ),
        (
            &["bench", "--suite", "no-such-category"],
            "selects no valid task",
        ),
        (
            &["bench", "--tasks", "swiglu", "--shapes", "gigantic"],
            "`swiglu` has no public shape `gigantic`",
        ),
        (&["bench", "--candidate", c], "exactly one task"),
        (
            &["bench", "--tasks", "swiglu", "--candidate", c],
            "kernel.cu",
        ),
        (&["bench", "--chunk", "5/3"], "expected I/N"),
        (&["bench", "--baseline", "numpy"], "numpy"),
        (&["bench", "--compile-shapes", "some"], "some"),
    ];
    for (args, needle) in cases {
        let o = ksmith(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}\n{}", show(&o));
        assert!(
            show(&o).contains(needle),
            "{args:?}: no {needle:?}\n{}",
            show(&o)
        );
        assert!(
            !show(&o).contains("libcuda"),
            "{args:?}: a usage error must not depend on the GPU\n{}",
            show(&o)
        );
    }
    // --json: the usage error is one JSON object on stdout.
    let o = ksmith(&["bench", "--json", "--tasks", "no_such_task"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["exit"], 2);
    assert!(v["error"].as_str().unwrap().contains("no_such_task"));
}

#[test]
fn without_a_gpu_bench_and_gpu_commands_exit_3_naming_what_they_looked_for() {
    if has_gpu() {
        eprintln!("skipped: this machine has a CUDA driver (see tests/gpu_bench.rs)");
        return;
    }
    for args in [
        &[
            "bench",
            "--tasks",
            "swiglu",
            "--baseline",
            "none",
            "--no-db",
        ][..],
        &["gpu", "info"][..],
        &["gpu", "calibrate", "--no-db"][..],
    ] {
        let o = ksmith(args);
        assert_eq!(o.status.code(), Some(3), "{args:?}\n{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("needs a GPU") && err.contains("libcuda.so.1"),
            "{args:?}: the message must say what was looked for\n{}",
            show(&o)
        );
        assert!(!err.contains("panicked"), "{}", show(&o));
    }
    for args in [
        &["bench", "--json", "--tasks", "swiglu", "--no-db"][..],
        &["gpu", "info", "--json"][..],
    ] {
        let o = ksmith(args);
        assert_eq!(o.status.code(), Some(3), "{args:?}\n{}", show(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON ({e})\n{}", show(&o)));
        assert_eq!(v["exit"], 3);
        assert!(v["error"].as_str().unwrap().contains("libcuda.so.1"), "{v}");
    }
}

/// The load_inline comparison's wrapper launches the reference kernel with the geometry of its
/// reference.toml (the script refuses to run when the plan changed), and without its
/// prerequisites it exits 3 naming each.
#[test]
fn load_inline_comparison_script() {
    let script = repo().join("scripts/compare-load-inline.py");
    let run = |args: &[&str]| {
        Command::new("python3")
            .arg(&script)
            .args(["--tasks-dir", repo().join("tasks").to_str().unwrap()])
            .args(args)
            .output()
    };
    let Ok(o) = run(&["--print-source"]) else {
        eprintln!("skipped: python3 not found");
        return;
    };
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let src = String::from_utf8_lossy(&o.stdout);
    let reference =
        std::fs::read_to_string(repo().join("tasks/activation/swiglu/reference.cu")).unwrap();
    assert!(
        src.contains(&reference),
        "the device code is reference.cu verbatim"
    );
    assert!(
        src.contains("// shape small: {'M': 4096, 'N': 4096}"),
        "{src}"
    );
    assert!(src.contains("swiglu_bf16<<<(unsigned)blocks, 256"), "{src}");
    let o = run(&["--shape", "nope"]).unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(show(&o).contains("no shape nope"), "{}", show(&o));
    let has_torch = Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        let out = tempfile::tempdir().unwrap();
        let o = run(&[
            "--ksmith",
            "/nonexistent/ksmith",
            "--out",
            out.path().to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(o.status.code(), Some(3), "{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("missing: torch does not import"), "{err}");
        assert!(
            err.contains("missing: ksmith binary /nonexistent/ksmith"),
            "{err}"
        );
    }
}
