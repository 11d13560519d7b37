//! What an LLM endpoint sends back: the HTTP body, the reply text in it, Retry-After headers.
#![no_main]

use agent::extract;
use agent::llm::{error_summary, parse_completion, parse_retry_after};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_completion(text, "prompt");
    let _ = error_summary(text);
    let _ = extract::extract_kernel(text);
    let _ = extract::extract_judge_advice(text);
    let _ = extract::strip_reasoning(text);
    let _ = extract::fenced_blocks(text);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let _ = parse_retry_after(text, now);
});
