//! Response-cache hits in the budgets they would have been charged to,
//! standalone, black-box: the real sidecar binary with a policy file. N
//! hits under a TokenBudget show in its `/ledger` row as exactly N hits and
//! N times the first answer's cost saved, while its spend, tokens and
//! requests stay the provider's answer's alone; a shadow budget counts them
//! too; a restart (kill -9) rebuilds the same figures from the journal;
//! `report` says them under the budget table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Where is my parcel?"}],"temperature":0}"#;

const CACHE_ON: &str = "  cache:\n    exact: {ttl: 1h}\n";

fn budget_row<'a>(ledger: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    ledger["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no budget {name} in {ledger}"))
}

#[tokio::test]
async fn hits_count_in_the_budgets_they_would_have_been_charged_to_never_as_spend() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let budgets = format!(
        "{}{}",
        budget("team", "  period: Daily\n  limit: {usd: \"10.00\"}"),
        budget(
            "watch",
            "  period: Monthly\n  limit: {usd: \"1.00\"}\n  shadow: true"
        ),
    );
    let mut sc = Sidecar::start(&policy(&fake, CACHE_ON, &budgets));
    let first = sc.openai("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(first.header("x-tokenwarden-cache"), Some("miss"));
    let cost = picos(first.header("x-tokenwarden-cost-usd").unwrap());
    assert!(cost > 0);
    const N: i128 = 4;
    for _ in 0..N {
        let hit = sc.openai("/v1/chat/completions", CHAT, &[]).await;
        assert_eq!(hit.header("x-tokenwarden-cache"), Some("hit"));
    }
    assert_eq!(fake.log().len(), 1);

    let check = |ledger: &serde_json::Value| {
        for name in ["team", "watch"] {
            let b = budget_row(ledger, name);
            assert_eq!(b["response_cache_hits"], N as u64, "{b}");
            assert_eq!(cost_str(&b["response_cache_saved_usd"]), N * cost, "{b}");
            // What is charged is unchanged: the provider's answer only.
            assert_eq!(cost_str(&b["spent_usd"]), cost, "{b}");
            assert_eq!(b["requests"], 1, "{b}");
            assert_eq!(cost_str(&b["reserved_usd"]), 0, "{b}");
        }
        let team = budget_row(ledger, "team");
        assert_eq!(
            cost_str(&team["remaining_usd"]),
            10 * 1_000_000_000_000 - cost
        );
    };
    let ledger = sc.ledger().await;
    check(&ledger);
    let tokens = budget_row(&ledger, "team")["tokens_used"].clone();
    assert!(tokens.as_u64().unwrap() > 0);

    // kill -9 and a restart: the budgets rebuild from the journal with the
    // same hits, saving and spend (each hit counted once).
    sc.kill();
    sc.spawn();
    // Let the client's pool see the killed process's keep-alive
    // connection closed before it reuses it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ledger = sc.ledger().await;
    check(&ledger);
    assert_eq!(budget_row(&ledger, "team")["tokens_used"], tokens);

    // `report`, with the policy: a line per budget under its table.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
        .args(["report", "--state-dir"])
        .arg(sc.state_dir())
        .arg("--policy-file")
        .arg(sc.policy_path())
        .args(["--namespace", "apps", "--labels", "app=agent,team=search"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let usd =
        |p: i128| tokenwarden_sidecar::report::money(tokenwarden_core::money::Usd::from_picos(p));
    for name in ["team", "watch"] {
        let line = format!(
            "budget apps/{name}: response cache answered {N} requests this period at $0, saving {} (not charged to the budget)",
            usd(N * cost)
        );
        assert!(text.contains(&line), "{line}\nnot in\n{text}");
    }
}
