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
    policy(
        fake,
        "  routes:\n    - {name: mini, match: {models: [\"gpt-5\"]}, target: {provider: openai, model: gpt-5-mini}}",
        &budget(
            "team",
            &format!("  period: Daily\n  timeZone: {zone}\n  limit: {{usd: \"{limit}\"}}"),
        ),
    )
}

fn ts(v: &serde_json::Value) -> Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .parse()
        .unwrap()
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
    // ago, half of today's spend 90 minutes ago. Limit: twice the spend.
    sc.kill();
    let t0 = Timestamp::now();
    let a_at = t0 - SignedDuration::from_hours(7);
    let b_at = t0 - SignedDuration::from_mins(90);
    let half = Usd::from_picos(spent / 2);
    let history = serde_json::json!({"budgets": [{
        "namespace": "apps",
        "name": "team",
        "periodStart": b["period_start"],
        "samples": [
            {"at": a_at.to_string(), "spent": "0", "tokens": 0},
            {"at": b_at.to_string(), "spent": half.to_string(), "tokens": tokens / 2},
        ],
    }]});
    std::fs::write(&file, history.to_string()).unwrap();
    let limit = Usd::from_picos(2 * spent);
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
    // The limit is `spent` away at `spent` per `long` ms: `long` ms on.
    let exhaustion = as_of + SignedDuration::from_millis(i64::try_from(long).unwrap());
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
