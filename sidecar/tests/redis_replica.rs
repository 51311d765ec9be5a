//! The semantic cache's replication primitive
//! (`response_cache::redis::replica`) with two clients — two "sidecars" —
//! against a real `redis-server` (skipped without it unless
//! `TOKENWARDEN_REQUIRE_SERVICES=1`): what one publishes the other receives,
//! after a warm-up of what existed; the log is capped; a tail that fell
//! behind a trimmed log warms up again; a Redis restart is survived; one
//! policy's entries never reach another's tail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tokenwarden_core::response_cache::RedisConfig;
use tokenwarden_sidecar::{
    metrics::CacheErrors,
    response_cache::redis::replica::{Replicated, SemanticEntry, SemanticLog, Tail},
};
use tokenwarden_tests::redis::{Redis, RedisOptions};

fn cfg(r: &Redis) -> RedisConfig {
    RedisConfig {
        url: r.url(),
        credentials: None,
        timeout_ms: 500,
        key_prefix: "tw".into(),
        password: None,
        username: None,
        tls_ca: None,
        ca_pem: None,
        credentials_error: None,
    }
}

fn log(r: &Redis, policy: &str, max_len: usize) -> SemanticLog {
    SemanticLog::new(
        &cfg(r),
        "team",
        policy,
        None,
        max_len,
        CacheErrors::default(),
    )
    .unwrap()
}

fn entry(id: &str, bytes: &str) -> SemanticEntry {
    SemanticEntry {
        id: id.into(),
        bytes: bytes::Bytes::copy_from_slice(bytes.as_bytes()),
    }
}

async fn next(t: &mut Tail) -> Replicated {
    tokio::time::timeout(Duration::from_secs(10), t.rx.recv())
        .await
        .expect("a replicated entry within 10 s")
        .expect("the tail runs")
}

