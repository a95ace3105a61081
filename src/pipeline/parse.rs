//! Request body helpers of the pipeline: the `model` of pass-through uploads and the edit
//! that asks OpenAI streams for usage. The request view itself is the provider layer's
//! ([`crate::provider::request`]); edits are spliced by [`crate::http::splice`].

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ProxyError;
use crate::http::splice::Edit;
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
        FormProblem::Malformed(why) => ProxyError::MalformedForm(why),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::splice::splice;
    use crate::provider::request::view;
    use http::Method;

    fn asked(body: &str) -> String {
        let v = view(Endpoint::ChatCompletions, &Method::POST, body.as_bytes()).unwrap();
        match ask_for_stream_usage(Endpoint::ChatCompletions, &v, body.as_bytes()) {
            Some(edit) => String::from_utf8(splice(body.as_bytes(), vec![edit]).to_vec()).unwrap(),
            None => "unchanged".into(),
        }
    }

    #[test]
    fn asks_streams_for_usage_only_when_the_client_did_not() {
        assert_eq!(
            asked(r#"{"model":"m","messages":[],"stream":true}"#),
            r#"{"stream_options":{"include_usage":true},"model":"m","messages":[],"stream":true}"#
        );
        assert_eq!(
            asked(r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":false}}"#),
            r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(
            asked(r#"{"model":"m","messages":[],"stream":true,"stream_options":null}"#),
            r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(
            asked(r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#),
            "unchanged"
        );
        assert_eq!(asked(r#"{"model":"m","messages":[]}"#), "unchanged");
    }
}
