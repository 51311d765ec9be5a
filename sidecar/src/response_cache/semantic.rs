//! The semantic cache's index: per RoutingPolicy, the bounded set of
//! [`SemanticEntry`] — a prompt's normalised embedding, the prompt itself
//! (in memory only: never logged, never in metrics or the ledger), the
//! exact key of its stored answer and when it was stored — grouped by
//! scope (everything of the request but the user text, hashed:
//! `tokenwarden_core::semantic_cache::scope_input`).
//!
//! A lookup compares the query's embedding with every entry of its scope
//! (a dot product of unit vectors: the cosine), brute force. Measured in
//! `lookups_stay_fast_at_the_bound`: 10,000 entries of 384 floats in one
//! scope take about a millisecond in a debug build, far less in release,
//! against the 10–25 ms of the embedding call itself, so an approximate
//! index would not pay at these bounds. Entries expire with the exact
//! store's TTL and the least recently used goes first past `maxEntries`.
//!
//! Entries are plain data ([`SemanticEntry`] is serde-serialisable, its
//! time a wall clock) and [`SemanticIndex::insert`] takes one from
//! anywhere, so a shared backend can replicate them between sidecars and
//! index them locally: with the Redis backend an index also holds the log
//! it publishes to ([`SemanticIndex::log`]; `super::replicate`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokenwarden_core::semantic_cache::similarity_parts;

use super::{Key, redis::replica::SemanticLog};
use crate::sync::lock;

/// The hash of an entry's scope (SHA-256 of its `scope_input`).
pub type Scope = [u8; 32];

/// One prompt the semantic cache can answer from.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SemanticEntry {
    /// The prompt's embedding, L2-normalised.
    pub embedding: Vec<f32>,
    /// The prompt (for the guards; never logged or exported).
    pub prompt: String,
    /// The exact cache's key of its stored answer.
    pub key: Key,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
}

impl std::fmt::Debug for SemanticEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the prompt.
        f.debug_struct("SemanticEntry")
            .field("dims", &self.embedding.len())
            .field("prompt_bytes", &self.prompt.len())
            .field("stored_at_ms", &self.stored_at_ms)
            .finish_non_exhaustive()
    }
}

/// A stored prompt close enough to a query.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Its similarity, in parts per 10,000.
    pub similarity: u16,
    /// The stored prompt.
    pub prompt: String,
    /// The exact key of its answer.
    pub key: Key,
}

/// What a lookup found: the candidates at or above the threshold, most
/// similar first, and the best similarity seen at all (for metrics).
#[derive(Debug, Default)]
pub struct Found {
    /// At or above the threshold, best first.
    pub candidates: Vec<Candidate>,
    /// The best similarity in the scope (`None`: no entry).
    pub best: Option<u16>,
}

/// The index of one policy.
pub struct SemanticIndex {
    ttl: Duration,
    max_entries: u64,
    inner: Mutex<Inner>,
    /// Where its entries are published (the Redis backend).
    log: OnceLock<Arc<SemanticLog>>,
}

#[derive(Default)]
struct Inner {
    /// Scope → (key → entry and its last-use tick).
    scopes: HashMap<Scope, HashMap<Key, (SemanticEntry, u64)>>,
    /// Last-use tick → entry: the front is the least recently used.
    order: BTreeMap<u64, (Scope, Key)>,
    tick: u64,
    len: u64,
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The dot product of two vectors (the cosine when both are unit length;
/// 0 when their lengths differ).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    // Eight independent sums: a single running f32 sum is one long chain
    // of dependent adds the compiler may not reorder (float addition is not
    // associative), so it cannot use SIMD lanes; eight lanes let it.
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `v` scaled to unit length (`None`: empty, zero or not finite).
pub fn normalised(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if v.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    for x in &mut v {
        *x /= norm;
    }
    Some(v)
}

// === impl SemanticIndex ===

impl SemanticIndex {
    /// An empty index whose entries live `ttl` and number at most
    /// `max_entries`.
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        SemanticIndex {
            ttl,
            max_entries,
            inner: Mutex::new(Inner::default()),
            log: OnceLock::new(),
        }
    }

    /// Publish this index's new entries to `log` from now on (set once).
    pub fn set_log(&self, log: Arc<SemanticLog>) {
        let _ = self.log.set(log);
    }

    /// Where this index's new entries are published, if shared.
    pub fn log(&self) -> Option<&Arc<SemanticLog>> {
        self.log.get()
    }

    /// How long its entries live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Replace every entry with `entries` (a replicated snapshot), inserted
    /// in order under the bound (the last ones are kept).
    pub fn replace(&self, entries: Vec<(Scope, SemanticEntry)>) {
        *lock(&self.inner) = Inner::default();
        for (scope, entry) in entries {
            self.insert(scope, entry);
        }
    }

    /// Add `entry` under `scope` (replacing one with the same key), then
    /// evict the least recently used past the bound.
    pub fn insert(&self, scope: Scope, entry: SemanticEntry) {
        let mut inner = lock(&self.inner);
        let key = entry.key;
        inner.remove(&scope, &key);
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, (scope, key));
        inner
            .scopes
            .entry(scope)
            .or_default()
            .insert(key, (entry, tick));
        inner.len += 1;
        while inner.len > self.max_entries {
            let Some((_, (s, k))) = inner.order.pop_first() else {
                break;
            };
            inner.remove(&s, &k);
        }
    }

