//! Streaming: events pass through as they arrive (never buffered whole), a client that
//! disconnects cancels the upstream stream, a cut upstream stream is not a clean end, and a
//! graceful shutdown lets an in-flight stream finish.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

const GPT_STREAM: &str = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn events_arrive_one_by_one_as_the_upstream_sends_them() {
    let (_mock, proxy) = setup().await;
    let start = Instant::now();
    let mut resp = open_stream(
        &proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "tokens=5,chunks=5,chunk-delay=300ms")],
        GPT_STREAM,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let frames = read_frames(resp.body_mut()).await.unwrap();
    // role chunk + 5 content chunks + finish chunk + [DONE], 300 ms apart: each its own frame,
    // the first long before the upstream has finished (2.1 s), none held back to the end.
    assert_eq!(frames.len(), 8, "{frames:?}");
    let first = frames[0].0.duration_since(start);
    let last = frames[frames.len() - 1].0.duration_since(start);
    assert!(first < Duration::from_millis(1000), "first event held back: {first:?}");
    assert!(last - first >= Duration::from_millis(1500), "events arrived together: {first:?}..{last:?}");
    for w in frames.windows(2) {
        assert!(w[1].0.duration_since(w[0].0) >= Duration::from_millis(100), "two events arrived together");
    }
    let text: String = frames.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let (mock, proxy) = setup().await;
    let mut resp = open_stream(
        &proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "tokens=40,chunk-delay=100ms")],
        GPT_STREAM,
    )
    .await;
    use http_body_util::BodyExt;
    let _ = resp.body_mut().frame().await;
    let _ = resp.body_mut().frame().await;
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(3);
    while mock.stats.streams_cancelled.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mock.stats.streams_cancelled.load(Ordering::SeqCst), 1, "upstream stream still running");
    assert_eq!(mock.stats.streams_completed.load(Ordering::SeqCst), 0);
    // The request is finished on warden's side too (admin requests are not counted).
    let mut metrics = String::new();
    while Instant::now() < deadline + Duration::from_secs(2) {
        metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
        if metrics.contains("warden_in_flight_requests 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.contains("warden_in_flight_requests 0"), "{metrics}");
}

#[tokio::test]
async fn an_upstream_cut_mid_stream_is_not_a_clean_end() {
    let (_mock, proxy) = setup().await;
    let mut resp = open_stream(
        &proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "cut-after=3,chunk-delay=50ms")],
        GPT_STREAM,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (text, broken) = read_until_error(resp.body_mut()).await;
    assert!(!broken, "warden ends a cut stream itself, with an error event");
    let last = sse_data(&text).pop().unwrap();
    assert!(last.starts_with(r#"{"error":{"message":"upstream provider `oai` broke off the stream"#), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
}

/// Reads a streamed body until it ends or fails, keeping every data byte that arrived.
async fn read_until_error(body: &mut hyper::body::Incoming) -> (String, bool) {
    use http_body_util::BodyExt;
    let mut text = String::new();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await.expect("stalled") {
            None => return (text, false),
            Some(Err(_)) => return (text, true),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    text.push_str(&String::from_utf8_lossy(&d));
                }
            }
        }
    }
}

