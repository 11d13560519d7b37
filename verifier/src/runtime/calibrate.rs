//! `ksmith gpu calibrate`: the device's measured copy bandwidth and arithmetic peaks, the rates
//! speed-of-light is computed from (DESIGN §5). Microbenchmarks are compiled with NVRTC for the
//! device's architecture: a large device-to-device copy kernel, `cuMemcpyDtoD` and a read-only
//! streaming kernel (the bandwidth is the best of the three, each best of N),
//! FMA loops for FP32 / FP64 / INT32, and `mma.sync` loops for the tensor-core types the
//! architecture has (TF32, FP16, BF16 and INT8 from sm_80, FP8 e4m3 from sm_89).
//!
//! On sm_90 the warpgroup instructions (`wgmma`, sm_90a) reach a higher rate than warp-level
//! `mma.sync`, and a Hopper GEMM built on them would beat a floor computed from `mma.sync` alone
//! and be quarantined for doing its job. So BF16, FP16, FP8, INT8 and TF32 are also measured
//! with a `wgmma` loop there, and the faster rate is the peak; its method names both. The
//! method is recorded with every rate so a report can say what it is.

use super::error::RuntimeError;
use super::gpu::{DeviceBuffer, Gpu, Module};
use super::telemetry::{MeasurementTelemetry, Telemetry};
use super::timing::{FLUSH_KERNEL, FLUSH_KERNEL_NAME};
use crate::dtype::DType;
use crate::nvrtc::{CompileRequest, Compiler};
use crate::plan::{ResolvedArg, ResolvedLaunch};
use crate::task::{Peak, Shape, Task};
use crate::timing::{bound, floor_ms, sol_percent, Bound, Rates, Summary};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Bump when a microbenchmark changes what it measures. 2: tensor peaks include `wgmma` on
/// sm_90. 3: the int32 loop no longer folds four iterations into one (its rate was 4x).
/// 4: FP8 `mma.sync` is not timed where it is emulated (sm_90: FP8 comes from `wgmma`).
/// 5: TF32 is also measured with `wgmma` on sm_90.
pub const CALIBRATION_VERSION: u32 = 5;

/// One measured rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Operations (or bytes) per second, best of the repetitions.
    pub per_s: f64,
    /// How it was measured (`mma.sync.m16n8k16 bf16 -> f32`, `copy kernel int4`...).
    pub method: String,
    pub repetitions: u32,
    /// Milliseconds of the best repetition.
    pub best_ms: f64,
}

/// Everything `gpu calibrate` measured on one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub version: u32,
    /// The store's GPU key (name | arch | driver).
    pub gpu_key: String,
    pub device: String,
    pub arch: String,
    /// Seconds since the epoch.
    pub measured_at: u64,
    /// Device copy bandwidth: the better of the copy kernel and `cuMemcpyDtoD` (read + write
    /// bytes per second).
    pub bandwidth: Option<Rate>,
    pub copy_kernel: Option<Rate>,
    pub memcpy_dtod: Option<Rate>,
    /// Keyed by the task format's peak names (`fp32`, `bf16_tensor`...).
    pub peaks: BTreeMap<String, Rate>,
    /// Peaks not measured on this device, and why.
    pub skipped: BTreeMap<String, String>,
    /// What one launch costs inside `bench`'s timed window. Absent from calibrations made
    /// before it was measured; a report then gives no speed-of-light ceiling.
    #[serde(default)]
    pub launch: Option<LaunchOverhead>,
    pub telemetry: MeasurementTelemetry,
}

/// The GPU time of an empty launch between the two events that bracket a timed call, with
/// other work queued ahead of it as the L2 flush is in `bench`: the least any call with one
/// launch is measured at. It caps the speed-of-light a shape with a microsecond floor can show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchOverhead {
    pub median_ms: f64,
    pub p20_ms: f64,
    pub p80_ms: f64,
    pub samples: usize,
    pub method: String,
}

/// The task format's name of a peak (`task.toml`'s `roofline.peak`).
pub fn peak_name(p: Peak) -> &'static str {
    match p {
        Peak::Fp64 => "fp64",
        Peak::Fp32 => "fp32",
        Peak::Tf32Tensor => "tf32_tensor",
        Peak::Fp16Tensor => "fp16_tensor",
        Peak::Bf16Tensor => "bf16_tensor",
        Peak::Fp8Tensor => "fp8_tensor",
        Peak::Int8Tensor => "int8_tensor",
        Peak::Int32 => "int32",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("calibration file {path}: {message}")]
    File { path: String, message: String },
    #[error("no calibration for {peak} on this GPU (run `ksmith gpu calibrate`): {why}")]
    Missing { peak: String, why: String },
    #[error("roofline of `{task}` at shape {shape}: {message}")]
    Roofline {
        task: String,
        shape: String,
        message: String,
    },
}

