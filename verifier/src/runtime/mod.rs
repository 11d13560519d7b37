//! The CUDA runtime, on cudarc's driver API loaded at run time: device discovery, buffers,
//! CUBIN modules, checked launches (clusters, cooperative grids, large dynamic shared memory),
//! timing events, and the sticky/recoverable classification of driver errors.
//!
//! Nothing here panics when there is no GPU: [`Gpu::open`] probes for `libcuda.so.1` and every
//! symbol it needs before cudarc is touched, and returns [`RuntimeError::NoDriver`] instead.
//! The pure parts (limit checks, argument packing, error classification) are tested on CPU.

pub mod backend;
pub mod bench;
pub mod calibrate;
pub mod corpus;
pub mod device;
pub mod error;
pub mod evaluate;
#[cfg(test)]
pub(crate) mod fake;
mod gpu;
pub mod launch;
pub mod occupancy;
pub mod probe;
pub mod stdio;
pub mod strict;
pub mod telemetry;
pub mod timing;
pub mod watchdog;

pub use device::DeviceInfo;
pub use error::{is_sticky, CudaError, OverLimits, RuntimeError};
pub use gpu::{DeviceBuffer, Event, Function, Gpu, GuardDamage, Module, GUARD_BYTE, GUARD_BYTES};
pub use launch::{check_limits, pack_args, FuncAttrs, PackedArgs};
pub use probe::{driver_present, probe_driver, DRIVER_LIBRARIES};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_without_a_driver_is_a_typed_error_not_a_panic() {
        match Gpu::open(0) {
            Ok(gpu) => eprintln!("GPU present: {}", gpu.info.summary()),
            Err(e) => {
                assert!(e.is_harness(), "{e}");
                let s = e.to_string();
                assert!(s.starts_with("no CUDA"), "{s}");
                if !driver_present() {
                    assert!(s.contains("looked for libcuda.so.1"), "{s}");
                }
            }
        }
    }
}
