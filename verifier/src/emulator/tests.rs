//! Kernels compiled by NVRTC for the emulator's target and run through its [`Backend`]; each
//! checks a result computed on the host, or the fault a GPU would raise.

use super::*;
use crate::nvrtc::CompileRequest;
use crate::plan::ResolvedArg;

fn emulate(src: &str, kernel: &str) -> Option<(Emulator, EmuProgram)> {
    let Some(c) = crate::nvrtc::test_compiler() else {
        eprintln!("SKIP: no NVRTC for the emulator tests");
        return None;
    };
    let compiled = match c.compile(&CompileRequest::new(src, vec![kernel.into()], ARCH)) {
        Ok(x) => x,
        Err(e) => panic!("NVRTC: {e}"),
    };
    let emu = Emulator::new(50_000_000);
    let prog = match emu.load(&compiled) {
        Ok(p) => p,
        Err(e) => panic!("load: {e}"),
    };
    Some((emu, prog))
}

fn launch(
    kernel: &str,
    grid: u32,
    block: u32,
    smem: u32,
    args: Vec<ResolvedArg>,
) -> ResolvedLaunch {
    ResolvedLaunch {
        kernel: kernel.into(),
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        shared_bytes: smem,
        args,
        cluster: None,
        cooperative: false,
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Runs `l` with buffers `bufs` (name, contents) and returns them afterwards, or the error
/// `synchronize` reports.
fn run(
    emu: &Emulator,
    prog: &EmuProgram,
    l: &ResolvedLaunch,
    bufs: &[(&str, Vec<u8>)],
) -> Result<Vec<Vec<u8>>, RuntimeError> {
    let mut live = Vec::new();
    for (name, data) in bufs {
        let b = emu.alloc(name, DType::U8, data.len() as u64)?;
        emu.upload(&b, data)?;
        live.push((name.to_string(), b));
    }
    let address = |n: &str| {
        live.iter()
            .find(|(m, _)| m == n)
            .map(|(_, b)| emu.address(b))
    };
    emu.launch(prog, l, &address)?;
    emu.synchronize()?;
    live.iter().map(|(_, b)| emu.download(b)).collect()
}

const VECTOR_ADD: &str = r#"
extern "C" __global__ void add(const float* a, const float* b, float* c, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        c[i] = a[i] + 2.0f * b[i];
}
"#;

#[test]
fn a_grid_stride_loop_computes_every_element() {
    let Some((emu, prog)) = emulate(VECTOR_ADD, "add") else {
        return;
    };
    let n = 1000;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| (n - i) as f32).collect();
    let l = launch(
        "add",
        3,
        128,
        0,
        vec![
            ResolvedArg::Buffer("a".into()),
            ResolvedArg::Buffer("b".into()),
            ResolvedArg::Buffer("c".into()),
            ResolvedArg::I32(n as i32),
        ],
    );
    let out = run(
        &emu,
        &prog,
        &l,
        &[
            ("a", bytes_of(&a)),
            ("b", bytes_of(&b)),
            ("c", vec![0; n * 4]),
        ],
    )
    .unwrap();
    let c = f32s(&out[2]);
    for i in 0..n {
        assert_eq!(c[i], a[i] + 2.0 * b[i], "element {i}");
    }
    assert!(emu.executed() > n as u64);
}

#[test]
fn one_element_past_the_end_is_an_illegal_address() {
    let src = r#"
extern "C" __global__ void over(float* c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) c[i] = 1.0f;
}
"#;
    let Some((emu, prog)) = emulate(src, "over") else {
        return;
    };
    let l = launch(
        "over",
        1,
        64,
        0,
        vec![ResolvedArg::Buffer("c".into()), ResolvedArg::I32(40)],
    );
    let e = run(&emu, &prog, &l, &[("c", vec![0; 160])]).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{s}");
    assert!(s.contains("past the end of the 160-byte buffer"), "{s}");
    assert!(s.contains("thread [40, 0, 0]"), "{s}");
    // Sticky, like a GPU fault: every later call fails too.
    assert!(emu.synchronize().is_err());
}

