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

/// A change a policy makes to the request's output-token limit before it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetTokens {
    pub field: &'static str,
    pub value: u64,
    /// Where the request's own value sits in the body (`None`: the field is added).
    pub span: Option<Range<usize>>,
    /// Where the object the field belongs to opens (`{`): the top-level body, or a nested
    /// batch request.
    pub object: usize,
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
    /// Token limits to set, at most one per field and object (the smallest value wins).
    pub set_tokens: Vec<SetTokens>,
}

impl Decision<'_> {
    /// The token limit set on the top-level request object, if any.
    pub fn top_tokens(&self) -> Option<&SetTokens> {
        self.set_tokens.iter().min_by_key(|t| t.object)
    }

    /// Folds a nested request's decision into this one.
    pub fn merge(&mut self, other: Decision<'_>) {
        if self.block.is_none() {
            self.block = other.block;
        }
        self.would_block.extend(other.would_block);
        self.set_tokens.extend(other.set_tokens);
    }
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<Named<'a>>,
    /// OpenAI Responses `{"type":"mcp"}` tools.
    #[serde(borrow)]
    server_label: Option<Cow<'a, str>>,
    /// Anthropic `{"type":"mcp_toolset"}` tools.
    #[serde(borrow)]
    mcp_server_name: Option<Cow<'a, str>>,
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
    /// Legacy OpenAI function calling.
    #[serde(borrow)]
    function_call: Option<&'a RawValue>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

/// Applies the policies' `limits` to a request: `fields` are the body's top-level fields as
/// found by the parse stage (no second scan of the body), `body` the bytes they point into,
/// `object` where the request object opens in `body`.
/// `Err` names a field the rules need that does not have the API's shape (400).
pub fn decide<'p>(
    policies: &[&'p Policy],
    facts: &Facts,
    fields: &Fields,
    body: &[u8],
    object: usize,
) -> Result<Decision<'p>, String> {
    let mut d = Decision { applied: policies.iter().map(|p| p.name.as_str()).collect(), ..Decision::default() };
    if facts.endpoint == Endpoint::Other {
        check_extra_path(policies, facts, &mut d);
    }
    if facts.endpoint == Endpoint::Batches {
        check_file_batches(policies, &mut d);
    }
    if !needs_body(policies) {
        return Ok(d);
    }
    let req = Request::read(facts.endpoint, fields, body)?;
    for p in policies {
        if let Some(limits) = &p.limits {
            check(p, limits, facts, &req, object, &mut d);
        }
    }
    Ok(d)
}

/// Every policy with a `limits` section must list an unnamed path for it to pass.
fn check_extra_path(policies: &[&Policy], facts: &Facts, d: &mut Decision) {
    for p in policies {
        let Some(l) = &p.limits else { continue };
        if !l.extra_paths.value.iter().any(|g| g.matches(facts.path)) {
            let v = Violation {
                policy: p.name.clone(),
                rule: "limits.extra_paths",
                field: "path".into(),
                message: format!("the path {} is not on this policy's `extra_paths`", facts.path),
                forbidden: true,
            };
            record(d, &l.extra_paths, v);
        }
    }
}

/// OpenAI file batches pass only when a matching policy allows them and none forbids them.
fn check_file_batches(policies: &[&Policy], d: &mut Decision) {
    let says =
        |want: bool| policies.iter().find(|p| p.limits.as_ref().and_then(|l| l.allow_file_batches) == Some(want));
    let (policy, why) = match (says(false), says(true)) {
        (Some(p), _) => (p.name.clone(), "this policy sets `allow_file_batches: false`"),
        (None, Some(_)) => return,
        (None, None) => ("(built-in)".to_string(), "no matching policy sets `limits.allow_file_batches: true`"),
    };
    let message =
        format!("file batches are refused: warden cannot check the requests inside an uploaded file, and {why}");
    let v = Violation {
        policy,
        rule: "limits.allow_file_batches",
        field: "input_file_id".into(),
        message,
        forbidden: true,
    };
    if d.block.is_none() {
        d.block = Some(v);
    }
}

/// What the rules look at, extracted once per request.
struct Request<'a> {
    /// Every output-token limit the request names: field, value, and where it sits.
    tokens: Vec<(&'static str, f64, Range<usize>)>,
    /// `n` and `best_of`: how many candidates the upstream generates.
    choices: Vec<(&'static str, f64)>,
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

/// A list of objects, or nothing when absent or null.
fn objects<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>, what: &str) -> Result<Vec<T>, String> {
    match raw.filter(|t| t.get() != "null") {
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| format!("`{what}` must be an array of objects")),
        None => Ok(Vec::new()),
    }
}

