//! Prompt-cache busts across the whole system on one machine: the real
//! operator in local mode, a real sidecar connected to it over gRPC, the
//! fake provider with its simulated prompt cache. A timestamp at the start
//! of a system prompt busts the cache; the operator's cluster ledger counts
//! the bust and its waste for the workload and model, and the
//! RoutingPolicy's status (written by local mode under
//! `<state>/status/routingpolicies/`) says `PromptCacheUnstable`, naming
//! the section and the kind of change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use tokenwarden_tests::{
    fake_provider::{FakeConfig, FakeProvider},
    operator::Operator,
    probe::http_get,
    sidecar::SidecarProc,
};

const SECRET: &str = "prompt-cache-test-shared-secret-0123";

/// The policy, with `spec_extra` lines appended to its spec.
fn objects(fake: &FakeProvider, spec_extra: &str) -> String {
    format!(
        r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: agents, namespace: team}}
spec:
  workloadSelector: {{matchLabels: {{app: coder}}}}
  providers:
    - {{name: anthropic, api: anthropic, baseUrl: "{base}", apiKeySecretRef: {{name: provider-keys, key: anthropic}}}}
{spec_extra}"#,
        base = fake.base_url()
    )
}

/// A system prompt whose first block holds only a timestamp, then long
/// instructions with the app's own breakpoint.
fn body(ts: &str, long: &str) -> String {
    format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":64,"system":[{{"type":"text","text":"Now: {ts}"}},{{"type":"text","text":"{long}","cache_control":{{"type":"ephemeral"}}}}],"messages":[{{"role":"user","content":"Next step?"}}]}}"#
    )
}

/// Text in the prompts that must not be stored anywhere.
const MARKER: &[u8] = b"quokka-marker";

/// About 7 KB of text without digits, starting with [`MARKER`].
fn long_text() -> String {
    let words = ["plan", "edit", "test", "review", "commit", "explain", "why"];
    let mut s = String::from("quokka-marker ");
    let mut i = 0usize;
    while s.len() < 7_000 {
        s.push_str(words[(i * 7 + i / 3) % words.len()]);
        s.push(' ');
        i += 1;
    }
    s
}

/// Polls `f` every 100 ms for at most 20 s.
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The operator (local mode) and a connected sidecar of workload
/// `team/coder`, in `dir`.
fn start(dir: &std::path::Path, fake: &FakeProvider, spec_extra: &str) -> (Operator, SidecarProc) {
    let root = dir;
    std::fs::create_dir_all(root.join("objects")).unwrap();
    std::fs::write(root.join("objects/objects.yaml"), objects(fake, spec_extra)).unwrap();
    std::fs::write(root.join("secret"), SECRET).unwrap();
    std::fs::create_dir_all(root.join("keys/provider-keys")).unwrap();
    std::fs::write(
        root.join("keys/provider-keys/anthropic"),
        "sk-fake-anthropic",
    )
    .unwrap();
    let mut operator = Operator::local(root, &root.join("state"));
    operator.spawn().wait_ready();

    let mut sc = SidecarProc::new();
    sc.args(["--control-plane", &operator.url()])
        .arg("--credential-file")
        .arg(root.join("secret"))
        .args(["--pod-name", "coder-0", "--pod-uid", "uid-coder-0"])
        .args(["--namespace", "team", "--labels", "app=coder"])
        .arg("--state-dir")
        .arg(root.join("sidecar-state"))
        .arg("--secrets-dir")
        .arg(root.join("keys"));
    sc.timeout = Duration::from_secs(30);
    sc.spawn();
    (operator, sc)
}

/// The `PromptCacheUnstable` condition of the policy once `pred` holds
/// for it (polled).
fn unstable_condition(
    root: &std::path::Path,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let status_file = root.join("state/status/routingpolicies/team.agents.json");
    until("PromptCacheUnstable in the policy status", || {
        let status: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&status_file).ok()?).ok()?;
        status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PromptCacheUnstable" && c["status"] == "True" && pred(c))
            .cloned()
    })
}

