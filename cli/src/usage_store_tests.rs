//! Tests of `what-if --usage-store` against a real PostgreSQL (the tests
//! crate's harness), with rows written by the operator's own usage store
//! code: the same what-if as over a state dir holding the same records,
//! replay facts round-tripped, `--since`/`--until` in the SQL (partitions
//! pruned), every workload with `-A`, the read grant and a wrong password.
//! Each test skips (saying so) when the server binaries are missing,
//! unless `TOKENWARDEN_REQUIRE_SERVICES=1`.

use pretty_assertions::assert_eq;
use tokenwarden_core::{
    classify::{ClassifierConfig, Features, classify_features},
    money::Usd,
    tokens::TokenCounts,
    usage::{BudgetPeriodRef, ReplayFacts, UsageRecord},
    whatif::reprice::Repricer,
    workload::{Endpoint, ObjectRef},
};
use tokenwarden_durable::Journal;
use tokenwarden_operator::usage_store::{PgStore, UsageRow, UsageSink as _, UsageStoreConfig};
use tokenwarden_tests::postgres::Postgres;

use super::*;
use crate::{
    Global,
    output::Format,
    whatif::{Args, StoreUrl},
};

const POLICY: &str = r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: { name: agent, namespace: agents }
spec:
  workloadSelector: { matchLabels: { app: agent } }
  providers:
    - name: anthropic
      api: anthropic
      baseUrl: https://api.anthropic.com
      apiKeySecretRef: { name: llm-keys, key: anthropic }
  tiers:
    - { name: cheap, provider: anthropic, model: claude-haiku-4-5 }
    - { name: standard, provider: anthropic, model: claude-sonnet-4-5 }
  routes:
    - name: search
      match: { headers: [{ name: x-team, value: search }] }
      target: { tier: cheap }
    - name: hard
      match: { apis: [Messages], complexityClass: Hard }
      target: { tier: standard }
    - name: default
      target: { tier: cheap }
  classifier:
    hardThreshold: 10
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: { name: daily, namespace: agents }
spec:
  workloadSelector: { matchLabels: { app: agent } }
  period: Daily
  timeZone: UTC
  limit: { usd: "0.05" }
"#;

fn global(output: Format, ns: Option<&str>, all: bool) -> Global {
    Global {
        kubeconfig: None,
        context: None,
        namespace: ns.map(str::to_string),
        all_namespaces: all,
        output,
    }
}

/// An attempt at `ts`, served by `served`, priced from the catalog; with
/// replay facts for `request` (when given: then scored from its features,
/// as the sidecar does, else `score`).
fn rec(ts: &str, served: &str, score: u16, input: u64, request: Option<u64>) -> UsageRecord {
    let features = Features {
        prompt_bytes: input * 4,
        code_blocks: u32::try_from(input % 3).unwrap(),
        conversation_turns: 3,
        ..Features::default()
    };
    let score = match request {
        Some(_) => classify_features(&ClassifierConfig::default(), &features).score,
        None => score,
    };
    let usage = TokenCounts {
        input_tokens: input,
        output_tokens: input / 10,
        cache_read_tokens: input / 4,
        cache_write_tokens: input / 8,
        cache_write_1h_tokens: input / 16,
    };
    UsageRecord {
        seq: 0,
        ts: ts.parse().unwrap(),
        endpoint: Endpoint::Messages,
        requested_model: "claude-opus-4-6".into(),
        served_model: served.into(),
        provider: "anthropic".into(),
        route: Some("default".into()),
        score: Some(score),
        reason: None,
        attempt: 1,
        status: 200,
        usage,
        cost: Repricer::new(vec![], vec![]).cost(Some("anthropic"), served, &usage),
        estimated: false,
        budgets: vec![BudgetPeriodRef {
            budget: ObjectRef::new("agents", "daily"),
            period_start: "2026-12-02T00:00:00Z".parse().unwrap(),
            key: Some("k-3f9a".into()),
        }],
        cache: Default::default(),
        intent: None,
        replay: request.map(|request| {
            Box::new(ReplayFacts {
                request,
                prompt_estimate: input,
                tools_present: input > 5_000,
                features: Some(features),
                tier: Some("cheap".into()),
                adjusted: if input == 7_000 {
                    vec!["escalated:refusal".into(), "fallback".into()]
                } else {
                    vec![]
                },
                headers: vec![(
                    "x-team".into(),
                    if input == 2_000 { "search" } else { "core" }.into(),
                )],
            })
        }),
    }
}

