//! The chat client against a scripted local server that plays provider quirks and failures.

mod support;

use std::time::{Duration, Instant, SystemTime};

use agent::llm::{ApiKey, ChatMessage, FinishReason, LlmClient, LlmConfig, LlmError, Profile};
use support::{ScriptedServer, Step};

/// Every test's client work must finish within this, or the test fails instead of hanging.
const TEST_LIMIT: Duration = Duration::from_secs(20);

fn fast_profile(base_url: &str) -> Profile {
    let mut p = Profile::new(base_url, "test-model");
    p.backoff_base_ms = 10;
    p.backoff_max_s = 0.1;
    p.max_retries = 3;
    p.request_timeout_s = 5.0;
    p.price_input_per_mtok = 2.0;
    p.price_output_per_mtok = 8.0;
    p
}

async fn call(client: &LlmClient) -> agent::llm::LlmCall {
    tokio::time::timeout(
        TEST_LIMIT,
        client.chat(
            "coder",
            &[
                ChatMessage::system("sys"),
                ChatMessage::user("write a kernel"),
            ],
        ),
    )
    .await
    .expect("call finished within the test limit")
}

#[tokio::test]
async fn key_from_env_is_sent_as_bearer_but_never_recorded() {
    const KEY: &str = "sk-scripted-0123456789abcdef";
    const VAR: &str = "KSMITH_AGENT_TEST_KEY_BEARER";
    // This variable name is used by this test only, so parallel tests cannot race on it.
    std::env::set_var(VAR, KEY);
    let server = ScriptedServer::start(vec![
        // Some providers echo the key back in auth errors; a 401 is not retried.
        Step::new(
            401,
            format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#),
        ),
        Step::ok("fine"),
    ]);
    let toml = format!(
        "[profiles.t]\nbase_url = \"{}\"\nmodel = \"m\"\napi_key_env = \"{VAR}\"\nbackoff_base_ms = 10\n",
        server.base_url
    );
    let config = LlmConfig::parse(&toml, std::path::Path::new("t.toml")).expect("config");
    let client = LlmClient::from_config(&config, "t").expect("client");
    assert!(!format!("{client:?}").contains(KEY));

    let failed = call(&client).await;
    assert_eq!(failed.record.attempts, 1, "401 must not be retried");
    let ok = call(&client).await;
    assert_eq!(ok.outcome.as_ref().expect("second call ok").content, "fine");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert!(
            r.request_line.starts_with("POST /v1/chat/completions "),
            "{}",
            r.request_line
        );
    }
    for c in [&failed, &ok] {
        let dbg = format!("{c:?}");
        let json = serde_json::to_string(&c.record).expect("record serializes");
        assert!(!dbg.contains(KEY), "key leaked into Debug: {dbg}");
        assert!(!json.contains(KEY), "key leaked into the record: {json}");
    }
    let err = failed.record.error.as_deref().expect("error recorded");
    assert!(err.contains("401") && err.contains("[REDACTED]"), "{err}");
}

#[tokio::test]
async fn missing_env_key_is_a_clear_error() {
    let toml = "[profiles.t]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key_env = \"KSMITH_AGENT_TEST_KEY_UNSET\"\n";
    let config = LlmConfig::parse(toml, std::path::Path::new("t.toml")).expect("config");
    let err = LlmClient::from_config(&config, "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("KSMITH_AGENT_TEST_KEY_UNSET"), "{err}");
}

#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    let server = ScriptedServer::start(vec![
        Step::new(429, r#"{"error":{"message":"Rate limit reached"}}"#).header("Retry-After", "1"),
        Step::ok("after wait"),
    ]);
    let client = LlmClient::new("t", fast_profile(&server.base_url), None).expect("client");
    let c = call(&client).await;
    assert_eq!(c.outcome.expect("ok").content, "after wait");
    assert_eq!(c.record.attempts, 2);
    assert!(c.record.attempt_errors[0].contains("429"));
    assert!(c.record.attempt_errors[0].contains("Rate limit reached"));
    let reqs = server.requests();
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
    assert!(gap < Duration::from_secs(3), "waited {gap:?}");
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    let server = ScriptedServer::start(vec![
        Step::new(503, "").header("Retry-After", &at),
        Step::ok("dated"),
    ]);
    let client = LlmClient::new("t", fast_profile(&server.base_url), None).expect("client");
    let c = call(&client).await;
    assert_eq!(c.outcome.expect("ok").content, "dated");
    let reqs = server.requests();
    let gap = reqs[1].at.duration_since(reqs[0].at);
    // An HTTP date has whole-second resolution: 2 s ahead is at least 1 s away.
    assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
    assert!(gap < Duration::from_secs(4), "waited {gap:?}");
}

