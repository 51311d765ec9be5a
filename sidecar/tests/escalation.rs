//! Escalation on a failed answer, end to end: the app's literal request
//! through the real sidecar to the fake provider scripted (`x-fake-answer`)
//! to answer badly for the cheap model only. Per API: the upstream saw both
//! attempts with the right models, the app got the stronger model's answer
//! with `x-tokenwarden-adjusted: escalated` and the reason, both attempts
//! are in `/ledger` at their exact cost, and the metric counts the reason.
//! And the cases that must not escalate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::*;

/// Anthropic tiers, then OpenAI tiers (escalation skips the other API's).
/// `top` goes straight to the top OpenAI tier (no tier above it).
const TIERS: &str = r#"  tiers:
    - {name: cheap, provider: anthropic, model: claude-haiku-4-5}
    - {name: standard, provider: anthropic, model: claude-sonnet-4-5}
    - {name: oa-cheap, provider: openai, model: gpt-5-mini}
    - {name: oa-standard, provider: openai, model: gpt-5}
  routes:
    - {name: top, match: {models: ["top"]}, target: {tier: oa-standard}}
    - {name: oa, match: {apis: [ChatCompletions, Responses]}, target: {tier: oa-cheap}}
    - {name: an, match: {apis: [Messages]}, target: {tier: cheap}}
"#;

const BUDGET: &str = r#"---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: team, namespace: apps}
spec:
  period: Daily
  limit: {usd: "100.00"}
"#;

/// List prices in picodollars per token (input, output).
fn price(model: &str) -> (i128, i128) {
    match model {
        "gpt-5-mini" => (250_000, 2_000_000),
        "gpt-5" => (1_250_000, 10_000_000),
        "claude-haiku-4-5" => (1_000_000, 5_000_000),
        "claude-sonnet-4-5" => (3_000_000, 15_000_000),
        m => panic!("no price for {m}"),
    }
}

fn start(fake: &FakeProvider, escalation: &str) -> Sidecar {
    Sidecar::start(&policy(fake, &format!("{TIERS}{escalation}"), BUDGET))
}

/// The models the provider was asked for, in order.
fn upstream_models(fake: &FakeProvider) -> Vec<String> {
    fake.log()
        .iter()
        .map(|l| l.model.clone().unwrap())
        .collect()
}

/// The exact cost the provider billed for request `i` of its log.
fn billed(fake: &FakeProvider, i: usize) -> i128 {
    let l = &fake.log()[i];
    let u = l.usage.clone().unwrap();
    let (inp, out) = price(l.model.as_deref().unwrap());
    assert_eq!(u.cache_read + u.cache_write, 0, "no cache in these tests");
    i128::from(u.input_total) * inp + i128::from(u.output) * out
}

/// Both attempts are in the ledger, one request each, at the cost the
/// provider billed; the cost header is the answer's (the second attempt).
async fn assert_both_metered(sc: &Sidecar, fake: &FakeProvider, r: &Reply) {
    assert_eq!(
        picos(r.header("x-tokenwarden-cost-usd").unwrap()),
        billed(fake, 1)
    );
    assert_both_in_ledger(sc, fake).await;
}

/// Both attempts are in the ledger, one request each, at the cost the
/// provider billed, and the budget paid for both.
async fn assert_both_in_ledger(sc: &Sidecar, fake: &FakeProvider) {
    let models = upstream_models(fake);
    assert_eq!(models.len(), 2);
    for (i, m) in models.iter().enumerate() {
        let row = sc.model_row(m).await;
        assert_eq!(row["requests"], 1, "{m}");
        assert_eq!(
            row["output_tokens"],
            fake.log()[i].usage.clone().unwrap().output
        );
        assert_eq!(cost_str(&row["cost_usd"]), billed(fake, i), "{m}");
    }
    let ledger = sc.ledger().await;
    assert_eq!(
        cost_str(&ledger["budgets"][0]["spent_usd"]),
        billed(fake, 0) + billed(fake, 1),
        "the budget paid for both"
    );
}

fn assert_escalated(r: &Reply, model: &str, reason: &str) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some(model));
    assert_eq!(r.header("x-tokenwarden-attempts"), Some("2"));
    assert_eq!(r.header("x-tokenwarden-adjusted"), Some("escalated"));
    assert_eq!(r.header("x-tokenwarden-escalation-reason"), Some(reason));
}

