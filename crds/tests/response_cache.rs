//! `spec.cache` and `routes[].cache`: what `to_input()` makes of them
//! (defaults, bounds, the route override) from YAML as a user writes it.
//! The rejections are in `tests/invalid/policy-cache-*`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pretty_assertions::assert_eq;
use tokenwarden_core::{
    response_cache::{CacheBackend, ResponseCacheConfig},
    semantic_cache::{Eligibility, EmbeddingConfig, SemanticCacheConfig},
    semantic_guard::Guards,
    workload::RoutingConfig,
};
use tokenwarden_crds::load::{Object, load_yaml};

const HEAD: &str = r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: p, namespace: ns}
spec:
  providers:
    - {name: openai, api: openai, baseUrl: "https://api.openai.com", apiKeySecretRef: {name: keys, key: openai}}
  tiers:
    - {name: cheap, provider: openai, model: gpt-4o-mini}
"#;

fn routing(tail: &str) -> RoutingConfig {
    let objects = load_yaml(&format!("{HEAD}{tail}")).unwrap_or_else(|e| panic!("{e}"));
    match objects.into_iter().next().unwrap() {
        Object::RoutingPolicy(p) => p.to_input().unwrap().routing,
        Object::TokenBudget(_) => panic!("not a policy"),
    }
}

#[test]
fn absent_is_off_and_an_empty_block_is_on_with_the_defaults() {
    assert_eq!(routing("").response_cache, None);
    assert_eq!(
        routing("  cache: {}\n").response_cache,
        Some(ResponseCacheConfig::default())
    );
    assert_eq!(
        ResponseCacheConfig::default(),
        ResponseCacheConfig {
            backend: CacheBackend::Memory,
            ttl_ms: 3_600_000,
            max_entries: 10_000,
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
            only_deterministic: true,
            redis: None,
            semantic: None,
        }
    );
}

#[test]
fn every_field_is_read() {
    let cfg = routing(
        "  cache:\n    backend: memory\n    exact: {ttl: 24h, maxEntries: 50, maxBytes: 131072, maxEntryBytes: 4096, onlyDeterministic: false}\n",
    );
    assert_eq!(
        cfg.response_cache,
        Some(ResponseCacheConfig {
            backend: CacheBackend::Memory,
            ttl_ms: 24 * 3_600_000,
            max_entries: 50,
            max_bytes: 131_072,
            max_entry_bytes: 4096,
            only_deterministic: false,
            redis: None,
            semantic: None,
        })
    );
    // A small maxBytes bounds the default entry size too.
    let small = routing("  cache:\n    exact: {maxBytes: 65536}\n");
    assert_eq!(small.response_cache.unwrap().max_entry_bytes, 65_536);
}

#[test]
fn a_route_overrides_the_policy() {
    let routes = "  routes:\n    - {name: off, match: {models: [a]}, target: {tier: cheap}, cache: {enabled: false}}\n    - {name: on, match: {models: [b]}, target: {tier: cheap}, cache: {enabled: true}}\n    - {name: plain, target: {tier: cheap}}\n";
    let without = routing(routes);
    assert_eq!(without.response_cache_for(Some("off")), None);
    assert_eq!(
        without.response_cache_for(Some("on")),
        Some(ResponseCacheConfig::default())
    );
    assert_eq!(without.response_cache_for(Some("plain")), None);
    assert_eq!(without.response_cache_for(None), None);
    let with = routing(&format!("{routes}  cache:\n    exact: {{ttl: 5m}}\n"));
    let five = Some(ResponseCacheConfig {
        ttl_ms: 300_000,
        ..ResponseCacheConfig::default()
    });
    assert_eq!(with.response_cache_for(Some("off")), None);
    assert_eq!(with.response_cache_for(Some("on")), five);
    assert_eq!(with.response_cache_for(Some("plain")), five);
    assert_eq!(with.response_cache_for(None), five);
}

#[test]
fn the_redis_backend_is_read_with_its_defaults() {
    use tokenwarden_core::response_cache::{RedisConfig, RedisCredentials};
    let cfg = routing(
        "  cache:\n    backend: redis\n    redis: {url: \"rediss://cache.tw-system:6380/2\", credentialsSecret: {name: redis-auth, key: password, usernameKey: user}, timeout: 50ms, keyPrefix: team-a}\n",
    )
    .response_cache
    .unwrap();
    assert_eq!(cfg.backend, CacheBackend::Redis);
    assert_eq!(
        cfg.redis,
        Some(RedisConfig {
            url: "rediss://cache.tw-system:6380/2".into(),
            credentials: Some(RedisCredentials {
                secret: "redis-auth".into(),
                password_key: "password".into(),
                username_key: Some("user".into()),
            }),
            timeout_ms: 50,
            key_prefix: "team-a".into(),
            password: None,
            username: None,
            tls_ca: None,
            ca_pem: None,
            credentials_error: None,
        })
    );
    let plain = routing("  cache:\n    backend: redis\n    redis: {url: \"redis://redis:6379\"}\n")
        .response_cache
        .unwrap()
        .redis
        .unwrap();
    assert_eq!((plain.timeout_ms, plain.key_prefix.as_str()), (100, "tw"));
    assert_eq!(plain.credentials, None);
    // A user name alone in the URL is fine; the password is never there.
    let user =
        routing("  cache:\n    backend: redis\n    redis: {url: \"redis://app@redis:6379\"}\n");
    assert!(user.response_cache.unwrap().redis.is_some());
}

