//! The exact response cache on Redis, black-box: real sidecar binaries, the
//! fake provider and a real `redis-server` (tests/src/redis.rs; skipped
//! without it unless `TOKENWARDEN_REQUIRE_SERVICES=1`). Asserts: a fill
//! through one sidecar is a hit through another (same bytes, $0, the ledger's
//! saved dollars); the key layout and PX TTL in Redis; a Redis stopped,
//! restarted, hung (SIGSTOP) or full (`maxmemory` + `noeviction`) never
//! fails a request and is counted in `tokenwarden_response_cache_errors_total`;
//! credentials from the secrets dir, right and wrong.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokenwarden_tests::redis::{Redis, RedisOptions};

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
