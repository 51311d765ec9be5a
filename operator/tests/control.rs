//! The operator as a black box: the real binary in local mode, driven by a
//! fake sidecar speaking the proto over real gRPC on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::SocketAddr,
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tokenwarden_proto::{
    BudgetPeriod, ConfigAck, Hello, LeaseRequest, OperatorMessage, SidecarMessage, Usage,
    UsageBatch, UsageRecord, control_client::ControlClient, operator_message::Msg as Out,
    sidecar_message::Msg as In,
};
use tokenwarden_tests::{
    fake_sidecar::FakeSidecar,
    operator::Stderr,
    probe::{get_over, http_get, wait_listening},
    process::{Proc, free_port},
    tls::TestCa,
};
use tokio::sync::mpsc;

const SECRET: &str = "local-shared-secret-0123456789";

const OBJECTS: &str = r#"
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: web-routing, namespace: shop}
spec:
  workloadSelector: {matchLabels: {app: web}}
  providers:
    - {name: openai, api: openai, baseUrl: "http://127.0.0.1:9", apiKeySecretRef: {name: keys, key: openai}}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: team, namespace: shop}
spec:
  workloadSelector: {matchLabels: {app: web}}
  period: Daily
  limit: {usd: "1.00"}
"#;

/// The real operator in local mode on a test directory (objects in
/// `objects/`, the shared secret in `secret`, state in `state/`).
struct Operator {
    state: PathBuf,
    op: tokenwarden_tests::operator::Operator,
}

impl Deref for Operator {
    type Target = tokenwarden_tests::operator::Operator;
    fn deref(&self) -> &Self::Target {
        &self.op
    }
}

impl DerefMut for Operator {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.op
    }
}

impl Operator {
    /// Laid out on `dir`, on new ports, not started.
    fn new(dir: &Path) -> Operator {
        std::fs::write(dir.join("secret"), SECRET).unwrap();
        let state = dir.join("state");
        Operator {
            op: tokenwarden_tests::operator::Operator::local(dir, &state),
            state,
        }
    }

    fn start(dir: &Path) -> Operator {
        let mut op = Self::new(dir);
        op.spawn();
        op
    }

    /// (Re)start on the same ports and state; returns once the admin port listens.
    fn spawn(&mut self) {
        self.op.spawn().wait_listening();
    }

    fn budget_status(&self) -> serde_json::Value {
        let p = self.state.join("status/tokenbudgets/shop.team.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    fn policy_status(&self) -> Option<serde_json::Value> {
        let p = self
            .state
            .join("status/routingpolicies/shop.web-routing.json");
        std::fs::read(p)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }
}

fn setup() -> (tempfile::TempDir, Operator) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("objects")).unwrap();
    std::fs::write(tmp.path().join("objects/shop.yaml"), OBJECTS).unwrap();
    let op = Operator::start(tmp.path());
    (tmp, op)
}

fn hello(id: &str, credential: &str) -> Hello {
    Hello {
        protocol_version: 1,
        sidecar_id: id.into(),
        namespace: "shop".into(),
        pod_name: format!("web-{id}"),
        pod_uid: format!("uid-{id}"),
        labels: [("app".to_string(), "web".to_string())].into(),
        sidecar_version: "test".into(),
        credential: credential.into(),
        config_version: String::new(),
    }
}

fn record(sidecar: &str, seq: u64, cost_picos: i64, period_start: i64) -> UsageRecord {
    UsageRecord {
        sidecar_id: sidecar.into(),
        seq,
        ts_unix_nanos: jiff::Timestamp::now().as_nanosecond() as i64,
        endpoint: "chatCompletions".into(),
        requested_model: "gpt-4o".into(),
        served_model: "gpt-4o-mini".into(),
        provider: "openai".into(),
        attempt: 1,
        status: 200,
        usage: Some(Usage {
            input_tokens: 100,
            output_tokens: 10,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
        }),
        cost_picos,
        priced: true,
        budgets: vec![BudgetPeriod {
            namespace: "shop".into(),
            name: "team".into(),
            period_start_unix: period_start,
            key: String::new(),
        }],
        pod_name: "web".into(),
        ..Default::default()
    }
}

