//! The exact response cache's pure half: its compiled settings
//! ([`ResponseCacheConfig`], from a RoutingPolicy's `spec.cache`), which
//! requests it may answer ([`cacheable`]), and the canonical form of a
//! request its key hashes ([`canonical_key_input`]). The sidecar hashes
//! that form (SHA-256), stores and replays the responses
//! (docs/response-cache.md).
//!
//! The canonical form holds everything that determines the answer:
//!
//! - a key-format version ([`KEY_VERSION`]), the namespace and the
//!   RoutingPolicy's name: two policies, or two namespaces, never share an
//!   entry;
//! - the provider the request was routed to, the model sent upstream (after
//!   routing), the API and the path (query included);
//! - the values of the request headers that select provider behaviour and
//!   are forwarded upstream ([`KEYED_HEADERS`]: `anthropic-version`,
//!   `anthropic-beta`, `openai-beta`): the same body under another beta can
//!   get another answer (<https://docs.anthropic.com/en/api/beta-headers>,
//!   <https://docs.anthropic.com/en/api/versioning>);
//! - the request body as parsed JSON with every object's keys sorted and no
//!   whitespace, minus the top-level members that do not change the answer
//!   ([`IGNORED_FIELDS`]).
//!
//! Length-prefixed fields keep the parts from running into each other. The
//! provider key is never part of it: the namespace scopes the entries.
//! Why each ignored member does not determine the answer, from the
//! providers' references
//! (<https://platform.openai.com/docs/api-reference/chat/create>,
//! <https://platform.openai.com/docs/api-reference/responses/create>,
//! <https://docs.anthropic.com/en/api/messages>):
//!
//! | member | why |
//! |---|---|
//! | `model` | the model after routing is keyed instead (two requested names routed to one model share) |
//! | `stream` | not hashed; streamed and non-streamed answers are stored under different keys (the `stream` flag is a separate part) |
//! | `stream_options` | only asks for a usage chunk in a stream |
//! | `user`, `safety_identifier` | OpenAI end-user ids for abuse monitoring |
//! | `metadata` | tags stored with the request (OpenAI), `metadata.user_id` (Anthropic) |
//! | `store` | OpenAI: keep the completion for distillation/evals |
//! | `prompt_cache_key` | OpenAI: routes to the provider's prompt cache, does not change the output |
//!
//! Sampled requests: with `onlyDeterministic` (the default) a request is
//! cached only when it does not ask for variety — `temperature` absent or
//! 0 and at most one choice (`n` absent or 1). An app that sets
//! `temperature: 0.7` asks for a different answer each time; replaying one
//! would silently change its behaviour. A policy can cache those too
//! (`onlyDeterministic: false`), as LiteLLM does.
//!
//! Backends ([`CacheBackend`]): `memory`, bounded per sidecar, or `redis`
//! ([`RedisConfig`]), shared by the policy's sidecars and bounded by the
//! server's `maxmemory`. Its password never sits in the policy: the
//! operator resolves it from a Secret into [`RedisConfig::password`]
//! ([`Redacted`] in `Debug`), or a standalone sidecar reads it from its
//! secrets directory; the private CA of a `rediss://` server
//! ([`RedisConfig::tls_ca`]) is resolved the same way.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the key format; part of every key, so a change of the
/// canonical form never serves an entry made under the old one.
pub const KEY_VERSION: u32 = 2;

/// Request headers whose values are part of the key (see the module docs),
/// lower-case, in the order they are hashed.
pub const KEYED_HEADERS: [&str; 3] = ["anthropic-version", "anthropic-beta", "openai-beta"];

/// Top-level request members left out of the key (see the module docs).
pub const IGNORED_FIELDS: [&str; 8] = [
    "model",
    "stream",
    "stream_options",
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "prompt_cache_key",
];

/// Default entry lifetime: one hour.
pub const DEFAULT_TTL_MS: u64 = 3600 * 1000;
/// Longest entry lifetime: 30 days.
pub const MAX_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
/// Default bound on entries.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// Most entries a bound may allow.
pub const MAX_MAX_ENTRIES: u64 = 1_000_000;
/// Default bound on the bytes of all entries: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Smallest bound on the bytes of all entries: 64 KiB.
pub const MIN_MAX_BYTES: u64 = 64 << 10;
/// Largest bound on the bytes of all entries: 4 GiB.
pub const MAX_MAX_BYTES: u64 = 4 << 30;
/// Default bound on one entry (its stored body): 1 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1 << 20;
/// Largest bound on one entry: 64 MiB.
pub const MAX_MAX_ENTRY_BYTES: u64 = 64 << 20;

