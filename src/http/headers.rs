//! Header hygiene: hop-by-hop stripping in both directions, credentials that must never
//! reach an upstream, and the `x-warden-*` response headers.

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the ones
/// hyper recomputes from the body it actually sends.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-warden-request-id");
pub const OVERHEAD_MS: HeaderName = HeaderName::from_static("x-warden-overhead-ms");
pub const POLICY: HeaderName = HeaderName::from_static("x-warden-policy");
pub const WOULD_BLOCK: HeaderName = HeaderName::from_static("x-warden-would-block");
pub const POLICY_VERSION: HeaderName = HeaderName::from_static("x-warden-policy-version");
/// `provider/model` of the upstream that answered (a fallback's, when one did).
/// `hit`, `miss` or `bypass`, when a cache policy applies.
pub const CACHE: HeaderName = HeaderName::from_static("x-warden-cache");
/// `family=score`: the injection scan's top detection.
pub const INJECTION: HeaderName = HeaderName::from_static("x-warden-injection");
/// `valid` or `invalid`: what the output schema check found.
pub const SCHEMA: HeaderName = HeaderName::from_static("x-warden-schema");
/// Upstream calls the answer took, when schema retries made more than one.
pub const SCHEMA_ATTEMPTS: HeaderName = HeaderName::from_static("x-warden-schema-attempts");
pub const UPSTREAM: HeaderName = HeaderName::from_static("x-warden-upstream");
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub const API_KEY: HeaderName = HeaderName::from_static("api-key");

/// The token of an `Authorization: Bearer <token>` header; the scheme's case is ignored
/// (RFC 9110 §11.1). `None` when absent or empty; a header with another scheme yields
/// the whole value, as some SDKs send bare keys.
pub fn authorization_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let token = match v.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        None if v.eq_ignore_ascii_case("bearer") => "",
        _ => v,
    };
    Some(token).filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Headers that some server frameworks honour to change the method or the path they route
/// on (Express method-override, Symfony and IIS URL rewrites). warden decides on the method
/// and path it sees, so the upstream must not be told another one.
const ROUTING_OVERRIDES: [&str; 5] =
    ["x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url"];

/// Prepares the client's headers for the upstream: hop-by-hop headers, the client's
/// credentials, the host, the length (hyper sets it from the body sent), method and path
/// overrides, and warden's own headers never leave warden.
pub fn sanitize_request(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in [header::HOST, header::CONTENT_LENGTH, header::AUTHORIZATION, X_API_KEY, API_KEY, header::COOKIE] {
        headers.remove(name);
    }
    for name in ROUTING_OVERRIDES {
        headers.remove(name);
    }
    let internal: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("x-warden-")).cloned().collect();
    for name in internal {
        headers.remove(name);
    }
}

/// Prepares the upstream's response headers for the client.
pub fn sanitize_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::CONTENT_LENGTH);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_connection_named_and_standard_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-custom, keep-alive"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn request_sanitizing_drops_client_credentials() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk-client"));
        h.insert(X_API_KEY, HeaderValue::from_static("sk-client"));
        h.insert("x-warden-debug", HeaderValue::from_static("1"));
        h.insert("x-http-method-override", HeaderValue::from_static("DELETE"));
        h.insert("x-original-url", HeaderValue::from_static("/v1/chat/completions"));
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        sanitize_request(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("anthropic-version"));
    }
}
