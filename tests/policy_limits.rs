//! Each `limits` rule over real HTTP, for the OpenAI and the Anthropic API: allowed,
//! rejected (in the caller's error format, naming policy, rule and field), clamped, and in
//! monitor mode passed with the "would have blocked" header; tool rounds 10 and 11.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};

const POLICIES: &str = r#"
policies:
  - name: base
    limits:
      max_tokens: { max: 50, default: 20, on_exceed: clamp }
      max_tool_iterations: { max: 10 }
  - name: public
    priority: 10
    match: { teams: [public] }
    limits:
      models: { allow: ["mock-*", cheap], deny: ["mock-9*"] }
      max_tokens: { max: 30, on_exceed: reject }
      max_n: { max: 1 }
      temperature: { min: 0, max: 1 }
      tools: { allow: [search_docs] }
  - name: watch
    mode: monitor
    match: { keys: [demo] }
    limits:
      top_p: { max: 0.5 }
"#;

async fn setup() -> (ConfigDir, TestProxy) {
    let cd = ConfigDir::new(&policy_config(), &[("p.yaml", POLICIES)]);
    let proxy = TestProxy::start_from(&cd).await;
    (cd, proxy)
}

fn chat(extra: Value) -> String {
    let mut body = json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

fn messages(extra: Value) -> String {
    let mut body = json!({"model": "mock-1", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

#[tokio::test]
async fn allowed_requests_name_the_policies_that_applied() {
    let (_cd, proxy) = setup().await;
    let r = post(&proxy.url("/v1/chat/completions"), &[PUBLIC], &chat(json!({"max_tokens": 10}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-warden-policy"], "public,base");
    assert_eq!(r.headers["x-warden-policy-version"], "1");
    let r = post(&proxy.url("/v1/messages"), &[PUBLIC_X], &messages(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-warden-policy"], "public,base");
}

#[tokio::test]
async fn rejections_are_native_errors_naming_policy_rule_and_field() {
    let (_cd, proxy) = setup().await;
    let url = proxy.url("/v1/chat/completions");
    // A denied model: 403.
    let r = post(&url, &[PUBLIC], &chat(json!({"model": "gpt-4o"}))).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "blocked by policy `public` (rule `limits.models`): model `gpt-4o` is not allowed",
                         "type": "permission_error", "param": "model", "code": "policy_violation"}})
    );
    let r = post(&url, &[PUBLIC], &chat(json!({"model": "mock-99"}))).await;
    assert_eq!(r.status, 403, "deny beats allow");
    // Ceiling with on_exceed: reject.
    let r = post(&url, &[PUBLIC], &chat(json!({"max_tokens": 31}))).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "blocked by policy `public` (rule `limits.max_tokens`): `max_tokens` is 31, above the ceiling of 30"
    );
    assert_eq!(r.json()["error"]["param"], "max_tokens");
    for (extra, rule) in [
        (json!({"n": 2}), "limits.max_n"),
        (json!({"temperature": 1.5}), "limits.temperature"),
        (json!({"tools": [{"type": "function", "function": {"name": "rm_rf", "parameters": {}}}]}), "limits.tools"),
    ] {
        let r = post(&url, &[PUBLIC], &chat(extra)).await;
        assert_eq!(r.status, 400, "{rule}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.starts_with(&format!("blocked by policy `public` (rule `{rule}`)")), "{msg}");
    }
    // The same in Anthropic's format.
    let r = post(&proxy.url("/v1/messages"), &[PUBLIC_X], &messages(json!({"max_tokens": 31}))).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"blocked by policy `public` (rule `limits.max_tokens`): `max_tokens` is 31, above the ceiling of 30"}}"#
    );
    let r = post(&proxy.url("/v1/messages"), &[PUBLIC_X], &messages(json!({"model": "gpt-4o"}))).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert_eq!(r.headers["x-warden-policy"], "public,base");
}

#[tokio::test]
async fn over_the_ceiling_is_clamped_and_a_missing_limit_filled_in() {
    let (_cd, proxy) = setup().await;
    // The mock replies with as many tokens as it is allowed: the forwarded limit shows.
    let r = post(
        &proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "tokens=100")],
        &chat(json!({"max_tokens": 500})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"], 50, "clamped to the ceiling");
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER, ("x-mock", "tokens=100")], &chat(json!({}))).await;
    assert_eq!(r.json()["usage"]["completion_tokens"], 20, "the default was filled in");
    let r = post(&proxy.url("/v1/messages"), &[XKEY, ("x-mock", "tokens=100")], &messages(json!({"max_tokens": 4000})))
        .await;
    assert_eq!(r.json()["usage"]["output_tokens"], 50);
    assert_eq!(r.json()["stop_reason"], "max_tokens");
    // Streams are clamped as well.
    let r = post(
        &proxy.url("/v1/messages"),
        &[XKEY, ("x-mock", "tokens=100")],
        &messages(json!({"max_tokens": 4000, "stream": true})),
    )
    .await;
    assert!(r.text().contains(r#""usage":{"output_tokens":50}"#), "{}", r.text());
}

#[tokio::test]
async fn monitor_mode_passes_with_would_block_header() {
    let (_cd, proxy) = setup().await;
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], &chat(json!({"top_p": 0.9}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-warden-would-block"], "watch:limits.top_p");
    assert_eq!(r.headers["x-warden-policy"], "base,watch");
    let r = post(&proxy.url("/v1/messages"), &[XKEY], &messages(json!({"top_p": 0.9}))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-warden-would-block"], "watch:limits.top_p");
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], &chat(json!({"top_p": 0.2}))).await;
    assert!(r.headers.get("x-warden-would-block").is_none());
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics
            .contains(r#"warden_policy_decisions_total{decision="would_block",policy="watch",rule="limits.top_p"} 2"#),
        "{metrics}"
    );
}

fn openai_history(rounds: usize) -> Value {
    let mut m = vec![json!({"role": "user", "content": "go"})];
    for i in 0..rounds {
        m.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("c{i}"), "type": "function", "function": {"name": "search_docs", "arguments": "{}"}}]}));
        m.push(json!({"role": "tool", "tool_call_id": format!("c{i}"), "content": "ok"}));
    }
    Value::Array(m)
}

