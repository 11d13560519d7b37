//! A PTX interpreter: runs the PTX that NVRTC produces on the CPU, so the strict protocol can
//! check the suite's own reference kernels on a machine without a GPU (`ksmith tasks emulate`).
//!
//! It implements [`Device`], so everything the protocol does on a GPU (poisoned outputs, two
//! runs, tolerances, the PyTorch oracle) runs unchanged. What it checks that a GPU would not:
//! every access lies inside an allocation and is aligned to its size. What it cannot check:
//! timing, TMA and cluster code, and most races (threads run one at a time; each run reverses
//! the order, so the protocol's determinism check sees races that decide a result). It compiles
//! for `sm_90`, so `sm_90a`-only paths run their portable fallbacks; with `sm_90a`
//! ([`Emulator::with_arch`]) `wgmma` runs too, from the PTX ISA's layouts.
//!
//! Only kernels whose source this project owns run here: a candidate from an LLM is device code
//! for a GPU, and kernelsmith does not execute it on the host, interpreted or not.
//!
//! - [`ptx`]: the PTX reader; [`op`]: decoded instructions;
//! - [`exec`]: one thread's instructions; [`cta`]: barriers, warp collectives, the grid;
//! - [`num`]: floating-point semantics; [`matrix`]: `mma` and `ldmatrix` fragments;
//! - [`memory`]: bounds-checked global memory.

mod cta;
mod exact;
mod exec;
pub mod matrix;
mod memory;
mod num;
mod op;
mod ptx;
pub mod wgmma;

use crate::dtype::DType;
use crate::nvrtc::{Arch, Compiled};
use crate::plan::{ResolvedArg, ResolvedLaunch};
use crate::runtime::backend::{Backend, Device};
use crate::runtime::error::{CudaError, RuntimeError};
use crate::runtime::launch::{check_params, pack_args};
use crate::runtime::GuardDamage;
use exec::{Cta, FaultKind, Thread};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Instructions one launch may execute before it counts as hung.
pub const DEFAULT_BUDGET: u64 = 4_000_000_000;

/// Shared memory one block may have: an H100's 227 KiB.
const MAX_SHARED_BYTES: u64 = 227 << 10;

/// The compile target for emulation: plain `sm_90`, so `sm_90a`-only paths (wgmma, TMA)
/// compile to their portable fallbacks, which the emulator implements.
pub const ARCH: Arch = Arch {
    major: 9,
    minor: 0,
    arch_specific: false,
};

pub struct Emulator {
    mem: RefCell<memory::Global>,
    pending: RefCell<Option<CudaError>>,
    budget: u64,
    executed: Cell<u64>,
    tensor: Cell<(u64, u64)>,
    /// Flips at every synchronisation: the strict protocol's second run of a case (its
    /// determinism check) runs each CTA's threads in the opposite order, so a race between
    /// threads that decides the result shows up as two different outputs.
    reverse: Cell<bool>,
    arch: Arch,
}

pub struct EmuBuffer {
    base: u64,
    len: usize,
}

pub struct EmuProgram {
    prog: ptx::Program,
    /// Plan name → (function index, parameter sizes).
    kernels: HashMap<String, (usize, Vec<usize>)>,
}

impl EmuProgram {
    /// Instructions the emulator would refuse, with their PTX lines (a kernel may still run if
    /// it never reaches them).
    pub fn unsupported(&self) -> Vec<(u32, String)> {
        let mut v = Vec::new();
        for f in &self.prog.functions {
            for i in &f.insts {
                if let op::Op::Unsupported(what) = &i.op {
                    v.push((i.line, what.to_string()));
                }
            }
        }
        v
    }
}

impl Default for Emulator {
    fn default() -> Self {
        Emulator::new(DEFAULT_BUDGET)
    }
}

impl Emulator {
    pub fn new(budget: u64) -> Emulator {
        Emulator {
            mem: RefCell::new(memory::Global::new()),
            pending: RefCell::new(None),
            budget,
            executed: Cell::new(0),
            tensor: Cell::new((0, 0)),
            reverse: Cell::new(false),
            arch: ARCH,
        }
    }

