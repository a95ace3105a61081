//! A map of shared, individually locked entries, sharded so that finding an entry never
//! waits on unrelated requests: the runtime state of budgets and rate limits.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 32;

pub struct ShardedMap<K, V> {
    shards: Vec<Mutex<HashMap<K, Arc<Mutex<V>>>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

/// Locks, ignoring poison: every update under these locks is a few plain assignments, so a
/// panic elsewhere never leaves an entry half-written.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<K: Hash + Eq + Clone, V: Default + Copy> ShardedMap<K, V> {
    fn shard(&self, key: &K) -> &Mutex<HashMap<K, Arc<Mutex<V>>>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The entry for `key`, created empty if missing.
    pub fn entry(&self, key: &K) -> Arc<Mutex<V>> {
        lock(self.shard(key)).entry(key.clone()).or_default().clone()
    }

    /// A copy of one entry (empty if it was never used).
    pub fn get(&self, key: &K) -> V {
        lock(self.shard(key)).get(key).map(|v| *lock(v)).unwrap_or_default()
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> Vec<(K, V)> {
        self.shards
            .iter()
            .flat_map(|s| lock(s).iter().map(|(k, v)| (k.clone(), *lock(v))).collect::<Vec<_>>())
            .collect()
    }
}
