//! Every policy bypass found in the hardening review, over real HTTP against a lenient
//! upstream (it decodes paths, routes case-insensitively and keeps the last repeated key):
//! encoded paths, repeated keys, batches, methods and unnamed paths, legacy parameters and
//! compressed bodies. Each test asserts what the client gets and that the upstream saw
//! nothing it should not have.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::lenient::Lenient;
use common::*;
use http::Method;
use serde_json::{json, Value};

const UPSTREAM_KEY: &str = "sk-hardening-upstream";

const POLICIES: &str = r#"
policies:
  - name: base
    limits:
      max_tokens: { max: 4096, default: 1024, on_exceed: clamp }
      max_n: { max: 4 }
      extra_paths: ["/v1/files*", "/v1/messages/batches/*", "/v1/audio/*"]
  - name: public
    priority: 10
    match: { teams: [public] }
    limits:
      models: { allow: ["gpt-4o-mini", "claude-haiku-*"], deny: ["o*"] }
      max_tokens: { max: 512, on_exceed: reject }
      max_n: { max: 1 }
      temperature: { min: 0, max: 1 }
      tools: { allow: [search_docs] }
      max_tool_iterations: { max: 2 }
      extra_paths: ["/v1/files*", "/v1/audio/*"]
"#;

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:0" }}
admin: {{ listen: "127.0.0.1:0" }}
providers:
  - name: oai
    kind: openai
    base_url: http://{upstream}/v1
    api_key: ${{WARDEN_HARDENING_KEY}}
    extra_paths: ["/v1/files*", "/v1/anything*", "/v1/assistants*", "/v1/audio/*"]
  - name: ant
    kind: anthropic
    base_url: http://{upstream}
    api_key: ${{WARDEN_HARDENING_KEY}}
    extra_paths: ["/v1/messages/batches/*"]
routes:
  - {{ model: "gpt-*", provider: oai }}
  - {{ model: "o*", provider: oai }}
  - {{ model: "claude-*", provider: ant }}
aliases:
  haiku: claude-haiku-4-5
keys:
  - {{ name: demo, sha256: {DEMO_SHA}, team: demo }}
  - {{ name: public-web, sha256: 76dfd30f65102d5924e08d70fca43cfc1ef108ba1ef51527fe477336a06d0f40, team: public }}
"#
    )
}

struct Env {
    up: Lenient,
    proxy: TestProxy,
    _cd: ConfigDir,
}

async fn start_with(policies: &str) -> Env {
    std::env::set_var("WARDEN_HARDENING_KEY", UPSTREAM_KEY);
    let up = Lenient::start().await;
    let cd = ConfigDir::new(&config(up.addr), &[("p.yaml", policies)]);
    let proxy = TestProxy::start_from(&cd).await;
    Env { up, proxy, _cd: cd }
}

async fn start() -> Env {
    start_with(POLICIES).await
}

impl Env {
    async fn post(&self, path: &str, key: (&str, &str), body: &str) -> Resp {
        post(&self.proxy.url(path), &[key, ("content-type", "application/json")], body).await
    }
}

fn chat(extra: Value) -> String {
    let mut body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body.to_string()
}