    /// Compiles for `arch` instead of [`ARCH`]: `sm_90a` runs the wgmma main loops (emulated from
    /// the PTX ISA's shared-memory layouts) instead of their mma.sync fallbacks.
    pub fn with_arch(mut self, arch: Arch) -> Emulator {
        self.arch = arch;
        self
    }

    /// Instructions executed by all launches so far (thread-instructions).
    pub fn executed(&self) -> u64 {
        self.executed.get()
    }

    /// Tensor-core instructions executed so far: warp-level `mma`, warpgroup-level `wgmma`.
    pub fn tensor_instructions(&self) -> (u64, u64) {
        self.tensor.get()
    }

    fn run_launch(
        &self,
        program: &EmuProgram,
        l: &ResolvedLaunch,
        params: &[u8],
    ) -> Result<(), exec::Fault> {
        let Some(&(func, _)) = program.kernels.get(&l.kernel) else {
            return exec::fault(
                FaultKind::IllegalInstruction,
                format!("no kernel `{}` in the program", l.kernel),
            );
        };
        let prog = &program.prog;
        let threads_per_cta = l.threads_per_block() as usize;
        let shared_len =
            (prog.dynamic_shared_base + l.shared_bytes as usize).max(prog.static_shared);
        let mut mem = self.mem.borrow_mut();
        let mut executed = 0u64;
        let mut threads: Vec<Thread> = Vec::with_capacity(threads_per_cta);
        for z in 0..l.grid[2] {
            for y in 0..l.grid[1] {
                for x in 0..l.grid[0] {
                    let mut cta = Cta {
                        prog,
                        global: &mut mem,
                        // Fresh shared memory holds garbage on a GPU: a fixed non-zero pattern
                        // makes reads of never-written shared memory visible.
                        shared: vec![0xA5; shared_len],
                        ctaid: [x, y, z],
                        nctaid: l.grid,
                        ntid: l.block,
                        dynamic_shared: l.shared_bytes,
                        clock: 0,
                        executed,
                        budget: self.budget,
                        arrived: [0; 16],
                        reverse: self.reverse.get(),
                        mma: 0,
                        wgmma: 0,
                    };
                    threads.clear();
                    let mut linear = 0u32;
                    for tz in 0..l.block[2] {
                        for ty in 0..l.block[1] {
                            for tx in 0..l.block[0] {
                                threads.push(Thread::new(prog, func, params, [tx, ty, tz], linear));
                                linear += 1;
                            }
                        }
                    }
                    let r = cta::run_cta(&mut cta, &mut threads);
                    executed = cta.executed;
                    let (m, w) = self.tensor.get();
                    self.tensor.set((m + cta.mma, w + cta.wgmma));
                    if let Err(mut f) = r {
                        f.message = format!("block ({x}, {y}, {z}): {}", f.message);
                        self.executed.set(self.executed.get() + executed);
                        return Err(f);
                    }
                }
            }
        }
        self.executed.set(self.executed.get() + executed);
        Ok(())
    }
}

fn cuda_error(kind: FaultKind, message: String) -> CudaError {
    let (code, name) = match kind {
        FaultKind::IllegalAddress => (700, "CUDA_ERROR_ILLEGAL_ADDRESS"),
        FaultKind::Misaligned => (716, "CUDA_ERROR_MISALIGNED_ADDRESS"),
        FaultKind::IllegalInstruction => (715, "CUDA_ERROR_ILLEGAL_INSTRUCTION"),
        FaultKind::Trap => (710, "CUDA_ERROR_ASSERT"),
        FaultKind::Hang => (702, "CUDA_ERROR_LAUNCH_TIMEOUT"),
    };
    CudaError {
        call: "emulated kernel".into(),
        code,
        name: name.into(),
        message,
    }
}

impl Backend for Emulator {
    type Buffer = EmuBuffer;
    type Program = EmuProgram;

