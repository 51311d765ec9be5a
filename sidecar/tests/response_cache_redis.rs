//! The exact response cache on Redis, black-box: real sidecar binaries, the
//! fake provider and a real `redis-server` (tests/src/redis.rs; skipped
//! without it unless `TOKENWARDEN_REQUIRE_SERVICES=1`). Asserts: a fill
//! through one sidecar is a hit through another (same bytes, $0, the ledger's
//! saved dollars); the key layout and PX TTL in Redis; a Redis stopped,
//! restarted, hung (SIGSTOP) or full (`maxmemory` + `noeviction`) never
//! fails a request and is counted in `tokenwarden_response_cache_errors_total`;
//! credentials from the secrets dir, right and wrong; `rediss://` to a
//! server signed by a private CA, with `tls.caSecret` (hits) and without it
//! or with another CA (handshake refused: `reason="tls"`, misses, served).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokenwarden_tests::{
    redis::{Redis, RedisOptions, RedisTls},
    tls::TestCa,
};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"How do I reset my password?"}],"temperature":0}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"How do I reset my password?"}]}"#;

fn redis_cache(r: &Redis, extra: &str) -> String {
    format!(
        "  cache:\n    backend: redis\n    redis: {{url: \"{}\", timeout: 100ms{extra}}}\n    exact: {{ttl: 1h}}\n",
        r.url()
    )
}

fn cache(r: &Reply) -> &str {
    r.header("x-tokenwarden-cache").unwrap_or("(none)")
}

