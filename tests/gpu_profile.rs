//! GPU test of `ksmith profile` and `ksmith audit` with the real Nsight Compute and
//! compute-sanitizer around the real `ksmith gpu run-once` target:
//!
//! - the profiled launches are exactly one call of the plan (the skip computed on the CPU lands
//!   after `[[prepare]]` and the warm-up calls), each with a duration, and the Judge's summary
//!   is there — for a one-launch plan, a multi-launch plan and one with `[[prepare]]`;
//! - a task's reference audits clean (memcheck, racecheck, initcheck); the broken corpus's
//!   shared-memory race is found by racecheck and its read of unwritten scratch by initcheck
//!   (exit 1).
//!
//! Without a CUDA driver: "skipped: no GPU" and pass, unless KSMITH_REQUIRE_GPU=1. Without
//! ncu / compute-sanitizer (or with counters not permitted): skipped likewise, unless
//! KSMITH_REQUIRE_NCU=1 / KSMITH_REQUIRE_SANITIZER=1. KSMITH_BIN / KSMITH_ROOT as in
//! gpu_references.rs; KSMITH_NCU / KSMITH_SANITIZER name the tools; output under
//! $KSMITH_GPU_OUT (default target/gpu-profile).

mod support;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;
use support::cli::show;
use support::gpu::{flag, gpu_or_skip, ksmith, root};

fn save(name: &str, text: &str) {
    let dir = std::env::var_os("KSMITH_GPU_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/gpu-profile"));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(name), text);
}