    fn alloc(&self, _name: &str, dtype: DType, numel: u64) -> Result<EmuBuffer, RuntimeError> {
        let len = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size_bytes()))
            .filter(|&n| n <= 1 << 34)
            .ok_or_else(|| {
                RuntimeError::NoDevice(format!(
                    "emulator: {numel} elements of {dtype} do not fit in memory"
                ))
            })?;
        let base = self.mem.borrow_mut().alloc(len, 0);
        Ok(EmuBuffer { base, len })
    }
    fn address(&self, b: &EmuBuffer) -> u64 {
        b.base
    }
    fn upload(&self, b: &EmuBuffer, bytes: &[u8]) -> Result<(), RuntimeError> {
        let mut m = self.mem.borrow_mut();
        match m.bytes_mut(b.base, b.len) {
            Some(d) if bytes.len() == b.len => {
                d.copy_from_slice(bytes);
                Ok(())
            }
            _ => Err(RuntimeError::NoDevice(format!(
                "emulator: upload of {} bytes into a {}-byte buffer",
                bytes.len(),
                b.len
            ))),
        }
    }
    fn download(&self, b: &EmuBuffer) -> Result<Vec<u8>, RuntimeError> {
        self.mem
            .borrow()
            .bytes(b.base, b.len)
            .map(|s| s.to_vec())
            .ok_or_else(|| RuntimeError::NoDevice("emulator: buffer freed".into()))
    }
    fn fill(&self, b: &EmuBuffer, element: &[u8]) -> Result<(), RuntimeError> {
        let mut m = self.mem.borrow_mut();
        let d = m
            .bytes_mut(b.base, b.len)
            .ok_or_else(|| RuntimeError::NoDevice("emulator: buffer freed".into()))?;
        if !element.is_empty() {
            for c in d.chunks_mut(element.len()) {
                c.copy_from_slice(&element[..c.len()]);
            }
        }
        Ok(())
    }
    fn check_guards(&self, _b: &EmuBuffer) -> Result<Option<GuardDamage>, RuntimeError> {
        // Every out-of-bounds access already faulted at the instruction that made it.
        Ok(None)
    }
    fn launch(
        &self,
        program: &EmuProgram,
        l: &ResolvedLaunch,
        address: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<(), RuntimeError> {
        if let Some(e) = self.pending.borrow().as_ref() {
            return Err(RuntimeError::Cuda(e.clone()));
        }
        let Some((_, sizes)) = program.kernels.get(&l.kernel) else {
            return Err(RuntimeError::NoDevice(format!(
                "emulator: the program has no kernel `{}`",
                l.kernel
            )));
        };
        check_params(l, sizes)?;
        if l.threads_per_block() == 0 || l.threads_per_block() > 1024 || l.grid.contains(&0) {
            return Err(RuntimeError::Cuda(CudaError {
                call: "cuLaunchKernel".into(),
                code: 1,
                name: "CUDA_ERROR_INVALID_VALUE".into(),
                message: format!("grid {:?} block {:?}", l.grid, l.block),
            }));
        }
        let shared = program.prog.dynamic_shared_base as u64 + l.shared_bytes as u64;
        if shared > MAX_SHARED_BYTES {
            return Err(RuntimeError::Cuda(CudaError {
                call: "cuLaunchKernel".into(),
                code: 1,
                name: "CUDA_ERROR_INVALID_VALUE".into(),
                message: format!(
                    "{shared} bytes of shared memory per block (an H100 has {MAX_SHARED_BYTES})"
                ),
            }));
        }
        let packed = pack_args(l, address)?;
        let f = &program.prog.functions[program.kernels[&l.kernel].0];
        let mut params = vec![0u8; f.param_bytes];
        for (i, &(off, bytes)) in f.params.iter().enumerate() {
            let v = packed.slot(i).unwrap_or(0);
            params[off..off + bytes.min(8)].copy_from_slice(&v.to_le_bytes()[..bytes.min(8)]);
        }
        if let Err(f) = self.run_launch(program, l, &params) {
            // Like a GPU fault: reported at the next synchronisation, and sticky.
            *self.pending.borrow_mut() =
                Some(cuda_error(f.kind, format!("`{}` {}", l.kernel, f.message)));
        }
        Ok(())
    }
    fn synchronize(&self) -> Result<(), RuntimeError> {
        self.reverse.set(!self.reverse.get());
        match self.pending.borrow().as_ref() {
            Some(e) => Err(RuntimeError::Cuda(e.clone())),
            None => Ok(()),
        }
    }
}

