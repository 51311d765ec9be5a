//! Per-key caps (TokenBudget `spec.perKey`) on a standalone sidecar, with
//! literal requests: each key (a session header, the pod, a hash of the
//! app's credential) stops at its own limit with the pooled cap's 429 and
//! nothing billed, while the other keys keep working; keys past `maxKeys`
//! share `(other)`; requests without a key count under `(none)`; the loop
//! guard counts per key; `/ledger` and `report` show the keys' spend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

/// gpt-5 is routed to gpt-5-mini ($0.25 / $2.00 per million tokens).
const MINI_ROUTE: &str = r#"  routes:
    - {name: mini, match: {models: ["gpt-5"]}, target: {provider: openai, model: gpt-5-mini}}
"#;

/// A chat completion whose worst case is about $0.0020 (its ~80 body bytes
/// at the input price plus 1000 output tokens at $2.00/M); the fake
/// provider answers with 1000 output tokens, so it costs about as much.
fn chat(text: &str) -> String {
    format!(
        r#"{{"model":"gpt-5","max_tokens":1000,"messages":[{{"role":"user","content":"{text}"}}]}}"#
    )
}

const OUT: (&str, &str) = ("x-fake-output-tokens", "1000");

/// The per-key row of `key` in budget `name` of `/ledger`.
fn key_row(ledger: &serde_json::Value, name: &str, key: &str) -> serde_json::Value {
    let b = ledger["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no budget {name}: {ledger}"));
    b["per_key"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("no key {key} in {name}: {b}"))
}

