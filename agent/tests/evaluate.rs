//! The evaluators on a real task with real NVRTC: what each kind of broken candidate turns into,
//! and that the GPU evaluator hands only statically sound kernels to its runner.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agent::evaluate::{DryRunEvaluator, GpuEvaluator, KernelRun, KernelRunner, TaskMap};
use agent::prompt::ShapeTiming;
use agent::{Evaluator, Verdict, VerdictKind};
use bench_suite::suite::{load_task_dir, TaskDir};
use verifier::nvrtc::compiler_for_tests as compiler;
use verifier::nvrtc::Arch;

fn task() -> TaskDir {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tasks/activation/swiglu");
    load_task_dir(&dir).unwrap_or_else(|d| panic!("swiglu does not load: {d:?}"))
}

fn tasks(t: TaskDir) -> TaskMap {
    [(t.task.id.clone(), Arc::new(t))].into_iter().collect()
}

fn reference_plan(t: &TaskDir) -> String {
    std::fs::read_to_string(t.dir.join("reference.toml")).expect("reference.toml")
}

/// ptxas (sm_90a) serializes these wgmmas: for n == 0 the accumulators come from plain moves and
/// reach the final wait, inside the group the loop leaves open (C7515).
const C7515_KERNEL: &str = r#"
extern "C" __global__ void serialized_wgmma(float* out, unsigned long long da, unsigned long long db, int n) {
    float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
    for (int i = 0; i < n; ++i) {
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0, %1, %2, %3}, %4, %5, 1, 1, 1, 0, 0;\n"
                     : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3) : "l"(da), "l"(db));
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    out[threadIdx.x] = d0 + d1 + d2 + d3;
}
"#;

#[test]
fn dry_run_verdicts_for_good_and_broken_candidates() {
    let Some(comp) = compiler("dry_run_verdicts") else {
        return;
    };
    let t = task();
    let (src, plan) = (t.reference_source.clone(), reference_plan(&t));
    let ev = DryRunEvaluator::new(tasks(t), comp, Arch::DEFAULT, 2);

    let ok = ev.evaluate("swiglu", &src, &plan).expect("evaluates");
    assert_eq!(ok.verdict, Verdict::Compiled);
    let res = ok.resources.expect("ptxas resources for the Judge");
    assert!(
        res.contains("swiglu_bf16: ") && res.contains("registers"),
        "{res}"
    );
    // Arch::DEFAULT is sm_90a: the launches are modelled on an H100.
    assert!(
        res.contains("Launches on NVIDIA H100 80GB HBM3 (132 SMs; theoretical)"),
        "{res}"
    );
    assert!(
        res.contains("At shape small:\n  swiglu_bf16: 4096 blocks x 256 threads, 8 blocks/SM (limited by warps), occupancy 100%, 3.88 waves"),
        "{res}"
    );
    assert!(!res.contains("emulated"), "{res}");
    assert!(!res.contains("Potential Performance Loss"), "{res}");

    // A wgmma loop whose zero-trip path defines the accumulators inside an open wgmma group:
    // ptxas serializes the wgmmas and says so only as `info`; the report passes it on.
    let serialized = format!("{src}\n{C7515_KERNEL}");
    let e = ev
        .evaluate("swiglu", &serialized, &plan)
        .expect("evaluates");
    assert_eq!(e.verdict, Verdict::Compiled, "{}", e.feedback);
    let res = e.resources.expect("report");
    assert!(
        res.contains("ptxas: (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized"),
        "{res}"
    );

    // A launch that leaves SMs idle says so.
    let narrow = plan.replace("grid = [\"min(ceil_div(M*N, 2048), 4096)\"]", "grid = [64]");
    assert_ne!(narrow, plan);
    let e = ev.evaluate("swiglu", &src, &narrow).expect("evaluates");
    let res = e.resources.expect("report");
    assert!(res.contains("-- 64 of 132 SMs busy (64 blocks)"), "{res}");

    // A plan whose last argument is an int where the kernel takes a long long.
    let narrow_arg = plan.replace("\"i64:M*N\"", "\"M*N\"");
    assert_ne!(narrow_arg, plan);
    let e = ev.evaluate("swiglu", &src, &narrow_arg).expect("evaluates");
    assert_eq!(e.verdict, Verdict::Checked(VerdictKind::InvalidPlan));
    assert!(
        e.feedback
            .contains("argument 3 is an i32 (4 bytes) but the kernel's parameter 3 is 8 bytes"),
        "{}",
        e.feedback
    );

    // A plan naming a kernel the source does not define: located, with the kernels it has.
    let bad_plan = plan.replace("kernel = \"swiglu_bf16\"", "kernel = \"swiglu_v2\"");
    let e = ev.evaluate("swiglu", &src, &bad_plan).expect("evaluates");
    assert_eq!(e.verdict, Verdict::Checked(VerdictKind::InvalidPlan));
    assert!(e.feedback.contains("launch.toml:"), "{}", e.feedback);
    assert!(e.feedback.contains("swiglu_v2"), "{}", e.feedback);
    assert!(
        e.feedback.contains("defines these kernels: swiglu_bf16"),
        "{}",
        e.feedback
    );

    // Unparseable TOML.
    let e = ev
        .evaluate("swiglu", &src, "[[launch]\nkernel = ")
        .expect("evaluates");
    assert_eq!(e.verdict, Verdict::Checked(VerdictKind::InvalidPlan));

    // A compile error: the log names the file the model wrote and the line.
    let broken = format!("{src}\n__device__ int h() {{ return nope_not_declared; }}\n");
    let e = ev.evaluate("swiglu", &broken, &plan).expect("evaluates");
    assert_eq!(e.verdict, Verdict::Checked(VerdictKind::CompileError));
    assert!(e.feedback.contains("kernel.cu("), "{}", e.feedback);
    assert!(e.feedback.contains("nope_not_declared"), "{}", e.feedback);

    // An include outside the allowlist never reaches NVRTC.
    let sneaky = format!("#include \"/etc/passwd\"\n{src}");
    let e = ev.evaluate("swiglu", &sneaky, &plan).expect("evaluates");
    assert_eq!(e.verdict, Verdict::Checked(VerdictKind::CompileError));
    assert!(e.feedback.contains("disallowed #include"), "{}", e.feedback);

    // A task outside the run is a harness error, not a verdict.
    assert!(ev.evaluate("no_such_task", &src, &plan).is_err());
}