    /// The entries of `scope` at least `min` alike to `query` (parts per
    /// 10,000), best first; expired ones are dropped on the way.
    pub fn lookup(&self, scope: &Scope, query: &[f32], min: u16) -> Found {
        let now = now_ms();
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut inner = lock(&self.inner);
        let Some(entries) = inner.scopes.get(scope) else {
            return Found::default();
        };
        let mut expired = Vec::new();
        let mut best = None;
        let mut candidates = Vec::new();
        for (key, (e, _)) in entries {
            if now.saturating_sub(e.stored_at_ms) >= ttl {
                expired.push(*key);
                continue;
            }
            let similarity = similarity_parts(dot(&e.embedding, query));
            best = best.max(Some(similarity));
            if similarity >= min {
                candidates.push(Candidate {
                    similarity,
                    prompt: e.prompt.clone(),
                    key: *key,
                });
            }
        }
        for key in expired {
            inner.remove(scope, &key);
        }
        candidates.sort_by(|a, b| b.similarity.cmp(&a.similarity).then(a.key.cmp(&b.key)));
        Found { candidates, best }
    }

    /// Mark the entry under `key` as just used.
    pub fn touch(&self, scope: &Scope, key: &Key) {
        let mut inner = lock(&self.inner);
        inner.tick += 1;
        let now = inner.tick;
        let Some(slot) = inner.scopes.get_mut(scope).and_then(|m| m.get_mut(key)) else {
            return;
        };
        let old = std::mem::replace(&mut slot.1, now);
        inner.order.remove(&old);
        inner.order.insert(now, (*scope, *key));
    }

    /// Drop the entry under `key` (its answer is gone from the store).
    pub fn remove(&self, scope: &Scope, key: &Key) {
        lock(&self.inner).remove(scope, key);
    }

    /// Entries held.
    pub fn len(&self) -> u64 {
        lock(&self.inner).len
    }

    /// No entries held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// === impl Inner ===

impl Inner {
    fn remove(&mut self, scope: &Scope, key: &Key) {
        let Some(entries) = self.scopes.get_mut(scope) else {
            return;
        };
        if let Some((_, tick)) = entries.remove(key) {
            self.order.remove(&tick);
            self.len -= 1;
        }
        if entries.is_empty() {
            self.scopes.remove(scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        normalised(v.to_vec()).unwrap()
    }

    #[test]
    fn the_dot_product_in_lanes_equals_the_plain_sum() {
        // Lengths below, at and past a multiple of the eight lanes.
        for n in [0usize, 1, 7, 8, 9, 16, 383, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 8.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) / 4.0).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-4, "n = {n}");
        }
        assert_eq!(dot(&[1.0, 2.0], &[1.0]), 0.0, "different lengths");
    }

    fn entry(v: &[f32], key: u8) -> SemanticEntry {
        SemanticEntry {
            embedding: unit(v),
            prompt: format!("prompt {key}"),
            key: [key; 32],
            stored_at_ms: now_ms(),
        }
    }

