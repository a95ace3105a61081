//! Everything that differs between the OpenAI and Anthropic APIs lives below this module,
//! behind the [`Dialect`] trait: endpoints, error bodies, credentials, model listings.
//! The pipeline asks the dialect; it never branches on a provider's name or kind.

pub mod anthropic;
pub mod mock;
pub mod openai;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::error::ErrorClass;
use crate::secret::Secret;

/// The API a client speaks, chosen by the path it calls (and, for shared paths such as
/// `/v1/models`, by its headers). Errors are always rendered in this family's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiFamily {
    OpenAi,
    Anthropic,
}

impl ApiFamily {
    pub fn dialect(self) -> &'static dyn Dialect {
        match self {
            ApiFamily::OpenAi => &openai::OpenAi,
            ApiFamily::Anthropic => &anthropic::Anthropic,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ApiFamily::OpenAi => "openai",
            ApiFamily::Anthropic => "anthropic",
        }
    }

    /// The family of a request: fixed by the path for the endpoints only one API has; for
    /// shared and unknown paths, Anthropic when the request carries the headers only
    /// Anthropic's SDKs send, OpenAI otherwise.
    pub fn detect(path: &str, headers: &HeaderMap) -> ApiFamily {
        match Endpoint::classify(path) {
            Some(Endpoint::Messages | Endpoint::CountTokens) => ApiFamily::Anthropic,
            Some(Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings | Endpoint::Responses) => {
                ApiFamily::OpenAi
            }
            Some(Endpoint::Models | Endpoint::Other) | None
                if headers.contains_key("anthropic-version")
                    || headers.contains_key(crate::http::headers::X_API_KEY) =>
            {
                ApiFamily::Anthropic
            }
            Some(Endpoint::Models | Endpoint::Other) | None => ApiFamily::OpenAi,
        }
    }
}

/// The endpoints warden knows by name. Everything else under `/v1/` is [`Endpoint::Other`]
/// and still proxied, routed by the body's `model` when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Models,
    Messages,
    CountTokens,
    Other,
}

impl Endpoint {
    /// Classifies a request path (query already removed). `None` for paths outside `/v1/`.
    pub fn classify(path: &str) -> Option<Endpoint> {
        let rest = path.strip_prefix("/v1/")?;
        Some(match rest {
            "chat/completions" => Endpoint::ChatCompletions,
            "completions" => Endpoint::Completions,
            "embeddings" => Endpoint::Embeddings,
            "responses" => Endpoint::Responses,
            "models" => Endpoint::Models,
            "messages" => Endpoint::Messages,
            "messages/count_tokens" => Endpoint::CountTokens,
            _ => Endpoint::Other,
        })
    }

    /// The metric label: a fixed set, never the raw path.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Models => "models",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::Other => "other",
        }
    }

    /// The endpoint for a metric label (the inverse of [`Endpoint::label`]).
    pub fn from_label(label: &str) -> Option<Endpoint> {
        [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::Responses,
            Endpoint::Models,
            Endpoint::Messages,
            Endpoint::CountTokens,
            Endpoint::Other,
        ]
        .into_iter()
        .find(|e| e.label() == label)
    }

    /// The output-token limit fields a request may carry, in the order they are read.
    pub fn max_tokens_fields(self) -> &'static [&'static str] {
        match self {
            Endpoint::ChatCompletions => &["max_completion_tokens", "max_tokens"],
            Endpoint::Completions | Endpoint::Messages => &["max_tokens"],
            Endpoint::Responses => &["max_output_tokens"],
            Endpoint::Embeddings | Endpoint::Models | Endpoint::CountTokens | Endpoint::Other => &[],
        }
    }

    /// The field warden sets when a policy fills in or lowers the output-token limit.
    pub fn max_tokens_field(self) -> Option<&'static str> {
        self.max_tokens_fields().first().copied()
    }

    /// The method a named endpoint accepts (`None`: any, for pass-through paths).
    pub fn method(self) -> Option<Method> {
        match self {
            Endpoint::Models => Some(Method::GET),
            Endpoint::Other => None,
            Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses
            | Endpoint::Messages
            | Endpoint::CountTokens => Some(Method::POST),
        }
    }

    /// Whether the body must name a `model` (true for every named inference endpoint).
    pub fn requires_model(self) -> bool {
        self.method() == Some(Method::POST)
    }

    /// The array field the endpoint requires, checked for type before forwarding.
    pub fn required_array(self) -> Option<&'static str> {
        match self {
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => Some("messages"),
            Endpoint::Completions | Endpoint::Embeddings | Endpoint::Responses | Endpoint::Models | Endpoint::Other => {
                None
            }
        }
    }
}

