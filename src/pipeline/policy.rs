//! Policy stage: finds the policies that match the request (a few hash lookups in the
//! snapshot's index) and applies their `limits`. Runs after routing and authorization and
//! before the upstream call. It may refuse the request (400/403), record "would have
//! blocked" for monitor-mode rules, or lower / fill in the output-token limit.

use std::ops::Range;

use bytes::Bytes;

pub use crate::policy::compile::Facts;
use crate::policy::verdict::{Decision, PolicyEdit};
use crate::state::AppState;

use super::ctx::RequestCtx;
use crate::http::splice::{splice, Edit};
use crate::provider::request::RequestView;
use crate::provider::Endpoint;

pub use crate::policy::evaluate::evaluate;

/// Makes the decision visible: response headers, the log line and metrics.
pub fn record(app: &AppState, cx: &mut RequestCtx, d: &Decision) {
    if !d.applied.is_empty() {
        cx.policies = Some(d.applied.join(","));
    }
    let m = &app.metrics.policy_decisions;
    let schema = |v: &crate::policy::verdict::Violation, action: &str| {
        if v.rule.starts_with("schema.") {
            app.metrics.schema_violations.with_label_values(&["request", v.policy.as_str(), action]).inc();
        }
    };
    if let Some(v) = &d.block {
        m.with_label_values(&[v.policy.as_str(), v.rule, "block"]).inc();
        schema(v, "block");
    }
    if !d.would_block.is_empty() {
        for v in &d.would_block {
            m.with_label_values(&[v.policy.as_str(), v.rule, "would_block"]).inc();
            schema(v, "would_block");
        }
        cx.would_block =
            Some(d.would_block.iter().map(|v| format!("{}:{}", v.policy, v.rule)).collect::<Vec<_>>().join(","));
    }
    for e in &d.edits {
        m.with_label_values(&[e.policy.as_str(), e.rule, e.action]).inc();
    }
}

/// Applies an alias's model name, nested batch requests' aliases and every policy section's
/// edits by splicing the body in one pass: the rest is forwarded byte for byte, and nothing
/// is serialised again. A body that needs no change is returned as it came.
pub fn rewrite(
    body: Bytes,
    model: Option<(&str, Option<Range<usize>>)>,
    policy_edits: Vec<PolicyEdit>,
    nested_models: &[(Range<usize>, String)],
    extra: Option<Edit>,
) -> Bytes {
    if model.is_none() && policy_edits.is_empty() && nested_models.is_empty() && extra.is_none() {
        return body;
    }
    let top = body.iter().position(|b| *b == b'{').unwrap_or(0);
    let mut edits = Vec::with_capacity(2 + nested_models.len());
    if let Some((name, span)) = model {
        edits.push(Edit { span, object: top, field: "model", value: serde_json::Value::from(name).to_string() });
    }
    edits.extend(policy_edits.into_iter().map(|e| e.edit));
    for (span, name) in nested_models {
        edits.push(Edit {
            span: Some(span.clone()),
            object: span.start,
            field: "model",
            value: serde_json::Value::from(name.as_str()).to_string(),
        });
    }
    edits.extend(extra);
    splice(&body, edits)
}

/// The request's own output limit after the `limits` edits: `(field, value)`.
pub fn top_output_limit(
    endpoint: Endpoint,
    view: &RequestView,
    d: &Decision,
    top: usize,
) -> Option<(&'static str, u64)> {
    if let Some(e) = d.edits.iter().find(|e| e.rule == "limits.max_tokens" && e.edit.object == top) {
        return e.edit.value.parse().ok().map(|v| (e.edit.field, v));
    }
    endpoint.max_tokens_fields().iter().find_map(|f| {
        let v = view.fields.get(f)?.get().parse::<f64>().ok()?;
        Some((*f, v.max(0.0) as u64))
    })
}

/// Sets the request's output limit (a budget's clamp or its default), replacing any edit of
/// that field the `limits` rules made and the request's own value.
pub fn set_top_output(d: &mut Decision, view: &RequestView, body: &[u8], top: usize, field: &'static str, value: u64) {
    d.edits.retain(|e| !(e.edit.field == field && e.edit.object == top));
    let span = view.fields.get(field).map(|raw| crate::provider::request::span(body, raw));
    d.edits.push(PolicyEdit {
        mode: crate::policy::Mode::Enforce,
        policy: "(budgets)".into(),
        rule: "budgets",
        action: "clamp",
        edit: Edit { span, object: top, field, value: value.to_string() },
        objection: None,
    });
}
