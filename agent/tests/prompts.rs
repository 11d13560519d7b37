//! Rendering every prompt from a realistic context, with and without device facts.

use agent::prompt::{
    tail_lines, CoderMode, DeviceFacts, HistoryEntry, IoKind, IoRow, KernelSnapshot, NamedValue,
    ParamRow, PromptContext, PromptError, PromptRenderer, Rules, ShapeRow, ShapeTiming,
    TaskContext,
};

fn task() -> TaskContext {
    TaskContext {
        id: "rmsnorm_residual".into(),
        title: "Fused residual add + RMSNorm".into(),
        category: "normalization".into(),
        source: Some("vLLM fused_add_rms_norm".into()),
        description: Some("y = RMSNorm(x + r) * g; also returns h = x + r.\n".into()),
        spec_py: "import torch\n\nclass Model(torch.nn.Module):\n    def forward(self, x, r, g):\n        h = x + r\n        return h * torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + 1e-6) * g, h\n".into(),
        params: vec![
            ParamRow { name: "M".into(), range: "min 1".into(), description: None },
            ParamRow {
                name: "N".into(),
                range: "64 to 65536, multiple of 8".into(),
                description: Some("hidden size".into()),
            },
        ],
        io: vec![
            IoRow {
                name: "x".into(),
                kind: IoKind::Input,
                dtype: "bf16".into(),
                cuda_type: Some("__nv_bfloat16".into()),
                shape: vec!["M".into(), "N".into()],
                role: "activation".into(),
                description: None,
            },
            IoRow {
                name: "g".into(),
                kind: IoKind::Input,
                dtype: "bf16".into(),
                cuda_type: Some("__nv_bfloat16".into()),
                shape: vec!["N".into()],
                role: "weight".into(),
                description: Some("gain".into()),
            },
            IoRow {
                name: "y".into(),
                kind: IoKind::Output,
                dtype: "bf16".into(),
                cuda_type: Some("__nv_bfloat16".into()),
                shape: vec!["M".into(), "N".into()],
                role: "output".into(),
                description: None,
            },
        ],
        shapes: vec![ShapeRow {
            name: "serving".into(),
            values: vec![
                NamedValue { name: "M".into(), value: 16384 },
                NamedValue { name: "N".into(), value: 8192 },
            ],
        }],
        tolerance: "every output within normalized max error 1e-2 of the reference".into(),
        roofline: Some("bytes = 2*M*N*3 + 2*N, flops = 4*M*N, peak fp32".into()),
    }
}

fn kernel(verdict: &str) -> KernelSnapshot {
    KernelSnapshot {
        source: "extern \"C\" __global__ void rmsnorm_residual(const __nv_bfloat16* x) {}\n".into(),
        plan: "[[launch]]\nkernel = \"rmsnorm_residual\"\ngrid = [\"M\"]\nblock = [256]\nargs = [\"x\"]\n".into(),
        verdict: Some(verdict.into()),
        timings: vec![ShapeTiming {
            shape: "serving".into(),
            median_us: Some(400.0),
            reference_us: Some(500.0),
            sol_pct: Some(71.234),
            floor_us: None,
        }],
        resources: Some("rmsnorm_residual: 32 registers, 0 spills, 1 KiB smem".into()),
        profile_summary: Some("dram__throughput 71%\nwarp stall long_scoreboard 40%".into()),
    }
}

fn context(device: DeviceFacts) -> PromptContext {
    PromptContext {
        task: task(),
        device,
        rules: Rules {
            header_allowlist: vec!["cuda_bf16.h".into(), "cuda_fp16.h".into()],
            fast_math: false,
            extra: vec!["Keep accumulations in f32.".into()],
        },
        best: Some(kernel("correct")),
        history: vec![
            HistoryEntry {
                round: 1,
                action: "initial".into(),
                verdict: "compile_error".into(),
                speedup: None,
                summary: "identifier \"__nv_bfloat16\" is undefined".into(),
            },
            HistoryEntry {
                round: 2,
                action: "repair".into(),
                verdict: "correct".into(),
                speedup: Some(1.25),
                summary: "added cuda_bf16.h".into(),
            },
        ],
        notice: None,
    }
}

