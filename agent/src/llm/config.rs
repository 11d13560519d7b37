//! LLM profiles read from a TOML file. A profile names an OpenAI-compatible endpoint, the model,
//! and the *name* of the environment variable that holds the key: keys never live in files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors from reading or resolving the LLM configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read LLM config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: profile `{profile}`: {message}")]
    Invalid {
        path: PathBuf,
        profile: String,
        message: String,
    },
    #[error("no LLM profile named `{name}` (known: {known})")]
    UnknownProfile { name: String, known: String },
    #[error(
        "profile `{profile}` takes its API key from the environment variable `{var}`, which is not set or empty"
    )]
    MissingKey { profile: String, var: String },
}

/// The whole config file: `[profiles.NAME]` tables.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One named endpoint + model + limits. Serializing a profile is safe: it holds no secret.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Base URL up to and including the version segment, e.g. `https://api.openai.com/v1`;
    /// `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable holding the API key; absent for local servers.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Free-form provider label for records (defaults to the URL's host).
    #[serde(default)]
    pub provider: Option<String>,
    /// US dollars per million prompt tokens.
    #[serde(default)]
    pub price_input_per_mtok: f64,
    /// US dollars per million completion tokens (reasoning tokens are billed as output).
    #[serde(default)]
    pub price_output_per_mtok: f64,
    /// Requests in flight at once for this profile.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Per-attempt limit for the whole HTTP exchange, in seconds.
    #[serde(default = "default_timeout_s")]
    pub request_timeout_s: f64,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Retries after the first attempt on 408/429/5xx, connection errors and timeouts.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff delay in milliseconds; doubles per retry, with jitter.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Cap on one computed backoff delay, in seconds.
    #[serde(default = "default_backoff_max_s")]
    pub backoff_max_s: f64,
    /// A server's Retry-After longer than this ends the call instead of waiting.
    #[serde(default = "default_max_retry_after_s")]
    pub max_retry_after_s: f64,
    /// Extra JSON fields merged into every request body (e.g. `reasoning_effort = "high"`).
    #[serde(default)]
    pub extra_body: BTreeMap<String, toml::Value>,
}

fn default_concurrency() -> usize {
    4
}
fn default_timeout_s() -> f64 {
    600.0
}
fn default_max_retries() -> u32 {
    5
}
fn default_backoff_base_ms() -> u64 {
    1000
}
fn default_backoff_max_s() -> f64 {
    60.0
}
fn default_max_retry_after_s() -> f64 {
    300.0
}

impl Profile {
    /// A profile with the defaults above, for code and tests that build one by hand.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Profile {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: None,
            provider: None,
            price_input_per_mtok: 0.0,
            price_output_per_mtok: 0.0,
            max_concurrency: default_concurrency(),
            request_timeout_s: default_timeout_s(),
            temperature: None,
            max_tokens: None,
            max_retries: default_max_retries(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_s: default_backoff_max_s(),
            max_retry_after_s: default_max_retry_after_s(),
            extra_body: BTreeMap::new(),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        verifier::seconds::clamped(self.request_timeout_s)
    }

    /// Provider label for records: the explicit one, else the host of the base URL.
    pub fn provider_label(&self) -> String {
        if let Some(p) = &self.provider {
            return p.clone();
        }
        let without_scheme = self
            .base_url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&self.base_url);
        without_scheme
            .split(['/', '?'])
            .next()
            .unwrap_or(without_scheme)
            .to_string()
    }

    /// Cost in dollars of a call with these token counts.
    pub fn cost_usd(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        (tokens_in as f64 * self.price_input_per_mtok
            + tokens_out as f64 * self.price_output_per_mtok)
            / 1_000_000.0
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "`base_url` must start with http:// or https://, got `{}`",
                self.base_url
            ));
        }
        if self.model.trim().is_empty() {
            return Err("`model` is empty".into());
        }
        if let Some(var) = &self.api_key_env {
            let looks_like_name =
                !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !looks_like_name {
                // Someone may have pasted the key itself here; do not echo it back.
                return Err(
                    "`api_key_env` must be the NAME of an environment variable (letters, digits, _), not the key itself"
                        .into(),
                );
            }
        }
        if self.max_concurrency == 0 {
            return Err("`max_concurrency` must be at least 1".into());
        }
        for (key, v) in [
            ("request_timeout_s", self.request_timeout_s),
            ("backoff_max_s", self.backoff_max_s),
            ("max_retry_after_s", self.max_retry_after_s),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!("`{key}` must be a positive number of seconds"));
            }
        }
        for (key, v) in [
            ("price_input_per_mtok", self.price_input_per_mtok),
            ("price_output_per_mtok", self.price_output_per_mtok),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("`{key}` must be a non-negative number"));
            }
        }
        if let Some(t) = self.temperature {
            if !t.is_finite() || t < 0.0 {
                return Err("`temperature` must be a non-negative number".into());
            }
        }
        for reserved in ["model", "messages", "stream"] {
            if self.extra_body.contains_key(reserved) {
                return Err(format!(
                    "`extra_body` may not set `{reserved}`: the client owns it"
                ));
            }
        }
        Ok(())
    }
}

