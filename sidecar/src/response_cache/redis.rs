//! The Redis response store: the exact cache's entries shared by every
//! sidecar of a policy through one Redis server (`spec.cache.backend:
//! redis`), and ([`replica`]) the log through which the semantic cache
//! replicates its entries between sidecars.
//!
//! An entry is one string key, `<keyPrefix>:<namespace>:<policy>:x:<hex
//! SHA-256 key>`, set with `SET … PX <ttl>` to one format byte (`1`) and a
//! `tokenwarden.cache.v1.StoredResponse` (proto/cache.proto: status,
//! headers, body, served model, usage, cost); a lookup is one `GET`. The
//! namespace and policy in the key let a shared Redis give each namespace
//! its own ACL user (`~tw:<namespace>:*`).
//!
//! The memory bounds (`maxEntries`, `maxBytes`) do not apply: Redis's
//! `maxmemory` does, with `maxmemory-policy volatile-lru` (every entry has a
//! TTL, so Redis evicts the least recently used entries and never the
//! replication log, which has none; <https://redis.io/docs/latest/develop/reference/eviction/>).
//!
//! Failure never fails a request: every operation (connecting included)
//! runs under the policy's `timeout`; a lookup that fails or times out is a
//! miss, a store that fails is dropped, each counted in
//! `tokenwarden_response_cache_errors_total{backend="redis",op,reason}` and
//! logged at most once per [`LOG_EVERY`] per store, without key material
//! or prompt text. A store (and a semantic publish) whose connection Redis
//! dropped — a restart — is retried once at once: the manager makes the
//! connection again on that next use. The connection (`redis::aio::ConnectionManager`, one
//! multiplexed connection per policy and sidecar) reconnects by itself
//! after Redis restarts.
//!
//! TLS (`rediss://`): rustls with the ring provider. The server's
//! certificate is verified against the system roots, or, with
//! `tls.caSecret`, only against that CA's PEM (`Client::build_with_tls`
//! with `TlsCertificates::root_cert`;
//! <https://docs.rs/redis/1.8.2/redis/struct.Client.html#method.build_with_tls>).
//! A certificate no trusted CA signed is a failed handshake: the `tls`
//! reason, a miss, the request served.

pub mod replica;

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use prost::Message;
use redis::{
    AsyncCommands, Client, RedisError, SetExpiry, SetOptions, TlsCertificates,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokenwarden_core::{
    money::Usd, response_cache::RedisConfig, tokens::TokenCounts, workload::SecretRef,
};
use tokenwarden_proto::cache::{Header, StoredResponse};

use super::{Entry, Key, ResponseStore, StoreFuture};
use crate::{metrics::CacheErrors, secrets::Keys, sync::lock};

/// The format byte in front of a stored entry (see proto/cache.proto).
pub const FORMAT_V1: u8 = 1;

/// At most one log line per store and this interval.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A failed Redis operation, by the reason the metric names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Past the timeout.
    Timeout,
    /// No connection (refused, reset, closed).
    Unavailable,
    /// Redis is full (`OOM command not allowed…`, under `noeviction`).
    Oom,
    /// The credentials were refused (`NOAUTH`, `WRONGPASS`).
    Auth,
    /// The TLS handshake failed: most often the server's certificate is
    /// not signed by a trusted CA (`tls.caSecret` missing or another CA's)
    /// or does not name the URL's host.
    Tls,
    /// The credentials could not be read (no such Secret or key).
    Credentials,
    /// A stored value this sidecar cannot read.
    Decode,
    /// Anything else Redis answered with.
    Error,
}

