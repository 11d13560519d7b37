//! The timing protocol of DESIGN §5 on a device, for one shape of a task and one or more
//! kernels (the reference first, candidates after it) timed interleaved: A B A B.
//!
//! Per sample, for each kernel in turn, untimed: the activation inputs are refreshed from a pool
//! of pre-generated sets by device-to-device copies (no call sees the inputs of the call before
//! it, so caching across calls cannot pay), outputs and scratch are poisoned, and L2 is flushed
//! by streaming a buffer twice its size through it on the same stream (after the refresh, so
//! the inputs are not left warm in L2). Timed: an event, every launch of the plan, an event.
//!
//! The flush *reads* ([`FLUSH_KERNEL`], [`Flush::Read`]) where it can: a flush that writes
//! (a memset, what KernelBench and Triton's do_bench do) leaves L2 full of dirty lines, and the
//! timed kernel then pays for writing them back to DRAM — up to L2's size of extra traffic,
//! several percent of a 100 us memory-bound kernel, which Nsight Compute's clean cache does not
//! see. Reading also evicts (writes back) the refresh's and the poison's dirty lines before the
//! timed window opens. [`Flush::Write`] remains for devices where the kernel is unavailable. The statistics
//! and stopping rules are [`crate::timing`]'s; speedups are side by side. After the last timed
//! call each output is re-validated: a candidate's against the reference's output for the same
//! input set, the reference's against a fresh untimed run of itself.
//!
//! Calls under [`Protocol::graph_below`] also get an amortized time: `n` calls of the plan
//! captured into one CUDA graph, replayed once untimed and once between two events (no refresh
//! or flush in between), divided by `n`: what the call costs when launch overhead is paid by a
//! graph, as in a serving loop. Where capture fails, the `n` calls are launched back to back
//! instead; the method is recorded with the number either way.
//!
//! Nothing here touches clocks, power limits, persistence or compute mode.

use super::backend::Backend;
use super::error::RuntimeError;
use super::gpu::Gpu;
use super::telemetry::{MeasurementTelemetry, Telemetry};
use crate::compare::{compare, Metric, Poison};
use crate::dtype::DType;
use crate::inputs::{dims_of, generate_inputs, HostTensor, Variant};
use crate::plan::{Plan, ResolvedArg, ResolvedLaunch};
use crate::task::{Role, Shape, Task};
use crate::timing::{speedup, Protocol, Speedup, StopReason, Summary};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What the timing loop needs beyond [`Backend`]: events and device-to-device copies on the
/// same stream as the launches.
pub trait TimingDevice: Backend {
    type Event;
    type Graph;
    fn new_event(&self) -> Result<Self::Event, RuntimeError>;
    fn record(&self, e: &Self::Event) -> Result<(), RuntimeError>;
    /// Milliseconds between two recorded events, waiting for `end`.
    fn elapsed_ms(&self, start: &Self::Event, end: &Self::Event) -> Result<f64, RuntimeError>;
    /// Copies `src` into `dst` (same length) on the stream.
    fn copy(&self, dst: &Self::Buffer, src: &Self::Buffer) -> Result<(), RuntimeError>;
    /// The device's L2 size in bytes.
    fn l2_bytes(&self) -> u64;
    /// Captures the work `queue` puts on the stream into a replayable graph without running
    /// it; an error means this work cannot be captured here (the caller falls back).
    fn capture(
        &self,
        queue: &mut dyn FnMut() -> Result<(), RuntimeError>,
    ) -> Result<Self::Graph, RuntimeError>;
    /// Queues one replay of `graph` on the stream.
    fn replay(&self, graph: &Self::Graph) -> Result<(), RuntimeError>;
}

