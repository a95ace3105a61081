//! Rate limits and budget alerts over real HTTP against the in-process mock: 429s at the
//! configured rate with `retry-after`, OpenAI-style `x-ratelimit-*` headers on JSON and SSE
//! responses, the concurrency cap, tokens per minute, and alerts that fire once per
//! threshold, reach a webhook, and never wait for it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const DEMO: (&str, &str) = ("authorization", "Bearer sk-warden-demo");

fn config(extra: &str) -> String {
    priced_config(extra)
}

fn chat(max_tokens: u64) -> String {
    json!({"model": "mock-1", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

async fn start(policy: &str, extra: &str) -> (TestProxy, ConfigDir) {
    let cd = ConfigDir::new(&config(extra), &[("limits.yaml", policy)]);
    (TestProxy::start_from(&cd).await, cd)
}

fn header(r: &Resp, name: &str) -> String {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test]
async fn requests_per_minute_with_headers_on_json_and_sse() {
    let (proxy, _cd) =
        start("policies:\n  - name: rl\n    rate_limits:\n      - { per: key, requests_per_minute: 4 }\n", "").await;
    let url = proxy.url("/v1/chat/completions");
    for remaining in [3, 2] {
        let r = post(&url, &[DEMO], &chat(10)).await;
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "4");
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), remaining.to_string());
        assert!(header(&r, "x-ratelimit-reset-requests").ends_with('s'), "{:?}", r.headers);
    }
    let stream =
        json!({"model": "mock-1", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = open_stream(&url, &[DEMO], &stream.to_string()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "1");
    drop(resp);
    assert_eq!(post(&url, &[DEMO], &chat(10)).await.status, 200);
    let r = post(&url, &[DEMO], &chat(10)).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("requests_per_minute"));
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=15).contains(&retry), "retry-after {retry}");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains(r#"warden_ratelimit_rejections_total{limit="requests_per_minute",policy="rl"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_concurrency_cap_holds_and_frees_its_slots() {
    let (proxy, _cd) =
        start("policies:\n  - name: rl\n    rate_limits:\n      - { per: team, max_concurrent: 2 }\n", "").await;
    let url = proxy.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &[DEMO, ("x-mock", "delay=400ms")], &chat(10)).await.status.as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    // The slots came back.
    assert_eq!(post(&url, &[DEMO], &chat(10)).await.status, 200);
}

#[tokio::test]
async fn tokens_per_minute_counts_the_worst_case_then_the_real_usage() {
    let (proxy, _cd) =
        start("policies:\n  - name: rl\n    rate_limits:\n      - { per: key, tokens_per_minute: 1000 }\n", "").await;
    let url = proxy.url("/v1/chat/completions");
    // 600 tokens of output limit: admitted on the full allowance; the reply uses 5.
    let r = post(&url, &[DEMO, ("x-mock", "tokens=5")], &chat(600)).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "1000");
    // The estimate was corrected down to the usage, so another 600 fits.
    let r = post(&url, &[DEMO, ("x-mock", "tokens=600")], &chat(600)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&url, &[DEMO], &chat(600)).await;
    assert_eq!(r.status, 429);
    assert!(r.text().contains("tokens_per_minute"));
}

/// A webhook receiver: counts POSTs and keeps their bodies.
async fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let sink = sink.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/hook"), seen)
}

const ALERTING: &str = r#"
policies:
  - name: caps
    budgets:
      - { name: daily, per: key, window: day, usd: 0.1, alerts: [0.5, 0.8] }
"#;

#[tokio::test]
async fn alerts_fire_once_per_threshold_and_reach_the_webhook() {
    let (hook, seen) = receiver().await;
    let (proxy, _cd) = start(ALERTING, &format!("alerts: {{ webhook: \"{hook}\" }}")).await;
    let url = proxy.url("/v1/chat/completions");
    // $0.03 a request: $0.06 crosses 50%, $0.09 crosses 80%, then the budget refuses.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(post(&url, &[DEMO, ("x-mock", "tokens=30")], &chat(30)).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alerts = seen.lock().unwrap().clone();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[0]["threshold"], 0.5);
    assert_eq!(alerts[1]["threshold"], 0.8);
    assert_eq!(alerts[0]["budget"], "daily");
    assert_eq!(alerts[0]["scope"], "key:demo");
    assert_eq!(alerts[0]["window"], "day");
    assert_eq!(alerts[0]["limit_usd"], 0.1);
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains(r#"warden_budget_alerts_total{budget="caps/daily",scope="key:demo",threshold="0.5"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("warden_cost_usd_total{key=\"demo\""), "{metrics}");
    assert!(metrics.contains(r#"warden_budget_remaining_usd{budget="caps/daily",scope="key:demo"}"#), "{metrics}");
}

#[tokio::test]
async fn a_dead_webhook_never_holds_a_request() {
    // A receiver that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            held.push(s);
        }
    });
    let (proxy, _cd) = start(ALERTING, &format!("alerts: {{ webhook: \"http://{addr}/hook\" }}")).await;
    let url = proxy.url("/v1/chat/completions");
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(post(&url, &[DEMO, ("x-mock", "tokens=30")], &chat(30)).await.status, 200);
    }
    // The webhook's own timeout is 10 s a try; the requests did not wait for any of it.
    assert!(started.elapsed() < Duration::from_secs(5), "requests waited for the webhook");
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted.load(Ordering::Relaxed) >= 1, "the alert was never sent");
}

#[tokio::test]
async fn prompt_tokens_tiktoken_counts_openai_prompts_exactly() {
    let text = "hello world, this is a prompt of some length. ".repeat(10);
    let body =
        json!({"model": "mock-1", "max_tokens": 100, "messages": [{"role": "user", "content": text}]}).to_string();
    let policy = "policies:\n  - name: rl\n    rate_limits:\n      - { per: key, tokens_per_minute: 100000 }\n";
    let remaining = |extra: &'static str| {
        let body = body.clone();
        async move {
            let (proxy, _cd) = start(policy, extra).await;
            let r = post(&proxy.url("/v1/chat/completions"), &[DEMO], &body).await;
            assert_eq!(r.status, 200);
            header(&r, "x-ratelimit-remaining-tokens").parse::<u64>().unwrap()
        }
    };
    let exact = 100_000 - 100 - (warden::pipeline::budget::tiktoken_count(&text) as u64 + 4);
    assert_eq!(remaining("prompt_tokens: tiktoken").await, exact);
    // The default estimate is conservative: every key and string value at three bytes a
    // token, plus one a value (model, role, content).
    let keys = "model".len() + "max_tokens".len() + "messages".len() + "role".len() + "content".len();
    let bytes = keys + "mock-1".len() + "user".len() + text.len();
    let estimated = 100_000 - 100 - (bytes.div_ceil(3) as u64 + 3);
    assert_eq!(remaining("").await, estimated);
    assert!(estimated < exact);
}
