//! Replaying a stored answer in the shape the caller asked for: a whole JSON answer as the
//! API's SSE events, a whole stream as the API's JSON answer (OpenAI chat completions and
//! Anthropic messages), and a fresh response id in place of the upstream's on every replay.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

use super::Endpoint;
use crate::http::sse::SseParser;

/// The largest event read back (as the stream contract's limit).
const MAX_EVENT_BYTES: usize = 4 << 20;

/// Whether the endpoint's answers are converted between JSON and SSE; elsewhere a streamed
/// and a non-streamed request are cached apart.
pub fn converts(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Messages)
}

/// The response id an answer carries: the top-level `id` of a JSON body; in a stream, the
/// first chunk's `id` (OpenAI) or `message_start`'s `message.id` (Anthropic).
pub fn response_id(sse: bool, body: &[u8]) -> Option<String> {
    if !sse {
        // Only the id is read: the rest of the answer is skipped, not built.
        #[derive(serde::Deserialize)]
        struct Top {
            id: Option<String>,
        }
        return serde_json::from_slice::<Top>(body).ok()?.id;
    }
    let mut found = None;
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let _ = parser.feed(body, |ev, _| {
        if found.is_some() {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(ev.data) else { return };
        let id = v.get("id").or_else(|| v.get("message").and_then(|m| m.get("id")));
        found = id.and_then(Value::as_str).map(str::to_string);
    });
    found
}

/// `body` with every occurrence of `old` replaced by a fresh id with the same prefix
/// (`chatcmpl-`, `msg_`): a replayed answer is a new response, and clients that key on ids
/// must not see one twice.
pub fn with_fresh_id(body: &Bytes, old: Option<&str>) -> Bytes {
    let Some(old) = old.filter(|o| o.len() >= 8) else { return body.clone() };
    let cut = old.find(['-', '_']).map_or(0, |i| i + 1);
    let fresh = format!("{}{}", &old[..cut], random_tail(old.len().saturating_sub(cut).max(16)));
    let finder = memchr::memmem::Finder::new(old.as_bytes());
    let mut out = BytesMut::with_capacity(body.len() + 16);
    let mut pos = 0;
    for at in finder.find_iter(body) {
        out.extend_from_slice(&body[pos..at]);
        out.extend_from_slice(fresh.as_bytes());
        pos = at + old.len();
    }
    out.extend_from_slice(&body[pos..]);
    out.freeze()
}

fn random_tail(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut bits = 0u64;
    for i in 0..n {
        // Ten characters from each 64-bit draw (6 bits each).
        if i % 10 == 0 {
            bits = crate::secret::unique_u64();
        }
        out.push(char::from(ALPHABET[(bits & 63) as usize % ALPHABET.len()]));
        bits >>= 6;
    }
    out
}

fn data(out: &mut BytesMut, v: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

fn event(out: &mut BytesMut, name: &str, v: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    data(out, v);
}

/// A JSON answer as the stream the API would have sent for it, usage included (warden
/// removes OpenAI's usage chunk for clients that did not ask for it, as for any stream).
pub fn to_sse(endpoint: Endpoint, json: &[u8]) -> Option<Bytes> {
    let v: Value = serde_json::from_slice(json).ok()?;
    match endpoint {
        Endpoint::ChatCompletions => Some(chat_to_sse(&v)),
        Endpoint::Messages => Some(messages_to_sse(&v)),
        _ => None,
    }
}

/// A whole stream as the JSON answer the API would have sent.
pub fn to_json(endpoint: Endpoint, sse: &[u8]) -> Option<Bytes> {
    let mut events = Vec::new();
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    parser
        .feed(sse, |ev, _| {
            if let Ok(v) = serde_json::from_slice::<Value>(ev.data) {
                events.push(v);
            }
        })
        .ok()?;
    let v = match endpoint {
        Endpoint::ChatCompletions => chat_from_events(&events)?,
        Endpoint::Messages => messages_from_events(&events)?,
        _ => return None,
    };
    Some(Bytes::from(v.to_string()))
}

fn chat_to_sse(v: &Value) -> Bytes {
    let mut out = BytesMut::new();
    let head = |choices: Value| {
        let mut c = Map::new();
        for k in ["id", "created", "model", "system_fingerprint", "service_tier"] {
            if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
                c.insert(k.into(), x.clone());
            }
        }
        c.insert("object".into(), "chat.completion.chunk".into());
        c.insert("choices".into(), choices);
        Value::Object(c)
    };
    for choice in v["choices"].as_array().into_iter().flatten() {
        let index = choice.get("index").cloned().unwrap_or(json!(0));
        let m = &choice["message"];
        let chunk = |delta: Value, finish: Value| {
            head(json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]))
        };
        let role = m.get("role").cloned().unwrap_or(json!("assistant"));
        data(&mut out, &chunk(json!({"role": role, "content": "", "refusal": null}), Value::Null));
        if let Some(text) = m["content"].as_str().filter(|t| !t.is_empty()) {
            data(&mut out, &chunk(json!({"content": text}), Value::Null));
        }
        if let Some(text) = m["refusal"].as_str() {
            data(&mut out, &chunk(json!({"refusal": text}), Value::Null));
        }
        for (i, tc) in m["tool_calls"].as_array().into_iter().flatten().enumerate() {
            let call = json!([{"index": i, "id": tc["id"], "type": tc.get("type").cloned().unwrap_or(json!("function")),
                               "function": {"name": tc["function"]["name"], "arguments": tc["function"]["arguments"]}}]);
            data(&mut out, &chunk(json!({ "tool_calls": call }), Value::Null));
        }
        let finish = choice.get("finish_reason").cloned().unwrap_or(json!("stop"));
        data(&mut out, &chunk(json!({}), finish));
    }
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        let mut last = head(json!([]));
        last["usage"] = u.clone();
        data(&mut out, &last);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out.freeze()
}

