//! Shared application state: the live configuration snapshot, and the runtime state that
//! outlives snapshots (upstream connection pools, spend, rate counters, breakers,
//! sessions, the response cache), keyed by stable names so a reload changes configuration without
//! dropping what runs.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{Snapshot, Transport};
use crate::http::client::{build_client, HttpClient};
use crate::http::h1pool::H1Pool;
use crate::metrics::Metrics;
use crate::policy::reload::ReloadStatus;
use crate::provider::mock::Mock;

/// A provider's live connections, built from its [`Transport`].
pub enum Upstream {
    /// https (or h2c): hyper-util's pooled client.
    Http(Box<HttpClient>),
    /// Plain-http HTTP/1.1: warden's own pool (see `http::h1pool`).
    H1(Arc<H1Pool>),
    /// The in-process mock.
    Mock(Mock),
}

impl Upstream {
    fn build(t: &Transport) -> Option<Upstream> {
        Some(match t {
            Transport::Http { http2, connect, .. } => Upstream::Http(Box::new(build_client(*connect, *http2))),
            Transport::H1 { authority, connect, .. } => Upstream::H1(Arc::new(H1Pool::new(authority, *connect)?)),
            Transport::Mock { name } => Upstream::Mock(Mock::named(name)),
        })
    }
}

/// Connection pools by transport key (base URL, protocol, connect timeout). Swapped whole on
/// reload: requests load the map without a lock.
#[derive(Default)]
pub struct Transports {
    by_key: ArcSwap<HashMap<String, Arc<Upstream>>>,
}

impl Transports {
    /// The pool for a provider's transport. A request that began under a snapshot whose
    /// transport a reload has since replaced gets a pool of its own for this one call.
    pub fn get(&self, key: &str, t: &Transport) -> Option<Arc<Upstream>> {
        match self.by_key.load().get(key) {
            Some(u) => Some(u.clone()),
            None => Upstream::build(t).map(Arc::new),
        }
    }

    /// Makes the pools match `snap`: unchanged transports keep theirs (and their warm
    /// connections), new ones are built, and pools no provider uses any more are kept for
    /// one more reload, for requests still running under the old snapshot.
    pub fn install(&self, snap: &Snapshot, previous: Option<&Snapshot>) {
        let current = self.by_key.load_full();
        let mut next: HashMap<String, Arc<Upstream>> = HashMap::new();
        for p in &snap.providers {
            let pool = current.get(&p.transport_key).cloned().or_else(|| Upstream::build(&p.transport).map(Arc::new));
            if let Some(pool) = pool {
                next.insert(p.transport_key.clone(), pool);
            }
        }
        for p in previous.into_iter().flat_map(|s| s.providers.iter()) {
            if let Some(pool) = current.get(&p.transport_key) {
                next.entry(p.transport_key.clone()).or_insert_with(|| pool.clone());
            }
        }
        self.by_key.store(Arc::new(next));
    }
}

pub struct AppState {
    /// The live snapshot. A request loads it once, in `RequestCtx::begin`, and keeps that
    /// `Arc` for its whole life, so a reload never changes a request half-way.
    pub snapshot: ArcSwap<Snapshot>,
    /// Connection pools outlive snapshots, so a reload does not drop warm connections.
    pub transports: Transports,
    pub metrics: Metrics,
    /// Budget accounts, by policy, budget, scope and window: kept across reloads.
    pub budgets: crate::budget::Accounts,
    /// Rate-limit buckets and in-flight counts, by policy, limit and scope.
    pub limiters: crate::ratelimit::Limiters,
    /// Circuit breakers by provider name: a reload keeps them.
    pub breakers: crate::breaker::Breakers,
    /// Agent sessions, by policy, caller and session id.
    pub sessions: crate::sessions::Sessions,
    /// Stored responses and the single flights of misses, sized by `cache.max_bytes` at start.
    pub cache: crate::cache::ResponseCache,
    /// Validators compiled from the schemas requests declare (bounded).
    pub schemas: crate::config::jsonschema::Declared,
    /// The audit log's writer, when `audit:` is configured.
    pub audit: std::sync::OnceLock<crate::audit::AuditLog>,
    /// The durable ledger settled spend goes to, when `ledger:` is configured.
    pub ledger: std::sync::OnceLock<crate::ledger::Ledger>,
    /// Set when draining: `/readyz` turns 503 so load balancers stop sending traffic.
    pub draining: AtomicBool,
    /// The last reload's outcome, for `/admin/policies`. Written only by the reloader.
    pub reload_status: Mutex<ReloadStatus>,
}

impl AppState {
    pub fn new(snapshot: Snapshot) -> Arc<AppState> {
        let transports = Transports::default();
        transports.install(&snapshot, None);
        let cache = crate::cache::ResponseCache::new(snapshot.settings.cache_max_bytes);
        Arc::new(AppState {
            cache,
            schemas: crate::config::jsonschema::Declared::default(),
            snapshot: ArcSwap::from_pointee(snapshot),
            transports,
            metrics: Metrics::new(),
            budgets: crate::budget::Accounts::default(),
            ledger: std::sync::OnceLock::new(),
            breakers: crate::breaker::Breakers::default(),
            sessions: crate::sessions::Sessions::default(),
            audit: std::sync::OnceLock::new(),
            limiters: crate::ratelimit::Limiters::default(),
            draining: AtomicBool::new(false),
            reload_status: Mutex::new(ReloadStatus::default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(base: &str) -> Snapshot {
        let yaml = format!("providers:\n  - {{ name: up, kind: openai, base_url: \"{base}\", passthrough: true }}\n");
        crate::config::load_str("t.yaml", &yaml, std::path::Path::new("."), &|_: &str| None)
            .map_err(|d| d[0].to_string())
            .unwrap()
    }

    #[test]
    fn pools_survive_reloads_that_keep_their_transport() {
        let t = Transports::default();
        let a = snap("http://127.0.0.1:1/v1");
        t.install(&a, None);
        let key_a = a.providers[0].transport_key.clone();
        let first = t.by_key.load().get(&key_a).cloned().unwrap();
        t.install(&snap("http://127.0.0.1:1/v1"), Some(&a));
        assert!(Arc::ptr_eq(&first, t.by_key.load().get(&key_a).unwrap()), "an unchanged transport was rebuilt");
        // A changed base URL gets a new pool; the old one stays for one more reload.
        let b = snap("http://127.0.0.1:2/v1");
        t.install(&b, Some(&a));
        assert_eq!(t.by_key.load().len(), 2);
        t.install(&b, Some(&b));
        assert_eq!(t.by_key.load().len(), 1);
        assert!(t.by_key.load().contains_key(&b.providers[0].transport_key));
    }
}
