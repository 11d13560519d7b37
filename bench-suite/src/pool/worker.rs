//! One worker process: spawn, one request at a time with a wall-clock limit, and SIGKILL of
//! its whole process group on any fault. The worker's stdout is read by a thread that turns
//! it into bounded lines; its stderr by another that keeps only the tail (so a worker that
//! floods stderr never blocks on a full pipe).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use verifier::protocol::{Request, RequestBody, Response, ResponseBody};
use verifier::verdict::ExitInfo;

/// How to start a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to the parent's environment (e.g. `CUDA_VISIBLE_DEVICES`).
    pub env: Vec<(String, String)>,
}

impl WorkerCommand {
    /// `ksmith worker`, from the running executable.
    pub fn current_exe_worker() -> std::io::Result<WorkerCommand> {
        Ok(WorkerCommand {
            program: std::env::current_exe()?,
            args: vec!["worker".to_string()],
            env: Vec::new(),
        })
    }

    pub fn describe(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted response line.
    pub max_line_bytes: usize,
    /// Bytes of stderr kept for crash reports.
    pub stderr_tail_bytes: usize,
    /// How long a worker that closed stdout gets to exit before it is killed.
    pub exit_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: verifier::protocol::MAX_LINE_BYTES,
            stderr_tail_bytes: 16 << 10,
            exit_grace: Duration::from_millis(500),
        }
    }
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Answered(ResponseBody),
    /// No response within the limit; the worker was killed.
    TimedOut {
        limit: Duration,
        stderr_tail: String,
    },
    /// The worker ended (crash, exit, signal) before answering.
    Died {
        exit: ExitInfo,
        /// Bytes of an unfinished response line, if any.
        partial: usize,
        stderr_tail: String,
    },
    /// The worker wrote something that is not the response to this request; it was killed.
    Protocol {
        error: String,
        stderr_tail: String,
    },
    /// The worker could not be started or written to.
    Spawn(String),
}

enum LineEvent {
    Line(Vec<u8>),
    /// Writing a request failed (the worker closed its stdin: it is exiting or dead).
    WriteFailed(String),
    TooLong(usize),
    Eof {
        partial: usize,
    },
    Error(String),
}

struct Proc {
    child: Child,
    requests: mpsc::Sender<Vec<u8>>,
    lines: Receiver<LineEvent>,
    stderr: Arc<Mutex<VecDeque<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
}

pub struct Worker {
    command: WorkerCommand,
    limits: Limits,
    proc: Option<Proc>,
    next_id: u64,
    /// The stderr tail of the last process killed or reaped.
    last_tail: Option<String>,
    /// How many times a process was started.
    pub starts: u32,
}

impl Worker {
    pub fn new(command: WorkerCommand, limits: Limits) -> Worker {
        Worker {
            command,
            limits,
            proc: None,
            next_id: 1,
            last_tail: None,
            starts: 0,
        }
    }

