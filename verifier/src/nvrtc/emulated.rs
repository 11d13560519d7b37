//! PTX instructions that a target compiles but runs only in emulation: the kernel is correct and
//! slow, and nothing in the compile log says so. Facts from NVRTC 13.0's SASS (nvdisasm).

use super::compile::Arch;

/// Compute capabilities (major * 10 + minor) without FP8 `mma.sync`: ptxas converts each
/// operand to f16 and issues two f16 MMAs (sm_89, sm_120 and sm_121 have it natively, as
/// QMMA). Hopper's FP8 tensor-core path is `wgmma`.
pub const FP8_MMA_SYNC_EMULATED: &[u32] = &[90, 100, 103, 110];

/// One note per emulated instruction kind in `ptx` for `arch`, naming the count and the way out.
pub fn notes(ptx: &str, arch: Arch) -> Vec<String> {
    let cc = arch.major * 10 + arch.minor;
    let mut out = Vec::new();
    if FP8_MMA_SYNC_EMULATED.contains(&cc) {
        let n = ptx
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with("mma.sync") && (l.contains(".e4m3") || l.contains(".e5m2"))
            })
            .count();
        if n > 0 {
            out.push(format!(
                "{n} FP8 mma.sync instruction(s) in the PTX are emulated on {arch} (each becomes an f16 conversion plus two f16 MMAs, no faster than bf16): FP8 tensor cores on this GPU need wgmma (sm_{cc}a)"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTX: &str = "\t// comment mma.sync e4m3\n\tmma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%f1}, {%r1}, {%r2}, {%f1};\n\tmma.sync.aligned.m16n8k32.row.col.f32.e5m2.e4m3.f32 {%f1}, {%r1}, {%r2}, {%f1};\n\tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1}, {%r1}, {%r2}, {%f1};\n";

    #[test]
    fn fp8_mma_sync_is_named_where_it_is_emulated_only() {
        let h100: Arch = "sm_90".parse().unwrap();
        let n = notes(PTX, h100);
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(n[0].starts_with("2 FP8 mma.sync instruction(s)"), "{n:?}");
        assert!(n[0].contains("wgmma (sm_90a)"), "{n:?}");
        for native in ["sm_89", "sm_120", "sm_80"] {
            assert!(notes(PTX, native.parse().unwrap()).is_empty(), "{native}");
        }
        let bf16_only = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1};\n";
        assert!(notes(bf16_only, h100).is_empty());
    }
}
