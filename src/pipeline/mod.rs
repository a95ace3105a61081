//! The life of one proxied request, top to bottom:
//!
//! ```text
//! handle ─ begin: request id, clock, ONE config snapshot for the whole request
//!   run ─ target::normalize        decode unreserved %XX; refuse absolute-form, dot segments,
//!                                  other escapes (the path classified is the path forwarded)
//!       ─ Endpoint::for_request    which API and endpoint (404 outside /v1/); methods other
//!                                  than GET, POST, DELETE → 405
//!       ─ auth::authenticate       virtual key by SHA-256 (401 before reading the body)
//!       ─ body::read_limited       413 past the limit, 408 past body_read_timeout, 415 if encoded
//!       ─ parse::view              JSON with unique keys at every depth; 400 naming a field
//!       ─ route::resolve           model/alias → provider from config only (no SSRF)
//!       ─ route::check_extra_path  unnamed paths only where the provider lists them (404)
//!       ─ policy::evaluate         each section of the matching policies returns a Verdict;
//!                                  Decision::apply turns monitored blocks into records, once;
//!                                  each nested batch request as if sent alone; `schema`
//!                                  request rules (400 naming the pointer)
//!       ─ schema::plan             what the answer must satisfy (declared or policy schema)
//!       ─ injection::check         every scanned text part: block (403), flag, sanitize
//!       ─ auth::authorize          key may use provider; provider enabled; upstream credential
//!       ─ session::admit           agent session caps: requests, tokens, wall-clock time (429)
//!       ─ cache::plan              cacheable? key of tenant, answering model, route, canonical body
//!       ─ canary::plant            a random marker in the system prompt, when a policy asks
//!       ─ ratelimit / budget       admit and reserve the worst case (429); settled in the guard
//!       ─ cache::lookup            hit → replayed in the asked shape (free unless charged);
//!                                  identical misses in flight → wait for the leader
//!       ─ policy::rewrite          aliases and every section's edits spliced in one pass
//!       ─ resilience::send         retries with backoff and jitter, circuit breakers, fallbacks;
//!         └ upstream::send         credential swap, first-byte timeout, per attempt
//!       ─ checked::checked_json    a non-streamed 200 of a JSON endpoint must be valid JSON (502);
//!       ─ schema::answer           the answer against its plan: pass, retry (back to
//!                                  resilience::send with a repair turn), reject (502) or flag
//!                                  (a stream: collected first, or judged at its final event);
//!                                  a passing cache miss's answer is stored (a stream: at its
//!                                  final event)
//!     → Reply::Exchange            response + outgoing request + provider + credential + guard
//!   respond::wrap ─ headers, streaming body with chunk/total timeouts and TTFB; SSE held
//!                   to the stream failure contract (stream.rs): whole events, checked,
//!                   and the API's error event if the stream fails after its 200; the
//!                   last bytes wait for the guard's settlement (exchange.rs)
//!   finish (Drop) ─ metrics + one log line, when the body ends or the client goes
//! ```
//!
//! Errors from any stage become the caller's native error body in exactly one place,
//! [`crate::error::ProxyError::into_response`].

pub mod access_log;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod budget;
pub mod cache;
pub mod canary;
pub mod checked;
pub mod ctx;
pub mod exchange;
pub mod finish;
pub mod injection;
pub mod observed;
pub mod parse;
pub mod policy;
pub mod ratelimit;
pub mod resilience;
pub mod respond;
pub mod route;
pub mod schema;
pub mod session;
pub mod stream;
pub mod upstream;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};

use crate::config::Snapshot;
use crate::error::{json_response, ProxyError};
use crate::http::body::{read_limited, Body};
use crate::http::target;
use crate::policy::evaluate::batch_model;
use crate::provider::{ApiFamily, Endpoint, FORWARDED_METHODS};
use crate::state::AppState;
use ctx::{ConnInfo, RequestCtx};
use exchange::{Exchange, Reply};
use finish::Finish;
use respond::BodyTimeouts;

