//! GPU tests of the timing protocol against itself and against Nsight Compute, on reference
//! kernels at their realistic shape (one launch per call, >= 50 us):
//!
//! - `repeat_*`: `ksmith bench` run twice, as two separate processes, gives medians within 2 %
//!   of each other (kernels of 50 us or more; shorter ones are reported, not judged);
//! - `repeat_a_kernel_timed_against_itself_is_even`: the reference as a candidate, timed side
//!   by side with itself, is within 2 % of 1x;
//! - `ncu_*`: ksmith's median is within 5 % of the median `gpu__time_duration.sum` Nsight
//!   Compute measures for the same kernel on the same inputs (`ncu --clock-control none`
//!   wrapped around `ksmith bench`, launches picked with `-k regex:NAME -s 10 -c 20`).
//!
//! KSMITH_TIMING_TASKS=id,id overrides the tasks (default [`TASKS`]); KSMITH_OUT_DIR receives
//! the JSON of every measurement and the comparison tables; KSMITH_NCU names the ncu binary
//! (default: PATH, /usr/local/cuda/bin). Without a CUDA driver the GPU tests print "skipped: no
//! GPU" and pass, unless KSMITH_REQUIRE_GPU=1; without ncu the ncu test is skipped likewise
//! unless KSMITH_REQUIRE_NCU=1. KSMITH_BIN / KSMITH_ROOT as in gpu_broken.rs. The comparison
//! logic has CPU tests at the end of this file.

mod support;
use bench_suite::profile::{self, ncu::NcuTarget};
use bench_suite::suite::{Entry, Suite};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::gpu::{flag, gpu_or_skip, ksmith, root};

/// Single-launch reference kernels whose realistic-shape call takes well over 50 us on an H100:
/// memory-bound elementwise, a row reduction, a long-row softmax, a tensor-core GEMM.
const TASKS: &[&str] = &["swiglu", "layernorm_fwd", "softmax_row", "gemm_bf16"];
/// Medians of two processes must agree within this (relative to the first).
const REPEAT_TOLERANCE: f64 = 0.02;
/// ksmith's median vs ncu's median kernel duration.
const NCU_TOLERANCE: f64 = 0.05;
/// Kernels shorter than this are reported but not judged.
const MIN_JUDGED_MS: f64 = 0.05;
/// ncu: matching launches skipped (warm-up) and profiled.
const NCU_SKIP: u64 = 10;
const NCU_COUNT: u64 = 20;

fn tasks() -> Vec<String> {
    match std::env::var("KSMITH_TIMING_TASKS") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => TASKS.iter().map(|s| s.to_string()).collect(),
    }
}

fn out_dir() -> Option<PathBuf> {
    let d = PathBuf::from(std::env::var_os("KSMITH_OUT_DIR")?);
    std::fs::create_dir_all(&d).ok()?;
    Some(d)
}

fn save(name: &str, text: &str) {
    if let Some(d) = out_dir() {
        let _ = std::fs::write(d.join(name), text);
    }
}

/// `ksmith bench` on the realistic shapes of `tasks`, reference kernels only, no PyTorch, not
/// stored, the JSON reply on stdout: the arguments both tests time with. (Under ncu the reply
/// goes to a file instead: ncu prints its CSV on the same stdout.)
fn bench_args(tasks: &[String]) -> Vec<String> {
    vec![
        "--tasks-dir".into(),
        root().join("tasks").display().to_string(),
        "bench".into(),
        "--tasks".into(),
        tasks.join(","),
        "--shapes".into(),
        "realistic".into(),
        "--baseline".into(),
        "none".into(),
        "--no-db".into(),
        "--json".into(),
    ]
}