impl TimingDevice for Gpu {
    type Event = super::gpu::Event;
    type Graph = super::gpu::Graph;
    fn new_event(&self) -> Result<Self::Event, RuntimeError> {
        self.event()
    }
    fn record(&self, e: &Self::Event) -> Result<(), RuntimeError> {
        e.record()
    }
    fn elapsed_ms(&self, start: &Self::Event, end: &Self::Event) -> Result<f64, RuntimeError> {
        Ok(start.elapsed_ms(end)? as f64)
    }
    fn copy(&self, dst: &Self::Buffer, src: &Self::Buffer) -> Result<(), RuntimeError> {
        dst.copy_from(src)
    }
    fn l2_bytes(&self) -> u64 {
        self.info.l2_cache_bytes
    }
    fn capture(
        &self,
        queue: &mut dyn FnMut() -> Result<(), RuntimeError>,
    ) -> Result<Self::Graph, RuntimeError> {
        Gpu::capture(self, queue)
    }
    fn replay(&self, graph: &Self::Graph) -> Result<(), RuntimeError> {
        graph.launch()
    }
}

/// Name of the L2 flush kernel in [`FLUSH_KERNEL`].
pub const FLUSH_KERNEL_NAME: &str = "ks_l2_flush";

/// Streams `n` 16-byte words through L2 (`ld.global.cg`: cached in L2 only) and keeps the loads
/// alive with a comparison against a runtime `key` the harness chooses so that it never holds
/// for the zero-filled buffer (acc is 0): nothing is written.
pub const FLUSH_KERNEL: &str = r#"extern "C" __global__ void ks_l2_flush(const int4* __restrict__ buf, long long n, int key, int* __restrict__ sink) {
    int acc = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int4 v = __ldcg(buf + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == key) *sink = acc;
}
"#;

/// How L2 is emptied before each timed call.
pub enum Flush<'a, B: Backend> {
    /// Write 2 x L2 bytes (memset): leaves dirty lines behind (see the module comment).
    Write,
    /// Read 2 x L2 bytes with this loaded build of [`FLUSH_KERNEL`]: leaves clean lines.
    Read(&'a B::Program),
}

impl<B: Backend> Flush<'_, B> {
    pub fn method(&self) -> &'static str {
        match self {
            Flush::Write => "write",
            Flush::Read(_) => "read",
        }
    }
}

/// The flush kernel's launch over `bytes` of buffer `buf`.
fn flush_launch(bytes: u64) -> ResolvedLaunch {
    ResolvedLaunch {
        kernel: FLUSH_KERNEL_NAME.to_string(),
        grid: [1024, 1, 1],
        block: [256, 1, 1],
        shared_bytes: 0,
        args: vec![
            ResolvedArg::Buffer("buf".into()),
            ResolvedArg::I64((bytes / 16) as i64),
            ResolvedArg::I32(1),
            ResolvedArg::Buffer("sink".into()),
        ],
        cluster: None,
        cooperative: false,
    }
}

/// One kernel to time: its plan (resolved for the shape) and loaded program.
pub struct Subject<'a, B: Backend> {
    pub name: String,
    pub plan: &'a Plan,
    pub program: &'a B::Program,
}

/// Options beyond [`Protocol`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimingOptions {
    pub protocol: Protocol,
    /// Input sets in the refresh pool (at least 2 where memory allows).
    pub pool_sets: usize,
    /// Cap on the pool's device memory.
    pub pool_bytes: u64,
    /// Seed of the first pool set (set k uses `seed + k`).
    pub seed: u64,
}

impl Default for TimingOptions {
    fn default() -> Self {
        TimingOptions {
            protocol: Protocol::default(),
            pool_sets: 4,
            pool_bytes: 2 << 30,
            seed: 1000,
        }
    }
}

/// The timings of one kernel at one shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectTiming {
    pub name: String,
    pub samples_ms: Vec<f64>,
    pub summary: Summary,
    pub warmup_calls: usize,
    pub warmup_ms: f64,
    /// Per-call time amortized over `amortized_calls` calls in one CUDA graph (or back to
    /// back, see `amortized_method`), for calls under the threshold.
    pub amortized_ms: Option<f64>,
    pub amortized_calls: Option<u32>,
    /// How the amortized time was taken.
    #[serde(default)]
    pub amortized_method: Option<String>,
    /// `None`: the output of the last timed call matched; else why it did not.
    pub revalidation_failure: Option<String>,
    /// Timed samples whose NVML reason bits showed a power or thermal slowdown.
    pub throttled_samples: u32,
}

