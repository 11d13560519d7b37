//! The LLM profiles file a user writes.
#![no_main]

use agent::llm::LlmConfig;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = LlmConfig::parse(text, Path::new("fuzz/llm.toml"));
});
