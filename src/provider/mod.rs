//! Everything that differs between the OpenAI and Anthropic APIs lives below this module,
//! behind the [`Dialect`] trait: endpoints, error bodies, credentials, model listings.
//! The pipeline asks the dialect; it never branches on a provider's name or kind.

pub mod anthropic;
pub mod history;
pub mod mock;
pub mod openai;
pub mod output;
pub mod replay;
pub mod request;
pub mod structured;
pub mod usage;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::error::ErrorClass;
use crate::http::sse::Event;
use crate::secret::Secret;

/// The API a client speaks, chosen by the path it calls (and, for shared paths such as
/// `/v1/models`, by its headers). Errors are always rendered in this family's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiFamily {
    OpenAi,
    Anthropic,
}

impl ApiFamily {
    pub fn dialect(self) -> &'static dyn Dialect {
        match self {
            ApiFamily::OpenAi => &openai::OpenAi,
            ApiFamily::Anthropic => &anthropic::Anthropic,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ApiFamily::OpenAi => "openai",
            ApiFamily::Anthropic => "anthropic",
        }
    }

    /// The family of a request: fixed by the path for the endpoints only one API has; for
    /// shared and unknown paths, Anthropic when the request carries the headers only
    /// Anthropic's SDKs send, OpenAI otherwise.
    pub fn detect(path: &str, headers: &HeaderMap) -> ApiFamily {
        match Endpoint::classify(path) {
            Some(Endpoint::Messages | Endpoint::CountTokens | Endpoint::MessageBatches) => ApiFamily::Anthropic,
            Some(
                Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Embeddings
                | Endpoint::Responses
                | Endpoint::Batches,
            ) => ApiFamily::OpenAi,
            Some(Endpoint::Models | Endpoint::Other) | None
                if headers.contains_key("anthropic-version")
                    || headers.contains_key(crate::http::headers::X_API_KEY) =>
            {
                ApiFamily::Anthropic
            }
            Some(Endpoint::Models | Endpoint::Other) | None => ApiFamily::OpenAi,
        }
    }
}

/// The endpoints warden knows by name. Everything else under `/v1/` is [`Endpoint::Other`]
/// and still proxied, routed by the body's `model` when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Models,
    Messages,
    CountTokens,
    /// `POST /v1/messages/batches`: Anthropic batches carry whole requests inline, each
    /// checked as if sent alone.
    MessageBatches,
    /// `POST /v1/batches`: OpenAI batches name an uploaded file warden cannot check, so they
    /// are refused unless a policy allows them.
    Batches,
    Other,
}

/// Every endpoint, for label lookups.
const ALL_ENDPOINTS: [Endpoint; 10] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
    Endpoint::Responses,
    Endpoint::Models,
    Endpoint::Messages,
    Endpoint::CountTokens,
    Endpoint::MessageBatches,
    Endpoint::Batches,
    Endpoint::Other,
];

impl Endpoint {
    /// Classifies a normalised request path (see [`crate::http::target`]; query removed).
    /// `None` for paths outside `/v1/`. Letter case is ignored, because some upstream servers
    /// route case-insensitively: `/v1/Chat/Completions` must meet the chat rules too.
    pub fn classify(path: &str) -> Option<Endpoint> {
        let prefix = path.get(..4)?;
        if !prefix.eq_ignore_ascii_case("/v1/") {
            return None;
        }
        let rest = &path[4..];
        Some(
            ALL_ENDPOINTS
                .into_iter()
                .find(|e| e.canonical_path().is_some_and(|p| p[4..].eq_ignore_ascii_case(rest)))
                .unwrap_or(Endpoint::Other),
        )
    }

    /// The endpoint a request calls: like [`Endpoint::classify`], except that reading a batch
    /// listing (`GET /v1/batches`) is a pass-through request, not a batch to check.
    pub fn for_request(method: &Method, path: &str) -> Option<Endpoint> {
        match Endpoint::classify(path)? {
            Endpoint::MessageBatches | Endpoint::Batches if method != Method::POST => Some(Endpoint::Other),
            e => Some(e),
        }
    }

