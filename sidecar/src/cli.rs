//! The process's entry: the run modes from the parsed command line, and
//! the `report` subcommand.

use std::process::ExitCode;

use tokenwarden_core::selector::parse_labels;

use crate::{
    args::{Args, Command, Output, config_error},
    policy_file::PolicySet,
    report::{report, report_budgets, summary},
};

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
        let cfg = set.compile(&args.namespace, &args.pod_name, &labels);
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
                Ok(set) => Some(set.compile(namespace, "", &labels).budgets),
                Err(e) => return config_error(&e.to_string()),
            }
        }
    };
    // The burn samples are read before the ledger: next to a running
    // sidecar, their latest is then never ahead of the totals the report
    // adds at `now` (totals only grow within a period).
    let burn = crate::forecast::load(state_dir).unwrap_or_else(|e| {
        eprintln!("tokenwarden-sidecar report: {e}: forecasts show no history");
        Default::default()
    });
    match tokenwarden_durable::read(state_dir) {
        Ok(agg) => {
            print!("{}", report(&agg));
            print!(
                "{}",
                report_budgets(&agg, budgets.as_deref(), &burn, jiff::Timestamp::now())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokenwarden-sidecar report: {e}");
            ExitCode::from(1)
        }
    }
}