#[tokio::test]
async fn encoded_and_case_variant_paths_meet_the_chat_rules() {
    let env = start().await;
    let big = chat(json!({"max_tokens": 100000}));
    for path in ["/v1/chat/c%6fmpletions", "/v1/%63hat/completions", "/v1/Chat/Completions", "/v1/CHAT/COMPLETIONS"] {
        let r = env.post(path, PUBLIC, &big).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "policy_violation", "{path}");
        assert_eq!(r.json()["error"]["param"], "max_tokens", "{path}");
    }
    assert_eq!(env.up.count(), 0);
    // A harmless request on an encoded path is forwarded on the path warden classified.
    let r = env.post("/v1/chat/c%6fmpletions", PUBLIC, &chat(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.up.last().raw_path, "/v1/chat/completions");
    // Escapes an upstream could read as something else are refused outright.
    for path in ["/v1/chat%2Fcompletions", "/v1/chat/completions%00", "/v1/chat/completions;x", "/v1/chat/completions/"]
    {
        let r = env.post(path, PUBLIC, &chat(json!({}))).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    assert_eq!(env.up.count(), 1);
}

#[tokio::test]
async fn repeated_keys_are_refused_on_every_path_at_any_depth() {
    let env = start().await;
    let bodies = [
        ("/v1/files", r#"{"model":"gpt-4o-mini","model":"o3-mini","n":8,"temperature":2}"#, "model"),
        ("/v1/chat/completions", r#"{"model":"gpt-4o-mini","mo\u0064el":"o3-mini","messages":[]}"#, "model"),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","role":"system","content":"x"}]}"#,
            "messages[0].role",
        ),
        ("/v1/files", r#"{"purpose":"x","meta":{"a":1,"a":2}}"#, "meta.a"),
    ];
    for (path, body, at) in bodies {
        let r = env.post(path, PUBLIC, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], at, "{body}");
    }
    assert_eq!(env.up.count(), 0);
}

#[tokio::test]
async fn pass_through_json_is_decided_by_the_same_rules() {
    let env = start().await;
    let cases = [
        (r#"{"model":"o3-mini","purpose":"batch"}"#, 403, "limits.models"),
        (r#"{"model":"gpt-4o-mini","n":8}"#, 400, "limits.max_n"),
        (r#"{"model":"gpt-4o-mini","temperature":2}"#, 400, "limits.temperature"),
        (r#"{"model":"gpt-4o-mini","max_output_tokens":100000}"#, 400, "limits.max_tokens"),
        (r#"{"model":"gpt-4o-mini","tools":[{"type":"code_interpreter"}]}"#, 400, "limits.tools"),
        (r#"{"model":"gpt-4o-mini", "#, 400, ""),
    ];
    for (body, status, rule) in cases {
        let r = env.post("/v1/files", PUBLIC, body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(rule), "{body}: {}", r.text());
    }
    assert_eq!(env.up.count(), 0);
    let r = env.post("/v1/files", PUBLIC, r#"{"model":"gpt-4o-mini","purpose":"assistants"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.up.last().route, "/v1/files");
}

#[tokio::test]
async fn methods_other_than_get_post_delete_never_reach_the_provider() {
    let env = start().await;
    for m in ["TRACE", "PUT", "PATCH", "OPTIONS", "HEAD"] {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        let r = send(method, &env.proxy.url("/v1/anything"), &[BEARER], "").await;
        assert_eq!(r.status, 405, "{m}: {}", r.text());
        assert!(!r.text().contains(UPSTREAM_KEY));
    }
    // CONNECT carries an authority, not a path: refused before any method check.
    let r = send(Method::CONNECT, &env.proxy.url("/v1/anything"), &[BEARER], "").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(env.up.count(), 0);
    let r = send(Method::DELETE, &env.proxy.url("/v1/files/file-1"), &[BEARER], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.up.last().method, "DELETE");
}

#[tokio::test]
async fn unnamed_paths_need_the_provider_and_every_restrictive_policy() {
    let env = start().await;
    // Not on the provider's list: 404, whatever the key.
    let r = get(&env.proxy.url("/v1/fine_tuning/jobs"), &[BEARER]).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unknown_url");
    // On the provider's list but not on the policies' lists: 403 naming the rule.
    let r = get(&env.proxy.url("/v1/assistants"), &[BEARER]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("limits.extra_paths"));
    // Legacy Anthropic completions are not a named endpoint, so they are refused too.
    let r = env.post("/v1/complete", XKEY, r#"{"model":"claude-haiku-4-5","max_tokens_to_sample":100000}"#).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(env.up.count(), 0);
    let r = get(&env.proxy.url("/v1/files"), &[BEARER]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.up.count(), 1);
}

fn batch(items: &[Value]) -> String {
    let requests: Vec<Value> =
        items.iter().enumerate().map(|(i, p)| json!({"custom_id": format!("r{i}"), "params": p})).collect();
    json!({ "requests": requests }).to_string()
}

fn item(model: &str, max_tokens: u64) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn message_batches_check_each_nested_request_as_if_sent_alone() {
    let env = start().await;
    let over = batch(&[item("claude-haiku-4-5", 100), item("claude-haiku-4-5", 100000)]);
    let r = env.post("/v1/messages/batches", PUBLIC_X, &over).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("requests[1]") && msg.contains("limits.max_tokens"), "{msg}");
    let denied = batch(&[item("claude-haiku-4-5", 100), item("claude-opus-4-1", 100)]);
    let r = env.post("/v1/messages/batches", PUBLIC_X, &denied).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let dup = r#"{"requests":[{"custom_id":"a","params":{"model":"claude-haiku-4-5","model":"claude-opus-4-1","max_tokens":1,"messages":[]}}]}"#;
    assert_eq!(env.post("/v1/messages/batches", PUBLIC_X, dup).await.status, 400);
    let mixed = batch(&[item("claude-haiku-4-5", 100), item("gpt-4o-mini", 100)]);
    assert_eq!(env.post("/v1/messages/batches", PUBLIC_X, &mixed).await.status, 400);
    assert_eq!(env.up.count(), 0);

    // Allowed items are forwarded; aliases and clamps apply inside each one.
    let ok = batch(&[item("haiku", 100), item("claude-haiku-4-5", 9000)]);
    let r = env.post("/v1/messages/batches", XKEY, &ok).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = env.up.last().json.unwrap();
    assert_eq!(seen["requests"][0]["params"]["model"], "claude-haiku-4-5");
    assert_eq!(seen["requests"][1]["params"]["max_tokens"], 4096);
    assert_eq!(env.up.last().headers["x-api-key"], UPSTREAM_KEY);
    // Reading a batch back is a pass-through path, listed by the provider and the policy.
    let r = get(&env.proxy.url("/v1/messages/batches/msgbatch_1"), &[XKEY, ("anthropic-version", "2023-06-01")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn file_batches_are_refused_unless_a_policy_allows_them() {
    let env = start().await;
    let body = r#"{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}"#;
    let r = env.post("/v1/batches", BEARER, body).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("allow_file_batches"));
    assert_eq!(env.up.count(), 0);
    // Listing batches is a read, not a batch.
    let r = get(&env.proxy.url("/v1/batches"), &[BEARER]).await;
    assert_eq!(r.status, 404, "{}", r.text());

    let allowing = format!(
        "{POLICIES}  - name: batch-jobs\n    match: {{ keys: [demo] }}\n    limits:\n      allow_file_batches: true\n      extra_paths: [\"/v1/files*\", \"/v1/messages/batches/*\"]\n"
    );
    let env = start_with(&allowing).await;
    assert_eq!(env.post("/v1/batches", BEARER, body).await.status, 200);
    assert_eq!(env.post("/v1/batches", PUBLIC, body).await.status, 403);
    assert_eq!(env.up.count(), 1);
}

#[tokio::test]
async fn legacy_and_provider_side_tool_parameters_meet_the_tool_rules() {
    let env = start().await;
    let round = |i: u32| {
        vec![
            json!({"role": "assistant", "content": null, "function_call": {"name": "search_docs", "arguments": "{}"}}),
            json!({"role": "function", "name": "search_docs", "content": format!("r{i}")}),
        ]
    };
    let mut history = vec![json!({"role": "user", "content": "go"})];
    for i in 0..3 {
        history.extend(round(i));
    }
    let cases = [
        (chat(json!({"functions": [{"name": "run_shell", "parameters": {}}]})), "/v1/chat/completions", "limits.tools"),
        (
            json!({"model": "gpt-4o-mini", "messages": history}).to_string(),
            "/v1/chat/completions",
            "limits.max_tool_iterations",
        ),
        (
            json!({"model": "gpt-4o-mini", "prompt": "x", "best_of": 8, "n": 1}).to_string(),
            "/v1/completions",
            "limits.max_n",
        ),
        (
            json!({"model": "gpt-4o-mini", "input": [
                {"type": "custom_tool_call", "call_id": "a", "name": "search_docs", "input": "q"},
                {"type": "custom_tool_call_output", "call_id": "a", "output": "1"},
                {"type": "custom_tool_call", "call_id": "b", "name": "search_docs", "input": "q"},
                {"type": "custom_tool_call_output", "call_id": "b", "output": "2"},
                {"type": "custom_tool_call", "call_id": "c", "name": "search_docs", "input": "q"},
                {"type": "custom_tool_call_output", "call_id": "c", "output": "3"}
            ]})
            .to_string(),
            "/v1/responses",
            "limits.max_tool_iterations",
        ),
        (
            chat(json!({"max_completion_tokens": 100, "max_tokens": 100000})),
            "/v1/chat/completions",
            "limits.max_tokens",
        ),
    ];
    for (body, path, rule) in cases {
        let r = env.post(path, PUBLIC, &body).await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.text());
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(rule), "{rule}: {}", r.text());
    }
    let anthropic = [
        json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [],
               "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "crm"}]}),
        json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [],
               "tools": [{"type": "bash_20250124", "name": "search_docs"}]}),
    ];
    for body in anthropic {
        let r = env.post("/v1/messages", PUBLIC_X, &body.to_string()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("limits.tools"), "{}", r.text());
    }
    assert_eq!(env.up.count(), 0);
}

#[tokio::test]
async fn compressed_bodies_are_refused_with_415() {
    let env = start().await;
    for path in ["/v1/files", "/v1/chat/completions"] {
        let r = post(
            &env.proxy.url(path),
            &[PUBLIC, ("content-encoding", "gzip"), ("content-type", "application/json")],
            "\u{1f}\u{8b}not really gzip",
        )
        .await;
        assert_eq!(r.status, 415, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(env.up.count(), 0);
}

#[tokio::test]
async fn upstream_failures_name_the_provider_not_its_address() {
    std::env::set_var("WARDEN_HARDENING_KEY", UPSTREAM_KEY);
    let yaml = config("127.0.0.1:9".parse().unwrap());
    let cd = ConfigDir::new(&yaml, &[]);
    let proxy = TestProxy::start_from(&cd).await;
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], &chat(json!({}))).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "upstream provider `oai` could not be reached");
    assert!(!r.text().contains("127.0.0.1"), "{}", r.text());
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut body =
        String::from("--b0undary\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n");
    for (k, v) in fields {
        body.push_str(&format!("--b0undary\r\ncontent-disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"));
    }
    body.push_str("--b0undary--\r\n");
    body
}

#[tokio::test]
async fn form_uploads_are_routed_and_checked_by_their_model_field() {
    let env = start().await;
    let ct = ("content-type", "multipart/form-data; boundary=b0undary");
    let url = env.proxy.url("/v1/audio/transcriptions");
    let r = post(&url, &[PUBLIC, ct], &form(&[("model", "o3-mini")])).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("limits.models"));
    let r = post(&url, &[BEARER, ct], &form(&[("model", "gpt-4o-transcribe"), ("model", "o3-mini")])).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "model");
    assert_eq!(post(&url, &[BEARER, ct], "not a form").await.status, 400);
    assert_eq!(env.up.count(), 0);
    let r = post(&url, &[BEARER, ct], &form(&[("model", "gpt-4o-transcribe")])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.up.last().route, "/v1/audio/transcriptions");
}

#[tokio::test]
async fn bodies_a_lenient_server_would_parse_differently_are_refused() {
    let env = start().await;
    let url = env.proxy.url("/v1/files");
    let form = post(&url, &[BEARER, ("content-type", "application/x-www-form-urlencoded")], "model=o3-mini&n=8").await;
    assert_eq!(form.status, 415, "{}", form.text());
    let bom = "\u{feff}{\"model\":\"o3-mini\",\"n\":8}";
    for ct in ["application/json", "application/octet-stream"] {
        let r = post(&url, &[PUBLIC, ("content-type", ct)], bom).await;
        assert_eq!(r.status, 400, "{ct}: {}", r.text());
    }
    assert_eq!(env.up.count(), 0);
}

#[tokio::test]
async fn method_and_path_override_headers_never_reach_the_provider() {
    let env = start().await;
    let headers = [
        BEARER,
        ("x-http-method-override", "TRACE"),
        ("x-http-method", "PUT"),
        ("x-method-override", "PATCH"),
        ("x-original-url", "/v1/chat/completions"),
        ("x-rewrite-url", "/v1/chat/completions"),
    ];
    let r = post(&env.proxy.url("/v1/files"), &headers, r#"{"purpose":"x"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = env.up.last();
    for (name, _) in &headers[1..] {
        assert!(!seen.headers.contains_key(*name), "{name} reached the upstream");
    }
}

#[tokio::test]
async fn fields_sent_as_null_are_replaced_never_repeated() {
    let env = start().await;
    let demo = ("authorization", "Bearer sk-warden-demo");
    // A default token limit and the stream-usage option go where the null was: a lenient
    // upstream keeps the last repeated key, so a second copy would undo the default.
    let r = env.post("/v1/chat/completions", demo, &chat(json!({"max_completion_tokens": null}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = env.up.last();
    assert_eq!(seen.json.as_ref().unwrap()["max_completion_tokens"], 1024);
    assert_eq!(String::from_utf8_lossy(&seen.body).matches("max_completion_tokens").count(), 1);
    let body = chat(json!({"stream": true, "stream_options": null}));
    let r = env.post("/v1/chat/completions", demo, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = env.up.last();
    assert_eq!(seen.json.as_ref().unwrap()["stream_options"]["include_usage"], true);
    assert_eq!(String::from_utf8_lossy(&seen.body).matches("stream_options").count(), 1);
    let r = env
        .post(
            "/v1/messages",
            demo,
            r#"{"model":"claude-haiku-4-5","max_tokens":null,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = env.up.last();
    assert_eq!(seen.json.as_ref().unwrap()["max_tokens"], 1024);
    assert_eq!(String::from_utf8_lossy(&seen.body).matches("max_tokens").count(), 1);
    // A null model is not a missing one that routing could fill in: it is refused.
    let r = env.post("/v1/chat/completions", demo, r#"{"model":null,"messages":[]}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "model");
}
