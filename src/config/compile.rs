//! Raw `proxy.yaml` → immutable [`Snapshot`]: every semantic check (unknown provider,
//! duplicate names, literal secrets, bad addresses) with the offending value's location,
//! globs compiled and lookups indexed so that routing a request costs a hash lookup.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::diag::{hint_for, Diagnostic};
use super::glob::Glob;
use super::provider::compile_provider;
use super::{env_reference, interpolate, Env, ProviderKind, RawConfig, RawTls};
use crate::provider::mock::MOCK_MODEL;
use crate::provider::ModelInfo;
use crate::secret::Secret;

use super::snapshot::Route;
pub use super::snapshot::{
    AuditSettings, BreakerSettings, Fallback, Provider, Retries, RouteMatch, Settings, Snapshot, Timeouts, TlsFiles,
    Transport, VirtualKey,
};

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) env: &'a dyn Env,
    pub(super) diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    pub(super) fn err<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.diags.push(Diagnostic::at(self.file, at.referenced, message));
    }

    pub(super) fn err_hint<T>(&mut self, at: &Spanned<T>, message: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diagnostic::at(self.file, at.referenced, message).with_hint(hint));
    }

    pub(super) fn addr(&mut self, v: Option<&Spanned<String>>, default: &str) -> SocketAddr {
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

    pub(super) fn tls(&mut self, t: Option<&RawTls>, base: &Path) -> Option<TlsFiles> {
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
    pub(super) fn secret(&mut self, v: &Spanned<String>, what: &str) -> Result<Option<Secret>, String> {
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
    let alert_webhook = raw.alerts.webhook.as_ref().and_then(|w| match interpolate(&w.value, cx.env) {
        Ok(url) if url.trim().is_empty() => None,
        Ok(url) => match url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Some(u),
            _ => {
                cx.err(w, "`alerts.webhook` must be an http:// or https:// URL");
                None
            }
        },
        Err(e) => {
            cx.err(w, e);
            None
        }
    });
    let settings = Settings {
        api_listen: cx.addr(raw.server.listen.as_ref(), "127.0.0.1:8787"),
        api_tls: cx.tls(raw.server.tls.as_ref(), base_dir),
        api_workers: raw.server.workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            |n| n.max(1) as usize,
        ),
        admin_listen: cx.addr(raw.admin.listen.as_ref(), "127.0.0.1:9787"),
        admin_tls: cx.tls(raw.admin.tls.as_ref(), base_dir),
        admin_token,
        log_format: raw.log.format,
        max_body_bytes: limits.max_body_bytes.map_or(10 << 20, |n| n as usize),
        max_header_bytes: limits.max_header_bytes.map_or(64 << 10, |n| n as usize).max(8192),
        header_read_timeout: limits.header_read_timeout.map_or(Duration::from_secs(10), |d| d.0),
        body_read_timeout: limits.body_read_timeout.map_or(Duration::from_secs(30), |d| d.0),
        idle_timeout: limits.idle_timeout.map_or(Duration::from_secs(60), |d| d.0),
        max_connections: limits.max_connections.map_or(10_000, |n| usize::try_from(n).unwrap_or(usize::MAX).max(1)),
        http2_keep_alive: limits.http2_keep_alive.map_or(Duration::from_secs(20), |d| d.0),
        drain_timeout: limits.drain_timeout.map_or(Duration::from_secs(30), |d| d.0),
        policies_dir: base_dir.join(raw.policies.dir.as_deref().unwrap_or("policies")),
        watch_files: raw.policies.watch.unwrap_or(true),
        ledger_path: raw.ledger.as_ref().map(|l| base_dir.join(&l.path)),
        alert_webhook,
        prompt_tokens: raw.prompt_tokens,
        audit: raw.audit.as_ref().map(|a| AuditSettings {
            path: base_dir.join(&a.path),
            max_bytes: a.max_bytes.unwrap_or(100 << 20).max(4096),
            keep: a.keep.unwrap_or(5),
        }),
        cache_max_bytes: raw.cache.as_ref().and_then(|c| c.max_bytes).unwrap_or(256 << 20),
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
        let mut fallbacks = Vec::new();
        for f in &r.fallbacks {
            let (name, model) = match f.value.split_once(':') {
                Some((name, model)) if !model.is_empty() => (name, Some(model.to_string())),
                _ => (f.value.as_str(), None),
            };
            let Some(&alt) = by_name.get(name) else {
                let hint = hint_for(name, provider_names.iter().copied());
                cx.err_hint(f, format!("fallback `{}`: unknown provider `{name}`", f.value), hint);
                continue;
            };
            let (primary, other) = (&providers[provider], &providers[alt]);
            if let Some(family) = primary.families.iter().find(|fam| !other.speaks(**fam)) {
                cx.err_hint(
                    f,
                    format!(
                        "fallback `{}`: provider `{name}` does not speak the {} API that `{}` serves; warden does not translate requests between API families",
                        f.value,
                        family.label(),
                        primary.name
                    ),
                    Some("fall back to a provider of the same API (for OpenAI models, an OpenAI-compatible endpoint)".into()),
                );
                continue;
            }
            if alt == provider && model.is_none() {
                cx.err(f, format!("fallback `{}` is the route's own provider", f.value));
                continue;
            }
            fallbacks.push(Fallback { provider: alt, model });
        }
        if glob.is_literal() {
            exact.entry(glob.as_str().to_string()).or_insert(routes.len());
        }
        routes.push(Route { glob, provider, fallbacks });
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
        let team = k.team.clone().unwrap_or_else(|| "default".into());
        let vk = VirtualKey {
            scopes: [format!("key:{}", k.name.value).into(), format!("team:{team}").into()],
            name: k.name.value.clone(),
            team,
            in_team: k.team.is_some(),
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

    for (model, price) in &raw.prices {
        let p = price.value;
        let fields = [Some(p.input), Some(p.output), p.cached_input, p.cache_read, p.cache_write];
        if fields.into_iter().flatten().any(|v| !v.is_finite() || v < 0.0) {
            cx.err(price, format!("the price of `{model}` must be zero or more USD per million tokens"));
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
        prices: super::prices::Prices::new(
            &raw.prices.iter().map(|(m, p)| (m.clone(), p.value)).collect(),
            raw.unpriced_models,
        ),
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
    fn fallbacks_resolve_and_crossing_api_families_is_refused() {
        let text = "providers:\n  - { name: a, kind: openai, api_key: \"${K}\" }\n  - { name: b, kind: mock }\n  - { name: c, kind: anthropic, api_key: \"${K}\" }\nroutes:\n  - { model: gpt-4o-mini, provider: a, fallbacks: [b, \"b:mock-2\"] }\n";
        let snap = compile_text(text).map_err(|d| d[0].to_string()).unwrap();
        let fb = snap.route("gpt-4o-mini").map(|r| r.fallbacks.to_vec()).unwrap_or_default();
        assert_eq!(
            fb.iter().map(|f| (f.provider, f.model.clone())).collect::<Vec<_>>(),
            [(1, None), (1, Some("mock-2".into()))]
        );
        let crossing = text.replace("\"b:mock-2\"", "\"c:claude-haiku-4-5\"");
        let e = first_error(&crossing);
        assert!(e.contains("provider `c` does not speak the openai API"), "{e}");
        assert!(e.contains("does not translate requests between API families"), "{e}");
        let e = first_error(&text.replace("[b,", "[nope,"));
        assert!(e.contains("unknown provider `nope`"), "{e}");
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