    #[test]
    fn the_closest_entries_of_the_scope_come_first() {
        let ix = SemanticIndex::new(Duration::from_secs(60), 10);
        ix.insert([1; 32], entry(&[1.0, 0.0], 1));
        ix.insert([1; 32], entry(&[1.0, 0.1], 2));
        ix.insert([1; 32], entry(&[0.0, 1.0], 3));
        ix.insert([2; 32], entry(&[1.0, 0.0], 4));
        let found = ix.lookup(&[1; 32], &unit(&[1.0, 0.08]), 9_900);
        let keys: Vec<u8> = found.candidates.iter().map(|c| c.key[0]).collect();
        assert_eq!(keys, vec![2, 1], "best first; another scope never");
        // cos(atan 0.1 - atan 0.08) = 0.99980, cos(atan 0.08) = 0.99681.
        let sims: Vec<u16> = found.candidates.iter().map(|c| c.similarity).collect();
        assert!(
            (9_997..=9_998).contains(&sims[0]) && sims[1] == 9_968,
            "{sims:?}"
        );
        assert_eq!(found.candidates[0].prompt, "prompt 2");
        assert_eq!(found.best, Some(sims[0]));
        let none = ix.lookup(&[1; 32], &unit(&[-1.0, -0.2]), 9_000);
        assert!(none.candidates.is_empty());
        assert_eq!(none.best, Some(0), "a negative cosine counts as 0");
        assert_eq!(ix.lookup(&[9; 32], &unit(&[1.0, 0.0]), 0).best, None);
    }

    #[test]
    fn bounded_least_recently_used_first_and_expired_by_ttl() {
        let ix = SemanticIndex::new(Duration::from_secs(60), 2);
        ix.insert([1; 32], entry(&[1.0, 0.0], 1));
        ix.insert([1; 32], entry(&[0.0, 1.0], 2));
        ix.touch(&[1; 32], &[1; 32]);
        ix.insert([1; 32], entry(&[1.0, 1.0], 3));
        assert_eq!(ix.len(), 2);
        let all = ix.lookup(&[1; 32], &unit(&[1.0, 1.0]), 0);
        let mut keys: Vec<u8> = all.candidates.iter().map(|c| c.key[0]).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec![1, 3], "2 was the least recently used");
        // Re-inserting the same key replaces it.
        ix.insert([1; 32], entry(&[1.0, 0.0], 3));
        assert_eq!(ix.len(), 2);
        ix.remove(&[1; 32], &[3; 32]);
        assert_eq!(ix.len(), 1);

        let old = SemanticIndex::new(Duration::from_millis(1_000), 10);
        let mut stale = entry(&[1.0, 0.0], 1);
        stale.stored_at_ms -= 1_000;
        old.insert([1; 32], stale);
        assert!(
            old.lookup(&[1; 32], &unit(&[1.0, 0.0]), 0)
                .candidates
                .is_empty()
        );
        assert!(old.is_empty(), "dropped when found expired");
    }

    #[test]
    fn a_snapshot_replaces_everything_under_the_bound() {
        let ix = SemanticIndex::new(Duration::from_secs(60), 2);
        ix.insert([1; 32], entry(&[1.0, 0.0], 1));
        ix.replace(vec![
            ([2; 32], entry(&[1.0, 0.0], 2)),
            ([2; 32], entry(&[0.0, 1.0], 3)),
            ([3; 32], entry(&[1.0, 1.0], 4)),
        ]);
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.lookup(&[1; 32], &unit(&[1.0, 0.0]), 0).best, None);
        assert_eq!(
            ix.lookup(&[2; 32], &unit(&[1.0, 0.0]), 0).candidates.len(),
            1
        );
        assert_eq!(
            ix.lookup(&[3; 32], &unit(&[1.0, 0.0]), 0).candidates.len(),
            1
        );
        ix.replace(Vec::new());
        assert!(ix.is_empty());
    }

    #[test]
    fn entries_serialise_and_never_print_their_prompt() {
        let e = entry(&[0.6, 0.8], 7);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<SemanticEntry>(&json).unwrap(), e);
        let debug = format!("{e:?}");
        assert!(!debug.contains("prompt 7"), "{debug}");
        assert!(debug.contains("prompt_bytes: 8"), "{debug}");
    }

    #[test]
    fn lookups_stay_fast_at_the_bound() {
        // 10,000 entries of 384 dimensions in one scope: brute force.
        let ix = SemanticIndex::new(Duration::from_secs(600), 10_000);
        let mut seed = 1u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for i in 0..10_000u32 {
            let v: Vec<f32> = (0..384).map(|_| next()).collect();
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            ix.insert(
                [1; 32],
                SemanticEntry {
                    embedding: normalised(v).unwrap(),
                    prompt: String::new(),
                    key,
                    stored_at_ms: now_ms(),
                },
            );
        }
        let q = normalised((0..384).map(|_| next()).collect()).unwrap();
        let start = std::time::Instant::now();
        let found = ix.lookup(&[1; 32], &q, 9_500);
        let took = start.elapsed();
        assert!(found.candidates.is_empty());
        assert!(found.best.is_some());
        // Generous for a loaded debug build; release is ~10× faster.
        assert!(took < Duration::from_millis(500), "{took:?}");
        eprintln!("brute-force lookup over 10000×384: {took:?}");
    }
}
