//! What the model said: the assistant text and tool calls of a response, gathered from a
//! whole JSON body or event by event from a stream, for the stages that check model output
//! (structured-output schemas, canary scans). Off unless a stage asks: most requests need
//! only usage.

use std::collections::BTreeMap;

use serde_json::Value;

use super::ApiFamily;
use crate::http::sse::Event;

/// One tool call the model asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, exactly as the model wrote them (unvalidated).
    pub arguments: String,
}

/// The assistant's output, as far as it has arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub text: String,
    /// The model declined (OpenAI `refusal`): an answer in its own right, not output to
    /// validate.
    pub refusal: bool,
    /// By position in the response (stream deltas name their index).
    calls: BTreeMap<u64, ToolCall>,
}

impl Output {
    pub fn tool_calls(&self) -> Vec<&ToolCall> {
        self.calls.values().collect()
    }

    fn call(&mut self, index: u64) -> &mut ToolCall {
        self.calls.entry(index).or_default()
    }

    /// The output of a whole non-streamed body (or a Responses `response` object).
    pub fn from_json(family: ApiFamily, body: &[u8]) -> Option<Output> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let mut out = Output::default();
        out.read_whole(family, &v);
        Some(out)
    }

    fn read_whole(&mut self, family: ApiFamily, v: &Value) {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        match family {
            ApiFamily::Anthropic => {
                for (i, block) in v["content"].as_array().into_iter().flatten().enumerate() {
                    match block["type"].as_str() {
                        Some("text") => self.text.push_str(block["text"].as_str().unwrap_or_default()),
                        Some("tool_use") => {
                            *self.call(i as u64) = ToolCall {
                                id: s(&block["id"]),
                                name: s(&block["name"]),
                                arguments: block["input"].to_string(),
                            };
                        }
                        _ => {}
                    }
                }
            }
            ApiFamily::OpenAi => {
                // Chat completions and legacy completions.
                if let Some(choice) = v["choices"].get(0) {
                    let msg = &choice["message"];
                    self.text.push_str(msg["content"].as_str().or(choice["text"].as_str()).unwrap_or_default());
                    self.refusal |= msg["refusal"].as_str().is_some_and(|r| !r.is_empty());
                    // Legacy function calling: one call, beside the newer list.
                    if let Some(f) = msg["function_call"].as_object() {
                        *self.call(u64::MAX) = ToolCall {
                            id: String::new(),
                            name: f.get("name").map(s).unwrap_or_default(),
                            arguments: f.get("arguments").map(s).unwrap_or_default(),
                        };
                    }
                    for (i, tc) in msg["tool_calls"].as_array().into_iter().flatten().enumerate() {
                        *self.call(i as u64) = ToolCall {
                            id: s(&tc["id"]),
                            name: s(&tc["function"]["name"]),
                            arguments: s(&tc["function"]["arguments"]),
                        };
                    }
                }
                // Responses.
                for (i, item) in v["output"].as_array().into_iter().flatten().enumerate() {
                    match item["type"].as_str() {
                        Some("message") => {
                            for part in item["content"].as_array().into_iter().flatten() {
                                self.text.push_str(part["text"].as_str().unwrap_or_default());
                            }
                        }
                        Some("function_call") => {
                            *self.call(i as u64) = ToolCall {
                                id: s(&item["call_id"]),
                                name: s(&item["name"]),
                                arguments: s(&item["arguments"]),
                            };
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Folds one stream event in.
    pub fn read_event(&mut self, family: ApiFamily, ev: &Event) {
        let Ok(v) = serde_json::from_slice::<Value>(ev.data) else { return };
        fn s(v: &Value) -> &str {
            v.as_str().unwrap_or_default()
        }
        match (family, ev.name) {
            (ApiFamily::Anthropic, Some("content_block_start")) => {
                let b = &v["content_block"];
                if b["type"] == "tool_use" {
                    let call = self.call(v["index"].as_u64().unwrap_or(0));
                    call.id = s(&b["id"]).to_string();
                    call.name = s(&b["name"]).to_string();
                }
            }
            (ApiFamily::Anthropic, Some("content_block_delta")) => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => self.text.push_str(s(&d["text"])),
                    Some("input_json_delta") => {
                        self.call(v["index"].as_u64().unwrap_or(0)).arguments.push_str(s(&d["partial_json"]))
                    }
                    _ => {}
                }
            }
            (ApiFamily::OpenAi, Some("response.completed")) => {
                // The final event carries the whole response: take it as the answer.
                *self = Output::default();
                self.read_whole(ApiFamily::OpenAi, &v["response"]);
            }
            (ApiFamily::OpenAi, None) => {
                let Some(choice) = v["choices"].get(0) else { return };
                let d = &choice["delta"];
                self.text.push_str(d["content"].as_str().or(choice["text"].as_str()).unwrap_or_default());
                self.refusal |= d["refusal"].as_str().is_some_and(|r| !r.is_empty());
                if let Some(f) = d["function_call"].as_object() {
                    let call = self.call(u64::MAX);
                    call.name.push_str(f.get("name").map(s).unwrap_or_default());
                    call.arguments.push_str(f.get("arguments").map(s).unwrap_or_default());
                }
                for tc in d["tool_calls"].as_array().into_iter().flatten() {
                    let call = self.call(tc["index"].as_u64().unwrap_or(0));
                    call.id.push_str(s(&tc["id"]));
                    call.name.push_str(s(&tc["function"]["name"]));
                    call.arguments.push_str(s(&tc["function"]["arguments"]));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::sse::SseParser;

    fn stream(family: ApiFamily, text: &str) -> Output {
        let mut out = Output::default();
        let mut p = SseParser::new(1 << 20);
        p.feed(text.as_bytes(), |ev, _| out.read_event(family, &ev)).unwrap();
        out
    }

    #[test]
    fn openai_chat_stream_and_body_give_the_same_text_and_calls() {
        let s = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
                 data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
                 data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
                 data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]}}]}\n\n\
                 data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n\
                 data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n\
                 data: [DONE]\n\n";
        let out = stream(ApiFamily::OpenAi, s);
        assert_eq!(out.text, "Hello");
        assert_eq!(
            out.tool_calls(),
            vec![&ToolCall { id: "c1".into(), name: "get".into(), arguments: "{\"a\":1}".into() }]
        );
        let body = br#"{"choices":[{"message":{"content":"Hello","tool_calls":[{"id":"c1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}]}}]}"#;
        assert_eq!(Output::from_json(ApiFamily::OpenAi, body), Some(out));
    }

    #[test]
    fn anthropic_and_responses_streams() {
        let s = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
                 event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
                 event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}}\n\n\
                 event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"x\\\":2}\"}}\n\n";
        let out = stream(ApiFamily::Anthropic, s);
        assert_eq!(out.text, "Hi");
        assert_eq!(
            out.tool_calls(),
            vec![&ToolCall { id: "t1".into(), name: "f".into(), arguments: "{\"x\":2}".into() }]
        );
        let body =
            br#"{"content":[{"type":"text","text":"Hi"},{"type":"tool_use","id":"t1","name":"f","input":{"x":2}}]}"#;
        assert_eq!(Output::from_json(ApiFamily::Anthropic, body), Some(out));

        let r = "event: response.output_text.delta\ndata: {\"delta\":\"par\"}\n\n\
                 event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"partial\"}]}]}}\n\n";
        assert_eq!(stream(ApiFamily::OpenAi, r).text, "partial");
    }
}
