use super::runner::*;
use super::*;
use agent::evaluate::KernelRunner;
use bench_suite::pool::{Pool, PoolConfig, WorkerCommand};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use verifier::protocol::EvaluateRequest;
use verifier::runtime::bench::BenchReport;
use verifier::runtime::bench::{CandidateStatus, ShapeFailure};
use verifier::runtime::calibrate::Rate;
use verifier::runtime::telemetry::MeasurementTelemetry;
use verifier::runtime::timing::{ShapeTimings, SubjectTiming};
use verifier::timing::{speedup, StopReason, Summary};
use verifier::verdict::Verdict as V;

fn swiglu() -> TaskDir {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks/activation/swiglu");
    bench_suite::suite::load_task_dir(&dir).unwrap_or_else(|d| panic!("swiglu: {d:?}"))
}

fn correct() -> V {
    V::Correct {
        cases: 6,
        nondeterministic_within_tolerance: Vec::new(),
    }
}

fn subject(name: &str, samples: &[f64]) -> SubjectTiming {
    SubjectTiming {
        name: name.into(),
        samples_ms: samples.to_vec(),
        summary: Summary::of(samples).expect("samples"),
        warmup_calls: 10,
        warmup_ms: 25.0,
        amortized_ms: None,
        amortized_calls: None,
        amortized_method: None,
        revalidation_failure: None,
        throttled_samples: 0,
    }
}

/// The reference at 0.4 ms, the candidate at 0.2 ms, interleaved.
fn shape(name: &str) -> ShapeTimings {
    let (r, c) = (vec![0.4, 0.41, 0.39], vec![0.2, 0.21, 0.19]);
    ShapeTimings {
        shape: name.into(),
        values: vec![("M".into(), 4096), ("N".into(), 4096)],
        pool_sets: 4,
        flush_bytes: 100 << 20,
        stop_reason: StopReason::Converged,
        speedups: vec![speedup(&c, &r)],
        subjects: vec![subject("reference", &r), subject(TIMED_NAME, &c)],
        telemetry: MeasurementTelemetry::default(),
        elapsed_ms: 12.0,
    }
}

fn report(shapes: Vec<ShapeTimings>, verdict: V) -> BenchReport {
    let timed = verdict.is_correct();
    BenchReport {
        task: "swiglu".into(),
        content: "h".into(),
        device: "test".into(),
        subjects: vec!["reference".into(), TIMED_NAME.into()],
        candidates: vec![CandidateStatus {
            name: TIMED_NAME.into(),
            verdict,
            timed,
        }],
        shapes,
        failures: Vec::new(),
        log: Vec::new(),
    }
}

/// 1 TB/s copy bandwidth, 50 TFLOP/s fp32: swiglu `small` (96 MiB moved) has a floor of
/// about 100.7 us.
fn calibration() -> Calibration {
    let rate = |per_s: f64| Rate {
        per_s,
        method: "test".into(),
        repetitions: 1,
        best_ms: 1.0,
    };
    Calibration {
        version: verifier::runtime::calibrate::CALIBRATION_VERSION,
        gpu_key: "test".into(),
        device: "test".into(),
        arch: "sm_90".into(),
        measured_at: 0,
        bandwidth: Some(rate(1e12)),
        copy_kernel: None,
        memcpy_dtod: None,
        peaks: BTreeMap::from([("fp32".to_string(), rate(50e12))]),
        skipped: BTreeMap::new(),
        launch: None,
        telemetry: MeasurementTelemetry::default(),
    }
}

#[test]
fn report_becomes_per_shape_timings_with_reference_and_sol() {
    let td = swiglu();
    let (t, note) = timings_from_report(
        &td.task,
        &report(vec![shape("small")], correct()),
        Some(&calibration()),
    );
    assert_eq!(note, None);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].shape, "small");
    assert!((t[0].median_us.expect("median") - 200.0).abs() < 1e-9);
    assert!((t[0].reference_us.expect("reference") - 400.0).abs() < 1e-6);
    let floor = 2.0 * 4096.0 * 4096.0 * 3.0 / 1e12 * 1e6;
    assert!((t[0].floor_us.expect("floor") - floor).abs() < 1e-6);
    assert!((t[0].sol_pct.expect("sol") - floor / 200.0 * 100.0).abs() < 1e-6);

    // No calibration: times and speedup, no SOL.
    let (t, _) = timings_from_report(&td.task, &report(vec![shape("small")], correct()), None);
    assert_eq!((t[0].sol_pct, t[0].floor_us), (None, None));
    assert!(t[0].reference_us.is_some());
}

