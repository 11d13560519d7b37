//! The live device: one primary context and one stream per process (a worker), device buffers
//! with guard zones, modules loaded from CUBIN, launches and timing events.
//!
//! Everything here is single-threaded on purpose: the worker owns the GPU from one thread, and
//! a context lost to a kernel fault is not shared with anything else.

use super::device::{self, DeviceInfo};
use super::error::{Call, CudaError, RuntimeError};
use super::launch::{check_coresident, check_limits, check_params, pack_args, FuncAttrs};
use super::probe::probe_driver;
use crate::dtype::DType;
use crate::nvrtc::Compiled;
use crate::plan::ResolvedLaunch;
use cudarc::driver::{result, sys};
use std::cell::Cell;
use std::ffi::{c_void, CString};
use std::rc::Rc;

struct Ctx {
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    stream: sys::CUstream,
}

impl Ctx {
    fn bind(&self) -> Result<(), CudaError> {
        // SAFETY: `ctx` is the retained primary context of `dev`, released only in Drop.
        unsafe { result::ctx::set_current(self.ctx) }.call("cuCtxSetCurrent")
    }

    fn sync(&self) -> Result<(), CudaError> {
        // SAFETY: the stream belongs to this context and lives as long as `self`.
        unsafe { result::stream::synchronize(self.stream) }.call("cuStreamSynchronize")
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // Errors are ignored: after a sticky fault every call fails, and the process is about
        // to exit anyway.
        // SAFETY: handles created in `Gpu::open`, destroyed once.
        unsafe {
            let _ = result::ctx::set_current(self.ctx);
            let _ = result::stream::destroy(self.stream);
            let _ = result::primary_ctx::release(self.dev);
        }
    }
}

/// Bytes before and after every buffer, filled with [`GUARD_BYTE`] and checked after each run:
/// a write just past either end (the common off-by-one) lands here instead of in a neighbour
/// or in unmapped memory. 4 KiB keeps the user pointer 256-byte aligned.
pub const GUARD_BYTES: usize = 4096;
pub const GUARD_BYTE: u8 = 0xDB;

/// Bytes of `numel` elements of `dtype`, and of the allocation that holds them between the two
/// guard zones; `None` when either overflows. A plan's scratch length may be any `i64`, so a
/// 2-byte dtype can come within a guard zone of `usize::MAX`: an unchecked sum would wrap to a
/// tiny allocation that fills and kernels then write far past.
fn buffer_bytes(dtype: DType, numel: u64) -> Option<(usize, usize)> {
    let len = usize::try_from(numel.checked_mul(dtype.size_bytes() as u64)?).ok()?;
    Some((len, len.checked_add(2 * GUARD_BYTES)?))
}

/// Probes for the driver and initialises it; a missing driver, the toolkit's stub library and
/// a driver without devices are typed errors.
fn init_driver() -> Result<(), RuntimeError> {
    probe_driver()?;
    if let Err(e) = result::init() {
        let err = CudaError::from_driver("cuInit", e);
        return Err(match err.code {
            // CUDA_ERROR_STUB_LIBRARY: the toolkit's link stub shadows the real driver.
            34 => RuntimeError::NoDriver {
                looked_for: format!(
                    "libcuda (found the CUDA toolkit's stub library instead of the driver: {err})"
                ),
            },
            100 => RuntimeError::NoDevice(format!("the driver sees no GPU ({err})")),
            _ => RuntimeError::NoDevice(err.to_string()),
        });
    }
    Ok(())
}

pub struct Gpu {
    ctx: Rc<Ctx>,
    pub info: DeviceInfo,
}

impl Gpu {
    /// How many devices the driver sees (after `CUDA_VISIBLE_DEVICES`), probing for the driver
    /// first as [`Gpu::open`] does. Opens no context.
    pub fn count() -> Result<u32, RuntimeError> {
        init_driver()?;
        let count = result::device::get_count().call("cuDeviceGetCount")?;
        Ok(u32::try_from(count).unwrap_or(0))
    }

