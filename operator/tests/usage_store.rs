//! The usage store against a real PostgreSQL (the tests crate's harness):
//! exactly once under resends, migrations (idempotent, concurrent
//! replicas), partitions for late records and retention, the views'
//! numbers to the pico-dollar, and the `history` subcommand's output.
//! Each test skips (saying so) when the server binaries are missing,
//! unless `TOKENWARDEN_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jiff::{Timestamp, ToSpan as _};
use tokenwarden_core::{
    classify::Features,
    money::Usd,
    tokens::TokenCounts,
    usage::{BudgetPeriodRef, ReplayFacts, UsageRecord, cache::CacheFigures},
    workload::{Endpoint, ObjectRef},
};
use tokenwarden_operator::usage_store::{
    PgStore, UsageRow, UsageSink as _, UsageStoreConfig, Written, migrations,
    pg::{self, drop_expired, ensure_month, months},
    year_month,
};
use tokenwarden_tests::postgres::Postgres;
use tokio_postgres::Client;

const PICOS_PER_USD: i128 = 1_000_000_000_000;

fn store(pg: &Postgres, retention_months: u32) -> PgStore {
    PgStore::new(&UsageStoreConfig {
        url: pg.url(),
        retention_months,
        max_backlog: 1000,
    })
    .unwrap()
}

async fn client(pg: &Postgres) -> Client {
    pg::connect(&pg::parse_url(&pg.url()).unwrap())
        .await
        .unwrap()
}