impl LlmConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates; `path` is only used to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: LlmConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: located_toml_message(text, &e),
        })?;
        for (name, profile) in &config.profiles {
            profile.validate().map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                profile: name.clone(),
                message,
            })?;
        }
        Ok(config)
    }

    pub fn profile(&self, name: &str) -> Result<&Profile, ConfigError> {
        self.profiles
            .get(name)
            .ok_or_else(|| ConfigError::UnknownProfile {
                name: name.to_string(),
                known: if self.profiles.is_empty() {
                    "none".to_string()
                } else {
                    self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })
    }
}

/// toml's message with the line:column of its span, so the user can find the offending key.
fn located_toml_message(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{line}:{col}: {msg}")
        }
        None => msg,
    }
}

/// An API key read from the environment. It has no `Serialize`, and `Debug` hides it, so it cannot
/// leak into records or logs by accident.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn from_env(profile: &str, var: &str) -> Result<Self, ConfigError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(ApiKey(v.trim().to_string())),
            _ => Err(ConfigError::MissingKey {
                profile: profile.to_string(),
                var: var.to_string(),
            }),
        }
    }

    /// For tests and embedders that already hold a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the key in `text`; used on anything that gets recorded.
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "[REDACTED]")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[profiles.ds]
base_url = "https://api.deepseek.com/v1"
model = "deepseek-chat"
api_key_env = "DEEPSEEK_API_KEY"
price_input_per_mtok = 0.27
price_output_per_mtok = 1.10
max_concurrency = 2
request_timeout_s = 120
temperature = 0.6
max_tokens = 8192
extra_body = { reasoning_effort = "high" }

[profiles.local]
base_url = "http://127.0.0.1:8000/v1"
model = "qwen"
"#;

    #[test]
    fn parses_profiles_with_defaults() {
        let c = LlmConfig::parse(GOOD, Path::new("llm.toml")).expect("valid config");
        let ds = c.profile("ds").expect("ds");
        assert_eq!(ds.max_concurrency, 2);
        assert_eq!(ds.max_tokens, Some(8192));
        assert_eq!(ds.provider_label(), "api.deepseek.com");
        assert!((ds.cost_usd(1_000_000, 500_000) - (0.27 + 0.55)).abs() < 1e-9);
        let local = c.profile("local").expect("local");
        assert_eq!(local.api_key_env, None);
        assert_eq!(local.max_retries, 5);
        assert_eq!(local.provider_label(), "127.0.0.1:8000");
        assert_eq!(local.cost_usd(10, 10), 0.0);
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../llm.example.toml");
        let c = LlmConfig::parse(text, Path::new("llm.example.toml")).expect("example parses");
        assert!(c.profiles.len() >= 4);
        for p in c.profiles.values() {
            assert!(p
                .api_key_env
                .as_deref()
                .is_none_or(|v| v.ends_with("_API_KEY")));
        }
    }

    #[test]
    fn unknown_key_is_located() {
        let text = "[profiles.a]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\nmax_tokenz = 5\n";
        let err = LlmConfig::parse(text, Path::new("llm.toml")).unwrap_err();
        let s = err.to_string();
        assert!(s.starts_with("llm.toml: 4:1:"), "{s}");
        assert!(s.contains("max_tokenz"), "{s}");
    }

    #[test]
    fn pasted_key_is_rejected_without_echo() {
        let text = "[profiles.a]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\napi_key_env = \"sk-abc123-secret\"\n";
        let s = LlmConfig::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("profile `a`"), "{s}");
        assert!(!s.contains("sk-abc123-secret"), "{s}");
    }

    #[test]
    fn invalid_values_are_named() {
        for (body, needle) in [
            ("base_url = \"ftp://x\"\nmodel = \"m\"", "base_url"),
            ("base_url = \"http://x\"\nmodel = \" \"", "model"),
            (
                "base_url = \"http://x\"\nmodel = \"m\"\nmax_concurrency = 0",
                "max_concurrency",
            ),
            (
                "base_url = \"http://x\"\nmodel = \"m\"\nrequest_timeout_s = -1",
                "request_timeout_s",
            ),
            (
                "base_url = \"http://x\"\nmodel = \"m\"\nextra_body = { model = \"y\" }",
                "extra_body",
            ),
            ("base_url = 3\nmodel = \"m\"", "2:12"),
        ] {
            let text = format!("[profiles.p]\n{body}\n");
            let s = LlmConfig::parse(&text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(s.contains(needle), "{needle}: {s}");
        }
    }

    #[test]
    fn unknown_profile_lists_known() {
        let c = LlmConfig::parse(GOOD, Path::new("llm.toml")).expect("valid");
        let s = c.profile("nope").unwrap_err().to_string();
        assert!(s.contains("ds, local"), "{s}");
    }

    #[test]
    fn key_debug_and_redaction() {
        let k = ApiKey::new("sk-test-0123456789");
        assert_eq!(format!("{k:?}"), "ApiKey([REDACTED])");
        assert_eq!(
            k.redact("auth failed for sk-test-0123456789!"),
            "auth failed for [REDACTED]!"
        );
    }

    #[test]
    fn missing_env_key_names_the_variable() {
        let s = ApiKey::from_env("p", "KSMITH_TEST_SURELY_UNSET_VAR_9271")
            .unwrap_err()
            .to_string();
        assert!(s.contains("KSMITH_TEST_SURELY_UNSET_VAR_9271"), "{s}");
    }
}
