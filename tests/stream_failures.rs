//! The stream failure contract over real HTTP, for every streamed API: a stream that is cut,
//! stalls, sends garbage, or ends without its final event after its 200 went out ends with
//! the API's own error event (OpenAI: a `data:` event with `error`; Anthropic: `event:
//! error`) and never with `[DONE]`, `message_stop` or `response.completed`. A non-streamed
//! 200 whose body is not JSON becomes a 502 in the caller's format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::Value;

/// The whole body as text, and whether the connection broke instead of ending cleanly.
async fn read_all(url: &str, headers: &[(&str, &str)], body: &str) -> (String, bool) {
    let mut resp = open_stream(url, headers, body).await;
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), resp.body_mut().frame()).await.unwrap() {
            None => return (text, false),
            Some(Err(_)) => return (text, true),
            Some(Ok(f)) => text.push_str(&String::from_utf8_lossy(&f.into_data().unwrap_or_default())),
        }
    }
}

struct Api {
    path: &'static str,
    key: (&'static str, &'static str),
    /// `{model}` is replaced.
    body: &'static str,
    finals: &'static [&'static str],
}

const APIS: [Api; 4] = [
    Api {
        path: "/v1/chat/completions",
        key: BEARER,
        body: r#"{"model":"{model}","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        finals: &["[DONE]"],
    },
    Api {
        path: "/v1/completions",
        key: BEARER,
        body: r#"{"model":"{model}","stream":true,"prompt":"hi"}"#,
        finals: &["[DONE]"],
    },
    Api {
        path: "/v1/responses",
        key: BEARER,
        body: r#"{"model":"{model}","stream":true,"input":"hi"}"#,
        finals: &["response.completed"],
    },
    Api {
        path: "/v1/messages",
        key: XKEY,
        body: r#"{"model":"{model}","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        finals: &["message_stop"],
    },
];

/// Asserts the stream ended cleanly with the API's error event and no final event.
fn assert_error_end(api: &Api, text: &str, broken: bool, what: &str) {
    assert!(!broken, "{} {what}: the connection broke instead of an error event:\n{text}", api.path);
    for f in api.finals {
        assert!(!text.contains(f), "{} {what}: ended with {f}:\n{text}", api.path);
    }
    let last_data = sse_data(text).pop().unwrap_or_default();
    let v: Value =
        serde_json::from_str(&last_data).unwrap_or_else(|_| panic!("{} {what}: last event {last_data}", api.path));
    if api.key == XKEY {
        assert_eq!(sse_events(text).last().map(String::as_str), Some("error"), "{text}");
        assert_eq!(v["type"], "error", "{text}");
        assert!(v["error"]["message"].as_str().unwrap().contains("the response is incomplete"), "{text}");
    } else {
        assert!(v["error"]["message"].as_str().unwrap().contains("the response is incomplete"), "{text}");
    }
}

#[tokio::test]
async fn failed_streams_end_with_the_apis_error_event() {
    let (_mock, proxy) = setup().await;
    // `mock-1` is the in-process mock; `gpt-*`/`claude-*` reach the mock server over HTTP,
    // with a 500 ms between-chunks timeout for `gpt-*`.
    let cases: [(&str, &str); 4] = [
        ("cut-after=3", "cut"),
        ("garbage-after=2", "garbage"),
        ("no-end", "no final event"),
        ("chunk-delay=2s", "stall"),
    ];
    for api in &APIS {
        let models: &[&str] = if api.key == XKEY { &["mock-1", "claude-test"] } else { &["mock-1", "gpt-4o"] };
        for model in models {
            let body = api.body.replace("{model}", model);
            for (directive, what) in cases {
                // Only `gpt-*` has a short between-chunks timeout.
                if what == "stall" && *model != "gpt-4o" {
                    continue;
                }
                let (text, broken) = read_all(&proxy.url(api.path), &[api.key, ("x-mock", directive)], &body).await;
                assert_error_end(api, &text, broken, &format!("{model} {what}"));
                if what == "garbage" {
                    assert!(!text.contains("502 Bad Gateway</html>"), "garbage was forwarded: {text}");
                }
            }
            // A healthy stream is untouched and ends with its final event.
            let (text, broken) = read_all(&proxy.url(api.path), &[api.key], &body).await;
            assert!(!broken && api.finals.iter().any(|f| text.contains(f)), "{} {model}: {text}", api.path);
            assert!(!sse_data(&text).iter().any(|d| d.starts_with(r#"{"error""#)), "{text}");
            assert!(!sse_events(&text).iter().any(|e| e == "error"), "{text}");
        }
    }
}

#[tokio::test]
async fn garbage_200s_from_json_endpoints_become_502s() {
    let (_mock, proxy) = setup().await;
    let cases = [
        ("/v1/chat/completions", BEARER, r#"{"model":"gpt-4o","messages":[]}"#),
        ("/v1/embeddings", BEARER, r#"{"model":"mock-1","input":"x"}"#),
        ("/v1/responses", BEARER, r#"{"model":"mock-1","input":"x"}"#),
        ("/v1/messages", XKEY, r#"{"model":"claude-test","max_tokens":5,"messages":[]}"#),
        ("/v1/messages/count_tokens", XKEY, r#"{"model":"mock-1","messages":[]}"#),
    ];
    for (path, key, body) in cases {
        let r = post(&proxy.url(path), &[key, ("x-mock", "bad-json")], body).await;
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        let v = r.json();
        let msg = &v["error"]["message"];
        assert!(msg.as_str().unwrap().contains("sent an invalid response"), "{path}: {}", r.text());
        if key == XKEY {
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], "api_error");
        } else {
            assert_eq!(v["error"]["type"], "server_error");
        }
        // The same request without the directive passes untouched.
        assert_eq!(post(&proxy.url(path), &[key], body).await.status, 200, "{path}");
    }
}
