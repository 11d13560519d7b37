//! LLM access: profiles from a config file, an OpenAI-compatible chat client with retries and
//! accounting, and lenient reply parsing.

mod client;
mod config;
mod response;

pub use client::{
    backoff_delay, parse_retry_after, retry_after, ChatMessage, ClientError, ClientPool, LlmCall,
    LlmCallRecord, LlmClient, LlmError,
};
pub use config::{ApiKey, ConfigError, LlmConfig, Profile};
pub use response::{
    error_summary, estimate_tokens, parse_completion, Completion, FinishReason, ParseError, Usage,
};
