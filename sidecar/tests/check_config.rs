//! `tokenwarden-sidecar --check-config`: exit codes and field paths.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn sidecar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
}

fn repo(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn examples_compile_for_a_labelled_workload() {
    let out = sidecar()
        .args([
            "--check-config",
            "--policy-file",
            &repo("deploy/examples"),
            "--namespace",
            "agents",
        ])
        .args(["--labels", "app=coding-agent,team=search"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("routing: RoutingPolicy agents/coding-agent"),
        "{stdout}"
    );
    assert!(
        stdout.contains("route default              -> tier cheap"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "budget: TokenBudget agents/search-team-daily Daily $50.00 (Europe/Berlin): \
             50% alert, 80% downgrade to tier cheap, 100% block"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  caching: Anthropic breakpoints (ttl 5m, minimum 8192 tokens for claude-opus-*); \
             OpenAI prompt_cache_key \"tokenwarden:agents/coding-agent\"; volatile-prefix \
             guard (report after 3 busts)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "budget: TokenBudget agents/search-agents-per-session Daily $200.00 (UTC): loop \
             guard 5 identical in 60s, cool-down 300s, per key by header x-agent-session: \
             $5.00 each, at most 200 keys"
        ),
        "{stdout}"
    );
    // The shadow budget lives in another namespace: it does not select this pod.
    assert!(!stdout.contains("research-monthly-tokens"), "{stdout}");
}

#[test]
fn json_output_is_the_compiled_config() {
    let out = sidecar()
        .args([
            "--check-config",
            "--output",
            "json",
            "--namespace",
            "research",
        ])
        .args([
            "--policy-file",
            &repo("deploy/examples/04-monthly-token-budget-shadow.yaml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["namespace"], "research");
    assert_eq!(cfg["budgets"][0]["limit_tokens"], 200_000_000);
    assert_eq!(cfg["budgets"][0]["shadow"], true);
    assert_eq!(cfg["budgets"][0]["time_zone"], "America/New_York");
    assert!(cfg["routing"].is_null());
}

#[test]
fn invalid_config_exits_64_with_field_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: {name: b}\n\
         spec:\n  period: Daily\n  limit: {usd: \"10\"}\n  thresholds:\n\
         \x20   - {percent: 80, action: Alert}\n    - {percent: 50, action: Downgrade}\n",
    )
    .unwrap();
    let out = sidecar()
        .args(["--check-config", "--policy-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("TokenBudget default/b is invalid"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.thresholds[1].percent: thresholds must be strictly ascending"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.thresholds[1].downgradeTo: downgradeTo is required"),
        "{stderr}"
    );
}

#[test]
fn bad_labels_and_missing_file_exit_64() {
    let out = sidecar()
        .args(["--check-config", "--labels", "app"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--labels: label \"app\" is not of the form key=value")
    );
    let out = sidecar()
        .args(["--check-config", "--policy-file", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.yaml"));
}

#[test]
fn the_summary_says_what_a_projected_overrun_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budgets.yaml");
    std::fs::write(
        &path,
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: {name: early, namespace: apps}\nspec:\n  period: Daily\n  limit: {usd: \"10.00\"}\n  thresholds:\n    - {percent: 100, action: Block}\n  onProjectedOverrun: {action: Downgrade, downgradeTo: {model: gpt-5-nano}}\n---\napiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: {name: watch, namespace: apps}\nspec:\n  period: Hourly\n  limit: {usd: \"1.00\"}\n  onProjectedOverrun: {action: Alert}\n",
    )
    .unwrap();
    let out = sidecar()
        .arg("--check-config")
        .arg("--policy-file")
        .arg(&path)
        .args(["--namespace", "apps"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}{:?}", out.stderr);
    assert!(
        stdout.contains(
            "budget: TokenBudget apps/early Daily $10.00 (UTC): 100% block, projected overrun: downgrade to model gpt-5-nano"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "budget: TokenBudget apps/watch Hourly $1.00 (UTC): projected overrun: alert"
        ),
        "{stdout}"
    );
}