#[test]
fn a_misaligned_vector_load_faults() {
    let src = r#"
extern "C" __global__ void mis(const float* a, float* c) {
    float4 v = *reinterpret_cast<const float4*>(a + 1);
    c[0] = v.x + v.y + v.z + v.w;
}
"#;
    let Some((emu, prog)) = emulate(src, "mis") else {
        return;
    };
    let l = launch(
        "mis",
        1,
        1,
        0,
        vec![
            ResolvedArg::Buffer("a".into()),
            ResolvedArg::Buffer("c".into()),
        ],
    );
    let e = run(&emu, &prog, &l, &[("a", vec![0; 64]), ("c", vec![0; 4])])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CUDA_ERROR_MISALIGNED_ADDRESS") && e.contains("16-byte aligned"),
        "{e}"
    );
}

#[test]
fn shared_memory_barriers_and_shuffles_reduce_a_block() {
    let src = r#"
extern "C" __global__ void block_sum(const float* x, float* out, int n) {
    __shared__ float warp_sums[32];
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[blockIdx.x * n + i];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        s = threadIdx.x < (blockDim.x >> 5) ? warp_sums[threadIdx.x] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (threadIdx.x == 0) out[blockIdx.x] = s;
    }
}
"#;
    let Some((emu, prog)) = emulate(src, "block_sum") else {
        return;
    };
    let (rows, n) = (3usize, 777usize);
    // Small integers: every partial sum is exact, whatever the order.
    let x: Vec<f32> = (0..rows * n).map(|i| (i % 7) as f32).collect();
    let l = launch(
        "block_sum",
        rows as u32,
        256,
        0,
        vec![
            ResolvedArg::Buffer("x".into()),
            ResolvedArg::Buffer("out".into()),
            ResolvedArg::I32(n as i32),
        ],
    );
    let out = run(
        &emu,
        &prog,
        &l,
        &[("x", bytes_of(&x)), ("out", vec![0; rows * 4])],
    )
    .unwrap();
    let got = f32s(&out[1]);
    for r in 0..rows {
        let want: f32 = x[r * n..(r + 1) * n].iter().sum();
        assert_eq!(got[r], want, "row {r}");
    }
}

#[test]
fn a_barrier_half_the_block_never_reaches_is_a_deadlock() {
    let src = r#"
extern "C" __global__ void stuck(float* out) {
    float v = threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
    else __syncthreads();
    out[threadIdx.x] = v;
}
"#;
    let Some((emu, prog)) = emulate(src, "stuck") else {
        return;
    };
    let l = launch("stuck", 1, 32, 0, vec![ResolvedArg::Buffer("out".into())]);
    let e = run(&emu, &prog, &l, &[("out", vec![0; 128])])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CUDA_ERROR_LAUNCH_TIMEOUT") && e.contains("deadlock"),
        "{e}"
    );
}

#[test]
fn an_endless_loop_runs_out_of_budget() {
    let src = r#"
extern "C" __global__ void spin(volatile int* flag) {
    while (flag[0] == 0) {}
}
"#;
    let Some((emu, prog)) = emulate(src, "spin") else {
        return;
    };
    let l = launch("spin", 1, 32, 0, vec![ResolvedArg::Buffer("flag".into())]);
    let e = run(&emu, &prog, &l, &[("flag", vec![0; 4])])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CUDA_ERROR_LAUNCH_TIMEOUT") && e.contains("budget"),
        "{e}"
    );
}

#[test]
fn atomics_from_every_thread_all_land() {
    let src = r#"
extern "C" __global__ void count(unsigned* c, float* f) {
    atomicAdd(c, 1u);
    atomicAdd(f, 0.5f);
    __shared__ unsigned s;
    if (threadIdx.x == 0) s = 0;
    __syncthreads();
    atomicMax(&s, threadIdx.x);
    __syncthreads();
    if (threadIdx.x == 0) atomicAdd(c + 1, s);
}
"#;
    let Some((emu, prog)) = emulate(src, "count") else {
        return;
    };
    let l = launch(
        "count",
        5,
        96,
        0,
        vec![
            ResolvedArg::Buffer("c".into()),
            ResolvedArg::Buffer("f".into()),
        ],
    );
    let out = run(&emu, &prog, &l, &[("c", vec![0; 8]), ("f", vec![0; 4])]).unwrap();
    let c = |i: usize| {
        u32::from_le_bytes([
            out[0][4 * i],
            out[0][4 * i + 1],
            out[0][4 * i + 2],
            out[0][4 * i + 3],
        ])
    };
    assert_eq!(c(0), 5 * 96);
    assert_eq!(c(1), 5 * 95);
    assert_eq!(f32s(&out[1])[0], 5.0 * 96.0 * 0.5);
}

