//! `proxy.yaml`: the raw serde types (unknown fields rejected), `${ENV}` interpolation, and
//! loading. Semantic validation happens in [`compile`], which turns the raw file into an
//! immutable [`Snapshot`].

pub mod compile;
pub mod diag;
pub mod glob;
pub mod jsonschema;
pub mod prices;
mod provider;
pub mod snapshot;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub use compile::{
    compile, AuditSettings, BreakerSettings, Fallback, Provider, Retries, Settings, Snapshot, Transport, VirtualKey,
};
pub use diag::Diagnostic;

use crate::provider::AuthStyle;

/// The whole `proxy.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub aliases: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub policies: RawPolicies,
    /// USD per million tokens; overrides and extends the built-in table.
    #[serde(default)]
    pub prices: BTreeMap<String, Spanned<prices::RawPrice>>,
    /// `reject` (default) or `meter`: what a dollar budget does with a model without a price.
    #[serde(default)]
    pub unpriced_models: prices::Unpriced,
    /// Where settled spend is kept across restarts.
    pub ledger: Option<RawLedger>,
    /// The audit log: one JSON line per request.
    pub audit: Option<RawAudit>,
    /// The response cache's size; policies with a `cache` section decide what goes in.
    pub cache: Option<RawCache>,
    #[serde(default)]
    pub alerts: RawAlerts,
    /// How budgets and rate limits count a prompt before it is sent: `estimate` (default,
    /// conservative, three bytes a token) or `tiktoken` (exact for OpenAI models, o200k_base;
    /// costs about 15 µs per KiB of prompt).
    #[serde(default)]
    pub prompt_tokens: PromptTokens,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptTokens {
    #[default]
    Estimate,
    Tiktoken,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// An http(s) URL that budget alerts are POSTed to as JSON; `${ENV}` allowed, empty: none.
    pub webhook: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// A redb file; relative to proxy.yaml's folder, which is created if missing.
    pub path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicies {
    /// Directory of policy files, relative to proxy.yaml. Default `policies`.
    pub dir: Option<String>,
    /// Watch proxy.yaml and the policy directory for changes (default true). With `false`,
    /// only SIGHUP reloads.
    pub watch: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// API listener address; `${ENV}` allowed. Default `127.0.0.1:8787`.
    pub listen: Option<Spanned<String>>,
    pub tls: Option<RawTls>,
    /// API worker threads, each with its own listener (`SO_REUSEPORT`) and event loop.
    /// Default: one per CPU.
    pub workers: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Admin listener address. Default `127.0.0.1:9787`.
    pub listen: Option<Spanned<String>>,
    /// Bearer token required on the admin listener; must be an `${ENV}` reference.
    pub token: Option<Spanned<String>>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_bytes: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub header_read_timeout: Option<Dur>,
    /// A request body must arrive within this long once its headers have.
    pub body_read_timeout: Option<Dur>,
    /// A connection with no request in flight is closed after this long (HTTP/1.1 and 2).
    pub idle_timeout: Option<Dur>,
    /// HTTP/2 PING interval; a client that does not answer within the same time is dropped.
    pub http2_keep_alive: Option<Dur>,
    pub drain_timeout: Option<Dur>,
    /// Open client connections at most (API listener, all workers); more are closed at once.
    pub max_connections: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible API: OpenAI, Azure-style base URLs, vLLM, Ollama, OpenRouter.
    Openai,
    Anthropic,
    /// The built-in in-process mock (both API families).
    Mock,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: Spanned<String>,
    pub kind: ProviderKind,
    pub base_url: Option<Spanned<String>>,
    /// Must be an `${ENV_VAR}` reference; the provider is disabled while it is unset.
    pub api_key: Option<Spanned<String>>,
    pub auth: Option<AuthStyle>,
    /// Forward the client's own provider key instead of `api_key`.
    #[serde(default)]
    pub passthrough: bool,
    /// Speak HTTP/2 to a plain-http upstream (h2c prior knowledge). https upstreams choose
    /// HTTP/2 or HTTP/1.1 by ALPN whatever this says.
    #[serde(default)]
    pub http2: bool,
    /// Model names to list in `GET /v1/models` (routing is by `routes`).
    #[serde(default)]
    pub models: Vec<String>,
    /// Unnamed `/v1` paths (globs such as `/v1/files*`) this provider may be sent. Default
    /// none: warden forwards only the endpoints whose requests it understands.
    #[serde(default)]
    pub extra_paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// The provider's retry schedule (policies may override it).
    pub retries: Option<RawRetries>,
    /// Opens after consecutive failures; absent: no breaker.
    pub breaker: Option<RawBreaker>,
}

/// `retries: { max_attempts: 3, deadline: 30s }`: attempts include the first.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    pub max_attempts: u32,
    pub deadline: Option<Dur>,
}

