//! The exact response cache, black-box: the real sidecar binary between a
//! test app and the fake provider. The fake makes every answer unique (its
//! id and `created` change), so a body byte-identical to an earlier one, with
//! the provider's request log unchanged, can only come from the cache.
//! Asserts: a miss then a hit with the same bytes for JSON and SSE (OpenAI
//! chat, Anthropic messages); key order, whitespace and `user` do not
//! matter, the model and parameters do; the bypass headers; what is never
//! stored (no-store, truncated, cut streams, sampled requests); TTL expiry;
//! the entry bound; the ledger's $0 hit with its exact saved dollars and
//! the budget not charged; policy scoping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::*;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"How do I reset my password?"}],"temperature":0}"#;
/// The same request: other key order, whitespace, another `user`, `metadata`.
const CHAT_REORDERED: &str = r#"{ "temperature": 0, "user": "someone-else", "metadata": {"t": "x"},
  "messages": [ { "content": "How do I reset my password?", "role": "user" } ], "model": "gpt-4o-mini" }"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"How do I reset my password?"}]}"#;
const MESSAGES: &str = r#"{"model":"claude-haiku-4-5","max_tokens":200,"messages":[{"role":"user","content":"How do I reset my password?"}]}"#;
const MESSAGES_STREAM: &str = r#"{"model":"claude-haiku-4-5","max_tokens":200,"stream":true,"messages":[{"role":"user","content":"How do I reset my password?"}]}"#;

const CACHE_ON: &str = "  cache:\n    exact: {ttl: 1h}\n";

async fn fake() -> FakeProvider {
    FakeProvider::start(FakeConfig::default()).await.unwrap()
}

fn cache(r: &Reply) -> &str {
    r.header("x-tokenwarden-cache").unwrap_or("(none)")
}