fn cost(r: &Reply) -> i128 {
    picos(r.header("x-tokenwarden-cost-usd").unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_session_stops_at_its_own_limit_and_the_others_keep_working() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget(
        "sessions",
        "  period: Daily\n  limit: {usd: \"1.00\"}\n  perKey:\n    by: {header: X-Agent-Session}\n    limit: {usd: \"0.005\"}",
    );
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, &b));
    let a = [OUT, ("x-agent-session", "sess-a")];
    let r1 = sc.openai("/v1/chat/completions", &chat("one"), &a).await;
    let r2 = sc.openai("/v1/chat/completions", &chat("two"), &a).await;
    assert_eq!((r1.status.as_u16(), r2.status.as_u16()), (200, 200));
    let spent_a = cost(&r1) + cost(&r2);
    assert!(
        spent_a > picos("0.004") && spent_a < picos("0.005"),
        "{spent_a}"
    );
    // The third would pass $0.005 with its worst case: refused, unbilled.
    fake.clear_log();
    let r = sc.openai("/v1/chat/completions", &chat("three"), &a).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-tokenwarden-error"), Some("key_limit"));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with(
            "TokenBudget apps/sessions key \"sess-a\" cannot cover this request: spent $0.00"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("of its $0.005 per-key limit this Daily period"),
        "{msg}"
    );
    assert_eq!(r.json()["error"]["type"], "insufficient_quota");
    assert!(r.header("retry-after").is_some());
    assert!(
        fake.log().is_empty(),
        "a refused request never reaches the provider"
    );

    // Another session has its own $0.005; no header at all is the key (none).
    let b1 = sc
        .openai(
            "/v1/chat/completions",
            &chat("three"),
            &[OUT, ("x-agent-session", "sess-b")],
        )
        .await;
    assert_eq!(b1.status, 200);
    let n1 = sc
        .openai("/v1/chat/completions", &chat("four"), &[OUT])
        .await;
    assert_eq!(n1.status, 200);

    let ledger = sc.ledger().await;
    let row = key_row(&ledger, "sessions", "sess-a");
    assert_eq!(cost_str(&row["spent_usd"]), spent_a);
    assert_eq!(row["requests"], 2);
    let total = |r: &Reply| r.json()["usage"]["total_tokens"].as_u64().unwrap();
    assert_eq!(row["tokens_used"], total(&r1) + total(&r2));
    assert_eq!(row["reserved_usd"], "0.00");
    assert_eq!(
        cost_str(&key_row(&ledger, "sessions", "sess-b")["spent_usd"]),
        cost(&b1)
    );
    assert_eq!(
        cost_str(&key_row(&ledger, "sessions", "(none)")["spent_usd"]),
        cost(&n1)
    );
    let budget_row = &ledger["budgets"][0];
    assert_eq!(budget_row["per_key"]["by"], "header x-agent-session");
    assert_eq!(budget_row["per_key"]["limit_usd"], "0.005");
    assert_eq!(budget_row["per_key"]["max_keys"], 100);
    assert_eq!(
        cost_str(&budget_row["spent_usd"]),
        spent_a + cost(&b1) + cost(&n1),
        "the pooled budget holds every key's spend"
    );
    // Keys are listed by spend.
    let first = &budget_row["per_key"]["keys"][0]["key"];
    assert_eq!(first, "sess-a");

    // `report`, with the policy, lists the top keys of the period.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
        .args(["report", "--state-dir"])
        .arg(sc.state_dir())
        .arg("--policy-file")
        .arg(sc.policy_path())
        .args(["--namespace", "apps", "--labels", "app=agent,team=search"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(
            "TOP KEYS of apps/sessions (by header x-agent-session; 3 of 3 keys this period, at most 100 + (none) + (other))"
        ),
        "{table}"
    );
    let cols: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("sess-a "))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    let usd =
        |p: i128| tokenwarden_sidecar::report::money(tokenwarden_core::money::Usd::from_picos(p));
    assert_eq!(cols[1], usd(spent_a));
    assert_eq!(cols[2], "$0.005");
    assert_eq!(cols[5], "2");
    assert_eq!(cols[6], "Ok");

    // A restart rebuilds the keys' spend from the journal: sess-a stays
    // capped.
    let mut sc = sc;
    sc.kill();
    sc.spawn();
    let r = sc.openai("/v1/chat/completions", &chat("five"), &a).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(
        cost_str(&key_row(&sc.ledger().await, "sessions", "sess-a")["spent_usd"]),
        spent_a
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_past_max_keys_share_one_overflow_key_with_the_per_key_limit() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget(
        "sessions",
        "  period: Daily\n  limit: {usd: \"1.00\"}\n  perKey:\n    by: {header: x-agent-session}\n    limit: {usd: \"0.005\"}\n    maxKeys: 2",
    );
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, &b));
    let send = |session: &'static str, text: &'static str| {
        let sc = &sc;
        async move {
            sc.openai(
                "/v1/chat/completions",
                &chat(text),
                &[OUT, ("x-agent-session", session)],
            )
            .await
        }
    };
    assert_eq!(send("s1", "a").await.status, 200);
    assert_eq!(send("s2", "b").await.status, 200);
    // s3 and s4 come past maxKeys: both spend from "(other)".
    let o1 = send("s3", "c").await;
    let o2 = send("s4", "d").await;
    assert_eq!((o1.status.as_u16(), o2.status.as_u16()), (200, 200));
    let r = send("s5", "e").await;
    assert_eq!(r.status, 429, "fresh session ids cannot escape the cap");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("TokenBudget apps/sessions key \"(other)\" cannot cover this request"),
        "{}",
        r.text()
    );
    // The first two keys keep their own limits.
    assert_eq!(send("s1", "f").await.status, 200);
    let ledger = sc.ledger().await;
    let other = key_row(&ledger, "sessions", "(other)");
    assert_eq!(cost_str(&other["spent_usd"]), cost(&o1) + cost(&o2));
    assert_eq!(other["requests"], 2);
    let keys: Vec<&str> = ledger["budgets"][0]["per_key"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "s1, s2 and (other): {keys:?}");
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tokenwarden_budget_keys{budget=\"apps/sessions\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tokenwarden_budget_blocks_total{budget=\"apps/sessions\",reason=\"key_limit\",shadow=\"false\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_and_app_credentials_are_keys_and_credentials_stay_hashed() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let budgets = budget(
        "per-pod",
        "  period: Daily\n  limit: {usd: \"1.00\"}\n  perKey:\n    by: {pod: {}}\n    limit: {usd: \"0.5\"}",
    ) + &budget(
        "per-app",
        "  period: Daily\n  limit: {usd: \"1.00\"}\n  perKey:\n    by: {apiKeyHash: {}}\n    limit: {usd: \"0.003\"}",
    );
    let sc = Sidecar::start_with(
        &policy(&fake, MINI_ROUTE, &budgets),
        &["--pod-name", "agent-7d9c-x1"],
    );
    let send = |auth: (&'static str, &'static str), text: &'static str| {
        let sc = &sc;
        async move {
            sc.send(
                http::Method::POST,
                "/v1/chat/completions",
                &[("content-type", "application/json"), auth, OUT],
                chat(text),
            )
            .await
        }
    };
    let k1 = send(("authorization", "Bearer sk-app-1"), "a").await;
    assert_eq!(k1.status, 200);
    // The same credential as Anthropic's header is the same key.
    let r = send(("x-api-key", "sk-app-1"), "b").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-tokenwarden-error"), Some("key_limit"));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with("TokenBudget apps/per-app key \"sha256:25e3d859a68c\" cannot cover"),
        "{msg}"
    );
    assert!(!msg.contains("sk-app"), "{msg}");
    let k2 = send(("authorization", "Bearer sk-app-2"), "c").await;
    assert_eq!(k2.status, 200, "another credential, another key");

    let ledger = sc.ledger().await;
    assert_eq!(
        cost_str(&key_row(&ledger, "per-app", "sha256:25e3d859a68c")["spent_usd"]),
        cost(&k1)
    );
    assert_eq!(
        cost_str(&key_row(&ledger, "per-app", "sha256:4758f26d9343")["spent_usd"]),
        cost(&k2)
    );
    let pod = key_row(&ledger, "per-pod", "agent-7d9c-x1");
    assert_eq!(cost_str(&pod["spent_usd"]), cost(&k1) + cost(&k2));
    assert_eq!(pod["requests"], 2);
    // No credential in the ledger, the journal or the metrics.
    assert!(!ledger.to_string().contains("sk-app"));
    for entry in std::fs::read_dir(sc.state_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(
            !bytes.windows(6).any(|w| w == b"sk-app"),
            "a credential reached the state dir"
        );
    }
    assert!(!sc.admin_get("/metrics").await.text().contains("sk-app"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_loop_guard_stops_only_the_looping_key() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget(
        "sessions",
        "  period: Hourly\n  limit: {usd: \"10\"}\n  perKey:\n    by: {header: x-agent-session}\n    limit: {usd: \"1\"}\n  loopGuard: {maxIdenticalRequests: 2, window: 60s, cooldown: 10m}",
    );
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, &b));
    let same = chat("retry the same thing");
    let send = |session: &'static str| {
        let (sc, same) = (&sc, &same);
        async move {
            sc.openai(
                "/v1/chat/completions",
                same,
                &[OUT, ("x-agent-session", session)],
            )
            .await
        }
    };
    assert_eq!(send("looping").await.status, 200);
    let r = send("looping").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-tokenwarden-error"), Some("loop_guard"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("TokenBudget apps/sessions key \"looping\": loop guard tripped"),
        "{}",
        r.text()
    );
    // Another session sending the same body once is not a loop.
    assert_eq!(send("healthy").await.status, 200);
    assert_eq!(send("looping").await.status, 429, "still cooling down");
}