/// A model as `/v1/models` lists it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub id: String,
    pub owned_by: String,
}

/// How an OpenAI-compatible upstream wants its key: `Authorization: Bearer` (OpenAI, vLLM,
/// OpenRouter, Ollama) or `api-key` (Azure OpenAI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthStyle {
    #[default]
    Bearer,
    ApiKey,
    XApiKey,
}

/// The per-family knowledge the pipeline needs. One implementation per API family.
pub trait Dialect: Sync {
    fn family(&self) -> ApiFamily;

    /// The family's native error body, so the official SDKs raise their own typed errors.
    fn error_body(&self, class: ErrorClass, code: Option<&str>, param: Option<&str>, message: &str) -> Bytes;

    /// The family's `GET /v1/models` listing.
    fn models_body(&self, models: &[ModelInfo]) -> Bytes;

    /// The header this family's upstreams expect the provider key in, by default.
    fn default_auth(&self) -> AuthStyle;

    /// Headers the upstream requires that a client may have left out.
    fn fill_required_headers(&self, headers: &mut HeaderMap);
}

/// Puts the provider's key into the upstream request in the given style.
pub fn apply_credential(headers: &mut HeaderMap, key: &Secret, style: AuthStyle) {
    let value = match style {
        AuthStyle::Bearer => http::HeaderValue::from_str(&format!("Bearer {}", key.expose())),
        AuthStyle::ApiKey | AuthStyle::XApiKey => http::HeaderValue::from_str(key.expose()),
    };
    let Ok(mut value) = value else { return };
    value.set_sensitive(true);
    let name = match style {
        AuthStyle::Bearer => http::header::AUTHORIZATION,
        AuthStyle::ApiKey => crate::http::headers::API_KEY,
        AuthStyle::XApiKey => crate::http::headers::X_API_KEY,
    };
    headers.insert(name, value);
}

/// JSON-escapes a string for hand-built bodies (quotes included).
pub(crate) fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_known_and_other_paths() {
        assert_eq!(Endpoint::classify("/v1/chat/completions"), Some(Endpoint::ChatCompletions));
        assert_eq!(Endpoint::classify("/v1/messages/count_tokens"), Some(Endpoint::CountTokens));
        assert_eq!(Endpoint::classify("/v1/files/abc"), Some(Endpoint::Other));
        assert_eq!(Endpoint::classify("/v2/chat"), None);
    }

    #[test]
    fn family_follows_path_then_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(ApiFamily::detect("/v1/models", &h), ApiFamily::OpenAi);
        assert_eq!(ApiFamily::detect("/v1/messages", &h), ApiFamily::Anthropic);
        h.insert("anthropic-version", http::HeaderValue::from_static("2023-06-01"));
        assert_eq!(ApiFamily::detect("/v1/models", &h), ApiFamily::Anthropic);
        // An OpenAI endpoint stays OpenAI whatever headers a client sends.
        h.insert("x-api-key", http::HeaderValue::from_static("k"));
        assert_eq!(ApiFamily::detect("/v1/chat/completions", &h), ApiFamily::OpenAi);
    }
}
