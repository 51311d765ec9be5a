//! OpenTelemetry metrics from the sidecar binary, received by the
//! in-process OTLP collector of `tokenwarden_tests::otlp` (gRPC
//! `MetricsService`, `POST /v1/metrics`, plain and TLS): the GenAI token
//! and duration histograms and the cost counter, point by point, against
//! what `/ledger` records for OpenAI and Anthropic, streamed and not;
//! nothing when disabled; no prompt text and nothing unique to a request
//! on an attribute.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use support::*;
use tokenwarden_tests::{
    otlp::{self, Collector, HistogramPoint, Received, ServerTls},
    tls::TestCa,
};

const ROUTES: &str = r#"  routes:
    - {name: mini, match: {apis: [ChatCompletions], models: ["gpt-5"]}, target: {provider: openai, model: gpt-5-mini}}
"#;

const PROMPT_MARKER: &str = "zebra-quartz-7731";

const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// A sidecar exporting metrics (only: traces off) every 100 ms to
/// `endpoint`, with `env` added.
fn metered(fake: &FakeProvider, endpoint: &str, env: &[(&str, &str)]) -> Sidecar {
    let mut sc = Sidecar::unstarted(&policy(fake, ROUTES, ""), &[]);
    for (k, v) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_TRACES_EXPORTER", "none"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test",
        ),
    ]
    .iter()
    .chain(env)
    {
        sc.env.push(((*k).into(), (*v).into()));
    }
    sc.spawn();
    sc
}

/// The latest points of `name` whose attribute `key` is `value`.
fn points(got: &Received, name: &str, key: &str, value: &str) -> Vec<HistogramPoint> {
    got.histogram(name)
        .into_iter()
        .filter(|p| p.attrs.get(key) == Some(&json!(value)))
        .collect()
}

/// Wait until the token histogram counted `n` answered attempts.
async fn counted(got: &Received, n: u64) {
    let ok = got
        .wait(|g| {
            points(g, "gen_ai.client.token.usage", "gen_ai.token.type", "input")
                .iter()
                .map(|p| p.point.count)
                .sum::<u64>()
                >= n
                && !g.sum("tokenwarden.client.cost").is_empty()
        })
        .await;
    assert!(ok, "no metrics with {n} attempts: {:?}", got.metrics());
}

fn attrs_without(p: &HistogramPoint, key: &str) -> BTreeMap<String, serde_json::Value> {
    let mut a = p.attrs.clone();
    a.remove(key);
    a
}

/// One histogram point per value of `type_key`, each with exactly the
/// GenAI attributes `want` (and the type), the conventions' buckets, and
/// counts that add up.
fn one_point(
    got: &Received,
    name: &str,
    type_key: &str,
    ty: &str,
    want: &BTreeMap<String, serde_json::Value>,
) -> HistogramPoint {
    let ps = points(got, name, type_key, ty);
    assert_eq!(ps.len(), 1, "{name} {ty}: {ps:?}");
    let p = ps.into_iter().next().unwrap();
    assert_eq!(&attrs_without(&p, type_key), want, "{name} {ty}");
    assert_eq!(p.point.explicit_bounds, TOKEN_BUCKETS, "{name}");
    assert_eq!(p.point.bucket_counts.iter().sum::<u64>(), p.point.count);
    p
}

