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

    /// Extra PEM CA bundle trusted for provider connections (in addition to
    /// the webpki roots).
    #[arg(long, env = "TOKENWARDEN_SIDECAR_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// fsync the ledger after every record (survives power loss, not just
    /// process death; slower).
    #[arg(long, env = "TOKENWARDEN_SIDECAR_LEDGER_FSYNC")]
    pub ledger_fsync: bool,

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

/// Run the parsed command line.
pub fn run(args: Args) -> ExitCode {
    if let Some(Command::Report {
        state_dir,
        policy_file,
        namespace,
        labels,
    }) = &args.command
    {
        return report_command(state_dir, policy_file.as_deref(), namespace, labels);
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
    // Before the read: a change made after it is seen by the first poll.
    let seen = crate::run::fingerprint(&path, args.secrets_dir.as_deref());
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
            seen,
        },
    )
}

pub(crate) fn config_error(msg: &str) -> ExitCode {
    eprintln!("tokenwarden-sidecar: invalid configuration: {msg}");
    ExitCode::from(EXIT_CONFIG)
}

fn report_command(
    state_dir: &std::path::Path,
    policy: Option<&std::path::Path>,
    namespace: &str,
    labels: &str,
) -> ExitCode {
    let budgets = match policy {
        None => None,
        Some(path) => {
            let labels = match parse_labels(labels) {
                Ok(l) => l,
                Err(e) => return config_error(&format!("--labels: {e}")),
            };
            match PolicySet::from_path(path) {
                Ok(set) => Some(set.compile(namespace, &labels).budgets),
                Err(e) => return config_error(&e.to_string()),
            }
        }
    };
    match crate::ledger::read(state_dir) {
        Ok(agg) => {
            print!("{}", report(&agg));
            print!(
                "{}",
                report_budgets(&agg, budgets.as_deref(), jiff::Timestamp::now())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokenwarden-sidecar report: {e}");
            ExitCode::from(1)
        }
    }
}

/// The budget part of `report`. With the compiled budgets (`configured`):
/// a table of each one's current period at `now`, as `GET /ledger` shows
/// it, then a line for each budget the ledger holds that the config no
/// longer has. Without: the ledger's latest period of each budget.
pub fn report_budgets(
    agg: &Aggregate,
    configured: Option<&[tokenwarden_core::config::BudgetConfig]>,
    now: jiff::Timestamp,
) -> String {
    use tokenwarden_core::budget::BudgetState;
    let mut s = String::new();
    let note = match configured {
        None => {
            " (limits and state: give report the sidecar's --policy-file, --namespace and --labels)"
        }
        Some([]) => {
            " (no TokenBudget in the policy file selects this workload: check --namespace and --labels)"
        }
        Some(_) => " (no longer in the policy file)",
    };
    let configured = configured.unwrap_or_default();
    if !configured.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<32} {:<8} {:<22} {:<22} {:>14} {:>14} {:>14} {:>6} {:>11} {:>11} {:<9}",
            "BUDGET",
            "PERIOD",
            "START",
            "END",
            "SPENT USD",
            "LIMIT USD",
            "REMAINING USD",
            "USED",
            "TOKENS",
            "LIMIT TOK",
            "STATE"
        );
    }
    for cfg in configured {
        let id = cfg.source.to_string();
        let state = BudgetState::from_ledger(cfg.clone(), now, |start| {
            agg.budget_period(&cfg.source, start)
        });
        let Ok(b) = state else {
            let _ = writeln!(s, "{:<32} invalid period or time zone", truncate(&id, 32));
            continue;
        };
        let t = b.totals();
        let dash = || "-".to_string();
        let _ = writeln!(
            s,
            "{:<32} {:<8} {:<22} {:<22} {:>14} {:>14} {:>14} {:>6} {:>11} {:>11} {:<9}",
            truncate(&id, 32),
            cfg.period.to_string(),
            b.window().start.to_string(),
            b.window().end.to_string(),
            money(t.spent),
            cfg.limit_usd.map_or_else(dash, money),
            b.remaining_usd().map_or_else(dash, money),
            format!("{}%", b.percent_spent()),
            t.tokens(),
            cfg.limit_tokens.map_or_else(dash, |l| l.to_string()),
            format!(
                "{}{}",
                b.state().as_str(),
                if cfg.shadow { " (shadow)" } else { "" }
            ),
        );
    }
    for (budget, periods) in &agg.budgets {
        if configured.iter().any(|c| &c.source == budget) {
            continue;
        }
        if let Some((start, t)) = periods.last_key_value() {
            let _ = writeln!(
                s,
                "budget {budget}: period from {start}: spent {} over {} requests, {} tokens{}",
                money(t.spent),
                t.requests,
                t.tokens(),
                note
            );
        }
    }
    trim_lines(&s)
}

