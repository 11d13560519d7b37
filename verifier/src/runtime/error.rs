//! Errors of the CUDA runtime, and which of them leave the CUDA context unusable.

use serde::{Deserialize, Serialize};

/// One failed driver call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{call} failed: {name} ({code}): {message}")]
pub struct CudaError {
    pub call: String,
    pub code: u32,
    pub name: String,
    pub message: String,
}

impl CudaError {
    pub(crate) fn from_driver(call: &str, e: cudarc::driver::DriverError) -> CudaError {
        let code = e.0 as u32;
        let name = format!("{:?}", e.0);
        let message = e
            .error_string()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "(no description from the driver)".to_string());
        CudaError {
            call: call.to_string(),
            code,
            name,
            message,
        }
    }

    /// True when the CUDA context is lost: every later call in this process fails too, so the
    /// worker must report and exit (its parent starts a fresh one).
    pub fn is_sticky(&self) -> bool {
        is_sticky(self.code)
    }
}

/// Error codes after which "the context cannot be used" or "the process must be terminated
/// and relaunched" (cuda.h's documentation of `CUresult`, CUDA 13.0), plus the ones that mean
/// the driver itself is gone.
pub const STICKY_CODES: &[(u32, &str)] = &[
    (4, "CUDA_ERROR_DEINITIALIZED"),
    (214, "CUDA_ERROR_ECC_UNCORRECTABLE"),
    (220, "CUDA_ERROR_NVLINK_UNCORRECTABLE"),
    (226, "CUDA_ERROR_CONTAINED"),
    (700, "CUDA_ERROR_ILLEGAL_ADDRESS"),
    (702, "CUDA_ERROR_LAUNCH_TIMEOUT"),
    (709, "CUDA_ERROR_CONTEXT_IS_DESTROYED"),
    (710, "CUDA_ERROR_ASSERT"),
    (714, "CUDA_ERROR_HARDWARE_STACK_ERROR"),
    (715, "CUDA_ERROR_ILLEGAL_INSTRUCTION"),
    (716, "CUDA_ERROR_MISALIGNED_ADDRESS"),
    (717, "CUDA_ERROR_INVALID_ADDRESS_SPACE"),
    (718, "CUDA_ERROR_INVALID_PC"),
    (719, "CUDA_ERROR_LAUNCH_FAILED"),
    (721, "CUDA_ERROR_TENSOR_MEMORY_LEAK"),
    (810, "CUDA_ERROR_MPS_CLIENT_TERMINATED"),
    (911, "CUDA_ERROR_EXTERNAL_DEVICE"),
    (999, "CUDA_ERROR_UNKNOWN"),
];

pub fn is_sticky(code: u32) -> bool {
    STICKY_CODES.iter().any(|(c, _)| *c == code)
}

/// A launch the device cannot run, found before launching (so the context stays usable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("launch over resource limits: `{kernel}` {problems}", problems = .problems.join("; "))]
pub struct OverLimits {
    pub kernel: String,
    pub problems: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The harness cannot run here at all (not the kernel's fault).
    #[error("no CUDA driver: looked for {looked_for}; this command needs a GPU machine with the NVIDIA driver (if libcuda.so.1 is installed outside the loader's path, add its directory to LD_LIBRARY_PATH)")]
    NoDriver { looked_for: String },
    #[error("no usable CUDA device: {0}")]
    NoDevice(String),
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error(transparent)]
    OverLimits(#[from] OverLimits),
    #[error("kernel `{name}` (symbol `{symbol}`) is not in the loaded module: {source}")]
    MissingFunction {
        name: String,
        symbol: String,
        source: Box<CudaError>,
    },
    #[error("launch of `{kernel}`: argument {index} names buffer `{name}`, which the harness did not allocate")]
    UnknownBuffer {
        kernel: String,
        index: usize,
        name: String,
    },
    /// The plan's arguments do not fit the compiled kernel's parameters (refused before
    /// launching, so the context stays usable).
    #[error("launch of `{kernel}`: {problem}")]
    ArgumentMismatch { kernel: String, problem: String },
    #[error("buffer `{name}` holds {len} bytes; {what} has {got}")]
    SizeMismatch {
        name: String,
        len: usize,
        got: usize,
        what: &'static str,
    },
}

impl RuntimeError {
    pub fn is_sticky(&self) -> bool {
        match self {
            RuntimeError::Cuda(e) => e.is_sticky(),
            RuntimeError::MissingFunction { source, .. } => source.is_sticky(),
            _ => false,
        }
    }

