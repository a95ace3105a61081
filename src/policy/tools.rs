//! What a request says about tools: the names it declares (for the allow-list) and the
//! tool-use rounds in its history (for `max_tool_iterations`), read from every shape the
//! APIs have: OpenAI `tools` and legacy `functions`, Responses items, Anthropic `tools`,
//! server tools and `mcp_servers`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::provider::request::{Fields, Item};
use crate::provider::Endpoint;

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
struct Typed<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

/// A list of objects, or nothing when absent or null.
fn objects<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>, what: &str) -> Result<Vec<T>, String> {
    match raw.filter(|t| t.get() != "null") {
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| format!("`{what}` must be an array of objects")),
        None => Ok(Vec::new()),
    }
}

/// Every tool the request declares, by its allow-list name.
pub fn tool_names<'a>(f: &Fields<'a>) -> Result<Vec<Cow<'a, str>>, String> {
    let mut tools: Vec<Cow<str>> = objects::<Tool>(f.tools, "tools")?.into_iter().map(tool_id).collect();
    tools.extend(objects::<Named>(f.functions, "functions")?.into_iter().map(|t| t.name.unwrap_or_default()));
    tools.extend(
        objects::<Named>(f.mcp_servers, "mcp_servers")?
            .into_iter()
            .map(|t| Cow::Owned(format!("mcp:{}", t.name.unwrap_or_default()))),
    );
    Ok(tools)
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
pub fn tool_rounds(endpoint: Endpoint, f: &Fields) -> Result<u64, String> {
    let mut r = Rounds::default();
    if endpoint == Endpoint::Responses {
        let Some(input) = f.input.filter(|i| i.get().starts_with('[')) else { return Ok(0) };
        let items: Vec<Item> =
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
    let messages: Vec<Item> = match f.messages.filter(|m| m.get().starts_with('[')) {
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
        assert_eq!(tool_names(&f).unwrap(), vec!["a", "b", "web_search"]);
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
        assert_eq!(tool_names(&f).unwrap(), vec!["web_search", "mcp:wiki", "grammar", "legacy_fn", "mcp:crm"]);
    }
}
