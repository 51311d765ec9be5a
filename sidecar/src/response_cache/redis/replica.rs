//! Replication of the semantic cache's entries between the sidecars of a
//! policy, through Redis (Debian's Redis 7.0 has no vector search, so
//! every sidecar keeps its own index and Redis only carries the entries):
//! [`SemanticLog::publish`] stores an opaque entry (an id and bytes: the
//! semantic cache decides what they hold) and appends its id to a capped
//! log; [`SemanticLog::tail`] gives every sidecar the entries that exist
//! (a warm-up) and then each new one as it is published.
//!
//! Keys, for policy `<ns>/<policy>` and prefix `<p>` (`spec.cache.redis.
//! keyPrefix`):
//! - `<p>:<ns>:<policy>:s:<id>`: the entry's bytes, `SET … PX <ttl>`;
//! - `<p>:<ns>:<policy>:slog`: a Stream of `id=<id>` records, `XADD MAXLEN ~
//!   <max_len>` (capped, no TTL: with `maxmemory-policy volatile-lru` Redis
//!   evicts entries, never the log). Both in one `MULTI`/`EXEC`.
//!
//! The tail: on start, read the newest log id (`XREVRANGE + - COUNT 1`),
//! then every entry (`SCAN MATCH …:s:*` + `MGET`) → [`Replicated::Snapshot`];
//! then `XREAD BLOCK` from that id, `MGET` the new ids →
//! [`Replicated::Added`] (an id whose entry expired meanwhile is skipped).
//! After an error it waits (100 ms, doubling to 2 s) and resumes from the
//! last id it read, unless the log no longer holds that id (its oldest
//! record is newer: trimmed past us, or Redis restarted empty) — then it
//! warms up again (a new Snapshot, which replaces what the index held).
//! The same check follows every read that returned records, so records
//! trimmed while it was reading are noticed too.
//! Streams, not Pub/Sub: Pub/Sub drops what is published while a
//! subscriber is disconnected; a Stream lets it catch up
//! (<https://redis.io/docs/latest/develop/data-types/streams/>).
//!
//! Limits (docs/response-cache.md, "Redis backend"): replication is
//! eventually consistent (an entry published by one pod reaches the others
//! a round trip later); a sidecar also receives its own entries (dedupe by
//! id); every sidecar holds the whole policy's entries in its index; a
//! sidecar that falls more than `max_len` records behind re-reads
//! everything; between a warm-up of an empty log and the first record read,
//! a trim cannot be noticed (it takes more than `max_len` publishes within
//! one read).

use std::{path::Path, time::Duration};

use bytes::Bytes;
use redis::{
    AsyncCommands, RedisError,
    aio::ConnectionManager,
    streams::{StreamRangeReply, StreamReadOptions, StreamReadReply},
};
use tokenwarden_core::response_cache::RedisConfig;
use tokio::{sync::mpsc, task::JoinHandle};

use super::{Failure, LogGate, connect, connect_with};
use crate::metrics::CacheErrors;

/// Records read per `XREAD`, and keys per `MGET`.
const BATCH: usize = 256;

/// One replicated entry: the id and bytes its publisher gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SemanticEntry {
    /// The publisher's id (unique within the policy).
    pub id: String,
    /// The publisher's bytes, as given.
    pub bytes: Bytes,
}

/// What a tail delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replicated {
    /// Every entry Redis holds for the policy: replaces the index (sent on
    /// start, and again when the tail could not resume).
    Snapshot(Vec<SemanticEntry>),
    /// An entry published since.
    Added(SemanticEntry),
}

/// The semantic entries of one policy in Redis.
pub struct SemanticLog {
    cfg: RedisConfig,
    secrets_dir: Option<std::path::PathBuf>,
    conn: ConnectionManager,
    entry_prefix: String,
    log_key: String,
    max_len: usize,
    timeout: Duration,
    errors: CacheErrors,
}

impl std::fmt::Debug for SemanticLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticLog")
            .field("log_key", &self.log_key)
            .finish_non_exhaustive()
    }
}

/// A running tail: the entries, as they come. Dropping it stops it.
pub struct Tail {
    /// Snapshots and additions, in order.
    pub rx: mpsc::Receiver<Replicated>,
    task: JoinHandle<()>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl SemanticLog ===

impl SemanticLog {
    /// The log of policy `namespace/policy` in the Redis of `cfg`, keeping
    /// about `max_len` records. `Err`: the credentials cannot be read.
    pub fn new(
        cfg: &RedisConfig,
        namespace: &str,
        policy: &str,
        secrets_dir: Option<&Path>,
        max_len: usize,
        errors: CacheErrors,
    ) -> Result<SemanticLog, String> {
        let scope = format!("{}:{namespace}:{policy}", cfg.key_prefix);
        Ok(SemanticLog {
            conn: connect(cfg, secrets_dir)?,
            cfg: cfg.clone(),
            secrets_dir: secrets_dir.map(Path::to_path_buf),
            entry_prefix: format!("{scope}:s:"),
            log_key: format!("{scope}:slog"),
            max_len: max_len.max(1),
            timeout: Duration::from_millis(cfg.timeout_ms),
            errors,
        })
    }

