//! NVRTC: discovery, compilation to CUBIN for an explicit target, include allowlist, ptxas
//! resource reports and a content-addressed on-disk cache.

mod cache;
mod compile;
pub mod emulated;
mod library;
pub mod ptx_params;
pub mod ptxas;

pub use cache::CompileCache;
pub use compile::{Arch, CompileError, CompileRequest, Compiled, Compiler, KernelReport};
pub use library::{
    project_roots, Locator, Nvrtc, NvrtcError, ENV_HOME, ENV_INCLUDE, ENV_LIBRARY, LIBRARY_NAMES,
    TOOLS_SUBDIR,
};
pub use ptxas::KernelResources;

/// NVRTC for unit tests that compile real CUDA: `None` (with a visible skip line) where it is not
/// installed, a failure under CI, which installs it.
#[cfg(test)]
pub(crate) fn test_compiler() -> Option<Compiler> {
    match Locator::default().load() {
        Ok(n) => Some(Compiler::new(n, None)),
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("NVRTC is required under CI: {e}");
            }
            eprintln!("skipped: NVRTC not installed ({e})");
            None
        }
    }
}
