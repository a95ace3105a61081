//! Cache stage: decides whether a request may be answered from the response cache, looks
//! it up, and makes concurrent identical misses wait for one upstream call (a single
//! flight). The leader stores a successful answer: a JSON body at once, a stream when its
//! final event has gone out ([`super::respond`]). A hit is replayed in the shape the caller
//! asked for, with a fresh response id and `age`.
//!
//! Cacheable: chat completions, legacy completions, embeddings and Anthropic messages,
//! `temperature: 0` (embeddings always) unless the policy says `when: always`, never `n` or
//! `best_of` above 1. `cache-control: no-store` neither reads nor writes; `no-cache` skips
//! the lookup and stores the fresh answer.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response};
use serde_json::Value;

use super::ctx::RequestCtx;
use crate::cache::{Entry, Failure, Flight, Format, Join, Key, Landed, Meta};
use crate::error::ProxyError;
use crate::http::body::{full, Body};
use crate::policy::compile::{CachePolicy, Policy};
use crate::policy::verdict::PolicyEdit;
use crate::policy::{CacheScope, CacheWhen};
use crate::provider::usage::Usage;
use crate::provider::{replay, Endpoint};
use crate::state::AppState;

/// What the cache made of a request: `x-warden-cache`, the access log, the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    /// A policy caches, but this request may not be cached (or asked not to be).
    Bypass,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
        }
    }
}

/// A cacheable request, keyed.
pub struct Plan {
    policy: CachePolicy,
    meta: Meta,
    digest: [u8; 32],
    endpoint: Endpoint,
    stream: bool,
    /// `cache-control: no-cache`: go upstream, store the answer.
    refresh: bool,
}

impl Plan {
    /// Hits are charged against budgets at the stored usage.
    pub fn charge(&self) -> bool {
        self.policy.charge
    }

    /// Streamed and non-streamed answers share entries where they convert into each other.
    fn stream_key(&self) -> Option<bool> {
        (!replay::converts(self.endpoint)).then_some(self.stream)
    }

    fn key(&self) -> Key {
        crate::cache::key(&self.meta, self.stream_key(), &self.digest)
    }
}

/// Whether the first policy with a `cache` section caches this request, and under which
/// key. `body` is the request as the client sent it; `edits` are the policies' edits, which
/// the key includes (a budget's own output limit, set later to fit what is left, is not).
#[expect(clippy::too_many_arguments, reason = "the request's parts the key is made of")]
pub fn plan(
    app: &AppState,
    cx: &mut RequestCtx,
    policies: &[&Policy],
    headers: &http::HeaderMap,
    endpoint: Endpoint,
    stream: bool,
    body: &Bytes,
    edits: &[PolicyEdit],
) -> Option<Plan> {
    let policy = policies.iter().find_map(|p| p.cache)?;
    let (no_store, refresh) = cache_control(headers);
    let cacheable = matches!(
        endpoint,
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings | Endpoint::Messages
    );
    let bypass = |cx: &mut RequestCtx| {
        cx.cache = Some(CacheResult::Bypass);
        app.metrics.cache_bypass.inc();
        None
    };
    if no_store || !cacheable {
        return bypass(cx);
    }
    let sent = if edits.is_empty() {
        body.clone()
    } else {
        crate::http::splice::splice(body, edits.iter().map(|e| e.edit.clone()).collect())
    };
    let Ok(value) = serde_json::from_slice::<Value>(&sent) else { return bypass(cx) };
    let more_than_one = |f: &str| value.get(f).and_then(Value::as_f64).is_some_and(|n| n > 1.0);
    let deterministic =
        endpoint == Endpoint::Embeddings || value.get("temperature").and_then(Value::as_f64).is_some_and(|t| t == 0.0);
    if more_than_one("n") || more_than_one("best_of") || (policy.when == CacheWhen::Deterministic && !deterministic) {
        return bypass(cx);
    }
    let digest = crate::cache::with_headers(crate::cache::body_digest(&value)?, headers);
    let tenant = match (policy.scope, &cx.key) {
        (CacheScope::Shared, _) => "shared".to_string(),
        (CacheScope::Team, Some(k)) if k.in_team && cx.passthrough.is_none() => k.scopes[1].to_string(),
        // A client's own provider key is its tenant, by its hash.
        _ => match &cx.passthrough {
            Some(hash) => format!("client:{hash}"),
            None => cx.key_scope().to_string(),
        },
    };
    let meta = Meta {
        tenant,
        provider: cx.provider_name().to_string(),
        model: cx.model_forwarded.clone().unwrap_or_default(),
        route: endpoint.label(),
    };
    Some(Plan { policy, meta, digest, endpoint, stream, refresh })
}

