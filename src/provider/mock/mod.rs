//! The built-in mock provider: deterministic replies in the exact shapes of the OpenAI and
//! Anthropic APIs (JSON and SSE), realistic usage numbers, and fault directives so that tests
//! and users' own CI can exercise failure paths. It serves in-process as provider kind
//! `mock` and as a separate server with `warden mock --listen ADDR`.
//!
//! Directives come in the `x-mock` request header, comma-separated:
//! `status=429`, `retry-after=2`, `delay=200ms`, `chunk-delay=50ms`, `cut-after=3`,
//! `garbage-after=2`, `no-end`, `tokens=50`, `chunks=20`, `tool=get_weather`, `bad-json`,
//! `cached=N`, `reasoning=N`, `cache-write=N` (usage details), `echo` (the reply is the
//! request body's text, streamed in 7-character pieces: a system-prompt leak). `x-mock-reply` scripts the reply text and
//! `x-mock-tool-args` the tool call's JSON arguments. `x-mock-replies` scripts a sequence:
//! a JSON array of strings, the Nth request carrying the same header value gets the Nth
//! (the last repeats); they are the tool call's arguments when `tool=` is set, else the text.
//!
//! Two directives shape when the faults (`status`, `retry-after`, `delay`) apply, for
//! retry, fallback and breaker tests: `times=N` applies them to the first N requests that
//! carry the same `x-mock` value, then answers normally; `on=NAME` applies them only in the
//! mock named NAME (an in-process mock is named after its provider; `warden mock --name`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::{ApiFamily, Endpoint, ModelInfo};
use crate::config::parse_duration;
use crate::error::{json_response, ErrorClass};
use crate::http::body::Body;

mod shapes;
mod stream;
use shapes::Shape;
use stream::MockStream;

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
    /// Requests seen per `x-mock` value with `times=N`.
    pub seen: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

#[derive(Debug, Default, Clone)]
pub struct Mock {
    pub stats: Arc<MockStats>,
    /// Records credentials and bodies (tests only; off in `serve` for speed).
    pub record: bool,
    /// What `on=NAME` directives compare with.
    pub name: Option<String>,
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
    /// Reply with the request body itself, in 7-character pieces.
    echo: bool,
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
    /// Faults only for the first N requests with this `x-mock` value.
    times: Option<usize>,
    /// Faults only in the mock of this name.
    on: Option<String>,
    /// `x-mock-replies`: the header's text (what requests are counted by) and its items.
    replies: Option<(String, Vec<String>)>,
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
                    "echo" => d.echo = true,
                    "cached" => d.cached = num()? as u64,
                    "reasoning" => d.reasoning = num()? as u64,
                    "cache-write" => d.cache_write = num()? as u64,
                    "tokens" => d.tokens = Some(num()?.clamp(1, 100_000)),
                    "chunks" => d.chunks = Some(num()?.clamp(1, 100_000)),
                    "tool" => d.tool = Some(val.to_string()),
                    "times" => d.times = Some(num()?),
                    "on" => d.on = Some(val.to_string()),
                    other => return Err(format!("unknown x-mock directive `{other}`")),
                }
            }
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        d.reply = text("x-mock-reply");
        d.tool_args = text("x-mock-tool-args");
        if let Some(seq) = text("x-mock-replies") {
            let items: Vec<String> =
                serde_json::from_str(&seq).map_err(|_| "x-mock-replies: not a JSON array of strings".to_string())?;
            if items.is_empty() {
                return Err("x-mock-replies: the array is empty".into());
            }
            d.replies = Some((seq, items));
        }
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
        _ if d.echo => {
            let text: Vec<char> = String::from_utf8_lossy(body).chars().collect();
            text.chunks(7).map(|c| c.iter().collect()).collect()
        }
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

    /// A mock that `on=NAME` directives can single out.
    pub fn named(name: &str) -> Mock {
        Mock { name: Some(name.to_string()), ..Mock::default() }
    }

    /// Whether this request's faults apply here and now (`on=`, `times=`).
    fn faults_apply(&self, d: &Directives, headers: &HeaderMap) -> bool {
        if d.on.as_ref().is_some_and(|on| self.name.as_ref() != Some(on)) {
            return false;
        }
        let Some(times) = d.times else { return true };
        let key = headers.get("x-mock").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let mut seen = self.stats.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = seen.entry(key).or_insert(0);
        *n += 1;
        *n <= times
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
        let mut d = match Directives::parse(headers) {
            Ok(d) => d,
            Err(msg) => return mock_error(family, StatusCode::BAD_REQUEST, &msg, None),
        };
        if let Some((seq, items)) = d.replies.take() {
            let n = {
                let mut seen = self.stats.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = seen.entry(format!("replies:{seq}")).or_insert(0);
                *n += 1;
                *n - 1
            };
            let item = items.get(n).or(items.last()).cloned();
            if d.tool.is_some() {
                d.tool_args = item;
            } else {
                d.reply = item;
            }
        }
        if !self.faults_apply(&d, headers) {
            (d.status, d.retry_after, d.delay) = (None, None, None);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
