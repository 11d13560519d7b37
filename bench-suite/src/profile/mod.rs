//! Profiling and auditing tools wrapped around the worker (DESIGN §4.6, §6): Nsight Compute
//! (`ncu`) for the Judge's metrics and compute-sanitizer for the deep audit. Both are optional
//! capabilities: a missing tool, counters the user may not read, a metric this ncu does not know —
//! each is a typed, explained outcome, and a metric that did not come back is `None` (n/a), never
//! an error.
//!
//! - [`ncu`]: the command line and a parser of `--csv --page raw` output into a curated metric set;
//! - [`judge`]: the one- or two-sentence bottleneck summary the Judge reads;
//! - [`sanitizer`]: the command line and a parser of memcheck / racecheck / initcheck / synccheck
//!   reports into findings.

pub mod judge;
pub mod ncu;
pub mod sanitizer;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Why a tool could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} not found (looked at {}); install it or pass its path", searched.join(", "))]
    NotFound { tool: String, searched: Vec<String> },
    #[error("cannot run {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} did not finish within {limit:?} and was killed")]
    Timeout { path: PathBuf, limit: Duration },
}

/// Everything a tool printed, stdout then stderr, and its exit code.
pub struct ToolOutput {
    pub text: String,
    pub exit_code: Option<i32>,
}

/// Runs `tool args... program...` with a wall-clock limit (the profiled program may hang).
pub fn run_tool(
    tool: &Path,
    args: &[String],
    program: &[OsString],
    limit: Duration,
) -> Result<ToolOutput, ToolError> {
    run_tool_env(tool, args, program, &[], limit)
}

/// [`run_tool`] with extra environment variables (`CUDA_VISIBLE_DEVICES` of the GPU to use).
pub fn run_tool_env(
    tool: &Path,
    args: &[String],
    program: &[OsString],
    env: &[(String, String)],
    limit: Duration,
) -> Result<ToolOutput, ToolError> {
    let mut cmd = Command::new(tool);
    cmd.args(args).args(program);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    // Tools report on both streams; keep plenty of each (racecheck can be verbose).
    let cap = 32 << 20;
    let done = crate::torch::process::run_capped(cmd, limit, cap, cap).map_err(|source| {
        ToolError::Spawn {
            path: tool.to_path_buf(),
            source,
        }
    })?;
    if done.timed_out {
        return Err(ToolError::Timeout {
            path: tool.to_path_buf(),
            limit,
        });
    }
    let mut text = String::from_utf8_lossy(&done.stdout).into_owned();
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text += &done.stderr_tail;
    Ok(ToolOutput {
        text,
        exit_code: done.status.and_then(|s| s.code()),
    })
}

/// Profiling one launch: the tool failed to run, or ncu said why there is no profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Ncu(#[from] ncu::NcuError),
}

/// Runs ncu on `program` for `target` and parses the result.
pub fn profile(
    ncu_path: &Path,
    target: &ncu::NcuTarget,
    program: &[OsString],
    limit: Duration,
) -> Result<ncu::NcuReport, ProfileError> {
    let out = run_tool(ncu_path, &target.args(), program, limit)?;
    Ok(ncu::parse(&out.text)?)
}

/// One ncu run as [`profile_known`] leaves it: everything ncu printed (the profiled program's
/// own lines included, for the caller to read) and what the parser made of it.
pub struct ProfileRun {
    pub text: String,
    pub parsed: Result<ncu::NcuReport, ncu::NcuError>,
    /// Metrics this ncu did not know, dropped for the second attempt.
    pub dropped: Vec<String>,
}

/// [`profile`], retried once without the metrics this ncu says it does not know (versions
/// rename a few): a partial metric set is still a profile, and the rest read n/a.
pub fn profile_known(
    ncu_path: &Path,
    target: &ncu::NcuTarget,
    program: &[OsString],
    env: &[(String, String)],
    limit: Duration,
) -> Result<ProfileRun, ToolError> {
    let out = run_tool_env(ncu_path, &target.args(), program, env, limit)?;
    let parsed = ncu::parse(&out.text);
    if let Err(ncu::NcuError::UnknownMetrics { names, .. }) = &parsed {
        let retry = target.without(names);
        if !names.is_empty()
            && !retry.metrics.is_empty()
            && retry.metrics.len() < target.metrics.len()
        {
            let dropped = names.clone();
            let out = run_tool_env(ncu_path, &retry.args(), program, env, limit)?;
            return Ok(ProfileRun {
                parsed: ncu::parse(&out.text),
                text: out.text,
                dropped,
            });
        }
    }
    Ok(ProfileRun {
        text: out.text,
        parsed,
        dropped: Vec::new(),
    })
}

/// Runs one compute-sanitizer tool on `program` and parses its report.
pub fn sanitize(
    sanitizer_path: &Path,
    tool: sanitizer::Tool,
    kernel: Option<&str>,
    program: &[OsString],
    limit: Duration,
) -> Result<sanitizer::SanitizerReport, ToolError> {
    let out = run_tool(sanitizer_path, &tool.args(kernel), program, limit)?;
    Ok(sanitizer::parse(&out.text))
}

/// [`find_tool`], or a [`ToolError::NotFound`] listing where it looked.
pub fn locate(name: &str, explicit: Option<&Path>) -> Result<PathBuf, ToolError> {
    find_tool(name, explicit).ok_or_else(|| ToolError::NotFound {
        tool: name.to_string(),
        searched: match explicit {
            Some(p) => vec![p.display().to_string()],
            None => vec![
                format!("{name} on PATH"),
                format!("/usr/local/cuda/bin/{name}"),
                format!("/opt/nvidia/nsight-compute/{name}"),
                format!("/usr/bin/{name}"),
            ],
        },
    })
}

/// Where a tool is: an explicit path, else the first `name` on `PATH`, else the CUDA install
/// locations. `None` when it is nowhere (the caller says "profiling unavailable: ...").
pub fn find_tool(name: &str, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cuda = [
        "/usr/local/cuda/bin",
        "/opt/nvidia/nsight-compute",
        "/usr/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name));
    on_path.into_iter().chain(cuda).find(|p| p.is_file())
}
