//! The command line's flags and their environment variables.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use crate::EXIT_CONFIG;

/// How long a response whose app went away is still read, when no
/// RoutingPolicy sets a per-try timeout.
pub const DEFAULT_DRAIN: std::time::Duration = std::time::Duration::from_secs(120);

/// tokenwarden sidecar: routes, meters and caps a workload's LLM calls.
#[derive(Debug, Parser)]
#[command(name = "tokenwarden-sidecar", version, about)]
pub struct Args {
    /// Subcommands; without one the sidecar runs the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Standalone mode: a YAML file (or a directory of them) of RoutingPolicy
    /// and TokenBudget objects, the same documents a cluster uses, compiled
    /// for this workload. Changes are picked up without a restart (polled,
    /// and on SIGHUP); an invalid change keeps the last good config.
    #[arg(long, env = "TOKENWARDEN_SIDECAR_POLICY_FILE", value_name = "FILE")]
    pub policy_file: Option<PathBuf>,

    /// Connected mode: the operator's control plane, `https://host:port`
    /// (TLS) or `http://host:port` (plaintext, for local mode and tests).
    /// Config, leases and the cluster-wide ledger come from it.
    #[arg(long, env = "TOKENWARDEN_SIDECAR_CONTROL_PLANE", value_name = "URL")]
    pub control_plane: Option<String>,

