//! PyTorch baselines and the PyTorch oracle (DESIGN §5): `python/torch_runner.py` run as a
//! subprocess of the machine's python3, inputs and outputs exchanged as safetensors, one JSON
//! reply on its stdout.
//!
//! The runner is outside the program: whatever it does — no torch, no GPU, a crash, a hang,
//! garbage on stdout — comes back as a [`TorchError`], never a panic. "No torch" and "no python"
//! are [`TorchError::skip_reason`]s: callers print "PyTorch baselines skipped: <reason>" and go on.

mod oracle;
/// Subprocesses with a wall-clock limit, killed as a process group (also used by `profile`).
pub(crate) mod process;
mod reply;
mod session;
pub mod tensors;

pub use oracle::{skip_message, TorchOracle, DEFAULT_CASE_TIMEOUT};
pub use reply::{Baseline, ModeResult, OracleOutputs, TorchReport};
pub use session::Session;

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tensors::TensorFileError;
use verifier::dtype::DType;
use verifier::inputs::HostTensor;
use verifier::task::{Role, Shape, Task};
use verifier::timing::Protocol;

/// The runner and its helper modules, embedded so the binary always runs the runner it was
/// built with (the GPU machine has the binary, not necessarily this source tree).
const EMBEDDED: [(&str, &str); 3] = [
    (
        "torch_runner.py",
        include_str!("../../python/torch_runner.py"),
    ),
    (
        "ksmith_tensors.py",
        include_str!("../../python/ksmith_tensors.py"),
    ),
    (
        "ksmith_protocol.py",
        include_str!("../../python/ksmith_protocol.py"),
    ),
];

/// Exit codes of the runner (see its docstring).
pub const EXIT_OK: i32 = 0;
pub const EXIT_BAD_REQUEST: i32 = 2;
pub const EXIT_UNAVAILABLE: i32 = 3;
pub const EXIT_SPEC: i32 = 4;

#[derive(Debug, Clone)]
pub enum RunnerScript {
    /// The runner embedded in this binary, written to the job's directory.
    Embedded,
    /// Another script speaking the same protocol (tests use fakes).
    Path(PathBuf),
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The interpreter [default: python3, or `KSMITH_PYTHON`].
    pub python: PathBuf,
    pub script: RunnerScript,
    /// Wall-clock limit of one runner invocation, torch.compile's compilation included.
    pub timeout: Duration,
    /// Extra environment variables (e.g. `CUDA_VISIBLE_DEVICES`, `PYTHONPATH`).
    pub env: Vec<(String, String)>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            python: std::env::var_os("KSMITH_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("python3")),
            script: RunnerScript::Embedded,
            timeout: Duration::from_secs(900),
            env: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Oracle,
    Eager,
    Compile,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputDecl {
    pub name: String,
    pub dtype: DType,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputDecl {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<u64>,
}

/// One runner invocation: a shape of a task, a pool of input sets, the modes to run.
#[derive(Debug, Clone)]
pub struct TorchJob<'a> {
    pub spec: PathBuf,
    pub params: Vec<(String, i64)>,
    pub inputs: Vec<InputDecl>,
    /// Input sets, each holding one tensor per input in declared order. Timing cycles through
    /// them (activations only; weights stay those of set 0); the oracle runs `oracle_sets`.
    pub sets: &'a [Vec<HostTensor>],
    pub outputs: Vec<OutputDecl>,
    pub modes: Vec<Mode>,
    /// Which sets the oracle computes outputs for [default: all].
    pub oracle_sets: Option<Vec<usize>>,
    pub protocol: Protocol,
    /// The device's L2 size (the flush buffer is twice this) [default: what torch reports].
    pub l2_bytes: Option<u64>,
    /// torch.compile's `mode` [default: "default"].
    pub compile_mode: Option<String>,
    pub device: TorchDevice,
}

/// Where the runner puts the tensors and runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchDevice {
    /// CUDA device ordinal (as the runner's process sees devices).
    Cuda(u32),
    /// The CPU: the oracle only (timing needs CUDA events). What `ksmith tasks spec` uses to
    /// check a spec.py on a machine without a GPU.
    Cpu,
}

impl Serialize for TorchDevice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TorchDevice::Cuda(d) => s.serialize_u32(*d),
            TorchDevice::Cpu => s.serialize_str("cpu"),
        }
    }
}

