//! Request parsing stage: reads the body fields warden needs (`model`, `stream`, and every
//! top-level field a policy rule reads) in one scan, without copying the body, and refuses
//! bodies that a lenient upstream could read differently (repeated keys at any depth,
//! broken JSON on any path that carries JSON). Never changes the body.

use std::borrow::Cow;
use std::ops::Range;

use http::Method;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ProxyError;
use crate::http::json::{check_unique_keys, JsonProblem};
use crate::provider::Endpoint;

/// The fields of a request body warden reads.
#[derive(Debug, Default)]
pub struct RequestView<'a> {
    pub model: Option<Cow<'a, str>>,
    /// Where the `model` value sits in the body, so an alias can be spliced in.
    pub model_span: Option<Range<usize>>,
    pub stream: bool,
    /// Every top-level field any stage reads, found in this one scan of the body; later
    /// stages parse only the values they need from these slices.
    pub fields: Fields<'a>,
}

/// Top-level fields as raw slices of the body.
#[derive(Debug, Default, Deserialize)]
pub struct Fields<'a> {
    #[serde(borrow)]
    pub model: Option<&'a RawValue>,
    #[serde(borrow)]
    pub stream: Option<&'a RawValue>,
    #[serde(borrow)]
    pub messages: Option<&'a RawValue>,
    #[serde(borrow)]
    pub input: Option<&'a RawValue>,
    #[serde(borrow)]
    pub tools: Option<&'a RawValue>,
    #[serde(borrow)]
    pub max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    pub max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    pub max_output_tokens: Option<&'a RawValue>,
    /// Anthropic's legacy `/v1/complete`, reachable only as a pass-through path.
    #[serde(borrow)]
    pub max_tokens_to_sample: Option<&'a RawValue>,
    #[serde(borrow)]
    pub n: Option<&'a RawValue>,
    /// Legacy completions: how many candidates are generated server-side (like `n`).
    #[serde(borrow)]
    pub best_of: Option<&'a RawValue>,
    /// Legacy OpenAI function calling: tools by another name.
    #[serde(borrow)]
    pub functions: Option<&'a RawValue>,
    /// Anthropic remote MCP servers: tools the model may call through the provider.
    #[serde(borrow)]
    pub mcp_servers: Option<&'a RawValue>,
    /// OpenAI `stream_options` (`include_usage`).
    #[serde(borrow)]
    pub stream_options: Option<&'a RawValue>,
    /// Anthropic message batches: the nested requests.
    #[serde(borrow)]
    pub requests: Option<&'a RawValue>,
    #[serde(borrow)]
    pub temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    pub top_p: Option<&'a RawValue>,
}

impl<'a> Fields<'a> {
    /// A field by name, for the endpoint-dependent token-limit fields.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        match name {
            "max_completion_tokens" => self.max_completion_tokens,
            "max_tokens" => self.max_tokens,
            "max_output_tokens" => self.max_output_tokens,
            "max_tokens_to_sample" => self.max_tokens_to_sample,
            _ => None,
        }
    }
}

/// Reads `model` and `stream`, checking the types of the fields the endpoint relies on.
/// On pass-through paths a body that is not JSON (an upload, audio) is forwarded untouched;
/// one that is JSON gets the same checks as on named endpoints.
pub fn view<'a>(endpoint: Endpoint, method: &Method, body: &'a [u8]) -> Result<RequestView<'a>, ProxyError> {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    if endpoint == Endpoint::Other {
        return match first {
            Some(b'{' | b'[') => {
                let fields = read_json(body, first)?;
                read_view(endpoint, body, fields)
            }
            _ => Ok(RequestView::default()),
        };
    }
    if method != Method::POST {
        return Ok(RequestView::default());
    }
    if first.is_none() {
        return Err(ProxyError::BadRequest("the request body is empty; expected a JSON object".into()));
    }
    let fields = read_json(body, first)?;
    read_view(endpoint, body, fields)
}

/// Parses a JSON body: one object, no key repeated at any depth.
fn read_json(body: &[u8], first: Option<u8>) -> Result<Fields<'_>, ProxyError> {
    match check_unique_keys(body) {
        Ok(()) => {}
        Err(JsonProblem::Duplicate(d)) => return Err(ProxyError::DuplicateKey { path: d.path }),
        Err(JsonProblem::Invalid(_)) if first != Some(b'{') => {
            return Err(ProxyError::BadRequest("the request body must be a JSON object".into()));
        }
        Err(JsonProblem::Invalid(e)) if e.to_string().contains("escape") => {
            return Err(ProxyError::BadRequest(format!(
                "the request body has an invalid `\\u` escape (such as a lone UTF-16 surrogate) at line {} column {}",
                e.line(),
                e.column()
            )));
        }
        Err(JsonProblem::Invalid(e)) => {
            return Err(ProxyError::BadRequest(format!("the request body is not valid JSON: {e}")));
        }
    }
    if first != Some(b'{') {
        return Err(ProxyError::BadRequest("the request body must be a JSON object".into()));
    }
    // The body is valid JSON with unique keys, so every error left is a field's wrong type.
    serde_json::from_slice(body).map_err(|e| ProxyError::BadRequest(format!("the request body is invalid: {e}")))
}