async fn quiet(t: &mut Tail) {
    assert!(
        tokio::time::timeout(Duration::from_millis(400), t.rx.recv())
            .await
            .is_err(),
        "nothing more"
    );
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn what_one_sidecar_publishes_the_other_receives() {
    let Some(redis) = Redis::start(RedisOptions::default()) else {
        return;
    };
    let a = log(&redis, "faq", 1000);
    let b = log(&redis, "faq", 1000);
    a.publish("e1", b"\x00one", HOUR).await.unwrap();
    a.publish("e2", b"two", HOUR).await.unwrap();

    // B starts after two publishes: a warm-up with both, then new ones.
    let mut tb = b.tail(Duration::from_millis(300)).unwrap();
    let Replicated::Snapshot(mut warm) = next(&mut tb).await else {
        panic!("a snapshot first");
    };
    warm.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(warm, vec![entry("e1", "\0one"), entry("e2", "two")]);
    a.publish("e3", b"three", HOUR).await.unwrap();
    assert_eq!(next(&mut tb).await, Replicated::Added(entry("e3", "three")));
    // A tails too and receives B's entries (and its own: dedupe by id).
    let mut ta = a.tail(Duration::from_millis(300)).unwrap();
    assert!(matches!(next(&mut ta).await, Replicated::Snapshot(s) if s.len() == 3));
    b.publish("e4", b"four", HOUR).await.unwrap();
    assert_eq!(next(&mut ta).await, Replicated::Added(entry("e4", "four")));
    assert_eq!(next(&mut tb).await, Replicated::Added(entry("e4", "four")));
    quiet(&mut tb).await;

    // Keys: the entry with its TTL, the log without one.
    let pttl: i64 = redis
        .cli(&["PTTL", "tw:team:faq:s:e4"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((3_500_000..=3_600_000).contains(&pttl), "{pttl}");
    assert_eq!(
        redis.cli(&["TTL", "tw:team:faq:slog"]).unwrap().trim(),
        "-1"
    );
    assert_eq!(
        redis.cli(&["XLEN", "tw:team:faq:slog"]).unwrap().trim(),
        "4"
    );

    // Another policy's tail sees none of it.
    let other = log(&redis, "other", 1000);
    let mut to = other.tail(Duration::from_millis(300)).unwrap();
    assert_eq!(next(&mut to).await, Replicated::Snapshot(vec![]));
    a.publish("e5", b"five", HOUR).await.unwrap();
    quiet(&mut to).await;
}

#[tokio::test]
async fn the_log_is_capped_and_a_new_tail_warms_up_with_every_live_entry() {
    let Some(redis) = Redis::start(RedisOptions::default()) else {
        return;
    };
    let a = log(&redis, "faq", 10);
    let b = log(&redis, "faq", 10);
    a.publish("first", b"1", HOUR).await.unwrap();
    let mut tb = b.tail(Duration::from_millis(200)).unwrap();
    assert!(matches!(next(&mut tb).await, Replicated::Snapshot(s) if s.len() == 1));
    assert_eq!(
        next_after_publish(&a, &mut tb, "second").await,
        entry("second", "x")
    );
    // B goes away; A publishes far more than the log keeps.
    drop(tb);
    for i in 0..300 {
        a.publish(&format!("bulk{i:03}"), b"b", HOUR).await.unwrap();
    }
    let xlen: usize = redis
        .cli(&["XLEN", "tw:team:faq:slog"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(xlen < 300, "the log is capped ({xlen})");
    // A fresh tail warms up with every live entry, trimmed records included.
    let mut tb = b.tail(Duration::from_millis(200)).unwrap();
    let Replicated::Snapshot(s) = next(&mut tb).await else {
        panic!("a snapshot");
    };
    assert_eq!(
        s.len(),
        302,
        "every entry, not only the {xlen} still logged"
    );
}

async fn next_after_publish(a: &SemanticLog, t: &mut Tail, id: &str) -> SemanticEntry {
    a.publish(id, b"x", HOUR).await.unwrap();
    match next(t).await {
        Replicated::Added(e) => e,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_running_tail_that_fell_behind_the_trim_or_a_restart_warms_up_again() {
    let Some(mut redis) = Redis::start(RedisOptions::default()) else {
        return;
    };
    let a = log(&redis, "faq", 10);
    let b = log(&redis, "faq", 10);
    a.publish("seed", b"s", HOUR).await.unwrap();
    let mut tb = b.tail(Duration::from_millis(200)).unwrap();
    assert!(matches!(next(&mut tb).await, Replicated::Snapshot(s) if s.len() == 1));
    assert_eq!(next_after_publish(&a, &mut tb, "one").await.id, "one");

    // In one transaction (the running tail cannot read in between): two
    // entries, then a trim that drops the first's record and everything
    // the tail had read. The tail must not just deliver "kept": "lost" is
    // alive but its record is gone, so it warms up again.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000;
    let () = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("tw:team:faq:s:lost")
        .arg("L")
        .arg("PX")
        .arg(3_600_000)
        .ignore()
        .cmd("XADD")
        .arg("tw:team:faq:slog")
        .arg(format!("{now_ms}-0"))
        .arg("id")
        .arg("lost")
        .ignore()
        .cmd("SET")
        .arg("tw:team:faq:s:kept")
        .arg("K")
        .arg("PX")
        .arg(3_600_000)
        .ignore()
        .cmd("XADD")
        .arg("tw:team:faq:slog")
        .arg(format!("{now_ms}-1"))
        .arg("id")
        .arg("kept")
        .ignore()
        .cmd("XTRIM")
        .arg("tw:team:faq:slog")
        .arg("MINID")
        .arg(format!("{now_ms}-1"))
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let Replicated::Snapshot(mut s) = next(&mut tb).await else {
        panic!("a warm-up, not a silent gap");
    };
    s.sort_by(|x, y| x.id.cmp(&y.id));
    let ids: Vec<&str> = s.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["kept", "lost", "one", "seed"]);

    // A restart (empty, no persistence): the tail warms up with nothing,
    // then follows again.
    redis.restart();
    loop {
        if let Replicated::Snapshot(s) = next(&mut tb).await {
            assert_eq!(s, vec![]);
            break;
        }
    }
    // A's first publish after the restart may fail (its connection was
    // reset: counted, the entry stays local); it reconnects.
    let mut published = false;
    for _ in 0..50 {
        if a.publish("after", b"A", HOUR).await.is_ok() {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published);
    assert_eq!(next(&mut tb).await, Replicated::Added(entry("after", "A")));
}