    /// True when the machine, not the kernel, is at fault (exit code 3 of `ksmith eval`).
    pub fn is_harness(&self) -> bool {
        matches!(
            self,
            RuntimeError::NoDriver { .. } | RuntimeError::NoDevice(_)
        )
    }
}

pub(crate) trait Call<T> {
    /// Names the driver call in the error.
    fn call(self, name: &str) -> Result<T, CudaError>;
}

impl<T> Call<T> for Result<T, cudarc::driver::DriverError> {
    fn call(self, name: &str) -> Result<T, CudaError> {
        self.map_err(|e| CudaError::from_driver(name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cudarc::driver::sys::CUresult;

    #[test]
    fn sticky_codes_match_the_driver_enum() {
        // The table's numbers must be the enum's: a typo would turn a lost context into a
        // "recoverable" error and the next case would run on a dead context.
        let known = [
            CUresult::CUDA_ERROR_DEINITIALIZED,
            CUresult::CUDA_ERROR_ECC_UNCORRECTABLE,
            CUresult::CUDA_ERROR_NVLINK_UNCORRECTABLE,
            CUresult::CUDA_ERROR_CONTAINED,
            CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
            CUresult::CUDA_ERROR_LAUNCH_TIMEOUT,
            CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED,
            CUresult::CUDA_ERROR_ASSERT,
            CUresult::CUDA_ERROR_HARDWARE_STACK_ERROR,
            CUresult::CUDA_ERROR_ILLEGAL_INSTRUCTION,
            CUresult::CUDA_ERROR_MISALIGNED_ADDRESS,
            CUresult::CUDA_ERROR_INVALID_ADDRESS_SPACE,
            CUresult::CUDA_ERROR_INVALID_PC,
            CUresult::CUDA_ERROR_LAUNCH_FAILED,
            CUresult::CUDA_ERROR_TENSOR_MEMORY_LEAK,
            CUresult::CUDA_ERROR_MPS_CLIENT_TERMINATED,
            CUresult::CUDA_ERROR_EXTERNAL_DEVICE,
            CUresult::CUDA_ERROR_UNKNOWN,
        ];
        assert_eq!(known.len(), STICKY_CODES.len());
        for (k, (code, name)) in known.iter().zip(STICKY_CODES) {
            assert_eq!(*k as u32, *code, "{name}");
            assert_eq!(format!("{k:?}"), *name);
            assert!(is_sticky(*code));
        }
        for recoverable in [
            CUresult::CUDA_ERROR_INVALID_VALUE,
            CUresult::CUDA_ERROR_OUT_OF_MEMORY,
            CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
            CUresult::CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE,
            CUresult::CUDA_ERROR_INVALID_CLUSTER_SIZE,
            CUresult::CUDA_ERROR_NOT_FOUND,
            CUresult::CUDA_ERROR_UNSUPPORTED_DEVSIDE_SYNC,
        ] {
            assert!(!is_sticky(recoverable as u32), "{recoverable:?}");
        }
    }

    #[test]
    fn every_code_cuda_h_says_needs_a_relaunch_is_sticky() {
        // cuda.h (13.0) ends the description of each of these with "the process must be
        // terminated and relaunched": treating one as recoverable runs every later case of the
        // worker on a dead context and blames those kernels.
        for code in [
            CUresult::CUDA_ERROR_CONTAINED,
            CUresult::CUDA_ERROR_TENSOR_MEMORY_LEAK,
            CUresult::CUDA_ERROR_MPS_CLIENT_TERMINATED,
            CUresult::CUDA_ERROR_EXTERNAL_DEVICE,
        ] {
            assert!(is_sticky(code as u32), "{code:?}");
        }
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = RuntimeError::NoDriver {
            looked_for: "libcuda.so.1 (not found)".into(),
        };
        let s = e.to_string();
        assert!(
            s.starts_with("no CUDA driver: looked for libcuda.so.1"),
            "{s}"
        );
        assert!(s.contains("needs a GPU machine"), "{s}");
        assert!(e.is_harness() && !e.is_sticky());
        let c = CudaError {
            call: "cuStreamSynchronize".into(),
            code: 700,
            name: "CUDA_ERROR_ILLEGAL_ADDRESS".into(),
            message: "an illegal memory access was encountered".into(),
        };
        let e = RuntimeError::from(c);
        assert!(e.is_sticky() && !e.is_harness());
        assert!(e.to_string().contains("cuStreamSynchronize failed"));
        let o = OverLimits {
            kernel: "k".into(),
            problems: vec!["a".into(), "b".into()],
        };
        assert_eq!(o.to_string(), "launch over resource limits: `k` a; b");
    }
}
