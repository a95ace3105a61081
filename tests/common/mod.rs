//! Test harness: warden and the mock provider in-process on `127.0.0.1:0`, and a small
//! hyper client for plain, streaming and raw-socket requests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod lenient;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use warden::provider::mock::MockStats;
use warden::server::Running;

pub const DEMO_KEY: &str = "sk-warden-demo";
pub const DEMO_SHA: &str = "8e9ef33f78df530b97d2fb5a4ca04caebd524e45dd3ebc210f8c6e81122d173e";
pub const UPSTREAM_SECRET: &str = "sk-upstream-secret-123";

/// The mock provider as a separate HTTP server (like `warden mock`).
pub struct TestMock {
    pub addr: SocketAddr,
    pub stats: Arc<MockStats>,
    _stop: watch::Sender<bool>,
}

impl TestMock {
    pub async fn start() -> TestMock {
        let (addr, stats, stop) = warden::server::spawn_local_mock().await.unwrap();
        TestMock { addr, stats, _stop: stop }
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.stats.last_headers.lock().unwrap().clone().unwrap_or_default()
    }

    pub fn last_body_json(&self) -> serde_json::Value {
        let body = self.stats.last_body.lock().unwrap().clone().unwrap_or_default();
        serde_json::from_slice(&body).unwrap()
    }
}

/// A config with warden on port 0, one in-process mock, one OpenAI-kind and one
/// Anthropic-kind provider pointing at `mock`, and the demo key plus a restricted key.
pub fn standard_config(mock: SocketAddr) -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:0" }}
admin: {{ listen: "127.0.0.1:0" }}
limits: {{ max_body_bytes: 4096, header_read_timeout: 500ms, drain_timeout: 5s }}
providers:
  - {{ name: local, kind: mock }}
  - name: oai
    kind: openai
    base_url: http://{mock}/v1
    api_key: ${{UPSTREAM_KEY}}
    models: [gpt-4o]
    extra_paths: ["/v1/files*", "/v1/vector_stores/*"]
    timeouts: {{ first_byte: 1s, between_chunks: 500ms }}
  - name: ant
    kind: anthropic
    base_url: http://{mock}
    api_key: ${{UPSTREAM_KEY}}
    models: [claude-test]
  - name: own
    kind: openai
    base_url: http://{mock}/v1
    passthrough: true
  - name: down
    kind: openai
    base_url: http://127.0.0.1:9/v1
    api_key: ${{UPSTREAM_KEY}}
    timeouts: {{ connect: 500ms }}
  - name: oai-retry
    kind: openai
    base_url: http://{mock}/v1
    api_key: ${{UPSTREAM_KEY}}
    retries: {{ max_attempts: 3, deadline: 10s }}
  - name: ant-retry
    kind: anthropic
    base_url: http://{mock}
    api_key: ${{UPSTREAM_KEY}}
    retries: {{ max_attempts: 3, deadline: 10s }}
routes:
  - {{ model: "retry-*", provider: oai-retry }}
  - {{ model: "claude-retry-*", provider: ant-retry }}
  - {{ model: "mock-*", provider: local }}
  - {{ model: "gpt-*", provider: oai }}
  - {{ model: "claude-*", provider: ant }}
  - {{ model: "byok-*", provider: own }}
  - {{ model: "down-*", provider: down }}
aliases:
  fast: gpt-4o-mini
keys:
  - {{ name: demo, sha256: {DEMO_SHA}, team: demo, loopback_only: true }}
  - {{ name: mock-only, key: "${{MOCK_ONLY_KEY}}", team: web, providers: [local] }}
"#
    )
}

/// The mock on its own port and warden in front of it with [`standard_config`].
pub async fn setup() -> (TestMock, TestProxy) {
    let mock = TestMock::start().await;
    let proxy = TestProxy::start(&standard_config(mock.addr)).await;
    (mock, proxy)
}

pub fn test_env(name: &str) -> Option<String> {
    match name {
        "UPSTREAM_KEY" => Some(UPSTREAM_SECRET.into()),
        "MOCK_ONLY_KEY" => Some("sk-mock-only".into()),
        "ADMIN_TOKEN" => Some("admin-secret".into()),
        _ => None,
    }
}

pub struct TestProxy {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub running: Option<Running>,
}

impl TestProxy {
    pub async fn start(yaml: &str) -> TestProxy {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let snap = match warden::config::load_str("test.yaml", yaml, dir, &test_env) {
            Ok(s) => s,
            Err(d) => panic!("config: {}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
        };
        let running = warden::server::start(warden::state::AppState::new(snap)).await.unwrap();
        TestProxy { api: running.api_addr, admin: running.admin_addr, running: Some(running) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn request(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(body.into())).unwrap()
}

pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(request(method, url, headers, body)))
        .await
        .expect("request timed out")
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("body timed out")
        .unwrap()
        .to_bytes();
    Resp { status: parts.status, headers: parts.headers, body }
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    send(Method::POST, url, headers, body.to_string()).await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    send(Method::GET, url, headers, Bytes::new()).await
}

/// Starts a streaming request and returns the response with its body unread.
pub async fn open_stream(url: &str, headers: &[(&str, &str)], body: &str) -> http::Response<Incoming> {
    client().request(request(Method::POST, url, headers, body.to_string())).await.unwrap()
}

/// Reads a streamed body frame by frame, noting when each data frame arrived.
pub async fn read_frames(body: &mut Incoming) -> Result<Vec<(Instant, Bytes)>, String> {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Err(_) => return Err("stream stalled".into()),
            Ok(None) => return Ok(frames),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    frames.push((Instant::now(), d));
                }
            }
        }
    }
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n").filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_string)).collect()
}

/// The `event:` names of an SSE body, in order.
pub fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n").filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("event: ")).map(str::to_string)).collect()
}

