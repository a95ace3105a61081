//! Upstream stage: builds the upstream request from the config's base URL and the client's
//! path, swaps the credential, and waits for the response headers within the provider's
//! first-byte timeout. The in-process mock is called directly, without a socket.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};

pub use super::auth::Credential;
use crate::config::Provider;
use crate::error::{ProxyError, UpstreamFailure};
use crate::http::body::{Body, BodyError};
use crate::http::headers::sanitize_request;
use crate::provider::{apply_credential, ApiFamily};
use crate::state::{Transports, Upstream};

/// The request as it goes upstream: owned, and cheap to send again (the body is shared
/// bytes; the headers are cleaned once, here).
pub struct Outgoing {
    pub method: Method,
    /// The normalised path (a named endpoint's canonical one), never the client's raw bytes.
    pub path: Cow<'static, str>,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Outgoing {
    /// Cleans the client's headers for the upstream: hop-by-hop and warden's own headers
    /// removed, no compression (response-side stages read the body), the API's required
    /// headers filled in.
    pub fn new(
        method: Method,
        path: Cow<'static, str>,
        query: Option<&str>,
        mut headers: HeaderMap,
        body: Bytes,
        family: ApiFamily,
    ) -> Outgoing {
        sanitize_request(&mut headers);
        headers.remove(http::header::ACCEPT_ENCODING);
        family.dialect().fill_required_headers(&mut headers);
        Outgoing { method, path, query: query.map(str::to_string), headers, body }
    }
}

/// Sends the request and returns the upstream's response (any status: upstream errors pass
/// through unchanged) and the time spent waiting for its headers.
pub async fn send(
    transports: &Transports,
    provider: &Provider,
    credential: &Credential,
    out: &Outgoing,
) -> Result<(Response<Body>, Duration), ProxyError> {
    let started = Instant::now();
    let timeout = provider.timeouts.first_byte;
    let failed = |failure, detail: String| ProxyError::Upstream { provider: provider.name.clone(), failure, detail };
    let timed_out = || failed(UpstreamFailure::FirstByteTimeout, String::new());
    let Some(upstream) = transports.get(&provider.transport_key, &provider.transport) else {
        return Err(failed(UpstreamFailure::Connect, "no connection pool for this transport".into()));
    };
    let base = || provider.transport.base().ok_or(ProxyError::BadTarget("the mock provider has no base URL"));
    let query = out.query.as_deref();
    match upstream.as_ref() {
        Upstream::Mock(mock) => {
            let fut = mock.respond(&out.method, &out.path, &out.headers, out.body.clone());
            let resp = tokio::time::timeout(timeout, fut).await.map_err(|_| timed_out())?;
            Ok((resp, started.elapsed()))
        }
        Upstream::Http(client) => {
            let base = base()?;
            let target = upstream_uri(base, &out.path, query, provider.base_includes_version)?;
            let req = build_request(provider, credential, out, target);
            let resp =
                tokio::time::timeout(timeout, client.request(req)).await.map_err(|_| timed_out())?.map_err(|e| {
                    let failure = match UpstreamFailure::from_error(&e) {
                        UpstreamFailure::ResetBeforeHead if e.is_connect() => UpstreamFailure::Connect,
                        f => f,
                    };
                    failed(failure, error_chain(&e))
                })?;
            Ok((resp.map(|b| b.map_err(BodyError::new).boxed_unsync()), started.elapsed()))
        }
        Upstream::H1(pool) => {
            let base = base()?;
            // A raw connection sends the target as given: origin-form, never absolute-form.
            let full = upstream_uri(base, &out.path, query, provider.base_includes_version)?;
            let target: Uri = full
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .parse()
                .map_err(|_| ProxyError::BadTarget("the path cannot be forwarded"))?;
            let req = build_request(provider, credential, out, target);
            let resp = tokio::time::timeout(timeout, pool.send(req))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| failed(e.failure(), error_chain(&e)))?;
            Ok((resp.map(BodyExt::boxed_unsync), started.elapsed()))
        }
    }
}

fn build_request(provider: &Provider, credential: &Credential, out: &Outgoing, target: Uri) -> Request<Full<Bytes>> {
    let mut headers = out.headers.clone();
    match credential {
        Credential::Provider => {
            if let Some(s) = &provider.key {
                apply_credential(&mut headers, s, provider.auth);
            }
        }
        Credential::Client(s) => apply_credential(&mut headers, s, provider.auth),
        Credential::None => {}
    }
    let mut req = Request::new(Full::new(out.body.clone()));
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = target;
    *req.headers_mut() = headers;
    req
}

/// base `https://api.openai.com/v1` + `/v1/chat/completions?x=1` →
/// `https://api.openai.com/v1/chat/completions?x=1`. The host is always the base's.
fn upstream_uri(base: &Uri, path: &str, query: Option<&str>, base_includes_version: bool) -> Result<Uri, ProxyError> {
    let suffix = match (base_includes_version, path.strip_prefix("/v1")) {
        (true, Some(rest)) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    };
    let mut pq = String::with_capacity(base.path().len() + path.len() + 32);
    pq.push_str(base.path().trim_end_matches('/'));
    pq.push_str(suffix);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| ProxyError::BadTarget("the path cannot be forwarded"))?);
    Uri::from_parts(parts).map_err(|_| ProxyError::BadTarget("the path cannot be forwarded"))
}

/// The error and its causes, for connect failures ("connection refused" sits two levels deep).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_base_and_client_path_per_convention() {
        let openai: Uri = "https://api.openai.com/v1".parse().unwrap();
        let c = "/v1/chat/completions";
        assert_eq!(
            upstream_uri(&openai, c, Some("a=1"), true).unwrap().to_string(),
            "https://api.openai.com/v1/chat/completions?a=1"
        );
        let anthropic: Uri = "https://api.anthropic.com".parse().unwrap();
        assert_eq!(
            upstream_uri(&anthropic, "/v1/messages", None, false).unwrap().to_string(),
            "https://api.anthropic.com/v1/messages"
        );
        let azure: Uri = "https://x.openai.azure.com/openai/v1".parse().unwrap();
        assert_eq!(
            upstream_uri(&azure, c, Some("a=1"), true).unwrap().to_string(),
            "https://x.openai.azure.com/openai/v1/chat/completions?a=1"
        );
    }
}
