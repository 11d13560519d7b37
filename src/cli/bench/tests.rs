//! CPU tests of `ksmith bench`'s logic: argument resolution, shape roles, rows, tables,
//! summaries, the child's reply and the store records. Tasks come from the real suite.

use super::child::parse_reply;
use super::record::{kernel_verdict, shape_timings, store_results, Recorded};
use super::rows::{geomean, memory_bound_line, ms, ratio, task_failure_row};
use super::*;
use bench_suite::store::{NewGpu, Verdict as StoreVerdict};
use clap::Parser;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use verifier::runtime::bench::{CandidateStatus, ShapeFailure};
use verifier::runtime::calibrate::{launch_overhead, Calibration, Rate, CALIBRATION_VERSION};
use verifier::runtime::telemetry::{MeasurementTelemetry, Reading};
use verifier::runtime::timing::{ShapeTimings, SubjectTiming};
use verifier::timing::{speedup, Bound, StopReason, Summary};
use verifier::verdict::Verdict;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    a: BenchArgs,
}

fn args(argv: &[&str]) -> BenchArgs {
    let mut v = vec!["bench"];
    v.extend_from_slice(argv);
    Cmd::try_parse_from(v).expect("arguments parse").a
}

fn suite() -> Suite {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tasks");
    Suite::discover(&root).expect("the suite loads")
}

fn task_dir<'a>(s: &'a Suite, id: &str) -> &'a TaskDir {
    match s.get(id) {
        Some(Entry::Ok(td)) => td,
        _ => panic!("task {id} is not in the suite or is invalid"),
    }
}

#[test]
fn realistic_and_small_roles() {
    let s = suite();
    let pick = |id: &str| {
        let t = &task_dir(&s, id).task;
        (
            shapes::realistic_shape(t).unwrap().name.clone(),
            shapes::small_shape(t).unwrap().name.clone(),
        )
    };
    assert_eq!(pick("swiglu"), ("realistic".into(), "small".into()));
    // No shape named realistic or small*: the largest / smallest roofline floor.
    assert_eq!(
        pick("hspi_batch_invariant_matmul"),
        ("m4096".into(), "m1".into())
    );
    // awkward* shapes are never the realistic one, even with a larger floor than the rest.
    let (real, _) = pick("softmax_row");
    assert_eq!(real, "vocab_llama3");
}

#[test]
fn every_task_has_a_realistic_shape_that_is_not_a_corner_case() {
    let s = suite();
    let mut seen = 0;
    for e in &s.entries {
        let Entry::Ok(td) = e else { continue };
        let t = &td.task;
        let r = shapes::realistic_shape(t).expect("a shape");
        let all_minor = t
            .shapes
            .iter()
            .all(|s| s.name.starts_with("small") || s.name.starts_with("awkward"));
        assert!(
            all_minor || !(r.name.starts_with("small") || r.name.starts_with("awkward")),
            "{}: realistic shape {} is a corner case",
            t.id,
            r.name
        );
        seen += 1;
    }
    assert!(seen >= 40, "only {seen} valid tasks in the suite");
}

#[test]
fn shape_choices_resolve_in_task_order_without_repeats() {
    let s = suite();
    let t = &task_dir(&s, "swiglu").task;
    let r = |c: &[&str]| shapes::resolve(t, &c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(r(&[]).unwrap(), ["small", "realistic", "awkward"]);
    assert_eq!(r(&["all"]).unwrap(), ["small", "realistic", "awkward"]);
    assert_eq!(r(&["awkward", "small"]).unwrap(), ["small", "awkward"]);
    assert_eq!(
        r(&["realistic", "realistic", "small"]).unwrap(),
        ["small", "realistic"]
    );
    let e = r(&["huge"]).unwrap_err();
    assert!(
        e.contains("`swiglu` has no public shape `huge`")
            && e.contains("small, realistic, awkward")
            && e.contains("roles: all, realistic, small"),
        "{e}"
    );
}

#[test]
fn plan_selects_tasks_and_reports_usage_errors() {
    let s = suite();
    let p = plan(
        &s,
        &args(&[
            "--tasks",
            "swiglu,bias_gelu,swiglu",
            "--shapes",
            "realistic",
        ]),
    )
    .unwrap();
    let ids: Vec<&str> = p.tasks.iter().map(|t| t.task.id.as_str()).collect();
    assert_eq!(ids, ["swiglu", "bias_gelu"], "repeated ids count once");
    assert_eq!(
        p.shapes,
        [vec!["realistic".to_string()], vec!["realistic".to_string()]]
    );
    assert_eq!(p.realistic["swiglu"], "realistic");

    let p = plan(&s, &args(&["--suite", "normalization"])).unwrap();
    assert!(p.tasks.iter().all(|t| t.task.category == "normalization"));
    assert!(p.tasks.len() >= 2);
    let all = plan(&s, &args(&[])).unwrap();
    assert!(all.tasks.len() > p.tasks.len());

    let err = |argv: &[&str]| plan(&s, &args(argv)).unwrap_err();
    let e = err(&["--tasks", "nope"]);
    assert!(
        e.contains("no task `nope`") && e.contains("`ksmith tasks list` lists them"),
        "{e}"
    );
    let e = err(&["--tasks", "swiglo"]);
    assert!(e.contains("did you mean `swiglu`?"), "{e}");
    let e = err(&["--suite", "no-such-category"]);
    assert!(e.contains("selects no valid task"), "{e}");
    let e = err(&["--tasks", "swiglu", "--shapes", "bogus"]);
    assert!(e.contains("no public shape `bogus`"), "{e}");
    let e = err(&["--tasks", "swiglu", "--check-shapes", "bogus"]);
    assert!(e.contains("--check-shapes") && e.contains("bogus"), "{e}");
}

#[test]
fn candidate_arguments() {
    let s = suite();
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("kernel.cu"), "// k").unwrap();
    let m = mine.to_str().unwrap();
    let e = plan(&s, &args(&["--candidate", m])).unwrap_err();
    assert!(e.contains("exactly one task") && e.contains("got 0"), "{e}");
    let e = plan(
        &s,
        &args(&["--tasks", "swiglu,bias_gelu", "--candidate", m]),
    )
    .unwrap_err();
    assert!(e.contains("got 2"), "{e}");
    // launch.toml missing: the message names the file.
    let e = plan(&s, &args(&["--tasks", "swiglu", "--candidate", m])).unwrap_err();
    assert!(
        e.contains(&mine.join("launch.toml").display().to_string()),
        "{e}"
    );
    std::fs::write(mine.join("launch.toml"), "# plan").unwrap();
    let p = plan(&s, &args(&["--tasks", "swiglu", "--candidate", m])).unwrap();
    assert_eq!(p.candidates.len(), 1);
    assert_eq!(p.candidates[0].name, "mine");
    assert_eq!(p.candidates[0].source, "// k");
    assert_eq!(p.candidates[0].plan, "# plan");
    // The same directory twice, or one named like the reference, would mix up the rows.
    let e = plan(
        &s,
        &args(&["--tasks", "swiglu", "--candidate", m, "--candidate", m]),
    )
    .unwrap_err();
    assert!(e.contains("is taken"), "{e}");
    let r = dir.path().join("reference");
    std::fs::create_dir(&r).unwrap();
    let e = plan(
        &s,
        &args(&["--tasks", "swiglu", "--candidate", r.to_str().unwrap()]),
    )
    .unwrap_err();
    assert!(e.contains("`reference`"), "{e}");
}

