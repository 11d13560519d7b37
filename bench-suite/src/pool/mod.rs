//! The parent side of worker isolation (DESIGN §6). GPU work runs in `ksmith worker`
//! subprocesses, one per GPU, speaking the JSON-lines protocol of [`verifier::protocol`]. The
//! pool gives each request a wall-clock limit, kills (SIGKILL, whole process group) and
//! restarts a worker that hangs, dies or writes garbage, and turns those faults into verdicts:
//! a hang is `timeout`, a death is `runtime_fault` with the exit status or signal and the tail
//! of the worker's stderr. Nothing a worker does can take the parent down; a batch goes on
//! after every fault.

mod worker;

pub use worker::{Limits, Outcome, Worker, WorkerCommand};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use verifier::protocol::{EvaluateRequest, Evaluation, RequestBody, ResponseBody};
use verifier::verdict::Verdict;

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub command: WorkerCommand,
    /// One worker per entry, with these variables added to its environment.
    pub workers: Vec<Vec<(String, String)>>,
    /// Wall-clock limit of one request.
    pub request_timeout: Duration,
    pub limits: Limits,
}

impl PoolConfig {
    /// One worker per GPU ordinal, each seeing only its GPU (`CUDA_VISIBLE_DEVICES`). Ordinals
    /// are this process's: under a `CUDA_VISIBLE_DEVICES` of its own, worker `i` gets the
    /// `i`-th device of that list (see [`visible_device`]).
    pub fn per_gpu(command: WorkerCommand, gpus: &[u32], request_timeout: Duration) -> PoolConfig {
        let parent = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        PoolConfig {
            command,
            workers: gpus
                .iter()
                .map(|g| {
                    vec![(
                        "CUDA_VISIBLE_DEVICES".to_string(),
                        visible_device(parent.as_deref(), *g),
                    )]
                })
                .collect(),
            request_timeout,
            limits: Limits::default(),
        }
    }
}

/// The `CUDA_VISIBLE_DEVICES` value that shows a child process exactly the device this process
/// calls `ordinal`. A child's variable replaces the parent's rather than narrowing it, so under
/// a parent list (`2,3`, or UUIDs `GPU-...`, `MIG-...`) ordinal `i` is the list's `i`-th entry,
/// not physical device `i`. Without a parent list (unset or blank) ordinals are the driver's.
pub fn visible_device(parent: Option<&str>, ordinal: u32) -> String {
    parent
        .filter(|p| !p.trim().is_empty())
        .and_then(|p| p.split(',').map(str::trim).nth(ordinal as usize))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| ordinal.to_string())
}

/// The answer to one request of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The worker answered.
    Answered(ResponseBody),
    /// The worker hung or died on this request: the kernel's fault, as a verdict.
    Fault(Verdict),
    /// The harness failed (worker would not start, broke the protocol): no verdict.
    HarnessError(String),
}

impl Reply {
    /// The verdict of an `evaluate` request, or why there is none.
    pub fn verdict(&self) -> Result<&Verdict, String> {
        match self {
            Reply::Answered(ResponseBody::Evaluated(Evaluation { verdict, .. })) => Ok(verdict),
            Reply::Fault(v) => Ok(v),
            Reply::Answered(ResponseBody::HarnessError { message }) => Err(message.clone()),
            Reply::Answered(other) => Err(format!("unexpected answer: {other:?}")),
            Reply::HarnessError(e) => Err(e.clone()),
        }
    }
}

impl From<Outcome> for Reply {
    fn from(o: Outcome) -> Reply {
        match o {
            Outcome::Answered(b) => Reply::Answered(b),
            Outcome::TimedOut { limit, .. } => Reply::Fault(Verdict::Timeout {
                case: None,
                limit_ms: limit.as_millis() as u64,
            }),
            Outcome::Died {
                exit,
                partial,
                stderr_tail,
            } => {
                let mut message = format!("the worker process {exit} while running the kernel");
                if partial > 0 {
                    message.push_str(&format!(" (it left a {partial}-byte unfinished response)"));
                }
                Reply::Fault(Verdict::RuntimeFault {
                    case: None,
                    message,
                    exit: Some(exit),
                    stderr_tail,
                })
            }
            Outcome::Protocol { error, stderr_tail } => Reply::HarnessError(format!(
                "worker broke the protocol and was restarted: {error}{}",
                if stderr_tail.is_empty() {
                    String::new()
                } else {
                    format!("\nstderr tail:\n{stderr_tail}")
                }
            )),
            Outcome::Spawn(e) => Reply::HarnessError(e),
        }
    }
}

