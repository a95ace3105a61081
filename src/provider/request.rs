//! The request view: the fields of a request body warden reads, found in one scan without
//! copying the body, and refused when a lenient upstream could read the body differently
//! (repeated keys at any depth, broken JSON on any path that carries JSON). Every stage reads
//! this one view; none parses `messages` for itself. [`texts`](RequestView::texts) gives every
//! text part by role, for the stages that read what was said.

use std::borrow::Cow;
use std::ops::Range;

use http::Method;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Endpoint;
use crate::error::ProxyError;
use crate::http::json::{check_unique_keys, JsonProblem};

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

/// A string field's value, escapes decoded.
pub fn string_field<'a>(raw: &'a RawValue, name: &str) -> Result<Cow<'a, str>, ProxyError> {
    serde_json::from_str::<Cow<str>>(raw.get()).map_err(|_| match raw.get().as_bytes().first() {
        Some(b'"') => ProxyError::BadRequest(format!(
            "`{name}` is not a valid string: it has an invalid escape (such as a lone UTF-16 surrogate)"
        )),
        _ => ProxyError::BadRequest(format!("`{name}` must be a string, got {}", kind_of(raw))),
    })
}

/// The byte range of a raw value inside the body it was parsed from.
pub fn span(body: &[u8], raw: &RawValue) -> Range<usize> {
    let start = (raw.get().as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    start..start + raw.get().len()
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
}
