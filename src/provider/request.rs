//! The request view: the fields of a request body warden reads, found in one scan without
//! copying the body, and refused when a lenient upstream could read the body differently
//! (repeated keys at any depth, broken JSON on any path that carries JSON). Every stage reads
//! this one view; none parses `messages` for itself. [`history`](RequestView::history) gives
//! every text part by role and the tool-use rounds, for the stages that read what was said.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::ops::Range;

use http::Method;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::history::{self, History};
use super::Endpoint;
use crate::error::ProxyError;
use crate::http::json::{check_unique_keys, JsonProblem, TextSize};

/// The fields of a request body warden reads.
#[derive(Debug)]
pub struct RequestView<'a> {
    pub endpoint: Endpoint,
    pub model: Option<Cow<'a, str>>,
    /// Where the `model` value sits in the body, so an alias can be spliced in.
    pub model_span: Option<Range<usize>>,
    pub stream: bool,
    /// Every top-level field any stage reads, found in this one scan of the body; later
    /// stages parse only the values they need from these slices.
    pub fields: Fields<'a>,
    /// How much text the body carries (`None`: a body warden does not read).
    pub text: Option<TextSize>,
    history: OnceCell<Result<History<'a>, String>>,
}

/// Top-level fields as raw slices of the body. A field sent as `null` is `Some("null")`.
#[derive(Debug, Default, Deserialize)]
pub struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub messages: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub input: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub tools: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub max_output_tokens: Option<&'a RawValue>,
    /// Anthropic's legacy `/v1/complete`, reachable only as a pass-through path.
    #[serde(borrow, default, deserialize_with = "present")]
    pub max_tokens_to_sample: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub n: Option<&'a RawValue>,
    /// Legacy completions: how many candidates are generated server-side (like `n`).
    #[serde(borrow, default, deserialize_with = "present")]
    pub best_of: Option<&'a RawValue>,
    /// Legacy OpenAI function calling: tools by another name.
    #[serde(borrow, default, deserialize_with = "present")]
    pub functions: Option<&'a RawValue>,
    /// Anthropic remote MCP servers: tools the model may call through the provider.
    #[serde(borrow, default, deserialize_with = "present")]
    pub mcp_servers: Option<&'a RawValue>,
    /// Anthropic's system prompt.
    #[serde(borrow, default, deserialize_with = "present")]
    pub system: Option<&'a RawValue>,
    /// Responses' system prompt.
    #[serde(borrow, default, deserialize_with = "present")]
    pub instructions: Option<&'a RawValue>,
    /// Completions' prompt.
    #[serde(borrow, default, deserialize_with = "present")]
    pub prompt: Option<&'a RawValue>,
    /// Structured-output request (OpenAI chat `response_format`, Responses `text.format`).
    #[serde(borrow, default, deserialize_with = "present")]
    pub response_format: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub text: Option<&'a RawValue>,
    /// Anthropic's structured-output request.
    #[serde(borrow, default, deserialize_with = "present")]
    pub output_format: Option<&'a RawValue>,
    /// OpenAI `stream_options` (`include_usage`).
    #[serde(borrow, default, deserialize_with = "present")]
    pub stream_options: Option<&'a RawValue>,
    /// Anthropic message batches: the nested requests.
    #[serde(borrow, default, deserialize_with = "present")]
    pub requests: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub temperature: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub top_p: Option<&'a RawValue>,
}

/// A field that is present, `null` included: a `null` is a value the upstream reads (and
/// a field warden adds must replace it, never sit beside it as a repeated key).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
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
            _ => Ok(RequestView::empty(endpoint)),
        };
    }
    if method != Method::POST {
        return Ok(RequestView::empty(endpoint));
    }
    if first.is_none() {
        return Err(ProxyError::InvalidJson("the request body is empty; expected a JSON object".into()));
    }
    let fields = read_json(body, first)?;
    read_view(endpoint, body, fields)
}