/// A request and its own time limit (the pool's when `None`).
pub type Job = (RequestBody, Option<Duration>);

pub struct Pool {
    workers: Vec<Mutex<Worker>>,
    timeout: Duration,
}

impl Pool {
    /// Creates the workers; processes start on first use (and again after each fault).
    pub fn new(config: PoolConfig) -> Pool {
        let workers = config
            .workers
            .iter()
            .map(|env| {
                let mut cmd = config.command.clone();
                cmd.env.extend(env.iter().cloned());
                Mutex::new(Worker::new(cmd, config.limits))
            })
            .collect();
        Pool {
            workers,
            timeout: config.request_timeout,
        }
    }

    pub fn size(&self) -> usize {
        self.workers.len()
    }

    /// Runs every request on the first free worker, in parallel across workers; replies come
    /// back in request order. Each request gets the pool's timeout unless it names its own.
    pub fn run_batch(&self, requests: Vec<Job>) -> Vec<Reply> {
        let n = requests.len();
        let results: Mutex<Vec<Option<Reply>>> = Mutex::new(vec![None; n]);
        let next = AtomicUsize::new(0);
        let jobs: Vec<Mutex<Option<Job>>> =
            requests.into_iter().map(|r| Mutex::new(Some(r))).collect();
        std::thread::scope(|s| {
            for w in &self.workers {
                let (results, next, jobs) = (&results, &next, &jobs);
                s.spawn(move || {
                    let Ok(mut worker) = w.lock() else { return };
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n {
                            return;
                        }
                        let job = jobs[i].lock().ok().and_then(|mut j| j.take());
                        let Some((body, limit)) = job else { continue };
                        let reply = Reply::from(worker.call(body, limit.unwrap_or(self.timeout)));
                        if let Ok(mut r) = results.lock() {
                            r[i] = Some(reply);
                        }
                    }
                });
            }
        });
        results
            .into_inner()
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Reply::HarnessError("no worker ran this request".into())))
            .collect()
    }

    /// Sends one request to worker `index` (for a GPU ordinal the caller has checked out, say),
    /// waiting for that worker if another thread is using it. Its own time limit, or the pool's.
    pub fn call_on(&self, index: usize, body: RequestBody, limit: Option<Duration>) -> Reply {
        let Some(w) = self.workers.get(index) else {
            return Reply::HarnessError(format!(
                "no worker {index}: the pool has {}",
                self.workers.len()
            ));
        };
        // A thread that panicked while holding the worker left it between requests at worst
        // (every fault kills the process), so the worker is still usable.
        let mut worker = w.lock().unwrap_or_else(|p| p.into_inner());
        Reply::from(worker.call(body, limit.unwrap_or(self.timeout)))
    }

    /// Evaluates one kernel on worker `index`.
    pub fn evaluate_on(&self, index: usize, request: EvaluateRequest) -> Reply {
        self.call_on(index, RequestBody::Evaluate(request), None)
    }

    /// Evaluates kernels; one reply per request, in order.
    pub fn evaluate(&self, requests: Vec<EvaluateRequest>) -> Vec<Reply> {
        self.run_batch(
            requests
                .into_iter()
                .map(|r| (RequestBody::Evaluate(r), None))
                .collect(),
        )
    }

    /// Asks every worker to exit (waiting at most `limit` each), then kills what is left.
    pub fn shutdown(&self, limit: Duration) {
        for w in &self.workers {
            if let Ok(mut w) = w.lock() {
                w.shutdown(limit);
            }
        }
    }

    /// Process starts per worker (1 each when nothing went wrong), for logs and tests.
    pub fn starts(&self) -> Vec<u32> {
        self.workers
            .iter()
            .map(|w| w.lock().map(|w| w.starts).unwrap_or(0))
            .collect()
    }
}