/// ldmatrix and mma.sync as a hand-written tensor-core kernel uses them: one 16x8x16 bf16 tile.
#[test]
fn ldmatrix_and_mma_sync_multiply_a_bf16_tile() {
    let src = r#"
#include <cuda_bf16.h>
extern "C" __global__ void tile(const __nv_bfloat16* A, const __nv_bfloat16* Bt, float* C) {
    // A: 16x16 row-major; Bt: B transposed (8x16, row n holds column n of B); C: 16x8.
    __shared__ __align__(16) __nv_bfloat16 sa[16 * 16];
    __shared__ __align__(16) __nv_bfloat16 sb[8 * 16];
    int lane = threadIdx.x;
    for (int i = lane; i < 256; i += 32) sa[i] = A[i];
    for (int i = lane; i < 128; i += 32) sb[i] = Bt[i];
    __syncwarp();
    unsigned a[4], b[2];
    unsigned pa = (unsigned)__cvta_generic_to_shared(&sa[(lane % 16) * 16 + (lane / 16) * 8]);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(pa));
    unsigned pb = (unsigned)__cvta_generic_to_shared(&sb[(lane % 8) * 16 + ((lane / 8) % 2) * 8]);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
                 : "=r"(b[0]), "=r"(b[1]) : "r"(pb));
    float d[4] = {0.f, 0.f, 0.f, 0.f};
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    int g = lane / 4, t = lane % 4;
    C[g * 8 + 2 * t] = d[0];
    C[g * 8 + 2 * t + 1] = d[1];
    C[(g + 8) * 8 + 2 * t] = d[2];
    C[(g + 8) * 8 + 2 * t + 1] = d[3];
}
"#;
    let Some((emu, prog)) = emulate(src, "tile") else {
        return;
    };
    let bf = |x: f32| half::bf16::from_f32(x);
    let a: Vec<half::bf16> = (0..256).map(|i| bf(((i * 7) % 11) as f32 - 5.0)).collect();
    let bt: Vec<half::bf16> = (0..128)
        .map(|i| bf(((i * 5) % 9) as f32 * 0.25 - 1.0))
        .collect();
    let raw = |v: &[half::bf16]| {
        v.iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let l = launch(
        "tile",
        1,
        32,
        0,
        vec![
            ResolvedArg::Buffer("A".into()),
            ResolvedArg::Buffer("Bt".into()),
            ResolvedArg::Buffer("C".into()),
        ],
    );
    let out = run(
        &emu,
        &prog,
        &l,
        &[("A", raw(&a)), ("Bt", raw(&bt)), ("C", vec![0; 16 * 8 * 4])],
    )
    .unwrap();
    let c = f32s(&out[2]);
    for m in 0..16 {
        for n in 0..8 {
            let want: f32 = (0..16)
                .map(|k| a[m * 16 + k].to_f32() * bt[n * 16 + k].to_f32())
                .sum();
            assert_eq!(c[m * 8 + n], want, "C[{m}][{n}]");
        }
    }
}

