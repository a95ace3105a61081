//! Raw `proxy.yaml` → immutable [`Snapshot`]: every semantic check (unknown provider,
//! duplicate names, literal secrets, bad addresses) with the offending value's location,
//! globs compiled and lookups indexed so that routing a request costs a hash lookup.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme, Uri};
use serde_saphyr::Spanned;

use super::diag::{hint_for, Diagnostic};
use super::glob::Glob;
use super::{env_reference, interpolate, Env, LogFormat, ProviderKind, RawConfig, RawTls};
use crate::provider::mock::MOCK_MODEL;
use crate::provider::{ApiFamily, AuthStyle, ModelInfo};
use crate::secret::Secret;

/// Process-level settings. Listener addresses and TLS are read once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api_listen: SocketAddr,
    pub api_tls: Option<TlsFiles>,
    pub admin_listen: SocketAddr,
    pub admin_tls: Option<TlsFiles>,
    pub admin_token: Option<Secret>,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub http2_keep_alive: Duration,
    pub drain_timeout: Duration,
    pub policies_dir: PathBuf,
    pub watch_files: bool,
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
    /// The in-process mock: no socket at all.
    Mock,
}

impl Transport {
    /// The base URL the client's path is appended to; the mock has none.
    pub fn base(&self) -> Option<&Uri> {
        match self {
            Transport::Http { base, .. } | Transport::H1 { base, .. } => Some(base),
            Transport::Mock => None,
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
    pub labels: Vec<(String, String)>,
    /// Indexes into [`Snapshot::providers`]; `None` = every provider.
    pub providers: Option<Vec<usize>>,
    pub loopback_only: bool,
}

struct Route {
    glob: Glob,
    provider: usize,
}

/// The compiled, immutable configuration a request runs against from start to end.
pub struct Snapshot {
    pub settings: Settings,
    pub providers: Vec<Arc<Provider>>,
    routes: Vec<Route>,
    /// Literal route patterns by name → route index, for the common exact-name case.
    exact: HashMap<String, usize>,
    aliases: HashMap<String, String>,
    /// Virtual keys by the hex SHA-256 of the key.
    keys: HashMap<String, Arc<VirtualKey>>,
    /// (name, team) of every key in the file, usable or not.
    declared_keys: Vec<(String, String)>,
    /// Whether any provider forwards clients' own keys; if none does, an unknown key is
    /// refused before its body is read.
    pub any_passthrough: bool,
    pub models: Vec<ModelInfo>,
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
        })
    }

    /// The first enabled provider speaking `family`, for pass-through paths without a model.
    pub fn default_provider(&self, family: ApiFamily) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.speaks(family) && p.disabled.is_none())
    }
}

struct Ctx<'a> {
    file: &'a str,
    env: &'a dyn Env,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.diags.push(Diagnostic::at(self.file, at.referenced, message));
    }

    fn err_hint<T>(&mut self, at: &Spanned<T>, message: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diagnostic::at(self.file, at.referenced, message).with_hint(hint));
    }

    fn addr(&mut self, v: Option<&Spanned<String>>, default: &str) -> SocketAddr {
        let fallback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let Some(v) = v else { return default.parse().unwrap_or(fallback) };
        match interpolate(&v.value, self.env).map(|s| s.parse::<SocketAddr>()) {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => {
                self.err(v, format!("`{}` is not an address like 127.0.0.1:8787", v.value));
                fallback
            }
            Err(e) => {
                self.err(v, e);
                fallback
            }
        }
    }

    fn tls(&mut self, t: Option<&RawTls>, base: &Path) -> Option<TlsFiles> {
        let t = t?;
        let mut path = |v: &Spanned<String>| match interpolate(&v.value, self.env) {
            Ok(p) => {
                let p = base.join(p);
                if !p.is_file() {
                    // The value as written: an expanded `${VAR}` may be a secret.
                    self.err(v, format!("file `{}` does not exist", v.value));
                }
                p
            }
            Err(e) => {
                self.err(v, e);
                PathBuf::new()
            }
        };
        let cert = path(&t.cert);
        let key = path(&t.key);
        Some(TlsFiles { cert, key })
    }

    /// A secret that must be written as `${NAME}`: `Ok(None)` when the variable is unset.
    fn secret(&mut self, v: &Spanned<String>, what: &str) -> Result<Option<Secret>, String> {
        match env_reference(&v.value) {
            Some(name) => Ok(self.env.var(name).map(Secret::new)),
            None => {
                // Never echo the value: it is probably a real key pasted into the file.
                self.err_hint(
                    v,
                    format!("{what} must come from the environment, not the file"),
                    Some("write it as `${SOME_ENV_VAR}` and export the variable".into()),
                );
                Err(String::new())
            }
        }
    }
}

