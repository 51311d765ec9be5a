//! `kubectl-tokenwarden what-if` run as a process on the operator's
//! PostgreSQL usage store (a real server from the tests crate's harness,
//! rows written by the operator's store code), the URL taken from
//! `TOKENWARDEN_USAGE_STORE_URL`: a read-only role with the documented
//! grant gets the what-if; a wrong password is a clear error on stderr
//! that never shows the password, nor does `--help`. Skips (saying so)
//! without the server binaries, unless `TOKENWARDEN_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use tokenwarden_core::{tokens::TokenCounts, usage::UsageRecord, workload::Endpoint};
use tokenwarden_operator::usage_store::{PgStore, UsageRow, UsageSink as _, UsageStoreConfig, pg};
use tokenwarden_tests::postgres::Postgres;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-tokenwarden");

fn row(seq: u64, hour: u8, served: &str) -> UsageRow {
    let usage = TokenCounts {
        input_tokens: 10_000,
        output_tokens: 1_000,
        ..TokenCounts::default()
    };
    UsageRow {
        sidecar_id: "sc-1".into(),
        namespace: "agents".into(),
        workload: "agent".into(),
        pod: "agent-7d9f-x".into(),
        record: UsageRecord {
            seq,
            ts: format!("2026-12-02T{hour:02}:00:00Z").parse().unwrap(),
            endpoint: Endpoint::Messages,
            requested_model: "claude-sonnet-4-5".into(),
            served_model: served.into(),
            provider: "anthropic".into(),
            route: None,
            score: None,
            reason: None,
            attempt: 1,
            status: 200,
            usage,
            cost: None,
            estimated: false,
            budgets: vec![],
            cache: Default::default(),
            intent: None,
            replay: None,
        },
    }
}

fn run(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("TOKENWARDEN_USAGE_STORE_URL", url)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_url_comes_from_the_environment_and_its_password_is_never_printed() {
    let Some(pgs) = Postgres::start() else { return };
    let store = PgStore::new(&UsageStoreConfig {
        url: pgs.url(),
        retention_months: 0,
        max_backlog: 100,
    })
    .unwrap();
    store
        .write(&[
            row(1, 9, "claude-sonnet-4-5"),
            row(2, 10, "claude-sonnet-4-5"),
        ])
        .await
        .unwrap();
    let admin = pg::connect(&pg::parse_url(&pgs.url()).unwrap())
        .await
        .unwrap();
    admin
        .batch_execute(
            "CREATE ROLE tw_reader LOGIN PASSWORD 'r1ght-Pw'; \
             GRANT USAGE ON SCHEMA tokenwarden TO tw_reader; \
             GRANT SELECT ON tokenwarden.usage TO tw_reader;",
        )
        .await
        .unwrap();
    let hba = pgs.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all tw_reader 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    let url = |pw: &str| {
        format!(
            "postgres://tw_reader:{pw}@127.0.0.1:{}/postgres",
            pgs.port()
        )
    };
    let args = [
        "what-if",
        "-n",
        "agents",
        "--workload",
        "agent",
        "--model",
        "claude-sonnet-4-5=claude-haiku-4-5",
        "-o",
        "csv",
    ];
    // The reload is asynchronous: wait until the wrong password is refused.
    let mut wrong = run(&url("wr0ng-S3cret"), &args);
    for _ in 0..100 {
        if wrong.0 != 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        wrong = run(&url("wr0ng-S3cret"), &args);
    }
    assert_eq!(wrong.0, 1, "{wrong:?}");
    assert_eq!(
        wrong.2,
        format!(
            "error: cannot connect to the usage store postgres://127.0.0.1:{}/postgres: password authentication failed for user \"tw_reader\" (SQLSTATE 28P01)\n",
            pgs.port()
        )
    );
    assert!(wrong.1.is_empty());
    let (code, out, err) = run(&url("r1ght-Pw"), &args);
    assert_eq!(code, 0, "{err}");
    // Two sonnet requests of 10k in / 1k out re-priced on haiku ($1/$5 per MTok).
    // Recorded unpriced (cost NULL); the output range is the unchanged
    // estimate's (no haiku output observed in the same records).
    assert_eq!(
        out.lines().last().unwrap(),
        "TOTAL,,,2,20000,2000,2000,1000,4000,0,0,0.00,2,0.03,0.025,0.04,0,0.03,,false",
        "{out}"
    );
    assert!(!out.contains("r1ght-Pw") && !err.contains("r1ght-Pw"));
    let (_, help, _) = run(&url("r1ght-Pw"), &["what-if", "--help"]);
    assert!(help.contains("TOKENWARDEN_USAGE_STORE_URL"), "{help}");
    assert!(!help.contains("r1ght-Pw"), "{help}");
}
