//! Response stage: finalises headers (`x-warden-request-id`, `x-warden-overhead-ms`,
//! `x-warden-policy`, `x-warden-cache`, `x-ratelimit-*`) and wraps the body in
//! [`Observed`] (timeouts, the stream failure contract, TTFB, the guard's settlement), which
//! hands the request to [`Finish`] when the body ends or is dropped.

use std::time::{Duration, Instant};

use http::{HeaderValue, Response};
use http_body_util::BodyExt;

use super::exchange::Guard;
use super::finish::{Finish, Outcome};
use super::observed::Observed;
use crate::http::body::Body;
use crate::http::headers::{
    sanitize_response, CACHE, INJECTION, OVERHEAD_MS, POLICY, POLICY_VERSION, REQUEST_ID, SCHEMA, SCHEMA_ATTEMPTS,
    UPSTREAM, WOULD_BLOCK,
};

/// Timeouts that apply while the body streams.
pub struct BodyTimeouts {
    pub between_chunks: Duration,
    pub deadline: Instant,
}

impl BodyTimeouts {
    /// For a body warden holds whole: nothing to wait for.
    pub fn local() -> BodyTimeouts {
        BodyTimeouts { between_chunks: Duration::from_secs(60), deadline: Instant::now() + Duration::from_secs(600) }
    }
}

/// The between-chunks timeout. Re-arming a timer on every frame costs a timer-wheel update
/// per SSE event; instead each frame only notes its time, and when the timer fires it is
/// pushed out to `last_frame + every` unless that moment has really passed.
pub(super) struct IdleTimer {
    pub(super) every: Duration,
    pub(super) last_frame: tokio::time::Instant,
    pub(super) sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    pub(super) fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        use std::future::Future as _;
        while self.sleep.as_mut().poll(cx).is_ready() {
            let due = self.last_frame + self.every;
            if due <= tokio::time::Instant::now() {
                return true;
            }
            self.sleep.as_mut().reset(due);
        }
        false
    }
}

/// Finalises a response. `upstream`: the body timeouts and the exchange's guard, for a
/// response that came from a provider.
pub fn wrap(mut fin: Finish, resp: Response<Body>, upstream: Option<(BodyTimeouts, Guard)>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    sanitize_response(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(&fin.cx.id) {
        parts.headers.insert(REQUEST_ID, v);
    }
    let overhead = fin.overhead();
    fin.app.metrics.overhead.observe(overhead.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", overhead.as_secs_f64() * 1000.0)) {
        parts.headers.insert(OVERHEAD_MS, v);
    }
    for (name, value) in [
        (POLICY, &fin.cx.policies),
        (WOULD_BLOCK, &fin.cx.would_block),
        (UPSTREAM, &fin.cx.answered_by),
        (INJECTION, &fin.cx.injection),
    ] {
        if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            parts.headers.insert(name, v);
        }
    }
    parts.headers.insert(POLICY_VERSION, HeaderValue::from(fin.cx.snapshot.policies.version));
    // Only warden says what its cache did; an upstream's own header is not passed on.
    match fin.cx.cache {
        Some(r) => parts.headers.insert(CACHE, HeaderValue::from_static(r.as_str())),
        None => parts.headers.remove(CACHE),
    };
    if let Some(state) = fin.cx.schema_state {
        parts.headers.insert(SCHEMA, HeaderValue::from_static(state));
        if fin.cx.schema_attempts > 1 {
            parts.headers.insert(SCHEMA_ATTEMPTS, HeaderValue::from(fin.cx.schema_attempts));
        }
    } else {
        parts.headers.remove(SCHEMA);
        parts.headers.remove(SCHEMA_ATTEMPTS);
    }
    if let Some(h) = &fin.cx.rate_headers {
        super::ratelimit::write_headers(&mut parts.headers, h);
    }
    fin.status = Some(parts.status);
    if http_body::Body::is_end_stream(&body) {
        fin.outcome = Outcome::Complete;
    }
    let sse = is_event_stream(&parts);
    let body = Observed::new(fin, body, upstream, sse);
    Response::from_parts(parts, body.boxed_unsync())
}

/// A successful `text/event-stream` response: the streams the failure contract covers.
fn is_event_stream(parts: &http::response::Parts) -> bool {
    parts.status.is_success() && has_event_stream_type(&parts.headers)
}

pub(super) fn has_event_stream_type(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"))
}