const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    first_byte: Duration::from_secs(300),
    between_chunks: Duration::from_secs(120),
    total: Duration::from_secs(900),
};

/// Validates and compiles a parsed config. All problems are reported, not just the first.
pub fn compile(file: &str, raw: &RawConfig, base_dir: &Path, env: &dyn Env) -> Result<Snapshot, Vec<Diagnostic>> {
    let mut cx = Ctx { file, env, diags: Vec::new() };

    let limits = &raw.limits;
    // An admin token whose variable is unset or empty must not leave the listener open.
    let admin_token = match &raw.admin.token {
        Some(t) => match cx.secret(t, "the admin token") {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                let var = env_reference(&t.value).unwrap_or("its variable");
                cx.err_hint(
                    t,
                    format!("the admin token is required but {var} is unset or empty"),
                    Some(format!("export {var}, or remove `admin.token` to run the admin listener without one")),
                );
                None
            }
            Err(_) => None,
        },
        None => None,
    };
    let settings = Settings {
        api_listen: cx.addr(raw.server.listen.as_ref(), "127.0.0.1:8787"),
        api_tls: cx.tls(raw.server.tls.as_ref(), base_dir),
        admin_listen: cx.addr(raw.admin.listen.as_ref(), "127.0.0.1:9787"),
        admin_tls: cx.tls(raw.admin.tls.as_ref(), base_dir),
        admin_token,
        log_format: raw.log.format,
        max_body_bytes: limits.max_body_bytes.map_or(10 << 20, |n| n as usize),
        max_header_bytes: limits.max_header_bytes.map_or(64 << 10, |n| n as usize).max(8192),
        header_read_timeout: limits.header_read_timeout.map_or(Duration::from_secs(10), |d| d.0),
        body_read_timeout: limits.body_read_timeout.map_or(Duration::from_secs(30), |d| d.0),
        idle_timeout: limits.idle_timeout.map_or(Duration::from_secs(60), |d| d.0),
        http2_keep_alive: limits.http2_keep_alive.map_or(Duration::from_secs(20), |d| d.0),
        drain_timeout: limits.drain_timeout.map_or(Duration::from_secs(30), |d| d.0),
        policies_dir: base_dir.join(raw.policies.dir.as_deref().unwrap_or("policies")),
        watch_files: raw.policies.watch.unwrap_or(true),
    };

    let mut providers: Vec<Arc<Provider>> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut models: Vec<ModelInfo> = Vec::new();
    for p in &raw.providers {
        if by_name.contains_key(&p.name.value) {
            cx.err(&p.name, format!("duplicate provider name `{}`", p.name.value));
            continue;
        }
        if let Some(provider) = compile_provider(&mut cx, p) {
            by_name.insert(p.name.value.clone(), providers.len());
            let listed: Vec<String> = match (p.kind, p.models.is_empty()) {
                (ProviderKind::Mock, true) => vec![MOCK_MODEL.to_string()],
                _ => p.models.clone(),
            };
            if provider.disabled.is_none() {
                models.extend(listed.into_iter().map(|id| ModelInfo { id, owned_by: p.name.value.clone() }));
            }
            providers.push(Arc::new(provider));
        }
    }
    let provider_names: Vec<&str> = raw.providers.iter().map(|p| p.name.value.as_str()).collect();
    let lookup = |cx: &mut Ctx, v: &Spanned<String>| -> Option<usize> {
        let found = by_name.get(&v.value).copied();
        if found.is_none() && !provider_names.contains(&v.value.as_str()) {
            let hint = hint_for(&v.value, provider_names.iter().copied());
            cx.err_hint(v, format!("unknown provider `{}`", v.value), hint);
        }
        found
    };

    let mut routes = Vec::new();
    let mut exact = HashMap::new();
    for r in &raw.routes {
        let glob = match Glob::new(&r.model.value) {
            Ok(g) => g,
            Err(e) => {
                cx.err(&r.model, e);
                continue;
            }
        };
        let Some(provider) = lookup(&mut cx, &r.provider) else { continue };
        if glob.is_literal() {
            exact.entry(glob.as_str().to_string()).or_insert(routes.len());
        }
        routes.push(Route { glob, provider });
    }

    let mut keys = HashMap::new();
    let mut key_names = HashSet::new();
    for k in &raw.keys {
        if !key_names.insert(k.name.value.clone()) {
            cx.err(&k.name, format!("duplicate key name `{}`", k.name.value));
        }
        let hash = match (&k.sha256, &k.key) {
            (Some(h), None) => {
                let v = h.value.trim().to_ascii_lowercase();
                if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    cx.err(h, "sha256 must be 64 hex characters (printf %s \"$KEY\" | sha256sum)");
                    continue;
                }
                Some(v)
            }
            (None, Some(v)) => match cx.secret(v, "a virtual key") {
                Ok(Some(secret)) => Some(crate::secret::sha256_hex(secret.expose().as_bytes())),
                Ok(None) | Err(_) => None,
            },
            _ => {
                cx.err(&k.name, "a key needs exactly one of `sha256` or `key`");
                continue;
            }
        };
        let allowed = k.providers.as_ref().map(|list| list.iter().filter_map(|p| lookup(&mut cx, p)).collect());
        let vk = VirtualKey {
            name: k.name.value.clone(),
            team: k.team.clone().unwrap_or_else(|| "default".into()),
            labels: k.labels.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            providers: allowed,
            loopback_only: k.loopback_only,
        };
        if let Some(hash) = hash {
            if keys.insert(hash, Arc::new(vk)).is_some() {
                cx.err(&k.name, "this key's hash equals another key's: the same secret is configured twice");
            }
        }
    }

    let mut snapshot = Snapshot {
        settings,
        any_passthrough: providers.iter().any(|p| p.passthrough),
        providers,
        routes,
        exact,
        aliases: HashMap::new(),
        keys,
        declared_keys: raw
            .keys
            .iter()
            .map(|k| (k.name.value.clone(), k.team.clone().unwrap_or_else(|| "default".into())))
            .collect(),
        models,
        policies: crate::policy::PolicySet::default(),
        source_hash: String::new(),
    };
    for (alias, target) in &raw.aliases {
        if snapshot.route(&target.value).is_none() {
            cx.err(target, format!("alias `{alias}` points to `{}`, which no route matches", target.value));
        }
        snapshot.aliases.insert(alias.clone(), target.value.clone());
        if !snapshot.models.iter().any(|m| &m.id == alias) {
            snapshot.models.push(ModelInfo { id: alias.clone(), owned_by: "warden-alias".into() });
        }
    }
    if cx.diags.is_empty() {
        Ok(snapshot)
    } else {
        Err(cx.diags)
    }
}

