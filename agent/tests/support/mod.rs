//! A scripted OpenAI-compatible HTTP server on 127.0.0.1 for tests: each accepted connection gets
//! the next scripted response, then the connection is closed. The accept loop ends when the script
//! is used up or after a fixed deadline, so no test can leave it running.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long the server waits for connections before giving up on its own.
const SERVER_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Step {
    pub delay: Duration,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Send the headers and this many body bytes, then stall this long before the rest.
    pub stall_mid_body: Option<(usize, Duration)>,
}

impl Step {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Step {
            delay: Duration::ZERO,
            status,
            headers: Vec::new(),
            body: body.into(),
            stall_mid_body: None,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn stall_mid_body(mut self, after_bytes: usize, d: Duration) -> Self {
        self.stall_mid_body = Some((after_bytes, d));
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    /// A well-formed completion with usage.
    pub fn ok(content: &str) -> Self {
        let body = serde_json::json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "scripted-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
        });
        Step::new(200, body.to_string()).header("content-type", "application/json")
    }
}

#[derive(Clone, Debug)]
pub struct Captured {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct ScriptedServer {
    pub base_url: String,
    captured: Arc<Mutex<Vec<Captured>>>,
}

impl ScriptedServer {
    pub fn start(script: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let captured = Arc::new(Mutex::new(Vec::new()));
        let cap = Arc::clone(&captured);
        thread::spawn(move || {
            let deadline = Instant::now() + SERVER_DEADLINE;
            let mut steps = script.into_iter();
            while Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let Some(step) = steps.next() else { break };
                        let cap = Arc::clone(&cap);
                        thread::spawn(move || serve(stream, step, cap));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
            // Dropping the listener refuses any request beyond the script.
        });
        ScriptedServer {
            base_url: format!("http://{addr}/v1"),
            captured,
        }
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.captured.lock().expect("captured lock").clone()
    }
}

fn serve(mut stream: TcpStream, step: Step, cap: Arc<Mutex<Vec<Captured>>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let at = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < len {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    cap.lock().expect("captured lock").push(Captured {
        request_line,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
        at,
    });
    thread::sleep(step.delay);
    let mut resp = format!(
        "HTTP/1.1 {} Scripted\r\nContent-Length: {}\r\nConnection: close\r\n",
        step.status,
        step.body.len()
    );
    for (k, v) in &step.headers {
        resp.push_str(&format!("{k}: {v}\r\n"));
    }
    resp.push_str("\r\n");
    // The client may have given up (timeout tests); failed writes are expected then.
    let body = step.body.as_bytes();
    match step.stall_mid_body {
        Some((n, stall)) => {
            let n = n.min(body.len());
            let _ = stream.write_all(resp.as_bytes());
            let _ = stream.write_all(&body[..n]);
            let _ = stream.flush();
            thread::sleep(stall);
            let _ = stream.write_all(&body[n..]);
        }
        None => {
            resp.push_str(&step.body);
            let _ = stream.write_all(resp.as_bytes());
        }
    }
    let _ = stream.flush();
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
