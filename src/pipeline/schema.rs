//! Output schema stage: the model's answer is treated like user input. [`plan`] decides,
//! before the request goes out, what the answer must satisfy: the schema the request
//! declares (compiled once per distinct schema, cached), or the policy's own `json_schema`
//! when it declares none, with the policy's domain `rules` and `min_confidence` on top.
//! [`check`] parses the assistant text or each tool call's arguments and lists every
//! violation by JSON pointer; [`judge`] turns them into the policy's action, counted in
//! `warden_schema_violations_total`. The retry loop itself is in the pipeline
//! ([`super::run`]): it asks the upstream again with a repair turn, and the client sees
//! only the final answer.

use std::sync::Arc;

use serde_json::Value;

use super::ctx::RequestCtx;
use crate::config::jsonschema::{cut, select, Compiled};
use crate::error::{ProxyError, SchemaRefusal};
use crate::policy::compile::Policy;
use crate::policy::schema::{OnInvalid, OutputRules, StreamMode};
use crate::policy::Mode;
use crate::provider::output::Output;
use crate::provider::request::RequestView;
use crate::provider::structured::{declared, TextFormat};
use crate::provider::Endpoint;
use crate::state::AppState;

/// What one request's answer must satisfy.
#[derive(Debug)]
pub struct OutputPlan {
    pub rules: Arc<OutputRules>,
    /// The assistant text: `Some(None)` any JSON, `Some(Some(s))` JSON against `s`.
    text: Option<Option<Compiled>>,
    /// Declared function tools and their argument schemas.
    tools: Vec<(String, Option<Compiled>)>,
}

impl OutputPlan {
    /// A plan for a text answer against one schema, as a policy's `json_schema` makes it
    /// (for the benchmark and tests).
    pub fn for_text(rules: Arc<OutputRules>, schema: Compiled) -> OutputPlan {
        OutputPlan { rules, text: Some(Some(schema)), tools: Vec::new() }
    }

    /// A streamed answer is checked live at its end rather than collected first.
    pub fn passthrough(&self) -> bool {
        self.rules.stream == StreamMode::Passthrough
    }
}

/// The plan for a request, or `None` when no policy validates its output or it asks for
/// nothing to validate (free text, and the policy attaches no schema). `Err` (400): a
/// declared schema that is not one warden can compile.
pub fn plan(
    app: &AppState,
    policies: &[&Policy],
    endpoint: Endpoint,
    view: &RequestView,
) -> Result<Option<Arc<OutputPlan>>, ProxyError> {
    // The first policy (in priority order) with an output section decides the action.
    let Some(rules) = policies.iter().find_map(|p| p.schema.output.clone()) else { return Ok(None) };
    if !matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Responses | Endpoint::Messages)
    {
        return Ok(None);
    }
    let d = declared(endpoint, &view.fields).map_err(ProxyError::InvalidShape)?;
    let compile = |raw: &serde_json::value::RawValue, field: &str| {
        app.schemas.get(raw.get()).map_err(|e| {
            ProxyError::InvalidShape(format!("`{field}` is not a JSON Schema warden can use: {}", cut(&e, 300)))
        })
    };
    let text = match d.text {
        TextFormat::Schema { schema, field } => Some(Some(compile(schema, field)?)),
        TextFormat::AnyJson => Some(rules.json_schema.clone()),
        TextFormat::Free if !d.any_schema() => rules.json_schema.clone().map(Some),
        TextFormat::Free => None,
    };
    let mut tools = Vec::with_capacity(d.tools.len());
    for (name, schema) in d.tools {
        let compiled = match schema {
            Some(s) => Some(compile(s, "tools")?),
            None => None,
        };
        tools.push((name, compiled));
    }
    if text.is_none() && tools.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(OutputPlan { rules, text, tools })))
}