/// A workload's traffic on 2026-12-02: scored requests with facts, one
/// request with two attempts (an escalation), records without facts (an
/// older sidecar), an unpriced model, a response-cache hit.
fn traffic() -> Vec<UsageRecord> {
    let mut escalated = rec(
        "2026-12-02T11:00:02Z",
        "claude-sonnet-4-5",
        40,
        7_000,
        Some(5),
    );
    escalated.attempt = 2;
    let mut first = rec(
        "2026-12-02T11:00:01Z",
        "claude-haiku-4-5",
        40,
        7_000,
        Some(5),
    );
    first.status = 529;
    let mut hit = rec("2026-12-02T15:00:00Z", "claude-haiku-4-5", 5, 0, None);
    hit.attempt = 0;
    hit.cost = Some(Usd::ZERO);
    hit.cache.response_hit = true;
    hit.cache.response_saved = Usd::from_picos(12_345);
    hit.cache.response_similarity = 9_731;
    vec![
        rec(
            "2026-12-02T09:00:00Z",
            "claude-haiku-4-5",
            20,
            10_000,
            Some(1),
        ),
        rec(
            "2026-12-02T10:00:00Z",
            "claude-sonnet-4-5",
            50,
            20_000,
            Some(2),
        ),
        rec(
            "2026-12-02T10:30:00Z",
            "claude-haiku-4-5",
            5,
            2_000,
            Some(3),
        ),
        first,
        escalated,
        rec("2026-12-02T12:00:00Z", "claude-haiku-4-5", 8, 1_000, None),
        rec("2026-12-02T13:00:00Z", "my-finetune", 60, 3_000, Some(7)),
        rec("2026-12-02T14:00:00Z", "claude-sonnet-4-5", 70, 4_000, None),
        hit,
    ]
}

/// `records` through a sidecar journal in a fresh state dir (which gives
/// them their seqs and request ids); returns the dir and the records as
/// the journal holds them.
fn state_dir(records: Vec<UsageRecord>) -> (tempfile::TempDir, Vec<UsageRecord>) {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), false, true).unwrap();
    let out: Vec<UsageRecord> = records.into_iter().map(|r| j.append(r).unwrap()).collect();
    drop(j);
    (dir, out)
}

fn rows(ns: &str, workload: &str, sidecar: &str, records: &[UsageRecord]) -> Vec<UsageRow> {
    records
        .iter()
        .map(|r| UsageRow {
            sidecar_id: sidecar.into(),
            namespace: ns.into(),
            workload: workload.into(),
            pod: format!("{workload}-7d9f-{sidecar}"),
            record: r.clone(),
        })
        .collect()
}

/// The operator's store on `pg` (migrations applied), with `rows` written.
async fn store(pg: &Postgres, rows: &[UsageRow]) {
    let s = PgStore::new(&UsageStoreConfig {
        url: pg.url(),
        retention_months: 0,
        max_backlog: 10_000,
    })
    .unwrap();
    s.ready().await.unwrap();
    let w = s.write(rows).await.unwrap();
    assert_eq!(w.inserted, rows.len() as u64);
}

async fn all_rows(url: &str, f: &Filter) -> Vec<(String, String, Vec<StoredRecord>)> {
    rows_in_batches(url, f, BATCH_ROWS).await
}

