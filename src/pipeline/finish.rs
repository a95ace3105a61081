//! The always-run tail of every request: metrics and the one structured log line. It runs
//! when the response body ends, fails or is dropped (client gone), and also when the request
//! future itself is dropped before a response existed, so no request goes unrecorded.

use std::sync::Arc;
use std::time::Duration;

use super::ctx::RequestCtx;
use crate::state::AppState;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (only seen if the guard drops before any other outcome was set).
    Pending,
    Complete,
    /// The client went away before the response was complete; the upstream call was dropped.
    ClientClosed,
    UpstreamError,
    UpstreamTimeout,
    /// The upstream sent an event that is not what its API sends.
    UpstreamInvalid,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pending | Outcome::ClientClosed => "client_closed",
            Outcome::Complete => "complete",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::UpstreamInvalid => "upstream_invalid",
        }
    }
}

/// Owns the request context from the first line of the pipeline to the last body byte.
pub struct Finish {
    pub app: Arc<AppState>,
    pub cx: RequestCtx,
    /// `None` until response headers exist; logged as 499 (client closed) if never set.
    pub status: Option<http::StatusCode>,
    pub outcome: Outcome,
    pub ttfb: Option<Duration>,
    pub bytes: u64,
}

impl Finish {
    pub fn new(app: Arc<AppState>, cx: RequestCtx) -> Finish {
        app.metrics.in_flight.inc();
        Finish { app, cx, status: None, outcome: Outcome::Pending, ttfb: None, bytes: 0 }
    }

    /// warden's own time so far: elapsed minus the wait for upstream headers.
    pub fn overhead(&self) -> Duration {
        self.cx.start.elapsed().saturating_sub(self.cx.upstream_wait)
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let m = &self.app.metrics;
        m.in_flight.dec();
        let cx = &self.cx;
        let elapsed = cx.start.elapsed();
        let status = self.status.as_ref().map_or("499", http::StatusCode::as_str);
        let provider = cx.provider_name();
        let endpoint = cx.endpoint_label();
        m.requests
            .with_label_values(&[
                endpoint,
                provider,
                cx.requested_label.as_deref().unwrap_or("none"),
                cx.model_label.as_deref().unwrap_or("none"),
                cx.key_name(),
                cx.team(),
                status,
            ])
            .inc();
        m.duration.with_label_values(&[endpoint, provider]).observe(elapsed.as_secs_f64());
        if cx.stream {
            if let Some(t) = self.ttfb {
                m.ttfb.with_label_values(&[endpoint, provider]).observe(t.as_secs_f64());
            }
        }
        let usage = cx.usage.unwrap_or_default();
        if cx.usage.is_some() {
            let model = cx.model_label.as_deref().unwrap_or("none");
            let estimated = if usage.estimated { "true" } else { "false" };
            for (direction, n) in usage.directions() {
                if n > 0 {
                    m.tokens
                        .with_label_values(&[cx.key_name(), cx.team(), model, provider, direction, estimated])
                        .inc_by(n);
                }
            }
        }
        let outcome = if self.status.is_none() { Outcome::ClientClosed } else { self.outcome };
        // A stream that failed after its 200 went out is still an error.
        let error = match (cx.error_kind, outcome) {
            (Some(kind), _) => kind,
            (None, Outcome::UpstreamError) => "upstream_stream",
            (None, Outcome::UpstreamTimeout) => "upstream_stream_timeout",
            (None, Outcome::UpstreamInvalid) => "upstream_stream_invalid",
            (None, Outcome::Pending | Outcome::Complete | Outcome::ClientClosed) => "-",
        };
        if cx.error_kind.is_none() && error != "-" {
            m.errors.with_label_values(&[error]).inc();
        }
        tracing::info!(
            target: "warden::access",
            request_id = %cx.id,
            method = %cx.method,
            endpoint = %endpoint,
            status = %status,
            outcome = %outcome.label(),
            provider = %provider,
            route = %cx.route_label.as_deref().unwrap_or("-"),
            model = cx.model_requested.as_deref().unwrap_or("-"),
            upstream_model = cx.model_forwarded.as_deref().unwrap_or("-"),
            input_tokens = usage.input,
            output_tokens = usage.output,
            cached_input_tokens = usage.cached_input,
            cache_write_tokens = usage.cache_write,
            reasoning_tokens = usage.reasoning,
            tokens_estimated = usage.estimated,
            key = %cx.key_name(),
            client_key = %cx.passthrough.as_deref().unwrap_or("-"),
            team = %cx.team(),
            stream = cx.stream,
            duration_ms = ms(elapsed),
            upstream_ms = ms(cx.upstream_wait),
            ttfb_ms = self.ttfb.map_or(-1.0, ms),
            bytes = self.bytes,
            error = %error,
            error_detail = cx.error_detail.as_deref().unwrap_or("-"),
            policies = %cx.policies.as_deref().unwrap_or("-"),
            would_block = %cx.would_block.as_deref().unwrap_or("-"),
            policy_version = cx.snapshot.policies.version,
        );
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
