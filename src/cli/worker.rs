//! `ksmith worker`: the GPU side of worker isolation (DESIGN §6). Reads JSON-line requests on
//! stdin, answers each on the protocol stream (the original stdout), and exits after a fault
//! that leaves the CUDA context unusable, so its parent starts a fresh process.

use super::Global;
use std::io::{BufRead, Write};
use std::panic::AssertUnwindSafe;
use std::time::Instant;
use verifier::nvrtc::Compiler;
use verifier::protocol::{
    EvaluateRequest, Evaluation, ProtocolError, Request, RequestBody, Response, ResponseBody,
    WorkerInfo, MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use verifier::runtime::strict::{EvalError, Outcome, ReferenceCache};
use verifier::runtime::Gpu;

/// Reference outputs kept between requests (per worker, in host memory).
const REFERENCE_CACHE_BYTES: u64 = 4 << 30;

struct State<'g> {
    global: &'g Global,
    /// Opened on first use; an error is kept so later requests fail fast with the same text.
    gpu: Option<Result<Gpu, String>>,
    compiler: Option<Result<Compiler, String>>,
    cache: ReferenceCache,
}

impl State<'_> {
    fn gpu(&mut self) -> Result<&Gpu, String> {
        let g = self
            .gpu
            .get_or_insert_with(|| Gpu::open(0).map_err(|e| e.to_string()));
        g.as_ref().map_err(|e| e.clone())
    }

    fn evaluate(&mut self, req: &EvaluateRequest) -> Result<Outcome, EvalError> {
        let global = self.global;
        let compiler = self
            .compiler
            .get_or_insert_with(|| {
                super::tasks::compiler(global)
                    .map(|(c, _)| c)
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(EvalError::new)?;
        self.gpu().map_err(EvalError::new)?;
        let Some(Ok(gpu)) = self.gpu.as_ref() else {
            return Err(EvalError::new("GPU not open"));
        };
        verifier::runtime::evaluate::evaluate(gpu, &compiler, &mut self.cache, req)
    }
}

fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.clear();
    // Bounded: a parent never sends more than MAX_LINE_BYTES per line.
    std::io::Read::take(&mut *input, MAX_LINE_BYTES as u64 + 1).read_until(b'\n', buf)
}

pub fn run(g: &Global) -> anyhow::Result<u8> {
    let mut out = verifier::runtime::stdio::take_protocol_stream()
        .map_err(|e| anyhow::anyhow!("cannot set up the protocol stream: {e}"))?;
    let mut state = State {
        global: g,
        gpu: None,
        compiler: None,
        cache: ReferenceCache::new(REFERENCE_CACHE_BYTES),
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
        let body = match req.body {
            RequestBody::Ping => ResponseBody::Pong(WorkerInfo {
                pid: std::process::id(),
                protocol: PROTOCOL_VERSION,
                device: state.gpu().ok().map(|g| g.info.summary()),
            }),
            RequestBody::Shutdown => {
                exit_after = true;
                ResponseBody::Bye
            }
            RequestBody::Evaluate(e) => {
                let start = Instant::now();
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| state.evaluate(&e)));
                let elapsed_ms = start.elapsed().as_millis() as u64;
                match result {
                    Ok(Ok(outcome)) => {
                        exit_after = outcome.context_lost;
                        ResponseBody::Evaluated(Evaluation {
                            verdict: outcome.verdict,
                            elapsed_ms,
                            log: outcome.log,
                        })
                    }
                    Ok(Err(err)) => {
                        exit_after = err.context_lost;
                        ResponseBody::HarnessError {
                            message: err.message,
                        }
                    }
                    Err(panic) => {
                        // State may be inconsistent after a panic: answer, then exit.
                        exit_after = true;
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
        out.write_all(resp.to_line().as_bytes())?;
        out.flush()?;
        if exit_after {
            if !matches!(resp.body, ResponseBody::Bye) {
                eprintln!("worker: the CUDA context is unusable after this request; exiting so a fresh worker takes over");
            }
            return Ok(super::EXIT_OK);
        }
    }
}
