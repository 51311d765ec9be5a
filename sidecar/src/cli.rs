//! Command line: flags, their environment variables, and the run modes.

use std::{fmt::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use tokenwarden_core::{
    config::{DowngradeTarget, FailMode, Target, ThresholdAction, WorkloadConfig},
    ledger::Aggregate,
    money::Usd,
    selector::{Labels, parse_labels},
};

use crate::{EXIT_CONFIG, policy_file::PolicySet};

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
    #[arg(long, env = "TOKENWARDEN_POLICY_FILE", value_name = "FILE")]
    pub policy_file: Option<PathBuf>,

    /// Connected mode: the operator's control plane, `https://host:port`
    /// (TLS) or `http://host:port` (plaintext, for local mode and tests).
    /// Config, leases and the cluster-wide ledger come from it.
    #[arg(long, env = "TOKENWARDEN_CONTROL_PLANE", value_name = "URL")]
    pub control_plane: Option<String>,

    /// PEM CA bundle trusted for the control plane (default: webpki roots).
    #[arg(long, env = "TOKENWARDEN_CONTROL_PLANE_CA", value_name = "FILE")]
    pub control_plane_ca: Option<PathBuf>,

    /// The name the control plane's TLS certificate must carry (default: the
    /// host of `--control-plane`). Also checked on the address a `Redirect`
    /// points to, which is usually a replica's pod IP: every replica serves
    /// the same certificate, issued for the control Service's name.
    #[arg(
        long,
        env = "TOKENWARDEN_CONTROL_PLANE_SERVER_NAME",
        value_name = "DNS"
    )]
    pub control_plane_server_name: Option<String>,

    /// File holding the credential sent to the control plane (the projected
    /// service-account token, or the local shared secret); read afresh on
    /// every connect, never logged.
    #[arg(long, env = "TOKENWARDEN_CREDENTIAL_FILE", value_name = "FILE")]
    pub credential_file: Option<PathBuf>,

    /// This pod's name (connected mode).
    #[arg(long, env = "TOKENWARDEN_POD_NAME", default_value = "")]
    pub pod_name: String,

    /// This pod's UID (connected mode; prefix of the sidecar id).
    #[arg(long, env = "TOKENWARDEN_POD_UID", default_value = "")]
    pub pod_uid: String,

    /// Labels from a downward-API file (`key="value"` per line); merged
    /// under `--labels`.
    #[arg(long, env = "TOKENWARDEN_LABELS_FILE", value_name = "FILE")]
    pub labels_file: Option<PathBuf>,

    /// How long a request may wait for a lease grant before it is refused
    /// (connected mode), in milliseconds.
    #[arg(long, env = "TOKENWARDEN_LEASE_WAIT_MS", default_value_t = 5000)]
    pub lease_wait_ms: u64,

    /// Directory of provider keys, laid out as Kubernetes mounts a Secret:
    /// DIR/<secretName>/<key>.
    #[arg(long, env = "TOKENWARDEN_SECRETS_DIR", value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Directory for durable state (the ledger). Without it the ledger lives
    /// in memory only.
    #[arg(long, env = "TOKENWARDEN_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// This workload's labels, `k=v,k2=v2`; selectors match against them.
    #[arg(
        long,
        env = "TOKENWARDEN_LABELS",
        default_value = "",
        value_name = "LABELS"
    )]
    pub labels: String,

    /// This workload's namespace; only objects in it select the workload.
    #[arg(long, env = "TOKENWARDEN_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Address for app traffic.
    #[arg(long, env = "TOKENWARDEN_LISTEN", default_value = "127.0.0.1:15800")]
    pub listen: SocketAddr,

    /// Address for /healthz, /readyz, /metrics and /ledger.
    #[arg(
        long,
        env = "TOKENWARDEN_ADMIN_LISTEN",
        default_value = "127.0.0.1:15801"
    )]
    pub admin_listen: SocketAddr,

    /// Largest request body accepted (bytes); larger ones get 413.
    #[arg(long, env = "TOKENWARDEN_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long a request that fits a budget's spend, but not the worst
    /// cases other requests in flight have reserved, waits for them to
    /// settle before it is refused (ms; 0 refuses at once).
    #[arg(long, env = "TOKENWARDEN_RESERVATION_WAIT_MS", default_value_t = 5000)]
    pub reservation_wait_ms: u64,

    /// Extra PEM CA bundle trusted for provider connections (in addition to
    /// the webpki roots).
    #[arg(long, env = "TOKENWARDEN_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// fsync the ledger after every record (survives power loss, not just
    /// process death; slower).
    #[arg(long, env = "TOKENWARDEN_LEDGER_FSYNC")]
    pub ledger_fsync: bool,

    /// How often the policy file and secrets are checked for changes (ms).
    #[arg(long, env = "TOKENWARDEN_RELOAD_INTERVAL_MS", default_value_t = 1000)]
    pub reload_interval_ms: u64,

    /// Log format.
    #[arg(long, env = "TOKENWARDEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Worker threads (default: one per CPU).
    #[arg(long, env = "TOKENWARDEN_THREADS")]
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
    /// Print the ledger kept under a state dir as a table: which model eats the bill.
    Report {
        /// The sidecar's --state-dir.
        #[arg(long, env = "TOKENWARDEN_STATE_DIR", value_name = "DIR")]
        state_dir: PathBuf,
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

/// Run the parsed command line.
pub fn run(args: Args) -> ExitCode {
    if let Some(Command::Report { state_dir }) = &args.command {
        return match crate::ledger::read(state_dir) {
            Ok(agg) => {
                print!("{}", report(&agg));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tokenwarden-sidecar report: {e}");
                ExitCode::from(1)
            }
        };
    }
    let mut labels = match parse_labels(&args.labels) {
        Ok(l) => l,
        Err(e) => return config_error(&format!("--labels: {e}")),
    };
    if let Some(file) = &args.labels_file {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => return config_error(&format!("--labels-file {}: {e}", file.display())),
        };
        match crate::control::parse_labels_file(&text) {
            Ok(from_file) => {
                for (k, v) in from_file {
                    labels.entry(k).or_insert(v);
                }
            }
            Err(e) => return config_error(&format!("--labels-file {}: {e}", file.display())),
        }
    }
    let path = match (args.policy_file.clone(), args.control_plane.clone()) {
        (Some(_), Some(_)) => {
            return config_error(
                "--policy-file (standalone) and --control-plane (connected) exclude each other; give one",
            );
        }
        (None, None) => {
            return config_error(
                "one of --policy-file (standalone mode) or --control-plane (connected mode) is required",
            );
        }
        (None, Some(url)) => {
            if args.check_config {
                return config_error("--check-config needs --policy-file");
            }
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return config_error(&format!(
                    "--control-plane {url:?}: expected https://host:port or http://host:port"
                ));
            }
            let settings = crate::control::Settings {
                url,
                ca_file: args.control_plane_ca.clone(),
                server_name: args.control_plane_server_name.clone(),
                credential_file: args.credential_file.clone(),
                namespace: args.namespace.clone(),
                pod_name: args.pod_name.clone(),
                pod_uid: args.pod_uid.clone(),
                labels,
                lease_wait: std::time::Duration::from_millis(args.lease_wait_ms),
                state_dir: args.state_dir.clone(),
                fsync: args.ledger_fsync,
            };
            return crate::run::run(args, crate::run::Mode::Connected(settings));
        }
        (Some(path), None) => path,
    };
    let set = match PolicySet::from_path(&path) {
        Ok(s) => s,
        Err(e) => return config_error(&e.to_string()),
    };
    if args.check_config {
        let cfg = set.compile(&args.namespace, &labels);
        match args.output {
            Output::Json => match serde_json::to_string_pretty(&cfg) {
                Ok(s) => println!("{s}"),
                Err(e) => return config_error(&format!("cannot serialize the config: {e}")),
            },
            Output::Text => print!(
                "{}",
                summary(&path.display().to_string(), &set, &labels, &cfg)
            ),
        }
        return ExitCode::SUCCESS;
    }
    crate::run::run(
        args,
        crate::run::Mode::Standalone {
            policy: path,
            labels,
            set,
        },
    )
}

