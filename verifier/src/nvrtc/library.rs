//! Finding and loading NVRTC, and its thin FFI.
//!
//! cudarc's NVRTC bindings panic when the library is missing, cannot be pointed at an explicit
//! path, and its safe API drops the compile log on success; NVRTC's C API is small and stable,
//! so it is loaded here directly with libloading, cudarc-style: a thin safe wrapper, no panics.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};

/// Shared-object names tried in each directory, newest first.
pub const LIBRARY_NAMES: &[&str] = &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];

pub const ENV_LIBRARY: &str = "KSMITH_NVRTC";
pub const ENV_INCLUDE: &str = "KSMITH_CUDA_INCLUDE";
pub const ENV_HOME: &str = "KSMITH_HOME";

/// Where the project's set-up script installs the wheels, relative to the project root.
pub const TOOLS_SUBDIR: &str = "tools/cuda";

#[derive(Debug, thiserror::Error)]
pub enum NvrtcError {
    #[error(
        "NVRTC was not found.\n  looked for: {}\n  in: {}\n  fix: run `scripts/setup.sh` (installs the NVRTC and CUDA-header wheels into tools/cuda), \
         or point at an existing library with --nvrtc PATH or {ENV_LIBRARY}=PATH",
        LIBRARY_NAMES.join(", "),
        looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound { looked: Vec<PathBuf> },
    #[error(
        "{} was given as NVRTC ({origin}) but {reason}\n  fix: run `scripts/setup.sh` (installs NVRTC into tools/cuda) and drop the override, \
         or point --nvrtc / {ENV_LIBRARY} at an existing libnvrtc.so or the directory holding it",
        path.display()
    )]
    BadExplicit {
        path: PathBuf,
        origin: &'static str,
        reason: String,
    },
    #[error("cannot load {}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("{} has no symbol `{symbol}` (is it really libnvrtc?): {reason}", path.display())]
    Symbol {
        path: PathBuf,
        symbol: &'static str,
        reason: String,
    },
    #[error(
        "CUDA headers (cuda_fp16.h) were not found.\n  looked in: {}\n  fix: run `scripts/setup.sh`, or pass --cuda-include DIR or set {ENV_INCLUDE}=DIR",
        looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    HeadersNotFound { looked: Vec<PathBuf> },
    #[error("NVRTC call {call} failed: {message} (code {code})")]
    Call {
        call: &'static str,
        code: i32,
        message: String,
    },
}

type Prog = *mut c_void;

/// NVRTC's entry points. Signatures follow `nvrtc.h`; `nvrtcResult` is a C enum (int).
struct Api {
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int,
    get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    create_program: unsafe extern "C" fn(
        *mut Prog,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    destroy_program: unsafe extern "C" fn(*mut Prog) -> c_int,
    compile_program: unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int,
    get_program_log_size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
    get_program_log: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
    get_ptx_size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
    get_ptx: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
    get_cubin_size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
    get_cubin: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
    add_name_expression: unsafe extern "C" fn(Prog, *const c_char) -> c_int,
    get_lowered_name: unsafe extern "C" fn(Prog, *const c_char, *mut *const c_char) -> c_int,
}

/// A loaded NVRTC plus the include directories that go with it.
pub struct Nvrtc {
    api: Api,
    // Never unloaded: `dlclose` of libnvrtc while threads that used it are still exiting
    // crashes in its finalisers (SIGSEGV in __cxa_finalize; tests/nvrtc_reload.rs), so the
    // handles are leaked, as libcuda's are in `Arch::detect`. Loading it again only bumps the
    // loader's reference count.
    _libs: std::mem::ManuallyDrop<Vec<libloading::Library>>,
    pub library_path: PathBuf,
    pub include_dirs: Vec<PathBuf>,
    pub version: (i32, i32),
}

impl std::fmt::Debug for Nvrtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvrtc")
            .field("library_path", &self.library_path)
            .field("include_dirs", &self.include_dirs)
            .field("version", &self.version)
            .finish()
    }
}

/// Where to look, in order: an explicit path (flag), the environment, the project's tools
/// folder, then the usual system locations.
#[derive(Debug, Clone, Default)]
pub struct Locator {
    pub library: Option<PathBuf>,
    pub include: Option<PathBuf>,
}

