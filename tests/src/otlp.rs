//! An in-process OpenTelemetry collector for the tests: the OTLP/gRPC
//! `TraceService` and `MetricsService` (from the OTLP protos), or
//! OTLP/HTTP `POST /v1/traces` and `/v1/metrics` with protobuf bodies;
//! plain or TLS (optionally requiring a client certificate). It keeps
//! every export request as received, and the HTTP requests' headers.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    metrics::v1::{HistogramDataPoint, Metric, NumberDataPoint, metric::Data, number_data_point},
};
use serde_json::json;

use crate::tls::Leaf;

/// What a collector received.
#[derive(Clone, Default)]
pub struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    http: Arc<Mutex<Vec<(String, http::HeaderMap)>>>,
}

/// A running collector.
pub struct Collector {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// What it received.
    pub got: Received,
}

/// TLS settings of a collector: its certificate, and the CA whose
/// client certificates it requires (none: any client).
pub struct ServerTls<'a> {
    /// The collector's certificate and key.
    pub leaf: &'a Leaf,
    /// PEM of the CA client certificates must chain to.
    pub client_ca: Option<String>,
}

/// A histogram data point with its attributes.
#[derive(Clone, Debug)]
pub struct HistogramPoint {
    /// The point's attributes (strings, ints, bools as JSON).
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// The point.
    pub point: HistogramDataPoint,
}

/// A sum or gauge data point with its attributes.
#[derive(Clone, Debug)]
pub struct NumberPoint {
    /// The point's attributes.
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// Its value (an integer point as a double).
    pub value: f64,
    /// The point.
    pub point: NumberDataPoint,
}

/// An attribute value as JSON.
pub fn any(v: &AnyValue) -> serde_json::Value {
    match &v.value {
        Some(Value::StringValue(s)) => json!(s),
        Some(Value::IntValue(i)) => json!(i),
        Some(Value::BoolValue(b)) => json!(b),
        Some(Value::DoubleValue(d)) => json!(d),
        Some(Value::ArrayValue(a)) => a.values.iter().map(any).collect(),
        other => json!(format!("{other:?}")),
    }
}

/// Attributes as a map of JSON values.
pub fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, serde_json::Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(json!(null), any)))
        .collect()
}

// === impl Received ===

impl Received {
    /// The trace export requests so far.
    pub fn traces(&self) -> Vec<ExportTraceServiceRequest> {
        lock(&self.traces).clone()
    }

    /// The metric export requests so far.
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        lock(&self.metrics).clone()
    }

    /// The HTTP requests' paths and headers so far.
    pub fn http_requests(&self) -> Vec<(String, http::HeaderMap)> {
        lock(&self.http).clone()
    }

    /// Every span received, with its resource's attributes.
    pub fn spans(
        &self,
    ) -> Vec<(
        opentelemetry_proto::tonic::trace::v1::Span,
        BTreeMap<String, serde_json::Value>,
    )> {
        let mut out = Vec::new();
        for req in self.traces() {
            for rs in req.resource_spans {
                let resource = attrs(&rs.resource.map(|r| r.attributes).unwrap_or_default());
                for ss in rs.scope_spans {
                    out.extend(ss.spans.into_iter().map(|s| (s, resource.clone())));
                }
            }
        }
        out
    }

    /// The metric `name` in the latest export that has it, with its
    /// resource's attributes (cumulative metrics: the latest is the
    /// total).
    pub fn latest(&self, name: &str) -> Option<(Metric, BTreeMap<String, serde_json::Value>)> {
        self.metrics().into_iter().rev().find_map(|req| {
            req.resource_metrics.into_iter().find_map(|rm| {
                let resource = attrs(&rm.resource.map(|r| r.attributes).unwrap_or_default());
                rm.scope_metrics
                    .into_iter()
                    .flat_map(|sm| sm.metrics)
                    .find(|m| m.name == name)
                    .map(|m| (m, resource))
            })
        })
    }

    /// The latest data points of the histogram `name`.
    pub fn histogram(&self, name: &str) -> Vec<HistogramPoint> {
        match self.latest(name).and_then(|(m, _)| m.data) {
            Some(Data::Histogram(h)) => h
                .data_points
                .into_iter()
                .map(|p| HistogramPoint {
                    attrs: attrs(&p.attributes),
                    point: p,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The latest data points of the sum `name`.
    pub fn sum(&self, name: &str) -> Vec<NumberPoint> {
        match self.latest(name).and_then(|(m, _)| m.data) {
            Some(Data::Sum(s)) => s
                .data_points
                .into_iter()
                .map(|p| NumberPoint {
                    attrs: attrs(&p.attributes),
                    value: match p.value {
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                        None => f64::NAN,
                    },
                    point: p,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Wait (10 s) until `ready` holds of what was received; whether it
    /// did.
    pub async fn wait(&self, ready: impl Fn(&Received) -> bool) -> bool {
        for _ in 0..200 {
            if ready(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ready(self)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        lock(&self.traces).push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        lock(&self.metrics).push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Wait until `addr` takes connections.
async fn listening(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An OTLP/gRPC collector on 127.0.0.1, with TLS when `tls` is given.
///
/// # Panics
/// When it cannot bind or its TLS settings are refused.
#[allow(clippy::expect_used)]
pub async fn grpc(tls: Option<ServerTls<'_>>) -> Collector {
    let got = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        let mut config = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&tls.leaf.cert_pem, &tls.leaf.key_pem),
        );
        if let Some(ca) = tls.client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        server = server.tls_config(config).expect("server TLS");
    }
    let router = server
        .add_service(TraceServiceServer::new(got.clone()))
        .add_service(MetricsServiceServer::new(got.clone()));
    tokio::spawn(router.serve_with_incoming(tokio_stream_listener(listener)));
    listening(addr).await;
    Collector { addr, got }
}

/// The accepted connections of `listener`, as tonic serves them.
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(c, _)| c);
        Some((conn, l))
    })
}

/// An OTLP/HTTP (protobuf) collector on 127.0.0.1, with TLS when `tls`
/// is given.
///
/// # Panics
/// When it cannot bind or its TLS settings are refused.
#[allow(clippy::expect_used)]
pub async fn http(tls: Option<ServerTls<'_>>) -> Collector {
    let got = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&t))));
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let (g, acceptor) = (g.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(conn).await {
                            serve_http(g, hyper_util::rt::TokioIo::new(tls)).await;
                        }
                    }
                    None => serve_http(g, hyper_util::rt::TokioIo::new(conn)).await,
                }
            });
        }
    });
    Collector { addr, got }
}

#[allow(clippy::expect_used)]
fn server_config(tls: &ServerTls<'_>) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
                roots.add(c.expect("CA PEM")).expect("CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(
            vec![tls.leaf.cert_der.clone().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(tls.leaf.key_der.clone().into()),
        )
        .expect("server certificate")
}

async fn serve_http<I>(got: Received, io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let got = got.clone();
        async move {
            use http_body_util::BodyExt as _;
            use prost::Message as _;
            let path = req.uri().path().to_string();
            lock(&got.http).push((path.clone(), req.headers().clone()));
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let status = match path.as_str() {
                "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
                    Ok(r) => {
                        lock(&got.traces).push(r);
                        200
                    }
                    Err(_) => 400,
                },
                "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
                    Ok(r) => {
                        lock(&got.metrics).push(r);
                        200
                    }
                    Err(_) => 400,
                },
                _ => 404,
            };
            let mut resp = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}
