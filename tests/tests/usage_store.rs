//! The usage store under fire: real sidecars push traffic through the
//! real operator (local mode) to the fake provider while the test
//! `kill -9`s the operator and PostgreSQL (each restarted on the same
//! state); afterwards `tokenwarden.usage` equals what the provider billed,
//! per model, to the token and the pico-dollar, with no (sidecar id, seq)
//! twice, the backlog is empty, and the operator never logged the
//! database password. Skips without PostgreSQL's server binaries unless
//! `TOKENWARDEN_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokenwarden_tests::{
    fake_provider::{FakeConfig, FakeProvider},
    operator::{Operator, Stderr},
    postgres::Postgres,
    probe::http_get,
    sidecar::SidecarProc,
};

const SECRET: &str = "usage-store-test-shared-secret-01";
const PASSWORD: &str = "pg-pass-never-logged-9f3";

fn objects(fake: &FakeProvider) -> String {
    format!(
        r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: load, namespace: team}}
spec:
  workloadSelector: {{matchLabels: {{app: load}}}}
  providers:
    - name: openai
      api: openai
      baseUrl: "{base}"
      apiKeySecretRef: {{name: provider-keys, key: openai}}
      prices:
        - {{model: tw-test, inputPerMTok: "1", outputPerMTok: "10"}}
        - {{model: tw-cheap, inputPerMTok: "0.1", outputPerMTok: "1"}}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: cap, namespace: team}}
spec:
  workloadSelector: {{matchLabels: {{app: load}}}}
  period: Daily
  limit: {{usd: "1000"}}
"#,
        base = fake.base_url()
    )
}

/// Per model: (requests, uncached input, output, cost in pico-USD), as the
/// provider billed it and the policy prices it (nano-USD per MTok / 1000
/// = pico-USD per token, rounded up per token kind, as the sidecar does).
type PerModel = BTreeMap<String, (i64, i64, i64, i64)>;

fn billed(fake: &FakeProvider) -> PerModel {
    let mut out = PerModel::new();
    for r in fake.log() {
        let Some(u) = r.usage else { continue };
        let (input_price, output_price) = match u.model.as_str() {
            "tw-test" => (1_000_000_000i64, 10_000_000_000i64),
            "tw-cheap" => (100_000_000, 1_000_000_000),
            other => panic!("unexpected model {other}"),
        };
        let part = |tokens: u64, price: i64| (i64::try_from(tokens).unwrap() * price + 999) / 1000;
        let input = u.input_total - u.cache_read - u.cache_write;
        let e = out.entry(u.model.clone()).or_default();
        e.0 += 1;
        e.1 += i64::try_from(input).unwrap();
        e.2 += i64::try_from(u.output).unwrap();
        e.3 += part(input, input_price) + part(u.output, output_price);
    }
    out
}

async fn stored(url: &str) -> Option<PerModel> {
    let cfg: tokio_postgres::Config = url.parse().unwrap();
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT served_model, count(*), sum(input_tokens)::bigint, \
             sum(output_tokens)::bigint, sum(cost_pusd)::bigint \
             FROM tokenwarden.usage GROUP BY served_model",
            &[],
        )
        .await
        .ok()?;
    Some(
        rows.iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect(),
    )
}

fn sidecar(root: &std::path::Path, operator: &Operator, name: &str) -> SidecarProc {
    let mut s = SidecarProc::new();
    s.args(["--control-plane", &operator.url()])
        .arg("--credential-file")
        .arg(root.join("secret"))
        .args(["--pod-name", name])
        .args(["--pod-uid", &format!("uid-{name}")])
        .args(["--namespace", "team"])
        .args(["--labels", "app=load"])
        .arg("--state-dir")
        .arg(root.join(format!("sidecar-{name}")))
        .arg("--secrets-dir")
        .arg(root.join("keys"));
    s.timeout = Duration::from_secs(30);
    s.spawn();
    s
}