impl<'a> RequestView<'a> {
    /// The view of a body warden does not read (a GET, an upload).
    fn empty(endpoint: Endpoint) -> RequestView<'a> {
        RequestView {
            endpoint,
            model: None,
            model_span: None,
            stream: false,
            fields: Fields::default(),
            text: None,
            history: OnceCell::new(),
        }
    }

    /// The conversation: every text part by role, and the tool-use rounds. Read on first
    /// use, once, whichever stage asks first. `Err` names a part that does not have the
    /// API's shape (400).
    pub fn history(&self) -> Result<&History<'a>, String> {
        self.history.get_or_init(|| history::read(self.endpoint, &self.fields)).as_ref().map_err(Clone::clone)
    }

    /// A conservative estimate of the prompt's tokens, for budget reservations and rate
    /// limits (the real count comes from the response's usage): every key and string value
    /// of the body at three bytes a token (four undercounts code by a third), plus one token
    /// a value for the chat template, measured by the duplicate-key walk (no second pass).
    /// Encoded media (base64, data URLs) is not text and is left out. A body warden does not
    /// read counts whole.
    /// `tokenizer`: counts the conversation's text exactly instead (OpenAI models); schemas
    /// stay estimated.
    pub fn estimate_input_tokens(&self, body_len: usize, tokenizer: Option<&dyn Fn(&str) -> usize>) -> u64 {
        if let Some((count, Ok(h))) = tokenizer.map(|count| (count, self.history())) {
            let raw = |v: Option<&RawValue>| v.map_or(0, |r| r.get().len());
            let schemas = (raw(self.tools()) + raw(self.response_format())).div_ceil(3);
            let text = h.texts.iter().map(|t| count(&t.text)).sum::<usize>();
            return (text + schemas + 4 * h.texts.len()) as u64;
        }
        match self.text {
            Some(t) => (t.bytes.div_ceil(3) + t.values) as u64,
            None => body_len.div_ceil(3) as u64,
        }
    }

    /// The tool definitions the request declares, as raw JSON (their schemas inside).
    pub fn tools(&self) -> Option<&'a RawValue> {
        self.fields.tools.or(self.fields.functions)
    }

    /// The structured-output format asked for, as raw JSON.
    pub fn response_format(&self) -> Option<&'a RawValue> {
        self.fields.response_format.or(self.fields.text)
    }
}

/// Parses a JSON body: one object, no key repeated at any depth.
fn read_json(body: &[u8], first: Option<u8>) -> Result<(Fields<'_>, TextSize), ProxyError> {
    let text = match check_unique_keys(body) {
        Ok(text) => text,
        Err(JsonProblem::Duplicate(d)) => return Err(ProxyError::DuplicateKey { path: d.path }),
        Err(JsonProblem::Invalid(_)) if first != Some(b'{') => {
            return Err(ProxyError::InvalidJson("the request body must be a JSON object".into()));
        }
        Err(JsonProblem::Invalid(e)) if e.to_string().contains("escape") => {
            return Err(ProxyError::InvalidJson(format!(
                "the request body has an invalid `\\u` escape (such as a lone UTF-16 surrogate) at line {} column {}",
                e.line(),
                e.column()
            )));
        }
        Err(JsonProblem::Invalid(e)) => {
            return Err(ProxyError::InvalidJson(format!("the request body is not valid JSON: {e}")));
        }
    };
    if first != Some(b'{') {
        return Err(ProxyError::InvalidJson("the request body must be a JSON object".into()));
    }
    // The body is valid JSON with unique keys, so every error left is a field's wrong type.
    let fields = serde_json::from_slice(body)
        .map_err(|e| ProxyError::InvalidJson(format!("the request body is invalid: {e}")))?;
    Ok((fields, text))
}