async fn chat(sc: &Sidecar, body: &str) -> Reply {
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

async fn errors(sc: &Sidecar, op: &str, reason: &str) -> f64 {
    let m = metrics(sc).await;
    sample(
        &m,
        "tokenwarden_response_cache_errors_total",
        &[("backend", "redis"), ("op", op), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// Poll until `f` holds (Redis stores are not waited for by requests).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn keys(r: &Redis) -> Vec<String> {
    let mut v: Vec<String> = r
        .cli(&["--scan", "--pattern", "*"])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_fill_through_one_sidecar_is_a_hit_through_another() {
    let Some(redis) = Redis::start(RedisOptions::default()) else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let p = policy(&fake, &redis_cache(&redis, ""), "");
    let a = Sidecar::start(&p);
    let b = Sidecar::start(&p);
    let first = chat(&a, CHAT).await;
    assert_eq!(cache(&first), "miss");
    let cost = picos(first.header("x-tokenwarden-cost-usd").unwrap());
    assert!(cost > 0);
    eventually("the entry in Redis", async || keys(&redis).len() == 1).await;
    let k = keys(&redis);
    assert!(
        k[0].starts_with("tw:apps:test-policy:x:")
            && k[0].len() == "tw:apps:test-policy:x:".len() + 64,
        "{k:?}"
    );
    let pttl: i64 = redis.cli(&["PTTL", &k[0]]).unwrap().trim().parse().unwrap();
    assert!((3_590_000..=3_600_000).contains(&pttl), "{pttl}");

    let hit = chat(&b, CHAT).await;
    assert_eq!(cache(&hit), "hit");
    assert_eq!(hit.body, first.body, "sidecar B replays A's bytes");
    assert_eq!(hit.header("content-type"), first.header("content-type"));
    assert_eq!(hit.header("x-tokenwarden-cost-usd"), Some("0.00"));
    assert_eq!(fake.log().len(), 1, "one provider call for both sidecars");
    let row = b.model_row("gpt-4o-mini").await;
    assert_eq!(row["response_cache_hits"], 1, "{row}");
    assert_eq!(cost_str(&row["response_cache_saved_usd"]), cost, "{row}");
    assert_eq!(cost_str(&row["cost_usd"]), 0, "{row}");

    // Streams too, under their own key.
    let s1 = a.openai("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(cache(&s1), "miss");
    eventually("the stream entry", async || keys(&redis).len() == 2).await;
    let s2 = b.openai("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(cache(&s2), "hit");
    assert_eq!(s2.text(), s1.text());
    assert_eq!(fake.log().len(), 2);
    assert_eq!(errors(&a, "get", "timeout").await, 0.0);
}

#[tokio::test]
async fn a_restarted_redis_is_a_miss_while_down_and_hits_again_after() {
    let Some(mut redis) = Redis::start(RedisOptions::default()) else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, &redis_cache(&redis, ""), ""));
    assert_eq!(cache(&chat(&sc, CHAT).await), "miss");
    eventually("the entry", async || keys(&redis).len() == 1).await;
    assert_eq!(cache(&chat(&sc, CHAT).await), "hit");

    redis.stop();
    for _ in 0..3 {
        let t = Instant::now();
        let r = chat(&sc, CHAT).await;
        assert_eq!(cache(&r), "miss", "Redis down: a miss, served");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    assert!(errors(&sc, "get", "unavailable").await + errors(&sc, "get", "timeout").await >= 3.0);
    assert_eq!(fake.log().len(), 4);

    redis.restart(); // same port, empty
    let mut hit = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !hit {
        hit = cache(&chat(&sc, CHAT).await) == "hit";
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hit, "the sidecar reconnected, stored and hit again");
}

#[tokio::test]
async fn a_hung_redis_costs_at_most_the_timeout() {
    let Some(mut redis) = Redis::start(RedisOptions::default()) else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, &redis_cache(&redis, ""), ""));
    assert_eq!(cache(&chat(&sc, CHAT).await), "miss"); // connected
    redis.pause();
    let t = Instant::now();
    let r = chat(&sc, &CHAT.replace("password", "email")).await;
    let took = t.elapsed();
    redis.cont();
    assert_eq!(cache(&r), "miss");
    // 100 ms timeout + the fake provider + margin for a loaded CI machine
    // (without the timeout the request would wait for Redis forever).
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(errors(&sc, "get", "timeout").await >= 1.0);
}

#[tokio::test]
async fn a_full_redis_drops_the_store_and_serves_the_request() {
    let Some(redis) = Redis::start(RedisOptions {
        maxmemory: Some("1mb".into()),
        policy: Some("noeviction".into()),
        ..Default::default()
    }) else {
        return;
    };
    // Fill it with what Redis counts as used memory until writes fail.
    for i in 0..400 {
        let big = "x".repeat(8192);
        if redis
            .cli(&["SET", &format!("filler:{i}"), &big])
            .is_none_or(|o| o.contains("OOM"))
        {
            break;
        }
    }
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, &redis_cache(&redis, ""), ""));
    let r = chat(&sc, CHAT).await;
    assert_eq!(cache(&r), "miss");
    eventually("the OOM counted", async || {
        errors(&sc, "put", "oom").await >= 1.0
    })
    .await;
    let again = chat(&sc, CHAT).await;
    assert_eq!(cache(&again), "miss", "nothing was stored");
    assert_eq!(again.status, 200);
    assert_eq!(fake.log().len(), 2);
}

#[tokio::test]
async fn credentials_come_from_the_secrets_dir() {
    let Some(redis) = Redis::start(RedisOptions {
        password: Some("s3cret-redis".into()),
        ..Default::default()
    }) else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let p = policy(
        &fake,
        &redis_cache(
            &redis,
            ", credentialsSecret: {name: redis-auth, key: password}",
        ),
        "",
    );
    let start = |password: Option<&str>| {
        let sc = Sidecar::unstarted(&p, &[]);
        if let Some(pw) = password {
            let d = sc.secrets_dir().join("redis-auth");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("password"), format!("{pw}\n")).unwrap();
        }
        let mut sc = sc;
        sc.spawn();
        sc
    };
    let right = start(Some("s3cret-redis"));
    assert_eq!(cache(&chat(&right, CHAT).await), "miss");
    eventually("the entry", async || keys(&redis).len() == 1).await;
    assert_eq!(cache(&chat(&right, CHAT).await), "hit");

    let wrong = start(Some("not-it"));
    assert_eq!(cache(&chat(&wrong, CHAT).await), "miss", "served");
    let m = metrics(&wrong).await;
    assert!(
        errors(&wrong, "get", "auth").await >= 1.0,
        "{}",
        m.lines()
            .filter(|l| l.contains("errors_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let missing = start(None);
    assert_eq!(cache(&chat(&missing, CHAT).await), "miss", "served");
    assert!(errors(&missing, "get", "credentials").await >= 1.0);
    assert_eq!(fake.log().len(), 3);
}

/// A sidecar whose secrets dir has `redis-ca/ca.crt` = `pem`, if any.
fn with_ca_file(policy: &str, pem: Option<&str>) -> Sidecar {
    let mut sc = Sidecar::unstarted(policy, &[]);
    if let Some(pem) = pem {
        let d = sc.secrets_dir().join("redis-ca");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca.crt"), pem).unwrap();
    }
    sc.spawn();
    sc
}

#[tokio::test]
async fn rediss_with_a_private_ca_hits_and_without_it_the_handshake_is_refused() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let Some(redis) = Redis::start(RedisOptions {
        tls: Some(RedisTls {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
            ca_pem: ca.pem(),
        }),
        ..Default::default()
    }) else {
        return;
    };
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let tls = ", tls: {caSecret: {name: redis-ca, key: ca.crt}}";
    let p = policy(&fake, &redis_cache(&redis, tls), "");

    // The CA from the secrets dir: the server is trusted, entries shared.
    let a = with_ca_file(&p, Some(&ca.pem()));
    let first = chat(&a, CHAT).await;
    assert_eq!(cache(&first), "miss");
    eventually("the entry in Redis over TLS", async || {
        keys(&redis).len() == 1
    })
    .await;
    let b = with_ca_file(&p, Some(&ca.pem()));
    let hit = chat(&b, CHAT).await;
    assert_eq!(cache(&hit), "hit");
    assert_eq!(hit.body, first.body);
    assert_eq!(fake.log().len(), 1);
    assert_eq!(errors(&a, "get", "tls").await, 0.0);
    assert_eq!(errors(&b, "get", "tls").await, 0.0);

    // System roots only: the handshake is refused, a miss, served.
    let plain = Sidecar::start(&policy(&fake, &redis_cache(&redis, ""), ""));
    let r = chat(&plain, CHAT).await;
    assert_eq!(cache(&r), "miss", "not trusted: a miss");
    assert_ne!(r.body, first.body, "a new answer, not the stored one");
    assert_eq!(fake.log().len(), 2, "served by the provider");
    assert!(errors(&plain, "get", "tls").await >= 1.0);
    eventually("the refused store counted", async || {
        errors(&plain, "put", "tls").await >= 1.0
    })
    .await;

    // Another CA's certificate: refused the same way.
    let other = TestCa::new();
    let wrong = with_ca_file(&p, Some(&other.pem()));
    assert_eq!(cache(&chat(&wrong, CHAT).await), "miss");
    assert!(errors(&wrong, "get", "tls").await >= 1.0);

    // A CA file with no certificate in it: the backend is unusable.
    let broken = with_ca_file(&p, Some("not a certificate\n"));
    assert_eq!(cache(&chat(&broken, CHAT).await), "miss");
    assert!(errors(&broken, "get", "credentials").await >= 1.0);
    assert_eq!(fake.log().len(), 4, "every miss went to the provider");
    assert_eq!(keys(&redis).len(), 1, "only the trusted sidecar stored");
}
