//! `RequestCtx`: what one request carries through the pipeline: its id, clock, the one
//! configuration snapshot it runs against, and the decisions made so far (for the log line
//! and metrics).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use crate::config::{Provider, Snapshot, VirtualKey};
use crate::provider::output::Output;
use crate::provider::usage::Usage;
use crate::provider::{ApiFamily, Endpoint};

/// Where a connection came from; set by the server per connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
}

pub struct RequestCtx {
    pub id: String,
    pub start: Instant,
    /// Loaded once here and never again: every decision for this request uses this snapshot.
    pub snapshot: Arc<Snapshot>,
    pub conn: ConnInfo,
    pub method: Method,
    pub family: ApiFamily,
    pub endpoint: Option<Endpoint>,
    pub key: Option<Arc<VirtualKey>>,
    /// Set when the client's own provider key was forwarded (passthrough): the key's short
    /// hash, which identifies the caller in the log line (metrics say only `passthrough`).
    pub passthrough: Option<String>,
    pub provider: Option<Arc<Provider>>,
    pub route_label: Option<String>,
    pub stream: bool,
    /// Time spent waiting for the upstream's response headers.
    pub upstream_wait: Duration,
    pub error_kind: Option<&'static str>,
    /// An error's internal cause, for the log line only (never sent to the client).
    pub error_detail: Option<String>,
    /// The policies that applied (comma-separated), for `x-warden-policy` and the log.
    pub policies: Option<String>,
    /// Monitor-mode violations (`policy:rule`, comma-separated), for `x-warden-would-block`.
    pub would_block: Option<String>,
    /// The model as the client named it, and as the upstream received it.
    pub model_requested: Option<String>,
    pub model_forwarded: Option<String>,
    /// Metric labels for the requested and the forwarded model: the name when the config
    /// knows it (a listed model or an alias), else the route pattern.
    pub requested_label: Option<String>,
    pub model_label: Option<String>,
    /// Size of the request body, for estimating input tokens.
    pub request_bytes: usize,
    /// warden asked the upstream for stream usage the client did not ask for.
    pub strip_usage: bool,
    /// Tokens used, once known (reported by the upstream or estimated).
    pub usage: Option<Usage>,
    /// A stage wants the model's output (text and tool calls) to check it.
    pub collect_output: bool,
    /// The model's output, gathered when `collect_output` is set.
    pub output: Option<Output>,
    /// The tightest rate-limit quotas, for the `x-ratelimit-*` headers.
    pub rate_headers: Option<crate::ratelimit::Headers>,
    /// Every upstream attempt, retries and fallbacks included.
    pub attempts: Vec<crate::audit::Attempt>,
    /// `provider/model` of the upstream that answered, for `x-warden-upstream`.
    pub answered_by: Option<String>,
    /// The agent session the request counted in.
    pub session: Option<String>,
    /// The audit log is on: attempts and tool calls are gathered for its record.
    pub audit: bool,
    /// A policy asked the audit record to capture text: this many characters of the prompt
    /// (here, already cut) and of the output.
    pub capture: Option<(usize, String)>,
    /// What the response cache made of the request (`None`: no cache policy applies).
    pub cache: Option<super::cache::CacheResult>,
    /// A hit charged against budgets (`cache.charge`): its tokens count as spent.
    pub cache_charged: bool,
    /// A streamed miss's lead: the stream is stored when its final event has gone out.
    pub cache_lead: Option<Box<super::cache::Lead>>,
    /// The output check: `valid` or `invalid` (the `x-warden-schema` header), the
    /// violations for the log line, and the upstream calls it took.
    pub schema_state: Option<&'static str>,
    pub schema_problems: Option<String>,
    pub schema_attempts: u32,
    /// A passthrough stream's output plan, checked when its final event arrives.
    pub verify_stream: Option<std::sync::Arc<super::schema::OutputPlan>>,
    /// The injection scan's top detection, `family=score` (the `x-warden-injection` header).
    pub injection: Option<String>,
    /// The marker planted in the system prompt, watched for in the output.
    pub canary: Option<Box<super::canary::Canary>>,
    /// Usage of the attempts before the one that answered (schema retries): metered too.
    pub prior_usage: Option<Usage>,
}

impl RequestCtx {
    pub fn begin(snapshot: Arc<Snapshot>, conn: ConnInfo, method: Method, family: ApiFamily) -> RequestCtx {
        RequestCtx {
            id: next_request_id(),
            start: Instant::now(),
            snapshot,
            conn,
            method,
            family,
            endpoint: None,
            key: None,
            passthrough: None,
            provider: None,
            route_label: None,
            stream: false,
            upstream_wait: Duration::ZERO,
            error_kind: None,
            error_detail: None,
            policies: None,
            would_block: None,
            model_requested: None,
            model_forwarded: None,
            requested_label: None,
            model_label: None,
            request_bytes: 0,
            strip_usage: false,
            usage: None,
            collect_output: false,
            output: None,
            rate_headers: None,
            attempts: Vec::new(),
            answered_by: None,
            session: None,
            audit: false,
            capture: None,
            cache: None,
            cache_charged: false,
            cache_lead: None,
            schema_state: None,
            schema_problems: None,
            schema_attempts: 0,
            verify_stream: None,
            prior_usage: None,
            injection: None,
            canary: None,
        }
    }

    pub fn provider_name(&self) -> &str {
        self.provider.as_ref().map_or("none", |p| p.name.as_str())
    }

    pub fn key_name(&self) -> &str {
        match (&self.key, &self.passthrough) {
            (Some(k), _) => &k.name,
            (None, Some(_)) => "passthrough",
            (None, None) => "none",
        }
    }

    /// `key:<name>`: the scope budgets, rate limits and sessions count the caller under (a
    /// client's own provider key by its hash).
    pub fn key_scope(&self) -> Arc<str> {
        match (&self.key, &self.passthrough) {
            (_, Some(hash)) => format!("key:{hash}").into(),
            (Some(k), None) => k.scopes[0].clone(),
            (None, None) => Arc::from("key:none"),
        }
    }

    /// Adds monitor-mode marks (`policy:rule`, comma-separated) to `x-warden-would-block`.
    pub fn add_would_block(&mut self, marks: &str) {
        self.would_block = Some(match self.would_block.take() {
            Some(w) => format!("{w},{marks}"),
            None => marks.to_string(),
        });
    }

    /// An answer that broke its schema or repeated the canary is delivered (when the
    /// policy flags) but never stored in the cache.
    pub fn answer_tainted(&self) -> bool {
        self.schema_state == Some("invalid") || self.canary.as_ref().is_some_and(|c| c.leaked)
    }

    pub fn team(&self) -> &str {
        self.key.as_ref().map_or("none", |k| k.team.as_str())
    }

    /// The usage that was spent: none for a cache hit, unless the policy charges hits.
    pub fn spent(&self) -> Option<Usage> {
        match self.cache {
            Some(super::cache::CacheResult::Hit) if !self.cache_charged => None,
            _ => self.usage,
        }
    }

    pub fn endpoint_label(&self) -> &'static str {
        self.endpoint.map_or("unknown", Endpoint::label)
    }
}

/// A unique, unguessable-enough request id.
fn next_request_id() -> String {
    format!("req_{:016x}", crate::secret::unique_u64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_unique_and_prefixed() {
        let a = super::next_request_id();
        let b = super::next_request_id();
        assert_ne!(a, b);
        assert!(a.starts_with("req_") && a.len() == 20);
    }
}