/// Every way the output breaks the plan (at most [`crate::config::jsonschema::MAX_PROBLEMS`] per
/// part), each as `where pointer: why`. A refusal is an answer, not output to validate.
pub fn check(plan: &OutputPlan, out: &Output) -> Vec<String> {
    let mut problems = Vec::new();
    if out.refusal {
        return problems;
    }
    let calls = out.tool_calls();
    for (i, call) in calls.iter().enumerate() {
        let at = format!("tool call {i} (`{}`)", cut(&call.name, 64));
        let Some((_, schema)) = plan.tools.iter().find(|(n, _)| *n == call.name) else {
            if !plan.tools.is_empty() {
                problems.push(format!("{at}: the request declares no tool of that name"));
            }
            continue;
        };
        // A tool without parameters is called with none.
        let args = if call.arguments.trim().is_empty() { "{}" } else { call.arguments.as_str() };
        json_problems(plan, schema.as_ref(), args, &at, &mut problems);
    }
    if let Some(schema) = &plan.text {
        if !out.text.is_empty() || calls.is_empty() {
            json_problems(plan, schema.as_ref(), &out.text, "content", &mut problems);
        }
    }
    problems
}

fn json_problems(plan: &OutputPlan, schema: Option<&Compiled>, text: &str, at: &str, out: &mut Vec<String>) {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.push(format!("{at}: not valid JSON ({e})"));
            return;
        }
    };
    let before = out.len();
    for s in schema.into_iter().chain(plan.rules.rules.as_ref()) {
        for p in s.problems(&value) {
            // The same place broken the same way by both schemas is reported once.
            let line = format!("{at} {}: {}", pointer(&p.pointer), p.message);
            if !out[before..].contains(&line) {
                out.push(line);
            }
        }
    }
    if let Some((ptr, threshold)) = &plan.rules.min_confidence {
        for (found, v) in select(&value, ptr) {
            match v.as_f64() {
                Some(c) if c < *threshold => {
                    out.push(format!("{at} {found}: confidence {c} is below the policy's minimum {threshold}"))
                }
                Some(_) => {}
                None => out.push(format!("{at} {found}: confidence must be a number, got {}", cut(&v.to_string(), 40))),
            }
        }
    }
}

fn pointer(p: &str) -> &str {
    if p.is_empty() {
        "/"
    } else {
        p
    }
}

/// What the pipeline does with a checked answer.
#[derive(Debug)]
pub enum Judged {
    /// Deliver it.
    Pass,
    /// Ask again, with this repair note.
    Retry(String),
    /// Refuse it (502, or the stream's error event).
    Reject(ProxyError),
}

/// Applies the policy's action to a checked answer: metrics, the `x-warden-schema` state,
/// the log's record. `attempt`: 1 for the first call. `can_retry`: false once the answer's
/// first byte has gone out (a passthrough stream), where `retry` can only reject.
pub fn judge(
    app: &AppState,
    cx: &mut RequestCtx,
    plan: &OutputPlan,
    problems: Vec<String>,
    attempt: u32,
    can_retry: bool,
) -> Judged {
    cx.schema_attempts = attempt;
    if problems.is_empty() {
        cx.schema_state = Some("valid");
        return Judged::Pass;
    }
    let r = &plan.rules;
    let act = match (r.mode, r.on_invalid) {
        (Mode::Monitor, _) => Act::Monitor,
        (Mode::Enforce, OnInvalid::Flag) => Act::Flag,
        (Mode::Enforce, OnInvalid::Retry) if can_retry && attempt <= r.max_retries => Act::Retry,
        (Mode::Enforce, OnInvalid::Retry | OnInvalid::Reject) => Act::Reject,
    };
    app.metrics.schema_violations.with_label_values(&["output", &r.policy, act.as_str()]).inc();
    cx.schema_state = Some("invalid");
    // The log names where the output broke, not the values (they are the model's text).
    let places: Vec<&str> = problems.iter().map(|p| p.split(": ").next().unwrap_or("")).collect();
    cx.schema_problems = Some(places.join(", "));
    match act {
        Act::Monitor => {
            cx.add_would_block(&format!("{}:schema.output", r.policy));
            Judged::Pass
        }
        Act::Flag => Judged::Pass,
        Act::Retry => {
            app.metrics.schema_retries.inc();
            Judged::Retry(repair_note(&problems))
        }
        Act::Reject => Judged::Reject(ProxyError::SchemaInvalid(Box::new(SchemaRefusal {
            policy: r.policy.to_string(),
            attempts: attempt,
            problems,
        }))),
    }
}

