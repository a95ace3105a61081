//! The one error type of the request path, its exhaustive mapping to HTTP status, and its
//! rendering into the caller's own API error format.
//!
//! Upstream error responses are not errors here: they pass through unchanged as responses.
//! Only failures that warden itself decides end up as a [`ProxyError`].

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::http::body::{full, Body};
use crate::provider::ApiFamily;

mod upstream;
pub use upstream::UpstreamFailure;

/// One policy rule's objection to a request (built by `policy`, carried here so the error
/// can name policy, rule and field).
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub policy: String,
    /// `limits.max_tokens`, `limits.models`, ...
    pub rule: &'static str,
    /// The request field at fault.
    pub field: String,
    pub message: String,
    /// 403 for a denied model, 400 otherwise.
    pub forbidden: bool,
}

/// Every way warden can refuse or fail a request. Messages never carry secrets: keys are
/// [`crate::secret::Secret`] and never put into a variant.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("unknown endpoint {method} {path}")]
    UnknownEndpoint { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("{0}")]
    ModelNotFound(String),
    /// An unnamed `/v1` path that no provider or policy lists in `extra_paths`.
    #[error("the path {path} is not forwarded by warden: no `extra_paths` entry of provider `{provider}` allows it")]
    PathNotForwarded { path: String, provider: String },
    #[error("the request body repeats the key `{path}`; send each key once")]
    DuplicateKey { path: String },
    /// The body is not one JSON object (empty, broken, an array, a bad escape).
    #[error("{0}")]
    InvalidJson(String),
    #[error("`{0}` is required")]
    MissingField(&'static str),
    #[error("`{field}` must be {expected}, got {got}")]
    FieldType { field: &'static str, expected: &'static str, got: &'static str },
    #[error("request bodies with content-encoding `{0}` are not accepted; send the body uncompressed")]
    UnsupportedEncoding(String),
    #[error("request bodies of type `{0}` are not accepted on this path; send JSON or multipart/form-data")]
    UnsupportedMediaType(String),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The model is routed to a provider that does not speak the API it was sent on.
    #[error("model `{model}` is served by provider `{provider}`, which does not speak the {api} API")]
    WrongApi { model: String, provider: String, api: &'static str },
    #[error("model aliases cannot be used in form uploads; name the model itself")]
    AliasInForm,
    #[error("the multipart body is malformed: {0}")]
    MalformedForm(&'static str),
    /// A part of the body that the rules read does not have the API's shape; the message
    /// names it (`messages[3]`, `requests[0].params`).
    #[error("{0}")]
    InvalidShape(String),
    /// A message batch whose requests go to different providers.
    #[error("`requests[{index}]` uses model `{model}` of provider `{provider}`, but this batch goes to `{batch_provider}`: send one batch per provider")]
    MixedBatch { index: usize, model: String, provider: String, batch_provider: String },
    #[error("invalid request target: {0}")]
    BadTarget(&'static str),
    #[error("could not read the request body: {0}")]
    ClientBody(String),
    /// The upstream call failed before a response head arrived. `detail` (addresses, OS
    /// errors) goes to the log only; the client learns the provider and what went wrong.
    #[error("upstream provider `{provider}` {}", .failure.describe())]
    Upstream { provider: String, failure: UpstreamFailure, detail: String },
    #[error("blocked by policy `{}` (rule `{}`): {}", .0.policy, .0.rule, .0.message)]
    PolicyViolation(Box<Violation>),
    /// A rate limit has no room for the request now.
    #[error("rate limit `{}` of policy `{}` for {} reached; retry in {}s", .0.limit, .0.policy, .0.scope, .0.retry_after_secs)]
    RateLimited(Box<RateRefusal>),
    /// The provider's circuit is open and no fallback could take the request.
    #[error("upstream provider `{provider}` is failing: its circuit is open; retry in {retry_after_secs}s")]
    CircuitOpen { provider: String, retry_after_secs: u64 },
    /// An agent session reached one of its caps.
    #[error("session `{}` of policy `{}` reached its {} ({}); start a new session", .0.session, .0.policy, .0.limit, .0.detail)]
    SessionLimit(Box<SessionRefusal>),
    /// A dollar budget applies, the model has no price, and `unpriced_models: reject`.
    #[error("model `{0}` has no price and a dollar budget applies: add it under `prices:` in proxy.yaml, or set `unpriced_models: meter`")]
    UnpricedModel(String),
    /// A budget has no room for the request's worst case.
    #[error("budget `{}` of policy `{}` for {} is exhausted for this {} (spent ${:.4} of ${:.4}); it resets in {}s", .0.budget, .0.policy, .0.scope, .0.window, .0.spent_usd, .0.limit_usd, .0.resets_in_secs)]
    BudgetExhausted(Box<BudgetRefusal>),
    /// The model's output broke the output schema, and the policy rejects it (or ran out
    /// of retries).
    #[error("the model's output does not satisfy the output schema of policy `{}` ({} attempt{}): {}", .0.policy, .0.attempts, if .0.attempts == 1 { "" } else { "s" }, .0.problems.join("; "))]
    SchemaInvalid(Box<SchemaRefusal>),
    /// The injection scan found an attack and the policy blocks. The text is never echoed.
    #[error("blocked by policy `{}`: prompt injection detected ({}, score {:.2}) in {}", .0.policy, .0.family, .0.score, .0.place)]
    InjectionDetected(Box<InjectionRefusal>),
}

/// Where an injection was found, without the text.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectionRefusal {
    pub policy: String,
    pub family: &'static str,
    pub score: f32,
    /// `message 2 (tool)`, `the system prompt`.
    pub place: String,
}

/// Why an output was refused: the violations, each `where pointer: why`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaRefusal {
    pub policy: String,
    pub attempts: u32,
    pub problems: Vec<String>,
}

/// Which rate limit refused a request, for the 429 and its `retry-after`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRefusal {
    pub policy: String,
    /// `requests_per_minute`, `tokens_per_minute` or `max_concurrent`.
    pub limit: &'static str,
    pub scope: String,
    pub retry_after_secs: u64,
}

/// Which session cap stopped a request.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRefusal {
    pub policy: String,
    /// The session id as the client sent it (at most 64 characters of it).
    pub session: String,
    /// `max_requests`, `max_tokens` or `max_duration`.
    pub limit: &'static str,
    /// The cap and where the session stands, in words.
    pub detail: String,
}

