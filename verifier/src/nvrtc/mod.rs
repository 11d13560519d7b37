//! NVRTC: discovery, compilation to CUBIN for an explicit target, include allowlist, ptxas
//! resource reports and a content-addressed on-disk cache.

mod cache;
mod compile;
pub mod emulated;
mod library;
pub mod ptxas;

pub use cache::CompileCache;
pub use compile::{Arch, CompileError, CompileRequest, Compiled, Compiler, KernelReport};
pub use library::{
    project_roots, Locator, Nvrtc, NvrtcError, ENV_HOME, ENV_INCLUDE, ENV_LIBRARY, LIBRARY_NAMES,
    TOOLS_SUBDIR,
};
pub use ptxas::KernelResources;