/// One choice as its deltas build it: role, text, refusal, tool calls (by their own index),
/// finish reason.
struct Choice(String, String, Option<String>, Vec<Value>, Value);

fn chat_from_events(events: &[Value]) -> Option<Value> {
    let first = events.first()?;
    let mut top = Map::new();
    for k in ["id", "created", "model", "system_fingerprint", "service_tier"] {
        if let Some(x) = first.get(k).filter(|x| !x.is_null()) {
            top.insert(k.into(), x.clone());
        }
    }
    top.insert("object".into(), "chat.completion".into());
    let mut choices: std::collections::BTreeMap<u64, Choice> = std::collections::BTreeMap::new();
    let mut usage = None;
    for ev in events {
        if let Some(u) = ev.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        for ch in ev["choices"].as_array().into_iter().flatten() {
            let c = choices
                .entry(ch["index"].as_u64().unwrap_or(0))
                .or_insert_with(|| Choice("assistant".into(), String::new(), None, Vec::new(), Value::Null));
            let d = &ch["delta"];
            if let Some(r) = d["role"].as_str() {
                c.0 = r.into();
            }
            c.1.push_str(d["content"].as_str().unwrap_or_default());
            if let Some(r) = d["refusal"].as_str() {
                c.2.get_or_insert_with(String::new).push_str(r);
            }
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap_or(0) as usize;
                while c.3.len() <= i {
                    c.3.push(json!({"id": "", "type": "function", "function": {"name": "", "arguments": ""}}));
                }
                let slot = &mut c.3[i];
                if let Some(id) = tc["id"].as_str() {
                    slot["id"] = id.into();
                }
                let f = &tc["function"];
                for part in ["name", "arguments"] {
                    if let Some(s) = f[part].as_str() {
                        let joined = format!("{}{s}", slot["function"][part].as_str().unwrap_or_default());
                        slot["function"][part] = joined.into();
                    }
                }
            }
            if !ch["finish_reason"].is_null() {
                c.4 = ch["finish_reason"].clone();
            }
        }
    }
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, Choice(role, text, refusal, calls, finish))| {
            let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::from(text) };
            let mut message = json!({"role": role, "content": content, "refusal": refusal});
            if !calls.is_empty() {
                message["tool_calls"] = Value::from(calls);
            }
            json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish})
        })
        .collect();
    top.insert("choices".into(), choices.into());
    if let Some(u) = usage {
        top.insert("usage".into(), u);
    }
    Some(Value::Object(top))
}

fn messages_to_sse(v: &Value) -> Bytes {
    let mut out = BytesMut::new();
    let usage = v.get("usage").cloned().unwrap_or(json!({}));
    let mut start_usage = usage.clone();
    if let Some(u) = start_usage.as_object_mut() {
        // As the API streams it: the output count comes at the end.
        u.insert("output_tokens".into(), json!(1));
    }
    let mut message = v.clone();
    message["content"] = json!([]);
    message["stop_reason"] = Value::Null;
    message["stop_sequence"] = Value::Null;
    message["usage"] = start_usage;
    event(&mut out, "message_start", &json!({"type": "message_start", "message": message}));
    for (index, block) in v["content"].as_array().into_iter().flatten().enumerate() {
        let (start, deltas): (Value, Vec<Value>) = match block["type"].as_str() {
            Some("text") => {
                (json!({"type": "text", "text": ""}), vec![json!({"type": "text_delta", "text": block["text"]})])
            }
            Some("tool_use" | "server_tool_use") => {
                let mut start = block.clone();
                start["input"] = json!({});
                (start, vec![json!({"type": "input_json_delta", "partial_json": block["input"].to_string()})])
            }
            Some("thinking") => {
                let mut d = vec![json!({"type": "thinking_delta", "thinking": block["thinking"]})];
                if let Some(sig) = block.get("signature") {
                    d.push(json!({"type": "signature_delta", "signature": sig}));
                }
                (json!({"type": "thinking", "thinking": ""}), d)
            }
            // Blocks without deltas (redacted thinking, tool results) arrive whole.
            _ => (block.clone(), Vec::new()),
        };
        event(
            &mut out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        for d in deltas {
            event(&mut out, "content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": d}));
        }
        event(&mut out, "content_block_stop", &json!({"type": "content_block_stop", "index": index}));
    }
    event(
        &mut out,
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": v["stop_reason"], "stop_sequence": v["stop_sequence"]},
                "usage": {"output_tokens": usage["output_tokens"]}}),
    );
    event(&mut out, "message_stop", &json!({"type": "message_stop"}));
    out.freeze()
}