/// Which budget refused a request, for the 429 and its `retry-after`.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRefusal {
    pub policy: String,
    pub budget: String,
    /// `key demo`, `team demo`, `model gpt-4o`, `all requests`.
    pub scope: String,
    pub window: &'static str,
    pub spent_usd: f64,
    pub limit_usd: f64,
    pub resets_in_secs: u64,
}

/// The family-independent class of an error; each API dialect names it in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    RateLimit,
    Upstream,
    Timeout,
    Unavailable,
    Internal,
}

impl ProxyError {
    /// The one status mapping. No wildcard arm: a new variant must be mapped here.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::UnknownEndpoint { .. } => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::PathNotForwarded { .. } => StatusCode::NOT_FOUND,
            ProxyError::DuplicateKey { .. }
            | ProxyError::InvalidJson(_)
            | ProxyError::MissingField(_)
            | ProxyError::FieldType { .. } => StatusCode::BAD_REQUEST,
            ProxyError::UnsupportedEncoding(_) | ProxyError::UnsupportedMediaType(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::WrongApi { .. }
            | ProxyError::AliasInForm
            | ProxyError::MalformedForm(_)
            | ProxyError::InvalidShape(_)
            | ProxyError::MixedBatch { .. } => StatusCode::BAD_REQUEST,
            ProxyError::BadTarget(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Upstream { failure, .. } if failure.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::PolicyViolation(v) if v.forbidden => StatusCode::FORBIDDEN,
            ProxyError::PolicyViolation(_) => StatusCode::BAD_REQUEST,
            ProxyError::BudgetExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::SchemaInvalid(_) => StatusCode::BAD_GATEWAY,
            ProxyError::InjectionDetected(_) => StatusCode::FORBIDDEN,
            ProxyError::UnpricedModel(_) => StatusCode::FORBIDDEN,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::SessionLimit(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            ProxyError::Unauthorized(_) => ErrorClass::Authentication,
            ProxyError::Forbidden(_) => ErrorClass::Permission,
            ProxyError::UnknownEndpoint { .. } => ErrorClass::NotFound,
            ProxyError::MethodNotAllowed { .. } => ErrorClass::InvalidRequest,
            ProxyError::ModelNotFound(_) => ErrorClass::NotFound,
            ProxyError::PathNotForwarded { .. } => ErrorClass::NotFound,
            ProxyError::DuplicateKey { .. }
            | ProxyError::InvalidJson(_)
            | ProxyError::MissingField(_)
            | ProxyError::FieldType { .. } => ErrorClass::InvalidRequest,
            ProxyError::UnsupportedEncoding(_) | ProxyError::UnsupportedMediaType(_) => ErrorClass::InvalidRequest,
            ProxyError::BodyTimeout(_) => ErrorClass::Timeout,
            ProxyError::BodyTooLarge { .. } => ErrorClass::TooLarge,
            ProxyError::WrongApi { .. }
            | ProxyError::AliasInForm
            | ProxyError::MalformedForm(_)
            | ProxyError::InvalidShape(_)
            | ProxyError::MixedBatch { .. } => ErrorClass::InvalidRequest,
            ProxyError::BadTarget(_) => ErrorClass::InvalidRequest,
            ProxyError::ClientBody(_) => ErrorClass::InvalidRequest,
            ProxyError::Upstream { failure, .. } if failure.is_timeout() => ErrorClass::Timeout,
            ProxyError::Upstream { .. } => ErrorClass::Upstream,
            ProxyError::PolicyViolation(v) if v.forbidden => ErrorClass::Permission,
            ProxyError::PolicyViolation(_) => ErrorClass::InvalidRequest,
            ProxyError::BudgetExhausted(_) => ErrorClass::RateLimit,
            ProxyError::SchemaInvalid(_) => ErrorClass::Upstream,
            ProxyError::InjectionDetected(_) => ErrorClass::Permission,
            ProxyError::UnpricedModel(_) => ErrorClass::Permission,
            ProxyError::RateLimited(_) => ErrorClass::RateLimit,
            ProxyError::CircuitOpen { .. } => ErrorClass::Unavailable,
            ProxyError::SessionLimit(_) => ErrorClass::RateLimit,
        }
    }

    /// A short, fixed label for metrics and the log line (never `to_string()`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Unauthorized(_) => "unauthorized",
            ProxyError::Forbidden(_) => "forbidden",
            ProxyError::UnknownEndpoint { .. } => "unknown_endpoint",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::ModelNotFound(_) => "model_not_found",
            ProxyError::PathNotForwarded { .. } => "path_not_forwarded",
            ProxyError::DuplicateKey { .. } => "duplicate_key",
            ProxyError::InvalidJson(_) => "invalid_json",
            ProxyError::MissingField(_) | ProxyError::FieldType { .. } => "invalid_field",
            ProxyError::UnsupportedEncoding(_) => "unsupported_encoding",
            ProxyError::UnsupportedMediaType(_) => "unsupported_media_type",
            ProxyError::BodyTimeout(_) => "body_timeout",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::WrongApi { .. } => "wrong_api",
            ProxyError::AliasInForm => "alias_in_form",
            ProxyError::MalformedForm(_) => "malformed_form",
            ProxyError::InvalidShape(_) => "invalid_shape",
            ProxyError::MixedBatch { .. } => "mixed_batch",
            ProxyError::BadTarget(_) => "bad_target",
            ProxyError::ClientBody(_) => "client_body",
            ProxyError::Upstream { failure, .. } => failure.kind(),
            ProxyError::PolicyViolation(_) => "policy_violation",
            ProxyError::BudgetExhausted(_) => "budget_exhausted",
            ProxyError::SchemaInvalid(_) => "schema_invalid",
            ProxyError::InjectionDetected(_) => "injection_detected",
            ProxyError::UnpricedModel(_) => "unpriced_model",
            ProxyError::RateLimited(_) => "rate_limited",
            ProxyError::CircuitOpen { .. } => "circuit_open",
            ProxyError::SessionLimit(_) => "session_limit",
        }
    }

    /// A machine-readable code for the OpenAI `code` field, where OpenAI has one.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            ProxyError::Unauthorized(_) => Some("invalid_api_key"),
            ProxyError::ModelNotFound(_) => Some("model_not_found"),
            ProxyError::BodyTooLarge { .. } => Some("request_too_large"),
            ProxyError::UnknownEndpoint { .. } | ProxyError::PathNotForwarded { .. } => Some("unknown_url"),
            ProxyError::PolicyViolation(_) => Some("policy_violation"),
            ProxyError::BudgetExhausted(_) => Some("budget_exceeded"),
            ProxyError::SchemaInvalid(_) => Some("output_schema_violation"),
            ProxyError::InjectionDetected(_) => Some("prompt_injection_detected"),
            ProxyError::UnpricedModel(_) => Some("unpriced_model"),
            ProxyError::RateLimited(_) => Some("rate_limit_exceeded"),
            ProxyError::SessionLimit(_) => Some("session_limit_exceeded"),
            ProxyError::CircuitOpen { .. } => Some("circuit_open"),
            ProxyError::Forbidden(_)
            | ProxyError::DuplicateKey { .. }
            | ProxyError::InvalidJson(_)
            | ProxyError::MissingField(_)
            | ProxyError::FieldType { .. }
            | ProxyError::UnsupportedEncoding(_)
            | ProxyError::UnsupportedMediaType(_)
            | ProxyError::BodyTimeout(_)
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::WrongApi { .. }
            | ProxyError::AliasInForm
            | ProxyError::MalformedForm(_)
            | ProxyError::InvalidShape(_)
            | ProxyError::MixedBatch { .. }
            | ProxyError::BadTarget(_)
            | ProxyError::ClientBody(_)
            | ProxyError::Upstream { .. } => None,
        }
    }

    /// The request field at fault, for the OpenAI `param` field.
    pub fn param(&self) -> Option<&str> {
        match self {
            ProxyError::PolicyViolation(v) => Some(v.field.as_str()),
            ProxyError::DuplicateKey { path } => Some(path.as_str()),
            ProxyError::MissingField(field) | ProxyError::FieldType { field, .. } => Some(field),
            ProxyError::WrongApi { .. } | ProxyError::AliasInForm => Some("model"),
            ProxyError::MixedBatch { .. } => Some("requests"),
            ProxyError::InvalidJson(_) | ProxyError::InvalidShape(_) | ProxyError::MalformedForm(_) => None,
            ProxyError::PathNotForwarded { .. }
            | ProxyError::UnsupportedEncoding(_)
            | ProxyError::UnsupportedMediaType(_)
            | ProxyError::BodyTimeout(_)
            | ProxyError::Unauthorized(_)
            | ProxyError::Forbidden(_)
            | ProxyError::UnknownEndpoint { .. }
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::ModelNotFound(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::BadTarget(_)
            | ProxyError::ClientBody(_)
            | ProxyError::BudgetExhausted(_)
            | ProxyError::SchemaInvalid(_)
            | ProxyError::InjectionDetected(_)
            | ProxyError::UnpricedModel(_)
            | ProxyError::RateLimited(_)
            | ProxyError::CircuitOpen { .. }
            | ProxyError::SessionLimit(_)
            | ProxyError::Upstream { .. } => None,
        }
    }

    /// What the log line records beyond [`ProxyError::kind`]: the internal cause that the
    /// client is not told (an upstream's address, an OS error).
    pub fn detail(&self) -> Option<String> {
        match self {
            ProxyError::Upstream { detail, .. } => Some(detail.clone()).filter(|d| !d.is_empty()),
            ProxyError::Unauthorized(_)
            | ProxyError::Forbidden(_)
            | ProxyError::UnknownEndpoint { .. }
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::ModelNotFound(_)
            | ProxyError::PathNotForwarded { .. }
            | ProxyError::DuplicateKey { .. }
            | ProxyError::InvalidJson(_)
            | ProxyError::MissingField(_)
            | ProxyError::FieldType { .. }
            | ProxyError::UnsupportedEncoding(_)
            | ProxyError::UnsupportedMediaType(_)
            | ProxyError::BodyTimeout(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::WrongApi { .. }
            | ProxyError::AliasInForm
            | ProxyError::MalformedForm(_)
            | ProxyError::InvalidShape(_)
            | ProxyError::MixedBatch { .. }
            | ProxyError::BadTarget(_)
            | ProxyError::ClientBody(_)
            | ProxyError::BudgetExhausted(_)
            | ProxyError::SchemaInvalid(_)
            | ProxyError::InjectionDetected(_)
            | ProxyError::UnpricedModel(_)
            | ProxyError::RateLimited(_)
            | ProxyError::CircuitOpen { .. }
            | ProxyError::SessionLimit(_)
            | ProxyError::PolicyViolation(_) => None,
        }
    }

    /// Renders the error in the caller's API format. This is the only place an error
    /// becomes an HTTP response.
    pub fn into_response(self, family: ApiFamily) -> Response<Body> {
        let (status, headers, body) = self.render_parts(family);
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }

    /// The status, headers and body of the error response, without giving the error up (a
    /// single flight's leader hands the same response to its waiters and keeps the error for
    /// its own log line).
    pub fn render_parts(&self, family: ApiFamily) -> (StatusCode, http::HeaderMap, Bytes) {
        let status = self.status();
        let body = family.dialect().error_body(self.class(), self.code(), self.param(), &self.to_string());
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let ProxyError::RateLimited(r) = self {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(r.retry_after_secs.max(1)));
        }
        if let ProxyError::CircuitOpen { retry_after_secs, .. } = self {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from((*retry_after_secs).max(1)));
        }
        if let ProxyError::SessionLimit(_) | ProxyError::SchemaInvalid(_) = self {
            // A session's cap does not lift by waiting, and warden has already asked the
            // model again as often as the policy allows: the SDKs must not retry either.
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let ProxyError::BudgetExhausted(r) = self {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(r.resets_in_secs.max(1)));
            // The official SDKs retry 429s; a budget does not refill within their retries.
            if r.resets_in_secs > 60 {
                h.insert("x-should-retry", HeaderValue::from_static("false"));
            }
        }
        (status, h, body)
    }
}

/// A JSON response (an error body, or a body warden answers itself) with the given status.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_too_large_maps_to_413() {
        let e = ProxyError::BodyTooLarge { limit: 10 };
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.kind(), "body_too_large");
    }

    #[test]
    fn timeouts_map_to_504_and_connect_failures_to_502() {
        let up = |failure| ProxyError::Upstream { provider: "p".into(), failure, detail: String::new() };
        assert_eq!(up(UpstreamFailure::FirstByteTimeout).status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(up(UpstreamFailure::ConnectTimeout).status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(up(UpstreamFailure::Connect).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(up(UpstreamFailure::Tls).kind(), "upstream_tls");
    }

    #[test]
    fn only_failures_that_never_reached_the_provider_are_retryable() {
        assert!(UpstreamFailure::Connect.retryable() && UpstreamFailure::Tls.retryable());
        assert!(UpstreamFailure::ClosedBeforeSend.retryable());
        assert!(!UpstreamFailure::ResetBeforeHead.retryable() && !UpstreamFailure::FirstByteTimeout.retryable());
    }
}