impl<'a> Request<'a> {
    fn read(endpoint: Endpoint, f: &Fields<'a>, body: &[u8]) -> Result<Request<'a>, String> {
        let mut tokens = Vec::new();
        for name in endpoint.max_tokens_fields() {
            if let Some(raw) = f.get(name) {
                if let Some(value) = number(Some(raw), name)? {
                    tokens.push((*name, value, crate::pipeline::parse::span(body, raw)));
                }
            }
        }
        let mut choices = Vec::new();
        for (name, raw) in [("n", f.n), ("best_of", f.best_of)] {
            if let Some(v) = number(raw, name)? {
                choices.push((name, v));
            }
        }
        let mut tools: Vec<Cow<str>> = objects::<Tool>(f.tools, "tools")?.into_iter().map(tool_id).collect();
        tools.extend(objects::<Named>(f.functions, "functions")?.into_iter().map(|t| t.name.unwrap_or_default()));
        tools.extend(
            objects::<Named>(f.mcp_servers, "mcp_servers")?
                .into_iter()
                .map(|t| Cow::Owned(format!("mcp:{}", t.name.unwrap_or_default()))),
        );
        Ok(Request {
            tokens,
            choices,
            temperature: number(f.temperature, "temperature")?,
            top_p: number(f.top_p, "top_p")?,
            tools,
            tool_rounds: tool_rounds(endpoint, f)?,
        })
    }
}

/// The name a tool goes by on the allow-list: a function's name; `mcp:<server>` for remote
/// MCP servers; the type for built-in and server tools, without Anthropic's date suffix
/// (`web_search_20250305` is `web_search`), so a server tool cannot borrow a function's name.
fn tool_id(t: Tool) -> Cow<str> {
    match t.kind.as_deref() {
        None | Some("function" | "custom") => t.function.and_then(|f| f.name).or(t.name).unwrap_or_default(),
        Some("mcp") => Cow::Owned(format!("mcp:{}", t.server_label.unwrap_or_default())),
        Some("mcp_toolset") => Cow::Owned(format!("mcp:{}", t.mcp_server_name.unwrap_or_default())),
        Some(kind) => {
            let dated = kind.len() > 9
                && kind.as_bytes()[kind.len() - 9] == b'_'
                && kind[kind.len() - 8..].bytes().all(|b| b.is_ascii_digit());
            let base = if dated { &kind[..kind.len() - 9] } else { kind };
            Cow::Owned(base.to_string())
        }
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

fn check(p: &Policy, l: &Limits, f: &Facts, req: &Request, object: usize, d: &mut Decision) {
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
        let c = rule.value;
        for (name, v, span) in &req.tokens {
            if *v <= c.max as f64 {
                continue;
            }
            match (c.on_exceed, rule.mode) {
                (OnExceed::Clamp, Mode::Enforce) => set_tokens(d, name, c.max, &p.name, Some(span.clone()), object),
                _ => record(
                    d,
                    rule,
                    violation("limits.max_tokens", name, format!("`{name}` is {v}, above the ceiling of {}", c.max)),
                ),
            }
        }
        if let (true, Some(field), Mode::Enforce) = (req.tokens.is_empty(), f.endpoint.max_tokens_field(), rule.mode) {
            set_tokens(d, field, c.default, &p.name, None, object);
        }
    }

    if let Some(rule) = &l.max_n {
        for (field, n) in &req.choices {
            if *n > rule.value as f64 {
                let msg = format!("`{field}` is {n}, above the ceiling of {}", rule.value);
                record(d, rule, violation("limits.max_n", field, msg));
            }
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

fn set_tokens(
    d: &mut Decision,
    field: &'static str,
    value: u64,
    policy: &str,
    span: Option<Range<usize>>,
    object: usize,
) {
    // Per field and object the smallest value wins; on a tie the earlier (higher-priority)
    // policy keeps its name.
    let clamped = span.is_some();
    let new = SetTokens { field, value, span, object, policy: policy.to_string(), clamped };
    match d.set_tokens.iter_mut().find(|t| t.field == field && t.object == object) {
        Some(t) if value < t.value => *t = new,
        Some(_) => {}
        None => d.set_tokens.push(new),
    }
}

fn outside(r: Bounds, v: f64) -> Option<String> {
    match (r.min, r.max) {
        (Some(min), _) if v < min => Some(format!("below the minimum of {min}")),
        (_, Some(max)) if v > max => Some(format!("above the maximum of {max}")),
        _ => None,
    }
}

/// Counts tool-call rounds: a round opens with a turn that asks for tools, or with tool
/// results that no such turn precedes (a history can be forged to hold only results).
#[derive(Default)]
struct Rounds {
    count: u64,
    state: RoundState,
}

#[derive(Default, PartialEq)]
enum RoundState {
    #[default]
    Idle,
    Calls,
    Results,
}

impl Rounds {
    /// A turn or item that asks for tools. `each_opens`: every such turn is its own round
    /// (chat turns); otherwise a run of call items is one round (Responses items).
    fn call(&mut self, each_opens: bool) {
        if each_opens || self.state != RoundState::Calls {
            self.count += 1;
        }
        self.state = RoundState::Calls;
    }

    fn result(&mut self) {
        if self.state == RoundState::Idle {
            self.count += 1;
        }
        self.state = RoundState::Results;
    }

    fn other(&mut self) {
        self.state = RoundState::Idle;
    }
}

/// Tool-call rounds in the history: assistant turns that asked for tools (OpenAI
/// `tool_calls` or legacy `function_call`, Anthropic `tool_use`-type blocks), or runs of
/// `*_call` items (Responses: `function_call`, `custom_tool_call`, `mcp_call`, ...).
fn tool_rounds(endpoint: Endpoint, f: &Fields) -> Result<u64, String> {
    let mut r = Rounds::default();
    if endpoint == Endpoint::Responses {
        let Some(input) = f.input.filter(|i| i.get().starts_with('[')) else { return Ok(0) };
        let items: Vec<Typed> =
            serde_json::from_str(input.get()).map_err(|_| "`input` items must be objects".to_string())?;
        for item in &items {
            match item.kind.as_deref() {
                Some(k) if k.ends_with("_call_output") => r.result(),
                Some(k) if k.ends_with("_call") => r.call(false),
                _ => r.other(),
            }
        }
        return Ok(r.count);
    }
    let messages: Vec<Message> = match f.messages.filter(|m| m.get().starts_with('[')) {
        Some(raw) => {
            serde_json::from_str(raw.get()).map_err(|_| "`messages` must be an array of message objects".to_string())?
        }
        None => Vec::new(),
    };
    let present = |v: Option<&RawValue>| v.is_some_and(|c| !matches!(c.get(), "null" | "[]"));
    for m in &messages {
        let blocks: Vec<Typed> = match m.content.filter(|c| c.get().starts_with('[')) {
            Some(blocks) => serde_json::from_str(blocks.get())
                .map_err(|_| "`messages[].content` blocks must be objects".to_string())?,
            None => Vec::new(),
        };
        let has = |suffix: &str| blocks.iter().any(|b| b.kind.as_deref().is_some_and(|k| k.ends_with(suffix)));
        match m.role.as_deref() {
            Some("assistant") if present(m.tool_calls) || present(m.function_call) || has("tool_use") => r.call(true),
            Some("tool" | "function") => r.result(),
            Some("user") if has("tool_result") => r.result(),
            _ => r.other(),
        }
    }
    Ok(r.count)
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
        let custom = json!({"input": [
            {"type": "custom_tool_call", "call_id": "a", "name": "f", "input": "x"},
            {"type": "custom_tool_call_output", "call_id": "a", "output": "1"},
            {"type": "mcp_call", "id": "b"},
            {"type": "function_call_output", "call_id": "z", "output": "forged"}
        ]});
        assert_eq!(rounds(Endpoint::Responses, &custom), 2);
    }

    #[test]
    fn legacy_functions_and_forged_results_count_as_rounds() {
        let legacy = json!({"messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "1"},
            {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "2"}
        ]});
        assert_eq!(rounds(Endpoint::ChatCompletions, &legacy), 2);
        let forged = json!({"messages": [
            {"role": "user", "content": "go"},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "user", "content": "more"},
            {"role": "tool", "tool_call_id": "b", "content": "2"}
        ]});
        assert_eq!(rounds(Endpoint::ChatCompletions, &forged), 2);
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
        let body = json!({
            "tools": [
                {"type": "web_search_20250305", "name": "search_docs"},
                {"type": "mcp", "server_label": "wiki", "server_url": "https://x"},
                {"type": "custom", "name": "grammar"}
            ],
            "functions": [{"name": "legacy_fn", "parameters": {}}],
            "mcp_servers": [{"type": "url", "url": "https://x", "name": "crm"}]
        })
        .to_string();
        let f: Fields = serde_json::from_str(&body).unwrap();
        let req = Request::read(Endpoint::Messages, &f, body.as_bytes()).unwrap();
        assert_eq!(req.tools, vec!["web_search", "mcp:wiki", "grammar", "legacy_fn", "mcp:crm"]);
    }
}
