//! OpenTelemetry spans of the operator's control-plane work, exported over
//! OTLP (gRPC or HTTP/protobuf, plain or TLS with ring) when the standard
//! environment says so, as the sidecar's traces
//! (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>,
//! <https://opentelemetry.io/docs/specs/otel/protocol/exporter/>): on
//! when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, `OTEL_SDK_DISABLED` is not `true`
//! and `OTEL_TRACES_EXPORTER` is not `none`. Off, every span here is the
//! API's no-op.
//!
//! The spans are direct (the engine is one task of synchronous steps, so a
//! span is entered for a step and its children nest by the current
//! context):
//!
//! | span | where | attributes |
//! |---|---|---|
//! | `tokenwarden.reconcile` | the objects changed: RoutingPolicies and TokenBudgets compiled into the engine's inputs | `tokenwarden.routing_policies`, `tokenwarden.token_budgets`, `tokenwarden.invalid_policies` |
//! | `tokenwarden.config.push` | a sidecar's config compiled and, when it changed, sent | `tokenwarden.sidecar.id`, `k8s.namespace.name`, `k8s.pod.name`, `tokenwarden.config.version`, `tokenwarden.config.changed` |
//! | `tokenwarden.usage.ingest` | a usage batch counted in its books and the cluster ledger | `tokenwarden.sidecar.id`, `tokenwarden.usage.records` |
//! | `tokenwarden.usage.ack` | batches acked once durable | `tokenwarden.sidecar.id`, `tokenwarden.usage.up_to_seq`, `tokenwarden.usage.batches` |
//! | `tokenwarden.status.write` | a TokenBudget's status written | `tokenwarden.budget`, `tokenwarden.generation`; `error.type` on failure |
//! | `tokenwarden.ledger.write` | the cluster ledger saved | `tokenwarden.generation`; `error.type` on failure |
//! | `tokenwarden.policy_status.write` | a RoutingPolicy's status written | `tokenwarden.policy`; `error.type` on failure |
//!
//! Spans go through the SDK's bounded batch queue (`OTEL_BSP_*`) to one
//! export task on the runtime: a full queue drops spans, nothing waits.

use std::{sync::Arc, time::Duration};

use opentelemetry::{
    Context, KeyValue,
    trace::{Status, TraceContextExt, Tracer as _, TracerProvider as _},
};
use opentelemetry_otlp::{WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource,
    runtime::Tokio,
    trace::{SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};

/// The instrumentation scope of every operator span.
const SCOPE: &str = "tokenwarden-operator";

/// The environment variable `name`, when set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `OTEL_EXPORTER_OTLP_TRACES_{what}`, else `OTEL_EXPORTER_OTLP_{what}`.
fn var(what: &str) -> Option<(String, String)> {
    let specific = format!("OTEL_EXPORTER_OTLP_TRACES_{what}");
    env(&specific).map(|v| (specific, v)).or_else(|| {
        let general = format!("OTEL_EXPORTER_OTLP_{what}");
        env(&general).map(|v| (general, v))
    })
}

fn read(var_path: Option<(String, String)>) -> Result<Option<Vec<u8>>, String> {
    var_path
        .map(|(var, path)| std::fs::read(&path).map_err(|e| format!("{var}={path}: {e}")))
        .transpose()
}

/// The tracer provider, installed as the global one, when traces are on:
/// kept until shutdown.
pub struct Traces(SdkTracerProvider);

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Traces")
    }
}

// === impl Traces ===

impl Traces {
    /// Install the global tracer as the `OTEL_*` environment says:
    /// `Ok(None)` when off. Must run inside the Tokio runtime.
    pub fn from_env() -> Result<Option<Traces>, String> {
        let off = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
        let Some((_, endpoint)) = var("ENDPOINT") else {
            return Ok(None);
        };
        if off {
            return Ok(None);
        }
        let https = endpoint
            .trim()
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        let ca = read(var("CERTIFICATE"))?;
        let client = match (read(var("CLIENT_CERTIFICATE"))?, read(var("CLIENT_KEY"))?) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and _CLIENT_KEY go together".into(),
                );
            }
        };
        let protocol = var("PROTOCOL").map_or_else(|| "http/protobuf".into(), |(_, p)| p);
        let exporter = match protocol.trim() {
            "grpc" => {
                let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                if https {
                    b = b.with_tls_config(grpc_tls(ca, client));
                }
                b.build()
            }
            "http/protobuf" => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(http_client(ca, client)?)
                .build(),
            other => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other}: grpc and http/protobuf are supported"
                ));
            }
        }
        .map_err(|e| format!("OTLP span exporter: {e}"))?;
        let mut resource = Resource::builder();
        if env("OTEL_SERVICE_NAME").is_none()
            && !env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="))
        {
            resource = resource.with_service_name("tokenwarden-operator");
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter, Tokio).build())
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Some(Traces(provider)))
    }

    /// Export what is queued, waiting at most `within` (at shutdown).
    pub async fn flush(&self, within: Duration) {
        let provider = self.0.clone();
        let flushed = tokio::task::spawn_blocking(move || provider.force_flush());
        let _ = tokio::time::timeout(within, flushed).await;
    }
}

fn grpc_tls(
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = match ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tls
}

type HttpClient = opentelemetry_http::hyper::HyperClient<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
>;

/// An HTTP client for `http://` and (TLS with ring) `https://` endpoints.
fn http_client(
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                let c = c.map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let tls = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls_pemfile::certs(&mut cert.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: {e}"))?;
            let key = rustls_pemfile::private_key(&mut key.as_slice())
                .map_err(|e| format!("OTEL_EXPORTER_OTLP_CLIENT_KEY: {e}"))?
                .ok_or("OTEL_EXPORTER_OTLP_CLIENT_KEY: no PEM private key")?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("OTEL_EXPORTER_OTLP_CLIENT_KEY: {e}"))?
        }
    };
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let timeout = var("TIMEOUT")
        .and_then(|(_, t)| t.trim().parse().ok())
        .unwrap_or(10_000);
    Ok(HttpClient::new(https, Duration::from_millis(timeout), None))
}

/// A span `name`, child of the current one, made current until the
/// guard drops (the span ends with it).
pub fn enter(name: &'static str, attributes: Vec<KeyValue>) -> opentelemetry::ContextGuard {
    start(name, attributes).attach()
}

/// A span `name`, child of the current one, in a context of its own (for
/// a task: `FutureExt::with_context`, or `attach` in a blocking closure).
pub fn start(name: &'static str, attributes: Vec<KeyValue>) -> Context {
    let tracer = opentelemetry::global::tracer_provider().tracer(SCOPE);
    let span = tracer
        .span_builder(name)
        .with_attributes(attributes)
        .start(&tracer);
    Context::current_with_span(span)
}

/// Add `attribute` to the current span.
pub fn note(attribute: KeyValue) {
    Context::current().span().set_attribute(attribute);
}

/// Mark the span of `cx` failed with `error` (its `error.type`).
pub fn failed(cx: &Context, error: &str) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("error.type", error.to_string()));
    span.set_status(Status::error(error.to_string()));
}
