//! The tensor-core references (gemm_fp8_rowwise, gemm_bf16, mxfp4_emulated_gemm,
//! flash_attention_fwd) take a `wgmma` main loop where the target has one (sm_90a, the default on
//! an H100) and keep `mma.sync` elsewhere and under their `*_FORCE_MMA_SYNC` define (the
//! side-by-side timing of scripts/gpu-check.sh). A refactor that silently loses the Hopper path
//! fails here, on a CPU: the PTX is inspected, nothing runs.

use bench_suite::suite::load_task_dir;
use std::path::PathBuf;
use verifier::nvrtc::compiler_for_tests as compiler;
use verifier::nvrtc::{Arch, CompileRequest, Compiler};

/// (wgmma instructions, FP8/bf16 mma.sync instructions) in the PTX of `task`'s reference built
/// for `arch`, with `prefix` put in front of the source.
fn main_loop_instructions(c: &Compiler, task: &str, arch: &str, prefix: &str) -> (usize, usize) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tasks")
        .join(task);
    let t = load_task_dir(&dir).unwrap_or_else(|d| panic!("{task}: {d:?}"));
    let kernels = t.plan.kernel_names();
    let mut req = CompileRequest::new(
        format!("{prefix}{}", t.reference_source),
        kernels,
        arch.parse::<Arch>().unwrap(),
    );
    req.program_name = "reference.cu".into();
    let out = c
        .compile(&req)
        .unwrap_or_else(|e| panic!("{task} for {arch}: {e}"));
    let count = |what: &str| {
        out.ptx
            .lines()
            .filter(|l| l.trim_start().starts_with(what))
            .count()
    };
    // A wgmma loop that ptxas had to serialize is correct and slow: the references have none.
    let losses = verifier::nvrtc::ptxas::performance_losses(&out.log);
    assert!(losses.is_empty(), "{task} for {arch}: {losses:?}");
    (count("wgmma.mma_async"), count("mma.sync"))
}

#[test]
fn gemm_references_use_wgmma_on_sm_90a_only() {
    let Some(c) = compiler("gemm_references_use_wgmma_on_sm_90a_only") else {
        return;
    };
    for (task, force) in [
        ("gemm/gemm_fp8_rowwise", "GEMM_FP8_FORCE_MMA_SYNC"),
        ("gemm/gemm_bf16", "GEMM_BF16_FORCE_MMA_SYNC"),
        ("microscaling/mxfp4_emulated_gemm", "MXFP4_FORCE_MMA_SYNC"),
        ("attention/flash_attention_fwd", "FA_FORCE_MMA_SYNC"),
    ] {
        let (wgmma, _) = main_loop_instructions(&c, task, "sm_90a", "");
        assert!(wgmma > 0, "{task}: no wgmma on sm_90a");
        let (wgmma, mma) = main_loop_instructions(&c, task, "sm_90", "");
        assert_eq!(wgmma, 0, "{task}: wgmma on sm_90");
        assert!(mma > 0, "{task}: no mma.sync on sm_90");
        let (wgmma, mma) =
            main_loop_instructions(&c, task, "sm_90a", &format!("#define {force} 1\n"));
        assert_eq!(wgmma, 0, "{task}: {force} still takes wgmma");
        assert!(mma > 0, "{task}: {force} has no mma.sync");
    }
    // The skinny (M <= 32) tiles stay on mma.sync everywhere: 32 rows cannot fill wgmma's 64.
    for task in ["gemm/gemm_bf16", "microscaling/mxfp4_emulated_gemm"] {
        let (_, mma) = main_loop_instructions(&c, task, "sm_90a", "");
        assert!(mma > 0, "{task}: the skinny tile lost its mma.sync loop");
    }
}