    /// The path warden forwards for a named endpoint, whatever case the client used.
    pub fn canonical_path(self) -> Option<&'static str> {
        match self {
            Endpoint::ChatCompletions => Some("/v1/chat/completions"),
            Endpoint::Completions => Some("/v1/completions"),
            Endpoint::Embeddings => Some("/v1/embeddings"),
            Endpoint::Responses => Some("/v1/responses"),
            Endpoint::Models => Some("/v1/models"),
            Endpoint::Messages => Some("/v1/messages"),
            Endpoint::CountTokens => Some("/v1/messages/count_tokens"),
            Endpoint::MessageBatches => Some("/v1/messages/batches"),
            Endpoint::Batches => Some("/v1/batches"),
            Endpoint::Other => None,
        }
    }

    /// The metric label: a fixed set, never the raw path.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Models => "models",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::MessageBatches => "message_batches",
            Endpoint::Batches => "batches",
            Endpoint::Other => "other",
        }
    }

    /// The endpoint for a metric label (the inverse of [`Endpoint::label`]).
    pub fn from_label(label: &str) -> Option<Endpoint> {
        ALL_ENDPOINTS.into_iter().find(|e| e.label() == label)
    }

    /// The output-token limit fields a request may carry. Every one present is checked. On
    /// pass-through paths every field name that means an output-token limit in some API
    /// counts, because the upstream behind such a path may read any of them.
    pub fn max_tokens_fields(self) -> &'static [&'static str] {
        match self {
            Endpoint::ChatCompletions => &["max_completion_tokens", "max_tokens"],
            Endpoint::Completions | Endpoint::Messages => &["max_tokens"],
            Endpoint::Responses => &["max_output_tokens"],
            Endpoint::Other => &["max_tokens", "max_completion_tokens", "max_output_tokens", "max_tokens_to_sample"],
            Endpoint::Embeddings
            | Endpoint::Models
            | Endpoint::CountTokens
            | Endpoint::MessageBatches
            | Endpoint::Batches => &[],
        }
    }

    /// The field warden sets when a policy fills in a missing output-token limit. `None` on
    /// pass-through paths, whose schema warden does not know.
    pub fn max_tokens_field(self) -> Option<&'static str> {
        match self {
            Endpoint::Other => None,
            e => e.max_tokens_fields().first().copied(),
        }
    }

    /// The method a named endpoint accepts (`None`: pass-through paths, which accept the
    /// methods in [`FORWARDED_METHODS`]).
    pub fn method(self) -> Option<Method> {
        match self {
            Endpoint::Models => Some(Method::GET),
            Endpoint::Other => None,
            Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses
            | Endpoint::Messages
            | Endpoint::CountTokens
            | Endpoint::MessageBatches
            | Endpoint::Batches => Some(Method::POST),
        }
    }

    /// Whether the body must name a `model` (every named inference endpoint; batches carry
    /// their models inside).
    pub fn requires_model(self) -> bool {
        self.method() == Some(Method::POST) && !matches!(self, Endpoint::MessageBatches | Endpoint::Batches)
    }

    /// The array field the endpoint requires, checked for type before forwarding.
    pub fn required_array(self) -> Option<&'static str> {
        match self {
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => Some("messages"),
            Endpoint::MessageBatches => Some("requests"),
            Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses
            | Endpoint::Models
            | Endpoint::Batches
            | Endpoint::Other => None,
        }
    }

    /// Whether a successful non-streamed response is JSON that warden must see whole and
    /// valid before the client gets it (model output is validated, never trusted).
    pub fn returns_json(self) -> bool {
        match self {
            Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses
            | Endpoint::Messages
            | Endpoint::CountTokens => true,
            Endpoint::Models | Endpoint::MessageBatches | Endpoint::Batches | Endpoint::Other => false,
        }
    }

    /// The endpoint a nested batch request is checked as.
    pub fn batch_item(self) -> Option<Endpoint> {
        match self {
            Endpoint::MessageBatches => Some(Endpoint::Messages),
            Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses
            | Endpoint::Models
            | Endpoint::Messages
            | Endpoint::CountTokens
            | Endpoint::Batches
            | Endpoint::Other => None,
        }
    }
}