/// The metrics equal the ledger's row for the served model after `n`
/// answered attempts to `model` at `provider`.
async fn matches_ledger(sc: &Sidecar, got: &Received, provider: &str, model: &str, n: u64) {
    let input = points(
        got,
        "gen_ai.client.token.usage",
        "gen_ai.token.type",
        "input",
    );
    let served = input[0].attrs["gen_ai.response.model"]
        .as_str()
        .unwrap()
        .to_string();
    let want: BTreeMap<String, serde_json::Value> = [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!(provider)),
        ("gen_ai.request.model", json!(model)),
        ("gen_ai.response.model", json!(served)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let row = sc.model_row(&served).await;
    let n_of = |k: &str| row[k].as_u64().unwrap();
    let tokens = "gen_ai.client.token.usage";
    let input = one_point(got, tokens, "gen_ai.token.type", "input", &want);
    assert_eq!(input.point.count, n);
    assert_eq!(
        input.point.sum,
        Some(
            (n_of("input_tokens") + n_of("cache_read_tokens") + n_of("cache_write_tokens")) as f64
        ),
        "input includes the cache reads and writes"
    );
    let output = one_point(got, tokens, "gen_ai.token.type", "output", &want);
    assert_eq!(output.point.count, n);
    assert_eq!(output.point.sum, Some(n_of("output_tokens") as f64));
    assert!(n_of("output_tokens") > 0);
    let cache = "tokenwarden.client.token.cache_usage";
    let read = one_point(got, cache, "tokenwarden.token.type", "cache_read", &want);
    assert_eq!(read.point.sum, Some(n_of("cache_read_tokens") as f64));
    assert_eq!(read.point.count, n);
    let write = one_point(
        got,
        cache,
        "tokenwarden.token.type",
        "cache_creation",
        &want,
    );
    assert_eq!(write.point.sum, Some(n_of("cache_write_tokens") as f64));
    let durations = got.histogram("gen_ai.client.operation.duration");
    assert_eq!(durations.len(), 1, "{durations:?}");
    let d = &durations[0];
    assert_eq!(d.attrs, want);
    assert_eq!(d.point.count, n);
    assert_eq!(d.point.explicit_bounds, DURATION_BUCKETS);
    assert!(d.point.sum.unwrap() > 0.0 && d.point.sum.unwrap() < 10.0);
    let cost = got.sum("tokenwarden.client.cost");
    assert_eq!(cost.len(), 1, "{cost:?}");
    assert_eq!(cost[0].attrs, want);
    let picos = cost_str(&row["cost_usd"]);
    assert!(picos > 0);
    // The ledger's exact decimal, as the nearest double.
    assert_eq!(cost[0].value, picos as f64 / 1e12);
    assert_eq!(
        cost[0].value,
        row["cost_usd"].as_str().unwrap().parse::<f64>().unwrap()
    );
    let (metric, resource) = got.latest("tokenwarden.client.cost").unwrap();
    assert_eq!(metric.unit, "{USD}");
    assert_eq!(resource["service.name"], json!("tokenwarden-sidecar"));
    assert_eq!(resource["deployment.environment.name"], json!("test"));
    let (metric, _) = got.latest(tokens).unwrap();
    assert_eq!(metric.unit, "{token}");
    let (metric, _) = got.latest("gen_ai.client.operation.duration").unwrap();
    assert_eq!(metric.unit, "s");
}

/// No attribute of any export holds the prompt, an id, or anything
/// beyond the attribute names the sidecar sets.
fn nothing_unique(got: &Received) {
    let text = format!("{:?}", got.metrics());
    assert!(!text.contains(PROMPT_MARKER), "prompt text exported");
    assert!(
        !text.contains("chatcmpl-") && !text.contains("msg_"),
        "an id exported"
    );
    let allowed = [
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.token.type",
        "tokenwarden.token.type",
        "error.type",
    ];
    for req in got.metrics() {
        for rm in req.resource_metrics {
            for m in rm.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                let keys: Vec<String> = match m.data {
                    Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .flat_map(|p| p.attributes.iter().map(|a| a.key.clone()))
                        .collect(),
                    Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .flat_map(|p| p.attributes.iter().map(|a| a.key.clone()))
                        .collect(),
                    other => panic!("unexpected metric data {other:?}"),
                };
                for k in keys {
                    assert!(allowed.contains(&k.as_str()), "{}: attribute {k}", m.name);
                }
            }
        }
    }
}

