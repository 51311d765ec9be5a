//! The what-if check: how close does a re-routing projection come to
//! running the new policy for real?
//!
//! 1. The coding agent's traffic was recorded by its sidecar under the
//!    team's RoutingPolicy (policy A: `hardThreshold` 11, the default).
//! 2. `kubectl tokenwarden what-if` replays that sidecar's journal through
//!    policy B (the same policy with `classifier.hardThreshold: 30`: fewer
//!    requests count as hard, so more go to the cheap tier) and projects
//!    its cost, with the output estimate's range.
//! 3. The same 229 requests are then sent for real through a standalone
//!    sidecar running policy B, and its ledger gives the actual cost.
//!
//! The demo prints both, and by how much the projection missed.

use std::path::Path;

use anyhow::{Context as _, bail};
use tokenwarden_core::money::Usd;
use tokenwarden_tests::{process::Proc, sidecar::SidecarProc};

use crate::{
    processes::{HttpClient, binary, get, wait_ready},
    requests::Item,
    workload,
};

/// The change the check projects, then runs.
const HARD_THRESHOLD: u16 = 30;

/// Policy B: the coding agent's policy (`agents_yaml`) with a higher
/// `hardThreshold`.
pub fn policy_b(agents_yaml: &str) -> anyhow::Result<String> {
    let anchor = "  workloadSelector: {matchLabels: {app: coding-agent}}\n";
    if !agents_yaml.contains(anchor) {
        bail!("the coding agent's policy has no workloadSelector line to extend");
    }
    Ok(agents_yaml.replacen(
        anchor,
        &format!("{anchor}  classifier: {{hardThreshold: {HARD_THRESHOLD}}}\n"),
        1,
    ))
}

/// What the check found.
pub struct Check {
    /// What policy A cost (recorded).
    pub recorded: Usd,
    /// Policy B, projected with output scaled by observed ratios: (cost, low, high).
    pub observed: (Usd, Usd, Usd),
    /// Policy B, projected with the recorded output unchanged.
    pub unchanged: Usd,
    /// Requests the replay could not route.
    pub not_replayable: u64,
    /// Requests the projection moved to another model.
    pub moved: u64,
    /// Policy B, run for real.
    pub actual: Usd,
    /// Requests of the real run that failed.
    pub failed: usize,
}

/// Run the check: `recorded_dir` is the coding agent's sidecar state dir,
/// `root` the demo's files (policies under `objects/`, keys under `secrets/`).
pub async fn check(
    client: &HttpClient,
    root: &Path,
    recorded_dir: &Path,
    items: &[Item],
) -> anyhow::Result<Check> {
    let dir = root.join("whatif");
    std::fs::create_dir_all(&dir)?;
    let baseline = root.join("objects").join("agents.yaml");
    let policy = dir.join("agents-b.yaml");
    std::fs::write(&policy, policy_b(&std::fs::read_to_string(&baseline)?)?)?;

    let observed = what_if(recorded_dir, &policy, &baseline, "observed")?;
    let unchanged = what_if(recorded_dir, &policy, &baseline, "unchanged")?;
    let total = |j: &serde_json::Value, k: &str| -> anyhow::Result<Usd> {
        j["total"][k]
            .as_str()
            .with_context(|| format!("what-if JSON: total.{k}"))?
            .parse()
            .map_err(|e| anyhow::anyhow!("what-if JSON total.{k}: {e}"))
    };
    let not_replayable = observed["notReplayable"]
        .as_array()
        .map_or(0, |a| a.iter().filter_map(|r| r["requests"].as_u64()).sum());
    let moved = observed["rows"].as_array().map_or(0, |rows| {
        rows.iter()
            .filter(|r| r["served"] != r["whatif"])
            .filter_map(|r| r["requests"].as_u64())
            .sum()
    });
    let (actual, failed) = run_for_real(client, root, &policy, &dir, items).await?;
    Ok(Check {
        recorded: total(&observed, "actual")?,
        observed: (
            total(&observed, "cost")?,
            total(&observed, "costLow")?,
            total(&observed, "costHigh")?,
        ),
        unchanged: total(&unchanged, "cost")?,
        not_replayable,
        moved,
        actual,
        failed,
    })
}

