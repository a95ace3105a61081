//! The conversation a request carries, read in one walk over its messages or input items:
//! every text part by role (system prompts, history, the text parts of multimodal content,
//! tool results, prompts and embedding inputs) and the tool-use rounds already in it. Built
//! lazily, once per request, by [`RequestView::history`](super::request::RequestView::history),
//! and shared by every stage that reads what was said.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::request::Fields;
use super::Endpoint;

/// Who wrote a text part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// System and developer prompts, Responses `instructions`.
    System,
    User,
    /// Earlier assistant turns in the history.
    Assistant,
    /// Tool and function results: OpenAI `tool` messages, Anthropic `tool_result` blocks,
    /// Responses `*_call_output` items.
    Tool,
}

/// One text part of a request.
#[derive(Debug, Clone)]
pub struct TextPart<'a> {
    pub role: Role,
    pub text: Cow<'a, str>,
    /// The JSON string it was read from, inside the body (for an edit that replaces it).
    pub raw: &'a RawValue,
    /// Which message or input item holds it (`None`: a system prompt field).
    pub message: Option<usize>,
}

impl PartialEq for TextPart<'_> {
    fn eq(&self, o: &Self) -> bool {
        (self.role, &self.text, self.message) == (o.role, &o.text, o.message)
    }
}

/// What the conversation holds.
#[derive(Debug, Default)]
pub struct History<'a> {
    /// Every text part, in order.
    pub texts: Vec<TextPart<'a>>,
    /// Tool-use rounds: assistant turns that asked for tools (OpenAI `tool_calls` or legacy
    /// `function_call`, Anthropic `tool_use`-type blocks), or runs of `*_call` items
    /// (Responses: `function_call`, `custom_tool_call`, `mcp_call`, ...). Tool results that
    /// no such turn precedes open a round too: a history can be forged to hold only results.
    pub tool_rounds: u64,
}

/// One message of a `messages` history, or one `input` item of a Responses request.
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    /// Responses `*_call_output` items.
    #[serde(borrow)]
    output: Option<&'a RawValue>,
    /// OpenAI assistant turns that call tools.
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
    /// Legacy OpenAI function calling.
    #[serde(borrow)]
    function_call: Option<&'a RawValue>,
}

/// One part of a `content` array.
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
    /// Anthropic `tool_result` blocks nest their content.
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// What one `content` value held besides text, for the round count.
#[derive(Default)]
struct Blocks {
    tool_use: bool,
    tool_result: bool,
}

