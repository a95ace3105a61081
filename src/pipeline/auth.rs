//! Authentication stage: finds the client's credential (`Authorization: Bearer`, `x-api-key`
//! or Azure's `api-key`), looks its SHA-256 up among the virtual keys, and, once the route is
//! known, decides which credential the upstream gets. Runs before the body is read, so an
//! unknown key costs no buffering unless some provider accepts clients' own keys.

use std::sync::Arc;

use http::HeaderMap;

use crate::config::{Provider, Snapshot, VirtualKey};
use crate::error::ProxyError;
use crate::http::headers::{authorization_token, API_KEY, X_API_KEY};
use crate::pipeline::ctx::ConnInfo;
use crate::secret::{sha256_hex, Secret};

/// Who the client is, before routing.
pub enum Identity {
    Key(Arc<VirtualKey>),
    /// Not a virtual key; usable only with a `passthrough` provider, which gets it as is.
    /// `id` (`sha256:` and 12 hex digits of the key's hash) names the caller in logs.
    Unverified {
        secret: Secret,
        id: String,
    },
}

impl Identity {
    /// The virtual key, when the caller presented one.
    pub fn key(&self) -> Option<&VirtualKey> {
        match self {
            Identity::Key(k) => Some(k),
            Identity::Unverified { .. } => None,
        }
    }
}

const INVALID: &str = "invalid API key: warden does not know this key";

/// The credential a client presented, from whichever header its SDK uses.
fn credential(headers: &HeaderMap) -> Option<&str> {
    if headers.contains_key(http::header::AUTHORIZATION) {
        return authorization_token(headers);
    }
    [X_API_KEY, API_KEY]
        .iter()
        .find_map(|h| headers.get(h).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

pub fn authenticate(snap: &Snapshot, headers: &HeaderMap, conn: &ConnInfo) -> Result<Identity, ProxyError> {
    let Some(presented) = credential(headers) else {
        return Err(ProxyError::Unauthorized(
            "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
        ));
    };
    let hash = sha256_hex(presented.as_bytes());
    match snap.key_by_hash(&hash) {
        // A loopback-only key presented from elsewhere is treated as unknown, so its
        // existence is not revealed.
        // `to_canonical`: on an IPv6 listener a local IPv4 client is `::ffff:127.0.0.1`.
        Some(key) if key.loopback_only && !conn.peer.ip().to_canonical().is_loopback() => {
            Err(ProxyError::Unauthorized(INVALID))
        }
        Some(key) => Ok(Identity::Key(key.clone())),
        None if snap.any_passthrough => {
            Ok(Identity::Unverified { secret: Secret::new(presented), id: format!("sha256:{}", &hash[..12]) })
        }
        None => Err(ProxyError::Unauthorized(INVALID)),
    }
}

/// The credential the upstream receives.
#[derive(Clone)]
pub enum Credential {
    /// The provider's own key from `proxy.yaml`.
    Provider,
    Client(Secret),
    /// The in-process mock needs none.
    None,
}

/// Refuses a caller that is not a virtual key when the routed provider does not take
/// clients' own keys: that is an authentication failure, decided before any policy.
pub fn admit(identity: &Identity, provider: &Provider) -> Result<(), ProxyError> {
    match identity {
        Identity::Unverified { .. } if !provider.passthrough => Err(ProxyError::Unauthorized(INVALID)),
        Identity::Key(_) | Identity::Unverified { .. } => Ok(()),
    }
}

/// Checks that the identity may use the routed provider and picks the upstream credential.
pub fn authorize(
    snap: &Snapshot,
    identity: Identity,
    provider: &Arc<Provider>,
) -> Result<(Option<Arc<VirtualKey>>, Credential), ProxyError> {
    match identity {
        Identity::Key(key) => {
            if let Some(allowed) = &key.providers {
                if !allowed.iter().any(|&i| snap.providers.get(i).is_some_and(|p| Arc::ptr_eq(p, provider))) {
                    return Err(ProxyError::Forbidden(format!(
                        "key `{}` may not use provider `{}`",
                        key.name, provider.name
                    )));
                }
            }
            let cred = match (&provider.key, &provider.transport) {
                (Some(_), _) => Credential::Provider,
                (None, crate::config::Transport::Mock { .. }) => Credential::None,
                (None, crate::config::Transport::Http { .. } | crate::config::Transport::H1 { .. }) => {
                    return Err(ProxyError::Forbidden(format!(
                        "provider `{}` only accepts clients' own provider keys (passthrough)",
                        provider.name
                    )))
                }
            };
            Ok((Some(key), cred))
        }
        Identity::Unverified { secret, .. } if provider.passthrough => Ok((None, Credential::Client(secret))),
        Identity::Unverified { .. } => Err(ProxyError::Unauthorized(INVALID)),
    }
}

/// The credential a fallback provider would get, or `None` when the caller may not use it.
/// A client's own provider key (passthrough) never goes to another provider than the one
/// it was sent for.
pub fn fallback_credential(snap: &Snapshot, key: Option<&VirtualKey>, provider: &Arc<Provider>) -> Option<Credential> {
    let key = key?;
    if provider.disabled.is_some() {
        return None;
    }
    if let Some(allowed) = &key.providers {
        if !allowed.iter().any(|&i| snap.providers.get(i).is_some_and(|p| Arc::ptr_eq(p, provider))) {
            return None;
        }
    }
    match (&provider.key, &provider.transport) {
        (Some(_), _) => Some(Credential::Provider),
        (None, crate::config::Transport::Mock { .. }) => Some(Credential::None),
        (None, crate::config::Transport::Http { .. } | crate::config::Transport::H1 { .. }) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn finds_credential_in_each_sdk_header() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("sk-a"));
        assert_eq!(credential(&h), Some("sk-a"));
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer sk-b"));
        assert_eq!(credential(&h), Some("sk-b"));
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(credential(&h), None);
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_static("bearer sk-c"));
        assert_eq!(credential(&h), Some("sk-c"));
    }

    #[test]
    fn loopback_only_keys_work_from_ipv4_clients_of_an_ipv6_listener() {
        let yaml = "keys:\n  - { name: local, sha256: 8e9ef33f78df530b97d2fb5a4ca04caebd524e45dd3ebc210f8c6e81122d173e, loopback_only: true }\n";
        let snap = crate::config::load_str("t.yaml", yaml, std::path::Path::new("."), &|_: &str| None)
            .map_err(|d| d[0].to_string())
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("sk-warden-demo"));
        for (peer, ok) in [
            ("[::ffff:127.0.0.1]:5000", true),
            ("[::1]:5000", true),
            ("127.0.0.1:5000", true),
            ("[::ffff:10.0.0.8]:5000", false),
        ] {
            let conn = ConnInfo { peer: peer.parse().unwrap() };
            assert_eq!(authenticate(&snap, &h, &conn).is_ok(), ok, "{peer}");
        }
    }
}
