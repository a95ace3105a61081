//! Errors in each API's native format with the right status, upstream errors passed through
//! unchanged, and every bad-input case: oversized bodies and headers, malformed JSON, wrong
//! types, unsafe targets, slow clients, unreachable and slow upstreams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn missing_and_unknown_keys_get_401_in_each_format() {
    let (_mock, proxy) = setup().await;
    let r = post(&proxy.url("/v1/chat/completions"), &[], CHAT).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": {
            "message": "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
    );
    let r = post(&proxy.url("/v1/messages"), &[("x-api-key", "sk-nope")], MESSAGES).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.text(),
        r#"{"type":"error","error":{"type":"authentication_error","message":"invalid API key: warden does not know this key"}}"#
    );
    assert!(r.headers.contains_key("x-warden-request-id"));
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let (_mock, proxy) = setup().await;
    let body = r#"{"model":"gpt-4o","messages":[]}"#;
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER, ("x-mock", "status=429,retry-after=2")], body).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "2");
    assert_eq!(
        r.text(),
        r#"{"error":{"message":"mock provider: simulated 429 error","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#
    );
    let body = r#"{"model":"claude-test","max_tokens":5,"messages":[]}"#;
    let r = post(&proxy.url("/v1/messages"), &[XKEY, ("x-mock", "status=529")], body).await;
    assert_eq!(r.status.as_u16(), 529);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn body_over_limit_is_413_with_or_without_content_length() {
    let (mock, proxy) = setup().await;
    let big = format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(5000));
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["message"], "request body is larger than the limit of 4096 bytes");
    let r = post(&proxy.url("/v1/messages"), &[XKEY], &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["type"], "request_too_large");

    // Chunked upload without content-length, over the limit.
    let mut s = TcpStream::connect(proxy.api).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-warden-demo\r\ntransfer-encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..3 {
        s.write_all(format!("800\r\n{}\r\n", "a".repeat(0x800)).as_bytes()).await.unwrap();
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert_eq!(mock.stats.requests.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400_naming_the_problem() {
    let (_mock, proxy) = setup().await;
    let url = proxy.url("/v1/chat/completions");
    let r = post(&url, &[BEARER], r#"{"model":"mock-1","messages":["#).await;
    assert_eq!(r.status, 400);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.starts_with("the request body is not valid JSON: EOF while parsing"), "{msg}");
    let r = post(&url, &[BEARER], r#"{"model":42,"messages":[]}"#).await;
    assert_eq!(r.json()["error"]["message"], "`model` must be a string, got a number");
    let r = post(&url, &[BEARER], r#"{"model":"mock-1","messages":"hi"}"#).await;
    assert_eq!(r.json()["error"]["message"], "`messages` must be an array, got a string");
    let r = post(&url, &[BEARER], r#"{"model":"mock-1","messages":[],"stream":1}"#).await;
    assert_eq!(r.json()["error"]["message"], "`stream` must be a boolean, got a number");
    let r = post(&proxy.url("/v1/messages"), &[XKEY], r#"{"messages":[]}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.json()["error"]["message"], "`model` is required");
}

#[tokio::test]
async fn unknown_models_paths_and_methods() {
    let (_mock, proxy) = setup().await;
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], r#"{"model":"llama-9","messages":[]}"#).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    let r = get(&proxy.url("/v2/whatever"), &[BEARER]).await;
    assert_eq!(r.status, 404);
    let r = get(&proxy.url("/v1/chat/completions"), &[BEARER]).await;
    assert_eq!(r.status, 405);
    // An Anthropic-kind model called through the OpenAI API.
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], r#"{"model":"claude-test","messages":[]}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "model `claude-test` is served by provider `ant`, which does not speak the openai API"
    );
}

async fn raw(proxy: &TestProxy, request: &str) -> String {
    let mut s = TcpStream::connect(proxy.api).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn absolute_form_and_dot_segment_targets_are_rejected() {
    let (mock, proxy) = setup().await;
    let body = r#"{"model":"gpt-4o","messages":[]}"#;
    for target in [
        "http://169.254.169.254/v1/chat/completions",
        "/v1/../admin/chat/completions",
        "/v1/%2e%2e/x",
        "/v1//chat/completions",
    ] {
        let req = format!(
            "POST {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-warden-demo\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let resp = raw(&proxy, &req).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
        assert!(resp.contains("invalid request target"), "{target}: {resp}");
    }
    assert_eq!(mock.stats.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let (mock, proxy) = setup().await;
    let req =
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-warden-demo\r\nx-big: {}\r\ncontent-length: 32\r\nconnection: close\r\n\r\n{{\"model\":\"gpt-4o\",\"messages\":[]}}", "a".repeat(100 * 1024));
    let resp = raw(&proxy, &req).await;
    // warden answers 431 and closes; the kernel may reset the connection before the client
    // reads that answer (the rest of the oversized request is still unread), so an empty
    // read is possible. What must hold either way: nothing reached the upstream.
    assert!(resp.starts_with("HTTP/1.1 431") || resp.is_empty(), "{resp}");
    assert_eq!(mock.stats.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The server is still healthy afterwards.
    assert_eq!(get(&proxy.url("/v1/models"), &[BEARER]).await.status, 200);
}

#[tokio::test]
async fn slow_headers_are_cut_off_by_the_timeout() {
    let (_mock, proxy) = setup().await;
    for partial in ["", "GET /v1/mo", "GET /v1/models HTTP/1.1\r\nhost: x\r\n"] {
        let mut s = TcpStream::connect(proxy.api).await.unwrap();
        s.write_all(partial.as_bytes()).await.unwrap();
        let start = Instant::now();
        let mut out = Vec::new();
        // The test config's header_read_timeout is 500ms; the connection must close soon after.
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(r.is_ok(), "connection left open for {partial:?}");
        assert!(start.elapsed() >= Duration::from_millis(400), "{partial:?} closed too early");
    }
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    let (_mock, proxy) = setup().await;
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], r#"{"model":"down-1","messages":[]}"#).await;
    assert_eq!(r.status, 502);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.starts_with("upstream provider `down` could not be reached"), "{msg}");
    assert!(!msg.contains(UPSTREAM_SECRET));

    // first_byte timeout for `oai` is 1s in the test config.
    let r = post(
        &proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "delay=3s")],
        r#"{"model":"gpt-4o","messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["message"], "upstream provider `oai` timed out (waiting for response headers)");
}

#[tokio::test]
async fn a_stalled_stream_is_aborted_after_between_chunks_timeout() {
    let (_mock, proxy) = setup().await;
    // between_chunks for `oai` is 500ms; the mock waits 2s between events.
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    let mut resp = open_stream(&proxy.url("/v1/chat/completions"), &[BEARER, ("x-mock", "chunk-delay=2s")], body).await;
    assert_eq!(resp.status(), 200);
    let start = Instant::now();
    let frames = read_frames(resp.body_mut()).await.unwrap();
    let text: String = frames.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();
    // The stream ends with the API's own error event, never with `[DONE]`.
    let last = sse_data(&text).pop().unwrap();
    let err: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(err["error"]["type"], "timeout", "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn secrets_never_appear_in_errors_or_metrics() {
    let (_mock, proxy) = setup().await;
    let r =
        post(&proxy.url("/v1/chat/completions"), &[("authorization", "Bearer sk-very-secret-client-key")], CHAT).await;
    assert_eq!(r.status, 401);
    let r2 = post(&proxy.url("/v1/chat/completions"), &[BEARER], r#"{"model":"down-1","messages":[]}"#).await;
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
    for text in [r.text(), r2.text(), metrics] {
        for secret in ["sk-very-secret-client-key", "sk-warden-demo", UPSTREAM_SECRET] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }
}

#[tokio::test]
async fn garbage_bodies_get_4xx_and_never_hurt_the_server() {
    let (_mock, proxy) = setup().await;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"null".to_vec(),
        b"\"just a string\"".to_vec(),
        format!("{}{}", "[".repeat(3000), "]".repeat(3000)).into_bytes(),
        br#"{"model":"mock-1","messages":[],"max_tokens":1e999999}"#.to_vec(),
        b"{\"model\":\"mock-\xff\xfe\",\"messages\":[]}".to_vec(),
        br#"{"model":"mock-1","model":"gpt-4o","messages":[]}"#.to_vec(),
        br#"{"model":"\ud800","messages":[]}"#.to_vec(),
    ];
    for _ in 0..40 {
        let len = (seed % 300) as usize;
        let mut b = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b.push((seed & 0xff) as u8);
        }
        bodies.push(b);
    }
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/responses", "/v1/batches"] {
        for body in &bodies {
            let r = send(http::Method::POST, &proxy.url(path), &[BEARER], body.clone()).await;
            assert!(r.status.is_client_error() || r.status.is_success(), "{path}: {} for {body:?}", r.status);
            if r.status.is_client_error() {
                // Always a well-formed native error body.
                let v = r.json();
                assert!(v["error"]["message"].is_string(), "{path}: {}", r.text());
            }
        }
    }
    assert_eq!(get(&proxy.url("/v1/models"), &[BEARER]).await.status, 200);
}

#[tokio::test]
async fn field_errors_name_the_field_in_param() {
    let (_mock, proxy) = setup().await;
    let cases = [
        (r#"{"model":"mock-1","messages":[],"stream":"yes"}"#, "stream", "`stream` must be a boolean, got a string"),
        (r#"{"model":"mock-1"}"#, "messages", "`messages` is required"),
        (r#"{"model":7,"messages":[]}"#, "model", "`model` must be a string, got a number"),
    ];
    for (body, param, message) in cases {
        let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["error"]["param"], param, "{}", r.text());
        assert_eq!(r.json()["error"]["message"], message, "{}", r.text());
    }
}
