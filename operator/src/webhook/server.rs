//! The HTTPS server: `POST /inject`, `POST /validate`, `GET /healthz`.
//!
//! The certificate is looked up per handshake from a [`CertStore`], so a
//! renewed certificate is served from the next connection on, without a
//! restart.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{
    crypto::ring as ring_provider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use super::{
    certs::CertBundle,
    inject::InjectConfig,
    review::{self, InjectContext},
};
use crate::source::Objects;

/// Largest AdmissionReview accepted: an object is at most ~1.5 MiB in etcd,
/// and a review of an UPDATE carries two of them.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The certificate in use, swapped atomically on renewal.
#[derive(Debug, Clone, Default)]
pub struct CertStore {
    inner: Arc<ArcSwapOption<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    bundle: CertBundle,
    key: Arc<CertifiedKey>,
}

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct Handlers {
    /// Injection settings.
    pub config: Arc<InjectConfig>,
    /// The policy watch.
    pub objects: watch::Receiver<Option<Arc<Objects>>>,
    /// Certificates (the CA bundle goes into injected pods).
    pub certs: CertStore,
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `tls.crt` is not PEM.
    #[error("loading the serving certificate: {0}")]
    Certificate(#[source] rustls::pki_types::pem::Error),
    /// `tls.crt` holds no certificate.
    #[error("loading the serving certificate: no certificate in tls.crt")]
    NoCertificate,
    /// `tls.key` is not a PEM private key.
    #[error("loading the serving certificate: {0}")]
    Key(#[source] rustls::pki_types::pem::Error),
    /// The key does not go with the certificate (or is of no usable kind).
    #[error("loading the serving certificate: {0}")]
    Pair(#[source] rustls::Error),
}

// === impl CertStore ===

impl CertStore {
    /// Use `bundle` from the next handshake on. Returns whether it changed.
    pub fn set(&self, bundle: CertBundle) -> Result<bool, LoadError> {
        if self
            .inner
            .load()
            .as_ref()
            .is_some_and(|l| l.bundle == bundle)
        {
            return Ok(false);
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(LoadError::Certificate)?;
        if chain.is_empty() {
            return Err(LoadError::NoCertificate);
        }
        let key =
            PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes()).map_err(LoadError::Key)?;
        let provider = ring_provider::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(LoadError::Pair)?;
        self.inner.store(Some(Arc::new(Loaded {
            bundle,
            key: Arc::new(certified),
        })));
        Ok(true)
    }

    /// The bundle in use, if any.
    pub fn current(&self) -> Option<CertBundle> {
        self.inner.load().as_ref().map(|l| l.bundle.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.inner.load().as_ref().map(|l| l.key.clone())
    }
}

/// A rustls server config that serves whatever `certs` holds.
pub fn tls_config(certs: &CertStore) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring_provider::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(certs.clone()));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serve on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, handlers: Handlers) -> std::io::Result<()> {
    let tls = tls_config(&handlers.certs).map_err(std::io::Error::other)?;
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let handlers = handlers.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| {
                let handlers = handlers.clone();
                async move { Ok::<_, Infallible>(handle(req, &handlers, peer).await) }
            });
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

async fn handle(req: Request<Incoming>, h: &Handlers, peer: SocketAddr) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::POST, "/inject" | "/validate") => {}
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "webhook request body refused");
            return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large or broken\n");
        }
    };
    let out = if parts.uri.path() == "/inject" {
        let objects = current_objects(h.objects.clone()).await;
        let ca = h.certs.current().map(|b| b.ca_pem).unwrap_or_default();
        review::mutate(
            &body,
            &InjectContext {
                config: &h.config,
                objects: objects.as_deref(),
                ca_pem: &ca,
            },
        )
    } else {
        review::validate(&body)
    };
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The policies, waiting briefly for the first sync: a pod admitted before
/// would miss its provider-key mounts for life.
async fn current_objects(mut rx: watch::Receiver<Option<Arc<Objects>>>) -> Option<Arc<Objects>> {
    let synced = {
        let wait = rx.wait_for(Option::is_some);
        match tokio::time::timeout(std::time::Duration::from_secs(3), wait).await {
            Ok(Ok(v)) => v.clone(),
            _ => None,
        }
    };
    synced.or_else(|| rx.borrow().clone())
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}
