//! Lenient parsing of OpenAI-compatible chat-completion replies. Servers differ: vLLM, SGLang,
//! Ollama, llama.cpp, OpenRouter and DeepSeek add fields (`reasoning_content`, `reasoning`,
//! `provider`), send `finish_reason: ""` or null, put content in parts arrays, or omit `usage`.
//! Only `choices[0].message.content` (or `choices[0].text`) is required.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why the model stopped, normalized; unknown spellings are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    /// Hit `max_tokens` or the context limit: the reply is probably cut off.
    Length,
    ContentFilter,
    ToolCalls,
    /// Missing, null or empty.
    Unknown,
    Other(String),
}

impl FinishReason {
    fn from_json(v: Option<&Value>) -> Self {
        let s = match v {
            Some(Value::String(s)) => s.trim().to_ascii_lowercase(),
            Some(Value::Null) | None => return FinishReason::Unknown,
            Some(other) => return FinishReason::Other(other.to_string()),
        };
        match s.as_str() {
            "" => FinishReason::Unknown,
            "stop" | "eos" | "end_turn" | "stop_sequence" => FinishReason::Stop,
            "length" | "max_tokens" | "model_length" => FinishReason::Length,
            "content_filter" => FinishReason::ContentFilter,
            "tool_calls" | "function_call" | "tool_use" => FinishReason::ToolCalls,
            _ => FinishReason::Other(s),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Unknown => "unknown",
            FinishReason::Other(s) => s,
        }
    }
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// True when the server sent no usage and the counts are estimated from text length.
    pub estimated: bool,
}

/// What a successful call yields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub content: String,
    /// Reasoning text some servers return apart from the content (`reasoning_content`).
    pub reasoning: Option<String>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// The model the server says answered (may differ from the requested one).
    pub model: Option<String>,
}

/// Why a 2xx body could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("reply is not JSON ({0})")]
    NotJson(String),
    #[error("reply carries an error object: {message}")]
    ErrorObject {
        message: String,
        /// The numeric code inside the error object when there is one (OpenRouter relays
        /// upstream 429/5xx this way with HTTP 200).
        code: Option<u16>,
    },
    #[error("reply has no choices[0].message.content or choices[0].text")]
    NoContent,
}

/// Rough token estimate when a server reports no usage: about 4 characters per token for English
/// and code. It only feeds budgets, flagged as estimated.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Parses a 2xx body. `prompt_chars_text` is the concatenated prompt, for estimating usage.
pub fn parse_completion(body: &str, prompt_text: &str) -> Result<Completion, ParseError> {
    let v: Value = serde_json::from_str(body.trim_start_matches('\u{feff}'))
        .map_err(|e| ParseError::NotJson(e.to_string()))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        return Err(error_object(err));
    }
    let choice = v
        .get("choices")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first())
        .ok_or(ParseError::NoContent)?;
    let message = choice.get("message").or_else(|| choice.get("delta"));
    let content = message
        .and_then(|m| m.get("content"))
        .and_then(content_text)
        .or_else(|| {
            choice
                .get("text")
                .and_then(|t| t.as_str())
                .map(String::from)
        });
    let reasoning = message.and_then(|m| {
        ["reasoning_content", "reasoning"]
            .iter()
            .find_map(|k| m.get(*k).and_then(|r| r.as_str()))
            .filter(|r| !r.is_empty())
            .map(String::from)
    });
    // A reasoning model cut off while thinking has null content; that is still a reply (empty),
    // and its finish_reason tells the caller what happened.
    let content = match (content, &reasoning) {
        (Some(c), _) => c,
        (None, Some(_)) => String::new(),
        (None, None) => return Err(ParseError::NoContent),
    };
    let finish_reason = FinishReason::from_json(choice.get("finish_reason"));
    let usage = parse_usage(v.get("usage")).unwrap_or_else(|| Usage {
        tokens_in: estimate_tokens(prompt_text),
        tokens_out: estimate_tokens(&content)
            + reasoning.as_deref().map(estimate_tokens).unwrap_or(0),
        estimated: true,
    });
    let model = v.get("model").and_then(|m| m.as_str()).map(String::from);
    Ok(Completion {
        content,
        reasoning,
        finish_reason,
        usage,
        model,
    })
}

/// `content` may be a string or an array of parts `[{type: "text", text: "..."}]`.
fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let text: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()).or(p.as_str()))
                .collect();
            if text.is_empty() {
                None
            } else {
                Some(text.concat())
            }
        }
        _ => None,
    }
}

fn parse_usage(v: Option<&Value>) -> Option<Usage> {
    let u = v?;
    let num = |keys: &[&str]| {
        keys.iter().find_map(|k| {
            let x = u.get(*k)?;
            x.as_u64().or_else(|| x.as_f64().map(|f| f.max(0.0) as u64))
        })
    };
    let tokens_in = num(&["prompt_tokens", "input_tokens"]);
    let tokens_out = num(&["completion_tokens", "output_tokens"]);
    match (tokens_in, tokens_out) {
        (Some(i), Some(o)) => Some(Usage {
            tokens_in: i,
            tokens_out: o,
            estimated: false,
        }),
        (Some(i), None) => {
            let total = num(&["total_tokens"])?;
            Some(Usage {
                tokens_in: i,
                tokens_out: total.saturating_sub(i),
                estimated: false,
            })
        }
        _ => None,
    }
}