fn h100() -> DeviceFacts {
    DeviceFacts {
        name: Some("NVIDIA H100 80GB HBM3".into()),
        compute_capability: Some((9, 0)),
        compile_target: Some("sm_90a".into()),
        sm_count: Some(132),
        smem_per_block_bytes: Some(48 * 1024),
        smem_per_block_optin_bytes: Some(227 * 1024),
        smem_per_sm_bytes: Some(228 * 1024),
        registers_per_block: Some(65536),
        registers_per_sm: Some(65536),
        max_threads_per_block: Some(1024),
        max_threads_per_sm: Some(2048),
        l2_bytes: Some(50 * 1024 * 1024),
        measured_bandwidth_gbps: Some(2950.4),
        peaks_tflops: vec![("fp32".into(), 51.2), ("bf16_tensor".into(), 756.0)],
        launch_overhead_us: Some(2.1),
        driver_version: Some("570.124".into()),
        nvrtc_version: None,
    }
}

fn all_prompts(r: &PromptRenderer, ctx: &PromptContext) -> Vec<(&'static str, String)> {
    let k = kernel("wrong_output");
    vec![
        (
            "coder/initial",
            r.coder(ctx, &CoderMode::Initial).expect("coder initial"),
        ),
        (
            "coder/repair",
            r.coder(
                ctx,
                &CoderMode::Repair {
                    current: k.clone(),
                    feedback: "wrong_output on shape serving, seed 7: max normalized error 0.5"
                        .into(),
                    advice: Some("critical_issue: row sum not reduced across warps".into()),
                },
            )
            .expect("coder repair"),
        ),
        (
            "coder/optimize",
            r.coder(
                ctx,
                &CoderMode::Optimize {
                    current: kernel("correct"),
                    advice: Some("bottleneck: scalar bf16 loads".into()),
                },
            )
            .expect("coder optimize"),
        ),
        (
            "judge_correction",
            r.judge_correction(ctx, &k, "error: expected a \";\"")
                .expect("judge correction"),
        ),
        (
            "judge_optimization",
            r.judge_optimization(ctx, &kernel("correct"))
                .expect("judge optimization"),
        ),
        (
            "mutate",
            r.mutate(ctx, &kernel("correct"), None).expect("mutate"),
        ),
        (
            "mutate/directed",
            r.mutate(ctx, &kernel("correct"), Some("use 128-bit loads"))
                .expect("mutate"),
        ),
        (
            "crossover",
            r.crossover(ctx, &kernel("correct"), &kernel("correct"))
                .expect("crossover"),
        ),
    ]
}

#[test]
fn every_prompt_renders_without_a_gpu() {
    let r = PromptRenderer::builtin().expect("templates compile");
    let ctx = context(DeviceFacts::default());
    for (name, p) in all_prompts(&r, &ctx) {
        assert!(
            !p.contains("{{") && !p.contains("{%"),
            "{name}: unrendered tag"
        );
        assert!(p.contains("- GPU: unknown"), "{name}:\n{p}");
        assert!(p.contains("- SMs: unknown"), "{name}");
        assert!(p.contains("- measured memory bandwidth: unknown"), "{name}");
        assert!(p.contains("Fused residual add + RMSNorm"), "{name}");
        assert!(p.contains("def forward(self, x, r, g):"), "{name}");
        assert!(
            p.contains("| `x` | input | bf16 | `__nv_bfloat16` | [M, N] | activation |"),
            "{name}:\n{p}"
        );
        assert!(
            p.contains("| `g` | input | bf16 | `__nv_bfloat16` | [N] | weight: gain |"),
            "{name}"
        );
        assert!(p.contains("- serving: M=16384, N=8192"), "{name}:\n{p}");
        assert!(p.contains("normalized max error 1e-2"), "{name}");
        // The candidate's timings render, with speedup computed and SOL rounded.
        assert!(
            p.contains("| serving | 400 | 500 | 1.25x | 71.2% |"),
            "{name}:\n{p}"
        );
        assert!(!p.contains("&quot;"), "{name}: HTML-escaped");
        assert!(
            !p.contains("\n\n\n"),
            "{name}: runs of blank lines left in:\n{p}"
        );
        assert!(
            p.ends_with("\n") && !p.starts_with(char::is_whitespace),
            "{name}"
        );
    }
}

