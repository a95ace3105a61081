//! Retries, fallbacks, circuit breakers, agent sessions and the audit log, over real HTTP
//! with the mock's fault directives (`times=N` fails the first N requests carrying the same
//! `x-mock` value; `on=NAME` fails only in the mock provider of that name). Every test also
//! reads the request's audit record back from the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

struct Setup {
    proxy: TestProxy,
    mock: TestMock,
    audit: PathBuf,
    _cd: ConfigDir,
}

/// Providers: `primary` and `backup` (in-process mocks), `http` (the mock over HTTP),
/// `down` (nothing listens). `extra` is appended to proxy.yaml.
async fn setup(policy: &str, extra: &str) -> Setup {
    let mock = TestMock::start().await;
    let yaml = format!(
        r#"
server: {{ listen: "127.0.0.1:0" }}
admin: {{ listen: "127.0.0.1:0" }}
providers:
  - {{ name: primary, kind: mock, retries: {{ max_attempts: 3, deadline: 10s }}, breaker: {{ failures: 2, cool_down: 1s }} }}
  - {{ name: backup, kind: mock }}
  - name: http
    kind: openai
    base_url: http://{addr}/v1
    api_key: ${{UPSTREAM_KEY}}
    retries: {{ max_attempts: 3, deadline: 2s }}
  - name: down
    kind: openai
    base_url: http://127.0.0.1:9/v1
    api_key: ${{UPSTREAM_KEY}}
    timeouts: {{ connect: 500ms }}
    retries: {{ max_attempts: 2, deadline: 5s }}
routes:
  - {{ model: "mock-*", provider: primary, fallbacks: [backup] }}
  - {{ model: "solo-*", provider: primary }}
  - {{ model: "swap-1", provider: primary, fallbacks: ["backup:mock-2"] }}
  - {{ model: "gpt-*", provider: http }}
  - {{ model: "down-*", provider: down }}
  - {{ model: "flaky-*", provider: down, fallbacks: ["backup:mock-1"] }}
keys:
  - {{ name: demo, sha256: {DEMO_SHA}, team: demo }}
audit: {{ path: logs/audit.jsonl }}
{extra}
"#,
        addr = mock.addr,
    );
    let cd = ConfigDir::new(&yaml, &[("p.yaml", policy)]);
    std::env::set_var("UPSTREAM_KEY", UPSTREAM_SECRET);
    let proxy = TestProxy::start_from(&cd).await;
    // Relative to proxy.yaml's folder; the folder is created.
    let audit = cd.dir.path().join("logs/audit.jsonl");
    Setup { proxy, mock, audit, _cd: cd }
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn header(r: &Resp, name: &str) -> String {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// The audit record of a request, once the writer has it.
async fn audit_record(path: &Path, r: &Resp) -> Value {
    let id = header(r, "x-warden-request-id");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(&format!("\"request_id\":\"{id}\""))) {
            return serde_json::from_str(line).unwrap();
        }
        assert!(Instant::now() < deadline, "no audit record for {id} in {}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attempts(rec: &Value) -> Vec<(String, Option<u64>, Option<String>, u64)> {
    rec["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap().to_string(),
                a["status"].as_u64(),
                a["error"].as_str().map(str::to_string),
                a["wait_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn metrics(s: &Setup) -> String {
    get(&s.proxy.admin_url("/metrics"), &[]).await.text()
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
    let s = setup("policies: []\n", "").await;
    let started = Instant::now();
    let r = post(
        &s.proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "status=429,retry-after=1,times=1")],
        &chat("gpt-4o"),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(took >= Duration::from_millis(950) && took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(s.mock.stats.requests.load(Ordering::SeqCst), 2);
    assert_eq!(header(&r, "x-warden-upstream"), "http/gpt-4o");
    let rec = audit_record(&s.audit, &r).await;
    let a = attempts(&rec);
    assert_eq!(a.len(), 2);
    assert_eq!((a[0].1, a[0].2.as_deref(), a[0].3), (Some(429), Some("status_429"), 0));
    assert_eq!((a[1].1, a[1].2.as_deref()), (Some(200), None));
    assert!((950..=1100).contains(&a[1].3), "waited {} ms", a[1].3);
    assert_eq!(rec["decision"], "allowed");
    assert_eq!(rec["key"], "demo");
    let m = metrics(&s).await;
    assert!(m.contains(r#"warden_upstream_attempts_total{outcome="retryable",provider="http"} 1"#), "{m}");
    assert!(m.contains("warden_retry_wait_seconds_count 1"), "{m}");
}

#[tokio::test]
async fn repeated_503s_exhaust_the_attempts_and_the_last_passes_unchanged() {
    let s = setup("policies: []\n", "").await;
    let r =
        post(&s.proxy.url("/v1/chat/completions"), &[BEARER, ("x-mock", "status=503,retry-after=0")], &chat("gpt-4o"))
            .await;
    assert_eq!(r.status, 503);
    // The upstream's own error body and headers.
    assert_eq!(r.json()["error"]["message"], "mock provider: simulated 503 error");
    assert_eq!(header(&r, "retry-after"), "0");
    assert_eq!(s.mock.stats.requests.load(Ordering::SeqCst), 3);
    let a = attempts(&audit_record(&s.audit, &r).await);
    assert_eq!(a.iter().map(|a| a.1).collect::<Vec<_>>(), [Some(503); 3]);
    // A 400 is the request's fault: never retried.
    let r = post(&s.proxy.url("/v1/chat/completions"), &[BEARER, ("x-mock", "status=400")], &chat("gpt-4o")).await;
    assert_eq!(r.status, 400);
    assert_eq!(s.mock.stats.requests.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_refused_connection_is_retried_and_can_fall_back() {
    let s = setup("policies: []\n", "").await;
    let r = post(&s.proxy.url("/v1/chat/completions"), &[BEARER], &chat("down-1")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let a = attempts(&audit_record(&s.audit, &r).await);
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(a.iter().all(|a| a.0 == "down" && a.2.as_deref() == Some("upstream_connect")), "{a:?}");
    let r = post(&s.proxy.url("/v1/chat/completions"), &[BEARER], &chat("flaky-1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "x-warden-upstream"), "backup/mock-1");
    let rec = audit_record(&s.audit, &r).await;
    assert_eq!(attempts(&rec).iter().map(|a| a.0.as_str()).collect::<Vec<_>>(), ["down", "down", "backup"]);
    assert_eq!(rec["answered_by"], "backup/mock-1");
    assert!(metrics(&s).await.contains(r#"warden_fallbacks_total{from="down/flaky-1",to="backup/mock-1"} 1"#));
}

#[tokio::test]
async fn a_stream_cut_after_its_first_chunks_is_not_retried() {
    let s = setup("policies: []\n", "").await;
    let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = post(&s.proxy.url("/v1/chat/completions"), &[BEARER, ("x-mock", "cut-after=3")], &body).await;
    assert_eq!(r.status, 200);
    let events = sse_data(&r.text());
    assert!(events.iter().any(|e| e.contains("\"error\"")), "{events:?}");
    assert_eq!(s.mock.stats.requests.load(Ordering::SeqCst), 1);
    assert_eq!(attempts(&audit_record(&s.audit, &r).await).len(), 1);
}

#[tokio::test]
async fn a_wait_past_the_deadline_is_not_waited() {
    let s = setup("policies: []\n", "").await;
    let started = Instant::now();
    let r =
        post(&s.proxy.url("/v1/chat/completions"), &[BEARER, ("x-mock", "status=429,retry-after=5")], &chat("gpt-4o"))
            .await;
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(r.status, 429);
    assert_eq!(header(&r, "retry-after"), "5");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(attempts(&audit_record(&s.audit, &r).await).len(), 1);
    // A policy can give more time: 5 s fits in 60 s.
    let s = setup("policies:\n  - name: patient\n    retries: { max_attempts: 2, deadline: 60s }\n", "").await;
    let started = Instant::now();
    let r = post(
        &s.proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "status=429,retry-after=1,times=1")],
        &chat("gpt-4o"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(950));
}

#[tokio::test]
async fn a_failing_primary_falls_back_to_the_second_provider_and_its_model() {
    let s = setup("policies: []\n", "").await;
    let r = post(
        &s.proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "status=503,retry-after=0,on=primary")],
        &chat("mock-1"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "x-warden-upstream"), "backup/mock-1");
    let rec = audit_record(&s.audit, &r).await;
    assert_eq!(
        attempts(&rec).iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        ["primary", "primary", "primary", "backup"]
    );
    // Another model at the fallback: the body is rewritten for it, and it answers as itself.
    let r = post(
        &s.proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "status=500,retry-after=0,on=primary,tokens=9")],
        &chat("swap-1"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "x-warden-upstream"), "backup/mock-2");
    assert_eq!(r.json()["model"], "mock-2");
}

#[tokio::test]
async fn the_breaker_opens_routes_to_the_fallback_probes_and_closes() {
    let s = setup("policies:\n  - name: once\n    retries: { max_attempts: 1 }\n", "").await;
    let url = s.proxy.url("/v1/chat/completions");
    assert!(metrics(&s).await.contains(r#"warden_circuit_state{provider="primary"} 0"#));
    let failing = ("x-mock", "status=503,on=primary");
    for _ in 0..2 {
        let r = post(&url, &[BEARER, failing], &chat("mock-1")).await;
        assert_eq!(header(&r, "x-warden-upstream"), "backup/mock-1");
    }
    assert!(metrics(&s).await.contains(r#"warden_circuit_state{provider="primary"} 2"#));
    // Open: the primary is not even tried, although it would answer now.
    let r = post(&url, &[BEARER], &chat("mock-1")).await;
    assert_eq!(header(&r, "x-warden-upstream"), "backup/mock-1");
    let rec = audit_record(&s.audit, &r).await;
    assert_eq!(attempts(&rec)[0], ("primary".into(), None, Some("circuit_open".into()), 0));
    // Without a fallback an open circuit is a 503 in the API's own format.
    let r = post(&url, &[BEARER], &chat("solo-1")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "circuit_open");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The cool-down is over: one probe goes to the primary, succeeds, and closes the circuit.
    let r = post(&url, &[BEARER], &chat("mock-1")).await;
    assert_eq!(header(&r, "x-warden-upstream"), "primary/mock-1");
    assert!(metrics(&s).await.contains(r#"warden_circuit_state{provider="primary"} 0"#));
    let r = post(&url, &[BEARER], &chat("solo-1")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_session_is_stopped_at_its_request_and_duration_caps() {
    let policy = "policies:\n  - name: agents\n    sessions: { max_requests: 3, max_duration: 1s }\n";
    let s = setup(policy, "").await;
    let url = s.proxy.url("/v1/chat/completions");
    for _ in 0..3 {
        assert_eq!(post(&url, &[BEARER, ("x-warden-session", "run-1")], &chat("mock-1")).await.status, 200);
    }
    let r = post(&url, &[BEARER, ("x-warden-session", "run-1")], &chat("mock-1")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "session_limit_exceeded");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("max_requests"), "{}", r.text());
    assert_eq!(header(&r, "x-should-retry"), "false");
    let rec = audit_record(&s.audit, &r).await;
    assert_eq!((rec["decision"].as_str(), rec["session"].as_str()), (Some("blocked"), Some("run-1")));
    // Another session, and requests in none, are not affected.
    assert_eq!(post(&url, &[BEARER, ("x-warden-session", "run-2")], &chat("mock-1")).await.status, 200);
    assert_eq!(post(&url, &[BEARER], &chat("mock-1")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(post(&url, &[BEARER, ("x-warden-session", "run-2")], &chat("mock-1")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = post(&url, &[BEARER, ("x-warden-session", "run-2")], &chat("mock-1")).await;
    assert_eq!(r.status, 429);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("max_duration"), "{}", r.text());
    let m = metrics(&s).await;
    assert!(m.contains(r#"warden_agent_session_blocks_total{limit="max_requests"} 1"#), "{m}");
    assert!(m.contains(r#"warden_agent_session_blocks_total{limit="max_duration"} 1"#), "{m}");
    // Anthropic's metadata.user_id names the session when the policy says so.
    let policy = "policies:\n  - name: agents\n    sessions: { id: metadata.user_id, max_requests: 1 }\n";
    let s = setup(policy, "").await;
    let body = json!({"model": "mock-1", "max_tokens": 16, "metadata": {"user_id": "u1"}, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let url = s.proxy.url("/v1/messages");
    assert_eq!(post(&url, &[XKEY], &body).await.status, 200);
    let r = post(&url, &[XKEY], &body).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn an_unwritable_audit_path_never_fails_a_request() {
    let mock = TestMock::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The audit file's folder would have to be a regular file.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let yaml =
        format!("{}audit: {{ path: \"{}\" }}\n", standard_config(mock.addr), blocker.join("audit.jsonl").display());
    let proxy = TestProxy::start(&yaml).await;
    for _ in 0..3 {
        assert_eq!(post(&proxy.url("/v1/chat/completions"), &[BEARER], CHAT).await.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = get(&proxy.admin_url("/metrics"), &[]).await.text();
        let errors = m
            .lines()
            .find_map(|l| l.strip_prefix("warden_audit_write_errors_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if errors >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_audit_record_holds_the_decision_tokens_cost_and_tool_calls_never_keys() {
    let s = setup("policies:\n  - name: caps\n    limits: { max_tokens: { max: 50 } }\n", "").await;
    let url = s.proxy.url("/v1/chat/completions");
    let r = post(
        &url,
        &[BEARER, ("x-mock", "tool=get_weather"), ("x-mock-tool-args", r#"{"city":"Paris"}"#)],
        &chat("mock-1"),
    )
    .await;
    assert_eq!(r.status, 200);
    let rec = audit_record(&s.audit, &r).await;
    assert_eq!(rec["policies"], json!(["caps"]));
    assert_eq!(rec["model_requested"], "mock-1");
    assert!(rec["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(rec["tool_calls"], json!([{"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}]));
    assert!(rec["latency_ms"].as_f64().unwrap() > 0.0);
    let blocked =
        json!({"model": "mock-1", "max_tokens": 500, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = post(&url, &[BEARER], &blocked).await;
    assert_eq!(r.status, 400);
    let rec = audit_record(&s.audit, &r).await;
    assert_eq!((rec["decision"].as_str(), rec["reason"].as_str()), (Some("blocked"), Some("policy_violation")));
    let text = std::fs::read_to_string(&s.audit).unwrap();
    assert!(!text.contains(DEMO_KEY) && !text.contains(UPSTREAM_SECRET));
}

#[tokio::test]
async fn a_fallback_the_policies_refuse_is_never_used() {
    // swap-1 falls back to mock-2, which this policy does not allow.
    let policy = "policies:\n  - name: models\n    limits: { models: { allow: [mock-1, swap-1] } }\n";
    let s = setup(policy, "").await;
    let r = post(
        &s.proxy.url("/v1/chat/completions"),
        &[BEARER, ("x-mock", "status=500,retry-after=0,on=primary")],
        &chat("swap-1"),
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.text());
    let rec = audit_record(&s.audit, &r).await;
    assert!(attempts(&rec).iter().all(|a| a.0 == "primary"), "{rec}");
}

#[tokio::test]
async fn a_budget_reserves_at_the_dearest_model_a_fallback_may_answer_with() {
    let prices = "prices:\n  mock-1: { input: 1, output: 1 }\n  swap-1: { input: 1, output: 1 }\n  mock-2: { input: 1, output: 1000 }\n";
    let policy = "policies:\n  - name: caps\n    budgets:\n      - { name: daily, per: key, window: day, usd: 0.01 }\n";
    let s = setup(policy, prices).await;
    let body = |model: &str| {
        json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}).to_string()
    };
    let url = s.proxy.url("/v1/chat/completions");
    // 16 output tokens of mock-2 would cost $0.016: more than the budget holds.
    let r = post(&url, &[BEARER], &body("swap-1")).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "budget_exceeded");
    // mock-1 falls back to mock-1 elsewhere: its own price.
    assert_eq!(post(&url, &[BEARER], &body("mock-1")).await.status, 200);
}

#[tokio::test]
async fn a_policy_can_have_the_audit_record_capture_cut_text() {
    let s = setup("policies:\n  - name: capture\n    audit: { capture: 12 }\n", "").await;
    let r = post(&s.proxy.url("/v1/chat/completions"), &[BEARER], &chat("mock-1")).await;
    assert_eq!(r.status, 200);
    let rec = audit_record(&s.audit, &r).await;
    assert_eq!((rec["prompt"].as_str(), rec["output"].as_str()), (Some("hi"), Some("Hello from t")));
    // Without the policy, no text at all.
    let s = setup("policies: []\n", "").await;
    let r = post(&s.proxy.url("/v1/chat/completions"), &[BEARER], &chat("mock-1")).await;
    let rec = audit_record(&s.audit, &r).await;
    assert!(rec.get("prompt").is_none() && rec.get("output").is_none(), "{rec}");
}