impl Calibration {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn from_json(text: &str, path: &Path) -> Result<Calibration, CalibrationError> {
        let c: Calibration = serde_json::from_str(text).map_err(|e| CalibrationError::File {
            path: path.display().to_string(),
            message: format!("line {}, column {}: {e}", e.line(), e.column()),
        })?;
        if c.version != CALIBRATION_VERSION {
            return Err(CalibrationError::File {
                path: path.display().to_string(),
                message: format!(
                    "calibration version {} (this build reads {CALIBRATION_VERSION}): run `ksmith gpu calibrate` again",
                    c.version
                ),
            });
        }
        let rates = c
            .peaks
            .iter()
            .map(|(n, r)| (n.as_str(), r))
            .chain(c.bandwidth.iter().map(|r| ("bandwidth", r)));
        for (name, r) in rates {
            if !(r.per_s.is_finite() && r.per_s > 0.0) {
                return Err(CalibrationError::File {
                    path: path.display().to_string(),
                    message: format!("`{name}` has rate {} (must be a positive number)", r.per_s),
                });
            }
        }
        Ok(c)
    }
}

impl Calibration {
    /// The rates a roofline with this `peak` needs.
    pub fn rates(&self, peak: Peak) -> Result<Rates, CalibrationError> {
        let name = peak_name(peak);
        let bw = self
            .bandwidth
            .as_ref()
            .ok_or_else(|| CalibrationError::Missing {
                peak: "bandwidth".into(),
                why: "the copy benchmarks did not run".into(),
            })?;
        let ops = self
            .peaks
            .get(name)
            .ok_or_else(|| CalibrationError::Missing {
                peak: name.into(),
                why: self
                    .skipped
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "not measured".into()),
            })?;
        Ok(Rates {
            bytes_per_s: bw.per_s,
            ops_per_s: ops.per_s,
        })
    }
}

/// Speed-of-light of one measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sol {
    pub bytes: i64,
    pub flops: i64,
    pub peak: String,
    pub floor_ms: f64,
    /// Which term of the roofline sets the floor.
    pub bound: Bound,
    /// floor / measured, in percent.
    pub percent: f64,
}

/// The task's roofline at `shape` against the calibrated rates, and `measured_ms` as a
/// percentage of that floor.
pub fn sol(
    task: &Task,
    shape: &Shape,
    cal: &Calibration,
    measured_ms: f64,
) -> Result<Sol, CalibrationError> {
    let bad = |message: String| CalibrationError::Roofline {
        task: task.id.clone(),
        shape: shape.name.clone(),
        message,
    };
    let bytes = task
        .roofline
        .bytes
        .eval(shape)
        .map_err(|e| bad(format!("bytes: {e}")))?;
    let flops = task
        .roofline
        .flops
        .eval(shape)
        .map_err(|e| bad(format!("flops: {e}")))?;
    let rates = cal.rates(task.roofline.peak)?;
    let floor = floor_ms(bytes, flops, &rates).ok_or_else(|| {
        bad(format!(
            "negative traffic or work (bytes {bytes}, flops {flops})"
        ))
    })?;
    let bound = bound(bytes, flops, &rates).unwrap_or(Bound::Memory);
    let percent = sol_percent(floor, measured_ms)
        .ok_or_else(|| bad(format!("measured time {measured_ms} ms is not positive")))?;
    Ok(Sol {
        bytes,
        flops,
        peak: peak_name(task.roofline.peak).to_string(),
        floor_ms: floor,
        bound,
        percent,
    })
}

/// One arithmetic microbenchmark: a kernel `name(float/int* out, int iters)` doing
/// `ops_per_iter` operations per thread per loop iteration.
#[derive(Debug, Clone)]
pub struct ArithBench {
    pub peak: &'static str,
    pub kernel: &'static str,
    pub method: String,
    pub ops_per_thread_iter: f64,
    /// Lowest compute capability (major * 10 + minor) with the instruction.
    pub min_cc: u32,
    /// The instruction is arch-specific (`wgmma`: `sm_90a`): compiled for `min_cc` with the
    /// `a` suffix, and run only on exactly that architecture.
    pub arch_specific: bool,
    /// Compute capabilities where the instruction is emulated and the benchmark would not
    /// measure it (see `arith_benches`' FP8 `mma.sync`).
    pub emulated_on: &'static [u32],
    pub source: String,
}

impl ArithBench {
    /// The target to compile for on a device of compute capability `cc` (major * 10 +
    /// minor), or why this benchmark does not run there.
    pub fn target(&self, cc: u32) -> Result<crate::nvrtc::Arch, String> {
        let arch = |cc: u32, arch_specific| crate::nvrtc::Arch {
            major: cc / 10,
            minor: cc % 10,
            arch_specific,
        };
        if self.arch_specific {
            if cc == self.min_cc {
                return Ok(arch(cc, true));
            }
            return Err(format!(
                "{} runs only on sm_{} (device is sm_{cc})",
                self.method, self.min_cc
            ));
        }
        if self.emulated_on.contains(&cc) {
            return Err(format!(
                "{} is emulated on sm_{cc} (converted to f16 mma), not measured",
                self.method
            ));
        }
        if cc < self.min_cc {
            return Err(format!(
                "{} needs sm_{} or newer (device is sm_{cc})",
                self.method, self.min_cc
            ));
        }
        Ok(arch(cc, false))
    }
}

