//! The sidecar injection itself: a pure function from a Pod (and the
//! policies that may select it) to the JSONPatch that adds the sidecar.
//!
//! No I/O here, so every rule is tested on fixtures (`operator/tests/
//! webhook_inject.rs`) and the patched Pod is checked by kubernetes-validate.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Serialize;
use serde_json::{Value, json};
use tokenwarden_core::selector::Labels;

use crate::source::Objects;

/// The opt-in / opt-out label, on a namespace or a pod.
pub const INJECT_LABEL: &str = "tokenwarden.dev/inject";
/// Value of [`INJECT_LABEL`] that opts in.
pub const INJECT_ENABLED: &str = "enabled";
/// Value of [`INJECT_LABEL`] that opts a pod (or namespace) out.
pub const INJECT_DISABLED: &str = "disabled";
/// Name of the injected init container (a native sidecar).
pub const SIDECAR_NAME: &str = "tokenwarden-sidecar";

/// Annotation set on injected pods: the operator version that injected them.
pub const ANNOTATION_INJECTED: &str = "tokenwarden.dev/injected";
/// Annotation: the sidecar image injected.
pub const ANNOTATION_IMAGE: &str = "tokenwarden.dev/sidecar-image";
/// Annotation: the provider-key Secrets mounted into the sidecar, comma-separated.
pub const ANNOTATION_SECRETS: &str = "tokenwarden.dev/provider-secrets";
/// Annotation: the control plane's CA (PEM). The sidecar reads it as a file
/// through the downward API: a Secret of the operator's namespace cannot be
/// mounted into an app namespace.
pub const ANNOTATION_CA: &str = "tokenwarden.dev/control-plane-ca";

/// Audience of the projected service-account token the sidecar presents.
pub const TOKEN_AUDIENCE: &str = "tokenwarden";

const VOL_STATE: &str = "tokenwarden-state";
const VOL_TOKEN: &str = "tokenwarden-token";
const VOL_PODINFO: &str = "tokenwarden-podinfo";
const VOL_KEY_PREFIX: &str = "tokenwarden-key-";
const DIR_STATE: &str = "/var/lib/tokenwarden";
const DIR_TOKEN: &str = "/var/run/tokenwarden/token";
const DIR_PODINFO: &str = "/var/run/tokenwarden/podinfo";
const DIR_SECRETS: &str = "/var/run/tokenwarden/secrets";
const VOL_OTEL_CA: &str = "tokenwarden-otel-ca";
const VOL_OTEL_CLIENT: &str = "tokenwarden-otel-client";
/// Where the collector's CA bundle (from `--sidecar-otel-ca-configmap`) is
/// mounted in the sidecar: `OTEL_EXPORTER_OTLP_CERTIFICATE` names its
/// `ca.crt`.
pub const DIR_OTEL_CA: &str = "/var/run/tokenwarden/otel-ca";
/// Where the sidecar's client certificate (from
/// `--sidecar-otel-client-cert-secret`) is mounted: `tls.crt` and `tls.key`.
pub const DIR_OTEL_CLIENT: &str = "/var/run/tokenwarden/otel-client";
/// Placeholder key given to SDKs that refuse to start without one; the
/// sidecar replaces it with the real key from the Secret.
pub const PLACEHOLDER_API_KEY: &str = "injected-by-tokenwarden";

/// Everything the injection needs besides the Pod: chart values, turned into
/// flags, plus the operator's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectConfig {
    /// The operator's namespace: never injected.
    pub operator_namespace: String,
    /// Further namespaces never injected (kube-system by default).
    pub excluded_namespaces: Vec<String>,
    /// Sidecar image.
    pub image: String,
    /// `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: String,
    /// `https://tokenwarden-control.<ns>.svc:15810`.
    pub control_plane: String,
    /// Port for app traffic on 127.0.0.1.
    pub port: u16,
    /// Admin port (`/healthz`, `/readyz`, `/metrics`). It listens on all
    /// addresses: the kubelet probes the pod IP, not loopback.
    pub admin_port: u16,
    /// Resource requests, e.g. `{"cpu": "50m", "memory": "64Mi"}`.
    pub requests: BTreeMap<String, String>,
    /// Resource limits, e.g. `{"memory": "256Mi"}`.
    pub limits: BTreeMap<String, String>,
    /// UID and GID the sidecar runs as (non-root).
    pub run_as_user: i64,
    /// Lifetime of the projected token, seconds (kubelet rotates it).
    pub token_expiration_seconds: i64,
    /// Size limit of the state emptyDir (e.g. `256Mi`); none when empty.
    pub state_size_limit: Option<String>,
    /// OpenTelemetry settings set on every injected sidecar as the standard
    /// `OTEL_*` variables; `None`: none are set (sidecars export nothing).
    pub otel: Option<OtelInject>,
    /// Version recorded in the annotations.
    pub version: String,
}

