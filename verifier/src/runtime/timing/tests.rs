//! The timing loop on CPU: the fake device (host buffers, Rust kernels) wrapped with a log of
//! every operation and a simulated clock that each launch advances by its kernel's cost, so
//! order, interleaving, speedups, re-validation and amortized timing are checked exactly.

use super::*;
use crate::plan::ResolvedArg;
use crate::runtime::backend::Backend;
use crate::runtime::evaluate::TaskBundle;
use crate::runtime::fake::{Fake, FakeBuf, Kernel};
use crate::runtime::gpu::GuardDamage;
use crate::runtime::telemetry::Telemetry;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

struct Logged {
    fake: Fake,
    names: RefCell<HashMap<u64, String>>,
    log: RefCell<Vec<String>>,
    clock: Rc<Cell<f64>>,
    events: RefCell<Vec<f64>>,
    /// Refuse graph capture, as a device would for work it cannot capture.
    refuse_capture: Cell<bool>,
    /// True while `capture` runs the queued work (kernels may look).
    capturing: Rc<Cell<bool>>,
    /// The error the next replay fails with, if any.
    replay_error: RefCell<Option<RuntimeError>>,
}

impl Logged {
    fn new() -> Logged {
        Logged {
            fake: Fake::default(),
            names: RefCell::new(HashMap::new()),
            log: RefCell::new(Vec::new()),
            clock: Rc::new(Cell::new(0.0)),
            events: RefCell::new(Vec::new()),
            refuse_capture: Cell::new(false),
            capturing: Rc::new(Cell::new(false)),
            replay_error: RefCell::new(None),
        }
    }
    fn name(&self, b: &Rc<FakeBuf>) -> String {
        self.names.borrow().get(&b.id).cloned().unwrap_or_default()
    }
    fn note(&self, s: String) {
        self.log.borrow_mut().push(s);
    }
}