impl Failure {
    /// The metric's `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Unavailable => "unavailable",
            Failure::Oom => "oom",
            Failure::Auth => "auth",
            Failure::Tls => "tls",
            Failure::Credentials => "credentials",
            Failure::Decode => "decode",
            Failure::Error => "error",
        }
    }

    /// The failure a Redis error is.
    pub fn of(e: &RedisError) -> Failure {
        let code = e.code().unwrap_or_default();
        if code == "OOM" {
            Failure::Oom
        } else if matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
            || e.kind() == redis::ErrorKind::AuthenticationFailed
        {
            Failure::Auth
        } else if tls_error(e).is_some() {
            Failure::Tls
        } else if e.is_timeout() {
            Failure::Timeout
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            Failure::Unavailable
        } else {
            Failure::Error
        }
    }
}

/// A connection to the Redis of `cfg` (made lazily, on the first
/// operation), with the password (and the CA of `tls.caSecret`) from the
/// config (connected mode) or from `secrets_dir` (standalone). `Err`: why
/// it cannot be made.
pub fn connect(cfg: &RedisConfig, secrets_dir: Option<&Path>) -> Result<ConnectionManager, String> {
    connect_with(cfg, secrets_dir, Duration::from_millis(cfg.timeout_ms))
}

/// [`connect`], with answers awaited up to `response_timeout` (a blocking
/// read needs more than the policy's per-operation timeout).
pub fn connect_with(
    cfg: &RedisConfig,
    secrets_dir: Option<&Path>,
    response_timeout: Duration,
) -> Result<ConnectionManager, String> {
    if let Some(e) = &cfg.credentials_error {
        return Err(e.clone());
    }
    let mut info = redis::IntoConnectionInfo::into_connection_info(cfg.url.as_str())
        .map_err(|e| format!("spec.cache.redis.url: {}", detail(&e)))?;
    let mut settings = info.redis_settings().clone();
    if let Some(c) = &cfg.credentials {
        let (password, username) = match &cfg.password {
            Some(p) => (p.0.clone(), cfg.username.clone()),
            None => read_credentials(c, secrets_dir)?,
        };
        settings = settings.set_password(password);
        if let Some(u) = username {
            settings = settings.set_username(u);
        }
    }
    info = info.set_redis_settings(settings);
    if cfg.url.starts_with("rediss://") {
        // rustls picks the process default provider: ours is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let client = match read_ca(cfg, secrets_dir)? {
        // Only this CA: `build_with_tls` replaces the system roots.
        Some(root_cert) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        ),
        None => Client::open(info),
    }
    .map_err(|e| format!("redis client: {}", detail(&e)))?;
    let timeout = Duration::from_millis(cfg.timeout_ms);
    // No retry inside an operation: each is bounded by the timeout anyway,
    // and a refused password must surface as `auth`, not as a timeout. A
    // lost connection is made again on the next operation.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| format!("redis connection: {}", detail(&e)))
}

/// What a log line says of a Redis error: its kind and the server's code
/// (never its message, which could quote a key), or the TLS error (e.g.
/// `invalid peer certificate: UnknownIssuer`).
pub fn detail(e: &RedisError) -> String {
    if let Some(t) = tls_error(e) {
        return format!("{:?} TLS: {t}", e.kind());
    }
    match e.code() {
        Some(code) => format!("{:?} {code}", e.kind()),
        None => format!("{:?}", e.kind()),
    }
}

/// The rustls error under a Redis error, if the TLS handshake failed. The
/// redis crate keeps the `io::Error` that tokio-rustls returned in an
/// `Arc<dyn Error>`; the rustls error is that `io::Error`'s payload.
fn tls_error(e: &RedisError) -> Option<&rustls::Error> {
    fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.get_ref().and_then(|inner| find(inner));
        }
        if let Some(arc) = e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            return find(&**arc);
        }
        e.source().and_then(find)
    }
    std::error::Error::source(e).and_then(find)
}

