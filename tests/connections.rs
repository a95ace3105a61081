//! Connections that must not stay open forever, and the admin listener's contract: a body
//! that stops arriving gets 408, idle HTTP/1.1 and HTTP/2 connections are closed, probes
//! answer without the admin token and keep answering (503) while the API drains, and
//! connections past `limits.max_connections` are closed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, reason = "the test drives an HTTP/2 client connection on its own task")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn quick_limits(mock: std::net::SocketAddr) -> String {
    standard_config(mock).replace(
        "limits: { max_body_bytes: 4096, header_read_timeout: 500ms, drain_timeout: 5s }",
        "limits: { max_body_bytes: 4096, header_read_timeout: 500ms, body_read_timeout: 300ms, idle_timeout: 300ms, drain_timeout: 5s }",
    )
}

/// Reads until the peer closes, or gives up after `limit`.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_in_the_callers_format() {
    let mock = TestMock::start().await;
    let proxy = TestProxy::start(&quick_limits(mock.addr)).await;
    let mut s = TcpStream::connect(proxy.api).await.unwrap();
    let head = "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: sk-warden-demo\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{";
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let resp = read_to_close(&mut s, Duration::from_secs(5)).await.expect("the connection stayed open");
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains(r#"{"type":"error","error":{"type":"timeout_error""#), "{resp}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(mock.stats.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_idle_http1_connection_is_closed() {
    let mock = TestMock::start().await;
    let proxy = TestProxy::start(&quick_limits(mock.addr)).await;
    let mut s = TcpStream::connect(proxy.api).await.unwrap();
    s.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-warden-demo\r\n\r\n").await.unwrap();
    let resp = read_to_close(&mut s, Duration::from_secs(5)).await.expect("an idle keep-alive connection stayed open");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_and_the_open_ones_keep_working() {
    let mock = TestMock::start().await;
    let config = standard_config(mock.addr).replace(
        "limits: { max_body_bytes: 4096, header_read_timeout: 500ms, drain_timeout: 5s }",
        "limits: { max_body_bytes: 4096, header_read_timeout: 5s, drain_timeout: 5s, max_connections: 2 }",
    );
    let proxy = TestProxy::start(&config).await;
    let request = b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-warden-demo\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.api).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        open.push(s);
    }
    // A third is closed without an answer: its memory is never spent.
    let mut third = TcpStream::connect(proxy.api).await.unwrap();
    let _ = third.write_all(request).await;
    let got = read_to_close(&mut third, Duration::from_secs(5)).await.expect("the third connection stayed open");
    assert!(got.is_empty(), "{got}");
    // The two open ones still serve.
    let s = &mut open[0];
    s.write_all(request).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Once one closes, a new connection is served again.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fresh = TcpStream::connect(proxy.api).await.unwrap();
    fresh.write_all(request).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), fresh.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_one_request() {
    let mock = TestMock::start().await;
    let proxy = TestProxy::start(&quick_limits(mock.addr)).await;
    let stream = TcpStream::connect(proxy.api).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, http_body_util::Full<bytes::Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    // Even a refused request counts: the connection must not outlive it by much.
    let req = request(http::Method::POST, &proxy.url("/v1/chat/completions"), &[], CHAT);
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 401);
    drop(resp);
    let closed = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection stayed open");
}

#[tokio::test]
async fn probes_need_no_token_and_report_the_drain() {
    let mock = TestMock::start().await;
    let yaml = standard_config(mock.addr)
        .replace(r#"admin: { listen: "127.0.0.1:0" }"#, r#"admin: { listen: "127.0.0.1:0", token: "${ADMIN_TOKEN}" }"#);
    let mut proxy = TestProxy::start(&yaml).await;
    assert_eq!(get(&proxy.admin_url("/healthz"), &[]).await.status, 200);
    assert_eq!(get(&proxy.admin_url("/readyz"), &[]).await.status, 200);
    assert_eq!(get(&proxy.admin_url("/metrics"), &[]).await.status, 401);
    assert_eq!(get(&proxy.admin_url("/metrics"), &[("authorization", "bearer admin-secret")]).await.status, 200);

    // A stream in flight keeps the API draining; the admin listener answers meanwhile.
    let mut stream = open_stream(
        &proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "tokens=10,chunks=10,chunk-delay=100ms")],
        CHAT_STREAM,
    )
    .await;
    let running = proxy.running.take().unwrap();
    running.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = get(&proxy.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.text(), "draining\n");
    assert_eq!(get(&proxy.admin_url("/healthz"), &[]).await.status, 200);
    let frames = read_frames(stream.body_mut()).await.unwrap();
    assert!(String::from_utf8_lossy(&frames.last().unwrap().1).ends_with("data: [DONE]\n\n"));
    tokio::time::timeout(Duration::from_secs(5), running.wait()).await.expect("the drain did not finish");
}
