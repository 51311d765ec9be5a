//! TLS of the gRPC control server, with a certificate that can change while
//! the server runs.
//!
//! The certificate lives in a [`CertStore`] and is looked up per handshake:
//!
//! - On Kubernetes the control server shares the webhook's store, which is
//!   filled from the shared Secret (or cert-manager's files) as soon as the
//!   API answers; there is no wait for the kubelet to project a Secret
//!   volume, and a renewed certificate is served from the next connection.
//! - With `--tls-cert-file`/`--tls-key-file` the files are read at start and
//!   re-read every [`FILE_RELOAD_INTERVAL`] (a rotated certificate is picked
//!   up without a restart).
//!
//! Until a certificate is loaded, handshakes fail and sidecars retry with
//! backoff.

use std::{path::Path, path::PathBuf, sync::Arc, time::Duration};

use futures_util::Stream;
use rustls::crypto::ring as ring_provider;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::webhook::{
    certs::CertBundle,
    server::{CertStore, LoadError},
};

/// How often `--tls-cert-file`/`--tls-key-file` are re-read.
pub const FILE_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// A TLS handshake that takes longer than this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Read a PEM certificate chain and key into `store`. Returns whether the
/// certificate changed.
pub fn load_files(store: &CertStore, cert: &Path, key: &Path) -> Result<bool, TlsFileError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| TlsFileError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    store
        .set(CertBundle {
            cert_pem,
            key_pem,
            ca_pem: String::new(),
        })
        .map_err(|source| TlsFileError::Load {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })
}

/// Why the certificate files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// A file cannot be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate and key do not make a usable pair.
    #[error("{} / {}: {source}", .cert.display(), .key.display())]
    Load {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: LoadError,
    },
}

/// Re-read the files every `interval` in the background (waiting for them
/// when they do not exist yet). Failures are logged; the last good
/// certificate stays in use.
pub fn reload_files(store: CertStore, cert: PathBuf, key: PathBuf, interval: Duration) {
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            match load_files(&store, &cert, &key) {
                Ok(true) => {
                    tracing::info!(cert = %cert.display(), "control server certificate loaded");
                    warned = false;
                }
                Ok(false) => {}
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "control server certificate not loaded; retrying");
                    warned = true;
                }
                Err(_) => {}
            }
            let wait = if store.current().is_some() {
                interval
            } else {
                Duration::from_secs(2)
            };
            tokio::time::sleep(wait).await;
        }
    });
}

/// The rustls configuration of the control server: HTTP/2 only (gRPC).
pub fn server_config(store: &CertStore) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring_provider::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(store.clone()));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accept TCP connections on `listener` and complete their TLS handshakes
/// concurrently (a slow client never holds up the others); yields the
/// finished streams for `serve_with_incoming`. The accept loop stops when
/// the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel::<TlsStream<TcpStream>>(256);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "control accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(stream).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "control TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(%peer, "control TLS handshake timed out"),
                }
            });
        }
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|s| (Ok(s), rx)) },
    )
}
