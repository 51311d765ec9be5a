//! The response cache never crosses namespaces, black-box in connected
//! mode: one real operator (local mode) with a RoutingPolicy of the same
//! name and spec in two namespaces, and a real sidecar in each. The same
//! request filled in namespace `alpha` is a miss in `beta` (the provider
//! answers it again), while repeats within each namespace hit; the
//! cluster ledger counts one hit per namespace. The cache spec is a
//! parameter so that each backend runs the same scenario (a shared
//! backend is where a key without the namespace would leak).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use tokenwarden_tests::{
    fake_provider::{FakeConfig, FakeProvider},
    operator::Operator,
    probe::http_get,
    sidecar::SidecarProc,
};

const SECRET: &str = "response-cache-scope-shared-secret-01";

const BODY: &str = r#"{"model":"claude-haiku-4-5","max_tokens":100,"messages":[{"role":"user","content":"How do I return an item?"}]}"#;

/// The memory backend (the default).
const MEMORY: &str = "exact: {ttl: 10m}";

/// The same RoutingPolicy `faq` in namespaces `alpha` and `beta`.
fn objects(fake: &FakeProvider, cache: &str) -> String {
    ["alpha", "beta"]
        .map(|ns| {
            format!(
                r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: faq, namespace: {ns}}}
spec:
  workloadSelector: {{matchLabels: {{app: bot}}}}
  providers:
    - {{name: anthropic, api: anthropic, baseUrl: "{base}", apiKeySecretRef: {{name: provider-keys, key: anthropic}}}}
  cache:
    {cache}
"#,
                base = fake.base_url()
            )
        })
        .join("---\n")
}

fn sidecar(root: &Path, operator: &Operator, ns: &str) -> SidecarProc {
    let mut sc = SidecarProc::new();
    sc.args(["--control-plane", &operator.url()])
        .arg("--credential-file")
        .arg(root.join("secret"))
        .args(["--pod-name", &format!("bot-{ns}")])
        .args(["--pod-uid", &format!("uid-bot-{ns}")])
        .args(["--namespace", ns, "--labels", "app=bot"])
        .arg("--state-dir")
        .arg(root.join(format!("state-{ns}")))
        .arg("--secrets-dir")
        .arg(root.join("keys"));
    sc.timeout = Duration::from_secs(30);
    sc.spawn();
    sc
}

/// The operator's cluster-ledger row of the bot in `ns`, once it counts
/// `requests` requests.
fn ledger_row(operator: &Operator, ns: &str, requests: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, text) = http_get(operator.admin_addr(), "/ledger").unwrap_or_default();
        if code == 200 {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Some(row) = v["ledger"].as_array().and_then(|rows| {
                rows.iter().find(|r| {
                    r["namespace"] == ns && r["workload"] == "bot" && r["requests"] == requests
                })
            }) {
                return row.clone();
            }
        }
        assert!(Instant::now() < deadline, "{ns}'s ledger row within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn a_fill_in_one_namespace_is_never_a_hit_in_another(cache: &str) {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("objects")).unwrap();
    std::fs::write(root.join("objects/objects.yaml"), objects(&fake, cache)).unwrap();
    std::fs::write(root.join("secret"), SECRET).unwrap();
    std::fs::create_dir_all(root.join("keys/provider-keys")).unwrap();
    std::fs::write(
        root.join("keys/provider-keys/anthropic"),
        "sk-fake-anthropic",
    )
    .unwrap();
    let mut operator = Operator::local(root, &root.join("state"));
    operator.spawn().wait_ready();
    let alpha = sidecar(root, &operator, "alpha");
    let beta = sidecar(root, &operator, "beta");

    let a1 = alpha.anthropic(BODY, &[]).await;
    assert_eq!(a1.status, 200, "{}", a1.text());
    assert_eq!(a1.header("x-tokenwarden-cache"), Some("miss"));
    let a2 = alpha.anthropic(BODY, &[]).await;
    assert_eq!(a2.header("x-tokenwarden-cache"), Some("hit"));
    assert_eq!(a2.body, a1.body);
    assert_eq!(fake.log().len(), 1);

    // The same policy name, the same request, another namespace: a miss
    // the provider answers (with another body: the fake's ids differ).
    let b1 = beta.anthropic(BODY, &[]).await;
    assert_eq!(b1.status, 200, "{}", b1.text());
    assert_eq!(b1.header("x-tokenwarden-cache"), Some("miss"));
    assert_ne!(b1.body, a1.body);
    assert_eq!(fake.log().len(), 2);
    let b2 = beta.anthropic(BODY, &[]).await;
    assert_eq!(b2.header("x-tokenwarden-cache"), Some("hit"));
    assert_eq!(b2.body, b1.body, "beta's own answer");
    // alpha still gets its own.
    let a3 = alpha.anthropic(BODY, &[]).await;
    assert_eq!(a3.header("x-tokenwarden-cache"), Some("hit"));
    assert_eq!(a3.body, a1.body, "alpha's own answer");
    assert_eq!(fake.log().len(), 2);

    let a = ledger_row(&operator, "alpha", 3);
    assert_eq!(a["response_cache_hits"], 2, "{a}");
    let b = ledger_row(&operator, "beta", 2);
    assert_eq!(b["response_cache_hits"], 1, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_backend_a_fill_in_one_namespace_is_never_a_hit_in_another() {
    a_fill_in_one_namespace_is_never_a_hit_in_another(MEMORY).await;
}