/// What the policy does with one invalid answer (the metric's `action`).
#[derive(Clone, Copy)]
enum Act {
    Monitor,
    Flag,
    Retry,
    Reject,
}

impl Act {
    fn as_str(self) -> &'static str {
        match self {
            Act::Monitor => "monitor",
            Act::Flag => "flag",
            Act::Retry => "retry",
            Act::Reject => "reject",
        }
    }
}

/// Checks an upstream's successful answer: a JSON body against the plan; a stream either
/// collected whole first (`buffer`: the response becomes the collected stream, sent on only
/// when it passes) or marked to be checked at its final event (`passthrough`). A collected
/// stream that broke off is not judged: delivered as it is, it ends with the API's error
/// event.
pub async fn answer(
    app: &AppState,
    cx: &mut RequestCtx,
    plan: &Arc<OutputPlan>,
    checked: &mut super::checked::Checked,
    timeouts: &super::respond::BodyTimeouts,
    provider: &str,
    attempt: u32,
) -> Result<Judged, ProxyError> {
    if checked.body.is_some() {
        let problems = check(plan, cx.output.as_ref().unwrap_or(&Output::default()));
        return Ok(judge(app, cx, plan, problems, attempt, true));
    }
    if plan.passthrough() {
        cx.verify_stream = Some(plan.clone());
        return Ok(Judged::Pass);
    }
    let placeholder = http::Response::new(crate::http::body::empty());
    let (parts, body) = std::mem::replace(&mut checked.response, placeholder).into_parts();
    let bytes = super::checked::read_whole(body, timeouts, provider).await?;
    let mut watch = super::stream::SseWatch::new(cx.family.dialect(), false, true);
    let _ = watch.accept(bytes.clone());
    checked.response = http::Response::from_parts(parts, crate::http::body::full(bytes));
    if !watch.terminal {
        return Ok(Judged::Pass);
    }
    cx.usage = Some(watch.usage(cx.request_bytes));
    cx.output = watch.output.take();
    let problems = check(plan, cx.output.as_ref().unwrap_or(&Output::default()));
    Ok(judge(app, cx, plan, problems, attempt, true))
}

/// The body of the next attempt: the first body, with a repair turn when the policy asks
/// for one (the bad text answer quoted back, and the violations).
pub fn again(
    plan: Option<&OutputPlan>,
    endpoint: Endpoint,
    first: Option<&bytes::Bytes>,
    cx: &RequestCtx,
    note: &str,
) -> bytes::Bytes {
    let first = first.cloned().unwrap_or_default();
    if !plan.is_some_and(|p| p.rules.repair) {
        return first;
    }
    let answer = cx.output.as_ref().filter(|o| o.tool_calls().is_empty()).map(|o| o.text.as_str());
    crate::provider::structured::repaired(endpoint, &first, answer, note).unwrap_or(first)
}

/// The refusal of an answer, as the error response the client gets (recorded like any
/// error). It goes out through the exchange so that the attempts' usage is settled.
pub fn refuse(app: &AppState, cx: &mut RequestCtx, e: ProxyError) -> http::Response<crate::http::body::Body> {
    cx.error_kind = Some(e.kind());
    cx.error_detail = e.detail();
    app.metrics.errors.with_label_values(&[e.kind()]).inc();
    e.into_response(cx.family)
}