fn read_view<'a>(endpoint: Endpoint, body: &'a [u8], fields: Fields<'a>) -> Result<RequestView<'a>, ProxyError> {
    let model = match fields.model {
        Some(raw) => Some(string_field(raw, "model")?),
        None if endpoint.requires_model() => {
            return Err(ProxyError::BadRequest("`model` is required".into()));
        }
        None => None,
    };
    let stream = match fields.stream.map(RawValue::get) {
        None | Some("false" | "null") => false,
        Some("true") => true,
        Some(raw) => {
            return Err(ProxyError::BadRequest(format!("`stream` must be a boolean, got {}", kind_of_text(raw))));
        }
    };
    if let Some(field) = endpoint.required_array() {
        let raw = if field == "requests" { fields.requests } else { fields.messages };
        match raw {
            Some(m) if m.get().starts_with('[') => {}
            Some(m) => {
                return Err(ProxyError::BadRequest(format!("`{field}` must be an array, got {}", kind_of(m))));
            }
            None => return Err(ProxyError::BadRequest(format!("`{field}` is required"))),
        }
    }
    Ok(RequestView { model, model_span: fields.model.map(|m| span(body, m)), stream, fields })
}

/// What a pass-through body that is not a JSON object says about its model: the `model`
/// field of a `multipart/form-data` upload. Bodies a lenient server could parse into fields
/// warden did not see are refused: URL-encoded forms (no provider API takes them) and a
/// body declared JSON that does not start like JSON (a byte-order mark, say).
pub fn pass_through_model(headers: &http::HeaderMap, body: &[u8]) -> Result<Option<String>, ProxyError> {
    use crate::http::form::{text_field, FormProblem};
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media == "application/x-www-form-urlencoded" {
        return Err(ProxyError::UnsupportedMediaType(media));
    }
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let declared_json = media == "application/json" || media.ends_with("+json");
    if (declared_json || body.starts_with(b"\xEF\xBB\xBF")) && first.is_some() && !matches!(first, Some(b'{' | b'[')) {
        return Err(ProxyError::BadRequest("the request body is declared as JSON but is not a JSON object".into()));
    }
    text_field(headers, body, "model").map_err(|p| match p {
        FormProblem::Repeated(name) => ProxyError::DuplicateKey { path: name },
        FormProblem::Malformed(why) => ProxyError::BadRequest(format!("the multipart body is malformed: {why}")),
    })
}

/// A string field's value, escapes decoded.
pub fn string_field<'a>(raw: &'a RawValue, name: &str) -> Result<Cow<'a, str>, ProxyError> {
    serde_json::from_str::<Cow<str>>(raw.get()).map_err(|_| match raw.get().as_bytes().first() {
        Some(b'"') => ProxyError::BadRequest(format!(
            "`{name}` is not a valid string: it has an invalid escape (such as a lone UTF-16 surrogate)"
        )),
        _ => ProxyError::BadRequest(format!("`{name}` must be a string, got {}", kind_of(raw))),
    })
}

