//! A map of shared, individually locked entries, sharded so that finding an entry never
//! waits on unrelated requests: the runtime state of budgets and rate limits.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 32;

/// A fast multiply-rotate hasher (the `rustc` "Fx" scheme) with a per-process random seed.
/// The keys are names from the config and hashes of client keys: short strings for which
/// SipHash cost more than the rest of the lookup. The seed keeps collisions unpredictable.
#[derive(Clone, Copy)]
pub struct Seeded(u64);

pub struct Fx(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0 ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(26);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(K).rotate_left(26);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0 ^ u64::from(i)).wrapping_mul(K).rotate_left(26);
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0 ^ i).wrapping_mul(K).rotate_left(26);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for Seeded {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(self.0)
    }
}

impl Seeded {
    fn random() -> Seeded {
        Seeded(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64))
    }
}

type Shard<K, V> = Mutex<HashMap<K, Arc<Mutex<V>>, Seeded>>;

/// The accounts, limits or claims of one request: a few, kept inline (no allocation per
/// request).
pub type Few<T> = smallvec::SmallVec<[T; 4]>;

pub struct ShardedMap<K, V> {
    shards: Vec<Shard<K, V>>,
    hasher: Seeded,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        let hasher = Seeded::random();
        ShardedMap { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::with_hasher(hasher))).collect(), hasher }
    }
}

/// Locks, ignoring poison: every update under these locks is a few plain assignments, so a
/// panic elsewhere never leaves an entry half-written.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<K: Hash + Eq + Clone, V: Default + Copy> ShardedMap<K, V> {
    fn shard(&self, key: &K) -> &Shard<K, V> {
        // The high bits: the low ones also pick the bucket inside the shard's map.
        &self.shards[(self.hasher.hash_one(key) >> 58) as usize % SHARDS]
    }

    /// The entry for `key`, created empty if missing (the key is copied only then).
    pub fn entry(&self, key: &K) -> Arc<Mutex<V>> {
        let mut shard = lock(self.shard(key));
        if let Some(v) = shard.get(key) {
            return v.clone();
        }
        shard.entry(key.clone()).or_default().clone()
    }

    /// A copy of one entry (empty if it was never used).
    pub fn get(&self, key: &K) -> V {
        lock(self.shard(key)).get(key).map(|v| *lock(v)).unwrap_or_default()
    }

    /// Drops the entries `keep` says no to (nobody else holding them).
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        for s in &self.shards {
            lock(s).retain(|k, v| Arc::strong_count(v) > 1 || keep(k, &lock(v)));
        }
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> Vec<(K, V)> {
        self.shards
            .iter()
            .flat_map(|s| lock(s).iter().map(|(k, v)| (k.clone(), *lock(v))).collect::<Vec<_>>())
            .collect()
    }
}