#[test]
fn cp_async_with_no_source_bytes_zero_fills_without_reading() {
    let src = r#"
extern "C" __global__ void fill(const float4* src, float4* out, int valid) {
    __shared__ __align__(16) float4 s[2];
    unsigned d = (unsigned)__cvta_generic_to_shared(&s[threadIdx.x]);
    // Out-of-range rows pass an address past the buffer and a source size of 0.
    const float4* p = src + threadIdx.x;
    int bytes = threadIdx.x < valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(d), "l"(p), "r"(bytes));
    asm volatile("cp.async.wait_all;");
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x];
}
"#;
    let Some((emu, prog)) = emulate(src, "fill") else {
        return;
    };
    let l = launch(
        "fill",
        1,
        2,
        0,
        vec![
            ResolvedArg::Buffer("src".into()),
            ResolvedArg::Buffer("out".into()),
            ResolvedArg::I32(1),
        ],
    );
    let out = run(
        &emu,
        &prog,
        &l,
        &[
            ("src", bytes_of(&[1.0, 2.0, 3.0, 4.0])),
            ("out", vec![0xFF; 32]),
        ],
    )
    .unwrap();
    assert_eq!(f32s(&out[1]), [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn malformed_ptx_is_an_error_naming_the_line() {
    let bad = ".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry k()\n{\n\t.reg .b32 %r<2>;\n\tadd.s32 %r1, %r9, 1;\n\tret;\n}\n";
    let e = ptx::parse(bad, memory::GLOBAL_BASE)
        .err()
        .map(|e| e.to_string());
    assert_eq!(e.as_deref(), Some("PTX line 7: unknown register `%r9`"));
    let e = ptx::parse(
        ".visible .entry k()\n{\n\tbra $L__missing;\n}\n",
        memory::GLOBAL_BASE,
    )
    .err()
    .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("PTX line 3: branch to unknown label `$L__missing`")
    );
    let e = ptx::parse(".visible .entry k()\n{\n\tret\n", memory::GLOBAL_BASE)
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|m| m.contains("line 3")));
    // Declarations that would exhaust memory are refused, not allocated.
    for (text, want) in [
        (
            ".visible .entry k()\n{\n\t.reg .b32 %r<99999999>;\n}\n",
            "PTX line 3: more than 65536 registers",
        ),
        (
            ".shared .align 4 .b8 big[99999999999];\n",
            "PTX line 1: `big` is larger than",
        ),
        (
            ".visible .entry k()\n{\n\t.local .b8 d[9999999];\n}\n",
            "PTX line 3: more than 524288 bytes of local memory",
        ),
        (
            ".visible .func (.param .b32 r k()\n{\n}\n",
            "PTX line 1: cannot read the function name",
        ),
    ] {
        let e = ptx::parse(text, memory::GLOBAL_BASE)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with(want), "{text:?}: {e}");
    }
}

#[test]
fn malformed_instructions_fault_instead_of_panicking() {
    let run = |body: &str| {
        let ptx = format!(".visible .entry k(.param .u64 p)\n{{\n\t.reg .b32 %r<4>;\n\t.reg .b64 %rd<2>;\n\tld.param.u64 %rd1, [p];\n{body}\n\tret;\n}}\n");
        fuzz_run(&ptx, 10_000)
    };
    for body in [
        "\tmov.b32 {}, %r1;",
        "\tld.global.v2.u32 {%r1,%r2,%r3}, [%rd1];",
        "\tshfl.sync.bfly.b32 %r1, %r2;",
        "\tmma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%r1};",
        "\tcvt.rn.f32.b128 %r1, %r2;",
    ] {
        let e = run(body).expect_err(body);
        assert!(
            e.contains("CUDA_ERROR_ILLEGAL_INSTRUCTION") || e.contains("PTX line"),
            "{body}: {e}"
        );
    }
    // Odd but harmless: runs (128-bit counts clamp to 64 bits), no panic.
    assert!(run("\tclz.b128 %r1, %r2;").is_ok());
    assert!(run("\tadd.s32 %r1, %r2, 1;").is_ok());
}

#[test]
fn an_instruction_the_emulator_lacks_is_named_when_reached() {
    let ptx = ".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry k()\n{\n\t.reg .b32 %r<2>;\n\tfrobnicate.b32 %r1, %r0;\n\tret;\n}\n";
    let p = ptx::parse(ptx, memory::GLOBAL_BASE).unwrap();
    let prog = EmuProgram {
        prog: p,
        kernels: [("k".to_string(), (0usize, Vec::new()))]
            .into_iter()
            .collect(),
    };
    assert_eq!(prog.unsupported(), vec![(7, "frobnicate.b32".to_string())]);
    let emu = Emulator::new(1000);
    emu.launch(&prog, &launch("k", 1, 1, 0, vec![]), &|_| None)
        .unwrap();
    let e = emu.synchronize().unwrap_err().to_string();
    assert!(
        e.contains("CUDA_ERROR_ILLEGAL_INSTRUCTION")
            && e.contains("does not implement `frobnicate.b32`"),
        "{e}"
    );
}