/// `breaker: { failures: 5, cool_down: 10s }`, optionally also opening on a failure rate:
/// `failure_rate: 0.5` over `window` (default 30s) once `min_requests` (default 20) were seen.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failures: u32,
    pub cool_down: Dur,
    pub failure_rate: Option<f64>,
    pub window: Option<Dur>,
    pub min_requests: Option<u32>,
}

/// `audit: { path: data/audit.jsonl, max_bytes: 104857600, keep: 5 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Relative to proxy.yaml's folder; the folder is created if missing.
    pub path: String,
    pub max_bytes: Option<u64>,
    pub keep: Option<u32>,
}

/// `cache: { max_bytes: 268435456 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Bytes of stored responses (default 256 MiB).
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<Dur>,
    pub first_byte: Option<Dur>,
    pub between_chunks: Option<Dur>,
    pub total: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// A model name or glob (`gpt-*`, `o*`, `claude-?-*`).
    pub model: Spanned<String>,
    pub provider: Spanned<String>,
    /// Tried in order when the provider's retries run out or its circuit is open: a
    /// provider name (the same model there) or `provider:model`.
    #[serde(default)]
    pub fallbacks: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub name: Spanned<String>,
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`).
    pub sha256: Option<Spanned<String>>,
    /// Or the key itself from the environment: `${MY_APP_KEY}`.
    pub key: Option<Spanned<String>>,
    pub team: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Providers this key may use (all when absent).
    pub providers: Option<Vec<Spanned<String>>>,
    /// Accept this key only from loopback clients.
    #[serde(default)]
    pub loopback_only: bool,
}

/// A duration written as `250ms`, `5s`, `2m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// Parses `250ms`, `5s`, `1.5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.trim().parse().map_err(|_| format!("invalid duration `{s}`: expected e.g. 250ms, 5s, 2m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("invalid duration `{s}`: unit must be ms, s, m or h")),
    };
    if !secs.is_finite() || !(0.0..=7.0 * 86400.0).contains(&secs) {
        return Err(format!("invalid duration `{s}`: must be between 0 and 7 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Where `${NAME}` references are resolved. A trait so tests can supply their own.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` in `s`. An unset variable without a default is
/// an error naming the variable.
pub fn interpolate(s: &str, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name `{name}`"));
        }
        match (env.var(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// For secret fields: the variable name of a value written exactly as `${NAME}`.
pub fn env_reference(s: &str) -> Option<&str> {
    let name = s.trim().strip_prefix("${")?.strip_suffix('}')?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(name)
}

/// Parses `proxy.yaml` text. `file` is only used in diagnostics.
pub fn parse(file: &str, text: &str) -> Result<RawConfig, Diagnostic> {
    serde_saphyr::from_str(text).map_err(|e| Diagnostic::from_yaml(file, &e))
}

/// The largest config or policy file warden reads.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a config or policy file: a regular file (symlinks followed) of at most
/// [`MAX_FILE_BYTES`], in UTF-8. Opened non-blocking, so a FIFO or device put where a file
/// should be is reported instead of blocking the reload (and shutdown) forever.
pub fn read_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file (a FIFO, device or directory); warden reads only regular files".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("larger than the limit of {MAX_FILE_BYTES} bytes"));
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than the limit of {MAX_FILE_BYTES} bytes"));
    }
    Ok(text)
}

/// Reads, parses and compiles a config file against the process environment.
pub fn load(path: &Path) -> Result<Snapshot, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let text = read_file(path)
        .map_err(|message| vec![Diagnostic { file: file.clone(), line: 1, col: 1, message, hint: None }])?;
    load_str(&file, &text, path.parent().unwrap_or(Path::new(".")), &ProcessEnv)
}

/// Parses and compiles config text; relative TLS paths resolve against `base_dir`.
pub fn load_str(file: &str, text: &str, base_dir: &Path, env: &dyn Env) -> Result<Snapshot, Vec<Diagnostic>> {
    let raw = parse(file, text).map_err(|d| vec![d])?;
    compile(file, &raw, base_dir, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "value".to_string())
    }

    #[test]
    fn interpolates_set_default_and_unset() {
        assert_eq!(interpolate("a-${SET}-b", &env).as_deref(), Ok("a-value-b"));
        assert_eq!(interpolate("${UNSET:-x:1}", &env).as_deref(), Ok("x:1"));
        assert!(interpolate("${UNSET}", &env).is_err_and(|e| e.contains("UNSET")));
        assert!(interpolate("${SET", &env).is_err());
    }

    #[test]
    fn env_reference_only_accepts_whole_reference() {
        assert_eq!(env_reference("${OPENAI_API_KEY}"), Some("OPENAI_API_KEY"));
        assert_eq!(env_reference("sk-literal"), None);
        assert_eq!(env_reference("x${A}"), None);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
