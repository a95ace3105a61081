//! The Anthropic API dialect: `{"type":"error","error":{type,message}}` errors, the model
//! list, and the `anthropic-version` header every upstream call needs.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use super::{json_str, ApiFamily, AuthStyle, Dialect, ModelInfo};
use crate::error::ErrorClass;

use crate::http::sse::Event;

pub struct Anthropic;

/// The API version warden sends when a client did not name one.
pub const DEFAULT_VERSION: &str = "2023-06-01";

impl Anthropic {
    fn error_type(class: ErrorClass) -> &'static str {
        match class {
            ErrorClass::InvalidRequest => "invalid_request_error",
            ErrorClass::Authentication => "authentication_error",
            ErrorClass::Permission => "permission_error",
            ErrorClass::NotFound => "not_found_error",
            ErrorClass::TooLarge => "request_too_large",
            ErrorClass::RateLimit => "rate_limit_error",
            ErrorClass::Upstream | ErrorClass::Internal => "api_error",
            ErrorClass::Timeout => "timeout_error",
            ErrorClass::Unavailable => "overloaded_error",
        }
    }
}

impl Dialect for Anthropic {
    fn family(&self) -> ApiFamily {
        ApiFamily::Anthropic
    }

    fn error_body(&self, class: ErrorClass, _code: Option<&str>, _param: Option<&str>, message: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"type":"error","error":{{"type":"{}","message":{}}}}}"#,
            Self::error_type(class),
            json_str(message)
        ))
    }

    fn models_body(&self, models: &[ModelInfo]) -> Bytes {
        let data: Vec<serde_json::Value> = models
            .iter()
            .map(|m| {
                serde_json::json!({
                    "type": "model", "id": m.id, "display_name": m.id,
                    "created_at": "2025-01-01T00:00:00Z"
                })
            })
            .collect();
        let first = models.first().map(|m| m.id.clone());
        let last = models.last().map(|m| m.id.clone());
        Bytes::from(
            serde_json::json!({"data": data, "has_more": false, "first_id": first, "last_id": last}).to_string(),
        )
    }

    fn default_auth(&self) -> AuthStyle {
        AuthStyle::XApiKey
    }

    fn fill_required_headers(&self, headers: &mut HeaderMap) {
        if !headers.contains_key("anthropic-version") {
            headers.insert("anthropic-version", HeaderValue::from_static(DEFAULT_VERSION));
        }
    }

    /// `event: error`, as Anthropic itself ends a stream it cannot finish (overloaded); the
    /// SDKs raise on it.
    fn stream_error(&self, class: ErrorClass, message: &str) -> Bytes {
        super::sse_event(Some("error"), &self.error_body(class, None, None, message))
    }

    fn event_has_usage(&self, ev: &Event) -> bool {
        matches!(ev.name, Some("message_start" | "message_delta"))
    }

    fn text_keys(&self) -> &'static [&'static [u8]] {
        &[b"text", b"partial_json", b"thinking"]
    }

    fn is_terminal(&self, ev: &Event) -> bool {
        matches!(ev.name, Some("message_stop" | "error"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_anthropic_shape() {
        let body = Anthropic.error_body(ErrorClass::TooLarge, None, None, "too big");
        assert_eq!(&body[..], br#"{"type":"error","error":{"type":"request_too_large","message":"too big"}}"#);
    }
}
