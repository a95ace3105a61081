//! Resilience stage: sends the request to its provider with the retry schedule, moves on to
//! the route's fallbacks when the provider's attempts run out or its circuit is open, and
//! records every attempt (for the audit log and metrics).
//!
//! - Retried: 429, 500, 502, 503, 504, 529, and the connection errors that
//!   [`UpstreamFailure::retryable`] marks (the request cannot have reached the provider).
//! - Waits: `retry-after-ms` or `retry-after` when the upstream sends one, else exponential
//!   backoff with full jitter ([`BACKOFF_BASE`] doubling up to [`BACKOFF_CAP`]).
//! - Bounds: `max_attempts` per provider, and one `deadline` for the request from its first
//!   attempt: a wait that would pass it is not waited, and the client gets the last upstream
//!   answer unchanged (status, headers and body), or the next fallback is tried at once.
//! - Everything here happens before the response's first byte goes to the client: once the
//!   headers of a success are returned, nothing is ever sent again.
//! - A client error (any other 4xx) is the request's fault: it is neither retried nor sent
//!   to a fallback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Response};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ctx::RequestCtx;
use super::upstream::{self, Credential, Outgoing};
use crate::audit::Attempt;
use crate::breaker::{Admission, Change, Health};
use crate::config::{Fallback, Provider, Retries, Snapshot};
use crate::error::{ProxyError, UpstreamFailure};
use crate::http::body::Body;
use crate::http::splice::{splice, Edit};
use crate::policy::compile::Facts;
use crate::provider::request::RequestView;
use crate::state::AppState;

/// The first backoff's upper bound; each retry doubles it.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Backoff never exceeds this (a `retry-after` may).
pub const BACKOFF_CAP: Duration = Duration::from_secs(8);

/// Statuses that say "try again": rate limited, or the provider failed or is overloaded.
const RETRYABLE: [u16; 6] = [429, 500, 502, 503, 504, 529];

/// One place the request may go.
#[derive(Clone)]
pub struct Candidate {
    pub provider: Arc<Provider>,
    pub credential: Credential,
    /// The model to ask this provider for; `None`: the one in the body.
    pub model: Option<String>,
}

/// Who answered, and how.
pub struct Answer {
    pub response: Response<Body>,
    /// Time waiting for the answering attempt's response head.
    pub waited: Duration,
    pub provider: Arc<Provider>,
    pub credential: Credential,
    /// The model the body now names, when a fallback changed it.
    pub model: Option<String>,
}

/// How one attempt went.
enum Tried {
    Answered(Response<Body>, Duration),
    /// Worth another attempt: the response (kept, in case it is the last) or the error, and
    /// the wait the upstream asked for.
    Again(Result<Response<Body>, ProxyError>, Option<Duration>),
    Failed(ProxyError),
}

/// The route's fallbacks this request may use: providers that speak the caller's API, that
/// the caller's key may use, and where the matching policies (evaluated again for the
/// fallback's provider and model) would not block it. A client's own provider key
/// (passthrough) is never sent to another provider: such requests get no fallbacks.
pub fn plan_fallbacks(
    snap: &Snapshot,
    cx: &RequestCtx,
    fallbacks: &[Fallback],
    facts: &Facts<'_>,
    view: &RequestView<'_>,
    body: &[u8],
) -> Vec<Candidate> {
    if fallbacks.is_empty() || cx.passthrough.is_some() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for f in fallbacks {
        let Some(p) = snap.providers.get(f.provider) else { continue };
        if !p.speaks(cx.family) {
            continue;
        }
        let Some(credential) = super::auth::fallback_credential(snap, cx.key.as_deref(), p) else { continue };
        let model = f.model.clone().or_else(|| cx.model_forwarded.clone());
        // As the client's request answered by this model (the policies of the client's
        // model apply), and as a request for this model itself (an allow-list that admits
        // the client's model by name must admit the fallback's too).
        let provider = Some(p.name.as_str());
        let as_alias = Facts { upstream_model: model.as_deref(), provider, ..*facts };
        let as_itself = Facts { model: model.as_deref().or(facts.model), upstream_model: None, provider, ..*facts };
        let allows = |f: &Facts| {
            crate::policy::evaluate::evaluate(snap, f, view, body).is_ok_and(|e| e.decision.block.is_none())
        };
        let allowed = allows(&as_alias) && allows(&as_itself);
        if allowed {
            out.push(Candidate { provider: p.clone(), credential, model });
        }
    }
    out
}

