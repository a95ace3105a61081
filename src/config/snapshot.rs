//! The compiled, immutable configuration a request runs against: settings, providers,
//! routes, aliases and keys, indexed so that routing a request costs a hash lookup. Built by
//! [`super::compile`]; never changed afterwards (a reload builds a new one).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Uri;

use super::glob::Glob;
use super::{LogFormat, ProviderKind};
use crate::provider::{ApiFamily, AuthStyle, ModelInfo};
use crate::secret::Secret;

/// Process-level settings. Listener addresses and TLS are read once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api_listen: SocketAddr,
    pub api_tls: Option<TlsFiles>,
    /// API worker threads (at least one).
    pub api_workers: usize,
    pub admin_listen: SocketAddr,
    pub admin_tls: Option<TlsFiles>,
    pub admin_token: Option<Secret>,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Open API connections at most.
    pub max_connections: usize,
    pub http2_keep_alive: Duration,
    pub drain_timeout: Duration,
    pub policies_dir: PathBuf,
    pub watch_files: bool,
    /// The spend ledger, relative paths resolved against proxy.yaml's folder. Opened at
    /// start; a reload that changes it takes effect at the next start.
    pub ledger_path: Option<PathBuf>,
    /// Where budget alerts are POSTed.
    pub alert_webhook: Option<http::Uri>,
    pub prompt_tokens: super::PromptTokens,
    /// The audit log; opened at start (a reload that changes it takes effect at the next).
    pub audit: Option<AuditSettings>,
    /// The response cache's size in bytes; built at start (a reload that changes it takes
    /// effect at the next).
    pub cache_max_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub path: PathBuf,
    /// The file rotates when it would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` … `.N`).
    pub keep: u32,
}

/// How often and for how long a request is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Attempts, the first included (1: no retries).
    pub max_attempts: u32,
    /// From the first attempt's start: no attempt starts (and no wait runs) past it.
    pub deadline: Duration,
}

/// When a provider's circuit opens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    pub failures: u32,
    pub cool_down: Duration,
    pub failure_rate: Option<f64>,
    pub window: Duration,
    pub min_requests: u32,
}

/// An alternative for a route: a provider, and the model to ask it for (`None`: the same).
#[derive(Debug, Clone)]
pub struct Fallback {
    pub provider: usize,
    pub model: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_chunks: Duration,
    pub total: Duration,
}

/// How a provider is reached: pure data. The connection pools built from it are runtime
/// state ([`crate::state::Transports`]), so that compiling a config opens nothing and a
/// reload keeps warm connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// https (or h2c by `http2: true`): a pooled client, HTTP/2 or HTTP/1.1 by ALPN.
    Http { base: Uri, http2: bool, connect: Duration },
    /// Plain-http HTTP/1.1: connections driven by the response body (see `http::h1pool`).
    H1 { base: Uri, authority: String, connect: Duration },
    /// The in-process mock, named after its provider (fault directives can name it): no
    /// socket at all.
    Mock { name: String },
}

impl Transport {
    /// The base URL the client's path is appended to; the mock has none.
    pub fn base(&self) -> Option<&Uri> {
        match self {
            Transport::Http { base, .. } | Transport::H1 { base, .. } => Some(base),
            Transport::Mock { .. } => None,
        }
    }
}

/// A configured upstream.
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub families: &'static [ApiFamily],
    pub key: Option<Secret>,
    pub auth: AuthStyle,
    pub passthrough: bool,
    /// OpenAI-style base URLs end in the API version (`…/v1`, like `OPENAI_BASE_URL`), so
    /// the client path's `/v1` is dropped; Anthropic-style ones do not (like
    /// `ANTHROPIC_BASE_URL`), so the whole path is appended.
    pub base_includes_version: bool,
    pub timeouts: Timeouts,
    /// Unnamed `/v1` paths this provider may be sent (empty: none).
    pub extra_paths: Vec<Glob>,
    /// Why the provider cannot be used now (its key's variable is unset); `None` = enabled.
    pub disabled: Option<String>,
    pub transport: Transport,
    /// What the transport is built from (base URL, protocol, connect timeout): the key of
    /// its connection pool, which a reload that leaves it unchanged keeps.
    pub transport_key: String,
    pub retries: Retries,
    pub breaker: Option<BreakerSettings>,
}

impl Provider {
    pub fn speaks(&self, family: ApiFamily) -> bool {
        self.families.contains(&family)
    }
}