impl Locator {
    pub fn load(&self) -> Result<Nvrtc, NvrtcError> {
        let (lib_path, origin) = self.find_library()?;
        let include_dirs = self.find_includes(&lib_path)?;
        Nvrtc::open(&lib_path, include_dirs).map_err(|e| match e {
            NvrtcError::Load { path, reason } if origin != "search" => NvrtcError::BadExplicit {
                path,
                origin,
                reason: format!("it cannot be loaded: {reason}"),
            },
            e => e,
        })
    }

    fn find_library(&self) -> Result<(PathBuf, &'static str), NvrtcError> {
        let explicit = self
            .library
            .clone()
            .map(|p| (p, "--nvrtc"))
            .or_else(|| std::env::var_os(ENV_LIBRARY).map(|p| (PathBuf::from(p), ENV_LIBRARY)));
        if let Some((p, origin)) = explicit {
            if p.is_dir() {
                return find_in_dir(&p).map(|f| (f, origin)).ok_or_else(|| {
                    NvrtcError::BadExplicit {
                        reason: format!(
                            "that directory holds none of {}",
                            LIBRARY_NAMES.join(", ")
                        ),
                        path: p,
                        origin,
                    }
                });
            }
            if p.is_file() {
                return Ok((p, origin));
            }
            return Err(NvrtcError::BadExplicit {
                path: p,
                origin,
                reason: "no such file or directory".into(),
            });
        }
        let dirs = search_dirs();
        for d in &dirs {
            if let Some(f) = find_in_dir(d) {
                return Ok((f, "search"));
            }
        }
        Err(NvrtcError::NotFound { looked: dirs })
    }

    fn find_includes(&self, lib: &Path) -> Result<Vec<PathBuf>, NvrtcError> {
        let explicit = self
            .include
            .clone()
            .or_else(|| std::env::var_os(ENV_INCLUDE).map(PathBuf::from));
        let mut looked = Vec::new();
        let candidates: Vec<PathBuf> = match explicit {
            Some(p) => vec![p],
            None => {
                let dir = lib.parent().unwrap_or(Path::new("."));
                vec![
                    dir.join("../include"),
                    dir.join("../../include"),
                    PathBuf::from("/usr/local/cuda/include"),
                ]
            }
        };
        for c in candidates {
            if c.join("cuda_fp16.h").is_file() {
                let c = c.canonicalize().unwrap_or(c);
                let mut dirs = vec![c.clone()];
                // CCCL (libcu++, nv/target) ships in a subfolder in the wheels and CUDA 13.
                if c.join("cccl").is_dir() {
                    dirs.push(c.join("cccl"));
                }
                return Ok(dirs);
            }
            looked.push(c);
        }
        Err(NvrtcError::HeadersNotFound { looked })
    }
}

fn find_in_dir(d: &Path) -> Option<PathBuf> {
    LIBRARY_NAMES
        .iter()
        .map(|n| d.join(n))
        .find(|p| p.is_file())
}

/// Project roots: `KSMITH_HOME`, then the current directory and the executable's directory with
/// their ancestors (so a binary under `target/release/` finds `tools/` at the repo root).
pub fn project_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(h) = std::env::var_os(ENV_HOME) {
        roots.push(PathBuf::from(h));
    }
    let mut add_ancestors = |start: Option<PathBuf>| {
        if let Some(s) = start {
            for a in s.ancestors() {
                if !roots.iter().any(|r| r == a) {
                    roots.push(a.to_path_buf());
                }
            }
        }
    };
    add_ancestors(std::env::current_dir().ok());
    add_ancestors(
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf)),
    );
    roots
}

fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in project_roots() {
        let tools = root.join(TOOLS_SUBDIR);
        if tools.is_dir() {
            dirs.push(tools.join("nvidia/cu13/lib"));
            dirs.push(tools.join("nvidia/cuda_nvrtc/lib"));
            break;
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = std::env::var_os(var) {
            dirs.push(PathBuf::from(&v).join("lib64"));
            dirs.push(PathBuf::from(&v).join("lib"));
        }
    }
    for d in [
        "/usr/local/cuda/lib64",
        "/usr/local/cuda/targets/x86_64-linux/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/opt/cuda/lib64",
    ] {
        dirs.push(PathBuf::from(d));
    }
    if let Some(ld) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&ld));
    }
    dirs
}

