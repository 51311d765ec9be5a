//! `kubectl-tokenwarden`: the tokenwarden kubectl plugin (krew convention:
//! an executable named `kubectl-tokenwarden` on PATH is run by `kubectl
//! tokenwarden …` with the arguments as given). It also runs on its own,
//! without a cluster, for what-if replays of a sidecar's state dir or the
//! operator's PostgreSQL usage store, and
//! token-mix projections.

mod budgets;
mod costs;
mod explain;
mod kube;
mod output;
mod project;
mod usage_store;
mod whatif;

use clap::{Parser, Subcommand};

/// Flags every subcommand understands (kubectl passes them through as-is,
/// so the plugin parses them itself).
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = output::Format::Table)]
    pub output: output::Format,
}

#[derive(Debug, Parser)]
#[command(name = "kubectl tokenwarden", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The cluster ledger by namespace, workload and model.
    Costs(costs::Args),
    /// Every TokenBudget with spend, limit, forecast and state.
    Budgets(budgets::Args),
    /// What recorded traffic would have cost at other prices, on other models or under another RoutingPolicy.
    WhatIf(costs::WhatIfArgs),
    /// Project a hand-written token mix through a RoutingPolicy before deploying.
    Project(project::Args),
    /// Why a request went where it went, from its route and score headers.
    ExplainRequest(explain::Args),
    /// The Kubernetes API calls this plugin makes, as JSON (what the
    /// chart's tokenwarden-viewer RBAC grants; docs/kubectl-plugin.md).
    Rbac,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let res = rt.block_on(async {
        match &cli.command {
            Command::Costs(a) => costs::run(&cli.global, a).await,
            Command::Budgets(a) => budgets::run(&cli.global, a).await,
            Command::WhatIf(a) => costs::what_if(&cli.global, a).await,
            Command::Project(a) => project::run(&cli.global, a).await,
            Command::ExplainRequest(a) => explain::run(&cli.global, a).await,
            Command::Rbac => kube::rbac_json(),
        }
    });
    match res {
        Ok(out) => {
            print!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
