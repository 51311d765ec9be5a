//! The replay facts every settled record carries, end to end through the
//! real sidecar to the fake provider: the prompt estimate routes match on,
//! tools, the classifier's features when a route scores, the serving
//! tier, the adjustments with their reasons, one request id shared by the
//! attempts of one app request, and the values of the headers the routes
//! match on — never a credential, even when a route names it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;
use tokenwarden_core::usage::UsageRecord;

/// A header route that names `authorization` too (it must still never be
/// recorded), a scored route, and a tier ladder to escalate on.
const ROUTING: &str = r#"  tiers:
    - {name: oa-cheap, provider: openai, model: gpt-5-mini}
    - {name: oa-standard, provider: openai, model: gpt-5}
  routes:
    - {name: team, match: {headers: [{name: X-Team, value: "search*"}, {name: Authorization, value: "*"}]}, target: {tier: oa-cheap}}
    - {name: hard, match: {complexity: {min: 100}}, target: {tier: oa-standard}}
    - {name: rest, target: {tier: oa-cheap}}
"#;

/// The settled records of the state dir's journal, in order.
fn records(sc: &Sidecar) -> Vec<UsageRecord> {
    let text = std::fs::read_to_string(sc.state_dir().join("ledger.jsonl")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("{\"seq\":"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn records_carry_what_a_replay_needs_and_never_a_credential() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, ROUTING, ""));
    let body = r#"{"model":"gpt-5","tools":[{"type":"function","function":{"name":"grep","parameters":{"type":"object"}}}],"messages":[{"role":"user","content":"Explain the race in this lock-free queue."}]}"#;
    let secret = "Bearer sk-app-secret-never-in-the-ledger";
    let r = sc
        .openai(
            "/v1/chat/completions",
            body,
            &[
                ("authorization", secret),
                ("x-api-key", "sk-other-secret"),
                ("x-team", "search-ranking"),
                ("x-unrelated", "not routed on"),
                ("x-fake-answer", "refusal"),
                ("x-fake-answer-model", "gpt-5-mini"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some("gpt-5"));
    assert_eq!(r.header("x-tokenwarden-attempts"), Some("2"));

    let journal = std::fs::read_to_string(sc.state_dir().join("ledger.jsonl")).unwrap();
    assert!(!journal.contains("sk-app-secret"), "{journal}");
    assert!(!journal.contains("sk-other-secret"), "{journal}");
    assert!(!journal.contains("x-unrelated"), "{journal}");

    let recs = records(&sc);
    assert_eq!(recs.len(), 2);
    let (first, second) = (&recs[0], &recs[1]);
    let (a, b) = (
        first.replay.clone().unwrap(),
        second.replay.clone().unwrap(),
    );
    // One app request: the first attempt's seq names both.
    assert_eq!(a.request, first.seq);
    assert_eq!(b.request, first.seq);
    assert_eq!(a.prompt_estimate, (body.len() as u64).div_ceil(4));
    assert_eq!(b.prompt_estimate, a.prompt_estimate);
    assert!(a.tools_present);
    // A route scores, so the features are recorded, and score again to
    // the live score.
    let f = a.features.unwrap();
    assert_eq!(f.tool_definitions, 1);
    assert_eq!(f.prompt_bytes, 41);
    let cfg = tokenwarden_core::classify::ClassifierConfig::default();
    assert_eq!(
        Some(tokenwarden_core::classify::classify_features(&cfg, &f).score),
        first.score
    );
    assert_eq!(
        (a.tier.as_deref(), b.tier.as_deref()),
        (Some("oa-cheap"), Some("oa-standard"))
    );
    assert!(a.adjusted.is_empty());
    assert_eq!(b.adjusted, ["escalated:refusal"]);
    assert_eq!(
        a.headers,
        [("x-team".to_string(), "search-ranking".to_string())]
    );
    assert_eq!(b.headers, a.headers);
    assert_eq!(
        (first.route.as_deref(), second.route.as_deref()),
        (Some("team"), Some("team"))
    );

    // The next app request gets its own id.
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#,
            &[("authorization", secret)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let recs = records(&sc);
    let c = recs[2].replay.clone().unwrap();
    assert_eq!(c.request, recs[2].seq);
    assert_ne!(c.request, first.seq);
    assert!(!c.tools_present && c.headers.is_empty());
    assert_eq!(recs[2].route.as_deref(), Some("rest"));
}
