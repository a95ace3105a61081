//! The life of one proxied request, top to bottom:
//!
//! ```text
//! handle ─ begin: request id, clock, ONE config snapshot for the whole request
//!   run ─ parse::check_target      reject absolute-form / dot-segment targets
//!       ─ Endpoint::classify       which API and endpoint (404 outside /v1/)
//!       ─ auth::authenticate       virtual key by SHA-256 (401 before reading the body)
//!       ─ body::read_limited       413 past the limit, never buffered beyond it
//!       ─ parse::view              `model`, `stream`; 400 naming a wrong field
//!       ─ route::resolve           model/alias → provider from config only (no SSRF)
//!       ─ auth::authorize          key may use provider; pick upstream credential
//!       ─ policy::evaluate         matching policies' `limits` → block / monitor / clamp
//!       ─ upstream::send           credential swap, first-byte timeout
//!   respond::wrap ─ headers, streaming body with chunk/total timeouts and TTFB
//!   finish (Drop) ─ metrics + one log line, when the body ends or the client goes
//! ```
//!
//! Errors from any stage become the caller's native error body in exactly one place,
//! [`crate::error::ProxyError::into_response`].

pub mod auth;
pub mod ctx;
pub mod finish;
pub mod parse;
pub mod policy;
pub mod respond;
pub mod route;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};

use crate::error::{error_response, ProxyError};
use crate::http::body::{read_limited, Body};
use crate::provider::{ApiFamily, Endpoint};
use crate::state::AppState;
use ctx::{ConnInfo, RequestCtx};
use finish::Finish;
use respond::BodyTimeouts;

/// Handles one request on the API listener. Never fails: every error is a response.
pub async fn handle<B>(app: Arc<AppState>, conn: ConnInfo, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<crate::http::body::BoxError>,
{
    let family = ApiFamily::detect(req.uri().path(), req.headers());
    let cx = RequestCtx::begin(app.snapshot.load_full(), conn, req.method().clone(), family);
    let mut fin = Finish::new(app, cx);
    match run(&fin.app, &mut fin.cx, req).await {
        Ok((resp, timeouts)) => respond::wrap(fin, resp, timeouts),
        Err(e) => {
            fin.cx.error_kind = Some(e.kind());
            fin.app.metrics.errors.with_label_values(&[e.kind()]).inc();
            let resp = e.into_response(fin.cx.family);
            respond::wrap(fin, resp, None)
        }
    }
}

async fn run<B>(
    app: &AppState,
    cx: &mut RequestCtx,
    req: Request<B>,
) -> Result<(Response<Body>, Option<BodyTimeouts>), ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<crate::http::body::BoxError>,
{
    let snap = cx.snapshot.clone();
    parse::check_target(req.uri(), req.version())?;
    let path = req.uri().path();
    let endpoint = Endpoint::classify(path)
        .ok_or_else(|| ProxyError::UnknownEndpoint { method: req.method().to_string(), path: path.to_string() })?;
    cx.endpoint = Some(endpoint);
    if endpoint.method().is_some_and(|m| m != req.method()) {
        return Err(ProxyError::MethodNotAllowed { method: req.method().to_string(), path: path.to_string() });
    }
    let identity = auth::authenticate(&snap, req.headers(), &cx.conn)?;
    if let auth::Identity::Key(k) = &identity {
        cx.key = Some(k.clone());
    }

    if endpoint == Endpoint::Models {
        let key = match &identity {
            auth::Identity::Key(k) => Some(k.as_ref()),
            auth::Identity::Unverified { .. } => None,
        };
        let body = cx.family.dialect().models_body(&route::visible_models(&snap, key));
        return Ok((error_response(http::StatusCode::OK, body), None));
    }

    let (parts, body) = req.into_parts();
    let content_length =
        parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let mut body = read_limited(body, content_length, snap.settings.max_body_bytes).await?;
    let view = parse::view(endpoint, &parts.method, &body)?;
    cx.stream = view.stream;
    let routed = route::resolve(&snap, cx.family, view.model.as_deref())?;
    let passthrough_id = match &identity {
        auth::Identity::Unverified { id, .. } => Some(id.clone()),
        auth::Identity::Key(_) => None,
    };
    let (key, credential) = auth::authorize(&snap, identity, &routed.provider)?;
    if key.is_none() {
        cx.passthrough = passthrough_id;
    }
    cx.key = key;
    cx.provider = Some(routed.provider.clone());
    cx.route_label = Some(routed.label.clone());

    let facts = policy::Facts {
        key: cx.key.as_deref(),
        endpoint,
        model: view.model.as_deref(),
        upstream_model: routed.rewrite_model.as_deref(),
        provider: Some(routed.provider.name.as_str()),
    };
    let decision = policy::evaluate(&snap, &facts, &view.fields, &body)?;
    let model_span = view.model_span.clone();
    drop(view);
    policy::record(app, cx, &decision);
    if let Some(v) = decision.block {
        return Err(ProxyError::PolicyViolation(Box::new(v)));
    }
    if routed.rewrite_model.is_some() || decision.set_tokens.is_some() {
        let model = routed.rewrite_model.as_deref().map(|m| (m, model_span));
        body = policy::rewrite(&body, model, decision.set_tokens.as_ref());
    }

    let provider = &routed.provider;
    let out =
        upstream::Outgoing { method: parts.method, uri: &parts.uri, headers: parts.headers, body, family: cx.family };
    let (resp, waited) = upstream::send(provider, credential, out).await?;
    cx.upstream_wait = waited;
    app.metrics.upstream_duration.with_label_values(&[provider.name.as_str()]).observe(waited.as_secs_f64());
    let timeouts = BodyTimeouts {
        between_chunks: provider.timeouts.between_chunks,
        deadline: Instant::now() + provider.timeouts.total.saturating_sub(waited),
    };
    Ok((resp, Some(timeouts)))
}
