//! The semantic cache shared through Redis (`spec.cache.backend: redis`
//! with `cache.semantic` on): Debian's Redis 7.0 has no vector search, so
//! every sidecar keeps its own [`SemanticIndex`] and Redis carries the
//! entries between the policy's sidecars through the replication log
//! (`redis::replica::SemanticLog`).
//!
//! - Publish: once the exact store holds a miss's answer (the `SET`
//!   succeeded, so no sidecar can find the entry before its answer), the
//!   entry is published with the store's TTL ([`encode`], id = the hex
//!   exact key). A failure is counted (`op="publish"`) and never fails the
//!   request; the entry stays local.
//! - Tail: one task per policy ([`Replication`], started when the sidecar
//!   installs the policy, aborted when its cache config changes or goes
//!   away) applies what the log delivers: a snapshot replaces the index, an
//!   addition is inserted (its own entries too: the same key replaces
//!   itself). The local index's `maxEntries` bound and TTL still hold.
//! - A lookup stays local; a hit still `GET`s the answer by its exact key
//!   (gone → a miss, and the entry is dropped).
//!
//! The wire format ([`encode`]), version [`WIRE_V1`], little-endian:
//! `1` · scope (32 bytes) · exact key (32) · stored-at ms (u64) · dims
//! (u32) · the normalised embedding (dims × f32) · the prompt (UTF-8, to
//! the end). The prompt is there because the guards compare prompts: it
//! is in Redis, under the policy's namespace, like the answers already
//! are (docs/response-cache.md, "Sharing semantic entries").

use std::{sync::Arc, time::Duration};

use tokenwarden_core::response_cache::ResponseCacheConfig;
use tokio::task::JoinHandle;

use super::{
    Key,
    redis::replica::{self, Replicated, SemanticLog},
    semantic::{Scope, SemanticEntry, SemanticIndex, now_ms},
};
use crate::metrics::CacheErrors;

/// The wire format's version byte.
pub const WIRE_V1: u8 = 1;

/// How long one blocking read of the log waits.
const BLOCK: Duration = Duration::from_secs(5);

/// Bytes before the embedding: version, scope, key, time, dims.
const HEAD: usize = 1 + 32 + 32 + 8 + 4;

