//! The cache tests' setup: the mock on its own port (its request counter shows what reached
//! the upstream) behind warden with one `cache` policy, and helpers to read what the cache did.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::Ordering;

use super::common::*;
use serde_json::{json, Value};

pub const OTHER_KEY: &str = "sk-warden-other-team-mate";
pub const LONER_KEY: &str = "sk-warden-loner-one";
pub const LONER2_KEY: &str = "sk-warden-loner-two";

pub struct Setup {
    pub proxy: TestProxy,
    pub mock: TestMock,
    _cd: ConfigDir,
}

/// Keys: `demo` and `mate` (team demo), `loner` and `loner2` (no team). Providers `oai`
/// (OpenAI kind) and `ant` (Anthropic kind), both the mock over HTTP.
pub async fn cached_proxy(cache: &str, extra: &str) -> Setup {
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
    pub fn upstream_calls(&self) -> u64 {
        self.mock.stats.requests.load(Ordering::SeqCst)
    }

    pub async fn chat(&self, key: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
        let auth = format!("Bearer {key}");
        let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
        headers.extend_from_slice(extra);
        send(http::Method::POST, &self.proxy.url("/v1/chat/completions"), &headers, body.to_string()).await
    }

    pub async fn messages(&self, body: &Value, extra: &[(&str, &str)]) -> Resp {
        let mut headers = vec![("x-api-key", DEMO_KEY), ("anthropic-version", "2023-06-01")];
        headers.extend_from_slice(extra);
        send(http::Method::POST, &self.proxy.url("/v1/messages"), &headers, body.to_string()).await
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = get(&self.proxy.admin_url("/metrics"), &[]).await.text();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

pub fn cache_header(r: &Resp) -> &str {
    r.headers.get("x-warden-cache").map_or("-", |v| v.to_str().unwrap())
}

pub fn chat_body(text: &str) -> Value {
    json!({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

/// Each event's data without the ids, which a replay must change: what the client reads.
pub fn contents(body: &str) -> Vec<Value> {
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
