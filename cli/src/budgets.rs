//! SKELETON (replaced by the helper that owns this subcommand).

/// The subcommand's flags.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand; returns what to print.
pub async fn run(_g: &crate::Global, _a: &Args) -> anyhow::Result<String> {
    anyhow::bail!("not built yet")
}