fn compile_provider(cx: &mut Ctx, p: &super::RawProvider) -> Option<Provider> {
    let mut extra_paths = Vec::new();
    for v in &p.extra_paths {
        match Glob::path(&v.value) {
            Ok(g) => extra_paths.push(g),
            Err(e) => cx.err(v, e),
        }
    }
    let t = &p.timeouts;
    let timeouts = Timeouts {
        connect: t.connect.map_or(DEFAULT_TIMEOUTS.connect, |d| d.0),
        first_byte: t.first_byte.map_or(DEFAULT_TIMEOUTS.first_byte, |d| d.0),
        between_chunks: t.between_chunks.map_or(DEFAULT_TIMEOUTS.between_chunks, |d| d.0),
        total: t.total.map_or(DEFAULT_TIMEOUTS.total, |d| d.0),
    };
    let (families, default_base, default_auth): (&'static [ApiFamily], &str, AuthStyle) = match p.kind {
        ProviderKind::Openai => (&[ApiFamily::OpenAi], "https://api.openai.com/v1", AuthStyle::Bearer),
        ProviderKind::Anthropic => (&[ApiFamily::Anthropic], "https://api.anthropic.com", AuthStyle::XApiKey),
        ProviderKind::Mock => (&[ApiFamily::OpenAi, ApiFamily::Anthropic], "", AuthStyle::Bearer),
    };
    if p.kind == ProviderKind::Mock {
        for (field, v) in [("base_url", &p.base_url), ("api_key", &p.api_key)] {
            if let Some(v) = v {
                cx.err(v, format!("a `mock` provider takes no `{field}`"));
            }
        }
        return Some(Provider {
            name: p.name.value.clone(),
            kind: p.kind,
            families,
            key: None,
            auth: default_auth,
            passthrough: false,
            base_includes_version: false,
            timeouts,
            extra_paths,
            disabled: None,
            transport: Transport::Mock,
            transport_key: "mock".into(),
        });
    }
    let base_text = match &p.base_url {
        Some(v) => match interpolate(&v.value, cx.env) {
            Ok(s) => s,
            Err(e) => {
                cx.err(v, e);
                return None;
            }
        },
        None => default_base.to_string(),
    };
    let written = p.base_url.as_ref().map_or(default_base, |v| v.value.as_str());
    let base = match parse_base(&base_text, written) {
        Ok(u) => u,
        Err(e) => {
            match &p.base_url {
                Some(v) => cx.err(v, e),
                None => cx.err(&p.name, e),
            }
            return None;
        }
    };
    let mut disabled = None;
    let key = match &p.api_key {
        Some(v) => match cx.secret(v, "a provider API key") {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                if !p.passthrough {
                    let var = env_reference(&v.value).unwrap_or("its key variable");
                    disabled = Some(format!("provider `{}` is disabled: {var} is not set", p.name.value));
                }
                None
            }
            Err(_) => return None,
        },
        None if p.passthrough => None,
        None => {
            cx.err_hint(
                &p.name,
                format!("provider `{}` needs `api_key` (or `passthrough: true`)", p.name.value),
                Some("add `api_key: ${PROVIDER_API_KEY}`".into()),
            );
            return None;
        }
    };
    Some(Provider {
        name: p.name.value.clone(),
        kind: p.kind,
        families,
        key,
        auth: p.auth.unwrap_or(default_auth),
        passthrough: p.passthrough,
        base_includes_version: p.kind == ProviderKind::Openai,
        timeouts,
        extra_paths,
        disabled,
        transport_key: format!("{base}|http2={}|connect={:?}", p.http2, timeouts.connect),
        transport: match (base.scheme() == Some(&Scheme::HTTP) && !p.http2, base.authority()) {
            (true, Some(authority)) => {
                let port = authority.port_u16().unwrap_or(80);
                let authority = format!("{}:{port}", authority.host());
                if http::HeaderValue::from_str(&authority).is_err() {
                    let at = p.base_url.as_ref().map_or(&p.name, |v| v);
                    cx.err(at, format!("provider `{}`: its host cannot be used in a Host header", p.name.value));
                    return None;
                }
                Transport::H1 { base, authority, connect: timeouts.connect }
            }
            _ => Transport::Http { base, http2: p.http2, connect: timeouts.connect },
        },
    })
}