/// What the webhook does with one Pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Leave the pod as it is, and why.
    Skip(SkipReason),
    /// Apply these operations (RFC 6902), in order.
    Patch {
        /// The operations.
        ops: Vec<PatchOp>,
        /// Provider-key Secrets mounted into the sidecar.
        secrets: Vec<String>,
    },
}

/// Why a pod is not injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The pod carries `tokenwarden.dev/inject=disabled`.
    OptedOut,
    /// The operator's own namespace, or an excluded one such as kube-system.
    ExcludedNamespace(String),
    /// The pod already has the sidecar (or the annotation).
    AlreadyInjected,
    /// Host-network pods share the node's loopback: the sidecar's port
    /// would clash between pods.
    HostNetwork,
}

/// One JSONPatch operation. Only `add` is needed: injection never removes or
/// replaces what the user wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOp {
    /// Always `add`.
    pub op: &'static str,
    /// JSON pointer.
    pub path: String,
    /// The value added.
    pub value: Value,
}

// === impl SkipReason ===

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::OptedOut => write!(f, "pod label {INJECT_LABEL}={INJECT_DISABLED}"),
            SkipReason::ExcludedNamespace(ns) => write!(f, "namespace {ns} is never injected"),
            SkipReason::AlreadyInjected => write!(f, "already injected"),
            SkipReason::HostNetwork => write!(f, "hostNetwork pods are not injected"),
        }
    }
}

// === impl PatchOp ===

impl PatchOp {
    fn add(path: impl Into<String>, value: Value) -> Self {
        PatchOp {
            op: "add",
            path: path.into(),
            value,
        }
    }
}

/// The provider-key Secrets of every valid RoutingPolicy in `namespace` whose
/// workload selector matches `labels`, sorted and deduplicated.
///
/// Every selecting policy counts, not only the one that wins precedence: a
/// pod's volumes are fixed at creation, and the winner can change later
/// (a higher-priority policy deleted) without restarting the pod.
pub fn provider_secrets(objects: &Objects, namespace: &str, labels: &Labels) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (id, policy) in &objects.policies {
        if id.namespace != namespace {
            continue;
        }
        let Ok(input) = policy.to_input() else {
            continue;
        };
        if input.selector.matches(labels) {
            for p in &policy.spec.providers {
                out.insert(p.api_key_secret_ref.name.clone());
            }
        }
    }
    out.into_iter().collect()
}