impl Backend for Logged {
    type Buffer = Rc<FakeBuf>;
    type Program = HashMap<String, Kernel>;
    fn alloc(&self, name: &str, dtype: DType, numel: u64) -> Result<Rc<FakeBuf>, RuntimeError> {
        let b = self.fake.alloc(name, dtype, numel)?;
        self.names.borrow_mut().insert(b.id, name.to_string());
        Ok(b)
    }
    fn address(&self, b: &Rc<FakeBuf>) -> u64 {
        self.fake.address(b)
    }
    fn upload(&self, b: &Rc<FakeBuf>, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.fake.upload(b, bytes)
    }
    fn download(&self, b: &Rc<FakeBuf>) -> Result<Vec<u8>, RuntimeError> {
        self.fake.download(b)
    }
    fn fill(&self, b: &Rc<FakeBuf>, element: &[u8]) -> Result<(), RuntimeError> {
        self.note(format!("fill {}", self.name(b)));
        if self.name(b) == "l2_flush" {
            // The flush buffer is bytes; the fake asserts element size == dtype size.
            return self.fake.fill(b, &element[..1]);
        }
        self.fake.fill(b, element)
    }
    fn check_guards(&self, b: &Rc<FakeBuf>) -> Result<Option<GuardDamage>, RuntimeError> {
        self.fake.check_guards(b)
    }
    fn launch(
        &self,
        program: &Self::Program,
        l: &ResolvedLaunch,
        address: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<(), RuntimeError> {
        self.note(format!("launch {}", l.kernel));
        self.fake.launch(program, l, address)
    }
    fn synchronize(&self) -> Result<(), RuntimeError> {
        self.fake.synchronize()
    }
}

/// The fake captures by running the queued work at once (its outputs are what a replay would
/// write) with the clock put back afterwards; the graph is the time that work took, charged at
/// each replay.
impl TimingDevice for Logged {
    type Event = usize;
    type Graph = f64;
    fn capture(
        &self,
        queue: &mut dyn FnMut() -> Result<(), RuntimeError>,
    ) -> Result<f64, RuntimeError> {
        if self.refuse_capture.get() {
            self.note("capture refused".into());
            return Err(RuntimeError::NoDevice("stream capture refused".into()));
        }
        self.note("capture begin".into());
        let t0 = self.clock.get();
        self.capturing.set(true);
        let queued = queue();
        self.capturing.set(false);
        queued?;
        let took = self.clock.get() - t0;
        self.clock.set(t0);
        self.note("capture end".into());
        Ok(took)
    }
    fn replay(&self, graph: &f64) -> Result<(), RuntimeError> {
        self.note("replay".into());
        if let Some(e) = self.replay_error.borrow_mut().take() {
            return Err(e);
        }
        self.clock.set(self.clock.get() + graph);
        Ok(())
    }
    fn new_event(&self) -> Result<usize, RuntimeError> {
        let mut e = self.events.borrow_mut();
        e.push(0.0);
        Ok(e.len() - 1)
    }
    fn record(&self, e: &usize) -> Result<(), RuntimeError> {
        self.note("record".into());
        self.events.borrow_mut()[*e] = self.clock.get();
        Ok(())
    }
    fn elapsed_ms(&self, a: &usize, b: &usize) -> Result<f64, RuntimeError> {
        let e = self.events.borrow();
        Ok(e[*b] - e[*a])
    }
    fn copy(&self, dst: &Rc<FakeBuf>, src: &Rc<FakeBuf>) -> Result<(), RuntimeError> {
        self.note(format!("copy {} <- {}", self.name(dst), self.name(src)));
        let bytes = self.fake.download(src)?;
        self.fake.upload(dst, &bytes)
    }
    fn l2_bytes(&self) -> u64 {
        1 << 20
    }
}

fn bf16s(b: &FakeBuf) -> Vec<f32> {
    b.data.borrow()[..b.len]
        .chunks(2)
        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

fn silu_mul(a: f32, b: f32) -> f32 {
    a / (1.0 + (-a).exp()) * b
}

/// swiglu_bf16 on the host, advancing the clock by `cost_ms` per launch. `cache`: after the
/// first call, write the first call's output again whatever the inputs (a cross-call cache).
fn swiglu(clock: Rc<Cell<f64>>, cost_ms: f64, cache: bool) -> HashMap<String, Kernel> {
    let first: RefCell<Option<Vec<u8>>> = RefCell::new(None);
    let k: Kernel = Box::new(move |l, buf, _| {
        clock.set(clock.get() + cost_ms);
        let y = buf("y");
        if cache {
            if let Some(f) = first.borrow().as_ref() {
                y.data.borrow_mut()[..f.len()].copy_from_slice(f);
                return Ok(());
            }
        }
        let (a, b) = (bf16s(&buf("a")), bf16s(&buf("b")));
        let total = match l.args[3] {
            crate::plan::ResolvedArg::I64(t) => t as usize,
            _ => panic!("total"),
        };
        {
            let mut d = y.data.borrow_mut();
            for i in 0..total {
                let v = half::bf16::from_f32(silu_mul(a[i], b[i])).to_le_bytes();
                d[2 * i..2 * i + 2].copy_from_slice(&v);
            }
        }
        if cache {
            *first.borrow_mut() = Some(y.data.borrow()[..y.len].to_vec());
        }
        Ok(())
    });
    [("swiglu_bf16".to_string(), k)].into()
}

fn bundle() -> (tempfile::TempDir, TaskBundle) {
    let src: PathBuf = crate::nvrtc::project_roots()
        .into_iter()
        .map(|r| r.join("tasks/activation/swiglu"))
        .find(|d| d.join("task.toml").is_file())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = std::fs::read_to_string(src.join("task.toml"))
        .unwrap()
        .replace("M = 4096\nN = 4096", "M = 4\nN = 64");
    std::fs::write(dir.path().join("task.toml"), task).unwrap();
    for f in ["reference.cu", "reference.toml"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let b = TaskBundle::load(dir.path()).unwrap();
    (dir, b)
}

fn opts() -> TimingOptions {
    let mut o = TimingOptions::default();
    // Simulated time does not advance the wall clock: warm up by count only.
    o.protocol.warmup_time = std::time::Duration::ZERO;
    o.pool_sets = 3;
    o
}

fn no_nvml() -> Telemetry {
    Telemetry::Unavailable("not on the fake device".into())
}

#[test]
fn interleaved_timing_with_refresh_poison_and_flush_before_each_timed_call() {
    let (_d, b) = bundle();
    let dev = Logged::new();
    let reference = swiglu(Rc::clone(&dev.clock), 1.0, false);
    let candidate = swiglu(Rc::clone(&dev.clock), 0.5, false);
    let plan = &b.reference_plan;
    let subjects = [
        Subject {
            name: "reference".into(),
            plan,
            program: &reference,
        },
        Subject {
            name: "candidate".into(),
            plan,
            program: &candidate,
        },
    ];
    let shape = b.task.shape("small").unwrap().clone();
    let t = time_shape(&dev, &b.task, &shape, &subjects, &opts(), &no_nvml()).unwrap();

    assert_eq!(t.pool_sets, 3);
    assert_eq!(t.flush_bytes, 2 << 20);
    assert_eq!(t.subjects.len(), 2);
    let (r, c) = (&t.subjects[0], &t.subjects[1]);
    // Zero variance converges as soon as the minimum sample count is reached.
    assert_eq!(t.stop_reason, StopReason::Converged);
    assert_eq!((r.summary.n, c.summary.n), (10, 10));
    assert!((r.summary.median_ms - 1.0).abs() < 1e-12);
    assert!((c.summary.median_ms - 0.5).abs() < 1e-12);
    assert_eq!(r.warmup_calls, 10);
    let s = t.speedups[0].as_ref().unwrap();
    assert!((s.ratio_of_medians - 2.0).abs() < 1e-12);
    assert_eq!(s.pairs, 10);
    assert_eq!(r.revalidation_failure, None);
    assert_eq!(c.revalidation_failure, None);
    assert!(
        r.amortized_ms.is_none(),
        "1 ms is above the graph threshold"
    );
    assert!(t.telemetry.unavailable.is_some());

    // Every timed window holds exactly one launch, preceded (untimed) by the input refresh
    // from the pool, the output poison and then the L2 flush, alternating A B A B.
    let log = dev.log.borrow();
    let windows: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, l)| *l == "record")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(windows.len() % 2, 0);
    let mut pool_sets_seen = Vec::new();
    for pair in windows.chunks(2) {
        assert_eq!(
            pair[1] - pair[0],
            2,
            "one launch per window: {:?}",
            &log[pair[0]..=pair[1]]
        );
        assert_eq!(log[pair[0] + 1], "launch swiglu_bf16");
        let pre = &log[pair[0] - 4..pair[0]];
        assert!(
            pre[0].starts_with("copy a <- pool") && pre[1].starts_with("copy b <- pool"),
            "{pre:?}"
        );
        assert_eq!(pre[2], "fill y");
        assert_eq!(pre[3], "fill l2_flush");
        pool_sets_seen.push(pre[0].clone());
    }
    // Consecutive calls of one subject never see the same input set.
    let per_subject: Vec<&String> = pool_sets_seen.iter().step_by(2).collect();
    for w in per_subject.windows(2) {
        assert_ne!(w[0], w[1]);
    }
    // A and B of one pair see the same set.
    for p in pool_sets_seen.chunks(2) {
        assert_eq!(p[0], p[1]);
    }
}

#[test]
fn a_kernel_caching_results_across_calls_fails_revalidation() {
    let (_d, b) = bundle();
    let dev = Logged::new();
    let reference = swiglu(Rc::clone(&dev.clock), 1.0, false);
    let cheat = swiglu(Rc::clone(&dev.clock), 0.1, true);
    let plan = &b.reference_plan;
    let subjects = [
        Subject {
            name: "reference".into(),
            plan,
            program: &reference,
        },
        Subject {
            name: "cheat".into(),
            plan,
            program: &cheat,
        },
    ];
    let shape = b.task.shape("small").unwrap().clone();
    let t = time_shape(&dev, &b.task, &shape, &subjects, &opts(), &no_nvml()).unwrap();
    assert_eq!(t.subjects[0].revalidation_failure, None);
    let f = t.subjects[1].revalidation_failure.as_deref().unwrap();
    assert!(
        f.contains("differs from the reference's") && f.contains("`y`"),
        "{f}"
    );
}

/// swiglu's reference alone at `small`, timed on `dev`.
fn time_reference_alone(
    dev: &Logged,
    program: &HashMap<String, Kernel>,
) -> Result<ShapeTimings, TimingError> {
    let (_d, b) = bundle();
    let subjects = [Subject {
        name: "reference".into(),
        plan: &b.reference_plan,
        program,
    }];
    let shape = b.task.shape("small").unwrap().clone();
    time_shape(dev, &b.task, &shape, &subjects, &opts(), &no_nvml())
}

#[test]
fn short_calls_also_get_an_amortized_time() {
    let dev = Logged::new();
    let reference = swiglu(Rc::clone(&dev.clock), 0.005, false);
    let t = time_reference_alone(&dev, &reference).unwrap();
    let r = &t.subjects[0];
    assert_eq!(r.amortized_calls, Some(400));
    assert!((r.amortized_ms.unwrap() - 0.005).abs() < 1e-9);
    assert_eq!(
        r.amortized_method.as_deref(),
        Some("one CUDA graph of 400 calls, replayed between two events")
    );
    assert!(t.speedups.is_empty());
    // 400 calls captured (not timed), one untimed replay, then one replay between the events.
    let log = dev.log.borrow();
    let begin = log.iter().position(|l| l == "capture begin").unwrap();
    let end = log.iter().position(|l| l == "capture end").unwrap();
    let captured = log[begin..end]
        .iter()
        .filter(|l| *l == "launch swiglu_bf16")
        .count();
    assert_eq!(captured, 400);
    assert_eq!(
        &log[end + 1..end + 5],
        ["replay", "record", "replay", "record"],
        "{:?}",
        &log[end..]
    );
}

/// A write past the output that happens only in the amortized calls is caught there too.
#[test]
fn an_out_of_bounds_write_in_the_amortized_calls_is_caught() {
    let dev = Logged::new();
    let inner = swiglu(Rc::clone(&dev.clock), 0.005, false);
    let capturing = Rc::clone(&dev.capturing);
    let k: Kernel = Box::new(move |l, buf, n| {
        let r = (inner["swiglu_bf16"])(l, buf, n);
        if capturing.get() {
            let y = buf("y");
            let end = y.len;
            y.data.borrow_mut()[end] = 0x5c; // the guard bytes are 0xDB
        }
        r
    });
    let e = time_reference_alone(&dev, &[("swiglu_bf16".to_string(), k)].into()).unwrap_err();
    assert!(
        e.message
            .contains("out-of-bounds write around `y` during amortized timing"),
        "{}",
        e.message
    );
    assert!(!e.context_lost);
}

/// An amortized run that fails without losing the context costs only the amortized number; a
/// lost context fails the shape.
#[test]
fn a_failed_amortized_run_keeps_the_samples_unless_the_context_is_lost() {
    let dev = Logged::new();
    *dev.replay_error.borrow_mut() = Some(RuntimeError::NoDevice("replay refused".into()));
    let program = swiglu(Rc::clone(&dev.clock), 0.005, false);
    let t = time_reference_alone(&dev, &program).unwrap();
    let r = &t.subjects[0];
    assert!((r.summary.median_ms - 0.005).abs() < 1e-9);
    assert_eq!(r.amortized_ms, None);
    assert_eq!(
        r.amortized_method.as_deref(),
        Some("failed: no usable CUDA device: replay refused")
    );

    let dev = Logged::new();
    let lost = crate::runtime::error::CudaError {
        call: "cuGraphLaunch".into(),
        code: 700,
        name: "CUDA_ERROR_ILLEGAL_ADDRESS".into(),
        message: "an illegal memory access was encountered".into(),
    };
    *dev.replay_error.borrow_mut() = Some(lost.into());
    let program = swiglu(Rc::clone(&dev.clock), 0.005, false);
    let e = time_reference_alone(&dev, &program).unwrap_err();
    assert!(e.context_lost, "{}", e.message);
    assert!(e.message.contains("amortized timing"), "{}", e.message);
}

#[test]
fn work_that_cannot_be_captured_is_amortized_back_to_back() {
    let dev = Logged::new();
    dev.refuse_capture.set(true);
    let reference = swiglu(Rc::clone(&dev.clock), 0.005, false);
    let t = time_reference_alone(&dev, &reference).unwrap();
    let r = &t.subjects[0];
    assert!((r.amortized_ms.unwrap() - 0.005).abs() < 1e-9);
    let m = r.amortized_method.as_deref().unwrap();
    assert!(
        m.starts_with("400 calls launched back to back (graph capture failed: ")
            && m.contains("stream capture refused"),
        "{m}"
    );
    let log = dev.log.borrow();
    let refused = log.iter().position(|l| l == "capture refused").unwrap();
    assert_eq!(log[refused + 1], "record");
    let launches = log[refused..]
        .iter()
        .filter(|l| *l == "launch swiglu_bf16")
        .count();
    assert_eq!(launches, 400);
}

#[test]
fn pool_and_amortization_sizes() {
    assert_eq!(pool_size(4, 100, 1000), 4);
    assert_eq!(pool_size(4, 400, 1000), 2);
    assert_eq!(pool_size(4, 4000, 1000), 1, "never below one set");
    assert_eq!(pool_size(4, 0, 1000), 4);
    assert_eq!(amortized_calls(0.001), 1000);
    assert_eq!(amortized_calls(0.015), 134);
    assert_eq!(amortized_calls(1.0), 10);
    assert_eq!(amortized_calls(f64::NAN), 10);
}

/// With the read flush, each timed window is preceded by one launch of the flush kernel over
/// 2 x L2 (no memset of the flush buffer after the single clearing fill).
#[test]
fn the_read_flush_streams_twice_l2_through_the_flush_kernel_before_each_timed_call() {
    let (_d, b) = bundle();
    let dev = Logged::new();
    let reference = swiglu(Rc::clone(&dev.clock), 1.0, false);
    // Per flush launch: (words, key, threads, sink bytes).
    type FlushCall = (i64, i32, u64, u64);
    let seen: Rc<RefCell<Vec<FlushCall>>> = Rc::new(RefCell::new(Vec::new()));
    let flush_len = Rc::new(Cell::new(0usize));
    let (s2, fl) = (Rc::clone(&seen), Rc::clone(&flush_len));
    let flush_kernel: Kernel = Box::new(move |l, buf, _| {
        let (n, key) = match (&l.args[1], &l.args[2]) {
            (ResolvedArg::I64(n), ResolvedArg::I32(k)) => (*n, *k),
            other => panic!("flush args {other:?}"),
        };
        let (flush, sink) = (buf("buf"), buf("sink"));
        fl.set(flush.len);
        s2.borrow_mut().push((
            n,
            key,
            l.grid[0] as u64 * l.block[0] as u64,
            sink.len as u64,
        ));
        Ok(())
    });
    let flush_program: HashMap<String, Kernel> =
        [(FLUSH_KERNEL_NAME.to_string(), flush_kernel)].into();
    let subjects = [Subject {
        name: "reference".into(),
        plan: &b.reference_plan,
        program: &reference,
    }];
    let shape = b.task.shape("small").unwrap().clone();
    let t = time_shape_with(
        &dev,
        &b.task,
        &shape,
        &subjects,
        &opts(),
        &no_nvml(),
        &Flush::Read(&flush_program),
    )
    .unwrap();
    assert!(
        (t.subjects[0].summary.median_ms - 1.0).abs() < 1e-12,
        "the flush is untimed"
    );
    let log = dev.log.borrow();
    assert_eq!(
        log.iter().filter(|l| *l == "fill l2_flush").count(),
        1,
        "cleared once, never written per call"
    );
    let mut windows = 0;
    for (i, l) in log.iter().enumerate() {
        if l == "record" && log[i + 1] == "launch swiglu_bf16" {
            assert_eq!(log[i - 1], "launch ks_l2_flush", "{:?}", &log[i - 4..=i]);
            assert_eq!(log[i - 2], "fill y");
            windows += 1;
        }
    }
    assert!(windows >= 20, "warm-up and samples: {windows}");
    let calls = seen.borrow();
    assert!(calls.len() >= windows);
    // 2 MiB flush buffer (2 x the fake's 1 MiB L2) in 16-byte words; key 1 never matches the
    // zero-filled buffer's XOR.
    assert_eq!(flush_len.get(), 2 << 20);
    assert!(
        calls
            .iter()
            .all(|c| *c == ((2 << 20) / 16, 1, 1024 * 256, 4)),
        "{:?}",
        calls[0]
    );
}

/// The flush kernel is real CUDA that NVRTC compiles, and its loads survive optimization
/// (a flush whose loads were removed would flush nothing).
#[test]
fn the_flush_kernel_compiles_and_keeps_its_loads() {
    use crate::nvrtc::{Arch, CompileRequest};
    let Some(compiler) = crate::nvrtc::test_compiler() else {
        return;
    };
    let c = compiler
        .compile(&CompileRequest::new(
            FLUSH_KERNEL,
            vec![FLUSH_KERNEL_NAME.into()],
            "sm_90".parse::<Arch>().unwrap(),
        ))
        .unwrap();
    assert!(!c.cubin.is_empty());
    assert!(
        c.ptx.contains("ld.global.cg.v4"),
        "no L2-only vector loads in the PTX:\n{}",
        c.ptx
    );
}
