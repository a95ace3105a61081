//! The tools a request declares, by their allow-list names, read from every shape the APIs
//! have: OpenAI `tools` and legacy `functions`, Responses tools, Anthropic `tools`, server
//! tools and `mcp_servers`. (Tool-use rounds are counted by the request view's history.)

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::provider::request::Fields;

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<Named<'a>>,
    /// OpenAI Responses `{"type":"mcp"}` tools.
    #[serde(borrow)]
    server_label: Option<Cow<'a, str>>,
    /// Anthropic `{"type":"mcp_toolset"}` tools.
    #[serde(borrow)]
    mcp_server_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

/// A list of objects, or nothing when absent or null.
fn objects<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>, what: &str) -> Result<Vec<T>, String> {
    match raw.filter(|t| t.get() != "null") {
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| format!("`{what}` must be an array of objects")),
        None => Ok(Vec::new()),
    }
}

/// Every tool the request declares, by its allow-list name.
pub fn tool_names<'a>(f: &Fields<'a>) -> Result<Vec<Cow<'a, str>>, String> {
    let mut tools: Vec<Cow<str>> = objects::<Tool>(f.tools, "tools")?.into_iter().map(tool_id).collect();
    tools.extend(objects::<Named>(f.functions, "functions")?.into_iter().map(|t| t.name.unwrap_or_default()));
    tools.extend(
        objects::<Named>(f.mcp_servers, "mcp_servers")?
            .into_iter()
            .map(|t| Cow::Owned(format!("mcp:{}", t.name.unwrap_or_default()))),
    );
    Ok(tools)
}

/// The name a tool goes by on the allow-list: a function's name; `mcp:<server>` for remote
/// MCP servers; the type for built-in and server tools, without Anthropic's date suffix
/// (`web_search_20250305` is `web_search`), so a server tool cannot borrow a function's name.
fn tool_id(t: Tool) -> Cow<str> {
    match t.kind.as_deref() {
        None | Some("function" | "custom") => t.function.and_then(|f| f.name).or(t.name).unwrap_or_default(),
        Some("mcp") => Cow::Owned(format!("mcp:{}", t.server_label.unwrap_or_default())),
        Some("mcp_toolset") => Cow::Owned(format!("mcp:{}", t.mcp_server_name.unwrap_or_default())),
        Some(kind) => {
            let dated = kind.len() > 9
                && kind.as_bytes()[kind.len() - 9] == b'_'
                && kind[kind.len() - 8..].bytes().all(|b| b.is_ascii_digit());
            let base = if dated { &kind[..kind.len() - 9] } else { kind };
            Cow::Owned(base.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_names_from_each_shape() {
        let body = json!({"tools": [
            {"type": "function", "function": {"name": "a"}},
            {"name": "b", "input_schema": {}},
            {"type": "web_search"}
        ]})
        .to_string();
        let f: Fields = serde_json::from_str(&body).unwrap();
        assert_eq!(tool_names(&f).unwrap(), vec!["a", "b", "web_search"]);
        let body = json!({
            "tools": [
                {"type": "web_search_20250305", "name": "search_docs"},
                {"type": "mcp", "server_label": "wiki", "server_url": "https://x"},
                {"type": "custom", "name": "grammar"}
            ],
            "functions": [{"name": "legacy_fn", "parameters": {}}],
            "mcp_servers": [{"type": "url", "url": "https://x", "name": "crm"}]
        })
        .to_string();
        let f: Fields = serde_json::from_str(&body).unwrap();
        assert_eq!(tool_names(&f).unwrap(), vec!["web_search", "mcp:wiki", "grammar", "legacy_fn", "mcp:crm"]);
    }
}
