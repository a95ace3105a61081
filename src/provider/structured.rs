//! Structured output in each API's words: which schemas a request declares for the model's
//! answer (OpenAI chat `response_format`, Responses `text.format`, Anthropic
//! `output_format`; tool `parameters` / `input_schema`, legacy `functions`), and the repair
//! turn that asks a model to answer again, spliced into the body each API's way.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::request::Fields;
use super::Endpoint;

/// What the request asks of the model's text.
#[derive(Debug, Clone, Copy)]
pub enum TextFormat<'a> {
    /// Free text.
    Free,
    /// JSON of any shape (`json_object`).
    AnyJson,
    /// JSON against this schema; `field` names where it sits, for errors.
    Schema { schema: &'a RawValue, field: &'static str },
}

/// The schemas a request declares.
#[derive(Debug)]
pub struct Declared<'a> {
    pub text: TextFormat<'a>,
    /// Function tools by name, with their argument schemas.
    pub tools: Vec<(String, Option<&'a RawValue>)>,
}

impl Declared<'_> {
    /// Whether the request declares any schema at all.
    pub fn any_schema(&self) -> bool {
        matches!(self.text, TextFormat::Schema { .. }) || self.tools.iter().any(|(_, s)| s.is_some())
    }
}

#[derive(Deserialize)]
struct Format<'a> {
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Chat: `{"type":"json_schema","json_schema":{"schema":..}}`.
    #[serde(borrow)]
    json_schema: Option<Inner<'a>>,
    /// Responses `text.format` and Anthropic `output_format` carry it directly.
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Inner<'a> {
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct TextField<'a> {
    #[serde(borrow)]
    format: Option<Format<'a>>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow)]
    input_schema: Option<&'a RawValue>,
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    name: Option<String>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
}

/// The schemas the request declares. `Err`: a field that does not have the API's shape.
pub fn declared<'a>(endpoint: Endpoint, fields: &Fields<'a>) -> Result<Declared<'a>, String> {
    let format = match endpoint {
        Endpoint::ChatCompletions => parse::<Format>(fields.response_format, "response_format")?
            .map(|f| text_format(f, "response_format.json_schema.schema")),
        Endpoint::Responses => parse::<TextField>(fields.text, "text")?
            .and_then(|t| t.format)
            .map(|f| text_format(f, "text.format.schema")),
        Endpoint::Messages => {
            parse::<Format>(fields.output_format, "output_format")?.map(|f| text_format(f, "output_format.schema"))
        }
        _ => None,
    };
    let mut tools = Vec::new();
    for (list, field) in [(fields.tools, "tools"), (fields.functions, "functions")] {
        for t in parse::<Vec<Tool>>(list, field)?.into_iter().flatten() {
            // Chat nests the function; Responses, Anthropic and `functions` do not.
            let (name, schema) = match t.function {
                Some(f) => (f.name, f.parameters),
                None => (t.name, t.parameters.or(t.input_schema)),
            };
            let is_function = matches!(t.kind.as_deref(), None | Some("function" | "custom"));
            if let (Some(name), true) = (name, is_function) {
                tools.push((name, schema.filter(|s| s.get() != "null")));
            }
        }
    }
    Ok(Declared { text: format.unwrap_or(TextFormat::Free), tools })
}

fn text_format<'a>(f: Format<'a>, field: &'static str) -> TextFormat<'a> {
    match f.kind.as_deref() {
        Some("json_schema") => match f.json_schema.and_then(|j| j.schema).or(f.schema) {
            Some(schema) => TextFormat::Schema { schema, field },
            None => TextFormat::AnyJson,
        },
        Some("json_object") => TextFormat::AnyJson,
        _ => TextFormat::Free,
    }
}

fn parse<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>, field: &str) -> Result<Option<T>, String> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => {
            serde_json::from_str(r.get()).map(Some).map_err(|_| format!("`{field}` does not have the API's shape"))
        }
    }
}

