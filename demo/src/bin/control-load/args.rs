//! The command line: `objects` (print the YAML) and `run` (the load).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tokenwarden-control-load",
    about = "N simulated sidecars against one operator: ingest, ack latency, config propagation, ledger check"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the RoutingPolicies and TokenBudgets that select the simulated pods.
    Objects {
        /// Namespaces `bench-0` … `bench-<n-1>`.
        #[arg(long, default_value_t = 5)]
        namespaces: usize,
        /// Every budget's USD limit (a decimal string; no run reaches it).
        #[arg(long, default_value = "1000000.00")]
        limit_usd: String,
    },
    /// Run the load.
    Run(Box<RunArgs>),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The operator's gRPC control address.
    #[arg(long, default_value = "http://127.0.0.1:15810")]
    pub url: String,
    /// File holding the local-mode shared secret.
    #[arg(long)]
    pub secret_file: PathBuf,
    /// Simulated sidecars (one stream each).
    #[arg(long, default_value_t = 500)]
    pub sidecars: usize,
    /// HTTP/2 connections the streams share (round robin).
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Namespaces (must match `objects --namespaces`).
    #[arg(long, default_value_t = 5)]
    pub namespaces: usize,
    /// Total usage records per second, spread evenly over the sidecars.
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Smallest batch (records).
    #[arg(long, default_value_t = 10)]
    pub batch_min: u64,
    /// Largest batch (records).
    #[arg(long, default_value_t = 50)]
    pub batch_max: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// The objects file to edit mid-run (config propagation).
    #[arg(long)]
    pub objects_file: Option<PathBuf>,
    /// When to edit it, seconds after the load starts (default: half-way).
    #[arg(long)]
    pub edit_at_secs: Option<f64>,
    /// The edit: every occurrence of this string …
    #[arg(long, default_value = "usd: \"1000000.00\"")]
    pub edit_from: String,
    /// … becomes this one.
    #[arg(long, default_value = "usd: \"2000000.00\"")]
    pub edit_to: String,
    /// The operator's state dir: verify its ledgers at the end.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The operator's PID: sample its CPU time and RSS from /proc.
    #[arg(long)]
    pub operator_pid: Option<u32>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    pub clk_tck: u64,
    /// Seconds to wait for every stream to be connected and configured.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout_secs: u64,
    /// Seconds to wait after the load for the last acks.
    #[arg(long, default_value_t = 60)]
    pub drain_timeout_secs: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out_json: Option<PathBuf>,
    /// Seed of the record generator (and of the sidecar ids' suffix).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}