pub const CHAT: &str = r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;
pub const CHAT_STREAM: &str = r#"{"model":"mock-1","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
pub const MESSAGES: &str = r#"{"model":"mock-1","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
pub const MESSAGES_STREAM: &str =
    r#"{"model":"mock-1","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
pub const BEARER: (&str, &str) = ("authorization", "Bearer sk-warden-demo");
pub const XKEY: (&str, &str) = ("x-api-key", "sk-warden-demo");

/// warden before one mock: an OpenAI-kind provider for `gpt-*` and an Anthropic-kind one
/// for `claude-*`, and the demo key with `key_extra` (YAML flow fields, may be empty).
pub fn two_api_config(mock: SocketAddr, key_extra: &str) -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:0" }}
admin: {{ listen: "127.0.0.1:0" }}
providers:
  - {{ name: oai, kind: openai, base_url: "http://{mock}/v1", api_key: "${{UPSTREAM_KEY}}" }}
  - {{ name: ant, kind: anthropic, base_url: "http://{mock}", api_key: "${{UPSTREAM_KEY}}" }}
routes:
  - {{ model: "gpt-*", provider: oai }}
  - {{ model: "claude-*", provider: ant }}
keys:
  - {{ name: demo, sha256: {DEMO_SHA}, team: demo, {key_extra} }}
"#
    )
}

/// warden from files ([`two_api_config`] plus `files` in its `policies/` directory)
/// before the mock on its own port, whose request counter shows what reached the upstream.
pub struct Mocked {
    pub proxy: TestProxy,
    pub mock: TestMock,
    _cd: ConfigDir,
}

impl Mocked {
    pub async fn start(key_extra: &str, files: &[(&str, &str)]) -> Mocked {
        let mock = TestMock::start().await;
        let cd = ConfigDir::new(&two_api_config(mock.addr, key_extra), files);
        std::env::set_var("UPSTREAM_KEY", UPSTREAM_SECRET);
        let proxy = TestProxy::start_from(&cd).await;
        Mocked { proxy, mock, _cd: cd }
    }

    pub fn calls(&self) -> u64 {
        self.mock.stats.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// POSTs `body` with the demo key (both APIs' headers) and `extra` headers.
    pub async fn post(&self, path: &str, body: &serde_json::Value, extra: &[(&str, &str)]) -> Resp {
        let mut headers = vec![BEARER, ("anthropic-version", "2023-06-01")];
        headers.extend_from_slice(extra);
        send(Method::POST, &self.proxy.url(path), &headers, body.to_string()).await
    }

    pub async fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.proxy, name).await
    }
}

/// The sum of every sample of a metric whose line starts with `name` (labels may follow).
pub async fn metric_sum(proxy: &TestProxy, name: &str) -> f64 {
    let text = get(&proxy.admin_url("/metrics"), &[]).await.text();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A temporary directory holding `proxy.yaml` and a `policies/` directory.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new(config_yaml: &str, policies: &[(&str, &str)]) -> ConfigDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("proxy.yaml"), config_yaml).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        let cd = ConfigDir { dir };
        for (name, text) in policies {
            cd.write_policy(name, text);
        }
        cd
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("proxy.yaml")
    }

    pub fn policy_path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("policies").join(name)
    }

    pub fn write_policy(&self, name: &str, text: &str) {
        std::fs::write(self.policy_path(name), text).unwrap();
    }
}

impl TestProxy {
    /// warden as `warden serve` runs it: from files, with the hot reloader watching them.
    /// The config's `${VAR}`s come from the process environment here.
    pub async fn start_from(config: &ConfigDir) -> TestProxy {
        let running = match warden::server::start_from_file(&config.config_path(), true).await {
            Ok(r) => r,
            Err(warden::server::StartError::Config(d)) => {
                panic!("config: {}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
            }
            Err(e) => panic!("start: {e}"),
        };
        TestProxy { api: running.api_addr, admin: running.admin_addr, running: Some(running) }
    }
}

/// A config with only the in-process mock, for policy tests: keys `demo` (team demo) and
/// `public-web` (team public, label exposure=public).
pub fn policy_config() -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:0" }}
admin: {{ listen: "127.0.0.1:0" }}
providers:
  - {{ name: local, kind: mock }}
routes:
  - {{ model: "mock-*", provider: local }}
  - {{ model: "gpt-*", provider: local }}
aliases:
  cheap: mock-1
keys:
  - {{ name: demo, sha256: {DEMO_SHA}, team: demo }}
  - {{ name: public-web, sha256: 76dfd30f65102d5924e08d70fca43cfc1ef108ba1ef51527fe477336a06d0f40, team: public, labels: {{ exposure: public }} }}
"#
    )
}

/// The in-process mock with `mock-1` at $1 per million input and $1,000 per million output
/// tokens (an output token costs $0.001, so budget arithmetic stays readable), keys `demo`
/// (team demo) and `public-web` (team public), and `extra` appended (ledger, alerts).
pub fn priced_config(extra: &str) -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:0" }}
admin: {{ listen: "127.0.0.1:0" }}
providers:
  - {{ name: local, kind: mock }}
routes:
  - {{ model: "mock-*", provider: local }}
prices:
  mock-1: {{ input: 1.0, output: 1000.0 }}
keys:
  - {{ name: demo, sha256: {DEMO_SHA}, team: demo }}
  - {{ name: public-web, sha256: 76dfd30f65102d5924e08d70fca43cfc1ef108ba1ef51527fe477336a06d0f40, team: public }}
{extra}
"#
    )
}

pub const PUBLIC: (&str, &str) = ("authorization", "Bearer sk-warden-public-demo");
pub const PUBLIC_X: (&str, &str) = ("x-api-key", "sk-warden-public-demo");