#[tokio::test]
async fn a_cut_after_n_directive_delivers_n_events_then_fails() {
    let (mock, proxy) = setup().await;
    // Through warden (in-process mock and the mock's own server) and from the mock directly.
    let direct = format!("http://{}/v1/chat/completions", mock.addr);
    for (url, model, through_warden) in [
        (proxy.url("/v1/chat/completions"), CHAT_STREAM, true),
        (proxy.url("/v1/chat/completions"), GPT_STREAM, true),
        (direct, CHAT_STREAM, false),
    ] {
        for directive in ["cut-after=3", "cut-after=3,chunk-delay=20ms"] {
            let mut resp = open_stream(&url, &[BEARER, ("x-mock", directive)], model).await;
            assert_eq!(resp.status(), 200);
            let (text, broken) = read_until_error(resp.body_mut()).await;
            let data = sse_data(&text);
            if through_warden {
                // The three events, then warden's error event in the OpenAI shape.
                assert!(!broken, "{url} {directive}: {text}");
                assert_eq!(data.len(), 4, "{url} {directive}: {text}");
                assert!(data[3].starts_with(r#"{"error":"#), "{text}");
            } else {
                assert!(broken, "{url} {directive}: the cut must surface as an error");
                assert_eq!(data.len(), 3, "{url} {directive}: {text}");
            }
        }
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_an_inflight_stream_finish() {
    let (_mock, mut proxy) = setup().await;
    let mut resp = open_stream(
        &proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "tokens=10,chunks=10,chunk-delay=100ms")],
        GPT_STREAM,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let running = proxy.running.take().unwrap();
    let app = running.app.clone();
    running.begin_shutdown();
    let stopped = tokio::spawn(running.wait());
    // New connections are refused once the listener has stopped accepting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(proxy.api).await.is_err(), "still accepting");
    assert!(app.draining.load(Ordering::SeqCst));
    let frames = read_frames(resp.body_mut()).await.expect("in-flight stream cut by shutdown");
    let text: String = frames.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    tokio::time::timeout(Duration::from_secs(5), stopped).await.unwrap().unwrap();
}

#[tokio::test]
async fn metrics_and_health_on_the_admin_listener() {
    let (_mock, proxy) = setup().await;
    post(&proxy.url("/v1/chat/completions"), &[BEARER], CHAT_STREAM).await;
    post(&proxy.url("/v1/chat/completions"), &[BEARER], r#"{"model":"gpt-4o","messages":[]}"#).await;
    post(&proxy.url("/v1/chat/completions"), &[("authorization", "Bearer wrong")], CHAT).await;
    let m = get(&proxy.admin_url("/metrics"), &[]).await;
    assert_eq!(m.status, 200);
    assert!(m.headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = m.text();
    for needle in [
        r#"warden_requests_total{endpoint="chat_completions",key="demo",model="mock-1",provider="local",status="200",team="demo",upstream_model="mock-1"} 1"#,
        r#"warden_requests_total{endpoint="chat_completions",key="demo",model="gpt-4o",provider="oai",status="200",team="demo",upstream_model="gpt-4o"} 1"#,
        r#"warden_requests_total{endpoint="chat_completions",key="none",model="none",provider="none",status="401",team="none",upstream_model="none"} 1"#,
        r#"warden_errors_total{kind="unauthorized"} 1"#,
        "warden_in_flight_requests 0",
        "warden_overhead_seconds_count 3",
        r#"warden_stream_ttfb_seconds_count{endpoint="chat_completions",provider="local"} 1"#,
        r#"warden_upstream_duration_seconds_count{provider="oai"} 1"#,
        r#"warden_request_duration_seconds_count{endpoint="chat_completions",provider="local"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert_eq!(get(&proxy.admin_url("/healthz"), &[]).await.text(), "ok\n");
    assert_eq!(get(&proxy.admin_url("/readyz"), &[]).await.status, 200);
}

#[tokio::test]
async fn admin_token_is_required_when_configured() {
    let mock = TestMock::start().await;
    let yaml = standard_config(mock.addr)
        .replace(r#"admin: { listen: "127.0.0.1:0" }"#, r#"admin: { listen: "127.0.0.1:0", token: "${ADMIN_TOKEN}" }"#);
    let proxy = TestProxy::start(&yaml).await;
    assert_eq!(get(&proxy.admin_url("/metrics"), &[]).await.status, 401);
    assert_eq!(get(&proxy.admin_url("/metrics"), &[("authorization", "Bearer nope")]).await.status, 401);
    assert_eq!(get(&proxy.admin_url("/metrics"), &[("authorization", "Bearer admin-secret")]).await.status, 200);
}
