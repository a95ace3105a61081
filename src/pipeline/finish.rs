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
        // A free cache hit spent nothing: its tokens are counted as saved, not here.
        let spent = cx.spent();
        // Cost at list price for every metered exchange, budget or not.
        if let (Some(u), Some(model)) = (&spent, cx.model_forwarded.as_deref()) {
            if let Some(price) = cx.snapshot.prices.get(model) {
                let cost = price.cost(u);
                if cost > 0 {
                    let label = cx.model_label.as_deref().unwrap_or("none");
                    m.cost
                        .with_label_values(&[cx.key_name(), cx.team(), label])
                        .inc_by(cost as f64 / crate::config::prices::PICO);
                }
            }
        }
        if spent.is_some() {
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
        use super::access_log::{emit, V};
        fn opt(v: &Option<String>) -> V<'_> {
            v.as_deref().map_or(V::S("-"), V::S)
        }
        emit(&[
            ("request_id", V::S(&cx.id)),
            ("method", V::S(cx.method.as_str())),
            ("endpoint", V::S(endpoint)),
            ("status", V::S(status)),
            ("outcome", V::S(outcome.label())),
            ("provider", V::S(provider)),
            ("route", opt(&cx.route_label)),
            ("model", V::Q(cx.model_requested.as_deref().unwrap_or("-"))),
            ("upstream_model", V::Q(cx.model_forwarded.as_deref().unwrap_or("-"))),
            ("input_tokens", V::U(usage.input)),
            ("output_tokens", V::U(usage.output)),
            ("cached_input_tokens", V::U(usage.cached_input)),
            ("cache_write_tokens", V::U(usage.cache_write)),
            ("reasoning_tokens", V::U(usage.reasoning)),
            ("tokens_estimated", V::B(usage.estimated)),
            ("key", V::S(cx.key_name())),
            ("client_key", opt(&cx.passthrough)),
            ("team", V::S(cx.team())),
            ("stream", V::B(cx.stream)),
            ("cache", V::S(cx.cache.map_or("-", super::cache::CacheResult::as_str))),
            ("injection", opt(&cx.injection)),
            ("schema", V::S(cx.schema_state.unwrap_or("-"))),
            ("schema_attempts", V::U(u64::from(cx.schema_attempts))),
            ("schema_violations", V::Q(cx.schema_problems.as_deref().unwrap_or("-"))),
            ("duration_ms", V::F(ms(elapsed))),
            ("upstream_ms", V::F(ms(cx.upstream_wait))),
            ("ttfb_ms", V::F(self.ttfb.map_or(-1.0, ms))),
            ("bytes", V::U(self.bytes)),
            ("error", V::S(error)),
            ("error_detail", V::Q(cx.error_detail.as_deref().unwrap_or("-"))),
            ("policies", opt(&cx.policies)),
            ("would_block", opt(&cx.would_block)),
            ("policy_version", V::U(cx.snapshot.policies.version)),
        ]);
        if let Some(log) = self.app.audit.get().cloned() {
            let code = self.status.map_or(499, |s| s.as_u16());
            log.record(super::audit::record(self, code, error, elapsed));
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