/// A passthrough stream's output, judged when its final event has arrived (held back in
/// the watch): `Ok` the held event, to go out; `Err` the API's error event that replaces it
/// (a retry is no longer possible: bytes went out).
pub fn judge_stream(
    app: &AppState,
    cx: &mut RequestCtx,
    plan: &OutputPlan,
    w: &mut super::stream::SseWatch,
) -> Result<bytes::Bytes, bytes::Bytes> {
    let problems = check(plan, w.output.as_ref().unwrap_or(&Output::default()));
    let held = w.rest();
    let message = match judge(app, cx, plan, problems, 1, false) {
        Judged::Pass => return Ok(held),
        Judged::Retry(note) => note,
        Judged::Reject(e) => {
            cx.error_kind = Some(e.kind());
            app.metrics.errors.with_label_values(&[e.kind()]).inc();
            e.to_string()
        }
    };
    Err(w.error_with(crate::error::ErrorClass::Upstream, &message))
}

/// The message a retry adds: the violations, and what to do about them.
fn repair_note(problems: &[String]) -> String {
    format!(
        "Your previous answer did not satisfy the required JSON schema:\n- {}\nAnswer again with JSON only, \
         fixing every problem above. If a value is unknown, say so in the fields the schema provides \
         rather than inventing one.",
        problems.join("\n- ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::jsonschema::compile;
    use serde_json::json;

    fn rules(on_invalid: OnInvalid) -> Arc<OutputRules> {
        Arc::new(OutputRules {
            policy: "p".into(),
            json_schema: None,
            rules: Some(compile(&json!({"properties": {"currency": {"pattern": "^[A-Z]{3}$"}}})).unwrap()),
            min_confidence: Some(("/confidence".into(), 0.6)),
            on_invalid,
            max_retries: 1,
            repair: true,
            stream: StreamMode::Buffer,
            mode: Mode::Enforce,
        })
    }

    fn invoice() -> Compiled {
        compile(&json!({"type": "object", "required": ["amount", "currency"],
            "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}, "confidence": {"type": "number"}}}))
        .unwrap()
    }

    fn text(t: &str) -> Output {
        let mut o = Output::default();
        o.text = t.into();
        o
    }

    #[test]
    fn text_is_checked_against_schema_rules_and_confidence() {
        let plan = OutputPlan { rules: rules(OnInvalid::Reject), text: Some(Some(invoice())), tools: Vec::new() };
        assert!(check(&plan, &text(r#"{"amount": 3, "currency": "EUR", "confidence": 0.9}"#)).is_empty());
        assert!(check(&plan, &text("{\"amount\":"))[0].starts_with("content: not valid JSON"));
        let p = check(&plan, &text(r#"{"amount": "3", "currency": "eur", "confidence": 0.2}"#));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("content /amount: "));
        assert!(p[1].starts_with("content /currency: "));
        assert_eq!(p[2], "content /confidence: confidence 0.2 is below the policy's minimum 0.6");
        let p = check(&plan, &text(r#"{"currency": "EUR"}"#));
        assert!(p[0].starts_with("content /: ") && p[0].contains("amount"), "{p:?}");
        // A refusal is not validated.
        let mut refused = Output::default();
        refused.refusal = true;
        assert!(check(&plan, &refused).is_empty());
    }

    #[test]
    fn tool_calls_are_checked_by_their_declared_schema() {
        let plan = OutputPlan {
            rules: rules(OnInvalid::Reject),
            text: None,
            tools: vec![("record".into(), Some(invoice())), ("noargs".into(), None)],
        };
        let out = |name: &str, args: &str| {
            let mut o = Output::default();
            let j = json!({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": name, "arguments": args}}]}}]});
            o = Output::from_json(crate::provider::ApiFamily::OpenAi, j.to_string().as_bytes()).unwrap_or(o);
            o
        };
        assert!(check(&plan, &out("record", r#"{"amount":1,"currency":"USD"}"#)).is_empty());
        assert!(check(&plan, &out("noargs", "")).is_empty());
        assert_eq!(
            check(&plan, &out("other", "{}")),
            ["tool call 0 (`other`): the request declares no tool of that name"]
        );
        let p = check(&plan, &out("record", r#"{"amount":1,"currency":"usd"}"#));
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("tool call 0 (`record`) /currency: "), "{p:?}");
    }
}
