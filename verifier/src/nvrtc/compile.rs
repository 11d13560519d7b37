//! Compiling device code with a fixed policy: CUBIN for one exact target (PTX from a newer NVRTC
//! may not load on an older driver), C++17, line info, the ptxas report kept for the Judge.

use super::cache::{CompileCache, Entry, Meta};
use super::library::{Nvrtc, NvrtcError};
use super::ptxas::{self, KernelResources};
use crate::source::{self, IncludeViolation};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CUDA target such as `sm_90` or `sm_90a` (arch-specific features: wgmma, setmaxnreg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Arch {
    pub major: u32,
    pub minor: u32,
    pub arch_specific: bool,
}

/// Compute capabilities (major * 10 + minor) with an arch-specific target in NVRTC 13.0
/// (`sm_90a`, ...). sm_101a was renamed sm_110a in CUDA 13; sm_80 and sm_89 have none.
pub const ARCH_SPECIFIC_CCS: &[u32] = &[90, 100, 103, 110, 120, 121];

impl Arch {
    /// The target when no GPU is present: H100's ([`Arch::native`] of 9.0).
    pub const DEFAULT: Arch = Arch {
        major: 9,
        minor: 0,
        arch_specific: true,
    };

    /// The target kernels are compiled for on a device of compute capability `major.minor`: its
    /// arch-specific variant where there is one. Every kernel is compiled at run time for the
    /// one device it runs on, so the arch-specific target loses no portability, and it is the
    /// only one in which Hopper's and Blackwell's fastest instructions (`wgmma`, `setmaxnreg`,
    /// `tcgen05`) exist: on sm_90 FP8 tensor cores are reachable through `wgmma` alone.
    pub fn native(major: u32, minor: u32) -> Arch {
        Arch {
            major,
            minor,
            arch_specific: ARCH_SPECIFIC_CCS.contains(&(major * 10 + minor)),
        }
    }

    /// The same compute capability without arch-specific features (`sm_90` for `sm_90a`):
    /// how a GPU is named in keys and logs, whatever it is compiled for.
    pub fn generic(self) -> Arch {
        Arch {
            arch_specific: false,
            ..self
        }
    }

    /// The [`Arch::native`] target of device 0 through the driver, if there is one; `None`
    /// without a GPU or driver (never an error: compilation works without either).
    pub fn detect() -> Option<Arch> {
        type CuInit = unsafe extern "C" fn(u32) -> i32;
        type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
        type CuDeviceGetAttribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
        const CC_MAJOR: i32 = 75;
        const CC_MINOR: i32 = 76;
        // SAFETY: libcuda's initialisers are benign; the symbols have the types cuda.h gives them.
        unsafe {
            let lib = libloading::Library::new("libcuda.so.1").ok()?;
            let init: libloading::Symbol<CuInit> = lib.get(b"cuInit\0").ok()?;
            let get: libloading::Symbol<CuDeviceGet> = lib.get(b"cuDeviceGet\0").ok()?;
            let attr: libloading::Symbol<CuDeviceGetAttribute> =
                lib.get(b"cuDeviceGetAttribute\0").ok()?;
            if init(0) != 0 {
                return None;
            }
            let mut dev = 0;
            if get(&mut dev, 0) != 0 {
                return None;
            }
            let (mut major, mut minor) = (0, 0);
            if attr(&mut major, CC_MAJOR, dev) != 0 || attr(&mut minor, CC_MINOR, dev) != 0 {
                return None;
            }
            // libcuda stays loaded: unloading the driver library is not supported.
            std::mem::forget(lib);
            Some(Arch::native(major as u32, minor as u32))
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sm_{}{}{}",
            self.major,
            self.minor,
            if self.arch_specific { "a" } else { "" }
        )
    }
}

impl FromStr for Arch {
    type Err = String;
    /// Accepts `sm_90`, `sm_90a`, `90`, `9.0` (a name is taken literally: `sm_90` and `9.0`
    /// are not arch-specific).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a CUDA target (expected e.g. sm_90, sm_90a, 9.0)");
        let t = s.trim();
        if let Some((a, b)) = t.split_once('.') {
            return Ok(Arch {
                major: a.parse().map_err(|_| bad())?,
                minor: b.parse().map_err(|_| bad())?,
                arch_specific: false,
            });
        }
        let t = t
            .strip_prefix("sm_")
            .or_else(|| t.strip_prefix("compute_"))
            .unwrap_or(t);
        let (digits, arch_specific) = match t.strip_suffix('a') {
            Some(d) => (d, true),
            None => (t, false),
        };
        if digits.len() < 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let (maj, min) = digits.split_at(digits.len() - 1);
        let major: u32 = maj.parse().map_err(|_| bad())?;
        if !(5..=12).contains(&major) {
            return Err(bad());
        }
        Ok(Arch {
            major,
            minor: min.parse().map_err(|_| bad())?,
            arch_specific,
        })
    }
}