async fn chat(sc: &Sidecar, body: &str, headers: &[(&str, &str)]) -> Reply {
    let r = sc.openai("/v1/chat/completions", body, headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

#[tokio::test]
async fn a_json_answer_is_replayed_byte_for_byte_at_no_cost() {
    let fake = fake().await;
    let budget = budget("team", "  period: Daily\n  limit: {usd: \"10.00\"}");
    let sc = Sidecar::start(&policy(&fake, CACHE_ON, &budget));
    let first = chat(&sc, CHAT, &[]).await;
    assert_eq!(cache(&first), "miss");
    let cost = picos(first.header("x-tokenwarden-cost-usd").unwrap());
    assert!(cost > 0);
    let hit = chat(&sc, CHAT, &[]).await;
    assert_eq!(cache(&hit), "hit");
    assert_eq!(hit.body, first.body, "the stored bytes");
    assert_eq!(
        hit.header("content-type"),
        first.header("content-type"),
        "the provider's content type"
    );
    assert_eq!(hit.header("x-tokenwarden-cost-usd"), Some("0.00"));
    assert_eq!(hit.header("x-tokenwarden-model"), Some("gpt-4o-mini"));
    // Key order, whitespace, `user` and `metadata` do not matter.
    let same = chat(&sc, CHAT_REORDERED, &[]).await;
    assert_eq!(cache(&same), "hit");
    assert_eq!(same.body, first.body);
    assert_eq!(fake.log().len(), 1, "one provider call for three answers");

    // The ledger: three requests of the model, one billed; two hits at $0
    // that saved the first answer's exact cost each.
    let row = sc.model_row("gpt-4o-mini").await;
    assert_eq!(row["requests"], 3, "{row}");
    assert_eq!(cost_str(&row["cost_usd"]), cost, "{row}");
    assert_eq!(row["response_cache_hits"], 2, "{row}");
    assert_eq!(
        cost_str(&row["response_cache_saved_usd"]),
        2 * cost,
        "{row}"
    );
    // The budget is charged for the provider's answer only.
    let l = sc.ledger().await;
    let b = &l["budgets"][0];
    assert_eq!(cost_str(&b["spent_usd"]), cost, "{b}");
    assert_eq!(b["requests"], 1, "{b}");
    assert_eq!(cost_str(&b["reserved_usd"]), 0, "{b}");

    let m = metrics(&sc).await;
    let hits = sample(
        &m,
        "tokenwarden_response_cache_requests_total",
        &[("result", "hit"), ("model", "gpt-4o-mini")],
    );
    assert_eq!(hits, Some(2.0), "{m}");
    let saved = sample(&m, "tokenwarden_response_cache_saved_usd_total", &[]).unwrap();
    assert!((saved - 2.0 * cost as f64 / 1e12).abs() < 1e-12, "{saved}");
    assert_eq!(
        sample(&m, "tokenwarden_response_cache_entries", &[]),
        Some(1.0)
    );
}

#[tokio::test]
async fn what_determines_the_answer_is_in_the_key() {
    let fake = fake().await;
    let sc = Sidecar::start(&policy(&fake, CACHE_ON, ""));
    assert_eq!(cache(&chat(&sc, CHAT, &[]).await), "miss");
    let other_param = CHAT.replace(r#""temperature":0"#, r#""temperature":0,"max_tokens":300"#);
    assert_eq!(cache(&chat(&sc, &other_param, &[]).await), "miss");
    let other_model = CHAT.replace("gpt-4o-mini", "gpt-5-mini");
    assert_eq!(cache(&chat(&sc, &other_model, &[]).await), "miss");
    let other_text = CHAT.replace("password", "username");
    assert_eq!(cache(&chat(&sc, &other_text, &[]).await), "miss");
    // A streamed request is not answered with the stored JSON.
    let r = sc.openai("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(cache(&r), "miss");
    assert_eq!(fake.log().len(), 5);
    for body in [
        CHAT,
        other_param.as_str(),
        other_model.as_str(),
        other_text.as_str(),
    ] {
        assert_eq!(cache(&chat(&sc, body, &[]).await), "hit");
    }
    assert_eq!(fake.log().len(), 5);
}

#[tokio::test]
async fn streams_are_replayed_byte_for_byte() {
    let fake = fake().await;
    let sc = Sidecar::start(&policy(&fake, CACHE_ON, ""));
    let first = sc.openai("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!((first.status.as_u16(), cache(&first)), (200, "miss"));
    let hit = sc.openai("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(cache(&hit), "hit");
    assert_eq!(hit.header("content-type"), first.header("content-type"));
    assert!(
        first
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(hit.text(), first.text());
    assert!(hit.text().ends_with("data: [DONE]\n\n"), "{}", hit.text());

    let first = sc.anthropic(MESSAGES_STREAM, &[]).await;
    assert_eq!((first.status.as_u16(), cache(&first)), (200, "miss"));
    let hit = sc.anthropic(MESSAGES_STREAM, &[]).await;
    assert_eq!(cache(&hit), "hit");
    assert_eq!(hit.header("content-type"), first.header("content-type"));
    assert_eq!(hit.body, first.body);
    assert!(hit.text().contains("event: message_stop"), "{}", hit.text());

    let first = sc.anthropic(MESSAGES, &[]).await;
    assert_eq!(cache(&first), "miss");
    let hit = sc.anthropic(MESSAGES, &[]).await;
    assert_eq!(cache(&hit), "hit");
    assert_eq!(hit.body, first.body);
    assert_eq!(fake.log().len(), 3);
}

#[tokio::test]
async fn the_app_can_bypass_the_cache() {
    let fake = fake().await;
    let sc = Sidecar::start(&policy(&fake, CACHE_ON, ""));
    // no-store: neither read nor stored.
    let r = chat(&sc, CHAT, &[("cache-control", "no-store")]).await;
    assert_eq!(cache(&r), "bypass");
    let r = chat(&sc, CHAT, &[("x-tokenwarden-cache", "bypass")]).await;
    assert_eq!(cache(&r), "bypass");
    let sent = fake.log().pop().unwrap();
    assert_eq!(
        sent.header("x-tokenwarden-cache"),
        None,
        "not sent upstream"
    );
    assert_eq!(
        cache(&chat(&sc, CHAT, &[]).await),
        "miss",
        "nothing was stored"
    );
    assert_eq!(cache(&chat(&sc, CHAT, &[]).await), "hit");
    // no-cache: a fresh answer, which replaces the stored one.
    let fresh = chat(&sc, CHAT, &[("cache-control", "max-age=0, no-cache")]).await;
    assert_eq!(cache(&fresh), "bypass");
    let hit = chat(&sc, CHAT, &[]).await;
    assert_eq!(cache(&hit), "hit");
    assert_eq!(hit.body, fresh.body);
    assert_eq!(fake.log().len(), 4);
}

#[tokio::test]
async fn incomplete_answers_and_sampled_requests_are_never_stored() {
    let fake = fake().await;
    let sc = Sidecar::start(&policy(&fake, CACHE_ON, ""));
    // Truncated by max_tokens (finish_reason "length"), twice: both misses.
    let short = CHAT.replace(r#""temperature":0"#, r#""temperature":0,"max_tokens":3"#);
    for _ in 0..2 {
        let r = chat(&sc, &short, &[]).await;
        assert_eq!(cache(&r), "miss");
        assert!(
            r.text().contains(r#""finish_reason":"length""#),
            "{}",
            r.text()
        );
    }
    // A truncation by the model's own limit.
    for _ in 0..2 {
        let r = chat(&sc, CHAT, &[("x-fake-answer", "truncated")]).await;
        assert_eq!(cache(&r), "miss");
    }
    // A cut stream is not stored; the next whole one is.
    let cut = sc
        .openai(
            "/v1/chat/completions",
            CHAT_STREAM,
            &[("x-fake-fault", "cut")],
        )
        .await;
    assert_eq!(cache(&cut), "miss");
    let whole = sc.openai("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(cache(&whole), "miss");
    let hit = sc.openai("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(cache(&hit), "hit");
    assert_eq!(hit.body, whole.body);
    // An upstream error is not stored.
    let r = sc.anthropic(MESSAGES, &[("x-fake-fault", "400")]).await;
    assert_eq!((r.status.as_u16(), cache(&r)), (400, "miss"));
    assert_eq!(cache(&sc.anthropic(MESSAGES, &[]).await), "miss");
    // A sampled request is not looked up or stored.
    let sampled = CHAT.replace(r#""temperature":0"#, r#""temperature":0.7"#);
    for _ in 0..2 {
        assert_eq!(cache(&chat(&sc, &sampled, &[]).await), "bypass");
    }
    let m = metrics(&sc).await;
    let skipped = sample(
        &m,
        "tokenwarden_response_cache_requests_total",
        &[("result", "store_skipped")],
    );
    assert_eq!(skipped, Some(5.0), "{m}");
}

#[tokio::test]
async fn entries_expire_and_the_bound_evicts_the_least_recently_used() {
    let fake = fake().await;
    let spec = "  cache:\n    exact: {ttl: 1s, maxEntries: 2}\n";
    let sc = Sidecar::start(&policy(&fake, spec, ""));
    let a = CHAT.to_string();
    let b = CHAT.replace("password", "email");
    let c = CHAT.replace("password", "avatar");
    for body in [&a, &b] {
        assert_eq!(cache(&chat(&sc, body, &[]).await), "miss");
    }
    assert_eq!(cache(&chat(&sc, &a, &[]).await), "hit"); // b is now the oldest
    assert_eq!(cache(&chat(&sc, &c, &[]).await), "miss"); // evicts b
    assert_eq!(cache(&chat(&sc, &a, &[]).await), "hit");
    assert_eq!(cache(&chat(&sc, &b, &[]).await), "miss");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(cache(&chat(&sc, &a, &[]).await), "miss", "expired");
}

#[tokio::test]
async fn the_cache_is_off_unless_the_policy_or_a_route_turns_it_on() {
    let fake = fake().await;
    let routes = r#"  tiers:
    - {name: cheap, provider: openai, model: gpt-4o-mini}
  routes:
    - name: fresh
      match: {headers: [{name: x-fresh, value: "1"}]}
      target: {tier: cheap}
      cache: {enabled: false}
    - name: rest
      target: {tier: cheap}
"#;
    let sc = Sidecar::start(&policy(&fake, routes, ""));
    let r = chat(&sc, CHAT, &[]).await;
    assert_eq!(
        r.header("x-tokenwarden-cache"),
        None,
        "off without spec.cache"
    );
    let sc2 = Sidecar::start(&policy(&fake, &format!("{routes}{CACHE_ON}"), ""));
    for _ in 0..2 {
        let r = chat(&sc2, CHAT, &[("x-fresh", "1")]).await;
        assert_eq!(r.header("x-tokenwarden-cache"), None, "off for the route");
    }
    assert_eq!(cache(&chat(&sc2, CHAT, &[]).await), "miss");
    assert_eq!(cache(&chat(&sc2, CHAT, &[]).await), "hit");
}

#[tokio::test]
async fn two_policies_never_share_an_entry() {
    let fake = fake().await;
    let sc = Sidecar::start(&policy(&fake, CACHE_ON, ""));
    assert_eq!(cache(&chat(&sc, CHAT, &[]).await), "miss");
    assert_eq!(cache(&chat(&sc, CHAT, &[]).await), "hit");
    // The same spec under another policy name: its own entries.
    let renamed = policy(&fake, CACHE_ON, "").replace("test-policy", "other-policy");
    std::fs::write(sc.policy_path(), renamed).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = chat(&sc, CHAT, &[]).await;
        if cache(&r) == "miss" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cache(&chat(&sc, CHAT, &[]).await), "hit");
}

#[tokio::test]
async fn a_beta_header_selects_another_entry() {
    // Forwarded upstream, `anthropic-beta` (and `anthropic-version`,
    // `openai-beta`) select other provider behaviour for the same body.
    let fake = fake().await;
    let sc = Sidecar::start(&policy(&fake, CACHE_ON, ""));
    assert_eq!(cache(&sc.anthropic(MESSAGES, &[]).await), "miss");
    assert_eq!(cache(&sc.anthropic(MESSAGES, &[]).await), "hit");
    let beta = [("anthropic-beta", "output-128k-2025-02-19")];
    assert_eq!(cache(&sc.anthropic(MESSAGES, &beta).await), "miss");
    assert_eq!(cache(&sc.anthropic(MESSAGES, &beta).await), "hit");
    let other = [("anthropic-beta", "context-1m-2025-08-07")];
    assert_eq!(cache(&sc.anthropic(MESSAGES, &other).await), "miss");
    let gpt_beta = [("openai-beta", "assistants=v2")];
    assert_eq!(cache(&chat(&sc, CHAT, &[]).await), "miss");
    assert_eq!(cache(&chat(&sc, CHAT, &gpt_beta).await), "miss");
    assert_eq!(cache(&chat(&sc, CHAT, &gpt_beta).await), "hit");
    assert_eq!(fake.log().len(), 5, "two anthropic betas, none, two openai");
}

#[tokio::test]
async fn an_answer_over_max_entry_bytes_is_forwarded_whole_and_not_stored() {
    // The stream is teed into a capture bounded by maxEntryBytes; past the
    // bound the capture is dropped, never the app's stream.
    let fake = fake().await;
    let spec = "  cache:\n    exact: {ttl: 1h, maxEntryBytes: 4096}\n";
    let sc = Sidecar::start(&policy(&fake, spec, ""));
    let long = [("x-fake-output-tokens", "600")];
    let first = sc.openai("/v1/chat/completions", CHAT_STREAM, &long).await;
    assert_eq!(first.status, 200);
    assert!(
        first.body.len() > 4096,
        "the stream is over the bound: {}",
        first.body.len()
    );
    assert!(
        first.text().trim_end().ends_with("data: [DONE]"),
        "forwarded whole"
    );
    assert_eq!(cache(&first), "miss");
    let again = sc.openai("/v1/chat/completions", CHAT_STREAM, &long).await;
    assert_eq!(
        cache(&again),
        "miss",
        "an entry over the bound is not stored"
    );
    let big_json = chat(&sc, CHAT, &long).await;
    assert!(big_json.body.len() > 4096, "{}", big_json.body.len());
    assert_eq!(cache(&chat(&sc, CHAT, &long).await), "miss");
    assert_eq!(fake.log().len(), 4);
    // Under the bound, the same policy stores and replays.
    assert_eq!(cache(&chat(&sc, MESSAGES_SMALL_AS_CHAT, &[]).await), "miss");
    assert_eq!(cache(&chat(&sc, MESSAGES_SMALL_AS_CHAT, &[]).await), "hit");
    let m = metrics(&sc).await;
    assert_eq!(
        sample(
            &m,
            "tokenwarden_response_cache_requests_total",
            &[("result", "store_skipped")]
        ),
        Some(4.0),
        "{m}"
    );
}

/// A short chat request (its answer is far under 4 KiB).
const MESSAGES_SMALL_AS_CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0}"#;

#[tokio::test]
async fn responses_api_answers_are_replayed_too() {
    let fake = fake().await;
    let sc = Sidecar::start(&policy(&fake, CACHE_ON, ""));
    for body in [RESPONSES, RESPONSES_STREAM] {
        let first = sc.openai("/v1/responses", body, &[]).await;
        assert_eq!(first.status, 200, "{}", first.text());
        assert_eq!(cache(&first), "miss");
        let hit = sc.openai("/v1/responses", body, &[]).await;
        assert_eq!(cache(&hit), "hit", "{body}");
        assert_eq!(hit.body, first.body, "byte for byte");
    }
    assert_eq!(fake.log().len(), 2);
}

const RESPONSES: &str =
    r#"{"model":"gpt-4o-mini","input":"How do I reset my password?","temperature":0}"#;
const RESPONSES_STREAM: &str = r#"{"model":"gpt-4o-mini","input":"How do I reset my password?","temperature":0,"stream":true}"#;

#[tokio::test]
async fn embeddings_are_replayed_too() {
    let fake = fake().await;
    let sc = Sidecar::start(&policy(&fake, CACHE_ON, ""));
    let body = r#"{"model":"text-embedding-3-small","input":["How do I reset my password?"]}"#;
    let first = sc.openai("/v1/embeddings", body, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(cache(&first), "miss");
    let hit = sc.openai("/v1/embeddings", body, &[]).await;
    assert_eq!(cache(&hit), "hit");
    assert_eq!(hit.body, first.body, "byte for byte");
    let other = body.replace("password", "email");
    assert_eq!(
        cache(&sc.openai("/v1/embeddings", &other, &[]).await),
        "miss"
    );
    assert_eq!(fake.log().len(), 2);
}