/// An upstream base URL: http or https, a host, a path prefix, and no query or fragment.
/// `written` is the value as the file has it: messages quote it, never the expanded text,
/// which could be a secret put in the wrong variable.
fn parse_base(expanded: &str, written: &str) -> Result<Uri, String> {
    let s = written;
    let uri: Uri = expanded.parse().map_err(|_| format!("`{s}` is not a URL"))?;
    let scheme_ok = uri.scheme() == Some(&Scheme::HTTP) || uri.scheme() == Some(&Scheme::HTTPS);
    if !scheme_ok || uri.host().is_none() {
        return Err(format!("`{s}` must be an http:// or https:// URL with a host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{s}` must not have a query string"));
    }
    let path = match uri.path().trim_end_matches('/') {
        "" => "/".to_string(),
        p => p.to_string(),
    };
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path.as_str()).map_err(|e| e.to_string())?);
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn compile_text(text: &str) -> Result<Snapshot, Vec<Diagnostic>> {
        super::super::load_str("proxy.yaml", text, Path::new("."), &no_env)
    }

    fn first_error(text: &str) -> String {
        match compile_text(text) {
            Ok(_) => "compiled".into(),
            Err(d) => d.first().map(ToString::to_string).unwrap_or_default(),
        }
    }

    const BASE: &str = "providers:\n  - name: mock\n    kind: mock\n";

    #[test]
    fn unknown_provider_in_route_points_at_value_with_hint() {
        let text = format!("{BASE}routes:\n  - model: mock-*\n    provider: mokc\n");
        let e = first_error(&text);
        assert!(e.starts_with("proxy.yaml:6:15: unknown provider `mokc`"), "{e}");
        assert!(e.contains("did you mean `mock`?"), "{e}");
    }

    #[test]
    fn literal_provider_key_is_rejected_without_echoing_it() {
        let text = "providers:\n  - name: oai\n    kind: openai\n    api_key: sk-live-secret\n";
        let e = first_error(text);
        assert!(e.starts_with("proxy.yaml:4:14: a provider API key must come from the environment"), "{e}");
        assert!(!e.contains("sk-live-secret"));
    }

    #[test]
    fn unknown_field_has_location_and_hint() {
        let e = first_error("provders: []\n");
        assert!(e.starts_with("proxy.yaml:1:1:"), "{e}");
        assert!(e.contains("did you mean `providers`?"), "{e}");
    }

    #[test]
    fn unset_key_variable_disables_provider() {
        let text = "providers:\n  - name: oai\n    kind: openai\n    api_key: ${WARDEN_TEST_UNSET}\nroutes:\n  - model: gpt-*\n    provider: oai\n";
        let snap = compile_text(text).ok();
        let route = snap.as_ref().and_then(|s| s.route("gpt-4o"));
        let disabled = route.and_then(|r| r.provider.disabled.clone()).unwrap_or_default();
        assert!(disabled.contains("WARDEN_TEST_UNSET"), "{disabled}");
    }

    #[test]
    fn routes_first_match_wins_and_aliases_resolve() {
        let text = format!(
            "{BASE}  - name: other\n    kind: mock\nroutes:\n  - model: mock-*\n    provider: mock\n  - model: mock-1\n    provider: other\naliases:\n  fast: mock-1\n"
        );
        let snap = compile_text(&text).map_err(|d| d[0].to_string()).unwrap();
        let r =
            snap.route("fast").map(|r| (r.provider.name.clone(), r.upstream_model.to_string(), r.label.to_string()));
        assert_eq!(r, Some(("mock".into(), "mock-1".into(), "fast".into())));
        assert!(snap.route("gpt-4o").is_none());
    }

    #[test]
    fn admin_token_with_unset_or_empty_variable_is_an_error() {
        let text = "admin:\n  token: ${WARDEN_TEST_UNSET_TOKEN}\n";
        let e = first_error(text);
        assert!(
            e.starts_with("proxy.yaml:2:10: the admin token is required but WARDEN_TEST_UNSET_TOKEN is unset"),
            "{e}"
        );
        // `ProcessEnv` treats an empty variable as unset; so does this test's env.
        let empty = |_: &str| Some(String::new()).filter(|v: &String| !v.is_empty());
        let r = super::super::load_str("proxy.yaml", text, Path::new("."), &empty);
        assert!(r.is_err());
    }

    #[test]
    fn errors_quote_values_as_written_never_expanded_secrets() {
        let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-live-very-secret".to_string());
        let text = "providers:\n  - name: oai\n    kind: openai\n    base_url: ${OPENAI_API_KEY}\n    api_key: ${OPENAI_API_KEY}\nserver:\n  tls: { cert: \"${OPENAI_API_KEY}\", key: k }\n";
        let diags = super::super::load_str("proxy.yaml", text, Path::new("."), &env).err().unwrap_or_default();
        let all: String = diags.iter().map(ToString::to_string).collect();
        assert!(all.contains("${OPENAI_API_KEY}` is not a URL") || all.contains("${OPENAI_API_KEY}` must be"), "{all}");
        assert!(!all.contains("sk-live-very-secret"), "{all}");
    }

    #[test]
    fn bad_listen_address_is_reported() {
        let e = first_error("server:\n  listen: localhost\n");
        assert!(e.starts_with("proxy.yaml:2:11: `localhost` is not an address"), "{e}");
    }
}