/// Where entries live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CacheBackend {
    /// In the sidecar's memory, bounded per sidecar; lost on restart.
    #[default]
    Memory,
    /// In a Redis server shared by the policy's sidecars ([`RedisConfig`]).
    Redis,
}

/// Default bound on one Redis operation: 100 ms.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 100;
/// Longest bound on one Redis operation: 5 s.
pub const MAX_REDIS_TIMEOUT_MS: u64 = 5000;
/// Default first part of every Redis key.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "tw";

/// A secret value (the Redis password): its `Debug` never shows it; it is
/// serialized as the plain string (the operator hands it to the sidecar
/// inside the compiled config, over the control channel's TLS).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the Redis password (and optionally the user name) is: a Secret in
/// the policy's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisCredentials {
    /// The Secret's name.
    pub secret: String,
    /// Its key holding the password.
    pub password_key: String,
    /// Its key holding the ACL user name (absent: the URL's, or `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_key: Option<String>,
}

/// Where the private CA of a `rediss://` server is: a key of a Secret in
/// the policy's namespace, holding one or more PEM certificates.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisTlsCa {
    /// The Secret's name.
    pub secret: String,
    /// Its key holding the PEM.
    pub key: String,
}

/// The Redis backend of a policy's cache (`spec.cache.redis`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS, verified against the
    /// system roots, or only against [`RedisConfig::tls_ca`] when set);
    /// never a password (that comes from [`RedisConfig::credentials`]).
    pub url: String,
    /// Where the credentials are, if the server asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<RedisCredentials>,
    /// A Secret key holding the PEM certificate(s) of the private CA that
    /// signed the server's certificate (`rediss://` only): the server is
    /// then verified against these instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<RedisTlsCa>,
    /// Bound on each operation (connecting included), in milliseconds: past
    /// it a lookup is a miss and a store is dropped.
    pub timeout_ms: u64,
    /// First part of every key: `<prefix>:<namespace>:<policy>:…`.
    pub key_prefix: String,
    /// The password, resolved from the Secret by the operator (connected
    /// mode); absent, a standalone sidecar reads it from its secrets
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Redacted>,
    /// The user name, resolved like the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The PEM of [`RedisConfig::tls_ca`], resolved like the password
    /// (public data: shown in `Debug`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Why the operator could not resolve the credentials or the CA (the
    /// sidecar then treats the backend as down: every lookup a miss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_error: Option<String>,
}

/// A RoutingPolicy's `spec.cache`, compiled: the exact cache is on for the
/// policy's requests (a route may turn it off, see
/// [`crate::workload::Route::response_cache`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResponseCacheConfig {
    /// Where entries live.
    pub backend: CacheBackend,
    /// How long an entry is served after it was stored, in milliseconds.
    pub ttl_ms: u64,
    /// Most entries kept; the least recently used goes first.
    pub max_entries: u64,
    /// Most bytes kept (stored bodies and their headers).
    pub max_bytes: u64,
    /// Largest response stored; a larger one is forwarded, not stored.
    pub max_entry_bytes: u64,
    /// Cache only requests that do not ask for variety (see the module docs).
    pub only_deterministic: bool,
    /// The Redis server, when `backend` is [`CacheBackend::Redis`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// The semantic cache on top (`spec.cache.semantic`); `None`: off. Left
    /// out of the JSON when off, so configs without it keep their digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<crate::semantic_cache::SemanticCacheConfig>,
}

impl Default for ResponseCacheConfig {
    fn default() -> Self {
        ResponseCacheConfig {
            backend: CacheBackend::Memory,
            ttl_ms: DEFAULT_TTL_MS,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            only_deterministic: true,
            redis: None,
            semantic: None,
        }
    }
}

/// Why a request is not looked up in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotCacheable {
    /// The body is not a JSON object.
    NotJson,
    /// It asks for variety (`temperature` > 0, or `n` > 1) and the policy
    /// caches only deterministic requests.
    Sampled,
}

/// Whether a request with this (parsed) body may be answered from the
/// cache under `cfg`.
pub fn cacheable(cfg: &ResponseCacheConfig, body: &Value) -> Result<(), NotCacheable> {
    let Some(obj) = body.as_object() else {
        return Err(NotCacheable::NotJson);
    };
    if cfg.only_deterministic {
        let temperature_zero = match obj.get("temperature") {
            None | Some(Value::Null) => true,
            Some(v) => v.as_f64() == Some(0.0),
        };
        let one_choice = match obj.get("n") {
            None | Some(Value::Null) => true,
            Some(v) => v.as_u64() == Some(1),
        };
        if !(temperature_zero && one_choice) {
            return Err(NotCacheable::Sampled);
        }
    }
    Ok(())
}