    /// Probes for the driver, initialises it and opens device `ordinal`.
    pub fn open(ordinal: u32) -> Result<Gpu, RuntimeError> {
        init_driver()?;
        let count = result::device::get_count().call("cuDeviceGetCount")?;
        if ordinal as i32 >= count {
            return Err(RuntimeError::NoDevice(format!(
                "device {ordinal} requested, the driver sees {count}"
            )));
        }
        let dev = result::device::get(ordinal as i32).call("cuDeviceGet")?;
        // SAFETY: `dev` is valid; the retained context is released in Ctx's Drop.
        let ctx = unsafe { result::primary_ctx::retain(dev) }.call("cuDevicePrimaryCtxRetain")?;
        // SAFETY: as above.
        unsafe { result::ctx::set_current(ctx) }.call("cuCtxSetCurrent")?;
        let stream = match result::stream::create(result::stream::StreamKind::NonBlocking) {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: retained just above.
                unsafe {
                    let _ = result::primary_ctx::release(dev);
                }
                return Err(CudaError::from_driver("cuStreamCreate", e).into());
            }
        };
        let ctx = Rc::new(Ctx { dev, ctx, stream });
        let info = device::query(ordinal, dev)?;
        Ok(Gpu { ctx, info })
    }

    /// Waits for everything queued on the worker's stream; a kernel fault surfaces here.
    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        self.ctx.bind()?;
        Ok(self.ctx.sync()?)
    }

    /// Free and total device memory in bytes.
    pub fn memory(&self) -> Result<(u64, u64), RuntimeError> {
        self.ctx.bind()?;
        let (free, total) = result::mem_get_info().call("cuMemGetInfo")?;
        Ok((free as u64, total as u64))
    }

    pub fn alloc(
        &self,
        name: &str,
        dtype: DType,
        numel: u64,
    ) -> Result<DeviceBuffer, RuntimeError> {
        self.ctx.bind()?;
        let (len, total) =
            buffer_bytes(dtype, numel).ok_or_else(|| RuntimeError::SizeMismatch {
                name: name.to_string(),
                len: usize::MAX,
                got: usize::MAX,
                what: "the requested length (overflows)",
            })?;
        // SAFETY: plain allocation; freed in Drop.
        let base = unsafe { result::malloc_sync(total) }.call("cuMemAlloc")?;
        let b = DeviceBuffer {
            ctx: Rc::clone(&self.ctx),
            base,
            name: name.to_string(),
            dtype,
            numel,
            len,
        };
        b.reset_guards()?;
        Ok(b)
    }

    /// Loads a compiled module and looks up every kernel it was compiled for by its lowered
    /// (mangled) symbol.
    pub fn load(&self, compiled: &Compiled) -> Result<Module, RuntimeError> {
        self.ctx.bind()?;
        // SAFETY: a CUBIN image from NVRTC; the driver copies it during the call.
        let module = unsafe { result::module::load_data(compiled.cubin.as_ptr() as *const c_void) }
            .call("cuModuleLoadData")?;
        let mut m = Module {
            ctx: Rc::clone(&self.ctx),
            module,
            functions: Vec::new(),
        };
        for k in &compiled.kernels {
            let missing = |source: CudaError| RuntimeError::MissingFunction {
                name: k.name.clone(),
                symbol: k.symbol.clone(),
                source: Box::new(source),
            };
            let cname = CString::new(k.symbol.clone()).map_err(|_| {
                missing(CudaError {
                    call: "cuModuleGetFunction".into(),
                    code: 500,
                    name: "CUDA_ERROR_NOT_FOUND".into(),
                    message: "symbol contains a NUL byte".into(),
                })
            })?;
            // SAFETY: `module` was loaded above.
            let f = unsafe { result::module::get_function(module, cname) }
                .call("cuModuleGetFunction")
                .map_err(missing)?;
            let attrs = func_attrs(f)?;
            m.functions.push(Function {
                name: k.name.clone(),
                symbol: k.symbol.clone(),
                handle: f,
                attrs: Cell::new(attrs),
                param_sizes: param_sizes(f),
            });
        }
        Ok(m)
    }

    /// Checks the launch against the device, raises the dynamic shared-memory limit when it
    /// needs more than the default, and queues it on the worker's stream. Returns before the
    /// kernel runs: faults appear at the next synchronisation.
    pub fn launch(
        &self,
        module: &Module,
        l: &ResolvedLaunch,
        address: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<(), RuntimeError> {
        self.ctx.bind()?;
        let f = module.function(&l.kernel)?;
        let mut attrs = f.attrs.get();
        check_limits(l, &attrs, &self.info)?;
        if let Some(sizes) = &f.param_sizes {
            check_params(l, sizes)?;
        }
        if l.shared_bytes > attrs.max_dynamic_shared_bytes {
            // SAFETY: a valid function handle; the value was checked against the device.
            unsafe {
                result::function::set_function_attribute(
                    f.handle,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    l.shared_bytes as i32,
                )
            }
            .call("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)")?;
            attrs.max_dynamic_shared_bytes = l.shared_bytes;
            f.attrs.set(attrs);
        }
        let threads = l.threads_per_block() as i32;
        if l.cooperative {
            // SAFETY: valid handle; occupancy queries have no side effects.
            let per_sm = unsafe {
                result::occupancy::max_active_block_per_multiprocessor(
                    f.handle,
                    threads,
                    l.shared_bytes as usize,
                )
            }
            .call("cuOccupancyMaxActiveBlocksPerMultiprocessor")?;
            check_coresident(l, per_sm.max(0) as u32, &self.info)?;
        }
        if let Some(c) = l.cluster {
            let blocks: u64 = c.iter().map(|&x| x as u64).product();
            if blocks > super::launch::PORTABLE_CLUSTER_BLOCKS {
                // SAFETY: valid handle; size checked against the hardware maximum.
                unsafe {
                    result::function::set_function_attribute(
                        f.handle,
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED,
                        1,
                    )
                }
                .call("cuFuncSetAttribute(NON_PORTABLE_CLUSTER_SIZE_ALLOWED)")?;
            }
        }
        let mut packed = pack_args(l, address)?;
        let mut params = packed.pointers();
        if l.cluster.is_none() && !l.cooperative {
            // SAFETY: `params` points into `packed`, alive across the call; the driver copies
            // the argument values before returning.
            return Ok(unsafe {
                result::launch_kernel(
                    f.handle,
                    (l.grid[0], l.grid[1], l.grid[2]),
                    (l.block[0], l.block[1], l.block[2]),
                    l.shared_bytes,
                    self.ctx.stream,
                    &mut params,
                )
            }
            .call("cuLaunchKernel")?);
        }
        let mut attrs: Vec<sys::CUlaunchAttribute> = Vec::new();
        if let Some(c) = l.cluster {
            // SAFETY: an all-zero attribute is a valid starting value (plain C data).
            let mut a: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
            a.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
            a.value.clusterDim.x = c[0];
            a.value.clusterDim.y = c[1];
            a.value.clusterDim.z = c[2];
            attrs.push(a);
        }
        if l.cooperative {
            // SAFETY: as above.
            let mut a: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
            a.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
            a.value.cooperative = 1;
            attrs.push(a);
        }
        let config = sys::CUlaunchConfig {
            gridDimX: l.grid[0],
            gridDimY: l.grid[1],
            gridDimZ: l.grid[2],
            blockDimX: l.block[0],
            blockDimY: l.block[1],
            blockDimZ: l.block[2],
            sharedMemBytes: l.shared_bytes,
            hStream: self.ctx.stream,
            attrs: attrs.as_mut_ptr(),
            numAttrs: attrs.len() as u32,
        };
        // SAFETY: config, attributes and params outlive the call.
        unsafe {
            sys::cuLaunchKernelEx(&config, f.handle, params.as_mut_ptr(), std::ptr::null_mut())
        }
        .result()
        .call("cuLaunchKernelEx")?;
        Ok(())
    }

    /// Records what `queue` puts on the worker's stream into an instantiated CUDA graph,
    /// without running any of it. Relaxed capture mode: the launch path's attribute and
    /// occupancy queries are not stream work and stay legal. Capture is always ended, also when
    /// `queue` fails, so the stream is usable afterwards.
    pub fn capture(
        &self,
        queue: &mut dyn FnMut() -> Result<(), RuntimeError>,
    ) -> Result<Graph, RuntimeError> {
        self.ctx.bind()?;
        // SAFETY: the stream belongs to this context.
        unsafe {
            result::stream::begin_capture(
                self.ctx.stream,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
            )
        }
        .call("cuStreamBeginCapture")?;
        let queued = queue();
        // SAFETY: as above; capture was begun on this stream.
        let ended =
            unsafe { result::stream::end_capture(self.ctx.stream) }.call("cuStreamEndCapture");
        let graph = match (queued, ended) {
            (Ok(()), Ok(g)) => g,
            (Err(e), Ok(g)) => {
                // SAFETY: a graph just returned by the driver, destroyed once.
                unsafe {
                    let _ = result::graph::destroy(g);
                }
                return Err(e);
            }
            (Err(e), Err(_)) => return Err(e),
            (Ok(()), Err(e)) => return Err(e.into()),
        };
        // SAFETY: a valid graph; flags 0 is the default instantiation.
        match unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) }
            .call("cuGraphInstantiateWithFlags")
        {
            Ok(exec) => Ok(Graph {
                ctx: Rc::clone(&self.ctx),
                graph,
                exec,
            }),
            Err(e) => {
                // SAFETY: as above.
                unsafe {
                    let _ = result::graph::destroy(graph);
                }
                Err(e.into())
            }
        }
    }

    /// An event that can time (CU_EVENT_DEFAULT: timing enabled, blocking sync off).
    pub fn event(&self) -> Result<Event, RuntimeError> {
        self.ctx.bind()?;
        let ev =
            result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).call("cuEventCreate")?;
        Ok(Event {
            ctx: Rc::clone(&self.ctx),
            ev,
        })
    }
}

