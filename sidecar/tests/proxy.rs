//! Black-box tests of the sidecar binary between a test app and the fake
//! provider: bytes on the wire, headers, and the numbers in the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use http::Method;
use support::*;

/// `"0.000123"` → picos.
const MINI_ROUTE: &str = r#"  tiers:
    - {name: cheap, provider: anthropic, model: claude-haiku-4-5}
    - {name: standard, provider: anthropic, model: claude-sonnet-4-5}
    - {name: frontier, provider: anthropic, model: claude-opus-4-1}
  routes:
    - {name: mini, match: {apis: [ChatCompletions, Responses], models: ["gpt-5"]}, target: {provider: openai, model: gpt-5-mini}}
    - {name: opus-to-cheap, match: {models: ["claude-opus-*"]}, target: {tier: cheap}}
"#;

const BIG_BUDGET: &str = r#"---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: team, namespace: apps}
spec:
  period: Daily
  limit: {usd: "100.00"}
"#;

/// gpt-5-mini list prices in picos per token: $0.25 / $2.00 / $0.025 per MTok.
const MINI_IN: i128 = 250_000;
const MINI_OUT: i128 = 2_000_000;
const MINI_CACHED: i128 = 25_000;

#[tokio::test(flavor = "multi_thread")]
async fn chat_completion_is_routed_metered_and_byte_stable() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    // Unusual spacing and key order, an escape, a nested "model" key: only the
    // top-level model value may change on the wire.
    let body = "{\"messages\": [{\"role\":\"user\",\"content\":\"caf\\u00e9 {\\\"model\\\": 1}\",\"model\":\"keep-me\"}],\n  \"model\" : \"gpt-5\", \"max_tokens\": 100,\"temperature\":0.2}";
    let r = sc
        .openai(
            "/v1/chat/completions",
            body,
            &[("x-fake-cached-tokens", "4")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some("gpt-5-mini"));
    assert_eq!(r.header("x-tokenwarden-route"), Some("mini"));
    assert_eq!(r.header("x-tokenwarden-attempts"), Some("1"));

    let log = fake.log();
    assert_eq!(log.len(), 1);
    let sent = &log[0];
    let expected = body.replacen("\"model\" : \"gpt-5\"", "\"model\" : \"gpt-5-mini\"", 1);
    assert_eq!(
        std::str::from_utf8(&sent.body).unwrap(),
        expected,
        "only the model value changes"
    );
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-fake-openai"),
        "the app's key is replaced"
    );
    let reported = sent.usage.clone().unwrap();

    // What the app got is what the provider sent, including its usage.
    let resp = r.json();
    assert_eq!(resp["model"], "gpt-5-mini");
    assert_eq!(resp["usage"]["prompt_tokens"], reported.input_total);
    assert_eq!(resp["usage"]["prompt_tokens_details"]["cached_tokens"], 4);

    // Ledger: disjoint kinds and the exact cost at the serving model's price.
    let row = sc.model_row("gpt-5-mini").await;
    let uncached = reported.input_total - 4;
    assert_eq!(row["requests"], 1);
    assert_eq!(row["input_tokens"], uncached);
    assert_eq!(row["cache_read_tokens"], 4);
    assert_eq!(row["output_tokens"], reported.output);
    assert_eq!(row["cache_write_tokens"], 0);
    let want =
        i128::from(uncached) * MINI_IN + 4 * MINI_CACHED + i128::from(reported.output) * MINI_OUT;
    assert_eq!(cost_str(&row["cost_usd"]), want);
    assert_eq!(
        picos(r.header("x-tokenwarden-cost-usd").unwrap()),
        want,
        "cost header"
    );
    let ledger = sc.ledger().await;
    assert_eq!(
        cost_str(&ledger["budgets"][0]["spent_usd"]),
        want,
        "the budget saw the same spend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_chat_strips_the_usage_it_asked_for() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    let body = r#"{"model":"gpt-5","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        !text.contains("usage"),
        "the app did not ask for usage: {text}"
    );
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        events
            .iter()
            .all(|e| e == "[DONE]" || !e.contains("\"choices\":[]"))
    );
    // Upstream was asked for usage, appended without touching the other bytes.
    let sent = fake.log()[0].clone();
    assert_eq!(
        std::str::from_utf8(&sent.body).unwrap(),
        r#"{"model":"gpt-5-mini","stream":true,"messages":[{"role":"user","content":"hello"}],"stream_options":{"include_usage":true}}"#
    );
    let reported = sent.usage.unwrap();
    let row = sc.model_row("gpt-5-mini").await;
    assert_eq!(row["output_tokens"], reported.output);
    assert_eq!(row["input_tokens"], reported.input_total);
    assert_eq!(row["estimated_requests"], 0);

    // When the app asks for usage it gets the usage chunk, untouched.
    let body = r#"{"model":"gpt-5","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    let events = sse_data(&r.text());
    let usage_chunk: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], serde_json::json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], reported.output);
    assert_eq!(sc.model_row("gpt-5-mini").await["requests"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_and_embeddings_are_metered() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    let r = sc
        .openai(
            "/v1/responses",
            r#"{"model":"gpt-5","input":"write a haiku","max_output_tokens":500}"#,
            &[("x-fake-cached-tokens", "2")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["usage"]["input_tokens_details"]["cached_tokens"],
        2
    );
    let r = sc
        .openai(
            "/v1/responses",
            r#"{"model":"gpt-5","input":"write a haiku","stream":true}"#,
            &[],
        )
        .await;
    assert!(r.text().contains("response.completed"));
    let reported: Vec<_> = fake.log().into_iter().map(|l| l.usage.unwrap()).collect();
    let row = sc.model_row("gpt-5-mini").await;
    assert_eq!(row["requests"], 2);
    assert_eq!(row["cache_read_tokens"], 2);
    assert_eq!(
        row["input_tokens"],
        reported[0].input_total - 2 + reported[1].input_total
    );
    assert_eq!(
        row["output_tokens"],
        reported[0].output + reported[1].output
    );

    let r = sc
        .openai(
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":["a b c","d e"]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let row = sc.model_row("text-embedding-3-small").await;
    assert_eq!(
        row["input_tokens"],
        fake.log()[2].usage.as_ref().unwrap().input_total
    );
    assert_eq!(row["output_tokens"], 0);
    // $0.02 per MTok.
    assert_eq!(
        cost_str(&row["cost_usd"]),
        i128::from(row["input_tokens"].as_u64().unwrap()) * 20_000
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_messages_meter_all_four_kinds() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    let cache = [
        ("x-fake-cached-tokens", "30"),
        ("x-fake-cache-write-tokens", "20"),
    ];
    let prompt = format!(
        r#"{{"model":"claude-opus-4-1","max_tokens":300,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x ".repeat(200)
    );
    let r = sc.anthropic(&prompt, &cache).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-tokenwarden-model"),
        Some("claude-haiku-4-5"),
        "opus routed to the cheap tier"
    );
    assert_eq!(fake.log()[0].header("x-api-key"), Some("sk-fake-anthropic"));
    let stream = prompt.replacen(
        "\"max_tokens\":300",
        "\"max_tokens\":300,\"stream\":true",
        1,
    );
    let r = sc.anthropic(&stream, &cache).await;
    assert!(r.text().contains("event: message_stop"));

    let u: Vec<_> = fake.log().into_iter().map(|l| l.usage.unwrap()).collect();
    let row = sc.model_row("claude-haiku-4-5").await;
    let uncached: u64 = u
        .iter()
        .map(|x| x.input_total - x.cache_read - x.cache_write)
        .sum();
    assert_eq!(row["input_tokens"], uncached);
    assert_eq!(row["cache_read_tokens"], 60);
    assert_eq!(row["cache_write_tokens"], 40);
    let out: u64 = u.iter().map(|x| x.output).sum();
    assert_eq!(row["output_tokens"], out);
    // claude-haiku-4-5: $1 in, $5 out, $0.10 cache read, $1.25 cache write per MTok.
    let want = i128::from(uncached) * 1_000_000
        + i128::from(out) * 5_000_000
        + 60 * 100_000
        + 40 * 1_250_000;
    assert_eq!(cost_str(&row["cost_usd"]), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_provider_shaped_errors() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start_with(
        &policy(&fake, MINI_ROUTE, BIG_BUDGET),
        &["--max-body-bytes", "2000"],
    );

    let r = sc
        .openai("/v1/chat/completions", "{\"model\": \"gpt-5\", ", &[])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.header("x-tokenwarden-error"), Some("invalid_request"));

    let r = sc
        .openai("/v1/chat/completions", r#"{"messages":[]}"#, &[])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "model");

    let r = sc.anthropic("[1,2]", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["type"],
        "error",
        "Anthropic's shape for Anthropic callers"
    );
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let big = format!(
        r#"{{"model":"gpt-5","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(3000)
    );
    let r = sc.openai("/v1/chat/completions", &big, &[]).await;
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2000 bytes")
    );

    let r = sc
        .send(
            Method::GET,
            "/v1/files",
            &[("authorization", "Bearer x")],
            "",
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-tokenwarden-error"), Some("unknown_path"));

    // Upstream garbage is passed through; the attempt is still recorded.
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-5","messages":[]}"#,
            &[("x-fake-fault", "garbage")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("oops"));
    assert!(
        fake.log()
            .iter()
            .all(|l| l.header("authorization") == Some("Bearer sk-fake-openai"))
    );
    assert_eq!(
        fake.log().len(),
        1,
        "rejected requests never reached the provider"
    );
    assert_eq!(sc.model_row("gpt-5-mini").await["estimated_requests"], 1);

    // Passthrough endpoints reach the provider with the real key and are not metered.
    let before = sc.ledger().await["total"]["requests"].clone();
    let r = sc
        .send(
            Method::GET,
            "/v1/models",
            &[("authorization", "Bearer x")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = sc.anthropic("{\"model\":\"claude-haiku-4-5\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &[]).await;
    let _ = r;
    let r = sc
        .send(
            Method::POST,
            "/v1/messages/count_tokens",
            &[
                ("x-api-key", "x"),
                ("anthropic-version", "2023-06-01"),
                ("content-type", "application/json"),
            ],
            r#"{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tokenwarden_errors_total{reason=\"unknown_path\"} 1"),
        "{metrics}"
    );
    let _ = before;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_models_are_forwarded_and_counted_unpriced() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"acme-internal-7b","messages":[]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-tokenwarden-cost-usd"),
        None,
        "no price, no cost header"
    );
    let row = sc.model_row("acme-internal-7b").await;
    assert_eq!(row["unpriced_requests"], 1);
    assert_eq!(row["cost_usd"], "0.00");
    assert!(
        row["output_tokens"].as_u64().unwrap() > 0,
        "tokens are still counted"
    );
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics
            .contains("tokenwarden_unpriced_requests_total{served_model=\"acme-internal-7b\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_errors_escalate_and_every_attempt_is_metered() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    let body = r#"{"model":"claude-opus-4-1","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc
        .anthropic(body, &[("x-fake-fail-models", "claude-haiku-4-5=503")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some("claude-sonnet-4-5"));
    assert_eq!(r.header("x-tokenwarden-attempts"), Some("2"));
    assert_eq!(r.header("x-tokenwarden-adjusted"), Some("escalated"));
    let sent: Vec<_> = fake
        .log()
        .iter()
        .map(|l| l.model.clone().unwrap())
        .collect();
    assert_eq!(sent, ["claude-haiku-4-5", "claude-sonnet-4-5"]);
    let failed = sc.model_row("claude-haiku-4-5").await;
    assert_eq!(
        (
            failed["requests"].as_u64(),
            failed["output_tokens"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(sc.model_row("claude-sonnet-4-5").await["requests"], 1);

    // A 429 that clears: retried (one tier up); the app never sees it.
    let r = sc
        .anthropic(
            body,
            &[
                ("x-fake-fault", "429"),
                ("x-fake-fault-times", "1"),
                ("x-fake-key", "k1"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-tokenwarden-attempts"), Some("2"));

    // Attempts are bounded (default 2): a persistent 500 reaches the app as is.
    let r = sc.anthropic(body, &[("x-fake-fault", "500")]).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json()["error"]["type"],
        "api_error",
        "the provider's own error body"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_stream_is_recorded_as_estimated() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    let body = r#"{"model":"claude-opus-4-1","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let _ = sc
        .anthropic(body, &[("x-fake-fault", "cut"), ("x-fake-chunks", "10")])
        .await;
    // The settle happens when the body ends; give the server a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let row = sc.model_row("claude-haiku-4-5").await;
    assert_eq!(row["requests"], 1);
    assert_eq!(row["estimated_requests"], 1);
    assert!(
        row["input_tokens"].as_u64().unwrap() > 0,
        "the prompt is counted: {row}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn budgets_block_with_a_provider_shaped_429() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget(
        "tiny",
        "  period: Daily\n  limit: {usd: \"0.0005\"}\n  perRequestMaxUsd: \"0.01\"",
    );
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, &b));
    let body = r#"{"model":"gpt-5","max_tokens":60,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut ok = 0;
    let mut blocked = None;
    for _ in 0..20 {
        let r = sc.openai("/v1/chat/completions", body, &[]).await;
        if r.status == 200 {
            ok += 1;
        } else {
            blocked = Some(r);
            break;
        }
    }
    let r = blocked.expect("the budget blocks eventually");
    assert!(ok >= 2, "some requests fit: {ok}");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with("TokenBudget apps/tiny cannot cover this request: spent $0.000"),
        "{msg}"
    );
    assert!(
        msg.contains("of $0.0005 this Daily period") && msg.contains("resets at"),
        "{msg}"
    );
    assert_eq!(r.json()["error"]["type"], "insufficient_quota");
    let ledger = sc.ledger().await;
    assert!(cost_str(&ledger["budgets"][0]["spent_usd"]) <= picos("0.0005"));

    let r = sc
        .anthropic(
            // 1000 output tokens at $5/MTok: over what is left even when
            // the prompt is counted exactly.
            r#"{"model":"claude-opus-4-1","max_tokens":1000,"messages":[]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json()["error"]["type"],
        "rate_limit_error",
        "Anthropic's shape"
    );

    // The per-request cap: a huge max_tokens is refused before anything is spent.
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-5","max_tokens":100000,"messages":[]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 429);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per-request cap of $0.01")
    );
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(metrics.contains("tokenwarden_budget_blocks_total{budget=\"apps/tiny\",reason=\"request_cap\",shadow=\"false\"} 1"), "{metrics}");
}

/// Sends a slow stream whose worst case leaves no room for a second
/// request of the same size under a 2000-token cap, and returns once the
/// sidecar holds its reservation.
async fn hold_room_with_a_slow_stream(
    sc: &std::sync::Arc<Sidecar>,
) -> tokio::task::JoinHandle<Reply> {
    let slow = sc.clone();
    let stream = tokio::spawn(async move {
        let body = r#"{"model":"gpt-5","max_tokens":1000,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"slow"}]}"#;
        let h = [
            ("x-fake-chunks", "4"),
            ("x-fake-chunk-delay-ms", "400"),
            ("x-fake-output-tokens", "20"),
        ];
        slow.openai("/v1/chat/completions", body, &h).await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sc.ledger().await["budgets"][0]["reserved_tokens"] == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never reserved"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream
}

const ROOM_BUDGET: &str = "  period: Daily\n  limit: {tokens: 2000}";
const SECOND: &str =
    r#"{"model":"gpt-5","max_tokens":1000,"messages":[{"role":"user","content":"next"}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_fits_the_spend_waits_for_reservations_in_flight() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget("room", ROOM_BUDGET);
    let sc = std::sync::Arc::new(Sidecar::start(&policy(&fake, MINI_ROUTE, &b)));
    let stream = hold_room_with_a_slow_stream(&sc).await;
    // ~1100 tokens reserved, nothing spent: a second ~1100-token worst case
    // fits the spend but not the reservation. It waits for the stream to
    // settle (it uses far less than its worst case) instead of a 429.
    let r = sc
        .openai(
            "/v1/chat/completions",
            SECOND,
            &[("x-fake-output-tokens", "20")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = stream.await.unwrap();
    assert_eq!(first.status, 200);
    assert!(first.text().contains("[DONE]"));
    let ledger = sc.ledger().await;
    let budget = &ledger["budgets"][0];
    assert_eq!(budget["requests"], 2, "{budget}");
    assert_eq!(budget["reserved_tokens"], 0, "{budget}");
    let billed: u64 = fake
        .log()
        .iter()
        .filter_map(|l| l.usage.clone())
        .map(|u| u.input_total + u.output)
        .sum();
    assert_eq!(budget["tokens_used"], billed);
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tokenwarden_budget_reservation_waits_total{budget=\"apps/room\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_wait_the_refusal_says_requests_in_flight_hold_the_room() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget("room", ROOM_BUDGET);
    let sc = std::sync::Arc::new(Sidecar::start_with(
        &policy(&fake, MINI_ROUTE, &b),
        &["--reservation-wait-ms", "0"],
    ));
    let stream = hold_room_with_a_slow_stream(&sc).await;
    let r = sc.openai("/v1/chat/completions", SECOND, &[]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with(
            "TokenBudget apps/room has no room for this request now: used 0 of 2000 tokens this \
             Daily period, and requests in flight have reserved "
        ),
        "{msg}"
    );
    assert!(
        msg.contains("(their worst case, released as they finish)"),
        "{msg}"
    );
    assert_eq!(stream.await.unwrap().status, 200);
    // Once the stream settled, the same request fits.
    let r = sc.openai("/v1/chat/completions", SECOND, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        fake.log().len(),
        2,
        "the refused request never reached the provider"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_requests_never_overspend() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget("cap", "  period: Daily\n  limit: {usd: \"0.01\"}");
    let sc = std::sync::Arc::new(Sidecar::start(&policy(&fake, MINI_ROUTE, &b)));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let sc = sc.clone();
        tasks.push(tokio::spawn(async move {
            // Every request is capped at 200 output tokens and uses them all.
            let body = format!(r#"{{"model":"gpt-5","max_tokens":200,"messages":[{{"role":"user","content":"task {i}"}}]}}"#);
            sc.openai("/v1/chat/completions", &body, &[("x-fake-output-tokens", "200")]).await.status.as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let blocked = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + blocked, 200, "{statuses:?}");
    assert!(ok > 0 && blocked > 0, "ok {ok}, blocked {blocked}");
    let ledger = sc.ledger().await;
    let spent = cost_str(&ledger["budgets"][0]["spent_usd"]);
    assert!(
        spent <= picos("0.01"),
        "spent {spent} picos over the $0.01 limit"
    );
    // The ledger equals what the provider billed, at list price.
    let billed: i128 = fake
        .log()
        .iter()
        .filter_map(|l| l.usage.clone())
        .map(|u| i128::from(u.input_total) * MINI_IN + i128::from(u.output) * MINI_OUT)
        .sum();
    assert_eq!(spent, billed);
    assert_eq!(
        fake.log().len(),
        ok,
        "blocked requests never reached the provider"
    );
    assert_eq!(
        ledger["budgets"][0]["reserved_usd"], "0.00",
        "every reservation settled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answered_request_is_in_the_journal_before_its_response() {
    // Concurrent requests share the journal's writes (group commit); each
    // response still leaves only once its line is on file.
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = std::sync::Arc::new(Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET)));
    let journal = sc.state_dir().join("ledger.jsonl");
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (sc, journal, answered) = (sc.clone(), journal.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let body = format!(
                r#"{{"model":"gpt-5","messages":[{{"role":"user","content":"task {i}"}}]}}"#
            );
            let r = sc.openai("/v1/chat/completions", &body, &[]).await;
            assert_eq!(r.status, 200);
            let k = answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
            assert!(
                lines >= k,
                "{k} responses seen, {lines} lines in the journal"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let text = std::fs::read_to_string(&journal).unwrap();
    // Record lines (the intent lines written before each request left
    // carry no seq).
    let mut seqs: Vec<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=64).collect::<Vec<u64>>());
    let Ok(mut sc) = std::sync::Arc::try_unwrap(sc) else {
        panic!("the tasks are done")
    };
    sc.kill();
    sc.spawn();
    let after = sc.ledger().await;
    assert_eq!(after["last_seq"], 64);
    assert_eq!(after["models"][0]["requests"], 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_survives_kill_9() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    for _ in 0..5 {
        let r = sc
            .openai(
                "/v1/chat/completions",
                r#"{"model":"gpt-5","messages":[]}"#,
                &[],
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let before = sc.ledger().await;
    sc.kill();
    sc.spawn();
    let after = sc.ledger().await;
    assert_eq!(after["models"], before["models"]);
    assert_eq!(
        after["budgets"][0]["spent_usd"], before["budgets"][0]["spent_usd"],
        "the budget resumes its spend"
    );
    assert_eq!(after["last_seq"], 5);

    // `report` prints the same numbers as a table.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
        .args(["report", "--state-dir"])
        .arg(sc.state_dir())
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let row = &before["models"][0];
    let line = table
        .lines()
        .find(|l| l.starts_with("gpt-5-mini"))
        .unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], "5");
    assert_eq!(cols[2], row["input_tokens"].to_string());
    assert_eq!(cols[3], row["output_tokens"].to_string());
    assert!(table.contains("TOTAL"), "{table}");

    // With the sidecar's policy and workload, the budget's current period,
    // limit, remaining and state, as `/ledger` has them.
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
    let cols: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("apps/team "))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    let b = &before["budgets"][0];
    let usd = |v: &serde_json::Value| {
        tokenwarden_sidecar::report::money(v.as_str().unwrap().parse().unwrap())
    };
    assert_eq!(cols[1], "Daily");
    assert_eq!(cols[2], b["period_start"].as_str().unwrap());
    assert_eq!(cols[3], b["period_end"].as_str().unwrap());
    assert_eq!(cols[4], usd(&b["spent_usd"]));
    assert_eq!(cols[5], "$100.00");
    assert_eq!(cols[6], usd(&b["remaining_usd"]));
    assert_eq!(cols[8], b["tokens_used"].to_string());
    assert_eq!(cols[10], b["state"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sidecar_on_the_same_state_dir_is_refused() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-5","messages":[]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
        .arg("--policy-file")
        .arg(sc.policy_path())
        .arg("--secrets-dir")
        .arg(sc.secrets_dir())
        .arg("--state-dir")
        .arg(sc.state_dir())
        .args(["--namespace", "apps", "--labels", "app=agent,team=search"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is in use by another tokenwarden-sidecar (pid "),
        "{stderr}"
    );
    // The first one is unharmed: its ledger still counts.
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-5","messages":[]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(sc.ledger().await["last_seq"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_changes_apply_without_restart_and_bad_ones_are_ignored() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    let body = r#"{"model":"gpt-5","messages":[]}"#;
    assert_eq!(
        sc.openai("/v1/chat/completions", body, &[])
            .await
            .header("x-tokenwarden-model"),
        Some("gpt-5-mini")
    );
    let nano = MINI_ROUTE.replace("model: gpt-5-mini}", "model: gpt-5-nano}");
    std::fs::write(sc.policy_path(), policy(&fake, &nano, BIG_BUDGET)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = sc.openai("/v1/chat/completions", body, &[]).await;
        if r.header("x-tokenwarden-model") == Some("gpt-5-nano") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reload not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An invalid file is rejected; the last good config stays.
    std::fs::write(sc.policy_path(), "apiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: {name: x}\nspec: {period: Daily, limit: {}}\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("gpt-5-nano"));
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tokenwarden_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert_eq!(sc.admin_get("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_file_rewritten_in_place_is_never_read_half_written() {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    // The budget first: cut after it, the file is valid YAML with no routing.
    let routing = policy(&fake, MINI_ROUTE, "");
    let full = format!("{BIG_BUDGET}---\n{routing}");
    let sc = std::sync::Arc::new(Sidecar::start(&full));
    let body = r#"{"model":"gpt-5","messages":[]}"#;
    let routed = |r: &support::Reply| {
        r.status == 200 && r.header("x-tokenwarden-model") == Some("gpt-5-mini")
    };
    assert!(routed(&sc.openai("/v1/chat/completions", body, &[]).await));

    // Requests all along; each must see the whole config.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (seen, wrong) = (
        std::sync::Arc::new(AtomicU64::new(0)),
        std::sync::Arc::new(AtomicU64::new(0)),
    );
    let checker = {
        let (sc, stop, seen, wrong) = (sc.clone(), stop.clone(), seen.clone(), wrong.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let r = sc.openai("/v1/chat/completions", body, &[]).await;
                seen.fetch_add(1, Ordering::SeqCst);
                if !routed(&r) {
                    wrong.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Rewritten in place, as `cat > file` or a template tool does: truncate,
    // the first document, a pause, the rest. The reload polls every 100 ms
    // and reads a change once it held for 100 ms; the pause is far shorter
    // (on an OS thread, so the test's own runtime cannot stretch it).
    let (path, text) = (sc.policy_path(), full.clone());
    tokio::task::spawn_blocking(move || {
        let cut = BIG_BUDGET.len();
        for _ in 0..16 {
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(&text.as_bytes()[..cut]).unwrap();
            std::thread::sleep(Duration::from_millis(15));
            f.write_all(&text.as_bytes()[cut..]).unwrap();
            drop(f);
            std::thread::sleep(Duration::from_millis(120));
        }
    })
    .await
    .unwrap();
    // Emptied (and left so for a while): taken for a file caught mid-write.
    std::fs::write(sc.policy_path(), "").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    checker.await.unwrap();
    let (seen, wrong) = (seen.load(Ordering::SeqCst), wrong.load(Ordering::SeqCst));
    assert!(seen > 50, "only {seen} requests ran during the rewrites");
    assert_eq!(
        wrong, 0,
        "{wrong} of {seen} requests ran under a half-read config"
    );
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tokenwarden_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    // Written whole again, it is read again.
    let nano = full.replace("model: gpt-5-mini}", "model: gpt-5-nano}");
    std::fs::write(sc.policy_path(), &nano).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sc
        .openai("/v1/chat/completions", body, &[])
        .await
        .header("x-tokenwarden-model")
        != Some("gpt-5-nano")
    {
        assert!(std::time::Instant::now() < deadline, "reload not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn thresholds_downgrade_loop_guard_and_shadow() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let budgets = format!(
        "{}{}{}",
        budget(
            "downgrade",
            "  period: Daily\n  limit: {usd: \"1.00\"}\n  thresholds:\n    - {percent: 1, action: Downgrade, downgradeTo: {tier: cheap}}"
        ),
        budget(
            "loops",
            "  period: Hourly\n  limit: {usd: \"100\"}\n  loopGuard: {maxIdenticalRequests: 3, window: 60s, cooldown: 10m}"
        ),
        budget(
            "trial",
            "  period: Daily\n  limit: {usd: \"0.000001\"}\n  shadow: true"
        ),
    );
    let routes = MINI_ROUTE.to_string()
        + "    - {name: sonnet, match: {models: [\"claude-sonnet-*\"]}, target: {tier: standard}}\n";
    let sc = Sidecar::start(&policy(&fake, &routes, &budgets));
    let big = r#"{"model":"claude-sonnet-4-5","max_tokens":4000,"messages":[{"role":"user","content":"design"}]}"#;
    // Spend past 1% ($0.01) on the standard tier: 4000 output tokens at $15/MTok = $0.06.
    let r = sc
        .anthropic(
            big,
            &[("x-fake-output-tokens", "4000"), ("x-fake-key", "a")],
        )
        .await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("claude-sonnet-4-5"));
    assert!(
        r.header("x-tokenwarden-shadow-block")
            .unwrap()
            .contains("apps/trial:limit"),
        "shadow budgets report, never block"
    );
    let r = sc.anthropic(&big.replace("design", "design 2"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-tokenwarden-model"),
        Some("claude-haiku-4-5"),
        "downgraded at the threshold"
    );
    assert_eq!(r.header("x-tokenwarden-adjusted"), Some("downgraded"));

    // Loop guard: the third identical request within a minute is refused.
    let same = r#"{"model":"gpt-5","messages":[{"role":"user","content":"again"}]}"#;
    assert_eq!(
        sc.openai("/v1/chat/completions", same, &[]).await.status,
        200
    );
    assert_eq!(
        sc.openai("/v1/chat/completions", same, &[]).await.status,
        200
    );
    let r = sc.openai("/v1/chat/completions", same, &[]).await;
    assert_eq!(r.status, 429);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loop guard tripped")
    );
    assert_eq!(r.header("retry-after"), Some("600"));
    let ledger = sc.ledger().await;
    let trial = ledger["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "trial")
        .unwrap()
        .clone();
    assert_eq!(
        trial["state"], "Exhausted",
        "shadow budgets still account: {trial}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_repeated_within_the_window_moves_up_a_tier() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let routes =
        MINI_ROUTE.to_string() + "  escalation:\n    repeatedPrompt: {count: 2, window: 1m}\n";
    let sc = Sidecar::start(&policy(&fake, &routes, BIG_BUDGET));
    let body = r#"{"model":"claude-opus-4-1","max_tokens":100,"messages":[{"role":"user","content":"this answer was wrong"}]}"#;
    assert_eq!(
        sc.anthropic(body, &[]).await.header("x-tokenwarden-model"),
        Some("claude-haiku-4-5")
    );
    let r = sc.anthropic(body, &[]).await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("claude-sonnet-4-5"));
    assert_eq!(r.header("x-tokenwarden-adjusted"), Some("escalated"));
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_clients_are_served() {
    use http_body_util::{BodyExt, Full};
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::post(format!("http://{}/v1/chat/completions", sc.app))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(
            br#"{"model":"gpt-5","messages":[]}"#,
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        std::str::from_utf8(&body)
            .unwrap()
            .contains("chat.completion")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_byte_bound_is_refined_only_when_it_would_refuse() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget(
        "capped",
        "  period: Daily\n  limit: {usd: \"10\"}\n  perRequestMaxUsd: \"0.01\"",
    );
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, &b));
    // 60 KB of prose: the byte bound prices 60k prompt tokens at gpt-5-mini's
    // $0.25/MTok = $0.015 > the $0.01 cap; tiktoken counts ~13k tokens.
    let prose = "The quick brown fox jumps over the lazy dog. ".repeat(1350);
    let body = serde_json::json!({"model": "gpt-5", "max_tokens": 100, "messages": [{"role": "user", "content": prose}]}).to_string();
    assert!(body.len() > 60_000);
    let r = sc.openai("/v1/chat/completions", &body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(metrics.contains("kind=\"bound_refined\""), "{metrics}");

    // Anthropic: the provider's count_tokens gives the exact count
    // (claude-haiku-4-5: $1.25/MTok cache write is the dearest prompt rate).
    let b = budget(
        "capped",
        "  period: Daily\n  limit: {usd: \"10\"}\n  perRequestMaxUsd: \"0.05\"",
    );
    std::fs::write(sc.policy_path(), policy(&fake, MINI_ROUTE, &b)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let body = serde_json::json!({"model": "claude-opus-4-1", "max_tokens": 100, "messages": [{"role": "user", "content": prose}]}).to_string();
    let r = sc.anthropic(&body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let paths: Vec<String> = fake.log().iter().map(|l| l.path.clone()).collect();
    assert!(
        paths.contains(&"/v1/messages/count_tokens".to_string()),
        "{paths:?}"
    );

    // A request that is too expensive even when counted exactly stays
    // refused: 30k output tokens at $2/MTok alone are $0.06 > $0.05.
    let huge = serde_json::json!({"model": "gpt-5", "max_tokens": 30000, "messages": [{"role": "user", "content": prose}]}).to_string();
    let r = sc.openai("/v1/chat/completions", &huge, &[]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per-request cap")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_forwarded_as_they_arrive_even_to_slow_readers() {
    use http_body_util::BodyExt;
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    let body = r#"{"model":"gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let req = http::Request::post(format!("http://{}/v1/chat/completions", sc.app))
        .header("content-type", "application/json")
        .header("x-fake-chunks", "10")
        .header("x-fake-chunk-delay-ms", "150")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )))
        .unwrap();
    let start = std::time::Instant::now();
    let resp = sc.client.request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    let first_at = start.elapsed();
    assert!(first.is_data());
    // The upstream takes ~1.35 s; a buffering proxy would deliver nothing before the end.
    assert!(
        first_at < Duration::from_millis(700),
        "first event after {first_at:?}"
    );
    // A slow reader: pause between frames; nothing is lost.
    let mut text = String::from_utf8_lossy(first.data_ref().unwrap()).into_owned();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(d) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(d));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(start.elapsed() > Duration::from_millis(1200));
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let out: u64 = fake.log()[0].usage.as_ref().unwrap().output;
    assert_eq!(sc.model_row("gpt-5-mini").await["output_tokens"], out);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_score_and_its_reason_are_recorded_per_request() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let routes = "  tiers:\n    - {name: cheap, provider: anthropic, model: claude-haiku-4-5}\n    - {name: strong, provider: anthropic, model: claude-sonnet-4-5}\n  routes:\n    - {name: hard, match: {complexityClass: Hard}, target: {tier: strong}}\n    - {name: easy, target: {tier: cheap}}\n";
    let sc = Sidecar::start(&policy(&fake, routes, BIG_BUDGET));
    let hard = r#"{"model":"claude-opus-4-1","max_tokens":100,"messages":[{"role":"user","content":"Why does this deadlock intermittently? Traceback (most recent call last):\n  File \"pool.py\", line 88, in acquire\n    self._lock.acquire()\nRuntimeError: deadlock detected\nExplain the root cause and redesign the locking to avoid the race."}]}"#;
    let r = sc.anthropic(hard, &[]).await;
    assert_eq!(r.header("x-tokenwarden-route"), Some("hard"));
    let score: u16 = r.header("x-tokenwarden-score").unwrap().parse().unwrap();
    let threshold = tokenwarden_core::classify::DEFAULT_HARD_THRESHOLD;
    assert!(score >= threshold, "{score}");
    let r = sc.anthropic(r#"{"model":"claude-opus-4-1","max_tokens":100,"messages":[{"role":"user","content":"rename variable x to y"}]}"#, &[]).await;
    assert_eq!(r.header("x-tokenwarden-route"), Some("easy"));
    let journal = std::fs::read_to_string(sc.state_dir().join("ledger.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("seq").is_some())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["score"], score);
    assert!(
        records[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("score {score}: ")),
        "{}",
        records[0]
    );
    assert!(records[1]["score"].as_u64().unwrap() < u64::from(threshold));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_stream_counts_as_in_flight_until_it_ends() {
    use http_body_util::BodyExt;
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    let req = http::Request::post(format!("http://{}/v1/chat/completions", sc.app))
        .header("content-type", "application/json")
        .header("x-fake-chunks", "4")
        .header("x-fake-chunk-delay-ms", "300")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"model":"gpt-5","stream":true,"messages":[]}"#,
        )))
        .unwrap();
    let resp = sc.client.request(req).await.unwrap();
    let gauge = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("tokenwarden_in_flight_requests "))
            .map(|v| v.trim().to_string())
    };
    let m = sc.admin_get("/metrics").await.text();
    assert_eq!(gauge(&m).as_deref(), Some("1"), "{m}");
    let _ = resp.into_body().collect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = sc.admin_get("/metrics").await.text();
    assert_eq!(gauge(&m).as_deref(), Some("0"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_url_path_prefixes_every_upstream_path_and_the_query_is_kept() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    // A gateway in front of the provider: the base URL carries a path.
    let yaml = policy(&fake, "", "").replace(
        &format!("baseUrl: \"{}\"", fake.base_url()),
        &format!("baseUrl: \"{}/gw/openai/\"", fake.base_url()),
    );
    assert!(yaml.contains("/gw/openai/"), "{yaml}");
    let sc = Sidecar::start(&yaml);
    let r = sc
        .openai(
            "/v1/chat/completions?api-version=2024-10-21",
            r#"{"model":"gpt-5-mini","messages":[{"role":"user","content":"hi"}]}"#,
            &[],
        )
        .await;
    // The fake serves no /gw/ paths: its 404 comes back as it is, in its shape.
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["error"]["message"].is_string(), "{}", r.text());
    let models = sc
        .send(
            Method::GET,
            "/v1/models",
            &[("authorization", "Bearer app-key-not-real")],
            "",
        )
        .await;
    assert_eq!(models.status, 404, "{}", models.text());

    let log = fake.log();
    let sent: Vec<(&str, &str, Option<&str>, Option<&str>)> = log
        .iter()
        .map(|l| {
            (
                l.method.as_str(),
                l.path.as_str(),
                l.query.as_deref(),
                l.header("authorization"),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            (
                "POST",
                "/gw/openai/v1/chat/completions",
                Some("api-version=2024-10-21"),
                Some("Bearer sk-fake-openai")
            ),
            (
                "GET",
                "/gw/openai/v1/models",
                None,
                Some("Bearer sk-fake-openai")
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_latency_the_sidecar_adds_excludes_the_providers_time() {
    use http_body_util::BodyExt;
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, MINI_ROUTE, BIG_BUDGET));
    // The provider takes 400 ms to its response head; the sidecar's own
    // part (read, route, admit) is a small fraction of that.
    let req = http::Request::post(format!("http://{}/v1/chat/completions", sc.app))
        .header("content-type", "application/json")
        .header("x-fake-fault", "slow-head:400")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let resp = sc.client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    let m = sc.admin_get("/metrics").await.text();
    let value = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {m}"))
    };
    assert_eq!(
        value("tokenwarden_request_overhead_seconds_count "),
        1.0,
        "{m}"
    );
    let overhead = value("tokenwarden_request_overhead_seconds_sum ");
    let upstream = value("tokenwarden_upstream_duration_seconds_sum{provider=\"openai\"} ");
    assert!(upstream >= 0.4, "{upstream}\n{m}");
    assert!(overhead > 0.0 && overhead < 0.2, "{overhead}\n{m}");
}
