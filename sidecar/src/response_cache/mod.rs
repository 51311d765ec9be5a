//! The exact response cache's storage: the stored answer ([`Entry`]), the
//! interface a backend implements ([`ResponseStore`]), the in-memory
//! backend ([`memory::MemoryStore`]), the Redis backend shared by a
//! policy's sidecars ([`redis::RedisStore`]) and the per-policy stores of
//! a sidecar ([`ResponseCache`]). Which requests are looked up, and how their key is
//! made, is `tokenwarden_core::response_cache`; the request-path stage is
//! `proxy::cache`. The semantic cache's index is [`semantic`]; with the
//! Redis backend its entries are shared between sidecars by [`replicate`].
//! See docs/response-cache.md.
//!
//! A store never fails a request: a backend that cannot answer answers
//! "not found", one that cannot store drops the entry.

mod fill;
pub mod memory;
pub mod redis;
pub mod replicate;
pub mod semantic;

pub use fill::{Answer, CacheState, Fill, SemanticFill, store};

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use tokenwarden_core::{
    money::Usd,
    response_cache::{CacheBackend, ResponseCacheConfig},
    tokens::TokenCounts,
    workload::ObjectRef,
};

use crate::{metrics::CacheErrors, sync::lock};

/// A key: the SHA-256 of the request's canonical form
/// (`tokenwarden_core::response_cache::canonical_key_input`).
pub type Key = [u8; 32];

/// The SHA-256 of `canonical`.
pub fn key_of(canonical: &[u8]) -> Key {
    let d = ring::digest::digest(&ring::digest::SHA256, canonical);
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// A stored answer: the provider's response as the app received it.
#[derive(Debug)]
pub struct Entry {
    /// HTTP status (a 2xx).
    pub status: u16,
    /// The provider's headers an SDK needs (`content-type`,
    /// `content-encoding`, request ids), as sent.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The body as the app received it: the JSON, or the event stream.
    pub body: Bytes,
    /// The model that served it (the provider's name).
    pub served_model: String,
    /// What the provider billed for it.
    pub usage: TokenCounts,
    /// What it cost (`None`: unpriced); a hit saves this.
    pub cost: Option<Usd>,
    /// When it was stored.
    pub stored_at: Instant,
}

// === impl Entry ===

impl Entry {
    /// The bytes it holds, as the bounds count them.
    pub fn size(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        (self.body.len() + headers + self.served_model.len() + 128) as u64
    }
}

/// A future a store answers with.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where entries live: one implementation per backend (`memory`; a shared
/// one such as Redis answers over the network, hence the future). Entries
/// are expired by the store's TTL; a backend that fails answers `None` (a
/// miss) and drops what it cannot store.
pub trait ResponseStore: Send + Sync {
    /// The entry under `key`, if present and fresh.
    fn get<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Option<Arc<Entry>>>;
    /// [`ResponseStore::get`], telling "not there" (`Ok(None)`) from
    /// "the backend could not say" (`Err`, counted): a semantic entry whose
    /// answer is gone is dropped, one whose backend failed is kept.
    fn lookup<'a>(
        &'a self,
        key: &'a Key,
    ) -> StoreFuture<'a, Result<Option<Arc<Entry>>, redis::Failure>> {
        Box::pin(async move { Ok(self.get(key).await) })
    }
    /// Store `entry` under `key` (replacing any), within the bounds; does
    /// not wait for a remote backend.
    fn put(&self, key: Key, entry: Arc<Entry>);
    /// [`ResponseStore::put`], then run `then` once the entry is stored —
    /// not at all when a remote backend failed to store it (what `then`
    /// announces would point at nothing).
    fn put_then(&self, key: Key, entry: Arc<Entry>, then: StoreFuture<'static, ()>) {
        self.put(key, entry);
        tokio::spawn(then);
    }
    /// Entries and bytes held (this sidecar's share, for a shared backend).
    fn usage(&self) -> (u64, u64);
}

/// The stores of a sidecar, one per RoutingPolicy whose cache is on (a
/// policy's config change replaces its store: new bounds, and entries
/// stored under the old settings are not served).
#[derive(Default)]
pub struct ResponseCache {
    stores: Mutex<HashMap<ObjectRef, PolicyStore>>,
    /// Where a standalone sidecar reads the Redis credentials.
    secrets_dir: Option<PathBuf>,
    /// The backends' error counter.
    errors: CacheErrors,
    /// The semantic indexes, one per policy with `cache.semantic` on, made
    /// anew with its store's settings (like the store).
    indexes: Mutex<HashMap<ObjectRef, PolicyIndex>>,
}

/// A policy's semantic index, the settings it was made with, and its
/// replication through Redis (dropped with it, which stops it).
type PolicyIndex = (
    ResponseCacheConfig,
    Arc<semantic::SemanticIndex>,
    Option<replicate::Replication>,
);