/// A `mma.sync` loop: 4 independent accumulator chains per warp, fragments from the thread
/// index (values do not change tensor-core throughput), the sum stored so nothing is dead.
fn mma_source(kernel: &str, instr: &str, acc: &str, cons: &str) -> String {
    format!(
        r#"extern "C" __global__ void {kernel}({acc}* out, int iters) {{
  unsigned a0 = threadIdx.x, a1 = a0 ^ 1u, a2 = a0 ^ 2u, a3 = a0 ^ 3u, b0 = a0 ^ 4u, b1 = a0 ^ 5u;
  {acc} c[4][4];
  #pragma unroll
  for (int j = 0; j < 4; ++j) {{
    #pragma unroll
    for (int k = 0; k < 4; ++k) c[j][k] = ({acc})0;
  }}
  for (int i = 0; i < iters; ++i) {{
    #pragma unroll
    for (int j = 0; j < 4; ++j) {{
      asm volatile("{instr} {{%0,%1,%2,%3}}, {{%4,%5,%6,%7}}, {{%8,%9}}, {{%0,%1,%2,%3}};\n"
                   : "+{cons}"(c[j][0]), "+{cons}"(c[j][1]), "+{cons}"(c[j][2]), "+{cons}"(c[j][3])
                   : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }}
  }}
  {acc} s = ({acc})0;
  #pragma unroll
  for (int j = 0; j < 4; ++j) {{
    #pragma unroll
    for (int k = 0; k < 4; ++k) s += c[j][k];
  }}
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}}
"#
    )
}

/// Bytes of the shared-memory operand tiles of one `wgmma` m64nNkK: A is 64 rows and B is N
/// rows of 32 bytes (K = 8 four-byte, 16 two-byte or 32 one-byte elements), in 8-row x 16-byte
/// core matrices without swizzling.
const WGMMA_A_BYTES: u32 = 64 * 32;
const WGMMA_N: u32 = 256;
const WGMMA_B_BYTES: u32 = WGMMA_N * 32;
/// `wgmma` instructions per loop iteration (one commit group).
const WGMMA_PER_ITER: u32 = 4;

/// A warpgroup `wgmma` loop (sm_90a): each warpgroup keeps a 64 x 256 accumulator in
/// registers and issues [`WGMMA_PER_ITER`] `m64n256` products per commit group from operand
/// tiles in shared memory, waiting for all but the latest group, as a Hopper GEMM main loop
/// does. Values do not change tensor-core throughput; the descriptors only have to address the
/// tiles (leading byte offset 128: the next core matrix along K; stride 256: along M / N).
/// `tail` is what follows the descriptors in the instruction: scale-d and, by type, the
/// operand scales and transposes.
fn wgmma_source(kernel: &str, instr: &str, acc: &str, cons: &str, tail: &str, fill: u32) -> String {
    let regs = (WGMMA_N / 2) as usize; // 64 x N accumulators over 128 threads
    let d: Vec<String> = (0..regs).map(|i| format!("%{i}")).collect();
    let outs: Vec<String> = (0..regs).map(|i| format!("\"+{cons}\"(d[{i}])")).collect();
    let (da, db, sc) = (regs, regs + 1, regs + 2);
    format!(
        r#"extern "C" __global__ void __launch_bounds__(256) {kernel}({acc}* out, int iters) {{
  __shared__ __align__(128) unsigned tile[{words}];
  for (int i = threadIdx.x; i < {words}; i += blockDim.x) tile[i] = {fill}u;
  __syncthreads();
  // The tiles were written through the generic proxy; wgmma reads them through the async one.
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  unsigned a = (unsigned)__cvta_generic_to_shared(tile);
  unsigned long long layout = (128ull >> 4) << 16 | (256ull >> 4) << 32;
  unsigned long long da = layout | ((a & 0x3FFFFu) >> 4);
  unsigned long long db = layout | (((a + {a_bytes}u) & 0x3FFFFu) >> 4);
  {acc} d[{regs}];
  #pragma unroll
  for (int j = 0; j < {regs}; ++j) d[j] = ({acc})0;
  int scale_d = 1;
  for (int i = 0; i < iters; ++i) {{
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
    #pragma unroll
    for (int j = 0; j < {per_iter}; ++j) {{
      asm volatile("{{\n.reg .pred p;\nsetp.ne.b32 p, %{sc}, 0;\n"
                   "{instr} {{{dlist}}}, %{da}, %{db}, p{tail};\n}}\n"
                   : {outs}
                   : "l"(da), "l"(db), "r"(scale_d));
    }}
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
  }}
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  {acc} s = ({acc})0;
  #pragma unroll
  for (int j = 0; j < {regs}; ++j) s += d[j];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}}