#[test]
fn device_facts_are_formatted() {
    let r = PromptRenderer::builtin().expect("templates compile");
    let p = r
        .coder(&context(h100()), &CoderMode::Initial)
        .expect("render");
    for needle in [
        "- GPU: NVIDIA H100 80GB HBM3",
        "- compute capability: 9.0 (sm_90)",
        "- kernels are compiled for: sm_90a (arch-specific: this GPU's own instructions, such as wgmma and setmaxnreg on sm_90a, compile)",
        "- SMs: 132",
        "- shared memory per block: 48 KiB (227 KiB with opt-in)",
        "- shared memory per SM: 228 KiB",
        "- 32-bit registers per block / per SM: 65536 / 65536",
        "- L2 cache: 50 MiB",
        "- measured memory bandwidth: 2950 GB/s",
        "- measured peak rates: fp32 51.2 TFLOP/s, bf16_tensor 756 TFLOP/s",
        "- measured launch overhead: 2.10 us per launch, even of an empty kernel",
        "- driver: 570.124",
    ] {
        assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
    }
    assert!(!p.contains("NVRTC:"));
    // Without a calibration that measured it, no line (not an `unknown` that says nothing).
    let p = r
        .coder(&context(DeviceFacts::default()), &CoderMode::Initial)
        .expect("render");
    assert!(!p.contains("launch overhead"));
}

/// Hopper's wgmma facts come with the sm_90a target only, in every prompt that shows the device.
#[test]
fn hopper_facts_follow_the_compile_target() {
    let r = PromptRenderer::builtin().expect("templates compile");
    let needles = [
        "Hopper facts for fast kernels",
        "FP8 needs `wgmma`",
        "fence.proxy.async.shared::cta;",
        "register i of thread t holds row 16*((t/32)%4) + (t%32)/4 + 8*((i/2)%2)",
        "m16n8k16 A layout, so an accumulator converted to bf16 pairs feeds the next product",
    ];
    for (name, p) in all_prompts(&r, &context(h100())) {
        for n in needles {
            assert!(p.contains(n), "{name}: missing {n:?}");
        }
    }
    for target in [None, Some("sm_90"), Some("sm_89"), Some("sm_100a")] {
        let facts = DeviceFacts {
            compile_target: target.map(str::to_string),
            ..h100()
        };
        for (name, p) in all_prompts(&r, &context(facts)) {
            assert!(!p.contains("Hopper facts"), "{name} for {target:?}");
        }
    }
}

#[test]
fn modes_carry_their_own_material() {
    let r = PromptRenderer::builtin().expect("templates compile");
    let ctx = context(DeviceFacts::default());
    let prompts: std::collections::BTreeMap<_, _> = all_prompts(&r, &ctx).into_iter().collect();

    let initial = &prompts["coder/initial"];
    assert!(initial.contains("Write a first kernel"));
    assert!(initial.contains("`cuda_bf16.h`, `cuda_fp16.h`"));
    assert!(initial.contains("Keep accumulations in f32."));
    assert!(initial.contains("(no fast-math)"));
    assert!(initial.contains("[[launch]]"));
    assert!(initial.contains("## Best kernel so far"));
    assert!(initial.contains("- round 2 (repair): correct, speedup 1.25x — added cuda_bf16.h"));
    assert!(initial.contains("Exactly one ```cuda block"));

    let repair = &prompts["coder/repair"];
    assert!(repair.contains("## Your job: fix this kernel"));
    assert!(repair.contains("max normalized error 0.5"));
    assert!(repair.contains("row sum not reduced across warps"));
    assert!(repair.contains("Verdict: wrong_output"));
    assert!(!repair.contains("Write a first kernel"));

    let optimize = &prompts["coder/optimize"];
    assert!(optimize.contains("make this correct kernel faster"));
    assert!(optimize.contains("bottleneck: scalar bf16 loads"));
    assert!(optimize.contains("32 registers, 0 spills"));
    assert!(optimize.contains("warp stall long_scoreboard 40%"));

    let jc = &prompts["judge_correction"];
    assert!(jc.contains("error: expected a \";\""));
    assert!(jc.contains("\"critical_issue\""));
    assert!(!jc.contains("## Rules"), "the Judge needs no coding rules");

    let jo = &prompts["judge_optimization"];
    assert!(jo.contains("\"bottleneck\""));
    assert!(jo.contains("dram__throughput 71%"));

    assert!(prompts["mutate"].contains("one substantial idea"));
    assert!(prompts["mutate/directed"].contains("use 128-bit loads"));
    assert!(prompts["crossover"].contains("## Parent B"));
    assert!(!initial.contains("could not be used"));

    let with_notice = PromptContext {
        notice: Some("Your reply contained no CUDA code block.".into()),
        ..ctx.clone()
    };
    let p = r.coder(&with_notice, &CoderMode::Initial).expect("notice");
    assert!(p.contains(
        "## Your previous reply could not be used\n\nYour reply contained no CUDA code block."
    ));
}

