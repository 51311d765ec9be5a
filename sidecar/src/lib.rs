//! The tokenwarden sidecar: the per-pod proxy between an app and its LLM
//! providers.
//!
//! Request path: [`server`] accepts (HTTP/1.1 or h2c) → [`proxy`] runs a
//! metered request through named stages, one file each: `route` parses the
//! body ([`request`]), classifies and routes it (core's router);
//! `enforce` applies the budgets (core's budget arithmetic, held in
//! [`state`]; the leases in connected mode); `forward` rewrites only the
//! fields it changes and sends each attempt over the pooled [`upstream`]
//! client with fallbacks; `respond` streams the answer back through a
//! [`body`] tap that meters usage ([`meter`]); `settle` settles the
//! attempt in the budgets, the usage journal (`tokenwarden-durable`) and
//! the [`metrics`], with what the provider's prompt cache saved and what a
//! bust wasted ([`prompt_cache`]). [`admin`] serves health, readiness, metrics and the
//! `/ledger` view; [`args`], [`cli`] and [`run`] are the process
//! ([`report`] prints the tables people read; [`forecast`] keeps the
//! budgets' burn samples and projections). In connected mode
//! [`session`] talks to the operator (config snapshots, the usage spool,
//! budget leases) over the state in [`control`].

pub mod admin;
pub mod answer;
pub mod args;
pub mod body;
pub mod cli;
pub mod control;
pub mod error;
pub mod forecast;
pub mod link;
pub mod meter;
pub mod metrics;
pub mod otel;
/// The policy file loader lives in the crds crate (the kubectl plugin compiles policies too).
pub use tokenwarden_crds::policy_file;
pub mod prompt_cache;
pub mod proxy;
pub mod redact;
pub mod report;
pub mod request;
pub mod response_cache;
pub mod run;
pub mod secrets;
pub mod server;
pub mod session;
pub mod state;
pub mod sync;
pub mod tokens;
pub mod upstream;

use std::process::ExitCode;

use clap::Parser;

/// Exit code for bad configuration or arguments (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args = args::Args::parse();
    cli::run(args)
}
