//! GPU test of the CUDA runtime itself (verifier::runtime::Gpu) on a real device: device facts,
//! buffer round trips and fills for every element size, guard zones, argument packing of every
//! scalar type as the kernel sees it, dynamic shared memory above 48 KiB, thread-block clusters,
//! cooperative launches, the pre-launch limit checks, timing events, and a sticky fault last.
//! Without a CUDA driver it prints "skipped: no GPU" and passes, unless KSMITH_REQUIRE_GPU=1.

use verifier::dtype::DType;
use verifier::nvrtc::{Arch, CompileRequest, Compiler, Locator};
use verifier::plan::{ResolvedArg, ResolvedLaunch};
use verifier::runtime::{Gpu, RuntimeError, GUARD_BYTES};

const SRC: &str = r#"
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

extern "C" __global__ void scalars(unsigned long long* out, int a, long long b, unsigned int c,
                                   unsigned long long d, float e, double f) {
    out[0] = (unsigned long long)(long long)a;
    out[1] = (unsigned long long)b;
    out[2] = c;
    out[3] = d;
    out[4] = __float_as_uint(e);
    out[5] = (unsigned long long)__double_as_longlong(f);
}

extern "C" __global__ void big_smem(float* out, int n) {
    extern __shared__ float s[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = (float)i;
    __syncthreads();
    float acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += s[n - 1 - i];
    atomicAdd(out, acc);
}

extern "C" __global__ void cluster_rank(unsigned int* out) {
    cg::cluster_group c = cg::this_cluster();
    if (threadIdx.x == 0) out[blockIdx.x] = c.block_rank() + 100u * c.num_blocks();
}

extern "C" __global__ void coop_sum(unsigned int* counter, unsigned int* out) {
    cg::grid_group g = cg::this_grid();
    if (threadIdx.x == 0) atomicAdd(counter, 1u);
    g.sync();
    if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = *counter;
}

extern "C" __global__ void __launch_bounds__(64) bounded(float* out) { out[threadIdx.x] = 1.0f; }

extern "C" __global__ void past_end(unsigned char* out, int n) {
    if (threadIdx.x == 0) out[n + 3] = 1;
}

extern "C" __global__ void wild(float* out) { out[1LL << 40] = 1.0f; }
"#;

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

fn buf(name: &str) -> ResolvedArg {
    ResolvedArg::Buffer(name.into())
}

#[test]
fn the_runtime_on_a_real_gpu() {
    // Compiled first, so that a CPU run checks the source too (for sm_90 there).
    let compiler = match Locator::default().load() {
        Ok(n) => Compiler::new(n, None),
        Err(e) => {
            eprintln!("skipped: NVRTC not installed ({e})");
            return;
        }
    };
    let arch = Arch::detect().unwrap_or(Arch::DEFAULT);
    let kernels: Vec<String> = [
        "scalars",
        "big_smem",
        "cluster_rank",
        "coop_sum",
        "bounded",
        "past_end",
        "wild",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let compiled = compiler
        .compile(&CompileRequest::new(SRC, kernels, arch))
        .unwrap();
    if let Err(e) = verifier::runtime::probe_driver() {
        if std::env::var("KSMITH_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("KSMITH_REQUIRE_GPU=1 but {e}");
        }
        eprintln!("skipped: no GPU (libcuda.so.1 not found): {e}");
        return;
    }
    let gpu = Gpu::open(0).unwrap();
    let d = &gpu.info;
    println!("{}", d.summary());
    println!("{}", serde_json::to_string_pretty(d).unwrap());
    assert!(d.sm_count > 0 && d.warp_size == 32 && d.max_threads_per_block >= 1024);
    assert!(d.shared_mem_per_block_optin >= d.shared_mem_per_block);
    assert!(d.l2_cache_bytes > 0 && d.total_memory_bytes > (1 << 30));
    assert_eq!(d.arch(), arch, "NVRTC target and device");
    // NVML finds this same GPU by the PCI bus id CUDA reports (the index is only a fallback).
    let bus = d
        .pci_bus_id
        .as_deref()
        .expect("CUDA reports the PCI bus id");
    assert!(bus.len() == 16 && bus.ends_with(".0"), "{bus}");
    match verifier::runtime::telemetry::Telemetry::open(0, Some(d)) {
        verifier::runtime::telemetry::Telemetry::Nvml(n) => {
            assert_eq!(n.device_name().as_deref(), Some(d.name.as_str()));
            let r = n.read();
            println!("telemetry by bus id {bus}: {}", r.describe());
            assert!(r.sm_clock_mhz.is_some() && r.power_w.is_some(), "{r:?}");
        }
        verifier::runtime::telemetry::Telemetry::Unavailable(why) => {
            println!("NVML unavailable here (telemetry not checked): {why}")
        }
    }
    let module = gpu.load(&compiled).unwrap();
    for f in module.functions() {
        println!("{} {:?} params {:?}", f.name, f.attrs(), f.param_sizes());
    }
    // cuFuncGetParamInfo, which the launch's argument-count check rests on, on real hardware.
    let scalars = module
        .functions()
        .iter()
        .find(|f| f.name == "scalars")
        .expect("scalars loaded");
    assert_eq!(scalars.param_sizes(), Some(&[8, 4, 8, 4, 8, 4, 8][..]));

    // Round trips and fills of every element size (8 bytes uses two strided 32-bit fills),
    // and one fill of 2^25 f64 (a 2D memset of that height).
    for (dt, n) in [
        (DType::U8, 1001),
        (DType::Bf16, 1001),
        (DType::F32, 1001),
        (DType::F64, 1001),
        (DType::F64, 1 << 25),
    ] {
        let b = gpu.alloc("x", dt, n).unwrap();
        let data: Vec<u8> = (0..b.len).map(|i| (i * 7 % 251) as u8).collect();
        b.upload(&data).unwrap();
        assert_eq!(b.download().unwrap(), data);
        let elem: Vec<u8> = (0..dt.size_bytes()).map(|i| 0xA0 + i as u8).collect();
        b.fill(&elem).unwrap();
        let back = b.download().unwrap();
        assert!(
            back.chunks(elem.len()).all(|c| c == elem.as_slice()),
            "{dt}"
        );
        assert!(b.check_guards().unwrap().is_none());
        let c = gpu.alloc("y", dt, n).unwrap();
        c.copy_from(&b).unwrap();
        assert_eq!(c.download().unwrap(), back);
    }
    assert_eq!(
        gpu.alloc("z", DType::F32, 0).unwrap().download().unwrap(),
        Vec::<u8>::new()
    );

    // Every scalar type arrives as written.
    let out = gpu.alloc("out", DType::U64, 6).unwrap();
    let addr = |n: &str| (n == "out").then(|| out.address());
    let l = launch(
        "scalars",
        1,
        1,
        0,
        vec![
            buf("out"),
            ResolvedArg::I32(-7),
            ResolvedArg::I64(-(1 << 40)),
            ResolvedArg::U32(0xDEAD_BEEF),
            ResolvedArg::U64(u64::MAX - 1),
            ResolvedArg::F32(1e-6),
            ResolvedArg::F64(-2.5),
        ],
    );
    gpu.launch(&module, &l, &addr).unwrap();
    gpu.synchronize().unwrap();
    let v: Vec<u64> = out
        .download()
        .unwrap()
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        v,
        vec![
            (-7i64) as u64,
            (-(1i64 << 40)) as u64,
            0xDEAD_BEEF,
            u64::MAX - 1,
            1e-6f32.to_bits() as u64,
            (-2.5f64).to_bits()
        ]
    );

    // 160 KiB of dynamic shared memory: needs the opt-in attribute.
    let n = 40 * 1024;
    let acc = gpu.alloc("acc", DType::F32, 1).unwrap();
    acc.fill(&0f32.to_le_bytes()).unwrap();
    let l = launch(
        "big_smem",
        1,
        256,
        (n * 4) as u32,
        vec![buf("acc"), ResolvedArg::I32(n)],
    );
    let addr = |x: &str| (x == "acc").then(|| acc.address());
    gpu.launch(&module, &l, &addr).unwrap();
    gpu.synchronize().unwrap();
    let got = f32::from_le_bytes(acc.download().unwrap()[..4].try_into().unwrap());
    let want = (n as f64 - 1.0) * n as f64 / 2.0;
    assert!((got as f64 - want).abs() / want < 1e-3, "{got} vs {want}");

    // Clusters of 2 (Hopper and newer).
    if d.cluster_launch {
        let ranks = gpu.alloc("r", DType::U32, 8).unwrap();
        let mut l = launch("cluster_rank", 8, 32, 0, vec![buf("r")]);
        l.cluster = Some([2, 1, 1]);
        let addr = |x: &str| (x == "r").then(|| ranks.address());
        gpu.launch(&module, &l, &addr).unwrap();
        gpu.synchronize().unwrap();
        let r: Vec<u32> = ranks
            .download()
            .unwrap()
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(r, vec![200, 201, 200, 201, 200, 201, 200, 201]);
    }

    // A cooperative grid of one block per SM with a grid-wide barrier.
    if d.cooperative_launch {
        let counter = gpu.alloc("c", DType::U32, 1).unwrap();
        let res = gpu.alloc("o", DType::U32, 1).unwrap();
        counter.fill(&0u32.to_le_bytes()).unwrap();
        let mut l = launch("coop_sum", d.sm_count, 128, 0, vec![buf("c"), buf("o")]);
        l.cooperative = true;
        let addr = |x: &str| match x {
            "c" => Some(counter.address()),
            "o" => Some(res.address()),
            _ => None,
        };
        gpu.launch(&module, &l, &addr).unwrap();
        gpu.synchronize().unwrap();
        assert_eq!(res.download().unwrap(), d.sm_count.to_le_bytes());
        // Far more blocks than can be resident: refused before launching.
        l.grid = [d.sm_count * 64, 1, 1];
        let e = gpu.launch(&module, &l, &addr).unwrap_err();
        assert!(matches!(e, RuntimeError::OverLimits(_)), "{e}");
    }

    // Limits checked before launching: launch bounds and shared memory.
    let o = gpu.alloc("o", DType::F32, 256).unwrap();
    let addr = |x: &str| (x == "o").then(|| o.address());
    let e = gpu
        .launch(
            &module,
            &launch("bounded", 1, 128, 0, vec![buf("o")]),
            &addr,
        )
        .unwrap_err();
    assert!(e.to_string().contains("at most 64 per block"), "{e}");
    let e = gpu
        .launch(
            &module,
            &launch(
                "bounded",
                1,
                64,
                d.shared_mem_per_block_optin + 1,
                vec![buf("o")],
            ),
            &addr,
        )
        .unwrap_err();
    assert!(e.to_string().contains("shared memory"), "{e}");
    gpu.launch(&module, &launch("bounded", 1, 64, 0, vec![buf("o")]), &addr)
        .unwrap();
    gpu.synchronize().unwrap();

    // A write just past the end lands in the guard zone and is reported.
    let small = gpu.alloc("s", DType::U8, 10).unwrap();
    let addr = |x: &str| (x == "s").then(|| small.address());
    let l = launch("past_end", 1, 32, 0, vec![buf("s"), ResolvedArg::I32(10)]);
    gpu.launch(&module, &l, &addr).unwrap();
    gpu.synchronize().unwrap();
    let dmg = small.check_guards().unwrap().expect("guard damage");
    assert_eq!((dmg.before, dmg.after, dmg.first_after), (0, 1, Some(3)));
    assert!(
        small.check_guards().unwrap().is_none(),
        "guards are refilled"
    );
    const { assert!(GUARD_BYTES >= 256) };

    // Timing events.
    let (a, b) = (gpu.event().unwrap(), gpu.event().unwrap());
    a.record().unwrap();
    gpu.launch(
        &module,
        &launch("bounded", 1, 64, 0, vec![buf("o")]),
        &addr_o(&o),
    )
    .unwrap();
    b.record().unwrap();
    let ms = a.elapsed_ms(&b).unwrap();
    assert!((0.0..1000.0).contains(&ms), "{ms}");

    // Last: an illegal address is sticky (the context is lost).
    let w = gpu.alloc("w", DType::F32, 1).unwrap();
    let addr = |x: &str| (x == "w").then(|| w.address());
    gpu.launch(&module, &launch("wild", 1, 1, 0, vec![buf("w")]), &addr)
        .unwrap();
    let e = gpu.synchronize().unwrap_err();
    println!("expected fault: {e}");
    assert!(e.is_sticky(), "{e}");
    assert!(gpu.synchronize().is_err(), "the context stays unusable");
}

fn addr_o(o: &verifier::runtime::DeviceBuffer) -> impl Fn(&str) -> Option<u64> + '_ {
    move |x| (x == "o").then(|| o.address())
}
