//! `ksmith worker`: the GPU side of worker isolation (DESIGN §6). Reads JSON-line requests on
//! stdin and answers each on the protocol stream (the original stdout). After a fault that
//! leaves the CUDA context unusable (or a hang caught by its watchdog, or a panic) it answers,
//! then replaces its own image (exec, same pid and pipes): had it exited instead, the parent
//! could send the next request before noticing the death and blame that request for it.

use super::Global;
use bench_suite::torch::{RunnerConfig, TorchOracle};
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verifier::nvrtc::Compiler;
use verifier::protocol::Oracle;
use verifier::protocol::{
    EvaluateRequest, Evaluation, ProtocolError, Request, RequestBody, Response, ResponseBody,
    WorkerInfo, MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use verifier::runtime::strict::{EvalError, Outcome, ReferenceCache, RunHooks, SpecOracle};
use verifier::runtime::watchdog::Watchdog;
use verifier::runtime::Gpu;
use verifier::verdict::{Case, Verdict};

/// Reference outputs kept between requests (per worker, in host memory).
const REFERENCE_CACHE_BYTES: u64 = 4 << 30;

/// Longest one run of a candidate's plan on one case may take before the worker answers
/// `timeout` for that case and exits; override with this variable (seconds).
pub const ENV_KERNEL_TIMEOUT: &str = "KSMITH_KERNEL_TIMEOUT";
const DEFAULT_KERNEL_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the PyTorch oracle may take on one case (spec.py on its inputs, torch's import
/// included the first time); override with this variable (seconds).
pub const ENV_ORACLE_TIMEOUT: &str = "KSMITH_ORACLE_TIMEOUT";

type Protocol = Arc<Mutex<File>>;

fn send(out: &Protocol, resp: &Response) -> std::io::Result<()> {
    let mut f = out
        .lock()
        .map_err(|_| std::io::Error::other("protocol stream lock poisoned"))?;
    f.write_all(resp.to_line().as_bytes())?;
    f.flush()
}

/// Arms the watchdog while a candidate's kernels run: a kernel that spins forever cannot be
/// interrupted, so on expiry the watchdog answers the pending request with a `timeout`
/// verdict naming the case and restarts the worker in place.
struct KernelWatch<'a> {
    dog: &'a Watchdog,
    out: Protocol,
    id: u64,
    limit: Duration,
    started: Instant,
}

impl RunHooks for KernelWatch<'_> {
    fn running(&self, case: Option<&Case>) {
        let Some(case) = case else {
            self.dog.disarm();
            return;
        };
        let (out, id, limit, started) = (Arc::clone(&self.out), self.id, self.limit, self.started);
        let case = case.clone();
        self.dog.arm(limit, move || {
            let resp = Response {
                id,
                body: ResponseBody::Evaluated(Evaluation {
                    verdict: Verdict::Timeout {
                        case: Some(case),
                        limit_ms: limit.as_millis() as u64,
                    },
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    log: vec![format!(
                        "one run of the plan took longer than {} s ({ENV_KERNEL_TIMEOUT}); the worker answered and restarted",
                        limit.as_secs_f64()
                    )],
                    errors: Vec::new(),
                }),
            };
            let _ = send(&out, &resp);
            // The main thread is stuck in the driver and cannot be unwound: start over.
            restart(&out, "the kernel watchdog expired")
        });
    }
}

/// Debug knob for tests: restart in place after every `ping` (exercises [`restart`]).
const ENV_RESTART_AFTER_PING: &str = "KSMITH_WORKER_RESTART_AFTER_PING";

/// After a lost CUDA context (or a panic, or the watchdog): replace the process image in
/// place, so the parent never sees this worker die between requests. Falls back to exiting.
fn restart(out: &Protocol, why: &str) -> ! {
    let fd = match out.lock() {
        Ok(f) => f.as_raw_fd(),
        Err(p) => p.into_inner().as_raw_fd(),
    };
    if std::env::var("KSMITH_WORKER_NO_RESTART").is_ok_and(|v| v == "1") {
        eprintln!("worker: {why}; exiting (KSMITH_WORKER_NO_RESTART=1)");
        verifier::runtime::stdio::exit_now(0)
    }
    eprintln!("worker: {why}; restarting in place");
    let e = verifier::runtime::stdio::restart_in_place(fd);
    eprintln!("worker: restart failed ({e}); exiting");
    verifier::runtime::stdio::exit_now(0)
}

fn seconds_from_env(name: &str, default: Duration) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        // Clamped: the watchdog's deadline is now + this, which inf or 1e19 would overflow.
        .map(verifier::seconds::clamped)
        .unwrap_or(default)
}

fn kernel_timeout() -> Duration {
    seconds_from_env(ENV_KERNEL_TIMEOUT, DEFAULT_KERNEL_TIMEOUT)
}

struct State<'g> {
    global: &'g Global,
    /// Opened on first use; an error is kept so later requests fail fast with the same text.
    gpu: Option<Result<Gpu, String>>,
    compiler: Option<Result<Compiler, String>>,
    /// Reference outputs of both oracles (keys differ: reference kernel vs spec.py).
    cache: ReferenceCache,
    /// The PyTorch oracle: one torch process per worker, started by the first request that
    /// asks for it, shared by every task after that.
    torch: Option<TorchOracle>,
}