fn today() -> i64 {
    let now = jiff::Timestamp::now();
    now.as_second() - now.as_second().rem_euclid(86_400)
}

fn spent_picos(op: &Operator) -> i128 {
    op.budget_status()["ledger"]["spentPicos"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn unauthenticated_streams_are_refused() {
    let (_tmp, op) = setup();
    // Wait until the operator leads: a standby redirects before it checks
    // credentials.
    FakeSidecar::connect_synced(&op.url(), hello("ok", SECRET)).await;
    let err = FakeSidecar::connect(&op.url(), hello("a", "not-the-secret-at-all"))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message()
            .contains("the credential does not match the shared secret"),
        "{}",
        err.message()
    );
    let err = FakeSidecar::connect(&op.url(), hello("a", ""))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn snapshot_usage_and_leases_end_to_end() {
    let (_tmp, op) = setup();
    let mut sc = FakeSidecar::connect_synced(&op.url(), hello("s1", SECRET)).await;
    let snap = sc.snapshot().await;
    assert_eq!(snap.protocol_version, 1);
    let cfg: serde_json::Value = serde_json::from_slice(&snap.config_json).unwrap();
    assert_eq!(cfg["routing"]["source"]["name"], "web-routing");
    assert_eq!(cfg["budgets"][0]["source"]["name"], "team");
    sc.send(In::ConfigAck(ConfigAck {
        version: snap.version.clone(),
        accepted: true,
        reason: String::new(),
    }))
    .await;
    let status = sc
        .next(10, |m| match m {
            Out::BudgetStatus(s) => Some(s),
            _ => None,
        })
        .await;
    assert_eq!(status.limit_picos, 1_000_000_000_000);
    assert_eq!(status.period_start_unix, today());

    // A lease: at least what was asked, request id echoed.
    sc.send(In::LeaseRequest(LeaseRequest {
        budget_namespace: "shop".into(),
        budget_name: "team".into(),
        want_picos: 100_000_000_000,
        request_id: 7,
        ..Default::default()
    }))
    .await;
    let grant = sc
        .next(10, |m| match m {
            Out::LeaseGrant(g) if g.request_id == 7 => Some(g),
            _ => None,
        })
        .await;
    assert_eq!(grant.amount_picos, 100_000_000_000);
    assert!(grant.expires_unix_millis > jiff::Timestamp::now().as_millisecond());
    // The grant was durable before it was sent.
    let st = op.budget_status();
    assert_eq!(st["ledger"]["sidecars"][0]["grantedPicos"], "100000000000");

    // Usage: acked once durable; replays are not counted twice.
    let batch = |seqs: &[u64]| {
        In::Usage(UsageBatch {
            records: seqs
                .iter()
                .map(|s| record("s1", *s, 1_000_000_000 * *s as i64, today()))
                .collect(),
        })
    };
    sc.send(batch(&[1, 2, 3])).await;
    sc.ack_up_to(3).await;
    assert_eq!(spent_picos(&op), 6_000_000_000);
    sc.send(batch(&[2, 3, 4])).await;
    sc.ack_up_to(4).await;
    assert_eq!(spent_picos(&op), 10_000_000_000);
    let st = op.budget_status();
    assert_eq!(st["spentUsd"], "0.01");
    assert_eq!(st["requests"], 4);
    assert_eq!(st["topModels"][0]["name"], "gpt-4o-mini");
    assert_eq!(st["topWorkloads"][0]["name"], "shop/web");
    assert_eq!(st["ledger"]["sidecars"][0]["seq"], 4);
    assert_eq!(st["ledger"]["sidecars"][0]["chargedPicos"], "10000000000");

    // The RoutingPolicy's Ready condition counts the sidecar on its version.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(p) = op.policy_status()
            && p["sidecars"] == "1/1"
        {
            let ready = p["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap();
            assert_eq!(ready["status"], "True");
            assert_eq!(ready["reason"], "AllSidecarsInSync");
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", op.policy_status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cluster ledger groups by namespace, workload and model.
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(op.state.join("ledger.json")).unwrap()).unwrap();
    assert_eq!(ledger["watermarks"]["s1"], 4);
}

#[tokio::test]
async fn a_change_reaches_the_sidecar_within_a_second_and_nacks_show_in_status() {
    let (tmp, op) = setup();
    let mut sc = FakeSidecar::connect_synced(&op.url(), hello("s1", SECRET)).await;
    let first = sc.snapshot().await;
    sc.send(In::ConfigAck(ConfigAck {
        version: first.version.clone(),
        accepted: true,
        reason: String::new(),
    }))
    .await;
    let changed = OBJECTS.replace("limit: {usd: \"1.00\"}", "limit: {usd: \"2.00\"}");
    let t = Instant::now();
    std::fs::write(tmp.path().join("objects/shop.yaml"), changed).unwrap();
    let second = sc.snapshot().await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_ne!(second.version, first.version);
    let cfg: serde_json::Value = serde_json::from_slice(&second.config_json).unwrap();
    assert_eq!(cfg["budgets"][0]["limit_usd"], "2.00");
    sc.send(In::ConfigAck(ConfigAck {
        version: second.version.clone(),
        accepted: false,
        reason: "routing.tiers[0]: unknown provider".into(),
    }))
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(p) = op.policy_status() {
            let ready = p["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .cloned()
                .unwrap();
            if ready["status"] == "False" {
                assert_eq!(ready["reason"], "RejectedBySidecar");
                let msg = ready["message"].as_str().unwrap();
                assert!(
                    msg.contains("0/1 sidecars run the current version"),
                    "{msg}"
                );
                assert!(msg.contains("pod shop/web-s1"), "{msg}");
                assert!(msg.contains("routing.tiers[0]: unknown provider"), "{msg}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "{:?}", op.policy_status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kill_9_of_the_operator_loses_nothing_and_counts_nothing_twice() {
    let (_tmp, mut op) = setup();
    let mut truth: i128 = 0;
    let mut next_seq = 1u64;
    let mut acked = 0u64;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..5 {
        let mut sc = FakeSidecar::connect_synced(&op.url(), hello("s1", SECRET)).await;
        sc.snapshot().await;
        // Replay everything not acked (as the sidecar's spool does), then
        // new records; kill at a random point.
        let mut unacked: Vec<UsageRecord> = (acked + 1..next_seq)
            .map(|s| record("s1", s, 1_000_000 * s as i64, today()))
            .collect();
        for _ in 0..20 {
            let r = record("s1", next_seq, 1_000_000 * next_seq as i64, today());
            truth += 1_000_000 * i128::from(next_seq);
            next_seq += 1;
            unacked.push(r);
        }
        for chunk in unacked.chunks(3) {
            sc.send(In::Usage(UsageBatch {
                records: chunk.to_vec(),
            }))
            .await;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wait_ms = rng % 400;
        let until = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        while let Ok(Ok(Some(m))) = tokio::time::timeout_at(until, sc.rx.message()).await {
            if let Some(Out::UsageAck(a)) = m.msg {
                acked = acked.max(a.up_to_seq);
            }
        }
        op.kill9();
        op.spawn();
        let _ = round;
    }
    // Final reconnect: replay the rest and wait for the last ack.
    let mut sc = FakeSidecar::connect_synced(&op.url(), hello("s1", SECRET)).await;
    sc.snapshot().await;
    let rest: Vec<UsageRecord> = (acked + 1..next_seq)
        .map(|s| record("s1", s, 1_000_000 * s as i64, today()))
        .collect();
    if !rest.is_empty() {
        sc.send(In::Usage(UsageBatch { records: rest })).await;
        sc.ack_up_to(next_seq - 1).await;
    }
    // Replaying everything once more changes nothing.
    let all: Vec<UsageRecord> = (1..next_seq)
        .map(|s| record("s1", s, 1_000_000 * s as i64, today()))
        .collect();
    sc.send(In::Usage(UsageBatch { records: all })).await;
    sc.ack_up_to(next_seq - 1).await;
    assert_eq!(spent_picos(&op), truth);
    assert_eq!(
        op.budget_status()["requests"].as_i64().unwrap() as u64,
        next_seq - 1
    );
}

#[tokio::test]
async fn a_standby_redirects_and_takes_over_without_double_counting() {
    let (tmp, mut leader) = setup();
    // Make sure the first one holds the lock before the second starts.
    let mut sc = FakeSidecar::connect_synced(&leader.url(), hello("s1", SECRET)).await;
    sc.snapshot().await;
    let mut standby = Operator::new(tmp.path());
    assert_eq!(standby.state, leader.state);
    standby.spawn();
    let mut s2 = FakeSidecar::connect(&standby.url(), hello("s2", SECRET))
        .await
        .unwrap();
    let redirect = s2
        .next(10, |m| match m {
            Out::Redirect(r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(redirect.address, leader.url());
    let end = s2.rx.message().await.unwrap_err();
    assert_eq!(end.code(), tonic::Code::Unavailable);

    let recs: Vec<UsageRecord> = (1..=5)
        .map(|s| record("s1", s, 2_000_000, today()))
        .collect();
    sc.send(In::Usage(UsageBatch {
        records: recs.clone(),
    }))
    .await;
    sc.ack_up_to(5).await;
    leader.kill9();
    // The standby takes the lock and reads the statuses the leader wrote
    // after the standby started (its watch of the directory does not see
    // them): records 1-5 were acked, so a sidecar never sends them again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sc = FakeSidecar::connect_synced(&standby.url(), hello("s1", SECRET)).await;
    assert!(
        Instant::now() < deadline,
        "standby took too long to take over"
    );
    sc.send(In::Usage(UsageBatch {
        records: vec![record("s1", 6, 2_000_000, today())],
    }))
    .await;
    sc.ack_up_to(6).await;
    assert_eq!(spent_picos(&standby), 12_000_000);
    // A replay of what was acked (a sidecar that lost its ack) is
    // deduplicated by the watermark the standby read.
    sc.send(In::Usage(UsageBatch { records: recs })).await;
    sc.ack_up_to(5).await;
    assert_eq!(spent_picos(&standby), 12_000_000);
}

#[tokio::test]
async fn the_control_server_speaks_tls_with_a_certificate_from_files() {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};

    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"]);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("objects")).unwrap();
    std::fs::write(tmp.path().join("objects/shop.yaml"), OBJECTS).unwrap();
    std::fs::write(tmp.path().join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(tmp.path().join("tls.key"), &leaf.key_pem).unwrap();
    let mut op = Operator::new(tmp.path());
    op.args([
        "--tls-cert-file".into(),
        tmp.path().join("tls.crt").into_os_string(),
        "--tls-key-file".into(),
        tmp.path().join("tls.key").into_os_string(),
    ]);
    op.spawn();
    let url = format!("https://localhost:{}", op.grpc);

    // Trusting the CA: a session works.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    let deadline = Instant::now() + Duration::from_secs(15);
    let snap = loop {
        let channel = Channel::from_shared(url.clone())
            .unwrap()
            .tls_config(tls.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        if let Ok(mut session) = FakeSidecar::open(channel, hello("tls", SECRET)).await
            && let Ok(Some(OperatorMessage {
                msg: Some(Out::Config(c)),
            })) = session.rx.message().await
        {
            break c;
        }
        assert!(Instant::now() < deadline, "no snapshot over TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!snap.version.is_empty());

    // Plaintext against the TLS port fails, and so does TLS without the CA.
    let plain = ControlClient::connect(format!("http://127.0.0.1:{}", op.grpc)).await;
    if let Ok(mut c) = plain {
        let (_tx, rx) = mpsc::channel::<SidecarMessage>(1);
        let out =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        assert!(c.session(out).await.is_err());
    }
    let other_ca = TestCa::new();
    let untrusted = Channel::from_shared(url).unwrap().tls_config(
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(other_ca.pem()))
            .domain_name("localhost"),
    );
    let refused = match untrusted {
        Ok(ch) => ch.connect().await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "an unknown CA must be refused");
    op.kill9();
}

// === listeners, /ledger, the state dir, logs ===

/// GET until the answer has `status`, within 15 s; returns the body.
fn get_until(addr: SocketAddr, path: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = http_get(addr, path);
        if let Some((s, body)) = &got
            && *s == status
        {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "GET {addr}{path}: wanted {status}, last {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory with `objects/shop.yaml` and the shared secret.
fn local_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("objects")).unwrap();
    std::fs::write(tmp.path().join("objects/shop.yaml"), OBJECTS).unwrap();
    std::fs::write(tmp.path().join("secret"), SECRET).unwrap();
    tmp
}

/// The operator in local mode on `tmp` with exactly `args` besides the
/// objects and the secret; stderr into `tmp/operator.log`.
fn operator_command(tmp: &Path, args: &[String]) -> Command {
    let mut op = tokenwarden_tests::operator::Operator::new();
    op.arg("--local-dir")
        .arg(tmp.join("objects"))
        .arg("--shared-secret-file")
        .arg(tmp.join("secret"))
        .args(args);
    op.rust_log = "info".into();
    op.stderr = Stderr::Append(tmp.join("operator.log"));
    op.command()
}

#[test]
fn plaintext_control_off_loopback_is_refused_unless_allowed() {
    let tmp = local_dir();
    let grpc = free_port();
    let admin = free_port();
    let args = vec![
        "--state-dir".to_string(),
        tmp.path().join("state").display().to_string(),
        "--grpc-listen".into(),
        format!("0.0.0.0:{grpc}"),
        "--admin-listen".into(),
        format!("127.0.0.1:{admin}"),
    ];
    let out = operator_command(tmp.path(), &args)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "tokenwarden-operator: refusing to serve the control plane in plaintext on 0.0.0.0:{grpc} \
             (not a loopback address)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("pass --allow-plaintext-control"),
        "{stderr}"
    );
    // Refused before anything started.
    assert!(!tmp.path().join("state").exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", admin)).is_err());

    // Allowed by the variable (the flag's env): it serves, and says so.
    let child = operator_command(tmp.path(), &args)
        .env("TOKENWARDEN_OPERATOR_ALLOW_PLAINTEXT_CONTROL", "true")
        .spawn()
        .unwrap();
    let _child = Proc(Some(child));
    wait_listening(admin, 20);
    wait_listening(grpc, 20);
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin));
    get_until(admin_addr, "/ledger", 200);
    let log = std::fs::read_to_string(tmp.path().join("operator.log")).unwrap();
    assert!(
        log.contains(&format!(
            "the control server speaks plaintext on 0.0.0.0:{grpc} (--allow-plaintext-control)"
        )),
        "{log}"
    );
}

#[test]
fn ledger_answers_loopback_clients_only() {
    let tmp = local_dir();
    let admin = free_port();
    let child = operator_command(
        tmp.path(),
        &[
            "--state-dir".into(),
            tmp.path().join("state").display().to_string(),
            "--grpc-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            // Network tests stay on 127.0.0.1: the refusal of other
            // clients is ledger_refuses_clients_off_loopback_in_local_mode's.
            "--admin-listen".into(),
            format!("127.0.0.1:{admin}"),
        ],
    )
    .spawn()
    .unwrap();
    let _child = Proc(Some(child));
    wait_listening(admin, 20);
    let loopback = SocketAddr::from(([127, 0, 0, 1], admin));
    let ledger = get_until(loopback, "/ledger", 200);
    let ledger: serde_json::Value = serde_json::from_str(&ledger).unwrap();
    assert!(ledger.is_object(), "{ledger}");

    assert_eq!(http_get(loopback, "/healthz").map(|r| r.0), Some(200));
}

/// The peer rule itself, with any peer address (an in-memory connection):
/// local mode has no token check, so only loopback reads `/ledger`.
#[tokio::test]
async fn ledger_refuses_clients_off_loopback_in_local_mode() {
    use tokenwarden_operator::{admin, engine::Cmd, metrics::Metrics, source::Leadership};

    let (tx, mut rx) = mpsc::channel::<Cmd>(4);
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if let Cmd::Ledger(reply) = cmd {
                let _ = reply.send(serde_json::json!({"ledger": []}));
            }
        }
    });
    let state = admin::AdminState {
        metrics: Arc::new(Metrics::new()),
        engine: tokio::sync::watch::channel(Some(tx)).1,
        leadership: tokio::sync::watch::channel(Leadership {
            leader: true,
            leader_address: None,
        })
        .1,
        synced: tokio::sync::watch::channel(true).1,
        tls: None,
        ledger_access: None,
    };
    let get = |peer: &str, path: &'static str, auth: Option<&'static str>| {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        tokio::spawn(admin::serve_connection(
            server_io,
            peer.parse().unwrap(),
            state.clone(),
        ));
        let mut headers = vec![("host", "x")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        async move {
            let (status, _, body) = get_over(client_io, path, &headers).await;
            (status, body)
        }
    };
    for peer in [
        "192.0.2.77:5000",
        "[fd00::7]:5000",
        "[::ffff:10.0.0.7]:5000",
    ] {
        // A token changes nothing: there is nobody to check it with.
        for auth in [None, Some("Bearer anything")] {
            assert_eq!(
                get(peer, "/ledger", auth).await,
                (
                    403,
                    "forbidden: /ledger answers loopback clients only\n".to_string()
                ),
                "{peer}"
            );
        }
        assert_eq!(get(peer, "/healthz", None).await.0, 200);
        assert_eq!(get(peer, "/metrics", None).await.0, 200);
    }
    for peer in [
        "127.0.0.1:5000",
        "127.0.0.2:5000",
        "[::1]:5000",
        "[::ffff:127.0.0.1]:5000",
    ] {
        assert_eq!(
            get(peer, "/ledger", None).await,
            (200, "{\n  \"ledger\": []\n}".to_string()),
            "{peer}"
        );
    }
}

#[test]
fn the_default_state_dir_lies_beside_the_watched_dir() {
    let tmp = local_dir();
    let admin = free_port();
    let child = operator_command(
        tmp.path(),
        &[
            "--grpc-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--admin-listen".into(),
            format!("127.0.0.1:{admin}"),
        ],
    )
    .spawn()
    .unwrap();
    let _child = Proc(Some(child));
    wait_listening(admin, 20);
    get_until(SocketAddr::from(([127, 0, 0, 1], admin)), "/ledger", 200);
    let state = tmp.path().join("objects.state");
    assert!(state.join("leader.lock").is_file());
    assert!(!tmp.path().join("objects/.tokenwarden").exists());
    let watched: Vec<String> = std::fs::read_dir(tmp.path().join("objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(watched, vec!["shop.yaml".to_string()]);
}

#[test]
fn logs_carry_no_colour_codes_off_a_terminal() {
    let tmp = local_dir();
    let admin = free_port();
    let child = operator_command(
        tmp.path(),
        &[
            "--state-dir".into(),
            tmp.path().join("state").display().to_string(),
            "--grpc-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--admin-listen".into(),
            format!("127.0.0.1:{admin}"),
        ],
    )
    .env_remove("NO_COLOR")
    .env_remove("TOKENWARDEN_OPERATOR_LOG_FORMAT")
    .spawn()
    .unwrap();
    let _child = Proc(Some(child));
    wait_listening(admin, 20);
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(tmp.path().join("operator.log")).unwrap();
        if log.contains("leading") {
            break log;
        }
        assert!(Instant::now() < deadline, "no log lines: {log:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(log.contains(" INFO "), "{log}");
    assert!(log.contains("tokenwarden operator listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file: {log:?}"
    );
}
