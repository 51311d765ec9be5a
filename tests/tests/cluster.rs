//! The whole system on one machine: the real operator (local mode), real
//! sidecar processes connected to it over gRPC, the fake provider, real
//! HTTP. These are the hard-cap and exactly-once guarantees of issue 4.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    ops::{Deref, DerefMut},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokenwarden_proto::{
    BudgetPeriod, Hello, LeaseRequest, LeaseUnmet, Usage, UsageBatch, UsageRecord,
    operator_message::Msg as Out, sidecar_message::Msg as In,
};
use tokenwarden_tests::{
    fake_provider::{FakeConfig, FakeProvider},
    fake_sidecar::FakeSidecar,
    operator::Operator,
    sidecar::SidecarProc,
};

const SECRET: &str = "cluster-test-shared-secret-0123";

struct Cluster {
    dir: tempfile::TempDir,
    operator: Operator,
}

impl Cluster {
    fn start(objects: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("objects")).unwrap();
        std::fs::write(dir.path().join("objects/objects.yaml"), objects).unwrap();
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        std::fs::create_dir_all(dir.path().join("keys/provider-keys")).unwrap();
        std::fs::write(
            dir.path().join("keys/provider-keys/openai"),
            "sk-fake-openai",
        )
        .unwrap();
        let operator = Operator::local(dir.path(), &dir.path().join("state"));
        let mut c = Cluster { dir, operator };
        c.start_operator();
        c
    }

    fn start_operator(&mut self) {
        self.operator.spawn().wait_ready();
    }

    fn status(&self, budget: &str) -> serde_json::Value {
        let p = self
            .dir
            .path()
            .join(format!("state/status/tokenbudgets/{budget}.json"));
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    fn spent_picos(&self, budget: &str) -> i128 {
        self.status(budget)["ledger"]["spentPicos"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A sidecar of pod `name` connected to the operator, ready.
    fn sidecar(&self, name: &str, namespace: &str, labels: &str) -> Sidecar {
        let root = self.dir.path();
        let mut s = SidecarProc::new();
        s.args(["--control-plane", &self.operator.url()])
            .arg("--credential-file")
            .arg(root.join("secret"))
            .args(["--pod-name", name])
            .args(["--pod-uid", &format!("uid-{name}")])
            .args(["--namespace", namespace])
            .args(["--labels", labels])
            .arg("--state-dir")
            .arg(root.join(format!("sidecar-{name}")))
            .arg("--secrets-dir")
            .arg(root.join("keys"));
        s.timeout = Duration::from_secs(30);
        s.spawn();
        Sidecar(s)
    }
}

/// A real sidecar, as the app sees it.
struct Sidecar(SidecarProc);

impl Deref for Sidecar {
    type Target = SidecarProc;
    fn deref(&self) -> &SidecarProc {
        &self.0
    }
}

impl DerefMut for Sidecar {
    fn deref_mut(&mut self) -> &mut SidecarProc {
        &mut self.0
    }
}

impl Sidecar {
    async fn chat(&self, body: &str, headers: &[(&str, &str)]) -> (u16, Bytes) {
        let (status, _, body) = self.chat_with_error(body, headers).await;
        (status, body)
    }

    /// Like [`Sidecar::chat`], with the `x-tokenwarden-error` header.
    async fn chat_with_error(&self, body: &str, headers: &[(&str, &str)]) -> (u16, String, Bytes) {
        let r = self.openai("/v1/chat/completions", body, headers).await;
        let error = r
            .header("x-tokenwarden-error")
            .unwrap_or_default()
            .to_string();
        (r.status.as_u16(), error, r.body)
    }

    async fn served_model(&self, body: &str) -> (u16, String) {
        let r = self.openai("/v1/chat/completions", body, &[]).await;
        let served = r
            .header("x-tokenwarden-model")
            .unwrap_or_default()
            .to_string();
        (r.status.as_u16(), served)
    }
}

/// A sidecar played on the wire by the test (gRPC to the real operator).
struct WireSidecar {
    id: String,
    session: FakeSidecar,
}

impl WireSidecar {
    /// Connect and say hello as a pod of the `load` workload; returns once
    /// the operator sent its config.
    async fn connect(cluster: &Cluster, id: &str) -> WireSidecar {
        let hello = Hello {
            protocol_version: tokenwarden_proto::PROTOCOL_VERSION,
            sidecar_id: id.into(),
            namespace: "team".into(),
            pod_name: format!("load-{id}"),
            pod_uid: format!("uid-{id}"),
            labels: [("app".to_string(), "load".to_string())].into(),
            sidecar_version: "test".into(),
            credential: SECRET.into(),
            config_version: String::new(),
        };
        // The operator refuses streams until it leads and its objects are
        // synced: connect_synced retries until the first snapshot arrives.
        WireSidecar {
            id: id.into(),
            session: FakeSidecar::connect_synced(&cluster.operator.url(), hello).await,
        }
    }

    async fn send(&self, m: In) {
        self.session.send(m).await;
    }

    /// Ask for a lease for a request that needs `need_picos`.
    async fn need(&self, request_id: u64, need_picos: i64) {
        self.send(In::LeaseRequest(LeaseRequest {
            budget_namespace: "team".into(),
            budget_name: "cap".into(),
            want_picos: need_picos,
            request_id,
            period_start_unix: today(),
            need_picos,
            ..Default::default()
        }))
        .await;
    }

    /// Report one settled request of `cost_picos`.
    async fn spend(&mut self, seq: u64, cost_picos: i64) {
        let record = UsageRecord {
            sidecar_id: self.id.clone(),
            seq,
            ts_unix_nanos: i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap(),
            endpoint: "chatCompletions".into(),
            requested_model: "tw-test".into(),
            served_model: "tw-test".into(),
            provider: "openai".into(),
            attempt: 1,
            status: 200,
            usage: Some(Usage {
                input_tokens: 10,
                output_tokens: 800,
                ..Default::default()
            }),
            cost_picos,
            priced: true,
            budgets: vec![BudgetPeriod {
                namespace: "team".into(),
                name: "cap".into(),
                period_start_unix: today(),
                key: String::new(),
            }],
            pod_name: format!("load-{}", self.id),
            ..Default::default()
        };
        self.send(In::Usage(UsageBatch {
            records: vec![record],
        }))
        .await;
        self.next("UsageAck", |m| match m {
            Out::UsageAck(a) if a.up_to_seq >= seq => Some(()),
            _ => None,
        })
        .await;
    }

    /// The next message `pick` takes within 5 s (others are skipped).
    async fn next<T>(&mut self, what: &str, pick: impl FnMut(Out) -> Option<T>) -> T {
        let what = format!("{}: {what}", self.id);
        self.session.next_named(&what, 5, pick).await
    }

    /// The answers to lease request `request_id` up to its grant: the
    /// `LeaseUnmet` that came before the grant, if any.
    async fn answer(&mut self, request_id: u64) -> Option<LeaseUnmet> {
        let mut unmet = None;
        loop {
            let m = self
                .next("an answer", |m| match m {
                    Out::LeaseUnmet(u) if u.request_id == request_id => Some(Some(u)),
                    Out::LeaseGrant(g) if g.request_id == request_id => Some(None),
                    _ => None,
                })
                .await;
            match m {
                Some(u) => unmet = Some(u),
                None => return unmet,
            }
        }
    }

    /// Whether a `LeaseRecall` arrives within `ms`.
    async fn recalled_within(&mut self, ms: u64) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(m) = tokio::time::timeout_at(deadline, self.session.rx.message()).await {
            match m.unwrap().expect("stream open").msg {
                Some(Out::LeaseRecall(_)) => return true,
                _ => continue,
            }
        }
        false
    }
}

fn today() -> i64 {
    let now = jiff::Timestamp::now().as_second();
    now - now.rem_euclid(86_400)
}

fn objects(fake: &FakeProvider, budget_spec: &str) -> String {
    format!(
        r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: load, namespace: team}}
spec:
  workloadSelector: {{matchLabels: {{app: load}}}}
  providers:
    - name: openai
      api: openai
      baseUrl: "{base}"
      apiKeySecretRef: {{name: provider-keys, key: openai}}
      prices:
        - {{model: tw-test, inputPerMTok: "1", outputPerMTok: "10"}}
        - {{model: tw-cheap, inputPerMTok: "0.1", outputPerMTok: "1"}}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: cap, namespace: team}}
