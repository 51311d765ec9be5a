//! How a signal reaches its collector: the OTLP protocol and, for an
//! `https://` endpoint, TLS with ring (rustls; no other crypto provider
//! is built in).
//!
//! The variables are the OTLP exporter's
//! (<https://opentelemetry.io/docs/specs/otel/protocol/exporter/>), each
//! with its `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_` variant first:
//!
//! - `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf` (default);
//! - `OTEL_EXPORTER_OTLP_CERTIFICATE`: a PEM bundle of the CAs trusted for
//!   the collector's certificate, instead of the Mozilla roots
//!   (`webpki-roots`);
//! - `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
//!   `OTEL_EXPORTER_OTLP_CLIENT_KEY`: the PEM certificate chain and key
//!   the sidecar presents (mutual TLS); both or neither.
//!
//! The TLS files are read when the sidecar starts; a file that cannot be
//! read or parsed turns the signal off (an error is logged, traffic
//! flows).

use std::{path::Path, sync::Arc, time::Duration};

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_http::hyper::HyperClient;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::{Signal, env};

/// The HTTP client of the HTTP/protobuf exporters (plain or TLS by the
/// endpoint's scheme).
pub(super) type OtlpHttpClient = HyperClient<HttpsConnector<HttpConnector>>;

/// The protocol and client settings of a signal's exporter.
pub(super) enum Transport {
    /// OTLP/gRPC; TLS settings for an `https://` endpoint.
    Grpc(Option<ClientTlsConfig>),
    /// OTLP/HTTP with protobuf bodies.
    Http(Box<OtlpHttpClient>),
}

/// The PEM files of a signal's TLS settings.
struct Files {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

fn read(var: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| format!("{var}={path}: {e}"))
}

// === impl Files ===

impl Files {
    fn from_env(signal: Signal) -> Result<Files, String> {
        let named = |what: &str| {
            let specific = format!("OTEL_EXPORTER_OTLP_{}_{what}", signal.upper());
            env(&specific)
                .map(|p| (specific, p))
                .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{what}")).map(|p| (what.into(), p)))
        };
        let ca = match named("CERTIFICATE") {
            Some((var, path)) => Some(read(&var, &path)?),
            None => None,
        };
        let client = match (named("CLIENT_CERTIFICATE"), named("CLIENT_KEY")) {
            (Some((cv, cp)), Some((kv, kp))) => Some((read(&cv, &cp)?, read(&kv, &kp)?)),
            (None, None) => None,
            _ => {
                return Err(
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY \
                     go together"
                        .into(),
                );
            }
        };
        Ok(Files { ca, client })
    }

    /// The gRPC exporter's TLS settings.
    fn grpc(self) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new();
        tls = match self.ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
            None => tls.with_webpki_roots(),
        };
        if let Some((cert, key)) = self.client {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        tls
    }

    /// The rustls settings of the HTTP exporter.
    fn rustls(self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(pem) => {
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let cert = cert.map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("OTEL_EXPORTER_OTLP_CERTIFICATE: no PEM certificate".into());
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        match self.client {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = rustls_pemfile::certs(&mut cert.as_slice())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: {e}"))?;
                let key = rustls_pemfile::private_key(&mut key.as_slice())
                    .map_err(|e| format!("OTEL_EXPORTER_OTLP_CLIENT_KEY: {e}"))?
                    .ok_or("OTEL_EXPORTER_OTLP_CLIENT_KEY: no PEM private key")?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("OTEL_EXPORTER_OTLP_CLIENT_KEY: {e}"))
            }
        }
    }
}

// === impl Transport ===

impl Transport {
    /// The transport `signal`'s variables name for `endpoint`.
    pub(super) fn from_env(signal: Signal, endpoint: &str) -> Result<Transport, String> {
        let protocol = signal
            .var("PROTOCOL")
            .unwrap_or_else(|| "http/protobuf".into());
        let https = endpoint
            .trim()
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        let files = Files::from_env(signal)?;
        match protocol.trim() {
            "grpc" => Ok(Transport::Grpc(https.then(|| files.grpc()))),
            "http/protobuf" => Ok(Transport::Http(Box::new(http_client(
                files.rustls()?,
                signal.timeout(),
            )))),
            other => Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other}: grpc and http/protobuf are supported"
            )),
        }
    }
}

/// An HTTP client that speaks TLS to `https://` endpoints, plain HTTP to
/// `http://` ones.
fn http_client(tls: rustls::ClientConfig, timeout: Duration) -> OtlpHttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    HyperClient::new(https, timeout, None)
}
