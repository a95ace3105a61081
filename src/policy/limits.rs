//! The `limits` rules applied to one request body: allowed and denied models, the token
//! ceiling (reject, clamp or default), `n`, `temperature` and `top_p` ranges, the tool
//! allow-list, and tool-call rounds counted from the request's own history (no state).
//! Pure: a function of the compiled rules and the request body, shared by the pipeline and
//! `warden test`. The body is read once, into borrowed views of just the fields the rules
//! need (no `serde_json::Value` tree), and changes are returned as byte ranges to splice.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::compile::{Facts, Limits, Policy, Range as Bounds, Rule};
use super::{Mode, OnExceed};
use crate::pipeline::parse::Fields;
use crate::provider::Endpoint;

/// One rule's objection to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub policy: String,
    /// `limits.max_tokens`, `limits.models`, ...
    pub rule: &'static str,
    /// The request field at fault.
    pub field: String,
    pub message: String,
    /// 403 for a denied model, 400 otherwise.
    pub forbidden: bool,
}

/// A change a policy makes to the request before it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetTokens {
    pub field: &'static str,
    pub value: u64,
    /// Where the request's own value sits in the body (`None`: the field is added).
    pub span: Option<Range<usize>>,
    pub policy: String,
    /// Lowered from a larger request value (`clamp`), as opposed to filled in (`default`).
    pub clamped: bool,
}

/// Everything the policies decided for one request.
#[derive(Debug, Default)]
pub struct Decision<'p> {
    /// Names of the policies that applied, in order (borrowed from the snapshot).
    pub applied: Vec<&'p str>,
    /// The first enforcing violation: the request is refused.
    pub block: Option<Violation>,
    /// Violations of rules in monitor mode: recorded, not enforced.
    pub would_block: Vec<Violation>,
    pub set_tokens: Option<SetTokens>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<Named<'a>>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

/// Applies the policies' `limits` to a request: `fields` are the body's top-level fields as
/// found by the parse stage (no second scan of the body), `body` the bytes they point into.
/// `Err` names a field the rules need that does not have the API's shape (400).
pub fn decide<'p>(
    policies: &[&'p Policy],
    facts: &Facts,
    fields: &Fields,
    body: &[u8],
) -> Result<Decision<'p>, String> {
    let mut d = Decision { applied: policies.iter().map(|p| p.name.as_str()).collect(), ..Decision::default() };
    if !needs_body(policies) {
        return Ok(d);
    }
    let req = Request::read(facts.endpoint, fields, body)?;
    for p in policies {
        if let Some(limits) = &p.limits {
            check(p, limits, facts, &req, &mut d);
        }
    }
    Ok(d)
}

/// What the rules look at, extracted once per request.
struct Request<'a> {
    /// The output-token limit the request names: field, value, and where it sits.
    tokens: Option<(&'static str, f64, Range<usize>)>,
    n: Option<f64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    tools: Vec<Cow<'a, str>>,
    tool_rounds: u64,
}

/// A numeric field: `None` when absent or null.
fn number(raw: Option<&RawValue>, name: &str) -> Result<Option<f64>, String> {
    match raw.map(RawValue::get) {
        None | Some("null") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| format!("`{name}` must be a number")),
    }
}