"#,
        words = (WGMMA_A_BYTES + WGMMA_B_BYTES) / 4,
        a_bytes = WGMMA_A_BYTES,
        per_iter = WGMMA_PER_ITER,
        dlist = d.join(","),
        outs = outs.join(", "),
    )
}

/// An FMA loop with 8 independent chains per thread. The multiplier and addend pass through an
/// empty `asm` (constraint `cons`) so the compiler cannot see their values: with literal
/// integers it folds unrolled iterations into one (4 x `x * 3 + 7` became one `x * 81 + 280`
/// in the PTX), and the loop would execute a quarter of the operations counted.
fn fma_source(kernel: &str, ty: &str, cons: &str, mul: &str, add: &str) -> String {
    format!(
        r#"extern "C" __global__ void {kernel}({ty}* out, int iters) {{
  {ty} x[8];
  #pragma unroll
  for (int j = 0; j < 8; ++j) x[j] = ({ty})(threadIdx.x + j);
  {ty} m = ({ty}){mul}, a = ({ty}){add};
  asm volatile("" : "+{cons}"(m), "+{cons}"(a));
  for (int i = 0; i < iters; ++i) {{
    #pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = x[j] * m + a;
  }}
  {ty} s = ({ty})0;
  #pragma unroll
  for (int j = 0; j < 8; ++j) s += x[j];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}}
"#
    )
}

/// Every arithmetic microbenchmark.
pub fn arith_benches() -> Vec<ArithBench> {
    // Operations per mma: 2 * M * N * K; per thread: that over the 32 lanes of the warp; the
    // loop body issues 4.
    let per_thread = |m: f64, n: f64, k: f64| 4.0 * 2.0 * m * n * k / 32.0;
    vec![
        ArithBench {
            peak: "fp32",
            kernel: "ks_fma_f32",
            method: "fp32 FMA, 8 chains per thread".into(),
            ops_per_thread_iter: 16.0,
            min_cc: 0,
            arch_specific: false,
            emulated_on: &[],
            source: fma_source("ks_fma_f32", "float", "f", "0.9999f", "0.0001f"),
        },
        ArithBench {
            peak: "fp64",
            kernel: "ks_fma_f64",
            method: "fp64 FMA, 8 chains per thread".into(),
            ops_per_thread_iter: 16.0,
            min_cc: 0,
            arch_specific: false,
            emulated_on: &[],
            source: fma_source("ks_fma_f64", "double", "d", "0.9999", "0.0001"),
        },
        ArithBench {
            peak: "int32",
            kernel: "ks_mad_s32",
            method: "int32 multiply-add, 8 chains per thread".into(),
            ops_per_thread_iter: 16.0,
            min_cc: 0,
            arch_specific: false,
            emulated_on: &[],
            source: fma_source("ks_mad_s32", "int", "r", "3", "7"),
        },
        ArithBench {
            peak: "tf32_tensor",
            kernel: "ks_mma_tf32",
            method: "mma.sync.m16n8k8 tf32 -> f32".into(),
            ops_per_thread_iter: per_thread(16.0, 8.0, 8.0),
            min_cc: 80,
            arch_specific: false,
            emulated_on: &[],
            source: mma_source(
                "ks_mma_tf32",
                "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32",
                "float",
                "f",
            ),
        },
        ArithBench {
            peak: "fp16_tensor",
            kernel: "ks_mma_f16",
            method: "mma.sync.m16n8k16 f16 -> f32".into(),
            ops_per_thread_iter: per_thread(16.0, 8.0, 16.0),
            min_cc: 80,
            arch_specific: false,
            emulated_on: &[],
            source: mma_source(
                "ks_mma_f16",
                "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
                "float",
                "f",
            ),
        },
        ArithBench {
            peak: "bf16_tensor",
            kernel: "ks_mma_bf16",
            method: "mma.sync.m16n8k16 bf16 -> f32".into(),
            ops_per_thread_iter: per_thread(16.0, 8.0, 16.0),
            min_cc: 80,
            arch_specific: false,
            emulated_on: &[],
            source: mma_source(
                "ks_mma_bf16",
                "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
                "float",
                "f",
            ),
        },
        ArithBench {
            peak: "int8_tensor",
            kernel: "ks_mma_s8",
            method: "mma.sync.m16n8k32 s8 -> s32".into(),
            ops_per_thread_iter: per_thread(16.0, 8.0, 32.0),
            min_cc: 80,
            arch_specific: false,
            emulated_on: &[],
            source: mma_source(
                "ks_mma_s8",
                "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32",
                "int",
                "r",
            ),
        },
        ArithBench {
            peak: "fp8_tensor",
            kernel: "ks_mma_e4m3",
            method: "mma.sync.m16n8k32 e4m3 -> f32".into(),
            ops_per_thread_iter: per_thread(16.0, 8.0, 32.0),
            min_cc: 89,
            arch_specific: false,
            // Hopper and datacenter Blackwell have no FP8 mma.sync: ptxas converts the
            // operands to f16 for two HMMAs, then (the fragments being loop-invariant)
            // computes the product once per iteration and adds it to all 16 accumulators,
            // so the loop would time FADDs (nvdisasm, NVRTC 13.0: sm_90/100/103/110 emit
            // F2FP + HMMA.16816 + FADD; sm_89/120/121 emit QMMA). wgmma measures FP8 there.
            emulated_on: crate::nvrtc::emulated::FP8_MMA_SYNC_EMULATED,
            source: mma_source(
                "ks_mma_e4m3",
                "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32",
                "float",
                "f",
            ),
        },
        // Hopper's warpgroup MMA is faster than mma.sync; a peak from mma.sync alone would
        // put a wgmma GEMM above its floor (and quarantine it). Where both run, the faster
        // rate is the peak.
        wgmma_bench(
            "bf16_tensor",
            "ks_wgmma_bf16",
            "m64n256k16.f32.bf16.bf16",
            16.0,
            "float",
            "f",
            ", 1, 1, 0, 0",
            0x3f80_3f80,
        ),
        wgmma_bench(
            "fp16_tensor",
            "ks_wgmma_f16",
            "m64n256k16.f32.f16.f16",
            16.0,
            "float",
            "f",
            ", 1, 1, 0, 0",
            0x3c00_3c00,
        ),
        wgmma_bench(
            "fp8_tensor",
            "ks_wgmma_e4m3",
            "m64n256k32.f32.e4m3.e4m3",
            32.0,
            "float",
            "f",
            ", 1, 1",
            0x3838_3838,
        ),
        wgmma_bench(
            "int8_tensor",
            "ks_wgmma_s8",
            "m64n256k32.s32.s8.s8",
            32.0,
            "int",
            "r",
            "",
            0x0101_0101,
        ),
        // TF32 has wgmma too (k8, no transpose operands), last: it is the one added after
        // the others were written.
        wgmma_bench(
            "tf32_tensor",
            "ks_wgmma_tf32",
            "m64n256k8.f32.tf32.tf32",
            8.0,
            "float",
            "f",
            ", 1, 1",
            0x3f80_0000,
        ),
    ]
}