/// Runs `ksmith bench` and returns its JSON reply.
fn run_bench(tasks: &[String], label: &str) -> Value {
    let t0 = Instant::now();
    let out = Command::new(ksmith())
        .args(bench_args(tasks))
        .output()
        .expect("ksmith runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    save(&format!("{label}.json"), &stdout);
    save(
        &format!("{label}.stderr.log"),
        &String::from_utf8_lossy(&out.stderr),
    );
    eprintln!(
        "{label}: ksmith bench exited {:?} after {:.1} s",
        out.status.code(),
        t0.elapsed().as_secs_f64()
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{label}: ksmith bench printed no JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "{label}: ksmith bench exited {:?}: {}",
        out.status.code(),
        v.get("error").unwrap_or(&v)
    );
    v
}

/// One reference time from `ksmith bench --json`'s rows.
#[derive(Debug, Clone, PartialEq)]
struct Median {
    task: String,
    shape: String,
    median_ms: f64,
    throttled: Option<bool>,
}

/// The reference kernels' timed rows of a `ksmith bench --json` reply.
fn reference_medians(v: &Value) -> Result<Vec<Median>, String> {
    let rows = v
        .get("rows")
        .and_then(Value::as_array)
        .ok_or("no `rows` array in the bench reply")?;
    let mut out = Vec::new();
    for r in rows {
        if r.get("kernel").and_then(Value::as_str) != Some("reference") {
            continue;
        }
        let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(task), Some(shape)) = (text("task"), text("shape")) else {
            return Err(format!("row without task or shape: {r}"));
        };
        let Some(median_ms) = r.get("median_ms").and_then(Value::as_f64) else {
            return Err(format!(
                "{task} at {shape} has no time: {}",
                text("problem").unwrap_or_default()
            ));
        };
        out.push(Median {
            task,
            shape,
            median_ms,
            throttled: r.get("throttled").and_then(Value::as_bool),
        });
    }
    Ok(out)
}

/// One comparison of a time with another measurement of the same kernel.
#[derive(Debug, Clone, PartialEq)]
struct Agreement {
    what: String,
    a_ms: f64,
    b_ms: f64,
    /// |a / b - 1|
    rel_diff: f64,
    /// `None`: too short to judge.
    ok: Option<bool>,
}

fn agree(what: String, a_ms: f64, b_ms: f64, tolerance: f64) -> Agreement {
    let rel_diff = if b_ms > 0.0 {
        (a_ms / b_ms - 1.0).abs()
    } else {
        f64::INFINITY
    };
    // A zero or non-finite time is a broken measurement: always judged (and failed).
    let judged = a_ms.min(b_ms) >= MIN_JUDGED_MS || !rel_diff.is_finite();
    Agreement {
        what,
        a_ms,
        b_ms,
        rel_diff,
        ok: judged.then_some(rel_diff <= tolerance),
    }
}

/// Pairs the medians of two runs by (task, shape); a row missing from either is an error.
fn compare_runs(a: &[Median], b: &[Median], tolerance: f64) -> Result<Vec<Agreement>, String> {
    let mut out = Vec::new();
    for x in a {
        let y = b
            .iter()
            .find(|y| y.task == x.task && y.shape == x.shape)
            .ok_or_else(|| format!("{} at {} is missing from the second run", x.task, x.shape))?;
        out.push(agree(
            format!("{} @ {}", x.task, x.shape),
            x.median_ms,
            y.median_ms,
            tolerance,
        ));
    }
    if let Some(y) = b
        .iter()
        .find(|y| !a.iter().any(|x| x.task == y.task && x.shape == y.shape))
    {
        return Err(format!(
            "{} at {} is missing from the first run",
            y.task, y.shape
        ));
    }
    Ok(out)
}

