//! Command line: flags, their environment variables, and the run modes.

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use clap::{Parser, ValueEnum};
use tokenwarden_core::{
    config::{DowngradeTarget, Target, ThresholdAction, WorkloadConfig},
    selector::{Labels, parse_labels},
};

use crate::{EXIT_CONFIG, policy_file::PolicySet};

/// tokenwarden sidecar: routes, meters and caps a workload's LLM calls.
#[derive(Debug, Parser)]
#[command(name = "tokenwarden-sidecar", version, about)]
pub struct Args {
    /// Standalone mode: a YAML file (or a directory of them) of RoutingPolicy
    /// and TokenBudget objects, the same documents a cluster uses, compiled
    /// for this workload.
    #[arg(long, env = "TOKENWARDEN_POLICY_FILE", value_name = "FILE")]
    pub policy_file: Option<PathBuf>,

    /// Directory of provider keys, laid out as Kubernetes mounts a Secret:
    /// DIR/<secretName>/<key>.
    #[arg(long, env = "TOKENWARDEN_SECRETS_DIR", value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Directory for durable state (ledger, spool).
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

    /// Validate the policy file, print the compiled config and exit: 0 when
    /// valid, 64 with field paths when not.
    #[arg(long)]
    pub check_config: bool,

    /// Output format of `--check-config`.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// How `--check-config` prints the compiled config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A summary for people.
    Text,
    /// The compiled config as JSON (what the sidecar runs).
    Json,
}

/// Run the parsed command line.
pub fn run(args: Args) -> ExitCode {
    let labels = match parse_labels(&args.labels) {
        Ok(l) => l,
        Err(e) => return config_error(&format!("--labels: {e}")),
    };
    let Some(path) = &args.policy_file else {
        return config_error("--policy-file is required (standalone mode)");
    };
    let set = match PolicySet::from_path(path) {
        Ok(s) => s,
        Err(e) => return config_error(&e.to_string()),
    };
    if !args.check_config {
        eprintln!(
            "tokenwarden-sidecar: the proxy is not part of this build yet; \
             use --check-config to validate and compile a policy file"
        );
        return ExitCode::from(2);
    }
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
    ExitCode::SUCCESS
}

fn config_error(msg: &str) -> ExitCode {
    eprintln!("tokenwarden-sidecar: invalid configuration: {msg}");
    ExitCode::from(EXIT_CONFIG)
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
        let mut thresholds: Vec<_> = b
            .thresholds
            .iter()
            .map(|t| match &t.action {
                ThresholdAction::Alert => format!("{}% alert", t.percent),
                ThresholdAction::Block => format!("{}% block", t.percent),
                ThresholdAction::Downgrade(DowngradeTarget::Tier(t2)) => {
                    format!("{}% downgrade to tier {t2}", t.percent)
                }
                ThresholdAction::Downgrade(DowngradeTarget::Model(m)) => {
                    format!("{}% downgrade to model {m}", t.percent)
                }
            })
            .collect();
        let mut extras = Vec::new();
        if let Some(cap) = b.per_request_cap_usd {
            extras.push(format!("per-request cap ${cap}"));
        }
        if let Some(lg) = b.loop_guard {
            extras.push(format!(
                "loop guard {} identical in {}s, cool-down {}s",
                lg.max_identical,
                lg.window_ms / 1000,
                lg.cooldown_ms / 1000
            ));
        }
        if b.fail_mode == tokenwarden_core::config::FailMode::Open {
            extras.push("fail open".to_string());
        }
        if !extras.is_empty() {
            thresholds.extend(extras);
        }
        let _ = writeln!(
            s,
            "budget: TokenBudget {} {} {} ({}){}{}",
            b.source,
            b.period,
            limit.join(" / "),
            b.time_zone,
            if thresholds.is_empty() {
                String::new()
            } else {
                format!(": {}", thresholds.join(", "))
            },
            if b.shadow { " [shadow]" } else { "" }
        );
    }
    for w in &cfg.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}
