//! A scripted OpenAI-compatible server on 127.0.0.1 for `ksmith run` end to end, plus the
//! helpers that drive the binary against it.
//!
//! The server answers by content: the reply to a request is decided by the task named in the
//! prompt, the role (coder or judge) and how many different prompts of that kind it has seen;
//! a prompt seen before gets the same reply again. A resumed run that re-sends a request the
//! killed one had in flight therefore gets the same answer, as a deterministic model would give.
//! Faults are served on the first attempt of a chosen request, so the client's retry succeeds.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const SECRET: &str = "sk-scripted-secret-0123456789";
pub const KEY_VAR: &str = "KSMITH_TEST_SCRIPTED_KEY";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: 1` and an OpenAI-style error body.
    TooMany,
    /// 429 without Retry-After, with an HTML body (a proxy's, not the provider's).
    TooManyPlain,
    /// 500 with an error body.
    ServerError,
    /// A reply slower than the profile's request timeout.
    Stall,
    /// HTTP 200 with a body cut off in the middle of the JSON.
    MalformedJson,
}

#[derive(Clone)]
pub struct Script {
    /// Task ids the server recognizes in prompts (by the "(`id`," the prompts carry).
    pub tasks: Vec<&'static str>,
    /// Per task: the Coder's replies in order (the last one repeats).
    pub coder: BTreeMap<&'static str, Vec<String>>,
    /// The Judge's correction-mode replies (any task), in order.
    pub judge: Vec<String>,
    /// The Judge's optimization-mode replies (role `judge_optimization`); empty: `judge`'s.
    pub judge_optimization: Vec<String>,
    /// (task, role, reply index) → fault served on the first attempt of that request.
    pub faults: HashMap<(&'static str, &'static str, usize), Fault>,
    pub delay: Duration,
    /// While set, every request about this task gets a 503 (a provider outage).
    pub outage: Option<(&'static str, Arc<AtomicBool>)>,
    /// Upper bound on the server's life; nothing outlives it.
    pub deadline: Duration,
}

impl Script {
    pub fn new(tasks: &[&'static str]) -> Script {
        Script {
            tasks: tasks.to_vec(),
            coder: BTreeMap::new(),
            judge: Vec::new(),
            judge_optimization: Vec::new(),
            faults: HashMap::new(),
            delay: Duration::ZERO,
            outage: None,
            deadline: Duration::from_secs(90),
        }
    }
}

#[derive(Default)]
pub struct ServerState {
    memo: HashMap<String, String>,
    counts: HashMap<(&'static str, &'static str), usize>,
    /// Faults already served, so a retry of the same request succeeds.
    pub served_faults: Vec<(&'static str, &'static str, usize)>,
    /// Every request body, in arrival order (faulted attempts included).
    pub bodies: Vec<String>,
    pub auth_ok: usize,
}

pub struct Server {
    pub base_url: String,
    state: Arc<Mutex<ServerState>>,
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicUsize>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Server {
    pub fn start(script: Script) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(ServerState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (st, sp, rq) = (Arc::clone(&state), Arc::clone(&stop), Arc::clone(&requests));
        let deadline = script.deadline;
        let script = Arc::new(script);
        thread::spawn(move || {
            let deadline = Instant::now() + deadline;
            while Instant::now() < deadline && !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (st, rq, script) =
                            (Arc::clone(&st), Arc::clone(&rq), Arc::clone(&script));
                        thread::spawn(move || serve(stream, &script, &st, &rq));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        Server {
            base_url: format!("http://{addr}/v1"),
            state,
            stop,
            requests,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.state.lock().expect("server state")
    }
}

fn read_request(stream: &mut TcpStream) -> Option<(Vec<(String, String)>, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let headers: Vec<(String, String)> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    Some((headers, String::from_utf8_lossy(&body).to_string()))
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &str,
) {
    let mut r = format!(
        "HTTP/1.1 {status} Scripted\r\nContent-Length: {}\r\nConnection: close\r\nContent-Type: {content_type}\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    // The client may have given up (the stall); a failed write is expected then.
    let _ = stream.write_all(r.as_bytes());
    let _ = stream.flush();
}

const JSON: &str = "application/json";

fn serve(mut stream: TcpStream, script: &Script, st: &Mutex<ServerState>, rq: &AtomicUsize) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((headers, body)) = read_request(&mut stream) else {
        return;
    };
    rq.fetch_add(1, Ordering::SeqCst);
    let prompt = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["messages"][0]["content"].as_str().map(str::to_string))
        .unwrap_or_default();
    let task = script
        .tasks
        .iter()
        .copied()
        .find(|t| prompt.contains(&format!("(`{t}`,")));
    let role: &'static str = if prompt.starts_with("You are reviewing a correct") {
        "judge_optimization"
    } else if prompt.starts_with("You are reviewing") {
        "judge"
    } else {
        "coder"
    };
    let authorized = headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == &format!("Bearer {SECRET}"));
    let decided = {
        let mut s = st.lock().expect("server state");
        s.bodies.push(body.clone());
        if authorized {
            s.auth_ok += 1;
        }
        let down = matches!(
            (&script.outage, task),
            (Some((t, on)), Some(task)) if *t == task && on.load(Ordering::SeqCst)
        );
        match task {
            None => Err("no known task in the prompt".to_string()),
            Some(_) if down => Err("outage".to_string()),
            Some(task) => match s.memo.get(&body) {
                Some(reply) => Ok((reply.clone(), None)),
                None => {
                    let k = *s.counts.get(&(task, role)).unwrap_or(&0);
                    let fault = script
                        .faults
                        .get(&(task, role, k))
                        .copied()
                        .filter(|_| !s.served_faults.contains(&(task, role, k)));
                    if fault.is_some() {
                        s.served_faults.push((task, role, k));
                        Ok((String::new(), fault))
                    } else {
                        let replies = match role {
                            "judge_optimization" if !script.judge_optimization.is_empty() => {
                                &script.judge_optimization
                            }
                            "judge" | "judge_optimization" => &script.judge,
                            _ => script.coder.get(task).expect("a script for every task"),
                        };
                        let reply = replies
                            .get(k)
                            .or(replies.last())
                            .cloned()
                            .unwrap_or_default();
                        s.counts.insert((task, role), k + 1);
                        s.memo.insert(body.clone(), reply.clone());
                        Ok((reply, None))
                    }
                }
            },
        }
    };
    thread::sleep(script.delay);
    match decided {
        Err(e) if e == "outage" => respond(
            &mut stream,
            503,
            JSON,
            &[],
            r#"{"error":{"message":"service unavailable"}}"#,
        ),
        Err(e) => respond(
            &mut stream,
            400,
            JSON,
            &[],
            &format!("{{\"error\":{{\"message\":\"{e}\"}}}}"),
        ),
        Ok((_, Some(Fault::TooMany))) => respond(
            &mut stream,
            429,
            JSON,
            &[("Retry-After", "1")],
            r#"{"error":{"message":"rate limited","type":"rate_limit"}}"#,
        ),
        Ok((_, Some(Fault::TooManyPlain))) => respond(
            &mut stream,
            429,
            "text/html",
            &[],
            "<html><body><h1>429 Too Many Requests</h1>nginx</body></html>",
        ),
        Ok((_, Some(Fault::ServerError))) => respond(
            &mut stream,
            500,
            JSON,
            &[],
            r#"{"error":{"message":"overloaded"}}"#,
        ),
        Ok((_, Some(Fault::MalformedJson))) => respond(
            &mut stream,
            200,
            JSON,
            &[],
            r#"{"id": "x", "choices": [ {"mess"#,
        ),
        Ok((_, Some(Fault::Stall))) => {
            // Longer than the profile's request timeout: the client gives up and retries.
            thread::sleep(Duration::from_millis(2500));
            respond(&mut stream, 200, JSON, &[], r#"{"choices":[]}"#)
        }
        Ok((reply, None)) => respond(&mut stream, 200, JSON, &[], &reply),
    }
}

/// A completion body; `quirk` adds the oddities real servers send (`reasoning_content`, an
/// empty `finish_reason`).
pub fn completion(content: &str, quirk: bool) -> String {
    let finish = if quirk { "" } else { "stop" };
    completion_with(content, quirk, finish)
}

/// A completion body with this `finish_reason` ("length": the reply hit the token limit).
pub fn completion_with(content: &str, reasoning: bool, finish_reason: &str) -> String {
    let mut message = serde_json::json!({ "role": "assistant", "content": content });
    if reasoning {
        message["reasoning_content"] =
            serde_json::json!("Let me think about the memory traffic first.");
    }
    serde_json::json!({
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "model": "scripted-model",
        "choices": [{ "index": 0, "message": message, "finish_reason": finish_reason }],
        "usage": { "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500 },
        "system_fingerprint": null
    })
    .to_string()
}

pub fn kernel_reply(source: &str, plan: &str, note: &str) -> String {
    format!("{note}\n\n```cuda\n{source}\n```\n\n```toml\n{plan}\n```\n")
}

/// The Judge's optimization-mode JSON.
pub fn judge_optimization_reply() -> String {
    completion(
        "```json\n{\"bottleneck\": \"global loads are not vectorized\", \"evidence\": \"the timings above\", \"optimisation\": \"load 16 bytes per thread\", \"modification_plan\": \"use uint4 loads in the main loop\"}\n```",
        false,
    )
}