#[tokio::test]
async fn retry_after_longer_than_the_cap_ends_the_call() {
    let server = ScriptedServer::start(vec![
        Step::new(429, "slow down").header("Retry-After", "3600"),
        Step::ok("never"),
    ]);
    let mut p = fast_profile(&server.base_url);
    p.max_retry_after_s = 5.0;
    let client = LlmClient::new("t", p, None).expect("client");
    let started = Instant::now();
    let c = call(&client).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(c.outcome, Err(LlmError::RetryAfterTooLong { .. })),
        "{:?}",
        c.outcome
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn plain_text_429_without_retry_after_backs_off_and_retries() {
    let server = ScriptedServer::start(vec![
        Step::new(429, "<html><body>Too Many Requests</body></html>")
            .header("content-type", "text/html"),
        Step::ok("second time lucky"),
    ]);
    let client = LlmClient::new("t", fast_profile(&server.base_url), None).expect("client");
    let c = call(&client).await;
    assert_eq!(c.outcome.expect("ok").content, "second time lucky");
    assert_eq!(c.record.attempts, 2);
    assert!(
        c.record.attempt_errors[0].contains("Too Many Requests"),
        "{:?}",
        c.record.attempt_errors
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_accounted() {
    let server = ScriptedServer::start(vec![
        Step::new(500, "internal"),
        Step::new(502, "bad gateway"),
        Step::new(503, r#"{"error":{"message":"overloaded"}}"#),
        Step::ok("finally"),
    ]);
    let client = LlmClient::new("t", fast_profile(&server.base_url), None).expect("client");
    let c = call(&client).await;
    assert_eq!(c.outcome.as_ref().expect("ok").content, "finally");
    let r = &c.record;
    assert_eq!(r.attempts, 4);
    assert_eq!(r.attempt_errors.len(), 3);
    assert_eq!(
        (r.tokens_in, r.tokens_out, r.usage_estimated),
        (100, 50, false)
    );
    // 100 * $2/M + 50 * $8/M
    assert!((r.cost_usd - 0.0006).abs() < 1e-12, "{}", r.cost_usd);
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.role, "coder");
    assert_eq!(r.model, "test-model");
    assert_eq!(
        r.provider,
        server
            .base_url
            .trim_start_matches("http://")
            .trim_end_matches("/v1")
    );
    assert_eq!(r.request["messages"][1]["content"], "write a kernel");
    assert!(r.error.is_none());
}

#[tokio::test]
async fn persistent_500_gives_up_after_max_retries() {
    let server = ScriptedServer::start(vec![Step::new(500, "down"); 10]);
    let mut p = fast_profile(&server.base_url);
    p.max_retries = 2;
    let client = LlmClient::new("t", p, None).expect("client");
    let c = call(&client).await;
    assert_eq!(
        c.outcome.unwrap_err(),
        LlmError::Http {
            status: 500,
            message: "down".into()
        }
    );
    assert_eq!(c.record.attempts, 3);
    assert_eq!(server.requests().len(), 3);
    assert_eq!(c.record.cost_usd, 0.0);
    assert_eq!(c.record.response.as_deref(), Some("down"));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = ScriptedServer::start(vec![
        Step::new(400, r#"{"error":{"message":"max_tokens is too large"}}"#),
        Step::ok("unused"),
    ]);
    let client = LlmClient::new("t", fast_profile(&server.base_url), None).expect("client");
    let c = call(&client).await;
    assert_eq!(
        c.outcome.unwrap_err(),
        LlmError::Http {
            status: 400,
            message: "max_tokens is too large".into()
        }
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_reply_slower_than_the_timeout_is_retried() {
    let server = ScriptedServer::start(vec![
        Step::ok("too late").delay(Duration::from_secs(3)),
        Step::ok("in time"),
    ]);
    let mut p = fast_profile(&server.base_url);
    p.request_timeout_s = 0.4;
    let client = LlmClient::new("t", p, None).expect("client");
    let started = Instant::now();
    let c = call(&client).await;
    assert_eq!(c.outcome.expect("ok").content, "in time");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        c.record.attempt_errors[0].contains("0.4 s"),
        "{:?}",
        c.record.attempt_errors
    );
}

#[tokio::test]
async fn timeouts_every_time_end_in_a_timeout_error() {
    let server = ScriptedServer::start(vec![Step::ok("late").delay(Duration::from_secs(2)); 3]);
    let mut p = fast_profile(&server.base_url);
    p.request_timeout_s = 0.2;
    p.max_retries = 1;
    let client = LlmClient::new("t", p, None).expect("client");
    let c = call(&client).await;
    assert!(
        matches!(c.outcome, Err(LlmError::Timeout { .. })),
        "{:?}",
        c.outcome
    );
    assert_eq!(c.record.attempts, 2);
}

#[tokio::test]
async fn malformed_json_is_retried_and_finally_reported() {
    let server = ScriptedServer::start(vec![
        Step::new(200, r#"{"choices":[{"message":{"content":"cut"#),
        Step::ok("whole"),
    ]);
    let client = LlmClient::new("t", fast_profile(&server.base_url), None).expect("client");
    let c = call(&client).await;
    assert_eq!(c.outcome.expect("ok").content, "whole");
    assert!(c.record.attempt_errors[0].contains("not JSON"));

    let server = ScriptedServer::start(vec![Step::new(200, "<html>proxy</html>"); 5]);
    let mut p = fast_profile(&server.base_url);
    p.max_retries = 1;
    let client = LlmClient::new("t", p, None).expect("client");
    let c = call(&client).await;
    assert!(
        matches!(c.outcome, Err(LlmError::Reply(_))),
        "{:?}",
        c.outcome
    );
    assert_eq!(c.record.response.as_deref(), Some("<html>proxy</html>"));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn quirky_reply_without_usage_is_estimated_and_flagged() {
    let body = r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"abcdefgh","reasoning_content":"let me think","provider_specific":{"a":1}},"finish_reason":""}],"created":1,"x_groq":{"id":"q"}}"#;
    let server = ScriptedServer::start(vec![Step::new(200, body)]);
    let client = LlmClient::new("t", fast_profile(&server.base_url), None).expect("client");
    let c = call(&client).await;
    let done = c.outcome.expect("ok");
    assert_eq!(done.content, "abcdefgh");
    assert_eq!(done.reasoning.as_deref(), Some("let me think"));
    assert_eq!(done.finish_reason, FinishReason::Unknown);
    assert!(c.record.usage_estimated);
    // "sys" + "write a kernel" = 17 chars -> 5 tokens; "abcdefgh" + "let me think" -> 2 + 3.
    assert_eq!((c.record.tokens_in, c.record.tokens_out), (5, 5));
    assert!(c.record.cost_usd > 0.0);
    assert_eq!(c.record.finish_reason.as_deref(), Some("unknown"));
}

#[tokio::test]
async fn error_object_with_http_200_is_retried_when_transient() {
    let server = ScriptedServer::start(vec![
        Step::new(
            200,
            r#"{"error":{"message":"Provider returned error","code":429}}"#,
        ),
        Step::ok("recovered"),
        Step::new(
            200,
            r#"{"error":{"message":"context too long","code":400}}"#,
        ),
        Step::ok("unused"),
    ]);
    let client = LlmClient::new("t", fast_profile(&server.base_url), None).expect("client");
    let c = call(&client).await;
    assert_eq!(c.outcome.expect("ok").content, "recovered");
    let c = call(&client).await;
    assert_eq!(c.record.attempts, 1);
    assert!(c
        .record
        .error
        .as_deref()
        .is_some_and(|e| e.contains("context too long")));
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut p = fast_profile(&format!("http://127.0.0.1:{port}/v1"));
    p.max_retries = 2;
    let client = LlmClient::new("t", p, None).expect("client");
    let c = call(&client).await;
    assert!(
        matches!(c.outcome, Err(LlmError::Transport(_))),
        "{:?}",
        c.outcome
    );
    assert_eq!(c.record.attempts, 3);
    assert!(c.record.response.is_none());
}

#[tokio::test]
async fn concurrency_limit_serializes_requests() {
    let delay = Duration::from_millis(300);
    for (limit, serialized) in [(1usize, true), (2, false)] {
        let server = ScriptedServer::start(vec![Step::ok("x").delay(delay); 2]);
        let mut p = fast_profile(&server.base_url);
        p.max_concurrency = limit;
        let client = LlmClient::new("t", p, None).expect("client");
        let (a, b) = tokio::join!(call(&client), call(&client));
        assert!(a.outcome.is_ok() && b.outcome.is_ok());
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        let gap = if reqs[1].at > reqs[0].at {
            reqs[1].at.duration_since(reqs[0].at)
        } else {
            reqs[0].at.duration_since(reqs[1].at)
        };
        if serialized {
            assert!(
                gap >= Duration::from_millis(280),
                "limit {limit}: gap {gap:?}"
            );
        } else {
            assert!(
                gap < Duration::from_millis(200),
                "limit {limit}: gap {gap:?}"
            );
        }
    }
}

#[test]
fn api_key_type_hides_itself() {
    let k = ApiKey::new("sk-never-print-me");
    assert!(!format!("{k:?}").contains("never-print"));
}

#[tokio::test]
async fn truncated_code_reply_becomes_feedback() {
    let content = "Plan first:\n```toml\n[[launch]]\nkernel = \"k\"\ngrid = [\"N\"]\nblock = [128]\nargs = [\"x\", \"N\"]\n```\nNow the kernel:\n```cuda\nextern \"C\" __global__ void k(float* x, int n) {\n    int i = blockIdx.x;\n    if (i < n) {\n        x[i] = ";
    let body = serde_json::json!({
        "choices": [{"message": {"content": content}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4096}
    });
    let server = ScriptedServer::start(vec![Step::new(200, body.to_string())]);
    let client = LlmClient::new("t", fast_profile(&server.base_url), None).expect("client");
    let c = call(&client).await;
    let done = c.outcome.expect("a cut-off reply is still a reply");
    assert_eq!(done.finish_reason, FinishReason::Length);
    assert_eq!(c.record.finish_reason.as_deref(), Some("length"));
    let err = agent::extract::extract_kernel(&done.content).unwrap_err();
    assert_eq!(err, agent::extract::ExtractError::TruncatedKernel);
    assert!(err.feedback().contains("cut off"));
    // The raw reply is kept in the record for the store.
    assert!(c
        .record
        .response
        .as_deref()
        .is_some_and(|r| r.contains("x[i] = ")));
}

#[tokio::test]
async fn pooled_clients_of_one_profile_share_the_concurrency_limit() {
    let delay = Duration::from_millis(300);
    let server = ScriptedServer::start(vec![Step::ok("x").delay(delay); 2]);
    let toml = format!(
        "[profiles.shared]\nbase_url = \"{}\"\nmodel = \"m\"\nmax_concurrency = 1\n",
        server.base_url
    );
    let config = LlmConfig::parse(&toml, std::path::Path::new("t.toml")).expect("config");
    let pool = agent::llm::ClientPool::new(config);
    let coder = pool.get("shared").expect("coder client");
    let judge = pool.get("shared").expect("judge client");
    assert!(pool.get("missing").is_err());
    let (a, b) = tokio::join!(call(&coder), call(&judge));
    assert!(a.outcome.is_ok() && b.outcome.is_ok());
    let reqs = server.requests();
    let (t0, t1) = (reqs[0].at.min(reqs[1].at), reqs[0].at.max(reqs[1].at));
    assert!(t1.duration_since(t0) >= Duration::from_millis(280));
}

#[tokio::test]
async fn a_body_that_stalls_after_the_headers_times_out() {
    let server = ScriptedServer::start(vec![
        Step::ok("stalled").stall_mid_body(20, Duration::from_secs(3)),
        Step::ok("whole"),
    ]);
    let mut p = fast_profile(&server.base_url);
    p.request_timeout_s = 0.4;
    let client = LlmClient::new("t", p, None).expect("client");
    let started = Instant::now();
    let c = call(&client).await;
    assert_eq!(c.outcome.expect("ok").content, "whole");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c.record.attempts, 2);
    assert!(
        c.record.attempt_errors[0].contains("0.4 s"),
        "{:?}",
        c.record.attempt_errors
    );
}