/// A [`wgmma_source`] benchmark of `shape_types` (`m64n256k16.f32.bf16.bf16`) on sm_90a.
#[allow(clippy::too_many_arguments)]
fn wgmma_bench(
    peak: &'static str,
    kernel: &'static str,
    shape_types: &str,
    k: f64,
    acc: &str,
    cons: &str,
    tail: &str,
    fill: u32,
) -> ArithBench {
    let instr = format!("wgmma.mma_async.sync.aligned.{shape_types}");
    // 2 * 64 * N * K operations per wgmma, shared by the warpgroup's 128 threads.
    let per_thread = WGMMA_PER_ITER as f64 * 2.0 * 64.0 * WGMMA_N as f64 * k / 128.0;
    ArithBench {
        peak,
        kernel,
        method: format!("{instr} (sm_90a), {WGMMA_PER_ITER} per commit group"),
        ops_per_thread_iter: per_thread,
        min_cc: 90,
        arch_specific: true,
        emulated_on: &[],
        source: wgmma_source(kernel, &instr, acc, cons, tail, fill),
    }
}

/// The copy kernel: 16-byte loads and stores, grid-stride.
pub const COPY_KERNEL: &str = r#"extern "C" __global__ void ks_copy(const int4* __restrict__ src, int4* __restrict__ dst, long long n) {
  long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = src[i];
}
"#;

/// What a calibration run is told.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Repetitions per benchmark (the best counts).
    pub repetitions: u32,
    /// Bytes of the copy source (and destination).
    pub copy_bytes: u64,
    /// Target duration of one arithmetic launch.
    pub target_ms: f64,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            repetitions: 10,
            copy_bytes: 1 << 30,
            target_ms: 20.0,
        }
    }
}

fn launch(kernel: &str, grid: u32, block: u32, args: Vec<ResolvedArg>) -> ResolvedLaunch {
    ResolvedLaunch {
        kernel: kernel.to_string(),
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        shared_bytes: 0,
        args,
        cluster: None,
        cooperative: false,
    }
}

