//! Response-cache hits in TokenBudget status, connected mode, through the
//! binaries: the real operator (local mode) and a real sidecar. N hits
//! under a budget reach its status as `responseCache {hits: N, savedUsd}`
//! with the sum of what each saved, while `spentUsd`, `tokens` and
//! `requests` stay the provider's answer's alone. The hits travel in the
//! usage records and are counted exactly once: hits spooled while the
//! operator is down, a kill -9 of the sidecar holding them and of the
//! operator that counted the first ones still end at exactly N.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use tokenwarden_tests::{
    fake_provider::{FakeConfig, FakeProvider},
    operator::Operator,
    sidecar::SidecarProc,
};

const SECRET: &str = "response-cache-budget-shared-secret-1";

const BODY: &str = r#"{"model":"claude-haiku-4-5","max_tokens":100,"messages":[{"role":"user","content":"Can I change my delivery address?"}]}"#;

fn objects(fake: &FakeProvider) -> String {
    format!(
        r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: faq, namespace: support}}
spec:
  workloadSelector: {{matchLabels: {{app: bot}}}}
  providers:
    - {{name: anthropic, api: anthropic, baseUrl: "{base}", apiKeySecretRef: {{name: provider-keys, key: anthropic}}}}
  cache:
    exact: {{ttl: 10m}}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: cap, namespace: support}}
spec:
  workloadSelector: {{matchLabels: {{app: bot}}}}
  period: Daily
  limit: {{usd: "10"}}
"#,
        base = fake.base_url()
    )
}

fn status(root: &Path) -> Option<serde_json::Value> {
    let p = root.join("state/status/tokenbudgets/support.cap.json");
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The budget's status once it shows `hits` response-cache hits.
fn status_with_hits(root: &Path, hits: u64) -> serde_json::Value {
    until(&format!("{hits} hits in the budget's status"), || {
        status(root).filter(|s| s["responseCache"]["hits"] == hits)
    })
}

/// `"0.000123"` → pico-USD.
fn picos(s: &str) -> i128 {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    int.parse::<i128>().unwrap() * 1_000_000_000_000
        + format!("{frac:0<12}").parse::<i128>().unwrap()
}

fn sidecar(root: &Path, operator: &Operator) -> SidecarProc {
    let mut sc = SidecarProc::new();
    sc.args(["--control-plane", &operator.url()])
        .arg("--credential-file")
        .arg(root.join("secret"))
        .args(["--pod-name", "bot-0", "--pod-uid", "uid-bot-0"])
        .args(["--namespace", "support", "--labels", "app=bot"])
        .arg("--state-dir")
        .arg(root.join("sidecar-state"))
        .arg("--secrets-dir")
        .arg(root.join("keys"));
    sc.timeout = Duration::from_secs(30);
    sc
}

#[tokio::test(flavor = "multi_thread")]
async fn hits_reach_the_budget_status_exactly_once_and_spend_is_unchanged() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("objects")).unwrap();
    std::fs::write(root.join("objects/objects.yaml"), objects(&fake)).unwrap();
    std::fs::write(root.join("secret"), SECRET).unwrap();
    std::fs::create_dir_all(root.join("keys/provider-keys")).unwrap();
    std::fs::write(
        root.join("keys/provider-keys/anthropic"),
        "sk-fake-anthropic",
    )
    .unwrap();
    let mut operator = Operator::local(root, &root.join("state"));
    operator.spawn().wait_ready();
    let mut sc = sidecar(root, &operator);
    sc.spawn();

    let first = sc.anthropic(BODY, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-tokenwarden-cache"), Some("miss"));
    let cost = picos(first.header("x-tokenwarden-cost-usd").unwrap());
    assert!(cost > 0);
    for _ in 0..3 {
        let hit = sc.anthropic(BODY, &[]).await;
        assert_eq!(hit.header("x-tokenwarden-cache"), Some("hit"));
    }
    let st = status_with_hits(root, 3);
    assert_eq!(
        picos(st["responseCache"]["savedUsd"].as_str().unwrap()),
        3 * cost,
        "{st}"
    );
    assert_eq!(picos(st["spentUsd"].as_str().unwrap()), cost, "{st}");
    assert_eq!(st["requests"], 1, "{st}");
    let tokens = st["tokens"].clone();

    // The operator is killed right after counting (its acks may not have
    // left); two more hits are spooled while it is down; the sidecar is
    // killed holding them and restarted from its spool. Everything is
    // resent, and each hit is counted once.
    operator.kill9();
    for _ in 0..2 {
        let hit = sc.anthropic(BODY, &[]).await;
        assert_eq!(hit.header("x-tokenwarden-cache"), Some("hit"));
    }
    sc.kill();
    operator.spawn().wait_ready();
    let mut sc = sidecar(root, &operator);
    sc.spawn();
    let st = status_with_hits(root, 5);
    // Settled: nothing more arrives.
    std::thread::sleep(Duration::from_secs(1));
    let st2 = status(root).unwrap();
    assert_eq!(st2["responseCache"], st["responseCache"], "{st2}");
    assert_eq!(
        picos(st["responseCache"]["savedUsd"].as_str().unwrap()),
        5 * cost,
        "{st}"
    );
    assert_eq!(picos(st["spentUsd"].as_str().unwrap()), cost, "{st}");
    assert_eq!(st["requests"], 1, "{st}");
    assert_eq!(st["tokens"], tokens, "{st}");
    assert_eq!(fake.log().len(), 1);
    // The exact figures the status resumes from.
    assert_eq!(st["ledger"]["responseCacheHits"], 5, "{st}");
    assert_eq!(
        st["ledger"]["responseCacheSavedPicos"],
        (5 * cost).to_string().as_str(),
        "{st}"
    );
    // The operator's /ledger budget row says the same.
    let (_, text) = tokenwarden_tests::probe::http_get(operator.admin_addr(), "/ledger").unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let row = v["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["namespace"] == "support" && b["name"] == "cap")
        .unwrap();
    assert_eq!(row["response_cache_hits"], 5, "{row}");
    assert_eq!(
        picos(row["response_cache_saved_usd"].as_str().unwrap()),
        5 * cost,
        "{row}"
    );
    assert_eq!(row["requests"], 1, "{row}");
    drop(sc);
}
