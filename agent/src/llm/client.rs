//! An OpenAI-compatible chat client: one profile, bounded concurrency, retries with jittered
//! exponential backoff that honour Retry-After, and a record of every call for the store.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::config::{ApiKey, ConfigError, LlmConfig, Profile};
use super::response::{error_summary, parse_completion, shorten, Completion, ParseError};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "system".into(),
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "user".into(),
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// Why a call failed (after retries, where retrying made sense).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error("HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("no complete reply within {after_s:.1} s")]
    Timeout { after_s: f64 },
    #[error("transport error: {0}")]
    Transport(String),
    #[error("unusable reply: {0}")]
    Reply(#[from] ParseError),
    #[error("server asked to wait {wait_s:.0} s before retrying, more than the profile allows ({cap_s:.0} s)")]
    RetryAfterTooLong { wait_s: f64, cap_s: f64 },
}

/// Errors building a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// Everything the store keeps about one call (DESIGN §8 `llm_calls`). Never holds the API key:
/// the request is the JSON body only, and every text that came back is redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCallRecord {
    /// What the call was for: "coder", "judge_correction", "mutate", ...
    pub role: String,
    pub profile: String,
    pub provider: String,
    pub model: String,
    pub started_at_unix_ms: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Token counts were estimated from text length because the server sent no usage.
    pub usage_estimated: bool,
    pub cost_usd: f64,
    /// Wall time from the first attempt to the end, retries and waits included.
    pub latency_ms: u64,
    pub attempts: u32,
    /// The JSON body sent (the same on every attempt).
    pub request: Value,
    /// The raw body of the last HTTP response, if any arrived.
    pub response: Option<String>,
    pub finish_reason: Option<String>,
    /// The final error, if the call failed.
    pub error: Option<String>,
    /// One line per failed attempt, in order (including ones that were retried).
    pub attempt_errors: Vec<String>,
}

/// A finished call: always a record, and the completion or the error.
#[derive(Debug, Clone)]
pub struct LlmCall {
    pub record: LlmCallRecord,
    pub outcome: Result<Completion, LlmError>,
}

/// A chat client for one profile. Cheap to clone; clones share the concurrency limit.
#[derive(Clone)]
pub struct LlmClient {
    name: String,
    profile: Profile,
    key: Option<ApiKey>,
    endpoint: String,
    http: reqwest::Client,
    limit: Arc<Semaphore>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("model", &self.profile.model)
            .field("key", &self.key)
            .finish()
    }
}

/// What one HTTP attempt came to.
enum Attempt {
    Done(Completion),
    Retry {
        error: LlmError,
        retry_after: Option<Duration>,
    },
    Fail(LlmError),
}

impl LlmClient {
    /// The client for profile `name`, with its key read from the profile's environment variable.
    pub fn from_config(config: &LlmConfig, name: &str) -> Result<Self, ClientError> {
        let profile = config.profile(name)?.clone();
        let key = match &profile.api_key_env {
            Some(var) => Some(ApiKey::from_env(name, var)?),
            None => None,
        };
        Self::new(name, profile, key)
    }