/// The Judge's correction-mode JSON.
pub fn judge_reply(quirk: bool) -> String {
    completion(
        "```json\n{\"critical_issue\": \"undefined identifier in a helper\", \"why_it_matters\": \"it does not compile\", \"minimal_fix_hint\": \"remove the helper\"}\n```",
        quirk,
    )
}

/// The task's own reference kernel and launch plan.
pub fn reference(task_dir: &Path) -> (String, String) {
    let src = std::fs::read_to_string(task_dir.join("reference.cu")).expect("reference.cu");
    let plan = std::fs::read_to_string(task_dir.join("reference.toml")).expect("reference.toml");
    (src, plan)
}

/// `src` plus a helper that does not compile (an undeclared identifier the log will name).
pub fn broken(src: &str) -> String {
    format!(
        "{src}\n__device__ int ksmith_scripted_helper() {{ return undefined_scripted_symbol; }}\n"
    )
}

/// A config with one profile, `scripted`, pointing at `base_url`: prices 2 / 8 USD per million
/// input / output tokens, a 1.5 s request timeout, fast retries.
pub fn write_config(dir: &Path, base_url: &str) -> PathBuf {
    let p = dir.join("ksmith.toml");
    std::fs::write(
        &p,
        format!(
            "[profiles.scripted]\nbase_url = \"{base_url}\"\nmodel = \"scripted-model\"\n\
             api_key_env = \"{KEY_VAR}\"\nprovider = \"scripted\"\nprice_input_per_mtok = 2.0\n\
             price_output_per_mtok = 8.0\nrequest_timeout_s = 1.5\nmax_retries = 3\n\
             backoff_base_ms = 50\nbackoff_max_s = 0.5\nmax_concurrency = 4\n"
        ),
    )
    .expect("write config");
    p
}

/// Runs `cmd` to its end, killing it (and failing the test) after `limit`.
pub fn run_to_end(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ksmith");
    // Drain the pipes while waiting: a long run's progress could fill them and stall the child.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(s) => break s,
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                let err = err_reader.join().unwrap_or_default();
                panic!(
                    "ksmith run did not finish within {limit:?}\nstderr:\n{}",
                    String::from_utf8_lossy(&err)
                );
            }
            None => thread::sleep(Duration::from_millis(50)),
        }
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// The `--json` report on stdout.
pub fn report(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}); exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
