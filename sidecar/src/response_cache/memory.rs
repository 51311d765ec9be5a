//! The in-memory response store: a map bounded by entries and bytes,
//! least recently used evicted first, entries older than the TTL expired
//! when read (and evicted first by their age in the LRU order).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokenwarden_core::response_cache::ResponseCacheConfig;

use super::{Entry, Key, ResponseStore, StoreFuture};
use crate::sync::lock;

/// A bounded LRU of entries in this sidecar's memory.
pub struct MemoryStore {
    ttl: Duration,
    max_entries: u64,
    max_bytes: u64,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    /// Key → entry and its last-use tick.
    map: HashMap<Key, (Arc<Entry>, u64)>,
    /// Last-use tick → key: the front is the least recently used.
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: u64,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// An empty store with `cfg`'s TTL and bounds.
    pub fn new(cfg: &ResponseCacheConfig) -> Self {
        MemoryStore {
            ttl: Duration::from_millis(cfg.ttl_ms),
            max_entries: cfg.max_entries,
            max_bytes: cfg.max_bytes,
            inner: Mutex::new(Lru::default()),
        }
    }

    fn lookup(&self, key: &Key) -> Option<Arc<Entry>> {
        let mut lru = lock(&self.inner);
        let (entry, tick) = lru.map.get(key).map(|(e, t)| (e.clone(), *t))?;
        if entry.stored_at.elapsed() >= self.ttl {
            lru.remove(key);
            return None;
        }
        lru.order.remove(&tick);
        lru.tick += 1;
        let now = lru.tick;
        lru.order.insert(now, *key);
        if let Some(slot) = lru.map.get_mut(key) {
            slot.1 = now;
        }
        Some(entry)
    }
}

impl ResponseStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Option<Arc<Entry>>> {
        Box::pin(std::future::ready(self.lookup(key)))
    }

    fn put(&self, key: Key, entry: Arc<Entry>) {
        let size = entry.size();
        if size > self.max_bytes {
            return;
        }
        let mut lru = lock(&self.inner);
        lru.remove(&key);
        lru.tick += 1;
        let tick = lru.tick;
        lru.order.insert(tick, key);
        lru.map.insert(key, (entry, tick));
        lru.bytes += size;
        while lru.map.len() as u64 > self.max_entries || lru.bytes > self.max_bytes {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            lru.remove(&oldest);
        }
    }

    fn usage(&self) -> (u64, u64) {
        let lru = lock(&self.inner);
        (lru.map.len() as u64, lru.bytes)
    }
}

// === impl Lru ===

impl Lru {
    fn remove(&mut self, key: &Key) {
        if let Some((entry, tick)) = self.map.remove(key) {
            self.order.remove(&tick);
            self.bytes = self.bytes.saturating_sub(entry.size());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;

    fn entry(body: &'static str) -> Arc<Entry> {
        Arc::new(Entry {
            status: 200,
            headers: vec![],
            body: Bytes::from_static(body.as_bytes()),
            served_model: "m".into(),
            usage: Default::default(),
            cost: None,
            stored_at: Instant::now(),
        })
    }

    fn store(max_entries: u64, max_bytes: u64, ttl_ms: u64) -> MemoryStore {
        MemoryStore::new(&ResponseCacheConfig {
            max_entries,
            max_bytes,
            ttl_ms,
            ..Default::default()
        })
    }

    #[test]
    fn least_recently_used_goes_first() {
        let s = store(2, 1 << 20, 60_000);
        s.put([1; 32], entry("a"));
        s.put([2; 32], entry("b"));
        assert!(s.lookup(&[1; 32]).is_some()); // 1 is now the most recent
        s.put([3; 32], entry("c"));
        assert!(s.lookup(&[2; 32]).is_none());
        assert!(s.lookup(&[1; 32]).is_some());
        assert!(s.lookup(&[3; 32]).is_some());
        assert_eq!(s.usage().0, 2);
    }

    #[test]
    fn bytes_are_bounded_and_counted_exactly() {
        let one = entry("0123456789").size();
        let s = store(100, 2 * one, 60_000);
        s.put([1; 32], entry("0123456789"));
        s.put([2; 32], entry("0123456789"));
        assert_eq!(s.usage(), (2, 2 * one));
        s.put([3; 32], entry("0123456789"));
        assert_eq!(s.usage(), (2, 2 * one));
        assert!(s.lookup(&[1; 32]).is_none());
        // Replacing an entry does not count it twice.
        s.put([3; 32], entry("0123456789"));
        assert_eq!(s.usage(), (2, 2 * one));
    }

    #[test]
    fn expired_entries_are_not_served() {
        let s = store(10, 1 << 20, 0);
        s.put([1; 32], entry("a"));
        assert!(s.lookup(&[1; 32]).is_none());
        assert_eq!(s.usage(), (0, 0));
    }
}