fn read_view<'a>(
    endpoint: Endpoint,
    body: &'a [u8],
    (fields, text): (Fields<'a>, TextSize),
) -> Result<RequestView<'a>, ProxyError> {
    let model = match fields.model {
        Some(raw) => Some(string_field(raw, "model")?),
        None if endpoint.requires_model() => return Err(ProxyError::MissingField("model")),
        None => None,
    };
    let stream = match fields.stream.map(RawValue::get) {
        None | Some("false" | "null") => false,
        Some("true") => true,
        Some(raw) => {
            return Err(ProxyError::FieldType { field: "stream", expected: "a boolean", got: kind_of_text(raw) });
        }
    };
    if let Some(field) = endpoint.required_array() {
        let raw = if field == "requests" { fields.requests } else { fields.messages };
        match raw {
            Some(m) if m.get().starts_with('[') => {}
            Some(m) => return Err(ProxyError::FieldType { field, expected: "an array", got: kind_of(m) }),
            None => return Err(ProxyError::MissingField(field)),
        }
    }
    Ok(RequestView {
        endpoint,
        model,
        model_span: fields.model.map(|m| span(body, m)),
        stream,
        fields,
        text: Some(text),
        history: OnceCell::new(),
    })
}

/// A string field's value, escapes decoded.
pub fn string_field<'a>(raw: &'a RawValue, name: &'static str) -> Result<Cow<'a, str>, ProxyError> {
    serde_json::from_str::<Cow<str>>(raw.get()).map_err(|_| match raw.get().as_bytes().first() {
        Some(b'"') => {
            ProxyError::FieldType { field: name, expected: "a valid string", got: "a string with a bad escape" }
        }
        _ => ProxyError::FieldType { field: name, expected: "a string", got: kind_of(raw) },
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

    use crate::provider::history::Role;

    fn texts(endpoint: Endpoint, body: serde_json::Value) -> Vec<(Role, String)> {
        let text = body.to_string();
        let v = view(endpoint, &Method::POST, text.as_bytes()).unwrap();
        v.history().unwrap().texts.iter().map(|t| (t.role, t.text.to_string())).collect()
    }

    #[test]
    fn every_text_part_of_multimodal_messages_and_tool_results() {
        use serde_json::json;
        use Role::*;
        let chat = json!({"model": "m", "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "text", "text": "and this"}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "tool says hi"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}
        ]});
        assert_eq!(
            texts(Endpoint::ChatCompletions, chat),
            vec![
                (System, "be brief".into()),
                (User, "look".into()),
                (User, "and this".into()),
                (Tool, "tool says hi".into()),
                (Assistant, "no".into())
            ]
        );
        let anthropic = json!({"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "sys"}], "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}, {"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "calling"}, {"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "result text"}]},
                                         {"type": "tool_result", "tool_use_id": "u", "content": "plain result"}]}
        ]});
        assert_eq!(
            texts(Endpoint::Messages, anthropic),
            vec![
                (System, "sys".into()),
                (User, "q".into()),
                (Assistant, "calling".into()),
                (Tool, "result text".into()),
                (Tool, "plain result".into())
            ]
        );
        let responses = json!({"model": "m", "instructions": "rules", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "data:x"}]},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "a", "output": "fetched page"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}
        ]});
        assert_eq!(
            texts(Endpoint::Responses, responses),
            vec![
                (System, "rules".into()),
                (User, "hi".into()),
                (Tool, "fetched page".into()),
                (Assistant, "ok".into())
            ]
        );
        assert_eq!(
            texts(Endpoint::Responses, json!({"model": "m", "input": "just text"})),
            vec![(User, "just text".into())]
        );
        assert_eq!(
            texts(Endpoint::Completions, json!({"model": "m", "prompt": ["a", "b"]})),
            vec![(User, "a".into()), (User, "b".into())]
        );
        assert_eq!(texts(Endpoint::Embeddings, json!({"model": "m", "input": "e"})), vec![(User, "e".into())]);
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