/// The text with no padding left at the ends of its lines.
fn trim_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
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
            "{} requests have estimated usage (cut off or answered without usage, or in flight when the sidecar stopped: see docs/guarantees.md)",
            total.estimated_requests
        );
    }
    trim_lines(&s)
}

/// The exact amount in dollars, at least to the cent: `$8.50`,
/// `$0.00041125`, `-$1.00`. Never rounded, so the columns of a report add
/// up to its total and match `GET /ledger` digit for digit.
pub fn money(u: Usd) -> String {
    let exact = u.to_string();
    let (sign, digits) = match exact.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", exact.as_str()),
    };
    let pad = match digits.find('.') {
        None => ".00",
        Some(dot) if digits.len() - dot == 2 => "0",
        Some(_) => "",
    };
    format!("{sign}${digits}{pad}")
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

#[cfg(test)]
mod tests {
    use tokenwarden_core::{budget::Totals, catalog::Usage, config::ObjectRef};

    use super::*;

    const BUDGETS: &str = r#"
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: team, namespace: apps}
spec:
  workloadSelector: {matchLabels: {app: agent}}
  period: Daily
  timeZone: Europe/Berlin
  limit: {usd: "10.00"}
  thresholds:
    - {percent: 80, action: Alert}
    - {percent: 100, action: Block}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: tokens, namespace: apps}
spec:
  workloadSelector: {matchLabels: {app: agent}}
  period: Monthly
  limit: {tokens: 1000}
  thresholds:
    - {percent: 100, action: Block}