fn error_object(err: &Value) -> ParseError {
    let message = err
        .get("message")
        .and_then(|m| m.as_str())
        .map(String::from)
        .unwrap_or_else(|| match err {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    let code = err.get("code").and_then(|c| {
        c.as_u64()
            .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u16::try_from(n).ok())
    });
    ParseError::ErrorObject { message, code }
}

/// Best-effort message from a non-2xx body (OpenAI-style `{"error": {...}}` or anything else),
/// shortened for records and error text.
pub fn error_summary(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.get("error").map(|e| match error_object(e) {
            ParseError::ErrorObject { message, .. } => message,
            other => other.to_string(),
        })
    });
    let text = from_json.unwrap_or_else(|| body.trim().to_string());
    shorten(&text, 300)
}

pub(crate) fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let cut: String = s.chars().take(max_chars).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_openai_reply() {
        let body = r#"{"id":"x","object":"chat.completion","model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
        let c = parse_completion(body, "prompt").expect("parses");
        assert_eq!(c.content, "hi");
        assert_eq!(c.finish_reason, FinishReason::Stop);
        assert_eq!(
            c.usage,
            Usage {
                tokens_in: 12,
                tokens_out: 3,
                estimated: false
            }
        );
        assert_eq!(c.model.as_deref(), Some("gpt-x"));
    }

    #[test]
    fn quirks_are_tolerated() {
        let body = r#"{"choices":[{"message":{"content":"ok","reasoning_content":"hmm","tool_calls":[]},"finish_reason":"","logprobs":null,"stop_reason":151645}],"system_fingerprint":null,"usage":{"prompt_tokens":5,"total_tokens":9,"prompt_tokens_details":{"cached_tokens":0}}}"#;
        let c = parse_completion(body, "p").expect("parses");
        assert_eq!(c.reasoning.as_deref(), Some("hmm"));
        assert_eq!(c.finish_reason, FinishReason::Unknown);
        assert_eq!(c.usage.tokens_out, 4);
        assert!(!c.usage.estimated);
    }

    #[test]
    fn odd_finish_reasons() {
        for (raw, want) in [
            ("null", FinishReason::Unknown),
            ("\"MAX_TOKENS\"", FinishReason::Length),
            ("\"eos\"", FinishReason::Stop),
            ("\"abort\"", FinishReason::Other("abort".into())),
            ("7", FinishReason::Other("7".into())),
        ] {
            let body =
                format!(r#"{{"choices":[{{"message":{{"content":"x"}},"finish_reason":{raw}}}]}}"#);
            assert_eq!(
                parse_completion(&body, "").expect("parses").finish_reason,
                want
            );
        }
    }

    #[test]
    fn missing_usage_is_estimated_and_flagged() {
        let body = r#"{"choices":[{"message":{"content":"12345678"}}]}"#;
        let c = parse_completion(body, "abcd").expect("parses");
        assert_eq!(
            c.usage,
            Usage {
                tokens_in: 1,
                tokens_out: 2,
                estimated: true
            }
        );
        assert_eq!(c.finish_reason, FinishReason::Unknown);
    }

    #[test]
    fn content_parts_and_legacy_text() {
        let parts = r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#;
        assert_eq!(parse_completion(parts, "").expect("parts").content, "ab");
        let legacy = r#"{"choices":[{"text":"old","finish_reason":"length"}]}"#;
        let c = parse_completion(legacy, "").expect("legacy");
        assert_eq!(c.content, "old");
        assert_eq!(c.finish_reason, FinishReason::Length);
    }

    #[test]
    fn reasoning_only_reply_is_empty_content() {
        let body = r#"{"choices":[{"message":{"content":null,"reasoning":"thinking..."},"finish_reason":"length"}]}"#;
        let c = parse_completion(body, "").expect("parses");
        assert_eq!(c.content, "");
        assert_eq!(c.finish_reason, FinishReason::Length);
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        assert!(matches!(
            parse_completion("<html>bad gateway</html>", ""),
            Err(ParseError::NotJson(_))
        ));
        assert!(matches!(
            parse_completion(r#"{"choices":[{"message":{"con"#, ""),
            Err(ParseError::NotJson(_))
        ));
        assert_eq!(
            parse_completion(r#"{"choices":[]}"#, ""),
            Err(ParseError::NoContent)
        );
        assert_eq!(
            parse_completion(r#"{"choices":[{"message":{"role":"assistant"}}]}"#, ""),
            Err(ParseError::NoContent)
        );
        assert_eq!(
            parse_completion(
                r#"{"error":{"message":"upstream overloaded","code":502}}"#,
                ""
            ),
            Err(ParseError::ErrorObject {
                message: "upstream overloaded".into(),
                code: Some(502)
            })
        );
    }

    #[test]
    fn error_summaries() {
        assert_eq!(
            error_summary(r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#),
            "Rate limit reached"
        );
        assert_eq!(error_summary("  Too Many Requests \n"), "Too Many Requests");
        assert_eq!(error_summary(r#"{"error":"quota"}"#), "quota");
        let long = "x".repeat(1000);
        assert_eq!(error_summary(&long).chars().count(), 301);
    }
}