/// Milliseconds of `f` (work queued on the GPU's stream) between two events, best of `reps`.
fn best_ms(
    gpu: &Gpu,
    reps: u32,
    mut f: impl FnMut() -> Result<(), RuntimeError>,
) -> Result<f64, RuntimeError> {
    let (a, b) = (gpu.event()?, gpu.event()?);
    f()?; // warm-up: module load, clocks ramping
    gpu.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        a.record()?;
        f()?;
        b.record()?;
        best = best.min(a.elapsed_ms(&b)? as f64);
    }
    Ok(best)
}

/// The fastest of the measured streaming rates, its method naming the others (only the best
/// is kept in the calibration's `bandwidth`; copy and memcpy have their own fields).
pub fn best_bandwidth(rates: &[&Option<Rate>]) -> Option<Rate> {
    let all: Vec<&Rate> = rates.iter().filter_map(|r| r.as_ref()).collect();
    fastest(&all, |r| format!("{:.0} GB/s", r.per_s / 1e9))
}

/// The fastest of `all` (the last of equals), its method naming each other one with its rate
/// as `rate` writes it.
fn fastest(all: &[&Rate], rate: impl Fn(&Rate) -> String) -> Option<Rate> {
    let best = all.iter().max_by(|a, b| a.per_s.total_cmp(&b.per_s))?;
    let others: Vec<String> = all
        .iter()
        .filter(|r| !std::ptr::eq(**r, *best))
        .map(|r| format!("{}: {}", r.method, rate(r)))
        .collect();
    let mut out = (*best).clone();
    if !others.is_empty() {
        out.method = format!("{} (best of; also {})", out.method, others.join("; "));
    }
    Some(out)
}