async fn chat(stream: bool) {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let c = otlp::grpc(None).await;
    let sc = metered(&fake, &format!("http://{}", c.addr), &[]);
    for _ in 0..2 {
        let body = format!(
            r#"{{"model":"gpt-5","max_tokens":100,"stream":{stream},"messages":[{{"role":"user","content":"hello {PROMPT_MARKER}"}}]}}"#
        );
        let r = sc
            .openai(
                "/v1/chat/completions",
                &body,
                &[("x-fake-cached-tokens", "4")],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    counted(&c.got, 2).await;
    matches_ledger(&sc, &c.got, "openai", "gpt-5-mini", 2).await;
    nothing_unique(&c.got);
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_completion_metrics() {
    chat(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_chat_completion_metrics() {
    chat(true).await;
}

async fn messages(stream: bool) {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let c = otlp::grpc(None).await;
    let sc = metered(&fake, &format!("http://{}", c.addr), &[]);
    for _ in 0..3 {
        let body = format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"hello {PROMPT_MARKER}"}}]}}"#
        );
        let r = sc
            .anthropic(
                &body,
                &[
                    ("x-fake-cached-tokens", "3"),
                    ("x-fake-cache-write-tokens", "5"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    counted(&c.got, 3).await;
    matches_ledger(&sc, &c.got, "anthropic", "claude-sonnet-4-5", 3).await;
    nothing_unique(&c.got);
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_message_metrics() {
    messages(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_anthropic_message_metrics() {
    messages(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempt_has_a_duration_with_its_error_and_no_tokens() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let c = otlp::grpc(None).await;
    let sc = metered(&fake, &format!("http://{}", c.addr), &[]);
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            body,
            &[("x-fake-fail-models", "gpt-5-mini=503")],
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let ok = c
        .got
        .wait(|g| !g.histogram("gen_ai.client.operation.duration").is_empty())
        .await;
    assert!(ok);
    let d = c.got.histogram("gen_ai.client.operation.duration");
    assert_eq!(d.len(), 1, "{d:?}");
    // One duration per attempt the provider saw (the sidecar retries a 503).
    let attempts = fake.log().len() as u64;
    assert!(attempts >= 1);
    assert_eq!(d[0].point.count, attempts);
    let want: BTreeMap<String, serde_json::Value> = [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("openai")),
        ("gen_ai.request.model", json!("gpt-5-mini")),
        ("error.type", json!("503")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(d[0].attrs, want);
    assert!(c.got.histogram("gen_ai.client.token.usage").is_empty());
    assert!(c.got.sum("tokenwarden.client.cost").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_exports_no_metrics() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let c = otlp::grpc(None).await;
    let endpoint = format!("http://{}", c.addr);
    // Metrics off, traces on: spans come, metrics do not.
    let no_metrics = metered(
        &fake,
        &endpoint,
        &[
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ],
    );
    let sdk_off = metered(&fake, &endpoint, &[("OTEL_SDK_DISABLED", "true")]);
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    for sc in [&no_metrics, &sdk_off] {
        let r = sc.openai("/v1/chat/completions", body, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        c.got.wait(|g| g.spans().len() >= 2).await,
        "the traces still go"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.got.metrics().is_empty(), "{:?}", c.got.metrics());
    assert_eq!(c.got.spans().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_metrics() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let c = otlp::http(None).await;
    let sc = metered(
        &fake,
        &format!("http://{}", c.addr),
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-team=search"),
        ],
    );
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    counted(&c.got, 1).await;
    matches_ledger(&sc, &c.got, "openai", "gpt-5-mini", 1).await;
    let reqs = c.got.http_requests();
    assert!(!reqs.is_empty());
    for (path, headers) in reqs {
        assert_eq!(path, "/v1/metrics");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["x-team"], "search");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_sends_the_last_metrics() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let c = otlp::grpc(None).await;
    // Far longer than the test: only the shutdown's flush sends them.
    let mut sc = metered(
        &fake,
        &format!("http://{}", c.addr),
        &[("OTEL_METRIC_EXPORT_INTERVAL", "600000")],
    );
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.got.metrics().is_empty());
    let status = tokio::task::block_in_place(|| sc.proc.terminate(Duration::from_secs(10)));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let input = points(
        &c.got,
        "gen_ai.client.token.usage",
        "gen_ai.token.type",
        "input",
    );
    assert_eq!(input.len(), 1);
    assert_eq!(input[0].point.count, 1);
}

/// A collector that is down costs a counted failure, not a request.
#[tokio::test(flavor = "multi_thread")]
async fn failed_exports_are_counted() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let sc = metered(&fake, &endpoint, &[("OTEL_METRIC_EXPORT_TIMEOUT", "1000")]);
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "the request does not wait for the export");
    let mut failures = 0.0;
    for _ in 0..100 {
        let m = sc.admin_get("/metrics").await.text();
        failures = m
            .lines()
            .find_map(|l| l.strip_prefix("tokenwarden_otel_metric_export_failures_total "))
            .map_or(0.0, |v| v.parse().unwrap());
        if failures >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failures >= 1.0, "{failures}");
}

/// Files in a temp dir, for the TLS variables.
fn pem_files(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, pem) in files {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    dir
}

async fn tls(protocol: &str, mutual: bool) {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let server_ca = TestCa::new();
    let client_ca = TestCa::new();
    let leaf = server_ca.leaf(&["127.0.0.1"]);
    let client = client_ca.leaf(&["tokenwarden-sidecar"]);
    let server = ServerTls {
        leaf: &leaf,
        client_ca: mutual.then(|| client_ca.pem()),
    };
    let c: Collector = if protocol == "grpc" {
        otlp::grpc(Some(server)).await
    } else {
        otlp::http(Some(server)).await
    };
    let dir = pem_files(&[
        ("ca.pem", &server_ca.pem()),
        ("client.pem", &client.cert_pem),
        ("client-key.pem", &client.key_pem),
    ]);
    let path = |f: &str| dir.path().join(f).display().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client-key.pem"));
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
    ];
    if mutual {
        env.push((
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            cert.as_str(),
        ));
        env.push(("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", key.as_str()));
    }
    let sc = metered(&fake, &format!("https://{}", c.addr), &env);
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    counted(&c.got, 1).await;
    matches_ledger(&sc, &c.got, "openai", "gpt-5-mini", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_over_tls() {
    tls("grpc", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_over_mutual_tls() {
    tls("grpc", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_over_mutual_tls() {
    tls("http/protobuf", true).await;
}

/// A collector whose certificate the sidecar does not trust gets
/// nothing; the traffic flows.
#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_collector_gets_nothing() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let leaf = TestCa::new().leaf(&["127.0.0.1"]);
    let other = TestCa::new();
    let c = otlp::http(Some(ServerTls {
        leaf: &leaf,
        client_ca: None,
    }))
    .await;
    let dir = pem_files(&[("ca.pem", &other.pem())]);
    let ca = dir.path().join("ca.pem").display().to_string();
    let sc = metered(
        &fake,
        &format!("https://{}", c.addr),
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
        ],
    );
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(c.got.metrics().is_empty());
}
