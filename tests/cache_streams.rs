//! The response cache and streams, over real HTTP: a stored stream replayed event for event,
//! JSON answers replayed as streams and streams as JSON (both APIs), single flight of
//! streamed misses, and streams that must not be stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

#[path = "common/cache.rs"]
mod cache_common;
mod common;

use std::time::Duration;

use cache_common::*;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn openai_streams_replay_as_streams_and_as_json_and_back() {
    let s = cached_proxy("{ ttl: 10m }", "").await;
    let mut streamed = chat_body("stream me");
    streamed["stream"] = json!(true);
    let miss = s.chat(DEMO_KEY, &streamed, &[("x-mock", "chunks=5")]).await;
    assert_eq!(cache_header(&miss), "miss");
    let hit = s.chat(DEMO_KEY, &streamed, &[]).await;
    assert_eq!(cache_header(&hit), "hit");
    assert_eq!(hit.headers["content-type"], "text/event-stream");
    assert_eq!(contents(&hit.text()), contents(&miss.text()), "the replay is the original stream");
    assert!(hit.text().ends_with("data: [DONE]\n\n"));
    // The usage chunk warden asked for is not shown to a client that did not ask.
    assert!(!hit.text().contains("\"usage\""));
    let ids: std::collections::HashSet<String> = sse_data(&hit.text())
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok()?["id"].as_str().map(String::from))
        .collect();
    assert_eq!(ids.len(), 1);
    assert!(!miss.text().contains(ids.iter().next().unwrap().as_str()), "fresh id");
    // With include_usage, the replay carries the usage chunk.
    let mut with_usage = streamed.clone();
    with_usage["stream_options"] = json!({"include_usage": true});
    let hit = s.chat(DEMO_KEY, &with_usage, &[]).await;
    assert_eq!(cache_header(&hit), "hit");
    assert!(hit.text().contains("\"usage\""));
    // The same request without `stream` is answered from the stream, as JSON.
    let json_hit = s.chat(DEMO_KEY, &chat_body("stream me"), &[]).await;
    assert_eq!(cache_header(&json_hit), "hit");
    let text: String = sse_data(&miss.text())
        .iter()
        .filter_map(|d| {
            serde_json::from_str::<Value>(d).ok()?["choices"][0]["delta"]["content"].as_str().map(String::from)
        })
        .collect();
    let v = json_hit.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], text);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    // And the other way: a JSON answer replayed as a stream.
    let fresh = chat_body("json first");
    let j = s.chat(DEMO_KEY, &fresh, &[]).await;
    let mut fresh_stream = fresh.clone();
    fresh_stream["stream"] = json!(true);
    let st = s.chat(DEMO_KEY, &fresh_stream, &[]).await;
    assert_eq!(cache_header(&st), "hit");
    let replayed: String = sse_data(&st.text())
        .iter()
        .filter_map(|d| {
            serde_json::from_str::<Value>(d).ok()?["choices"][0]["delta"]["content"].as_str().map(String::from)
        })
        .collect();
    assert_eq!(replayed, j.json()["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(s.upstream_calls(), 2);
}

#[tokio::test]
async fn anthropic_streams_replay_with_their_event_order_and_as_json() {
    let s = cached_proxy("{ ttl: 10m }", "").await;
    let body = json!({"model": "claude-test", "max_tokens": 64, "temperature": 0, "stream": true,
                      "messages": [{"role": "user", "content": "hi claude"}]});
    let miss = s.messages(&body, &[("x-mock", "chunks=4")]).await;
    assert_eq!(cache_header(&miss), "miss");
    let hit = s.messages(&body, &[]).await;
    assert_eq!(cache_header(&hit), "hit");
    assert_eq!(sse_events(&hit.text()), sse_events(&miss.text()), "same events in the same order");
    assert_eq!(contents(&hit.text()), contents(&miss.text()));
    // Another API version is another answer.
    let other = s.messages(&body, &[("anthropic-beta", "some-feature-2025-01-01")]).await;
    assert_eq!(cache_header(&other), "miss");
    // Non-streamed, from the stream.
    let mut plain = body.clone();
    plain.as_object_mut().unwrap().remove("stream");
    let j = s.messages(&plain, &[]).await;
    assert_eq!(cache_header(&j), "hit");
    let v = j.json();
    assert_eq!(v["type"], "message");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    let streamed_text: String = sse_data(&miss.text())
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok()?["delta"]["text"].as_str().map(String::from))
        .collect();
    assert_eq!(v["content"][0]["text"], streamed_text);
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 1);
    // A JSON answer as a stream: the API's event sequence.
    let mut fresh = plain.clone();
    fresh["messages"][0]["content"] = json!("json first");
    s.messages(&fresh, &[]).await;
    fresh["stream"] = json!(true);
    let st = s.messages(&fresh, &[]).await;
    assert_eq!(cache_header(&st), "hit");
    assert_eq!(
        sse_events(&st.text()),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(s.upstream_calls(), 3);
}

#[tokio::test]
async fn broken_streams_and_errors_are_never_stored() {
    let s = cached_proxy("{ ttl: 10m }", "").await;
    let mut streamed = chat_body("cut me");
    streamed["stream"] = json!(true);
    let cut = s.chat(DEMO_KEY, &streamed, &[("x-mock", "chunks=6, cut-after=2")]).await;
    assert!(cut.text().contains("error"), "{}", cut.text());
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &streamed, &[]).await), "miss");
    let body = chat_body("error me");
    assert_eq!(s.chat(DEMO_KEY, &body, &[("x-mock", "status=429")]).await.status, 429);
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "miss");
    assert_eq!(s.upstream_calls(), 4);
}

#[tokio::test]
async fn concurrent_streamed_misses_wait_for_one_stream_and_replay_it() {
    let s = std::sync::Arc::new(cached_proxy("{ ttl: 10m }", "").await);
    let mut body = chat_body("stream stampede");
    body["stream"] = json!(true);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, body) = (s.clone(), body.clone());
        tasks.push(tokio::spawn(
            async move { s.chat(DEMO_KEY, &body, &[("x-mock", "chunks=5, chunk-delay=40ms")]).await },
        ));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(s.upstream_calls(), 1);
    let first = contents(&answers[0].text());
    assert!(answers.iter().all(|a| contents(&a.text()) == first));
    assert_eq!(answers.iter().filter(|a| cache_header(a) == "hit").count(), 19);
}

#[tokio::test]
async fn a_leader_whose_client_leaves_hands_the_call_to_a_waiter() {
    let s = std::sync::Arc::new(cached_proxy("{ ttl: 10m }", "").await);
    let mut body = chat_body("abandoned");
    body["stream"] = json!(true);
    let auth = format!("Bearer {DEMO_KEY}");
    // The leader reads its headers and goes away mid-stream.
    let leader = open_stream(
        &s.proxy.url("/v1/chat/completions"),
        &[("authorization", auth.as_str()), ("x-mock", "chunks=10, chunk-delay=50ms")],
        &body.to_string(),
    )
    .await;
    let waiter = {
        let (s, body) = (s.clone(), body.clone());
        tokio::spawn(async move { s.chat(DEMO_KEY, &body, &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(120)).await;
    drop(leader);
    let w = waiter.await.unwrap();
    assert_eq!(w.status, 200);
    assert!(w.text().ends_with("data: [DONE]\n\n"), "{}", w.text());
    assert_eq!(s.upstream_calls(), 2, "the waiter made the call the leader abandoned");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "hit");
}