/// The PEM of the CA `ca` names: the operator's (connected mode) or
/// `<dir>/<secret>/<key>`; at least one certificate in it.
fn read_ca(cfg: &RedisConfig, dir: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let Some(ca) = &cfg.tls_ca else {
        return Ok(None);
    };
    let pem = match (&cfg.ca_pem, dir) {
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(dir)) => {
            let path = dir.join(&ca.secret).join(&ca.key);
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        }
        (None, None) => return Err("tls.caSecret: no --secrets-dir given".into()),
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.caSecret {}/{}: not PEM: {e}", ca.secret, ca.key))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.caSecret {}/{}: no certificate in it",
            ca.secret, ca.key
        ));
    }
    Ok(Some(pem))
}

/// Password and user name from `<secrets_dir>/<secret>/<key>`.
fn read_credentials(
    c: &tokenwarden_core::response_cache::RedisCredentials,
    dir: Option<&Path>,
) -> Result<(String, Option<String>), String> {
    let pw = SecretRef {
        name: c.secret.clone(),
        key: c.password_key.clone(),
    };
    let user = c.username_key.as_ref().map(|k| SecretRef {
        name: c.secret.clone(),
        key: k.clone(),
    });
    let keys = Keys::load(dir, std::iter::once(&pw).chain(user.as_ref()));
    let password = keys.get(&pw)?.expose().to_string();
    let username = match &user {
        Some(u) => Some(keys.get(u)?.expose().to_string()),
        None => None,
    };
    Ok((password, username))
}

/// Rate-limits a store's log lines to one per [`LOG_EVERY`].
#[derive(Debug)]
pub(crate) struct LogGate {
    scope: String,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogGate {
    pub(crate) fn new(scope: String) -> Self {
        LogGate {
            scope,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Log `failure` of `op` unless a line was logged in the last
    /// [`LOG_EVERY`]; names the policy, never a key or a prompt.
    pub(crate) fn log(&self, op: &'static str, failure: Failure, detail: &str) {
        let mut last = lock(&self.last);
        if last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            policy = %self.scope,
            op,
            reason = failure.as_str(),
            detail,
            suppressed,
            "response cache: Redis failed; served as a miss (lookups) or not stored (stores)"
        );
    }
}

/// The exact cache's entries of one policy in Redis.
pub struct RedisStore {
    /// `None`: unusable (why in `broken`); every lookup is a miss.
    conn: Option<ConnectionManager>,
    broken: Option<String>,
    /// `<prefix>:<namespace>:<policy>:x:`.
    prefix: String,
    ttl_ms: u64,
    timeout: Duration,
    errors: CacheErrors,
    log: Arc<LogGate>,
}

// === impl RedisStore ===

impl RedisStore {
    /// The store of policy `namespace/policy` in the Redis of `cfg`, with
    /// entries living `ttl_ms`. Never fails: a config it cannot use (no
    /// readable credentials) makes a store whose lookups are misses.
    pub fn new(
        cfg: &RedisConfig,
        namespace: &str,
        policy: &str,
        ttl_ms: u64,
        secrets_dir: Option<&Path>,
        errors: CacheErrors,
    ) -> Self {
        let (conn, broken) = match connect(cfg, secrets_dir) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        };
        let scope = format!("{namespace}/{policy}");
        if let Some(why) = &broken {
            tracing::warn!(policy = %scope, problem = %why, "response cache: Redis unusable; every lookup is a miss");
        }
        RedisStore {
            conn,
            broken,
            prefix: format!("{}:{namespace}:{policy}:x:", cfg.key_prefix),
            ttl_ms,
            timeout: Duration::from_millis(cfg.timeout_ms),
            errors,
            log: Arc::new(LogGate::new(scope)),
        }
    }

    /// The Redis key of `key`.
    pub fn redis_key(&self, key: &Key) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut k = String::with_capacity(self.prefix.len() + 64);
        k.push_str(&self.prefix);
        // Not `format!` per byte: that was 32 allocations and 17k of a
        // Redis hit's 175k instructions (bench/README.md).
        for b in key {
            k.push(char::from(HEX[usize::from(b >> 4)]));
            k.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        k
    }

    fn fail(&self, op: &'static str, failure: Failure, detail: &str) {
        self.errors.count("redis", op, failure.as_str());
        self.log.log(op, failure, detail);
    }

    /// The entry under `key`: `Ok(None)` when Redis has none (or one this
    /// sidecar cannot read), `Err` when Redis could not say (counted).
    async fn lookup(&self, key: &Key) -> Result<Option<Arc<Entry>>, Failure> {
        let Some(conn) = &self.conn else {
            self.fail(
                "get",
                Failure::Credentials,
                self.broken.as_deref().unwrap_or(""),
            );
            return Err(Failure::Credentials);
        };
        let mut conn = conn.clone();
        let rkey = self.redis_key(key);
        let got: Result<Option<Vec<u8>>, RedisError> =
            match tokio::time::timeout(self.timeout, conn.get(rkey)).await {
                Ok(r) => r,
                Err(_) => {
                    self.fail("get", Failure::Timeout, "");
                    return Err(Failure::Timeout);
                }
            };
        match got {
            Ok(Some(bytes)) => match decode(&bytes) {
                Some(e) => Ok(Some(Arc::new(e))),
                None => {
                    self.fail("get", Failure::Decode, "");
                    Ok(None)
                }
            },
            Ok(None) => Ok(None),
            Err(e) => {
                let f = Failure::of(&e);
                self.fail("get", f, &detail(&e));
                Err(f)
            }
        }
    }
}

impl ResponseStore for RedisStore {
    fn get<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Option<Arc<Entry>>> {
        Box::pin(async move { self.lookup(key).await.ok().flatten() })
    }