/// The only methods warden forwards. Anything else (TRACE, CONNECT, PUT, PATCH, OPTIONS...)
/// is refused: no provider API needs it, and TRACE would echo the provider key back.
pub const FORWARDED_METHODS: [Method; 3] = [Method::GET, Method::POST, Method::DELETE];

/// A model as `/v1/models` lists it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub id: String,
    pub owned_by: String,
}

/// How an OpenAI-compatible upstream wants its key: `Authorization: Bearer` (OpenAI, vLLM,
/// OpenRouter, Ollama) or `api-key` (Azure OpenAI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthStyle {
    #[default]
    Bearer,
    ApiKey,
    XApiKey,
}

/// The per-family knowledge the pipeline needs. One implementation per API family.
pub trait Dialect: Sync {
    fn family(&self) -> ApiFamily;

    /// The family's native error body, so the official SDKs raise their own typed errors.
    fn error_body(&self, class: ErrorClass, code: Option<&str>, param: Option<&str>, message: &str) -> Bytes;

    /// The family's `GET /v1/models` listing.
    fn models_body(&self, models: &[ModelInfo]) -> Bytes;

    /// The header this family's upstreams expect the provider key in, by default.
    fn default_auth(&self) -> AuthStyle;

    /// Headers the upstream requires that a client may have left out.
    fn fill_required_headers(&self, headers: &mut HeaderMap);

    /// The SSE event that ends a stream warden must fail after its 200 went out, in this
    /// API's own shape, so that the SDKs raise instead of taking a short answer as whole.
    fn stream_error(&self, class: ErrorClass, message: &str) -> Bytes;

    /// Whether an event ends the stream: the API's final event, or the upstream's own error.
    fn is_terminal(&self, ev: &Event) -> bool;

    /// Whether a `usage` object in this event is the exchange's usage (only those are
    /// parsed).
    fn event_has_usage(&self, ev: &Event) -> bool;

    /// The keys whose string values are generated text, for estimating output tokens when
    /// an upstream reports no usage (see [`scan_json`]).
    fn text_keys(&self) -> &'static [&'static [u8]];

    /// Whether an event is OpenAI's usage-only chunk (`choices: []`), which warden asked for
    /// on the client's behalf and removes again.
    fn is_usage_only(&self, _ev: &Event) -> bool {
        false
    }

    /// Whether an event's data is what this API sends (checked before it is forwarded).
    fn event_is_valid(&self, ev: &Event) -> bool {
        looks_like_json_object(ev.data)
    }
}

/// What one pass over a JSON text finds for metering.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Total length of the string values of the text keys: enough to estimate how much text
    /// a response or event carried.
    pub text_bytes: usize,
    /// Where the first `"usage"` object opens (its `{`).
    pub usage_at: Option<usize>,
}

/// Measures a compact JSON text without parsing it, in one pass over its colons: a colon
/// right after an unescaped quote ends a key. The string values of `text_keys` are measured
/// (and skipped, so a colon inside them never counts) and the first `usage` object is
/// located. A search per key cost more than the rest of the stream watch.
pub fn scan_json(data: &[u8], text_keys: &[&[u8]]) -> Scan {
    let mut scan = Scan::default();
    let mut skip_to = 0;
    for colon in memchr::memchr_iter(b':', data) {
        if colon < skip_to || colon < 2 || data[colon - 1] != b'"' || data[colon - 2] == b'\\' {
            continue;
        }
        let key_end = colon - 1;
        match data.get(colon + 1) {
            Some(b'"') => {
                let key_start = data[..key_end].iter().rposition(|&b| b == b'"').map_or(0, |q| q + 1);
                if text_keys.contains(&&data[key_start..key_end]) {
                    let end = string_end(data, colon + 2);
                    scan.text_bytes += end - (colon + 2);
                    skip_to = end;
                }
            }
            Some(b'{') if scan.usage_at.is_none() && data[..key_end].ends_with(b"\"usage") => {
                scan.usage_at = Some(colon + 1);
            }
            _ => {}
        }
    }
    scan
}

