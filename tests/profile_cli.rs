//! `ksmith profile` and `ksmith audit` end to end with stand-in tools: shell scripts passed as
//! `--ncu` / `--sanitizer` that record their command line and print the checked-in samples of
//! bench-suite/tests/samples (or an error), so that argument building, parsing, messages and
//! exit codes are tested without a GPU. Most stand-ins ignore the program they are given
//! (`--no-gpu-check` skips the driver probe for them); one passes it through, so the real
//! `ksmith gpu run-once` command line is parsed and run (without a GPU it says so, exit 3).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::cli::{code, ksmith, repo, show};

fn sample(name: &str) -> PathBuf {
    repo().join("bench-suite/tests/samples").join(name)
}

/// An executable shell script `name` in `dir` whose body is `body`; it appends its arguments,
/// one per line and a `--` line after them, to `dir/args.log` first.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    let text = format!(
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> '{log}'; done\necho -- >> '{log}'\n{body}\n",
        log = dir.join("args.log").display()
    );
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The argument lists of each call of a stand-in.
fn calls(dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("args.log")).unwrap_or_default();
    let mut out = vec![Vec::new()];
    for l in text.lines() {
        if l == "--" {
            out.push(Vec::new());
        } else if let Some(last) = out.last_mut() {
            last.push(l.to_string());
        }
    }
    out.pop();
    out
}

fn after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

/// A stand-in ncu printing `file` and the target's success line, as the real pair would.
fn fake_ncu(dir: &Path, file: &Path) -> PathBuf {
    script(
        dir,
        "ncu",
        &format!(
            "cat '{}'\necho 'ksmith run-once: ok (4 launches)' >&2",
            file.display()
        ),
    )
}

fn profile(ncu: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "profile",
        "--task",
        "swiglu",
        "--reference",
        "--no-gpu-check",
        "--ncu",
        ncu.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ksmith(&args)
}

#[test]
fn profile_prints_the_curated_table_and_the_judge_summary() {
    let dir = tempfile::tempdir().unwrap();
    let ncu = fake_ncu(dir.path(), &sample("ncu_raw_memory_bound.csv"));
    let o = profile(&ncu, &[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "DRAM throughput",
        "achieved occupancy",
        "top warp stalls",
        "for the Judge:",
        "is memory-bound",
    ] {
        assert!(out.contains(want), "{want}: {}", show(&o));
    }
    let c = calls(dir.path());
    assert_eq!(c.len(), 1, "one ncu run: {c:?}");
    let a = &c[0];
    assert_eq!(after(a, "--clock-control"), Some("none"));
    assert_eq!(after(a, "--page"), Some("raw"));
    assert!(
        after(a, "-k").is_some_and(|k| k.starts_with("regex:swiglu")),
        "{a:?}"
    );
    assert!(after(a, "--metrics").is_some_and(|m| m.contains("launch__occupancy_limit_registers")));
    // The program: this ksmith's hidden target, at the task's first shape, 3 warm-up calls.
    let prog = a
        .iter()
        .position(|x| x.ends_with("ksmith"))
        .expect("program");
    let p = &a[prog..];
    assert!(p.iter().any(|x| x == "run-once"), "{p:?}");
    assert_eq!(after(p, "--task"), Some("swiglu"));
    assert_eq!(after(p, "--warmups"), Some("3"));
    assert!(!p.iter().any(|x| x == "--no-poison"), "{p:?}");
    assert!(after(p, "--kernel").is_some_and(|k| k.ends_with("reference.cu")));
    assert!(after(p, "--tasks-dir").is_some_and(|d| Path::new(d).is_absolute()));
    // swiglu's plan is one launch with no [[prepare]]: skip the 3 warm-up calls, take 1.
    assert_eq!(after(a, "-s"), Some("3"));
    assert_eq!(after(a, "-c"), Some("1"));
}

#[test]
fn profile_json_carries_metrics_target_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let ncu = fake_ncu(dir.path(), &sample("ncu_raw_latency_bound.csv"));
    let o = profile(&ncu, &["--json", "--shape", "realistic"]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(v["shape"], "realistic");
    assert_eq!(v["target"]["launch_skip"], 3);
    let k = &v["kernels"][0];
    assert!(k["curated"]["duration_ns"].as_f64().is_some(), "{v}");
    assert!(k["curated"]["stalls"]["reasons"].is_array(), "{v}");
    let s = v["judge_summary"].as_str().unwrap();
    assert!(s.contains("latency-bound"), "{s}");
    assert_eq!(
        s,
        k["summary"].as_str().unwrap(),
        "one launch: its own summary"
    );
}

#[test]
fn counters_not_permitted_is_exit_3_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let ncu = fake_ncu(dir.path(), &sample("ncu_err_nvgpuctrperm.txt"));
    let o = profile(&ncu, &[]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("ERR_NVGPUCTRPERM"), "{e}");
    assert!(e.contains("administrator"), "{e}");
    assert!(e.contains("never changes these settings"), "{e}");
}

#[test]
fn unknown_metrics_are_dropped_and_profiled_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let body = format!(
        "if [ -f '{d}/second' ]; then cat '{}'; else touch '{d}/second'; \
         echo '==ERROR== Failed to find metric sm__inst_executed_pipe_tensor_op_hmma.sum'; exit 1; fi",
        sample("ncu_raw_compute_bound.csv").display()
    );
    let ncu = script(dir.path(), "ncu", &body);
    let o = profile(&ncu, &[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("does not know sm__inst_executed_pipe_tensor_op_hmma.sum"),
        "{out}"
    );
    let c = calls(dir.path());
    assert_eq!(c.len(), 2);
    let m1 = after(&c[0], "--metrics").unwrap();
    let m2 = after(&c[1], "--metrics").unwrap();
    assert!(m1.contains("sm__inst_executed_pipe_tensor_op_hmma.sum"));
    assert!(
        !m2.contains("sm__inst_executed_pipe_tensor_op_hmma.sum"),
        "{m2}"
    );
}

