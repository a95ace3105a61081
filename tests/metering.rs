//! Token metering: `warden_tokens_total` equals what the upstream reported, for every route
//! of both APIs, streamed and not, against the in-process mock and the mock served over HTTP
//! (as `warden mock` runs), each token counted once (cache reads are not also input,
//! reasoning is not also output). OpenAI streams are metered whether or not the client asked
//! for `include_usage`, and a client that did not ask sees no usage chunk. A stream cut short
//! is estimated and labelled so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{json, Value};

/// `(provider, direction, estimated)` → tokens, from the metrics text.
async fn tokens(proxy: &TestProxy) -> BTreeMap<(String, String, String), u64> {
    let text = get(&proxy.admin_url("/metrics"), &[]).await.text();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("warden_tokens_total{")) {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            labels[start..].split('"').next().unwrap().to_string()
        };
        *out.entry((label("provider"), label("direction"), label("estimated"))).or_insert(0) +=
            value.parse::<u64>().unwrap();
    }
    out
}

/// What one request added to the metric.
async fn delta(proxy: &TestProxy, before: &BTreeMap<(String, String, String), u64>) -> BTreeMap<String, u64> {
    let after = tokens(proxy).await;
    let mut out = BTreeMap::new();
    for (k, v) in after {
        let d = v - before.get(&k).copied().unwrap_or(0);
        if d > 0 {
            out.insert(format!("{}:{}:{}", k.0, k.1, k.2), d);
        }
    }
    out
}

/// Usage as the client saw it, from a JSON body or an SSE stream.
fn client_usage(text: &str, streamed: bool) -> Value {
    if !streamed {
        return serde_json::from_str::<Value>(text).unwrap()["usage"].clone();
    }
    let mut usage = json!({});
    for data in sse_data(text) {
        let Ok(v) = serde_json::from_str::<Value>(&data) else { continue };
        for u in [&v["usage"], &v["response"]["usage"], &v["message"]["usage"]] {
            if let Some(map) = u.as_object() {
                for (k, val) in map {
                    usage[k] = val.clone();
                }
            }
        }
    }
    usage
}

fn expected(usage: &Value, provider: &str) -> BTreeMap<String, u64> {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = BTreeMap::new();
    let mut put = |direction: &str, v: u64| {
        if v > 0 {
            out.insert(format!("{provider}:{direction}:false"), v);
        }
    };
    if usage.get("prompt_tokens").is_some() {
        let cached = n(&usage["prompt_tokens_details"]["cached_tokens"]);
        let reasoning = n(&usage["completion_tokens_details"]["reasoning_tokens"]);
        put("input", n(&usage["prompt_tokens"]) - cached);
        put("cached_input", cached);
        put("output", n(&usage["completion_tokens"]) - reasoning);
        put("reasoning", reasoning);
    } else if usage.get("input_tokens_details").is_some() {
        let cached = n(&usage["input_tokens_details"]["cached_tokens"]);
        let reasoning = n(&usage["output_tokens_details"]["reasoning_tokens"]);
        put("input", n(&usage["input_tokens"]) - cached);
        put("cached_input", cached);
        put("output", n(&usage["output_tokens"]) - reasoning);
        put("reasoning", reasoning);
    } else {
        put("input", n(&usage["input_tokens"]));
        put("cached_input", n(&usage["cache_read_input_tokens"]));
        put("cache_write", n(&usage["cache_creation_input_tokens"]));
        put("output", n(&usage["output_tokens"]));
    }
    out
}

const DETAILS: (&str, &str) = ("x-mock", "cached=7,reasoning=5,cache-write=3");