#[test]
fn baselines_and_where_torch_compile_runs() {
    use Baseline as B;
    use CompileShapes as C;
    assert!(torch_modes(B::None, C::All, true).is_empty());
    assert_eq!(torch_modes(B::Eager, C::All, true), [Mode::Eager]);
    assert_eq!(
        torch_modes(B::Torch, C::Realistic, true),
        [Mode::Eager, Mode::Compile]
    );
    assert_eq!(torch_modes(B::Torch, C::Realistic, false), [Mode::Eager]);
    assert_eq!(
        torch_modes(B::Torch, C::All, false),
        [Mode::Eager, Mode::Compile]
    );
    let a = args(&[]);
    assert_eq!((a.baseline, a.compile_shapes), (B::Torch, C::Realistic));
    let a = args(&["--baseline", "eager", "--compile-shapes", "all"]);
    assert_eq!((a.baseline, a.compile_shapes), (B::Eager, C::All));
    assert!(Cmd::try_parse_from(["bench", "--baseline", "numpy"]).is_err());
}

#[test]
fn ratios_and_geomeans() {
    assert_eq!(ratio(Some(2.0), Some(0.5)), Some(4.0));
    assert_eq!(ratio(None, Some(1.0)), None);
    assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    assert_eq!(ratio(Some(0.0), Some(1.0)), None);
    assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
    assert!((geomean([2.0, 8.0].into_iter()).unwrap() - 4.0).abs() < 1e-12);
    // Non-positive and non-finite values are left out, not zeroing the mean.
    assert!(
        (geomean([2.0, 0.0, -1.0, f64::INFINITY, 8.0].into_iter()).unwrap() - 4.0).abs() < 1e-12
    );
    assert_eq!(geomean(std::iter::empty()), None);
    assert_eq!(ms(Some(1.5)), "1.500 ms");
    assert_eq!(ms(Some(0.01234)), "12.34 us");
    assert_eq!(ms(None), "");
}

fn timing(name: &str, samples: &[f64], throttled: u32) -> SubjectTiming {
    SubjectTiming {
        name: name.into(),
        samples_ms: samples.to_vec(),
        summary: Summary::of(samples).unwrap(),
        warmup_calls: 10,
        warmup_ms: 25.0,
        amortized_ms: None,
        amortized_calls: None,
        amortized_method: None,
        revalidation_failure: None,
        throttled_samples: throttled,
    }
}

fn reading(throttled: bool) -> Reading {
    Reading {
        sm_clock_mhz: Some(1980),
        memory_clock_mhz: Some(2619),
        temperature_c: Some(40),
        power_w: Some(300.0),
        reasons: Some(0),
        reason_names: Vec::new(),
        throttled,
    }
}