/// `kubectl tokenwarden what-if … -o json` over the recorded journal.
fn what_if(
    recorded: &Path,
    policy: &Path,
    baseline: &Path,
    output_ratio: &str,
) -> anyhow::Result<serde_json::Value> {
    let bin = binary("kubectl-tokenwarden", "TOKENWARDEN_CLI_BIN")?;
    let out = std::process::Command::new(&bin)
        .arg("what-if")
        .arg("--state-dir")
        .arg(recorded)
        .arg("--policy")
        .arg(policy)
        .arg("--baseline-policy")
        .arg(baseline)
        .args(["-n", "agents", "--labels", LABELS])
        .args(["--output-ratio", output_ratio, "-o", "json"])
        .output()
        .context("running kubectl-tokenwarden what-if")?;
    if !out.status.success() {
        bail!(
            "kubectl-tokenwarden what-if failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("kubectl-tokenwarden what-if -o json")
}

/// The coding agent's pod labels (as in [`crate::processes`]).
const LABELS: &str = "app=coding-agent,pod-template-hash=demo";

/// Policy B for real: a standalone sidecar with it as its policy file,
/// the same requests, and the cost its ledger says.
async fn run_for_real(
    client: &HttpClient,
    root: &Path,
    policy: &Path,
    dir: &Path,
    items: &[Item],
) -> anyhow::Result<(Usd, usize)> {
    let mut sidecar =
        SidecarProc::with_bin(binary("tokenwarden-sidecar", "TOKENWARDEN_SIDECAR_BIN")?);
    sidecar.rust_log = "error".into();
    sidecar
        .arg("--policy-file")
        .arg(policy)
        .args(["--namespace", "agents", "--pod-name", "coding-agent-whatif"])
        .args(["--labels", LABELS])
        .arg("--secrets-dir")
        .arg(root.join("secrets"))
        .arg("--state-dir")
        .arg(dir.join("state"));
    let child = sidecar
        .command()
        .spawn()
        .context("starting the policy-B sidecar")?;
    sidecar.proc = Proc(Some(child));
    wait_ready(client, sidecar.admin.port(), "the policy-B sidecar").await?;
    let failed = workload::coding_agent_alone(client, items, sidecar.app.port()).await?;
    let (status, body) = get(
        client,
        format!("http://127.0.0.1:{}/ledger", sidecar.admin.port()),
    )
    .await?;
    if status != 200 {
        bail!("the policy-B sidecar's /ledger answered {status}");
    }
    let ledger: serde_json::Value = serde_json::from_slice(&body)?;
    let cost = ledger["total"]["cost_usd"]
        .as_str()
        .context("the policy-B sidecar's ledger total")?
        .parse()
        .map_err(|e| anyhow::anyhow!("ledger total cost: {e}"))?;
    Ok((cost, failed))
}

/// Prints the check.
pub fn print(c: &Check) {
    println!();
    println!(
        "what-if (kubectl tokenwarden what-if): the coding agent's recorded requests replayed \
         through hardThreshold {HARD_THRESHOLD}, then run for real:"
    );
    println!("  recorded under hardThreshold 11:      ${}", c.recorded);
    println!(
        "  projected, output scaled by observed model ratios: ${} (range ${} – ${})",
        c.observed.0, c.observed.1, c.observed.2
    );
    println!("  projected, recorded output unchanged: ${}", c.unchanged);
    println!(
        "  {} requests moved to another model, {} not replayable",
        c.moved, c.not_replayable
    );
    println!(
        "  run for real through a sidecar with hardThreshold {HARD_THRESHOLD}: ${} ({} failed)",
        c.actual, c.failed
    );
    println!(
        "  projection off by {} (observed ratios), {} (unchanged output)",
        off(c.observed.0, c.actual),
        off(c.unchanged, c.actual)
    );
}

/// `projected` against `actual` as a signed percentage with two decimals.
pub fn off(projected: Usd, actual: Usd) -> String {
    if actual.picos() == 0 {
        return "n/a (nothing spent)".into();
    }
    // Hundredths of a percent, rounded half away from zero, in integers.
    let diff = (projected.picos() - actual.picos()) * 10_000;
    let a = actual.picos();
    let q = (diff.abs() + a / 2) / a;
    let sign = if diff < 0 { "-" } else { "+" };
    format!("{sign}{}.{:02}%", q / 100, q % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_b_sets_the_threshold_under_spec() {
        let a = "spec:\n  workloadSelector: {matchLabels: {app: coding-agent}}\n  tiers: []\n";
        assert_eq!(
            policy_b(a).unwrap(),
            "spec:\n  workloadSelector: {matchLabels: {app: coding-agent}}\n  classifier: {hardThreshold: 30}\n  tiers: []\n"
        );
        assert!(policy_b("spec: {}\n").is_err());
    }

    #[test]
    fn off_is_a_signed_exact_percentage() {
        let usd = |s: &str| s.parse::<Usd>().unwrap();
        assert_eq!(off(usd("1.05"), usd("1.00")), "+5.00%");
        assert_eq!(off(usd("0.99"), usd("1.00")), "-1.00%");
        assert_eq!(off(usd("1.00"), usd("3.00")), "-66.67%");
        assert_eq!(off(usd("1"), usd("0")), "n/a (nothing spent)");
    }
}
