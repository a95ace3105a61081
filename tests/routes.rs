//! Every API route over real HTTP, streamed and not, through warden to the in-process mock and
//! to a mock provider on its own port (as OpenAI-kind and Anthropic-kind upstreams).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::Method;

#[tokio::test]
async fn chat_completions_json_and_stream() {
    let (_mock, proxy) = setup().await;
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().starts_with("Hello from the warden mock"));
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(r.headers.get("x-warden-request-id").unwrap().to_str().unwrap().starts_with("req_"));
    assert!(r.headers.get("x-warden-overhead-ms").unwrap().to_str().unwrap().parse::<f64>().is_ok());

    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], CHAT_STREAM).await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.starts_with("Hello from the warden mock provider."), "{text}");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn completions_embeddings_responses_and_models() {
    let (_mock, proxy) = setup().await;
    let r = post(&proxy.url("/v1/completions"), &[BEARER], r#"{"model":"mock-1","prompt":"Say hi"}"#).await;
    assert_eq!(r.json()["object"], "text_completion");
    let r =
        post(&proxy.url("/v1/completions"), &[BEARER], r#"{"model":"mock-1","prompt":"Say hi","stream":true}"#).await;
    assert_eq!(sse_data(&r.text()).last().map(String::as_str), Some("[DONE]"));

    let r =
        post(&proxy.url("/v1/embeddings"), &[BEARER], r#"{"model":"mock-1","input":["a","b"],"dimensions":8}"#).await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);

    let r = post(&proxy.url("/v1/responses"), &[BEARER], r#"{"model":"mock-1","input":"hi"}"#).await;
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    let r = post(&proxy.url("/v1/responses"), &[BEARER], r#"{"model":"mock-1","input":"hi","stream":true}"#).await;
    let events = sse_events(&r.text());
    assert_eq!(events.first().map(String::as_str), Some("response.created"));
    assert_eq!(events.last().map(String::as_str), Some("response.completed"));
    assert!(events.iter().any(|e| e == "response.output_text.delta"));

    let r = get(&proxy.url("/v1/models"), &[BEARER]).await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"mock-1") && ids.contains(&"gpt-4o") && ids.contains(&"fast"), "{ids:?}");
    // The Anthropic SDK's listing shape, chosen by its headers.
    let r = get(&proxy.url("/v1/models"), &[XKEY, ("anthropic-version", "2023-06-01")]).await;
    assert_eq!(r.json()["data"][0]["type"], "model");
}

#[tokio::test]
async fn models_list_only_what_the_key_may_use() {
    let (_mock, proxy) = setup().await;
    let r = get(&proxy.url("/v1/models"), &[("authorization", "Bearer sk-mock-only")]).await;
    let ids: Vec<String> =
        r.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, vec!["mock-1".to_string()]);
}

#[tokio::test]
async fn anthropic_messages_count_tokens_json_and_stream() {
    let (_mock, proxy) = setup().await;
    let r = post(&proxy.url("/v1/messages"), &[XKEY, ("anthropic-version", "2023-06-01")], MESSAGES).await;
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");

    let r = post(&proxy.url("/v1/messages"), &[XKEY], MESSAGES_STREAM).await;
    let events = sse_events(&r.text());
    assert_eq!(events.first().map(String::as_str), Some("message_start"));
    assert_eq!(events.last().map(String::as_str), Some("message_stop"));
    assert!(events.contains(&"content_block_delta".to_string()) && events.contains(&"message_delta".to_string()));

    let r = post(
        &proxy.url("/v1/messages/count_tokens"),
        &[XKEY],
        r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn openai_kind_upstream_gets_provider_key_not_the_virtual_key() {
    let (mock, proxy) = setup().await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let r = post(&proxy.url("/v1/chat/completions?trace=1"), &[BEARER, ("x-custom", "kept")], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "gpt-4o");
    let h = mock.last_headers();
    assert_eq!(h["authorization"], format!("Bearer {UPSTREAM_SECRET}"));
    assert_eq!(h["x-custom"], "kept");
    assert!(!format!("{h:?}").contains("sk-warden-demo"));
    // The body is forwarded byte for byte when nothing needs to change.
    assert_eq!(*mock.stats.last_body.lock().unwrap(), Some(bytes::Bytes::from(body)));
}

#[tokio::test]
async fn anthropic_kind_upstream_gets_x_api_key_and_version() {
    let (mock, proxy) = setup().await;
    let body = r#"{"model":"claude-test","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = post(&proxy.url("/v1/messages"), &[XKEY], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = mock.last_headers();
    assert_eq!(h["x-api-key"], UPSTREAM_SECRET);
    assert_eq!(h["anthropic-version"], "2023-06-01");
    assert!(h.get("authorization").is_none());
    // Streaming through a real socket upstream.
    let body = r#"{"model":"claude-test","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = post(&proxy.url("/v1/messages"), &[XKEY], body).await;
    assert_eq!(sse_events(&r.text()).last().map(String::as_str), Some("message_stop"));
}

#[tokio::test]
async fn alias_rewrites_model_for_upstream() {
    let (mock, proxy) = setup().await;
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], r#"{"model":"fast","messages":[]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.last_body_json()["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn other_v1_paths_are_proxied_by_model() {
    let (mock, proxy) = setup().await;
    let r = post(&proxy.url("/v1/vector_stores/vs_1"), &[BEARER], r#"{"model":"gpt-4o","name":"f"}"#).await;
    // The mock has no such endpoint: its own 404 body comes back unchanged.
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], "mock provider: no endpoint /v1/vector_stores/vs_1");
    assert_eq!(mock.stats.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn passthrough_forwards_the_clients_own_key() {
    let (mock, proxy) = setup().await;
    let r = post(
        &proxy.url("/v1/chat/completions"),
        &[("authorization", "Bearer sk-client-own")],
        r#"{"model":"byok-1","messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.last_headers()["authorization"], "Bearer sk-client-own");
    // An unknown key is still refused on providers without passthrough.
    let r = post(
        &proxy.url("/v1/chat/completions"),
        &[("authorization", "Bearer sk-client-own")],
        r#"{"model":"gpt-4o","messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn key_restricted_to_a_provider_gets_403() {
    let (_mock, proxy) = setup().await;
    let r = post(
        &proxy.url("/v1/chat/completions"),
        &[("authorization", "Bearer sk-mock-only")],
        r#"{"model":"gpt-4o","messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["message"], "key `mock-only` may not use provider `oai`");
    let r = post(&proxy.url("/v1/chat/completions"), &[("authorization", "Bearer sk-mock-only")], CHAT).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let (_mock, proxy) = setup().await;
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let resp =
        client.request(request(Method::POST, &proxy.url("/v1/chat/completions"), &[BEARER], CHAT)).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn hop_by_hop_and_credential_headers_never_reach_the_upstream() {
    let (mock, proxy) = setup().await;
    let headers = [
        BEARER,
        ("connection", "x-session-secret"),
        ("x-session-secret", "drop-me"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("te", "trailers"),
        ("x-warden-internal", "1"),
        ("openai-organization", "org-kept"),
    ];
    let r = post(&proxy.url("/v1/chat/completions"), &headers, r#"{"model":"gpt-4o","messages":[]}"#).await;
    assert_eq!(r.status, 200);
    let h = mock.last_headers();
    for gone in ["x-session-secret", "proxy-authorization", "te", "x-warden-internal"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(h["openai-organization"], "org-kept");
    // The client's `connection` header names per-hop headers; it must not travel on.
    assert!(h.get_all("connection").iter().all(|v| !v.to_str().unwrap().contains("x-session-secret")), "{h:?}");
}

#[tokio::test]
async fn the_path_decides_the_api_whatever_key_header_is_used() {
    let (_mock, proxy) = setup().await;
    // An OpenAI endpoint called with `x-api-key` (as some clients do) is still OpenAI.
    let r = post(&proxy.url("/v1/chat/completions"), &[XKEY], r#"{"model":"gpt-4o","messages":[]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&proxy.url("/v1/chat/completions"), &[("x-api-key", "sk-nope")], CHAT).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key", "OpenAI's error shape: {}", r.text());
}