/// swiglu at `realistic` (reference 1.0 ms, candidate `fast` 0.5 ms, telemetry read, not
/// throttled) and at `small` (reference 0.04 ms, above its 0.034 ms floor; candidate 0.02 ms, no telemetry, re-validation of the
/// candidate failed), a failed `awkward` shape, and a candidate `broken` that did not compile.
fn report() -> BenchReport {
    let r_real = [1.0, 1.02, 0.98, 1.0];
    let c_real = [0.5, 0.51, 0.49, 0.5];
    let mut small_cand = timing("fast", &[0.02, 0.02], 0);
    small_cand.revalidation_failure = Some("output `y`: 3 mismatches".into());
    let mut small_ref = timing("reference", &[0.04, 0.04], 0);
    small_ref.amortized_ms = Some(0.015);
    let shape = |name: &str, subjects: Vec<SubjectTiming>, tel: MeasurementTelemetry| {
        let speedups = subjects
            .iter()
            .skip(1)
            .map(|c| speedup(&c.samples_ms, &subjects[0].samples_ms))
            .collect();
        ShapeTimings {
            shape: name.into(),
            values: Vec::new(),
            pool_sets: 2,
            flush_bytes: 100 << 20,
            stop_reason: StopReason::Converged,
            subjects,
            speedups,
            telemetry: tel,
            elapsed_ms: 100.0,
        }
    };
    let tel = MeasurementTelemetry {
        unavailable: None,
        before: Some(reading(false)),
        after: Some(reading(false)),
        throttled_samples: 0,
        checked_samples: 8,
    };
    BenchReport {
        task: "swiglu".into(),
        content: "hash".into(),
        device: "test".into(),
        subjects: vec!["reference".into(), "fast".into()],
        candidates: vec![
            CandidateStatus {
                name: "fast".into(),
                verdict: Verdict::Correct {
                    cases: 12,
                    nondeterministic_within_tolerance: Vec::new(),
                },
                timed: true,
            },
            CandidateStatus {
                name: "broken".into(),
                verdict: Verdict::CompileError { log: "x".into() },
                timed: false,
            },
        ],
        shapes: vec![
            shape(
                "realistic",
                vec![timing("reference", &r_real, 0), timing("fast", &c_real, 0)],
                tel,
            ),
            shape(
                "small",
                vec![small_ref, small_cand],
                MeasurementTelemetry::unavailable("no NVML"),
            ),
        ],
        failures: vec![ShapeFailure {
            shape: "awkward".into(),
            message: "fast: launch: too many resources".into(),
            subject: Some(1),
        }],
        log: vec!["device: test".into()],
    }
}

/// 3.0e12 B/s and 60e12 fp32 op/s: swiglu realistic (M=16384, N=28672) moves 2*M*N*3 bytes,
/// a floor of 0.939524096 ms.
fn calibration() -> Calibration {
    let rate = |per_s: f64| Rate {
        per_s,
        method: "test".into(),
        repetitions: 1,
        best_ms: 1.0,
    };
    Calibration {
        version: CALIBRATION_VERSION,
        gpu_key: "test".into(),
        device: "test".into(),
        arch: "sm_90".into(),
        measured_at: 0,
        bandwidth: Some(rate(3.0e12)),
        copy_kernel: None,
        memcpy_dtod: None,
        peaks: BTreeMap::from([("fp32".to_string(), rate(60e12))]),
        skipped: BTreeMap::new(),
        launch: Some(launch_overhead(&[0.002, 0.002, 0.002]).unwrap()),
        telemetry: MeasurementTelemetry::default(),
    }
}

fn torch_times() -> HashMap<String, TorchTimes> {
    HashMap::from([(
        "realistic".to_string(),
        TorchTimes {
            eager_ms: Some(3.0),
            compile_ms: Some(1.5),
            ..TorchTimes::default()
        },
    )])
}

/// At `small` the reference has a CUDA-graph time (0.015 ms); with PyTorch eager's (0.03 ms
/// from graph replays, 0.05 ms a call) both ratios are shown.
#[test]
fn short_calls_compare_amortized_times_too() {
    let s = suite();
    let task = &task_dir(&s, "swiglu").task;
    let mut torch = torch_times();
    torch.insert(
        "small".to_string(),
        TorchTimes {
            eager_ms: Some(0.05),
            eager_amortized_ms: Some(0.03),
            ..TorchTimes::default()
        },
    );
    let rows = rows_for(task, &report(), &torch, Some(&calibration()));
    let r = rows
        .iter()
        .find(|r| r.shape == "small" && r.kernel == "reference")
        .unwrap();
    assert!((r.vs_eager.unwrap() - 1.25).abs() < 1e-12);
    assert!((r.vs_eager_amortized.unwrap() - 2.0).abs() < 1e-12);
    assert_eq!(r.vs_compile_amortized, None);
    // The candidate has no amortized time: no amortized ratio.
    let c = rows
        .iter()
        .find(|r| r.shape == "small" && r.kernel == "fast")
        .unwrap();
    assert_eq!(c.vs_eager_amortized, None);
    let t = render_table(&rows);
    let line = t
        .lines()
        .find(|l| l.contains("| small     | reference"))
        .unwrap();
    assert!(line.contains("| 1.25x (2.00x amortized) |"), "{line}");
    let realistic = t
        .lines()
        .find(|l| l.contains("| realistic | reference"))
        .unwrap();
    assert!(!realistic.contains("amortized"), "{realistic}");
}

