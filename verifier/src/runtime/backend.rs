//! What the strict protocol needs from a device, as a trait: the real [`Gpu`] implements it,
//! and CPU tests implement it with host memory and Rust closures standing in for kernels, so
//! the protocol's logic (poison, checksums, two runs, verdict mapping) is tested without a GPU.

use super::error::RuntimeError;
use super::gpu::{DeviceBuffer, Gpu, GuardDamage, Module};
use crate::dtype::DType;
use crate::nvrtc::{Arch, Compiled};
use crate::plan::ResolvedLaunch;

pub trait Backend {
    type Buffer;
    /// Loaded device code: the functions a plan's launches name.
    type Program;

    fn alloc(&self, name: &str, dtype: DType, numel: u64) -> Result<Self::Buffer, RuntimeError>;
    fn address(&self, b: &Self::Buffer) -> u64;
    fn upload(&self, b: &Self::Buffer, bytes: &[u8]) -> Result<(), RuntimeError>;
    fn download(&self, b: &Self::Buffer) -> Result<Vec<u8>, RuntimeError>;
    /// Fills every element with `element` (one element's little-endian bytes).
    fn fill(&self, b: &Self::Buffer, element: &[u8]) -> Result<(), RuntimeError>;
    /// Bytes written just outside the buffer since the last check.
    fn check_guards(&self, b: &Self::Buffer) -> Result<Option<GuardDamage>, RuntimeError>;
    /// Queues one launch; `address` maps buffer names to device addresses.
    fn launch(
        &self,
        program: &Self::Program,
        l: &ResolvedLaunch,
        address: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<(), RuntimeError>;
    /// Waits for queued work; kernel faults surface here.
    fn synchronize(&self) -> Result<(), RuntimeError>;
}

/// A backend that can load NVRTC output: what [`super::evaluate::evaluate`] needs beyond
/// [`Backend`].
pub trait Device: Backend {
    /// The compile target for this device.
    fn arch(&self) -> Arch;
    /// One line for logs (name, architecture, SMs).
    fn describe(&self) -> String;
    fn load(&self, compiled: &Compiled) -> Result<Self::Program, RuntimeError>;
}

impl Device for Gpu {
    fn arch(&self) -> Arch {
        self.info.arch()
    }
    fn describe(&self) -> String {
        self.info.summary()
    }
    fn load(&self, compiled: &Compiled) -> Result<Module, RuntimeError> {
        Gpu::load(self, compiled)
    }
}

impl Backend for Gpu {
    type Buffer = DeviceBuffer;
    type Program = Module;

    fn alloc(&self, name: &str, dtype: DType, numel: u64) -> Result<DeviceBuffer, RuntimeError> {
        Gpu::alloc(self, name, dtype, numel)
    }
    fn address(&self, b: &DeviceBuffer) -> u64 {
        b.address()
    }
    fn upload(&self, b: &DeviceBuffer, bytes: &[u8]) -> Result<(), RuntimeError> {
        b.upload(bytes)
    }
    fn download(&self, b: &DeviceBuffer) -> Result<Vec<u8>, RuntimeError> {
        b.download()
    }
    fn fill(&self, b: &DeviceBuffer, element: &[u8]) -> Result<(), RuntimeError> {
        b.fill(element)
    }
    fn check_guards(&self, b: &DeviceBuffer) -> Result<Option<GuardDamage>, RuntimeError> {
        b.check_guards()
    }
    fn launch(
        &self,
        program: &Module,
        l: &ResolvedLaunch,
        address: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<(), RuntimeError> {
        Gpu::launch(self, program, l, address)
    }
    fn synchronize(&self) -> Result<(), RuntimeError> {
        Gpu::synchronize(self)
    }
}
