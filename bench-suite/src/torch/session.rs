//! One runner process for many jobs (`torch_runner.py --serve`): torch is imported once, then
//! each job is a request path on the runner's stdin and one reply line on its stdout. The
//! oracle asks for a task's outputs case after case; a fresh process per case would pay
//! torch's import (seconds) every time.
//!
//! The process leads its own process group (a hang is ended by killing the group) and, on
//! Linux, dies with the thread that started it (PR_SET_PDEATHSIG), so a worker killed by its
//! parent does not leave a torch process holding GPU memory. A worker that restarts in place
//! (exec) closes the session's pipes (they are close-on-exec): the runner sees the end of its
//! input and exits. After a crash, a timeout or a garbled reply the process is discarded and
//! the next job starts a new one.

use super::{prepare, process, reply, tail, write_scripts, RunnerConfig, TorchError, TorchJob};
use super::{TorchReport, EXIT_OK};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest reply line accepted (a reply is a few kilobytes).
const REPLY_LIMIT: usize = 16 << 20;
/// How much of the end of the runner's stderr is kept for error messages.
const STDERR_KEEP: usize = 64 << 10;

enum Line {
    Text(Vec<u8>),
    TooLong,
    End,
}

struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl Live {
    fn stderr_tail(&self) -> String {
        let bytes = self.stderr.lock().map(|v| v.clone()).unwrap_or_default();
        tail(&String::from_utf8_lossy(&bytes), 4000)
    }

    /// Closes stdin, waits up to `grace` for the runner to exit, then kills its group; then
    /// lets the stderr reader take in what was left (briefly: an escaped grandchild could hold
    /// the pipe open).
    fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    process::kill_group(&mut self.child);
                    break self.child.wait().ok();
                }
            }
        };
        if let Some(h) = &self.stderr_reader {
            let until = Instant::now() + Duration::from_secs(1);
            while !h.is_finished() && Instant::now() < until {
                thread::sleep(Duration::from_millis(10));
            }
        }
        status
    }
}

pub struct Session {
    config: RunnerConfig,
    work: tempfile::TempDir,
    script: PathBuf,
    live: Option<Live>,
    /// Runner processes started so far (restarts after a crash or a timeout included).
    pub started: u32,
}

impl Session {
    /// Prepares a work directory; the runner starts with the first job.
    pub fn new(config: RunnerConfig) -> Result<Session, TorchError> {
        let work = super::work_dir()?;
        let script = write_scripts(&config, work.path())?;
        Ok(Session {
            config,
            work,
            script,
            live: None,
            started: 0,
        })
    }

    fn start(&mut self) -> Result<Live, TorchError> {
        let mut cmd = Command::new(&self.config.python);
        cmd.arg(&self.script)
            .arg("--serve")
            .current_dir(self.work.path())
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| TorchError::NoPython {
            python: self.config.python.clone(),
            source,
        })?;
        self.started += 1;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            thread::spawn(move || {
                let mut r = BufReader::new(out);
                loop {
                    let mut buf = Vec::new();
                    let line = match (&mut r)
                        .take(REPLY_LIMIT as u64 + 1)
                        .read_until(b'\n', &mut buf)
                    {
                        Ok(0) | Err(_) => Line::End,
                        Ok(_) if buf.len() > REPLY_LIMIT => Line::TooLong,
                        Ok(_) => Line::Text(buf),
                    };
                    let last = !matches!(line, Line::Text(_));
                    if tx.send(line).is_err() || last {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut stderr_reader = None;
        if let Some(mut err) = child.stderr.take() {
            let keep = Arc::clone(&stderr);
            stderr_reader = Some(thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = err.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let Ok(mut v) = keep.lock() else { break };
                    v.extend_from_slice(&chunk[..n]);
                    if v.len() > STDERR_KEEP {
                        let cut = v.len() - STDERR_KEEP;
                        v.drain(..cut);
                    }
                }
            }));
        }
        Ok(Live {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            stderr_reader,
        })
    }

    /// The runner ended: its exit status and stderr, as an error; the next job starts anew.
    fn died(&mut self, mut live: Live) -> TorchError {
        let status = live.stop(Duration::from_secs(2));
        TorchError::Crashed {
            how: reply::describe(status),
            stderr_tail: live_tail_or(live.stderr_tail()),
        }
    }

    /// Runs one job in the session's runner, starting it when none is running.
    pub fn run(&mut self, job: &TorchJob) -> Result<TorchReport, TorchError> {
        let prepared = prepare(self.work.path(), job)?;
        let mut line = prepared.request_file.as_os_str().as_bytes().to_vec();
        if line.contains(&b'\n') {
            return Err(TorchError::Job(format!(
                "the work directory {} has a newline in its path",
                self.work.path().display()
            )));
        }
        line.push(b'\n');
        let mut live = match self.live.take() {
            Some(l) => l,
            None => self.start()?,
        };
        let sent = match live.stdin.as_mut() {
            Some(s) => s.write_all(&line).and_then(|()| s.flush()),
            None => Err(std::io::Error::other("stdin closed")),
        };
        if sent.is_err() {
            return Err(self.died(live));
        }
        let answer = live.lines.recv_timeout(self.config.timeout);
        // The runner has read its inputs (or is gone): large inputs must not sit on disk until
        // the session ends, which a worker that restarts in place never reaches.
        let _ = std::fs::remove_file(self.work.path().join("inputs.safetensors"));
        match answer {
            Ok(Line::Text(text)) => {
                let stderr_tail = live.stderr_tail();
                // The session answers for its requests in the reply; the process itself is
                // still running, so "exit status" is success here.
                let ok = Some(ExitStatus::from_raw(EXIT_OK));
                let v = reply::parse(&text, ok, &stderr_tail);
                // A reply with `session_ends`: the request left the runner's CUDA context
                // unusable (a sticky error) and the runner exits after it. Its answer stands;
                // the next request starts a fresh runner instead of finding this one gone.
                if v.as_ref().is_ok_and(|v| v.get("session_ends").is_some()) {
                    live.stop(Duration::from_secs(5));
                } else {
                    self.live = Some(live);
                }
                let v = v?;
                let report = reply::finish(v, job, &prepared.oracle_sets, &prepared.outputs_file);
                let _ = std::fs::remove_file(&prepared.outputs_file);
                report
            }
            Ok(Line::TooLong) => {
                live.stop(Duration::ZERO);
                let stderr_tail = live.stderr_tail();
                Err(TorchError::Malformed {
                    detail: format!("a reply line longer than {REPLY_LIMIT} bytes"),
                    stdout_excerpt: String::new(),
                    stderr_tail,
                })
            }
            Ok(Line::End) | Err(RecvTimeoutError::Disconnected) => Err(self.died(live)),
            Err(RecvTimeoutError::Timeout) => {
                live.stop(Duration::ZERO);
                let stderr_tail = live.stderr_tail();
                Err(TorchError::Timeout {
                    limit: self.config.timeout,
                    stderr_tail,
                })
            }
        }
    }
}

fn live_tail_or(s: String) -> String {
    if s.is_empty() {
        "(nothing on stderr)".to_string()
    } else {
        s
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut live) = self.live.take() {
            live.stop(Duration::from_secs(2));
        }
    }
}
