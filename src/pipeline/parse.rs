//! Request body helpers of the pipeline: the `model` of pass-through uploads, the edit that
//! asks OpenAI streams for usage, and the splice that applies every edit to the body in one
//! pass. The request view itself is the provider layer's ([`crate::provider::request`]).

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ProxyError;
use crate::provider::request::{span, RequestView};
use crate::provider::Endpoint;

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
        return Err(ProxyError::InvalidJson("the request body is declared as JSON but is not a JSON object".into()));
    }
    text_field(headers, body, "model").map_err(|p| match p {
        FormProblem::Repeated(name) => ProxyError::DuplicateKey { path: name },
        FormProblem::Malformed(why) => ProxyError::BadRequest(format!("the multipart body is malformed: {why}")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::request::view;
    use http::Method;

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
