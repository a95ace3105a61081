//! The admin listener: `/metrics` (Prometheus text format), `/healthz`, `/readyz`, and
//! `/admin/policies` (the live policy snapshot and the last reload's outcome), `/admin/spend`
//! (budget accounts of the current windows). Optionally
//! guarded by a bearer token from the environment. Observation only.

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

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