fn open_lib(path: &Path) -> Result<libloading::Library, NvrtcError> {
    // SAFETY: loading a shared library runs its initialisers; NVRTC's are benign.
    unsafe { libloading::Library::new(path) }.map_err(|e| NvrtcError::Load {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl Nvrtc {
    /// Loads NVRTC from `path`. Its builtins library, which NVRTC itself opens by soname, is
    /// preloaded from the same directory so no `LD_LIBRARY_PATH` is needed.
    pub fn open(path: &Path, include_dirs: Vec<PathBuf>) -> Result<Nvrtc, NvrtcError> {
        let mut libs = Vec::new();
        if let Some(dir) = path.parent() {
            if let Ok(entries) = std::fs::read_dir(dir) {
                let mut builtins: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                            n.starts_with("libnvrtc-builtins.so.") && !n.contains(".alt.")
                        })
                    })
                    .collect();
                builtins.sort();
                if let Some(b) = builtins.last() {
                    libs.push(open_lib(b)?);
                }
            }
        }
        let lib = open_lib(path)?;
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: the symbol's type is the one nvrtc.h declares for it.
                let s = unsafe { lib.get::<_>(concat!($name, "\0").as_bytes()) }.map_err(|e| {
                    NvrtcError::Symbol {
                        path: path.to_path_buf(),
                        symbol: $name,
                        reason: e.to_string(),
                    }
                })?;
                *s
            }};
        }
        let api = Api {
            version: sym!("nvrtcVersion"),
            get_error_string: sym!("nvrtcGetErrorString"),
            create_program: sym!("nvrtcCreateProgram"),
            destroy_program: sym!("nvrtcDestroyProgram"),
            compile_program: sym!("nvrtcCompileProgram"),
            get_program_log_size: sym!("nvrtcGetProgramLogSize"),
            get_program_log: sym!("nvrtcGetProgramLog"),
            get_ptx_size: sym!("nvrtcGetPTXSize"),
            get_ptx: sym!("nvrtcGetPTX"),
            get_cubin_size: sym!("nvrtcGetCUBINSize"),
            get_cubin: sym!("nvrtcGetCUBIN"),
            add_name_expression: sym!("nvrtcAddNameExpression"),
            get_lowered_name: sym!("nvrtcGetLoweredName"),
        };
        libs.push(lib);
        let mut nv = Nvrtc {
            api,
            _libs: std::mem::ManuallyDrop::new(libs),
            library_path: path.to_path_buf(),
            include_dirs,
            version: (0, 0),
        };
        let (mut major, mut minor) = (0, 0);
        // SAFETY: both out-pointers are valid for writes.
        let r = unsafe { (nv.api.version)(&mut major, &mut minor) };
        nv.check("nvrtcVersion", r)?;
        nv.version = (major, minor);
        Ok(nv)
    }

    fn error_string(&self, code: c_int) -> String {
        // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string (or NULL).
        let p = unsafe { (self.api.get_error_string)(code) };
        if p.is_null() {
            return "unknown NVRTC error".into();
        }
        // SAFETY: non-null, NUL-terminated, static.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    fn check(&self, call: &'static str, code: c_int) -> Result<(), NvrtcError> {
        if code == 0 {
            Ok(())
        } else {
            Err(NvrtcError::Call {
                call,
                code,
                message: self.error_string(code),
            })
        }
    }

    /// One compilation. Returns the NVRTC result code of `nvrtcCompileProgram` together with the
    /// log and, on success, the outputs; errors are reserved for failures of the API itself.
    pub(crate) fn run(
        &self,
        source: &str,
        program_name: &str,
        options: &[String],
        name_expressions: &[String],
    ) -> Result<RawOutput, NvrtcError> {
        let cstr = |s: &str, what: &'static str| {
            std::ffi::CString::new(s).map_err(|_| NvrtcError::Call {
                call: what,
                code: -1,
                message: "string contains a NUL byte".into(),
            })
        };
        let src = cstr(source, "nvrtcCreateProgram (source)")?;
        let name = cstr(program_name, "nvrtcCreateProgram (name)")?;
        let opts: Vec<std::ffi::CString> = options
            .iter()
            .map(|o| cstr(o, "nvrtcCompileProgram (option)"))
            .collect::<Result<_, _>>()?;
        let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        let exprs: Vec<std::ffi::CString> = name_expressions
            .iter()
            .map(|e| cstr(e, "nvrtcAddNameExpression"))
            .collect::<Result<_, _>>()?;

        let mut prog: Prog = std::ptr::null_mut();
        // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; zero
        // headers are passed.
        let r = unsafe {
            (self.api.create_program)(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        self.check("nvrtcCreateProgram", r)?;
        let guard = ProgramGuard { nv: self, prog };
        for e in &exprs {
            // SAFETY: prog is live; e is NUL-terminated.
            let r = unsafe { (self.api.add_name_expression)(guard.prog, e.as_ptr()) };
            self.check("nvrtcAddNameExpression", r)?;
        }
        // SAFETY: prog is live; opt_ptrs holds opts.len() valid strings.
        let status = unsafe {
            (self.api.compile_program)(guard.prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr())
        };
        let log = self.read_bytes(
            guard.prog,
            self.api.get_program_log_size,
            self.api.get_program_log,
            "log",
        )?;
        let log = String::from_utf8_lossy(trim_nul(&log)).into_owned();
        if status != 0 {
            return Ok(RawOutput {
                status,
                status_message: self.error_string(status),
                log,
                cubin: Vec::new(),
                ptx: String::new(),
                lowered: Vec::new(),
            });
        }
        let cubin = self.read_bytes(
            guard.prog,
            self.api.get_cubin_size,
            self.api.get_cubin,
            "CUBIN",
        )?;
        let ptx = self.read_bytes(guard.prog, self.api.get_ptx_size, self.api.get_ptx, "PTX")?;
        let mut lowered = Vec::new();
        for (e, original) in exprs.iter().zip(name_expressions) {
            let mut out: *const c_char = std::ptr::null();
            // SAFETY: prog is live and compiled; out receives a pointer owned by prog.
            let r = unsafe { (self.api.get_lowered_name)(guard.prog, e.as_ptr(), &mut out) };
            self.check("nvrtcGetLoweredName", r)?;
            if !out.is_null() {
                // SAFETY: NUL-terminated string owned by the still-live program.
                let s = unsafe { CStr::from_ptr(out) }
                    .to_string_lossy()
                    .into_owned();
                lowered.push((original.clone(), s));
            }
        }
        drop(guard);
        Ok(RawOutput {
            status: 0,
            status_message: String::new(),
            log,
            cubin,
            ptx: String::from_utf8_lossy(trim_nul(&ptx)).into_owned(),
            lowered,
        })
    }

    fn read_bytes(
        &self,
        prog: Prog,
        size_fn: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
        get_fn: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
        what: &'static str,
    ) -> Result<Vec<u8>, NvrtcError> {
        let mut n: usize = 0;
        // SAFETY: prog is live; n is a valid out-pointer.
        let r = unsafe { size_fn(prog, &mut n) };
        self.check(
            if what == "log" {
                "nvrtcGetProgramLogSize"
            } else {
                "nvrtcGet*Size"
            },
            r,
        )?;
        let mut buf = vec![0u8; n.max(1)];
        // SAFETY: buf holds at least n bytes, as NVRTC asked.
        let r = unsafe { get_fn(prog, buf.as_mut_ptr() as *mut c_char) };
        self.check(
            if what == "log" {
                "nvrtcGetProgramLog"
            } else {
                "nvrtcGet(CUBIN|PTX)"
            },
            r,
        )?;
        buf.truncate(n);
        Ok(buf)
    }
}

fn trim_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

struct ProgramGuard<'a> {
    nv: &'a Nvrtc,
    prog: Prog,
}

impl Drop for ProgramGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: prog came from nvrtcCreateProgram and is destroyed exactly once.
        unsafe { (self.nv.api.destroy_program)(&mut self.prog) };
    }
}

pub(crate) struct RawOutput {
    pub status: i32,
    pub status_message: String,
    pub log: String,
    pub cubin: Vec<u8>,
    pub ptx: String,
    pub lowered: Vec<(String, String)>,
}