impl<'a> Request<'a> {
    fn read(endpoint: Endpoint, f: &Fields<'a>, body: &[u8]) -> Result<Request<'a>, String> {
        let mut tokens = None;
        for name in endpoint.max_tokens_fields() {
            if let Some(raw) = f.get(name) {
                if let Some(value) = number(Some(raw), name)? {
                    tokens = Some((*name, value, crate::pipeline::parse::span(body, raw)));
                    break;
                }
            }
        }
        let tools: Vec<Tool> = match f.tools.filter(|t| t.get() != "null") {
            Some(raw) => {
                serde_json::from_str(raw.get()).map_err(|_| "`tools` must be an array of tool objects".to_string())?
            }
            None => Vec::new(),
        };
        let tools = tools.into_iter().filter_map(|t| t.function.and_then(|f| f.name).or(t.name).or(t.kind)).collect();
        Ok(Request {
            tokens,
            n: number(f.n, "n")?,
            temperature: number(f.temperature, "temperature")?,
            top_p: number(f.top_p, "top_p")?,
            tools,
            tool_rounds: tool_rounds(endpoint, f)?,
        })
    }
}

/// Whether any of these policies has rules that need the body.
pub fn needs_body(policies: &[&Policy]) -> bool {
    policies.iter().any(|p| p.limits.is_some())
}

fn record<T>(d: &mut Decision, rule: &Rule<T>, v: Violation) {
    match rule.mode {
        Mode::Enforce if d.block.is_none() => d.block = Some(v),
        Mode::Enforce => {}
        Mode::Monitor => d.would_block.push(v),
    }
}

fn check(p: &Policy, l: &Limits, f: &Facts, req: &Request, d: &mut Decision) {
    let violation = |rule: &'static str, field: &str, message: String| Violation {
        policy: p.name.clone(),
        rule,
        field: field.to_string(),
        message,
        forbidden: false,
    };

    if let (Some(rule), Some(model)) = (&l.models, f.model) {
        let upstream = f.upstream_model.unwrap_or(model);
        let hit = |g: &crate::config::glob::Glob| g.matches(model) || g.matches(upstream);
        let denied = rule.value.deny.iter().any(hit);
        let allowed = rule.value.allow.as_ref().is_none_or(|a| a.iter().any(hit));
        if denied || !allowed {
            let mut v = violation("limits.models", "model", format!("model `{model}` is not allowed"));
            v.forbidden = true;
            record(d, rule, v);
        }
    }

    if let Some(rule) = &l.max_tokens {
        if let Some(field) = f.endpoint.max_tokens_field() {
            let c = rule.value;
            match &req.tokens {
                Some((name, v, span)) if *v > c.max as f64 => match (c.on_exceed, rule.mode) {
                    (OnExceed::Clamp, Mode::Enforce) => set_tokens(d, name, c.max, &p.name, Some(span.clone())),
                    _ => record(
                        d,
                        rule,
                        violation(
                            "limits.max_tokens",
                            name,
                            format!("`{name}` is {v}, above the ceiling of {}", c.max),
                        ),
                    ),
                },
                Some(_) => {}
                None if rule.mode == Mode::Enforce => set_tokens(d, field, c.default, &p.name, None),
                None => {}
            }
        }
    }

    if let (Some(rule), Some(n)) = (&l.max_n, req.n) {
        if n > rule.value as f64 {
            record(d, rule, violation("limits.max_n", "n", format!("`n` is {n}, above the ceiling of {}", rule.value)));
        }
    }

    for (rule, field, value) in [(&l.temperature, "temperature", req.temperature), (&l.top_p, "top_p", req.top_p)] {
        if let (Some(rule), Some(v)) = (rule, value) {
            if let Some(msg) = outside(rule.value, v) {
                let name = if field == "temperature" { "limits.temperature" } else { "limits.top_p" };
                record(d, rule, violation(name, field, format!("`{field}` is {v}, {msg}")));
            }
        }
    }

    if let Some(rule) = &l.tools {
        if let Some(name) = req.tools.iter().find(|t| !rule.value.contains(t.as_ref())) {
            let v = violation("limits.tools", "tools", format!("tool `{name}` is not on the allow-list"));
            record(d, rule, v);
        }
    }

    let rule = &l.max_tool_iterations;
    if req.tool_rounds > rule.value {
        let field = if f.endpoint == Endpoint::Responses { "input" } else { "messages" };
        let msg =
            format!("the conversation has {} tool-call rounds, above the limit of {}", req.tool_rounds, rule.value);
        record(d, rule, violation("limits.max_tool_iterations", field, msg));
    }
}

fn set_tokens(d: &mut Decision, field: &'static str, value: u64, policy: &str, span: Option<Range<usize>>) {
    // The smallest value wins; on a tie the earlier (higher-priority) policy keeps its name.
    if d.set_tokens.as_ref().is_none_or(|s| value < s.value) {
        let clamped = span.is_some();
        d.set_tokens = Some(SetTokens { field, value, span, policy: policy.to_string(), clamped });
    }
}