/// `tokenwarden_usage_store_backlog_records` in a /metrics page.
fn backlog(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tokenwarden_usage_store_backlog_records "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn request(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","max_tokens":200,"messages":[{{"role":"user","content":"write a haiku about ledgers"}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_operator_and_of_postgres_mid_load_leaves_the_table_equal_to_the_bill() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("objects")).unwrap();
    std::fs::write(root.join("objects/objects.yaml"), objects(&fake)).unwrap();
    std::fs::write(root.join("secret"), SECRET).unwrap();
    std::fs::create_dir_all(root.join("keys/provider-keys")).unwrap();
    std::fs::write(root.join("keys/provider-keys/openai"), "sk-fake-openai").unwrap();
    let mut operator = Operator::local(root, &root.join("state"));
    operator
        .args(["--usage-store-url", &pg.url_with_password(PASSWORD)])
        .args(["--usage-store-retention-months", "2"]);
    operator.rust_log = "info".into();
    operator.stderr = Stderr::Append(root.join("operator.log"));
    operator.spawn().wait_ready();

    let sidecars: Vec<Arc<SidecarProc>> = (0..3)
        .map(|i| Arc::new(sidecar(root, &operator, &format!("load-{i}"))))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, s) in sidecars.iter().enumerate() {
        for j in 0..3 {
            let s = s.clone();
            let stop = stop.clone();
            let model = if (i + j) % 2 == 0 {
                "tw-cheap"
            } else {
                "tw-test"
            };
            tasks.push(tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) && n < 3000 {
                    let out = if n.is_multiple_of(3) { "40" } else { "17" };
                    let r = s
                        .openai(
                            "/v1/chat/completions",
                            &request(model),
                            &[("x-fake-output-tokens", out)],
                        )
                        .await;
                    // Neither outage may fail a request: the sidecars
                    // serve from their leases.
                    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
                    n += 1;
                }
            }));
        }
    }
    let pause = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
    pause(800).await;
    operator.kill9();
    pause(300).await;
    operator.spawn().wait_ready();
    pause(600).await;
    pg.kill9();
    // The outage is seen (writes fail, rows wait) while traffic goes on.
    let down = Instant::now();
    loop {
        let m = http_get(operator.admin_addr(), "/metrics").map_or_else(String::new, |(_, b)| b);
        if m.contains("tokenwarden_usage_store_up 0\n") && backlog(&m) > 0 {
            break;
        }
        assert!(
            down.elapsed() < Duration::from_secs(15),
            "no outage seen: {m}"
        );
        pause(100).await;
    }
    pause(1000).await;
    pg.restart();
    pause(600).await;
    // Both at once, then the operator back before the database.
    operator.kill9();
    pg.kill9();
    pause(300).await;
    operator.spawn().wait_ready();
    pause(800).await;
    pg.restart();
    pause(800).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let want = billed(&fake);
    assert_eq!(want.len(), 2, "both models served: {want:?}");
    let served: i64 = want.values().map(|v| v.0).sum();
    assert!(served > 200, "too little load to mean anything: {served}");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = stored(&pg.url()).await;
        if got.as_ref() == Some(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the usage table {got:?} never equalled the bill {want:?}"
        );
        pause(200).await;
    }
    let cfg: tokio_postgres::Config = pg.url().parse().unwrap();
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let dups: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT sidecar_id, seq FROM tokenwarden.usage \
             GROUP BY 1, 2 HAVING count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dups, 0, "a (sidecar id, seq) twice");
    let sidecar_rows: i64 = client
        .query_one(
            "SELECT count(DISTINCT sidecar_id) FROM tokenwarden.usage WHERE namespace = 'team' \
             AND workload = 'load' AND pod LIKE 'load-%' AND provider = 'openai'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sidecar_rows, 3);
    // The sidecars' replay facts reached the table through the operator:
    // each row names its app request (its own seq or an earlier attempt's)
    // and the prompt estimate its routes matched on.
    let without: i64 = client
        .query_one(
            "SELECT count(*) FROM tokenwarden.usage WHERE request_id IS NULL \
             OR request_id > seq OR prompt_estimate IS NULL \
             OR prompt_estimate <> ceil(length(format('{\"model\":\"%s\",\"max_tokens\":200,\
             \"messages\":[{\"role\":\"user\",\"content\":\"write a haiku about ledgers\"}]}', \
             requested_model)) / 4.0) OR tools_present",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(without, 0, "rows without their replay facts");
    // Every row acked, nothing left in memory.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_get(operator.admin_addr(), "/metrics").map(|(_, b)| b);
        let m = metrics.unwrap_or_default();
        if m.contains("tokenwarden_usage_store_backlog_records 0\n")
            && m.contains("tokenwarden_usage_store_up 1\n")
        {
            break;
        }
        assert!(Instant::now() < deadline, "backlog never drained: {m}");
        pause(200).await;
    }
    let log = std::fs::read_to_string(root.join("operator.log")).unwrap();
    assert!(log.contains("usage store: connected"), "{log}");
    assert!(!log.contains(PASSWORD), "the operator logged the password");
    drop(sidecars);
}