    /// Store `bytes` as entry `id` for `ttl` and append it to the log, in
    /// one transaction under the policy's timeout (retried once at once
    /// when the connection was dropped). A failure is counted
    /// (`op="publish"`) and returned: the entry stays local.
    pub async fn publish(&self, id: &str, bytes: &[u8], ttl: Duration) -> Result<(), Failure> {
        let mut conn = self.conn.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(format!("{}{id}", self.entry_prefix))
            .arg(bytes)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("XADD")
            .arg(&self.log_key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg("id")
            .arg(id)
            .ignore();
        let mut retried = false;
        let failure = loop {
            let failure =
                match tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) => Failure::of(&e),
                    Err(_) => Failure::Timeout,
                };
            // A connection Redis dropped (a restart) is made again by the
            // manager on its next use: one retry saves the entry.
            if failure != Failure::Unavailable || std::mem::replace(&mut retried, true) {
                break failure;
            }
        };
        self.errors.count("redis", "publish", failure.as_str());
        Err(failure)
    }

    /// Start tailing (see the module docs): a Snapshot first, then each
    /// entry published; `block` bounds one blocking read.
    pub fn tail(&self, block: Duration) -> Result<Tail, String> {
        let conn = connect_with(&self.cfg, self.secrets_dir.as_deref(), block + self.timeout)?;
        let (tx, rx) = mpsc::channel(1024);
        let tailer = Tailer {
            conn,
            entry_prefix: self.entry_prefix.clone(),
            log_key: self.log_key.clone(),
            block,
            errors: self.errors.clone(),
            log: LogGate::new(self.log_key.clone()),
            tx,
        };
        Ok(Tail {
            rx,
            task: tokio::spawn(tailer.run()),
        })
    }
}

/// A stream id, `<ms>-<seq>`, comparable.
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The tail's task.
struct Tailer {
    conn: ConnectionManager,
    entry_prefix: String,
    log_key: String,
    block: Duration,
    errors: CacheErrors,
    log: LogGate,
    tx: mpsc::Sender<Replicated>,
}

impl Tailer {
    async fn run(mut self) {
        let mut last: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.step(&mut last).await {
                Ok(true) => backoff = Duration::from_millis(100),
                Ok(false) => return, // the receiver is gone
                Err(e) => {
                    let f = Failure::of(&e);
                    self.errors.count("redis", "tail", f.as_str());
                    self.log.log("tail", f, &super::detail(&e));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Warm up if needed, then one blocking read. `Ok(false)`: stop.
    async fn step(&mut self, last: &mut Option<String>) -> Result<bool, RedisError> {
        let resume = match last.as_deref() {
            None => false,
            Some("0-0") => true,
            Some(l) => {
                let oldest: StreamRangeReply =
                    self.conn.xrange_count(&self.log_key, "-", "+", 1).await?;
                oldest
                    .ids
                    .first()
                    .is_some_and(|o| parse_id(&o.id) <= parse_id(l))
            }
        };
        if !resume {
            let newest: StreamRangeReply = self
                .conn
                .xrevrange_count(&self.log_key, "+", "-", 1)
                .await?;
            let from = newest
                .ids
                .first()
                .map_or_else(|| "0-0".to_string(), |s| s.id.clone());
            let entries = self.warm().await?;
            if self.tx.send(Replicated::Snapshot(entries)).await.is_err() {
                return Ok(false);
            }
            *last = Some(from);
        }
        let from = last.clone().unwrap_or_else(|| "0-0".into());
        let block_ms = usize::try_from(self.block.as_millis()).unwrap_or(usize::MAX);
        let opts = StreamReadOptions::default().block(block_ms).count(BATCH);
        let read: Option<StreamReadReply> = self
            .conn
            .xread_options(&[&self.log_key], &[&from], &opts)
            .await?;
        let records: Vec<(String, String)> = read
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .filter_map(|s| {
                let id: String = s.get("id")?;
                Some((s.id, id))
            })
            .collect();
        let Some((newest, _)) = records.last() else {
            return Ok(true);
        };
        let newest = newest.clone();
        // Records between our position and what we read may have been
        // trimmed before we read them: the log's oldest is then newer than
        // our position. Warm up again (a trim after the read only makes
        // this re-read what it has).
        if from != "0-0" {
            let oldest: StreamRangeReply =
                self.conn.xrange_count(&self.log_key, "-", "+", 1).await?;
            if oldest
                .ids
                .first()
                .is_none_or(|o| parse_id(&o.id) > parse_id(&from))
            {
                *last = None;
                return Ok(true);
            }
        }
        let ids: Vec<String> = records.into_iter().map(|(_, id)| id).collect();
        for e in self.fetch(&ids).await? {
            if self.tx.send(Replicated::Added(e)).await.is_err() {
                return Ok(false);
            }
        }
        *last = Some(newest);
        Ok(true)
    }

    /// Every entry of the policy (`SCAN` + `MGET`).
    async fn warm(&mut self) -> Result<Vec<SemanticEntry>, RedisError> {
        let mut keys: Vec<String> = Vec::new();
        {
            let mut it = self
                .conn
                .scan_match::<_, String>(format!("{}*", self.entry_prefix))
                .await?;
            while let Some(k) = it.next_item().await {
                keys.push(k?);
            }
        }
        let ids: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&self.entry_prefix).map(str::to_string))
            .collect();
        self.fetch(&ids).await
    }

    /// The entries of `ids` that still exist, in order.
    async fn fetch(&mut self, ids: &[String]) -> Result<Vec<SemanticEntry>, RedisError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|id| format!("{}{id}", self.entry_prefix))
                .collect();
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut self.conn)
                .await?;
            out.extend(chunk.iter().zip(values).filter_map(|(id, v)| {
                Some(SemanticEntry {
                    id: id.clone(),
                    bytes: Bytes::from(v?),
                })
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn stream_ids_compare_by_time_then_sequence() {
        assert!(parse_id("1700000000000-5") < parse_id("1700000000001-0"));
        assert!(parse_id("1700000000000-5") < parse_id("1700000000000-10"));
        assert_eq!(parse_id("0-0"), (0, 0));
    }
}