    pub fn new(
        name: impl Into<String>,
        profile: Profile,
        key: Option<ApiKey>,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(profile.request_timeout().min(Duration::from_secs(30)))
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let endpoint = format!(
            "{}/chat/completions",
            profile.base_url.trim_end_matches('/')
        );
        Ok(LlmClient {
            name: name.into(),
            limit: Arc::new(Semaphore::new(profile.max_concurrency)),
            profile,
            key,
            endpoint,
            http,
        })
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The request body for these messages: model, messages, the profile's sampling settings
    /// and its `extra_body`.
    pub fn request_body(&self, messages: &[ChatMessage]) -> Value {
        let mut body = serde_json::Map::new();
        for (k, v) in &self.profile.extra_body {
            // toml values always convert to JSON; a failure here would be a serde bug.
            if let Ok(j) = serde_json::to_value(v) {
                body.insert(k.clone(), j);
            }
        }
        body.insert("model".into(), json!(self.profile.model));
        body.insert("messages".into(), json!(messages));
        body.insert("stream".into(), json!(false));
        if let Some(t) = self.profile.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(m) = self.profile.max_tokens {
            body.insert("max_tokens".into(), json!(m));
        }
        Value::Object(body)
    }

    /// Sends one chat request, retrying transient failures. Never panics; the record is always
    /// filled, whatever happened.
    pub async fn chat(&self, role: &str, messages: &[ChatMessage]) -> LlmCall {
        let body = self.request_body(messages);
        let prompt_text: String = messages.iter().map(|m| m.content.as_str()).collect();
        let started = Instant::now();
        let started_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut record = LlmCallRecord {
            role: role.to_string(),
            profile: self.name.clone(),
            provider: self.profile.provider_label(),
            model: self.profile.model.clone(),
            started_at_unix_ms,
            tokens_in: 0,
            tokens_out: 0,
            usage_estimated: false,
            cost_usd: 0.0,
            latency_ms: 0,
            attempts: 0,
            request: body.clone(),
            response: None,
            finish_reason: None,
            error: None,
            attempt_errors: Vec::new(),
        };
        let max_attempts = self.profile.max_retries.saturating_add(1);
        let outcome = loop {
            record.attempts += 1;
            let attempt = self.attempt(&body, &prompt_text, &mut record).await;
            match attempt {
                Attempt::Done(c) => break Ok(c),
                Attempt::Fail(e) => {
                    record.attempt_errors.push(self.redact(&e.to_string()));
                    break Err(e);
                }
                Attempt::Retry { error, retry_after } => {
                    record.attempt_errors.push(self.redact(&error.to_string()));
                    if record.attempts >= max_attempts {
                        break Err(error);
                    }
                    let wait = match retry_after {
                        Some(ra) if ra.as_secs_f64() > self.profile.max_retry_after_s => {
                            break Err(LlmError::RetryAfterTooLong {
                                wait_s: ra.as_secs_f64(),
                                cap_s: self.profile.max_retry_after_s,
                            });
                        }
                        // A little jitter on top, so clients told the same instant do not
                        // return in lockstep.
                        Some(ra) => {
                            ra + verifier::seconds::clamped(
                                ra.as_secs_f64() * 0.1 * fastrand::f64(),
                            )
                        }
                        None => backoff_delay(&self.profile, record.attempts - 1),
                    };
                    tracing::warn!(
                        profile = %self.name,
                        attempt = record.attempts,
                        wait_ms = wait.as_millis() as u64,
                        error = %self.redact(&error.to_string()),
                        "LLM call failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        };
        record.latency_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            Ok(c) => {
                record.tokens_in = c.usage.tokens_in;
                record.tokens_out = c.usage.tokens_out;
                record.usage_estimated = c.usage.estimated;
                record.cost_usd = self.profile.cost_usd(c.usage.tokens_in, c.usage.tokens_out);
                record.finish_reason = Some(c.finish_reason.as_str().to_string());
            }
            Err(e) => record.error = Some(self.redact(&e.to_string())),
        }
        LlmCall { record, outcome }
    }

    async fn attempt(
        &self,
        body: &Value,
        prompt_text: &str,
        record: &mut LlmCallRecord,
    ) -> Attempt {
        let timeout = self.profile.request_timeout();
        // Held for the HTTP exchange only, not across backoff sleeps.
        let _permit = match self.limit.acquire().await {
            Ok(p) => p,
            Err(_) => return Attempt::Fail(LlmError::Transport("client was shut down".into())),
        };
        let mut req = self.http.post(&self.endpoint).json(body).timeout(timeout);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key.expose());
        }
        // The outer timeout also covers reading the body, whatever reqwest's own accounting.
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let retry_after = retry_after(resp.headers(), SystemTime::now());
            let text = resp.text().await?;
            Ok::<_, reqwest::Error>((status, retry_after, text))
        };
        let (status, retry_after, text) = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                return Attempt::Retry {
                    error: LlmError::Timeout {
                        after_s: timeout.as_secs_f64(),
                    },
                    retry_after: None,
                }
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Attempt::Retry {
                    error: LlmError::Timeout {
                        after_s: timeout.as_secs_f64(),
                    },
                    retry_after: None,
                }
            }
            Ok(Err(e)) => {
                return Attempt::Retry {
                    error: LlmError::Transport(self.redact(&error_chain(&e))),
                    retry_after: None,
                }
            }
            Ok(Ok(x)) => x,
        };
        record.response = Some(self.redact(&text));
        if (200..300).contains(&status) {
            return match parse_completion(&text, prompt_text) {
                Ok(c) => Attempt::Done(c),
                // A 2xx that is not JSON is usually a proxy page or a cut connection.
                Err(e @ ParseError::NotJson(_)) => Attempt::Retry {
                    error: e.into(),
                    retry_after,
                },
                Err(ParseError::ErrorObject { message, code }) => {
                    let e = LlmError::Reply(ParseError::ErrorObject {
                        message: self.redact(&message),
                        code,
                    });
                    if code.is_some_and(is_retryable_status) {
                        Attempt::Retry {
                            error: e,
                            retry_after,
                        }
                    } else {
                        Attempt::Fail(e)
                    }
                }
                Err(e) => Attempt::Fail(e.into()),
            };
        }
        let error = LlmError::Http {
            status,
            message: self.redact(&error_summary(&text)),
        };
        if is_retryable_status(status) {
            Attempt::Retry { error, retry_after }
        } else {
            Attempt::Fail(error)
        }
    }

    fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(k) => k.redact(text),
            None => text.to_string(),
        }
    }
}

