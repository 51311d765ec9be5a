//! Admission webhooks: sidecar injection (mutating) and RoutingPolicy /
//! TokenBudget validation, served over HTTPS by every replica.
//!
//! - [`inject`]: the pure injection (Pod → JSONPatch).
//! - [`review`]: AdmissionReview handling for both webhooks.
//! - [`certs`]: the rcgen CA and serving certificate in a shared Secret,
//!   renewal, and `caBundle` patching.
//! - [`server`]: the HTTPS server with a hot-swappable certificate.
//!
//! Entry point: [`run`], called from the operator's main with [`WebhookArgs`]
//! flattened into its arguments.

pub mod certs;
pub mod inject;
pub mod review;
pub mod server;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::ValueEnum;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use tokio::sync::watch;

use self::{
    certs::{CertBundle, CertPolicy},
    inject::{InjectConfig, KeyRef, OtelInject},
    server::{CertStore, Handlers},
};
use crate::source::Objects;

const DAY: i64 = 24 * 3600;

/// Flags of the webhook (each also from a `TOKENWARDEN_OPERATOR_*` variable).
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Address of the HTTPS webhook server.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:15812"
    )]
    pub webhook_listen: SocketAddr,

    /// Where the serving certificate comes from: `secret` (the operator
    /// makes a CA and certificate with rcgen, shares them through
    /// `--webhook-cert-secret` and patches the caBundles) or `files`
    /// (cert-manager or another tool writes `tls.crt`, `tls.key`, `ca.crt`
    /// into `--webhook-cert-dir` and injects the caBundles).
    #[arg(long, env = "TOKENWARDEN_OPERATOR_WEBHOOK_CERT_MODE", value_enum, default_value_t = CertMode::Secret)]
    pub webhook_cert_mode: CertMode,

    /// Secret (in the operator's namespace) holding the CA and serving certificate.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_WEBHOOK_CERT_SECRET",
        default_value = "tokenwarden-tls"
    )]
    pub webhook_cert_secret: String,

    /// Directory of `tls.crt`, `tls.key` and `ca.crt` in `files` mode.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_WEBHOOK_CERT_DIR",
        default_value = "/etc/tokenwarden/tls"
    )]
    pub webhook_cert_dir: PathBuf,

    /// Service in front of the webhook port (a DNS name of the certificate).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_WEBHOOK_SERVICE",
        default_value = "tokenwarden-webhook"
    )]
    pub webhook_service: String,

    /// Service in front of the gRPC control port (also a DNS name of the
    /// certificate, so the control server can serve the same files).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_CONTROL_SERVICE",
        default_value = "tokenwarden-control"
    )]
    pub control_service: String,

    /// Port of the control Service.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_CONTROL_PORT",
        default_value_t = 15810
    )]
    pub control_port: u16,

    /// Control-plane address given to sidecars. Default:
    /// `https://<control-service>.<namespace>.svc:<control-port>`.
    #[arg(long, env = "TOKENWARDEN_OPERATOR_CONTROL_PLANE_ADDRESS")]
    pub control_plane_address: Option<String>,

    /// MutatingWebhookConfiguration whose caBundle the operator keeps current.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_MUTATING_WEBHOOK",
        default_value = "tokenwarden-injector"
    )]
    pub mutating_webhook: String,

    /// ValidatingWebhookConfiguration whose caBundle the operator keeps current.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_VALIDATING_WEBHOOK",
        default_value = "tokenwarden-validator"
    )]
    pub validating_webhook: String,

    /// Lifetime of a serving certificate, days.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_CERT_VALIDITY_DAYS",
        default_value_t = 90
    )]
    pub cert_validity_days: i64,

    /// Renew the serving certificate when fewer days than this are left.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_CERT_RENEW_BEFORE_DAYS",
        default_value_t = 30
    )]
    pub cert_renew_before_days: i64,

    /// Lifetime of the CA, days.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_CA_VALIDITY_DAYS",
        default_value_t = 3650
    )]
    pub ca_validity_days: i64,

    /// How often certificates and caBundles are checked (seconds); also how
    /// soon a caBundle reset by `helm upgrade` is restored.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_CERT_CHECK_INTERVAL",
        default_value_t = 30
    )]
    pub cert_check_interval: u64,

    /// Sidecar image.
    #[arg(long, env = "TOKENWARDEN_OPERATOR_SIDECAR_IMAGE", default_value = concat!("ghcr.io/tokenwarden/sidecar:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,

    /// Sidecar image pull policy.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub sidecar_image_pull_policy: String,

    /// Sidecar resource requests, `cpu=50m,memory=64Mi`.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_REQUESTS",
        default_value = "cpu=50m,memory=64Mi"
    )]
    pub sidecar_requests: String,

    /// Sidecar resource limits, `memory=256Mi` (empty: none).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_LIMITS",
        default_value = "memory=256Mi"
    )]
    pub sidecar_limits: String,

    /// Port of the sidecar on 127.0.0.1 for app traffic.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_PORT",
        default_value_t = 15800
    )]
    pub sidecar_port: u16,

    /// Sidecar admin port (probes, metrics); listens on the pod IP.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_ADMIN_PORT",
        default_value_t = 15801
    )]
    pub sidecar_admin_port: u16,

    /// UID/GID of the sidecar.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_RUN_AS_USER",
        default_value_t = 65532
    )]
    pub sidecar_run_as_user: i64,

    /// Size limit of the sidecar's state emptyDir (empty: none).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_STATE_SIZE_LIMIT",
        default_value = "256Mi"
    )]
    pub sidecar_state_size_limit: String,

    /// OTLP endpoint set as `OTEL_EXPORTER_OTLP_ENDPOINT` on every injected
    /// sidecar, e.g. `http://otel-collector.observability:4317`: plain
    /// `http://`, or `https://` (TLS with ring; the sidecar trusts the
    /// Mozilla roots). Empty: no OpenTelemetry variables are injected,
    /// and sidecars export nothing.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_OTEL_ENDPOINT",
        default_value = ""
    )]
    pub sidecar_otel_endpoint: String,

    /// `OTEL_EXPORTER_OTLP_PROTOCOL` of injected sidecars.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_OTEL_PROTOCOL",
        default_value = "grpc",
        value_parser = ["grpc", "http/protobuf"]
    )]
    pub sidecar_otel_protocol: String,

    /// `OTEL_TRACES_SAMPLER` of injected sidecars.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_OTEL_SAMPLER",
        default_value = "parentbased_always_on",
        value_parser = [
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ]
    )]
    pub sidecar_otel_sampler: String,

    /// `OTEL_TRACES_SAMPLER_ARG` of injected sidecars (the ratio of the
    /// `*traceidratio` samplers, 0 to 1; empty: not set).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_OTEL_SAMPLER_ARG",
        default_value = ""
    )]
    pub sidecar_otel_sampler_arg: String,

    /// Resource attributes added to every injected sidecar's
    /// `OTEL_RESOURCE_ATTRIBUTES` after the pod's own `k8s.*` ones
    /// (`key=value,...`).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_OTEL_RESOURCE_ATTRIBUTES",
        default_value = ""
    )]
    pub sidecar_otel_resource_attributes: String,

    /// `NAME/KEY` of a Secret whose key holds `OTEL_EXPORTER_OTLP_HEADERS`
    /// (`key=value,...`, e.g. a collector's token) for injected sidecars.
    /// Env can only reference a Secret of the pod's own namespace: each
    /// app namespace needs a copy. Optional: without it a sidecar exports
    /// without the headers. Empty: no headers.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_OTEL_HEADERS_SECRET",
        value_name = "NAME/KEY",
        default_value = ""
    )]
    pub sidecar_otel_headers_secret: String,

    /// `NAME/KEY` of a ConfigMap whose key holds the PEM CA bundle trusted
    /// for an `https://` collector, mounted into injected sidecars
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`). The ConfigMap must be in the
    /// pod's own namespace. Empty: the Mozilla roots.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_OTEL_CA_CONFIGMAP",
        value_name = "NAME/KEY",
        default_value = ""
    )]
    pub sidecar_otel_ca_configmap: String,

    /// A `kubernetes.io/tls` Secret (its `tls.crt` and `tls.key`) mounted
    /// into injected sidecars as the client certificate of mutual TLS to
    /// the collector (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `_KEY`).
    /// The Secret must be in the pod's own namespace. Empty: none.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SIDECAR_OTEL_CLIENT_CERT_SECRET",
        value_name = "NAME",
        default_value = ""
    )]
    pub sidecar_otel_client_cert_secret: String,

    /// Namespaces never injected besides the operator's own (comma-separated).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_INJECT_EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system"
    )]
    pub inject_exclude_namespaces: Vec<String>,
}

/// Where the webhook's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CertMode {
    /// Made by the operator (rcgen), stored in a Secret.
    Secret,
    /// Files written by cert-manager (or another tool).
    Files,
}

/// One Kubernetes API call the code makes, for the RBAC check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiCall {
    /// API group (`""` for core).
    pub api_group: &'static str,
    /// Resource (plural).
    pub resource: &'static str,
    /// Subresource, if any.
    pub subresource: Option<&'static str>,
    /// Verbs.
    pub verbs: Vec<&'static str>,
    /// `Cluster` or `Namespace` (the operator's namespace).
    pub scope: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// The API calls of this module, with the same fields as `tokenwarden-operator rbac`.
pub fn api_calls() -> Vec<ApiCall> {
    vec![
        ApiCall {
            api_group: "",
            resource: "secrets",
            subresource: None,
            verbs: vec!["get", "create", "update"],
            scope: "Namespace",
            reason: "webhook certificates: read the shared CA/serving certificate Secret, create it on first start, renew it before expiry",
        },
        ApiCall {
            api_group: "admissionregistration.k8s.io",
            resource: "mutatingwebhookconfigurations",
            subresource: None,
            verbs: vec!["get", "patch"],
            scope: "Cluster",
            reason: "keep the injection webhook's caBundle equal to the operator's CA",
        },
        ApiCall {
            api_group: "admissionregistration.k8s.io",
            resource: "validatingwebhookconfigurations",
            subresource: None,
            verbs: vec!["get", "patch"],
            scope: "Cluster",
            reason: "keep the validating webhook's caBundle equal to the operator's CA",
        },
    ]
}

// === impl WebhookArgs ===

impl WebhookArgs {
    /// The injection settings for an operator running in `namespace`.
    pub fn inject_config(&self, namespace: &str) -> anyhow::Result<InjectConfig> {
        let control_plane = self.control_plane_address.clone().unwrap_or_else(|| {
            format!(
                "https://{}.{namespace}.svc:{}",
                self.control_service, self.control_port
            )
        });
        Ok(InjectConfig {
            operator_namespace: namespace.to_string(),
            excluded_namespaces: self
                .inject_exclude_namespaces
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            image: self.sidecar_image.clone(),
            image_pull_policy: self.sidecar_image_pull_policy.clone(),
            control_plane,
            port: self.sidecar_port,
            admin_port: self.sidecar_admin_port,
            requests: parse_quantities("--sidecar-requests", &self.sidecar_requests)?,
            limits: parse_quantities("--sidecar-limits", &self.sidecar_limits)?,
            run_as_user: self.sidecar_run_as_user,
            token_expiration_seconds: 3600,
            state_size_limit: Some(self.sidecar_state_size_limit.clone())
                .filter(|s| !s.trim().is_empty()),
            otel: self.otel_inject()?,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    /// The OpenTelemetry settings for injected sidecars, checked: `None`
    /// without an endpoint.
    fn otel_inject(&self) -> anyhow::Result<Option<OtelInject>> {
        let headers_secret = key_ref(
            "--sidecar-otel-headers-secret",
            &self.sidecar_otel_headers_secret,
        )?;
        let ca_config_map = key_ref(
            "--sidecar-otel-ca-configmap",
            &self.sidecar_otel_ca_configmap,
        )?;
        let client_cert_secret = match self.sidecar_otel_client_cert_secret.trim() {
            "" => None,
            name => {
                check_object_name("--sidecar-otel-client-cert-secret", name)?;
                Some(name.to_string())
            }
        };
        let endpoint = self.sidecar_otel_endpoint.trim();
        if endpoint.is_empty() {
            return Ok(None);
        }
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("--sidecar-otel-endpoint {endpoint:?}: {e}"))?;
        // The sidecar's exporter speaks plain HTTP, or TLS to an
        // https:// endpoint.
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            anyhow::bail!(
                "--sidecar-otel-endpoint {endpoint:?}: must be an http:// or https:// URL with a host"
            );
        }
        let sampler_arg = self.sidecar_otel_sampler_arg.trim();
        if !sampler_arg.is_empty()
            && !sampler_arg
                .parse::<f64>()
                .is_ok_and(|r| (0.0..=1.0).contains(&r))
        {
            anyhow::bail!(
                "--sidecar-otel-sampler-arg {sampler_arg:?}: must be a ratio between 0 and 1"
            );
        }
        let extra = self.sidecar_otel_resource_attributes.trim();
        if let Some(bad) = extra
            .split(',')
            .filter(|kv| !kv.trim().is_empty())
            .find(|kv| kv.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()))
        {
            anyhow::bail!("--sidecar-otel-resource-attributes: {bad:?} is not key=value");
        }
        Ok(Some(OtelInject {
            endpoint: endpoint.to_string(),
            protocol: self.sidecar_otel_protocol.clone(),
            sampler: self.sidecar_otel_sampler.clone(),
            sampler_arg: (!sampler_arg.is_empty()).then(|| sampler_arg.to_string()),
            resource_attributes: (!extra.is_empty()).then(|| extra.to_string()),
            headers_secret,
            ca_config_map,
            client_cert_secret,
        }))
    }

    /// Certificate names and lifetimes for an operator in `namespace`.
    pub fn cert_policy(&self, namespace: &str) -> CertPolicy {
        CertPolicy {
            dns_names: CertPolicy::service_names(
                &[&self.webhook_service, &self.control_service],
                namespace,
            ),
            validity_secs: self.cert_validity_days * DAY,
            renew_before_secs: self.cert_renew_before_days * DAY,
            ca_validity_secs: self.ca_validity_days * DAY,
        }
    }
}

/// Parse `NAME/KEY` (a Secret's or ConfigMap's key); `None` when empty.
fn key_ref(flag: &str, s: &str) -> anyhow::Result<Option<KeyRef>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let Some((name, key)) = s.split_once('/') else {
        anyhow::bail!("{flag} {s:?}: must be NAME/KEY");
    };
    check_object_name(flag, name)?;
    // Kubernetes' rule for Secret and ConfigMap keys (IsConfigMapKey).
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        && key != "."
        && !key.starts_with("..");
    if !key_ok {
        anyhow::bail!(
            "{flag} {s:?}: key {key:?} must be letters, digits, '-', '_' and '.' (at most 253)"
        );
    }
    Ok(Some(KeyRef {
        name: name.to_string(),
        key: key.to_string(),
    }))
}

/// A Secret's or ConfigMap's name: a lowercase RFC 1123 subdomain
/// (<https://kubernetes.io/docs/concepts/overview/working-with-objects/names/#dns-subdomain-names>).
fn check_object_name(flag: &str, name: &str) -> anyhow::Result<()> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        anyhow::bail!(
            "{flag}: {name:?} is not a Kubernetes object name (lowercase letters, digits, '-' \
             and '.', at most 253, starting and ending with a letter or digit)"
        );
    }
    Ok(())
}

/// Parse `cpu=50m,memory=64Mi`.
fn parse_quantities(flag: &str, s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("{flag}: {part:?} is not resource=quantity"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Run the webhook server until it fails.
///
/// Every replica calls this (the webhook is not leader-only). It first gets
/// a certificate (Secret mode: from/into the shared Secret, and patches the
/// caBundles; files mode: from `--webhook-cert-dir`), then listens on
/// `--webhook-listen`, and keeps renewing / reloading every
/// `--cert-check-interval` seconds. `namespace` is the operator's
/// (`POD_NAMESPACE`); `objects` is the source's watch of all policies;
/// `certs` receives the certificate (the gRPC control server shares it: its
/// names cover the control Service too).
pub async fn run(
    args: WebhookArgs,
    client: kube::Client,
    namespace: String,
    objects: watch::Receiver<Option<Arc<Objects>>>,
    certs: CertStore,
) -> anyhow::Result<()> {
    let config = Arc::new(args.inject_config(&namespace)?);
    let interval = Duration::from_secs(args.cert_check_interval.max(1));
    let refresher = CertRefresher {
        args: args.clone(),
        client,
        namespace,
        certs: certs.clone(),
    };
    // No listener before there is a certificate: a connection could not
    // complete its handshake anyway.
    loop {
        match refresher.refresh().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "webhook certificate not ready; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(args.webhook_listen)
        .await
        .with_context(|| format!("binding the webhook to {}", args.webhook_listen))?;
    tracing::info!(addr = %args.webhook_listen, "webhook listening");
    let handlers = Handlers {
        config,
        objects,
        certs,
    };
    let refresh = async {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(e) = refresher.refresh().await {
                tracing::warn!(error = %e, "webhook certificate refresh failed");
            }
        }
    };
    tokio::select! {
        r = server::serve(listener, handlers) => r.context("webhook server"),
        () = refresh => Ok(()),
    }
}

struct CertRefresher {
    args: WebhookArgs,
    client: kube::Client,
    namespace: String,
    certs: CertStore,
}

impl CertRefresher {
    async fn refresh(&self) -> anyhow::Result<()> {
        let bundle = match self.args.webhook_cert_mode {
            CertMode::Files => read_cert_dir(&self.args.webhook_cert_dir)?,
            CertMode::Secret => {
                let api: kube::Api<Secret> =
                    kube::Api::namespaced(self.client.clone(), &self.namespace);
                let now = unix_now();
                let bundle = certs::ensure_secret(
                    &api,
                    &self.args.webhook_cert_secret,
                    now,
                    &self.args.cert_policy(&self.namespace),
                )
                .await?;
                let n = certs::patch_ca_bundles(
                    &self.client,
                    &self.args.mutating_webhook,
                    &self.args.validating_webhook,
                    &bundle.ca_pem,
                )
                .await?;
                if n > 0 {
                    tracing::info!(webhooks = n, "caBundle patched");
                }
                bundle
            }
        };
        if self.certs.set(bundle)? {
            tracing::info!("webhook serving certificate loaded");
        }
        Ok(())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Read `tls.crt`, `tls.key` and `ca.crt` (as cert-manager writes them).
pub fn read_cert_dir(dir: &Path) -> anyhow::Result<CertBundle> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .with_context(|| format!("reading {}", dir.join(f).display()))
    };
    Ok(CertBundle {
        cert_pem: read("tls.crt")?,
        key_pem: read("tls.key")?,
        ca_pem: read("ca.crt")?,
    })
}