/// A policy's store and the settings it was made with.
type PolicyStore = (ResponseCacheConfig, Arc<dyn ResponseStore>);

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseCache")
    }
}

// === impl ResponseCache ===

impl ResponseCache {
    /// No stores yet; Redis credentials (standalone) are read from
    /// `secrets_dir`, backend failures counted in `errors`.
    pub fn new(secrets_dir: Option<PathBuf>, errors: CacheErrors) -> Self {
        ResponseCache {
            stores: Mutex::default(),
            indexes: Mutex::default(),
            secrets_dir,
            errors,
        }
    }

    /// The store of `policy` under `cfg` (made on first use).
    pub fn store(&self, policy: &ObjectRef, cfg: &ResponseCacheConfig) -> Arc<dyn ResponseStore> {
        let mut stores = lock(&self.stores);
        if let Some((c, s)) = stores.get(policy)
            && c == cfg
        {
            return s.clone();
        }
        let store: Arc<dyn ResponseStore> = match (cfg.backend, &cfg.redis) {
            (CacheBackend::Redis, Some(r)) => Arc::new(redis::RedisStore::new(
                r,
                &policy.namespace,
                &policy.name,
                cfg.ttl_ms,
                self.secrets_dir.as_deref(),
                self.errors.clone(),
            )),
            _ => Arc::new(memory::MemoryStore::new(cfg)),
        };
        stores.insert(policy.clone(), (cfg.clone(), store.clone()));
        store
    }

    /// The semantic index of `policy` under `cfg` (made on first use);
    /// `None` when `cfg` has no semantic cache.
    pub fn semantic_index(
        &self,
        policy: &ObjectRef,
        cfg: &ResponseCacheConfig,
    ) -> Option<Arc<semantic::SemanticIndex>> {
        let sem = cfg.semantic.as_ref()?;
        let mut indexes = lock(&self.indexes);
        if let Some((c, ix, _)) = indexes.get(policy)
            && c == cfg
        {
            return Some(ix.clone());
        }
        let ix = Arc::new(semantic::SemanticIndex::new(
            std::time::Duration::from_millis(cfg.ttl_ms),
            sem.max_entries,
        ));
        let replication = (cfg.backend == CacheBackend::Redis)
            .then(|| self.replicate(policy, cfg, &ix))
            .flatten();
        indexes.insert(policy.clone(), (cfg.clone(), ix.clone(), replication));
        Some(ix)
    }

    /// Start sharing `ix` through the policy's Redis; `None` (logged):
    /// it stays local.
    fn replicate(
        &self,
        policy: &ObjectRef,
        cfg: &ResponseCacheConfig,
        ix: &Arc<semantic::SemanticIndex>,
    ) -> Option<replicate::Replication> {
        match replicate::Replication::start(
            cfg,
            &policy.namespace,
            &policy.name,
            ix.clone(),
            self.secrets_dir.as_deref(),
            self.errors.clone(),
        ) {
            Ok(r) => {
                ix.set_log(r.log());
                Some(r)
            }
            Err(why) => {
                tracing::warn!(
                    policy = %format!("{}/{}", policy.namespace, policy.name),
                    problem = %why,
                    "semantic cache: not shared through Redis; this sidecar's index stays local"
                );
                None
            }
        }
    }

    /// Bring the semantic indexes in line with the installed config: the
    /// policy `policy` with cache settings `cfg` (`None`: no policy, or no
    /// cache). An index whose policy is gone or whose settings changed is
    /// dropped (its replication stops); the policy's index is made now when
    /// its semantic cache is on, so a shared one is warm before the first
    /// request.
    pub fn install(&self, policy: Option<(&ObjectRef, Option<&ResponseCacheConfig>)>) {
        let wanted = policy.and_then(|(p, c)| Some((p, c.filter(|c| c.semantic.is_some())?)));
        let dropped: Vec<PolicyIndex> = {
            let mut indexes = lock(&self.indexes);
            let gone: Vec<ObjectRef> = indexes
                .iter()
                .filter(|(k, (c, _, _))| wanted.is_none_or(|(p, w)| p != *k || c != w))
                .map(|(k, _)| k.clone())
                .collect();
            gone.iter().filter_map(|k| indexes.remove(k)).collect()
        };
        drop(dropped);
        if let Some((p, c)) = wanted {
            self.semantic_index(p, c);
        }
    }

    /// Entries held by every semantic index.
    pub fn semantic_entries(&self) -> u64 {
        lock(&self.indexes)
            .values()
            .map(|(_, ix, _)| ix.len())
            .sum()
    }

    /// Entries and bytes held by every store.
    pub fn usage(&self) -> (u64, u64) {
        lock(&self.stores)
            .values()
            .map(|(_, s)| s.usage())
            .fold((0, 0), |(e, b), (e2, b2)| (e + e2, b + b2))
    }
}