#[test]
fn a_tool_that_prints_nothing_or_a_failing_kernel_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let silent = script(dir.path(), "ncu", "exit 1");
    let o = profile(&silent, &[]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no profile: ncu printed no CSV table"),
        "{}",
        show(&o)
    );
    let failing = script(
        dir.path(),
        "ncu2",
        "echo '==PROF== Disconnected from process 1'\n\
         echo 'ksmith run-once: failed: call 1 of 4: launch 0 (`swiglu`): too many resources' >&2\nexit 1",
    );
    let o = profile(&failing, &[]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the kernel failed while it was profiled"),
        "{}",
        show(&o)
    );
}

#[test]
fn missing_tools_are_exit_3_saying_where_they_were_looked_for() {
    let o = ksmith(&[
        "profile",
        "--task",
        "swiglu",
        "--reference",
        "--ncu",
        "/nonexistent/ncu",
    ]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ncu not found (looked at /nonexistent/ncu)"),
        "{}",
        show(&o)
    );
    let o = ksmith(&[
        "audit",
        "--task",
        "swiglu",
        "--reference",
        "--json",
        "--sanitizer",
        "/nonexistent/compute-sanitizer",
    ]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("compute-sanitizer not found"),
        "{v}"
    );
}

#[test]
fn without_a_gpu_profile_and_audit_are_exit_3() {
    if verifier::runtime::driver_present() {
        eprintln!("skipped: this machine has a CUDA driver");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ncu = fake_ncu(dir.path(), &sample("ncu_raw_memory_bound.csv"));
    let o = ksmith(&[
        "profile",
        "--task",
        "swiglu",
        "--reference",
        "--ncu",
        ncu.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("`ksmith profile` needs a GPU"),
        "{}",
        show(&o)
    );
    assert!(
        calls(dir.path()).is_empty(),
        "ncu must not run without a GPU"
    );
}

/// The stand-in runs the program it was given: the hidden target's command line must parse,
/// and without a GPU the target's own message comes back (exit 3).
#[test]
fn the_target_command_line_is_run_as_given() {
    let dir = tempfile::tempdir().unwrap();
    // ncu's arguments end with `--metrics LIST`; the program follows.
    let ncu = script(
        dir.path(),
        "ncu",
        "while [ \"$1\" != --metrics ]; do shift; done; shift 2; exec \"$@\"",
    );
    let o = profile(&ncu, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(&o), 3, "{}", show(&o));
    if verifier::runtime::driver_present() {
        // The kernel ran; this stand-in prints no table.
        assert!(err.contains("no profile"), "{}", show(&o));
    } else {
        assert!(
            err.contains("could not run the kernel: needs a GPU"),
            "{}",
            show(&o)
        );
    }
}

/// A stand-in compute-sanitizer printing the sample for each `--tool`.
fn fake_sanitizer(dir: &Path, memcheck: &str, racecheck: &str, initcheck: &str) -> PathBuf {
    script(
        dir,
        "compute-sanitizer",
        &format!(
            "case \"$2\" in memcheck) f='{}';; racecheck) f='{}';; initcheck) f='{}';; *) exit 9;; esac\n\
             cat \"$f\"\necho 'ksmith run-once: ok (1 launches)' >&2",
            sample(memcheck).display(),
            sample(racecheck).display(),
            sample(initcheck).display()
        ),
    )
}

fn audit(sanitizer: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "audit",
        "--task",
        "swiglu",
        "--reference",
        "--no-gpu-check",
        "--sanitizer",
        sanitizer.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ksmith(&args)
}

#[test]
fn a_clean_audit_is_exit_0_on_the_smallest_shape_without_warmups() {
    let dir = tempfile::tempdir().unwrap();
    let s = fake_sanitizer(
        dir.path(),
        "memcheck_clean.txt",
        "memcheck_clean.txt",
        "memcheck_clean.txt",
    );
    let o = audit(&s, &[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("clean"));
    let c = calls(dir.path());
    let tools: Vec<&str> = c.iter().filter_map(|a| after(a, "--tool")).collect();
    assert_eq!(tools, ["memcheck", "racecheck", "initcheck"]);
    for a in &c {
        assert_eq!(after(a, "--warmups"), Some("0"), "{a:?}");
        assert!(
            a.iter().any(|x| x == "--no-poison"),
            "initcheck needs it: {a:?}"
        );
    }
    assert_eq!(after(&c[1], "--racecheck-report"), Some("all"));
}

#[test]
fn findings_are_exit_1_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let s = fake_sanitizer(
        dir.path(),
        "memcheck_oob.txt",
        "racecheck.txt",
        "initcheck.txt",
    );
    let o = audit(&s, &[]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "Invalid __global__ write of size 4 bytes",
        "kernel.cu:14",
        "WAW hazard",
        "Uninitialized __global__ memory read",
        "FINDINGS",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let o = audit(&s, &["--tools", "initcheck", "--json"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tools = v["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0]["tool"], "initcheck");
    assert_eq!(tools[0]["findings"].as_array().unwrap().len(), 2);
    assert_eq!(tools[0]["findings"][0]["kind"], "uninitialized_read");
    assert_eq!(v["exit"], 1);
}

#[test]
fn a_sanitizer_that_prints_nothing_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let s = script(
        dir.path(),
        "compute-sanitizer",
        "echo 'cannot start' >&2; exit 1",
    );
    let o = audit(&s, &["--tools", "memcheck"]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("printed nothing it recognises (last line: cannot start)"),
        "{}",
        show(&o)
    );
}