/// A virtual key, as the config defines it. Never holds the key itself.
#[derive(Debug)]
pub struct VirtualKey {
    pub name: String,
    pub team: String,
    /// `key:<name>` and `team:<team>`: the scopes budgets and rate limits count the key
    /// under, made once here rather than on every request.
    pub scopes: [std::sync::Arc<str>; 2],
    /// The config names a team (keys without one count under `default` for budgets, but do
    /// not share a team's cache entries).
    pub in_team: bool,
    pub labels: Vec<(String, String)>,
    /// Indexes into [`Snapshot::providers`]; `None` = every provider.
    pub providers: Option<Vec<usize>>,
    pub loopback_only: bool,
}

pub(super) struct Route {
    pub(super) glob: Glob,
    pub(super) provider: usize,
    pub(super) fallbacks: Vec<Fallback>,
}

/// The compiled, immutable configuration a request runs against from start to end.
pub struct Snapshot {
    pub settings: Settings,
    pub providers: Vec<Arc<Provider>>,
    pub(super) routes: Vec<Route>,
    /// Literal route patterns by name → route index, for the common exact-name case.
    pub(super) exact: HashMap<String, usize>,
    pub(super) aliases: HashMap<String, String>,
    /// Virtual keys by the hex SHA-256 of the key.
    pub(super) keys: HashMap<String, Arc<VirtualKey>>,
    /// (name, team) of every key in the file, usable or not.
    pub(super) declared_keys: Vec<(String, String)>,
    /// Whether any provider forwards clients' own keys; if none does, an unknown key is
    /// refused before its body is read.
    pub any_passthrough: bool,
    pub models: Vec<ModelInfo>,
    /// Model prices: the built-in table and `prices:`.
    pub prices: super::prices::Prices,
    /// The compiled policy files; empty until `policy::reload::load_snapshot` adds them.
    pub policies: crate::policy::PolicySet,
    /// A short hash of proxy.yaml's text and every policy file: an unchanged hash on reload
    /// means nothing to swap.
    pub source_hash: String,
}

/// A request's model resolved to a provider.
pub struct RouteMatch<'a> {
    pub provider: &'a Arc<Provider>,
    /// The model name the upstream receives (an alias's target).
    pub upstream_model: &'a str,
    /// The config's name for this route (`gpt-*`, an alias, or `default`): the metric label.
    pub label: &'a str,
    pub fallbacks: &'a [Fallback],
}

impl Snapshot {
    /// Every key the config declares, including those whose `${VAR}` is unset now, so a
    /// policy naming such a key still validates.
    pub fn key_names(&self) -> Vec<&str> {
        self.declared_keys.iter().map(|(name, _)| name.as_str()).collect()
    }

    pub fn key_by_name(&self, name: &str) -> Option<&Arc<VirtualKey>> {
        self.keys.values().find(|k| k.name == name)
    }

    pub fn team_names(&self) -> Vec<&str> {
        let mut teams: Vec<&str> = self.declared_keys.iter().map(|(_, team)| team.as_str()).collect();
        teams.sort_unstable();
        teams.dedup();
        teams
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn key_by_hash(&self, sha256_hex: &str) -> Option<&Arc<VirtualKey>> {
        self.keys.get(sha256_hex)
    }

    /// Resolves a model name (or alias) to its provider. First matching route wins.
    pub fn route<'a>(&'a self, model: &'a str) -> Option<RouteMatch<'a>> {
        let (target, label) = match self.aliases.get_key_value(model) {
            Some((alias, target)) => (target.as_str(), Some(alias.as_str())),
            None => (model, None),
        };
        let exact = self.exact.get(target).copied().unwrap_or(usize::MAX);
        let idx = self
            .routes
            .iter()
            .take(exact)
            .position(|r| !r.glob.is_literal() && r.glob.matches(target))
            .or((exact != usize::MAX).then_some(exact))?;
        let route = &self.routes[idx];
        Some(RouteMatch {
            provider: &self.providers[route.provider],
            upstream_model: target,
            label: label.unwrap_or(route.glob.as_str()),
            fallbacks: &route.fallbacks,
        })
    }

    /// The first enabled provider speaking `family`, for pass-through paths without a model.
    pub fn default_provider(&self, family: ApiFamily) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.speaks(family) && p.disabled.is_none())
    }
}
