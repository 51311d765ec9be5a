//! The operator's command line: flags (each with its
//! `TOKENWARDEN_OPERATOR_*` variable), the checks they get before anything
//! starts, and local mode's default state directory.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::Parser;

use crate::{kube, usage_store, webhook};

/// Log format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands (without one, the operator runs).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print every Kubernetes API call the operator makes (the RBAC it
    /// needs) as JSON: `[{apiGroup, resource, subresource, verbs, scope,
    /// reason}]`, with `scope` `Cluster` or `Namespace` (the operator's).
    Rbac,
    /// Print cost history from the usage store (read-only): per UTC day and
    /// namespace, workload or model, or per budget period.
    History(usage_store::history::HistoryArgs),
}

/// tokenwarden operator.
///
/// Kubernetes mode (the default) reads RoutingPolicies and TokenBudgets
/// from the API server (in-cluster config or `KUBECONFIG`), elects a leader
/// on a Lease and serves the admission webhooks. With `--local-dir` it runs
/// on one machine instead, from a directory of YAML files.
#[derive(Debug, Parser)]
#[command(name = "tokenwarden-operator", version, about)]
pub struct Args {
    /// What to do instead of running.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Local mode: a directory of RoutingPolicy/TokenBudget YAML files
    /// (`*.yaml`, `*.yml`), watched, used instead of the Kubernetes API.
    #[arg(long, env = "TOKENWARDEN_OPERATOR_LOCAL_DIR", value_name = "DIR")]
    pub local_dir: Option<PathBuf>,

    /// Validate every object in `--local-dir`, print one line per object and
    /// exit: 0 when all are valid, 64 otherwise.
    #[arg(long)]
    pub check_config: bool,

    /// Local mode: where status files, the cluster ledger, events and the
    /// leader lock live (default: `<local-dir>.state`, beside the watched
    /// directory, never inside it).
    #[arg(long, env = "TOKENWARDEN_OPERATOR_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Local mode: a file holding the secret every sidecar presents
    /// (at least 16 characters).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SHARED_SECRET_FILE",
        value_name = "FILE"
    )]
    pub shared_secret_file: Option<PathBuf>,

    /// gRPC control server (sidecars connect here). Loopback by default;
    /// in a cluster the chart sets `0.0.0.0:15810`. Without
    /// `--tls-cert-file` a non-loopback address is refused unless
    /// `--allow-plaintext-control` is given.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_GRPC_LISTEN",
        default_value = "127.0.0.1:15810"
    )]
    pub grpc_listen: SocketAddr,

    /// Admin endpoints: /healthz, /readyz, /metrics (open to every client)
    /// and /ledger (cluster usage: loopback clients only, and in Kubernetes
    /// mode a bearer token whose user may get tokenbudgets in all
    /// namespaces). Loopback by default; the chart sets `0.0.0.0:15811`.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_ADMIN_LISTEN",
        default_value = "127.0.0.1:15811"
    )]
    pub admin_listen: SocketAddr,

    /// Kubernetes mode: read the Secret each RoutingPolicy's
    /// `spec.cache.redis.credentialsSecret` names (in the policy's
    /// namespace) and send its password to the sidecars with their config
    /// (over the control channel's TLS). Needs `get` on Secrets (the chart's
    /// `cacheCredentials.enabled`). Off: sidecars read the
    /// password from their own secrets dir.
    #[arg(long, env = "TOKENWARDEN_OPERATOR_CACHE_CREDENTIALS")]
    pub cache_credentials: bool,

    /// Local mode: serve the gRPC control plane in plaintext on a
    /// non-loopback `--grpc-listen` (the shared secret and all usage then
    /// cross the network unencrypted). Without it the operator refuses to
    /// start (exit 64); prefer `--tls-cert-file`.
    #[arg(long, env = "TOKENWARDEN_OPERATOR_ALLOW_PLAINTEXT_CONTROL")]
    pub allow_plaintext_control: bool,

    /// PEM certificate (chain) of the gRPC server. Local mode without it:
    /// plaintext, on a loopback `--grpc-listen` only (see
    /// `--allow-plaintext-control`). Kubernetes mode without it: the
    /// webhook's certificate, which names the control Service too.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of the gRPC server.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// This replica's control address, given to sidecars that reach a
    /// replica that does not lead (default: derived from the listen address).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_ADVERTISE_ADDRESS",
        value_name = "URL"
    )]
    pub advertise_address: Option<String>,

    /// Lease lifetime: a sidecar cut off from the operator may spend its
    /// lease this long.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_LEASE_TTL_SECS",
        default_value_t = 30
    )]
    pub lease_ttl_secs: u64,

    /// How long after expiry an unspent lease is still held back (for
    /// requests in flight when it expired) before it returns to the pool.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_LEASE_GRACE_SECS",
        default_value_t = 60
    )]
    pub lease_grace_secs: u64,

    /// At most one status write per budget per this interval.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_STATUS_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub status_interval_ms: u64,

    /// Log format.
    #[arg(long, env = "TOKENWARDEN_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Kubernetes mode: the operator's namespace (its Lease, certificate
    /// Secret and Pods). Default: the service account's namespace.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Kubernetes mode: this replica's Pod name (the Lease identity, and the
    /// Pod the leader labels).
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,

    /// Kubernetes mode: this replica's Pod IP, for the default advertise
    /// address `https://<pod-ip>:<grpc port>`.
    #[arg(long, env = "POD_IP", value_name = "IP")]
    pub pod_ip: Option<String>,

    /// Kubernetes mode: the Lease replicas elect a leader on.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_LEASE_NAME",
        default_value = kube::leader::DEFAULT_LEASE_NAME
    )]
    pub lease_name: String,

    /// Kubernetes mode: the ConfigMap (operator namespace) that holds the
    /// cluster ledger by namespace, workload and model.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_LEDGER_CONFIGMAP",
        default_value = kube::ledger::DEFAULT_NAME
    )]
    pub ledger_configmap: String,

    /// Admission webhooks and their certificates (Kubernetes mode).
    #[command(flatten)]
    pub webhook: webhook::WebhookArgs,

    /// The per-request usage store (PostgreSQL).
    #[command(flatten)]
    pub usage_store: usage_store::UsageStoreArgs,
}

