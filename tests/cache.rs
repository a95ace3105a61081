//! The response cache over real HTTP, against the mock on its own port (its request
//! counter shows what reached the upstream): tenant isolation, canonical keys, single
//! flight, stream replay for both APIs in both directions, byte capacity, TTL, the
//! `cache-control` controls, `DELETE /admin/cache`, and what is never stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const OTHER_KEY: &str = "sk-warden-other-team-mate";
const LONER_KEY: &str = "sk-warden-loner-one";
const LONER2_KEY: &str = "sk-warden-loner-two";

struct Setup {
    proxy: TestProxy,
    mock: TestMock,
    _cd: ConfigDir,
}

/// Keys: `demo` and `mate` (team demo), `loner` and `loner2` (no team). Providers `oai`
/// (OpenAI kind) and `ant` (Anthropic kind), both the mock over HTTP.
async fn setup(cache: &str, extra: &str) -> Setup {
    let mock = TestMock::start().await;
    let sha = |k: &str| warden::secret::sha256_hex(k.as_bytes());
    let yaml = format!(
        r#"
server: {{ listen: "127.0.0.1:0" }}
admin: {{ listen: "127.0.0.1:0" }}
providers:
  - {{ name: oai, kind: openai, base_url: "http://{addr}/v1", api_key: "${{UPSTREAM_KEY}}" }}
  - {{ name: ant, kind: anthropic, base_url: "http://{addr}", api_key: "${{UPSTREAM_KEY}}" }}
routes:
  - {{ model: "gpt-*", provider: oai }}
  - {{ model: "text-embedding-*", provider: oai }}
  - {{ model: "claude-*", provider: ant }}
keys:
  - {{ name: demo, sha256: {DEMO_SHA}, team: demo }}
  - {{ name: mate, sha256: {mate}, team: demo }}
  - {{ name: loner, sha256: {loner} }}
  - {{ name: loner2, sha256: {loner2} }}
{extra}
"#,
        addr = mock.addr,
        mate = sha(OTHER_KEY),
        loner = sha(LONER_KEY),
        loner2 = sha(LONER2_KEY),
    );
    let policy = format!("policies:\n  - name: cached\n    cache: {cache}\n");
    let cd = ConfigDir::new(&yaml, &[("cache.yaml", &policy)]);
    std::env::set_var("UPSTREAM_KEY", UPSTREAM_SECRET);
    let proxy = TestProxy::start_from(&cd).await;
    Setup { proxy, mock, _cd: cd }
}

impl Setup {
    fn upstream_calls(&self) -> u64 {
        self.mock.stats.requests.load(Ordering::SeqCst)
    }

    async fn chat(&self, key: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
        let auth = format!("Bearer {key}");
        let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
        headers.extend_from_slice(extra);
        send(http::Method::POST, &self.proxy.url("/v1/chat/completions"), &headers, body.to_string()).await
    }

    async fn messages(&self, body: &Value, extra: &[(&str, &str)]) -> Resp {
        let mut headers = vec![("x-api-key", DEMO_KEY), ("anthropic-version", "2023-06-01")];
        headers.extend_from_slice(extra);
        send(http::Method::POST, &self.proxy.url("/v1/messages"), &headers, body.to_string()).await
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = get(&self.proxy.admin_url("/metrics"), &[]).await.text();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn cache_header(r: &Resp) -> &str {
    r.headers.get("x-warden-cache").map_or("-", |v| v.to_str().unwrap())
}

fn chat_body(text: &str) -> Value {
    json!({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

/// Each event's data without the ids, which a replay must change: what the client reads.
fn contents(body: &str) -> Vec<Value> {
    sse_data(body)
        .into_iter()
        .filter(|d| d != "[DONE]")
        .map(|d| {
            let mut v: Value = serde_json::from_str(&d).unwrap();
            v.as_object_mut().unwrap().remove("id");
            if let Some(m) = v.get_mut("message").and_then(Value::as_object_mut) {
                m.remove("id");
            }
            v
        })
        .collect()
}

#[tokio::test]
async fn a_second_identical_request_is_a_hit_with_a_fresh_id_and_age() {
    let s = setup("{ ttl: 10m }", "").await;
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
    let s = setup("{ ttl: 10m }", "").await;
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
    let s = setup("{ ttl: 10m, scope: team }", "").await;
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
    let s = setup("{ ttl: 10m }", "").await;
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
    let s = setup("{ ttl: 10m, when: always }", "").await;
    let warm = json!({"model": "gpt-4o", "temperature": 0.9, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &warm, &[]).await), "miss");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &warm, &[]).await), "hit");
    let two = json!({"model": "gpt-4o", "n": 3, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &two, &[]).await), "bypass");
}

#[tokio::test]
async fn fifty_concurrent_identical_misses_make_one_upstream_call() {
    let s = std::sync::Arc::new(setup("{ ttl: 10m }", "").await);
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
    let s = std::sync::Arc::new(setup("{ ttl: 10m }", "").await);
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
async fn openai_streams_replay_as_streams_and_as_json_and_back() {
    let s = setup("{ ttl: 10m }", "").await;
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
    let s = setup("{ ttl: 10m }", "").await;
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
    let s = setup("{ ttl: 10m }", "").await;
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
async fn cache_control_and_admin_purge() {
    let s = setup("{ ttl: 10m }", "").await;
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
    let s = setup("{ ttl: 1s }", "").await;
    let body = chat_body("short-lived");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "miss");
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "hit");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(cache_header(&s.chat(DEMO_KEY, &body, &[]).await), "miss");
}

#[tokio::test]
async fn a_flood_of_large_answers_stays_within_max_bytes() {
    let max = 256 * 1024;
    let s = setup("{ ttl: 10m }", &format!("cache: {{ max_bytes: {max} }}")).await;
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
    let s = setup(
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
    let s = setup(
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

#[tokio::test]
async fn concurrent_streamed_misses_wait_for_one_stream_and_replay_it() {
    let s = std::sync::Arc::new(setup("{ ttl: 10m }", "").await);
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
    let s = std::sync::Arc::new(setup("{ ttl: 10m }", "").await);
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