/// Every route, streamed and not, through `proxy`; `models` are (OpenAI model, provider) and
/// (Anthropic model, provider) pairs.
async fn check_every_route(proxy: &TestProxy, openai: &[(&str, &str)], anthropic: &[(&str, &str)]) {
    let msgs = r#""messages":[{"role":"user","content":"count my tokens please"}]"#;
    // (path, key, body with {model}, streamed)
    let routes = [
        ("/v1/chat/completions", BEARER, format!(r#"{{"model":"{{model}}",{msgs}}}"#), false),
        (
            "/v1/chat/completions",
            BEARER,
            format!(r#"{{"stream_options":{{"include_usage":true}},"model":"{{model}}","stream":true,{msgs}}}"#),
            true,
        ),
        ("/v1/completions", BEARER, r#"{"model":"{model}","prompt":"count my tokens"}"#.to_string(), false),
        (
            "/v1/completions",
            BEARER,
            r#"{"stream_options":{"include_usage":true},"model":"{model}","stream":true,"prompt":"count my tokens"}"#
                .to_string(),
            true,
        ),
        ("/v1/responses", BEARER, r#"{"model":"{model}","input":"count my tokens"}"#.to_string(), false),
        ("/v1/responses", BEARER, r#"{"model":"{model}","stream":true,"input":"count my tokens"}"#.to_string(), true),
        ("/v1/embeddings", BEARER, r#"{"model":"{model}","input":["count","my tokens"]}"#.to_string(), false),
        ("/v1/messages", XKEY, format!(r#"{{"model":"{{model}}","max_tokens":64,{msgs}}}"#), false),
        ("/v1/messages", XKEY, format!(r#"{{"model":"{{model}}","max_tokens":64,"stream":true,{msgs}}}"#), true),
    ];
    for (path, key, body, streamed) in &routes {
        let models = if *key == XKEY { anthropic } else { openai };
        for (model, provider) in models {
            let body = body.replace("{model}", model);
            let before = tokens(proxy).await;
            let r = post(&proxy.url(path), &[*key, DETAILS], &body).await;
            assert_eq!(r.status, 200, "{path} {model}: {}", r.text());
            let want = expected(&client_usage(&r.text(), *streamed), provider);
            assert!(!want.is_empty(), "{path} {model}: no usage in {}", r.text());
            assert_eq!(delta(proxy, &before).await, want, "{path} {model} streamed={streamed}");
        }
    }
}

#[tokio::test]
async fn usage_equals_the_upstreams_report_on_every_route() {
    let (_mock, proxy) = setup().await;
    check_every_route(
        &proxy,
        &[("mock-1", "local"), ("gpt-4o", "oai")],
        &[("mock-1", "local"), ("claude-test", "ant")],
    )
    .await;
}

/// The same table against `warden mock` running as its own process, as users run it in CI.
#[tokio::test]
async fn usage_equals_the_report_of_a_separate_mock_process() {
    use std::io::BufRead as _;
    /// Ends the mock process however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["mock", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on mock=").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr: std::net::SocketAddr = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap().parse().unwrap();
    let proxy = TestProxy::start(&standard_config(addr)).await;
    check_every_route(&proxy, &[("gpt-4o", "oai")], &[("claude-test", "ant")]).await;
}

#[tokio::test]
async fn openai_streams_are_metered_without_include_usage_and_the_client_sees_no_usage_chunk() {
    let (_mock, proxy) = setup().await;
    for (path, rest) in [
        ("/v1/chat/completions", r#""messages":[{"role":"user","content":"count my tokens please"}]"#),
        ("/v1/completions", r#""prompt":"count my tokens""#),
    ] {
        for (model, provider) in [("mock-1", "local"), ("gpt-4o", "oai")] {
            // The same bytes warden sends when it adds `stream_options` itself, so the mock
            // reports the same usage for both requests.
            let asked =
                format!(r#"{{"stream_options":{{"include_usage":true}},"model":"{model}","stream":true,{rest}}}"#);
            let plain = format!(r#"{{"model":"{model}","stream":true,{rest}}}"#);
            let r = post(&proxy.url(path), &[BEARER, DETAILS], &asked).await;
            let want = expected(&client_usage(&r.text(), true), provider);
            let before = tokens(&proxy).await;
            let r = post(&proxy.url(path), &[BEARER, DETAILS], &plain).await;
            assert_eq!(r.status, 200);
            assert_eq!(delta(&proxy, &before).await, want, "{path} {model}");
            let text = r.text();
            assert!(!text.contains(r#""choices":[]"#) && !text.contains(r#""usage":{"#), "{path} {model}: {text}");
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        }
    }
    // A client that set include_usage to false gets no chunk either, and is metered.
    let body = r#"{"model":"mock-1","stream":true,"stream_options":{"include_usage":false},"messages":[]}"#;
    let before = tokens(&proxy).await;
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], body).await;
    assert!(!r.text().contains(r#""usage":{"#), "{}", r.text());
    assert!(delta(&proxy, &before).await.contains_key("local:output:false"));
}

#[tokio::test]
async fn a_cut_stream_is_estimated_and_labelled_so() {
    let (_mock, proxy) = setup().await;
    let before = tokens(&proxy).await;
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER, ("x-mock", "cut-after=5")], CHAT_STREAM).await;
    assert_eq!(r.status, 200);
    let d = delta(&proxy, &before).await;
    assert!(d.get("local:input:true").is_some_and(|n| *n > 0), "{d:?}");
    assert!(d.get("local:output:true").is_some_and(|n| *n > 0), "{d:?}");
    assert!(!d.keys().any(|k| k.ends_with(":false")), "{d:?}");
}

#[tokio::test]
async fn model_labels_are_names_the_config_knows_never_client_strings() {
    let (_mock, proxy) = setup().await;
    for model in ["fast", "gpt-made-up-by-a-client-1234"] {
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        assert_eq!(post(&proxy.url("/v1/chat/completions"), &[BEARER], &body).await.status, 200);
    }
    let text = get(&proxy.admin_url("/metrics"), &[]).await.text();
    // The alias is a configured name; what it forwards to is not listed, so its route shows.
    assert!(text.contains(r#"model="fast",provider="oai",status="200",team="demo",upstream_model="gpt-*""#), "{text}");
    assert!(text.contains(r#"model="gpt-*",provider="oai",status="200",team="demo",upstream_model="gpt-*""#), "{text}");
    assert!(!text.contains("made-up"), "{text}");
}