#[test]
fn local_arrays_live_in_per_thread_local_memory() {
    let src = r#"
extern "C" __global__ void pick(const int* idx, float* out) {
    float a[8];
    for (int i = 0; i < 8; ++i) a[i] = (i + threadIdx.x) * 1.5f;
    out[threadIdx.x] = a[idx[threadIdx.x] & 7];
}
"#;
    let Some((emu, prog)) = emulate(src, "pick") else {
        return;
    };
    let idx: Vec<u8> = (0..4i32).flat_map(|i| (i * 3).to_le_bytes()).collect();
    let l = launch(
        "pick",
        1,
        4,
        0,
        vec![
            ResolvedArg::Buffer("idx".into()),
            ResolvedArg::Buffer("out".into()),
        ],
    );
    let out = run(&emu, &prog, &l, &[("idx", idx), ("out", vec![0; 16])]).unwrap();
    let want: Vec<f32> = (0..4)
        .map(|t: i32| (((t * 3) & 7) + t) as f32 * 1.5)
        .collect();
    assert_eq!(f32s(&out[1]), want);
}

#[test]
fn cp_async_lands_at_the_wait_that_covers_its_group() {
    let src = r#"
extern "C" __global__ void stages(const float4* src, float4* out) {
    __shared__ __align__(16) float4 s[2];
    s[0] = make_float4(-1.f, -1.f, -1.f, -1.f);
    s[1] = s[0];
    unsigned d0 = (unsigned)__cvta_generic_to_shared(&s[0]);
    unsigned d1 = (unsigned)__cvta_generic_to_shared(&s[1]);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n cp.async.commit_group;" :: "r"(d0), "l"(src));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n cp.async.commit_group;" :: "r"(d1), "l"(src + 1));
    out[0] = s[0];                                   // before any wait: stale
    asm volatile("cp.async.wait_group 1;" ::: "memory");
    out[1] = s[0];                                   // stage 0 landed
    out[2] = s[1];                                   // stage 1 may still be in flight
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    out[3] = s[1];
}
"#;
    let Some((emu, prog)) = emulate(src, "stages") else {
        return;
    };
    let l = launch(
        "stages",
        1,
        1,
        0,
        vec![
            ResolvedArg::Buffer("src".into()),
            ResolvedArg::Buffer("out".into()),
        ],
    );
    let data: Vec<f32> = (1..=8).map(|i| i as f32).collect();
    let out = run(
        &emu,
        &prog,
        &l,
        &[("src", bytes_of(&data)), ("out", vec![0; 64])],
    )
    .unwrap();
    let o = f32s(&out[1]);
    assert_eq!(&o[0..4], &[-1.0; 4], "read before the wait");
    assert_eq!(
        &o[4..8],
        &[1.0, 2.0, 3.0, 4.0],
        "stage 0 after wait_group 1"
    );
    assert_eq!(&o[8..12], &[-1.0; 4], "stage 1 after wait_group 1");
    assert_eq!(
        &o[12..16],
        &[5.0, 6.0, 7.0, 8.0],
        "stage 1 after wait_group 0"
    );
}

#[test]
fn a_race_between_threads_gives_different_results_on_alternate_runs() {
    // Thread 0 reads what thread 1 writes, with no barrier in between.
    let src = r#"
extern "C" __global__ void racy(float* out) {
    __shared__ float s[2];
    s[threadIdx.x] = 0.0f;
    __syncthreads();
    if (threadIdx.x == 1) s[1] = 7.0f;
    if (threadIdx.x == 0) out[0] = s[1];
}
"#;
    let Some((emu, prog)) = emulate(src, "racy") else {
        return;
    };
    let l = launch("racy", 1, 2, 0, vec![ResolvedArg::Buffer("out".into())]);
    let first = run(&emu, &prog, &l, &[("out", vec![0; 4])]).unwrap();
    let second = run(&emu, &prog, &l, &[("out", vec![0; 4])]).unwrap();
    assert_ne!(f32s(&first[0]), f32s(&second[0]));
}
