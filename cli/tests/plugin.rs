//! The real `kubectl-tokenwarden` binary against the in-process API server
//! stand-in (`tokenwarden_tests::apiserver::FakeApiServer`), configured the
//! way kubectl configures a plugin: `KUBECONFIG` in the environment, or
//! `--kubeconfig`, `--context`, `-n`, `-A` on the command line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use serde_json::{Value, json};
use tokenwarden_tests::apiserver::FakeApiServer;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-tokenwarden");

/// `costs -n agents` over [`ledger`] (also shown in docs/kubectl-plugin.md).
const COSTS_AGENTS: &str = "\
NAMESPACE  WORKLOAD  MODEL              REQUESTS  INPUT  OUTPUT  CACHE-READ  CACHE-WRITE     COST  CACHE-SAVED
agents     coder     claude-haiku-4-5          8   8000     800       32000            0  $0.0096       $0.018
agents     coder     claude-sonnet-4-5        20  20000    2000       80000            0   $0.105       $0.018
TOTAL                                         28  28000    2800      112000            0  $0.1146       $0.036
";

/// `budgets -A` in [`budgets_in_one_namespace_or_all`] (also in the docs).
const BUDGETS_ALL: &str = "\
NAMESPACE  NAME           PERIOD     SPENT    LIMIT   USED  PROJECTED  EXHAUSTED-AT          STATE      PERIOD-END
agents     coder-monthly  Monthly  $150.50  $200.00  75.2%    $231.25  2026-12-27T06:00:00Z  Threshold  2027-01-01T00:00:00Z
support    bot-monthly    Monthly    $1.20   $20.00   6.0%          -  -                     Ok         2027-01-01T00:00:00Z
";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run the plugin with `KUBECONFIG` (or none) and `HOME` in `home`.
async fn plugin(kubeconfig: Option<&Path>, home: &Path, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home);
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    let out = cmd.output().await.expect("the plugin runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(r: Run) -> String {
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    r.stdout
}

fn budget(ns: &str, name: &str, limit: &str, status: Value) -> Value {
    json!({"apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenBudget",
           "metadata": {"namespace": ns, "name": name},
           "spec": {"period": "Monthly", "limit": {"usd": limit}},
           "status": status})
}

fn ledger(ns: &str) -> Value {
    let row = |namespace: &str, workload: &str, model: &str, cost: &str, n: u64| {
        json!([{"namespace": namespace, "workload": workload, "model": model},
               {"cost": cost, "requests": n,
                "usage": {"input_tokens": n * 1000, "output_tokens": n * 100,
                          "cache_read_tokens": n * 4000, "cache_write_tokens": 0},
                "unpriced": 0, "estimated": 0,
                "cache": {"saved": "0.018", "wasted": "0", "busts": 0}}])
    };
    let state = json!({
        "watermarks": {"agents/coder-1": 12, "support/bot-1": 3},
        "rows": [row("agents", "coder", "claude-haiku-4-5", "0.0096", 8),
                 row("agents", "coder", "claude-sonnet-4-5", "0.105", 20),
                 row("support", "bot", "claude-haiku-4-5", "0.0036", 3)],
    });
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "tokenwarden-ledger", "namespace": ns},
           "data": {"ledger.json": state.to_string()}})
}

