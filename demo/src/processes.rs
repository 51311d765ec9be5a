//! The demo's processes: the real operator in local mode and one real
//! sidecar per simulated pod, started from the binaries next to the demo's
//! own (or `TOKENWARDEN_OPERATOR_BIN` / `TOKENWARDEN_SIDECAR_BIN`), and
//! waited for until ready.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokenwarden_tests::{operator::Operator, process::Proc, sidecar::SidecarProc};

pub use tokenwarden_tests::sidecar::HttpClient;

/// A new client.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// The simulated pods: (namespace, pod name, app label).
const PODS: [(&str, &str, &str); 8] = [
    ("agents", "coding-agent-7d9f8-x2x4p", "coding-agent"),
    ("search", "search-agent-5c4b9-k8s7q", "search-agent"),
    ("research", "summarizer-66f7c-a1b2c", "summarizer"),
    ("research", "summarizer-66f7c-d3e4f", "summarizer"),
    ("ops", "planner-58c9d-m3n4p", "planner"),
    ("ops", "planner-cached-6d7e8-q5r6s", "planner-cached"),
    ("ops", "ticket-agent-4f5a6-t7u8v", "ticket-agent"),
    ("support", "faq-bot-7b8c9-h2j3k", "faq-bot"),
];

/// A running sidecar of one simulated pod.
pub struct Pod {
    /// Its namespace.
    pub namespace: &'static str,
    /// Its pod name.
    pub name: &'static str,
    /// Its workload (the `app` label).
    pub workload: &'static str,
    /// The app port.
    pub port: u16,
    sidecar: SidecarProc,
}

impl Pod {
    /// The sidecar's admin port.
    pub fn admin(&self) -> u16 {
        self.sidecar.admin.port()
    }
}

/// The binary `name` next to the demo's own, or the path in `env`.
pub fn binary(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p tokenwarden-operator \
             -p tokenwarden-sidecar -p tokenwarden-cli -p tokenwarden-demo) or set {env}",
            p.display()
        );
    }
    Ok(p)
}

/// GET `url`: (status, body).
pub async fn get(client: &HttpClient, url: String) -> anyhow::Result<(u16, Bytes)> {
    let req = http::Request::get(url).body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Wait (up to 20 s) until `admin`'s `/readyz` answers 200.
pub async fn wait_ready(client: &HttpClient, admin: u16, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = get(client, format!("http://127.0.0.1:{admin}/readyz")).await {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("{what} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The operator in local mode over `root/objects`, ready.
pub async fn start_operator(client: &HttpClient, root: &Path) -> anyhow::Result<Operator> {
    let mut op = Operator::with_bin(binary("tokenwarden-operator", "TOKENWARDEN_OPERATOR_BIN")?);
    op.rust_log = "error".into();
    op.arg("--local-dir")
        .arg(root.join("objects"))
        .arg("--state-dir")
        .arg(root.join("operator-state"))
        .arg("--shared-secret-file")
        .arg(root.join("shared-secret"))
        .listen();
    let child = op
        .command()
        .spawn()
        .context("starting tokenwarden-operator")?;
    op.proc = Proc(Some(child));
    wait_ready(client, op.admin, "the operator").await?;
    Ok(op)
}

/// One sidecar per simulated pod, connected to the operator on `grpc`, ready.
pub async fn start_pods(client: &HttpClient, root: &Path, grpc: u16) -> anyhow::Result<Vec<Pod>> {
    let bin = binary("tokenwarden-sidecar", "TOKENWARDEN_SIDECAR_BIN")?;
    let mut pods = Vec::new();
    for (namespace, name, app) in PODS {
        let mut sidecar = SidecarProc::with_bin(bin.clone());
        sidecar.rust_log = "error".into();
        sidecar
            .args(["--control-plane", &format!("http://127.0.0.1:{grpc}")])
            .arg("--credential-file")
            .arg(root.join("shared-secret"))
            .args(["--namespace", namespace, "--pod-name", name])
            .args(["--pod-uid", &format!("uid-{name}")])
            .args(["--labels", &format!("app={app},pod-template-hash=demo")])
            .arg("--secrets-dir")
            .arg(root.join("secrets"))
            .arg("--state-dir")
            .arg(root.join("pods").join(name));
        let child = sidecar
            .command()
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        sidecar.proc = Proc(Some(child));
        pods.push(Pod {
            namespace,
            name,
            workload: app,
            port: sidecar.app.port(),
            sidecar,
        });
    }
    for p in &pods {
        wait_ready(client, p.admin(), p.name).await?;
    }
    Ok(pods)
}

/// The operator's and every sidecar's `/metrics` as a Prometheus file_sd
/// target list, with the labels a cluster's scrape gives them (the chart's
/// ServiceMonitor and PodMonitor: `namespace`, `pod`, `workload`).
pub fn scrape_targets(operator_admin: u16, pods: &[Pod]) -> serde_json::Value {
    let mut targets = vec![serde_json::json!({
        "targets": [format!("127.0.0.1:{operator_admin}")],
        "labels": {"job": "tokenwarden-operator", "namespace": "tokenwarden"},
    })];
    for p in pods {
        targets.push(serde_json::json!({
            "targets": [format!("127.0.0.1:{}", p.admin())],
            "labels": {
                "job": "tokenwarden-sidecar",
                "namespace": p.namespace,
                "pod": p.name,
                "workload": p.workload,
            },
        }));
    }
    serde_json::Value::Array(targets)
}

/// A sidecar's `tokenwarden_semantic_cache_requests_total` by `result`
/// (summed over workloads), sorted by result; empty without the semantic
/// cache.
pub async fn semantic_lookups(
    client: &HttpClient,
    admin: u16,
) -> anyhow::Result<Vec<(String, u64)>> {
    let (_, body) = get(client, format!("http://127.0.0.1:{admin}/metrics")).await?;
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for l in String::from_utf8_lossy(&body).lines() {
        let Some(rest) = l.strip_prefix("tokenwarden_semantic_cache_requests_total{") else {
            continue;
        };
        let result = rest
            .split("result=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let n = l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok());
        if let (Some(result), Some(n)) = (result, n) {
            *by.entry(result.to_string()).or_default() += n as u64;
        }
    }
    Ok(by.into_iter().collect())
}