/// The replication id of the entry under `key`: its hex.
pub fn id_of(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// `entry` of `scope` as published.
pub fn encode(scope: &Scope, entry: &SemanticEntry) -> Vec<u8> {
    let dims = u32::try_from(entry.embedding.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEAD + entry.embedding.len() * 4 + entry.prompt.len());
    out.push(WIRE_V1);
    out.extend_from_slice(scope);
    out.extend_from_slice(&entry.key);
    out.extend_from_slice(&entry.stored_at_ms.to_le_bytes());
    out.extend_from_slice(&dims.to_le_bytes());
    for x in &entry.embedding {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(entry.prompt.as_bytes());
    out
}

/// A published entry back; `None`: another version, or corrupt (short, a
/// non-finite float, a prompt that is not UTF-8).
pub fn decode(bytes: &[u8]) -> Option<(Scope, SemanticEntry)> {
    if bytes.len() < HEAD || bytes[0] != WIRE_V1 {
        return None;
    }
    let scope: Scope = bytes[1..33].try_into().ok()?;
    let key: Key = bytes[33..65].try_into().ok()?;
    let stored_at_ms = u64::from_le_bytes(bytes[65..73].try_into().ok()?);
    let dims = u32::from_le_bytes(bytes[73..77].try_into().ok()?) as usize;
    let end = HEAD.checked_add(dims.checked_mul(4)?)?;
    let floats = bytes.get(HEAD..end)?;
    let embedding: Vec<f32> = floats
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if embedding.is_empty() || !embedding.iter().all(|x| x.is_finite()) {
        return None;
    }
    let prompt = std::str::from_utf8(&bytes[end..]).ok()?.to_string();
    Some((
        scope,
        SemanticEntry {
            embedding,
            prompt,
            key,
            stored_at_ms,
        },
    ))
}

/// A policy's share of the semantic cache: the log it publishes to and
/// the task that applies the log to its index. Dropping it stops the task
/// (and the tail it owns).
pub struct Replication {
    log: Arc<SemanticLog>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").finish_non_exhaustive()
    }
}

impl Drop for Replication {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Replication ===

impl Replication {
    /// Start replicating `index` of `namespace/policy` under `cfg` (its
    /// Redis, its `maxEntries` as the log's cap). `Err`: why not (no Redis
    /// config, unreadable credentials, no runtime): the index stays local.
    pub fn start(
        cfg: &ResponseCacheConfig,
        namespace: &str,
        policy: &str,
        index: Arc<SemanticIndex>,
        secrets_dir: Option<&std::path::Path>,
        errors: CacheErrors,
    ) -> Result<Replication, String> {
        let redis = cfg.redis.as_ref().ok_or("no spec.cache.redis")?;
        let max_len = cfg
            .semantic
            .as_ref()
            .map_or(1_000, |s| s.max_entries)
            .clamp(1_000, 1_000_000);
        tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
        let log = SemanticLog::new(
            redis,
            namespace,
            policy,
            secrets_dir,
            usize::try_from(max_len).unwrap_or(usize::MAX),
            errors.clone(),
        )?;
        let tail = log.tail(BLOCK)?;
        let ttl = Duration::from_millis(cfg.ttl_ms);
        let task = tokio::spawn(apply(tail, index, ttl, errors));
        Ok(Replication {
            log: Arc::new(log),
            task,
        })
    }

    /// The log entries are published to.
    pub fn log(&self) -> Arc<SemanticLog> {
        self.log.clone()
    }
}

/// Apply what `tail` delivers to `index` until it ends.
async fn apply(
    mut tail: replica::Tail,
    index: Arc<SemanticIndex>,
    ttl: Duration,
    errors: CacheErrors,
) {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let mut decoded = |e: &replica::SemanticEntry| {
        let d = decode(&e.bytes);
        if d.is_none() {
            errors.count("redis", "tail", "decode");
        }
        d
    };
    while let Some(r) = tail.rx.recv().await {
        match r {
            Replicated::Snapshot(entries) => {
                let now = now_ms();
                let mut live: Vec<(Scope, SemanticEntry)> = entries
                    .iter()
                    .filter_map(&mut decoded)
                    .filter(|(_, e)| now.saturating_sub(e.stored_at_ms) < ttl_ms)
                    .collect();
                // Oldest first, so the bound keeps the newest.
                live.sort_by_key(|(_, e)| e.stored_at_ms);
                index.replace(live);
            }
            Replicated::Added(e) => {
                if let Some((scope, entry)) = decoded(&e) {
                    index.insert(scope, entry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> (Scope, SemanticEntry) {
        (
            [7; 32],
            SemanticEntry {
                embedding: vec![0.6, -0.8, 0.0],
                prompt: "Qu'est-ce que 2+2 ?".into(),
                key: [0xab; 32],
                stored_at_ms: 1_765_000_000_123,
            },
        )
    }

    #[test]
    fn the_wire_format_is_byte_exact_and_round_trips() {
        let (scope, e) = entry();
        let bytes = encode(&scope, &e);
        assert_eq!(bytes.len(), HEAD + 12 + "Qu'est-ce que 2+2 ?".len());
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..33], &[7; 32]);
        assert_eq!(&bytes[33..65], &[0xab; 32]);
        assert_eq!(&bytes[65..73], &1_765_000_000_123u64.to_le_bytes());
        assert_eq!(&bytes[73..77], &[3, 0, 0, 0]);
        assert_eq!(&bytes[77..81], &0.6f32.to_le_bytes());
        assert_eq!(&bytes[81..85], &(-0.8f32).to_le_bytes());
        assert_eq!(&bytes[89..], "Qu'est-ce que 2+2 ?".as_bytes());
        assert_eq!(decode(&bytes), Some((scope, e)));
        assert_eq!(id_of(&[0xab; 32]), "ab".repeat(32));
    }

    #[test]
    fn another_version_or_a_corrupt_entry_is_refused() {
        let (scope, e) = entry();
        let bytes = encode(&scope, &e);
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(decode(&other), None);
        assert_eq!(decode(&bytes[..80]), None, "cut inside the embedding");
        assert_eq!(decode(&[]), None);
        let mut nan = bytes.clone();
        nan[77..81].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(decode(&nan), None);
        let mut huge = bytes.clone();
        huge[73..77].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), None);
        let mut bad = bytes;
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert_eq!(decode(&bad), None, "a prompt that is not UTF-8");
        let empty = SemanticEntry {
            embedding: Vec::new(),
            ..e
        };
        assert_eq!(decode(&encode(&scope, &empty)), None);
    }
}
