//! A deliberately lenient upstream, as common web frameworks are: it percent-decodes the
//! whole path and routes on it case-insensitively, keeps the last of repeated JSON keys,
//! answers any method, and echoes TRACE requests with their headers. Whatever warden lets
//! through, this server acts on, so a bypass shows up as a request it saw.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::disallowed_methods,
    reason = "the test upstream's accept loop and connections live as long as the test"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One request as the lenient upstream understood it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The raw path and the fully decoded, lower-cased one it routed on.
    pub raw_path: String,
    pub route: String,
    pub headers: http::HeaderMap,
    /// The body parsed with last-key-wins semantics, as Python, Go and Node do.
    pub json: Option<serde_json::Value>,
    pub body: Bytes,
}

pub struct Lenient {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Lenient {
    pub async fn start() -> Lenient {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move { Ok::<_, Infallible>(answer(req, &log).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Lenient { addr, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the upstream saw no request")
    }
}

fn decode(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(Ok(v)) = path.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_lowercase()
}

async fn answer(req: Request<Incoming>, log: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let json = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let raw_path = parts.uri.path().to_string();
    let route = decode(&raw_path);
    let seen = Seen {
        method: parts.method.to_string(),
        raw_path,
        route: route.clone(),
        headers: parts.headers.clone(),
        json: json.clone(),
        body,
    };
    log.lock().unwrap().push(seen);
    let text = if parts.method == http::Method::TRACE {
        // What a TRACE-echoing server does: the request comes back, headers and all.
        parts.headers.iter().map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or(""))).collect::<String>()
    } else {
        serde_json::json!({
            "route": route,
            "model": json.as_ref().and_then(|j| j.get("model")).cloned(),
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        })
        .to_string()
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