/// The operator's ledger row of workload `team/coder` on sonnet once it
/// counts `requests`.
fn cluster_row(operator: &Operator, requests: u64) -> serde_json::Value {
    until("the operator's ledger row", || {
        let (code, text) = http_get(operator.admin_addr(), "/ledger")?;
        assert_eq!(code, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["ledger"]
            .as_array()?
            .iter()
            .find(|r| {
                r["namespace"] == "team"
                    && r["workload"] == "coder"
                    && r["model"] == "claude-sonnet-4-5"
                    && r["requests"] == requests
            })
            .cloned()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bust_reaches_the_cluster_ledger_and_the_policy_status() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (operator, sc) = start(root, &fake, "");

    let long = long_text();
    for ts in ["2026-12-06T10:00:00Z", "2026-12-06T10:00:09Z"] {
        let r = sc.anthropic(&body(ts, &long), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The sidecar's own view of the bust: what the operator must agree with.
    let local = sc.model_row("claude-sonnet-4-5").await;
    assert_eq!(local["cache_busts"], 1, "{local}");
    let wasted = local["cache_wasted_usd"].as_str().unwrap().to_string();
    assert_ne!(wasted, "0");
    let bust = sc.ledger().await["prompt_cache"]["recent_busts"][0].clone();
    assert_eq!(bust["section"], "system[0]", "{bust}");
    assert_eq!(bust["offset"], 6, "{bust}");
    assert_eq!(bust["change"], "timestamp", "{bust}");
    assert_eq!(bust["wasted_usd"], wasted.as_str());

    // The cluster ledger's row of the workload and model.
    let row = cluster_row(&operator, 2);
    assert_eq!(row["cache_busts"], 1, "{row}");
    assert_eq!(row["cache_wasted_usd"], wasted.as_str(), "{row}");

    // The policy's status condition, as local mode writes it.
    let cond = unstable_condition(root, |_| true);
    assert_eq!(cond["reason"], "VolatilePrefix", "{cond}");
    let want = format!(
        "workload team/coder: 1 prompt-cache bust in the last 24h, wasting ${wasted}; most \
         often on claude-sonnet-4-5 at system[0] offset 6 (a timestamp-like value changed): \
         once"
    );
    assert_eq!(cond["message"], want.as_str(), "{cond}");
    // And nothing of the prompt in what the operator keeps.
    let mut stack = vec![root.join("state")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(MARKER.len()).any(|w| w == MARKER),
                    "{} holds prompt text",
                    p.display()
                );
            }
        }
    }
}

/// `volatilePrefixGuard: {mode: Report, repeats: 3}`: the same timestamp
/// busting three times is named with what to do about it, and the policy
/// gets a Warning Event.
#[tokio::test(flavor = "multi_thread")]
async fn the_volatile_prefix_guard_names_a_repeated_timestamp() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let guard = "  caching:\n    volatilePrefixGuard: {mode: Report, repeats: 3}\n";
    let (operator, sc) = start(root, &fake, guard);
    let long = long_text();
    for s in 0..4 {
        let r = sc
            .anthropic(&body(&format!("2026-12-06T10:00:0{s}Z"), &long), &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let local = sc.model_row("claude-sonnet-4-5").await;
    assert_eq!(local["cache_busts"], 3, "{local}");
    let wasted = local["cache_wasted_usd"].as_str().unwrap().to_string();
    let row = cluster_row(&operator, 4);
    assert_eq!(row["cache_busts"], 3, "{row}");
    assert_eq!(row["cache_wasted_usd"], wasted.as_str(), "{row}");
    let want = format!(
        "workload team/coder: 3 prompt-cache busts in the last 24h, wasting ${wasted}; most \
         often on claude-sonnet-4-5 at system[0] offset 6 (a timestamp-like value changed): \
         3 times. The same volatile run keeps breaking the cached prefix: make it stable, or \
         move it after the last cache breakpoint (the end of the prompt)"
    );
    let cond = unstable_condition(root, |c| c["message"] == want.as_str());
    assert_eq!(cond["reason"], "VolatilePrefix", "{cond}");
    let event = until("a PromptCacheUnstable Event", || {
        let text = std::fs::read_to_string(root.join("state/events.jsonl")).ok()?;
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| e["reason"] == "PromptCacheUnstable")
    });
    assert_eq!(event["kind"], "RoutingPolicy", "{event}");
    assert_eq!(
        (&event["namespace"], &event["name"]),
        (&"team".into(), &"agents".into())
    );
    assert_eq!(event["type"], "Warning", "{event}");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("workload team/coder: "),
        "{event}"
    );
}