fn outside(r: Bounds, v: f64) -> Option<String> {
    match (r.min, r.max) {
        (Some(min), _) if v < min => Some(format!("below the minimum of {min}")),
        (_, Some(max)) if v > max => Some(format!("above the maximum of {max}")),
        _ => None,
    }
}

/// Tool-call rounds in the history: assistant turns that asked for tools (OpenAI
/// `tool_calls`, Anthropic `tool_use` blocks), or runs of `function_call` items (Responses).
fn tool_rounds(endpoint: Endpoint, f: &Fields) -> Result<u64, String> {
    if endpoint == Endpoint::Responses {
        let Some(input) = f.input.filter(|i| i.get().starts_with('[')) else { return Ok(0) };
        let items: Vec<Typed> =
            serde_json::from_str(input.get()).map_err(|_| "`input` items must be objects".to_string())?;
        let mut rounds = 0;
        let mut in_run = false;
        for item in &items {
            let is_call = item.kind.as_deref() == Some("function_call");
            if is_call && !in_run {
                rounds += 1;
            }
            in_run = is_call;
        }
        return Ok(rounds);
    }
    let messages: Vec<Message> = match f.messages.filter(|m| m.get().starts_with('[')) {
        Some(raw) => {
            serde_json::from_str(raw.get()).map_err(|_| "`messages` must be an array of message objects".to_string())?
        }
        None => Vec::new(),
    };
    let mut rounds = 0;
    for m in messages.iter().filter(|m| m.role.as_deref() == Some("assistant")) {
        let openai = m.tool_calls.is_some_and(|c| c.get().starts_with('[') && c.get() != "[]");
        let anthropic = match m.content.filter(|c| c.get().starts_with('[')) {
            Some(blocks) => serde_json::from_str::<Vec<Typed>>(blocks.get())
                .map_err(|_| "`messages[].content` blocks must be objects".to_string())?
                .iter()
                .any(|b| b.kind.as_deref() == Some("tool_use")),
            None => false,
        };
        if openai || anthropic {
            rounds += 1;
        }
    }
    Ok(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn rounds(endpoint: Endpoint, body: &Value) -> u64 {
        let text = body.to_string();
        let f: Fields = serde_json::from_str(&text).unwrap();
        tool_rounds(endpoint, &f).unwrap()
    }

    fn openai_rounds(n: usize) -> Value {
        let mut messages = vec![json!({"role": "user", "content": "go"})];
        for i in 0..n {
            messages.push(json!({"role": "assistant", "content": null,
                "tool_calls": [{"id": format!("c{i}"), "type": "function", "function": {"name": "f", "arguments": "{}"}}]}));
            messages.push(json!({"role": "tool", "tool_call_id": format!("c{i}"), "content": "ok"}));
        }
        json!({"model": "m", "messages": messages})
    }

    #[test]
    fn counts_openai_and_anthropic_tool_rounds() {
        assert_eq!(rounds(Endpoint::ChatCompletions, &openai_rounds(0)), 0);
        assert_eq!(rounds(Endpoint::ChatCompletions, &openai_rounds(11)), 11);
        let anthropic = json!({"messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            {"role": "assistant", "content": "plain text"}
        ]});
        assert_eq!(rounds(Endpoint::Messages, &anthropic), 1);
        let responses = json!({"input": [
            {"type": "message", "role": "user", "content": "go"},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "a", "output": "1"},
            {"type": "function_call_output", "call_id": "b", "output": "2"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
        ]});
        assert_eq!(rounds(Endpoint::Responses, &responses), 2);
    }

    #[test]
    fn tool_names_from_each_shape() {
        let body = json!({"tools": [
            {"type": "function", "function": {"name": "a"}},
            {"name": "b", "input_schema": {}},
            {"type": "web_search"}
        ]})
        .to_string();
        let f: Fields = serde_json::from_str(&body).unwrap();
        let req = Request::read(Endpoint::ChatCompletions, &f, body.as_bytes()).unwrap();
        assert_eq!(req.tools, vec!["a", "b", "web_search"]);
    }
}
