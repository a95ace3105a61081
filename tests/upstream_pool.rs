//! Plain-http upstream connections: kept alive and reused across requests, and a connection
//! the upstream closed while idle is replaced without failing the next request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const REPLY: &str = r#"{"id":"x","object":"chat.completion","choices":[]}"#;

/// A bare HTTP/1.1 upstream that counts connections. With `idle_close`, it closes each
/// connection that stays idle that long after a response, as servers with keep-alive
/// timeouts do.
async fn raw_upstream(idle_close: Option<Duration>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request: headers, then content-length bytes of body.
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let read = match idle_close {
                            Some(t) => match tokio::time::timeout(t, s.read(&mut chunk)).await {
                                Ok(r) => r,
                                Err(_) => return, // idle too long: close
                            },
                            None => s.read(&mut chunk).await,
                        };
                        match read {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + len {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    buf.drain(..head_end + len);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{REPLY}",
                        REPLY.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let (upstream, conns) = raw_upstream(None).await;
    let proxy = TestProxy::start(&standard_config(upstream)).await;
    for _ in 0..5 {
        let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], r#"{"model":"gpt-4o","messages":[]}"#).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), REPLY);
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "sequential requests should share one upstream connection");
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_replaced_transparently() {
    let (upstream, conns) = raw_upstream(Some(Duration::from_millis(100))).await;
    let proxy = TestProxy::start(&standard_config(upstream)).await;
    for round in 0..3 {
        let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], r#"{"model":"gpt-4o","messages":[]}"#).await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        // Let the upstream's idle timeout close the pooled connection.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_reload_keeps_warm_connections_of_unchanged_providers() {
    let (upstream, conns) = raw_upstream(None).await;
    let config = format!(
        "server: {{ listen: \"127.0.0.1:0\" }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\nproviders:\n  - {{ name: own, kind: openai, base_url: \"http://{upstream}/v1\", passthrough: true }}\nroutes:\n  - {{ model: \"gpt-*\", provider: own }}\n"
    );
    let cd = ConfigDir::new(&config, &[("p.yaml", "policies:\n  - name: one\n")]);
    let proxy = TestProxy::start_from(&cd).await;
    let url = proxy.url("/v1/chat/completions");
    let client_key = ("authorization", "Bearer sk-client-own");
    let body = r#"{"model":"gpt-4o","messages":[]}"#;
    assert_eq!(post(&url, &[client_key], body).await.status, 200);
    cd.write_policy("p.yaml", "policies:\n  - name: two\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = post(&url, &[client_key], body).await;
        assert_eq!(r.status, 200);
        if r.headers["x-warden-policy"] == "two" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reload never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "the reload dropped the warm upstream connection");
}
