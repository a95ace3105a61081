//! The OpenAI API dialect: `{"error":{message,type,param,code}}` errors and the model list.
//! Also used for every OpenAI-compatible upstream (Azure, vLLM, Ollama, OpenRouter).

use bytes::Bytes;
use http::HeaderMap;

use super::{json_str, ApiFamily, AuthStyle, Dialect, ModelInfo};
use crate::error::ErrorClass;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::http::sse::Event;

pub struct OpenAi;

impl OpenAi {
    fn error_type(class: ErrorClass) -> &'static str {
        match class {
            ErrorClass::InvalidRequest | ErrorClass::NotFound | ErrorClass::TooLarge => "invalid_request_error",
            ErrorClass::Authentication => "invalid_request_error",
            ErrorClass::Permission => "permission_error",
            ErrorClass::RateLimit => "rate_limit_error",
            ErrorClass::Upstream | ErrorClass::Internal | ErrorClass::Unavailable => "server_error",
            ErrorClass::Timeout => "timeout",
        }
    }
}

impl Dialect for OpenAi {
    fn family(&self) -> ApiFamily {
        ApiFamily::OpenAi
    }

    fn error_body(&self, class: ErrorClass, code: Option<&str>, param: Option<&str>, message: &str) -> Bytes {
        let code = code.map_or_else(|| "null".to_string(), json_str);
        let param = param.map_or_else(|| "null".to_string(), json_str);
        Bytes::from(format!(
            r#"{{"error":{{"message":{},"type":"{}","param":{},"code":{}}}}}"#,
            json_str(message),
            Self::error_type(class),
            param,
            code
        ))
    }

    fn models_body(&self, models: &[ModelInfo]) -> Bytes {
        let data: Vec<serde_json::Value> = models
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id, "object": "model", "created": 1_700_000_000, "owned_by": m.owned_by
                })
            })
            .collect();
        Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string())
    }

    fn default_auth(&self) -> AuthStyle {
        AuthStyle::Bearer
    }

    fn fill_required_headers(&self, _headers: &mut HeaderMap) {}

    /// A `data:` event with an `error` object: the SDKs raise `APIError` on it, for chat,
    /// completions and responses streams alike.
    fn stream_error(&self, class: ErrorClass, message: &str) -> Bytes {
        super::sse_event(None, &self.error_body(class, Some("stream_error"), None, message))
    }

    fn is_terminal(&self, ev: &Event) -> bool {
        match ev.name {
            Some("response.completed" | "response.incomplete" | "response.failed" | "error") => true,
            Some(_) => false,
            None => ev.data == b"[DONE]" || ev.data.starts_with(b"{\"error\""),
        }
    }

    /// Chat and completions chunks carry usage themselves (the final one, when asked for);
    /// Responses streams in their final events.
    fn event_has_usage(&self, ev: &Event) -> bool {
        match ev.name {
            Some(n) => matches!(n, "response.completed" | "response.incomplete" | "response.failed"),
            None => true,
        }
    }

    /// Chat and completions stream `content` (or `text`), tool calls their `arguments`,
    /// Responses its `delta`s.
    fn text_keys(&self) -> &'static [&'static [u8]] {
        &[b"content", b"text", b"arguments", b"delta", b"refusal"]
    }

    fn is_usage_only(&self, ev: &Event) -> bool {
        static EMPTY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\":[]"));
        ev.name.is_none() && EMPTY.find(ev.data).is_some()
    }

    fn event_is_valid(&self, ev: &Event) -> bool {
        ev.data == b"[DONE]" || super::looks_like_json_object(ev.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_openai_shape() {
        let body = OpenAi.error_body(ErrorClass::Authentication, Some("invalid_api_key"), None, "bad \"key\"");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["error"]["message"], "bad \"key\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(v["error"]["param"].is_null());
    }
}