/// The body asked again with a repair turn: the model's bad answer (`answer`, when it was
/// text) and a user message with `note`. `None`: the endpoint has no conversation to add to
/// (legacy completions), or the body does not have its shape; it is sent again unchanged.
pub fn repaired(endpoint: Endpoint, body: &[u8], answer: Option<&str>, note: &str) -> Option<Bytes> {
    let view = super::request::view(endpoint, &http::Method::POST, body).ok()?;
    let (raw, conversation) = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => (view.fields.messages?, true),
        Endpoint::Responses => (view.fields.input?, false),
        _ => return None,
    };
    let mut turns = Vec::new();
    if let Some(a) = answer.filter(|a| !a.trim().is_empty()) {
        turns.push(serde_json::json!({"role": "assistant", "content": a}).to_string());
    }
    turns.push(serde_json::json!({"role": "user", "content": note}).to_string());
    let span = super::request::span(body, raw);
    let text = raw.get();
    let value = if text.starts_with('[') {
        let inner = text[1..text.len() - 1].trim();
        let sep = if inner.is_empty() { "" } else { "," };
        format!("[{inner}{sep}{}]", turns.join(","))
    } else if !conversation && text.starts_with('"') {
        // Responses' `input` as one string is the user's first turn.
        format!(
            "[{},{}]",
            serde_json::json!({"role": "user", "content": serde_json::from_str::<String>(text).ok()?}),
            turns.join(",")
        )
    } else {
        return None;
    };
    let mut out = Vec::with_capacity(body.len() + value.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&body[span.end..]);
    Some(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(endpoint: Endpoint, body: serde_json::Value) -> (String, Vec<(String, Option<String>)>) {
        let text = body.to_string();
        let v = super::super::request::view(endpoint, &http::Method::POST, text.as_bytes()).unwrap();
        let d = declared(endpoint, &v.fields).unwrap();
        let t = match d.text {
            TextFormat::Free => "free".to_string(),
            TextFormat::AnyJson => "json".to_string(),
            TextFormat::Schema { schema, field } => format!("{field}={}", schema.get()),
        };
        (t, d.tools.into_iter().map(|(n, s)| (n, s.map(|s| s.get().to_string()))).collect())
    }

    #[test]
    fn every_api_declares_its_own_way() {
        let chat = json!({"model": "m", "messages": [],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "functions": [{"name": "legacy", "parameters": {"type": "string"}}]});
        let (text, tools) = decl(Endpoint::ChatCompletions, chat);
        assert_eq!(text, r#"response_format.json_schema.schema={"type":"object"}"#);
        assert_eq!(tools.len(), 2);
        assert_eq!(tools[1], ("legacy".to_string(), Some(r#"{"type":"string"}"#.to_string())));
        let (text, _) = decl(
            Endpoint::ChatCompletions,
            json!({"model": "m", "messages": [], "response_format": {"type": "json_object"}}),
        );
        assert_eq!(text, "json");
        let responses = json!({"model": "m", "input": "x",
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "array"}}},
            "tools": [{"type": "function", "name": "g", "parameters": {}}, {"type": "web_search"}]});
        let (text, tools) = decl(Endpoint::Responses, responses);
        assert_eq!(text, r#"text.format.schema={"type":"array"}"#);
        assert_eq!(tools, [("g".to_string(), Some("{}".to_string()))]);
        let anthropic = json!({"model": "m", "max_tokens": 5, "messages": [],
            "output_format": {"type": "json_schema", "schema": {"type": "object"}},
            "tools": [{"name": "h", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}]});
        let (text, tools) = decl(Endpoint::Messages, anthropic);
        assert_eq!(text, r#"output_format.schema={"type":"object"}"#);
        assert_eq!(tools, [("h".to_string(), Some(r#"{"type":"object"}"#.to_string()))]);
    }

    #[test]
    fn repair_turns_are_appended_in_each_api_shape() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#;
        let out = repaired(Endpoint::ChatCompletions, body, Some("{bad"), "fix it").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"].as_array().unwrap().len(), 3);
        assert_eq!(v["messages"][1], json!({"role": "assistant", "content": "{bad"}));
        assert_eq!(v["messages"][2], json!({"role": "user", "content": "fix it"}));
        assert_eq!(v["temperature"], 0);
        let out = repaired(Endpoint::Responses, br#"{"model":"m","input":"extract"}"#, None, "again").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["input"], json!([{"role": "user", "content": "extract"}, {"role": "user", "content": "again"}]));
        let out =
            repaired(Endpoint::Messages, br#"{"model":"m","max_tokens":5,"messages":[]}"#, Some(" "), "n").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"], json!([{"role": "user", "content": "n"}]));
        assert!(repaired(Endpoint::Completions, br#"{"model":"m","prompt":"p"}"#, None, "n").is_none());
    }
}
