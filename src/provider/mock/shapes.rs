//! The mock's response shapes: the exact JSON bodies and SSE event sequences of each
//! OpenAI and Anthropic endpoint, with realistic usage, built from one [`Reply`].

use bytes::Bytes;
use serde_json::{json, Value};

use super::{Directives, Reply};

/// The data of one reply and the shapes it can be rendered in.
pub(super) struct Shape {
    pub(super) model: String,
    pub(super) id: u64,
    pub(super) reply: Reply,
    pub(super) d: Directives,
}

const CREATED: u64 = 1_700_000_000;

fn sse_data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn sse_event(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

impl Shape {
    fn pieces(&self) -> Vec<String> {
        self.reply.pieces(self.d.chunks.unwrap_or(self.reply.words.len()))
    }

    fn usage_openai(&self) -> Value {
        let r = &self.reply;
        json!({
            "prompt_tokens": r.prompt_tokens + self.d.cached, "completion_tokens": r.completion_tokens + self.d.reasoning,
            "total_tokens": r.prompt_tokens + self.d.cached + r.completion_tokens + self.d.reasoning,
            "prompt_tokens_details": {"cached_tokens": self.d.cached},
            "completion_tokens_details": {"reasoning_tokens": self.d.reasoning}
        })
    }

    fn text_finish(&self) -> &'static str {
        if self.reply.truncated {
            "length"
        } else {
            "stop"
        }
    }

    fn chat_id(&self) -> String {
        format!("chatcmpl-mock{:08}", self.id)
    }

    fn tool_call_value(&self) -> Option<Value> {
        self.reply.tool.as_ref().map(|(name, args)| {
            json!({"id": format!("call_mock{:08}", self.id), "type": "function",
                   "function": {"name": name, "arguments": args}})
        })
    }

    pub(super) fn chat(&self) -> Bytes {
        let (message, finish) = match self.tool_call_value() {
            Some(tc) => {
                (json!({"role": "assistant", "content": null, "tool_calls": [tc], "refusal": null}), "tool_calls")
            }
            None => (json!({"role": "assistant", "content": self.reply.text(), "refusal": null}), self.text_finish()),
        };
        Bytes::from(
            json!({
                "id": self.chat_id(), "object": "chat.completion", "created": CREATED,
                "model": self.model, "system_fingerprint": "fp_warden_mock",
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": self.usage_openai()
            })
            .to_string(),
        )
    }

    fn chat_chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        sse_data(&json!({
            "id": self.chat_id(), "object": "chat.completion.chunk", "created": CREATED,
            "model": self.model, "system_fingerprint": "fp_warden_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        }))
    }

    pub(super) fn chat_events(&self, include_usage: bool) -> Vec<Bytes> {
        let mut ev = vec![self.chat_chunk(json!({"role": "assistant", "content": "", "refusal": null}), None)];
        let finish = match self.tool_call_value() {
            Some(mut tc) => {
                let args = tc["function"]["arguments"].take();
                tc["function"]["arguments"] = json!("");
                tc["index"] = json!(0);
                ev.push(self.chat_chunk(json!({"tool_calls": [tc]}), None));
                ev.push(self.chat_chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}), None));
                "tool_calls"
            }
            None => {
                for p in self.pieces() {
                    ev.push(self.chat_chunk(json!({"content": p}), None));
                }
                self.text_finish()
            }
        };
        ev.push(self.chat_chunk(json!({}), Some(finish)));
        if include_usage {
            ev.push(sse_data(&json!({
                "id": self.chat_id(), "object": "chat.completion.chunk", "created": CREATED,
                "model": self.model, "system_fingerprint": "fp_warden_mock", "choices": [],
                "usage": self.usage_openai()
            })));
        }
        ev.push(Bytes::from_static(b"data: [DONE]\n\n"));
        ev
    }

    pub(super) fn completion(&self) -> Bytes {
        Bytes::from(
            json!({
                "id": format!("cmpl-mock{:08}", self.id), "object": "text_completion",
                "created": CREATED, "model": self.model,
                "choices": [{"text": self.reply.text(), "index": 0, "logprobs": null, "finish_reason": "stop"}],
                "usage": self.usage_openai()
            })
            .to_string(),
        )
    }

    pub(super) fn completion_events(&self, include_usage: bool) -> Vec<Bytes> {
        let id = format!("cmpl-mock{:08}", self.id);
        let mut ev: Vec<Bytes> = self
            .pieces()
            .into_iter()
            .map(|p| {
                sse_data(&json!({"id": id, "object": "text_completion", "created": CREATED, "model": self.model,
                                 "choices": [{"text": p, "index": 0, "logprobs": null, "finish_reason": null}]}))
            })
            .collect();
        ev.push(sse_data(&json!({"id": id, "object": "text_completion", "created": CREATED, "model": self.model,
                                 "choices": [{"text": "", "index": 0, "logprobs": null, "finish_reason": "stop"}]})));
        if include_usage {
            ev.push(sse_data(&json!({"id": id, "object": "text_completion", "created": CREATED, "model": self.model,
                                     "choices": [], "usage": self.usage_openai()})));
        }
        ev.push(Bytes::from_static(b"data: [DONE]\n\n"));
        ev
    }

    pub(super) fn embeddings(&self, req: &Value) -> Bytes {
        let inputs: Vec<String> = match req.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items.iter().map(|v| v.to_string()).collect(),
            _ => vec![String::new()],
        };
        let dims = req.get("dimensions").and_then(Value::as_u64).unwrap_or(16).clamp(1, 4096) as usize;
        let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let v = embed(text, dims);
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    json!(base64_encode(&bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        Bytes::from(
            json!({"object": "list", "data": data, "model": self.model,
                   "usage": {"prompt_tokens": self.reply.prompt_tokens, "total_tokens": self.reply.prompt_tokens}})
            .to_string(),
        )
    }

    pub(super) fn response_value(&self, status: &str) -> Value {
        let r = &self.reply;
        let output = if status == "completed" {
            json!([{"type": "message", "id": format!("msg_mock{:08}", self.id), "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": r.text(), "annotations": []}]}])
        } else {
            json!([])
        };
        let usage = if status == "completed" {
            json!({"input_tokens": r.prompt_tokens + self.d.cached, "input_tokens_details": {"cached_tokens": self.d.cached},
                   "output_tokens": r.completion_tokens + self.d.reasoning,
                   "output_tokens_details": {"reasoning_tokens": self.d.reasoning},
                   "total_tokens": r.prompt_tokens + self.d.cached + r.completion_tokens + self.d.reasoning})
        } else {
            Value::Null
        };
        json!({
            "id": format!("resp_mock{:08}", self.id), "object": "response", "created_at": CREATED,
            "status": status, "error": null, "incomplete_details": null, "instructions": null,
            "model": self.model, "output": output, "parallel_tool_calls": true, "tool_choice": "auto",
            "tools": [], "temperature": 1.0, "top_p": 1.0, "usage": usage, "metadata": {}
        })
    }

    pub(super) fn response_events(&self) -> Vec<Bytes> {
        let msg_id = format!("msg_mock{:08}", self.id);
        let mut seq = 0u64;
        let mut ev = Vec::new();
        let mut push = |name: &str, mut v: Value| {
            v["type"] = json!(name);
            v["sequence_number"] = json!(seq);
            seq += 1;
            ev.push(sse_event(name, &v));
        };
        push("response.created", json!({"response": self.response_value("in_progress")}));
        push("response.in_progress", json!({"response": self.response_value("in_progress")}));
        push(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"type": "message", "id": msg_id, "status": "in_progress", "role": "assistant", "content": []}}),
        );
        push(
            "response.content_part.added",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        for p in self.pieces() {
            push(
                "response.output_text.delta",
                json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "delta": p}),
            );
        }
        let text = self.reply.text();
        push(
            "response.output_text.done",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "text": text}),
        );
        push(
            "response.content_part.done",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
        push(
            "response.output_item.done",
            json!({"output_index": 0, "item": {"type": "message", "id": msg_id, "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}}),
        );
        push("response.completed", json!({"response": self.response_value("completed")}));
        ev
    }

    fn message_id(&self) -> String {
        format!("msg_mock{:08}", self.id)
    }

    pub(super) fn message(&self) -> Value {
        let r = &self.reply;
        let (content, stop) = match &r.tool {
            Some((name, args)) => {
                let input: Value = serde_json::from_str(args).unwrap_or(json!({}));
                (
                    json!([{"type": "tool_use", "id": format!("toolu_mock{:08}", self.id), "name": name, "input": input}]),
                    "tool_use",
                )
            }
            None => (json!([{"type": "text", "text": r.text()}]), if r.truncated { "max_tokens" } else { "end_turn" }),
        };
        json!({
            "id": self.message_id(), "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": r.prompt_tokens, "output_tokens": r.completion_tokens,
                      "cache_creation_input_tokens": self.d.cache_write, "cache_read_input_tokens": self.d.cached}
        })
    }

    pub(super) fn message_events(&self) -> Vec<Bytes> {
        let r = &self.reply;
        let mut start = self.message();
        start["content"] = json!([]);
        start["stop_reason"] = Value::Null;
        start["usage"]["output_tokens"] = json!(1);
        let mut ev = vec![sse_event("message_start", &json!({"type": "message_start", "message": start}))];
        let stop = match &r.tool {
            Some((name, args)) => {
                ev.push(sse_event("content_block_start", &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": format!("toolu_mock{:08}", self.id), "name": name, "input": {}}})));
                ev.push(sse_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
                "tool_use"
            }
            None => {
                ev.push(sse_event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ));
                ev.push(sse_event("ping", &json!({"type": "ping"})));
                for p in self.pieces() {
                    ev.push(sse_event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": p}}),
                    ));
                }
                if r.truncated {
                    "max_tokens"
                } else {
                    "end_turn"
                }
            }
        };
        ev.push(sse_event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
        ev.push(sse_event(
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": r.completion_tokens}}),
        ));
        ev.push(sse_event("message_stop", &json!({"type": "message_stop"})));
        ev
    }
}

/// A deterministic unit vector derived from the text (FNV-1a seeded per dimension).
fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims)
        .map(|i| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for b in text.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            ((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
    }
}