async fn rows_in_batches(
    url: &str,
    f: &Filter,
    batch: i32,
) -> Vec<(String, String, Vec<StoredRecord>)> {
    let mut client = connect(&config(&StoreUrl(url.into())).unwrap())
        .await
        .unwrap();
    let mut out = Vec::new();
    for_each_workload_in(&mut client, f, batch, |ns, wl, recs| {
        out.push((ns.to_string(), wl.to_string(), recs));
        Ok(())
    })
    .await
    .unwrap();
    out
}

/// `what-if` as the command line dispatches it.
async fn run(g: &Global, a: &Args) -> anyhow::Result<String> {
    let a = crate::costs::WhatIfArgs {
        what_if: a.clone(),
        operator_namespace: "tokenwarden-system".into(),
    };
    crate::costs::what_if(g, &a).await
}

fn store_args(url: &str) -> Args {
    Args {
        usage_store: Some(StoreUrl(url.into())),
        workload: Some("agent".into()),
        labels: "app=agent".into(),
        ..Args::default()
    }
}

#[tokio::test]
async fn a_what_if_over_store_rows_is_byte_for_byte_the_state_dirs() {
    let Some(pg) = Postgres::start() else { return };
    let (dir, recorded) = state_dir(traffic());
    store(&pg, &rows("agents", "agent", "sc-1", &recorded)).await;
    let f = tempfile::tempdir().unwrap();
    let policy = f.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let prices = f.path().join("prices.yaml");
    std::fs::write(
        &prices,
        "prices:\n  - { model: my-finetune, inputPerMTok: \"1.50\", outputPerMTok: \"6\" }\n",
    )
    .unwrap();
    let variants: Vec<Box<dyn Fn(Args) -> Args>> = vec![
        Box::new(|a| a),
        Box::new(|a| Args {
            models: vec!["claude-sonnet-4-5=claude-haiku-4-5".into()],
            prices: Some(prices.clone()),
            ..a
        }),
        Box::new(|a| Args {
            policy: Some(policy.clone()),
            ..a
        }),
        Box::new(|a| Args {
            policy: Some(policy.clone()),
            enforce_budgets: true,
            since: Some("2026-12-02T10:00:00Z".parse().unwrap()),
            until: Some("2026-12-02T14:00:00Z".parse().unwrap()),
            ..a
        }),
        Box::new(|a| Args {
            budgets: Some(policy.clone()),
            output_ratio: crate::whatif::OutputRatio::Unchanged,
            ..a
        }),
    ];
    let g = global(Format::Json, Some("agents"), false);
    let origin = format!("usage store {} (workload agents/agent)", {
        target(&config(&StoreUrl(pg.url())).unwrap())
    });
    let dir_origin = dir.path().display().to_string();
    for (i, v) in variants.iter().enumerate() {
        let from_dir = run(
            &g,
            &v(Args {
                state_dir: Some(dir.path().to_path_buf()),
                usage_store: None,
                ..store_args("")
            }),
        )
        .await
        .unwrap();
        let from_store = run(
            &g,
            &v(Args {
                usage_store: Some(StoreUrl(pg.url())),
                ..store_args("")
            }),
        )
        .await
        .unwrap();
        assert!(from_store.contains(&origin), "{from_store}");
        assert_eq!(
            from_store.replace(&origin, "ORIGIN"),
            from_dir.replace(&dir_origin, "ORIGIN"),
            "variant {i}"
        );
        // The text and CSV agree too.
        for fmt in [Format::Csv, Format::Table] {
            let g = global(fmt, Some("agents"), false);
            let a = v(store_args(&pg.url()));
            let d = v(Args {
                state_dir: Some(dir.path().to_path_buf()),
                usage_store: None,
                ..store_args("")
            });
            let (s, d) = (run(&g, &a).await.unwrap(), run(&g, &d).await.unwrap());
            assert_eq!(
                s.replace(&origin, "ORIGIN"),
                d.replace(&dir_origin, "ORIGIN")
            );
        }
    }
    // The re-routing replay moved requests and refused none silently.
    let a = Args {
        policy: Some(policy.clone()),
        ..store_args(&pg.url())
    };
    let out = run(&global(Format::Table, Some("agents"), false), &a)
        .await
        .unwrap();
    assert!(
        out.starts_with(&format!("what-if over {origin}: per-request records")),
        "{out}"
    );
    assert!(
        out.contains("1 requests answered by the response cache"),
        "{out}"
    );
}

