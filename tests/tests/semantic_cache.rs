//! The semantic cache in connected mode: the real operator in local mode
//! compiles `spec.cache.semantic` into the sidecar's config and pushes it
//! over gRPC; the sidecar embeds with the real `tokenwarden-embedder` and
//! answers a paraphrase from the stored answer; the semantic hit — $0, with
//! what it saved — and the embedding calls reach the operator's cluster
//! ledger through the usage records.
//!
//! Skips (saying so) without the model or the embedder binary, unless
//! `TOKENWARDEN_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use tokenwarden_tests::{
    embedder::Embedder,
    fake_provider::{FakeConfig, FakeProvider},
    operator::Operator,
    probe::http_get,
    sidecar::SidecarProc,
};

const SECRET: &str = "semantic-cache-test-shared-secret-01";

fn body(text: &str) -> String {
    serde_json::json!({"model": "claude-haiku-4-5", "max_tokens": 100,
        "messages": [{"role": "user", "content": text}]})
    .to_string()
}

fn objects(fake: &FakeProvider, embedder: &str) -> String {
    format!(
        r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: faq, namespace: support}}
spec:
  workloadSelector: {{matchLabels: {{app: bot}}}}
  providers:
    - {{name: anthropic, api: anthropic, baseUrl: "{base}", apiKeySecretRef: {{name: provider-keys, key: anthropic}}}}
    - name: embedder
      api: openai
      baseUrl: "{embedder}"
      apiKeySecretRef: {{name: provider-keys, key: embedder}}
      prices: [{{model: all-minilm-l6-v2, inputPerMTok: "0", outputPerMTok: "0"}}]
  cache:
    exact: {{ttl: 10m}}
    semantic:
      embedding: {{provider: embedder, model: all-minilm-l6-v2}}
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
async fn a_semantic_hit_in_connected_mode_reaches_the_cluster_ledger() {
    let Some(embedder) = Embedder::start() else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("objects")).unwrap();
    std::fs::write(
        root.join("objects/objects.yaml"),
        objects(&fake, &embedder.url),
    )
    .unwrap();
    std::fs::write(root.join("secret"), SECRET).unwrap();
    std::fs::create_dir_all(root.join("keys/provider-keys")).unwrap();
    std::fs::write(
        root.join("keys/provider-keys/anthropic"),
        "sk-fake-anthropic",
    )
    .unwrap();
    std::fs::write(root.join("keys/provider-keys/embedder"), "sk-embedder").unwrap();
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

    let first = sc
        .anthropic(&body("How do I reset my password?"), &[])
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-tokenwarden-cache"), Some("miss"));
    let cost = first.header("x-tokenwarden-cost-usd").unwrap().to_string();
    let hit = sc
        .anthropic(&body("How can I reset my password?"), &[])
        .await;
    assert_eq!(hit.header("x-tokenwarden-cache"), Some("hit"));
    let sim = hit.header("x-tokenwarden-cache-similarity").unwrap();
    assert!(sim.starts_with("0.99"), "{sim}");
    assert_eq!(hit.body, first.body);
    assert_eq!(fake.log().len(), 1);

    let ledger = || {
        let (code, text) = http_get(operator.admin_addr(), "/ledger")?;
        assert_eq!(code, 200, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).ok()
    };
    let row = until("the operator's ledger row with the semantic hit", || {
        ledger()?["ledger"]
            .as_array()?
            .iter()
            .find(|r| r["model"] == "claude-haiku-4-5" && r["requests"] == 2)
            .cloned()
    });
    assert_eq!(row["cost_usd"], cost.as_str(), "{row}");
    assert_eq!(row["response_cache_hits"], 1, "{row}");
    assert_eq!(row["semantic_cache_hits"], 1, "{row}");
    assert_eq!(row["response_cache_saved_usd"], cost.as_str(), "{row}");
    let emb = until("the operator's ledger row of the embedding calls", || {
        ledger()?["ledger"]
            .as_array()?
            .iter()
            .find(|r| r["model"] == "all-minilm-l6-v2" && r["requests"] == 2)
            .cloned()
    });
    assert_eq!(emb["cache_embedding_calls"], 2, "{emb}");
    assert_eq!(emb["cost_usd"], "0.00", "{emb}");
    assert_eq!(emb["unpriced_requests"], 0, "{emb}");
}
