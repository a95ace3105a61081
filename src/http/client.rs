//! The pooled client for https (and h2c) upstreams: hyper-util's legacy client with rustls
//! (ring) and webpki roots, HTTP/2 or HTTP/1.1 by ALPN. Built by the config layer once per
//! provider transport; plain-http HTTP/1.1 upstreams use [`super::h1pool`] instead.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTP/1.1 + HTTP/2 (by ALPN) client with rustls (ring) and webpki roots; plain
/// http is allowed for local providers (vLLM, Ollama, the mock server). `http2_only` makes
/// plain-http connections h2c by prior knowledge.
pub fn build_client(connect_timeout: Duration, http2_only: bool) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_webpki_roots(rustls::crypto::ring::default_provider()) {
        Ok(b) => b,
        // ring supports rustls' safe default protocol versions, so this cannot fail; fall
        // back to the process default provider rather than panic.
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
    };
    let connector = builder.https_or_http().enable_all_versions().wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .http2_only(http2_only)
        .build(connector)
}
