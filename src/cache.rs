//! The response cache's runtime state: a moka cache of whole upstream answers weighed in
//! bytes, with a TTL per entry, and the single flights of misses in progress. Keys are
//! SHA-256 digests of the tenant, the answering provider and model, the API route and the
//! request body in a canonical form ([`body_digest`]); an entry also keeps its tenant,
//! provider, model and route, and a hit must match them all, so no crafted body can replay
//! another tenant's answer even if two digests ever met.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::provider::usage::Usage;
use crate::shard::lock;

pub type Key = [u8; 32];

/// How a stored answer was received, and so how it is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A non-streamed JSON body.
    Json,
    /// A whole SSE stream, from its first event to its final one.
    Sse,
}

/// Who may read an entry and what it answers: all must match on a hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `key:NAME`, `team:NAME`, `client:HASH` (a client's own provider key) or `shared`.
    pub tenant: String,
    pub provider: String,
    pub model: String,
    /// The endpoint label (`chat_completions`, `messages`, ...).
    pub route: &'static str,
}

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    pub meta: Meta,
    pub format: Format,
    pub body: Bytes,
    /// The upstream's response id, replaced by a fresh one on every replay.
    pub id: Option<String>,
    pub usage: Usage,
    pub stored: Instant,
    pub ttl: Duration,
}