/// A plaintext control server on an address other hosts can reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to serve the control plane in plaintext on {addr} (not a loopback address): \
     the shared secret and every usage record would cross the network unencrypted. \
     Give --tls-cert-file and --tls-key-file, listen on loopback \
     (--grpc-listen 127.0.0.1:15810), or pass --allow-plaintext-control"
)]
pub struct PlaintextRefused {
    /// The `--grpc-listen` address.
    pub addr: SocketAddr,
}

/// Refuse a plaintext control server on an address other hosts can reach:
/// local mode without `--tls-cert-file`, `--grpc-listen` not loopback, no
/// `--allow-plaintext-control`. (Kubernetes mode always speaks TLS.)
pub fn check_listeners(args: &Args) -> Result<(), PlaintextRefused> {
    let plaintext = args.local_dir.is_some() && args.tls_cert_file.is_none();
    if plaintext && !is_loopback(args.grpc_listen.ip()) && !args.allow_plaintext_control {
        return Err(PlaintextRefused {
            addr: args.grpc_listen,
        });
    }
    Ok(())
}

/// Loopback, also as an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`).
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// No state directory can be named beside the watched one.
#[derive(Debug, thiserror::Error)]
#[error("cannot derive a state directory beside {}: give --state-dir{}", .dir.display(), .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
pub struct StateDirError {
    /// The watched directory.
    pub dir: PathBuf,
    /// Why its absolute path could not be found.
    #[source]
    pub source: Option<std::io::Error>,
}