/// What scopes and routes a request, for its key.
#[derive(Clone, Copy, Debug)]
pub struct KeyParts<'a> {
    /// The RoutingPolicy's namespace.
    pub namespace: &'a str,
    /// The RoutingPolicy's name.
    pub policy: &'a str,
    /// The provider the request was routed to (its name in the policy).
    pub provider: &'a str,
    /// The model sent upstream, after routing.
    pub model: &'a str,
    /// The API (`openai`, `anthropic`).
    pub api: &'a str,
    /// The path and query the app called.
    pub path: &'a str,
    /// The app asked for a stream (stored apart from the JSON answer).
    pub stream: bool,
    /// The values of each of [`KEYED_HEADERS`], in that order (several
    /// values of one header joined with `,` as sent; empty when absent).
    pub headers: [&'a str; KEYED_HEADERS.len()],
}

/// The canonical form of a request that its key hashes (see the module
/// docs). `body` is the request's parsed JSON.
pub fn canonical_key_input(parts: &KeyParts<'_>, body: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    field(
        &mut out,
        format!("tokenwarden-response-cache/v{KEY_VERSION}").as_bytes(),
    );
    for p in [
        parts.namespace,
        parts.policy,
        parts.provider,
        parts.model,
        parts.api,
        parts.path,
        if parts.stream { "sse" } else { "json" },
    ] {
        field(&mut out, p.as_bytes());
    }
    for h in parts.headers {
        field(&mut out, h.as_bytes());
    }
    let mut canon = Vec::with_capacity(256);
    match body {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|k| !IGNORED_FIELDS.contains(&k.as_str()))
                .collect();
            keys.sort();
            canon.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    canon.push(b',');
                }
                write_canonical(&mut canon, &Value::String(k.clone()));
                canon.push(b':');
                write_canonical(&mut canon, &map[k]);
            }
            canon.push(b'}');
        }
        other => write_canonical(&mut canon, other),
    }
    field(&mut out, &canon);
    out
}

/// The form a semantic-cache entry's scope hashes (see
/// `crate::semantic_cache`): the exact key's
/// canonical form of `parts` and the `blanked` body, then the embedder's
/// provider and model.
pub fn semantic_scope_input(
    parts: &KeyParts<'_>,
    blanked: &Value,
    embedding: &crate::semantic_cache::EmbeddingConfig,
) -> Vec<u8> {
    let mut out = canonical_key_input(parts, blanked);
    for p in [
        format!("semantic-scope/v{}", crate::semantic_cache::SCOPE_VERSION).as_str(),
        embedding.provider.as_str(),
        embedding.model.as_str(),
    ] {
        out.extend_from_slice(p.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(p.as_bytes());
        out.push(b';');
    }
    out
}

/// `len:bytes;`
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
    out.push(b';');
}