/// Handles one request on the API listener. Never fails: every error is a response.
pub async fn handle<B>(app: Arc<AppState>, conn: ConnInfo, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<crate::http::body::BoxError>,
{
    let path = target::normalize(req.uri(), req.version());
    let family = ApiFamily::detect(path.as_deref().unwrap_or(req.uri().path()), req.headers());
    let cx = RequestCtx::begin(app.snapshot.load_full(), conn, req.method().clone(), family);
    let mut fin = Finish::new(app, cx);
    let result = match path {
        Ok(path) => run(&fin.app, &mut fin.cx, req, &path).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(Reply::Local(resp)) => respond::wrap(fin, resp, None),
        Ok(Reply::Cached(resp, guard)) => respond::wrap(fin, resp, Some((BodyTimeouts::local(), guard))),
        Ok(Reply::Exchange(x)) => respond::wrap(fin, x.response, Some((x.timeouts, x.guard))),
        Err(e) => {
            fin.cx.error_kind = Some(e.kind());
            fin.cx.error_detail = e.detail();
            fin.app.metrics.errors.with_label_values(&[e.kind()]).inc();
            let resp = e.into_response(fin.cx.family);
            respond::wrap(fin, resp, None)
        }
    }
}

async fn run<B>(app: &Arc<AppState>, cx: &mut RequestCtx, req: Request<B>, path: &str) -> Result<Reply, ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<crate::http::body::BoxError>,
{
    let snap = cx.snapshot.clone();
    let method = req.method();
    let endpoint = Endpoint::for_request(method, path)
        .ok_or_else(|| ProxyError::UnknownEndpoint { method: method.to_string(), path: path.to_string() })?;
    cx.endpoint = Some(endpoint);
    let method_ok = match endpoint.method() {
        Some(m) => m == method,
        None => FORWARDED_METHODS.contains(method),
    };
    if !method_ok {
        return Err(ProxyError::MethodNotAllowed { method: method.to_string(), path: path.to_string() });
    }
    let identity = auth::authenticate(&snap, req.headers(), &cx.conn)?;
    if let auth::Identity::Key(k) = &identity {
        cx.key = Some(k.clone());
    }

    if endpoint == Endpoint::Models {
        let body = cx.family.dialect().models_body(&route::visible_models(&snap, identity.key()));
        return Ok(Reply::Local(json_response(http::StatusCode::OK, body)));
    }

    let (parts, body) = req.into_parts();
    let body = read_body(&snap, &parts.headers, body).await?;
    cx.request_bytes = body.len();
    let view = crate::provider::request::view(endpoint, &parts.method, &body)?;
    cx.stream = view.stream;
    let batch_model = if endpoint.batch_item().is_some() { batch_model(&view.fields) } else { None };
    // Uploads on pass-through paths (audio, images) name their model in a form field.
    let form_model = if endpoint == Endpoint::Other { parse::pass_through_model(&parts.headers, &body)? } else { None };
    let model = view.model.as_deref().or(batch_model.as_deref()).or(form_model.as_deref());
    let routed = route::resolve(&snap, cx.family, model)?;
    auth::admit(&identity, &routed.provider)?;
    if endpoint == Endpoint::Other {
        route::check_extra_path(&routed, path)?;
    }
    cx.provider = Some(routed.provider.clone());
    cx.route_label = Some(routed.label.clone());
    if let Some(m) = model {
        let forwarded = routed.rewrite_model.as_deref().unwrap_or(m);
        // Metric labels name models the config knows; anything else is its route pattern,
        // so clients cannot mint label values.
        let known = |name: &str| snap.models.iter().any(|info| info.id == name);
        let requested = if known(m) { m.to_string() } else { routed.label.clone() };
        let forwarded_label = if forwarded == m {
            requested.clone()
        } else if known(forwarded) {
            forwarded.to_string()
        } else {
            // The pattern of the route the alias's target takes itself.
            snap.route(forwarded).map_or_else(|| routed.label.clone(), |r| r.label.to_string())
        };
        cx.requested_label = Some(requested);
        cx.model_label = Some(forwarded_label);
        cx.model_requested = Some(m.to_string());
        cx.model_forwarded = Some(forwarded.to_string());
    }
    // A batch is routed by its first nested model, but its own body names none: only the
    // nested requests are renamed.
    let rewrite_model = if batch_model.is_some() { None } else { routed.rewrite_model.as_deref() };
    if form_model.is_some() && rewrite_model.is_some() {
        return Err(ProxyError::AliasInForm);
    }

    let facts = policy::Facts {
        key: identity.key(),
        endpoint,
        model: view.model.as_deref().or(form_model.as_deref()),
        upstream_model: rewrite_model,
        provider: Some(routed.provider.name.as_str()),
        path,
    };
    let mut evaluated = policy::evaluate(&snap, &facts, &view, &body)?;
    policy::record(app, cx, &evaluated.decision);
    if let Some(v) = evaluated.decision.block.take() {
        return Err(ProxyError::PolicyViolation(Box::new(v)));
    }
    // What the answer must satisfy, known before anything is spent (a declared schema
    // warden cannot compile is the request's fault: 400).
    let output_plan = schema::plan(app, &evaluated.policies, endpoint, &view)?;
    injection::check(app, cx, &evaluated.policies, endpoint, &view, &body, &mut evaluated.decision.edits)?;
    cx.collect_output |= output_plan.is_some();

    let passthrough_id = match &identity {
        auth::Identity::Unverified { id, .. } => Some(id.clone()),
        auth::Identity::Key(_) => None,
    };
    route::check_enabled(&routed, model)?;
    let (key, credential) = auth::authorize(&snap, identity, &routed.provider)?;
    if key.is_none() {
        cx.passthrough = passthrough_id;
    }
    cx.key = key;

    // The fallbacks this caller may use and the policies allow, known before the budget
    // stage so that its reservation covers the dearest of them.
    let fallbacks = if routed.fallbacks.is_empty() {
        Vec::new()
    } else {
        let base = policy::Facts {
            key: cx.key.as_deref(),
            endpoint,
            model: view.model.as_deref().or(form_model.as_deref()),
            upstream_model: None,
            provider: None,
            path,
        };
        resilience::plan_fallbacks(&snap, cx, &routed.fallbacks, &base, &view, &body)
    };
    let mut guard = exchange::Guard::default();
    if evaluated.policies.iter().any(|p| p.sessions.is_some()) {
        session::admit(app, cx, &evaluated.policies, &parts.headers, &body, &mut guard)?;
    }
    // The cache key is made before the budgets: a budget's own output limit, set to fit
    // what is left, changes from one request to the next and is not part of it.
    let cache_plan = cache::plan(
        app,
        cx,
        &evaluated.policies,
        &parts.headers,
        endpoint,
        view.stream,
        &body,
        &evaluated.decision.edits,
    );
    // Planted after the cache key is made: a random marker must not make every request a miss.
    if let Some((c, edit)) = canary::plant(&evaluated.policies, endpoint, &view, &body) {
        cx.canary = Some(Box::new(c));
        cx.collect_output = true;
        evaluated.decision.edits.push(edit);
    }
    let top = body.iter().position(|b| *b == b'{').unwrap_or(0);
    if evaluated.policies.iter().any(|p| !p.budgets.is_empty() || !p.rate_limits.is_empty()) {
        if endpoint.batch_item().is_some() || matches!(endpoint, Endpoint::Batches | Endpoint::Other) {
            return Err(ProxyError::Forbidden(
                "a budget applies, and warden cannot yet price batches or pass-through paths: send the requests one by one".into(),
            ));
        }
        let subject = budget::Subject {
            scopes: crate::budget::Scopes::new(
                // Clients' own provider keys are budgeted by their hash.
                cx.passthrough.as_deref().unwrap_or(cx.key_name()),
                cx.team(),
                cx.model_forwarded.as_deref().unwrap_or("none"),
            )
            .known(Some(cx.key_scope()), cx.key.as_ref().map(|k| k.scopes[1].clone())),
            model: cx.model_forwarded.as_deref().unwrap_or("none"),
            fallback_models: fallbacks.iter().filter_map(|c| c.model.as_deref()).collect(),
            endpoint,
            view: &view,
            tokenizer: (snap.settings.prompt_tokens == crate::config::PromptTokens::Tiktoken
                && cx.family == crate::provider::ApiFamily::OpenAi)
                .then_some(&budget::tiktoken_count as &dyn Fn(&str) -> usize),
            body_len: body.len(),
            max_output: policy::top_output_limit(endpoint, &view, &evaluated.decision, top),
        };
        // One estimate of the prompt (a tokenizer pass, when configured) for both stages.
        let worst = budget::worst_case(&subject);
        let mut rate_headers = None;
        let admitted =
            ratelimit::admit(app, &evaluated.policies, &subject, worst.tokens(), &mut guard, &mut rate_headers);
        if let Err(e) = admitted {
            cx.rate_headers = rate_headers;
            return Err(e);
        }
        let reserved = budget::reserve(app, &snap, &evaluated.policies, &subject, &worst, &mut guard);
        // A 429 from a budget carries the rate-limit headers too.
        cx.rate_headers = rate_headers;
        let reserved = reserved?;
        if let Some(r) = reserved {
            if let Some((field, value)) = r.set_output {
                policy::set_top_output(&mut evaluated.decision, &view, &body, top, field, value);
            }
            if !r.would_refuse.is_empty() {
                cx.add_would_block(&r.would_refuse.join(","));
            }
        }
    }

    // The audit log records the tool calls the model asked for, and text where a policy
    // asks it to capture some.
    cx.audit = app.audit.get().is_some();
    if let Some(n) = evaluated.policies.iter().filter_map(|p| p.audit_capture).max().filter(|_| cx.audit) {
        let prompt = view.history().map(|h| h.texts.iter().map(|t| t.text.as_ref()).collect::<Vec<_>>().join("\n"));
        cx.capture = Some((n, prompt.map(|p| p.chars().take(n).collect()).unwrap_or_default()));
        cx.collect_output = true;
    }
    cx.collect_output |= cx.audit && cx.stream;
    let usage_edit = parse::ask_for_stream_usage(endpoint, &view, &body);
    cx.strip_usage = usage_edit.is_some();

    // A hit spends nothing: its guard settles with no usage, unless the policy charges hits.
    let mut lead = None;
    if let Some(plan) = cache_plan {
        let charge = plan.charge();
        match cache::lookup(app, cx, plan, routed.provider.timeouts.total).await {
            cache::Looked::Hit(resp) if charge => return Ok(Reply::Cached(resp, guard)),
            cache::Looked::Hit(resp) | cache::Looked::Failed(resp) => return Ok(Reply::Local(resp)),
            cache::Looked::Miss(l) => lead = Some(l),
        }
    }
    let model_span = view.model_span.clone();
    drop(view);
    let body = policy::rewrite(
        body,
        rewrite_model.map(|m| (m, model_span)),
        std::mem::take(&mut evaluated.decision.edits),
        &evaluated.model_edits,
        usage_edit,
    );
    let provider = routed.provider;
    let path = match endpoint.canonical_path() {
        Some(p) => Cow::Borrowed(p),
        None => Cow::Owned(path.to_string()),
    };
    let mut request = upstream::Outgoing::new(parts.method, path, parts.uri.query(), parts.headers, body, cx.family);
    let mut candidates = vec![resilience::Candidate { provider, credential, model: None }];
    candidates.extend(fallbacks);
    let retries = evaluated.policies.iter().find_map(|p| p.retries);
    // The body as first sent: a schema retry adds its repair turn to this, not to the last.
    let first_body = output_plan.as_ref().map(|_| request.body.clone());
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Only a schema retry needs the candidates again.
        let these = if output_plan.is_some() { candidates.clone() } else { std::mem::take(&mut candidates) };
        let answer = resilience::send(app, cx, these, retries, &mut request)
            .await
            .map_err(|e| cache::share_error(&mut lead, e, cx.family))?;
        let (resp, waited, provider, credential) = (answer.response, answer.waited, answer.provider, answer.credential);
        if let Some(m) = answer.model.filter(|m| cx.model_forwarded.as_ref() != Some(m)) {
            // A fallback's model is what the upstream received, what is charged and counted.
            guard.answered_by(&snap, &m);
            if snap.models.iter().any(|info| info.id == m) {
                cx.model_label = Some(m.clone());
            }
            cx.model_forwarded = Some(m);
        }
        cx.answered_by = Some(format!("{}/{}", provider.name, cx.model_forwarded.as_deref().unwrap_or("-")));
        cx.provider = Some(provider.clone());
        cx.upstream_wait = waited;
        app.metrics.upstream_duration.with_label_values(&[provider.name.as_str()]).observe(waited.as_secs_f64());
        let timeouts = BodyTimeouts {
            between_chunks: provider.timeouts.between_chunks,
            deadline: Instant::now() + provider.timeouts.total.saturating_sub(waited),
        };
        if !endpoint.returns_json() {
            return Ok(Reply::Exchange(Exchange { response: resp, request, provider, credential, timeouts, guard }));
        }
        let checked = checked::checked_json(
            resp,
            &timeouts,
            &provider.name,
            cx.family.dialect(),
            cx.request_bytes,
            match (cx.collect_output, cx.audit) {
                (true, _) => checked::Collect::Everything,
                (false, true) => checked::Collect::ToolCalls,
                (false, false) => checked::Collect::Nothing,
            },
        )
        .await;
        let mut checked = checked.map_err(|e| cache::share_error(&mut lead, e, cx.family))?;
        cx.output = checked.output.take();
        // count_tokens counts; it does not spend.
        cx.usage = checked.usage.filter(|_| endpoint != Endpoint::CountTokens);
        let leaked = cx.canary.as_deref_mut().zip(cx.output.as_ref()).is_some_and(|(c, out)| c.seen_in(out));
        if let Some(e) = leaked.then(|| canary::leaked(app, cx)).flatten() {
            if let Some(l) = lead.take() {
                l.not_stored();
            }
            let response = schema::refuse(app, cx, e);
            return Ok(Reply::Exchange(Exchange { response, request, provider, credential, timeouts, guard }));
        }
        let judged = match &output_plan {
            Some(plan) if checked.response.status().is_success() => {
                let judged = schema::answer(app, cx, plan, &mut checked, &timeouts, &provider.name, attempt).await;
                judged.map_err(|e| cache::share_error(&mut lead, e, cx.family))?
            }
            _ => schema::Judged::Pass,
        };
        let response = match judged {
            schema::Judged::Pass => checked.response,
            schema::Judged::Retry(note) => {
                let mut spent = cx.prior_usage.take().unwrap_or_default();
                spent.add(&cx.usage.take().unwrap_or_default());
                cx.prior_usage = Some(spent);
                request.body = schema::again(output_plan.as_deref(), endpoint, first_body.as_ref(), cx, &note);
                continue;
            }
            schema::Judged::Reject(e) => {
                // Every attempt was paid for: the refusal settles with their usage.
                if let Some(l) = lead.take() {
                    l.not_stored();
                }
                let response = schema::refuse(app, cx, e);
                return Ok(Reply::Exchange(Exchange { response, request, provider, credential, timeouts, guard }));
            }
        };
        let response = match lead.take() {
            // A flagged answer is delivered, never stored.
            Some(l) if cx.answer_tainted() => {
                l.not_stored();
                response
            }
            Some(l) => cache::answered(app, cx, l, response, checked.body, &timeouts, &provider.name).await?,
            None => response,
        };
        return Ok(Reply::Exchange(Exchange { response, request, provider, credential, timeouts, guard }));
    }
}

/// Reads the request body within the size limit and `body_read_timeout`. Compressed bodies
/// are refused: warden must read what the upstream will read.
async fn read_body<B>(snap: &Snapshot, headers: &http::HeaderMap, body: B) -> Result<bytes::Bytes, ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<crate::http::body::BoxError>,
{
    for v in headers.get_all(http::header::CONTENT_ENCODING) {
        let v = v.to_str().unwrap_or("?").trim();
        if !v.eq_ignore_ascii_case("identity") {
            return Err(ProxyError::UnsupportedEncoding(v.chars().take(32).collect()));
        }
    }
    let content_length =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let limit = snap.settings.max_body_bytes;
    let timeout = snap.settings.body_read_timeout;
    tokio::time::timeout(timeout, read_limited(body, content_length, limit))
        .await
        .map_err(|_| ProxyError::BodyTimeout(timeout))?
}