fn func_attrs(f: sys::CUfunction) -> Result<FuncAttrs, RuntimeError> {
    use sys::CUfunction_attribute as A;
    let get = |a: A| -> Result<u32, RuntimeError> {
        // SAFETY: a valid function handle.
        let v =
            unsafe { result::function::get_function_attribute(f, a) }.call("cuFuncGetAttribute")?;
        Ok(v.max(0) as u32)
    };
    Ok(FuncAttrs {
        max_threads_per_block: get(A::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
        num_regs: get(A::CU_FUNC_ATTRIBUTE_NUM_REGS)?,
        static_shared_bytes: get(A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?,
        local_bytes: get(A::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
        const_bytes: get(A::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES)?,
        max_dynamic_shared_bytes: get(A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)?,
        binary_version: get(A::CU_FUNC_ATTRIBUTE_BINARY_VERSION)?,
    })
}

/// Each parameter's size in bytes, in order. `cuFuncGetParamInfo` answers
/// CUDA_ERROR_INVALID_VALUE for the first index past the last parameter; any other failure
/// gives `None`, and launches of this function then go unchecked rather than refused.
fn param_sizes(f: sys::CUfunction) -> Option<Vec<usize>> {
    let mut sizes = Vec::new();
    // A kernel's parameters take at most 32764 bytes, so there are fewer than this many.
    while sizes.len() < 32768 {
        let (mut offset, mut size) = (0usize, 0usize);
        // SAFETY: a valid function handle; both out-pointers are live locals.
        let r = unsafe { sys::cuFuncGetParamInfo(f, sizes.len(), &mut offset, &mut size) };
        match r {
            sys::CUresult::CUDA_SUCCESS => sizes.push(size),
            sys::CUresult::CUDA_ERROR_INVALID_VALUE => return Some(sizes),
            _ => return None,
        }
    }
    None
}

pub struct Module {
    ctx: Rc<Ctx>,
    module: sys::CUmodule,
    functions: Vec<Function>,
}

pub struct Function {
    /// As the plan names it.
    pub name: String,
    pub symbol: String,
    handle: sys::CUfunction,
    attrs: Cell<FuncAttrs>,
    param_sizes: Option<Vec<usize>>,
}

impl Function {
    pub fn attrs(&self) -> FuncAttrs {
        self.attrs.get()
    }

    /// The kernel's parameter sizes in bytes, as the driver reports them (`None` where it
    /// could not say).
    pub fn param_sizes(&self) -> Option<&[usize]> {
        self.param_sizes.as_deref()
    }
}

impl Module {
    pub fn function(&self, name: &str) -> Result<&Function, RuntimeError> {
        self.functions
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| RuntimeError::MissingFunction {
                name: name.to_string(),
                symbol: name.to_string(),
                source: Box::new(CudaError {
                    call: "lookup".into(),
                    code: 500,
                    name: "CUDA_ERROR_NOT_FOUND".into(),
                    message: "the kernel was not among those compiled for this module".into(),
                }),
            })
    }

    pub fn functions(&self) -> &[Function] {
        &self.functions
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: loaded in `Gpu::load`, unloaded once; errors ignored (see Ctx's Drop).
        unsafe {
            let _ = self.ctx.bind();
            let _ = result::module::unload(self.module);
        }
    }
}

/// Device memory for one tensor or scratch buffer: `len` bytes between two guard zones.
pub struct DeviceBuffer {
    ctx: Rc<Ctx>,
    base: sys::CUdeviceptr,
    pub name: String,
    pub dtype: DType,
    pub numel: u64,
    pub len: usize,
}

/// Guard bytes a kernel overwrote, per side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardDamage {
    pub before: usize,
    pub after: usize,
    /// Byte offset past the end of the first damaged byte after the buffer.
    pub first_after: Option<usize>,
}

impl DeviceBuffer {
    /// The address a kernel gets.
    pub fn address(&self) -> u64 {
        self.base + GUARD_BYTES as u64
    }

    fn check_len(&self, got: usize, what: &'static str) -> Result<(), RuntimeError> {
        if got != self.len {
            return Err(RuntimeError::SizeMismatch {
                name: self.name.clone(),
                len: self.len,
                got,
                what,
            });
        }
        Ok(())
    }

    /// Host to device; returns once the host bytes may be reused.
    pub fn upload(&self, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.check_len(bytes.len(), "the host data")?;
        self.ctx.bind()?;
        if bytes.is_empty() {
            return Ok(());
        }
        // SAFETY: `len` bytes are allocated at `address()`; pageable source memory is staged
        // before the call returns.
        unsafe { result::memcpy_htod_async(self.address(), bytes, self.ctx.stream) }
            .call("cuMemcpyHtoDAsync")?;
        Ok(())
    }

    /// Device to host (waits for the stream, so a kernel fault surfaces here).
    pub fn download(&self) -> Result<Vec<u8>, RuntimeError> {
        self.ctx.bind()?;
        let mut out = vec![0u8; self.len];
        if self.len > 0 {
            // SAFETY: `out` has `len` bytes and lives until the stream is synchronised below.
            unsafe { result::memcpy_dtoh_async(&mut out, self.address(), self.ctx.stream) }
                .call("cuMemcpyDtoHAsync")?;
        }
        self.ctx.sync()?;
        Ok(out)
    }

    /// Device to device, on the stream.
    pub fn copy_from(&self, src: &DeviceBuffer) -> Result<(), RuntimeError> {
        self.check_len(src.len, "the source buffer")?;
        self.ctx.bind()?;
        if self.len == 0 {
            return Ok(());
        }
        // SAFETY: both ranges are allocated and `len` long.
        unsafe {
            result::memcpy_dtod_async(self.address(), src.address(), self.len, self.ctx.stream)
        }
        .call("cuMemcpyDtoDAsync")?;
        Ok(())
    }

    /// Fills every element with `element` (1, 2, 4 or 8 bytes, little endian), on the stream.
    pub fn fill(&self, element: &[u8]) -> Result<(), RuntimeError> {
        self.ctx.bind()?;
        fill_range(&self.ctx, self.address(), self.len, element)
    }

    fn reset_guards(&self) -> Result<(), RuntimeError> {
        fill_range(&self.ctx, self.base, GUARD_BYTES, &[GUARD_BYTE])?;
        fill_range(
            &self.ctx,
            self.address() + self.len as u64,
            GUARD_BYTES,
            &[GUARD_BYTE],
        )
    }

    /// Reads both guard zones back (and refills them), reporting any byte a kernel changed.
    pub fn check_guards(&self) -> Result<Option<GuardDamage>, RuntimeError> {
        self.ctx.bind()?;
        let mut before = vec![0u8; GUARD_BYTES];
        let mut after = vec![0u8; GUARD_BYTES];
        // SAFETY: both zones are part of the allocation; synchronised before reading.
        unsafe {
            result::memcpy_dtoh_async(&mut before, self.base, self.ctx.stream)
                .call("cuMemcpyDtoHAsync")?;
            result::memcpy_dtoh_async(
                &mut after,
                self.address() + self.len as u64,
                self.ctx.stream,
            )
            .call("cuMemcpyDtoHAsync")?;
        }
        self.ctx.sync()?;
        let bad = |z: &[u8]| z.iter().filter(|&&b| b != GUARD_BYTE).count();
        let damage = GuardDamage {
            before: bad(&before),
            after: bad(&after),
            first_after: after.iter().position(|&b| b != GUARD_BYTE),
        };
        if damage.before == 0 && damage.after == 0 {
            return Ok(None);
        }
        self.reset_guards()?;
        Ok(Some(damage))
    }
}

fn fill_range(ctx: &Ctx, at: u64, len: usize, element: &[u8]) -> Result<(), RuntimeError> {
    if len == 0 {
        return Ok(());
    }
    let s = ctx.stream;
    // SAFETY: [at, at + len) is allocated; element sizes divide `len` for typed buffers.
    unsafe {
        match element.len() {
            1 => sys::cuMemsetD8Async(at, element[0], len, s)
                .result()
                .call("cuMemsetD8Async")?,
            2 => {
                sys::cuMemsetD16Async(at, u16::from_le_bytes([element[0], element[1]]), len / 2, s)
                    .result()
                    .call("cuMemsetD16Async")?
            }
            4 => sys::cuMemsetD32Async(
                at,
                u32::from_le_bytes([element[0], element[1], element[2], element[3]]),
                len / 4,
                s,
            )
            .result()
            .call("cuMemsetD32Async")?,
            8 => {
                // Two strided 32-bit fills: the low words at offset 0, the high at 4, each with
                // a pitch of 8 bytes (one "row" per element).
                let lo = u32::from_le_bytes([element[0], element[1], element[2], element[3]]);
                let hi = u32::from_le_bytes([element[4], element[5], element[6], element[7]]);
                sys::cuMemsetD2D32Async(at, 8, lo, 1, len / 8, s)
                    .result()
                    .call("cuMemsetD2D32Async")?;
                sys::cuMemsetD2D32Async(at + 4, 8, hi, 1, len / 8, s)
                    .result()
                    .call("cuMemsetD2D32Async")?;
            }
            n => {
                return Err(RuntimeError::SizeMismatch {
                    name: "fill pattern".into(),
                    len: 8,
                    got: n,
                    what: "the pattern (1, 2, 4 or 8 bytes)",
                })
            }
        }
    }
    Ok(())
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `Gpu::alloc`, freed once; errors ignored (see Ctx's Drop).
        unsafe {
            let _ = self.ctx.bind();
            let _ = result::free_sync(self.base);
        }
    }
}

pub struct Event {
    ctx: Rc<Ctx>,
    ev: sys::CUevent,
}

impl Event {
    pub fn record(&self) -> Result<(), RuntimeError> {
        // SAFETY: event and stream belong to this context.
        unsafe { result::event::record(self.ev, self.ctx.stream) }.call("cuEventRecord")?;
        Ok(())
    }

    /// Milliseconds from `self` to `end`, waiting for `end` to complete.
    pub fn elapsed_ms(&self, end: &Event) -> Result<f32, RuntimeError> {
        // SAFETY: both events were recorded on this context's stream.
        unsafe {
            result::event::synchronize(end.ev).call("cuEventSynchronize")?;
            Ok(result::event::elapsed(self.ev, end.ev).call("cuEventElapsedTime")?)
        }
    }
}

/// An instantiated CUDA graph of work captured from the worker's stream ([`Gpu::capture`]).
pub struct Graph {
    ctx: Rc<Ctx>,
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
}

impl Graph {
    /// Queues one replay of the whole graph on the worker's stream.
    pub fn launch(&self) -> Result<(), RuntimeError> {
        // SAFETY: the executable graph and the stream belong to this context.
        unsafe { result::graph::launch(self.exec, self.ctx.stream) }.call("cuGraphLaunch")?;
        Ok(())
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: created in `Gpu::capture`, destroyed once; errors ignored (see Ctx's Drop).
        unsafe {
            let _ = self.ctx.bind();
            let _ = result::graph::exec_destroy(self.exec);
            let _ = result::graph::destroy(self.graph);
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created in `Gpu::event`, destroyed once.
        unsafe {
            let _ = result::event::destroy(self.ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_sizes_include_both_guards_and_never_wrap() {
        assert_eq!(buffer_bytes(DType::F32, 0), Some((0, 2 * GUARD_BYTES)));
        assert_eq!(
            buffer_bytes(DType::Bf16, 1001),
            Some((2002, 2002 + 2 * GUARD_BYTES))
        );
        // i64::MAX elements of a 2-byte type: the data fits a usize, data plus guards does not.
        assert_eq!(buffer_bytes(DType::Bf16, i64::MAX as u64), None);
        assert_eq!(buffer_bytes(DType::F64, u64::MAX / 4), None);
        assert!(buffer_bytes(DType::U8, i64::MAX as u64).is_some());
    }
}
