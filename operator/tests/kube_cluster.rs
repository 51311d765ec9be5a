//! TIER B: the Kubernetes layer against a real cluster.
//!
//! Ignored by default (`cargo test` lists it as ignored); `scripts/test`
//! runs it with `--ignored` when `KUBECONFIG` is set. The CRDs from `crds/`
//! must be applied, and the credentials need the RBAC of `api_calls()` plus
//! create/delete of TokenBudgets and Leases. Namespace:
//! `TOKENWARDEN_TEST_NAMESPACE` (default `default`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use tokenwarden_core::workload::ObjectRef;
use tokenwarden_crds::{TokenBudget, TokenBudgetStatus};
use tokenwarden_operator::{
    kube::{KubeSource, leader},
    source::{Event, EventType, ObjectSource, Regarding},
};

#[tokio::test]
#[ignore = "tier B: needs a real cluster (KUBECONFIG); scripts/test runs it when KUBECONFIG is set"]
async fn real_cluster_source_status_events_and_leader() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "tier B: set KUBECONFIG to a real cluster with the tokenwarden CRDs applied"
    );
    let ns = std::env::var("TOKENWARDEN_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    let suffix = std::process::id();
    let name = format!("tw-kube-test-{suffix}");

    // Source: synced, then sees a new TokenBudget.
    let source = KubeSource::start(client.clone());
    let mut rx = source.objects();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(Option::is_some))
        .await
        .expect("initial lists within 20 s")
        .unwrap();
    let budgets: Api<TokenBudget> = Api::namespaced(client.clone(), &ns);
    let budget: TokenBudget = serde_json::from_value(json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenBudget",
        "metadata": {"name": name},
        "spec": {"period": "Weekly", "limit": {"tokens": 1000}}
    }))
    .unwrap();
    budgets
        .create(&PostParams::default(), &budget)
        .await
        .expect("create TokenBudget");
    let id = ObjectRef {
        namespace: ns.clone(),
        name: name.clone(),
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|o| o.as_ref().is_some_and(|o| o.budgets.contains_key(&id))),
    )
    .await
    .expect("the new TokenBudget in the objects within 20 s")
    .unwrap();

    // Status by server-side apply, read back.
    let status: TokenBudgetStatus =
        serde_json::from_value(json!({"spentUsd": "0.10", "requests": 1, "state": "Ok"})).unwrap();
    source
        .write_budget_status(&id, &status)
        .await
        .expect("status SSA");
    let read = budgets.get_status(&name).await.unwrap();
    assert_eq!(
        read.status
            .as_ref()
            .and_then(|s| s.spent_usd.clone())
            .as_deref(),
        Some("0.10")
    );
    assert_eq!(read.status.as_ref().and_then(|s| s.requests), Some(1));

    // An Event (best effort; a failure is logged, so only check it does not hang).
    tokio::time::timeout(
        Duration::from_secs(10),
        source.event(&Event {
            regarding: Regarding::Budget(id.clone()),
            type_: EventType::Normal,
            reason: "TierBTest".into(),
            message: "recorded by the tier-B test".into(),
        }),
    )
    .await
    .expect("event within 10 s");

    budgets
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete TokenBudget");
    tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|o| o.as_ref().is_some_and(|o| !o.budgets.contains_key(&id))),
    )
    .await
    .expect("the deleted TokenBudget gone within 20 s")
    .unwrap();

    // Leader election on a fresh Lease (the pod label patch fails here: no such pod; it is retried and logged).
    let lease_name = format!("tw-kube-test-{suffix}");
    let config = leader::LeaderConfig {
        lease_name: lease_name.clone(),
        lease_duration: 5,
        grace: 2,
        ..leader::LeaderConfig::new(&ns, format!("tw-test-{suffix}"), "https://127.0.0.1:15900")
    };
    let mut leadership = leader::run(client.clone(), config);
    tokio::time::timeout(Duration::from_secs(30), leadership.wait_for(|l| l.leader))
        .await
        .expect("leader within 30 s")
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(client, &ns);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lease = leases.get(&lease_name).await.unwrap();
    assert_eq!(
        lease
            .metadata
            .annotations
            .unwrap_or_default()
            .get(leader::ADDRESS_ANNOTATION)
            .map(String::as_str),
        Some("https://127.0.0.1:15900")
    );
    drop(leadership);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = leases.delete(&lease_name, &DeleteParams::default()).await;
}
