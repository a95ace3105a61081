//! Request parsing stage: rejects unsafe request targets, classifies the endpoint, and reads
//! the few body fields warden needs (`model`, `stream`) without copying the body.
//! Runs first; never changes the body.

use std::borrow::Cow;
use std::ops::Range;

use http::{Method, Uri, Version};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ProxyError;
use crate::provider::Endpoint;

/// Rejects absolute-form and asterisk-form targets and any path that could climb out of an
/// upstream's base path once appended to it (`..`, `.`, `//`, encoded dots or slashes).
pub fn check_target(uri: &Uri, version: Version) -> Result<(), ProxyError> {
    // HTTP/2 always carries scheme and authority; for HTTP/1 they mean absolute-form, i.e.
    // a client asking warden to act as a forward proxy.
    if version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(ProxyError::BadTarget("absolute-form targets are not accepted; send the path only"));
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(ProxyError::BadTarget("the target must be an absolute path"));
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Err(ProxyError::BadTarget("encoded dots, slashes or backslashes are not accepted in paths"));
    }
    if path[1..].split('/').any(|seg| seg == ".." || seg == "." || (seg.is_empty() && path.len() > 1)) {
        return Err(ProxyError::BadTarget("dot segments and empty segments are not accepted in paths"));
    }
    Ok(())
}

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
    #[serde(borrow)]
    pub n: Option<&'a RawValue>,
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
            _ => None,
        }
    }
}

/// Reads `model` and `stream`, checking the types of the fields the endpoint relies on.
/// For pass-through endpoints a body that is not JSON is forwarded untouched.
pub fn view<'a>(endpoint: Endpoint, method: &Method, body: &'a [u8]) -> Result<RequestView<'a>, ProxyError> {
    if endpoint == Endpoint::Other {
        return Ok(serde_json::from_slice::<Fields>(body).ok().map_or_else(RequestView::default, |f| RequestView {
            model: f.model.and_then(|m| serde_json::from_str::<Cow<str>>(m.get()).ok()),
            model_span: f.model.map(|m| span(body, m)),
            stream: f.stream.is_some_and(|s| s.get() == "true"),
            fields: f,
        }));
    }
    if method != Method::POST {
        return Ok(RequestView::default());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ProxyError::BadRequest("the request body is empty; expected a JSON object".into()));
    }
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let fields: Fields = match serde_json::from_slice(body) {
        Ok(f) => f,
        Err(_) if first != Some(b'{') => {
            return Err(ProxyError::BadRequest("the request body must be a JSON object".into()));
        }
        // With every field read raw, the only data error left is a repeated field.
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(ProxyError::BadRequest(format!("the request body is invalid: {e}")));
        }
        Err(e) => return Err(ProxyError::BadRequest(format!("the request body is not valid JSON: {e}"))),
    };
    let model = match fields.model {
        Some(raw) => Some(
            serde_json::from_str::<Cow<str>>(raw.get())
                .map_err(|_| ProxyError::BadRequest(format!("`model` must be a string, got {}", kind_of(raw))))?,
        ),
        None if endpoint.requires_model() => {
            return Err(ProxyError::BadRequest("`model` is required".into()));
        }
        None => None,
    };
    let stream = match fields.stream.map(RawValue::get) {
        None | Some("false" | "null") => false,
        Some("true") => true,
        Some(_) => {
            let raw = fields.stream.map_or("null", RawValue::get);
            return Err(ProxyError::BadRequest(format!("`stream` must be a boolean, got {}", kind_of_text(raw))));
        }
    };
    if let Some(field) = endpoint.required_array() {
        match fields.messages {
            Some(m) if m.get().starts_with('[') => {}
            Some(m) => {
                return Err(ProxyError::BadRequest(format!("`{field}` must be an array, got {}", kind_of(m))));
            }
            None => return Err(ProxyError::BadRequest(format!("`{field}` is required"))),
        }
    }
    Ok(RequestView { model, model_span: fields.model.map(|m| span(body, m)), stream, fields })
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
    pub field: &'static str,
    /// The new value, as JSON text.
    pub value: String,
}

/// Applies edits by splicing bytes: the rest of the body is forwarded exactly as sent, and
/// nothing is parsed or serialised again.
pub fn splice(body: &[u8], mut edits: Vec<Edit>) -> bytes::Bytes {
    edits.sort_by_key(|e| e.span.as_ref().map_or(0, |r| r.start));
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
                // New fields go first in the object: after `{`, before the first member.
                let Some(open) = body.iter().position(|b| *b == b'{') else { continue };
                if pos > open {
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
            "the request body is invalid: duplicate field `model` at line 1 column 20"
        );
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
            Edit { span: v.model_span.clone(), field: "model", value: "\"gpt-4o-mini\"".into() },
            Edit { span: None, field: "max_completion_tokens", value: "512".into() },
        ];
        let out = splice(body, edits);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"max_completion_tokens":512, "model" : "gpt-4o-mini", "messages":[{"content":"x  y"}], "max_tokens": 900 }"#
        );
        assert_eq!(&splice(b"{ }", vec![Edit { span: None, field: "n", value: "1".into() }])[..], br#"{"n":1 }"#);
    }

    #[test]
    fn unsafe_targets_are_rejected() {
        let bad = ["/v1/../admin", "/v1/%2e%2e/x", "/v1//chat", "/v1/./x", "/v1/a%2Fb"];
        for t in bad {
            let uri: Uri = t.parse().unwrap();
            assert!(check_target(&uri, Version::HTTP_11).is_err(), "{t}");
        }
        let abs: Uri = "http://evil.example/v1/chat/completions".parse().unwrap();
        assert!(check_target(&abs, Version::HTTP_11).is_err());
        let ok: Uri = "/v1/chat/completions?x=1".parse().unwrap();
        assert!(check_target(&ok, Version::HTTP_11).is_ok());
    }
}
