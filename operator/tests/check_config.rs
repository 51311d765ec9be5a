//! `tokenwarden-operator --local-dir DIR --check-config`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tokenwarden-operator"))
}

#[test]
fn examples_directory_is_valid() {
    let dir = format!("{}/../deploy/examples", env!("CARGO_MANIFEST_DIR"));
    let out = operator()
        .args(["--check-config", "--local-dir", &dir])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for obj in [
        "ok RoutingPolicy agents/coding-agent",
        "ok TokenBudget agents/search-team-daily",
        "ok TokenBudget agents/agent-guard-rails",
        "ok TokenBudget research/research-monthly-tokens",
    ] {
        assert!(stdout.contains(obj), "missing {obj:?} in {stdout}");
    }
}

#[test]
fn one_invalid_file_fails_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!(
            "{}/../deploy/examples/02-team-daily-budget.yaml",
            env!("CARGO_MANIFEST_DIR")
        ),
        dir.path().join("good.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.yml"),
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: {name: x}\n\
         spec: {period: Daily, limit: {}}\n",
    )
    .unwrap();
    let out = operator()
        .args(["--check-config", "--local-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("good.yaml: ok TokenBudget agents/search-team-daily"),
        "{stdout}"
    );
    assert!(stdout.contains("bad.yml: invalid: document 1: TokenBudget default/x is invalid: spec.limit: limit needs at least one of usd or tokens"), "{stdout}");
}
