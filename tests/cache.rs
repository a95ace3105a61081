//! The response cache over real HTTP, against the mock on its own port: tenant isolation,
//! canonical keys, single flight, byte capacity, TTL, the `cache-control` controls,
//! `DELETE /admin/cache`, and budgets. Streams: tests/cache_streams.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

#[path = "common/cache.rs"]
mod cache_common;
mod common;

use std::time::Duration;

use cache_common::*;
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_second_identical_request_is_a_hit_with_a_fresh_id_and_age() {
    let s = cached_proxy("{ ttl: 10m }", "").await;
    let body = chat_body("hello");
    let first = s.chat(DEMO_KEY, &body, &[]).await;
    assert_eq!((first.status.as_u16(), cache_header(&first)), (200, "miss"));
    let second = s.chat(DEMO_KEY, &body, &[]).await;
    assert_eq!((second.status.as_u16(), cache_header(&second)), (200, "hit"));
    assert!(second.headers.get("age").is_some());
    assert_eq!(s.upstream_calls(), 1);
    let (a, b) = (first.json(), second.json());
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(a["usage"], b["usage"]);
    assert_ne!(a["id"], b["id"], "a replay is a new response");
    assert!(b["id"].as_str().unwrap().starts_with("chatcmpl-"));
    // Hits are counted, and what they did not spend.
    assert_eq!(s.metric("warden_cache_requests_total{result=\"hit\"}").await, 1.0);
    assert_eq!(s.metric("warden_cache_requests_total{result=\"miss\"}").await, 1.0);
    assert!(s.metric("warden_cache_saved_usd_total").await > 0.0);
    assert!(s.metric("warden_cache_saved_tokens_total").await > 0.0);
    assert!(s.metric("warden_cache_bytes").await > 0.0);
}

#[tokio::test]
async fn tenants_never_see_each_others_answers() {
    let s = cached_proxy("{ ttl: 10m }", "").await;
    let body = chat_body("same body for everyone");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "miss");
    // Another key of the same team: its own entry under scope key.
    assert_eq!(cache_header(&s.chat(OTHER_KEY, &body, &[]).await), "miss");
    assert_eq!(cache_header(&s.chat(OTHER_KEY, &body, &[]).await), "hit");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "hit");
    assert_eq!(s.upstream_calls(), 2);
}

#[tokio::test]
async fn team_scope_shares_within_a_team_only() {
    let s = cached_proxy("{ ttl: 10m, scope: team }", "").await;
    let body = chat_body("team body");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "miss");
    assert_eq!(cache_header(&s.chat(OTHER_KEY, &body, &[]).await), "hit");
    // Keys without a team are not one team.
    assert_eq!(cache_header(&s.chat(LONER_KEY, &body, &[]).await), "miss");
    assert_eq!(cache_header(&s.chat(LONER2_KEY, &body, &[]).await), "miss");
    assert_eq!(s.upstream_calls(), 3);
}

#[tokio::test]
async fn keys_are_canonical_and_answer_changing_fields_miss() {
    let s = cached_proxy("{ ttl: 10m }", "").await;
    let raw = r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"canon"}]}"#;
    let reordered =
        r#"{"messages":[{"content":"canon","role":"user"}],"temperature":0.0,"user":"u-42","model":"gpt-4o"}"#;
    let post_raw = |b: &'static str| {
        let url = s.proxy.url("/v1/chat/completions");
        async move { post(&url, &[BEARER], b).await }
    };
    assert_eq!(cache_header(&post_raw(raw).await), "miss");
    assert_eq!(cache_header(&post_raw(reordered).await), "hit");
    for changed in [
        json!({"model": "gpt-4o", "temperature": 0, "seed": 7, "messages": [{"role": "user", "content": "canon"}]}),
        json!({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "canon!"}]}),
        json!({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "canon"}],
               "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
        json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "canon"}]}),
    ] {
        assert_eq!(cache_header(&s.chat(DEMO_KEY, &changed, &[]).await), "miss", "{changed}");
    }
    // Not deterministic: the cache stays out of it.
    let warm = json!({"model": "gpt-4o", "temperature": 0.7, "messages": [{"role": "user", "content": "canon"}]});
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &warm, &[]).await), "bypass");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &warm, &[]).await), "bypass");
    let two = json!({"model": "gpt-4o", "temperature": 0, "n": 2, "messages": [{"role": "user", "content": "canon"}]});
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &two, &[]).await), "bypass");
    assert_eq!(s.upstream_calls(), 8);
}

#[tokio::test]
async fn when_always_caches_any_temperature_but_never_several_choices() {
    let s = cached_proxy("{ ttl: 10m, when: always }", "").await;
    let warm = json!({"model": "gpt-4o", "temperature": 0.9, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &warm, &[]).await), "miss");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &warm, &[]).await), "hit");
    let two = json!({"model": "gpt-4o", "n": 3, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &two, &[]).await), "bypass");
}