"#;

    fn id(name: &str) -> ObjectRef {
        ObjectRef {
            namespace: "apps".into(),
            name: name.into(),
        }
    }

    fn spent(agg: &mut Aggregate, name: &str, start: &str, usd: &str, tokens: u64) {
        let totals = Totals {
            spent: usd.parse().unwrap(),
            usage: Usage {
                input_tokens: tokens,
                ..Usage::default()
            },
            requests: 3,
            unpriced_requests: 0,
        };
        agg.budgets
            .entry(id(name))
            .or_default()
            .insert(start.parse().unwrap(), totals);
    }

    fn configured(labels: &str) -> Vec<tokenwarden_core::config::BudgetConfig> {
        let set = PolicySet::from_yaml("budgets.yaml", BUDGETS).unwrap();
        set.compile("apps", &parse_labels(labels).unwrap()).budgets
    }

    fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{table}"))
            .split_whitespace()
            .collect()
    }

    #[test]
    fn estimated_rows_are_explained_for_every_cause() {
        let mut agg = Aggregate::default();
        let mut rec = |estimated| {
            let r = tokenwarden_core::ledger::UsageRecord {
                seq: agg.last_seq + 1,
                ts: "2026-12-03T10:00:00Z".parse().unwrap(),
                endpoint: tokenwarden_core::config::Endpoint::ChatCompletions,
                requested_model: "m".into(),
                served_model: "m".into(),
                provider: "openai".into(),
                route: None,
                score: None,
                reason: None,
                attempt: 1,
                status: 200,
                usage: Usage::default(),
                cost: Some(Usd::ZERO),
                estimated,
                budgets: vec![],
                intent: None,
            };
            agg.add(&r);
        };
        rec(true);
        rec(false);
        let text = report(&agg);
        assert!(
            text.contains("1 requests have estimated usage (cut off or answered without usage, or in flight when the sidecar stopped"),
            "{text}"
        );
        assert!(!text.contains("streams cut off"), "{text}");
    }

    #[test]
    fn money_is_exact_and_at_least_to_the_cent() {
        let m = |s: &str| money(s.parse().unwrap());
        assert_eq!(m("0"), "$0.00");
        assert_eq!(m("100"), "$100.00");
        assert_eq!(m("8.5"), "$8.50");
        assert_eq!(m("2.25"), "$2.25");
        assert_eq!(m("0.00041125"), "$0.00041125");
        assert_eq!(m("0.000000000001"), "$0.000000000001");
        assert_eq!(money(Usd::from_picos(-1_000_000_000_000)), "-$1.00");
        assert_eq!(money(Usd::from_picos(-500_000_000_000)), "-$0.50");
    }

    #[test]
    fn budgets_show_the_current_period_with_limit_remaining_and_state() {
        let mut agg = Aggregate::default();
        // Berlin is UTC+1 in December: the day began at 23:00 UTC.
        spent(&mut agg, "team", "2026-12-02T23:00:00Z", "8.5", 40);
        spent(&mut agg, "tokens", "2026-11-30T23:00:00Z", "0.01", 1000);
        let now = "2026-12-03T10:00:00Z".parse().unwrap();
        let text = report_budgets(&agg, Some(&configured("app=agent")), now);
        assert_eq!(
            row(&text, "apps/team"),
            [
                "apps/team",
                "Daily",
                "2026-12-02T23:00:00Z",
                "2026-12-03T23:00:00Z",
                "$8.50",
                "$10.00",
                "$1.50",
                "85%",
                "40",
                "-",
                "Threshold"
            ]
        );
        // No time zone: UTC; the month's tokens are used up.
        let tokens = row(&text, "apps/tokens");
        assert_eq!(tokens[2], "2026-12-01T00:00:00Z");
        assert_eq!(tokens[3], "2027-01-01T00:00:00Z");
        // The ledger's period began in Berlin's November 30th, 23:00 UTC;
        // the UTC month begins an hour later: another period, nothing spent.
        assert_eq!(&tokens[4..], ["$0.00", "-", "-", "0%", "0", "1000", "Ok"]);
        assert!(text.lines().all(|l| l == l.trim_end()), "{text:?}");
        let models = report(&agg);
        assert!(models.lines().all(|l| l == l.trim_end()), "{models:?}");
    }

    #[test]
    fn a_period_that_ended_counts_nothing_in_the_current_one() {
        let mut agg = Aggregate::default();
        spent(&mut agg, "team", "2026-12-01T23:00:00Z", "9.99", 10);
        let now = "2026-12-03T10:00:00Z".parse().unwrap();
        let text = report_budgets(&agg, Some(&configured("app=agent")), now);
        let team = row(&text, "apps/team");
        assert_eq!(team[2], "2026-12-02T23:00:00Z");
        assert_eq!(&team[4..8], ["$0.00", "$10.00", "$10.00", "0%"]);
        assert_eq!(team[10], "Ok");
    }

    #[test]
    fn without_a_matching_policy_the_ledger_s_latest_period_is_shown_and_why() {
        let mut agg = Aggregate::default();
        spent(&mut agg, "team", "2026-12-01T23:00:00Z", "1", 10);
        spent(&mut agg, "team", "2026-12-02T23:00:00Z", "2.25", 20);
        let now = "2026-12-03T10:00:00Z".parse().unwrap();
        let line = "budget apps/team: period from 2026-12-02T23:00:00Z: spent $2.25 over 3 requests, 20 tokens";

        let text = report_budgets(&agg, None, now);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with(line), "{text}");
        assert!(
            text.contains("give report the sidecar's --policy-file"),
            "{text}"
        );

        let text = report_budgets(&agg, Some(&configured("app=other")), now);
        assert!(text.starts_with(line), "{text}");
        assert!(text.contains("check --namespace and --labels"), "{text}");

        // A budget the policy dropped is still listed, after the table.
        let only_tokens: Vec<_> = configured("app=agent")
            .into_iter()
            .filter(|b| b.source.name == "tokens")
            .collect();
        let text = report_budgets(&agg, Some(&only_tokens), now);
        assert!(row(&text, "apps/tokens").len() == 11, "{text}");
        assert!(
            text.contains(&format!("{line} (no longer in the policy file)")),
            "{text}"
        );
    }
}