/// `v` as JSON with every object's keys sorted, no whitespace.
fn write_canonical(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, &Value::String(k.clone()));
                out.push(b':');
                write_canonical(out, v);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        scalar => {
            // Strings, numbers, booleans and null serialize without
            // whitespace; a number keeps its parsed value's rendering.
            if let Ok(s) = serde_json::to_vec(scalar) {
                out.extend_from_slice(&s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parts(model: &str, stream: bool) -> KeyParts<'_> {
        KeyParts {
            namespace: "ns",
            policy: "p",
            provider: "openai",
            model,
            api: "openai",
            path: "/v1/chat/completions",
            stream,
            headers: ["", "", ""],
        }
    }

    #[test]
    fn key_order_whitespace_and_ignored_fields_do_not_matter() {
        let a: Value = serde_json::from_str(
            r#"{"model":"a","messages":[{"role":"user","content":"hi"}],"temperature":0,"user":"u1"}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{ "user":"u2", "temperature":0, "messages":[{"content":"hi","role":"user"}], "model":"b", "metadata":{"x":"1"}, "stream_options":{"include_usage":true}, "store":true }"#,
        )
        .unwrap();
        let ka = canonical_key_input(&parts("gpt-4o-mini", false), &a);
        assert_eq!(ka, canonical_key_input(&parts("gpt-4o-mini", false), &b));
        assert_eq!(
            String::from_utf8(ka).unwrap(),
            r#"29:tokenwarden-response-cache/v2;2:ns;1:p;6:openai;11:gpt-4o-mini;6:openai;20:/v1/chat/completions;4:json;0:;0:;0:;61:{"messages":[{"content":"hi","role":"user"}],"temperature":0};"#
        );
    }

    #[test]
    fn what_determines_the_answer_changes_the_key() {
        let body = json!({"messages":[{"role":"user","content":"hi"}]});
        let base = canonical_key_input(&parts("m", false), &body);
        assert_ne!(base, canonical_key_input(&parts("m2", false), &body));
        assert_ne!(base, canonical_key_input(&parts("m", true), &body));
        let other = json!({"messages":[{"role":"user","content":"hi"}],"max_tokens":5});
        assert_ne!(base, canonical_key_input(&parts("m", false), &other));
        let mut scoped = parts("m", false);
        scoped.namespace = "other";
        assert_ne!(base, canonical_key_input(&scoped, &body));
        let mut policy = parts("m", false);
        policy.policy = "q";
        assert_ne!(base, canonical_key_input(&policy, &body));
        // Length prefixes: parts cannot run into each other.
        let mut run = parts("m", false);
        run.namespace = "n";
        run.policy = "sp";
        assert_ne!(base, canonical_key_input(&run, &body));
        // A beta or API version the request names selects other behaviour.
        for (i, name) in KEYED_HEADERS.iter().enumerate() {
            let mut beta = parts("m", false);
            beta.headers[i] = "prompt-caching-2024-07-31";
            assert_ne!(base, canonical_key_input(&beta, &body), "{name}");
        }
        let mut two = parts("m", false);
        two.headers = ["2023-06-01", "", ""];
        let mut swapped = parts("m", false);
        swapped.headers = ["", "2023-06-01", ""];
        assert_ne!(
            canonical_key_input(&two, &body),
            canonical_key_input(&swapped, &body)
        );
    }

    #[test]
    fn only_deterministic_requests_are_cacheable_by_default() {
        let cfg = ResponseCacheConfig::default();
        assert_eq!(cacheable(&cfg, &json!({})), Ok(()));
        assert_eq!(cacheable(&cfg, &json!({"temperature":0})), Ok(()));
        assert_eq!(cacheable(&cfg, &json!({"temperature":0.0,"n":1})), Ok(()));
        assert_eq!(
            cacheable(&cfg, &json!({"temperature":0.7})),
            Err(NotCacheable::Sampled)
        );
        assert_eq!(cacheable(&cfg, &json!({"n":2})), Err(NotCacheable::Sampled));
        assert_eq!(cacheable(&cfg, &json!([1])), Err(NotCacheable::NotJson));
        let all = ResponseCacheConfig {
            only_deterministic: false,
            ..cfg
        };
        assert_eq!(cacheable(&all, &json!({"temperature":1,"n":3})), Ok(()));
    }

    fn sem_parts(stream: bool) -> KeyParts<'static> {
        KeyParts {
            namespace: "ns",
            policy: "p",
            provider: "openai",
            model: "gpt-4o-mini",
            api: "openai",
            path: "/v1/chat/completions",
            stream,
            headers: ["", "", ""],
        }
    }

    fn scope(body: Value, stream: bool, model: &str) -> Vec<u8> {
        let e = crate::semantic_cache::eligible(
            &crate::semantic_cache::Eligibility::default(),
            Some(crate::semantic_cache::Shape::ChatCompletions),
            &body,
        )
        .unwrap();
        let emb = crate::semantic_cache::EmbeddingConfig {
            provider: "embedder".into(),
            model: model.into(),
            timeout_ms: 2_000,
        };
        semantic_scope_input(&sem_parts(stream), &e.blanked, &emb)
    }

    #[test]
    fn the_scope_is_everything_but_the_user_text() {
        let q = |text: &str, system: &str, t: f64| {
            json!({"temperature":t,"messages":[
                {"role":"system","content":system},{"role":"user","content":text}]})
        };
        let base = scope(q("How do I reset my password?", "s", 0.0), false, "minilm");
        assert_eq!(
            base,
            scope(q("How can I reset my password?", "s", 0.0), false, "minilm"),
            "the wording of the user text is not in the scope"
        );
        assert_ne!(
            base,
            scope(q("How do I reset my password?", "t", 0.0), false, "minilm")
        );
        assert_ne!(
            base,
            scope(q("How do I reset my password?", "s", 0.5), false, "minilm")
        );
        assert_ne!(
            base,
            scope(q("How do I reset my password?", "s", 0.0), true, "minilm")
        );
        assert_ne!(
            base,
            scope(q("How do I reset my password?", "s", 0.0), false, "other")
        );
        let text = String::from_utf8(base).unwrap();
        assert!(
            text.ends_with("17:semantic-scope/v1;8:embedder;6:minilm;"),
            "{text}"
        );
        assert!(!text.contains("password"), "{text}");
    }
}
