//! Is there a CUDA driver? cudarc panics on first use when libcuda cannot be loaded or lacks a
//! symbol, so every entry point asks here first and turns absence into a typed error.

use super::error::RuntimeError;

/// What the loader is asked for, in order. `libcuda.so.1` is what the driver package installs;
/// plain `libcuda.so` exists only with development files (and may be the toolkit's stub, which
/// `cuInit` reports as CUDA_ERROR_STUB_LIBRARY).
pub const DRIVER_LIBRARIES: &[&str] = &["libcuda.so.1", "libcuda.so"];

/// Every driver function this runtime calls: checked up front so that an old driver fails with
/// a message instead of a panic inside cudarc's lazy symbol loader.
pub const REQUIRED_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetName",
    "cuDeviceGetAttribute",
    "cuDeviceTotalMem_v2",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxSetCurrent",
    "cuCtxSynchronize",
    "cuStreamCreate",
    "cuStreamDestroy_v2",
    "cuStreamSynchronize",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemGetInfo_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemcpyDtoDAsync_v2",
    "cuMemsetD8Async",
    "cuMemsetD16Async",
    "cuMemsetD32Async",
    "cuMemsetD2D32Async",
    "cuModuleLoadData",
    "cuModuleUnload",
    "cuModuleGetFunction",
    "cuFuncGetAttribute",
    "cuFuncSetAttribute",
    // CUDA 12.4 on (older than the _v2 timing entry point below).
    "cuFuncGetParamInfo",
    "cuOccupancyMaxActiveBlocksPerMultiprocessor",
    "cuLaunchKernel",
    "cuLaunchKernelEx",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventSynchronize",
    // CUDA 13 bindings time with the _v2 entry point (drivers from CUDA 12.8 on).
    "cuEventElapsedTime_v2",
    "cuEventDestroy_v2",
    "cuGetErrorName",
    "cuGetErrorString",
];

/// Which library would be used, or why none can be.
pub fn probe_driver() -> Result<&'static str, RuntimeError> {
    probe_with(DRIVER_LIBRARIES, REQUIRED_SYMBOLS)
}

/// True when a CUDA driver library loads and has every function this runtime needs. Says
/// nothing about whether a device is present (that takes `cuInit`).
pub fn driver_present() -> bool {
    probe_driver().is_ok()
}

pub(crate) fn probe_with(
    libraries: &[&'static str],
    symbols: &[&str],
) -> Result<&'static str, RuntimeError> {
    let mut tried = Vec::new();
    for name in libraries {
        // SAFETY: loading the driver library runs its initialisers, which have no preconditions.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => {
                let missing: Vec<&str> = symbols
                    .iter()
                    .copied()
                    // SAFETY: only the symbol's presence is checked; it is never called here.
                    .filter(|s| unsafe { lib.get::<*const ()>(s.as_bytes()) }.is_err())
                    .collect();
                if missing.is_empty() {
                    return Ok(name);
                }
                tried.push(format!(
                    "{name} (loaded, but it lacks {}: the driver is older than this build needs)",
                    missing.join(", ")
                ));
            }
            Err(e) => tried.push(format!("{name} ({e})")),
        }
    }
    Err(RuntimeError::NoDriver {
        looked_for: tried.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_library_is_an_error_naming_what_was_tried() {
        let e = probe_with(&["libksmith-no-such-cuda.so.1"], &["cuInit"]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("no CUDA driver: looked for libksmith-no-such-cuda.so.1 ("),
            "{s}"
        );
        assert!(e.is_harness());
    }

    #[test]
    fn library_without_the_symbols_is_rejected() {
        // libc loads everywhere and has no CUDA symbols: stands in for a too-old driver.
        let e = probe_with(&["libc.so.6"], &["cuInit", "cuLaunchKernelEx"]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("libc.so.6 (loaded, but it lacks cuInit, cuLaunchKernelEx"),
            "{s}"
        );
        assert_eq!(
            probe_with(&["libc.so.6"], &["malloc"]).unwrap(),
            "libc.so.6"
        );
    }

    #[test]
    fn this_machine_either_has_a_driver_or_says_so() {
        match probe_driver() {
            Ok(lib) => eprintln!("CUDA driver found: {lib}"),
            Err(e) => {
                let s = e.to_string();
                assert!(
                    s.contains("libcuda.so.1") && s.contains("GPU machine"),
                    "{s}"
                );
                eprintln!("no driver here, as expected on a CPU machine: {s}");
            }
        }
    }
}