impl Device for Emulator {
    fn arch(&self) -> Arch {
        self.arch
    }
    fn describe(&self) -> String {
        format!("PTX emulator on the CPU ({} code, no timing)", self.arch)
    }
    fn load(&self, compiled: &Compiled) -> Result<EmuProgram, RuntimeError> {
        let mut mem = self.mem.borrow_mut();
        let base = mem.next_base();
        let prog = ptx::parse(&compiled.ptx, base)
            .map_err(|e| RuntimeError::NoDevice(format!("emulator: cannot read the PTX: {e}")))?;
        if !prog.image.bytes.is_empty() {
            let at = mem.alloc(prog.image.bytes.len(), 0);
            if at != base {
                return Err(RuntimeError::NoDevice(
                    "emulator: module variables misplaced".into(),
                ));
            }
            if let Some(d) = mem.bytes_mut(at, prog.image.bytes.len()) {
                d.copy_from_slice(&prog.image.bytes);
            }
        }
        let mut kernels = HashMap::new();
        for k in &compiled.kernels {
            let Some(&fi) = prog.by_name.get(&k.symbol) else {
                return Err(RuntimeError::NoDevice(format!(
                    "emulator: kernel `{}` (symbol `{}`) is not in the PTX",
                    k.name, k.symbol
                )));
            };
            if !prog.functions[fi].entry {
                return Err(RuntimeError::NoDevice(format!(
                    "emulator: `{}` is a device function, not a kernel",
                    k.symbol
                )));
            }
            let sizes = prog.functions[fi].params.iter().map(|p| p.1).collect();
            kernels.insert(k.name.clone(), (fi, sizes));
        }
        Ok(EmuProgram { prog, kernels })
    }
}

/// Parses `ptx` and runs its first kernel on two blocks of 64 threads, every 8-byte parameter
/// pointing at one 64 KiB buffer and every other one 1: for the fuzzer, which checks that no
/// PTX makes the emulator panic or run past `budget`. Returns instructions executed.
#[doc(hidden)]
pub fn fuzz_run(ptx: &str, budget: u64) -> Result<u64, String> {
    let emu = Emulator::new(budget);
    let base = emu.mem.borrow().next_base();
    let prog = ptx::parse(ptx, base).map_err(|e| e.to_string())?;
    let Some(fi) = prog.functions.iter().position(|f| f.entry) else {
        return Err("no kernel".into());
    };
    let f = &prog.functions[fi];
    if !prog.image.bytes.is_empty() {
        let mut mem = emu.mem.borrow_mut();
        let at = mem.alloc(prog.image.bytes.len(), 0);
        if let Some(d) = mem.bytes_mut(at, prog.image.bytes.len()) {
            d.copy_from_slice(&prog.image.bytes);
        }
    }
    let buffer = emu.mem.borrow_mut().alloc(64 << 10, 0);
    let args = f
        .params
        .iter()
        .map(|&(_, bytes)| {
            if bytes == 8 {
                ResolvedArg::U64(buffer)
            } else {
                ResolvedArg::U32(1)
            }
        })
        .collect();
    let sizes = f.params.iter().map(|p| p.1).collect();
    let name = f.name.clone();
    let program = EmuProgram {
        prog,
        kernels: [(name.clone(), (fi, sizes))].into_iter().collect(),
    };
    let l = ResolvedLaunch {
        kernel: name,
        grid: [2, 1, 1],
        block: [64, 1, 1],
        shared_bytes: 0,
        args,
        cluster: None,
        cooperative: false,
    };
    emu.launch(&program, &l, &|_| None)
        .map_err(|e| e.to_string())?;
    emu.synchronize().map_err(|e| e.to_string())?;
    Ok(emu.executed())
}

#[cfg(test)]
mod tests;
