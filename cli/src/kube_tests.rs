//! The plugin's API calls against a scripted API server (tower-test,
//! `tokenwarden_tests::mock_api`): the exact requests each subcommand
//! makes, the errors a user sees (403, CRDs not installed, no ledger), and
//! that the declared [`CALLS`] (the chart's viewer RBAC) grant every request
//! and nothing unused.

use std::collections::BTreeSet;

use ::kube::{Client, client::Body};
use http::Method;
use serde_json::{Value, json};
use tokenwarden_tests::mock_api::{self, Log, MockApi, Scenario, new_log};

use super::*;
use crate::{budgets, costs, explain, output::Format};

const OPERATOR_NS: &str = "tokenwarden";

fn mock(log: &Log, namespace: &str, all: bool) -> (Cluster, MockApi<Body, Body>) {
    let (service, api) = mock_api::pair(log);
    let cluster = Cluster {
        client: Client::new(service, "default"),
        namespace: namespace.to_string(),
        all_namespaces: all,
    };
    (cluster, api)
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "tokenwarden.dev/v1alpha1", "kind": "List",
           "metadata": {"resourceVersion": "7"}, "items": items})
}

fn ledger_cm() -> Value {
    let state = json!({
        "watermarks": {"agents/coder-1": 9},
        "rows": [[{"namespace": "agents", "workload": "coder", "model": "claude-haiku-4-5"},
                  {"cost": "0.0125", "requests": 5,
                   "usage": {"input_tokens": 10000, "output_tokens": 500,
                             "cache_read_tokens": 0, "cache_write_tokens": 0},
                   "unpriced": 0, "estimated": 0}]]
    });
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": LEDGER_CONFIGMAP, "namespace": OPERATOR_NS},
           "data": {LEDGER_KEY: state.to_string()}})
}

fn costs_args() -> costs::Args {
    costs::Args {
        by: vec![costs::By::Model],
        operator_namespace: OPERATOR_NS.into(),
    }
}

const LEDGER_PATH: &str = "/api/v1/namespaces/tokenwarden/configmaps/tokenwarden-ledger";

async fn scenario_costs(log: &Log) {
    let (cluster, mut api) = mock(log, "agents", false);
    let script = Scenario::new()
        .request(Method::GET, LEDGER_PATH)
        .reply(200, ledger_cm());
    let args = costs_args();
    let (out, _) = tokio::join!(
        costs::run_on(&cluster, &args, Format::Csv),
        script.run(&mut api)
    );
    assert_eq!(
        out.unwrap(),
        "model,requests,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,\
         cost_usd,cache_saved_usd,unpriced_requests\r\nclaude-haiku-4-5,5,10000,500,0,0,0.0125,,0\r\n"
    );
}

async fn scenario_costs_without_ledger(log: &Log) {
    let (cluster, mut api) = mock(log, "agents", false);
    let script = Scenario::new().request(Method::GET, LEDGER_PATH).reply(
        404,
        status(
            404,
            "NotFound",
            "configmaps \"tokenwarden-ledger\" not found",
        ),
    );
    let args = costs_args();
    let (out, _) = tokio::join!(
        costs::run_on(&cluster, &args, Format::Table),
        script.run(&mut api)
    );
    let e = format!("{:#}", out.unwrap_err());
    assert!(
        e.starts_with(
            "no cluster ledger: ConfigMap tokenwarden/tokenwarden-ledger does not exist. The \
             operator creates it when it counts its first usage record; is the operator \
             installed in namespace \"tokenwarden\" (--operator-namespace)"
        ),
        "{e}"
    );
}

async fn scenario_costs_forbidden(log: &Log) {
    let (cluster, mut api) = mock(log, "agents", false);
    let script = Scenario::new().request(Method::GET, LEDGER_PATH).reply(
        403,
        status(
            403,
            "Forbidden",
            "configmaps \"tokenwarden-ledger\" is forbidden: User \"dev\" cannot get resource \
             \"configmaps\" in API group \"\" in the namespace \"tokenwarden\"",
        ),
    );
    let args = costs_args();
    let (out, _) = tokio::join!(
        costs::run_on(&cluster, &args, Format::Table),
        script.run(&mut api)
    );
    let e = format!("{:#}", out.unwrap_err());
    assert!(
        e.starts_with(
            "forbidden: you need get on configmaps \"tokenwarden-ledger\" in namespace \
             \"tokenwarden\" (see docs/kubectl-plugin.md: the tokenwarden-viewer ClusterRole); \
             the API server said: configmaps \"tokenwarden-ledger\" is forbidden: User \"dev\""
        ),
        "{e}"
    );
}

fn budget(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenBudget",
           "metadata": {"namespace": ns, "name": name, "resourceVersion": "3"},
           "spec": {"period": "Daily", "limit": {"usd": "20"}},
           "status": {"spentUsd": "5", "state": "Ok", "periodEnd": "2026-12-07T00:00:00Z",
                      "projectedSpendUsd": "18.5"}})
}