pub(crate) fn config_error(msg: &str) -> ExitCode {
    eprintln!("tokenwarden-sidecar: invalid configuration: {msg}");
    ExitCode::from(EXIT_CONFIG)
}

/// The per-model table of `report`.
pub fn report(agg: &Aggregate) -> String {
    let mut s = String::new();
    let total = agg.total();
    let mut models: Vec<_> = agg.models.iter().collect();
    models.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then(a.0.cmp(b.0)));
    let _ = writeln!(
        s,
        "{:<32} {:>9} {:>12} {:>11} {:>11} {:>11} {:>14} {:>6}",
        "MODEL (served)",
        "REQUESTS",
        "INPUT",
        "OUTPUT",
        "CACHE READ",
        "CACHE WRITE",
        "COST USD",
        "SHARE"
    );
    for (model, t) in &models {
        let share = if total.cost.picos() > 0 {
            format!(
                "{:.1}%",
                t.cost.picos() as f64 * 100.0 / total.cost.picos() as f64
            )
        } else {
            "-".into()
        };
        let cost = if t.unpriced_requests == t.requests && t.requests > 0 {
            "unpriced".to_string()
        } else {
            format!(
                "{}{}",
                money(t.cost),
                if t.unpriced_requests > 0 { "+?" } else { "" }
            )
        };
        let _ = writeln!(
            s,
            "{:<32} {:>9} {:>12} {:>11} {:>11} {:>11} {:>14} {:>6}",
            truncate(model, 32),
            t.requests,
            t.usage.input_tokens,
            t.usage.output_tokens,
            t.usage.cache_read_tokens,
            t.usage.cache_write_tokens,
            cost,
            share
        );
    }
    let _ = writeln!(
        s,
        "{:<32} {:>9} {:>12} {:>11} {:>11} {:>11} {:>14} {:>6}",
        "TOTAL",
        total.requests,
        total.usage.input_tokens,
        total.usage.output_tokens,
        total.usage.cache_read_tokens,
        total.usage.cache_write_tokens,
        money(total.cost),
        ""
    );
    if total.unpriced_requests > 0 {
        let _ = writeln!(
            s,
            "{} requests to unpriced models are not in the cost (marked +? / unpriced)",
            total.unpriced_requests
        );
    }
    if total.estimated_requests > 0 {
        let _ = writeln!(
            s,
            "{} requests have estimated usage (streams cut off before the usage event)",
            total.estimated_requests
        );
    }
    for (budget, periods) in &agg.budgets {
        if let Some((start, t)) = periods.last_key_value() {
            let _ = writeln!(
                s,
                "budget {budget}: period from {start}: spent {} over {} requests, {} tokens",
                money(t.spent),
                t.requests,
                t.tokens()
            );
        }
    }
    s
}