/// `(no-store, no-cache)` from the request's `cache-control` headers.
fn cache_control(headers: &http::HeaderMap) -> (bool, bool) {
    let mut out = (false, false);
    for v in headers.get_all(http::header::CACHE_CONTROL) {
        for d in v.to_str().unwrap_or("").split(',') {
            let d = d.trim();
            out.0 |= d.eq_ignore_ascii_case("no-store");
            out.1 |= d.eq_ignore_ascii_case("no-cache");
        }
    }
    out
}

/// The outcome of a lookup.
pub enum Looked {
    /// Answered from the cache.
    Hit(Response<Body>),
    /// The single flight this request waited for failed: its error, as the leader got it.
    Failed(Response<Body>),
    /// Go upstream; store what comes back.
    Miss(Lead),
}

/// Looks the request up; on a miss, leads its single flight or waits (at most `wait`) for
/// the one running. A leader that goes away without an answer hands the lead on.
pub async fn lookup(app: &AppState, cx: &mut RequestCtx, plan: Plan, wait: Duration) -> Looked {
    let key = plan.key();
    loop {
        if plan.refresh {
            return miss(app, cx, plan, None);
        }
        if let Some(e) = app.cache.get(&key, &plan.meta) {
            if let Some(resp) = hit(app, cx, &plan, &e) {
                return Looked::Hit(resp);
            }
        }
        let mut rx = match app.cache.join(key) {
            Join::Lead(flight) => return miss(app, cx, plan, Some(flight)),
            Join::Wait(rx) => rx,
        };
        let landed = match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => v.clone(),
            // The leader went away without an answer: lead, or wait for whoever does.
            Ok(Err(_)) => continue,
            Err(_) => return miss(app, cx, plan, None),
        };
        match landed {
            Some(Landed::Stored(e)) => {
                if let Some(resp) = hit(app, cx, &plan, &e) {
                    return Looked::Hit(resp);
                }
                return miss(app, cx, plan, None);
            }
            Some(Landed::Failed(f)) => {
                cx.cache = Some(CacheResult::Miss);
                cx.error_kind = Some("shared_failure");
                app.metrics.cache_miss.inc();
                let mut resp = Response::new(full(f.body.clone()));
                *resp.status_mut() = f.status;
                *resp.headers_mut() = f.headers.clone();
                return Looked::Failed(resp);
            }
            Some(Landed::NotStored) | None => return miss(app, cx, plan, None),
        }
    }
}

fn miss(app: &AppState, cx: &mut RequestCtx, plan: Plan, flight: Option<Flight>) -> Looked {
    cx.cache = Some(CacheResult::Miss);
    app.metrics.cache_miss.inc();
    Looked::Miss(Lead { plan, flight })
}

/// The stored answer in the shape the caller asked for, with a fresh id and `age`.
fn hit(app: &AppState, cx: &mut RequestCtx, plan: &Plan, e: &Entry) -> Option<Response<Body>> {
    let body = match (e.format, plan.stream) {
        (Format::Json, false) | (Format::Sse, true) => e.body.clone(),
        (Format::Json, true) => replay::to_sse(plan.endpoint, &e.body)?,
        (Format::Sse, false) => replay::to_json(plan.endpoint, &e.body)?,
    };
    let mut resp = Response::new(full(replay::with_fresh_id(&body, e.id.as_deref())));
    let h = resp.headers_mut();
    let kind = if plan.stream { "text/event-stream" } else { "application/json" };
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(http::header::AGE, HeaderValue::from(e.stored.elapsed().as_secs()));
    cx.cache = Some(CacheResult::Hit);
    cx.cache_charged = plan.policy.charge;
    cx.usage = Some(e.usage);
    cx.answered_by = Some(format!("{}/{}", e.meta.provider, e.meta.model));
    app.metrics.cache_hit.inc();
    if !plan.policy.charge {
        let m = &app.metrics;
        m.cache_saved_input.inc_by(e.usage.input);
        m.cache_saved_output.inc_by(e.usage.output);
        if let Some(price) = cx.snapshot.prices.get(&e.meta.model) {
            m.cache_saved_usd.inc_by(price.cost(&e.usage) as f64 / crate::config::prices::PICO);
        }
    }
    Some(resp)
}