#[test]
fn rows_carry_times_ratios_sol_and_problems() {
    let s = suite();
    let task = &task_dir(&s, "swiglu").task;
    let rows = rows_for(task, &report(), &torch_times(), Some(&calibration()));
    let find = |shape: &str, kernel: &str| {
        rows.iter()
            .find(|r| r.shape == shape && r.kernel == kernel)
            .unwrap_or_else(|| panic!("no row {shape}/{kernel} in {rows:#?}"))
    };
    let r = find("realistic", "reference");
    assert_eq!(r.median_ms, Some(1.0));
    assert_eq!(r.samples, 4);
    assert_eq!(r.vs_eager, Some(3.0));
    assert_eq!(r.vs_compile, Some(1.5));
    assert_eq!(r.vs_reference, None);
    let floor = 2.0 * 16384.0 * 28672.0 * 3.0 / 3.0e12 * 1e3;
    assert!((r.floor_ms.unwrap() - floor).abs() < 1e-9);
    assert!((r.sol_pct.unwrap() - 100.0 * floor).abs() < 1e-6);
    assert_eq!(r.bound, Some(Bound::Memory));
    // One 2 us launch on a 0.94 ms floor: 99.8% at the most.
    let ceiling = 100.0 * floor / (floor + 0.002);
    assert!((r.sol_ceiling_pct.unwrap() - ceiling).abs() < 1e-9);
    assert_eq!(r.throttled, Some(false));
    assert_eq!(
        (r.quarantine.as_deref(), r.problem.as_deref()),
        (None, None)
    );

    // The candidate at 0.5 ms beats a 0.94 ms floor: quarantined, never ranked.
    let c = find("realistic", "fast");
    assert_eq!(c.vs_reference, Some(2.0));
    assert_eq!(c.vs_eager, Some(6.0));
    assert!(c
        .quarantine
        .as_deref()
        .unwrap()
        .contains("speed-of-light floor"));

    let c = find("small", "fast");
    assert_eq!(c.throttled, None, "no telemetry: unknown, not `no`");
    assert!(c
        .problem
        .as_deref()
        .unwrap()
        .starts_with("re-validation failed"));
    assert_eq!(
        (c.eager_ms, c.vs_eager),
        (None, None),
        "no PyTorch at this shape"
    );
    assert_eq!(find("small", "reference").amortized_ms, Some(0.015));

    let f = find("awkward", "fast");
    assert_eq!(f.median_ms, None);
    assert!(f.problem.as_deref().unwrap().contains("too many resources"));
    let b = find("-", "broken");
    assert_eq!(b.problem.as_deref(), Some("not timed: compile_error"));
    assert_eq!(rows.len(), 6);

    // Without a calibration the SOL columns stay empty and only the speedup rule quarantines.
    let rows = rows_for(task, &report(), &torch_times(), None);
    assert!(rows.iter().all(|r| r.sol_pct.is_none()
        && r.floor_ms.is_none()
        && r.bound.is_none()
        && r.sol_ceiling_pct.is_none()));
    assert!(rows.iter().all(|r| r.quarantine.is_none()));
    // A calibration from before the launch overhead was measured: SOL, but no ceiling.
    let mut old = calibration();
    old.launch = None;
    let rows = rows_for(task, &report(), &torch_times(), Some(&old));
    assert!(rows[0].sol_pct.is_some() && rows[0].sol_ceiling_pct.is_none());
}

#[test]
fn a_throttled_sample_marks_its_row() {
    let s = suite();
    let task = &task_dir(&s, "swiglu").task;
    let mut rep = report();
    rep.shapes[0].subjects[1].throttled_samples = 2;
    let rows = rows_for(task, &rep, &HashMap::new(), None);
    assert_eq!(rows[0].throttled, Some(false));
    assert_eq!(rows[1].throttled, Some(true));
}

#[test]
fn tables_show_every_column_and_leave_unmeasured_cells_empty() {
    let s = suite();
    let task = &task_dir(&s, "swiglu").task;
    let rows = rows_for(task, &report(), &torch_times(), Some(&calibration()));
    let t = render_table(&rows);
    for h in [
        "task",
        "shape",
        "kernel",
        "time (median)",
        "vs eager",
        "vs compile",
        "vs ref",
        "SOL%",
        "throttled",
        "note",
    ] {
        assert!(t.contains(h), "header {h} missing:\n{t}");
    }
    let line = |needle: &str| {
        t.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}:\n{t}"))
            .to_string()
    };
    let r = line("| realistic | reference");
    assert!(
        r.contains("1.000 ms") && r.contains("3.00x") && r.contains("1.50x"),
        "{r}"
    );
    assert!(r.contains(&format!("{:.1}", 100.0 * 0.939524096)), "{r}");
    assert!(line("| realistic | fast").contains("QUARANTINED"));
    let sm = line("| small     | reference");
    assert!(
        sm.contains("40.00 us (15.00 us amortized)") && sm.contains("| ?"),
        "{sm}"
    );
    assert!(line("broken").contains("not timed: compile_error"));

    let ids = vec!["swiglu".to_string(), "bias_gelu".to_string()];
    let realistic = HashMap::from([
        ("swiglu".to_string(), "realistic".to_string()),
        ("bias_gelu".to_string(), "realistic".to_string()),
    ]);
    let mut all = rows.clone();
    all.push(task_failure_row("bias_gelu", "killed"));
    let summary = summary_rows(&all, &ids, &realistic);
    assert_eq!(
        summary.len(),
        2,
        "swiglu's two kernels; bias_gelu has no time"
    );
    let refs: Vec<&Row> = summary
        .iter()
        .copied()
        .filter(|r| r.kernel == "reference")
        .collect();
    let tot = totals(&refs);
    assert_eq!(tot.tasks, 1);
    assert!((tot.geomean_vs_eager.unwrap() - 3.0).abs() < 1e-12);
    assert_eq!(tot.quarantined, 0);
    assert_eq!((tot.memory_bound, tot.memory_bound_on_target), (1, 1));
    let text = render_summary(&summary);
    assert!(
        text.contains("| bound ") && text.contains("| memory "),
        "{text}"
    );
    assert!(
        text.contains("reference kernels memory-bound at >= 50% SOL: 1 of 1\n")
            || text.ends_with("reference kernels memory-bound at >= 50% SOL: 1 of 1"),
        "{text}"
    );
    assert!(
        text.contains("realistic shape")
            && text.contains(
                "reference kernels over 1 tasks: geomean 3.00x vs eager, 1.50x vs compile"
            ),
        "{text}"
    );
}

