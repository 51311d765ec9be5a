//! The two ways to run: local mode (a watched directory, a shared secret,
//! a lock file) and Kubernetes mode (reflectors, TokenReview, a Lease, the
//! webhook). Each gives the common control plane a [`Mode`].

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::{
    admin,
    args::{Args, PlaintextRefused, StateDirError, default_state_dir},
    engine::LedgerStore,
    kube, local,
    source::{Authenticator, Leadership, ObjectSource},
    tls,
    webhook::{self, server::CertStore},
};

/// What a mode provides to the common control plane.
pub struct Mode {
    /// Objects and status.
    pub source: Arc<dyn ObjectSource>,
    /// Sidecar identity.
    pub auth: Arc<dyn Authenticator>,
    /// Leadership.
    pub leadership: watch::Receiver<Leadership>,
    /// Where the cluster ledger (namespace, workload, model) is kept.
    pub ledger: Option<Arc<dyn LedgerStore>>,
    /// The control server's certificate (`None`: plaintext).
    pub tls: Option<CertStore>,
    /// Who besides loopback clients may read `/ledger` (`None`: nobody).
    pub ledger_access: Option<Arc<dyn admin::LedgerAccess>>,
    /// Work whose end ends the process (the webhook server).
    pub fatal: Option<JoinHandle<anyhow::Result<()>>>,
    /// Hands leadership over on shutdown: completing the sender makes the
    /// elector release; the task ends when it has.
    pub release: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// Why the operator cannot start (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A plaintext control server off loopback.
    #[error(transparent)]
    Plaintext(#[from] PlaintextRefused),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No default state directory.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// Local mode without `--shared-secret-file`.
    #[error("local mode needs --shared-secret-file (the secret sidecars present)")]
    NoSharedSecret,
    /// The shared secret cannot be used.
    #[error(transparent)]
    Secret(#[from] local::SecretError),
    /// The control server's certificate files cannot be used.
    #[error(transparent)]
    TlsFiles(#[from] tls::TlsFileError),
    /// The state directory cannot be set up.
    #[error("{}: {source}", .path.display())]
    State {
        /// The state directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The leader lock cannot be taken part in.
    #[error("leader lock in {}: {source}", .path.display())]
    LeaderLock {
        /// The state directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No Kubernetes API configuration.
    #[error(
        "no Kubernetes API configuration (in-cluster service account or KUBECONFIG): {0}; \
         to run without a cluster, use --local-dir DIR"
    )]
    NoCluster(#[source] ::kube::Error),
    /// Kubernetes mode without this replica's pod name.
    #[error(
        "Kubernetes mode needs this replica's pod name: --pod-name, or POD_NAME from the downward API"
    )]
    NoPodName,
    /// The injection settings are invalid.
    #[error("{0:#}")]
    Inject(#[source] anyhow::Error),
    /// The control server's TLS configuration.
    #[error("TLS: {0}")]
    ControlTls(#[source] rustls::Error),
    /// `--usage-store-url` cannot be parsed (the message never quotes it).
    #[error(transparent)]
    UsageStoreUrl(#[from] crate::usage_store::pg::UrlError),
}

/// Local mode: the watched directory, status files and the ledger file in
/// the state directory, a shared secret, a lock file for leadership.
pub fn local(
    args: &Args,
    dir: &std::path::Path,
    grpc_addr: SocketAddr,
) -> Result<Mode, StartError> {
    let state = match &args.state_dir {
        Some(state) => state.clone(),
        None => default_state_dir(dir)?,
    };
    let secret = args
        .shared_secret_file
        .as_deref()
        .ok_or(StartError::NoSharedSecret)?;
    let auth = local::SharedSecret::from_file(secret)?;
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let store = CertStore::default();
            tls::load_files(&store, cert, key)?;
            tls::reload_files(
                store.clone(),
                cert.clone(),
                key.clone(),
                tls::FILE_RELOAD_INTERVAL,
            );
            Some(store)
        }
        _ => None,
    };
    let advertise = args.advertise_address.clone().unwrap_or_else(|| {
        let scheme = if tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{grpc_addr}")
    });
    let source =
        local::LocalSource::start(dir.to_path_buf(), state.clone(), Duration::from_millis(200))
            .map_err(|source| StartError::State {
                path: state.clone(),
                source,
            })?;
    let leadership =
        local::local_leadership(&state, advertise).map_err(|source| StartError::LeaderLock {
            path: state.clone(),
            source,
        })?;
    Ok(Mode {
        source,
        auth: Arc::new(auth),
        leadership,
        ledger: Some(Arc::new(local::FileLedger::new(&state))),
        tls,
        ledger_access: None,
        fatal: None,
        release: None,
    })
}

/// Kubernetes mode: reflectors, TokenReview, leader election on a Lease, the
/// webhook server on every replica, TLS from the webhook's certificate,
/// `/ledger` for bearer tokens that pass TokenReview and SubjectAccessReview.
pub async fn kube(args: &Args, grpc_addr: SocketAddr) -> Result<Mode, StartError> {
    let client = ::kube::Client::try_default()
        .await
        .map_err(StartError::NoCluster)?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let pod_name = args.pod_name.clone().ok_or(StartError::NoPodName)?;
    // Validate the injection settings now rather than in the first review.
    args.webhook
        .inject_config(&namespace)
        .map_err(StartError::Inject)?;
    let source = kube::KubeSource::start_with(
        client.clone(),
        kube::SourceOptions {
            instance: Some(pod_name.clone()),
            cache_secrets: args.cache_credentials,
            ..kube::SourceOptions::default()
        },
    );
    let auth = kube::TokenReviewAuth::new(client.clone());
    let ledger_access = kube::LedgerReview::new(client.clone());
    let webhook_certs = CertStore::default();
    let tls = control_certs(args, &webhook_certs);
    let advertise = args
        .advertise_address
        .clone()
        .unwrap_or_else(|| default_advertise(args, &namespace, grpc_addr.port()));
    let mut leader = kube::leader::LeaderConfig::new(&namespace, &pod_name, &advertise);
    leader.lease_name.clone_from(&args.lease_name);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (leadership, elector) = kube::leader::run_until(client.clone(), leader, async move {
        let _ = stop_rx.await;
    });
    let ledger =
        kube::ledger::ConfigMapLedger::new(client.clone(), &namespace, &args.ledger_configmap);
    let webhook = tokio::spawn(webhook::run(
        args.webhook.clone(),
        client,
        namespace.clone(),
        source.objects(),
        webhook_certs,
    ));
    tracing::info!(
        namespace = %namespace,
        pod = %pod_name,
        advertise = %advertise,
        lease = %args.lease_name,
        "Kubernetes mode"
    );
    Ok(Mode {
        source,
        auth: Arc::new(auth),
        leadership,
        ledger: Some(Arc::new(ledger)),
        tls: Some(tls),
        ledger_access: Some(Arc::new(ledger_access)),
        fatal: Some(webhook),
        release: Some((stop_tx, elector)),
    })
}

/// Kubernetes mode's control certificate: `--tls-cert-file`, reloaded,
/// else the webhook's (which names the control Service too).
fn control_certs(args: &Args, webhook_certs: &CertStore) -> CertStore {
    match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let store = CertStore::default();
            tls::reload_files(
                store.clone(),
                cert.clone(),
                key.clone(),
                tls::FILE_RELOAD_INTERVAL,
            );
            store
        }
        _ => webhook_certs.clone(),
    }
}

/// The address a replica announces for `Redirect`: its pod IP when known
/// (sidecars verify the certificate against the control Service's name, see
/// docs/control-plane.md), else the control Service.
fn default_advertise(args: &Args, namespace: &str, port: u16) -> String {
    match args.pod_ip.as_deref().map(str::trim) {
        Some(ip) if ip.contains(':') => format!("https://[{ip}]:{port}"),
        Some(ip) if !ip.is_empty() => format!("https://{ip}:{port}"),
        _ => args
            .webhook
            .control_plane_address
            .clone()
            .unwrap_or_else(|| {
                format!(
                    "https://{}.{namespace}.svc:{}",
                    args.webhook.control_service, args.webhook.control_port
                )
            }),
    }
}
