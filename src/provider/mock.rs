//! The built-in mock provider: deterministic replies in the exact shapes of the OpenAI and
//! Anthropic APIs (JSON and SSE), realistic usage numbers, and fault directives so that tests
//! and users' own CI can exercise failure paths. It serves in-process as provider kind
//! `mock` and as a separate server with `warden mock --listen ADDR`.
//!
//! Directives come in the `x-mock` request header, comma-separated:
//! `status=429`, `retry-after=2`, `delay=200ms`, `chunk-delay=50ms`, `cut-after=3`,
//! `garbage-after=2`, `no-end`, `tokens=50`, `chunks=20`, `tool=get_weather`, `bad-json`,
//! `cached=N`, `reasoning=N`, `cache-write=N` (usage details). `x-mock-reply` scripts the reply text and
//! `x-mock-tool-args` the tool call's JSON arguments.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::{ApiFamily, Endpoint, ModelInfo};
use crate::config::parse_duration;
use crate::error::{json_response, ErrorClass};
use crate::http::body::{Body, BodyError};

/// The model the shipped config routes to the mock.
pub const MOCK_MODEL: &str = "mock-1";

const WORDS: &[&str] = &[
    "Hello",
    "from",
    "the",
    "warden",
    "mock",
    "provider.",
    "This",
    "reply",
    "is",
    "deterministic,",
    "so",
    "tests",
    "can",
    "assert",
    "on",
    "every",
    "byte",
    "it",
    "sends",
    "back",
    "to",
    "the",
    "client.",
];

/// Counters a test can read to see what the mock observed, e.g. that a client disconnect
/// cancelled the upstream stream.
#[derive(Debug, Default)]
pub struct MockStats {
    pub requests: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    pub streams_cancelled: AtomicU64,
    /// The last request headers seen, so tests can check what credential and which headers
    /// reached the upstream.
    pub last_headers: std::sync::Mutex<Option<HeaderMap>>,
    /// The last request body received.
    pub last_body: std::sync::Mutex<Option<Bytes>>,
}

#[derive(Debug, Default, Clone)]
pub struct Mock {
    pub stats: Arc<MockStats>,
    /// Records credentials and bodies (tests only; off in `serve` for speed).
    pub record: bool,
}

/// Fault directives parsed from the `x-mock` header.
#[derive(Debug, Default, Clone)]
struct Directives {
    status: Option<StatusCode>,
    retry_after: Option<String>,
    delay: Option<Duration>,
    chunk_delay: Option<Duration>,
    cut_after: Option<usize>,
    /// A `data:` event that is not JSON, after this many events.
    garbage_after: Option<usize>,
    /// Leave out the stream's final event (`[DONE]`, `message_stop`, `response.completed`).
    no_end: bool,
    /// Answer a non-streamed request with a 200 whose body is not JSON.
    bad_json: bool,
    /// Report this many input tokens as read from the prompt cache (part of OpenAI's
    /// `prompt_tokens`; beside Anthropic's `input_tokens`).
    cached: u64,
    /// Report this many output tokens as reasoning (OpenAI; part of `completion_tokens`).
    reasoning: u64,
    /// Report this many input tokens as written to the prompt cache (Anthropic).
    cache_write: u64,
    tokens: Option<usize>,
    chunks: Option<usize>,
    tool: Option<String>,
    tool_args: Option<String>,
    reply: Option<String>,
}

impl Directives {
    fn parse(headers: &HeaderMap) -> Result<Directives, String> {
        let mut d = Directives::default();
        if let Some(v) = headers.get("x-mock") {
            let v = v.to_str().map_err(|_| "x-mock header is not ASCII".to_string())?;
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, val) = part.split_once('=').unwrap_or((part, ""));
                let num = || val.parse::<usize>().map_err(|_| format!("x-mock {k}: not a number: {val}"));
                let dur = || parse_duration(val).map_err(|e| format!("x-mock {k}: {e}"));
                match k {
                    "status" => {
                        let code = val.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok());
                        d.status = Some(code.ok_or_else(|| format!("x-mock status: bad code {val}"))?);
                    }
                    "retry-after" => d.retry_after = Some(val.to_string()),
                    "delay" => d.delay = Some(dur()?),
                    "chunk-delay" => d.chunk_delay = Some(dur()?),
                    "cut-after" => d.cut_after = Some(num()?),
                    "garbage-after" => d.garbage_after = Some(num()?),
                    "no-end" => d.no_end = true,
                    "bad-json" => d.bad_json = true,
                    "cached" => d.cached = num()? as u64,
                    "reasoning" => d.reasoning = num()? as u64,
                    "cache-write" => d.cache_write = num()? as u64,
                    "tokens" => d.tokens = Some(num()?.clamp(1, 100_000)),
                    "chunks" => d.chunks = Some(num()?.clamp(1, 100_000)),
                    "tool" => d.tool = Some(val.to_string()),
                    other => return Err(format!("unknown x-mock directive `{other}`")),
                }
            }
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        d.reply = text("x-mock-reply");
        d.tool_args = text("x-mock-tool-args");
        Ok(d)
    }
}

