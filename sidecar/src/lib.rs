//! The tokenwarden sidecar.
//!
//! Today this crate provides the standalone configuration front end: it reads
//! the same RoutingPolicy and TokenBudget YAML a cluster uses, validates it
//! with the shared `validate()`, and compiles the config a workload with the
//! given labels would run (`--check-config`). The proxy itself is built on
//! this (see the README's roadmap).

pub mod cli;
pub mod policy_file;

use std::process::ExitCode;

use clap::Parser;

/// Exit code for bad configuration or arguments (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args = cli::Args::parse();
    cli::run(args)
}