    /// PEM CA bundle trusted for the control plane (default: webpki roots).
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_CONTROL_PLANE_CA",
        value_name = "FILE"
    )]
    pub control_plane_ca: Option<PathBuf>,

    /// The name the control plane's TLS certificate must carry (default: the
    /// host of `--control-plane`). Also checked on the address a `Redirect`
    /// points to, which is usually a replica's pod IP: every replica serves
    /// the same certificate, issued for the control Service's name.
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_CONTROL_PLANE_SERVER_NAME",
        value_name = "DNS"
    )]
    pub control_plane_server_name: Option<String>,

    /// File holding the credential sent to the control plane (the projected
    /// service-account token, or the local shared secret); read afresh on
    /// every connect, never logged.
    #[arg(long, env = "TOKENWARDEN_SIDECAR_CREDENTIAL_FILE", value_name = "FILE")]
    pub credential_file: Option<PathBuf>,

    /// This pod's name (connected mode).
    #[arg(long, env = "TOKENWARDEN_SIDECAR_POD_NAME", default_value = "")]
    pub pod_name: String,

    /// This pod's UID (connected mode; prefix of the sidecar id).
    #[arg(long, env = "TOKENWARDEN_SIDECAR_POD_UID", default_value = "")]
    pub pod_uid: String,

    /// Labels from a downward-API file (`key="value"` per line); merged
    /// under `--labels`.
    #[arg(long, env = "TOKENWARDEN_SIDECAR_LABELS_FILE", value_name = "FILE")]
    pub labels_file: Option<PathBuf>,

    /// How long a request may wait for a lease grant before it is refused
    /// (connected mode), in milliseconds.
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_LEASE_WAIT_MS",
        default_value_t = 5000
    )]
    pub lease_wait_ms: u64,

    /// Directory of provider keys, laid out as Kubernetes mounts a Secret:
    /// DIR/<secretName>/<key>.
    #[arg(long, env = "TOKENWARDEN_SIDECAR_SECRETS_DIR", value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Directory for durable state (the ledger). Without it the ledger lives
    /// in memory only.
    #[arg(long, env = "TOKENWARDEN_SIDECAR_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// This workload's labels, `k=v,k2=v2`; selectors match against them.
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_LABELS",
        default_value = "",
        value_name = "LABELS"
    )]
    pub labels: String,

    /// This workload's namespace; only objects in it select the workload.
    #[arg(long, env = "TOKENWARDEN_SIDECAR_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Address for app traffic.
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_LISTEN",
        default_value = "127.0.0.1:15800"
    )]
    pub listen: SocketAddr,

    /// Address for /healthz, /readyz, /metrics and /ledger.
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_ADMIN_LISTEN",
        default_value = "127.0.0.1:15801"
    )]
    pub admin_listen: SocketAddr,

    /// Largest request body accepted (bytes); larger ones get 413.
    #[arg(long, env = "TOKENWARDEN_SIDECAR_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long a request that fits a budget's spend, but not the worst
    /// cases other requests in flight have reserved, waits for them to
    /// settle before it is refused (ms; 0 refuses at once).
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_RESERVATION_WAIT_MS",
        default_value_t = 5000
    )]
    pub reservation_wait_ms: u64,

    /// How long a new connection may take to send its first bytes, and
    /// each HTTP/1.1 request its head (ms); also how long a keep-alive
    /// connection may sit idle. Bounds slow or silent clients.
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_HEADER_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub header_timeout_ms: u64,

    /// How long a request body may take to arrive (ms); a slower one gets
    /// 408 in the provider's error shape.
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_BODY_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub body_timeout_ms: u64,

    /// How long a provider may stay silent after its response head (ms):
    /// a stream or body stalled longer is cut, the app's response ends with
    /// an error, and the attempt is settled from what passed (estimated).
    /// Long enough for reasoning models that think before they write.
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_UPSTREAM_IDLE_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    pub upstream_idle_timeout_ms: u64,

    /// Treat the providers' prompt-cache TTL as this many milliseconds
    /// when telling a cache bust from an expiry (default: the providers'
    /// own TTLs: Anthropic 5 minutes or 1 hour per breakpoint, OpenAI 5
    /// minutes or 24 hours with `prompt_cache_retention`). For simulators
    /// and tests whose provider expires entries sooner; leave unset in
    /// production.
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_PROMPT_CACHE_TTL_MS",
        value_name = "MS"
    )]
    pub prompt_cache_ttl_ms: Option<u64>,

    /// Extra PEM CA bundle trusted for provider connections (in addition to
    /// the webpki roots).
    #[arg(long, env = "TOKENWARDEN_SIDECAR_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// fsync the ledger after every record (survives power loss, not just
    /// process death; slower).
    #[arg(long, env = "TOKENWARDEN_SIDECAR_LEDGER_FSYNC")]
    pub ledger_fsync: bool,

    /// Bytes of compacted journal segments (`requests-N.jsonl` under
    /// `--state-dir`) kept for what-if replays, oldest dropped first; 0
    /// keeps none (compaction then drops per-request records).
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_REPLAY_KEEP_BYTES",
        default_value_t = tokenwarden_durable::DEFAULT_REPLAY_KEEP_BYTES
    )]
    pub replay_keep_bytes: u64,

    /// Forward requests even when their record cannot be written to the
    /// ledger (a full disk): their spend is then kept in memory only and
    /// lost on restart. The default refuses them with a 503 and reports
    /// not ready until the state dir takes writes again.
    #[arg(long, env = "TOKENWARDEN_SIDECAR_LEDGER_FAIL_OPEN")]
    pub ledger_fail_open: bool,

    /// How often the policy file and secrets are checked for changes (ms).
    #[arg(
        long,
        env = "TOKENWARDEN_SIDECAR_RELOAD_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub reload_interval_ms: u64,

    /// Log format.
    #[arg(long, env = "TOKENWARDEN_SIDECAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Worker threads (default: one per CPU).
    #[arg(long, env = "TOKENWARDEN_SIDECAR_THREADS")]
    pub threads: Option<usize>,

    /// Validate the policy file, print the compiled config and exit: 0 when
    /// valid, 64 with field paths when not.
    #[arg(long)]
    pub check_config: bool,

    /// Output format of `--check-config`.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the ledger kept under a state dir as a table: which model eats
    /// the bill, and each budget's current period. With the sidecar's
    /// --policy-file, --namespace and --labels (or their environment
    /// variables) the budgets show limit, remaining and state as
    /// `GET /ledger` does.
    Report {
        /// The sidecar's --state-dir.
        #[arg(long, env = "TOKENWARDEN_SIDECAR_STATE_DIR", value_name = "DIR")]
        state_dir: PathBuf,
        /// The sidecar's policy file: budget limits, periods and time zones.
        #[arg(long, env = "TOKENWARDEN_SIDECAR_POLICY_FILE", value_name = "FILE")]
        policy_file: Option<PathBuf>,
        /// The workload's namespace (with --policy-file).
        #[arg(long, env = "TOKENWARDEN_SIDECAR_NAMESPACE", default_value = "default")]
        namespace: String,
        /// The workload's labels, `k=v,...` (with --policy-file).
        #[arg(
            long,
            env = "TOKENWARDEN_SIDECAR_LABELS",
            default_value = "",
            value_name = "LABELS"
        )]
        labels: String,
    },
}

/// How `--check-config` prints the compiled config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A summary for people.
    Text,
    /// The compiled config as JSON (what the sidecar runs).
    Json,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Exit for bad configuration or arguments: the message, then
/// [`EXIT_CONFIG`].
pub fn config_error(msg: &str) -> ExitCode {
    eprintln!("tokenwarden-sidecar: invalid configuration: {msg}");
    ExitCode::from(EXIT_CONFIG)
}