impl Entry {
    /// What the entry weighs against `max_bytes`: its bytes and a fixed overhead.
    fn weight(&self) -> u32 {
        let m = &self.meta;
        let n = self.body.len() + m.tenant.len() + m.provider.len() + m.model.len() + 160;
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// What the waiters of a single flight get when its leader is done.
#[derive(Clone)]
pub enum Landed {
    /// The answer, stored; served to every waiter as a hit.
    Stored(Arc<Entry>),
    /// The leader's call failed: every waiter gets the same error response.
    Failed(Arc<Failure>),
    /// Answered, but not storable (too large, flagged): each waiter asks for itself.
    NotStored,
}

/// An error response, kept whole so that each waiter can be sent a copy.
#[derive(Debug)]
pub struct Failure {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

type Flights = Mutex<HashMap<Key, (u64, tokio::sync::watch::Receiver<Option<Landed>>)>>;

pub struct ResponseCache {
    entries: moka::sync::Cache<Key, Arc<Entry>>,
    flights: Arc<[Flights; 16]>,
    next_flight: AtomicU64,
    max_bytes: u64,
}

struct PerEntryTtl;

impl moka::Expiry<Key, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(&self, _: &Key, value: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Joining the flight of a key.
pub enum Join {
    /// No call for this key is running: this request makes it.
    Lead(Flight),
    /// Another request is making it: wait for what it lands.
    Wait(tokio::sync::watch::Receiver<Option<Landed>>),
}

/// The leader's side of a single flight. Dropped without landing (the client went away,
/// the stream broke), it wakes its waiters with nothing, and one of them leads next.
pub struct Flight {
    flights: Arc<[Flights; 16]>,
    key: Key,
    id: u64,
    tx: tokio::sync::watch::Sender<Option<Landed>>,
}

impl Flight {
    pub fn land(self, landed: Landed) {
        self.tx.send_replace(Some(landed));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut map = lock(&self.flights[usize::from(self.key[0] & 15)]);
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}

impl ResponseCache {
    pub fn new(max_bytes: u64) -> ResponseCache {
        ResponseCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, v: &Arc<Entry>| v.weight())
                .expire_after(PerEntryTtl)
                .build(),
            flights: Arc::new(std::array::from_fn(|_| Mutex::new(HashMap::new()))),
            next_flight: AtomicU64::new(0),
            max_bytes,
        }
    }

    /// The entry under `key`, if it answers `meta` (tenant, provider, model, route).
    pub fn get(&self, key: &Key, meta: &Meta) -> Option<Arc<Entry>> {
        self.entries.get(key).filter(|e| e.meta == *meta)
    }

    /// The largest entry stored: an eighth of the cache.
    pub fn max_entry_bytes(&self) -> usize {
        usize::try_from(self.max_bytes / 8).unwrap_or(usize::MAX)
    }

    /// Stores an answer. Entries larger than an eighth of the cache are not kept: one
    /// answer must not evict everything else. Returns whether it was stored.
    pub fn insert(&self, key: Key, entry: Entry) -> Option<Arc<Entry>> {
        if u64::from(entry.weight()) > self.max_bytes / 8 {
            return None;
        }
        let entry = Arc::new(entry);
        self.entries.insert(key, entry.clone());
        Some(entry)
    }

    /// Leads the call for `key`, or waits for the one running.
    pub fn join(&self, key: Key) -> Join {
        let mut map = lock(&self.flights[usize::from(key[0] & 15)]);
        if let Some((_, rx)) = map.get(&key) {
            return Join::Wait(rx.clone());
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        map.insert(key, (id, rx));
        Join::Lead(Flight { flights: self.flights.clone(), key, id, tx })
    }

    /// Bytes held (after moka's pending housekeeping).
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Removes every entry that `remove` selects; returns how many.
    pub fn purge(&self, remove: impl Fn(&Entry) -> bool) -> usize {
        let doomed: Vec<Arc<Key>> = self.entries.iter().filter(|(_, e)| remove(e)).map(|(k, _)| k).collect();
        for k in &doomed {
            self.entries.invalidate(k.as_ref());
        }
        self.entries.run_pending_tasks();
        doomed.len()
    }
}

/// Top-level fields left out of the key: they do not change the answer. `model` is keyed
/// separately, as the model that answers.
pub const IGNORED_FIELDS: [&str; 9] = [
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
];

/// The digest of a JSON request body in canonical form: object keys in sorted order at every
/// depth, numbers by value (`0`, `0.0` and `0e0` are one number), strings and arrays
/// length-prefixed so no two bodies share an encoding, and [`IGNORED_FIELDS`] left out at
/// the top level. `None` for a body that is not a JSON object. The encoding is gathered
/// first and hashed once: a hash update per value cost more than the hashing.
pub fn body_digest(value: &Value) -> Option<[u8; 32]> {
    let Value::Object(top) = value else { return None };
    let mut h = Vec::with_capacity(512);
    let mut keys: Vec<&String> = top.keys().filter(|k| !IGNORED_FIELDS.contains(&k.as_str())).collect();
    keys.sort_unstable();
    h.extend_from_slice(b"{");
    h.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for k in keys {
        feed_str(&mut h, k);
        feed(&mut h, &top[k.as_str()]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &h).as_ref());
    Some(out)
}

fn feed_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn feed(h: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => h.extend_from_slice(b"n"),
        Value::Bool(true) => h.extend_from_slice(b"t"),
        Value::Bool(false) => h.extend_from_slice(b"f"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                h.extend_from_slice(b"i");
                h.extend_from_slice(&i128::from(i).to_le_bytes());
            } else if let Some(u) = n.as_u64() {
                h.extend_from_slice(b"i");
                h.extend_from_slice(&i128::from(u).to_le_bytes());
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    h.extend_from_slice(b"i");
                    h.extend_from_slice(&(f as i128).to_le_bytes());
                } else {
                    h.extend_from_slice(b"d");
                    h.extend_from_slice(&f.to_bits().to_le_bytes());
                }
            }
        }
        Value::String(s) => {
            h.extend_from_slice(b"s");
            feed_str(h, s);
        }
        Value::Array(items) => {
            h.extend_from_slice(b"[");
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                feed(h, i);
            }
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            h.extend_from_slice(b"{");
            h.extend_from_slice(&(keys.len() as u64).to_le_bytes());
            for k in keys {
                feed_str(h, k);
                feed(h, &map[k.as_str()]);
            }
        }
    }
}

/// Request headers that change the answer (Anthropic's API version and beta features): keyed
/// with the body.
pub const KEYED_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// `digest` extended with the values of [`KEYED_HEADERS`] the request carries.
pub fn with_headers(digest: [u8; 32], headers: &http::HeaderMap) -> [u8; 32] {
    if !KEYED_HEADERS.iter().any(|h| headers.contains_key(*h)) {
        return digest;
    }
    let mut h = Vec::with_capacity(128);
    h.extend_from_slice(&digest);
    for name in KEYED_HEADERS {
        feed_str(&mut h, name);
        for v in headers.get_all(name) {
            h.extend_from_slice(b"=");
            h.extend_from_slice(&(v.len() as u64).to_le_bytes());
            h.extend_from_slice(v.as_bytes());
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &h).as_ref());
    out
}