    fn lookup<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Result<Option<Arc<Entry>>, Failure>> {
        Box::pin(RedisStore::lookup(self, key))
    }

    fn put(&self, key: Key, entry: Arc<Entry>) {
        self.put_then(key, entry, Box::pin(async {}));
    }

    fn put_then(&self, key: Key, entry: Arc<Entry>, then: StoreFuture<'static, ()>) {
        let Some(conn) = self.conn.clone() else {
            self.fail(
                "put",
                Failure::Credentials,
                self.broken.as_deref().unwrap_or(""),
            );
            return;
        };
        let rkey = self.redis_key(&key);
        let value = encode(&entry);
        let opts = SetOptions::default().with_expiration(SetExpiry::PX(self.ttl_ms));
        let (timeout, errors, log) = (self.timeout, self.errors.clone(), self.log.clone());
        tokio::spawn(async move {
            let mut conn = conn;
            let mut retried = false;
            let failure = loop {
                let set = conn.set_options::<_, _, ()>(&rkey, &value, opts.clone());
                let failure = match tokio::time::timeout(timeout, set).await {
                    Ok(Ok(())) => return then.await,
                    Ok(Err(e)) => (Failure::of(&e), detail(&e)),
                    Err(_) => (Failure::Timeout, String::new()),
                };
                // A connection Redis dropped (a restart) is made again by
                // the manager on its next use: one retry saves the entry.
                if failure.0 != Failure::Unavailable || std::mem::replace(&mut retried, true) {
                    break failure;
                }
            };
            errors.count("redis", "put", failure.0.as_str());
            log.log("put", failure.0, &failure.1);
        });
    }