fn run(args: &[&str], log: &str) -> Output {
    let t0 = Instant::now();
    let o = Command::new(ksmith())
        .arg("--tasks-dir")
        .arg(root().join("tasks"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("ksmith runs");
    let text = format!(
        "$ ksmith {}\nexit {:?} after {:.1} s\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        o.status.code(),
        t0.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{}", text.lines().take(2).collect::<Vec<_>>().join(" | "));
    save(log, &text);
    o
}

/// The plan's kernels in one call at `shape`, by base name.
fn call_kernels(task: &str, shape: &str) -> Vec<String> {
    let suite = bench_suite::suite::Suite::discover(&root().join("tasks")).unwrap();
    let Some(bench_suite::suite::Entry::Ok(td)) = suite.get(task) else {
        panic!("{task} missing");
    };
    let sh = td.task.shape(shape).unwrap();
    td.plan
        .resolve(sh)
        .unwrap()
        .into_iter()
        .map(|l| verifier::plan::base_name(&l.kernel).to_string())
        .collect()
}

#[test]
fn profile_takes_exactly_the_last_call_of_the_plan() {
    if !gpu_or_skip() {
        return;
    }
    let ncu_env = std::env::var("KSMITH_NCU").ok();
    if bench_suite::profile::find_tool("ncu", ncu_env.as_deref().map(std::path::Path::new))
        .is_none()
    {
        assert!(
            !flag("KSMITH_REQUIRE_NCU"),
            "KSMITH_REQUIRE_NCU=1 but no ncu"
        );
        eprintln!("skipped: ncu not found");
        return;
    }
    for task in ["swiglu", "bias_gelu", "shiftadd_matshift"] {
        let o = run(
            &["profile", "--task", task, "--reference", "--json"],
            &format!("profile-{task}.txt"),
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{task}: {e}: {}", show(&o)));
        if let Some(e) = v["error"].as_str() {
            if e.contains("ERR_NVGPUCTRPERM") && !flag("KSMITH_REQUIRE_NCU") {
                eprintln!("skipped: {e}");
                return;
            }
            panic!("{task}: {}", show(&o));
        }
        assert_eq!(o.status.code(), Some(0), "{task}: {}", show(&o));
        let shape = v["shape"].as_str().unwrap();
        let want = call_kernels(task, shape);
        let got: Vec<&str> = v["kernels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kernel"].as_str().unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{task}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g.contains(w.as_str()),
                "{task}: launch {g} where the plan has {w}"
            );
        }
        for k in v["kernels"].as_array().unwrap() {
            let d = k["curated"]["duration_ns"].as_f64();
            assert!(d.is_some_and(|d| d > 0.0), "{task}: {k}");
        }
        assert!(
            !v["judge_summary"].as_str().unwrap_or("").is_empty(),
            "{task}: {v}"
        );
        eprintln!("{task}: {}", v["judge_summary"].as_str().unwrap_or(""));
    }
}

/// Whether compute-sanitizer is there (KSMITH_SANITIZER, PATH, the CUDA install); otherwise
/// "skipped", or a failure under KSMITH_REQUIRE_SANITIZER=1.
fn sanitizer_or_skip() -> bool {
    let env = std::env::var("KSMITH_SANITIZER").ok();
    let found = bench_suite::profile::find_tool(
        "compute-sanitizer",
        env.as_deref().map(std::path::Path::new),
    );
    if found.is_none() {
        assert!(
            !flag("KSMITH_REQUIRE_SANITIZER"),
            "KSMITH_REQUIRE_SANITIZER=1 but no compute-sanitizer"
        );
        eprintln!("skipped: compute-sanitizer not found");
    }
    found.is_some()
}

#[test]
fn audit_is_clean_for_a_reference_and_finds_the_corpus_bugs() {
    if !gpu_or_skip() || !sanitizer_or_skip() {
        return;
    }
    let o = run(
        &["audit", "--task", "swiglu", "--reference"],
        "audit-swiglu.txt",
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let corpus = root().join("verifier/tests/broken");
    for (entry, tool) in [("smem_race", "racecheck"), ("uninit_read", "initcheck")] {
        let dir = corpus.join(entry);
        let o = run(
            &[
                "audit",
                "--task",
                "swiglu",
                dir.to_str().unwrap(),
                "--tools",
                tool,
                "--json",
            ],
            &format!("audit-{entry}.txt"),
        );
        assert_eq!(o.status.code(), Some(1), "{entry}: {}", show(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let findings = v["tools"][0]["findings"].as_array().unwrap();
        assert!(!findings.is_empty(), "{entry}: {v}");
    }
}

/// `ksmith eval --profile --sanitize`: the strict check, then ncu on one call of a correct
/// kernel and the three sanitizers on one call, in one JSON object; a clean reference exits 0,
/// a racy corpus kernel exits 1 with the audit's findings beside its verdict.
#[test]
fn eval_profile_and_sanitize_extend_the_strict_check() {
    if !gpu_or_skip() || !sanitizer_or_skip() {
        return;
    }
    let quick = ["--shapes", "small", "--heldout", "0", "--json"];
    let mut args = vec!["eval", "--task", "swiglu", "--reference"];
    args.extend(quick);
    args.extend(["--profile", "--sanitize"]);
    let o = run(&args, "eval-deep-swiglu.txt");
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    assert_eq!(v["kind"], "correct", "{}", show(&o));
    assert_eq!(v["audit"]["exit"], 0, "{}", show(&o));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    match v["profile"]["error"].as_str() {
        None => assert!(
            !v["profile"]["kernels"].as_array().unwrap().is_empty(),
            "{v}"
        ),
        Some(e) => {
            assert!(!flag("KSMITH_REQUIRE_NCU"), "no profile: {e}");
            eprintln!("profile not taken (advisory): {e}");
        }
    }

    let racy = root().join("verifier/tests/broken/smem_race");
    let mut args = vec!["eval", "--task", "swiglu", racy.to_str().unwrap()];
    args.extend(quick);
    args.push("--sanitize");
    let o = run(&args, "eval-deep-smem_race.txt");
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tools = v["audit"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        tools
            .iter()
            .any(|t| t["findings"].as_array().is_some_and(|f| !f.is_empty())),
        "racecheck found nothing: {v}"
    );
}