#[test]
fn partial_failed_and_revalidated_timings_are_noted() {
    let td = swiglu();
    // One shape timed, one failed: the timed one is kept, the failure noted.
    let mut r = report(vec![shape("small")], correct());
    r.failures.push(ShapeFailure {
        shape: "realistic".into(),
        message: "out of memory".into(),
        subject: None,
    });
    let (t, note) = timings_from_report(&td.task, &r, None);
    assert_eq!(t.len(), 1);
    let note = note.expect("note");
    assert!(
        note.contains("realistic could not be timed: out of memory"),
        "{note}"
    );
    assert!(!note.contains("untimed"), "{note}");

    // Nothing timed: untimed, with the reasons.
    r.shapes.clear();
    let (t, note) = timings_from_report(&td.task, &r, None);
    assert!(t.is_empty());
    let note = note.expect("note");
    assert!(
        note.contains("out of memory") && note.ends_with("the kernel is correct but untimed"),
        "{note}"
    );

    // The candidate's output changed under the timing loop: no time is credited.
    let mut s = shape("small");
    s.subjects[1].revalidation_failure = Some("y differs at [0, 3]".into());
    let (t, note) = timings_from_report(&td.task, &report(vec![s], correct()), None);
    assert!(t.is_empty());
    assert!(note.expect("note").contains("y differs at [0, 3]"));

    // The timing run's own check rejected the kernel.
    let wrong = V::Timeout {
        case: None,
        limit_ms: 1000,
    };
    let (t, note) = timings_from_report(&td.task, &report(Vec::new(), wrong), None);
    assert!(t.is_empty());
    assert!(note.expect("note").contains("found timeout"));
}

fn gpu0() -> GpuSlot {
    GpuSlot {
        ordinal: 0,
        visible: "0".into(),
    }
}

struct FakeTimer(Result<BenchReport, String>, std::sync::atomic::AtomicUsize);

impl KernelTimer for FakeTimer {
    fn time(
        &self,
        _: &GpuSlot,
        task: &TaskDir,
        _: &str,
        _: &str,
        shapes: &[String],
    ) -> Result<BenchReport, String> {
        assert_eq!(task.task.id, "swiglu");
        assert_eq!(shapes, ["small".to_string()]);
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.clone()
    }
}

#[test]
fn only_correct_kernels_are_timed_and_a_timing_failure_keeps_them_correct() {
    let td = swiglu();
    let shapes = shapes_of(&td.task, Some(1));
    assert_eq!(shapes, ["small"]);
    assert!(shapes_of(&td.task, None).is_empty(), "None: every shape");

    let ok = FakeTimer(
        Ok(report(vec![shape("small")], correct())),
        Default::default(),
    );
    let run = verdict_with_timings(correct(), Some(&ok), &gpu0(), &td, "s", "p", &shapes, None);
    assert!(run.verdict.is_correct());
    assert_eq!(run.timings.len(), 1);
    assert_eq!(run.note, None);

    let failing = V::Timeout {
        case: None,
        limit_ms: 1000,
    };
    let run = verdict_with_timings(failing, Some(&ok), &gpu0(), &td, "s", "p", &shapes, None);
    assert!(run.timings.is_empty() && run.note.is_none());
    assert_eq!(
        ok.1.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a failing kernel is not timed"
    );

    let broken = FakeTimer(
        Err("the timing run failed: did not finish within 600 s".into()),
        Default::default(),
    );
    let run = verdict_with_timings(
        correct(),
        Some(&broken),
        &gpu0(),
        &td,
        "s",
        "p",
        &shapes,
        None,
    );
    assert!(
        run.verdict.is_correct(),
        "a timing failure is not the kernel's verdict"
    );
    assert!(run.timings.is_empty());
    let note = run.note.expect("note");
    assert!(
        note.contains("did not finish within 600 s") && note.contains("correct but untimed"),
        "{note}"
    );

    let run = verdict_with_timings(correct(), None, &gpu0(), &td, "s", "p", &shapes, None);
    assert!(run.timings.is_empty() && run.note.is_none());
}