/// `$1.234567` with 6 decimals.
pub fn money(u: Usd) -> String {
    let micros = u.picos() / 1_000_000;
    format!("${}.{:06}", micros / 1_000_000, (micros % 1_000_000).abs())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// The human summary of a compiled config.
pub fn summary(origin: &str, set: &PolicySet, labels: &Labels, cfg: &WorkloadConfig) -> String {
    let mut s = String::new();
    let label_text = if labels.is_empty() {
        "(none)".to_string()
    } else {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let _ = writeln!(
        s,
        "{origin}: {} RoutingPolicy, {} TokenBudget, all valid",
        set.policies.len(),
        set.budgets.len()
    );
    let _ = writeln!(
        s,
        "workload: namespace {}, labels {label_text}",
        cfg.namespace
    );
    match &cfg.routing {
        None => {
            let _ = writeln!(s, "routing: no RoutingPolicy selects this workload");
        }
        Some(r) => {
            let _ = writeln!(
                s,
                "routing: RoutingPolicy {} ({} providers, {} tiers, {} routes)",
                r.source,
                r.providers.len(),
                r.tiers.len(),
                r.routes.len()
            );
            if !r.tiers.is_empty() {
                let ladder: Vec<_> = r
                    .tiers
                    .iter()
                    .map(|t| format!("{} ({}/{})", t.name, t.provider, t.model))
                    .collect();
                let _ = writeln!(s, "  tiers: {}", ladder.join(" -> "));
            }
            for route in &r.routes {
                let target = match &route.target {
                    Target::Tier(t) => format!("tier {t}"),
                    Target::Model { provider, model } => format!("{provider}/{model}"),
                    Target::Passthrough => "passthrough".to_string(),
                };
                let _ = writeln!(s, "  route {:<20} -> {target}", route.name);
            }
        }
    }
    if let Some(c) = &cfg.conflict {
        let shadowed: Vec<_> = c.shadowed.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "conflict: {} applies; shadowed: {}",
            c.chosen,
            shadowed.join(", ")
        );
    }
    if cfg.budgets.is_empty() {
        let _ = writeln!(s, "budgets: none select this workload");
    }
    for b in &cfg.budgets {
        let mut limit = Vec::new();
        if let Some(u) = b.limit_usd {
            limit.push(format!("${u}"));
        }
        if let Some(t) = b.limit_tokens {
            limit.push(format!("{t} tokens"));
        }
        let mut notes: Vec<_> = b
            .thresholds
            .iter()
            .map(|t| match &t.action {
                ThresholdAction::Alert => format!("{}% alert", t.percent),
                ThresholdAction::Block => format!("{}% block", t.percent),
                ThresholdAction::Downgrade(DowngradeTarget::Tier(tier)) => {
                    format!("{}% downgrade to tier {tier}", t.percent)
                }
                ThresholdAction::Downgrade(DowngradeTarget::Model(m)) => {
                    format!("{}% downgrade to model {m}", t.percent)
                }
            })
            .collect();
        if let Some(cap) = b.per_request_cap_usd {
            notes.push(format!("per-request cap ${cap}"));
        }
        if let Some(lg) = b.loop_guard {
            notes.push(format!(
                "loop guard {} identical in {}s, cool-down {}s",
                lg.max_identical,
                lg.window_ms / 1000,
                lg.cooldown_ms / 1000
            ));
        }
        if b.fail_mode == FailMode::Open {
            notes.push("fail open".to_string());
        }
        let _ = writeln!(
            s,
            "budget: TokenBudget {} {} {} ({}){}{}",
            b.source,
            b.period,
            limit.join(" / "),
            b.time_zone,
            if notes.is_empty() {
                String::new()
            } else {
                format!(": {}", notes.join(", "))
            },
            if b.shadow { " [shadow]" } else { "" }
        );
    }
    for w in &cfg.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}