#[tokio::test]
async fn fifty_concurrent_identical_misses_make_one_upstream_call() {
    let s = std::sync::Arc::new(cached_proxy("{ ttl: 10m }", "").await);
    let body = chat_body("stampede");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (s, body) = (s.clone(), body.clone());
        tasks.push(tokio::spawn(async move { s.chat(DEMO_KEY, &body, &[("x-mock", "delay=300ms")]).await }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(s.upstream_calls(), 1, "one upstream call for 50 identical requests");
    let first = answers[0].json();
    for a in &answers {
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["choices"], first["choices"]);
    }
    let hits = answers.iter().filter(|a| cache_header(a) == "hit").count();
    assert_eq!(hits, 49);
}

#[tokio::test]
async fn waiters_share_the_leaders_failure_without_a_stampede_and_nothing_is_stored() {
    let s = std::sync::Arc::new(cached_proxy("{ ttl: 10m }", "").await);
    let body = chat_body("failing");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (s, body) = (s.clone(), body.clone());
        tasks
            .push(tokio::spawn(async move { s.chat(DEMO_KEY, &body, &[("x-mock", "status=500, delay=300ms")]).await }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 500);
        bodies.push(r.json()["error"].clone());
    }
    assert_eq!(s.upstream_calls(), 1);
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    // The error was not stored: the next request goes upstream.
    let ok = s.chat(DEMO_KEY, &body, &[]).await;
    assert_eq!((ok.status.as_u16(), cache_header(&ok)), (200, "miss"));
    assert_eq!(s.upstream_calls(), 2);
}

#[tokio::test]
async fn cache_control_and_admin_purge() {
    let s = cached_proxy("{ ttl: 10m }", "").await;
    let body = chat_body("controls");
    // no-store: neither read nor written.
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[("cache-control", "no-store")]).await), "bypass");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "miss");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[("cache-control", "no-store")]).await), "bypass");
    // no-cache: goes upstream and refreshes the entry.
    let refreshed = s.chat(DEMO_KEY, &body, &[("cache-control", "no-cache"), ("x-mock-reply", "refreshed")]).await;
    assert_eq!(cache_header(&refreshed), "miss");
    let hit = s.chat(DEMO_KEY, &body, &[]).await;
    assert_eq!(cache_header(&hit), "hit");
    assert_eq!(hit.json()["choices"][0]["message"]["content"], "refreshed");
    assert_eq!(s.upstream_calls(), 4);
    // DELETE /admin/cache by model (another model's entry stays), then everything.
    s.chat(
        DEMO_KEY,
        &json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "m"}]}),
        &[],
    )
    .await;
    let purge = send(http::Method::DELETE, &s.proxy.admin_url("/admin/cache?model=gpt-4o"), &[], "").await;
    assert_eq!(purge.json()["removed"], 1);
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "miss");
    let purge = send(http::Method::DELETE, &s.proxy.admin_url("/admin/cache?key=demo"), &[], "").await;
    assert_eq!(purge.json()["removed"], 2);
    let purge = send(http::Method::DELETE, &s.proxy.admin_url("/admin/cache"), &[], "").await;
    assert_eq!(purge.json()["removed"], 0);
    let bad = send(http::Method::DELETE, &s.proxy.admin_url("/admin/cache?tenant=x"), &[], "").await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn entries_expire_after_the_policy_ttl() {
    let s = cached_proxy("{ ttl: 1s }", "").await;
    let body = chat_body("short-lived");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "miss");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "hit");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "miss");
}

#[tokio::test]
async fn a_flood_of_large_answers_stays_within_max_bytes() {
    let max = 256 * 1024;
    let s = cached_proxy("{ ttl: 10m }", &format!("cache: {{ max_bytes: {max} }}")).await;
    let big = "word ".repeat(4000);
    for i in 0..60 {
        let r = s.chat(DEMO_KEY, &chat_body(&format!("flood {i}")), &[("x-mock-reply", big.as_str())]).await;
        assert_eq!(r.status, 200);
    }
    let bytes = s.metric("warden_cache_bytes").await;
    assert!(bytes > 0.0 && bytes <= max as f64, "{bytes} bytes held, limit {max}");
    // Some answers are still served from memory; most had to go.
    let mut hits = 0;
    for i in 0..60 {
        let r = s.chat(DEMO_KEY, &chat_body(&format!("flood {i}")), &[("x-mock-reply", big.as_str())]).await;
        hits += usize::from(cache_header(&r) == "hit");
    }
    assert!(hits > 0 && hits < 20, "{hits} of 60 answers were still cached");
    assert!(s.metric("warden_cache_bytes").await <= max as f64);
}

#[tokio::test]
async fn embeddings_are_cached_and_hits_are_free_against_budgets() {
    let s = cached_proxy(
        "{ ttl: 10m }\n    budgets: [{ name: daily, per: key, window: day, usd: 1.0 }]",
        "prices:\n  gpt-4o: { input: 2.5, output: 10 }\n  text-embedding-3-small: { input: 0.02, output: 0 }",
    )
    .await;
    let url = s.proxy.url("/v1/embeddings");
    let e = r#"{"model":"text-embedding-3-small","input":["a","b"]}"#;
    assert_eq!(cache_header(&post(&url, &[BEARER], e).await), "miss");
    assert_eq!(cache_header(&post(&url, &[BEARER], e).await), "hit");
    let spend =
        || async { get(&s.proxy.admin_url("/admin/spend"), &[]).await.json()["budgets"][0]["spent_usd"].as_f64() };
    let body = chat_body("priced");
    s.chat(DEMO_KEY, &body, &[]).await;
    let before = spend().await.unwrap();
    assert!(before > 0.0);
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "hit");
    assert_eq!(spend().await.unwrap(), before, "a hit costs nothing");
}

#[tokio::test]
async fn a_policy_may_charge_hits() {
    let s = cached_proxy(
        "{ ttl: 10m, charge: true }\n    budgets: [{ name: daily, per: key, window: day, usd: 1.0 }]",
        "prices:\n  gpt-4o: { input: 2.5, output: 10 }",
    )
    .await;
    let spend =
        || async { get(&s.proxy.admin_url("/admin/spend"), &[]).await.json()["budgets"][0]["spent_usd"].as_f64() };
    let body = chat_body("charged");
    s.chat(DEMO_KEY, &body, &[]).await;
    let once = spend().await.unwrap();
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "hit");
    let twice = spend().await.unwrap();
    assert!((twice - 2.0 * once).abs() < 1e-9, "{once} then {twice}");
}
