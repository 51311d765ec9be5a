//! The operator's OpenTelemetry spans, from the real binary in local mode
//! driven by a fake sidecar, received by the in-process OTLP collector
//! (`tokenwarden_tests::otlp`): reconcile, config push, usage ingest and
//! ack, and the status and ledger writes, with their attributes; gRPC and
//! HTTP/protobuf over TLS; nothing when disabled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeMap, path::Path, time::Duration};

use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use tokenwarden_proto::{
    BudgetPeriod, ConfigAck, Hello, Usage, UsageBatch, UsageRecord, sidecar_message::Msg as In,
};
use tokenwarden_tests::{
    fake_sidecar::FakeSidecar,
    operator::Operator,
    otlp::{self, Received, ServerTls, attrs},
    tls::TestCa,
};

const SECRET: &str = "local-shared-secret-0123456789";

const OBJECTS: &str = r#"
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: web-routing, namespace: shop}
spec:
  workloadSelector: {matchLabels: {app: web}}
  providers:
    - {name: openai, api: openai, baseUrl: "http://127.0.0.1:9", apiKeySecretRef: {name: keys, key: openai}}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: team, namespace: shop}
spec:
  workloadSelector: {matchLabels: {app: web}}
  period: Daily
  limit: {usd: "1.00"}
"#;

/// The operator in local mode on `dir` with `env`, started.
fn operator(dir: &Path, env: &[(&str, String)]) -> Operator {
    std::fs::create_dir_all(dir.join("objects")).unwrap();
    std::fs::write(dir.join("objects/shop.yaml"), OBJECTS).unwrap();
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let mut op = Operator::local(dir, &dir.join("state"));
    op.env("OTEL_BSP_SCHEDULE_DELAY", "20");
    for (k, v) in env {
        op.env(*k, v);
    }
    op.spawn().wait_listening();
    op
}

fn hello() -> Hello {
    Hello {
        protocol_version: 1,
        sidecar_id: "s1".into(),
        namespace: "shop".into(),
        pod_name: "web-s1".into(),
        pod_uid: "uid-s1".into(),
        labels: [("app".to_string(), "web".to_string())].into(),
        sidecar_version: "test".into(),
        credential: SECRET.into(),
        config_version: String::new(),
    }
}

fn record(seq: u64) -> UsageRecord {
    let now = jiff::Timestamp::now();
    UsageRecord {
        sidecar_id: "s1".into(),
        seq,
        ts_unix_nanos: now.as_nanosecond() as i64,
        endpoint: "chatCompletions".into(),
        requested_model: "gpt-4o".into(),
        served_model: "gpt-4o-mini".into(),
        provider: "openai".into(),
        attempt: 1,
        status: 200,
        usage: Some(Usage {
            input_tokens: 100,
            output_tokens: 10,
            ..Default::default()
        }),
        cost_picos: 1_000_000_000,
        priced: true,
        budgets: vec![BudgetPeriod {
            namespace: "shop".into(),
            name: "team".into(),
            period_start_unix: now.as_second() - now.as_second().rem_euclid(86_400),
            key: String::new(),
        }],
        pod_name: "web".into(),
        ..Default::default()
    }
}

/// A sidecar's session: its snapshot acked, a batch of two records sent
/// and acked.
async fn session(op: &Operator) {
    let mut sc = FakeSidecar::connect_synced(&op.url(), hello()).await;
    let snap = sc.snapshot().await;
    sc.send(In::ConfigAck(ConfigAck {
        version: snap.version,
        accepted: true,
        reason: String::new(),
    }))
    .await;
    sc.send(In::Usage(UsageBatch {
        records: vec![record(1), record(2)],
    }))
    .await;
    sc.ack_up_to(2).await;
}

/// The spans named `name`.
fn named(got: &Received, name: &str) -> Vec<(Span, BTreeMap<String, serde_json::Value>)> {
    got.spans()
        .into_iter()
        .filter(|(s, _)| s.name == name)
        .collect()
}

const NAMES: [&str; 6] = [
    "tokenwarden.reconcile",
    "tokenwarden.config.push",
    "tokenwarden.usage.ingest",
    "tokenwarden.usage.ack",
    "tokenwarden.status.write",
    "tokenwarden.ledger.write",
];

