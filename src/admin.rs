//! The admin listener: `/metrics` (Prometheus text format), `/healthz`, `/readyz`, and
//! `/admin/policies` (the live policy snapshot and the last reload's outcome), `/admin/spend`
//! (budget accounts of the current windows), `/admin/cache` (its size; `DELETE` empties it, or
//! the entries of one key, team or model). Optionally guarded by a bearer token from the
//! environment. Observation only, but for emptying the cache.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::http::body::{full, Body};
use crate::http::headers::authorization_token;
use crate::secret::sha256_hex;
use crate::state::AppState;

/// Probes answer without the token: orchestrators' health checks cannot send one, and they
/// reveal nothing but "up" and "ready".
const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

pub async fn handle<B>(app: Arc<AppState>, req: Request<B>) -> Response<Body> {
    let snap = app.snapshot.load();
    if let Some(token) = snap.settings.admin_token.as_ref().filter(|_| !OPEN_PATHS.contains(&req.uri().path())) {
        let presented = authorization_token(req.headers()).unwrap_or("");
        // Comparing digests keeps the comparison time independent of the token's bytes.
        if sha256_hex(presented.as_bytes()) != sha256_hex(token.expose().as_bytes()) {
            return text(StatusCode::UNAUTHORIZED, "admin token required\n");
        }
    }
    if req.uri().path() == "/admin/cache" {
        return match *req.method() {
            Method::DELETE => purge_cache(&app, req.uri().query()),
            Method::GET => json(cache_json(&app)),
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "GET or DELETE\n"),
        };
    }
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            // What is left of each budget is read from the accounts when scraped, not kept
            // up to date on every request.
            let rows = crate::budget::spend_rows(&snap, app.budgets.snapshot(), crate::budget::now_secs());
            app.metrics.budget_remaining.reset();
            for r in rows {
                if let Some(left) = r.remaining_usd {
                    let label = format!("{}/{}", r.policy, r.budget);
                    app.metrics.budget_remaining.with_label_values(&[label.as_str(), r.scope.as_str()]).set(left);
                }
            }
            // Every provider with a breaker has a series, closed (0) until it first opens.
            for p in snap.providers.iter().filter(|p| p.breaker.is_some()) {
                app.metrics.circuit_state.with_label_values(&[&p.name]).set(app.breakers.state(&p.name) as i64);
            }
            app.metrics.cache_bytes.set(i64::try_from(app.cache.weighted_size()).unwrap_or(i64::MAX));
            app.metrics.cache_entries.set(i64::try_from(app.cache.entry_count()).unwrap_or(i64::MAX));
            let mut resp = Response::new(full(app.metrics.render()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/admin/policies" => {
            let status = app.reload_status.lock().map(|s| s.clone()).unwrap_or_default();
            let mut resp = Response::new(full(serde_json::to_vec_pretty(&status).unwrap_or_default()));
            resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        "/admin/spend" => {
            let mut resp = Response::new(full(spend_json(&app, &snap)));
            resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if app.draining.load(Ordering::SeqCst) => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Every budget account of the current windows (see [`crate::budget::spend_rows`]).
fn spend_json(app: &AppState, snap: &crate::config::Snapshot) -> Vec<u8> {
    let rows = crate::budget::spend_rows(snap, app.budgets.snapshot(), crate::budget::now_secs());
    serde_json::to_vec_pretty(&serde_json::json!({ "budgets": rows })).unwrap_or_default()
}

/// `DELETE /admin/cache`: every entry, or those of one key (`?key=NAME`), team
/// (`?team=NAME`) or model (`?model=NAME`); the filters combine.
fn purge_cache(app: &AppState, query: Option<&str>) -> Response<Body> {
    let mut key = None;
    let mut team = None;
    let mut model = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match name {
            "key" => key = Some(format!("key:{value}")),
            "team" => team = Some(format!("team:{value}")),
            "model" => model = Some(value),
            _ => return text(StatusCode::BAD_REQUEST, "unknown filter: use key, team or model\n"),
        }
    }
    let removed = app.cache.purge(|e| {
        key.as_ref().is_none_or(|k| *k == e.meta.tenant)
            && team.as_ref().is_none_or(|t| *t == e.meta.tenant)
            && model.as_ref().is_none_or(|m| *m == e.meta.model)
    });
    json(serde_json::to_vec_pretty(&serde_json::json!({ "removed": removed })).unwrap_or_default())
}

/// `%XX` and `+` in a query value.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' => match (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn cache_json(app: &AppState) -> Vec<u8> {
    let body = serde_json::json!({ "entries": app.cache.entry_count(), "bytes": app.cache.weighted_size() });
    serde_json::to_vec_pretty(&body).unwrap_or_default()
}

fn json(body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
