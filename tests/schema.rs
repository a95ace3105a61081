//! Schema enforcement over real HTTP, against the mock on its own port with scripted
//! replies: request rules of every kind (status, error format, JSON pointer), and the
//! invoice-extraction example's output validation (text, tool calls on both APIs, streams
//! buffered and passed through) with each action.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::sync::atomic::Ordering;

use common::*;
use serde_json::{json, Value};

const INVOICE_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["vendor_name", "amount", "currency", "due_date", "confidence"],
  "properties": {
    "vendor_name": {"type": "string"},
    "amount": {"type": "number"},
    "currency": {"type": "string"},
    "due_date": {"type": "string", "format": "date"},
    "confidence": {"type": "number"}
  }
}"#;

const GOOD: &str =
    r#"{"vendor_name":"ACME GmbH","amount":1250.5,"currency":"EUR","due_date":"2031-03-31","confidence":0.92}"#;

/// The bad answers the issue lists, each with a piece of what the error must say.
fn bad_answers() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("invalid JSON", r#"{"vendor_name":"ACME","amount":"#, "not valid JSON"),
        ("a missing field", r#"{"vendor_name":"ACME","amount":5,"currency":"EUR","confidence":0.9}"#, "due_date"),
        (
            "a wrong type",
            r#"{"vendor_name":"ACME","amount":"5","currency":"EUR","due_date":"2031-01-01","confidence":0.9}"#,
            "/amount",
        ),
        (
            "a broken domain rule",
            r#"{"vendor_name":"ACME","amount":5,"currency":"euro","due_date":"2031-01-01","confidence":0.9}"#,
            "/currency",
        ),
        (
            "a date in the past",
            r#"{"vendor_name":"ACME","amount":5,"currency":"EUR","due_date":"2020-01-01","confidence":0.9}"#,
            "/due_date",
        ),
        (
            "low confidence",
            r#"{"vendor_name":"ACME","amount":5,"currency":"EUR","due_date":"2031-01-01","confidence":0.3}"#,
            "confidence 0.3 is below",
        ),
    ]
}