/// Largest kernel source accepted (a static size limit, DESIGN §4.1).
pub const MAX_SOURCE_BYTES: usize = 512 * 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct CompileRequest {
    pub source: String,
    /// Kernel names as the plan writes them (`softmax`, `gemm<128, 64>`); their mangled symbols
    /// are looked up after compiling.
    pub kernels: Vec<String>,
    pub arch: Arch,
    pub fast_math: bool,
    pub timeout: Duration,
    /// Shown in diagnostics (`reference.cu(12): error ...`).
    pub program_name: String,
}

impl CompileRequest {
    pub fn new(source: impl Into<String>, kernels: Vec<String>, arch: Arch) -> Self {
        CompileRequest {
            source: source.into(),
            kernels,
            arch,
            fast_math: false,
            timeout: DEFAULT_TIMEOUT,
            program_name: "kernel.cu".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    /// As the plan names it.
    pub name: String,
    pub symbol: String,
    pub resources: Option<KernelResources>,
    /// Bytes of each parameter, from the PTX entry (what `cuFuncGetParamInfo` says on a GPU);
    /// `None` when the declaration could not be read.
    pub param_bytes: Option<Vec<usize>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Compiled {
    #[serde(skip)]
    pub cubin: Vec<u8>,
    #[serde(skip)]
    pub ptx: String,
    pub log: String,
    pub options: Vec<String>,
    pub kernels: Vec<KernelReport>,
    /// Wall time of the NVRTC compilation (also for cache hits: the original compilation's).
    pub compile_ms: f64,
    pub cache_hit: bool,
    pub arch: String,
    pub nvrtc_version: (i32, i32),
    pub key: String,
}

impl Compiled {
    pub fn kernel(&self, name: &str) -> Option<&KernelReport> {
        self.kernels.iter().find(|k| k.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("kernel source is {bytes} bytes; the limit is {limit}")]
    SourceTooLarge { bytes: usize, limit: usize },
    #[error("disallowed #include:\n{}", render_violations(.0))]
    Includes(Vec<IncludeViolation>),
    #[error("compilation failed ({status}):\n{log}")]
    Failed { status: String, log: String },
    #[error("compilation did not finish within {} s", .limit.as_secs())]
    Timeout { limit: Duration },
    /// The harness could not compile at all (not the kernel's fault).
    #[error(transparent)]
    Nvrtc(#[from] NvrtcError),
}

impl CompileError {
    /// True when the kernel is at fault (a verdict), false when the harness is.
    pub fn is_kernel_fault(&self) -> bool {
        !matches!(self, CompileError::Nvrtc(_))
    }
}

fn render_violations(v: &[IncludeViolation]) -> String {
    v.iter()
        .map(|x| format!("  {x}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// NVRTC plus the compile cache; cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct Compiler {
    pub nvrtc: Arc<Nvrtc>,
    pub cache: Option<CompileCache>,
}

impl Compiler {
    pub fn new(nvrtc: Nvrtc, cache: Option<CompileCache>) -> Self {
        Compiler {
            nvrtc: Arc::new(nvrtc),
            cache,
        }
    }

    /// The fixed compile policy. Include directories are the only machine-specific options and
    /// are left out of the cache key.
    fn options(&self, req: &CompileRequest) -> (Vec<String>, Vec<String>) {
        let mut policy = vec![
            format!("--gpu-architecture={}", req.arch),
            "-std=c++17".to_string(),
            "-lineinfo".to_string(),
            "-Xptxas=-v".to_string(),
        ];
        if req.fast_math {
            policy.push("--use_fast_math".to_string());
        }
        let includes = self
            .nvrtc
            .include_dirs
            .iter()
            .map(|d| format!("-I{}", d.display()))
            .collect();
        (policy, includes)
    }

    fn key(&self, req: &CompileRequest, policy: &[String]) -> String {
        let mut h = Sha256::new();
        let mut field = |s: &[u8]| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s);
        };
        field(b"ksmith-nvrtc-v1");
        field(format!("{:?}", self.nvrtc.version).as_bytes());
        for o in policy {
            field(o.as_bytes());
        }
        for k in &req.kernels {
            field(k.as_bytes());
        }
        field(req.program_name.as_bytes());
        field(req.source.as_bytes());
        hex::encode(h.finalize())
    }

    /// Static checks, then NVRTC (or the cache). Blocks the calling thread at most `timeout`.
    pub fn compile(&self, req: &CompileRequest) -> Result<Compiled, CompileError> {
        if req.source.len() > MAX_SOURCE_BYTES {
            return Err(CompileError::SourceTooLarge {
                bytes: req.source.len(),
                limit: MAX_SOURCE_BYTES,
            });
        }
        let violations = source::check_includes(&req.source);
        if !violations.is_empty() {
            return Err(CompileError::Includes(violations));
        }
        let (policy, includes) = self.options(req);
        let key = self.key(req, &policy);
        let mut options = policy.clone();
        options.extend(includes);

        if let Some(entry) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(self.finish(req, entry, options, key, true));
        }

        // NVRTC cannot be interrupted, so it runs on its own thread and the caller stops waiting
        // at the deadline. The abandoned thread finishes (or not) on its own; a worker process
        // that must bound CPU use too should compile in a subprocess.
        let (tx, rx) = std::sync::mpsc::channel();
        let nv = Arc::clone(&self.nvrtc);
        let (src, name, opts, kernels) = (
            req.source.clone(),
            req.program_name.clone(),
            options.clone(),
            req.kernels.clone(),
        );
        let started = Instant::now();
        std::thread::Builder::new()
            .name("nvrtc".into())
            .spawn(move || {
                let _ = tx.send(nv.run(&src, &name, &opts, &kernels));
            })
            .map_err(|e| {
                CompileError::Nvrtc(NvrtcError::Call {
                    call: "spawn compile thread",
                    code: -1,
                    message: e.to_string(),
                })
            })?;
        let raw = match rx.recv_timeout(req.timeout) {
            Ok(r) => r?,
            Err(_) => return Err(CompileError::Timeout { limit: req.timeout }),
        };
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        if raw.status != 0 {
            return Err(CompileError::Failed {
                status: raw.status_message,
                log: raw.log,
            });
        }
        let entry = Entry {
            cubin: raw.cubin,
            ptx: raw.ptx,
            log: raw.log,
            meta: Meta {
                lowered: raw.lowered,
                compile_ms,
                nvrtc_version: self.nvrtc.version,
            },
        };
        if let Some(c) = &self.cache {
            if let Err(e) = c.put(&key, &entry) {
                tracing::warn!("compile cache {} not written: {e}", c.dir.display());
            }
        }
        Ok(self.finish(req, entry, options, key, false))
    }

    fn finish(
        &self,
        req: &CompileRequest,
        e: Entry,
        options: Vec<String>,
        key: String,
        cache_hit: bool,
    ) -> Compiled {
        let resources = ptxas::parse(&e.log);
        let kernels = req
            .kernels
            .iter()
            .map(|name| {
                let symbol = e
                    .meta
                    .lowered
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| name.clone());
                let res = resources.iter().find(|r| r.symbol == symbol).cloned();
                let param_bytes = super::ptx_params::entry_params(&e.ptx, &symbol);
                KernelReport {
                    name: name.clone(),
                    symbol,
                    resources: res,
                    param_bytes,
                }
            })
            .collect();
        Compiled {
            cubin: e.cubin,
            ptx: e.ptx,
            log: e.log,
            options,
            kernels,
            compile_ms: e.meta.compile_ms,
            cache_hit,
            arch: req.arch.to_string(),
            nvrtc_version: e.meta.nvrtc_version,
            key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_parsing() {
        assert_eq!("sm_90".parse::<Arch>().unwrap(), Arch::DEFAULT.generic());
        assert_eq!("9.0".parse::<Arch>().unwrap(), Arch::DEFAULT.generic());
        assert_eq!("90".parse::<Arch>().unwrap(), Arch::DEFAULT.generic());
        let a: Arch = "sm_90a".parse().unwrap();
        assert!(a.arch_specific);
        assert_eq!(a, Arch::DEFAULT);
        assert_eq!(a.to_string(), "sm_90a");
        assert_eq!("sm_120".parse::<Arch>().unwrap().to_string(), "sm_120");
        for bad in ["", "sm_", "sm_9", "gfx90a", "sm_x0", "1.x", "sm_990"] {
            assert!(bad.parse::<Arch>().is_err(), "{bad}");
        }
    }

    #[test]
    fn native_targets_are_arch_specific_where_nvrtc_has_one() {
        let native = |a, b| Arch::native(a, b).to_string();
        assert_eq!(native(9, 0), "sm_90a");
        assert_eq!(native(10, 0), "sm_100a");
        assert_eq!(native(12, 0), "sm_120a");
        assert_eq!(native(8, 9), "sm_89");
        assert_eq!(native(8, 0), "sm_80");
        assert_eq!(Arch::native(9, 0).generic().to_string(), "sm_90");
    }
}
