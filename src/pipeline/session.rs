//! Session stage: counts the request in its agent session for every matching policy with a
//! `sessions` section, and stops it (429, naming the cap) once the session has used its
//! requests, tokens or time. The session id comes from the `x-warden-session` header, or
//! from the body's `user` or `metadata.user_id` when the policy says so; a request without
//! one is in no session. Sessions are per caller: the same id under two keys is two sessions.
//! The tokens the exchange used are added when it ends (through the guard).

use http::HeaderMap;
use serde::Deserialize;

use super::ctx::RequestCtx;
use super::exchange::{End, Guard, Settle, SettleFuture};
use crate::error::{ProxyError, SessionRefusal};
use crate::policy::compile::Policy;
use crate::policy::{Mode, SessionId};
use crate::sessions::SessionKey;
use crate::state::AppState;

/// The header a client names its session in.
pub const SESSION_HEADER: &str = "x-warden-session";

/// Longer session ids are refused: they are keys of runtime state.
const MAX_ID_BYTES: usize = 256;

pub fn admit(
    app: &std::sync::Arc<AppState>,
    cx: &mut RequestCtx,
    policies: &[&Policy],
    headers: &HeaderMap,
    body: &[u8],
    guard: &mut Guard,
) -> Result<(), ProxyError> {
    for p in policies {
        let Some(caps) = &p.sessions else { continue };
        let Some(id) = session_id(caps.id, headers, body)? else { continue };
        let key = SessionKey { policy: p.name.clone(), scope: cx.key_scope(), id };
        cx.session = Some(key.id.clone());
        match app.sessions.admit(&key, caps, std::time::Instant::now()) {
            Ok(()) => guard.push(Box::new(Tokens { app: app.clone(), key })),
            Err(stopped) if p.mode == Mode::Monitor => {
                cx.add_would_block(&format!("{}:sessions.{}", p.name, stopped.limit));
            }
            Err(stopped) => {
                app.metrics.session_blocks.with_label_values(&[stopped.limit]).inc();
                return Err(ProxyError::SessionLimit(Box::new(SessionRefusal {
                    policy: p.name.to_string(),
                    session: key.id.chars().take(64).collect(),
                    limit: stopped.limit,
                    detail: stopped.detail,
                })));
            }
        }
    }
    Ok(())
}

fn session_id(from: SessionId, headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, ProxyError> {
    #[derive(Deserialize)]
    struct Metadata {
        user_id: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Ids {
        user: Option<serde_json::Value>,
        metadata: Option<Metadata>,
    }
    let id = match from {
        SessionId::Header => match headers.get(SESSION_HEADER) {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ProxyError::InvalidShape(format!("`{SESSION_HEADER}` must be visible ASCII")))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        },
        SessionId::User | SessionId::MetadataUserId => {
            // Read only when a policy asks for it; the body is valid JSON by now.
            let ids: Ids = serde_json::from_slice(body).unwrap_or(Ids { user: None, metadata: None });
            let v = if from == SessionId::User { ids.user } else { ids.metadata.and_then(|m| m.user_id) };
            match v {
                Some(serde_json::Value::String(s)) => Some(s),
                Some(serde_json::Value::Null) | None => None,
                Some(_) => {
                    let field = if from == SessionId::User { "user" } else { "metadata.user_id" };
                    return Err(ProxyError::InvalidShape(format!("`{field}` must be a string: it names the session")));
                }
            }
        }
    };
    match id {
        Some(id) if id.len() > MAX_ID_BYTES => {
            Err(ProxyError::InvalidShape(format!("a session id may have at most {MAX_ID_BYTES} bytes")))
        }
        Some(id) if id.is_empty() => Ok(None),
        id => Ok(id),
    }
}

/// Adds the tokens the exchange used to its session.
struct Tokens {
    app: std::sync::Arc<AppState>,
    key: SessionKey,
}

impl Settle for Tokens {
    fn settle(self: Box<Self>, end: End) -> SettleFuture {
        if let Some(u) = end.usage {
            self.app.sessions.add_tokens(&self.key, u.total());
        }
        Box::pin(async {})
    }
}