/// For OpenAI chat and completions streams: the edit that asks the upstream for the usage
/// chunk when the client did not, so that tokens can be metered exactly. `None` when the
/// client asked for it itself (it then sees the chunk as it asked).
pub fn ask_for_stream_usage(endpoint: Endpoint, view: &RequestView, body: &[u8]) -> Option<Edit> {
    #[derive(Deserialize)]
    struct Options<'a> {
        #[serde(borrow)]
        include_usage: Option<&'a RawValue>,
    }
    if !view.stream || !matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) {
        return None;
    }
    let top = body.iter().position(|b| *b == b'{').unwrap_or(0);
    let options = view.fields.stream_options.filter(|o| o.get() != "null");
    let Some(raw) = options else {
        let span = view.fields.stream_options.map(|o| span(body, o));
        return Some(Edit { span, object: top, field: "stream_options", value: r#"{"include_usage":true}"#.into() });
    };
    let at = span(body, raw);
    match serde_json::from_str::<Options>(raw.get()).ok()?.include_usage {
        Some(v) if v.get() == "true" => None,
        Some(v) => {
            Some(Edit { span: Some(span(body, v)), object: at.start, field: "include_usage", value: "true".into() })
        }
        None => Some(Edit { span: None, object: at.start, field: "include_usage", value: "true".into() }),
    }
}

/// The byte range of a raw value inside the body it was parsed from.
pub fn span(body: &[u8], raw: &RawValue) -> Range<usize> {
    let start = (raw.get().as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    start..start + raw.get().len()
}

/// A change to one top-level field of a JSON object body.
pub struct Edit {
    /// The value's current range, or `None` to add the field.
    pub span: Option<Range<usize>>,
    /// Where the object that gets a new field opens (its `{`).
    pub object: usize,
    pub field: &'static str,
    /// The new value, as JSON text.
    pub value: String,
}

/// Applies edits by splicing bytes: the rest of the body is forwarded exactly as sent, and
/// nothing is parsed or serialised again.
pub fn splice(body: &[u8], mut edits: Vec<Edit>) -> bytes::Bytes {
    // New fields go first in their object, right after its `{`.
    let at = |e: &Edit| e.span.as_ref().map_or(e.object + 1, |r| r.start);
    edits.sort_by_key(at);
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut pos = 0;
    for e in &edits {
        match &e.span {
            Some(r) if r.start >= pos && r.end <= body.len() => {
                out.extend_from_slice(&body[pos..r.start]);
                out.extend_from_slice(e.value.as_bytes());
                pos = r.end;
            }
            Some(_) => {}
            None => {
                let open = e.object;
                if body.get(open) != Some(&b'{') || pos > open + 1 {
                    continue;
                }
                out.extend_from_slice(&body[pos..=open]);
                let empty = body[open + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
                out.extend_from_slice(format!("\"{}\":{}", e.field, e.value).as_bytes());
                if !empty {
                    out.push(b',');
                }
                pos = open + 1;
            }
        }
    }
    out.extend_from_slice(&body[pos..]);
    out.into()
}

fn kind_of(raw: &RawValue) -> &'static str {
    kind_of_text(raw.get())
}

fn kind_of_text(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(endpoint: Endpoint, body: &str) -> String {
        match view(endpoint, &Method::POST, body.as_bytes()) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn names_the_field_with_the_wrong_type() {
        assert_eq!(
            err(Endpoint::ChatCompletions, r#"{"model":5,"messages":[]}"#),
            "`model` must be a string, got a number"
        );
        assert_eq!(
            err(Endpoint::ChatCompletions, r#"{"model":"m","messages":{}}"#),
            "`messages` must be an array, got an object"
        );
        assert_eq!(
            err(Endpoint::ChatCompletions, r#"{"model":"m","messages":[],"stream":"yes"}"#),
            "`stream` must be a boolean, got a string"
        );
        assert_eq!(err(Endpoint::Messages, r#"{"messages":[]}"#), "`model` is required");
        assert_eq!(err(Endpoint::Embeddings, r#"[1,2]"#), "the request body must be a JSON object");
        assert!(err(Endpoint::Embeddings, r#"{"model": "#).starts_with("the request body is not valid JSON"));
        assert_eq!(err(Endpoint::Embeddings, ""), "the request body is empty; expected a JSON object");
        assert_eq!(
            err(Endpoint::Embeddings, r#"{"model":"a","model":"b"}"#),
            "the request body repeats the key `model`; send each key once"
        );
        assert_eq!(
            err(Endpoint::Other, r#"{"model":"a","x":[{"n":1,"n":8}]}"#),
            "the request body repeats the key `x[0].n`; send each key once"
        );
        assert_eq!(
            err(Endpoint::ChatCompletions, r#"{"model":"\ud800","messages":[]}"#),
            "the request body has an invalid `\\u` escape (such as a lone UTF-16 surrogate) at line 1 column 17"
        );
        assert_eq!(err(Endpoint::Other, r#"{"model": "#).get(..31), Some("the request body is not valid J"));
        assert_eq!(err(Endpoint::Other, "file bytes"), "ok");
    }

    #[test]
    fn reads_model_with_escapes_and_stream() {
        let v =
            view(Endpoint::ChatCompletions, &Method::POST, br#"{"model":"gpt-\u0034o","stream":true,"messages":[]}"#)
                .unwrap();
        assert_eq!(v.model.as_deref(), Some("gpt-4o"));
        assert!(v.stream);
    }

    #[test]
    fn splice_replaces_and_inserts_without_touching_the_rest() {
        let body = br#"{ "model" : "fast", "messages":[{"content":"x  y"}], "max_tokens": 900 }"#;
        let v = view(Endpoint::ChatCompletions, &Method::POST, body).unwrap();
        let edits = vec![
            Edit { span: v.model_span.clone(), object: 0, field: "model", value: "\"gpt-4o-mini\"".into() },
            Edit { span: None, object: 0, field: "max_completion_tokens", value: "512".into() },
        ];
        let out = splice(body, edits);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"max_completion_tokens":512, "model" : "gpt-4o-mini", "messages":[{"content":"x  y"}], "max_tokens": 900 }"#
        );
        assert_eq!(
            &splice(b"{ }", vec![Edit { span: None, object: 0, field: "n", value: "1".into() }])[..],
            br#"{"n":1 }"#
        );
        let nested = br#"{"requests":[{"params":{"model":"m"}}]}"#;
        let edits = vec![Edit { span: None, object: 23, field: "max_tokens", value: "5".into() }];
        assert_eq!(&splice(nested, edits)[..], br#"{"requests":[{"params":{"max_tokens":5,"model":"m"}}]}"#);
    }
}
