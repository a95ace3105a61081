//! Policy stage: finds the policies that match the request (a few hash lookups in the
//! snapshot's index) and applies their `limits`. Runs after routing and authorization and
//! before the upstream call. It may refuse the request (400/403), record "would have
//! blocked" for monitor-mode rules, or lower / fill in the output-token limit.

use std::ops::Range;

use bytes::Bytes;

use crate::config::Snapshot;
use crate::error::ProxyError;
pub use crate::policy::compile::Facts;
use crate::policy::limits::{decide, Decision, SetTokens};
use crate::state::AppState;

use super::ctx::RequestCtx;
use super::parse::{splice, Edit, Fields};

pub fn evaluate<'s>(
    snap: &'s Snapshot,
    facts: &Facts,
    fields: &Fields,
    body: &[u8],
) -> Result<Decision<'s>, ProxyError> {
    let policies = snap.policies.resolve(facts);
    decide(&policies, facts, fields, body).map_err(ProxyError::BadRequest)
}

/// Makes the decision visible: response headers, the log line and metrics.
pub fn record(app: &AppState, cx: &mut RequestCtx, d: &Decision) {
    if !d.applied.is_empty() {
        cx.policies = Some(d.applied.join(","));
    }
    let m = &app.metrics.policy_decisions;
    if let Some(v) = &d.block {
        m.with_label_values(&[v.policy.as_str(), v.rule, "block"]).inc();
    }
    if !d.would_block.is_empty() {
        for v in &d.would_block {
            m.with_label_values(&[v.policy.as_str(), v.rule, "would_block"]).inc();
        }
        cx.would_block =
            Some(d.would_block.iter().map(|v| format!("{}:{}", v.policy, v.rule)).collect::<Vec<_>>().join(","));
    }
    if let Some(t) = &d.set_tokens {
        let what = if t.clamped { "clamp" } else { "default" };
        m.with_label_values(&[t.policy.as_str(), "limits.max_tokens", what]).inc();
    }
}

/// Applies an alias's model name and a policy's token limit by splicing the body: the rest
/// is forwarded byte for byte, and nothing is serialised again.
pub fn rewrite(body: &[u8], model: Option<(&str, Option<Range<usize>>)>, tokens: Option<&SetTokens>) -> Bytes {
    let mut edits = Vec::with_capacity(2);
    if let Some((name, span)) = model {
        edits.push(Edit { span, field: "model", value: serde_json::Value::from(name).to_string() });
    }
    if let Some(t) = tokens {
        edits.push(Edit { span: t.span.clone(), field: t.field, value: t.value.to_string() });
    }
    splice(body, edits)
}