#[test]
fn sparse_context_still_renders() {
    let r = PromptRenderer::builtin().expect("templates compile");
    let ctx = PromptContext {
        task: TaskContext {
            id: "t".into(),
            title: "T".into(),
            category: "c".into(),
            spec_py: "class Model: pass".into(),
            tolerance: "exact".into(),
            ..TaskContext::default()
        },
        ..PromptContext::default()
    };
    let bare = KernelSnapshot {
        source: "__global__ void k() {}".into(),
        plan: "[[launch]]".into(),
        ..KernelSnapshot::default()
    };
    let p = r.coder(&ctx, &CoderMode::Initial).expect("bare coder");
    assert!(p.contains("none beyond what NVRTC provides"));
    assert!(!p.contains("## Best kernel so far"));
    assert!(!p.contains("## Earlier attempts"));
    r.judge_optimization(&ctx, &bare).expect("bare judge");
    r.crossover(&ctx, &bare, &bare).expect("bare crossover");
    r.coder(
        &ctx,
        &CoderMode::Repair {
            current: bare,
            feedback: String::new(),
            advice: None,
        },
    )
    .expect("bare repair");
}

#[test]
fn template_directory_overrides_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("coder.md.tera"), "CUSTOM {{ task.id }}").expect("write");
    let r = PromptRenderer::from_dir(dir.path()).expect("override compiles");
    let ctx = context(DeviceFacts::default());
    assert_eq!(
        r.coder(&ctx, &CoderMode::Initial).expect("custom"),
        "CUSTOM rmsnorm_residual\n"
    );
    // Files not overridden fall back to the built-in ones.
    assert!(r
        .mutate(&ctx, &kernel("correct"), None)
        .expect("builtin")
        .contains("## Parent kernel"));

    std::fs::write(dir.path().join("coder.md.tera"), "{% if %}").expect("write");
    match PromptRenderer::from_dir(dir.path()) {
        Err(PromptError::Template(msg)) => assert!(msg.contains("coder.md.tera"), "{msg}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a broken template was accepted"),
    }

    std::fs::write(dir.path().join("coder.md.tera"), "{{ no_such_variable }}").expect("write");
    let r = PromptRenderer::from_dir(dir.path()).expect("parses");
    let err = r.coder(&ctx, &CoderMode::Initial).unwrap_err().to_string();
    assert!(err.contains("no_such_variable"), "{err}");
}

#[test]
fn tail_lines_keeps_the_end() {
    let log: String = (1..=200).map(|i| format!("line {i}\n")).collect();
    let t = tail_lines(&log, 3, 10_000);
    assert_eq!(
        t,
        "[... earlier lines omitted ...]\nline 198\nline 199\nline 200"
    );
    assert_eq!(tail_lines("a\nb", 5, 100), "a\nb");
    let t = tail_lines("xxxxxxxxxxyyyyy", 5, 5);
    assert_eq!(t, "[... earlier lines omitted ...]\nyyyyy");
}