impl State<'_> {
    fn gpu(&mut self) -> Result<&Gpu, String> {
        let g = self
            .gpu
            .get_or_insert_with(|| Gpu::open(0).map_err(|e| e.to_string()));
        g.as_ref().map_err(|e| e.clone())
    }

    fn evaluate(
        &mut self,
        req: &EvaluateRequest,
        hooks: &dyn RunHooks,
    ) -> Result<Outcome, EvalError> {
        let global = self.global;
        let compiler = self
            .compiler
            .get_or_insert_with(|| {
                super::tasks::compiler(global)
                    .map(|(c, _)| c)
                    .map_err(|e| super::describe(&e))
            })
            .clone()
            .map_err(EvalError::new)?;
        self.gpu().map_err(EvalError::new)?;
        let Some(Ok(gpu)) = self.gpu.as_ref() else {
            return Err(EvalError::new("GPU not open"));
        };
        let spec: Option<&mut dyn SpecOracle> = match req.options.oracle {
            Oracle::ReferenceKernel => None,
            Oracle::PyTorch => Some(self.torch.get_or_insert_with(|| {
                TorchOracle::new(RunnerConfig {
                    timeout: seconds_from_env(
                        ENV_ORACLE_TIMEOUT,
                        bench_suite::torch::DEFAULT_CASE_TIMEOUT,
                    ),
                    ..RunnerConfig::default()
                })
            })),
        };
        verifier::runtime::evaluate::evaluate_with(
            gpu,
            &compiler,
            &mut self.cache,
            req,
            hooks,
            spec,
        )
    }
}

fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.clear();
    // Bounded: a parent never sends more than MAX_LINE_BYTES per line.
    std::io::Read::take(&mut *input, MAX_LINE_BYTES as u64 + 1).read_until(b'\n', buf)
}

pub fn run(g: &Global) -> anyhow::Result<u8> {
    let out: Protocol = Arc::new(Mutex::new(
        verifier::runtime::stdio::take_protocol_stream()
            .map_err(|e| anyhow::anyhow!("cannot set up the protocol stream: {e}"))?,
    ));
    let dog = Watchdog::new().map_err(|e| anyhow::anyhow!("cannot start the watchdog: {e}"))?;
    let limit = kernel_timeout();
    let mut state = State {
        global: g,
        gpu: None,
        compiler: None,
        cache: ReferenceCache::new(REFERENCE_CACHE_BYTES),
        torch: None,
    };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    loop {
        if read_line(&mut input, &mut line)? == 0 {
            return Ok(super::EXIT_OK);
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let req = match Request::from_line(&line) {
            Ok(r) => r,
            Err(ProtocolError { message, excerpt }) => {
                // No id to answer to: say so on stderr and stop; the parent restarts workers
                // that break the protocol.
                eprintln!("worker: unreadable request ({message}): {excerpt}");
                return Ok(super::EXIT_HARNESS);
            }
        };
        let mut exit_after = false;
        let mut restart_after = None;
        let body = match req.body {
            RequestBody::Ping => {
                if std::env::var(ENV_RESTART_AFTER_PING).is_ok_and(|v| v == "1") {
                    restart_after = Some("restart after ping requested");
                }
                ResponseBody::Pong(WorkerInfo {
                    pid: std::process::id(),
                    protocol: PROTOCOL_VERSION,
                    device: state.gpu().ok().map(|g| g.info.summary()),
                })
            }
            RequestBody::Shutdown => {
                exit_after = true;
                ResponseBody::Bye
            }
            RequestBody::Evaluate(e) => {
                let start = Instant::now();
                let watch = KernelWatch {
                    dog: &dog,
                    out: Arc::clone(&out),
                    id: req.id,
                    limit,
                    started: start,
                };
                let result =
                    std::panic::catch_unwind(AssertUnwindSafe(|| state.evaluate(&e, &watch)));
                dog.disarm();
                let elapsed_ms = start.elapsed().as_millis() as u64;
                match result {
                    Ok(Ok(outcome)) => {
                        if outcome.context_lost {
                            restart_after = Some("the CUDA context is lost");
                        }
                        ResponseBody::Evaluated(Evaluation {
                            verdict: outcome.verdict,
                            elapsed_ms,
                            log: outcome.log,
                            errors: outcome.errors,
                        })
                    }
                    Ok(Err(err)) => {
                        if err.context_lost {
                            restart_after = Some("the CUDA context is lost");
                        }
                        ResponseBody::HarnessError {
                            message: err.message,
                        }
                    }
                    Err(panic) => {
                        // State may be inconsistent after a panic: answer, then start over.
                        restart_after = Some("a panic");
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".to_string());
                        ResponseBody::HarnessError {
                            message: format!("the worker panicked: {what}"),
                        }
                    }
                }
            }
        };
        let resp = Response { id: req.id, body };
        send(&out, &resp)?;
        if let Some(why) = restart_after {
            // Before reading anything more: the next request stays in the pipe for the new image.
            drop(input);
            restart(&out, why);
        }
        if exit_after {
            return Ok(super::EXIT_OK);
        }
    }
}