/// What the reply consists of, shared by every response shape.
struct Reply {
    words: Vec<String>,
    /// Cut short by the request's output-token limit (finish reason `length` / `max_tokens`).
    truncated: bool,
    tool: Option<(String, String)>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Reply {
    fn text(&self) -> String {
        self.words.concat()
    }

    /// The reply text split into `n` streamed pieces (word boundaries kept).
    fn pieces(&self, n: usize) -> Vec<String> {
        let len = self.words.len();
        let n = n.clamp(1, len.max(1));
        (0..n).map(|i| self.words[i * len / n..(i + 1) * len / n].concat()).collect()
    }
}

fn build_reply(d: &Directives, body: &[u8]) -> Reply {
    let words: Vec<String> = match &d.reply {
        Some(text) => split_keep_spaces(text),
        None => {
            let n = d.tokens.unwrap_or(WORDS.len());
            (0..n)
                .map(|i| {
                    let w = WORDS[i % WORDS.len()];
                    if i + 1 < n {
                        format!("{w} ")
                    } else {
                        w.to_string()
                    }
                })
                .collect()
        }
    };
    let tool =
        d.tool.clone().map(|name| (name, d.tool_args.clone().unwrap_or_else(|| r#"{"location":"Paris"}"#.to_string())));
    let completion_tokens = if tool.is_some() { 12 } else { words.len().max(1) as u64 };
    Reply { words, truncated: false, tool, prompt_tokens: (body.len() as u64 / 4).max(1), completion_tokens }
}

fn split_keep_spaces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        cur.push(ch);
        if ch == ' ' {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Mock {
    pub fn new() -> Mock {
        Mock::default()
    }

    /// Answers one request. `path` has no query string; `body` is the whole request body.
    pub async fn respond(&self, method: &Method, path: &str, headers: &HeaderMap, body: Bytes) -> Response<Body> {
        self.stats.requests.fetch_add(1, Ordering::SeqCst);
        if self.record {
            if let Ok(mut g) = self.stats.last_headers.lock() {
                *g = Some(headers.clone());
            }
            if let Ok(mut g) = self.stats.last_body.lock() {
                *g = Some(body.clone());
            }
        }
        let family = ApiFamily::detect(path, headers);
        let d = match Directives::parse(headers) {
            Ok(d) => d,
            Err(msg) => return mock_error(family, StatusCode::BAD_REQUEST, &msg, None),
        };
        if let Some(delay) = d.delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = d.status {
            let msg = format!("mock provider: simulated {} error", status.as_u16());
            return mock_error(family, status, &msg, d.retry_after.as_deref());
        }
        let endpoint = Endpoint::classify(path);
        if endpoint == Some(Endpoint::Models) && method == Method::GET {
            let models = [ModelInfo { id: MOCK_MODEL.to_string(), owned_by: "warden-mock".to_string() }];
            return ok_json(family.dialect().models_body(&models));
        }
        let req: Value = match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return mock_error(family, StatusCode::BAD_REQUEST, "mock provider: body must be a JSON object", None),
        };
        let model = req.get("model").and_then(Value::as_str).unwrap_or(MOCK_MODEL).to_string();
        let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let mut reply = build_reply(&d, &body);
        let limit = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|f| req.get(*f).and_then(Value::as_u64))
            .and_then(|n| usize::try_from(n).ok());
        if let Some(limit) = limit.filter(|l| *l < reply.words.len() && reply.tool.is_none()) {
            reply.words.truncate(limit.max(1));
            reply.completion_tokens = reply.words.len() as u64;
            reply.truncated = true;
        }
        let id = self.stats.requests.load(Ordering::Relaxed);
        if d.bad_json && !stream {
            return ok_json(Bytes::from_static(b"{\"id\":\"cut-short\",\"choices\":[{\"index\":0,"));
        }
        let shape = Shape { model, id, reply, d: d.clone() };
        let include_usage = req.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
        match (endpoint, stream) {
            (Some(Endpoint::ChatCompletions), false) => ok_json(shape.chat()),
            (Some(Endpoint::ChatCompletions), true) => self.sse(shape.chat_events(include_usage), &d),
            (Some(Endpoint::Completions), false) => ok_json(shape.completion()),
            (Some(Endpoint::Completions), true) => self.sse(shape.completion_events(include_usage), &d),
            (Some(Endpoint::Embeddings), _) => ok_json(shape.embeddings(&req)),
            (Some(Endpoint::Responses), false) => ok_json(shape.response_value("completed").to_string().into()),
            (Some(Endpoint::Responses), true) => self.sse(shape.response_events(), &d),
            (Some(Endpoint::Messages), false) => ok_json(shape.message().to_string().into()),
            (Some(Endpoint::Messages), true) => self.sse(shape.message_events(), &d),
            (Some(Endpoint::CountTokens), _) => {
                ok_json(json!({"input_tokens": shape.reply.prompt_tokens}).to_string().into())
            }
            (Some(Endpoint::Models | Endpoint::MessageBatches | Endpoint::Batches | Endpoint::Other), _)
            | (None, _) => {
                mock_error(family, StatusCode::NOT_FOUND, &format!("mock provider: no endpoint {path}"), None)
            }
        }
    }

    fn sse(&self, mut events: Vec<Bytes>, d: &Directives) -> Response<Body> {
        if d.no_end {
            events.pop();
        }
        if let Some(n) = d.garbage_after {
            events.insert(n.min(events.len()), Bytes::from_static(b"data: <html>502 Bad Gateway</html>\n\n"));
        }
        self.stats.streams_started.fetch_add(1, Ordering::SeqCst);
        let body = MockStream {
            events,
            next: 0,
            delay: d.chunk_delay,
            sleep: None,
            cut_after: d.cut_after,
            stats: self.stats.clone(),
            done: false,
            cut_armed: false,
        };
        let mut resp = Response::new(body.boxed_unsync());
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
        h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

fn ok_json(body: Bytes) -> Response<Body> {
    json_response(StatusCode::OK, body)
}

/// An error in the family's real error shape, with `retry-after` when asked for.
fn mock_error(family: ApiFamily, status: StatusCode, msg: &str, retry_after: Option<&str>) -> Response<Body> {
    let class = match status.as_u16() {
        400 | 405 | 409 | 422 => ErrorClass::InvalidRequest,
        401 => ErrorClass::Authentication,
        403 => ErrorClass::Permission,
        404 => ErrorClass::NotFound,
        413 => ErrorClass::TooLarge,
        429 => ErrorClass::RateLimit,
        503 | 529 => ErrorClass::Unavailable,
        504 => ErrorClass::Timeout,
        _ => ErrorClass::Upstream,
    };
    let code = (status == StatusCode::TOO_MANY_REQUESTS).then_some("rate_limit_exceeded");
    let mut resp = json_response(status, family.dialect().error_body(class, code, None, msg));
    if let Some(ra) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        resp.headers_mut().insert(http::header::RETRY_AFTER, ra);
    }
    resp
}

/// The data of one reply and the shapes it can be rendered in.
struct Shape {
    model: String,
    id: u64,
    reply: Reply,
    d: Directives,
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

    fn chat(&self) -> Bytes {
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

    fn chat_events(&self, include_usage: bool) -> Vec<Bytes> {
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

    fn completion(&self) -> Bytes {
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

    fn completion_events(&self, include_usage: bool) -> Vec<Bytes> {
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

    fn embeddings(&self, req: &Value) -> Bytes {
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

    fn response_value(&self, status: &str) -> Value {
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

    fn response_events(&self) -> Vec<Bytes> {
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

    fn message(&self) -> Value {
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

    fn message_events(&self) -> Vec<Bytes> {
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

/// A server-sent event stream that yields prepared events, optionally with a delay between
/// them and a simulated connection cut. Dropping it early counts as a cancelled stream.
struct MockStream {
    events: Vec<Bytes>,
    next: usize,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    cut_after: Option<usize>,
    stats: Arc<MockStats>,
    done: bool,
    /// The cut waits one poll after the last event, so the server writes that event out
    /// first (a server drops unflushed data when a body fails).
    cut_armed: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("mock provider: stream cut by directive")]
struct StreamCut;

impl http_body::Body for MockStream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.next >= this.events.len() {
            if !this.done {
                this.done = true;
                this.stats.streams_completed.fetch_add(1, Ordering::SeqCst);
            }
            return Poll::Ready(None);
        }
        if this.cut_after.is_some_and(|n| this.next >= n) {
            if !this.cut_armed && this.next > 0 {
                this.cut_armed = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.done = true;
            this.stats.streams_cancelled.fetch_add(1, Ordering::SeqCst);
            return Poll::Ready(Some(Err(BodyError::new(StreamCut))));
        }
        if let (Some(delay), true) = (this.delay, this.next > 0) {
            let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let ev = std::mem::take(&mut this.events[this.next]);
        this.next += 1;
        Poll::Ready(Some(Ok(Frame::data(ev))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.events.len() && self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

use std::future::Future as _;

impl Drop for MockStream {
    fn drop(&mut self) {
        if !self.done && self.next < self.events.len() {
            self.stats.streams_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
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

    #[test]
    fn directives_parse_and_reject_unknown() {
        let mut h = HeaderMap::new();
        h.insert("x-mock", HeaderValue::from_static("status=429, retry-after=2, chunk-delay=50ms, cut-after=3"));
        let d = Directives::parse(&h).unwrap_or_default();
        assert_eq!(d.status, Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(d.retry_after.as_deref(), Some("2"));
        assert_eq!(d.chunk_delay, Some(Duration::from_millis(50)));
        assert_eq!(d.cut_after, Some(3));
        h.insert("x-mock", HeaderValue::from_static("explode=1"));
        assert!(Directives::parse(&h).is_err());
    }

    #[test]
    fn reply_pieces_cover_the_text() {
        let d = Directives { tokens: Some(50), chunks: Some(20), ..Directives::default() };
        let r = build_reply(&d, b"{}");
        assert_eq!(r.completion_tokens, 50);
        let pieces = r.pieces(20);
        assert_eq!(pieces.len(), 20);
        assert_eq!(pieces.concat(), r.text());
    }
}