/// Memory-bound rows under 50% are listed slowest first, each with the most a single launch
/// could show; compute-bound rows and rows without SOL are not counted.
#[test]
fn memory_bound_references_are_counted_against_the_target() {
    let row = |task: &str, bound: Bound, sol: f64, ceiling: Option<f64>| Row {
        task: task.into(),
        shape: "s".into(),
        kernel: "reference".into(),
        median_ms: Some(1.0),
        sol_pct: Some(sol),
        bound: Some(bound),
        sol_ceiling_pct: ceiling,
        ..Row::default()
    };
    let rows = [
        row("fast", Bound::Memory, 82.0, Some(99.0)),
        row("slow", Bound::Memory, 31.25, Some(99.5)),
        row("tiny", Bound::Memory, 8.0, Some(16.7)),
        row("gemm", Bound::Compute, 20.0, Some(99.9)),
        row("edge", Bound::Memory, 50.0, None),
        Row {
            sol_pct: None,
            ..row("uncalibrated", Bound::Memory, 0.0, None)
        },
    ];
    let refs: Vec<&Row> = rows.iter().collect();
    let t = totals(&refs);
    assert_eq!((t.memory_bound, t.memory_bound_on_target), (4, 2));
    let names: Vec<&str> = t
        .memory_bound_short
        .iter()
        .map(|s| s.task.as_str())
        .collect();
    assert_eq!(names, ["tiny", "slow"]);
    assert!(t.memory_bound_short[0].launch_bound);
    assert!(!t.memory_bound_short[1].launch_bound);
    assert_eq!(
        memory_bound_line(&t).unwrap(),
        "memory-bound at >= 50% SOL: 2 of 4; below: tiny 8.0% (ceiling 16.7%: launch-bound), slow 31.2% (ceiling 99.5%)"
    );
    let none = totals(&[&rows[3]]);
    assert_eq!(none.memory_bound, 0);
    assert_eq!(memory_bound_line(&none), None);

    // scripts/gpu-check.sh's one-line summary counts them too.
    let reply = serde_json::json!({"rows": rows, "totals": t, "wall_s": 1.0});
    let line = gpu_check_summary("bench", &reply);
    assert!(
        line.contains("; memory-bound >=50% SOL 2/4 (1 launch-bound); throttled"),
        "{line}"
    );
}