#[tokio::test]
async fn replay_facts_and_every_column_round_trip_and_request_ids_stay_per_sidecar() {
    let Some(pg) = Postgres::start() else { return };
    let (_dir, recorded) = state_dir(traffic());
    // A second pod of the same workload, with the same seqs and request ids.
    let mut all = rows("agents", "agent", "sc-1", &recorded);
    all.extend(rows("agents", "agent", "sc-2", &recorded));
    all.extend(rows("other", "bot", "sc-3", &recorded[..2]));
    store(&pg, &all).await;
    let got = all_rows(&pg.url(), &Filter::default()).await;
    let names: Vec<(&str, &str, usize)> = got
        .iter()
        .map(|(n, w, r)| (n.as_str(), w.as_str(), r.len()))
        .collect();
    assert_eq!(names, [("agents", "agent", 18), ("other", "bot", 2)]);
    // Batches that end mid-workload, exactly at the end, or hold one row
    // give the same workloads and records.
    for batch in [1, 3, 18, 20] {
        assert_eq!(
            rows_in_batches(&pg.url(), &Filter::default(), batch).await,
            got,
            "batch {batch}"
        );
    }
    let sc1: Vec<&UsageRecord> = got[0]
        .2
        .iter()
        .filter(|s| s.sidecar_id == "sc-1")
        .map(|s| &s.record)
        .collect();
    // In time order, exactly as recorded (the escalation's attempts included).
    let expect: Vec<&UsageRecord> = recorded.iter().collect();
    assert_eq!(sc1, expect);
    assert!(sc1[1].replay.as_ref().unwrap().features.is_some());
    assert_eq!(
        sc1[4].replay.as_ref().unwrap().adjusted,
        ["escalated:refusal", "fallback"]
    );
    assert_eq!(
        sc1[2].replay.as_ref().unwrap().headers,
        [("x-team".to_string(), "search".to_string())]
    );
    // The journal named the requests without facts by their seq? No: they
    // have no facts at all, and the store gives None.
    assert!(sc1[5].replay.is_none() && sc1[7].replay.is_none());
    assert_eq!(got[0].2[0].pod, "agent-7d9f-sc-1");
    // Two pods' request 5 are two requests, each with its two attempts.
    let records = replay_records(got[0].2.clone());
    let groups = tokenwarden_core::whatif::replay::group(&records);
    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    assert_eq!(sizes.iter().filter(|n| **n == 2).count(), 2, "{sizes:?}");
    assert_eq!(groups.len(), 16);
    // -A: one row set per workload, tagged namespace/workload.
    let a = Args {
        usage_store: Some(StoreUrl(pg.url())),
        ..Args::default()
    };
    let out = run(&global(Format::Csv, None, true), &a).await.unwrap();
    let tags: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        tags,
        [
            "agents/agent",
            "agents/agent",
            "agents/agent",
            "other/bot",
            "other/bot",
            "TOTAL"
        ],
        "{out}"
    );
    // The -A total is the sum of the per-workload runs.
    let total = |s: &str| {
        s.lines()
            .last()
            .unwrap()
            .split(',')
            .skip(1)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let one = |ns: &str, w: &str| {
        let a = Args {
            usage_store: Some(StoreUrl(pg.url())),
            workload: Some(w.into()),
            ..Args::default()
        };
        let g = global(Format::Csv, Some(ns), false);
        async move { run(&g, &a).await.unwrap() }
    };
    let (x, y) = (one("agents", "agent").await, one("other", "bot").await);
    let (x, y, all) = (total(&x), total(&y), total(&out));
    for i in [2, 3] {
        let n = |v: &Vec<String>| v[i].parse::<u64>().unwrap();
        assert_eq!(n(&all), n(&x) + n(&y), "column {i}: {out}");
    }
    for i in [10, 12] {
        let n = |v: &Vec<String>| v[i].parse::<Usd>().unwrap();
        assert_eq!(n(&all), n(&x) + n(&y), "column {i}: {out}");
    }
    let text = run(&global(Format::Table, None, true), &a).await.unwrap();
    assert!(
        text.starts_with(&format!(
            "what-if over usage store {} (every workload): per-request records (exact re-pricing, re-routing and budgets)\nevery workload, rows tagged namespace/workload, each replayed on its own: re-pricing only",
            target(&config(&StoreUrl(pg.url())).unwrap())
        )),
        "{text}"
    );
    // -A does not re-route: policies select pods by labels the store lacks.
    let e = run(
        &global(Format::Csv, None, true),
        &Args {
            policy: Some("p.yaml".into()),
            ..a
        },
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("-A re-prices only"), "{e}");
}

