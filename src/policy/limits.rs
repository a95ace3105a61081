//! The `limits` rules applied to one request body: allowed and denied models, the token
//! ceiling (reject, clamp or default), `n`, `temperature` and `top_p` ranges, the tool
//! allow-list, and tool-call rounds counted from the request's own history (no state).
//! Pure: a function of the compiled rules and the parsed body, shared by the pipeline and
//! `warden test`.

use serde_json::Value;

use super::compile::{Facts, Limits, Policy, Range, Rule};
use super::{Mode, OnExceed};
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
    pub policy: String,
    /// Lowered from a larger request value (`clamp`), as opposed to filled in (`default`).
    pub clamped: bool,
}

/// Everything the policies decided for one request.
#[derive(Debug, Default)]
pub struct Decision {
    /// Names of the policies that applied, in order.
    pub applied: Vec<String>,
    /// The first enforcing violation: the request is refused.
    pub block: Option<Violation>,
    /// Violations of rules in monitor mode: recorded, not enforced.
    pub would_block: Vec<Violation>,
    pub set_tokens: Option<SetTokens>,
}

/// Applies the policies' `limits` to the request. `body` is parsed only if a policy has a
/// `limits` section.
pub fn decide(policies: &[&Policy], facts: &Facts, body: Option<&Value>) -> Decision {
    let mut d = Decision { applied: policies.iter().map(|p| p.name.clone()).collect(), ..Decision::default() };
    let Some(body) = body else { return d };
    for p in policies {
        if let Some(limits) = &p.limits {
            check(p, limits, facts, body, &mut d);
        }
    }
    d
}

/// Whether any of these policies has rules that need the parsed body.
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

fn num(body: &Value, field: &str) -> Option<f64> {
    body.get(field).and_then(Value::as_f64)
}

fn check(p: &Policy, l: &Limits, f: &Facts, body: &Value, d: &mut Decision) {
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
            let present = f.endpoint.max_tokens_fields().iter().find_map(|name| num(body, name).map(|v| (*name, v)));
            let c = rule.value;
            match present {
                Some((name, v)) if v > c.max as f64 => match (c.on_exceed, rule.mode) {
                    (OnExceed::Clamp, Mode::Enforce) => set_tokens(d, name, c.max, &p.name, true),
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
                None if rule.mode == Mode::Enforce => set_tokens(d, field, c.default, &p.name, false),
                None => {}
            }
        }
    }

    if let (Some(rule), Some(n)) = (&l.max_n, num(body, "n")) {
        if n > rule.value as f64 {
            record(d, rule, violation("limits.max_n", "n", format!("`n` is {n}, above the ceiling of {}", rule.value)));
        }
    }

    for (rule, field) in [(&l.temperature, "temperature"), (&l.top_p, "top_p")] {
        if let (Some(rule), Some(v)) = (rule, num(body, field)) {
            if let Some(msg) = outside(rule.value, v) {
                let name = if field == "temperature" { "limits.temperature" } else { "limits.top_p" };
                record(d, rule, violation(name, field, format!("`{field}` is {v}, {msg}")));
            }
        }
    }

    if let Some(rule) = &l.tools {
        for name in tool_names(body) {
            if !rule.value.contains(name) {
                let v = violation("limits.tools", "tools", format!("tool `{name}` is not on the allow-list"));
                record(d, rule, v);
                break;
            }
        }
    }

    let rounds = tool_rounds(f.endpoint, body);
    let rule = &l.max_tool_iterations;
    if rounds > rule.value {
        let field = if f.endpoint == Endpoint::Responses { "input" } else { "messages" };
        let msg = format!("the conversation has {rounds} tool-call rounds, above the limit of {}", rule.value);
        record(d, rule, violation("limits.max_tool_iterations", field, msg));
    }
}

fn set_tokens(d: &mut Decision, field: &'static str, value: u64, policy: &str, clamped: bool) {
    // The smallest value wins; on a tie the earlier (higher-priority) policy keeps its name.
    if d.set_tokens.as_ref().is_none_or(|s| value < s.value) {
        d.set_tokens = Some(SetTokens { field, value, policy: policy.to_string(), clamped });
    }
}

fn outside(r: Range, v: f64) -> Option<String> {
    match (r.min, r.max) {
        (Some(min), _) if v < min => Some(format!("below the minimum of {min}")),
        (_, Some(max)) if v > max => Some(format!("above the maximum of {max}")),
        _ => None,
    }
}

/// Names of the tools a request declares: OpenAI `{type:function,function:{name}}`,
/// Anthropic and Responses `{name}`, built-in tools by `type`.
fn tool_names(body: &Value) -> impl Iterator<Item = &str> {
    body.get("tools").and_then(Value::as_array).into_iter().flatten().filter_map(|t| {
        t.pointer("/function/name")
            .and_then(Value::as_str)
            .or_else(|| t.get("name").and_then(Value::as_str))
            .or_else(|| t.get("type").and_then(Value::as_str))
    })
}

/// Tool-call rounds in the history: assistant turns that asked for tools (OpenAI
/// `tool_calls`, Anthropic `tool_use` blocks), or runs of `function_call` items (Responses).
pub fn tool_rounds(endpoint: Endpoint, body: &Value) -> u64 {
    if endpoint == Endpoint::Responses {
        let items = body.get("input").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let mut rounds = 0;
        let mut in_run = false;
        for item in items {
            let is_call = item.get("type").and_then(Value::as_str) == Some("function_call");
            if is_call && !in_run {
                rounds += 1;
            }
            in_run = is_call;
        }
        return rounds;
    }
    let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .filter(|m| {
            let openai = m.get("tool_calls").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
            let anthropic = m
                .get("content")
                .and_then(Value::as_array)
                .is_some_and(|blocks| blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_use")));
            openai || anthropic
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(tool_rounds(Endpoint::ChatCompletions, &openai_rounds(0)), 0);
        assert_eq!(tool_rounds(Endpoint::ChatCompletions, &openai_rounds(11)), 11);
        let anthropic = json!({"messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            {"role": "assistant", "content": "plain text"}
        ]});
        assert_eq!(tool_rounds(Endpoint::Messages, &anthropic), 1);
        let responses = json!({"input": [
            {"type": "message", "role": "user", "content": "go"},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "a", "output": "1"},
            {"type": "function_call_output", "call_id": "b", "output": "2"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
        ]});
        assert_eq!(tool_rounds(Endpoint::Responses, &responses), 2);
    }

    #[test]
    fn tool_names_from_each_shape() {
        let body = json!({"tools": [
            {"type": "function", "function": {"name": "a"}},
            {"name": "b", "input_schema": {}},
            {"type": "web_search"}
        ]});
        assert_eq!(tool_names(&body).collect::<Vec<_>>(), vec!["a", "b", "web_search"]);
    }
}