struct FakeRunner {
    calls: AtomicUsize,
    answer: Result<verifier::verdict::Verdict, String>,
    /// A correct kernel whose timing failed: no timings, this reason instead.
    untimed: Option<String>,
    /// The profile summary (or, `Err`, why there is none) the runner reports.
    profile: Option<Result<String, String>>,
}

#[test]
fn the_report_names_fp8_mma_sync_that_hopper_only_emulates() {
    let Some(comp) = compiler("fp8_emulated") else {
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tasks/gemm/gemm_fp8_rowwise");
    let t = load_task_dir(&dir).unwrap_or_else(|d| panic!("gemm_fp8_rowwise: {d:?}"));
    let (src, plan) = (t.reference_source.clone(), reference_plan(&t));
    // sm_90a (the default on an H100) takes the reference's wgmma main loop: nothing emulated.
    for (arch, emulated) in [("sm_90", true), ("sm_90a", false), ("sm_89", false)] {
        let ev = DryRunEvaluator::new(tasks(t.clone()), comp.clone(), arch.parse().unwrap(), 1);
        let e = ev
            .evaluate("gemm_fp8_rowwise", &src, &plan)
            .expect("evaluates");
        assert_eq!(e.verdict, Verdict::Compiled, "{arch}: {}", e.feedback);
        let res = e.resources.expect("report");
        assert_eq!(
            res.contains("FP8 mma.sync instruction(s) in the PTX are emulated on sm_90"),
            emulated,
            "{arch}: {res}"
        );
    }
}

fn timing() -> Vec<ShapeTiming> {
    vec![ShapeTiming {
        shape: "small".into(),
        median_us: Some(50.0),
        reference_us: Some(100.0),
        sol_pct: Some(80.0),
        floor_us: None,
    }]
}

impl KernelRunner for FakeRunner {
    fn run(&self, task: &TaskDir, _source: &str, _plan: &str) -> Result<KernelRun, String> {
        assert_eq!(task.task.id, "swiglu");
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.answer.clone().map(|verdict| KernelRun {
            verdict,
            timings: if self.untimed.is_some() {
                Vec::new()
            } else {
                timing()
            },
            note: self.untimed.clone(),
            profile_summary: self.profile.clone().and_then(|p| p.ok()),
            profile_note: self.profile.clone().and_then(|p| p.err()),
        })
    }
}

#[test]
fn gpu_evaluator_runs_only_sound_kernels_and_maps_verdicts() {
    let Some(comp) = compiler("gpu_evaluator") else {
        return;
    };
    let t = task();
    let (src, plan) = (t.reference_source.clone(), reference_plan(&t));
    let runner = Arc::new(FakeRunner {
        calls: AtomicUsize::new(0),
        answer: Ok(verifier::verdict::Verdict::Timeout {
            case: None,
            limit_ms: 1000,
        }),
        untimed: None,
        profile: None,
    });
    let ev = GpuEvaluator::new(
        tasks(t.clone()),
        comp.clone(),
        Arch::DEFAULT,
        runner.clone(),
        1,
    );
    let e = ev.evaluate("swiglu", &src, &plan).expect("evaluates");
    assert_eq!(e.verdict, Verdict::Checked(VerdictKind::Timeout));
    assert!(e.timings.is_empty(), "a failing kernel carries no timings");
    assert!(!e.feedback.is_empty());
    assert!(e.resources.is_some());
    assert_eq!(runner.calls.load(Ordering::SeqCst), 1);

    let broken = format!("{src}\nint x = ;\n");
    let e = ev.evaluate("swiglu", &broken, &plan).expect("evaluates");
    assert_eq!(e.verdict, Verdict::Checked(VerdictKind::CompileError));
    assert_eq!(
        runner.calls.load(Ordering::SeqCst),
        1,
        "a kernel that does not compile never reaches the GPU"
    );

    let correct = Arc::new(FakeRunner {
        calls: AtomicUsize::new(0),
        answer: Ok(verifier::verdict::Verdict::Correct {
            cases: 9,
            nondeterministic_within_tolerance: Vec::new(),
        }),
        untimed: None,
        profile: None,
    });
    // The launch report uses the GPU's own limits: an H100 PCIe's 114 SMs, not the model's 132.
    let pcie = verifier::runtime::device::DeviceInfo {
        name: "NVIDIA H100 PCIe".into(),
        sm_count: 114,
        ..verifier::runtime::device::DeviceInfo::preset("h100").expect("preset")
    };
    let ev = GpuEvaluator::new(tasks(t.clone()), comp.clone(), Arch::DEFAULT, correct, 1)
        .on_device(pcie);
    let e = ev.evaluate("swiglu", &src, &plan).expect("evaluates");
    assert_eq!(e.verdict, Verdict::CORRECT);
    let res = e.resources.as_deref().unwrap_or("");
    assert!(
        res.contains("Launches on NVIDIA H100 PCIe (114 SMs; theoretical)")
            && res.contains("4096 blocks x 256 threads, 8 blocks/SM (limited by warps), occupancy 100%, 4.49 waves"),
        "{res}"
    );
    assert_eq!(e.speedup(), Some(2.0));
    assert_eq!(e.timings, timing());
    assert!(!e.feedback.contains("Timing:"), "{}", e.feedback);

    // A timing failure leaves a correct kernel correct, untimed, with the reason in its feedback.
    let untimed = Arc::new(FakeRunner {
        calls: AtomicUsize::new(0),
        answer: Ok(verifier::verdict::Verdict::Correct {
            cases: 9,
            nondeterministic_within_tolerance: Vec::new(),
        }),
        untimed: Some("the timing run failed: did not finish within 300 s".into()),
        profile: None,
    });
    let ev = GpuEvaluator::new(tasks(t.clone()), comp.clone(), Arch::DEFAULT, untimed, 1);
    let e = ev.evaluate("swiglu", &src, &plan).expect("evaluates");
    assert_eq!(e.verdict, Verdict::CORRECT);
    assert!(e.timings.is_empty());
    assert_eq!(e.speedup(), None);
    assert!(
        e.feedback
            .contains("Timing: the timing run failed: did not finish within 300 s"),
        "{}",
        e.feedback
    );

    // A profiled correct kernel carries its summary; a profile that failed is a note only.
    for (profile, summary, note) in [
        (
            Ok("`swiglu_bf16` (1.0 us) is memory-bound".to_string()),
            true,
            false,
        ),
        (
            Err("ncu not found (looked at ncu on PATH)".to_string()),
            false,
            true,
        ),
    ] {
        let profiled = Arc::new(FakeRunner {
            calls: AtomicUsize::new(0),
            answer: Ok(verifier::verdict::Verdict::Correct {
                cases: 9,
                nondeterministic_within_tolerance: Vec::new(),
            }),
            untimed: None,
            profile: Some(profile),
        });
        let ev = GpuEvaluator::new(tasks(t.clone()), comp.clone(), Arch::DEFAULT, profiled, 1);
        let e = ev.evaluate("swiglu", &src, &plan).expect("evaluates");
        assert_eq!(e.verdict, Verdict::CORRECT);
        assert_eq!(e.profile_summary.is_some(), summary, "{e:?}");
        assert_eq!(
            e.feedback
                .contains("Profile: ncu not found (looked at ncu on PATH)"),
            note,
            "{}",
            e.feedback
        );
    }
    // A failing kernel's profile (there should be none) never reaches the Judge.
    let wrong = Arc::new(FakeRunner {
        calls: AtomicUsize::new(0),
        answer: Ok(verifier::verdict::Verdict::Timeout {
            case: None,
            limit_ms: 1000,
        }),
        untimed: None,
        profile: Some(Ok("stale".into())),
    });
    let ev = GpuEvaluator::new(tasks(t.clone()), comp.clone(), Arch::DEFAULT, wrong, 1);
    let e = ev.evaluate("swiglu", &src, &plan).expect("evaluates");
    assert_eq!(e.profile_summary, None);

    let failing = Arc::new(FakeRunner {
        calls: AtomicUsize::new(0),
        answer: Err("worker would not start".into()),
        untimed: None,
        profile: None,
    });
    let ev = GpuEvaluator::new(tasks(t), comp, Arch::DEFAULT, failing, 1);
    let err = ev
        .evaluate("swiglu", &src, &plan)
        .expect_err("harness failure");
    assert!(err.0.contains("worker would not start"), "{err}");
}
