//! Policy stage: finds the policies that match the request (a few hash lookups in the
//! snapshot's index) and applies their `limits`. Runs after routing and authorization and
//! before the upstream call. It may refuse the request (400/403), record "would have
//! blocked" for monitor-mode rules, or lower / fill in the output-token limit.

use bytes::Bytes;
use serde_json::Value;

use crate::config::Snapshot;
use crate::error::ProxyError;
pub use crate::policy::compile::Facts;
use crate::policy::limits::{decide, needs_body, Decision, SetTokens};
use crate::state::AppState;

use super::ctx::RequestCtx;

/// Decides; the body is parsed only when a matching policy has rules that read it, and the
/// parsed value is returned so a later rewrite need not parse again.
pub fn evaluate(snap: &Snapshot, facts: &Facts, body: &[u8]) -> Result<(Decision, Option<Value>), ProxyError> {
    let policies = snap.policies.resolve(facts);
    let parsed = if needs_body(&policies) {
        Some(
            serde_json::from_slice::<Value>(body)
                .map_err(|e| ProxyError::BadRequest(format!("the request body is not valid JSON: {e}")))?,
        )
    } else {
        None
    };
    Ok((decide(&policies, facts, parsed.as_ref()), parsed))
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

/// Applies an alias's model name and a policy's token limit in one re-serialisation: the
/// only case in which warden rewrites a request body.
pub fn rewrite(
    body: &[u8],
    parsed: Option<Value>,
    model: Option<&str>,
    tokens: Option<&SetTokens>,
) -> Result<Bytes, ProxyError> {
    let mut v = match parsed {
        Some(v) => v,
        None => serde_json::from_slice(body)
            .map_err(|e| ProxyError::BadRequest(format!("the request body is not valid JSON: {e}")))?,
    };
    if let Some(obj) = v.as_object_mut() {
        if let Some(m) = model {
            obj.insert("model".into(), Value::String(m.to_string()));
        }
        if let Some(t) = tokens {
            obj.insert(t.field.into(), Value::from(t.value));
        }
    }
    serde_json::to_vec(&v).map(Bytes::from).map_err(|e| ProxyError::Internal(e.to_string()))
}