/// Decide and build the patch for `pod` created in `namespace`.
///
/// `secrets` are the provider-key Secrets to mount (see
/// [`provider_secrets`]); `ca_pem` is the control plane's CA bundle.
pub fn inject(
    pod: &Pod,
    namespace: &str,
    secrets: &[String],
    ca_pem: &str,
    cfg: &InjectConfig,
) -> Outcome {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if labels.get(INJECT_LABEL).map(String::as_str) == Some(INJECT_DISABLED) {
        return Outcome::Skip(SkipReason::OptedOut);
    }
    if namespace == cfg.operator_namespace || cfg.excluded_namespaces.iter().any(|n| n == namespace)
    {
        return Outcome::Skip(SkipReason::ExcludedNamespace(namespace.to_string()));
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec.init_containers.clone().unwrap_or_default();
    if annotations.contains_key(ANNOTATION_INJECTED)
        || init.iter().any(|c| c.name == SIDECAR_NAME)
        || spec.containers.iter().any(|c| c.name == SIDECAR_NAME)
    {
        return Outcome::Skip(SkipReason::AlreadyInjected);
    }
    if spec.host_network == Some(true) {
        return Outcome::Skip(SkipReason::HostNetwork);
    }

    let mut ops = Vec::new();
    // App env first, on the original indices: inserting the sidecar at
    // initContainers/0 shifts the init containers afterwards.
    let app_env = app_env(cfg);
    for (i, c) in init.iter().enumerate() {
        env_ops(&mut ops, &format!("/spec/initContainers/{i}"), c, &app_env);
    }
    for (i, c) in spec.containers.iter().enumerate() {
        env_ops(&mut ops, &format!("/spec/containers/{i}"), c, &app_env);
    }

    // The sidecar goes first, so the app's own init containers can use it.
    let sidecar = sidecar_container(secrets, cfg);
    if spec.init_containers.is_none() {
        ops.push(PatchOp::add("/spec/initContainers", json!([sidecar])));
    } else {
        ops.push(PatchOp::add("/spec/initContainers/0", sidecar));
    }

    let volumes = volumes(secrets, cfg);
    if spec.volumes.is_none() {
        ops.push(PatchOp::add("/spec/volumes", Value::Array(volumes)));
    } else {
        for v in volumes {
            ops.push(PatchOp::add("/spec/volumes/-", v));
        }
    }

    let new_annotations = [
        (ANNOTATION_INJECTED, cfg.version.clone()),
        (ANNOTATION_IMAGE, cfg.image.clone()),
        (ANNOTATION_SECRETS, secrets.join(",")),
        (ANNOTATION_CA, ca_pem.to_string()),
    ];
    if pod.metadata.annotations.is_none() {
        let map: serde_json::Map<String, Value> = new_annotations
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        ops.push(PatchOp::add("/metadata/annotations", Value::Object(map)));
    } else {
        for (k, v) in new_annotations {
            ops.push(PatchOp::add(
                format!("/metadata/annotations/{}", escape_pointer(k)),
                Value::String(v),
            ));
        }
    }
    Outcome::Patch {
        ops,
        secrets: secrets.to_vec(),
    }
}

/// Env vars every app container gets, so SDKs talk to the sidecar with no
/// code change. `(name, value, only_without_env_from)`: API-key placeholders
/// are added only when the container could not have the key from `envFrom`
/// (an `env` entry would shadow it).
fn app_env(cfg: &InjectConfig) -> Vec<(&'static str, String, bool)> {
    let base = format!("http://127.0.0.1:{}", cfg.port);
    vec![
        // openai-python / openai-node >= 1, LiteLLM, LangChain.
        ("OPENAI_BASE_URL", format!("{base}/v1"), false),
        // openai-python 0.x and older LangChain releases.
        ("OPENAI_API_BASE", format!("{base}/v1"), false),
        // anthropic-sdk-python / anthropic-sdk-typescript.
        ("ANTHROPIC_BASE_URL", base, false),
        // The SDKs refuse to start without a key; the sidecar swaps in the real one.
        ("OPENAI_API_KEY", PLACEHOLDER_API_KEY.to_string(), true),
        ("ANTHROPIC_API_KEY", PLACEHOLDER_API_KEY.to_string(), true),
    ]
}

/// Add the env vars a container does not set itself: its own value wins.
fn env_ops(
    ops: &mut Vec<PatchOp>,
    container_path: &str,
    c: &Container,
    app_env: &[(&'static str, String, bool)],
) {
    let has_env_from = c.env_from.as_ref().is_some_and(|e| !e.is_empty());
    let existing: BTreeSet<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    let add: Vec<Value> = app_env
        .iter()
        .filter(|(name, _, only_without_env_from)| {
            !(existing.contains(name) || (*only_without_env_from && has_env_from))
        })
        .map(|(name, value, _)| json!({"name": name, "value": value}))
        .collect();
    if add.is_empty() {
        return;
    }
    if c.env.is_none() {
        ops.push(PatchOp::add(
            format!("{container_path}/env"),
            Value::Array(add),
        ));
    } else {
        for v in add {
            ops.push(PatchOp::add(format!("{container_path}/env/-"), v));
        }
    }
}

/// The OpenTelemetry settings the injection gives every sidecar (chart
/// values `sidecar.otel.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct OtelInject {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf`.
    pub protocol: String,
    /// `OTEL_TRACES_SAMPLER`.
    pub sampler: String,
    /// `OTEL_TRACES_SAMPLER_ARG`, when set.
    pub sampler_arg: Option<String>,
    /// Resource attributes appended after the pod's own `k8s.*` ones.
    pub resource_attributes: Option<String>,
    /// `OTEL_EXPORTER_OTLP_HEADERS` from this key of a Secret in the pod's
    /// own namespace (`valueFrom.secretKeyRef`, optional: without the
    /// Secret the sidecar exports without the headers).
    pub headers_secret: Option<KeyRef>,
    /// The collector's CA bundle: this key of a ConfigMap in the pod's own
    /// namespace, mounted (optional) at [`DIR_OTEL_CA`]`/ca.crt`, which
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` names.
    pub ca_config_map: Option<KeyRef>,
    /// A `kubernetes.io/tls` Secret in the pod's own namespace: its
    /// `tls.crt` and `tls.key`, mounted (optional) at [`DIR_OTEL_CLIENT`],
    /// are the client certificate and key of mutual TLS
    /// (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `_CLIENT_KEY`).
    pub client_cert_secret: Option<String>,
}

/// A key of a Secret or ConfigMap, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// The object's name (a DNS-1123 subdomain).
    pub name: String,
    /// The key in its `data`.
    pub key: String,
}

/// The `OTEL_*` variables of an injected sidecar. They come after the
/// `TOKENWARDEN_SIDECAR_*` downward-API variables, so Kubernetes expands
/// `$(NAME)` references to them in `OTEL_RESOURCE_ATTRIBUTES`: every span
/// names the pod it came from.
fn otel_env(otel: &OtelInject) -> Vec<Value> {
    let mut resource = "k8s.namespace.name=$(TOKENWARDEN_SIDECAR_NAMESPACE),\
k8s.pod.name=$(TOKENWARDEN_SIDECAR_POD_NAME),k8s.pod.uid=$(TOKENWARDEN_SIDECAR_POD_UID),\
k8s.container.name="
        .to_string();
    resource.push_str(SIDECAR_NAME);
    if let Some(extra) = &otel.resource_attributes {
        resource.push(',');
        resource.push_str(extra);
    }
    let mut env = vec![
        json!({"name": "OTEL_SERVICE_NAME", "value": "tokenwarden-sidecar"}),
        json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": otel.endpoint}),
        json!({"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": otel.protocol}),
    ];
    if let Some(h) = &otel.headers_secret {
        // Never a plain value: the headers usually hold a token.
        env.push(
            json!({"name": "OTEL_EXPORTER_OTLP_HEADERS", "valueFrom": {"secretKeyRef": {
                "name": h.name, "key": h.key, "optional": true,
            }}}),
        );
    }
    if otel.ca_config_map.is_some() {
        env.push(json!({"name": "OTEL_EXPORTER_OTLP_CERTIFICATE", "value": format!("{DIR_OTEL_CA}/ca.crt")}));
    }
    if otel.client_cert_secret.is_some() {
        env.push(json!({"name": "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "value": format!("{DIR_OTEL_CLIENT}/tls.crt")}));
        env.push(json!({"name": "OTEL_EXPORTER_OTLP_CLIENT_KEY", "value": format!("{DIR_OTEL_CLIENT}/tls.key")}));
    }
    env.push(json!({"name": "OTEL_TRACES_SAMPLER", "value": otel.sampler}));
    if let Some(arg) = &otel.sampler_arg {
        env.push(json!({"name": "OTEL_TRACES_SAMPLER_ARG", "value": arg}));
    }
    env.push(json!({"name": "OTEL_RESOURCE_ATTRIBUTES", "value": resource}));
    env
}

fn sidecar_container(secrets: &[String], cfg: &InjectConfig) -> Value {
    let env_field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut mounts = vec![
        json!({"name": VOL_STATE, "mountPath": DIR_STATE}),
        json!({"name": VOL_TOKEN, "mountPath": DIR_TOKEN, "readOnly": true}),
        json!({"name": VOL_PODINFO, "mountPath": DIR_PODINFO, "readOnly": true}),
    ];
    for (i, s) in secrets.iter().enumerate() {
        mounts.push(json!({
            "name": format!("{VOL_KEY_PREFIX}{i}"),
            "mountPath": format!("{DIR_SECRETS}/{s}"),
            "readOnly": true,
        }));
    }
    if let Some(otel) = &cfg.otel {
        if otel.ca_config_map.is_some() {
            mounts.push(json!({"name": VOL_OTEL_CA, "mountPath": DIR_OTEL_CA, "readOnly": true}));
        }
        if otel.client_cert_secret.is_some() {
            mounts.push(
                json!({"name": VOL_OTEL_CLIENT, "mountPath": DIR_OTEL_CLIENT, "readOnly": true}),
            );
        }
    }
    let mut resources = serde_json::Map::new();
    if !cfg.requests.is_empty() {
        resources.insert("requests".into(), json!(cfg.requests));
    }
    if !cfg.limits.is_empty() {
        resources.insert("limits".into(), json!(cfg.limits));
    }
    let mut env = vec![
        env_field("TOKENWARDEN_SIDECAR_POD_NAME", "metadata.name"),
        env_field("TOKENWARDEN_SIDECAR_POD_UID", "metadata.uid"),
        env_field("TOKENWARDEN_SIDECAR_NAMESPACE", "metadata.namespace"),
    ];
    if let Some(otel) = &cfg.otel {
        env.extend(otel_env(otel));
    }
    let probe = |path: &str, failure_threshold: i32| {
        json!({
            "httpGet": {"path": path, "port": cfg.admin_port},
            "periodSeconds": if path == "/healthz" { 1 } else { 5 },
            "failureThreshold": failure_threshold,
        })
    };
    json!({
        "name": SIDECAR_NAME,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        // A native sidecar: runs for the pod's whole life, starts before the
        // app containers and stops after them (GA in Kubernetes 1.33).
        "restartPolicy": "Always",
        "args": [
            "--control-plane", cfg.control_plane,
            "--control-plane-ca", format!("{DIR_PODINFO}/control-plane-ca.crt"),
            "--credential-file", format!("{DIR_TOKEN}/token"),
            "--labels-file", format!("{DIR_PODINFO}/labels"),
            "--state-dir", DIR_STATE,
            "--secrets-dir", DIR_SECRETS,
            "--listen", format!("127.0.0.1:{}", cfg.port),
            // The kubelet probes the pod IP, so the admin port cannot stay on loopback.
            "--admin-listen", format!("0.0.0.0:{}", cfg.admin_port),
        ],
        "env": env,
        "ports": [{"name": "tw-admin", "containerPort": cfg.admin_port, "protocol": "TCP"}],
        // The app containers start once the proxy listens (startup), and the
        // pod is Ready only when the sidecar is (readiness).
        "startupProbe": probe("/healthz", 60),
        "readinessProbe": probe("/readyz", 3),
        "resources": Value::Object(resources),
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": cfg.run_as_user,
            "runAsGroup": cfg.run_as_user,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    })
}

fn volumes(secrets: &[String], cfg: &InjectConfig) -> Vec<Value> {
    let mut empty_dir = serde_json::Map::new();
    if let Some(limit) = &cfg.state_size_limit {
        empty_dir.insert("sizeLimit".into(), Value::String(limit.clone()));
    }
    let mut out = vec![
        json!({"name": VOL_STATE, "emptyDir": Value::Object(empty_dir)}),
        json!({"name": VOL_TOKEN, "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE,
            "expirationSeconds": cfg.token_expiration_seconds,
            "path": "token",
        }}]}}),
        json!({"name": VOL_PODINFO, "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "control-plane-ca.crt", "fieldRef": {"fieldPath": format!("metadata.annotations['{ANNOTATION_CA}']")}},
        ]}}),
    ];
    for (i, s) in secrets.iter().enumerate() {
        // optional: a Secret created after the pod, or a typo, must not keep
        // the app from starting; the sidecar reports the missing key.
        out.push(json!({
            "name": format!("{VOL_KEY_PREFIX}{i}"),
            "secret": {"secretName": s, "optional": true},
        }));
    }
    out.extend(cfg.otel.as_ref().map(otel_volumes).unwrap_or_default());
    out
}

/// The volumes of the collector's CA bundle and the sidecar's client
/// certificate, each from the pod's own namespace. Optional, so a namespace
/// without them still starts its pods: the file is then missing, and the
/// sidecar logs an error and exports nothing (traffic flows).
fn otel_volumes(otel: &OtelInject) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(ca) = &otel.ca_config_map {
        out.push(json!({"name": VOL_OTEL_CA, "configMap": {
            "name": ca.name,
            "items": [{"key": ca.key, "path": "ca.crt"}],
            "optional": true,
        }}));
    }
    if let Some(secret) = &otel.client_cert_secret {
        out.push(json!({"name": VOL_OTEL_CLIENT, "secret": {
            "secretName": secret,
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
            "optional": true,
        }}));
    }
    out
}

/// RFC 6901 escaping of one reference token.
fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escaping() {
        assert_eq!(
            escape_pointer("tokenwarden.dev/x~y"),
            "tokenwarden.dev~1x~0y"
        );
    }
}