#[test]
fn restricted_runs_get_their_own_protocol_label() {
    assert_eq!(gpu_protocol(None), GPU_PROTOCOL);
    assert_eq!(gpu_protocol(Some(2)), format!("{GPU_PROTOCOL}+first2"));
    assert_ne!(gpu_protocol(Some(1)), gpu_protocol(None));
}

/// Two fake GPUs. Each records what runs on it; verification and timing both sleep, so
/// that overlap would be seen. The first two verifications meet at a rendezvous that only
/// two evaluations running at once can pass: GPUs work in parallel.
#[derive(Default)]
struct FakeGpus {
    /// Per GPU: how many things run on it now (must never exceed 1).
    busy: [AtomicUsize; 2],
    /// Per GPU: the most that ever ran on it at once.
    most: [AtomicUsize; 2],
    /// (kernel source, GPU index) of each verification and of each timing.
    verified: Mutex<Vec<(String, usize)>>,
    timed: Mutex<Vec<(String, u32, String)>>,
    rendezvous: (Mutex<usize>, std::sync::Condvar),
    calls: AtomicUsize,
    never_met: AtomicBool,
}

impl FakeGpus {
    fn enter(&self, gpu: usize) {
        let now = self.busy[gpu].fetch_add(1, Ordering::SeqCst) + 1;
        self.most[gpu].fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self, gpu: usize) {
        self.busy[gpu].fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits (at most 5 s) until two callers are here; false if the other never came.
    fn meet(&self) -> bool {
        let (count, cv) = &self.rendezvous;
        let mut n = count.lock().unwrap();
        *n += 1;
        if *n >= 2 {
            cv.notify_all();
            return true;
        }
        let (n, _) = cv
            .wait_timeout_while(n, Duration::from_secs(5), |n| *n < 2)
            .unwrap();
        *n >= 2
    }
}

struct FakeVerify(Arc<FakeGpus>);

impl Verify for FakeVerify {
    fn verify(&self, gpu: usize, r: EvaluateRequest) -> Result<V, String> {
        let f = &self.0;
        f.enter(gpu);
        if f.calls.fetch_add(1, Ordering::SeqCst) < 2 && !f.meet() {
            f.never_met.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(5));
        f.verified.lock().unwrap().push((r.source.clone(), gpu));
        f.leave(gpu);
        // Every third kernel is wrong, and must not be timed.
        if r.source.ends_with('2') || r.source.ends_with('5') || r.source.ends_with('8') {
            Ok(V::Timeout {
                case: None,
                limit_ms: 1,
            })
        } else {
            Ok(correct())
        }
    }
}

struct SlotTimer(Arc<FakeGpus>, Vec<GpuSlot>);

impl KernelTimer for SlotTimer {
    fn time(
        &self,
        gpu: &GpuSlot,
        _: &TaskDir,
        source: &str,
        _: &str,
        _: &[String],
    ) -> Result<BenchReport, String> {
        let f = &self.0;
        let i = self
            .1
            .iter()
            .position(|s| s == gpu)
            .expect("a GPU of the run");
        f.enter(i);
        std::thread::sleep(Duration::from_millis(5));
        f.timed
            .lock()
            .unwrap()
            .push((source.to_string(), gpu.ordinal, gpu.visible.clone()));
        f.leave(i);
        Ok(report(vec![shape("small")], correct()))
    }
}

#[test]
fn gpus_work_in_parallel_one_thing_at_a_time_each_and_time_what_they_verified() {
    let td = Arc::new(swiglu());
    let fake = Arc::new(FakeGpus::default());
    // Ordinals 3 and 5 of this process, shown to children as GPU-b and GPU-d.
    let gpus = vec![
        GpuSlot {
            ordinal: 3,
            visible: "GPU-b".into(),
        },
        GpuSlot {
            ordinal: 5,
            visible: "GPU-d".into(),
        },
    ];
    let runner = PoolRunner::new(
        Box::new(FakeVerify(Arc::clone(&fake))),
        gpus.clone(),
        Some(Box::new(SlotTimer(Arc::clone(&fake), gpus.clone()))),
        None,
        Some(1),
    );
    let runs: Vec<String> = (0..12).map(|i| format!("kernel-{i}")).collect();
    let done = map_in_parallel(&runs, 4, |src| {
        runner
            .run(&td, src, "plan")
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .expect("every run");
    assert_eq!(done.len(), 12);
    for (src, r) in runs.iter().zip(&done) {
        let wrong = src.ends_with('2') || src.ends_with('5') || src.ends_with('8');
        assert_eq!(r.verdict.is_correct(), !wrong, "{src}");
        assert_eq!(r.timings.is_empty(), wrong, "{src}");
    }
    for g in 0..2 {
        assert_eq!(
            fake.most[g].load(Ordering::SeqCst),
            1,
            "GPU {g} never ran two things at once"
        );
    }
    let verified = fake.verified.lock().unwrap().clone();
    let timed = fake.timed.lock().unwrap().clone();
    assert_eq!(verified.len(), 12);
    assert_eq!(timed.len(), 9, "only correct kernels are timed");
    for (src, ordinal, visible) in &timed {
        let (_, g) = verified.iter().find(|(s, _)| s == src).expect("verified");
        assert_eq!(
            &gpus[*g].ordinal, ordinal,
            "{src} timed where it was verified"
        );
        assert_eq!(&gpus[*g].visible, visible, "{src}");
    }
    assert!(
        verified.iter().any(|(_, g)| *g == 0) && verified.iter().any(|(_, g)| *g == 1),
        "both GPUs were used: {verified:?}"
    );
    assert!(
        !fake.never_met.load(Ordering::SeqCst),
        "the first two evaluations ran at the same time, on two GPUs"
    );
}

#[test]
fn parallel_map_keeps_order_and_stops_at_the_first_error() {
    let items: Vec<u32> = (0..40).collect();
    let out = map_in_parallel(&items, 3, |x| Ok(x * 2)).unwrap();
    assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
    assert!(map_in_parallel(&Vec::<u32>::new(), 2, |x| Ok(*x))
        .unwrap()
        .is_empty());

    let failing = |seen: &AtomicUsize, x: &u32| {
        seen.fetch_add(1, Ordering::SeqCst);
        if *x == 3 {
            anyhow::bail!("store is gone at {x}")
        }
        Ok(*x)
    };
    // One thread: nothing after the failing item starts.
    let seen = AtomicUsize::new(0);
    let e = map_in_parallel(&items, 1, |x| failing(&seen, x)).unwrap_err();
    assert_eq!(e.to_string(), "store is gone at 3");
    assert_eq!(seen.load(Ordering::SeqCst), 4);
    let seen = AtomicUsize::new(0);
    let e = map_in_parallel(&items, 3, |x| failing(&seen, x)).unwrap_err();
    assert_eq!(e.to_string(), "store is gone at 3");
}

#[test]
fn default_parallelism_keeps_every_gpu_busy() {
    assert_eq!(default_parallel(1, 1), 1);
    assert_eq!(default_parallel(10, 1), 4);
    assert_eq!(default_parallel(3, 2), 3);
    assert_eq!(default_parallel(10, 8), 8);
    assert_eq!(default_parallel(0, 2), 1);
}

fn parse(args: &[&str]) -> Result<crate::cli::Cli, clap::Error> {
    use clap::Parser;
    crate::cli::Cli::try_parse_from(std::iter::once("ksmith").chain(args.iter().copied()))
}

fn gpus_of(cli: crate::cli::Cli) -> Option<GpuSelection> {
    match cli.command {
        crate::cli::Command::Run(a) => a.gpus,
        crate::cli::Command::Replay(a) => a.gpus,
        _ => panic!("not run or replay"),
    }
}

#[test]
fn gpus_flag_parses_on_run_and_replay() {
    let run = |extra: &[&str]| {
        let mut v = vec!["run", "--model", "m", "--tasks", "swiglu"];
        v.extend_from_slice(extra);
        parse(&v)
    };
    assert_eq!(gpus_of(run(&[]).unwrap()), None);
    assert_eq!(
        gpus_of(run(&["--gpus", "0,1"]).unwrap()),
        Some(GpuSelection::List(vec![0, 1]))
    );
    assert_eq!(
        gpus_of(run(&["--gpus", "all"]).unwrap()),
        Some(GpuSelection::All)
    );
    assert_eq!(
        gpus_of(parse(&["replay", "--run", "r", "--gpus=2"]).unwrap()),
        Some(GpuSelection::List(vec![2]))
    );
    for (bad, why) in [
        ("x", "`x` is not a GPU ordinal"),
        ("0,0", "GPU 0 is listed twice"),
        ("", "empty"),
        ("1,", "empty entry"),
    ] {
        for e in [
            run(&["--gpus", bad]).expect_err(bad),
            parse(&["replay", "--run", "r", "--gpus", bad]).expect_err(bad),
        ] {
            assert_eq!(e.exit_code(), 2, "{bad}");
            let text = e.to_string();
            assert!(
                text.contains("--gpus") && text.contains(why),
                "{bad}: {text}"
            );
        }
    }
}

/// A worker stand-in that reports the device it was given as the verdict's case count.
const DEVICE_ECHO: &str = r#"
while IFS= read -r line; do
  [[ $line =~ \"id\":([0-9]+) ]] && id=${BASH_REMATCH[1]}
  sleep 0.05
  printf '{"id":%s,"kind":"evaluated","verdict":{"verdict":"correct","cases":%s,"nondeterministic_within_tolerance":[]},"elapsed_ms":1}\n' "$id" "$CUDA_VISIBLE_DEVICES"
done
"#;

struct VisibleTimer(Mutex<Vec<(String, String)>>);

impl KernelTimer for Arc<VisibleTimer> {
    fn time(
        &self,
        gpu: &GpuSlot,
        _: &TaskDir,
        source: &str,
        _: &str,
        _: &[String],
    ) -> Result<BenchReport, String> {
        self.0
            .lock()
            .unwrap()
            .push((source.to_string(), gpu.visible.clone()));
        Ok(report(vec![shape("small")], correct()))
    }
}

/// The real worker pool behind the runner: the worker that verifies a kernel and the
/// timing child see the same CUDA_VISIBLE_DEVICES, for every kernel, with both GPUs used.
#[test]
fn the_verifying_worker_and_the_timing_child_see_the_same_device() {
    if std::env::var_os("CUDA_VISIBLE_DEVICES").is_some() {
        eprintln!("SKIPPED: CUDA_VISIBLE_DEVICES is set here; the stand-in echoes numbers");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("worker.sh");
    std::fs::write(&script, DEVICE_ECHO).unwrap();
    let command = WorkerCommand {
        program: "bash".into(),
        args: vec![script.display().to_string()],
        env: Vec::new(),
    };
    let gpus = GpuSlot::for_ordinals(&[0, 1]);
    let pool = Pool::new(PoolConfig::per_gpu(
        command,
        &[0, 1],
        Duration::from_secs(10),
    ));
    let timer = Arc::new(VisibleTimer(Mutex::new(Vec::new())));
    let runner = PoolRunner::new(
        Box::new(pool),
        gpus,
        Some(Box::new(Arc::clone(&timer))),
        None,
        Some(1),
    );
    let td = swiglu();
    let sources: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let verdicts = map_in_parallel(&sources, 4, |src| {
        runner
            .run(&td, src, "plan")
            .map(|r| r.verdict)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .unwrap();
    let timed = timer.0.lock().unwrap().clone();
    assert_eq!(timed.len(), 8);
    let mut seen = std::collections::BTreeSet::new();
    for (src, v) in sources.iter().zip(&verdicts) {
        let V::Correct { cases, .. } = v else {
            panic!("{src}: {v:?}")
        };
        let (_, visible) = timed.iter().find(|(s, _)| s == src).unwrap();
        assert_eq!(&cases.to_string(), visible, "{src}");
        seen.insert(visible.clone());
    }
    assert_eq!(seen.len(), 2, "both GPUs served: {seen:?}");
}