fn messages_from_events(events: &[Value]) -> Option<Value> {
    let mut message = events.iter().find(|e| e["type"] == "message_start")?["message"].clone();
    let mut blocks: Vec<Value> = Vec::new();
    // Tool input arrives as JSON text in pieces.
    let mut partial: Vec<String> = Vec::new();
    for ev in events {
        let index = ev["index"].as_u64().unwrap_or(0) as usize;
        match ev["type"].as_str() {
            Some("content_block_start") => {
                while blocks.len() <= index {
                    blocks.push(Value::Null);
                    partial.push(String::new());
                }
                blocks[index] = ev["content_block"].clone();
            }
            Some("content_block_delta") => {
                let (Some(b), Some(p)) = (blocks.get_mut(index), partial.get_mut(index)) else { continue };
                let d = &ev["delta"];
                let append = |b: &mut Value, field: &str, s: &Value| {
                    let joined = format!("{}{}", b[field].as_str().unwrap_or_default(), s.as_str().unwrap_or_default());
                    b[field] = joined.into();
                };
                match d["type"].as_str() {
                    Some("text_delta") => append(b, "text", &d["text"]),
                    Some("thinking_delta") => append(b, "thinking", &d["thinking"]),
                    Some("signature_delta") => b["signature"] = d["signature"].clone(),
                    Some("input_json_delta") => p.push_str(d["partial_json"].as_str().unwrap_or_default()),
                    Some("citations_delta") => {
                        if let Some(list) = b.get_mut("citations").and_then(Value::as_array_mut) {
                            list.push(d["citation"].clone());
                        } else {
                            b["citations"] = json!([d["citation"]]);
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_stop") => {
                if let (Some(b), Some(p)) = (blocks.get_mut(index), partial.get(index)) {
                    if !p.is_empty() {
                        b["input"] = serde_json::from_str(p).unwrap_or(Value::Null);
                    }
                }
            }
            Some("message_delta") => {
                for k in ["stop_reason", "stop_sequence"] {
                    if let Some(x) = ev["delta"].get(k) {
                        message[k] = x.clone();
                    }
                }
                if let (Some(u), Some(m)) = (ev["usage"].as_object(), message["usage"].as_object_mut()) {
                    for (k, x) in u {
                        if !x.is_null() {
                            m.insert(k.clone(), x.clone());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    message["content"] = blocks.into();
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(endpoint: Endpoint, json: Value) {
        let sse = to_sse(endpoint, json.to_string().as_bytes()).unwrap();
        let back: Value = serde_json::from_slice(&to_json(endpoint, &sse).unwrap()).unwrap();
        assert_eq!(back, json, "{}", String::from_utf8_lossy(&sse));
    }

    #[test]
    fn chat_answers_survive_json_to_stream_and_back() {
        roundtrip(
            Endpoint::ChatCompletions,
            json!({"id": "chatcmpl-abc12345", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                   "system_fingerprint": "fp_1",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there", "refusal": null},
                                "logprobs": null, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
        );
        roundtrip(
            Endpoint::ChatCompletions,
            json!({"id": "chatcmpl-abc12345", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
                     "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                     "logprobs": null, "finish_reason": "tool_calls"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
        );
    }

    #[test]
    fn anthropic_answers_survive_json_to_stream_and_back() {
        roundtrip(
            Endpoint::Messages,
            json!({"id": "msg_0123456789", "type": "message", "role": "assistant", "model": "claude-x",
                   "content": [{"type": "text", "text": "Hi"},
                               {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}],
                   "stop_reason": "tool_use", "stop_sequence": null,
                   "usage": {"input_tokens": 9, "output_tokens": 4}}),
        );
    }

    #[test]
    fn replays_get_fresh_ids_with_the_same_prefix() {
        let body =
            Bytes::from_static(b"data: {\"id\":\"chatcmpl-abc12345\"}\n\ndata: {\"id\":\"chatcmpl-abc12345\"}\n\n");
        assert_eq!(response_id(true, &body).as_deref(), Some("chatcmpl-abc12345"));
        let fresh = with_fresh_id(&body, Some("chatcmpl-abc12345"));
        let s = std::str::from_utf8(&fresh).unwrap();
        assert!(!s.contains("abc12345") && s.matches("\"chatcmpl-").count() == 2, "{s}");
        let again = with_fresh_id(&body, Some("chatcmpl-abc12345"));
        assert_ne!(fresh, again);
        let sse = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01abc\"}}\n\n";
        assert_eq!(response_id(true, sse).as_deref(), Some("msg_01abc"));
    }
}
