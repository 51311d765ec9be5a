//! Connected mode, black-box: the real sidecar binary between a test app
//! and the fake provider, talking gRPC to a fake operator in the test.
//! Asserts what crosses the wire (Hello, ACK/NACK, usage batches, lease
//! requests) and what the app sees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::*;
use tokenwarden_core::money::Usd;
use tokenwarden_proto::{
    BudgetStatus, ConfigSnapshot, LeaseGrant, LeaseUnmet, OperatorMessage, PROTOCOL_VERSION,
    Redirect, UsageAck, operator_message::Msg as Op, sidecar_message::Msg as Sc,
};
use tokenwarden_tests::fake_operator::FakeOperator;

/// The WorkloadConfig JSON the sidecar binary compiles from `policy_yaml`
/// (namespace apps, labels app=agent,team=search).
fn compile(policy_yaml: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), policy_yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
        .arg("--policy-file")
        .arg(dir.path().join("p.yaml"))
        .args(["--namespace", "apps", "--labels", "app=agent,team=search"])
        .args(["--check-config", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn snapshot(version: &str, json: Vec<u8>) -> OperatorMessage {
    OperatorMessage {
        msg: Some(Op::Config(ConfigSnapshot {
            version: version.into(),
            protocol_version: PROTOCOL_VERSION,
            config_schema: tokenwarden_proto::CONFIG_SCHEMA,
            config_json: json,
        })),
    }
}

const ROUTES: &str = r#"  tiers:
    - {name: cheap, provider: anthropic, model: claude-haiku-4-5}
    - {name: standard, provider: anthropic, model: claude-sonnet-4-5}
  routes:
    - {name: mini, match: {models: ["gpt-5"]}, target: {provider: openai, model: gpt-5-mini}}
    - {name: sonnet, match: {models: ["claude-sonnet-*"]}, target: {tier: standard}}
"#;

fn budget(spec: &str) -> String {
    format!(
        "---\napiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: {{name: team, namespace: apps}}\nspec:\n{spec}\n"
    )
}

const CHAT: &str =
    r#"{"model":"gpt-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn day_start() -> i64 {
    let now = jiff::Timestamp::now().as_second();
    now - now.rem_euclid(86_400)
}

fn grant(amount_picos: i64, expires_in_ms: i64, request_id: u64, fail_charged: i64) -> Op {
    Op::LeaseGrant(LeaseGrant {
        budget_namespace: "apps".into(),
        budget_name: "team".into(),
        epoch: 1,
        amount_picos,
        amount_tokens: 0,
        expires_unix_millis: now_ms() + expires_in_ms,
        period_start_unix: day_start(),
        request_id,
        charged_picos: fail_charged,
        charged_tokens: 0,
        charged_seq: 0,
        limits_usd: true,
        limits_tokens: false,
        // The fake operator only grows leases: the version follows the amount.
        version: u64::try_from(amount_picos).unwrap_or(0),
        key: String::new(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_snapshot_ack_nack_and_routed_traffic() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut op = FakeOperator::start().await;
    let json = compile(&policy(&fake, ROUTES, ""));
    op.on_hello(vec![snapshot("v1", json.clone())]);
    let sc = Sidecar::start_connected(&op.url(), "s3cret-token", &[], true);
    let hello = op.hello().await;
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    assert_eq!(
        hello.credential, "s3cret-token",
        "read from the file, trimmed"
    );
    assert_eq!(hello.namespace, "apps");
    assert_eq!(hello.pod_name, "agent-0");
    assert_eq!(hello.pod_uid, "uid-1234");
    assert_eq!(hello.labels.get("team").map(String::as_str), Some("search"));
    assert_eq!(hello.config_version, "", "nothing installed yet");
    assert!(!hello.sidecar_version.is_empty());
    let id = hello.sidecar_id.clone();
    let suffix = id
        .strip_prefix("uid-1234-")
        .unwrap_or_else(|| panic!("{id}"));
    assert!(
        suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(
        std::fs::read_to_string(sc.state_dir().join("sidecar-id"))
            .unwrap()
            .trim(),
        id
    );
    let ack = op.ack().await;
    assert_eq!((ack.version.as_str(), ack.accepted), ("v1", true));

    // Traffic is routed by the pushed config.
    let r = sc.openai("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some("gpt-5-mini"));
    assert_eq!(fake.log().len(), 1);
    let rec = op.records(1).await.remove(0);
    assert_eq!(rec.seq, 1);
    assert_eq!(rec.sidecar_id, id);
    assert_eq!(rec.pod_name, "agent-0");
    assert_eq!(rec.served_model, "gpt-5-mini");
    let reported = fake.log()[0].usage.clone().unwrap();
    assert_eq!(rec.usage.unwrap().output_tokens, reported.output);

    // A bad snapshot: NACK with the field's path, the old config serves.
    let mut bad: serde_json::Value = serde_json::from_slice(&json).unwrap();
    bad["routing"]["default_max_output_tokens"] = serde_json::json!("lots");
    op.send(
        snapshot("v2", serde_json::to_vec(&bad).unwrap())
            .msg
            .unwrap(),
    );
    let nack = op.ack().await;
    assert_eq!((nack.version.as_str(), nack.accepted), ("v2", false));
    assert!(
        nack.reason.contains("routing.default_max_output_tokens"),
        "{}",
        nack.reason
    );
    let mut wrong_ns: serde_json::Value = serde_json::from_slice(&json).unwrap();
    wrong_ns["namespace"] = serde_json::json!("elsewhere");
    op.send(
        snapshot("v3", serde_json::to_vec(&wrong_ns).unwrap())
            .msg
            .unwrap(),
    );
    let nack = op.ack().await;
    assert!(
        !nack.accepted && nack.reason.starts_with("namespace:"),
        "{}",
        nack.reason
    );
    let r = sc.openai("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("gpt-5-mini"));
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tokenwarden_config_snapshots_total{result=\"rejected\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokenwarden_config_info{version=\"v1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokenwarden_control_plane_connected 1"),
        "{metrics}"
    );
    let ledger = sc.ledger().await;
    assert_eq!(ledger["control"]["sidecar_id"], id.as_str());
    assert_eq!(ledger["control"]["config_version"], "v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn spool_replays_unacked_records_after_reconnect_and_kill_9() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut op = FakeOperator::start().await;
    op.on_hello(vec![snapshot("v1", compile(&policy(&fake, ROUTES, "")))]);
    let mut sc = Sidecar::start_connected(&op.url(), "t", &[], true);
    let id = op.hello().await.sidecar_id;
    for _ in 0..3 {
        assert_eq!(
            sc.openai("/v1/chat/completions", CHAT, &[]).await.status,
            200
        );
    }
    let seqs: Vec<u64> = op.records(3).await.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    op.send(Op::UsageAck(UsageAck {
        sidecar_id: id.clone(),
        up_to_seq: 1,
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Operator down: traffic goes on, records are spooled.
    op.stop().await;
    for _ in 0..2 {
        assert_eq!(
            sc.openai("/v1/chat/completions", CHAT, &[]).await.status,
            200
        );
    }
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(metrics.contains("tokenwarden_spool_records 4"), "{metrics}");
    assert!(
        metrics.contains("tokenwarden_control_plane_connected 0"),
        "{metrics}"
    );

    // Back: the unacked records are replayed in seq order, the acked one not.
    op.serve().await;
    assert_eq!(op.hello().await.sidecar_id, id);
    let replay = op.records(4).await;
    let seqs: Vec<u64> = replay.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5]);
    assert!(replay.iter().all(|r| r.sidecar_id == id));
    op.send(Op::UsageAck(UsageAck {
        sidecar_id: id.clone(),
        up_to_seq: 3,
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // kill -9 and restart with the same state dir: same id, the unacked
    // records come again with their seqs, new ones continue the sequence.
    let before: Vec<_> = replay.iter().filter(|r| r.seq > 3).cloned().collect();
    sc.kill();
    sc.spawn();
    let hello = op.hello().await;
    assert_eq!(hello.sidecar_id, id);
    assert_eq!(
        hello.config_version, "v1",
        "served from the persisted snapshot"
    );
    let again = op.records(2).await;
    assert_eq!(again, before, "same records, same seqs, nothing renumbered");
    op.send(Op::UsageAck(UsageAck {
        sidecar_id: id.clone(),
        up_to_seq: 5,
    }));
    assert_eq!(
        sc.openai("/v1/chat/completions", CHAT, &[]).await.status,
        200
    );
    let next = op.records(1).await;
    assert_eq!(next[0].seq, 6);
    // Acked records are not resent on a reconnect.
    op.send(Op::UsageAck(UsageAck {
        sidecar_id: id.clone(),
        up_to_seq: 6,
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    op.stop().await;
    op.serve().await;
    op.hello().await;
    op.no_records_within(700).await;
    // Total: every request the provider served is in exactly one record.
    assert_eq!(fake.log().len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn persisted_snapshot_serves_while_the_operator_is_down() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut op = FakeOperator::start().await;
    op.on_hello(vec![snapshot("v7", compile(&policy(&fake, ROUTES, "")))]);
    let mut sc = Sidecar::start_connected(&op.url(), "t", &[], true);
    op.ack().await;
    op.stop().await;
    sc.kill();
    sc.spawn(); // waits for /readyz: the persisted snapshot is installed
    let r = sc.openai("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("gpt-5-mini"));

    // Without any snapshot the sidecar is not ready.
    let fresh = Sidecar::start_connected(&op.url(), "t", &[], false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = fresh.admin_get("/readyz").await;
    assert_eq!(r.status, 503);
    let r = fresh.openai("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_waits_for_a_lease_grant_and_is_refused_without_one() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut op = FakeOperator::start().await;
    let budget = budget("  period: Daily\n  timeZone: UTC\n  limit: {usd: \"100.00\"}");
    op.on_hello(vec![snapshot(
        "v1",
        compile(&policy(&fake, ROUTES, &budget)),
    )]);
    let sc = Sidecar::start_connected(&op.url(), "t", &["--lease-wait-ms", "3000"], true);
    op.ack().await;

    // No lease yet: the request asks for one and waits; the grant lets it go.
    let app = {
        let client = sc.client.clone();
        let url = format!("http://{}/v1/chat/completions", sc.app);
        tokio::spawn(async move {
            use http_body_util::BodyExt;
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(CHAT)))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            status
        })
    };
    let req = op
        .next("LeaseRequest", |m| match m {
            Sc::LeaseRequest(r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(
        (req.budget_namespace.as_str(), req.budget_name.as_str()),
        ("apps", "team")
    );
    assert!(req.want_picos > 0, "{req:?}");
    assert_eq!(req.period_start_unix, day_start());
    assert!(fake.log().is_empty(), "nothing forwarded before the grant");
    op.send(grant(1_000_000_000_000, 60_000, req.request_id, 0));
    assert_eq!(app.await.unwrap(), 200);
    assert_eq!(fake.log().len(), 1);
    let rec = op.records(1).await.remove(0);
    assert!(rec.cost_picos > 0);

    // A lease too small for the next request, and the operator grants no
    // more: 429 in the provider's shape, naming the budget and the lease.
    op.send(Op::LeaseGrant(LeaseGrant {
        amount_picos: rec.cost_picos + 1000,
        epoch: 2,
        ..match grant(0, 60_000, 0, 0) {
            Op::LeaseGrant(g) => g,
            _ => unreachable!(),
        }
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let r = sc.openai("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "waited for a grant"
    );
    assert_eq!(r.header("x-tokenwarden-error"), Some("lease"));
    let v = r.json();
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert_eq!(v["error"]["code"], "tokenwarden_budget_exceeded");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("TokenBudget apps/team") && msg.contains("lease"),
        "{msg}"
    );
    assert_eq!(
        fake.log().len(),
        1,
        "the refused request never reached the provider"
    );
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics
            .contains("tokenwarden_lease_refusals_total{budget=\"apps/team\",reason=\"lease\"} 1"),
        "{metrics}"
    );
    let ledger = sc.ledger().await;
    assert_eq!(ledger["budgets"][0]["lease"]["epoch"], 2);
}

/// What the operator answers when a lease request's need cannot be
/// covered this period: `remaining_picos` is left cluster-wide.
fn unmet(request_id: u64, remaining_picos: i64) -> Op {
    Op::LeaseUnmet(LeaseUnmet {
        budget_namespace: "apps".into(),
        budget_name: "team".into(),
        period_start_unix: day_start(),
        epoch: 1,
        request_id,
        remaining_picos,
        remaining_tokens: 0,
        limits_usd: true,
        limits_tokens: false,
        key: String::new(),
    })
}

/// Send CHAT as the app, in the background.
fn spawn_chat(sc: &Sidecar) -> tokio::task::JoinHandle<Reply> {
    let client = sc.client.clone();
    let url = format!("http://{}/v1/chat/completions", sc.app);
    tokio::spawn(async move {
        use http_body_util::BodyExt;
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .header("authorization", "Bearer app-key-not-real")
            .body(http_body_util::Full::new(bytes::Bytes::from(CHAT)))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_need_the_budget_cannot_cover_is_refused_at_once_with_what_is_left() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut op = FakeOperator::start().await;
    let budget = budget("  period: Daily\n  timeZone: UTC\n  limit: {usd: \"100.00\"}");
    op.on_hello(vec![
        snapshot("v1", compile(&policy(&fake, ROUTES, &budget))),
        // The period (for retry-after); the spend it reports is older than
        // the answer below.
        OperatorMessage {
            msg: Some(Op::BudgetStatus(BudgetStatus {
                namespace: "apps".into(),
                name: "team".into(),
                period_start_unix: day_start(),
                period_end_unix: day_start() + 86_400,
                spent_picos: 0,
                spent_tokens: 0,
                percent_spent: 0,
                state: "Ok".into(),
                limit_picos: 100_000_000_000_000,
                has_limit_usd: true,
                limit_tokens: 0,
                has_limit_tokens: false,
                keys: vec![],
                projected_overrun: false,
            })),
        },
    ]);
    // A long lease wait: the refusal must not come from it running out.
    let sc = Sidecar::start_connected(&op.url(), "t", &["--lease-wait-ms", "8000"], true);
    op.ack().await;
    let lease_request = |m| match m {
        Sc::LeaseRequest(r) if r.need_picos > 0 => Some(r),
        _ => None,
    };

    // No lease: the request asks for its worst case, and the operator
    // answers that only half of it is left of the budget cluster-wide.
    let started = std::time::Instant::now();
    let app = spawn_chat(&sc);
    let req = op.next("LeaseRequest with a need", lease_request).await;
    let left = req.need_picos / 2;
    op.send(unmet(req.request_id, left));
    let r = app.await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        took < Duration::from_millis(2000),
        "refused after {took:?}, not at once"
    );
    assert_eq!(r.header("x-tokenwarden-error"), Some("limit"));
    let v = r.json();
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert_eq!(v["error"]["code"], "tokenwarden_budget_exceeded");
    let msg = v["error"]["message"].as_str().unwrap();
    let worst = Usd::from_picos(i128::from(req.need_picos));
    let left_usd = Usd::from_picos(i128::from(left));
    assert!(
        msg.contains("TokenBudget apps/team cannot cover this request")
            && msg.contains(&format!("worst-case cost ${worst}"))
            && msg.contains(&format!("${left_usd} left of it cluster-wide")),
        "{msg}"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    let to_reset =
        u64::try_from(day_start() + 86_400 - jiff::Timestamp::now().as_second()).unwrap();
    assert!(
        retry <= to_reset && retry + 5 >= to_reset,
        "{retry} vs {to_reset}"
    );
    assert!(fake.log().is_empty(), "the provider never saw it");
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains(
            "tokenwarden_budget_blocks_total{budget=\"apps/team\",reason=\"limit\",shadow=\"false\"} 1"
        ),
        "{metrics}"
    );

    // A request that begins after that answer is not refused by it: it
    // asks again.
    let app = spawn_chat(&sc);
    let again = op.next("LeaseRequest with a need", lease_request).await;
    assert!(again.request_id > req.request_id);
    // An answer whose remaining it fits (as when it answers a bigger
    // request waiting on the same lease) does not refuse it either: it
    // keeps waiting, and the grant lets it through.
    op.send(unmet(again.request_id, again.need_picos));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!app.is_finished(), "still waiting for a grant");
    op.send(grant(1_000_000_000_000, 60_000, again.request_id, 0));
    let r = app.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake.log().len(), 1);
}

async fn expired_lease_with_operator_down(
    fail_mode: &str,
) -> (Reply, Sidecar, FakeOperator, FakeProvider) {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut op = FakeOperator::start().await;
    let budget = budget(&format!(
        "  period: Daily\n  timeZone: UTC\n  limit: {{usd: \"100.00\"}}\n  failMode: {fail_mode}"
    ));
    op.on_hello(vec![snapshot(
        "v1",
        compile(&policy(&fake, ROUTES, &budget)),
    )]);
    let sc = Sidecar::start_connected(&op.url(), "t", &["--lease-wait-ms", "300"], true);
    op.ack().await;
    op.send(grant(1_000_000_000_000, 1500, 0, 0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = sc.openai("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    op.records(1).await;
    op.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the lease expired
    let r = sc.openai("/v1/chat/completions", CHAT, &[]).await;
    (r, sc, op, fake)
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_closed_refuses_when_the_operator_is_down_and_the_lease_expired() {
    let (r, sc, _op, _fake) = expired_lease_with_operator_down("Closed").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-error"), Some("fail_closed"));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("control plane is unreachable") && msg.contains("apps/team"),
        "{msg}"
    );
    assert!(msg.contains("expired"), "{msg}");
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(metrics.contains("reason=\"fail_closed\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_open_allows_and_records_when_the_operator_is_down() {
    let (r, sc, mut op, _fake) = expired_lease_with_operator_down("Open").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tokenwarden_lease_fail_open_total{budget=\"apps/team\"} 1"),
        "{metrics}"
    );
    // The request allowed without a lease is recorded and reported.
    op.serve().await;
    let seqs: Vec<u64> = op.records(2).await.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_wide_80_percent_flips_to_the_downgrade_target() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut op = FakeOperator::start().await;
    let budget = budget(
        "  period: Daily\n  timeZone: UTC\n  limit: {usd: \"100.00\"}\n  thresholds:\n    - {percent: 80, action: Downgrade, downgradeTo: {tier: cheap}}",
    );
    op.on_hello(vec![
        snapshot("v1", compile(&policy(&fake, ROUTES, &budget))),
        OperatorMessage {
            msg: Some(grant(10_000_000_000_000, 600_000, 0, 0)),
        },
    ]);
    let sc = Sidecar::start_connected(&op.url(), "t", &[], true);
    op.ack().await;
    let sonnet = r#"{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc.anthropic(sonnet, &[]).await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("claude-sonnet-4-5"));
    op.send(Op::BudgetStatus(BudgetStatus {
        namespace: "apps".into(),
        name: "team".into(),
        period_start_unix: day_start(),
        period_end_unix: day_start() + 86_400,
        spent_picos: 80_000_000_000_000,
        spent_tokens: 0,
        percent_spent: 80,
        state: "Threshold".into(),
        limit_picos: 100_000_000_000_000,
        has_limit_usd: true,
        limit_tokens: 0,
        has_limit_tokens: false,
        keys: vec![],
        projected_overrun: false,
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = sc.anthropic(sonnet, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some("claude-haiku-4-5"));
    assert_eq!(r.header("x-tokenwarden-adjusted"), Some("downgraded"));
    let sent = fake.log().last().unwrap().body_json().unwrap();
    assert_eq!(sent["model"], "claude-haiku-4-5");
    let ledger = sc.ledger().await;
    let b = &ledger["budgets"][0];
    assert_eq!(b["cluster"]["percent_spent"], 80);
    assert_eq!(b["percent_spent"], 80);
    assert_eq!(b["state"], "Threshold");
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tokenwarden_budget_cluster_percent_spent{budget=\"apps/team\"} 80"),
        "{metrics}"
    );
    // The operator's state and period end, for the dashboard's forecast and
    // the alerts (Threshold = 1).
    assert!(
        metrics.contains("tokenwarden_budget_cluster_state{budget=\"apps/team\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "tokenwarden_budget_period_end_timestamp_seconds{{budget=\"apps/team\"}} {}\n",
            day_start() + 86_400
        )),
        "{metrics}"
    );
}

/// What the operator tells the sidecar about `apps/team` ($100 a day):
/// `percent` spent, and whether its forecast reaches the limit.
fn team_status(percent: u32, projected_overrun: bool) -> Op {
    Op::BudgetStatus(BudgetStatus {
        namespace: "apps".into(),
        name: "team".into(),
        period_start_unix: day_start(),
        period_end_unix: day_start() + 86_400,
        spent_picos: i64::from(percent) * 1_000_000_000_000,
        spent_tokens: 0,
        percent_spent: percent,
        state: if percent >= 80 { "Threshold" } else { "Ok" }.into(),
        limit_picos: 100_000_000_000_000,
        has_limit_usd: true,
        limit_tokens: 0,
        has_limit_tokens: false,
        keys: vec![],
        projected_overrun,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projected_overrun_downgrades_before_the_threshold_and_clears() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut op = FakeOperator::start().await;
    let budget = budget(
        "  period: Daily\n  timeZone: UTC\n  limit: {usd: \"100.00\"}\n  thresholds:\n    - {percent: 80, action: Downgrade, downgradeTo: {model: claude-3-5-haiku-20241022}}\n  onProjectedOverrun: {action: Downgrade, downgradeTo: {tier: cheap}}",
    );
    op.on_hello(vec![
        snapshot("v1", compile(&policy(&fake, ROUTES, &budget))),
        OperatorMessage {
            msg: Some(grant(10_000_000_000_000, 600_000, 0, 0)),
        },
    ]);
    let sc = Sidecar::start_connected(&op.url(), "t", &[], true);
    op.ack().await;
    let sonnet = r#"{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let upstream_model = |want: &str| {
        let sent = fake.log().last().unwrap().body_json().unwrap();
        assert_eq!(sent["model"], want, "the model the provider received");
    };
    let r = sc.anthropic(sonnet, &[]).await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("claude-sonnet-4-5"));
    upstream_model("claude-sonnet-4-5");

    // 30% spent, but the operator projects an overrun: the early downgrade.
    op.send(team_status(30, true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = sc.anthropic(sonnet, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some("claude-haiku-4-5"));
    assert_eq!(r.header("x-tokenwarden-adjusted"), Some("downgraded"));
    upstream_model("claude-haiku-4-5");

    // A quiet spell clears the projection: requests go where they were
    // routed again.
    op.send(team_status(31, false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = sc.anthropic(sonnet, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-adjusted"), None);
    upstream_model("claude-sonnet-4-5");

    // At 80% the Downgrade threshold takes precedence over the projection.
    op.send(team_status(80, true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = sc.anthropic(sonnet, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    upstream_model("claude-3-5-haiku-20241022");
}

/// `tokenwarden_budget_cluster_projected_overrun` is the operator's flag
/// for the budget's current period, as the chart's
/// TokenwardenBudgetProjectedOverrun alert reads it: no series before a
/// BudgetStatus, 1 / 0 as the operator sets / clears it, 0 for a status of
/// another period.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_projected_overrun_gauge_follows_the_operators_flag() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut op = FakeOperator::start().await;
    let budget = budget("  period: Daily\n  timeZone: UTC\n  limit: {usd: \"100.00\"}");
    op.on_hello(vec![snapshot(
        "v1",
        compile(&policy(&fake, ROUTES, &budget)),
    )]);
    let sc = Sidecar::start_connected(&op.url(), "t", &[], true);
    op.ack().await;
    let gauge = "tokenwarden_budget_cluster_projected_overrun";
    let team = [("budget", "apps/team")];
    let m = metrics(&sc).await;
    assert_eq!(sample(&m, gauge, &team), None, "{m}");

    let settle = || tokio::time::sleep(Duration::from_millis(300));
    op.send(team_status(30, true));
    settle().await;
    let m = metrics(&sc).await;
    assert_eq!(sample(&m, gauge, &team), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "tokenwarden_budget_cluster_percent_spent", &team),
        Some(30.0)
    );

    op.send(team_status(31, false));
    settle().await;
    assert_eq!(sample(&metrics(&sc).await, gauge, &team), Some(0.0));

    op.send(team_status(32, true));
    settle().await;
    assert_eq!(sample(&metrics(&sc).await, gauge, &team), Some(1.0));

    // Yesterday's projection is not today's: the sidecar is in a newer
    // period, so the flag does not count (and the budget does not act on it).
    let Op::BudgetStatus(mut stale) = team_status(33, true) else {
        unreachable!()
    };
    stale.period_start_unix -= 86_400;
    stale.period_end_unix -= 86_400;
    op.send(Op::BudgetStatus(stale));
    settle().await;
    // Also past the next housekeeping tick (once a second), which keeps it.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(sample(&metrics(&sc).await, gauge, &team), Some(0.0));

    // A budget this sidecar does not hold: the operator's word as sent.
    let Op::BudgetStatus(mut other) = team_status(10, true) else {
        unreachable!()
    };
    other.name = "other".into();
    op.send(Op::BudgetStatus(other));
    settle().await;
    let m = metrics(&sc).await;
    assert_eq!(sample(&m, gauge, &[("budget", "apps/other")]), Some(1.0));
    assert_eq!(sample(&m, gauge, &team), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_is_followed() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut leader = FakeOperator::start().await;
    leader.on_hello(vec![snapshot("v1", compile(&policy(&fake, ROUTES, "")))]);
    let mut follower = FakeOperator::start().await;
    follower.on_hello(vec![OperatorMessage {
        msg: Some(Op::Redirect(Redirect {
            address: leader.addr.to_string(),
            reason: "not the leader".into(),
        })),
    }]);
    let sc = Sidecar::start_connected(&follower.url(), "t", &[], true);
    let h1 = follower.hello().await;
    let h2 = leader.hello().await;
    assert_eq!(h1.sidecar_id, h2.sidecar_id);
    assert!(leader.ack().await.accepted);
    assert_eq!(
        sc.openai("/v1/chat/completions", CHAT, &[]).await.status,
        200
    );
    assert_eq!(leader.records(1).await[0].seq, 1);
}

#[test]
fn exactly_one_of_policy_file_and_control_plane() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
            .args(args)
            .env_remove("TOKENWARDEN_SIDECAR_POLICY_FILE")
            .env_remove("TOKENWARDEN_SIDECAR_CONTROL_PLANE")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(64));
    assert!(
        err.contains("one of --policy-file (standalone mode) or --control-plane"),
        "{err}"
    );
    let (code, err) = run(&[
        "--policy-file",
        "/x.yaml",
        "--control-plane",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(code, Some(64));
    assert!(err.contains("exclude each other"), "{err}");
    let (code, err) = run(&["--control-plane", "grpc://x:1"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("expected https://host:port"), "{err}");
}

/// The log says why the control plane cannot be reached (here: nothing
/// listens), not only tonic's "transport error".
#[test]
fn an_unreachable_control_plane_is_logged_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
        .args(["--control-plane", &format!("http://127.0.0.1:{port}")])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--state-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("cannot connect to the control plane"))
        .unwrap_or_else(|| panic!("no connect error in {log}"));
    assert!(
        line.to_lowercase().contains("connection refused"),
        "the cause is missing: {line}"
    );
}
