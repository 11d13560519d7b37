//! Running the runner: a subprocess in its own process group with a wall-clock limit. torch.compile
//! starts compile workers of its own, so a hang is ended by killing the whole group (only while the
//! runner itself is still unreaped, so the group id cannot belong to anyone else), and output is
//! collected by threads that are never waited on for long after the process is gone (a grandchild
//! that escaped the group could hold the pipes open).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The most stdout kept (a reply is a few kilobytes; more is garbage anyway).
const STDOUT_LIMIT: usize = 16 << 20;
/// How much of the end of stderr is kept for error messages.
const STDERR_TAIL: usize = 64 << 10;

pub struct Finished {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr_tail: String,
}

fn collect(
    mut r: impl Read + Send + 'static,
    keep_tail: bool,
    limit: usize,
) -> (Arc<Mutex<Vec<u8>>>, thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = Arc::clone(&buf);
    let h = thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let Ok(mut v) = b.lock() else { break };
                    v.extend_from_slice(&chunk[..n]);
                    if v.len() > limit {
                        if keep_tail {
                            let cut = v.len() - limit;
                            v.drain(..cut);
                        } else {
                            v.truncate(limit);
                        }
                    }
                }
            }
        }
    });
    (buf, h)
}

pub(crate) fn kill_group(child: &mut Child) {
    // The child leads its own group (process_group(0)), so -pid names every process in it.
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid only sends a signal; no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
}

pub fn run(cmd: Command, limit: Duration) -> std::io::Result<Finished> {
    run_capped(cmd, limit, STDOUT_LIMIT, STDERR_TAIL)
}

/// [`run`] keeping at most `stdout_cap` bytes of stdout (the start) and `stderr_cap` of stderr
/// (the end).
pub fn run_capped(
    mut cmd: Command,
    limit: Duration,
    stdout_cap: usize,
    stderr_cap: usize,
) -> std::io::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let (out, out_h) = match child.stdout.take() {
        Some(s) => collect(s, false, stdout_cap),
        None => (Arc::default(), thread::spawn(|| {})),
    };
    let (err, err_h) = match child.stderr.take() {
        Some(s) => collect(s, true, stderr_cap),
        None => (Arc::default(), thread::spawn(|| {})),
    };
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait()? {
            Some(s) => break Some(s),
            None if Instant::now() >= deadline => {
                timed_out = true;
                kill_group(&mut child);
                break child.wait().ok();
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let grace = Instant::now() + Duration::from_secs(2);
    for h in [out_h, err_h] {
        while !h.is_finished() && Instant::now() < grace {
            thread::sleep(Duration::from_millis(10));
        }
    }
    let take = |b: &Arc<Mutex<Vec<u8>>>| b.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(Finished {
        status,
        timed_out,
        stdout: take(&out),
        stderr_tail: String::from_utf8_lossy(&take(&err)).into_owned(),
    })
}
