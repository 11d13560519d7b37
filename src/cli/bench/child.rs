//! One task's benchmark request run in a `ksmith gpu serve` subprocess under a wall-clock
//! limit: a kernel that faults, hangs or loses the CUDA context costs that request, not the
//! calling process. Also used by `ksmith run` to time correct candidates.

use crate::cli::Global;
use anyhow::Context;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use verifier::runtime::bench::{BenchReport, BenchRequest};

/// How a `ksmith gpu serve` child ended when it produced no report.
#[derive(Debug)]
pub enum ChildFailure {
    /// The harness could not run (no GPU, no NVRTC, a broken request).
    Harness(String),
    /// The task's kernels failed the run (fault, hang, lost context).
    Task(String),
}

fn serve_command(g: &Global) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("locating the ksmith executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(g.child_args()).args(["gpu", "serve"]);
    Ok(cmd)
}

/// Runs the request in a `ksmith gpu serve` child under `limit`. `visible` becomes the child's
/// `CUDA_VISIBLE_DEVICES` (the value that shows it the GPU meant, see
/// `bench_suite::pool::visible_device`), so that its device 0 is that GPU; `None` leaves the
/// environment as it is.
pub fn run_child_on(
    g: &Global,
    req: &BenchRequest,
    limit: Duration,
    visible: Option<&str>,
) -> anyhow::Result<Result<BenchReport, ChildFailure>> {
    let mut cmd = serve_command(g)?;
    if let Some(v) = visible {
        cmd.env("CUDA_VISIBLE_DEVICES", v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("starting `ksmith gpu serve`")?;
    let body = serde_json::to_vec(req)?;
    if let Some(mut stdin) = child.stdin.take() {
        // The child reads everything before it starts; a failed write shows up as its exit.
        let _ = stdin.write_all(&body);
    }
    let mut stdout = child.stdout.take().context("the child has no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Ok(Err(ChildFailure::Task(format!(
            "did not finish within {} s and was killed",
            limit.as_secs()
        ))));
    };
    Ok(parse_reply(
        &String::from_utf8_lossy(&out),
        &status.to_string(),
    ))
}

/// The child's reply: its last non-empty stdout line, `{"report": ...}` or
/// `{"error": ..., "harness": bool}`. `ended` says how the process ended, for the message
/// when there is no reply.
pub fn parse_reply(stdout: &str, ended: &str) -> Result<BenchReport, ChildFailure> {
    let Some(line) = stdout.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Err(ChildFailure::Task(format!(
            "the GPU process ended ({ended}) without a reply"
        )));
    };
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        ChildFailure::Harness(format!(
            "unreadable reply from the GPU process ({e}): {}",
            line.chars().take(200).collect::<String>()
        ))
    })?;
    if let Some(r) = v.get("report") {
        return serde_json::from_value::<BenchReport>(r.clone())
            .map_err(|e| ChildFailure::Harness(format!("malformed report: {e}")));
    }
    let message = v
        .get("error")
        .and_then(|m| m.as_str())
        .unwrap_or("unknown error")
        .to_string();
    if v.get("harness").and_then(|h| h.as_bool()) == Some(true) {
        Err(ChildFailure::Harness(message))
    } else {
        Err(ChildFailure::Task(message))
    }
}