/// Clients by profile name, created on first use. Roles that name the same profile (Coder and
/// Judge on one endpoint) share one client and so one concurrency limit.
pub struct ClientPool {
    config: LlmConfig,
    clients: std::sync::Mutex<std::collections::BTreeMap<String, LlmClient>>,
}

impl ClientPool {
    pub fn new(config: LlmConfig) -> Self {
        ClientPool {
            config,
            clients: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The shared client for profile `name` (its key is read from the environment once).
    pub fn get(&self, name: &str) -> Result<LlmClient, ClientError> {
        // A panic elsewhere while holding the lock leaves the map itself intact.
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(name) {
            return Ok(c.clone());
        }
        let c = LlmClient::from_config(&self.config, name)?;
        clients.insert(name.to_string(), c.clone());
        Ok(c)
    }
}

fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// reqwest's top-level message is often just "error sending request"; the cause says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    shorten(&s, 500)
}

/// Exponential backoff with "equal jitter": half the delay is fixed, half random.
pub fn backoff_delay(profile: &Profile, retry_index: u32) -> Duration {
    let base = profile.backoff_base_ms as f64 / 1000.0;
    let exp = base * 2f64.powi(retry_index.min(30) as i32);
    let capped = exp.min(profile.backoff_max_s).max(0.0);
    verifier::seconds::clamped(capped / 2.0 + capped / 2.0 * fastrand::f64())
}

/// Parses `retry-after-ms` (OpenAI), then `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(verifier::seconds::clamped(ms / 1000.0));
    }
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(raw, now)
}

/// `Retry-After: 120`, `Retry-After: 1.5` (seen in the wild), or an HTTP date. A date in the past
/// means "now"; an absurdly long wait is [`verifier::seconds::LONGEST`] (which
/// `max_retry_after_s` then refuses).
pub fn parse_retry_after(raw: &str, now: SystemTime) -> Option<Duration> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| verifier::seconds::clamped(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Some(Duration::from_millis(1500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);
        // Found by fuzzing: a number of seconds too large for a Duration panicked.
        let huge = format!("\r{}\n", "8".repeat(38));
        assert_eq!(
            parse_retry_after(&huge, now),
            Some(verifier::seconds::LONGEST)
        );
        assert_eq!(
            parse_retry_after("1e300", now),
            Some(verifier::seconds::LONGEST)
        );
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after-ms", "1e300".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(verifier::seconds::LONGEST));
    }

    #[test]
    fn retry_after_ms_header_wins() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after-ms", "250".parse().expect("header value"));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "9".parse().expect("header value"),
        );
        assert_eq!(
            retry_after(&h, SystemTime::now()),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let mut p = Profile::new("http://x/v1", "m");
        p.backoff_base_ms = 1000;
        p.backoff_max_s = 5.0;
        for _ in 0..50 {
            let d0 = backoff_delay(&p, 0).as_secs_f64();
            assert!((0.5..=1.0).contains(&d0), "{d0}");
            let d2 = backoff_delay(&p, 2).as_secs_f64();
            assert!((2.0..=4.0).contains(&d2), "{d2}");
            let d9 = backoff_delay(&p, 9).as_secs_f64();
            assert!((2.5..=5.0).contains(&d9), "{d9}");
        }
        let distinct: std::collections::BTreeSet<u128> =
            (0..20).map(|_| backoff_delay(&p, 3).as_nanos()).collect();
        assert!(distinct.len() > 1, "backoff is not jittered");
        // Absurd limits in a config file clamp instead of panicking.
        p.backoff_max_s = 1e300;
        p.backoff_base_ms = u64::MAX;
        assert!(backoff_delay(&p, 30) <= verifier::seconds::LONGEST);
        p.request_timeout_s = 1e300;
        assert_eq!(p.request_timeout(), verifier::seconds::LONGEST);
    }

    #[test]
    fn request_body_carries_profile_settings() {
        let mut p = Profile::new("http://x/v1/", "m1");
        p.temperature = Some(0.2);
        p.max_tokens = Some(100);
        p.extra_body.insert(
            "reasoning_effort".into(),
            toml::Value::String("high".into()),
        );
        let c = LlmClient::new("p", p, None).expect("client");
        assert_eq!(c.endpoint, "http://x/v1/chat/completions");
        let b = c.request_body(&[ChatMessage::user("hi")]);
        assert_eq!(b["model"], "m1");
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["max_tokens"], 100);
        assert_eq!(b["reasoning_effort"], "high");
        assert_eq!(b["messages"][0]["content"], "hi");
    }
}