impl<'a> TorchJob<'a> {
    /// A job for `shape` of `task`, whose spec.py sits beside its task.toml.
    pub fn for_task(
        task: &Task,
        shape: &Shape,
        sets: &'a [Vec<HostTensor>],
        modes: Vec<Mode>,
        protocol: Protocol,
    ) -> Result<TorchJob<'a>, TorchError> {
        let dir = task.path.parent().unwrap_or(Path::new("."));
        let outputs = task
            .outputs
            .iter()
            .map(|o| {
                verifier::inputs::dims_of(o, shape)
                    .map(|dims| OutputDecl {
                        name: o.name.clone(),
                        dtype: o.dtype,
                        dims,
                    })
                    .map_err(|e| TorchError::Job(format!("output `{}`: {e}", o.name)))
            })
            .collect::<Result<_, _>>()?;
        Ok(TorchJob {
            spec: dir.join("spec.py"),
            params: shape.values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            inputs: task
                .inputs
                .iter()
                .map(|i| InputDecl {
                    name: i.name.clone(),
                    dtype: i.dtype,
                    role: i.role,
                })
                .collect(),
            sets,
            outputs,
            modes,
            oracle_sets: None,
            protocol,
            l2_bytes: None,
            compile_mode: None,
            device: TorchDevice::Cuda(0),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    /// torch does not import or sees no GPU: baselines are skipped, visibly.
    #[error("PyTorch baselines skipped: {reason}")]
    Unavailable { reason: String },
    /// The interpreter could not be started at all.
    #[error("PyTorch baselines skipped: cannot run `{python}`: {source}")]
    NoPython {
        python: PathBuf,
        source: std::io::Error,
    },
    /// spec.py does not load, or its Model cannot be built for this shape: a task problem.
    #[error("spec.py failed in the PyTorch runner: {message}\n{traceback}")]
    Spec { message: String, traceback: String },
    /// The runner refused the request: a harness bug.
    #[error("the PyTorch runner refused the request: {message}")]
    BadRequest { message: String },
    /// The job itself is inconsistent (caught before anything runs).
    #[error("PyTorch job: {0}")]
    Job(String),
    #[error("the PyTorch runner did not finish within {limit:?} and was killed; stderr ends:\n{stderr_tail}")]
    Timeout {
        limit: Duration,
        stderr_tail: String,
    },
    #[error("the PyTorch runner {how} without a reply; stderr ends:\n{stderr_tail}")]
    Crashed { how: String, stderr_tail: String },
    /// A reply that is not the documented JSON.
    #[error("the PyTorch runner's reply is malformed: {detail} (stdout: {stdout_excerpt:?}); stderr ends:\n{stderr_tail}")]
    Malformed {
        detail: String,
        stdout_excerpt: String,
        stderr_tail: String,
    },
    #[error("PyTorch runner work directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tensors(#[from] TensorFileError),
}

impl TorchError {
    /// Why baselines are skipped, when the error means "no PyTorch here" rather than a fault.
    pub fn skip_reason(&self) -> Option<String> {
        match self {
            TorchError::Unavailable { reason } => Some(reason.clone()),
            TorchError::NoPython { python, source } => {
                Some(format!("cannot run `{}`: {source}", python.display()))
            }
            _ => None,
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut cut = s.len() - n;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("...{}", &s[cut..])
}

fn protocol_json(p: &Protocol) -> serde_json::Value {
    serde_json::json!({
        "warmup_calls": p.warmup_calls,
        "warmup_ms": p.warmup_time.as_secs_f64() * 1e3,
        "min_samples": p.min_samples,
        "max_samples": p.max_samples,
        "target_rse": p.target_rse,
        "time_cap_ms": p.time_cap.as_secs_f64() * 1e3,
        "graph_below_ms": p.graph_below.as_secs_f64() * 1e3,
    })
}

fn check_job(job: &TorchJob) -> Result<(), TorchError> {
    if job.sets.is_empty() {
        return Err(TorchError::Job("no input sets".into()));
    }
    if job.modes.is_empty() {
        return Err(TorchError::Job("no modes".into()));
    }
    if job.device == TorchDevice::Cpu && job.modes.iter().any(|m| *m != Mode::Oracle) {
        return Err(TorchError::Job(
            "timing (eager, compile) needs a CUDA device; on the CPU only the oracle runs".into(),
        ));
    }
    for (k, set) in job.sets.iter().enumerate() {
        if set.len() != job.inputs.len() {
            return Err(TorchError::Job(format!(
                "input set {k} holds {} tensors for {} inputs",
                set.len(),
                job.inputs.len()
            )));
        }
        for (t, d) in set.iter().zip(&job.inputs) {
            if t.dtype != d.dtype {
                return Err(TorchError::Job(format!(
                    "input set {k}: `{}` is {}, declared {}",
                    d.name, t.dtype, d.dtype
                )));
            }
        }
    }
    if let Some(bad) = job
        .oracle_sets
        .iter()
        .flatten()
        .find(|&&k| k >= job.sets.len())
    {
        return Err(TorchError::Job(format!(
            "oracle set {bad} does not exist ({} sets)",
            job.sets.len()
        )));
    }
    Ok(())
}

/// Writes the embedded runner and its modules into `dir`; returns the runner's path.
fn write_scripts(config: &RunnerConfig, dir: &Path) -> Result<PathBuf, TorchError> {
    match &config.script {
        RunnerScript::Path(p) => Ok(p.clone()),
        RunnerScript::Embedded => {
            for (name, text) in EMBEDDED {
                let p = dir.join(name);
                std::fs::write(&p, text).map_err(|source| TorchError::Io { path: p, source })?;
            }
            Ok(dir.join(EMBEDDED[0].0))
        }
    }
}

/// A request written to disk, ready for the runner.
struct Prepared {
    request_file: PathBuf,
    outputs_file: PathBuf,
    oracle_sets: Vec<usize>,
}

/// Writes the job's inputs (`inputs.safetensors`) and request (`request.json`) into `dir`,
/// replacing what an earlier request left there.
fn prepare(dir: &Path, job: &TorchJob) -> Result<Prepared, TorchError> {
    check_job(job)?;
    let inputs_file = dir.join("inputs.safetensors");
    let outputs_file = dir.join("outputs.safetensors");
    // A stale outputs file must never pass for this request's.
    match std::fs::remove_file(&outputs_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(TorchError::Io {
                path: outputs_file,
                source,
            })
        }
    }
    let names: Vec<String> = job.inputs.iter().map(|d| d.name.clone()).collect();
    let keys = tensors::write_input_sets(&inputs_file, &names, job.sets)?;
    let sets: Vec<serde_json::Map<String, serde_json::Value>> = keys
        .iter()
        .map(|ks| {
            names
                .iter()
                .zip(ks)
                .map(|(n, k)| (n.clone(), serde_json::Value::from(k.clone())))
                .collect()
        })
        .collect();
    let oracle_sets: Vec<usize> = job
        .oracle_sets
        .clone()
        .unwrap_or_else(|| (0..job.sets.len()).collect());
    let request = serde_json::json!({
        "version": 1,
        "spec": job.spec,
        "params": job
            .params
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>(),
        "inputs_file": inputs_file,
        "outputs_file": outputs_file,
        "inputs": job.inputs,
        "sets": sets,
        "outputs": job.outputs,
        "modes": job.modes,
        "oracle_sets": oracle_sets,
        "protocol": protocol_json(&job.protocol),
        "l2_bytes": job.l2_bytes,
        "compile_mode": job.compile_mode,
        "device": job.device,
    });
    let request_file = dir.join("request.json");
    std::fs::write(&request_file, request.to_string()).map_err(|source| TorchError::Io {
        path: request_file.clone(),
        source,
    })?;
    Ok(Prepared {
        request_file,
        outputs_file,
        oracle_sets,
    })
}

fn work_dir() -> Result<tempfile::TempDir, TorchError> {
    tempfile::Builder::new()
        .prefix("ksmith-torch-")
        .tempdir()
        .map_err(|source| TorchError::Io {
            path: std::env::temp_dir(),
            source,
        })
}

/// Runs the job: writes the inputs and the request into a fresh directory, runs the runner, and
/// parses its reply (and the oracle's outputs). One process per job: torch is imported each
/// time; a [`Session`] keeps one process for many jobs.
pub fn run(config: &RunnerConfig, job: &TorchJob) -> Result<TorchReport, TorchError> {
    check_job(job)?;
    let work = work_dir()?;
    let script = write_scripts(config, work.path())?;
    let prepared = prepare(work.path(), job)?;
    let mut cmd = Command::new(&config.python);
    cmd.arg(&script)
        .arg(&prepared.request_file)
        .current_dir(work.path())
        .envs(config.env.iter().map(|(k, v)| (k, v)));
    let done = process::run(cmd, config.timeout).map_err(|source| TorchError::NoPython {
        python: config.python.clone(),
        source,
    })?;
    let stderr_tail = tail(&done.stderr_tail, 4000);
    if done.timed_out {
        return Err(TorchError::Timeout {
            limit: config.timeout,
            stderr_tail,
        });
    }
    let reply = reply::parse(&done.stdout, done.status, &stderr_tail)?;
    reply::finish(reply, job, &prepared.oracle_sets, &prepared.outputs_file)
}