/// Text of a `content` value: a string, or an array of parts whose text parts count
/// (images, audio and files are skipped, never decoded). A `tool_result` block's content is
/// the tool's, whatever message carries it.
fn content<'a>(
    raw: &'a RawValue,
    role: Role,
    at: Option<usize>,
    out: &mut Vec<TextPart<'a>>,
) -> Result<Blocks, String> {
    let mut blocks = Blocks::default();
    let text = |raw: &'a RawValue| -> Result<TextPart<'a>, String> {
        let text: Cow<str> = serde_json::from_str(raw.get()).map_err(|_| "a text part must be a string".to_string())?;
        Ok(TextPart { role, text, raw, message: at })
    };
    match raw.get().as_bytes().first() {
        Some(b'"') => out.push(text(raw)?),
        Some(b'[') => {
            let parts: Vec<Part> =
                serde_json::from_str(raw.get()).map_err(|_| "content parts must be objects".to_string())?;
            for p in parts {
                match p.kind.as_deref() {
                    Some(k) if k.ends_with("tool_result") => {
                        blocks.tool_result = true;
                        if let Some(c) = p.content {
                            content(c, Role::Tool, at, out)?;
                        }
                    }
                    Some(k) if k.ends_with("tool_use") => blocks.tool_use = true,
                    Some("text" | "input_text" | "output_text") | None => {
                        if let Some(t) = p.text.filter(|t| t.get() != "null") {
                            out.push(text(t)?);
                        }
                    }
                    Some("refusal") => {
                        if let Some(t) = p.refusal.filter(|t| t.get() != "null") {
                            out.push(text(t)?);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        _ => {}
    }
    Ok(blocks)
}

fn role_of(name: Option<&str>) -> Role {
    match name {
        Some("system" | "developer") => Role::System,
        Some("assistant") => Role::Assistant,
        Some("tool" | "function") => Role::Tool,
        _ => Role::User,
    }
}

/// Counts tool-call rounds as the history goes by.
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

/// Walks the request's conversation once. `Err` names a part that does not have the API's
/// shape (400).
pub fn read<'a>(endpoint: Endpoint, f: &Fields<'a>) -> Result<History<'a>, String> {
    let mut texts = Vec::new();
    for sys in [f.system, f.instructions].into_iter().flatten() {
        content(sys, Role::System, None, &mut texts)?;
    }
    // Message histories hold only message objects; the other inputs may also hold strings
    // (prompts, embedding inputs) and token arrays.
    let (items, messages) = match endpoint {
        Endpoint::Responses | Endpoint::Embeddings => (f.input, false),
        Endpoint::Completions => (f.prompt, false),
        _ => (f.messages, true),
    };
    let by_kind = endpoint == Endpoint::Responses;
    let mut rounds = Rounds::default();
    match items.map(|i| (i, i.get().as_bytes().first())) {
        Some((one, Some(b'"'))) => {
            content(one, Role::User, Some(0), &mut texts)?;
        }
        Some((list, Some(b'['))) => {
            let what = if messages {
                "`messages` must be an array of message objects"
            } else {
                "`input` items must be objects"
            };
            let values: Vec<&RawValue> = serde_json::from_str(list.get()).map_err(|_| what.to_string())?;
            for (at, v) in values.into_iter().enumerate() {
                let at = Some(at);
                match v.get().as_bytes().first() {
                    Some(b'"') if !messages => {
                        content(v, Role::User, at, &mut texts)?;
                        continue;
                    }
                    Some(b'{') => {}
                    _ if messages => return Err(what.to_string()),
                    _ => continue,
                }
                let item: Item = serde_json::from_str(v.get()).map_err(|_| what.to_string())?;
                // Only Responses items are typed; a chat message's `type` changes nothing
                // upstream, so it must not change what is read here either.
                let kind = if by_kind { item.kind.as_deref().unwrap_or_default() } else { "" };
                if kind.ends_with("_call_output") {
                    rounds.result();
                    if let Some(output) = item.output {
                        content(output, Role::Tool, at, &mut texts)?;
                    }
                    continue;
                }
                if kind.ends_with("_call") {
                    rounds.call(false);
                    continue;
                }
                let role = role_of(item.role.as_deref());
                let blocks = match item.content {
                    Some(c) => content(c, role, at, &mut texts)?,
                    None => Blocks::default(),
                };
                let present = |v: Option<&RawValue>| v.is_some_and(|c| !matches!(c.get(), "null" | "[]"));
                match item.role.as_deref() {
                    Some("assistant") if present(item.tool_calls) || present(item.function_call) || blocks.tool_use => {
                        rounds.call(true)
                    }
                    Some("tool" | "function") => rounds.result(),
                    Some("user") if blocks.tool_result => rounds.result(),
                    _ => rounds.other(),
                }
            }
        }
        _ => {}
    }
    Ok(History { texts, tool_rounds: rounds.count })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn rounds(endpoint: Endpoint, body: &Value) -> u64 {
        let text = body.to_string();
        let f: Fields = serde_json::from_str(&text).unwrap();
        read(endpoint, &f).unwrap().tool_rounds
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
    fn a_chat_message_type_does_not_change_what_is_read() {
        let body = json!({"messages": [
            {"role": "user", "type": "function_call_output", "output": "decoy", "content": "real text"}
        ]});
        let text = body.to_string();
        let f: Fields = serde_json::from_str(&text).unwrap();
        let h = read(Endpoint::ChatCompletions, &f).unwrap();
        assert_eq!((h.texts[0].role, h.texts[0].text.as_ref(), h.texts[0].message), (Role::User, "real text", Some(0)));
        assert_eq!(h.texts.len(), 1);
        assert_eq!(h.tool_rounds, 0);
    }
}