/// A miss on its way upstream: stores what comes back and wakes the flight's waiters.
/// Dropped without storing, its flight wakes them with nothing (one of them leads next).
pub struct Lead {
    plan: Plan,
    flight: Option<Flight>,
}

impl Lead {
    /// A fallback answered: its answer is stored under its own provider and model.
    fn answered_by(&mut self, provider: &str, model: Option<&str>) {
        self.plan.meta.provider = provider.to_string();
        if let Some(m) = model {
            self.plan.meta.model = m.to_string();
        }
    }

    /// Stores a successful answer and hands it to the waiters.
    pub fn store(mut self, app: &AppState, format: Format, body: Bytes, usage: Usage) {
        let id = replay::response_id(format == Format::Sse, &body);
        let entry = Entry {
            meta: self.plan.meta.clone(),
            format,
            body,
            id,
            usage,
            stored: std::time::Instant::now(),
            ttl: self.plan.policy.ttl,
        };
        let landed = match app.cache.insert(self.plan.key(), entry) {
            Some(e) => Landed::Stored(e),
            None => Landed::NotStored,
        };
        if let Some(f) = self.flight.take() {
            f.land(landed);
        }
    }

    /// The answer may not be stored (a response-side check flagged it): the waiters ask
    /// for themselves.
    pub fn not_stored(mut self) {
        if let Some(f) = self.flight.take() {
            f.land(Landed::NotStored);
        }
    }

    /// The call failed with warden's own error: the waiters get the same response.
    fn failed(self, e: &ProxyError, family: crate::provider::ApiFamily) {
        let (status, headers, body) = e.render_parts(family);
        self.fail(Failure { status, headers, body });
    }

    /// The upstream answered with an error: the waiters get a copy of it.
    fn fail(mut self, f: Failure) {
        if let Some(flight) = self.flight.take() {
            flight.land(Landed::Failed(std::sync::Arc::new(f)));
        }
    }
}

/// A failed call's error, handed to the flight's waiters too; returned for the leader.
pub fn share_error(lead: &mut Option<Lead>, e: ProxyError, family: crate::provider::ApiFamily) -> ProxyError {
    if let Some(l) = lead.take() {
        l.failed(&e, family);
    }
    e
}

/// What a miss's leader does with the upstream's answer: stores a JSON body now, leaves a
/// stream's lead in `cx` for the body wrapper (stored at its final event), and copies an
/// error for the waiters. `body`: the validated body of a successful JSON answer.
pub async fn answered(
    app: &AppState,
    cx: &mut RequestCtx,
    mut lead: Lead,
    response: Response<Body>,
    body: Option<Bytes>,
    t: &super::respond::BodyTimeouts,
    provider: &str,
) -> Result<Response<Body>, ProxyError> {
    lead.answered_by(provider, cx.model_forwarded.as_deref());
    match body {
        Some(body) => {
            lead.store(app, Format::Json, body, cx.usage.unwrap_or_default());
            Ok(response)
        }
        None if response.status().is_success() => {
            cx.cache_lead = Some(Box::new(lead));
            Ok(response)
        }
        None => share_failure(lead, response, t, provider).await,
    }
}

/// The largest upstream error body a leader copies for its waiters.
const MAX_SHARED_ERROR_BYTES: usize = 1 << 20;

/// Reads the upstream's error response whole (it is small), hands a copy to the flight's
/// waiters, and returns it for the leader's own client.
async fn share_failure(
    lead: Lead,
    resp: Response<Body>,
    t: &super::respond::BodyTimeouts,
    provider: &str,
) -> Result<Response<Body>, ProxyError> {
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let due = tokio::time::Instant::from_std(t.deadline).min(tokio::time::Instant::now() + t.between_chunks);
    let read = tokio::time::timeout_at(due, http_body_util::Limited::new(body, MAX_SHARED_ERROR_BYTES).collect()).await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        // The waiters are woken with nothing and ask for themselves.
        Ok(Err(e)) => {
            return Err(ProxyError::Upstream {
                provider: provider.to_string(),
                failure: crate::error::UpstreamFailure::InvalidResponse,
                detail: format!("its error body could not be read: {e}"),
            })
        }
        Err(_) => {
            return Err(ProxyError::Upstream {
                provider: provider.to_string(),
                failure: crate::error::UpstreamFailure::BodyTimeout,
                detail: String::new(),
            })
        }
    };
    let mut headers = parts.headers.clone();
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
    lead.fail(Failure { status: parts.status, headers, body: bytes.clone() });
    Ok(Response::from_parts(parts, full(bytes)))
}
