//! Injection stage: every text part the policy scans (user turns and tool results by
//! default; system prompts and assistant history on request), of every message and every
//! item, multimodal text parts included and never image payloads, read from the shared
//! request view (a message batch: each nested request's). Each part is scanned by
//! [`crate::injection::scan`]; the policy's family weights and threshold decide what is a
//! detection. Every detection is logged with rule id, family, message index and role and
//! counted in `warden_injection_detections_total`; then the action: `block` (403 naming the
//! family, never the text), `flag` (`x-warden-injection: family=score`), `sanitize`
//! (invisible characters and template tokens removed through the one body-edit pass).

use crate::error::{InjectionRefusal, ProxyError};
use crate::http::splice::Edit;
use crate::injection::rules::Family;
use crate::policy::compile::Policy;
use crate::policy::injection::{InjectionAction, InjectionPolicy};
use crate::policy::verdict::PolicyEdit;
use crate::policy::Mode;
use crate::provider::history::{Role, TextPart};
use crate::provider::request::{span, view, RequestView};
use crate::provider::Endpoint;
use crate::state::AppState;

use super::ctx::RequestCtx;

/// One family found in one text part.
#[derive(Debug, Clone)]
pub struct Detection {
    pub family: Family,
    pub score: f32,
    pub rule: &'static str,
    pub role: Role,
    pub message: Option<usize>,
    /// Which nested request of a batch.
    pub item: Option<usize>,
}

impl Detection {
    fn place(&self) -> String {
        let role = role_name(self.role);
        let within = match (self.item, self.message) {
            (Some(i), Some(m)) => format!("requests[{i}] message {m}"),
            (Some(i), None) => format!("requests[{i}] system prompt"),
            (None, Some(m)) => format!("message {m}"),
            (None, None) => "the system prompt".to_string(),
        };
        format!("{within} ({role})")
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// Scans the request as the first matching policy with an `injection` section says, and
/// applies its action. `edits`: where `sanitize` puts its changes.
pub fn check(
    app: &AppState,
    cx: &mut RequestCtx,
    policies: &[&Policy],
    endpoint: Endpoint,
    request: &RequestView,
    body: &[u8],
    edits: &mut Vec<PolicyEdit>,
) -> Result<(), ProxyError> {
    let Some((name, policy)) = policies.iter().find_map(|p| Some((&*p.name, p.injection.as_ref()?))) else {
        return Ok(());
    };
    let nested;
    let requests: Vec<(Option<usize>, &RequestView)> = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Responses | Endpoint::Messages => {
            vec![(None, request)]
        }
        Endpoint::MessageBatches => {
            nested = batch_views(request)?;
            nested.iter().enumerate().map(|(i, v)| (Some(i), v)).collect()
        }
        _ => return Ok(()),
    };
    let mut found: Vec<Detection> = Vec::new();
    let mut sanitized: Vec<(&TextPart, String)> = Vec::new();
    for (item, v) in requests {
        let history = v.history().map_err(ProxyError::InvalidShape)?;
        for part in history.texts.iter().filter(|t| scanned(policy, t.role)) {
            let before = found.len();
            scan_part(policy, part, item, &mut found);
            if found.len() > before && policy.action == InjectionAction::Sanitize {
                if let Some(clean) = crate::injection::normalize::sanitize(&part.text) {
                    sanitized.push((part, clean));
                }
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let action = if policy.mode == Mode::Monitor { "monitor" } else { policy.action.as_str() };
    let mut counted: Vec<Family> = Vec::new();
    for d in &found {
        tracing::warn!(
            target: "warden::injection",
            request_id = %cx.id,
            policy = name,
            family = d.family.as_str(),
            score = d.score,
            rule = d.rule,
            message_index = d.message.map_or(-1, |m| m as i64),
            item = d.item.map_or(-1, |m| m as i64),
            role = role_name(d.role),
            action,
            "prompt injection detected"
        );
        if !counted.contains(&d.family) {
            counted.push(d.family);
            app.metrics.injection_detections.with_label_values(&[d.family.as_str(), action, name]).inc();
        }
    }
    let top = &found[0];
    cx.injection = Some(format!("{}={:.2}", top.family.as_str(), top.score));
    match (policy.mode, policy.action) {
        (Mode::Monitor, _) => {
            cx.add_would_block(&format!("{name}:injection"));
            Ok(())
        }
        (Mode::Enforce, InjectionAction::Flag) => Ok(()),
        (Mode::Enforce, InjectionAction::Block) => Err(ProxyError::InjectionDetected(Box::new(InjectionRefusal {
            policy: name.to_string(),
            family: top.family.as_str(),
            score: top.score,
            place: top.place(),
        }))),
        (Mode::Enforce, InjectionAction::Sanitize) => {
            for (part, clean) in sanitized {
                edits.push(PolicyEdit {
                    mode: Mode::Enforce,
                    policy: name.to_string(),
                    rule: "injection",
                    action: "sanitize",
                    edit: Edit {
                        span: Some(span(body, part.raw)),
                        object: 0,
                        field: "",
                        value: serde_json::Value::String(clean).to_string(),
                    },
                    objection: None,
                });
            }
            Ok(())
        }
    }
}

fn scanned(p: &InjectionPolicy, role: Role) -> bool {
    match role {
        Role::User => p.roles.user,
        Role::Tool => p.roles.tool,
        Role::System => p.roles.system,
        Role::Assistant => p.roles.assistant,
    }
}

/// Scans one part: allow-listed phrases removed first, family weights applied.
fn scan_part(p: &InjectionPolicy, part: &TextPart, item: Option<usize>, out: &mut Vec<Detection>) {
    // Tool results are data: nobody the user trusts wrote them.
    let scan = if part.role == Role::Tool { crate::injection::scan_data } else { crate::injection::scan };
    let report = if p.allow.is_empty() {
        scan(&part.text)
    } else {
        let mut text = part.text.to_lowercase();
        for phrase in &p.allow {
            text = text.replace(phrase.as_str(), " ");
        }
        scan(&text)
    };
    for (family, score) in report.ranked() {
        let score = (score * p.weight(family)).min(0.95);
        if score >= p.threshold {
            let rule = report.hits.iter().find(|h| h.family == family).map_or("hidden_text.invisible", |h| h.rule);
            out.push(Detection { family, score, rule, role: part.role, message: part.message, item });
        }
    }
}

/// The nested requests of a message batch, each read as the request it will be.
fn batch_views<'a>(request: &RequestView<'a>) -> Result<Vec<RequestView<'a>>, ProxyError> {
    let params = crate::policy::evaluate::batch_params(&request.fields).map_err(ProxyError::InvalidShape)?;
    params.into_iter().map(|p| view(Endpoint::Messages, &http::Method::POST, p.get().as_bytes())).collect()
}