/// One shape's measurement: every subject, side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeTimings {
    pub shape: String,
    pub values: Vec<(String, i64)>,
    pub pool_sets: usize,
    pub flush_bytes: u64,
    pub stop_reason: StopReason,
    pub subjects: Vec<SubjectTiming>,
    /// Speedup of subject `i + 1` over subject 0 (the reference), from the interleaved samples.
    pub speedups: Vec<Option<Speedup>>,
    pub telemetry: MeasurementTelemetry,
    pub elapsed_ms: f64,
}

/// The timing could not be completed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TimingError {
    pub message: String,
    /// The CUDA context is unusable.
    pub context_lost: bool,
    /// The index of the subject at fault, when one is.
    pub subject: Option<usize>,
}

impl TimingError {
    fn new(message: impl Into<String>) -> TimingError {
        TimingError {
            message: message.into(),
            context_lost: false,
            subject: None,
        }
    }
    fn runtime(what: impl std::fmt::Display, e: RuntimeError, subject: Option<usize>) -> Self {
        TimingError {
            message: format!("{what}: {e}"),
            context_lost: e.is_sticky(),
            subject,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Activation,
    Weight,
    Output,
    Scratch,
    Persistent,
}

struct Buf<B: Backend> {
    name: String,
    slot: Slot,
    dtype: DType,
    dims: Vec<u64>,
    buf: B::Buffer,
}

/// A subject's own buffers at one shape.
struct Live<B: Backend> {
    bufs: Vec<Buf<B>>,
}

impl<B: Backend> Live<B> {
    fn address(&self, dev: &B, name: &str) -> Option<u64> {
        self.bufs
            .iter()
            .find(|b| b.name == name)
            .map(|b| dev.address(&b.buf))
    }
    fn of(&self, slot: Slot) -> impl Iterator<Item = &Buf<B>> {
        self.bufs.iter().filter(move |b| b.slot == slot)
    }
}

fn alloc<B: Backend>(
    dev: &B,
    name: &str,
    slot: Slot,
    dtype: DType,
    dims: Vec<u64>,
) -> Result<Buf<B>, TimingError> {
    let numel: u64 = dims.iter().product();
    let buf = dev
        .alloc(name, dtype, numel)
        .map_err(|e| TimingError::runtime(format!("allocating `{name}`"), e, None))?;
    Ok(Buf {
        name: name.to_string(),
        slot,
        dtype,
        dims,
        buf,
    })
}

fn live_buffers<B: Backend>(
    dev: &B,
    task: &Task,
    plan: &Plan,
    shape: &Shape,
) -> Result<Live<B>, TimingError> {
    let mut bufs = Vec::new();
    for d in &task.inputs {
        let dims = dims_of(d, shape).map_err(|e| TimingError::new(format!("`{}`: {e}", d.name)))?;
        let slot = match d.role {
            Role::Weight => Slot::Weight,
            Role::Activation => Slot::Activation,
        };
        bufs.push(alloc(dev, &d.name, slot, d.dtype, dims)?);
    }
    for d in &task.outputs {
        let dims = dims_of(d, shape).map_err(|e| TimingError::new(format!("`{}`: {e}", d.name)))?;
        bufs.push(alloc(dev, &d.name, Slot::Output, d.dtype, dims)?);
    }
    let lens = plan.scratch_lengths(shape).map_err(TimingError::new)?;
    for (s, len) in plan.scratch.iter().zip(lens) {
        let slot = if s.persistent {
            Slot::Persistent
        } else {
            Slot::Scratch
        };
        bufs.push(alloc(dev, &s.name, slot, s.dtype, vec![len])?);
    }
    Ok(Live { bufs })
}

/// How many pool sets fit: `wanted`, fewer when one set's activations are large, never below 1.
pub fn pool_size(wanted: usize, set_bytes: u64, budget: u64) -> usize {
    if set_bytes == 0 {
        return wanted.max(1);
    }
    (budget / set_bytes).clamp(1, wanted.max(1) as u64) as usize
}

/// Calls for the amortized time: enough to fill about 2 ms, 10 to 1000.
pub fn amortized_calls(median_ms: f64) -> u32 {
    if median_ms.is_nan() || median_ms <= 0.0 {
        return 10;
    }
    ((2.0 / median_ms).ceil() as u64).clamp(10, 1000) as u32
}

struct Prepared<'a, B: Backend> {
    subject: &'a Subject<'a, B>,
    launches: Vec<ResolvedLaunch>,
    live: Live<B>,
}

/// Times `subjects` (subject 0 is the baseline every speedup is against) at `shape`, flushing
/// L2 by writing; see [`time_shape_with`].
pub fn time_shape<B: TimingDevice>(
    dev: &B,
    task: &Task,
    shape: &Shape,
    subjects: &[Subject<'_, B>],
    opts: &TimingOptions,
    telemetry: &Telemetry,
) -> Result<ShapeTimings, TimingError> {
    time_shape_with(dev, task, shape, subjects, opts, telemetry, &Flush::Write)
}

/// Times `subjects` (subject 0 is the baseline every speedup is against) at `shape`.
pub fn time_shape_with<B: TimingDevice>(
    dev: &B,
    task: &Task,
    shape: &Shape,
    subjects: &[Subject<'_, B>],
    opts: &TimingOptions,
    telemetry: &Telemetry,
    flush_by: &Flush<'_, B>,
) -> Result<ShapeTimings, TimingError> {
    let started = Instant::now();
    if subjects.is_empty() {
        return Err(TimingError::new("nothing to time"));
    }
    let at = format!("shape {} ({})", shape.name, shape.describe());
    // The input pool: activation inputs of every set on the device; weights are those of set 0
    // (they were prepared once, and `[[prepare]]` output depends on them).
    let first = generate_inputs(task, shape, opts.seed, Variant::Base)
        .map_err(|e| TimingError::new(format!("{at}: {e}")))?;
    let act_bytes: u64 = task
        .inputs
        .iter()
        .zip(&first)
        .filter(|(d, _)| d.role == Role::Activation)
        .map(|(_, t)| t.bytes.len() as u64)
        .sum();
    let n_sets = pool_size(opts.pool_sets, act_bytes, opts.pool_bytes);
    let mut pool: Vec<Vec<B::Buffer>> = Vec::new();
    for k in 0..n_sets {
        let set = if k == 0 {
            first.clone()
        } else {
            generate_inputs(task, shape, opts.seed + k as u64, Variant::Base)
                .map_err(|e| TimingError::new(format!("{at}: {e}")))?
        };
        let mut bufs = Vec::new();
        for (d, t) in task.inputs.iter().zip(&set) {
            if d.role != Role::Activation {
                continue;
            }
            let b = dev
                .alloc(&format!("pool{k}.{}", d.name), d.dtype, t.numel())
                .map_err(|e| TimingError::runtime(format!("{at}: input pool"), e, None))?;
            dev.upload(&b, &t.bytes)
                .map_err(|e| TimingError::runtime(format!("{at}: input pool"), e, None))?;
            bufs.push(b);
        }
        pool.push(bufs);
    }
    let flush_bytes = 2 * dev.l2_bytes().max(1 << 20);
    let flush = dev
        .alloc("l2_flush", DType::U8, flush_bytes)
        .map_err(|e| TimingError::runtime("allocating the L2 flush buffer", e, None))?;
    let sink = dev
        .alloc("l2_flush_sink", DType::I32, 1)
        .map_err(|e| TimingError::runtime("allocating the L2 flush buffer", e, None))?;
    if let Flush::Read(_) = flush_by {
        // Zeros, so the kernel's accumulator (0) never matches its key (1).
        dev.fill(&flush, &[0])
            .map_err(|e| TimingError::runtime("clearing the L2 flush buffer", e, None))?;
    }
    let flush_call = flush_launch(flush_bytes);
    let (flush_addr, sink_addr) = (dev.address(&flush), dev.address(&sink));
    let flush_args = |name: &str| match name {
        "buf" => Some(flush_addr),
        "sink" => Some(sink_addr),
        _ => None,
    };

    let mut prepared: Vec<Prepared<B>> = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        let launches = s
            .plan
            .resolve(shape)
            .map_err(|e| TimingError::new(format!("{}: {at}: {e}", s.name)))?;
        let prep = s
            .plan
            .resolve_prepare(shape)
            .map_err(|e| TimingError::new(format!("{}: {at}: {e}", s.name)))?;
        let live = live_buffers(dev, task, s.plan, shape)?;
        for (b, t) in live
            .bufs
            .iter()
            .filter(|b| matches!(b.slot, Slot::Activation | Slot::Weight))
            .zip(&first)
        {
            dev.upload(&b.buf, &t.bytes)
                .map_err(|e| TimingError::runtime(format!("{}: upload", s.name), e, Some(i)))?;
        }
        for b in live.of(Slot::Persistent) {
            dev.fill(&b.buf, &Poison::A.element(b.dtype))
                .map_err(|e| TimingError::runtime(format!("{}: poison", s.name), e, Some(i)))?;
        }
        run_launches(dev, s.program, &prep, &live)
            .and_then(|_| dev.synchronize())
            .map_err(|e| TimingError::runtime(format!("{}: [[prepare]]", s.name), e, Some(i)))?;
        prepared.push(Prepared {
            subject: s,
            launches,
            live,
        });
    }

    let p = &opts.protocol;
    let start_ev = dev
        .new_event()
        .map_err(|e| TimingError::runtime("creating events", e, None))?;
    let end_ev = dev
        .new_event()
        .map_err(|e| TimingError::runtime("creating events", e, None))?;
    let mut flush_parity = 0u8;
    // One call, untimed preamble included; returns the timed milliseconds.
    let mut call = |i: usize, set: usize| -> Result<f64, TimingError> {
        let s = &prepared[i];
        let name = &s.subject.name;
        let fail = |what: &str, e: RuntimeError| {
            TimingError::runtime(format!("{name}: {what}"), e, Some(i))
        };
        for (b, src) in s.live.of(Slot::Activation).zip(&pool[set]) {
            dev.copy(&b.buf, src)
                .map_err(|e| fail("input refresh", e))?;
        }
        for b in s.live.bufs.iter() {
            if matches!(b.slot, Slot::Output | Slot::Scratch) {
                dev.fill(&b.buf, &Poison::A.element(b.dtype))
                    .map_err(|e| fail("poison", e))?;
            }
        }
        match flush_by {
            Flush::Write => {
                flush_parity ^= 1;
                dev.fill(&flush, &[flush_parity])
            }
            Flush::Read(program) => dev.launch(program, &flush_call, &flush_args),
        }
        .map_err(|e| fail("L2 flush", e))?;
        dev.record(&start_ev).map_err(|e| fail("event", e))?;
        run_launches(dev, s.subject.program, &s.launches, &s.live)
            .map_err(|e| fail("launch", e))?;
        dev.record(&end_ev).map_err(|e| fail("event", e))?;
        dev.elapsed_ms(&start_ev, &end_ev)
            .map_err(|e| fail("running the plan", e))
    };

    // Warm-up: each subject, interleaved, until every one is warm by calls and time.
    let warm_start = Instant::now();
    let mut warm_calls = 0usize;
    let mut set = 0usize;
    while !p.warm_enough(warm_calls, warm_start.elapsed()) {
        for i in 0..subjects.len() {
            call(i, set)?;
        }
        set = (set + 1) % n_sets;
        warm_calls += 1;
        if warm_start.elapsed() > p.time_cap {
            break;
        }
    }
    let warmup_ms = warm_start.elapsed().as_secs_f64() * 1e3;

    let mut meas = telemetry.begin();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
    let mut throttled = vec![0u32; subjects.len()];
    let sample_start = Instant::now();
    let mut last_set = 0usize;
    let stop_reason = loop {
        let stops: Vec<Option<StopReason>> = samples
            .iter()
            .map(|s| p.stop(s, sample_start.elapsed()))
            .collect();
        if stops.iter().all(|s| s.is_some()) {
            // The weakest reason any series stopped for.
            break stops
                .into_iter()
                .flatten()
                .max_by_key(|r| match r {
                    StopReason::Converged => 0,
                    StopReason::MaxSamples => 1,
                    StopReason::TimeCap => 2,
                })
                .unwrap_or(StopReason::TimeCap);
        }
        last_set = set;
        for (i, series) in samples.iter_mut().enumerate() {
            series.push(call(i, set)?);
            let bits = telemetry.reasons();
            meas.note_sample(bits);
            if bits.is_some_and(super::telemetry::is_throttled) {
                throttled[i] += 1;
            }
        }
        set = (set + 1) % n_sets;
    };
    telemetry.end(&mut meas);

    // Every buffer's guard zones after the timed calls.
    for (i, s) in prepared.iter().enumerate() {
        check_guards(dev, s, i, "timing")?;
    }

    let revalidation = revalidate(dev, task, &prepared, &pool[last_set])?;

    let mut out = Vec::new();
    for (i, (s, series)) in prepared.iter().zip(&samples).enumerate() {
        let summary = Summary::of(series)
            .ok_or_else(|| TimingError::new(format!("{}: no valid samples", s.subject.name)))?;
        let (amortized_ms, amortized_calls, amortized_method) =
            if summary.median_ms * 1e-3 < p.graph_below.as_secs_f64() {
                let n = amortized_calls(summary.median_ms);
                match amortized(dev, s, n, &start_ev, &end_ev) {
                    Ok((t, method)) => {
                        // Up to 2n + 1 more calls, none of them checked yet.
                        check_guards(dev, s, i, "amortized timing")?;
                        (Some(t), Some(n), Some(method))
                    }
                    Err(e) if e.is_sticky() => {
                        return Err(TimingError::runtime(
                            format!("{}: amortized timing", s.subject.name),
                            e,
                            Some(i),
                        ))
                    }
                    // The measured and re-validated samples stand; only the extra number is lost.
                    Err(e) => (None, Some(n), Some(format!("failed: {e}"))),
                }
            } else {
                (None, None, None)
            };
        out.push(SubjectTiming {
            name: s.subject.name.clone(),
            samples_ms: series.clone(),
            summary,
            warmup_calls: warm_calls,
            warmup_ms,
            amortized_ms,
            amortized_calls,
            amortized_method,
            revalidation_failure: revalidation[i].clone(),
            throttled_samples: throttled[i],
        });
    }
    let speedups = samples
        .iter()
        .skip(1)
        .map(|c| speedup(c, &samples[0]))
        .collect();
    Ok(ShapeTimings {
        shape: shape.name.clone(),
        values: shape.values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        pool_sets: n_sets,
        flush_bytes,
        stop_reason,
        subjects: out,
        speedups,
        telemetry: meas,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Fails when a write of subject `i` went past one of its buffers (`during` names the phase).
fn check_guards<B: Backend>(
    dev: &B,
    s: &Prepared<B>,
    i: usize,
    during: &str,
) -> Result<(), TimingError> {
    for b in &s.live.bufs {
        if let Some(d) = dev
            .check_guards(&b.buf)
            .map_err(|e| TimingError::runtime(&s.subject.name, e, Some(i)))?
        {
            return Err(TimingError {
                message: format!(
                    "{}: out-of-bounds write around `{}` during {during} ({} bytes before, {} after)",
                    s.subject.name, b.name, d.before, d.after
                ),
                context_lost: false,
                subject: Some(i),
            });
        }
    }
    Ok(())
}

fn run_launches<B: Backend>(
    dev: &B,
    program: &B::Program,
    launches: &[ResolvedLaunch],
    live: &Live<B>,
) -> Result<(), RuntimeError> {
    let address = |n: &str| live.address(dev, n);
    for l in launches {
        dev.launch(program, l, &address)?;
    }
    Ok(())
}

/// Per-call milliseconds over `n` calls, and how they were taken: one replay of a CUDA graph
/// of the `n` calls, else (capture failed) `n` calls launched back to back.
fn amortized<B: TimingDevice>(
    dev: &B,
    s: &Prepared<B>,
    n: u32,
    start: &B::Event,
    end: &B::Event,
) -> Result<(f64, String), RuntimeError> {
    let calls = |dev: &B| -> Result<(), RuntimeError> {
        for _ in 0..n {
            run_launches(dev, s.subject.program, &s.launches, &s.live)?;
        }
        Ok(())
    };
    // One untimed call first, so the first launch's overhead is not counted (it also raises any
    // function attribute a launch needs, so none of that happens inside the capture).
    run_launches(dev, s.subject.program, &s.launches, &s.live)?;
    match dev.capture(&mut || calls(dev)) {
        // A dead context is not a capture limitation: report it, do not fall back.
        Err(e) if e.is_sticky() => Err(e),
        Ok(graph) => {
            // The first replay uploads the graph; only the second is timed.
            dev.replay(&graph)?;
            dev.record(start)?;
            dev.replay(&graph)?;
            dev.record(end)?;
            let method = format!("one CUDA graph of {n} calls, replayed between two events");
            Ok((dev.elapsed_ms(start, end)? / n as f64, method))
        }
        Err(e) => {
            dev.record(start)?;
            calls(dev)?;
            dev.record(end)?;
            let method = format!("{n} calls launched back to back (graph capture failed: {e})");
            Ok((dev.elapsed_ms(start, end)? / n as f64, method))
        }
    }
}

fn outputs<B: Backend>(dev: &B, live: &Live<B>) -> Result<Vec<HostTensor>, RuntimeError> {
    live.of(Slot::Output)
        .map(|b| {
            Ok(HostTensor {
                dtype: b.dtype,
                dims: b.dims.clone(),
                bytes: dev.download(&b.buf)?,
            })
        })
        .collect()
}

fn mismatch(
    task: &Task,
    got: &[HostTensor],
    want: &[HostTensor],
) -> Result<Option<String>, TimingError> {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = &task.outputs[i];
        let metric = Metric::from(d.check.as_ref().unwrap_or(&task.check));
        let r = compare(g, w, metric, Some(Poison::A))
            .map_err(|e| TimingError::new(format!("re-validating `{}`: {e}", d.name)))?;
        if !r.passed() {
            return Ok(Some(format!("output `{}`: {}", d.name, r.summary())));
        }
    }
    Ok(None)
}

/// Re-validates the last timed call of every subject (DESIGN §4.5). Subject 0 (the reference)
/// is compared with a fresh untimed run of itself on the same inputs; every other subject with
/// subject 0's timed output.
fn revalidate<B: TimingDevice>(
    dev: &B,
    task: &Task,
    prepared: &[Prepared<B>],
    last_set: &[B::Buffer],
) -> Result<Vec<Option<String>>, TimingError> {
    let mut timed = Vec::new();
    for (i, s) in prepared.iter().enumerate() {
        timed.push(outputs(dev, &s.live).map_err(|e| {
            TimingError::runtime(format!("{}: re-validation", s.subject.name), e, Some(i))
        })?);
    }
    let r = &prepared[0];
    let fresh = (|| {
        for (b, src) in r.live.of(Slot::Activation).zip(last_set) {
            dev.copy(&b.buf, src)?;
        }
        for b in r.live.bufs.iter() {
            if matches!(b.slot, Slot::Output | Slot::Scratch) {
                dev.fill(&b.buf, &Poison::B.element(b.dtype))?;
            }
        }
        run_launches(dev, r.subject.program, &r.launches, &r.live)?;
        dev.synchronize()?;
        outputs(dev, &r.live)
    })()
    .map_err(|e| {
        TimingError::runtime(format!("{}: re-validation run", r.subject.name), e, Some(0))
    })?;
    let mut out = vec![mismatch(task, &timed[0], &fresh)?
        .map(|m| format!("last timed output differs from a fresh run on the same inputs: {m}"))];
    for t in &timed[1..] {
        out.push(mismatch(task, t, &timed[0])?.map(|m| {
            format!("last timed output differs from the reference's on the same inputs: {m}")
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