async fn scenario_budgets(log: &Log) {
    let (cluster, mut api) = mock(log, "team-a", false);
    let script = Scenario::new()
        .request(
            Method::GET,
            "/apis/tokenwarden.dev/v1alpha1/namespaces/team-a/tokenbudgets?",
        )
        .reply(200, list(vec![budget("team-a", "daily")]));
    let (out, _) = tokio::join!(budgets::run_on(&cluster, Format::Csv), script.run(&mut api));
    assert_eq!(
        out.unwrap().lines().nth(1),
        Some("team-a,daily,Daily,5.00,20.00,,,25.0%,18.50,,,Ok,2026-12-07T00:00:00Z")
    );
    // -A: one cluster-wide list.
    let (cluster, mut api) = mock(log, "team-a", true);
    let script = Scenario::new()
        .request(Method::GET, "/apis/tokenwarden.dev/v1alpha1/tokenbudgets?")
        .reply(
            200,
            list(vec![budget("team-b", "daily"), budget("team-a", "daily")]),
        );
    let (out, _) = tokio::join!(
        budgets::run_on(&cluster, Format::Table),
        script.run(&mut api)
    );
    let out = out.unwrap();
    let names: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(names, ["NAMESPACE", "team-a", "team-b"], "{out}");
}

async fn scenario_budgets_errors(log: &Log) {
    let (cluster, mut api) = mock(log, "team-a", false);
    let path = "/apis/tokenwarden.dev/v1alpha1/namespaces/team-a/tokenbudgets?";
    let script = Scenario::new().request(Method::GET, path).reply(
        404,
        status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    );
    let (out, _) = tokio::join!(
        budgets::run_on(&cluster, Format::Table),
        script.run(&mut api)
    );
    assert_eq!(
        format!("{:#}", out.unwrap_err()),
        "the tokenbudgets.tokenwarden.dev CRD is not installed in this cluster (the API server \
         does not know the resource): install tokenwarden (docs/install.md), or check --context"
    );
    let (cluster, mut api) = mock(log, "team-a", true);
    let script = Scenario::new()
        .request(Method::GET, "/apis/tokenwarden.dev/v1alpha1/tokenbudgets?")
        .reply(403, status(403, "Forbidden", "tokenbudgets is forbidden"));
    let (out, _) = tokio::join!(
        budgets::run_on(&cluster, Format::Table),
        script.run(&mut api)
    );
    assert_eq!(
        format!("{:#}", out.unwrap_err()),
        "forbidden: you need list on tokenbudgets.tokenwarden.dev in all namespaces (see \
         docs/kubectl-plugin.md: the tokenwarden-viewer ClusterRole); the API server said: \
         tokenbudgets is forbidden"
    );
    let (cluster, mut api) = mock(log, "team-a", false);
    let script = Scenario::new()
        .request(Method::GET, path)
        .reply(401, status(401, "Unauthorized", "Unauthorized"));
    let (out, _) = tokio::join!(
        budgets::run_on(&cluster, Format::Table),
        script.run(&mut api)
    );
    assert_eq!(
        format!("{:#}", out.unwrap_err()),
        "unauthorized: the API server refused the kubeconfig's credentials (Unauthorized)"
    );
}

async fn scenario_policies(log: &Log) {
    let (cluster, mut api) = mock(log, "agents", false);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/01-coding-agent-routing.yaml"
    ))
    .unwrap();
    let mut policy: Value = serde_norway::from_str(&text).unwrap();
    policy["metadata"]["managedFields"] = json!([{"manager": "kubectl"}]);
    policy["status"] = json!({"observedGeneration": 1, "anythingNew": true});
    let script = Scenario::new()
        .request(
            Method::GET,
            "/apis/tokenwarden.dev/v1alpha1/namespaces/agents/routingpolicies?",
        )
        .reply(200, list(vec![policy]));
    let (set, _) = tokio::join!(explain::cluster_policies(&cluster), script.run(&mut api));
    let set = set.unwrap();
    assert_eq!(set.policies.len(), 1);
    assert_eq!(
        set.policies[0].routing.source.to_string(),
        "agents/coding-agent"
    );
}

/// Every request the scenarios make is granted by [`CALLS`], and every
/// declared verb is used (the operator's `every_api_call_is_declared_and_exercised`).
#[tokio::test]
async fn every_request_is_granted_by_the_declared_calls() {
    let log = new_log();
    scenario_costs(&log).await;
    scenario_costs_without_ledger(&log).await;
    scenario_costs_forbidden(&log).await;
    scenario_budgets(&log).await;
    scenario_budgets_errors(&log).await;
    scenario_policies(&log).await;
    let mut used = BTreeSet::new();
    for seen in mock_api::logged(&log) {
        let request = rbac_request(&seen.method, &seen.uri)
            .unwrap_or_else(|| panic!("not a resource request: {} {}", seen.method, seen.uri));
        let granting: Vec<usize> = (0..CALLS.len())
            .filter(|&i| grants(&CALLS[i], &request, OPERATOR_NS))
            .collect();
        assert!(
            !granting.is_empty(),
            "{} {} is not in CALLS",
            seen.method,
            seen.uri
        );
        for i in granting {
            used.insert((i, request.verb.clone()));
        }
    }
    for (i, call) in CALLS.iter().enumerate() {
        for verb in call.verbs {
            assert!(
                used.contains(&(i, (*verb).to_string())),
                "CALLS declares {verb} on {call:?} but no scenario uses it"
            );
        }
    }
}