#[tokio::test]
async fn since_and_until_go_into_the_where_and_prune_months() {
    let Some(pg) = Postgres::start() else { return };
    let mut records = traffic();
    records.push(rec(
        "2026-11-30T23:59:59Z",
        "claude-haiku-4-5",
        9,
        1_500,
        Some(90),
    ));
    records.push(rec(
        "2027-01-01T00:00:00Z",
        "claude-haiku-4-5",
        9,
        2_500,
        Some(91),
    ));
    let (_dir, recorded) = state_dir(records);
    store(&pg, &rows("agents", "agent", "sc-1", &recorded)).await;
    let f = |since: Option<&str>, until: Option<&str>| Filter {
        workload: Some(("agents".into(), "agent".into())),
        since: since.map(|s| s.parse().unwrap()),
        until: until.map(|s| s.parse().unwrap()),
    };
    let count =
        |v: Vec<(String, String, Vec<StoredRecord>)>| v.iter().map(|w| w.2.len()).sum::<usize>();
    assert_eq!(count(all_rows(&pg.url(), &f(None, None)).await), 11);
    // [since, until): the instant at `until` is out, at `since` in.
    assert_eq!(
        count(
            all_rows(
                &pg.url(),
                &f(Some("2026-12-01T00:00:00Z"), Some("2027-01-01T00:00:00Z"))
            )
            .await
        ),
        9
    );
    assert_eq!(
        count(all_rows(&pg.url(), &f(Some("2026-12-02T11:00:01Z"), None)).await),
        7
    );
    assert_eq!(
        count(all_rows(&pg.url(), &f(None, Some("2026-12-02T11:00:01Z"))).await),
        4
    );
    // The plan scans December's partition only.
    let december = f(Some("2026-12-01T00:00:00Z"), Some("2027-01-01T00:00:00Z"));
    let (sql, params) = select(&december);
    let client = connect(&config(&StoreUrl(pg.url())).unwrap())
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN {sql}"), &params)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("usage_y2026m12"), "{plan}");
    assert!(
        !plan.contains("usage_y2026m11") && !plan.contains("usage_y2027m01"),
        "{plan}"
    );
    // Through the command: the JSON total counts the window's requests.
    let a = Args {
        since: Some("2026-12-01T00:00:00Z".parse().unwrap()),
        until: Some("2026-12-02T11:00:00Z".parse().unwrap()),
        ..store_args(&pg.url())
    };
    let out = run(&global(Format::Csv, Some("agents"), false), &a)
        .await
        .unwrap();
    let total: Vec<&str> = out.lines().last().unwrap().split(',').collect();
    assert_eq!(total[3], "3", "{out}");
}

