//! One `providers:` entry → a [`Provider`]: kind defaults, the base URL, the key from the
//! environment (a provider whose variable is unset is disabled, not an error), timeouts,
//! `extra_paths`, and the transport it is reached by (as data; pools are runtime state).

use std::time::Duration;

use http::uri::{PathAndQuery, Scheme, Uri};

use super::compile::{Ctx, Provider, Timeouts, Transport};
use super::glob::Glob;
use super::snapshot::{BreakerSettings, Retries};
use super::{env_reference, interpolate, ProviderKind};
use crate::provider::{ApiFamily, AuthStyle};

pub(super) const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    first_byte: Duration::from_secs(300),
    between_chunks: Duration::from_secs(120),
    total: Duration::from_secs(900),
};

/// Without `retries`, a provider is tried once: the official SDKs retry by default (twice),
/// and retrying in both places multiplies the attempts. Turn them on here and off in the SDK.
pub(super) const DEFAULT_RETRIES: Retries = Retries { max_attempts: 1, deadline: Duration::from_secs(30) };

/// More attempts than this are never useful against a struggling provider.
pub(super) const MAX_ATTEMPTS: u32 = 10;

/// Validates and compiles a parsed config. All problems are reported, not just the first.
pub(super) fn compile_provider(cx: &mut Ctx, p: &super::RawProvider) -> Option<Provider> {
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
    let retries = match p.retries {
        Some(r) if r.max_attempts == 0 => {
            cx.err(
                &p.name,
                format!("provider `{}`: `retries.max_attempts` counts the first attempt: at least 1", p.name.value),
            );
            DEFAULT_RETRIES
        }
        Some(r) => Retries {
            max_attempts: r.max_attempts.min(MAX_ATTEMPTS),
            deadline: r.deadline.map_or(DEFAULT_RETRIES.deadline, |d| d.0),
        },
        None => DEFAULT_RETRIES,
    };
    let breaker = p.breaker.and_then(|b| {
        if b.failures == 0 || b.failure_rate.is_some_and(|r| !(r > 0.0 && r <= 1.0)) {
            cx.err(
                &p.name,
                format!(
                    "provider `{}`: `breaker.failures` must be at least 1 and `failure_rate` in (0, 1]",
                    p.name.value
                ),
            );
            return None;
        }
        Some(BreakerSettings {
            failures: b.failures,
            cool_down: b.cool_down.0,
            failure_rate: b.failure_rate,
            window: b.window.map_or(Duration::from_secs(30), |d| d.0),
            min_requests: b.min_requests.unwrap_or(20).max(1),
        })
    });
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
            transport: Transport::Mock { name: p.name.value.clone() },
            // One mock per provider: fault directives can name the one they are for.
            transport_key: format!("mock:{}", p.name.value),
            retries,
            breaker,
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
        retries,
        breaker,
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
