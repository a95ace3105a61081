//! TLS on the API listener: rustls with ALPN, HTTP/2 and HTTP/1.1 both served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::Method;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

fn tls_client(
    http2: bool,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only();
    let connector = if http2 { builder.enable_http2().build() } else { builder.enable_http1().build() };
    let mut b = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    b.http2_only(http2);
    b.build(connector)
}

#[tokio::test]
async fn tls_listener_serves_h2_and_http1_by_alpn() {
    let mock = TestMock::start().await;
    let yaml = standard_config(mock.addr).replace(
        r#"server: { listen: "127.0.0.1:0" }"#,
        r#"server: { listen: "127.0.0.1:0", tls: { cert: tests/fixtures/server.pem, key: tests/fixtures/server.key } }"#,
    );
    let proxy = TestProxy::start(&yaml).await;
    let url = format!("https://localhost:{}/v1/chat/completions", proxy.api.port());
    for (http2, version) in [(true, http::Version::HTTP_2), (false, http::Version::HTTP_11)] {
        let resp = tls_client(http2).request(request(Method::POST, &url, &[BEARER], CHAT)).await.unwrap();
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("chat.completion"));
    }
}

#[tokio::test]
async fn admin_listener_serves_tls_too() {
    let mock = TestMock::start().await;
    let yaml = standard_config(mock.addr).replace(
        r#"admin: { listen: "127.0.0.1:0" }"#,
        r#"admin: { listen: "127.0.0.1:0", tls: { cert: tests/fixtures/server.pem, key: tests/fixtures/server.key } }"#,
    );
    let proxy = TestProxy::start(&yaml).await;
    let url = format!("https://localhost:{}/healthz", proxy.admin.port());
    let resp = tls_client(false).request(request(Method::GET, &url, &[], Bytes::new())).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP to a TLS listener gets nothing useful.
    let plain = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client().request(request(Method::GET, &proxy.admin_url("/healthz"), &[], Bytes::new())),
    )
    .await
    .unwrap();
    // The TLS listener answers a plain request with a TLS alert, which no HTTP client reads
    // as a response.
    assert!(plain.is_err(), "plain HTTP got a response from the TLS listener: {plain:?}");
}

/// An https upstream whose certificate warden's roots do not trust: a typed TLS failure,
/// and a 502 that says so without naming the address.
#[tokio::test]
async fn an_untrusted_upstream_certificate_is_a_tls_failure() {
    let upstream = TestProxy::start(&standard_config("127.0.0.1:9".parse().unwrap()).replace(
        r#"server: { listen: "127.0.0.1:0" }"#,
        r#"server: { listen: "127.0.0.1:0", tls: { cert: tests/fixtures/server.pem, key: tests/fixtures/server.key } }"#,
    ))
    .await;
    let yaml = standard_config("127.0.0.1:9".parse().unwrap()).replace(
        "base_url: http://127.0.0.1:9/v1\n    api_key: ${UPSTREAM_KEY}\n    models: [gpt-4o]",
        &format!("base_url: https://{}/v1\n    api_key: ${{UPSTREAM_KEY}}\n    models: [gpt-4o]", upstream.api),
    );
    let proxy = TestProxy::start(&yaml).await;
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], r#"{"model":"gpt-4o","messages":[]}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "upstream provider `oai` could not be reached (the TLS handshake failed)");
}
