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

/// NVRTC for the tests that compile real CUDA, in every crate: `None`, with a visible skip line
/// naming `test`, where it is not installed; a failure under CI (`CI=true` or `CI=1`), where
/// scripts/setup.sh installs it; a failure too where it is named or found but does not load.
#[doc(hidden)]
pub fn nvrtc_for_tests(test: &str) -> Option<Nvrtc> {
    match Locator::default().load() {
        Ok(n) => Some(n),
        Err(e @ (NvrtcError::NotFound { .. } | NvrtcError::HeadersNotFound { .. })) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("{test}: NVRTC is required under CI: {e}");
            }
            eprintln!("{test}: skipped: NVRTC not installed; run scripts/setup.sh ({e})");
            None
        }
        Err(e) => panic!("{test}: NVRTC does not load: {e}"),
    }
}

/// [`nvrtc_for_tests`] as a compiler without a cache.
#[doc(hidden)]
pub fn compiler_for_tests(test: &str) -> Option<Compiler> {
    nvrtc_for_tests(test).map(|n| Compiler::new(n, None))
}

#[cfg(test)]
pub(crate) fn test_compiler() -> Option<Compiler> {
    compiler_for_tests("unit test")
}
