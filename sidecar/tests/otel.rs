//! OpenTelemetry traces from the sidecar binary, received by an
//! in-process OTLP collector of the tests crate (`tokenwarden_tests::otlp`:
//! the gRPC `TraceService` of the OTLP protos, and `POST /v1/traces` for
//! HTTP/protobuf): the span tree, the GenAI
//! and `tokenwarden.*` attributes against what `/ledger` records, W3C
//! trace context continued from the app and sent upstream, nothing when
//! disabled, no prompt text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use serde_json::json;
use support::*;
use tokenwarden_tests::otlp::{self, Received, attrs};

/// A span as received, with its resource's attributes.
#[derive(Clone, Debug)]
struct Got {
    span: Span,
    resource: BTreeMap<String, serde_json::Value>,
}

impl Got {
    fn attrs(&self) -> BTreeMap<String, serde_json::Value> {
        attrs(&self.span.attributes)
    }
}

/// The spans a collector (`tokenwarden_tests::otlp`) received.
#[derive(Clone)]
struct Spans(Received);

impl Spans {
    /// Wait (10 s) for at least `n` spans.
    async fn wait(&self, n: usize) -> Vec<Got> {
        if !self.0.wait(|g| g.spans().len() >= n).await {
            panic!("expected {n} spans, got {:?}", self.now());
        }
        self.now()
    }

    fn now(&self) -> Vec<Got> {
        self.0
            .spans()
            .into_iter()
            .map(|(span, resource)| Got { span, resource })
            .collect()
    }
}

/// An OTLP/gRPC collector on 127.0.0.1.
async fn grpc_collector() -> (SocketAddr, Spans) {
    let c = otlp::grpc(None).await;
    (c.addr, Spans(c.got))
}

/// An OTLP/HTTP collector (`POST /v1/traces`, protobuf) on 127.0.0.1.
async fn http_collector() -> (SocketAddr, Spans) {
    let c = otlp::http(None).await;
    (c.addr, Spans(c.got))
}

const ROUTES: &str = r#"  tiers:
    - {name: cheap, provider: anthropic, model: claude-haiku-4-5}
    - {name: standard, provider: anthropic, model: claude-sonnet-4-5}
  routes:
    - {name: mini, match: {apis: [ChatCompletions, Responses], models: ["gpt-5"]}, target: {provider: openai, model: gpt-5-mini}}
    - {name: to-cheap, match: {models: ["claude-opus-*"]}, target: {tier: cheap}}
"#;

const BUDGET: &str = r#"---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: team, namespace: apps}
spec:
  period: Daily
  limit: {usd: "100.00"}
"#;

/// A sidecar with `env` (a batch waits 20 ms unless `env` says otherwise).
fn traced(fake: &FakeProvider, env: &[(&str, &str)]) -> Sidecar {
    let mut sc = Sidecar::unstarted(&policy(fake, ROUTES, BUDGET), &[]);
    // Later entries win: `env` after the default.
    sc.env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "20".into()));
    sc.env
        .extend(env.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    sc.spawn();
    sc
}

fn grpc_env(addr: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test".into(),
        ),
    ]
}