/// Record `seq` of `sidecar`: `input`/`output` tokens of `model`, costing
/// `cost_picos`, at `ts`, counted in budget `team/cap`'s period.
fn row(sidecar: &str, workload: &str, seq: u64, model: &str, ts: Timestamp) -> UsageRow {
    UsageRow {
        sidecar_id: sidecar.into(),
        namespace: "team".into(),
        workload: workload.into(),
        pod: format!("{workload}-7d9f-{sidecar}"),
        record: UsageRecord {
            seq,
            ts,
            endpoint: Endpoint::ChatCompletions,
            requested_model: "gpt-5".into(),
            served_model: model.into(),
            provider: "openai".into(),
            route: Some("cheap-first".into()),
            score: Some(42),
            reason: None,
            attempt: 1,
            status: 200,
            usage: TokenCounts {
                input_tokens: 100,
                output_tokens: 10,
                cache_read_tokens: 50,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
            },
            cost: Some(Usd::from_picos(1_250_000 * i128::from(seq % 3 + 1))),
            estimated: seq.is_multiple_of(5),
            budgets: vec![BudgetPeriodRef {
                budget: ObjectRef::new("team", "cap"),
                period_start: "2026-12-01T00:00:00Z".parse().unwrap(),
                key: None,
            }],
            cache: CacheFigures {
                saved: Usd::from_picos(7_000),
                response_hit: seq == 5,
                response_saved: Usd::from_picos(if seq == 5 { 9_000 } else { 0 }),
                response_similarity: if seq == 5 { 9_731 } else { 0 },
                embedding: seq == 6,
                embedding_cost: Usd::from_picos(if seq == 6 { 400 } else { 0 }),
                ..CacheFigures::default()
            },
            intent: None,
            // Record 3 carries replay facts; the others are as an older
            // sidecar sends them.
            replay: (seq == 3).then(|| {
                Box::new(ReplayFacts {
                    request: 2,
                    prompt_estimate: 1_234,
                    tools_present: true,
                    features: Some(Features {
                        prompt_bytes: 4_000,
                        code_blocks: 2,
                        conversation_turns: 3,
                        ..Features::default()
                    }),
                    tier: Some("oa-standard".into()),
                    adjusted: vec!["escalated:refusal".into()],
                    headers: vec![("x-team".into(), "search".into())],
                })
            }),
        },
    }
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn every_record_is_written_once_however_often_it_is_resent() {
    let Some(pg) = Postgres::start() else { return };
    let s = store(&pg, 0);
    let now = Timestamp::now();
    let first: Vec<UsageRow> = (1..=100)
        .map(|q| row("sc-a", "search", q, "m", now))
        .collect();
    assert_eq!(
        s.write(&first).await.unwrap(),
        Written {
            inserted: 100,
            duplicate: 0,
            expired: 0
        }
    );
    // A reconnecting sidecar resends 50..=100 and sends 101..=150; another
    // sidecar uses the same seqs (its own key).
    let mut again: Vec<UsageRow> = (50..=150)
        .map(|q| row("sc-a", "search", q, "m", now))
        .collect();
    again.extend((1..=10).map(|q| row("sc-b", "search", q, "m", now)));
    assert_eq!(
        s.write(&again).await.unwrap(),
        Written {
            inserted: 60,
            duplicate: 51,
            expired: 0
        }
    );
    // The same batch twice in one write (a resend racing its original).
    let twice = vec![
        row("sc-c", "search", 1, "m", now),
        row("sc-c", "search", 1, "m", now),
    ];
    assert_eq!(s.write(&twice).await.unwrap().inserted, 1);
    let c = client(&pg).await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM tokenwarden.usage").await,
        161
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM (SELECT sidecar_id, seq FROM tokenwarden.usage \
             GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        .await,
        0
    );
    // Every column, as written.
    let r = c
        .query_one(
            "SELECT namespace, workload, pod, endpoint, provider, requested_model, served_model, \
             route, score, attempt, status, input_tokens, output_tokens, cache_read_tokens, \
             cache_write_tokens, cost_pusd, estimated, cache_hit, cache_saved_pusd, \
             budgets::text, ts = $1, ingested_at >= $1, response_cache_hit, \
             response_cache_saved_pusd, response_cache_similarity \
             FROM tokenwarden.usage WHERE sidecar_id = 'sc-a' AND seq = 5",
            &[&now],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, &str>(0), "team");
    assert_eq!(r.get::<_, &str>(1), "search");
    assert_eq!(r.get::<_, &str>(2), "search-7d9f-sc-a");
    assert_eq!(r.get::<_, &str>(3), "chatCompletions");
    assert_eq!(r.get::<_, &str>(4), "openai");
    assert_eq!(r.get::<_, &str>(5), "gpt-5");
    assert_eq!(r.get::<_, &str>(6), "m");
    assert_eq!(r.get::<_, Option<&str>>(7), Some("cheap-first"));
    assert_eq!(r.get::<_, Option<i32>>(8), Some(42));
    assert_eq!((r.get::<_, i32>(9), r.get::<_, i32>(10)), (1, 200));
    assert_eq!(
        [r.get::<_, i64>(11), r.get(12), r.get(13), r.get(14)],
        [100, 10, 50, 0]
    );
    assert_eq!(r.get::<_, Option<i64>>(15), Some(3_750_000));
    assert!(r.get::<_, bool>(16), "seq 5 is estimated");
    assert!(r.get::<_, bool>(17), "cache reads: a prompt-cache hit");
    assert_eq!(r.get::<_, i64>(18), 7_000);
    assert_eq!(
        r.get::<_, &str>(19),
        r#"[{"name": "cap", "namespace": "team", "periodStart": "2026-12-01T00:00:00Z"}]"#
    );
    assert!(r.get::<_, bool>(20), "request time kept");
    assert!(r.get::<_, bool>(21), "ingest time set by the database");
    assert!(r.get::<_, bool>(22), "answered by the response cache");
    assert_eq!(
        r.get::<_, i64>(23),
        9_000,
        "what the response-cache hit saved"
    );
    assert_eq!(r.get::<_, i32>(24), 9_731, "a semantic hit's similarity");
    let e = c
        .query_one(
            "SELECT cache_embedding, cache_embedding_cost_pusd, response_cache_similarity \
             FROM tokenwarden.usage WHERE sidecar_id = 'sc-a' AND seq = 6",
            &[],
        )
        .await
        .unwrap();
    assert!(e.get::<_, bool>(0), "the semantic cache's embedding call");
    assert_eq!((e.get::<_, i64>(1), e.get::<_, i32>(2)), (400, 0));
    // The replay facts, column by column; a record without them has NULLs.
    let q = "SELECT request_id, prompt_estimate, tools_present, features::text, tier, \
             adjusted, route_headers::text FROM tokenwarden.usage \
             WHERE sidecar_id = 'sc-a' AND seq = $1";
    let r = c.query_one(q, &[&3i64]).await.unwrap();
    assert_eq!(
        r.get::<_, Option<i64>>(0),
        Some(2),
        "the request's first seq"
    );
    assert_eq!(r.get::<_, Option<i64>>(1), Some(1_234));
    assert_eq!(r.get::<_, Option<bool>>(2), Some(true));
    let features: serde_json::Value = serde_json::from_str(&r.get::<_, String>(3)).unwrap();
    assert_eq!(
        serde_json::from_value::<Features>(features).unwrap(),
        Features {
            prompt_bytes: 4_000,
            code_blocks: 2,
            conversation_turns: 3,
            ..Features::default()
        }
    );
    assert_eq!(
        r.get::<_, Option<String>>(4).as_deref(),
        Some("oa-standard")
    );
    assert_eq!(
        r.get::<_, Option<Vec<String>>>(5),
        Some(vec!["escalated:refusal".to_string()])
    );
    assert_eq!(r.get::<_, String>(6), r#"[["x-team", "search"]]"#);
    let old = c.query_one(q, &[&4i64]).await.unwrap();
    assert_eq!(old.get::<_, Option<i64>>(0), None);
    assert_eq!(old.get::<_, Option<String>>(3), None);
    assert_eq!(old.get::<_, Option<Vec<String>>>(5), None);
}

#[tokio::test]
async fn migrations_are_idempotent_and_concurrent_replicas_apply_them_once() {
    let Some(pg) = Postgres::start() else { return };
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = pg.url();
        tasks.push(tokio::spawn(async move {
            let mut c = pg::connect(&pg::parse_url(&url).unwrap()).await.unwrap();
            migrations::apply(&mut c).await.unwrap()
        }));
    }
    let mut applied = Vec::new();
    for t in tasks {
        applied.extend(t.await.unwrap());
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        vec![1, 2, 3, 4, 5],
        "each migration applied exactly once"
    );
    let mut c = client(&pg).await;
    assert!(migrations::apply(&mut c).await.unwrap().is_empty());
    let rows = c
        .query(
            "SELECT version, name FROM tokenwarden.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            (1, "usage".into()),
            (2, "views".into()),
            (3, "response_cache".into()),
            (4, "semantic_cache".into()),
            (5, "replay".into())
        ]
    );
    // Replicas making the same month's partition at once: one makes it.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = pg.url();
        tasks.push(tokio::spawn(async move {
            let mut c = pg::connect(&pg::parse_url(&url).unwrap()).await.unwrap();
            ensure_month(&mut c, 2031, 7).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(months(&c).await.unwrap(), vec![(2031, 7)]);
    // A database migrated by a newer operator is refused, not scribbled on.
    c.execute(
        "INSERT INTO tokenwarden.schema_migrations (version, name) VALUES (99, 'future')",
        &[],
    )
    .await
    .unwrap();
    let e = migrations::apply(&mut c).await.unwrap_err().to_string();
    assert!(
        e.contains("version 99, newer than this operator's 5"),
        "{e}"
    );
}

#[tokio::test]
async fn late_records_get_their_month_and_months_past_the_retention_are_dropped() {
    let Some(pg) = Postgres::start() else { return };
    let now = Timestamp::now();
    let (y, m) = year_month(now);
    let month = |back: i8| tokenwarden_operator::usage_store::month_of(y, m - back);
    let s = store(&pg, 2);
    // This month, a record 1 month late, one 2 months late (kept: the
    // current month and 2 before it), one 3 months old (expired).
    let rows = vec![
        row("sc-a", "search", 1, "m", now),
        row("sc-a", "search", 2, "m", month(1) + 1.hour()),
        row("sc-a", "search", 3, "m", month(2)),
        row("sc-a", "search", 4, "m", month(3) + 1.hour()),
    ];
    assert_eq!(
        s.write(&rows).await.unwrap(),
        Written {
            inserted: 3,
            duplicate: 0,
            expired: 1
        }
    );
    let mut c = client(&pg).await;
    let ym = |back: i8| year_month(month(back));
    let next = year_month(tokenwarden_operator::usage_store::month_of(y, m + 1));
    assert_eq!(
        months(&c).await.unwrap(),
        vec![ym(2), ym(1), ym(0), next],
        "the months rows fell in, and the next one ahead"
    );
    // A partition of 4 months ago (written before the retention was
    // shortened) goes at the next retention pass; nothing else does.
    let (oy, om) = ym(4);
    ensure_month(&mut c, oy, om).await.unwrap();
    c.execute(
        &format!(
            "INSERT INTO tokenwarden.{} (sidecar_id, seq, ts, namespace, workload, pod, endpoint, \
             provider, requested_model, served_model, attempt, status, input_tokens, output_tokens, \
             cache_read_tokens, cache_write_tokens, estimated) VALUES \
             ('old', 1, $1, 'team', 'w', 'p', 'responses', 'openai', 'x', 'x', 1, 200, 1, 1, 0, 0, false)",
            pg::partition_name(oy, om)
        ),
        &[&(month(4) + 1.hour())],
    )
    .await
    .unwrap();
    assert_eq!(
        drop_expired(&mut c, 2, now).await.unwrap(),
        vec![ym(4)],
        "only the month past the retention"
    );
    assert_eq!(months(&c).await.unwrap(), vec![ym(2), ym(1), ym(0), next]);
    assert_eq!(count(&c, "SELECT count(*) FROM tokenwarden.usage").await, 3);
    // Retention 0 keeps everything.
    assert!(drop_expired(&mut c, 0, now).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_views_sum_exact_cost_by_day_namespace_workload_model_and_budget_period() {
    let Some(pg) = Postgres::start() else { return };
    let s = store(&pg, 0);
    let day1: Timestamp = "2026-11-30T23:59:59Z".parse().unwrap();
    let day2: Timestamp = "2026-12-01T00:00:01Z".parse().unwrap();
    let mut rows = Vec::new();
    // search: 3 records on day 1 on model a (1.25, 2.5, 3.75 µUSD: seq%3+1).
    for q in 1..=3 {
        rows.push(row("sc-a", "search", q, "model-a", day1));
    }
    // chat: 2 records on day 2 on model b, one unpriced.
    rows.push(row("sc-b", "chat", 1, "model-b", day2));
    let mut unpriced = row("sc-b", "chat", 2, "model-b", day2);
    unpriced.record.cost = None;
    rows.push(unpriced);
    s.write(&rows).await.unwrap();
    let c = client(&pg).await;
    let q = |sql: &str| {
        let c = &c;
        let sql = sql.to_string();
        async move {
            c.query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.get::<_, String>(i))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        q(
            "SELECT day::text, namespace, requests::text, input_tokens::text, cost_pusd::text, \
           cost_usd::text, unpriced_requests::text, estimated_requests::text \
           FROM tokenwarden.daily_cost_by_namespace ORDER BY day"
        )
        .await,
        vec![
            "2026-11-30 team 3 300 7500000 0.000007500000 0 0",
            "2026-12-01 team 2 200 2500000 0.000002500000 1 0",
        ]
    );
    assert_eq!(
        q(
            "SELECT day::text, workload, requests::text, output_tokens::text, \
           cache_read_tokens::text, cost_pusd::text \
           FROM tokenwarden.daily_cost_by_workload ORDER BY day, workload"
        )
        .await,
        vec![
            "2026-11-30 search 3 30 150 7500000",
            "2026-12-01 chat 2 20 100 2500000"
        ]
    );
    assert_eq!(
        q(
            "SELECT day::text, provider, model, requests::text, cost_pusd::text, \
           cache_saved_usd::text FROM tokenwarden.daily_cost_by_model ORDER BY day, model"
        )
        .await,
        vec![
            "2026-11-30 openai model-a 3 7500000 0.000000021000",
            "2026-12-01 openai model-b 2 2500000 0.000000014000",
        ]
    );
    assert_eq!(
        q(
            "SELECT budget_namespace, budget_name, period_start::text, requests::text, \
           cost_pusd::text FROM tokenwarden.cost_by_budget_period"
        )
        .await,
        vec!["team cap 2026-12-01 00:00:00+00 5 10000000"]
    );
    // The history subcommand prints the same numbers, in USD.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-operator"))
        .args([
            "history",
            "--usage-store-url",
            &pg.url_with_password("never-printed-pw"),
            "--since",
            "2026-11-01",
            "--by",
            "workload",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "DAY         WORKLOAD     REQUESTS  INPUT  OUTPUT  CACHE_READ  CACHE_WRITE  COST_USD\n\
         2026-11-30  team/search  3         300    30      150         0            0.0000075\n\
         2026-12-01  team/chat    2         200    20      100         0            0.0000025\n"
    );
    assert_eq!(PICOS_PER_USD / 1_000_000, 1_000_000, "a µUSD is 1e6 picos");
    // An unreachable store: an error that names where, without the password.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-operator"))
        .args([
            "history",
            "--usage-store-url",
            "postgres://tw:never-printed-pw@127.0.0.1:1/usage",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("postgres://127.0.0.1:1/usage"), "{err}");
    assert!(!err.contains("never-printed-pw"), "{err}");
}
