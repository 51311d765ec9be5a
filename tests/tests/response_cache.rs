//! The response cache in connected mode: the real operator in local mode
//! compiles `spec.cache` into the sidecar's config and pushes it over
//! gRPC; a repeated request is answered by the sidecar from its cache, and
//! the hit — $0, with what it saved — reaches the operator's cluster ledger
//! through the usage record.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use tokenwarden_tests::{
    fake_provider::{FakeConfig, FakeProvider},
    operator::Operator,
    probe::http_get,
    sidecar::SidecarProc,
};

const SECRET: &str = "response-cache-test-shared-secret-01";

const BODY: &str = r#"{"model":"claude-haiku-4-5","max_tokens":100,"messages":[{"role":"user","content":"What are your opening hours?"}]}"#;

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
"#,
        base = fake.base_url()
    )
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

#[tokio::test(flavor = "multi_thread")]
async fn a_hit_in_connected_mode_reaches_the_cluster_ledger() {
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
    sc.spawn();

    let first = sc.anthropic(BODY, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-tokenwarden-cache"), Some("miss"));
    let cost = first.header("x-tokenwarden-cost-usd").unwrap().to_string();
    let hit = sc.anthropic(BODY, &[]).await;
    assert_eq!(hit.header("x-tokenwarden-cache"), Some("hit"));
    assert_eq!(hit.body, first.body);
    assert_eq!(fake.log().len(), 1);

    let row = until("the operator's ledger row with the hit", || {
        let (code, text) = http_get(operator.admin_addr(), "/ledger")?;
        assert_eq!(code, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["ledger"]
            .as_array()?
            .iter()
            .find(|r| {
                r["namespace"] == "support"
                    && r["workload"] == "bot"
                    && r["model"] == "claude-haiku-4-5"
                    && r["requests"] == 2
            })
            .cloned()
    });
    assert_eq!(row["cost_usd"], cost.as_str(), "{row}");
    assert_eq!(row["response_cache_hits"], 1, "{row}");
    assert_eq!(row["response_cache_saved_usd"], cost.as_str(), "{row}");
}