#[test]
fn a_private_ca_is_read_for_rediss() {
    use tokenwarden_core::response_cache::RedisTlsCa;
    let r = routing(
        "  cache:\n    backend: redis\n    redis: {url: \"rediss://redis.cache:6380/0\", tls: {caSecret: {name: redis-ca, key: ca.crt}}}\n",
    )
    .response_cache
    .unwrap()
    .redis
    .unwrap();
    assert_eq!(
        r.tls_ca,
        Some(RedisTlsCa {
            secret: "redis-ca".into(),
            key: "ca.crt".into(),
        })
    );
    assert_eq!(r.ca_pem, None, "resolved later: operator or secrets dir");
    // Without `tls`, `rediss://` trusts the system roots.
    let system = routing(
        "  cache:\n    backend: redis\n    redis: {url: \"rediss://redis.cache:6380/0\"}\n",
    );
    assert_eq!(system.response_cache.unwrap().redis.unwrap().tls_ca, None);
}

#[test]
fn the_password_is_never_shown_by_debug() {
    use tokenwarden_core::response_cache::Redacted;
    let shown = format!("{:?}", Some(Redacted("hunter2".into())));
    assert_eq!(shown, "Some(<redacted>)");
}

const EMBEDDER: &str = "    - {name: embedder, api: openai, baseUrl: \"http://127.0.0.1:8090\", apiKeySecretRef: {name: keys, key: embedder}}\n";

fn with_embedder(tail: &str) -> RoutingConfig {
    let head = HEAD.replace("  tiers:\n", &format!("{EMBEDDER}  tiers:\n"));
    let objects = load_yaml(&format!("{head}{tail}")).unwrap_or_else(|e| panic!("{e}"));
    match objects.into_iter().next().unwrap() {
        Object::RoutingPolicy(p) => p.to_input().unwrap().routing,
        Object::TokenBudget(_) => panic!("not a policy"),
    }
}

#[test]
fn semantic_is_off_unless_set_and_strict_by_default() {
    assert_eq!(
        routing("  cache: {}\n").response_cache.unwrap().semantic,
        None
    );
    let cfg = with_embedder(
        "  cache:\n    semantic:\n      embedding: {provider: embedder, model: all-MiniLM-L6-v2}\n",
    );
    assert_eq!(
        cfg.response_cache.unwrap().semantic,
        Some(SemanticCacheConfig {
            min_similarity: 9_500,
            embedding: EmbeddingConfig {
                provider: "embedder".into(),
                model: "all-MiniLM-L6-v2".into(),
                timeout_ms: 2_000,
            },
            guards: Guards {
                numbers: true,
                negations: true,
                entities: true,
                code: true,
                max_content_word_diff: 2,
            },
            max_entries: 10_000,
            eligibility: Eligibility {
                single_turn_only: true,
                no_tools: true,
                text_only: true,
                max_prompt_bytes: 1_000,
            },
        })
    );
}

#[test]
fn every_semantic_field_is_read() {
    let cfg = with_embedder(concat!(
        "  cache:\n    semantic:\n",
        "      minSimilarity: \"0.9731\"\n",
        "      embedding: {provider: embedder, model: m, timeout: 250ms}\n",
        "      guards: {numbers: false, negations: false, entities: false, code: false, maxContentWordDiff: 7}\n",
        "      eligibility: {singleTurnOnly: false, noTools: false, textOnly: false, maxPromptBytes: 4000}\n",
        "      maxEntries: 42\n",
    ));
    let s = cfg.response_cache.unwrap().semantic.unwrap();
    assert_eq!(s.min_similarity, 9_731);
    assert_eq!(s.embedding.timeout_ms, 250);
    assert_eq!(
        s.guards,
        Guards {
            numbers: false,
            negations: false,
            entities: false,
            code: false,
            max_content_word_diff: 7,
        }
    );
    assert_eq!(s.max_entries, 42);
    assert_eq!(
        s.eligibility,
        Eligibility {
            single_turn_only: false,
            no_tools: false,
            text_only: false,
            max_prompt_bytes: 4_000,
        }
    );
}

#[test]
fn a_route_turns_semantic_off_and_keeps_the_exact_cache() {
    let cfg = with_embedder(concat!(
        "  routes:\n",
        "    - {name: exact-only, match: {models: [a]}, target: {tier: cheap}, cache: {semantic: false}}\n",
        "    - {name: plain, target: {tier: cheap}}\n",
        "  cache:\n    semantic:\n      embedding: {provider: embedder, model: m}\n",
    ));
    let exact_only = cfg.response_cache_for(Some("exact-only")).unwrap();
    assert_eq!(exact_only.semantic, None);
    assert_eq!(exact_only.ttl_ms, 3_600_000, "the exact cache stays on");
    assert!(
        cfg.response_cache_for(Some("plain"))
            .unwrap()
            .semantic
            .is_some()
    );
    assert!(cfg.response_cache_for(None).unwrap().semantic.is_some());
}