/// The index of the quote that closes a string whose contents start at `from` (or the end of
/// the text), skipping escaped characters. Byte by byte: the strings measured are short.
fn string_end(data: &[u8], from: usize) -> usize {
    let mut j = from;
    while j < data.len() {
        match data[j] {
            b'"' => return j,
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
    data.len()
}

/// One SSE event: an optional `event:` name and one `data:` line.
pub(crate) fn sse_event(name: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 32);
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// The per-event check of a stream, cheap enough for every event: one JSON object, by its
/// delimiters. It catches what breaks streams in practice (HTML error pages, plain text, a
/// truncated event); the observers that read an event's fields parse it in full.
pub fn looks_like_json_object(data: &[u8]) -> bool {
    let t = data.trim_ascii();
    t.len() >= 2 && t.starts_with(b"{") && t.ends_with(b"}")
}

/// Puts the provider's key into the upstream request in the given style.
pub fn apply_credential(headers: &mut HeaderMap, key: &Secret, style: AuthStyle) {
    let value = match style {
        AuthStyle::Bearer => http::HeaderValue::from_str(&format!("Bearer {}", key.expose())),
        AuthStyle::ApiKey | AuthStyle::XApiKey => http::HeaderValue::from_str(key.expose()),
    };
    let Ok(mut value) = value else { return };
    value.set_sensitive(true);
    let name = match style {
        AuthStyle::Bearer => http::header::AUTHORIZATION,
        AuthStyle::ApiKey => crate::http::headers::API_KEY,
        AuthStyle::XApiKey => crate::http::headers::X_API_KEY,
    };
    headers.insert(name, value);
}

/// JSON-escapes a string for hand-built bodies (quotes included).
pub(crate) fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_scan_measures_text_and_finds_usage() {
        let keys: &[&[u8]] = &[b"content", b"arguments"];
        let chunk = br#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"Hel\"lo"},"finish_reason":null}],"usage":null}"#;
        assert_eq!(scan_json(chunk, keys), Scan { text_bytes: 7, usage_at: None });
        // A key-like run inside a string value is text, not a key.
        let tricky = br#"{"content":"say \"usage\":{ and \"content\":\"x\"","id":"a:b","usage":{"prompt_tokens":1}}"#;
        let scan = scan_json(tricky, keys);
        assert_eq!(scan.text_bytes, 37);
        let at = scan.usage_at.unwrap();
        assert!(tricky[at..].starts_with(br#"{"prompt_tokens":1}"#));
        // Truncated text never reads past the end.
        assert_eq!(scan_json(br#"{"content":"abc"#, keys).text_bytes, 3);
        assert_eq!(scan_json(br#"{"content"#, keys), Scan::default());
        assert_eq!(scan_json(br#"["a","b"]"#, keys), Scan::default());
    }

    #[test]
    fn classifies_known_and_other_paths() {
        assert_eq!(Endpoint::classify("/v1/chat/completions"), Some(Endpoint::ChatCompletions));
        assert_eq!(Endpoint::classify("/v1/messages/count_tokens"), Some(Endpoint::CountTokens));
        assert_eq!(Endpoint::classify("/v1/files/abc"), Some(Endpoint::Other));
        assert_eq!(Endpoint::classify("/v2/chat"), None);
    }

    #[test]
    fn family_follows_path_then_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(ApiFamily::detect("/v1/models", &h), ApiFamily::OpenAi);
        assert_eq!(ApiFamily::detect("/v1/messages", &h), ApiFamily::Anthropic);
        h.insert("anthropic-version", http::HeaderValue::from_static("2023-06-01"));
        assert_eq!(ApiFamily::detect("/v1/models", &h), ApiFamily::Anthropic);
        // An OpenAI endpoint stays OpenAI whatever headers a client sends.
        h.insert("x-api-key", http::HeaderValue::from_static("k"));
        assert_eq!(ApiFamily::detect("/v1/chat/completions", &h), ApiFamily::OpenAi);
    }
}