/// Sends `request` to the first candidate, retrying and falling back as configured.
/// `retries`: a policy's override of the providers' own schedules.
pub async fn send(
    app: &AppState,
    cx: &mut RequestCtx,
    candidates: Vec<Candidate>,
    retries: Option<Retries>,
    request: &mut Outgoing,
) -> Result<Answer, ProxyError> {
    let start = Instant::now();
    // The last retryable failure: an upstream answer (with who gave it) or an error.
    let mut last: Option<Result<Answer, ProxyError>> = None;
    let mut open_for: Option<(String, Duration)> = None;
    let primary = candidates.first().map(|c| c.provider.clone());
    let mut current_model: Option<String> = None;
    for (n, cand) in candidates.into_iter().enumerate() {
        let schedule = retries.unwrap_or(cand.provider.retries);
        if n > 0 {
            // The deadline covers fallbacks too: none starts after it.
            if start.elapsed() >= schedule.deadline && last.is_some() {
                break;
            }
            if let Some(m) =
                cand.model.as_deref().filter(|m| current_model.as_deref().or(cx.model_forwarded.as_deref()) != Some(*m))
            {
                request.body = rename_model(&request.body, m);
                current_model = Some(m.to_string());
            }
        }
        let mut wait = Duration::ZERO;
        for attempt in 1..=schedule.max_attempts.max(1) {
            let probe = match breaker_admit(app, &cand.provider) {
                Admission::Allowed => false,
                Admission::Probe => true,
                Admission::Rejected(left) => {
                    app.metrics.upstream_attempts.with_label_values(&[&cand.provider.name, "circuit_open"]).inc();
                    record_attempt(
                        cx,
                        &cand.provider,
                        current_model.as_deref(),
                        None,
                        Some("circuit_open"),
                        Duration::ZERO,
                    );
                    open_for.get_or_insert((cand.provider.name.clone(), left));
                    break;
                }
            };
            let tried = once(&app.transports, &cand.provider, &cand.credential, request).await;
            let (health, status, error, outcome) = match &tried {
                Tried::Answered(r, _) => (Health::Up, Some(r.status().as_u16()), None, "success"),
                Tried::Again(Ok(r), _) => {
                    let s = r.status().as_u16();
                    let h = if s == 429 { Health::Neutral } else { Health::Down };
                    (h, Some(s), Some(format!("status_{s}")), "retryable")
                }
                Tried::Again(Err(e), _) => (Health::Down, None, Some(e.kind().to_string()), "retryable"),
                Tried::Failed(e) => (failure_health(e), None, Some(e.kind().to_string()), "error"),
            };
            breaker_record(app, &cand.provider, health, probe);
            app.metrics.upstream_attempts.with_label_values(&[&cand.provider.name, outcome]).inc();
            record_attempt(cx, &cand.provider, current_model.as_deref(), status, error.as_deref(), wait);
            match tried {
                Tried::Answered(response, waited) => {
                    if n > 0 {
                        if let Some(first) = &primary {
                            let (from, to) =
                                (label(first, None, cx), label(&cand.provider, current_model.as_deref(), cx));
                            app.metrics.fallbacks.with_label_values(&[&from, &to]).inc();
                        }
                    }
                    return Ok(Answer {
                        response,
                        waited,
                        provider: cand.provider,
                        credential: cand.credential,
                        model: current_model,
                    });
                }
                Tried::Failed(e) => return Err(e),
                Tried::Again(result, asked) => {
                    last = Some(result.map(|response| Answer {
                        response,
                        waited: Duration::ZERO,
                        provider: cand.provider.clone(),
                        credential: cand.credential.clone(),
                        model: current_model.clone(),
                    }));
                    if attempt == schedule.max_attempts {
                        break;
                    }
                    wait = asked.unwrap_or_else(|| backoff(attempt));
                    if start.elapsed() + wait > schedule.deadline {
                        break;
                    }
                    app.metrics.retry_wait.observe(wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    match (last, open_for) {
        // The last upstream answer goes to the client unchanged.
        (Some(answer), _) => answer,
        (None, Some((provider, left))) => {
            Err(ProxyError::CircuitOpen { provider, retry_after_secs: left.as_secs_f64().ceil() as u64 })
        }
        (None, None) => Err(ProxyError::Upstream {
            provider: "none".into(),
            failure: UpstreamFailure::Connect,
            detail: "no provider to send the request to".into(),
        }),
    }
}

/// Attempts are kept for the audit record only: without an audit log nothing is copied.
fn record_attempt(
    cx: &mut RequestCtx,
    provider: &Provider,
    model: Option<&str>,
    status: Option<u16>,
    error: Option<&str>,
    wait: Duration,
) {
    if cx.audit {
        let model = model.or(cx.model_forwarded.as_deref()).map(str::to_string);
        let error = error.map(str::to_string);
        cx.attempts.push(Attempt {
            provider: provider.name.clone(),
            model,
            status,
            error,
            wait_ms: wait.as_millis() as u64,
        });
    }
}

fn label(p: &Provider, model: Option<&str>, cx: &RequestCtx) -> String {
    format!("{}/{}", p.name, model.or(cx.model_forwarded.as_deref()).unwrap_or("-"))
}

async fn once(
    transports: &crate::state::Transports,
    provider: &Provider,
    credential: &Credential,
    request: &Outgoing,
) -> Tried {
    match upstream::send(transports, provider, credential, request).await {
        Ok((resp, _)) if RETRYABLE.contains(&resp.status().as_u16()) => {
            let asked = asked_wait(resp.headers());
            Tried::Again(Ok(resp), asked)
        }
        Ok((resp, waited)) => Tried::Answered(resp, waited),
        Err(e @ ProxyError::Upstream { failure, .. }) if failure.retryable() => Tried::Again(Err(e), None),
        Err(e) => Tried::Failed(e),
    }
}

/// Connection-level failures count against a circuit whether or not they may be retried.
fn failure_health(e: &ProxyError) -> Health {
    match e {
        ProxyError::Upstream { .. } => Health::Down,
        _ => Health::Neutral,
    }
}

fn breaker_admit(app: &AppState, p: &Provider) -> Admission {
    let Some(s) = &p.breaker else { return Admission::Allowed };
    let (admission, change) = app.breakers.admit(&p.name, s, Instant::now());
    if let Some(c) = change {
        circuit_changed(app, p, c);
    }
    admission
}

fn breaker_record(app: &AppState, p: &Provider, health: Health, probe: bool) {
    let Some(s) = &p.breaker else { return };
    if let Some(c) = app.breakers.record(&p.name, s, health, probe, Instant::now()) {
        circuit_changed(app, p, c);
    }
}

fn circuit_changed(app: &AppState, p: &Provider, c: Change) {
    app.metrics.circuit_state.with_label_values(&[&p.name]).set(c.to as i64);
    tracing::warn!(target: "warden", provider = %p.name, from = c.from.label(), to = c.to.label(), "circuit breaker changed state");
}

/// The wait an upstream asked for: `retry-after-ms` (OpenAI), else `retry-after` in seconds.
/// An HTTP-date is not honoured (the backoff applies).
pub fn asked_wait(h: &HeaderMap) -> Option<Duration> {
    let number =
        |name: &str| h.get(name)?.to_str().ok()?.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
    if let Some(ms) = number("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    number("retry-after").map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

/// Full jitter: a uniform wait up to `BACKOFF_BASE · 2^(attempt-1)`, capped.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(BACKOFF_CAP);
    ceiling.mul_f64(unit_random())
}

/// A uniform number in [0, 1): std's randomly keyed hasher over a counter (no RNG crate
/// for one number per retry).
fn unit_random() -> f64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let bits = std::collections::hash_map::RandomState::new().hash_one(N.fetch_add(1, Ordering::Relaxed));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The body with its top-level `model` replaced (a fallback's model).
fn rename_model(body: &bytes::Bytes, model: &str) -> bytes::Bytes {
    #[derive(Deserialize)]
    struct Model<'a> {
        #[serde(borrow)]
        model: Option<&'a RawValue>,
    }
    let Ok(Model { model: Some(raw) }) = serde_json::from_slice::<Model>(body) else { return body.clone() };
    let span = crate::provider::request::span(body, raw);
    let object = body.iter().position(|b| *b == b'{').unwrap_or(0);
    let value = serde_json::to_string(model).unwrap_or_else(|_| "\"\"".into());
    splice(body, vec![Edit { span: Some(span), object, field: "model", value }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn honours_retry_after_ms_then_seconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(asked_wait(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(asked_wait(&h), Some(Duration::from_millis(150)));
        let mut d = HeaderMap::new();
        d.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(asked_wait(&d), None);
    }

    #[test]
    fn backoff_is_jittered_below_a_doubling_capped_ceiling() {
        for attempt in 1..8 {
            let ceiling = BACKOFF_BASE.saturating_mul(1 << (attempt - 1)).min(BACKOFF_CAP);
            let waits: Vec<Duration> = (0..50).map(|_| backoff(attempt)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling));
            assert!(waits.iter().any(|w| *w != waits[0]), "no jitter");
        }
    }

    #[test]
    fn renames_the_model_and_nothing_else() {
        let body =
            bytes::Bytes::from_static(br#"{"messages":[{"role":"user","content":"model"}], "model" : "a","n":1}"#);
        assert_eq!(
            &rename_model(&body, "b\"c")[..],
            br#"{"messages":[{"role":"user","content":"model"}], "model" : "b\"c","n":1}"#
        );
    }

    #[test]
    fn statuses_worth_retrying() {
        for s in RETRYABLE {
            assert!(StatusCode::from_u16(s).is_ok());
        }
    }
}