/// Password authentication for the two roles (the harness trusts every
/// other login), reloaded; returns once a wrong password is refused.
async fn require_passwords(pg: &Postgres, roles: &[&str]) {
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "host all {} 127.0.0.1/32 scram-sha-256\n{old}",
            roles.join(",")
        ),
    )
    .unwrap();
    let admin = connect(&config(&StoreUrl(pg.url())).unwrap())
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    let probe = format!(
        "postgres://{}:nope@127.0.0.1:{}/postgres",
        roles[0],
        pg.port()
    );
    for _ in 0..100 {
        if connect(&config(&StoreUrl(probe.clone())).unwrap())
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pg_hba.conf was not reloaded");
}

#[tokio::test]
async fn the_documented_grant_suffices_and_a_wrong_password_is_clear_and_never_shown() {
    let Some(pg) = Postgres::start() else { return };
    let (_dir, recorded) = state_dir(traffic());
    store(&pg, &rows("agents", "agent", "sc-1", &recorded)).await;
    let admin = connect(&config(&StoreUrl(pg.url())).unwrap())
        .await
        .unwrap();
    // The grant docs/cost-foresight.md documents, and a role without it.
    admin
        .batch_execute(
            "CREATE ROLE tw_reader LOGIN PASSWORD 'r1ght-Pw'; \
             GRANT USAGE ON SCHEMA tokenwarden TO tw_reader; \
             GRANT SELECT ON tokenwarden.usage TO tw_reader; \
             CREATE ROLE tw_nogrant LOGIN PASSWORD 'n0-Grant';",
        )
        .await
        .unwrap();
    require_passwords(&pg, &["tw_reader", "tw_nogrant"]).await;
    let url =
        |user: &str, pw: &str| format!("postgres://{user}:{pw}@127.0.0.1:{}/postgres", pg.port());
    let g = global(Format::Json, Some("agents"), false);
    let ok = run(&g, &store_args(&url("tw_reader", "r1ght-Pw")))
        .await
        .unwrap();
    assert!(ok.contains("\"requests\": 7"), "{ok}");
    assert!(!ok.contains("r1ght-Pw"));
    let e = run(&g, &store_args(&url("tw_reader", "wr0ng-S3cret")))
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert_eq!(
        e,
        format!(
            "cannot connect to the usage store postgres://127.0.0.1:{}/postgres: password authentication failed for user \"tw_reader\" (SQLSTATE 28P01)",
            pg.port()
        )
    );
    let e = run(&g, &store_args(&url("tw_nogrant", "n0-Grant")))
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("permission denied for schema tokenwarden")
            && e.contains("SELECT on tokenwarden.usage")
            && !e.contains("n0-Grant"),
        "{e}"
    );
}

#[test]
fn the_url_is_never_shown_and_the_target_is_host_port_and_database() {
    let u: StoreUrl = "postgres://tw:s3cret@db.example:5433/usage?sslmode=disable"
        .parse()
        .unwrap();
    assert!(!format!("{u:?}").contains("s3cret"));
    assert_eq!(
        target(&config(&u).unwrap()),
        "postgres://db.example:5433/usage"
    );
    let kv = StoreUrl("host=db user=tw password=s3cret dbname=usage".into());
    assert_eq!(target(&config(&kv).unwrap()), "postgres://db/usage");
    let bad = StoreUrl("postgres://tw:s3cret@db:notaport/usage".into());
    let e = config(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with("--usage-store is not a valid") && !e.contains("s3cret"),
        "{e}"
    );
    let a = Args {
        usage_store: Some(u),
        ..Args::default()
    };
    assert!(!format!("{a:?}").contains("s3cret"));
}

#[tokio::test]
async fn one_workload_needs_a_namespace_and_a_name() {
    let a = store_args("postgres://127.0.0.1:1/x");
    let e = run(&global(Format::Json, None, false), &a)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("-n NAMESPACE --workload NAME"),
        "{e}"
    );
}