    /// The running process's id, if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(&self.command.program);
        cmd.args(&self.command.args)
            .envs(self.command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a kill reaches whatever it started (ncu, sanitizers).
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start worker `{}`: {e}", self.command.describe()))?;
        self.starts += 1;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_group(&mut child);
            return Err("worker started without pipes".to_string());
        };
        let (tx, rx) = mpsc::channel();
        let (req_tx, req_rx) = mpsc::channel::<Vec<u8>>();
        let write_tx = tx.clone();
        std::thread::spawn(move || write_requests(stdin, req_rx, write_tx));
        let max = self.limits.max_line_bytes;
        std::thread::spawn(move || read_lines(stdout, max, tx));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let keep = self.limits.stderr_tail_bytes;
        let t2 = Arc::clone(&tail);
        let stderr_thread = std::thread::spawn(move || read_tail(stderr, keep, t2));
        self.proc = Some(Proc {
            child,
            requests: req_tx,
            lines: rx,
            stderr: tail,
            stderr_thread: Some(stderr_thread),
        });
        Ok(())
    }

    /// Sends one request and waits up to `limit` for its response. Never panics and never
    /// leaves a misbehaving process running: any fault kills it, and the next call starts a
    /// fresh one.
    pub fn call(&mut self, body: RequestBody, limit: Duration) -> Outcome {
        // A worker that died between requests (after answering) is not this request's fault.
        if let Some(p) = self.proc.as_mut() {
            if matches!(p.child.try_wait(), Ok(Some(_)) | Err(_)) {
                self.kill();
            }
        }
        if self.proc.is_none() {
            if let Err(e) = self.spawn() {
                return Outcome::Spawn(e);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let line = Request { id, body }.to_line();
        let start = Instant::now();
        let Some(p) = self.proc.as_mut() else {
            return Outcome::Spawn("worker vanished".to_string());
        };
        // Written by the writer thread: a worker that stops reading its stdin must not block
        // the parent past the time limit (a large request does not fit in the pipe buffer).
        if p.requests.send(line.into_bytes()).is_err() {
            return self.died(0, Some("the request writer stopped".to_string()));
        }
        let left = limit.saturating_sub(start.elapsed());
        let Some(p) = self.proc.as_mut() else {
            return Outcome::Spawn("worker vanished".to_string());
        };
        match p.lines.recv_timeout(left) {
            Ok(LineEvent::Line(l)) => match Response::from_line(&l) {
                Ok(r) if r.id == id => Outcome::Answered(r.body),
                Ok(r) => self.protocol(format!(
                    "response for request {} while waiting for {id}",
                    r.id
                )),
                Err(e) => self.protocol(e.to_string()),
            },
            Ok(LineEvent::TooLong(n)) => self.protocol(format!(
                "a line longer than {} bytes ({n} read so far)",
                self.limits.max_line_bytes
            )),
            Ok(LineEvent::Error(e)) => self.protocol(format!("reading stdout: {e}")),
            Ok(LineEvent::Eof { partial }) => self.died(partial, None),
            Ok(LineEvent::WriteFailed(e)) => self.died(0, Some(format!("write failed: {e}"))),
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                Outcome::TimedOut {
                    limit,
                    stderr_tail: self.last_tail.take().unwrap_or_default(),
                }
            }
            Err(RecvTimeoutError::Disconnected) => self.died(0, None),
        }
    }

    fn protocol(&mut self, error: String) -> Outcome {
        self.kill();
        Outcome::Protocol {
            error,
            stderr_tail: self.last_tail.take().unwrap_or_default(),
        }
    }

    /// The worker closed stdout (or stdin): wait a little for its exit status, then kill.
    fn died(&mut self, partial: usize, note: Option<String>) -> Outcome {
        let grace = self.limits.exit_grace;
        let mut status: Option<ExitStatus> = None;
        if let Some(p) = self.proc.as_mut() {
            let until = Instant::now() + grace;
            while Instant::now() < until {
                match p.child.try_wait() {
                    Ok(Some(s)) => {
                        status = Some(s);
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        }
        let killed_status = self.kill();
        let status = status.or(killed_status);
        let mut stderr_tail = self.last_tail.take().unwrap_or_default();
        if let Some(n) = note {
            stderr_tail.push_str(&format!("\n[kernelsmith: {n}]"));
        }
        Outcome::Died {
            exit: exit_info(status),
            partial,
            stderr_tail,
        }
    }

    /// Kills the process group (if running), reaps it and keeps its stderr tail in
    /// `last_tail`. Returns the exit status when it could be read.
    fn kill(&mut self) -> Option<ExitStatus> {
        let mut p = self.proc.take()?;
        let status = match p.child.try_wait() {
            Ok(Some(s)) => {
                // Exited already; still reap any children it left in its group.
                kill_pgid(p.child.id());
                Some(s)
            }
            _ => {
                kill_group(&mut p.child);
                p.child.wait().ok()
            }
        };
        // Give the stderr reader a moment to drain what the process wrote before it ended.
        if let Some(h) = p.stderr_thread.take() {
            let until = Instant::now() + Duration::from_millis(300);
            while !h.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let tail = p
            .stderr
            .lock()
            .map(|t| String::from_utf8_lossy(&t.iter().copied().collect::<Vec<u8>>()).into_owned())
            .unwrap_or_default();
        self.last_tail = Some(tail);
        status
    }

    /// Asks the worker to exit, then makes sure it has.
    pub fn shutdown(&mut self, limit: Duration) {
        if self.proc.is_some() {
            let _ = self.call(RequestBody::Shutdown, limit);
        }
        self.kill();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn exit_info(status: Option<ExitStatus>) -> ExitInfo {
    match status {
        Some(s) => ExitInfo {
            code: s.code(),
            signal: s.signal(),
        },
        None => ExitInfo {
            code: None,
            signal: None,
        },
    }
}

fn kill_pgid(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            // SAFETY: plain syscall on a process group this parent created (process_group(0)
            // makes the worker its group's leader, pgid == pid); errors (ESRCH) are harmless.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }
}

fn kill_group(child: &mut Child) {
    kill_pgid(child.id());
    let _ = child.kill();
}

fn write_requests(
    mut stdin: ChildStdin,
    requests: Receiver<Vec<u8>>,
    events: mpsc::Sender<LineEvent>,
) {
    for r in requests {
        if let Err(e) = stdin.write_all(&r).and_then(|_| stdin.flush()) {
            let _ = events.send(LineEvent::WriteFailed(e.to_string()));
            return;
        }
    }
}

fn read_lines(stdout: impl Read, max: usize, tx: mpsc::Sender<LineEvent>) {
    let mut r = BufReader::with_capacity(1 << 16, stdout);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(LineEvent::Error(e.to_string()));
                return;
            }
        };
        if buf.is_empty() {
            let _ = tx.send(LineEvent::Eof {
                partial: line.len(),
            });
            return;
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if line.len() > max {
            let _ = tx.send(LineEvent::TooLong(line.len()));
            return;
        }
        if done && tx.send(LineEvent::Line(std::mem::take(&mut line))).is_err() {
            return;
        }
    }
}

fn read_tail(mut stderr: impl Read, keep: usize, tail: Arc<Mutex<VecDeque<u8>>>) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let Ok(mut t) = tail.lock() else { return };
                let chunk = &buf[n.saturating_sub(keep)..n];
                t.extend(chunk);
                let excess = t.len().saturating_sub(keep);
                t.drain(..excess);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}
