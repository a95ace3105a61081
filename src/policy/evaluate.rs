//! One request against the snapshot's policies: which policies apply, what their `limits`
//! decide, and, for batch endpoints, the same for every nested request as if it had been
//! sent alone (its own model, its own matching policies). Shared by the pipeline and
//! `warden test`, so a test case is decided exactly as live traffic is.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::compile::Facts;
use super::compile::Policy;
use super::limits::decide;
use super::verdict::Decision;
use crate::config::Snapshot;
use crate::error::ProxyError;
use crate::provider::request::{span, view, Fields, RequestView};

/// The decision plus the model renames that nested batch requests need (aliases).
pub struct Evaluated<'s> {
    pub decision: Decision<'s>,
    /// `(where the model value sits, the upstream's model name)` per nested request.
    pub model_edits: Vec<(Range<usize>, String)>,
    /// The policies that apply to the request itself, in order (their budgets come next).
    pub policies: Vec<&'s Policy>,
}

#[derive(Deserialize)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// Decides a request. `Err`: a field the rules read does not have the API's shape, or a
/// nested batch request cannot be routed with the batch (400/404).
pub fn evaluate<'s>(
    snap: &'s Snapshot,
    facts: &Facts,
    request: &RequestView,
    body: &[u8],
) -> Result<Evaluated<'s>, ProxyError> {
    let policies = snap.policies.resolve(facts);
    let object = body.iter().position(|b| *b == b'{').unwrap_or(0);
    let mut decision = Decision { applied: policies.iter().map(|p| &*p.name).collect(), ..Decision::default() };
    decision.apply(decide(&policies, facts, request, body, object).map_err(ProxyError::InvalidShape)?);
    // A batch's own body is an envelope: its nested requests are what reach the model.
    if facts.endpoint.batch_item().is_none() {
        decision.apply(super::schema::decide(&policies, body));
    }
    let mut model_edits = Vec::new();
    let Some(item_endpoint) = facts.endpoint.batch_item() else {
        return Ok(Evaluated { decision, model_edits, policies });
    };
    for (i, params) in batch_params(&request.fields).map_err(ProxyError::InvalidShape)?.into_iter().enumerate() {
        let at = span(body, params);
        let item = view(item_endpoint, &http::Method::POST, params.get().as_bytes())
            .map_err(|e| ProxyError::InvalidShape(format!("`requests[{i}].params`: {e}")))?;
        let model = item.model.as_deref().unwrap_or_default();
        let routed = snap.route(model).ok_or_else(|| {
            ProxyError::ModelNotFound(format!(
                "The model `{model}` of `requests[{i}]` does not exist or is not routed by warden"
            ))
        })?;
        if Some(routed.provider.name.as_str()) != facts.provider {
            return Err(ProxyError::MixedBatch {
                index: i,
                model: model.to_string(),
                provider: routed.provider.name.clone(),
                batch_provider: facts.provider.unwrap_or("none").to_string(),
            });
        }
        let upstream = (routed.upstream_model != model).then_some(routed.upstream_model);
        if let (Some(target), Some(s)) = (upstream, &item.model_span) {
            model_edits.push((at.start + s.start..at.start + s.end, target.to_string()));
        }
        let item_facts = Facts { endpoint: item_endpoint, model: Some(model), upstream_model: upstream, ..*facts };
        let item_policies = snap.policies.resolve(&item_facts);
        let mut verdict =
            decide(&item_policies, &item_facts, &item, body, at.start).map_err(ProxyError::InvalidShape)?;
        let schema = super::schema::decide(&item_policies, params.get().as_bytes());
        verdict.findings.extend(schema.findings);
        let objections = verdict.edits.iter_mut().filter_map(|e| e.objection.as_mut());
        for v in verdict.findings.iter_mut().map(|(_, v)| v).chain(objections) {
            v.message = format!("requests[{i}]: {}", v.message);
            // Schema rules name JSON pointers; the others name fields.
            v.field = match v.field.starts_with('/') || v.rule.starts_with("schema.") {
                true => format!("/requests/{i}/params{}", v.field),
                false => format!("requests[{i}].params.{}", v.field),
            };
        }
        for p in &item_policies {
            if !decision.applied.contains(&&*p.name) {
                decision.applied.push(&*p.name);
            }
        }
        decision.apply(verdict);
    }
    Ok(Evaluated { decision, model_edits, policies })
}

/// The nested requests' `params` objects.
pub(crate) fn batch_params<'a>(fields: &Fields<'a>) -> Result<Vec<&'a RawValue>, String> {
    let Some(raw) = fields.requests else { return Ok(Vec::new()) };
    let items: Vec<BatchRequest> =
        serde_json::from_str(raw.get()).map_err(|_| "`requests` must be an array of objects".to_string())?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.params
                .filter(|p| p.get().starts_with('{'))
                .ok_or_else(|| format!("`requests[{i}].params` must be an object"))
        })
        .collect()
}

/// The model of a batch's first nested request: it decides the provider the batch goes to.
pub fn batch_model<'a>(fields: &Fields<'a>) -> Option<Cow<'a, str>> {
    let first = batch_params(fields).ok()?.into_iter().next()?;
    #[derive(Deserialize)]
    struct Model<'a> {
        #[serde(borrow)]
        model: Option<Cow<'a, str>>,
    }
    serde_json::from_str::<Model>(first.get()).ok()?.model
}