    fn usage(&self) -> (u64, u64) {
        // Held by Redis, shared: not this sidecar's memory.
        (0, 0)
    }
}

/// `entry` as stored: the format byte and its `StoredResponse`.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let age = entry.stored_at.elapsed();
    let stored_at = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let msg = StoredResponse {
        status: u32::from(entry.status),
        headers: entry
            .headers
            .iter()
            .map(|(n, v)| Header {
                name: n.as_str().to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        body: entry.body.to_vec(),
        served_model: entry.served_model.clone(),
        input_tokens: entry.usage.input_tokens,
        output_tokens: entry.usage.output_tokens,
        cache_read_tokens: entry.usage.cache_read_tokens,
        cache_write_tokens: entry.usage.cache_write_tokens,
        cache_write_1h_tokens: entry.usage.cache_write_1h_tokens,
        cost_picos: entry
            .cost
            .map_or(0, |c| i64::try_from(c.picos()).unwrap_or(i64::MAX)),
        priced: entry.cost.is_some(),
        stored_at_unix_ms: stored_at,
    };
    let mut out = Vec::with_capacity(1 + msg.encoded_len());
    out.push(FORMAT_V1);
    msg.encode(&mut out).unwrap_or_default();
    out
}

/// A stored value back into an entry; `None`: another format, or corrupt.
pub fn decode(bytes: &[u8]) -> Option<Entry> {
    let (&format, rest) = bytes.split_first()?;
    if format != FORMAT_V1 {
        return None;
    }
    let msg = StoredResponse::decode(rest).ok()?;
    let headers = msg
        .headers
        .into_iter()
        .map(|h| {
            Some((
                http::HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                http::HeaderValue::from_bytes(&h.value).ok()?,
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let age = now_ms.saturating_sub(u64::try_from(msg.stored_at_unix_ms).unwrap_or(0));
    Some(Entry {
        status: u16::try_from(msg.status).ok()?,
        headers,
        body: Bytes::from(msg.body),
        served_model: msg.served_model,
        usage: TokenCounts {
            input_tokens: msg.input_tokens,
            output_tokens: msg.output_tokens,
            cache_read_tokens: msg.cache_read_tokens,
            cache_write_tokens: msg.cache_write_tokens,
            cache_write_1h_tokens: msg.cache_write_1h_tokens,
        },
        cost: msg
            .priced
            .then(|| Usd::from_picos(i128::from(msg.cost_picos))),
        stored_at: Instant::now()
            .checked_sub(Duration::from_millis(age))
            .unwrap_or_else(Instant::now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_with_every_field() {
        let e = Entry {
            status: 200,
            headers: vec![
                (
                    http::HeaderName::from_static("content-type"),
                    http::HeaderValue::from_static("text/event-stream"),
                ),
                (
                    http::HeaderName::from_static("x-request-id"),
                    http::HeaderValue::from_static("req_1"),
                ),
            ],
            body: Bytes::from_static(b"data: {\"x\":1}\n\ndata: [DONE]\n\n"),
            served_model: "gpt-4o-mini-2024-07-18".into(),
            usage: TokenCounts {
                input_tokens: 12,
                output_tokens: 7,
                cache_read_tokens: 3,
                cache_write_tokens: 2,
                cache_write_1h_tokens: 1,
            },
            cost: Some(Usd::from_picos(123_456_789)),
            stored_at: Instant::now(),
        };
        let bytes = encode(&e);
        assert_eq!(bytes[0], FORMAT_V1);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.status, 200);
        assert_eq!(back.headers, e.headers);
        assert_eq!(back.body, e.body);
        assert_eq!(back.served_model, e.served_model);
        assert_eq!(back.usage, e.usage);
        assert_eq!(back.cost, e.cost);
        let unpriced = Entry { cost: None, ..e };
        assert_eq!(decode(&encode(&unpriced)).unwrap().cost, None);
        // Another format byte, or garbage, is a miss.
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(decode(&other).is_none());
        assert!(decode(b"").is_none());
        assert!(decode(&[FORMAT_V1, 0xff, 0xff]).is_none());
    }

    #[test]
    fn keys_name_the_scope_and_the_hex_hash() {
        let cfg = RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            credentials: None,
            timeout_ms: 50,
            key_prefix: "tw".into(),
            password: None,
            username: None,
            tls_ca: None,
            ca_pem: None,
            credentials_error: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let s = RedisStore::new(&cfg, "team-a", "bot", 1000, None, CacheErrors::default());
        let mut key = [0u8; 32];
        key[0] = 0xab;
        key[31] = 0x01;
        assert_eq!(
            s.redis_key(&key),
            format!("tw:team-a:bot:x:ab{}01", "00".repeat(30))
        );
    }
}
