//! The `ksmith` binary end to end: `tasks list|show|check` on the real suite and on broken
//! temporary suites, and the exit codes (0 ok, 1 a task failed, 3 the harness could not run).

mod support;

use std::path::{Path, PathBuf};
use support::cli::{code, have_nvrtc, ksmith, repo, show, stderr, stdout, tasks_dir};

/// The cheapest real task to compile.
const TASK: &str = "swiglu";

fn fixture(name: &str) -> PathBuf {
    repo().join("verifier/tests/fixtures/malformed").join(name)
}

/// A suite in a temporary directory holding copies of the named fixtures (each fixture's id
/// is its directory name and its category `malformed`).
fn suite_of(fixtures: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    for f in fixtures {
        let to = root.path().join("malformed").join(f);
        std::fs::create_dir_all(&to).expect("mkdir");
        for e in std::fs::read_dir(fixture(f)).expect("fixture") {
            let p = e.expect("entry").path();
            if let Some(n) = p.file_name() {
                std::fs::copy(&p, to.join(n)).expect("copy");
            }
        }
    }
    root
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn tasks_list_prints_a_table_and_json() {
    let dir = tasks_dir();
    let o = ksmith(&["--tasks-dir", path_str(&dir), "tasks", "list"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(stdout(&o).contains(TASK), "{}", show(&o));
    assert!(stdout(&o).contains("tasks in"), "{}", show(&o));

    let o = ksmith(&["--tasks-dir", path_str(&dir), "tasks", "list", "--json"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("list --json is JSON");
    let rows = v.as_array().expect("an array");
    assert!(rows.len() >= 5, "{} tasks", rows.len());
    for r in rows {
        assert_eq!(r["valid"], true, "{r}");
        assert!(r["id"].is_string() && r["category"].is_string(), "{r}");
        assert_eq!(r["content_hash"].as_str().map(str::len), Some(64), "{r}");
    }
    assert!(rows.iter().any(|r| r["id"] == TASK));
}

#[test]
fn tasks_show_prints_one_task_as_json_and_text() {
    let dir = tasks_dir();
    let o = ksmith(&[
        "--tasks-dir",
        path_str(&dir),
        "tasks",
        "show",
        TASK,
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("show --json is JSON");
    assert_eq!(v["task"]["id"], TASK);
    assert!(v["task"]["shapes"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));
    assert!(v["task"]["inputs"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));
    assert!(v["plan"]["launch"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));
    assert!(v["kernels"].as_array().is_some_and(|s| !s.is_empty()));
    // swiglu at realistic (M=16384, N=28672): 6*M*N bytes at 3.35 TB/s, memory-bound.
    let realistic = v["shapes"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["realistic"] == true))
        .unwrap_or_else(|| panic!("no realistic shape in {}", v["shapes"]));
    assert_eq!(realistic["shape"], "realistic");
    assert_eq!(realistic["bound"], "memory");
    let floor = realistic["h100_datasheet_floor_ms"].as_f64().unwrap();
    assert!(
        (floor - 6.0 * 16384.0 * 28672.0 / 3.35e12 * 1e3).abs() < 1e-9,
        "{floor}"
    );

    let o = ksmith(&["--tasks-dir", path_str(&dir), "tasks", "show", TASK]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(stdout(&o).contains("parameters:"), "{}", show(&o));
    assert!(
        stdout(&o).contains("floor (H100 datasheet)")
            && stdout(&o).contains("841.36 us memory")
            && stdout(&o).contains("* realistic: the realistic shape"),
        "{}",
        show(&o)
    );

    let o = ksmith(&[
        "--tasks-dir",
        path_str(&dir),
        "tasks",
        "show",
        "no_such_task",
    ]);
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(
        stderr(&o).contains("no task `no_such_task`"),
        "{}",
        show(&o)
    );
}

#[test]
fn tasks_check_compiles_a_real_task_and_prints_registers() {
    if !have_nvrtc("tasks_check_compiles_a_real_task_and_prints_registers") {
        return;
    }
    let dir = tasks_dir();
    let cache = tempfile::tempdir().expect("tempdir");
    let args = |json: bool| {
        let mut a = vec![
            "--tasks-dir",
            path_str(&dir),
            "--arch",
            "sm_90",
            "--cache-dir",
            path_str(cache.path()),
            "tasks",
            "check",
            TASK,
            "-j",
            "1",
        ];
        if json {
            a.push("--json");
        }
        a
    };
    let o = ksmith(&args(false));
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    for want in [
        "regs",
        "spills",
        TASK,
        "1 tasks checked for sm_90",
        "1 ok, 0 failed",
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{}", show(&o));
    }

    // Second run: from the cache, with the same numbers, as JSON.
    let o = ksmith(&args(true));
    assert_eq!(code(&o), 0, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("check --json is JSON");
    assert_eq!(v["arch"], "sm_90");
    assert_eq!(v["failed"], 0);
    let row = &v["tasks"][0];
    assert_eq!(row["id"], TASK);
    assert_eq!(row["status"], "ok");
    assert_eq!(row["cache_hit"], true, "{row}");
    let kernels = row["kernels"].as_array().expect("kernels");
    assert!(!kernels.is_empty());
    for k in kernels {
        let regs = k["resources"]["registers"].as_u64().unwrap_or(0);
        assert!(regs > 0, "no registers reported: {k}");
    }
    let log = row["log"].as_str().unwrap_or("");
    assert!(log.contains("ptxas info"), "no ptxas log in: {row}");
    assert!(
        !out.contains("compile log:"),
        "the log is only printed with --log"
    );

    // --log prints ptxas's report, also from the cache.
    let mut a = args(false);
    a.push("--log");
    let o = ksmith(&a);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    for want in [
        &format!("{TASK} compile log:")[..],
        "ptxas info",
        "registers",
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{}", show(&o));
    }
}

#[test]
fn tasks_launches_models_occupancy_and_waves_of_each_reference_launch() {
    if !have_nvrtc("tasks_launches") {
        return;
    }
    let dir = tasks_dir();
    let o = ksmith(&[
        "--tasks-dir",
        path_str(&dir),
        "tasks",
        "launches",
        TASK,
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["sm_count"], 132);
    assert_eq!(v["arch"], "sm_90a");
    let rows = v["launches"].as_array().expect("launches");
    // One grid-stride launch per public shape: 4096 blocks of 256 threads, 8 resident per SM
    // (2048 threads), so 4096 / (8 x 132) waves.
    assert_eq!(rows.len(), 3, "{v}");
    for r in rows {
        assert_eq!(r["kernel"], "swiglu_bf16");
        assert_eq!(r["grid"], serde_json::json!([4096, 1, 1]));
        let o = &r["occupancy"];
        assert_eq!(o["blocks_per_sm"], 8);
        assert_eq!(o["limiter"], "warps");
        assert_eq!(o["fraction"], 1.0);
        let waves = o["waves"].as_f64().unwrap();
        assert!((waves - 4096.0 / 1056.0).abs() < 1e-9, "{waves}");
        assert!(r["registers"].as_u64().is_some_and(|n| n > 0), "{r}");
    }
    let o = ksmith(&[
        "--tasks-dir",
        path_str(&dir),
        "tasks",
        "launches",
        TASK,
        "--hints-only",
        "--device",
        "a100",
    ]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(
        stdout(&o).contains("0 launches of 1 tasks on NVIDIA A100-SXM4-80GB (108 SMs, sm_80"),
        "{}",
        show(&o)
    );
    let o = ksmith(&["tasks", "launches", TASK, "--device", "b200"]);
    assert_eq!(code(&o), 2, "{}", show(&o));
    assert!(stderr(&o).contains("h100, h200, a100, gpu"), "{}", show(&o));
    // This machine's GPU: without one, exit 3 naming what was looked for.
    if !verifier::runtime::driver_present() {
        let o = ksmith(&["tasks", "launches", TASK, "--device", "gpu"]);
        assert_eq!(code(&o), 3, "{}", show(&o));
        assert!(stderr(&o).contains("needs a GPU"), "{}", show(&o));
    }
}

#[test]
fn tasks_launches_fails_a_launch_the_device_would_refuse_and_draws_heldout_shapes() {
    if !have_nvrtc("tasks_launches_refusals") {
        return;
    }
    // swiglu asking for N*8 bytes of dynamic shared memory: 229376 at the realistic shape,
    // within an H100's 232448 per block but over an A100's 166912.
    let suite = tempfile::tempdir().expect("tempdir");
    let to = suite.path().join("activation").join(TASK);
    std::fs::create_dir_all(&to).expect("mkdir");
    let from = tasks_dir().join("activation").join(TASK);
    for f in ["task.toml", "spec.py", "reference.cu"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
    let plan = |extra: &str| {
        std::fs::write(
            to.join("reference.toml"),
            format!("[[launch]]\nkernel = \"swiglu_bf16\"\n{extra}\ngrid = [\"min(ceil_div(M*N, 2048), 4096)\"]\nblock = [256]\nargs = [\"a\", \"b\", \"y\", \"i64:M*N\"]\n"),
        )
        .expect("write plan");
    };
    plan("shared_bytes = \"N*8\"");
    let launches = |more: &[&str]| {
        let mut args = vec![
            "--tasks-dir",
            path_str(suite.path()),
            "tasks",
            "launches",
            TASK,
        ];
        args.extend_from_slice(more);
        ksmith(&args)
    };
    let o = launches(&["--hints-only"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let o = launches(&["--hints-only", "--device", "a100"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let want = "swiglu: shape realistic (M=16384 N=28672): `swiglu_bf16` would be refused: needs 229376 bytes of shared memory per block (0 static + 229376 dynamic); the device allows at most 166912 per block";
    assert!(stderr(&o).contains(want), "{}", show(&o));
    assert_eq!(
        stderr(&o).matches("would be refused").count(),
        1,
        "{}",
        show(&o)
    );
    assert!(
        stdout(&o).contains("REFUSED: needs 229376 bytes"),
        "{}",
        show(&o)
    );
    assert!(stdout(&o).contains("1 problems (above)"), "{}", show(&o));

    // A plan whose `when` covers the public shapes (M <= 16384) but not all of M's range
    // (up to 65536): only held-out shapes find the hole, where nothing writes `y`.
    plan("when = \"M < 40000\"");
    let o = launches(&[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let o = launches(&["--heldout", "20", "--heldout-max-mib", "100000"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(
        stderr(&o).contains("no [[launch]] applies (every `when` is false)")
            && stderr(&o).contains(": shape heldout-"),
        "{}",
        show(&o)
    );
    // Corner shapes find it without luck: M at the top of its range (65529..=65536), from every
    // base; the first five are listed, the rest counted.
    let o = launches(&["--corners"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let err = stderr(&o);
    assert!(
        err.contains("swiglu: shape corner-")
            && err.contains("(M=65529 N=1): no [[launch]] applies (every `when` is false)"),
        "{}",
        show(&o)
    );
    assert_eq!(
        err.matches("no [[launch]] applies").count(),
        5,
        "{}",
        show(&o)
    );
    assert!(err.contains("swiglu: ... and "), "{}", show(&o));
    assert!(stdout(&o).contains("corner shapes checked"), "{}", show(&o));

    // The hole filled by a launch whose last argument is an int where the kernel takes a long
    // long: tasks check (public shapes) cannot see it; the corners do.
    std::fs::write(
        to.join("reference.toml"),
        "[[launch]]\nkernel = \"swiglu_bf16\"\nwhen = \"M < 40000\"\ngrid = [\"min(ceil_div(M*N, 2048), 4096)\"]\nblock = [256]\nargs = [\"a\", \"b\", \"y\", \"i64:M*N\"]\n\n\
         [[launch]]\nkernel = \"swiglu_bf16\"\nwhen = \"M >= 40000\"\ngrid = [\"min(ceil_div(M*N, 2048), 4096)\"]\nblock = [256]\nargs = [\"a\", \"b\", \"y\", \"M*N\"]\n",
    )
    .expect("write plan");
    let o = launches(&[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let o = launches(&["--corners"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(
        stderr(&o).contains("`swiglu_bf16` would be refused: argument 3 is an i32 (4 bytes) but the kernel's parameter 3 is 8 bytes"),
        "{}",
        show(&o)
    );

    // The shipped plan at held-out shapes: drawn reproducibly, labelled with their parameters,
    // selectable by name.
    let run = |seed: &str| {
        ksmith(&[
            "--tasks-dir",
            path_str(&tasks_dir()),
            "tasks",
            "launches",
            TASK,
            "--heldout",
            "3",
            "--heldout-seed",
            seed,
            "--shape",
            "heldout-1",
            "--json",
        ])
    };
    let o = run("7");
    assert_eq!(code(&o), 0, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let rows = v["launches"].as_array().expect("launches");
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["shape"], "heldout-1");
    let m = rows[0]["params"]["M"].as_i64().expect("M");
    let n = rows[0]["params"]["N"].as_i64().expect("N");
    assert!((1..=65536).contains(&m) && (1..=65536).contains(&n), "{v}");
    let grid = (m * n + 2047) / 2048;
    assert_eq!(rows[0]["grid"][0], grid.min(4096), "{v}");
    assert_eq!(rows[0]["refused"], serde_json::json!([]));
    assert_eq!(stdout(&run("7")).as_str(), stdout(&o).as_str());
}

#[test]
fn tasks_check_on_a_broken_suite_exits_1_with_the_diagnostics() {
    if !have_nvrtc("tasks_check_on_a_broken_suite_exits_1_with_the_diagnostics") {
        return;
    }
    let suite = suite_of(&["plan_unknown_kernel", "shape_expr_unknown_param"]);
    let cache = tempfile::tempdir().expect("tempdir");
    let o = ksmith(&[
        "--tasks-dir",
        path_str(suite.path()),
        "--cache-dir",
        path_str(cache.path()),
        "tasks",
        "check",
    ]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let out = stdout(&o);
    for want in [
        "plan_unknown_kernel/reference.toml:2:10: `launch[0].kernel`: kernel `copy_row` is not defined",
        "did you mean `copy_rows`?",
        "shape_expr_unknown_param/task.toml:17:15: `inputs[0].shape[1]`: unknown name `Q`",
        "0 ok, 2 failed",
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{}", show(&o));
    }

    // `list` still lists them, marked invalid, and succeeds.
    let o = ksmith(&["--tasks-dir", path_str(suite.path()), "tasks", "list"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(stdout(&o).contains("INVALID"), "{}", show(&o));
    assert!(stdout(&o).contains("2 invalid"), "{}", show(&o));
}

#[test]
fn a_missing_nvrtc_exits_3_naming_the_path() {
    let dir = tasks_dir();
    let o = ksmith(&[
        "--tasks-dir",
        path_str(&dir),
        "--nvrtc",
        "/nonexistent/libnvrtc.so",
        "--no-cache",
        "tasks",
        "check",
        TASK,
    ]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    assert!(
        stderr(&o).contains("/nonexistent/libnvrtc.so"),
        "{}",
        show(&o)
    );
    assert!(stderr(&o).contains("scripts/setup.sh"), "{}", show(&o));
}

#[test]
fn a_missing_tasks_dir_exits_3_naming_the_path() {
    for cmd in [&["tasks", "list"][..], &["tasks", "check"][..]] {
        let mut args = vec!["--tasks-dir", "/nonexistent/ksmith-suite"];
        args.extend_from_slice(cmd);
        let o = ksmith(&args);
        assert_eq!(code(&o), 3, "{}", show(&o));
        assert!(
            stderr(&o).contains("/nonexistent/ksmith-suite"),
            "{}",
            show(&o)
        );
    }
}

#[test]
fn bad_usage_exits_2() {
    let o = ksmith(&["tasks", "frobnicate"]);
    assert_eq!(code(&o), 2, "{}", show(&o));
    let o = ksmith(&["--arch", "gfx90a", "tasks", "check", TASK]);
    assert_ne!(code(&o), 0, "{}", show(&o));
}

/// A deadline is `now + timeout`: a typo such as u64::MAX seconds would overflow it, so every
/// `--timeout` is 1 s to 7 days, checked as a usage error before anything runs.
#[test]
fn an_absurd_timeout_is_a_usage_error() {
    for argv in [
        &[
            "eval",
            "--task",
            "swiglu",
            "--reference",
            "--timeout",
            "18446744073709551615",
        ][..],
        &["tasks", "spec", "swiglu", "--timeout", "0"][..],
        &["bench", "--tasks", "swiglu", "--timeout", "604801"][..],
    ] {
        let o = ksmith(argv);
        assert_eq!(code(&o), 2, "{argv:?}: {}", show(&o));
        assert!(stderr(&o).contains("1..=604800"), "{}", show(&o));
    }
}