#[tokio::test]
async fn costs_reads_the_ledger_configmap() {
    let api = FakeApiServer::start().await.unwrap();
    api.put("configmaps", ledger("tokenwarden"));
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("config");
    api.write_kubeconfig(&kc).unwrap();
    let out = ok(plugin(Some(&kc), dir.path(), &["costs", "-n", "agents"]).await);
    assert_eq!(out, COSTS_AGENTS);
    let out = ok(plugin(
        Some(&kc),
        dir.path(),
        &["costs", "-A", "--by", "model", "-o", "csv"],
    )
    .await);
    assert_eq!(
        out,
        "model,requests,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,\
         cost_usd,cache_saved_usd,unpriced_requests\r\n\
         claude-haiku-4-5,11,11000,1100,44000,0,0.0132,0.036,0\r\n\
         claude-sonnet-4-5,20,20000,2000,80000,0,0.105,0.018,0\r\n"
    );
    // Without -n: the context's namespace (`default`), which has no usage.
    let out = ok(plugin(Some(&kc), dir.path(), &["costs"]).await);
    assert_eq!(out, "No usage recorded in namespace default.\n");
    // A ledger elsewhere: --operator-namespace.
    let r = plugin(
        Some(&kc),
        dir.path(),
        &["costs", "-A", "--operator-namespace", "tokenwarden-system"],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with(
            "error: no cluster ledger: ConfigMap tokenwarden-system/tokenwarden-ledger does not exist."
        ),
        "{}",
        r.stderr
    );
    let paths: Vec<String> = api.requests().into_iter().map(|s| s.uri).collect();
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("/api/v1/namespaces/tokenwarden")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn budgets_in_one_namespace_or_all() {
    let api = FakeApiServer::start().await.unwrap();
    api.put(
        "tokenbudgets",
        budget(
            "agents",
            "coder-monthly",
            "200.00",
            json!({"spentUsd": "150.5", "state": "Threshold",
                   "periodEnd": "2027-01-01T00:00:00Z",
                   "projectedSpendUsd": "231.25",
                   "projectedExhaustion": "2026-12-27T06:00:00Z"}),
        ),
    );
    api.put(
        "tokenbudgets",
        budget(
            "support",
            "bot-monthly",
            "20",
            json!({"spentUsd": "1.2", "state": "Ok", "periodEnd": "2027-01-01T00:00:00Z"}),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("config");
    api.write_kubeconfig(&kc).unwrap();
    let out = ok(plugin(Some(&kc), dir.path(), &["budgets", "-n", "agents"]).await);
    assert_eq!(
        out,
        "\
NAME           PERIOD     SPENT    LIMIT   USED  PROJECTED  EXHAUSTED-AT          STATE      PERIOD-END
coder-monthly  Monthly  $150.50  $200.00  75.2%    $231.25  2026-12-27T06:00:00Z  Threshold  2027-01-01T00:00:00Z
"
    );
    let out = ok(plugin(Some(&kc), dir.path(), &["budgets", "-A"]).await);
    assert_eq!(out, BUDGETS_ALL);
    let doc: Value = serde_json::from_str(&ok(plugin(
        Some(&kc),
        dir.path(),
        &["budgets", "-n", "support", "-o", "json"],
    )
    .await))
    .unwrap();
    assert_eq!(doc["budgets"].as_array().unwrap().len(), 1);
    assert_eq!(doc["budgets"][0]["usedPercent"], "6.0%");
    assert_eq!(doc["budgets"][0]["projectedSpendUsd"], Value::Null);
    let out = ok(plugin(Some(&kc), dir.path(), &["budgets"]).await);
    assert_eq!(out, "No TokenBudgets found in namespace default.\n");
}

/// A kubeconfig with two contexts on two API servers; the second has its
/// own namespace.
fn two_contexts(a: &FakeApiServer, b: &FakeApiServer) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n\
         - name: one\n  cluster:\n    server: http://{}\n\
         - name: two\n  cluster:\n    server: http://{}\n\
         users:\n- name: u\n  user:\n    token: t\n\
         contexts:\n\
         - name: first\n  context:\n    cluster: one\n    user: u\n    namespace: agents\n\
         - name: second\n  context:\n    cluster: two\n    user: u\n    namespace: support\n\
         current-context: first\n",
        a.addr(),
        b.addr()
    )
}

#[tokio::test]
async fn context_and_kubeconfig_flags_pick_the_cluster() {
    let one = FakeApiServer::start().await.unwrap();
    let two = FakeApiServer::start().await.unwrap();
    one.put("tokenbudgets", budget("agents", "on-one", "10", json!({})));
    two.put("tokenbudgets", budget("support", "on-two", "10", json!({})));
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("two-contexts");
    std::fs::write(&kc, two_contexts(&one, &two)).unwrap();
    let names = |out: String| -> Vec<String> {
        out.lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    };
    // The current context and its namespace.
    let out = ok(plugin(Some(&kc), dir.path(), &["budgets"]).await);
    assert_eq!(names(out), ["on-one"]);
    // --context: the other server, and its context's namespace.
    let out = ok(plugin(Some(&kc), dir.path(), &["budgets", "--context", "second"]).await);
    assert_eq!(names(out), ["on-two"]);
    assert!(one.requests().len() == 1 && two.requests().len() == 1);
    // --kubeconfig wins over KUBECONFIG.
    let missing = dir.path().join("missing");
    let out = ok(plugin(
        Some(&missing),
        dir.path(),
        &[
            "budgets",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--context",
            "second",
        ],
    )
    .await);
    assert_eq!(names(out), ["on-two"]);
    // An unknown context says so.
    let r = plugin(Some(&kc), dir.path(), &["budgets", "--context", "third"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("error: context \"third\" is not in the kubeconfig"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn an_unreachable_server_and_a_wrong_flag_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("config");
    // A port nobody listens on.
    let port = tokenwarden_tests::process::free_port();
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: \
             http://127.0.0.1:{port}\nusers:\n- name: u\n  user:\n    token: t\n\
             contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    let r = plugin(Some(&kc), dir.path(), &["budgets", "-n", "a"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with(
            "error: list on tokenbudgets.tokenwarden.dev in namespace \"a\" failed: cannot reach \
             the API server:"
        ) && r.stderr.contains("Connection refused"),
        "{}",
        r.stderr
    );
    let r = plugin(
        Some(&kc),
        dir.path(),
        &["explain-request", "-A", "--workload", "w", "--route", "r"],
    )
    .await;
    assert_eq!(
        r.stderr,
        "error: explain-request compiles one workload's policy: give -n NAMESPACE, not -A\n"
    );
}

#[tokio::test]
async fn no_kubeconfig_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let r = plugin(None, home.path(), &["budgets"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("error: no kubeconfig (")
            && r.stderr
                .trim_end()
                .ends_with("pass --kubeconfig PATH, set KUBECONFIG, or create ~/.kube/config"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn explain_request_reads_the_cluster_policies() {
    let api = FakeApiServer::start().await.unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/01-coding-agent-routing.yaml"
    ))
    .unwrap();
    let policy: Value = serde_norway::from_str(&text).unwrap();
    api.put("routingpolicies", policy);
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("config");
    api.write_kubeconfig(&kc).unwrap();
    let args = [
        "explain-request",
        "-n",
        "agents",
        // The policy selects app=coding-agent: the second label tried.
        "--workload",
        "coding-agent",
        "--route",
        "default",
        "--score",
        "29",
        "--endpoint",
        "messages",
        "-o",
        "json",
    ];
    let doc: Value = serde_json::from_str(&ok(plugin(Some(&kc), dir.path(), &args).await)).unwrap();
    assert_eq!(doc["policy"], "agents/coding-agent");
    assert_eq!(doc["routes"][4]["name"], "hard");
    assert_eq!(
        doc["routes"][4]["checks"][1]["detail"],
        "score 29 is below 30"
    );
    assert_eq!(doc["routes"][5]["verdict"], "chosen");
    assert_eq!(
        doc["chosen"],
        "anthropic/claude-haiku-4-5 (tier 1 of 3: cheap), anthropic API"
    );
    // A pod no policy selects.
    let r = plugin(
        Some(&kc),
        dir.path(),
        &[
            "explain-request",
            "-n",
            "agents",
            "--workload",
            "other",
            "--route",
            "x",
        ],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with(
            "error: no RoutingPolicy in the cluster's RoutingPolicies in agents selects a pod"
        ),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn rbac_lists_the_read_only_calls() {
    let dir = tempfile::tempdir().unwrap();
    let calls: Value =
        serde_json::from_str(&ok(plugin(None, dir.path(), &["rbac"]).await)).unwrap();
    let verbs: Vec<(String, String)> = calls
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["verbs"].as_array().unwrap().iter().map(move |v| {
                (
                    c["resource"].as_str().unwrap().to_string(),
                    v.as_str().unwrap().to_string(),
                )
            })
        })
        .collect();
    assert_eq!(
        verbs,
        [
            ("tokenbudgets".to_string(), "list".to_string()),
            ("routingpolicies".into(), "list".into()),
            ("configmaps".into(), "get".into()),
        ]
    );
    assert_eq!(calls[2]["resourceNames"], json!(["tokenwarden-ledger"]));
    assert_eq!(calls[2]["scope"], "OperatorNamespace");
}

/// kubectl finds the plugin on PATH and passes it its arguments and
/// KUBECONFIG (https://kubernetes.io/docs/tasks/extend-kubectl/kubectl-plugins/).
/// Needs `kubectl` on PATH; without it the test says so and checks nothing.
#[tokio::test]
async fn kubectl_runs_the_plugin_from_path() {
    let Some(kubectl) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|k| k.is_file())
    }) else {
        eprintln!("kubectl is not on PATH: skipping the kubectl plugin-discovery test");
        return;
    };
    let api = FakeApiServer::start().await.unwrap();
    api.put(
        "tokenbudgets",
        budget("agents", "via-kubectl", "10", json!({"spentUsd": "2.5"})),
    );
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("config");
    api.write_kubeconfig(&kc).unwrap();
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let plugin_path = bin_dir.join("kubectl-tokenwarden");
    if std::fs::hard_link(BIN, &plugin_path).is_err() {
        std::fs::copy(BIN, &plugin_path).unwrap();
    }
    let path = std::env::join_paths([bin_dir.clone()].into_iter().chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = tokio::process::Command::new(kubectl)
        .args(["tokenwarden", "budgets", "-n", "agents", "-o", "csv"])
        .env("PATH", path)
        .env("KUBECONFIG", &kc)
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().nth(1),
        Some("agents,via-kubectl,Monthly,2.50,10.00,,,25.0%,,,,,")
    );
}

/// docs/kubectl-plugin.md shows what the binary prints: the RBAC calls and
/// the explain-request example, verbatim.
#[tokio::test]
async fn the_docs_show_what_the_binary_prints() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/kubectl-plugin.md"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rbac = ok(plugin(None, dir.path(), &["rbac"]).await);
    assert!(doc.contains(&format!("```json\n{rbac}```")), "{rbac}");
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/01-coding-agent-routing.yaml"
    );
    let explained = ok(plugin(
        None,
        dir.path(),
        &[
            "explain-request",
            "--policy",
            policy,
            "-n",
            "agents",
            "--workload",
            "coding-agent",
            "--route",
            "hard",
            "--score",
            "42",
            "--model",
            "claude-opus-4-1",
        ],
    )
    .await);
    assert!(doc.contains(&explained), "{explained}");
    for table in [COSTS_AGENTS, BUDGETS_ALL] {
        assert!(doc.contains(table), "{table}");
    }
}

/// `what-if --cluster` re-prices the ledger ConfigMap's aggregates: Sonnet
/// 4.5's 20 requests (20,000 input, 2,000 output, 80,000 cache-read tokens)
/// on Haiku 4.5 at $1 / $5 / $0.10 per MTok = $0.02 + $0.01 + $0.008 = $0.038.
#[tokio::test]
async fn what_if_cluster_reprices_the_ledger_configmap() {
    let api = FakeApiServer::start().await.unwrap();
    api.put("configmaps", ledger("tw-ops"));
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("config");
    api.write_kubeconfig(&kc).unwrap();
    let args = [
        "what-if",
        "--cluster",
        "--operator-namespace",
        "tw-ops",
        "-n",
        "agents",
        "--model",
        "claude-sonnet-4-5=claude-haiku-4-5",
        "--output-ratio",
        "unchanged",
        "-o",
        "json",
    ];
    let out = ok(plugin(Some(&kc), dir.path(), &args).await);
    let doc: Value = serde_json::from_str(&out).unwrap();
    let text = doc.to_string();
    assert!(
        text.contains("ConfigMap tw-ops/tokenwarden-ledger"),
        "{out}"
    );
    assert!(text.contains("\"0.038\""), "{out}");
    assert!(!text.contains("\"support\""), "-n agents only: {out}");
    let paths: Vec<String> = api.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        paths,
        ["/api/v1/namespaces/tw-ops/configmaps/tokenwarden-ledger"]
    );
}