fn anthropic_history(rounds: usize) -> Value {
    let mut m = vec![json!({"role": "user", "content": "go"})];
    for i in 0..rounds {
        m.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": format!("t{i}"), "name": "search_docs", "input": {}}]}));
        m.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("t{i}"), "content": "ok"}]}));
    }
    Value::Array(m)
}

#[tokio::test]
async fn ten_tool_rounds_pass_and_eleven_are_refused() {
    let (_cd, proxy) = setup().await;
    let url = proxy.url("/v1/chat/completions");
    let r = post(&url, &[BEARER], &chat(json!({"messages": openai_history(10)}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&url, &[BEARER], &chat(json!({"messages": openai_history(11)}))).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "blocked by policy `base` (rule `limits.max_tool_iterations`): the conversation has 11 tool-call rounds, above the limit of 10"
    );
    assert_eq!(r.json()["error"]["param"], "messages");
    let url = proxy.url("/v1/messages");
    let r = post(&url, &[XKEY], &messages(json!({"messages": anthropic_history(10)}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&url, &[XKEY], &messages(json!({"messages": anthropic_history(11)}))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn admin_shows_the_live_policies() {
    let (_cd, proxy) = setup().await;
    let r = get(&proxy.admin_url("/admin/policies"), &[]).await;
    let v = r.json();
    assert_eq!(v["version"], 1);
    assert_eq!(v["policies"], json!(["public", "base", "watch"]));
    assert_eq!(v["files"].as_array().unwrap().len(), 1);
    assert_eq!(v["last_result"], "ok");
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains(&format!(r#"warden_policy_info{{hash="{}",version="1"}} 1"#, v["hash"].as_str().unwrap())),
        "{metrics}"
    );
}