#[test]
fn child_replies() {
    let ok = serde_json::json!({ "report": report() }).to_string();
    let r = parse_reply(&format!("noise\n{ok}\n\n"), "exit 0").unwrap();
    assert_eq!(r.task, "swiglu");
    match parse_reply("", "signal 9") {
        Err(ChildFailure::Task(m)) => assert!(
            m.contains("signal 9") && m.contains("without a reply"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    match parse_reply("{\"error\": \"no GPU\", \"harness\": true}", "exit 0") {
        Err(ChildFailure::Harness(m)) => assert_eq!(m, "no GPU"),
        other => panic!("{other:?}"),
    }
    match parse_reply(
        "{\"error\": \"fault\", \"context_lost\": true, \"harness\": false}",
        "exit 0",
    ) {
        Err(ChildFailure::Task(m)) => assert_eq!(m, "fault"),
        other => panic!("{other:?}"),
    }
    match parse_reply("{\"report\": {\"task\": 1}}", "exit 0") {
        Err(ChildFailure::Harness(m)) => assert!(m.starts_with("malformed report"), "{m}"),
        other => panic!("{other:?}"),
    }
    match parse_reply("garbage {", "exit 0") {
        Err(ChildFailure::Harness(m)) => assert!(
            m.contains("unreadable reply") && m.contains("garbage"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn verdicts_and_timings_as_stored() {
    let s = suite();
    let task = &task_dir(&s, "swiglu").task;
    let rep = report();
    let rows = rows_for(task, &rep, &torch_times(), Some(&calibration()));
    assert_eq!(
        kernel_verdict(&rep, &rows, "swiglu", "reference"),
        StoreVerdict::Correct
    );
    assert_eq!(
        kernel_verdict(&rep, &rows, "swiglu", "fast"),
        StoreVerdict::WrongOutput
    );
    assert_eq!(
        kernel_verdict(&rep, &rows, "swiglu", "broken"),
        StoreVerdict::CompileError
    );
    let lost = vec![task_failure_row("swiglu", "killed")];
    assert_eq!(
        kernel_verdict(&rep, &lost, "swiglu", "reference"),
        StoreVerdict::RuntimeFault
    );

    let t = shape_timings(&rows, "swiglu", "fast");
    assert_eq!(t.len(), 2, "awkward has no time");
    assert_eq!(t[0].shape, "realistic");
    assert!((t[0].median_us - 500.0).abs() < 1e-9);
    assert!((t[0].reference_us.unwrap() - 1000.0).abs() < 1e-9);
    assert!((t[0].eager_us.unwrap() - 3000.0).abs() < 1e-9);
    assert_eq!(t[0].samples, 4);
}

#[test]
fn results_are_recorded_in_the_store() {
    let s = suite();
    let td = task_dir(&s, "swiglu");
    let rep = report();
    let rows = rows_for(&td.task, &rep, &torch_times(), Some(&calibration()));
    let cands = vec![
        BenchCandidate {
            name: "fast".into(),
            source: "// fast".into(),
            plan: "# fast".into(),
        },
        BenchCandidate {
            name: "broken".into(),
            source: "// broken".into(),
            plan: "# broken".into(),
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let store = Store::open(&url).unwrap();
    let gpu = NewGpu {
        gpu_key: "test-gpu".into(),
        name: "Test GPU".into(),
        compute_capability: "9.0".into(),
        sm_count: Some(132),
        memory_bytes: Some(80 << 30),
        driver_version: "13.0".into(),
        details: serde_json::json!({}),
    };
    let rec = [Recorded {
        td,
        report: &rep,
        rows: &rows,
        candidates: &cands,
    }];
    let name = store_results(
        &store,
        &gpu,
        "seed",
        &rec,
        serde_json::json!({"x": 1}),
        "abc".into(),
    )
    .unwrap();
    let run = store.run_by_name(&name).unwrap();
    assert_eq!(run.run.kind, "bench");
    assert_eq!(run.run.git_rev, "abc");
    let cs = store.candidates_of_run(run.id).unwrap();
    assert_eq!(cs.len(), 3);
    let evals = store.evaluations_of_run(run.id).unwrap();
    assert_eq!(evals.len(), 3);
    let by_name = |n: &str| {
        let c = cs
            .iter()
            .find(|c| c.candidate.notes["name"] == n)
            .unwrap_or_else(|| panic!("no candidate {n}"));
        evals
            .iter()
            .find(|e| e.evaluation.candidate_id == c.id)
            .unwrap()
    };
    let r = &by_name("reference").evaluation;
    assert_eq!(r.verdict, StoreVerdict::Correct);
    assert_eq!(r.protocol, BENCH_PROTOCOL);
    assert!((r.speedup_eager.unwrap() - 3.0).abs() < 1e-12);
    assert_eq!(r.timings.len(), 2);
    assert!(!r.quarantined);
    let f = &by_name("fast").evaluation;
    assert_eq!(f.verdict, StoreVerdict::WrongOutput);
    assert!(f.quarantined && f.quarantine_reason.as_deref().unwrap().contains("floor"));
    // Geometric mean over the shapes with a ratio: 2.0 at realistic, 2.0 at small.
    assert!((f.speedup_ref.unwrap() - 2.0).abs() < 1e-9);
    assert_eq!(
        by_name("broken").evaluation.verdict,
        StoreVerdict::CompileError
    );
}

#[test]
fn chunks_split_the_suite_evenly_and_completely() {
    assert_eq!(parse_chunk("2/3"), Ok((2, 3)));
    for bad in ["0/3", "4/3", "3", "a/b", "1/0", ""] {
        let e = parse_chunk(bad).unwrap_err();
        assert!(e.contains("expected I/N"), "{bad}: {e}");
    }
    let items: Vec<u32> = (0..10).collect();
    let parts: Vec<&[u32]> = (1..=3).map(|i| chunk_of(&items, i, 3)).collect();
    assert_eq!(parts, [&[0, 1, 2][..], &[3, 4, 5][..], &[6, 7, 8, 9][..]]);
    assert_eq!(chunk_of(&items, 1, 1), &items[..]);
    // More chunks than items: some are empty, none holds two.
    let sizes: Vec<usize> = (1..=4).map(|i| chunk_of(&items[..2], i, 4).len()).collect();
    assert_eq!(sizes, [0, 1, 0, 1]);
    let s = suite();
    let all = plan(&s, &args(&[])).unwrap().tasks.len();
    let mut seen = 0;
    for i in 1..=3 {
        let c = format!("{i}/3");
        seen += plan(&s, &args(&["--chunk", &c])).unwrap().tasks.len();
    }
    assert_eq!(seen, all, "the chunks cover every task once");
    let e = plan(&s, &args(&["--tasks", "swiglu", "--chunk", "1/2"])).unwrap_err();
    assert!(e.contains("selects no task"), "{e}");
}

/// scripts/gpu-check.sh's one-line `summary KIND` of `reply` written to a file.
fn gpu_check_summary(kind: &str, reply: &serde_json::Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(format!("{kind}.json"));
    std::fs::write(&p, reply.to_string()).unwrap();
    let o = std::process::Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-check.sh"))
        .args(["summary", kind])
        .arg(&p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// scripts/gpu-check.sh's one-line summary of `--json-out` reads the rows as serialized here.
#[test]
fn gpu_check_summary_of_a_bench_reply() {
    let s = suite();
    let task = &task_dir(&s, "swiglu").task;
    let rows = rows_for(task, &report(), &torch_times(), Some(&calibration()));
    let ids = vec!["swiglu".to_string()];
    let realistic = HashMap::from([("swiglu".to_string(), "realistic".to_string())]);
    let summary = summary_rows(&rows, &ids, &realistic);
    let refs: Vec<&Row> = summary
        .iter()
        .copied()
        .filter(|r| r.kernel == "reference")
        .collect();
    let reply = serde_json::json!({
        "rows": rows, "realistic": summary, "totals": totals(&refs), "wall_s": 12.3,
    });
    let line = gpu_check_summary("bench", &reply);
    assert!(
        line.starts_with("1 tasks timed in 12 s; geomean vs eager 3.00x, vs compile 1.50x, SOL 93.95%; memory-bound >=50% SOL 1/1; throttled 0; 3 problems (swiglu: re-validation failed"),
        "{line}"
    );
}

fn context(cal: Option<&Calibration>) -> Context<'_> {
    Context {
        seed: 7,
        cal,
        key: "test-gpu",
        started: std::time::Instant::now(),
    }
}

/// The orchestration with stand-ins for the GPU process and PyTorch: what each task is asked,
/// where torch.compile runs, how a failed task and the partial JSON are handled.
#[test]
fn measuring_tasks_with_stand_ins_for_the_gpu_and_pytorch() {
    let s = suite();
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("partial.json");
    let a = args(&[
        "--tasks",
        "swiglu,bias_gelu,rmsnorm_residual",
        "--shapes",
        "small,realistic",
        "--json-out",
        partial.to_str().unwrap(),
    ]);
    let p = plan(&s, &a).unwrap();
    let cal = calibration();
    let mut asked: Vec<(String, Vec<String>, Option<u64>)> = Vec::new();
    let mut child = |req: &BenchRequest| -> ChildOutcome {
        let task = req
            .task_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        asked.push((task.clone(), req.shapes.clone(), req.check.fresh_seed));
        Ok(match task.as_str() {
            "bias_gelu" => Err(ChildFailure::Task("killed after 300 s".into())),
            _ => {
                let mut r = report();
                r.task = task;
                Ok(r)
            }
        })
    };
    let mut torch_calls: Vec<(String, String, Vec<Mode>)> = Vec::new();
    let mut torch = |job: TorchRequest| -> TorchOutcome {
        torch_calls.push((job.td.task.id.clone(), job.shape.clone(), job.modes.clone()));
        Ok(Ok(TorchTimes {
            eager_ms: Some(2.0),
            compile_ms: job.modes.contains(&Mode::Compile).then_some(1.0),
            ..TorchTimes::default()
        }))
    };
    let m = measure(&p, &a, &context(Some(&cal)), &mut child, &mut torch).unwrap();
    assert_eq!(
        asked,
        [
            (
                "swiglu".to_string(),
                vec!["small".to_string(), "realistic".to_string()],
                Some(7)
            ),
            (
                "bias_gelu".to_string(),
                vec!["small".to_string(), "realistic".to_string()],
                Some(7)
            ),
            (
                "rmsnorm_residual".to_string(),
                vec!["small".to_string(), "realistic".to_string()],
                Some(7)
            ),
        ]
    );
    // The stand-in report has shapes realistic and small; compile only at the realistic one.
    let swiglu_calls: Vec<_> = torch_calls.iter().filter(|c| c.0 == "swiglu").collect();
    assert_eq!(swiglu_calls.len(), 2);
    for (_, shape, modes) in &swiglu_calls {
        let want: &[Mode] = if shape == "realistic" {
            &[Mode::Eager, Mode::Compile]
        } else {
            &[Mode::Eager]
        };
        assert_eq!(modes.as_slice(), want, "{shape}");
    }
    assert!(
        torch_calls.iter().all(|c| c.0 != "bias_gelu"),
        "a failed task gets no baseline"
    );
    assert!(m.failed && m.harness.is_none() && m.torch_skip.is_none());
    assert_eq!(m.reports.len(), 2);
    assert_eq!(m.elapsed.len(), 3);
    let lost: Vec<&Row> = m
        .all_rows
        .iter()
        .filter(|r| r.task == "bias_gelu")
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].problem.as_deref(), Some("killed after 300 s"));
    let r = m
        .all_rows
        .iter()
        .find(|r| r.task == "swiglu" && r.shape == "realistic" && r.kernel == "reference")
        .unwrap();
    assert_eq!((r.eager_ms, r.compile_ms), (Some(2.0), Some(1.0)));
    let r = m
        .all_rows
        .iter()
        .find(|r| r.task == "swiglu" && r.shape == "small" && r.kernel == "reference")
        .unwrap();
    assert_eq!((r.eager_ms, r.compile_ms), (Some(2.0), None));
    // The partial reply on disk holds every task measured so far.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&partial).unwrap()).unwrap();
    assert_eq!(v["partial"], true);
    assert_eq!(v["rows"].as_array().unwrap().len(), m.all_rows.len());
}

#[test]
fn no_pytorch_is_asked_once_and_a_harness_failure_stops_the_run() {
    let s = suite();
    let a = args(&[
        "--tasks",
        "swiglu,bias_gelu,rmsnorm_residual",
        "--shapes",
        "realistic",
    ]);
    let p = plan(&s, &a).unwrap();
    let mut n_child = 0;
    let mut child = |_: &BenchRequest| -> ChildOutcome {
        n_child += 1;
        Ok(if n_child == 2 {
            Err(ChildFailure::Harness("NVRTC not found".into()))
        } else {
            Ok(report())
        })
    };
    let mut n_torch = 0;
    let mut torch = |_: TorchRequest| -> TorchOutcome {
        n_torch += 1;
        Err("torch does not import".into())
    };
    let m = measure(&p, &a, &context(None), &mut child, &mut torch).unwrap();
    assert_eq!(n_child, 2, "nothing runs after a harness failure");
    assert_eq!(n_torch, 1, "PyTorch is not asked again once it cannot run");
    assert_eq!(m.torch_skip.as_deref(), Some("torch does not import"));
    assert_eq!(m.harness.as_deref(), Some("bias_gelu: NVRTC not found"));
    assert_eq!(m.reports.len(), 1, "the first task's measurement is kept");
    assert!(m.all_rows.iter().all(|r| r.eager_ms.is_none()));

    // --baseline none never asks.
    let a = args(&["--tasks", "swiglu", "--baseline", "none"]);
    let p = plan(&s, &a).unwrap();
    let mut child = |_: &BenchRequest| -> ChildOutcome { Ok(Ok(report())) };
    let mut torch =
        |_: TorchRequest| -> TorchOutcome { panic!("PyTorch asked under --baseline none") };
    let m = measure(&p, &a, &context(None), &mut child, &mut torch).unwrap();
    assert_eq!(m.torch_skip.as_deref(), Some("--baseline none"));
}

/// Two stand-in GPUs: tasks are spread over both and run at the same time (the first two meet
/// at a rendezvous only parallel lanes can pass), a task's PyTorch baselines run on the lane
/// that timed its kernels, and the results come back in task order.
#[test]
fn two_gpus_share_the_tasks_and_report_in_task_order() {
    use std::sync::{Arc, Condvar};
    let s = suite();
    let a = args(&[
        "--tasks",
        "swiglu,bias_gelu,rmsnorm_residual,softmax_row",
        "--shapes",
        "realistic",
    ]);
    let p = plan(&s, &a).unwrap();
    let meeting = Arc::new((Mutex::new(0usize), Condvar::new()));
    let met = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    // (lane, task) of every kernel run and every baseline.
    let kernels = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let baselines = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let lane = |id: usize| {
        let (meeting, met, calls, kernels, baselines) = (
            Arc::clone(&meeting),
            Arc::clone(&met),
            Arc::clone(&calls),
            Arc::clone(&kernels),
            Arc::clone(&baselines),
        );
        Lane {
            label: Some(format!("GPU {id}")),
            child: Box::new(move |req: &BenchRequest| -> ChildOutcome {
                let task = req
                    .task_dir
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    let (n, cv) = &*meeting;
                    let mut n = n.lock().unwrap();
                    *n += 1;
                    cv.notify_all();
                    let (n, _) = cv
                        .wait_timeout_while(n, Duration::from_secs(5), |n| *n < 2)
                        .unwrap();
                    if *n < 2 {
                        met.store(false, Ordering::SeqCst);
                    }
                }
                kernels.lock().unwrap().push((id, task.clone()));
                let mut r = report();
                r.task = task;
                Ok(Ok(r))
            }),
            torch: Box::new(move |job: TorchRequest| -> TorchOutcome {
                baselines.lock().unwrap().push((id, job.td.task.id.clone()));
                Ok(Ok(TorchTimes {
                    eager_ms: Some(2.0),
                    compile_ms: None,
                    ..TorchTimes::default()
                }))
            }),
        }
    };
    let m = measure_on(&p, &a, &context(None), vec![lane(0), lane(1)]).unwrap();
    assert!(
        met.load(Ordering::SeqCst),
        "the two GPUs worked at the same time"
    );
    let order: Vec<&str> = m
        .reports
        .iter()
        .map(|(td, _)| td.task.id.as_str())
        .collect();
    assert_eq!(
        order,
        ["swiglu", "bias_gelu", "rmsnorm_residual", "softmax_row"]
    );
    let elapsed: Vec<&str> = m.elapsed.iter().map(|e| e.task.as_str()).collect();
    assert_eq!(elapsed, order);
    let kernels = kernels.lock().unwrap().clone();
    assert_eq!(kernels.len(), 4);
    assert!(kernels.iter().any(|k| k.0 == 0) && kernels.iter().any(|k| k.0 == 1));
    for (lane, task) in baselines.lock().unwrap().iter() {
        let (k, _) = kernels.iter().find(|k| &k.1 == task).unwrap();
        assert_eq!(
            k, lane,
            "{task}: PyTorch ran on the GPU that timed its kernels"
        );
    }
    assert!(m.harness.is_none() && m.torch_skip.is_none());
}

#[test]
fn gpus_flag_parses_for_bench() {
    assert_eq!(args(&[]).gpus, None);
    assert_eq!(
        args(&["--gpus", "1,0"]).gpus,
        Some(GpuSelection::List(vec![1, 0]))
    );
    assert_eq!(args(&["--gpus", "all"]).gpus, Some(GpuSelection::All));
    let e = Cmd::try_parse_from(["bench", "--gpus", "0,zero"])
        .err()
        .expect("rejected");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("`zero` is not a GPU ordinal"), "{e}");
}

/// scripts/gpu-check.sh's `mainloops` row: gemm_fp8_rowwise's reference (wgmma) against its
/// mma.sync build, per shape, from the interleaved ratio.
#[test]
fn gpu_check_summary_of_the_mainloops_comparison() {
    let row = |shape: &str, kernel: &str, median_ms: Option<f64>, vs_reference: Option<f64>| Row {
        task: "gemm_fp8_rowwise".into(),
        shape: shape.into(),
        kernel: kernel.into(),
        median_ms,
        vs_reference,
        sol_pct: (kernel == "reference").then_some(61.4),
        problem: median_ms
            .is_none()
            .then(|| "strict check failed: wrong output".into()),
        ..Row::default()
    };
    let rows = vec![
        row("small", "reference", Some(0.1), None),
        row("small", "mma_sync", Some(0.25), Some(0.4)),
        row("awkward", "reference", Some(0.2), None),
        row("awkward", "mma_sync", None, None),
    ];
    let line = gpu_check_summary("mainloops", &serde_json::json!({ "rows": rows }));
    assert_eq!(
        line,
        "small: wgmma 100 us vs mma.sync 250 us = 2.50x, SOL 61%; awkward: strict check failed: wrong output"
    );
}