fn table(title: &str, a: &str, b: &str, rows: &[Agreement], tolerance: f64) -> String {
    let mut s = format!(
        "{title} (tolerance {:.0} %, judged from {} us)\n{:<40} {:>12} {:>12} {:>8}  verdict\n",
        tolerance * 100.0,
        MIN_JUDGED_MS * 1e3,
        "kernel",
        a,
        b,
        "diff"
    );
    for r in rows {
        s += &format!(
            "{:<40} {:>9.2} us {:>9.2} us {:>7.2}%  {}\n",
            r.what,
            r.a_ms * 1e3,
            r.b_ms * 1e3,
            r.rel_diff * 100.0,
            match r.ok {
                Some(true) => "ok",
                Some(false) => "FAIL",
                None => "not judged (short)",
            }
        );
    }
    s
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// The regex ncu should match for a plan's kernel: the name before any template arguments
/// (ncu's default `function` name base drops them), escaped.
fn kernel_regex(kernel: &str) -> String {
    let base = kernel.split('<').next().unwrap_or(kernel).trim();
    regex_escape(base)
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The single kernel the reference plan of `task` launches at `shape`.
fn single_kernel(root: &Path, task: &str, shape: &str) -> Result<String, String> {
    let suite = Suite::discover(&root.join("tasks")).map_err(|e| e.to_string())?;
    let Some(Entry::Ok(td)) = suite.get(task) else {
        return Err(format!("task {task} is missing or invalid"));
    };
    let sh = td
        .task
        .shape(shape)
        .ok_or_else(|| format!("{task} has no shape {shape}"))?;
    let launches = td.plan.resolve(sh)?;
    match launches.as_slice() {
        [one] => Ok(one.kernel.clone()),
        many => Err(format!(
            "{task} at {shape} launches {} kernels; ncu agreement needs one",
            many.len()
        )),
    }
}

#[test]
fn repeat_medians_of_two_processes_agree() {
    if !gpu_or_skip() {
        return;
    }
    let tasks = tasks();
    let first = reference_medians(&run_bench(&tasks, "repeat-1")).unwrap();
    let second = reference_medians(&run_bench(&tasks, "repeat-2")).unwrap();
    assert_eq!(first.len(), tasks.len(), "one realistic shape per task");
    let rows = compare_runs(&first, &second, REPEAT_TOLERANCE).unwrap();
    let text = table(
        "median of run 1 vs run 2 (separate processes)",
        "run 1",
        "run 2",
        &rows,
        REPEAT_TOLERANCE,
    );
    println!("{text}");
    save("repeat.txt", &text);
    for m in first.iter().chain(&second) {
        if m.throttled == Some(true) {
            println!("note: {} at {} ran throttled", m.task, m.shape);
        }
    }
    let bad: Vec<&Agreement> = rows.iter().filter(|r| r.ok == Some(false)).collect();
    assert!(bad.is_empty(), "medians differ beyond 2 %: {bad:#?}");
    assert!(
        rows.iter().any(|r| r.ok.is_some()),
        "no kernel long enough to judge"
    );
}

/// A kernel timed side by side against itself (the reference as a `--candidate`) comes out
/// even: the interleaved A B protocol gives neither position an edge.
#[test]
fn repeat_a_kernel_timed_against_itself_is_even() {
    if !gpu_or_skip() {
        return;
    }
    let root = root();
    let task = "swiglu";
    let dir = tempfile::tempdir().unwrap();
    let cand = dir.path().join("itself");
    std::fs::create_dir(&cand).unwrap();
    let src = root.join("tasks/activation/swiglu");
    std::fs::copy(src.join("reference.cu"), cand.join("kernel.cu")).unwrap();
    std::fs::copy(src.join("reference.toml"), cand.join("launch.toml")).unwrap();
    let out = Command::new(ksmith())
        .args(["--tasks-dir", &root.join("tasks").display().to_string()])
        .args([
            "bench",
            "--tasks",
            task,
            "--candidate",
            &cand.display().to_string(),
        ])
        .args([
            "--shapes",
            "realistic",
            "--check-shapes",
            "small",
            "--baseline",
            "none",
        ])
        .args(["--no-db", "--json"])
        .output()
        .expect("ksmith runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    save("itself.json", &stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "exit {:?}: {v}", out.status.code());
    let rows = v["rows"].as_array().unwrap();
    let me = rows
        .iter()
        .find(|r| r["kernel"] == "itself")
        .unwrap_or_else(|| panic!("the candidate was not timed: {rows:?}"));
    let ratio = me["vs_reference"].as_f64().unwrap();
    let text = format!(
        "{task} @ realistic against itself: {:.2} us vs reference {:.2} us, ratio {ratio:.4}\n",
        me["median_ms"].as_f64().unwrap_or(f64::NAN) * 1e3,
        me["median_ms"].as_f64().unwrap_or(f64::NAN) * ratio * 1e3,
    );
    println!("{text}");
    save("itself.txt", &text);
    assert!(
        (ratio - 1.0).abs() <= REPEAT_TOLERANCE,
        "a kernel against itself: {ratio}"
    );
    assert!(me["quarantine"].is_null(), "{me}");
}

/// A call under the protocol's graph threshold (layernorm_fwd at `small`: 17 MB, a few
/// microseconds) also gets an amortized time, from a real CUDA graph of many calls, and it is
/// below the single-call median (the launch overhead is what the graph removes).
#[test]
fn repeat_a_short_call_is_amortized_by_a_cuda_graph() {
    if !gpu_or_skip() {
        return;
    }
    let out = Command::new(ksmith())
        .args(["--tasks-dir", &root().join("tasks").display().to_string()])
        .args(["bench", "--tasks", "layernorm_fwd", "--shapes", "small"])
        .args(["--baseline", "none", "--no-db", "--json"])
        .output()
        .expect("ksmith runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    save("graph.json", &stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "exit {:?}: {v}", out.status.code());
    let s = &v["reports"][0]["shapes"][0]["subjects"][0];
    let median = s["summary"]["median_ms"].as_f64().unwrap();
    let method = s["amortized_method"].as_str().unwrap_or("none");
    let amortized = s["amortized_ms"].as_f64().unwrap_or(f64::NAN);
    let text = format!(
        "layernorm_fwd @ small: median {:.2} us per call, amortized {:.2} us ({method})\n",
        median * 1e3,
        amortized * 1e3
    );
    println!("{text}");
    save("graph.txt", &text);
    assert!(median < 0.02, "not under the 20 us threshold: {median} ms");
    assert!(method.starts_with("one CUDA graph of"), "{method}");
    assert!(amortized > 0.0 && amortized < median, "{text}");
}

#[test]
fn ncu_durations_agree_with_ksmith_medians() {
    if !gpu_or_skip() {
        return;
    }
    let Some(ncu) = profile::find_tool(
        "ncu",
        std::env::var_os("KSMITH_NCU").map(PathBuf::from).as_deref(),
    ) else {
        if flag("KSMITH_REQUIRE_NCU") {
            panic!("KSMITH_REQUIRE_NCU=1 but ncu is not on PATH nor in /usr/local/cuda/bin");
        }
        eprintln!("skipped: ncu not found (PATH, /usr/local/cuda/bin; KSMITH_NCU)");
        return;
    };
    let root = root();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for task in tasks() {
        let one = [task.clone()];
        let plain = reference_medians(&run_bench(&one, &format!("ncu-plain-{task}"))).unwrap();
        let Some(m) = plain.first() else {
            problems.push(format!("{task}: no time"));
            continue;
        };
        let kernel = match single_kernel(&root, &task, &m.shape) {
            Ok(k) => k,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let target = NcuTarget::durations(kernel_regex(&kernel), NCU_SKIP, NCU_COUNT);
        let mut program = vec![ksmith().into_os_string()];
        let under_ncu = std::env::temp_dir().join(format!("ksmith-ncu-{task}.json"));
        program.extend(
            bench_args(&one)
                .into_iter()
                .filter(|a| a != "--json")
                .chain(["--json-out".to_string(), under_ncu.display().to_string()])
                .map(Into::into),
        );
        let t0 = Instant::now();
        let out = profile::run_tool(&ncu, &target.args(), &program, Duration::from_secs(540))
            .unwrap_or_else(|e| panic!("{task}: {e}"));
        save(&format!("ncu-{task}.txt"), &out.text);
        eprintln!(
            "{task}: ncu exited {:?} after {:.1} s",
            out.exit_code,
            t0.elapsed().as_secs_f64()
        );
        let report = match profile::ncu::parse(&out.text) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{task}: {e}"));
                continue;
            }
        };
        let durations = report.durations_ns();
        let Some(ncu_ns) = median(&durations) else {
            problems.push(format!("{task}: ncu reported no gpu__time_duration"));
            continue;
        };
        println!(
            "{task}: kernel {kernel}, {} ncu launches, ncu median {:.2} us, ksmith median {:.2} us",
            durations.len(),
            ncu_ns / 1e3,
            m.median_ms * 1e3
        );
        rows.push(agree(
            format!("{task} @ {}", m.shape),
            m.median_ms,
            ncu_ns / 1e6,
            NCU_TOLERANCE,
        ));
    }
    let text = table(
        "ksmith median vs ncu gpu__time_duration median",
        "ksmith",
        "ncu",
        &rows,
        NCU_TOLERANCE,
    );
    println!("{text}");
    save("ncu.txt", &format!("{text}\n{}", problems.join("\n")));
    assert!(problems.is_empty(), "{problems:#?}");
    let bad: Vec<&Agreement> = rows.iter().filter(|r| r.ok == Some(false)).collect();
    assert!(bad.is_empty(), "ksmith and ncu differ beyond 5 %: {bad:#?}");
}

// --- CPU tests of the comparison logic --------------------------------------------------

fn reply(rows: Value) -> Value {
    serde_json::json!({ "rows": rows })
}

#[test]
fn cpu_reference_medians_read_from_bench_json() {
    let v = reply(serde_json::json!([
        {"task": "swiglu", "shape": "realistic", "kernel": "reference", "median_ms": 0.9, "throttled": false},
        {"task": "swiglu", "shape": "realistic", "kernel": "mine", "median_ms": 0.5},
        {"task": "gemm_bf16", "shape": "realistic", "kernel": "reference", "median_ms": 1.2, "throttled": null},
    ]));
    let m = reference_medians(&v).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].median_ms, 0.9);
    assert_eq!(m[0].throttled, Some(false));
    assert_eq!(m[1].throttled, None);
    let e = reference_medians(&reply(serde_json::json!([
        {"task": "swiglu", "shape": "realistic", "kernel": "reference", "median_ms": null, "problem": "killed"}
    ])))
    .unwrap_err();
    assert!(e.contains("swiglu at realistic has no time: killed"), "{e}");
    assert!(reference_medians(&serde_json::json!({"error": "no GPU"})).is_err());
}

#[test]
fn cpu_agreement_rules() {
    let m = |task: &str, ms: f64| Median {
        task: task.into(),
        shape: "realistic".into(),
        median_ms: ms,
        throttled: None,
    };
    let a = [m("swiglu", 1.00), m("gemm", 0.200), m("tiny", 0.010)];
    let b = [m("tiny", 0.020), m("gemm", 0.205), m("swiglu", 1.019)];
    let rows = compare_runs(&a, &b, 0.02).unwrap();
    assert_eq!(rows[0].ok, Some(true), "1.9 % apart");
    assert_eq!(rows[1].ok, Some(false), "2.4 % apart");
    assert_eq!(rows[2].ok, None, "10 us: not judged, however far apart");
    assert!((rows[1].rel_diff - (0.2f64 / 0.205 - 1.0).abs()).abs() < 1e-12);
    assert!(compare_runs(&a, &b[1..], 0.02)
        .unwrap_err()
        .contains("tiny at realistic is missing from the second run"));
    assert!(compare_runs(&a[..2], &b, 0.02)
        .unwrap_err()
        .contains("missing from the first run"));
    assert_eq!(agree("x".into(), 1.0, 0.0, 0.05).ok, Some(false));
    let t = table("t", "a", "b", &rows, 0.02);
    assert!(
        t.contains("FAIL") && t.contains("not judged") && t.contains("tolerance 2 %"),
        "{t}"
    );
    // scripts/gpu-check.sh reads this table back for its summary line.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("repeat.txt");
    std::fs::write(&p, &t).unwrap();
    let o = Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-check.sh"))
        .args(["summary", "table"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "1 ok, 1 FAIL, 1 not judged; worst diff 2.44%"
    );
}

#[test]
fn cpu_kernel_names_and_medians() {
    assert_eq!(kernel_regex("swiglu_bf16"), "swiglu_bf16");
    assert_eq!(
        kernel_regex("gemm_bf16<128, 128, 64, 32, 4, true>"),
        "gemm_bf16"
    );
    assert_eq!(regex_escape("a.b$"), "a\\.b\\$");
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median(&[]), None);
    // Every default task launches one kernel at its realistic shape (else ncu's duration is
    // not the whole call ksmith times).
    let root = root();
    for t in TASKS {
        let suite = Suite::discover(&root.join("tasks")).unwrap();
        let Some(Entry::Ok(td)) = suite.get(t) else {
            panic!("{t} missing")
        };
        let name = if td.task.shape("realistic").is_some() {
            "realistic"
        } else {
            "vocab_llama3"
        };
        single_kernel(&root, t, name).unwrap();
    }
}
