//! TIER B: the real `kubectl-tokenwarden` against a real cluster.
//!
//! Ignored by default (`cargo test` lists it as ignored); `scripts/test`
//! runs it with `--ignored` when `KUBECONFIG` is set. The CRDs from `crds/`
//! must be applied; the credentials need create/delete of TokenBudgets,
//! RoutingPolicies and ConfigMaps in the namespace
//! `TOKENWARDEN_TEST_NAMESPACE` (default `default`), which stands in for the
//! operator's namespace too (`--operator-namespace`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams},
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-tokenwarden");

fn plugin(args: &[&str]) -> Value {
    let out = std::process::Command::new(BIN)
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("the plugin runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn api(client: &Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tokenwarden.dev", "v1alpha1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "tier B: needs a real cluster (KUBECONFIG); scripts/test runs it when KUBECONFIG is set"]
async fn real_cluster_costs_budgets_and_explain() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "tier B: set KUBECONFIG to a real cluster with the tokenwarden CRDs applied"
    );
    let ns = std::env::var("TOKENWARDEN_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    let name = format!("tw-plugin-test-{}", std::process::id());
    let pp = PostParams::default();

    let budgets = api(&client, &ns, "TokenBudget", "tokenbudgets");
    let budget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenBudget",
        "metadata": {"name": name},
        "spec": {"period": "Daily", "limit": {"usd": "12.50"}}
    }))
    .unwrap();
    budgets
        .create(&pp, &budget)
        .await
        .expect("create TokenBudget");

    let policies = api(&client, &ns, "RoutingPolicy", "routingpolicies");
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "RoutingPolicy",
        "metadata": {"name": name},
        "spec": {
            "workloadSelector": {"matchLabels": {"app": &name}},
            "providers": [{"name": "anthropic", "api": "anthropic",
                           "baseUrl": "https://api.anthropic.com",
                           "apiKeySecretRef": {"name": "k", "key": "k"}}],
            "tiers": [{"name": "cheap", "provider": "anthropic", "model": "claude-haiku-4-5"},
                      {"name": "strong", "provider": "anthropic", "model": "claude-sonnet-4-5"}],
            "routes": [{"name": "hard", "match": {"complexityClass": "Hard"},
                        "target": {"tier": "strong"}},
                       {"name": "default", "target": {"tier": "cheap"}}]
        }
    }))
    .unwrap();
    policies
        .create(&pp, &policy)
        .await
        .expect("create RoutingPolicy");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let ledger = json!({"watermarks": {}, "rows": [[
        {"namespace": ns, "workload": name, "model": "claude-haiku-4-5"},
        {"cost": "0.25", "requests": 2,
         "usage": {"input_tokens": 100, "output_tokens": 10,
                   "cache_read_tokens": 0, "cache_write_tokens": 0},
         "unpriced": 0, "estimated": 0}]]});
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "tokenwarden-ledger"},
        "data": {"ledger.json": ledger.to_string()}
    }))
    .unwrap();
    let had_ledger = cms.get_opt("tokenwarden-ledger").await.unwrap().is_some();
    if !had_ledger {
        cms.create(&pp, &cm)
            .await
            .expect("create the ledger ConfigMap");
    }

    let listed = plugin(&["budgets", "-n", &ns]);
    let mine: Vec<&Value> = listed["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["name"] == name.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{listed}");
    assert_eq!(mine[0]["limitUsd"], "12.50");
    let all = plugin(&["budgets", "-A"]);
    assert!(
        all["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == name.as_str() && b["namespace"] == ns.as_str())
    );

    let explained = plugin(&[
        "explain-request",
        "-n",
        &ns,
        "--labels",
        &format!("app={name}"),
        "--route",
        "hard",
        "--score",
        "40",
    ]);
    assert_eq!(explained["policy"], format!("{ns}/{name}").as_str());
    assert_eq!(explained["routes"][0]["verdict"], "chosen");
    assert!(
        explained["escalation"]
            .as_str()
            .unwrap()
            .starts_with("none: already at the top"),
        "{explained}"
    );

    if !had_ledger {
        let costs = plugin(&["costs", "-n", &ns, "--operator-namespace", &ns]);
        assert_eq!(costs["total"]["costUsd"], "0.25", "{costs}");
        cms.delete("tokenwarden-ledger", &DeleteParams::default())
            .await
            .unwrap();
    }
    budgets
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}