fn assert_untouched(r: &Reply, model: &str) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some(model));
    assert_eq!(r.header("x-tokenwarden-attempts"), Some("1"));
    assert_eq!(r.header("x-tokenwarden-adjusted"), None);
    assert_eq!(r.header("x-tokenwarden-escalation-reason"), None);
}

async fn escalations_metric(sc: &Sidecar, reason: &str) -> u64 {
    let text = sc.admin_get("/metrics").await.text();
    let series =
        format!("tokenwarden_escalations_total{{reason=\"{reason}\",workload=\"apps/agent\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_refusal_goes_one_tier_up_and_both_attempts_are_metered() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = start(&fake, "");
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"Explain the race in this lock-free queue."}]}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            body,
            &[
                ("x-fake-answer", "refusal"),
                ("x-fake-answer-model", "gpt-5-mini"),
                ("x-fake-output-tokens", "4"),
            ],
        )
        .await;
    assert_escalated(&r, "gpt-5", "refusal");
    assert_eq!(upstream_models(&fake), ["gpt-5-mini", "gpt-5"]);
    // Each attempt sent the app's bytes with only the model changed.
    for (l, m) in fake.log().iter().zip(["gpt-5-mini", "gpt-5"]) {
        assert_eq!(
            std::str::from_utf8(&l.body).unwrap(),
            body.replacen("\"gpt-5\"", &format!("\"{m}\""), 1)
        );
    }
    let v = r.json();
    assert_eq!(v["model"], "gpt-5");
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "tok0 tok1 tok2 tok3", "refusal": null, "annotations": []}),
        "the app got the stronger model's answer"
    );
    assert_both_metered(&sc, &fake, &r).await;
    assert_eq!(escalations_metric(&sc, "refusal").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_tool_arguments_response_format_and_truncation() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = start(&fake, "");
    let only_mini = ("x-fake-answer-model", "gpt-5-mini");

    // Arguments that are not JSON.
    let tools = r#"{"model":"gpt-5","messages":[{"role":"user","content":"Weather in Paris?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}}}]}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            tools,
            &[
                ("x-fake-answer", "tool:get_weather:{\"city\":\"Paris\""),
                only_mini,
            ],
        )
        .await;
    assert_escalated(&r, "gpt-5", "tool_arguments");
    // Valid JSON off the declared schema.
    let r = sc
        .openai(
            "/v1/chat/completions",
            tools,
            &[
                ("x-fake-answer", "tool:get_weather:{\"town\":\"Paris\"}"),
                only_mini,
            ],
        )
        .await;
    assert_escalated(&r, "gpt-5", "tool_arguments");
    // Matching arguments pass.
    let r = sc
        .openai(
            "/v1/chat/completions",
            tools,
            &[
                ("x-fake-answer", "tool:get_weather:{\"city\":\"Paris\"}"),
                only_mini,
            ],
        )
        .await;
    assert_untouched(&r, "gpt-5-mini");
    assert_eq!(
        r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );

    // An answer off the response_format schema.
    let format = r#"{"model":"gpt-5","messages":[{"role":"user","content":"2+2?"}],"response_format":{"type":"json_schema","json_schema":{"name":"sum","strict":true,"schema":{"type":"object","properties":{"sum":{"type":"integer"}},"required":["sum"],"additionalProperties":false}}}}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            format,
            &[("x-fake-answer", "text:{\"sum\":\"four\"}"), only_mini],
        )
        .await;
    assert_escalated(&r, "gpt-5", "response_format");

    // Cut by the model's own limit (the app set none).
    let plain =
        r#"{"model":"gpt-5","messages":[{"role":"user","content":"Write the migration."}]}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            plain,
            &[("x-fake-answer", "truncated"), only_mini],
        )
        .await;
    assert_escalated(&r, "gpt-5", "truncated");
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");

    assert_eq!(
        upstream_models(&fake),
        [
            "gpt-5-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5"
        ]
    );
    assert_eq!(escalations_metric(&sc, "tool_arguments").await, 2);
    assert_eq!(escalations_metric(&sc, "response_format").await, 1);
    assert_eq!(escalations_metric(&sc, "truncated").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_at_the_apps_own_limit_an_off_rule_and_the_top_tier_do_not_escalate() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = start(&fake, "  escalation: {onEmptyAnswer: false}\n");

    // The app's max_tokens cut it: what it asked for.
    let limited = r#"{"model":"gpt-5","max_tokens":3,"messages":[{"role":"user","content":"Write the migration."}]}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            limited,
            &[("x-fake-output-tokens", "50")],
        )
        .await;
    assert_untouched(&r, "gpt-5-mini");
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "tok0 tok1 tok2"
    );

    // The rule is off: an empty answer goes to the app as it came.
    let plain = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc
        .openai("/v1/chat/completions", plain, &[("x-fake-answer", "empty")])
        .await;
    assert_untouched(&r, "gpt-5-mini");
    assert_eq!(r.json()["choices"][0]["message"]["content"], "");

    // No tier above: the refusal is returned unchanged.
    let top = r#"{"model":"top","messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc
        .openai("/v1/chat/completions", top, &[("x-fake-answer", "refusal")])
        .await;
    assert_untouched(&r, "gpt-5");
    assert_eq!(
        r.json()["choices"][0]["message"]["refusal"],
        "I'm sorry, but I can't help with that."
    );

    // A stream is never held.
    let stream = r#"{"model":"gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            stream,
            &[("x-fake-answer", "refusal")],
        )
        .await;
    assert_untouched(&r, "gpt-5-mini");

    assert_eq!(
        upstream_models(&fake),
        ["gpt-5-mini", "gpt-5-mini", "gpt-5", "gpt-5-mini"]
    );
    for reason in ["truncated", "empty", "refusal"] {
        assert_eq!(escalations_metric(&sc, reason).await, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_empty_and_text_format() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = start(&fake, "");
    let body = r#"{"model":"gpt-5","input":"Summarize the incident."}"#;
    let r = sc
        .openai(
            "/v1/responses",
            body,
            &[
                ("x-fake-answer", "empty"),
                ("x-fake-answer-model", "gpt-5-mini"),
            ],
        )
        .await;
    assert_escalated(&r, "gpt-5", "empty");
    assert_eq!(upstream_models(&fake), ["gpt-5-mini", "gpt-5"]);
    let v = r.json();
    assert_eq!(v["model"], "gpt-5");
    assert_eq!(v["status"], "completed");
    assert!(
        v["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("tok0")
    );
    assert_both_metered(&sc, &fake, &r).await;
    assert_eq!(escalations_metric(&sc, "empty").await, 1);

    fake.clear_log();
    let format = r#"{"model":"gpt-5","input":"2+2?","text":{"format":{"type":"json_schema","name":"sum","strict":true,"schema":{"type":"object","properties":{"sum":{"type":"integer"}},"required":["sum"],"additionalProperties":false}}}}"#;
    let r = sc
        .openai(
            "/v1/responses",
            format,
            &[
                ("x-fake-answer", "text:the sum is 4"),
                ("x-fake-answer-model", "gpt-5-mini"),
            ],
        )
        .await;
    assert_escalated(&r, "gpt-5", "response_format");
    assert_eq!(upstream_models(&fake), ["gpt-5-mini", "gpt-5"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_tool_input_off_schema_and_the_models_own_limit() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = start(&fake, "");
    let body = r#"{"model":"claude-opus-4-1","max_tokens":1024,"tools":[{"name":"get_weather","description":"Current weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}],"messages":[{"role":"user","content":"Weather in Paris?"}]}"#;
    let r = sc
        .anthropic(
            body,
            &[
                ("x-fake-answer", "tool:get_weather:{\"location\":75001}"),
                ("x-fake-answer-model", "claude-haiku-4-5"),
            ],
        )
        .await;
    assert_escalated(&r, "claude-sonnet-4-5", "tool_arguments");
    assert_eq!(
        upstream_models(&fake),
        ["claude-haiku-4-5", "claude-sonnet-4-5"]
    );
    let v = r.json();
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["content"][0]["type"], "text");
    assert_both_metered(&sc, &fake, &r).await;
    assert_eq!(escalations_metric(&sc, "tool_arguments").await, 1);

    // `stop_reason: "max_tokens"` is always the app's limit (required);
    // the context window is the model's.
    fake.clear_log();
    let plain =
        r#"{"model":"claude-opus-4-1","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc.anthropic(plain, &[("x-fake-output-tokens", "9")]).await;
    assert_untouched(&r, "claude-haiku-4-5");
    assert_eq!(r.json()["stop_reason"], "max_tokens");
    let r = sc
        .anthropic(
            plain,
            &[
                ("x-fake-answer", "truncated"),
                ("x-fake-answer-model", "claude-haiku-4-5"),
            ],
        )
        .await;
    assert_escalated(&r, "claude-sonnet-4-5", "truncated");
    assert_eq!(
        upstream_models(&fake),
        ["claude-haiku-4-5", "claude-haiku-4-5", "claude-sonnet-4-5"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_signal_starts_one_tier_up_even_for_streams() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = start(&fake, "");
    let body = r#"{"model":"claude-opus-4-1","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"That fix was wrong; try again."}]}"#;
    let r = sc.anthropic(body, &[("x-tokenwarden-escalate", "1")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some("claude-sonnet-4-5"));
    assert_eq!(r.header("x-tokenwarden-attempts"), Some("1"));
    assert_eq!(r.header("x-tokenwarden-adjusted"), Some("escalated"));
    assert_eq!(
        r.header("x-tokenwarden-escalation-reason"),
        Some("app_signal")
    );
    assert!(r.text().contains("event: message_stop"));
    let log = fake.log();
    assert_eq!(upstream_models(&fake), ["claude-sonnet-4-5"]);
    assert_eq!(
        log[0].header("x-tokenwarden-escalate"),
        None,
        "the signal is the sidecar's: not forwarded"
    );
    assert_eq!(sc.model_row("claude-sonnet-4-5").await["requests"], 1);
    assert_eq!(escalations_metric(&sc, "app_signal").await, 1);

    // Any other value is no signal; with the rule off it is ignored (and
    // still not forwarded).
    let r = sc
        .anthropic(body, &[("x-tokenwarden-escalate", "please")])
        .await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("claude-haiku-4-5"));
    let off = start(&fake, "  escalation: {onAppSignal: false}\n");
    let r = off
        .anthropic(body, &[("x-tokenwarden-escalate", "1")])
        .await;
    assert_eq!(r.header("x-tokenwarden-model"), Some("claude-haiku-4-5"));
    assert_eq!(r.header("x-tokenwarden-adjusted"), None);
    assert_eq!(fake.log()[2].header("x-tokenwarden-escalate"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_that_cannot_cover_the_stronger_attempt_gets_the_first_answer() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    // Worst cases with the default 4,096 output tokens: gpt-5-mini about
    // $0.008, gpt-5 about $0.041; the cap lets only the first through.
    let capped = budget(
        "capped",
        "  period: Daily\n  limit: {usd: \"10\"}\n  perRequestMaxUsd: \"0.02\"",
    );
    let sc = Sidecar::start(&policy(&fake, TIERS, &capped));
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            body,
            &[
                ("x-fake-answer", "refusal"),
                ("x-fake-answer-model", "gpt-5-mini"),
            ],
        )
        .await;
    assert_untouched(&r, "gpt-5-mini");
    assert_eq!(
        r.json()["choices"][0]["message"]["refusal"],
        "I'm sorry, but I can't help with that."
    );
    assert_eq!(upstream_models(&fake), ["gpt-5-mini"]);
    assert_eq!(
        picos(r.header("x-tokenwarden-cost-usd").unwrap()),
        billed(&fake, 0)
    );
    let ledger = sc.ledger().await;
    let models: Vec<&Value> = ledger["models"].as_array().unwrap().iter().collect();
    assert_eq!(models.len(), 1, "{ledger}");
    assert_eq!(cost_str(&models[0]["cost_usd"]), billed(&fake, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_downgrade_is_not_undone_and_a_body_over_the_hold_limit_passes_unchecked() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let downgrade = budget(
        "downgrade",
        "  period: Daily\n  limit: {usd: \"10.00\"}\n  thresholds:\n    - {percent: 1, action: Downgrade, downgradeTo: {tier: oa-cheap}}",
    );
    let sc = Sidecar::start(&policy(&fake, TIERS, &downgrade));
    // Spend past 1% ($0.10) on the top tier: 12,000 output tokens of gpt-5 = $0.12.
    let big = r#"{"model":"top","max_completion_tokens":12000,"messages":[{"role":"user","content":"design"}]}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            big,
            &[("x-fake-output-tokens", "12000")],
        )
        .await;
    assert_untouched(&r, "gpt-5");
    // Now downgraded to gpt-5-mini, which refuses: the downgrade stands.
    let top = r#"{"model":"top","messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            top,
            &[
                ("x-fake-answer", "refusal"),
                ("x-fake-answer-model", "gpt-5-mini"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-model"), Some("gpt-5-mini"));
    assert_eq!(r.header("x-tokenwarden-adjusted"), Some("downgraded"));
    assert_eq!(r.header("x-tokenwarden-attempts"), Some("1"));
    assert_eq!(
        r.json()["choices"][0]["message"]["refusal"],
        "I'm sorry, but I can't help with that."
    );
    assert_eq!(upstream_models(&fake), ["gpt-5", "gpt-5-mini"]);

    // An answer over 1 MiB (200,000 words, its content-length says so) is
    // not held: it reaches the app as sent, unjudged.
    fake.clear_log();
    let long = r#"{"model":"claude-opus-4-1","max_tokens":200000,"messages":[{"role":"user","content":"the whole file"}]}"#;
    let r = sc
        .anthropic(
            long,
            &[
                ("x-fake-output-tokens", "200000"),
                ("x-fake-answer", "truncated"),
            ],
        )
        .await;
    assert_untouched(&r, "claude-haiku-4-5");
    assert!(r.text().len() > 1024 * 1024);
    assert_eq!(r.json()["stop_reason"], "model_context_window_exceeded");
    assert_eq!(upstream_models(&fake), ["claude-haiku-4-5"]);
    assert_eq!(escalations_metric(&sc, "truncated").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_without_a_length_are_held_up_to_the_limit_and_forwarded_whole_past_it() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = start(&fake, "");
    // Chunked, small: held and judged like any other.
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc
        .openai(
            "/v1/chat/completions",
            body,
            &[
                ("x-fake-chunked", "1"),
                ("x-fake-answer", "empty"),
                ("x-fake-answer-model", "gpt-5-mini"),
            ],
        )
        .await;
    assert_escalated(&r, "gpt-5", "empty");
    // The stronger answer is not held (no attempt is left after it): it
    // streams through the tap, so its cost is not known before its body.
    assert_eq!(r.header("x-tokenwarden-cost-usd"), None);
    assert_eq!(r.json()["choices"][0]["message"]["content"], {
        let words: Vec<String> = (0..40).map(|i| format!("tok{i}")).collect();
        words.join(" ")
    });
    assert_both_in_ledger(&sc, &fake).await;

    // Chunked, past 1 MiB: the hold stops there, and the app gets every
    // byte (the ones read while holding, then the rest), metered exactly.
    fake.clear_log();
    let long = r#"{"model":"claude-opus-4-1","max_tokens":200000,"messages":[{"role":"user","content":"the whole file"}]}"#;
    let r = sc
        .anthropic(
            long,
            &[
                ("x-fake-chunked", "1"),
                ("x-fake-output-tokens", "200000"),
                ("x-fake-answer", "truncated"),
            ],
        )
        .await;
    assert_untouched(&r, "claude-haiku-4-5");
    assert_eq!(r.header("content-length"), None);
    assert!(r.text().len() > 1024 * 1024);
    let v = r.json();
    assert_eq!(v["stop_reason"], "model_context_window_exceeded");
    assert_eq!(
        v["content"][0]["text"].as_str().unwrap().split(' ').count(),
        200_000
    );
    assert_eq!(upstream_models(&fake), ["claude-haiku-4-5"]);
    let row = sc.model_row("claude-haiku-4-5").await;
    let billed_usage = fake.log()[0].usage.clone().unwrap();
    assert_eq!(row["output_tokens"], billed_usage.output);
    assert_eq!(row["input_tokens"], billed_usage.input_total);
    assert_eq!(row["estimated_requests"], 0);
    assert_eq!(cost_str(&row["cost_usd"]), billed(&fake, 0));
}