async fn all_spans(got: &Received) {
    let ok = got
        .wait(|g| NAMES.iter().all(|n| !named(g, n).is_empty()))
        .await;
    let have: Vec<String> = got.spans().into_iter().map(|(s, _)| s.name).collect();
    assert!(ok, "missing spans; have {have:?}");
}

fn one_with(
    got: &Received,
    name: &str,
    want: &[(&str, serde_json::Value)],
) -> (Span, BTreeMap<String, serde_json::Value>) {
    let spans = named(got, name);
    spans
        .iter()
        .find(|(s, _)| {
            let a = attrs(&s.attributes);
            want.iter().all(|(k, v)| a.get(*k) == Some(v))
        })
        .cloned()
        .unwrap_or_else(|| {
            let all: Vec<_> = spans.iter().map(|(s, _)| attrs(&s.attributes)).collect();
            panic!("no {name} span with {want:?}: {all:?}")
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_plane_work_has_spans() {
    let c = otlp::grpc(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let op = operator(
        tmp.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", c.addr)),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        ],
    );
    session(&op).await;
    all_spans(&c.got).await;
    let (_, resource) = &named(&c.got, "tokenwarden.reconcile")[0];
    assert_eq!(resource["service.name"], json!("tokenwarden-operator"));
    one_with(
        &c.got,
        "tokenwarden.reconcile",
        &[
            ("tokenwarden.routing_policies", json!(1)),
            ("tokenwarden.token_budgets", json!(1)),
            ("tokenwarden.invalid_policies", json!(0)),
        ],
    );
    let (push, _) = one_with(
        &c.got,
        "tokenwarden.config.push",
        &[
            ("tokenwarden.sidecar.id", json!("s1")),
            ("k8s.namespace.name", json!("shop")),
            ("k8s.pod.name", json!("web-s1")),
            ("tokenwarden.config.changed", json!(true)),
        ],
    );
    let version = attrs(&push.attributes)["tokenwarden.config.version"].clone();
    assert!(version.as_str().is_some_and(|v| v.len() == 16), "{version}");
    let (ingest, _) = one_with(
        &c.got,
        "tokenwarden.usage.ingest",
        &[
            ("tokenwarden.sidecar.id", json!("s1")),
            ("tokenwarden.usage.records", json!(2)),
        ],
    );
    let (ack, _) = one_with(
        &c.got,
        "tokenwarden.usage.ack",
        &[
            ("tokenwarden.sidecar.id", json!("s1")),
            ("tokenwarden.usage.up_to_seq", json!(2)),
            ("tokenwarden.usage.batches", json!(1)),
        ],
    );
    // Acked once the status write made the batch durable: the ack is not
    // inside the ingest (the write finished after it).
    assert_ne!(ack.parent_span_id, ingest.span_id);
    assert!(ack.start_time_unix_nano >= ingest.start_time_unix_nano);
    let (write, _) = one_with(
        &c.got,
        "tokenwarden.status.write",
        &[("tokenwarden.budget", json!("shop/team"))],
    );
    assert!(
        write.status.as_ref().is_none_or(|s| s.code != 2),
        "no error"
    );
    let ledger = named(&c.got, "tokenwarden.ledger.write");
    assert!(
        ledger
            .iter()
            .any(|(s, _)| attrs(&s.attributes)["tokenwarden.generation"].as_i64() > Some(0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_over_tls() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let c = otlp::http(Some(ServerTls {
        leaf: &leaf,
        client_ca: None,
    }))
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let op = operator(
        tmp.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://{}", c.addr)),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                ca_file.display().to_string(),
            ),
        ],
    );
    session(&op).await;
    all_spans(&c.got).await;
    assert!(
        c.got
            .http_requests()
            .iter()
            .all(|(path, _)| path == "/v1/traces")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_exports_nothing() {
    let c = otlp::grpc(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let op = operator(
        tmp.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", c.addr)),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
            ("OTEL_SDK_DISABLED", "true".into()),
        ],
    );
    session(&op).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.got.traces().is_empty());
}