/// warden before the mock ([`two_api_config`]) with the invoice policy; `output` is the
/// policy's `output:` section body (YAML, indented 8).
async fn setup(output: &str) -> Mocked {
    let policy = format!(
        r#"
policies:
  - name: invoice-extraction
    match: {{ labels: {{ app: invoices }} }}
    schema:
      output:
        json_schema: invoice.schema.json
        rules:
          properties:
            confidence: {{ minimum: 0, maximum: 1 }}
            currency: {{ pattern: "^[A-Z]{{3}}$" }}
            due_date: {{ x-not-past: true }}
            amount: {{ exclusiveMinimum: 0 }}
        min_confidence: {{ pointer: /confidence, threshold: 0.6 }}
{output}
"#
    );
    Mocked::start("labels: { app: invoices }", &[("invoices.yaml", &policy), ("invoice.schema.json", INVOICE_SCHEMA)])
        .await
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Extract the invoice."}]});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

fn messages(extra: Value) -> Value {
    let mut body =
        json!({"model": "claude-test", "max_tokens": 200, "messages": [{"role": "user", "content": "Extract it."}]});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

fn declared_format() -> Value {
    json!({"response_format": {"type": "json_schema", "json_schema": {"name": "invoice", "strict": true,
        "schema": serde_json::from_str::<Value>(INVOICE_SCHEMA).unwrap()}}})
}

fn replies(items: &[&str]) -> String {
    serde_json::to_string(items).unwrap()
}

fn content(r: &Resp) -> String {
    r.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string()
}

fn error_message(r: &Resp) -> String {
    r.json()["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn reject_lets_valid_output_through_and_refuses_each_kind_of_bad_output() {
    let s = setup("        on_invalid: reject").await;
    let body = chat(declared_format());
    let ok = s.post("/v1/chat/completions", &body, &[("x-mock-reply", GOOD)]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.headers["x-warden-schema"], "valid");
    assert_eq!(content(&ok), GOOD);
    for (what, answer, says) in bad_answers() {
        let before = s.calls();
        let r = s.post("/v1/chat/completions", &body, &[("x-mock-reply", answer)]).await;
        assert_eq!(r.status, 502, "{what}: {}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "server_error", "{what}");
        assert_eq!(e["code"], "output_schema_violation", "{what}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("policy `invoice-extraction`") && msg.contains(says), "{what}: {msg}");
        assert_eq!(r.headers["x-warden-schema"], "invalid", "{what}");
        assert_eq!(r.headers["x-should-retry"], "false", "{what}: the SDKs must not multiply the calls");
        assert_eq!(s.calls() - before, 1, "{what}: reject asks once");
    }
    let rejected = s.metric("warden_schema_violations_total{action=\"reject\",direction=\"output\"").await;
    assert_eq!(rejected, 6.0);
}

#[tokio::test]
async fn the_policy_schema_applies_when_the_request_declares_none_and_flag_passes_it_on() {
    let s = setup("        on_invalid: flag").await;
    let bad = bad_answers()[3].1;
    let r = s.post("/v1/chat/completions", &chat(json!({})), &[("x-mock-reply", bad)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-warden-schema"], "invalid");
    assert_eq!(content(&r), bad, "flag delivers the answer unchanged");
    let r = s.post("/v1/chat/completions", &chat(json!({})), &[("x-mock-reply", GOOD)]).await;
    assert_eq!(r.headers["x-warden-schema"], "valid");
    // Free text is not JSON: the policy's schema says it must be.
    let r = s.post("/v1/chat/completions", &chat(json!({})), &[("x-mock-reply", "Sure! Here it is.")]).await;
    assert_eq!(r.headers["x-warden-schema"], "invalid");
    assert_eq!(s.metric("warden_schema_violations_total{action=\"flag\",direction=\"output\"").await, 2.0);
}

#[tokio::test]
async fn retry_repairs_with_the_violations_and_meters_every_attempt() {
    let s = setup("        on_invalid: retry\n        max_retries: 2\n        repair: true").await;
    let bad = bad_answers()[3].1;
    let r =
        s.post("/v1/chat/completions", &chat(declared_format()), &[("x-mock-replies", &replies(&[bad, GOOD]))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(content(&r), GOOD, "the client sees only the final good answer");
    assert_eq!(r.headers["x-warden-schema"], "valid");
    assert_eq!(r.headers["x-warden-schema-attempts"], "2");
    assert_eq!(s.calls(), 2);
    // The second call carried the bad answer and a message quoting what was wrong.
    let sent = s.mock.last_body_json();
    let turns = sent["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[1], json!({"role": "assistant", "content": bad}));
    assert_eq!(turns[2]["role"], "user");
    assert!(turns[2]["content"].as_str().unwrap().contains("/currency"), "{}", turns[2]);
    assert_eq!(s.metric("warden_schema_retries_total").await, 1.0);
    // Both attempts are metered: the mock counts a reply's words as its output tokens
    // (one for the bad answer, two for the good one: "ACME GmbH").
    assert_eq!(s.metric("warden_tokens_total{direction=\"output\"").await, 3.0);

    // Every reply bad: one call plus two retries, then a clean 502.
    let before = s.calls();
    let r = s.post("/v1/chat/completions", &chat(declared_format()), &[("x-mock-replies", &replies(&[bad]))]).await;
    assert_eq!(r.status, 502);
    assert_eq!(s.calls() - before, 3);
    assert!(error_message(&r).contains("(3 attempts)"), "{}", error_message(&r));
    assert_eq!(r.headers["x-warden-schema-attempts"], "3");
    assert_eq!(s.metric("warden_tokens_total{direction=\"output\"").await, 6.0);
}

#[tokio::test]
async fn openai_tool_calls_are_validated_against_their_parameters() {
    let s = setup("        on_invalid: retry\n        max_retries: 1").await;
    let tools = json!({"tools": [{"type": "function", "function": {"name": "record_invoice",
        "parameters": serde_json::from_str::<Value>(INVOICE_SCHEMA).unwrap()}}]});
    let bad = bad_answers()[2].1;
    let tool = ("x-mock", "tool=record_invoice");
    let r =
        s.post("/v1/chat/completions", &chat(tools.clone()), &[tool, ("x-mock-replies", &replies(&[bad, GOOD]))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let call = &r.json()["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["arguments"], GOOD);
    assert_eq!(r.headers["x-warden-schema-attempts"], "2");
    // A tool call's repair asks again without quoting it as text.
    let turns = s.mock.last_body_json()["messages"].as_array().unwrap().clone();
    assert_eq!(turns.len(), 2);
    assert!(turns[1]["content"].as_str().unwrap().contains("record_invoice"));
    // Out of retries.
    let r = s.post("/v1/chat/completions", &chat(tools.clone()), &[tool, ("x-mock-replies", &replies(&[bad]))]).await;
    assert_eq!(r.status, 502);
    assert!(error_message(&r).contains("tool call 0 (`record_invoice`) /amount"), "{}", error_message(&r));
    // A call to a tool the request never declared.
    let r = s
        .post("/v1/chat/completions", &chat(tools), &[("x-mock", "tool=drop_tables"), ("x-mock-tool-args", "{}")])
        .await;
    assert_eq!(r.status, 502);
    assert!(error_message(&r).contains("declares no tool of that name"));
}

#[tokio::test]
async fn anthropic_tool_use_is_validated_against_its_input_schema() {
    let s = setup("        on_invalid: reject").await;
    let tools = json!({"tools": [{"name": "record_invoice",
        "input_schema": serde_json::from_str::<Value>(INVOICE_SCHEMA).unwrap()}]});
    let tool = ("x-mock", "tool=record_invoice");
    let r = s.post("/v1/messages", &messages(tools.clone()), &[tool, ("x-mock-tool-args", GOOD)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-warden-schema"], "valid");
    for (what, answer, says) in bad_answers().into_iter().skip(1) {
        let r = s.post("/v1/messages", &messages(tools.clone()), &[tool, ("x-mock-tool-args", answer)]).await;
        assert_eq!(r.status, 502, "{what}");
        let v = r.json();
        assert_eq!(v["type"], "error", "{what}: Anthropic's error shape");
        assert_eq!(v["error"]["type"], "api_error");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{what}: {msg}");
    }
    // Text answers of Anthropic requests that declare no schema meet the policy's schema.
    let r = s.post("/v1/messages", &messages(json!({})), &[("x-mock-reply", GOOD)]).await;
    assert_eq!(r.headers["x-warden-schema"], "valid");
    let r = s.post("/v1/messages", &messages(json!({})), &[("x-mock-reply", "no json here")]).await;
    assert_eq!(r.status, 502);
}

#[tokio::test]
async fn buffered_streams_are_validated_before_the_first_byte_and_retried() {
    let s = setup("        on_invalid: retry\n        max_retries: 1\n        stream: buffer").await;
    let bad = bad_answers()[5].1;
    let body = chat(json!({"stream": true}));
    let r = s.post("/v1/chat/completions", &body, &[("x-mock-replies", &replies(&[bad, GOOD]))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-warden-schema"], "valid");
    let text: String = sse_data(&r.text())
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, GOOD, "only the good attempt is streamed");
    assert_eq!(sse_data(&r.text()).last().map(String::as_str), Some("[DONE]"));
    // Out of retries: nothing was streamed yet, so the refusal is a plain 502.
    let r = s.post("/v1/chat/completions", &body, &[("x-mock-replies", &replies(&[bad]))]).await;
    assert_eq!(r.status, 502);
    assert!(error_message(&r).contains("confidence 0.3 is below"));
    // Anthropic, the same.
    let r = s.post("/v1/messages", &messages(json!({"stream": true})), &[("x-mock-reply", bad)]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["type"], "error");
}

#[tokio::test]
async fn passthrough_streams_end_with_the_apis_error_event_when_the_output_is_invalid() {
    let s = setup("        on_invalid: reject\n        stream: passthrough").await;
    let bad = bad_answers()[4].1;
    let r = s.post("/v1/chat/completions", &chat(json!({"stream": true})), &[("x-mock-reply", bad)]).await;
    assert_eq!(r.status, 200, "the stream started before the output was whole");
    let data = sse_data(&r.text());
    assert!(!data.iter().any(|d| d == "[DONE]"), "no success end: {data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("/due_date"), "{last}");
    let r = s.post("/v1/chat/completions", &chat(json!({"stream": true})), &[("x-mock-reply", GOOD)]).await;
    assert_eq!(sse_data(&r.text()).last().map(String::as_str), Some("[DONE]"));

    let r = s.post("/v1/messages", &messages(json!({"stream": true})), &[("x-mock-reply", bad)]).await;
    let events = sse_events(&r.text());
    assert_eq!(events.last().map(String::as_str), Some("error"), "{events:?}");
    assert!(!events.iter().any(|e| e == "message_stop"));
    let r = s.post("/v1/messages", &messages(json!({"stream": true})), &[("x-mock-reply", GOOD)]).await;
    assert_eq!(sse_events(&r.text()).last().map(String::as_str), Some("message_stop"));
    // Anthropic tool input streamed as JSON deltas, checked whole at the end.
    let tools = json!({"stream": true, "tools": [{"name": "record_invoice",
        "input_schema": serde_json::from_str::<Value>(INVOICE_SCHEMA).unwrap()}]});
    let r =
        s.post("/v1/messages", &messages(tools), &[("x-mock", "tool=record_invoice"), ("x-mock-tool-args", bad)]).await;
    assert_eq!(sse_events(&r.text()).last().map(String::as_str), Some("error"));
}

#[tokio::test]
async fn a_declared_schema_warden_cannot_compile_is_the_requests_fault() {
    let s = setup("        on_invalid: reject").await;
    let body = chat(json!({"response_format": {"type": "json_schema",
        "json_schema": {"name": "x", "schema": {"$ref": "https://evil.example/schema.json"}}}}));
    let r = s.post("/v1/chat/completions", &body, &[]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(error_message(&r).contains("response_format.json_schema.schema"));
    assert_eq!(s.calls(), 0);
}

#[tokio::test]
async fn request_rules_block_with_the_pointer_in_each_apis_format() {
    let mock = TestMock::start().await;
    let yaml = two_api_config(mock.addr, "");
    let policy = r#"
policies:
  - name: structured-only
    match: { routes: [chat_completions] }
    schema:
      request:
        require: [/response_format]
        forbid: [/logit_bias, /messages/*/name]
        json_schema: { properties: { response_format: { properties: { type: { const: json_schema } } } } }
  - name: anthropic-rules
    match: { routes: [messages, message_batches] }
    schema:
      request:
        forbid: [/metadata/user_id]
        json_schema: request.schema.json
  - name: watch-seed
    mode: monitor
    schema:
      request:
        forbid: [/seed]
"#;
    let cd = ConfigDir::new(&yaml, &[("rules.yaml", policy)]);
    std::fs::write(cd.policy_path("request.schema.json"), r#"{"properties": {"max_tokens": {"maximum": 1000}}}"#)
        .unwrap();
    std::env::set_var("UPSTREAM_KEY", UPSTREAM_SECRET);
    let proxy = TestProxy::start_from(&cd).await;
    let post = |path: &'static str, body: Value| {
        let url = proxy.url(path);
        async move { send(http::Method::POST, &url, &[BEARER, ("anthropic-version", "2023-06-01")], body.to_string()).await }
    };
    let fmt = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}});
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let openai_refusal = |r: &Resp, rule: &str, pointer: &str| {
        assert_eq!(r.status, 400, "{}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["code"], "policy_violation");
        assert_eq!(e["param"], pointer);
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("structured-only") && msg.contains(rule), "{msg}");
    };
    let r = post("/v1/chat/completions", json!({"model": "gpt-4o", "messages": msgs})).await;
    openai_refusal(&r, "schema.request.require", "/response_format");
    let r = post("/v1/chat/completions", json!({"model": "gpt-4o", "messages": msgs, "response_format": null})).await;
    openai_refusal(&r, "schema.request.require", "/response_format");
    let r = post(
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": msgs, "response_format": fmt, "logit_bias": {"1": 5}}),
    )
    .await;
    openai_refusal(&r, "schema.request.forbid", "/logit_bias");
    let named = json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b", "name": "x"}]);
    let r = post("/v1/chat/completions", json!({"model": "gpt-4o", "messages": named, "response_format": fmt})).await;
    openai_refusal(&r, "schema.request.forbid", "/messages/1/name");
    let r = post(
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": msgs, "response_format": {"type": "json_object"}}),
    )
    .await;
    openai_refusal(&r, "schema.request.json_schema", "/response_format/type");
    // An escaped key is the same key.
    let escaped = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"hi"}}],"response_format":{fmt},"logit\u005fbias":{{"1":5}}}}"#
    );
    let r = send(http::Method::POST, &proxy.url("/v1/chat/completions"), &[BEARER], escaped).await;
    openai_refusal(&r, "schema.request.forbid", "/logit_bias");
    assert_eq!(mock.stats.requests.load(Ordering::SeqCst), 0, "nothing blocked reached the upstream");

    // Monitor mode passes, and says what it would have done.
    let r =
        post("/v1/chat/completions", json!({"model": "gpt-4o", "messages": msgs, "response_format": fmt, "seed": 1}))
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-warden-would-block"], "watch-seed:schema.request.forbid");

    // Anthropic's error format; the schema from a file beside the policy.
    let r = post("/v1/messages", json!({"model": "claude-test", "max_tokens": 5000, "messages": msgs})).await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("anthropic-rules") && msg.contains("schema.request.json_schema") && msg.contains("/max_tokens")
    );
    // A batch's nested requests are checked one by one.
    let batch = json!({"requests": [
        {"custom_id": "a", "params": {"model": "claude-test", "max_tokens": 10, "messages": msgs}},
        {"custom_id": "b", "params": {"model": "claude-test", "max_tokens": 10, "messages": msgs, "metadata": {"user_id": "u"}}}
    ]});
    let r = post("/v1/messages/batches", batch).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("requests[1]") && msg.contains("/metadata/user_id"), "{msg}");
    let m = get(&proxy.admin_url("/metrics"), &[]).await.text();
    assert!(
        m.contains(r#"warden_schema_violations_total{action="block",direction="request",policy="structured-only"} 6"#),
        "{}",
        m.lines().filter(|l| l.contains("schema")).collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test]
async fn responses_text_format_is_validated_and_monitor_mode_only_records() {
    let s = setup("        on_invalid: reject\n        mode: monitor").await;
    let body = json!({"model": "gpt-4o", "input": "Extract the invoice.",
        "text": {"format": {"type": "json_schema", "name": "invoice",
            "schema": serde_json::from_str::<Value>(INVOICE_SCHEMA).unwrap()}}});
    let bad = bad_answers()[1].1;
    let r = s.post("/v1/responses", &body, &[("x-mock-reply", bad)]).await;
    assert_eq!(r.status, 200, "monitor mode lets it through: {}", r.text());
    assert_eq!(r.headers["x-warden-schema"], "invalid");
    assert_eq!(r.headers["x-warden-would-block"], "invoice-extraction:schema.output");
    let r = s.post("/v1/responses", &body, &[("x-mock-reply", GOOD)]).await;
    assert_eq!(r.headers["x-warden-schema"], "valid");
    assert_eq!(s.metric("warden_schema_violations_total{action=\"monitor\",direction=\"output\"").await, 1.0);
}
