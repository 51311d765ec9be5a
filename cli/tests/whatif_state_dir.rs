//! `kubectl-tokenwarden` run as a process: `what-if` on a real sidecar
//! state dir written by the durable journal (records across a compaction,
//! and an open intent),
//! re-priced and re-routed, and on an operator ledger file; `project` on
//! the shipped agent-day example.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use tokenwarden_core::{
    tokens::TokenCounts,
    usage::{ReplayFacts, UsageRecord},
    whatif::reprice::Repricer,
    workload::Endpoint,
};
use tokenwarden_durable::Journal;
use tokenwarden_tests::process::workspace_bin;

fn rec(hour: u8, served: &str, score: u16, input: u64, output: u64, prompt: u64) -> UsageRecord {
    let usage = TokenCounts {
        input_tokens: input,
        output_tokens: output,
        ..TokenCounts::default()
    };
    UsageRecord {
        seq: 0,
        ts: format!("2026-12-02T{hour:02}:00:00Z").parse().unwrap(),
        endpoint: Endpoint::Messages,
        requested_model: "claude-opus-4-1".into(),
        served_model: served.into(),
        provider: "anthropic".into(),
        route: Some("default".into()),
        score: Some(score),
        reason: None,
        attempt: 1,
        status: 200,
        usage,
        cost: Repricer::new(vec![], vec![]).cost(Some("anthropic"), served, &usage),
        estimated: false,
        budgets: vec![],
        cache: Default::default(),
        intent: None,
        replay: Some(Box::new(ReplayFacts {
            request: u64::from(hour),
            prompt_estimate: prompt,
            ..ReplayFacts::default()
        })),
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(workspace_bin("kubectl-tokenwarden"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn what_if_reads_a_journal_written_by_the_durable_crate() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut j = Journal::open(dir.path(), false, false).unwrap();
        // $0.015 and $0.0015 on haiku; $0.09 on sonnet.
        j.append(rec(9, "claude-haiku-4-5", 20, 10_000, 1_000, 70_000))
            .unwrap();
        j.append(rec(10, "claude-sonnet-4-5", 50, 20_000, 2_000, 500))
            .unwrap();
        // A compaction keeps the records so far as a replay segment.
        j.compact().unwrap();
        j.append(rec(11, "claude-haiku-4-5", 5, 1_000, 100, 300))
            .unwrap();
        // An attempt in flight when the process "died": not a settled record.
        let mut open = rec(12, "claude-sonnet-4-5", 90, 50_000, 0, 10);
        open.estimated = true;
        j.intend(open).unwrap();
        j.flush().unwrap();
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("requests-")
        })
        .count();
    assert_eq!(segments, 1, "the compaction kept a replay segment");
    let state = dir.path().to_str().unwrap();
    // Re-pricing: everything that haiku served, on sonnet.
    let csv = run(&[
        "what-if",
        "--state-dir",
        state,
        "--model",
        "claude-haiku-4-5=claude-sonnet-4-5",
        "--output-ratio",
        "unchanged",
        "-o",
        "csv",
    ]);
    let total = csv.lines().last().unwrap();
    // 11,000 in × $3 + 1,100 out × $15 = $0.0495, plus sonnet's $0.09.
    assert_eq!(
        total,
        "TOTAL,,,3,31000,3100,3100,3100,3100,0,0,0.1065,0,0.1395,0.1395,0.1395,0,0.033,,false"
    );
    // Re-routing: requests with a prompt estimate over 60k go to sonnet.
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: RoutingPolicy\nmetadata: { name: agent, namespace: agents }\nspec:\n  workloadSelector: { matchLabels: { app: agent } }\n  providers:\n    - { name: anthropic, api: anthropic, baseUrl: \"https://api.anthropic.com\", apiKeySecretRef: { name: k, key: anthropic } }\n  tiers:\n    - { name: cheap, provider: anthropic, model: claude-haiku-4-5 }\n    - { name: standard, provider: anthropic, model: claude-sonnet-4-5 }\n  routes:\n    - { name: long, match: { promptTokens: { min: 60000 } }, target: { tier: standard } }\n    - { name: default, target: { tier: cheap } }\n",
    )
    .unwrap();
    let json = run(&[
        "what-if",
        "--state-dir",
        state,
        "--policy",
        policy.to_str().unwrap(),
        "-n",
        "agents",
        "--labels",
        "app=agent",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let pair = |r: &serde_json::Value| {
        (
            r["served"].as_str().unwrap().to_string(),
            r["whatif"].as_str().unwrap().to_string(),
            r["requests"].as_u64().unwrap(),
        )
    };
    assert_eq!(
        rows.iter().map(pair).collect::<Vec<_>>(),
        [
            ("claude-haiku-4-5".into(), "claude-haiku-4-5".into(), 1),
            ("claude-haiku-4-5".into(), "claude-sonnet-4-5".into(), 1),
            ("claude-sonnet-4-5".into(), "claude-haiku-4-5".into(), 1),
        ]
    );
    assert_eq!(v["total"]["actual"], "0.1065");
    let table = run(&["what-if", "--state-dir", state, "--labels", "app=agent"]);
    assert!(
        table.starts_with(&format!("what-if over {state}: per-request records")),
        "{table}"
    );
}

#[test]
fn project_and_ledger_file_run_as_the_plugin() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mix = format!("{root}/deploy/examples/mix/agent-day.yaml");
    let policy = format!("{root}/deploy/examples/mix/agent-day-policy.yaml");
    let csv = run(&["project", "--mix", &mix, "--policy", &policy, "-o", "csv"]);
    assert!(
        csv.ends_with("\r\nTOTAL,3572,788.00,0,3572,492.896,14786.88,0\r\n"),
        "{csv}"
    );
    // The operator's local-mode ledger.json: opus 4.1 re-priced as sonnet 4.5.
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.json");
    let spend = serde_json::json!({
        "cost": "0.1875", "requests": 2, "unpriced": 0, "estimated": 0,
        "usage": { "input_tokens": 10000, "output_tokens": 500, "cache_read_tokens": 0, "cache_write_tokens": 0 }
    });
    let state = serde_json::json!({
        "watermarks": {}, "rows": [[{ "namespace": "agents", "workload": "agent", "model": "claude-opus-4-1" }, spend]]
    });
    std::fs::write(&ledger, state.to_string()).unwrap();
    let text = run(&[
        "what-if",
        "--ledger-file",
        ledger.to_str().unwrap(),
        "--model",
        "claude-opus-4-1=claude-sonnet-4-5",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["source"], "aggregates");
    // 10,000 × $3 + 500 × $15 per MTok, on summed tokens of a tiered model.
    assert_eq!(v["total"]["cost"], "0.0375");
    assert_eq!(v["total"]["actual"], "0.1875");
    assert_eq!(v["rows"][0]["approximate"], true);
    // Without a source: a clear error and exit status 1.
    let out = Command::new(workspace_bin("kubectl-tokenwarden"))
        .arg("what-if")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("what-if needs a source"));
}