/// Runs every microbenchmark on `gpu`. A benchmark the architecture lacks, or whose kernel
/// does not compile, is listed in `skipped` with the reason; driver errors end the run.
pub fn calibrate(
    gpu: &Gpu,
    compiler: &Compiler,
    gpu_key: &str,
    opts: &CalibrateOptions,
    telemetry: &Telemetry,
    progress: &mut dyn FnMut(&str),
) -> Result<Calibration, RuntimeError> {
    let info = &gpu.info;
    let arch = info.arch();
    let cc = info.compute_capability.0 * 10 + info.compute_capability.1;
    let mut meas = telemetry.begin();
    let mut peaks = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    let reps = opts.repetitions;

    // Copy bandwidth: sized well past L2, and within a quarter of free memory.
    let (free, _) = gpu.memory()?;
    let bytes = opts
        .copy_bytes
        .min(free / 4)
        .max(16 * info.l2_cache_bytes.max(1 << 20))
        / 16
        * 16;
    let src = gpu.alloc("copy_src", DType::U8, bytes)?;
    let dst = gpu.alloc("copy_dst", DType::U8, bytes)?;
    src.fill(&[0x5A])?;
    let moved = 2.0 * bytes as f64;
    let rate = |ms: f64, method: String| Rate {
        per_s: moved / (ms * 1e-3),
        method,
        repetitions: reps,
        best_ms: ms,
    };
    progress("cuMemcpyDtoD");
    let memcpy_ms = best_ms(gpu, reps, || dst.copy_from(&src))?;
    let memcpy_dtod = Some(rate(
        memcpy_ms,
        format!("cuMemcpyDtoDAsync of {bytes} bytes"),
    ));
    progress("copy kernel");
    let copy_kernel = match compiler.compile(&CompileRequest::new(
        COPY_KERNEL,
        vec!["ks_copy".to_string()],
        arch,
    )) {
        Ok(c) => {
            let m = gpu.load(&c)?;
            let n = (bytes / 16) as i64;
            let grid = info.sm_count * 8;
            let l = launch(
                "ks_copy",
                grid,
                256,
                vec![
                    ResolvedArg::Buffer("src".into()),
                    ResolvedArg::Buffer("dst".into()),
                    ResolvedArg::I64(n),
                ],
            );
            let addr = |name: &str| match name {
                "src" => Some(src.address()),
                "dst" => Some(dst.address()),
                _ => None,
            };
            let ms = best_ms(gpu, reps, || gpu.launch(&m, &l, &addr))?;
            Some(rate(
                ms,
                format!("copy kernel, int4 grid-stride, {bytes} bytes"),
            ))
        }
        Err(e) => {
            skipped.insert("copy_kernel".to_string(), format!("does not compile: {e}"));
            None
        }
    };
    // Reading alone streams faster than copying (no read/write turnaround on the bus): a
    // read-dominated kernel (a reduction) would otherwise beat a floor computed from the copy
    // rate and be quarantined for doing its job well.
    progress("read kernel");
    let mut launch_overhead = None;
    let read_kernel = match compiler.compile(&CompileRequest::new(
        FLUSH_KERNEL,
        vec![FLUSH_KERNEL_NAME.to_string()],
        arch,
    )) {
        Ok(c) => {
            let m = gpu.load(&c)?;
            let sink = gpu.alloc("read_sink", DType::I32, 1)?;
            let l = launch(
                FLUSH_KERNEL_NAME,
                info.sm_count * 8,
                256,
                vec![
                    ResolvedArg::Buffer("buf".into()),
                    ResolvedArg::I64((bytes / 16) as i64),
                    // src holds 0x5A bytes: each thread's XOR is 0, never this key.
                    ResolvedArg::I32(1),
                    ResolvedArg::Buffer("sink".into()),
                ],
            );
            let addr = |name: &str| match name {
                "buf" => Some(src.address()),
                "sink" => Some(sink.address()),
                _ => None,
            };
            let ms = best_ms(gpu, reps, || gpu.launch(&m, &l, &addr))?;
            // The launch cost, queued behind a read of twice L2 as a timed call is queued
            // behind the flush.
            progress("launch overhead");
            let flush_words = (2 * info.l2_cache_bytes.max(1 << 20)).min(bytes) / 16;
            let mut flush = l.clone();
            flush.args[1] = ResolvedArg::I64(flush_words as i64);
            match measure_launch(gpu, compiler, &mut || gpu.launch(&m, &flush, &addr))? {
                Ok(o) => launch_overhead = Some(o),
                Err(why) => {
                    skipped.insert("launch_overhead".to_string(), why);
                }
            }
            Some(Rate {
                per_s: bytes as f64 / (ms * 1e-3),
                method: format!("read kernel, int4 ld.global.cg grid-stride, {bytes} bytes"),
                repetitions: reps,
                best_ms: ms,
            })
        }
        Err(e) => {
            skipped.insert("read_kernel".to_string(), format!("does not compile: {e}"));
            skipped.insert(
                "launch_overhead".to_string(),
                "needs the read kernel as the work queued ahead".to_string(),
            );
            None
        }
    };
    drop((src, dst));
    let bandwidth = best_bandwidth(&[&copy_kernel, &memcpy_dtod, &read_kernel]);

    for b in arith_benches() {
        let target = match b.target(cc) {
            Ok(t) => t,
            Err(why) => {
                // Another benchmark of the same peak may run here (mma.sync where wgmma
                // cannot); the reason is kept only if none does.
                if !peaks.contains_key(b.peak) {
                    skipped.entry(b.peak.to_string()).or_insert(why);
                }
                continue;
            }
        };
        progress(&format!("{} ({})", b.peak, b.kernel));
        let compiled = match compiler.compile(&CompileRequest::new(
            b.source.clone(),
            vec![b.kernel.to_string()],
            target,
        )) {
            Ok(c) => c,
            Err(e) => {
                skipped.insert(
                    format!("{} ({})", b.peak, b.kernel),
                    format!("does not compile for {target}: {e}"),
                );
                continue;
            }
        };
        let measured = gpu
            .load(&compiled)
            .and_then(|m| measure_arith(gpu, &m, &b, opts));
        let measured = match measured {
            Ok(m) => m,
            // The arch-specific benchmarks come last and are the newest code: one that faults
            // costs its own rate, not the calibration. A fault can leave the context unusable,
            // so nothing runs after it.
            Err(e) if b.arch_specific => {
                skipped.insert(
                    format!("{} ({})", b.peak, b.kernel),
                    format!("failed on the GPU, later benchmarks not run: {e}"),
                );
                break;
            }
            Err(e) => return Err(e),
        };
        match measured {
            Some(r) => {
                skipped.remove(b.peak);
                let best = match peaks.remove(b.peak) {
                    Some(other) => faster(r, other),
                    None => r,
                };
                peaks.insert(b.peak.to_string(), best);
            }
            None => {
                skipped.insert(
                    format!("{} ({})", b.peak, b.kernel),
                    "the loop never took long enough to time".to_string(),
                );
            }
        }
    }
    telemetry.end(&mut meas);
    Ok(Calibration {
        version: CALIBRATION_VERSION,
        gpu_key: gpu_key.to_string(),
        device: info.summary(),
        arch: arch.to_string(),
        measured_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        bandwidth,
        copy_kernel,
        memcpy_dtod,
        peaks,
        skipped,
        launch: launch_overhead,
        telemetry: meas,
    })
}

/// A kernel that does nothing: what is left of a call's time is the launch.
pub const EMPTY_KERNEL: &str = "extern \"C\" __global__ void ks_empty() {}\n";
const EMPTY_KERNEL_NAME: &str = "ks_empty";
const LAUNCH_SAMPLES: usize = 200;

