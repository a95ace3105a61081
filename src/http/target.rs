//! Request-target hygiene: the one place that decides which path a request names. Upstreams
//! decode percent-encoding, ignore letter case (some do), strip `;params` (some do) and
//! collapse dot segments, so warden must classify and forward exactly the path an upstream
//! will route on, or refuse the request.
//!
//! - Absolute-form and asterisk-form targets are refused (warden is not a forward proxy).
//! - Percent-encoded *unreserved* characters (`A-Z a-z 0-9 - . _ ~`) are decoded, as
//!   RFC 3986 §6.2.2 says they are equivalent, and the decoded path is what is classified and
//!   forwarded. Any other percent-encoding, `;`, `\`, dot segments and empty segments are
//!   refused: none appears in a real provider API path, and each means something different
//!   to different servers.

use http::{Uri, Version};

use crate::error::ProxyError;

/// Checks the request target and returns its path in normal form (query not included).
pub fn normalize(uri: &Uri, version: Version) -> Result<String, ProxyError> {
    // HTTP/2 always carries scheme and authority; for HTTP/1 they mean absolute-form, i.e.
    // a client asking warden to act as a forward proxy.
    if version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(ProxyError::BadTarget("absolute-form targets are not accepted; send the path only"));
    }
    let raw = uri.path();
    if !raw.starts_with('/') {
        return Err(ProxyError::BadTarget("the target must be an absolute path"));
    }
    let path = decode_unreserved(raw)?;
    if path.contains('\\') || path.contains(';') {
        return Err(ProxyError::BadTarget("`\\` and `;` are not accepted in paths"));
    }
    if path[1..].split('/').any(|seg| seg == ".." || seg == "." || (seg.is_empty() && path.len() > 1)) {
        return Err(ProxyError::BadTarget("dot segments and empty segments are not accepted in paths"));
    }
    Ok(path)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` of unreserved characters; refuses every other percent-encoding.
fn decode_unreserved(path: &str) -> Result<String, ProxyError> {
    if !path.contains('%') {
        return Ok(path.to_string());
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let decoded =
            match (bytes.get(i + 1).copied().and_then(hex_value), bytes.get(i + 2).copied().and_then(hex_value)) {
                (Some(h), Some(l)) => (h << 4) | l,
                _ => return Err(ProxyError::BadTarget("a `%` in the path is not followed by two hex digits")),
            };
        if !is_unreserved(decoded) {
            return Err(ProxyError::BadTarget(
                "percent-encoded characters other than letters, digits and `-._~` are not accepted in paths",
            ));
        }
        out.push(char::from(decoded));
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(t: &str) -> Result<String, String> {
        let uri: Uri = t.parse().map_err(|e| format!("{e}"))?;
        normalize(&uri, Version::HTTP_11).map_err(|e| e.to_string())
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        assert_eq!(norm("/v1/chat/c%6fmpletions").as_deref(), Ok("/v1/chat/completions"));
        assert_eq!(norm("/v1/%63hat/completions?x=%2F").as_deref(), Ok("/v1/chat/completions"));
        assert_eq!(norm("/v1/files/file-%41b_c").as_deref(), Ok("/v1/files/file-Ab_c"));
    }

    #[test]
    fn unsafe_targets_are_rejected() {
        let bad = [
            "/v1/../admin",
            "/v1/%2e%2e/x",
            "/v1/%2E/x",
            "/v1//chat",
            "/v1/./x",
            "/v1/a%2Fb",
            "/v1/a%5cb",
            "/v1/chat/completions%00",
            "/v1/chat/completions%20",
            "/v1/chat/completions;x=1",
            "/v1/chat/completions/",
            "/v1/%zz",
            "/v1/x%4",
        ];
        for t in bad {
            assert!(norm(t).is_err(), "{t}");
        }
        let abs: Uri = "http://evil.example/v1/chat/completions".parse().unwrap();
        assert!(normalize(&abs, Version::HTTP_11).is_err());
        assert_eq!(norm("/v1/chat/completions?x=1").as_deref(), Ok("/v1/chat/completions"));
    }

    proptest::proptest! {
        /// Percent-encoding any unreserved character of a named endpoint's path, in either
        /// hex case, never changes what the path is classified as.
        #[test]
        fn encoding_unreserved_characters_never_changes_classification(
            endpoint in 0usize..9,
            mask in proptest::collection::vec(proptest::bool::ANY, 32),
            upper in proptest::bool::ANY,
        ) {
            use crate::provider::Endpoint;
            let named = [
                "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/models",
                "/v1/messages", "/v1/messages/count_tokens", "/v1/messages/batches", "/v1/batches",
            ];
            let path = named[endpoint];
            let mut encoded = String::new();
            for (i, c) in path.chars().enumerate() {
                if c != '/' && mask[i % mask.len()] {
                    if upper { encoded.push_str(&format!("%{:02X}", c as u32)) } else { encoded.push_str(&format!("%{:02x}", c as u32)) }
                } else {
                    encoded.push(c);
                }
            }
            let uri: Uri = encoded.parse().map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}")))?;
            let normal = normalize(&uri, Version::HTTP_11).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(Endpoint::classify(&normal), Endpoint::classify(path));
            proptest::prop_assert_eq!(normal.as_str(), path);
        }
    }
}