fn start(fake: &FakeProvider, env: &[(&'static str, String)]) -> Sidecar {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    traced(fake, &env)
}

const APP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";
const PROMPT_MARKER: &str = "zebra-quartz-7731";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The request span (parent: the app's span) and its attempt spans, in
/// attempt order; checks the tree.
fn tree(spans: &[Got]) -> (Got, Vec<Got>) {
    let request: Vec<_> = spans
        .iter()
        .filter(|g| !g.attrs().contains_key("tokenwarden.attempt"))
        .cloned()
        .collect();
    assert_eq!(request.len(), 1, "one request span: {spans:?}");
    let request = request.into_iter().next().unwrap();
    let mut attempts: Vec<_> = spans
        .iter()
        .filter(|g| g.attrs().contains_key("tokenwarden.attempt"))
        .cloned()
        .collect();
    attempts.sort_by_key(|g| g.attrs()["tokenwarden.attempt"].as_i64());
    assert_eq!(hex(&request.span.trace_id), APP_TRACE);
    assert_eq!(hex(&request.span.parent_span_id), APP_SPAN);
    assert_eq!(request.span.kind, SpanKind::Client as i32);
    for a in &attempts {
        assert_eq!(a.span.trace_id, request.span.trace_id);
        assert_eq!(a.span.parent_span_id, request.span.span_id);
        assert_eq!(a.span.kind, SpanKind::Client as i32);
        assert!(a.span.end_time_unix_nano >= a.span.start_time_unix_nano);
        assert!(request.span.end_time_unix_nano >= a.span.end_time_unix_nano);
    }
    assert_eq!(
        request.resource.get("service.name"),
        Some(&json!("tokenwarden-sidecar"))
    );
    assert_eq!(
        request.resource.get("deployment.environment.name"),
        Some(&json!("test"))
    );
    (request, attempts)
}

/// No attribute value and no span name holds the prompt's text.
fn no_prompt(spans: &[Got]) {
    for g in spans {
        assert!(!g.span.name.contains(PROMPT_MARKER));
        let text = serde_json::to_string(&g.attrs()).unwrap();
        assert!(
            !text.contains(PROMPT_MARKER),
            "prompt text exported: {text}"
        );
        assert!(!text.contains("hello"), "prompt text exported: {text}");
    }
}

/// The `traceparent` the provider saw names the attempt span.
fn propagated(fake: &FakeProvider, attempts: &[Got]) {
    let log = fake.log();
    assert_eq!(log.len(), attempts.len());
    for (sent, a) in log.iter().zip(attempts) {
        let want = format!("00-{}-{}-01", hex(&a.span.trace_id), hex(&a.span.span_id));
        assert_eq!(sent.header("traceparent"), Some(want.as_str()));
        assert_eq!(sent.header("tracestate"), Some("vendor=abc"));
    }
}

/// The response id and finish reason the app received (a whole body, or
/// its stream's events): `id_at` and `reason_at` are JSON pointers.
fn answer_facts(
    text: &str,
    stream: bool,
    id_at: &str,
    reason_at: &str,
) -> (serde_json::Value, serde_json::Value) {
    let docs: Vec<serde_json::Value> = if stream {
        sse_data(text)
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    } else {
        vec![serde_json::from_str(text).unwrap()]
    };
    let find = |at: &str| {
        docs.iter()
            .filter_map(|d| d.pointer(at))
            .find(|v| v.is_string())
            .cloned()
            .unwrap_or_else(|| panic!("no {at} in {text}"))
    };
    (find(id_at), find(reason_at))
}

/// Both spans carry the response's id and finish reasons.
fn has_facts(
    spans: &[&BTreeMap<String, serde_json::Value>],
    id: &serde_json::Value,
    reason: &serde_json::Value,
) {
    for s in spans {
        assert_eq!(s.get("gen_ai.response.id"), Some(id), "{s:?}");
        assert_eq!(
            s.get("gen_ai.response.finish_reasons"),
            Some(&json!([reason])),
            "{s:?}"
        );
    }
}

fn app_context() -> Vec<(&'static str, String)> {
    vec![
        ("traceparent", format!("00-{APP_TRACE}-{APP_SPAN}-01")),
        ("tracestate", "vendor=abc".into()),
    ]
}

/// The usage and cost attributes equal the ledger's row for `model`.
async fn matches_ledger(sc: &Sidecar, model: &str, span: &BTreeMap<String, serde_json::Value>) {
    let row = sc.model_row(model).await;
    let input = row["input_tokens"].as_i64().unwrap()
        + row["cache_read_tokens"].as_i64().unwrap()
        + row["cache_write_tokens"].as_i64().unwrap();
    assert_eq!(span["gen_ai.usage.input_tokens"], json!(input), "{span:?}");
    assert_eq!(span["gen_ai.usage.output_tokens"], row["output_tokens"]);
    assert_eq!(
        span["gen_ai.usage.cache_read.input_tokens"],
        row["cache_read_tokens"]
    );
    assert_eq!(
        span["gen_ai.usage.cache_creation.input_tokens"],
        row["cache_write_tokens"]
    );
    assert_eq!(
        picos(span["tokenwarden.cost_usd"].as_str().unwrap()),
        cost_str(&row["cost_usd"])
    );
    assert!(row["output_tokens"].as_i64().unwrap() > 0);
}

async fn chat(stream: bool) {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (addr, spans) = grpc_collector().await;
    let sc = start(&fake, &grpc_env(addr));
    let body = format!(
        r#"{{"model":"gpt-5","max_tokens":100,"stream":{stream},"messages":[{{"role":"user","content":"hello {PROMPT_MARKER}"}}]}}"#
    );
    let ctx = app_context();
    let mut h: Vec<(&str, &str)> = ctx.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.push(("x-fake-cached-tokens", "4"));
    let r = sc.openai("/v1/chat/completions", &body, &h).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = spans.wait(2).await;
    let (request, attempts) = tree(&got);
    assert_eq!(attempts.len(), 1);
    assert_eq!(request.span.name, "chat gpt-5");
    assert_eq!(attempts[0].span.name, "chat gpt-5-mini");
    let ra = request.attrs();
    let aa = attempts[0].attrs();
    for (k, v) in [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("openai")),
        ("gen_ai.request.model", json!("gpt-5")),
        ("gen_ai.response.model", json!("gpt-5-mini")),
        ("gen_ai.request.max_tokens", json!(100)),
        ("tokenwarden.route", json!("mini")),
        ("tokenwarden.attempts", json!(1)),
        ("tokenwarden.cache_hit", json!(true)),
        ("tokenwarden.budgets", json!(["apps/team"])),
        ("http.response.status_code", json!(200)),
    ] {
        assert_eq!(ra.get(k), Some(&v), "request span {k}: {ra:?}");
    }
    for (k, v) in [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("openai")),
        ("gen_ai.request.model", json!("gpt-5-mini")),
        ("gen_ai.response.model", json!("gpt-5-mini")),
        ("tokenwarden.attempt", json!(1)),
        ("tokenwarden.cache_hit", json!(true)),
        ("http.response.status_code", json!(200)),
    ] {
        assert_eq!(aa.get(k), Some(&v), "attempt span {k}: {aa:?}");
    }
    assert!(!ra.contains_key("error.type"));
    let (id, reason) = answer_facts(&r.text(), stream, "/id", "/choices/0/finish_reason");
    assert!(id.as_str().unwrap().starts_with("chatcmpl-"), "{id}");
    assert_eq!(reason, json!("stop"));
    has_facts(&[&ra, &aa], &id, &reason);
    assert_eq!(ra["gen_ai.usage.cache_read.input_tokens"], json!(4));
    matches_ledger(&sc, "gpt-5-mini", &ra).await;
    matches_ledger(&sc, "gpt-5-mini", &aa).await;
    propagated(&fake, &attempts);
    no_prompt(&got);
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_completion_spans() {
    chat(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_chat_completion_spans_end_when_the_stream_settles() {
    chat(true).await;
}

async fn messages(stream: bool) {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (addr, spans) = grpc_collector().await;
    let sc = start(&fake, &grpc_env(addr));
    let body = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"hello {PROMPT_MARKER}"}}]}}"#
    );
    let ctx = app_context();
    let mut h: Vec<(&str, &str)> = ctx.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.extend([
        ("x-fake-cached-tokens", "3"),
        ("x-fake-cache-write-tokens", "5"),
    ]);
    let r = sc.anthropic(&body, &h).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = spans.wait(2).await;
    let (request, attempts) = tree(&got);
    assert_eq!(attempts.len(), 1);
    assert_eq!(request.span.name, "chat claude-sonnet-4-5");
    let ra = request.attrs();
    for (k, v) in [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("anthropic")),
        ("gen_ai.request.model", json!("claude-sonnet-4-5")),
        ("gen_ai.request.max_tokens", json!(64)),
        ("gen_ai.usage.cache_read.input_tokens", json!(3)),
        ("gen_ai.usage.cache_creation.input_tokens", json!(5)),
    ] {
        assert_eq!(ra.get(k), Some(&v), "request span {k}: {ra:?}");
    }
    assert!(!ra.contains_key("tokenwarden.route"), "no route matched");
    let (id, reason) = if stream {
        answer_facts(&r.text(), true, "/message/id", "/delta/stop_reason")
    } else {
        answer_facts(&r.text(), false, "/id", "/stop_reason")
    };
    assert!(id.as_str().unwrap().starts_with("msg_"), "{id}");
    assert_eq!(reason, json!("end_turn"));
    has_facts(&[&ra, &attempts[0].attrs()], &id, &reason);
    let served = ra["gen_ai.response.model"].as_str().unwrap().to_string();
    assert!(served.starts_with("claude-sonnet-4-5"), "{served}");
    matches_ledger(&sc, &served, &ra).await;
    matches_ledger(&sc, &served, &attempts[0].attrs()).await;
    propagated(&fake, &attempts);
    no_prompt(&got);
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_message_spans() {
    messages(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_anthropic_message_spans() {
    messages(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalated_request_has_a_span_per_attempt() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (addr, spans) = grpc_collector().await;
    let sc = start(&fake, &grpc_env(addr));
    let body = format!(
        r#"{{"model":"claude-opus-4-1","max_tokens":100,"messages":[{{"role":"user","content":"{PROMPT_MARKER}"}}]}}"#
    );
    let ctx = app_context();
    let mut h: Vec<(&str, &str)> = ctx.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.push(("x-fake-fail-models", "claude-haiku-4-5=503"));
    let r = sc.anthropic(&body, &h).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-attempts"), Some("2"));
    let got = spans.wait(3).await;
    let (request, attempts) = tree(&got);
    assert_eq!(attempts.len(), 2);
    let (a1, a2) = (attempts[0].attrs(), attempts[1].attrs());
    assert_eq!(a1["gen_ai.request.model"], json!("claude-haiku-4-5"));
    assert_eq!(a1["http.response.status_code"], json!(503));
    assert_eq!(a1["error.type"], json!("503"));
    assert_eq!(a1["gen_ai.usage.output_tokens"], json!(0));
    assert_eq!(a1["tokenwarden.cost_usd"], json!("0.00"));
    assert_eq!(attempts[0].span.status.as_ref().unwrap().code, 2, "error");
    assert_eq!(a2["gen_ai.request.model"], json!("claude-sonnet-4-5"));
    assert_eq!(a2["tokenwarden.attempt"], json!(2));
    assert!(!a2.contains_key("error.type"));
    let ra = request.attrs();
    assert_eq!(request.span.name, "chat claude-opus-4-1");
    assert_eq!(ra["tokenwarden.attempts"], json!(2));
    assert_eq!(ra["tokenwarden.route"], json!("to-cheap"));
    assert_eq!(ra["tokenwarden.adjusted"], json!(["escalated"]));
    assert_eq!(
        ra["tokenwarden.escalation_reasons"],
        json!(["upstream_error"])
    );
    assert_eq!(ra["http.response.status_code"], json!(200));
    assert!(!ra.contains_key("error.type"));
    let served = a2["gen_ai.response.model"].as_str().unwrap().to_string();
    assert_eq!(ra["gen_ai.response.model"], json!(served));
    // The request's totals: the failed attempt billed nothing.
    matches_ledger(&sc, &served, &ra).await;
    propagated(&fake, &attempts);
    no_prompt(&got);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_trace_context_starts_a_trace() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (addr, spans) = grpc_collector().await;
    let sc = start(&fake, &grpc_env(addr));
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = spans.wait(2).await;
    let request = got
        .iter()
        .find(|g| !g.attrs().contains_key("tokenwarden.attempt"))
        .unwrap();
    assert!(request.span.parent_span_id.is_empty(), "a root span");
    let sent = &fake.log()[0];
    let tp = sent.header("traceparent").unwrap();
    assert!(tp.starts_with(&format!("00-{}-", hex(&request.span.trace_id))));
    assert_eq!(sent.header("tracestate"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_exports_nothing_and_adds_no_traceparent() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (addr, spans) = grpc_collector().await;
    let mut env = grpc_env(addr);
    env.push(("OTEL_SDK_DISABLED", "True".into()));
    let off = start(&fake, &env);
    let plain = start(&fake, &[]);
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    for sc in [&off, &plain] {
        let r = sc.openai("/v1/chat/completions", body, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The app's own context passes through untouched.
    let ctx = app_context();
    let h: Vec<(&str, &str)> = ctx.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = off.openai("/v1/chat/completions", body, &h).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(spans.now().is_empty(), "{:?}", spans.now());
    let log = fake.log();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].header("traceparent"), None);
    assert_eq!(log[1].header("traceparent"), None);
    assert_eq!(
        log[2].header("traceparent"),
        Some(format!("00-{APP_TRACE}-{APP_SPAN}-01").as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsampled_parent_is_not_exported_but_propagated() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (addr, spans) = grpc_collector().await;
    let sc = start(&fake, &grpc_env(addr));
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let tp = format!("00-{APP_TRACE}-{APP_SPAN}-00");
    let r = sc
        .openai("/v1/chat/completions", body, &[("traceparent", &tp)])
        .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(spans.now().is_empty(), "{:?}", spans.now());
    let sent = fake.log()[0].header("traceparent").unwrap().to_string();
    assert!(sent.starts_with(&format!("00-{APP_TRACE}-")), "{sent}");
    assert!(sent.ends_with("-00"), "{sent}");
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_the_collector_does_not_take_are_counted_dropped() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    // Nothing listens there.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let sc = start(
        &fake,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
            ("OTEL_BSP_EXPORT_TIMEOUT", "2000".into()),
        ],
    );
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "the request does not wait for the export");
    let mut dropped = 0.0;
    for _ in 0..100 {
        let m = sc.admin_get("/metrics").await.text();
        dropped = m
            .lines()
            .find_map(|l| l.strip_prefix("tokenwarden_otel_dropped_spans_total "))
            .map_or(0.0, |v| v.parse().unwrap());
        if dropped >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dropped, 2.0, "the request span and its attempt span");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_export() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (addr, spans) = http_collector().await;
    let sc = start(
        &fake,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-team=search".into()),
            ("OTEL_SERVICE_NAME", "agent".into()),
        ],
    );
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = spans.wait(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].resource.get("service.name"), Some(&json!("agent")));
    let names: Vec<_> = got.iter().map(|g| g.span.name.as_str()).collect();
    assert!(
        names.contains(&"chat gpt-5") && names.contains(&"chat gpt-5-mini"),
        "{names:?}"
    );
    let reqs = spans.0.http_requests();
    assert!(!reqs.is_empty());
    for (path, headers) in reqs {
        assert_eq!(path, "/v1/traces");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["x-team"], "search");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsupported_protocol_leaves_traces_off_and_traffic_flowing() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (addr, spans) = grpc_collector().await;
    let sc = start(
        &fake,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
        ],
    );
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(spans.now().is_empty());
    assert_eq!(fake.log()[0].header("traceparent"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_request_has_a_failed_span_and_no_attempt() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (addr, spans) = grpc_collector().await;
    let capped = budget(
        "capped",
        "  period: Daily\n  limit: {usd: \"10\"}\n  perRequestMaxUsd: \"0.01\"",
    );
    let mut sc = Sidecar::unstarted(&policy(&fake, ROUTES, &capped), &[]);
    sc.env = grpc_env(addr)
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    sc.env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "20".into()));
    sc.spawn();
    let ctx = app_context();
    let h: Vec<(&str, &str)> = ctx.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-5","max_tokens":100000,"messages":[]}"#,
            &h,
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    let got = spans.wait(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (request, attempts) = tree(&spans.now());
    assert!(attempts.is_empty(), "{got:?}");
    let ra = request.attrs();
    assert_eq!(ra["error.type"], json!("request_cap"));
    assert_eq!(ra["tokenwarden.attempts"], json!(0));
    assert!(!ra.contains_key("tokenwarden.cost_usd"));
    assert_eq!(request.span.status.as_ref().unwrap().code, 2, "error");
    assert!(fake.log().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_sends_the_queued_spans() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (addr, spans) = grpc_collector().await;
    let mut env = grpc_env(addr);
    // Far longer than the test: only the shutdown's flush sends them.
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "600000".into()));
    let mut sc = start(&fake, &env);
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(spans.now().is_empty(), "the batch waits: {:?}", spans.now());
    let status = tokio::task::block_in_place(|| sc.proc.terminate(Duration::from_secs(10)));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(spans.now().len(), 2);
}