/// The empty kernel (one block of 32 threads, the least a launch can be) timed like a call of
/// `bench`: `busy` queues work, then an event, the launch, an event. The busy work keeps the
/// GPU from idling while the host queues the launch, so host latency is not counted. The
/// inner error is why it could not be measured (the kernel did not compile).
fn measure_launch(
    gpu: &Gpu,
    compiler: &Compiler,
    busy: &mut dyn FnMut() -> Result<(), RuntimeError>,
) -> Result<Result<LaunchOverhead, String>, RuntimeError> {
    let compiled = match compiler.compile(&CompileRequest::new(
        EMPTY_KERNEL,
        vec![EMPTY_KERNEL_NAME.to_string()],
        gpu.info.arch(),
    )) {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("the empty kernel does not compile: {e}"))),
    };
    let m = gpu.load(&compiled)?;
    let l = launch(EMPTY_KERNEL_NAME, 1, 32, Vec::new());
    let none = |_: &str| None;
    let (a, b) = (gpu.event()?, gpu.event()?);
    gpu.launch(&m, &l, &none)?; // warm-up: module load
    gpu.synchronize()?;
    let mut samples = Vec::with_capacity(LAUNCH_SAMPLES);
    for _ in 0..LAUNCH_SAMPLES {
        busy()?;
        a.record()?;
        gpu.launch(&m, &l, &none)?;
        b.record()?;
        samples.push(a.elapsed_ms(&b)? as f64);
    }
    Ok(launch_overhead(&samples))
}

/// The summary of the empty launch's samples.
pub fn launch_overhead(samples_ms: &[f64]) -> Result<LaunchOverhead, String> {
    let s = Summary::of(samples_ms)
        .ok_or_else(|| format!("no usable samples among {}", samples_ms.len()))?;
    Ok(LaunchOverhead {
        median_ms: s.median_ms,
        p20_ms: s.p20_ms,
        p80_ms: s.p80_ms,
        samples: s.n,
        method: format!(
            "empty kernel, 1 block of 32 threads, between two events behind an L2-sized read, {} samples",
            s.n
        ),
    })
}

/// The faster of two measurements of one peak, its method naming the slower one.
pub fn faster(a: Rate, b: Rate) -> Rate {
    // `a` last: it wins a tie.
    let both = [&b, &a];
    fastest(&both, |r| format!("{:.1} T/s", r.per_s / 1e12)).unwrap_or(a)
}

fn measure_arith(
    gpu: &Gpu,
    m: &Module,
    b: &ArithBench,
    opts: &CalibrateOptions,
) -> Result<Option<Rate>, RuntimeError> {
    let info = &gpu.info;
    let block = 256u32;
    let grid = info.sm_count * (info.max_threads_per_sm / block).max(1);
    let threads = grid as u64 * block as u64;
    let out: DeviceBuffer = gpu.alloc("out", DType::F64, threads)?;
    let addr = |name: &str| (name == "out").then(|| out.address());
    // Double the loop count until one launch takes long enough to time well.
    let mut iters: i32 = 256;
    loop {
        let l = launch(
            b.kernel,
            grid,
            block,
            vec![ResolvedArg::Buffer("out".into()), ResolvedArg::I32(iters)],
        );
        let ms = best_ms(gpu, 1, || gpu.launch(m, &l, &addr))?;
        if ms >= opts.target_ms / 4.0 || iters >= 1 << 24 {
            if ms < 0.5 {
                return Ok(None);
            }
            let best = best_ms(gpu, opts.repetitions, || gpu.launch(m, &l, &addr))?;
            let ops = threads as f64 * iters as f64 * b.ops_per_thread_iter;
            return Ok(Some(Rate {
                per_s: ops / (best * 1e-3),
                method: format!(
                    "{} ({grid} x {block} threads, {iters} iterations)",
                    b.method
                ),
                repetitions: opts.repetitions,
                best_ms: best,
            }));
        }
        iters = iters.saturating_mul(2);
    }
}

/// Where calibrations are kept on disk: `results/calibration/<key>.json`, the key made
/// file-name safe.
pub fn calibration_path(results: &Path, gpu_key: &str) -> std::path::PathBuf {
    let safe: String = gpu_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    results.join("calibration").join(format!("{safe}.json"))
}

/// Reads a stored calibration; `Ok(None)` when there is none for this key.
pub fn load_calibration(
    results: &Path,
    gpu_key: &str,
) -> Result<Option<Calibration>, CalibrationError> {
    let p = calibration_path(results, gpu_key);
    match std::fs::read_to_string(&p) {
        Ok(text) => Calibration::from_json(&text, &p).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CalibrationError::File {
            path: p.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// Writes a calibration where [`load_calibration`] finds it.
pub fn save_calibration(
    results: &Path,
    cal: &Calibration,
) -> Result<std::path::PathBuf, CalibrationError> {
    let p = calibration_path(results, &cal.gpu_key);
    let io = |e: std::io::Error| CalibrationError::File {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(&p, cal.to_json()).map_err(io)?;
    Ok(p)
}

/// The key a GPU's results are stored under: name, architecture and driver version.
pub fn gpu_key(info: &super::DeviceInfo) -> String {
    format!(
        "{}|{}|driver {}.{}",
        info.name,
        info.sm(),
        info.driver_version / 1000,
        (info.driver_version % 1000) / 10
    )
}

#[cfg(test)]
mod tests;