spec:
  workloadSelector: {{matchLabels: {{app: load}}}}
  period: Daily
{budget_spec}
"#,
        base = fake.base_url()
    )
}

/// The cost the fake billed, priced per request as the sidecar prices it
/// (the policy's price overrides: tokens × nano-USD per MTok / 1000 =
/// pico-USD, rounded up per token kind).
fn billed_picos(fake: &FakeProvider) -> i128 {
    let mut total = 0i128;
    for r in fake.log() {
        let Some(u) = r.usage else { continue };
        let (input, output) = match u.model.as_str() {
            "tw-test" => (1_000_000_000i128, 10_000_000_000i128),
            "tw-cheap" => (100_000_000, 1_000_000_000),
            other => panic!("unexpected model {other}"),
        };
        let part = |tokens: u64, price: i128| (i128::from(tokens) * price + 999) / 1000;
        total += part(u.input_total - u.cache_read - u.cache_write, input) + part(u.output, output);
    }
    total
}

fn request(model: &str, max_tokens: u32) -> String {
    format!(
        r#"{{"model":"{model}","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"write a haiku about budgets"}}]}}"#
    )
}

async fn settle(cluster: &Cluster, budget: &str, fake: &FakeProvider) -> i128 {
    let want = billed_picos(fake);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = cluster.spent_picos(budget);
        if got == want {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "ledger {got} never reached the billed {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_hold_a_one_dollar_cap_across_8_sidecars_with_50_concurrent_requests_each() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let cluster = Cluster::start(&objects(&fake, "  limit: {usd: \"1.00\"}"));
    let sidecars: Vec<Arc<Sidecar>> = (0..8)
        .map(|i| Arc::new(cluster.sidecar(&format!("load-{i}"), "team", "app=load")))
        .collect();
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for s in &sidecars {
        for _ in 0..50 {
            let s = s.clone();
            let ok = ok.clone();
            let refused = refused.clone();
            tasks.push(tokio::spawn(async move {
                // Each worker sends until the budget refuses it (bounded).
                for _ in 0..20 {
                    let (status, body) = s
                        .chat(
                            &request("tw-test", 1000),
                            &[("x-fake-output-tokens", "800")],
                        )
                        .await;
                    match status {
                        200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        429 => {
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            assert_eq!(v["error"]["type"], "insufficient_quota", "{v}");
                            refused.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let spent = settle(&cluster, "team.cap", &fake).await;
    let ok = ok.load(Ordering::Relaxed);
    assert!(spent <= 1_000_000_000_000, "spent {spent} picos > $1.00");
    // Each request costs $0.00804 (7 input tokens at $1 + 800 output at $10
    // per MTok): the budget must have been used, not refused early.
    assert!(ok >= 100, "only {ok} requests served");
    assert!(refused.load(Ordering::Relaxed) > 0, "nobody was refused");
    // The budget ends Exhausted with the reason.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = cluster.status("team.cap");
        if st["state"] == "Exhausted" {
            let cond = st["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Exhausted")
                .unwrap()
                .clone();
            assert_eq!(cond["status"], "True", "{cond}");
            assert_eq!(cond["reason"], "LimitReached", "{cond}");
            assert!(
                cond["message"].as_str().unwrap().contains("of $1.00"),
                "{cond}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never Exhausted: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_percent_of_a_budget_is_spent_or_refused_without_waiting_for_leases() {
    // Three sidecars share $0.25; each request's worst case is about
    // $0.0101 and it costs $0.00804. Near the cap the leases are scattered
    // over the sidecars: a request that the rest of the budget cannot cover
    // must be refused at once, not after the 5 s lease wait.
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let cluster = Cluster::start(&objects(&fake, "  limit: {usd: \"0.25\"}"));
    let sidecars: Vec<Arc<Sidecar>> = (0..3)
        .map(|i| Arc::new(cluster.sidecar(&format!("tail-{i}"), "team", "app=load")))
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in &sidecars {
        for _ in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                // (status, how long it took, x-tokenwarden-error, body)
                let mut seen = Vec::new();
                for _ in 0..40 {
                    let t = Instant::now();
                    let (status, error, body) = s
                        .chat_with_error(
                            &request("tw-test", 1000),
                            &[("x-fake-output-tokens", "800")],
                        )
                        .await;
                    seen.push((status, t.elapsed(), error, body));
                    if status != 200 {
                        break;
                    }
                }
                seen
            }));
        }
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let took = started.elapsed();
    let spent = settle(&cluster, "team.cap", &fake).await;
    assert!(spent <= 250_000_000_000, "spent {spent} picos > $0.25");
    let served = seen.iter().filter(|r| r.0 == 200).count();
    assert!(served >= 25, "only {served} requests served");
    for (status, elapsed, error, body) in &seen {
        if *status == 200 {
            continue;
        }
        let body = String::from_utf8_lossy(body);
        assert_eq!(*status, 429, "{body}");
        // The budget's limit refused it (what is left cannot cover it),
        // not a lease wait that ran out.
        assert_eq!(error, "limit", "after {elapsed:?}: {body}");
        assert!(body.contains("TokenBudget team/cap"), "{body}");
    }
    // No request waited anywhere near the 5 s lease wait...
    let slowest = seen.iter().map(|r| r.1).max().unwrap();
    assert!(
        slowest < Duration::from_millis(2500),
        "a request took {slowest:?}"
    );
    // ...and the budget was used up to less than one request's worst case.
    assert!(
        250_000_000_000 - spent < 10_200_000_000,
        "only {spent} picos of $0.25 spent"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_recalls_for_a_need_it_can_cover_and_answers_one_it_cannot_at_once() {
    const CENT: i64 = 10_000_000_000;
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let cluster = Cluster::start(&objects(&fake, "  limit: {usd: \"0.10\"}"));
    let mut a = WireSidecar::connect(&cluster, "a").await;
    let mut b = WireSidecar::connect(&cluster, "b").await;
    // a holds $0.06 and spends $0.05 of it: $0.05 is left, $0.04 in the pool.
    a.need(1, 6 * CENT).await;
    assert_eq!(a.answer(1).await, None);
    a.spend(1, 5 * CENT).await;

    // b needs $0.045: the pool cannot cover it, the rest of the budget can.
    // a's unused lease is recalled and b waits; no LeaseUnmet.
    b.need(2, 9 * CENT / 2).await;
    assert!(a.recalled_within(2_000).await, "a was not recalled");
    assert_eq!(b.answer(2).await, None, "coverable once a gives back");

    // a spends another $0.01 before answering the recall: now $0.04 is
    // left, less than b's waiting request needs. b hears so at once.
    a.spend(2, CENT).await;
    let u = b
        .next("LeaseUnmet", |m| match m {
            Out::LeaseUnmet(u) => Some(u),
            _ => None,
        })
        .await;
    assert_eq!(u.request_id, 2);
    assert_eq!((u.remaining_picos, u.limits_usd), (4 * CENT, true));
    assert_eq!(u.period_start_unix, today());

    // A new need of $0.05: answered LeaseUnmet before its grant (which
    // waits for a status write), and nobody is recalled for it.
    tokio::time::sleep(Duration::from_millis(300)).await; // past the recall rate limit
    b.need(3, 5 * CENT).await;
    let u = b.answer(3).await.expect("LeaseUnmet before the grant");
    assert_eq!(u.remaining_picos, 4 * CENT);
    assert!(!a.recalled_within(500).await, "a recalled for nothing");
    // A need within what is left gets no LeaseUnmet, even with nothing in
    // the pool now: leases held (here b's own) may still come back.
    b.need(4, 3 * CENT).await;
    assert_eq!(b.answer(4).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_operator_while_4_sidecars_push_traffic_loses_and_doubles_nothing() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut cluster = Cluster::start(&objects(&fake, "  limit: {usd: \"1000\"}"));
    let sidecars: Vec<Arc<Sidecar>> = (0..4)
        .map(|i| Arc::new(cluster.sidecar(&format!("push-{i}"), "team", "app=load")))
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in &sidecars {
        for _ in 0..4 {
            let s = s.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 2000 {
                    let (status, body) = s
                        .chat(&request("tw-cheap", 200), &[("x-fake-output-tokens", "50")])
                        .await;
                    // While the operator is down the sidecars spend from
                    // their leases; nothing may fail.
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                    n += 1;
                }
            }));
        }
    }
    let mut rng: u64 = 0x5851_f42d_4c95_7f2d;
    for _ in 0..4 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(300 + rng % 700)).await;
        cluster.operator.kill9();
        tokio::time::sleep(Duration::from_millis(rng % 300)).await;
        cluster.start_operator();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let spent = settle(&cluster, "team.cap", &fake).await;
    assert!(spent > 0);
    let st = cluster.status("team.cap");
    let served: u64 = fake.log().iter().filter(|r| r.usage.is_some()).count() as u64;
    assert_eq!(st["requests"].as_u64().unwrap(), served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_sidecar_keeps_its_spool_and_seq() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut cluster = Cluster::start(&objects(
        &fake,
        "  limit: {usd: \"1000\"}\n  failMode: Open",
    ));
    let mut s = cluster.sidecar("victim", "team", "app=load");
    // Operator down (failMode Open: allowed and recorded): the records pile
    // up in the sidecar's spool.
    cluster.operator.kill9();
    for _ in 0..10 {
        let (status, body) = s
            .chat(&request("tw-cheap", 100), &[("x-fake-output-tokens", "20")])
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    s.proc.kill9();
    s.spawn();
    cluster.start_operator();
    let spent = settle(&cluster, "team.cap", &fake).await;
    assert!(spent > 0);
    assert_eq!(cluster.status("team.cap")["requests"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossing_80_percent_flips_every_sidecar_to_the_downgrade_target() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let cluster = Cluster::start(&objects(
        &fake,
        "  limit: {usd: \"0.10\"}\n  thresholds:\n    - {percent: 80, action: Downgrade, downgradeTo: {model: tw-cheap}}",
    ));
    let spender = cluster.sidecar("spender", "team", "app=load");
    let bystander = cluster.sidecar("bystander", "team", "app=load");
    let (status, served) = bystander.served_model(&request("tw-test", 100)).await;
    assert_eq!((status, served.as_str()), (200, "tw-test"));
    // $0.00804 each: 11 requests pass 80% of $0.10.
    for _ in 0..11 {
        let (status, body) = spender
            .chat(
                &request("tw-test", 1000),
                &[("x-fake-output-tokens", "800")],
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, served) = bystander.served_model(&request("tw-test", 100)).await;
        assert_eq!(status, 200);
        if served == "tw-cheap" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bystander never downgraded (served {served})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The per-key spend of `key` in budget `cap`, as the operator's status
/// holds it (pico-USD; 0 before any).
fn key_picos(cluster: &Cluster, key: &str) -> i128 {
    let path = cluster
        .dir
        .path()
        .join("state/status/tokenbudgets/team.cap.json");
    let Some(status) = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return 0;
    };
    status["ledger"]["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["name"] == key)
        .map_or(0, |k| k["picos"].as_str().unwrap().parse().unwrap())
}

/// Wait until the operator counted `want` pico-USD for `key` and every
/// sidecar in `sidecars` learned the budget's cluster-wide spend since.
async fn key_reported(cluster: &Cluster, key: &str, want: i128, sidecars: &[&Sidecar]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut told = key_picos(cluster, key) == want;
        let spent = if told {
            cluster.spent_picos("team.cap")
        } else {
            -1
        };
        for s in sidecars {
            let l = s.ledger().await;
            let seen = l["budgets"][0]["cluster"]["spent_usd"]
                .as_str()
                .map(decimal_picos);
            told &= seen == Some(spent);
        }
        if told {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the key's spend never reached the operator and the sidecars"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cost_picos(headers: &http::HeaderMap) -> i128 {
    decimal_picos(headers["x-tokenwarden-cost-usd"].to_str().unwrap())
}

/// A pico-USD integer written as a string (the status ledger).
fn decimal_picos_raw(v: &serde_json::Value) -> i128 {
    v.as_str().unwrap().parse().unwrap()
}

/// `"0.008011"` (USD) → pico-USD.
fn decimal_picos(s: &str) -> i128 {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<12}");
    int.parse::<i128>().unwrap() * 1_000_000_000_000 + frac.parse::<i128>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_key_cap_holds_across_two_sidecars_and_other_keys_keep_working() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    // Each request: worst case ~$0.0101, costs ~$0.0080 (800 output
    // tokens at $10/M). Three fit the key's $0.03; a fourth does not.
    let cluster = Cluster::start(&objects(
        &fake,
        "  limit: {usd: \"1.00\"}\n  perKey:\n    by: {header: x-agent-session}\n    limit: {usd: \"0.03\"}",
    ));
    let a = cluster.sidecar("a", "team", "app=load");
    let b = cluster.sidecar("b", "team", "app=load");
    let session = |s: &'static str| [("x-fake-output-tokens", "800"), ("x-agent-session", s)];
    // The session alternates between the two pods; each pod learns what
    // the other spent through the operator.
    let mut spent = 0i128;
    let mut ok = 0;
    let mut refused = None;
    for i in 0..6 {
        let (me, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let r = me
            .openai(
                "/v1/chat/completions",
                &request("tw-test", 1000),
                &session("sess-x"),
            )
            .await;
        if r.status != 200 {
            refused = Some((i, r));
            break;
        }
        ok += 1;
        spent += cost_picos(&r.headers);
        key_reported(&cluster, "sess-x", spent, &[me, other]).await;
    }
    let (i, r) = refused.expect("the key's cap refused a request");
    assert_eq!(
        (ok, i),
        (3, 3),
        "three requests fit $0.03, the fourth does not"
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-tokenwarden-error"), Some("key_limit"));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with(
            "TokenBudget team/cap key \"sess-x\" cannot cover this request: spent $0.024"
        ) && msg.contains("of its $0.03 per-key limit this Daily period across all pods"),
        "{msg}"
    );
    // Exact: the operator's per-key ledger is what the provider billed,
    // under the key's cap, and the refused request was never billed.
    assert_eq!(key_picos(&cluster, "sess-x"), spent);
    assert_eq!(billed_picos(&fake), spent);
    assert!(spent <= 30_000_000_000, "{spent}");
    // Whichever pod it tries, the session stays capped.
    let (status, error, _) = a
        .chat_with_error(&request("tw-test", 1000), &session("sess-x"))
        .await;
    assert_eq!((status, error.as_str()), (429, "key_limit"));

    // Another session on the same pods is unaffected.
    let r = b
        .openai(
            "/v1/chat/completions",
            &request("tw-test", 1000),
            &session("sess-y"),
        )
        .await;
    assert_eq!(r.status, 200);
    let y = cost_picos(&r.headers);
    let deadline = Instant::now() + Duration::from_secs(20);
    while key_picos(&cluster, "sess-y") != y {
        assert!(Instant::now() < deadline, "sess-y never counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(settle(&cluster, "team.cap", &fake).await, spent + y);
    let status = cluster.status("team.cap");
    assert_eq!(status["topKeys"][0]["name"], "sess-x", "{status}");
    assert_eq!(status["topKeys"][0]["requests"], 3);
    // The operator's /ledger has every key's cluster-wide spend.
    let (code, text) =
        tokenwarden_tests::probe::http_get(cluster.operator.admin_addr(), "/ledger").unwrap();
    assert_eq!(code, 200, "{text}");
    let ledger: serde_json::Value = serde_json::from_str(&text).unwrap();
    let per_key = &ledger["budgets"][0]["per_key"];
    assert_eq!(per_key["by"], "header x-agent-session");
    assert_eq!(per_key["limit_usd"], "0.03");
    assert_eq!(per_key["keys"][0]["key"], "sess-x");
    assert_eq!(
        decimal_picos(per_key["keys"][0]["spent_usd"].as_str().unwrap()),
        spent
    );
    assert_eq!(per_key["keys"][1]["key"], "sess-y");
    assert_eq!(
        decimal_picos(per_key["keys"][1]["spent_usd"].as_str().unwrap()),
        y
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_key_burst_on_two_sidecars_at_once_cannot_pass_the_key_s_cap() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let cluster = Cluster::start(&objects(
        &fake,
        "  limit: {usd: \"1.00\"}\n  perKey:\n    by: {header: x-agent-session}\n    limit: {usd: \"0.03\"}",
    ));
    let sidecars = [
        cluster.sidecar("a", "team", "app=load"),
        cluster.sidecar("b", "team", "app=load"),
    ];
    // 10 concurrent requests of one session on each pod, none of them
    // knowing what the other spent: each reserves its worst case (~$0.0101)
    // from its lease of the key, and the leases of the key never add up
    // past $0.03: at most two in flight at once, three once one settled
    // (~$0.008 each), however they are split between the pods.
    let body = request("tw-test", 1000);
    let headers = [
        ("x-fake-output-tokens", "800"),
        ("x-agent-session", "burst"),
    ];
    let mut tasks = Vec::new();
    for s in &sidecars {
        for _ in 0..10 {
            tasks.push(s.openai("/v1/chat/completions", &body, &headers));
        }
    }
    let replies = futures_util::future::join_all(tasks).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429, "{}", r.text());
        let error = r.header("x-tokenwarden-error").unwrap_or_default();
        assert!(
            ["key_limit", "lease"].contains(&error),
            "{error}: {}",
            r.text()
        );
    }
    assert!((1..=3).contains(&ok), "{ok} requests passed");
    let spent = settle(&cluster, "team.cap", &fake).await;
    assert_eq!(key_picos(&cluster, "burst"), spent);
    assert!(spent <= 30_000_000_000, "{spent}");
    // The key's lease pool is in the status: its spend, and what each pod
    // was granted of it (never more, together, than the key's limit).
    let status = cluster.status("team.cap");
    let pool = status["ledger"]["keyLeases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "burst")
        .unwrap_or_else(|| panic!("{status}"))
        .clone();
    assert_eq!(decimal_picos_raw(&pool["spentPicos"]), spent);
    let granted: i128 = pool["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| decimal_picos_raw(&s["grantedPicos"]))
        .sum();
    assert!(granted <= 30_000_000_000, "{pool}");
    // Another session is unaffected.
    let r = sidecars[1]
        .openai(
            "/v1/chat/completions",
            &body,
            &[
                ("x-fake-output-tokens", "800"),
                ("x-agent-session", "other"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_operator_remembers_what_a_key_spent() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut cluster = Cluster::start(&objects(
        &fake,
        "  limit: {usd: \"1.00\"}\n  perKey:\n    by: {header: x-agent-session}\n    limit: {usd: \"0.03\"}",
    ));
    let a = cluster.sidecar("a", "team", "app=load");
    let b = cluster.sidecar("b", "team", "app=load");
    let session = [
        ("x-fake-output-tokens", "800"),
        ("x-agent-session", "sess-r"),
    ];
    let mut spent = 0;
    for _ in 0..2 {
        let r = a
            .openai("/v1/chat/completions", &request("tw-test", 1000), &session)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        spent += cost_picos(&r.headers);
    }
    key_reported(&cluster, "sess-r", spent, &[&a, &b]).await;
    // kill -9 and a new operator: it resumes the key's spend and leases
    // from the status, so the key still has one request of room, not three.
    cluster.operator.kill9();
    cluster.start_operator();
    let mut more = 0;
    let mut refused = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..3 {
        let mut r = b
            .openai("/v1/chat/completions", &request("tw-test", 1000), &session)
            .await;
        // Until b is back in session with the new operator, failMode
        // Closed refuses (nothing is billed).
        while r.header("x-tokenwarden-error") == Some("fail_closed") {
            assert!(Instant::now() < deadline, "b never reconnected");
            tokio::time::sleep(Duration::from_millis(100)).await;
            r = b
                .openai("/v1/chat/completions", &request("tw-test", 1000), &session)
                .await;
        }
        if r.status != 200 {
            refused = Some(r);
            break;
        }
        more += 1;
        spent += cost_picos(&r.headers);
    }
    assert_eq!(
        more,
        1,
        "one more request fits the key's $0.03: {:?}",
        refused.as_ref().map(|r| r.text())
    );
    let r = refused.expect("the key's cap refused a request");
    assert_eq!(r.status, 429);
    assert_eq!(
        r.header("x-tokenwarden-error"),
        Some("key_limit"),
        "{}",
        r.text()
    );
    assert_eq!(settle(&cluster, "team.cap", &fake).await, spent);
    assert_eq!(key_picos(&cluster, "sess-r"), spent);
    assert!(spent <= 30_000_000_000, "{spent}");
}