/// Local mode's default `--state-dir`: `<local-dir>.state`, beside the
/// watched directory (never inside it, where it would be part of what is
/// watched, copied or committed with the objects).
pub fn default_state_dir(local_dir: &Path) -> Result<PathBuf, StateDirError> {
    let need = |source| StateDirError {
        dir: local_dir.to_path_buf(),
        source,
    };
    let mut abs = std::path::absolute(local_dir).map_err(|e| need(Some(e)))?;
    // `.`, `..` or a trailing `..`: name the directory itself.
    if abs.file_name().is_none() {
        abs = std::fs::canonicalize(&abs).map_err(|e| need(Some(e)))?;
    }
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(need(None));
    };
    let mut state = name.to_os_string();
    state.push(".state");
    Ok(parent.join(state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("tokenwarden-operator").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The operator and the sidecar never read the same variable: exporting
    /// one binary's setting must not configure the other.
    #[test]
    fn every_environment_variable_has_the_operator_prefix() {
        let cmd = Args::command();
        let mut names = Vec::new();
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.push(env.to_string_lossy().into_owned());
            }
        }
        assert!(names.len() > 30, "{names:?}");
        let downward_api = ["POD_NAMESPACE", "POD_NAME", "POD_IP"];
        let stray: Vec<&String> = names
            .iter()
            .filter(|n| {
                !(n.starts_with("TOKENWARDEN_OPERATOR_") || downward_api.contains(&n.as_str()))
            })
            .collect();
        assert!(stray.is_empty(), "without the operator prefix: {stray:?}");
        assert!(names.contains(&"TOKENWARDEN_OPERATOR_STATE_DIR".to_string()));
        assert!(names.contains(&"TOKENWARDEN_OPERATOR_ALLOW_PLAINTEXT_CONTROL".to_string()));
    }

    #[test]
    fn otel_settings_for_injected_sidecars_are_checked_at_start() {
        let cfg = |extra: &[&str]| parse(extra).webhook.inject_config("tokenwarden");
        // No endpoint: nothing to inject.
        assert_eq!(cfg(&[]).unwrap().otel, None);
        let c = cfg(&[
            "--sidecar-otel-endpoint",
            "http://otel-collector.observability:4318",
            "--sidecar-otel-protocol",
            "http/protobuf",
            "--sidecar-otel-sampler-arg",
            "0.1",
        ])
        .unwrap()
        .otel
        .unwrap();
        assert_eq!(c.endpoint, "http://otel-collector.observability:4318");
        assert_eq!(c.protocol, "http/protobuf");
        assert_eq!(c.sampler, "parentbased_always_on");
        assert_eq!(c.sampler_arg.as_deref(), Some("0.1"));
        // TLS to the collector.
        let tls = cfg(&["--sidecar-otel-endpoint", "https://otel.example.com:4317"])
            .unwrap()
            .otel
            .unwrap();
        assert_eq!(tls.endpoint, "https://otel.example.com:4317");
        assert_eq!(tls.headers_secret, None);
        assert_eq!(tls.ca_config_map, None);
        assert_eq!(tls.client_cert_secret, None);
        for (flags, says) in [
            (
                &["--sidecar-otel-endpoint", "otel-collector:4317"][..],
                "must be an http:// or https:// URL",
            ),
            (
                &["--sidecar-otel-endpoint", "grpcs://collector.example.com"][..],
                "must be an http:// or https:// URL",
            ),
            (
                &[
                    "--sidecar-otel-endpoint",
                    "http://c:4317",
                    "--sidecar-otel-sampler-arg",
                    "2",
                ][..],
                "must be a ratio between 0 and 1",
            ),
            (
                &[
                    "--sidecar-otel-endpoint",
                    "http://c:4317",
                    "--sidecar-otel-resource-attributes",
                    "team",
                ][..],
                "\"team\" is not key=value",
            ),
        ] {
            let err = format!("{:#}", cfg(flags).unwrap_err());
            assert!(err.contains(says), "{flags:?}: {err}");
        }
        // An unknown protocol or sampler is refused by the parser itself.
        for flags in [
            &["--sidecar-otel-protocol", "http/json"][..],
            &["--sidecar-otel-sampler", "sometimes"][..],
        ] {
            let argv = std::iter::once("tokenwarden-operator").chain(flags.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{flags:?}");
        }
    }

    #[test]
    fn otel_secret_and_configmap_references_are_checked_at_start() {
        use crate::webhook::inject::KeyRef;
        let cfg = |extra: &[&str]| {
            let mut a = vec!["--sidecar-otel-endpoint", "https://otel.example.com:4317"];
            a.extend_from_slice(extra);
            parse(&a).webhook.inject_config("tokenwarden")
        };
        let c = cfg(&[
            "--sidecar-otel-headers-secret",
            "otel-auth/headers",
            "--sidecar-otel-ca-configmap",
            "corp-ca.v2/ca-bundle.pem",
            "--sidecar-otel-client-cert-secret",
            "otel-client",
        ])
        .unwrap()
        .otel
        .unwrap();
        assert_eq!(
            c.headers_secret,
            Some(KeyRef {
                name: "otel-auth".into(),
                key: "headers".into()
            })
        );
        assert_eq!(
            c.ca_config_map,
            Some(KeyRef {
                name: "corp-ca.v2".into(),
                key: "ca-bundle.pem".into()
            })
        );
        assert_eq!(c.client_cert_secret.as_deref(), Some("otel-client"));
        let long = "a".repeat(254);
        let long_flag = format!("{long}/k");
        for (flags, says) in [
            (
                &["--sidecar-otel-headers-secret", "otel-auth"][..],
                "--sidecar-otel-headers-secret \"otel-auth\": must be NAME/KEY",
            ),
            (
                &["--sidecar-otel-headers-secret", "Otel_Auth/headers"][..],
                "--sidecar-otel-headers-secret: \"Otel_Auth\" is not a Kubernetes object name",
            ),
            (
                &["--sidecar-otel-headers-secret", "otel-auth/"][..],
                "key \"\" must be letters, digits",
            ),
            (
                &["--sidecar-otel-headers-secret", "otel-auth/a/b"][..],
                "key \"a/b\" must be letters, digits",
            ),
            (
                &["--sidecar-otel-ca-configmap=-ca/ca.crt"][..],
                "--sidecar-otel-ca-configmap: \"-ca\" is not a Kubernetes object name",
            ),
            (
                &["--sidecar-otel-ca-configmap", "ca/..data"][..],
                "key \"..data\" must be letters, digits",
            ),
            (
                &["--sidecar-otel-ca-configmap", long_flag.as_str()][..],
                "is not a Kubernetes object name",
            ),
            (
                &["--sidecar-otel-client-cert-secret", "otel/client"][..],
                "--sidecar-otel-client-cert-secret: \"otel/client\" is not a Kubernetes object name",
            ),
            (
                &["--sidecar-otel-client-cert-secret", "a..b"][..],
                "is not a Kubernetes object name",
            ),
        ] {
            let err = format!("{:#}", cfg(flags).unwrap_err());
            assert!(err.contains(says), "{flags:?}: {err}");
        }
    }

    #[test]
    fn listeners_default_to_loopback() {
        let args = parse(&[]);
        assert_eq!(args.grpc_listen, "127.0.0.1:15810".parse().unwrap());
        assert_eq!(args.admin_listen, "127.0.0.1:15811".parse().unwrap());
        assert!(!args.allow_plaintext_control);
    }

    #[test]
    fn plaintext_control_is_refused_off_loopback() {
        let local = ["--local-dir", "objects", "--shared-secret-file", "secret"];
        let with = |extra: &[&str]| {
            let mut a = local.to_vec();
            a.extend_from_slice(extra);
            check_listeners(&parse(&a))
        };
        // Loopback, any form: fine.
        assert_eq!(with(&[]), Ok(()));
        assert_eq!(with(&["--grpc-listen", "127.0.0.2:1"]), Ok(()));
        assert_eq!(with(&["--grpc-listen", "[::1]:1"]), Ok(()));
        assert_eq!(with(&["--grpc-listen", "[::ffff:127.0.0.1]:1"]), Ok(()));
        // Anything else: refused, naming the flag that allows it.
        for addr in ["0.0.0.0:15810", "[::]:15810", "10.1.2.3:15810"] {
            let err = with(&["--grpc-listen", addr]).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "refusing to serve the control plane in plaintext on {}",
                    addr.parse::<SocketAddr>().unwrap()
                )),
                "{err}"
            );
            assert!(err.contains("--allow-plaintext-control"), "{err}");
            assert!(err.contains("--tls-cert-file"), "{err}");
        }
        assert_eq!(
            with(&["--grpc-listen", "0.0.0.0:1", "--allow-plaintext-control"]),
            Ok(())
        );
        assert_eq!(
            with(&[
                "--grpc-listen",
                "0.0.0.0:1",
                "--tls-cert-file",
                "c",
                "--tls-key-file",
                "k"
            ]),
            Ok(())
        );
        // Kubernetes mode always serves TLS (the webhook's certificate).
        assert_eq!(
            check_listeners(&parse(&["--grpc-listen", "0.0.0.0:15810"])),
            Ok(())
        );
    }

    fn state_dir(dir: &Path) -> Result<PathBuf, String> {
        default_state_dir(dir).map_err(|e| e.to_string())
    }

    #[test]
    fn the_default_state_dir_lies_beside_the_watched_dir() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(state_dir(&p("/srv/objects")), Ok(p("/srv/objects.state")));
        assert_eq!(state_dir(&p("/srv/objects/")), Ok(p("/srv/objects.state")));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(state_dir(&p("objects")), Ok(cwd.join("objects.state")));
        let here = std::fs::canonicalize(&cwd).unwrap();
        let mut name = here.file_name().unwrap().to_os_string();
        name.push(".state");
        let expected = here.parent().unwrap().join(&name);
        for dot in [".", "./"] {
            let got = state_dir(&p(dot)).unwrap();
            assert_eq!(
                std::fs::canonicalize(got.parent().unwrap()).unwrap(),
                std::fs::canonicalize(expected.parent().unwrap()).unwrap()
            );
            assert_eq!(got.file_name().unwrap(), name.as_os_str());
        }
        assert_eq!(
            state_dir(&p("/")),
            Err("cannot derive a state directory beside /: give --state-dir".to_string())
        );
        for dir in ["/srv/objects", "objects", ".", "/srv/a/../objects"] {
            let state = state_dir(&p(dir)).unwrap();
            let watched = std::path::absolute(dir).unwrap();
            assert!(
                !state.starts_with(&watched),
                "{} inside {}",
                state.display(),
                watched.display()
            );
        }
    }
}
