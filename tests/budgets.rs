//! Budgets over real HTTP against the in-process mock (its usage: input = body bytes / 4,
//! output = the `tokens` directive, capped by the request's limit): worst cases reserved
//! before the upstream call, 429s in the caller's format naming the budget, concurrent
//! requests that cannot share the same dollars, settlement from the reported usage, and
//! reservations released by failures and dropped streams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use common::*;
use serde_json::{json, Value};

fn config() -> String {
    priced_config("")
}

const DEMO: (&str, &str) = ("authorization", "Bearer sk-warden-demo");

fn chat(max_tokens: u64) -> String {
    json!({"model": "mock-1", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

async fn start(policy: &str) -> (TestProxy, ConfigDir) {
    let cd = ConfigDir::new(&config(), &[("budgets.yaml", policy)]);
    (TestProxy::start_from(&cd).await, cd)
}

async fn spend(proxy: &TestProxy) -> Vec<Value> {
    let r = get(&proxy.admin_url("/admin/spend"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["budgets"].as_array().unwrap().clone()
}

/// The accounts once nothing is reserved any more (dropped requests settle on their own).
async fn released(proxy: &TestProxy) -> Vec<Value> {
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = spend(proxy).await;
        if rows.iter().all(|r| usd(&r["reserved_usd"]) == 0.0) {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("a reservation was never released: {rows:?}");
}

fn usd(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

/// What the mock charges for `chat(max)` answered with `tokens` output tokens.
fn cost(body: &str, tokens: u64) -> f64 {
    (body.len() as u64 / 4) as f64 * 1e-6 + tokens as f64 * 1e-3
}

#[tokio::test]
async fn an_exhausted_budget_is_a_429_naming_it_and_spend_is_the_reported_usage() {
    let (proxy, _cd) = start(
        r#"
policies:
  - name: caps
    match: { teams: [demo] }
    budgets:
      - { name: per-key-daily, per: key, window: day, usd: 0.2 }
"#,
    )
    .await;
    let body = chat(50);
    let mut ok = 0;
    let last = loop {
        let r = post(&proxy.url("/v1/chat/completions"), &[DEMO, ("x-mock", "tokens=40")], &body).await;
        if r.status != 200 {
            break r;
        }
        ok += 1;
        assert!(ok < 10, "the budget never ran out");
    };
    // Each answer costs 40 output tokens ($0.04) but reserves 50 ($0.05): four fit in $0.20
    // ($0.16 spent), and a fifth would need $0.05 of the $0.04 left.
    assert_eq!(ok, 4);
    assert_eq!(last.status, 429, "{}", last.text());
    let e = &last.json()["error"];
    assert_eq!(e["code"], "budget_exceeded");
    assert_eq!(e["type"], "rate_limit_error");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("per-key-daily") && msg.contains("key `demo`") && msg.contains("day"), "{msg}");
    let retry: u64 = last.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 86_400);
    let rows = spend(&proxy).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["scope"], "key:demo");
    assert!((usd(&rows[0]["spent_usd"]) - 4.0 * cost(&body, 40)).abs() < 1e-9, "{rows:?}");
    assert_eq!(usd(&rows[0]["reserved_usd"]), 0.0);
    // Another key of another team is not under this policy.
    let r = post(&proxy.url("/v1/chat/completions"), &[PUBLIC], &body).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn concurrent_requests_cannot_spend_the_same_dollars() {
    let (proxy, _cd) = start(
        r#"
policies:
  - name: caps
    budgets:
      - { name: all, per: global, window: month, usd: 1.0 }
"#,
    )
    .await;
    // Each request reserves 100 output tokens ($0.10 + input) and uses 100: nine fit in $1
    // at once, and the mock's delay keeps all 200 in flight together.
    let body = chat(100);
    let url = proxy.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { post(&url, &[DEMO, ("x-mock", "tokens=100,delay=300ms")], &body).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().as_u16());
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 200 - admitted, "{statuses:?}");
    let one = cost(&body, 100);
    assert_eq!(admitted, (1.0 / one).floor() as usize, "admitted {admitted}");
    let rows = spend(&proxy).await;
    let spent = usd(&rows[0]["spent_usd"]);
    assert!(spent <= 1.0, "overspent: {spent}");
    assert_eq!(usd(&rows[0]["reserved_usd"]), 0.0, "a reservation leaked");
    // Sequential requests of a tenth of the size use the rest to within one request.
    let small = chat(10);
    while post(&url, &[DEMO, ("x-mock", "tokens=10")], &small).await.status == 200 {}
    let spent = usd(&spend(&proxy).await[0]["spent_usd"]);
    assert!(spent <= 1.0 && spent > 1.0 - cost(&small, 10) * 1.5, "spent {spent}");
}

#[tokio::test]
async fn clamp_lowers_the_output_limit_to_what_is_left() {
    let (proxy, _cd) = start(
        r#"
policies:
  - name: caps
    budgets:
      - { name: soft, per: key, window: day, usd: 0.1, on_exhausted: clamp }
"#,
    )
    .await;
    let body = chat(80);
    let url = proxy.url("/v1/chat/completions");
    let r = post(&url, &[DEMO, ("x-mock", "tokens=80")], &body).await;
    assert_eq!(r.json()["usage"]["completion_tokens"], 80);
    // $0.02 left: the next request is lowered to the 19 output tokens that still fit.
    let r = post(&url, &[DEMO, ("x-mock", "tokens=80")], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"], 19);
    let r = post(&url, &[DEMO, ("x-mock", "tokens=80")], &body).await;
    assert_eq!(r.status, 429, "too little left to be worth sending: {}", r.text());
}

#[tokio::test]
async fn failures_and_dropped_streams_release_or_settle_their_reservations() {
    let (proxy, _cd) = start(
        r#"
policies:
  - name: caps
    budgets:
      - { name: all, per: team, window: hour, usd: 5.0 }
"#,
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    // An upstream error costs nothing.
    let r = post(&url, &[DEMO, ("x-mock", "status=500")], &chat(100)).await;
    assert_eq!(r.status, 500);
    let rows = spend(&proxy).await;
    assert_eq!((usd(&rows[0]["spent_usd"]), usd(&rows[0]["reserved_usd"])), (0.0, 0.0));
    // A stream dropped half-way is charged for what was streamed, and releases the rest.
    let body = json!({"model": "mock-1", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let mut resp = open_stream(&url, &[DEMO, ("x-mock", "tokens=100,chunks=20,chunk-delay=50ms")], &body).await;
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    let first = resp.body_mut().frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(resp);
    let rows = released(&proxy).await;
    let spent = usd(&rows[0]["spent_usd"]);
    assert!(spent > 0.0 && spent < 0.1, "charged {spent} for a stream cut early");
    // A full stream is charged exactly its reported usage.
    let before = spent;
    let r = post(&url, &[DEMO, ("x-mock", "tokens=30,chunks=5")], &body).await;
    assert_eq!(r.status, 200);
    let after = usd(&spend(&proxy).await[0]["spent_usd"]);
    let with_usage = body.len() + r#","stream_options":{"include_usage":true}"#.len();
    assert!((after - before - cost(&" ".repeat(with_usage), 30)).abs() < 1e-9, "{before} → {after}");
}

#[tokio::test]
async fn unpriced_models_are_never_silently_free() {
    let cfg = config().replace("mock-1: { input: 1.0, output: 1000.0 }", "mock-9: { input: 1.0, output: 1.0 }");
    let cd = ConfigDir::new(
        &cfg,
        &[(
            "b.yaml",
            "policies:\n  - name: caps\n    budgets:\n      - { name: all, per: global, window: day, usd: 1.0 }\n",
        )],
    );
    let proxy = TestProxy::start_from(&cd).await;
    let r = post(&proxy.url("/v1/chat/completions"), &[DEMO], &chat(10)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("no price"));
}

#[tokio::test]
async fn cancellation_at_every_stage_releases_the_reservation() {
    let (proxy, cd) = start(
        r#"
policies:
  - name: caps
    budgets:
      - { name: all, per: global, window: day, usd: 100.0 }
"#,
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    // Waiting for the upstream's headers: the client gives up first.
    let slow = tokio::spawn({
        let url = url.clone();
        async move { post(&url, &[DEMO, ("x-mock", "delay=2s")], &chat(100)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(usd(&spend(&proxy).await[0]["reserved_usd"]) > 0.0, "the request should hold a reservation");
    slow.abort();
    let rows = released(&proxy).await;
    assert_eq!(usd(&rows[0]["spent_usd"]), 0.0, "nothing was generated, nothing is owed");

    // 50 streams dropped at random points: every reservation released, each charged for
    // at most what it asked for and at least for the text that reached the client.
    let body = json!({"model": "mock-1", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let mut seed = 0x2545_f491_u64;
    let mut handles = Vec::new();
    for _ in 0..50 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let frames = 1 + (seed % 15) as usize;
        let (url, body) = (url.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            use http_body_util::BodyExt;
            let mut resp = open_stream(&url, &[DEMO, ("x-mock", "tokens=100,chunks=20,chunk-delay=20ms")], &body).await;
            for _ in 0..frames {
                if resp.body_mut().frame().await.is_none() {
                    break;
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let rows = released(&proxy).await;
    let spent = usd(&rows[0]["spent_usd"]);
    assert!(spent > 0.0 && spent < 50.0 * 0.1 + 0.01, "50 cut streams charged {spent}");
    drop(cd);
}

#[tokio::test]
async fn reloads_change_limits_never_spend() {
    let (proxy, cd) =
        start("policies:\n  - name: caps\n    budgets:\n      - { name: daily, per: key, window: day, usd: 1.0 }\n")
            .await;
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..3 {
        assert_eq!(post(&url, &[DEMO, ("x-mock", "tokens=50")], &chat(50)).await.status, 200);
    }
    let before = usd(&spend(&proxy).await[0]["spent_usd"]);
    // Lower the cap below what is spent: the next request is refused, the spend is kept.
    cd.write_policy(
        "budgets.yaml",
        "policies:\n  - name: caps\n    budgets:\n      - { name: daily, per: key, window: day, usd: 0.1 }\n",
    );
    let mut refused = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        if post(&url, &[DEMO, ("x-mock", "tokens=50")], &chat(50)).await.status == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "the lower cap never applied");
    let rows = spend(&proxy).await;
    // Requests sent before the reload landed still spent; nothing was forgotten.
    assert!(usd(&rows[0]["spent_usd"]) >= before, "{rows:?}");
    assert_eq!(rows[0]["limit_usd"], 0.1);
}

#[tokio::test]
async fn no_listener_crosses_over() {
    let (proxy, _cd) =
        start("policies:\n  - name: caps\n    budgets:\n      - { name: d, per: key, window: day, usd: 1.0 }\n").await;
    // Model keys cannot reach admin endpoints on the API listener...
    let r = get(&proxy.url("/admin/spend"), &[DEMO]).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // ...and the admin listener cannot call models.
    let r = post(&proxy.admin_url("/v1/chat/completions"), &[DEMO], &chat(10)).await;
    assert!(r.status == 404 || r.status == 405, "{}", r.status);
    assert!(spend(&proxy).await.is_empty(), "the admin listener spent money");
}

#[tokio::test]
async fn streamed_settlement_is_the_mocks_usage_for_both_apis() {
    let (proxy, _cd) = start(
        r#"
policies:
  - name: caps
    budgets:
      - { name: all, per: global, window: day, usd: 100.0 }
"#,
    )
    .await;
    let spent = || async { usd(&spend(&proxy).await[0]["spent_usd"]) };
    // OpenAI, the client asking for usage itself: the body goes upstream unchanged.
    let asked = json!({"model": "mock-1", "max_tokens": 40, "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let r = post(&proxy.url("/v1/chat/completions"), &[DEMO, ("x-mock", "tokens=25,chunks=5")], &asked).await;
    assert_eq!(r.status, 200);
    let usage: Value =
        serde_json::from_str(sse_data(&r.text()).iter().rev().find(|d| d.contains("\"usage\":{")).unwrap()).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 25);
    let first = spent().await;
    assert!((first - cost(&asked, 25)).abs() < 1e-9, "{first}");
    // Anthropic messages: usage from message_start and message_delta.
    let msg =
        json!({"model": "mock-1", "max_tokens": 40, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let r =
        post(&proxy.url("/v1/messages"), &[("x-api-key", "sk-warden-demo"), ("x-mock", "tokens=30,chunks=5")], &msg)
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("message_stop"));
    let second = spent().await - first;
    assert!((second - cost(&msg, 30)).abs() < 1e-9, "{second} against {}", cost(&msg, 30));
}