/// The cache key: the tenant, the provider and model that answer, the route, whether the
/// answer is streamed (only for routes whose answers are not converted between the two),
/// and the body's digest, each length-prefixed.
pub fn key(meta: &Meta, stream: Option<bool>, digest: &[u8; 32]) -> Key {
    let mut h = Vec::with_capacity(128);
    h.extend_from_slice(b"warden-cache-v1");
    for part in [meta.tenant.as_str(), &meta.provider, &meta.model, meta.route] {
        feed_str(&mut h, part);
    }
    h.extend_from_slice(match stream {
        None => b"-",
        Some(true) => b"s",
        Some(false) => b"j",
    });
    h.extend_from_slice(digest);
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &h).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(s: &str) -> [u8; 32] {
        body_digest(&serde_json::from_str(s).unwrap()).unwrap()
    }

    #[test]
    fn key_order_and_ignored_fields_do_not_change_the_digest() {
        let a = digest(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#);
        let b = digest(
            r#"{"temperature":0.0,"messages":[{"content":"hi","role":"user"}],"model":"other","user":"u1","stream":true,"stream_options":{"include_usage":true},"metadata":{"x":1}}"#,
        );
        assert_eq!(a, b);
        for changed in [
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#"{"messages":[{"role":"user","content":"hi!"}],"temperature":0}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0,"tools":[]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0,"seed":1}"#,
        ] {
            assert_ne!(a, digest(changed), "{changed}");
        }
        // Nested structure is part of the encoding: a string cannot pose as an object.
        assert_ne!(digest(r#"{"a":{"b":"c"}}"#), digest(r#"{"a":"{\"b\":\"c\"}"}"#));
        assert_ne!(digest(r#"{"a":["b","c"]}"#), digest(r#"{"a":["bc"]}"#));
        assert!(body_digest(&serde_json::json!([1])).is_none());
    }

    fn meta(tenant: &str) -> Meta {
        Meta { tenant: tenant.into(), provider: "p".into(), model: "m".into(), route: "chat_completions" }
    }

    fn entry(m: Meta, bytes: usize, ttl: Duration) -> Entry {
        Entry {
            meta: m,
            format: Format::Json,
            body: Bytes::from(vec![b'x'; bytes]),
            id: None,
            usage: Usage::default(),
            stored: Instant::now(),
            ttl,
        }
    }

    #[test]
    fn a_hit_must_match_the_stored_tenant_and_the_size_is_bounded() {
        let c = ResponseCache::new(1 << 20);
        let d = digest(r#"{"a":1}"#);
        let (ka, kb) = (key(&meta("key:a"), None, &d), key(&meta("key:b"), None, &d));
        assert_ne!(ka, kb);
        assert!(c.insert(ka, entry(meta("key:a"), 100, Duration::from_secs(60))).is_some());
        assert!(c.get(&ka, &meta("key:a")).is_some());
        // Even under the same key, another tenant's meta does not match.
        assert!(c.get(&ka, &meta("key:b")).is_none());
        assert!(c.get(&kb, &meta("key:b")).is_none());
        // Too large for one entry.
        assert!(c.insert(kb, entry(meta("key:b"), 200_000, Duration::from_secs(60))).is_none());
        for i in 0..200u32 {
            let k = key(&meta(&format!("key:{i}")), None, &d);
            c.insert(k, entry(meta(&format!("key:{i}")), 100_000, Duration::from_secs(60)));
        }
        assert!(c.weighted_size() <= 1 << 20, "{}", c.weighted_size());
        assert!(c.purge(|e| e.meta.tenant.starts_with("key:")) > 0);
        assert!(c.get(&ka, &meta("key:a")).is_none() && c.weighted_size() == 0);
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let c = ResponseCache::new(1 << 20);
        let k = key(&meta("key:a"), None, &digest("{}"));
        c.insert(k, entry(meta("key:a"), 10, Duration::from_millis(30)));
        assert!(c.get(&k, &meta("key:a")).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get(&k, &meta("key:a")).is_none());
    }

    #[tokio::test]
    async fn one_leader_per_key_and_its_waiters_see_what_it_lands() {
        let c = ResponseCache::new(1 << 20);
        let k = [7u8; 32];
        let Join::Lead(lead) = c.join(k) else { panic!("first is the leader") };
        let Join::Wait(mut rx) = c.join(k) else { panic!("second waits") };
        lead.land(Landed::NotStored);
        let got = rx.wait_for(Option::is_some).await.unwrap().clone();
        assert!(matches!(got, Some(Landed::NotStored)));
        // The flight is over: the next request leads again; a dropped leader wakes waiters.
        let Join::Lead(lead) = c.join(k) else { panic!("leads again") };
        let Join::Wait(mut rx) = c.join(k) else { panic!("waits") };
        drop(lead);
        assert!(rx.wait_for(Option::is_some).await.is_err());
        assert!(matches!(c.join(k), Join::Lead(_)));
    }
}
