//! The standalone budget forecast through the real binary: `/ledger`'s
//! projected fields, the burn samples kept in `forecast.json` across a
//! restart, the gauges, and `report`'s forecast table offline.
//!
//! The sidecar runs on the real clock, so the budget's day is put in a
//! fixed-offset zone where it is about local noon (the period started at
//! least 11 h ago and ends at least 11 h later), and the history before the
//! restart is written into `forecast.json` as a sidecar that ran for hours
//! would have left it. The expected numbers are worked out by hand from
//! `projection_as_of`, the instant `/ledger` projected from.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use jiff::{SignedDuration, Timestamp};
use support::*;
use tokenwarden_core::money::Usd;

/// A zone where it is 12:xx now: `Etc/GMT-N` is UTC+N.
fn noon_zone() -> String {
    let hour = i64::from(Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).hour());
    match 12 - hour {
        0 => "UTC".into(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

fn policy_with_budget(fake: &FakeProvider, zone: &str, limit: &str) -> String {
    policy_with(fake, zone, limit, "")
}

/// The policy with more budget spec lines (`extra`).
fn policy_with(fake: &FakeProvider, zone: &str, limit: &str, extra: &str) -> String {
    policy(
        fake,
        "  routes:\n    - {name: mini, match: {models: [\"gpt-5\"]}, target: {provider: openai, model: gpt-5-mini}}",
        &budget(
            "team",
            &format!("  period: Daily\n  timeZone: {zone}\n  limit: {{usd: \"{limit}\"}}{extra}"),
        ),
    )
}

/// `forecast.json` as a sidecar that ran for hours would have left it:
/// nothing spent 7 h before `t0`, half of `spent` 90 minutes before.
fn history(period_start: &serde_json::Value, t0: Timestamp, spent: i128, tokens: u64) -> String {
    let half = Usd::from_picos(spent / 2);
    serde_json::json!({"budgets": [{
        "namespace": "apps",
        "name": "team",
        "periodStart": period_start,
        "samples": [
            {"at": (t0 - SignedDuration::from_hours(7)).to_string(), "spent": "0", "tokens": 0},
            {"at": (t0 - SignedDuration::from_mins(90)).to_string(), "spent": half.to_string(), "tokens": tokens / 2},
        ],
    }]})
    .to_string()
}

fn ts(v: &serde_json::Value) -> Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .parse()
        .unwrap()
}

/// `picos` rounded down to whole micro-dollars (a limit has at most six
/// decimals).
fn micros(picos: i128) -> Usd {
    Usd::from_picos(picos / 1_000_000 * 1_000_000)
}

fn ms(d: SignedDuration) -> i128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn ledger_and_report_project_the_budget_from_samples_kept_across_a_restart() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let zone = noon_zone();
    // The limit is set once the spend is known (a reload).
    let mut sc = Sidecar::start(&policy_with_budget(&fake, &zone, "100.00"));
    for _ in 0..2 {
        let r = sc
            .openai(
                "/v1/chat/completions",
                r#"{"model":"gpt-5","messages":[{"role":"user","content":"hello"}]}"#,
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let l = sc.ledger().await;
    let b = &l["budgets"][0];
    let spent = cost_str(&b["spent_usd"]);
    let tokens = b["tokens_used"].as_u64().unwrap();
    assert!(spent > 0 && tokens > 0, "{b}");
    // A fresh sidecar warms up: no projection until its samples span an
    // hour (a day's short window).
    assert_eq!(b["projected_spend_usd"], serde_json::Value::Null, "{b}");
    assert_eq!(b["projected_exhaustion"], serde_json::Value::Null, "{b}");
    assert_eq!(b["projected_overrun"], false, "{b}");
    let warming = b["projection"].as_str().unwrap();
    let ready: Timestamp = warming
        .strip_prefix("warming up until ")
        .unwrap_or_else(|| panic!("{warming}"))
        .parse()
        .unwrap();
    let now = Timestamp::now();
    assert!(
        ready > now + SignedDuration::from_mins(59) && ready <= now + SignedDuration::from_hours(1),
        "{ready} vs {now}"
    );

    // The ticker persisted its samples: this period's, none above the
    // ledger's spend.
    let file = sc.state_dir().join("forecast.json");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let entry = &saved["budgets"][0];
    assert_eq!(entry["namespace"], "apps");
    assert_eq!(entry["name"], "team");
    assert_eq!(entry["periodStart"], b["period_start"]);
    let samples = entry["samples"].as_array().unwrap();
    assert!(!samples.is_empty(), "{saved}");
    assert!(
        samples.iter().all(|s| cost_str(&s["spent"]) <= spent),
        "{saved}"
    );

    // As a sidecar that ran for hours would have left it: nothing spent 7 h
    // ago, half of today's spend 90 minutes ago. Limit: about twice the
    // spend.
    sc.kill();
    let t0 = Timestamp::now();
    let a_at = t0 - SignedDuration::from_hours(7);
    std::fs::write(&file, history(&b["period_start"], t0, spent, tokens)).unwrap();
    let limit = micros(2 * spent);
    std::fs::write(
        sc.policy_path(),
        policy_with_budget(&fake, &zone, &limit.to_string()),
    )
    .unwrap();
    sc.spawn();

    let l = sc.ledger().await;
    let b = &l["budgets"][0];
    let as_of = ts(&b["projection_as_of"]);
    let end = ts(&b["period_end"]);
    // The long mean (6 h) reaches back to the 7-hours-ago sample: `spent`
    // over (as_of - a_at); the short one (1 h) to the 90-minutes-ago one:
    // half of it over 90 minutes and a bit, a faster rate. The long one
    // is the smaller.
    let long = ms(as_of.duration_since(a_at));
    let left = ms(end.duration_since(as_of));
    let projected = spent + spent * left / long;
    assert_eq!(
        b["projected_spend_usd"],
        Usd::from_picos(projected).to_string(),
        "{b}"
    );
    let tok = i128::from(tokens);
    assert_eq!(
        b["projected_tokens"],
        u64::try_from(tok + tok * left / long).unwrap(),
        "{b}"
    );
    // The limit is `limit - spent` away at `spent` per `long` ms (rounded
    // up to the millisecond).
    let to_go = (limit.picos() - spent) * long;
    let to_go = to_go / spent + i128::from(to_go % spent != 0);
    let exhaustion = as_of + SignedDuration::from_millis(i64::try_from(to_go).unwrap());
    assert_eq!(
        b["projected_exhaustion"],
        exhaustion.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "{b}"
    );
    assert_eq!(b["projection"], "min(mean 6h, mean 1h)", "{b}");
    assert_eq!(b["projected_overrun"], true, "{b}");

    let text = metrics(&sc).await;
    assert_eq!(
        sample(
            &text,
            "tokenwarden_budget_projected_overrun",
            &[("budget", "apps/team")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "tokenwarden_budget_projected_spend_usd",
            &[("budget", "apps/team")]
        )
        .is_some(),
        "{text}"
    );

    // Offline, report projects from the same samples (the sidecar wrote
    // them back at its first tick) plus the ledger's totals at its own
    // now: between what the formula gives at the instants around it.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    sc.kill();
    let before = Timestamp::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
        .args(["report", "--state-dir"])
        .arg(sc.state_dir())
        .arg("--policy-file")
        .arg(sc.policy_path())
        .args(["--namespace", "apps", "--labels", "app=agent,team=search"])
        .output()
        .unwrap();
    let after = Timestamp::now();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    let row: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.contains("PROJECTED USD"))
        .find(|l| l.starts_with("apps/team "))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    let at = |t: Timestamp| spent + spent * ms(end.duration_since(t)) / ms(t.duration_since(a_at));
    let printed = picos(row[1].strip_prefix('$').unwrap());
    assert!(
        at(after) <= printed && printed <= at(before),
        "{} not within [{}, {}]\n{table}",
        row[1],
        at(after),
        at(before)
    );
    assert_eq!(
        row[4..9],
        ["min(mean", "6h,", "mean", "1h)", "as"],
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn samples_of_another_period_or_above_the_ledger_are_not_used() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let zone = noon_zone();
    let mut sc = Sidecar::unstarted(&policy_with_budget(&fake, &zone, "1.00"), &[]);
    // Yesterday's samples, and today's above anything spent: both are
    // dropped, the forecast warms up, and report says there is no history.
    let now = Timestamp::now();
    let tz = jiff::tz::TimeZone::get(&zone).unwrap();
    let today = now.to_zoned(tz.clone()).start_of_day().unwrap().timestamp();
    let yesterday = today - SignedDuration::from_hours(24);
    std::fs::create_dir_all(sc.state_dir()).unwrap();
    let history = serde_json::json!({"budgets": [{
        "namespace": "apps", "name": "team",
        "periodStart": yesterday.to_string(),
        "samples": [
            {"at": (today - SignedDuration::from_hours(3)).to_string(), "spent": "0", "tokens": 0},
            {"at": (today - SignedDuration::from_hours(1)).to_string(), "spent": "0.5", "tokens": 9},
        ],
    }]});
    let file = sc.state_dir().join("forecast.json");
    std::fs::write(&file, history.to_string()).unwrap();

    let report = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
            .args(["report", "--state-dir"])
            .arg(sc.state_dir())
            .arg("--policy-file")
            .arg(sc.policy_path())
            .args(["--namespace", "apps", "--labels", "app=agent,team=search"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let table = report();
    assert!(
        table.contains(
            "no history (no burn samples of this period in the state dir's forecast.json)"
        ),
        "{table}"
    );

    let above = serde_json::json!({"budgets": [{
        "namespace": "apps", "name": "team",
        "periodStart": today.to_string(),
        "samples": [
            {"at": (now - SignedDuration::from_hours(3)).to_string(), "spent": "0", "tokens": 0},
            {"at": (now - SignedDuration::from_hours(1)).to_string(), "spent": "0.5", "tokens": 9},
        ],
    }]});
    std::fs::write(&file, above.to_string()).unwrap();
    assert!(report().contains("no history"), "{}", report());
    sc.spawn();
    let l = sc.ledger().await;
    let b = &l["budgets"][0];
    assert!(
        b["projection"]
            .as_str()
            .unwrap()
            .starts_with("warming up until "),
        "{b}"
    );
    assert_eq!(b["projected_spend_usd"], serde_json::Value::Null, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_projected_overrun_downgrade_routes_new_requests_while_it_holds() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let zone = noon_zone();
    let downgrade = "\n  onProjectedOverrun: {action: Downgrade, downgradeTo: {model: gpt-5-nano}}";
    let mut sc = Sidecar::start(&policy_with(&fake, &zone, "100.00", downgrade));
    let body = r#"{"model":"gpt-5","max_completion_tokens":50,"messages":[{"role":"user","content":"hello"}]}"#;
    // A large answer first, so that later small requests fit under a
    // limit of twice the spend.
    let r = sc
        .openai(
            "/v1/chat/completions",
            &body.replace("50", "200000"),
            &[("x-fake-output-tokens", "100000")],
        )
        .await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("gpt-5-mini"));
    let l = sc.ledger().await;
    let b = l["budgets"][0].clone();
    assert_eq!(
        b["on_projected_overrun"],
        serde_json::json!({"action": "Downgrade", "downgrade_to": "model gpt-5-nano"})
    );
    assert_eq!(b["downgrade_to"], serde_json::Value::Null, "warming up");
    let spent = cost_str(&b["spent_usd"]);
    sc.kill();
    let file = sc.state_dir().join("forecast.json");
    std::fs::write(
        &file,
        history(
            &b["period_start"],
            Timestamp::now(),
            spent,
            b["tokens_used"].as_u64().unwrap(),
        ),
    )
    .unwrap();
    let limit = micros(2 * spent).to_string();
    std::fs::write(
        sc.policy_path(),
        policy_with(&fake, &zone, &limit, downgrade),
    )
    .unwrap();
    sc.spawn();

    // The ticker's forecast (~2.6 × the spend by the period's end) turns
    // the projected overrun on within a second or two.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let b = sc.ledger().await["budgets"][0].clone();
        if b["downgrade_to"] == "model gpt-5-nano" {
            assert_eq!(b["projected_overrun"], true, "{b}");
            assert_eq!(b["state"], "Ok", "a forecast is not a threshold: {b}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    fake.clear_log();
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some("gpt-5-nano"));
    assert_eq!(r.header("x-tokenwarden-adjusted"), Some("downgraded"));
    let sent = fake.log();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body_json().unwrap()["model"], "gpt-5-nano");

    // A higher limit (a reload): the projection no longer reaches it, the
    // downgrade lifts and requests go to their routed model again.
    std::fs::write(
        sc.policy_path(),
        policy_with(&fake, &zone, "100.00", downgrade),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let b = sc.ledger().await["budgets"][0].clone();
        if b["downgrade_to"].is_null() {
            assert_eq!(b["projected_overrun"], false, "{b}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    fake.clear_log();
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("gpt-5-mini"));
    assert_eq!(fake.log()[0].body_json().unwrap()["model"], "gpt-5-mini");
}
