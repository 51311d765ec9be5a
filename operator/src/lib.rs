//! The tokenwarden operator.
//!
//! Today this crate provides the local object source's validation: it reads a
//! directory of RoutingPolicy and TokenBudget YAML files (what local mode
//! watches instead of the Kubernetes API) and validates every object with the
//! shared `validate()` (`--check-config`). The controllers, the gRPC control
//! server and the ledger build on this (see the README's roadmap).

pub mod local;
pub mod source;
pub mod webhook;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

/// Exit code for invalid configuration (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// tokenwarden operator.
#[derive(Debug, Parser)]
#[command(name = "tokenwarden-operator", version, about)]
pub struct Args {
    /// Local mode: a directory of RoutingPolicy/TokenBudget YAML files
    /// (`*.yaml`, `*.yml`), used instead of the Kubernetes API.
    #[arg(long, env = "TOKENWARDEN_LOCAL_DIR", value_name = "DIR")]
    pub local_dir: Option<PathBuf>,

    /// Validate every object in `--local-dir`, print one line per object and
    /// exit: 0 when all are valid, 64 otherwise.
    #[arg(long)]
    pub check_config: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let Some(dir) = args.local_dir else {
        eprintln!("tokenwarden-operator: --local-dir is required in this build");
        return ExitCode::from(EXIT_CONFIG);
    };
    if !args.check_config {
        eprintln!(
            "tokenwarden-operator: the control plane is not part of this build yet; \
             use --check-config to validate a directory of objects"
        );
        return ExitCode::from(2);
    }
    let report = local::check_dir(&dir);
    print!("{}", report.render());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}
