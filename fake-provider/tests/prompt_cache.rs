#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The fake provider's simulated prompt caches over real HTTP: Anthropic's breakpoints (lookback,
//! minimum length, TTLs and their split, validation) and OpenAI's automatic 128-token steps
//! (`prompt_cache_key`, retention), the knobs still winning, and writes only when billed.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokenwarden_fake_provider::{FakeConfig, FakeProvider, UsageReport};

const SONNET: &str = "claude-sonnet-4-5-20250929";

struct Resp {
    status: StatusCode,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The data of the SSE events, parsed.
    fn events(&self) -> Vec<Value> {
        String::from_utf8(self.body.to_vec())
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

async fn send(
    fake: &FakeProvider,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("{}{path}", fake.base_url()));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let bytes = body.map_or_else(Bytes::new, |v| Bytes::from(serde_json::to_vec(v).unwrap()));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(b.body(Full::new(bytes)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    // A cut response's body ends in an error: keep what arrived (nothing, here).
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Resp { status, body }
}

async fn messages(fake: &FakeProvider, body: &Value, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![
        ("x-api-key", "sk-fake-anthropic"),
        ("anthropic-version", "2023-06-01"),
    ];
    headers.extend_from_slice(extra);
    send(fake, Method::POST, "/v1/messages", &headers, Some(body)).await
}

async fn openai(fake: &FakeProvider, path: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![("authorization", "Bearer sk-fake-openai")];
    headers.extend_from_slice(extra);
    send(fake, Method::POST, path, &headers, Some(body)).await
}

async fn start() -> FakeProvider {
    FakeProvider::start(FakeConfig::default()).await.unwrap()
}

/// The fake's token count of a whole body (`ceil(bytes / 4)`).
fn body_tokens(body: &Value) -> u64 {
    (serde_json::to_vec(body).unwrap().len() as u64).div_ceil(4)
}

/// The bytes of a block exactly as they appear in the serialized body.
fn len(block: &Value) -> u64 {
    serde_json::to_vec(block).unwrap().len() as u64
}

fn text(s: &str) -> Value {
    json!({"type": "text", "text": s})
}

fn cached(s: &str) -> Value {
    json!({"type": "text", "text": s, "cache_control": {"type": "ephemeral"}})
}

fn cached_1h(s: &str) -> Value {
    json!({"type": "text", "text": s, "cache_control": {"type": "ephemeral", "ttl": "1h"}})
}

/// A distinct text of exactly `n` bytes.
fn filler(tag: char, n: usize) -> String {
    std::iter::repeat_n(tag, n).collect()
}

/// `(input_tokens, cache_read, cache_creation, 5m, 1h)` of an Anthropic usage object.
fn anthropic_usage(u: &Value) -> (u64, u64, u64, u64, u64) {
    let n = |v: &Value| v.as_u64().unwrap();
    (
        n(&u["input_tokens"]),
        n(&u["cache_read_input_tokens"]),
        n(&u["cache_creation_input_tokens"]),
        n(&u["cache_creation"]["ephemeral_5m_input_tokens"]),
        n(&u["cache_creation"]["ephemeral_1h_input_tokens"]),
    )
}

fn last_usage(fake: &FakeProvider) -> UsageReport {
    fake.log().last().unwrap().usage.clone().unwrap()
}

// ---------------------------------------------------------------- Anthropic

#[tokio::test]
async fn anthropic_breakpoint_writes_then_reads_json_and_sse() {
    let fake = start().await;
    let system = cached(&filler('s', 6000));
    let body = json!({
        "model": SONNET,
        "max_tokens": 10,
        "system": [system],
        "messages": [{"role": "user", "content": "What is in the document?"}]
    });
    let t = body_tokens(&body);
    let prefix = len(&system) / 4;
    assert!(prefix >= 1024);

    let first = messages(&fake, &body, &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        anthropic_usage(&first.json()["usage"]),
        (t - prefix, 0, prefix, prefix, 0)
    );
    let u = last_usage(&fake);
    assert_eq!(
        (u.input_total, u.cache_read, u.cache_write, u.cache_write_1h),
        (t, 0, prefix, 0)
    );

    // The same prefix again: read, nothing written.
    let second = messages(&fake, &body, &[]).await;
    assert_eq!(
        anthropic_usage(&second.json()["usage"]),
        (t - prefix, prefix, 0, 0, 0)
    );

    // Streams report the same numbers in message_start.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let ts = body_tokens(&streamed);
    let events = messages(&fake, &streamed, &[]).await.events();
    assert_eq!(events[0]["type"], "message_start");
    assert_eq!(
        anthropic_usage(&events[0]["message"]["usage"]),
        (ts - prefix, prefix, 0, 0, 0)
    );

    let totals = &fake.usage_totals()[SONNET];
    assert_eq!(totals.requests, 3);
    assert_eq!(totals.cache_read, 2 * prefix);
    assert_eq!(totals.cache_write, prefix);
    assert_eq!(totals.input_total, 2 * t + ts);

    // A different model has its own cache.
    let mut other = body.clone();
    other["model"] = json!("claude-opus-4-1-20250805");
    let v = messages(&fake, &other, &[]).await.json();
    assert_eq!(anthropic_usage(&v["usage"]).1, 0);
}

#[tokio::test]
async fn anthropic_multi_turn_reuse_through_the_lookback() {
    let fake = start().await;
    let system = cached(&filler('s', 5000));
    let q1 = filler('a', 800);
    let turn1 = json!({
        "model": SONNET,
        "max_tokens": 10,
        "system": [system],
        "messages": [{"role": "user", "content": [cached(&q1)]}]
    });
    let v = messages(&fake, &turn1, &[]).await.json();
    let sys = len(&system);
    let upto_q1 = (sys + len(&cached(&q1))) / 4;
    // Two segments, both 5-minute: the system, then the first question.
    assert_eq!(
        anthropic_usage(&v["usage"]),
        (body_tokens(&turn1) - upto_q1, 0, upto_q1, upto_q1, 0)
    );

    // The next turn moves the breakpoint to its last block: the entry written at the first
    // question (2 blocks before it) is found by the lookback. The question's block no longer
    // carries cache_control, and is still the same content.
    let answer = text(&filler('b', 400));
    let q2 = cached(&filler('c', 400));
    let turn2 = json!({
        "model": SONNET,
        "max_tokens": 10,
        "system": [system],
        "messages": [
            {"role": "user", "content": [text(&q1)]},
            {"role": "assistant", "content": [answer]},
            {"role": "user", "content": [q2]}
        ]
    });
    let read = (sys + len(&text(&q1))) / 4;
    let end = (sys + len(&text(&q1)) + len(&answer) + len(&q2)) / 4;
    let v = messages(&fake, &turn2, &[]).await.json();
    assert_eq!(
        anthropic_usage(&v["usage"]),
        (body_tokens(&turn2) - end, read, end - read, end - read, 0)
    );

    // A different role is different content: only the system is read.
    let mut as_assistant = turn2.clone();
    as_assistant["messages"][0]["role"] = json!("assistant");
    let v = messages(&fake, &as_assistant, &[]).await.json();
    assert_eq!(anthropic_usage(&v["usage"]).1, sys / 4);
}

#[tokio::test]
async fn anthropic_lookback_stops_at_20_blocks() {
    let fake = start().await;
    let system = cached(&filler('s', 5000));
    let first = cached("turn one");
    let body1 = json!({
        "model": SONNET,
        "max_tokens": 10,
        "system": [system],
        "messages": [{"role": "user", "content": [first]}]
    });
    messages(&fake, &body1, &[]).await;

    // `gap` more blocks after the first turn's breakpoint, the last one marked.
    let body_with_gap = |gap: usize| {
        let mut content = vec![text("turn one")];
        content.extend((1..gap).map(|i| text(&format!("block {i:02}"))));
        content.push(cached("last"));
        json!({
            "model": SONNET,
            "max_tokens": 10,
            "system": [system],
            "messages": [{"role": "user", "content": content}]
        })
    };
    let sys = len(&system) / 4;
    let upto_first = (len(&system) + len(&text("turn one"))) / 4;
    // The marked block is 20 blocks after the entry: found.
    let v = messages(&fake, &body_with_gap(20), &[]).await.json();
    assert_eq!(anthropic_usage(&v["usage"]).1, upto_first);
    // 21 blocks after it: out of reach; only the system breakpoint's own entry is read.
    let v = messages(&fake, &body_with_gap(21), &[]).await.json();
    assert_eq!(anthropic_usage(&v["usage"]).1, sys);
}

#[tokio::test]
async fn anthropic_minimum_cacheable_length_per_model() {
    let fake = start().await;
    // About 2,000 tokens: above Sonnet 4.5's 1,024, below Haiku 4.5's 4,096.
    let system = cached(&filler('s', 8000));
    let prefix = len(&system) / 4;
    assert!((1024..4096).contains(&prefix));
    for (model, expected_write) in [
        ("claude-haiku-4-5-20251001", 0),
        ("claude-3-5-haiku-20241022", 0),
        (SONNET, prefix),
    ] {
        let body = json!({
            "model": model,
            "max_tokens": 10,
            "system": [system],
            "messages": [{"role": "user", "content": "hi"}]
        });
        let t = body_tokens(&body);
        let v = messages(&fake, &body, &[]).await.json();
        assert_eq!(
            anthropic_usage(&v["usage"]),
            (t - expected_write, 0, expected_write, expected_write, 0),
            "{model}"
        );
        // Nothing cached below the minimum, so nothing read either.
        let v = messages(&fake, &body, &[]).await.json();
        assert_eq!(anthropic_usage(&v["usage"]).1, expected_write, "{model}");
    }

    // Just below 1,024 tokens: no write, no error.
    let small = cached(&filler('x', 4000));
    assert!(len(&small) / 4 < 1024);
    let body = json!({"model": SONNET, "max_tokens": 10, "system": [small], "messages": [{"role": "user", "content": "hi"}]});
    let v = messages(&fake, &body, &[]).await.json();
    assert_eq!(anthropic_usage(&v["usage"]).2, 0);
}

#[tokio::test]
async fn anthropic_one_hour_writes_are_split_out() {
    let fake = start().await;
    let tool = json!({"name": "search", "description": filler('t', 4400), "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral", "ttl": "1h"}});
    let system = cached(&filler('s', 2000));
    let body = json!({
        "model": SONNET,
        "max_tokens": 10,
        "tools": [tool],
        "system": [system],
        "messages": [{"role": "user", "content": "hi"}]
    });
    let t = body_tokens(&body);
    let at_tool = len(&tool) / 4;
    let at_system = (len(&tool) + len(&system)) / 4;
    let v = messages(&fake, &body, &[]).await.json();
    assert_eq!(
        anthropic_usage(&v["usage"]),
        (t - at_system, 0, at_system, at_system - at_tool, at_tool)
    );
    let u = last_usage(&fake);
    assert_eq!((u.cache_write, u.cache_write_1h), (at_system, at_tool));
    assert_eq!(fake.usage_totals()[SONNET].cache_write_1h, at_tool);

    // The system changes: the 1-hour tools entry is read, the system written again.
    let mut changed = body.clone();
    changed["system"] = json!([cached(&filler('S', 2000))]);
    let v = messages(&fake, &changed, &[]).await.json();
    assert_eq!(
        anthropic_usage(&v["usage"]),
        (
            body_tokens(&changed) - at_system,
            at_tool,
            at_system - at_tool,
            at_system - at_tool,
            0
        )
    );
}

#[tokio::test]
async fn anthropic_top_level_cache_control_caches_up_to_the_last_block() {
    let fake = start().await;
    let body = json!({
        "model": SONNET,
        "max_tokens": 10,
        "cache_control": {"type": "ephemeral"},
        "system": filler('s', 5000),
        "messages": [{"role": "user", "content": "hello"}]
    });
    let all = (len(&json!(filler('s', 5000))) + len(&json!("hello"))) / 4;
    let v = messages(&fake, &body, &[]).await.json();
    assert_eq!(anthropic_usage(&v["usage"]).2, all);
    let v = messages(&fake, &body, &[]).await.json();
    assert_eq!(anthropic_usage(&v["usage"]).1, all);
}

#[tokio::test]
async fn anthropic_cache_control_validation() {
    let fake = start().await;
    let error = |r: &Resp| {
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let v = r.json();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        v["error"]["message"].as_str().unwrap().to_string()
    };
    let five = json!({
        "model": SONNET,
        "max_tokens": 10,
        "system": [cached("a"), cached("b")],
        "messages": [{"role": "user", "content": [cached("c"), cached("d"), cached("e")]}]
    });
    // A 400 like the real API's, before any fault.
    let r = messages(&fake, &five, &[("x-fake-fault", "503")]).await;
    assert_eq!(
        error(&r),
        "A maximum of 4 blocks with cache_control may be provided. Found 5."
    );

    let order = json!({
        "model": SONNET,
        "max_tokens": 10,
        "system": [cached("a")],
        "messages": [{"role": "user", "content": [text("b"), cached_1h("c")]}]
    });
    assert_eq!(
        error(&messages(&fake, &order, &[]).await),
        "messages.0.content.1.cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. Note that blocks are processed in the following order: `tools`, `system`, `messages`."
    );

    let bad_ttl = json!({
        "model": SONNET,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "2h"}}]}]
    });
    assert_eq!(
        error(&messages(&fake, &bad_ttl, &[]).await),
        "messages.0.content.0.cache_control.ttl: Input should be '5m' or '1h'"
    );

    // 1h before 5m, four breakpoints: fine.
    let ok = json!({
        "model": SONNET,
        "max_tokens": 10,
        "system": [cached_1h("a"), cached("b")],
        "messages": [{"role": "user", "content": [cached("c"), cached("d")]}]
    });
    assert_eq!(messages(&fake, &ok, &[]).await.status, StatusCode::OK);
    // Errors bill nothing.
    assert_eq!(fake.log().iter().filter(|l| l.usage.is_some()).count(), 1);
}

#[tokio::test]
async fn anthropic_entries_expire_and_reads_refresh_them() {
    let fake = FakeProvider::start(FakeConfig {
        cache_ttl_override: Some(Duration::from_millis(700)),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let system = cached_1h(&filler('s', 6000));
    let body = json!({
        "model": SONNET,
        "max_tokens": 10,
        "system": [system],
        "messages": [{"role": "user", "content": "hi"}]
    });
    let prefix = len(&system) / 4;
    let v = messages(&fake, &body, &[]).await.json();
    assert_eq!(anthropic_usage(&v["usage"]).4, prefix);
    // Used every 350 ms: each read refreshes the entry, so it outlives its TTL.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let v = messages(&fake, &body, &[]).await.json();
        assert_eq!(anthropic_usage(&v["usage"]).1, prefix);
    }
    // Unused for longer than the TTL: gone, written again (the 1-hour TTL was overridden too).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let v = messages(&fake, &body, &[]).await.json();
    assert_eq!(
        anthropic_usage(&v["usage"]),
        (body_tokens(&body) - prefix, 0, prefix, 0, prefix)
    );
}

#[tokio::test]
async fn knobs_win_and_only_billed_responses_write() {
    let fake = start().await;
    let body = json!({
        "model": SONNET,
        "max_tokens": 10,
        "system": [cached(&filler('s', 6000))],
        "messages": [{"role": "user", "content": "hi"}]
    });
    let t = body_tokens(&body);
    let prefix = len(&body["system"][0]) / 4;
    // The knobs give the numbers and leave the cache alone; so do errors and cut responses.
    let v = messages(&fake, &body, &[("x-fake-cache-write-tokens", "5")])
        .await
        .json();
    assert_eq!(anthropic_usage(&v["usage"]), (t - 5, 0, 5, 5, 0));
    let v = messages(&fake, &body, &[("x-fake-cached-tokens", "0")])
        .await
        .json();
    assert_eq!(anthropic_usage(&v["usage"]), (t, 0, 0, 0, 0));
    assert_eq!(
        messages(&fake, &body, &[("x-fake-fault", "529")])
            .await
            .status,
        StatusCode::from_u16(529).unwrap()
    );
    let _ = send(
        &fake,
        Method::POST,
        "/v1/messages",
        &[
            ("x-api-key", "sk-fake-anthropic"),
            ("anthropic-version", "2023-06-01"),
            ("x-fake-fault", "cut"),
        ],
        Some(&body),
    )
    .await;
    assert_eq!(fake.cache_entries(), 0);
    let v = messages(&fake, &body, &[]).await.json();
    assert_eq!(
        anthropic_usage(&v["usage"]),
        (t - prefix, 0, prefix, prefix, 0)
    );
    assert_eq!(fake.cache_entries(), 1);

    // DELETE /_fake/cache empties it.
    let r = send(&fake, Method::GET, "/_fake/cache", &[], None).await;
    assert_eq!(r.json(), json!({"entries": 1}));
    let r = send(&fake, Method::DELETE, "/_fake/cache", &[], None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let v = messages(&fake, &body, &[]).await.json();
    assert_eq!(anthropic_usage(&v["usage"]).1, 0);
}

#[tokio::test]
async fn the_cache_can_be_turned_off() {
    let fake = FakeProvider::start(FakeConfig {
        prompt_cache: false,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let body = json!({
        "model": SONNET,
        "max_tokens": 10,
        "system": [cached(&filler('s', 6000))],
        "messages": [{"role": "user", "content": "hi"}]
    });
    for _ in 0..2 {
        let v = messages(&fake, &body, &[]).await.json();
        assert_eq!(
            anthropic_usage(&v["usage"]),
            (body_tokens(&body), 0, 0, 0, 0)
        );
        let chat =
            json!({"model": "gpt-5", "messages": [{"role": "user", "content": filler('x', 8000)}]});
        let v = openai(&fake, "/v1/chat/completions", &chat, &[])
            .await
            .json();
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    }
    assert_eq!(fake.cache_entries(), 0);
}

// ---------------------------------------------------------------- OpenAI

fn chat(system: &str, question: &str) -> Value {
    json!({
        "model": "gpt-5",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question}
        ]
    })
}

fn cached_tokens(v: &Value) -> u64 {
    v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn openai_chat_hits_in_128_token_steps() {
    let fake = start().await;
    let system = filler('a', 5000);
    // messages[0] is 5,030 bytes; the two questions share `{"role":"user","content":"q` (27
    // bytes): 5,057 common bytes, 1,264 tokens, the largest step below is 1,152.
    let first = chat(&system, "q1");
    let v = openai(&fake, "/v1/chat/completions", &first, &[])
        .await
        .json();
    assert_eq!(cached_tokens(&v), 0);
    assert_eq!(v["usage"]["prompt_tokens"], body_tokens(&first));
    let second = chat(&system, "q2");
    let v = openai(&fake, "/v1/chat/completions", &second, &[])
        .await
        .json();
    assert_eq!(cached_tokens(&v), 1152);
    assert_eq!(v["usage"]["prompt_tokens"], body_tokens(&second));
    let u = last_usage(&fake);
    assert_eq!(
        (u.cache_read, u.cache_write, u.cache_write_1h),
        (1152, 0, 0)
    );

    // A longer shared prefix reads further, in steps.
    let long = chat(&filler('a', 5500), "question");
    openai(&fake, "/v1/chat/completions", &long, &[]).await;
    let mut stream = chat(&filler('a', 5500), "question");
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let events = openai(&fake, "/v1/chat/completions", &stream, &[])
        .await
        .events();
    let usage = events.iter().find(|e| e["usage"].is_object()).unwrap();
    // messages: 5,530 + 36 bytes, 1,391 tokens -> 1,280.
    assert_eq!(cached_tokens(usage), 1280);

    // Below 1,024 tokens nothing is cached.
    let small = chat(&filler('z', 3000), "q");
    openai(&fake, "/v1/chat/completions", &small, &[]).await;
    let v = openai(&fake, "/v1/chat/completions", &small, &[])
        .await
        .json();
    assert_eq!(cached_tokens(&v), 0);

    // The knob wins and leaves the cache alone.
    let v = openai(
        &fake,
        "/v1/chat/completions",
        &second,
        &[("x-fake-cached-tokens", "7")],
    )
    .await
    .json();
    assert_eq!(cached_tokens(&v), 7);
}

#[tokio::test]
async fn openai_prompt_cache_key_separates_caches() {
    let fake = start().await;
    let with_key = |key: Option<&str>| {
        let mut body = chat(&filler('k', 6000), "q");
        if let Some(k) = key {
            body["prompt_cache_key"] = json!(k);
        }
        body
    };
    let path = "/v1/chat/completions";
    let v = openai(&fake, path, &with_key(Some("team-a")), &[])
        .await
        .json();
    assert_eq!(cached_tokens(&v), 0);
    let v = openai(&fake, path, &with_key(Some("team-b")), &[])
        .await
        .json();
    assert_eq!(cached_tokens(&v), 0);
    let v = openai(&fake, path, &with_key(None), &[]).await.json();
    assert_eq!(cached_tokens(&v), 0);
    // The prompt (the messages: 6,030 + 29 bytes, 1,514 tokens) is the same every time; only
    // the key tells the entries apart. Each key (and no key) reads its own: 1,408.
    let v = openai(&fake, path, &with_key(Some("team-a")), &[])
        .await
        .json();
    assert_eq!(cached_tokens(&v), 1408);
    let v = openai(&fake, path, &with_key(None), &[]).await.json();
    assert_eq!(cached_tokens(&v), 1408);
}

#[tokio::test]
async fn openai_responses_cache_and_retention() {
    let fake = start().await;
    let instructions = filler('i', 6000);
    let body = |input: &str, retention: Option<&str>| {
        let mut b = json!({"model": "gpt-5", "instructions": instructions, "input": input});
        if let Some(r) = retention {
            b["prompt_cache_retention"] = json!(r);
        }
        b
    };
    let path = "/v1/responses";
    let r = openai(&fake, path, &body("hello", Some("24h")), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["usage"]["input_tokens_details"]["cached_tokens"],
        0
    );
    // instructions: 6,002 bytes, input "hello": 7 bytes: 1,502 tokens -> 1,408.
    let v = openai(&fake, path, &body("hello", Some("in_memory")), &[])
        .await
        .json();
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 1408);
    assert_eq!(
        v["usage"]["input_tokens"],
        body_tokens(&body("hello", Some("in_memory")))
    );

    let r = openai(&fake, path, &body("hello", Some("forever")), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e = &r.json()["error"];
    assert_eq!(
        e["message"],
        "Invalid value: 'forever'. Supported values are: 'in_memory' and '24h'."
    );
    assert_eq!(e["param"], "prompt_cache_retention");
    assert_eq!(e["code"], "invalid_value");
}

#[tokio::test]
async fn openai_entries_expire_with_the_override() {
    let fake = FakeProvider::start(FakeConfig {
        cache_ttl_override: Some(Duration::from_millis(300)),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let mut body = chat(&filler('e', 6000), "q");
    body["prompt_cache_retention"] = json!("24h");
    let path = "/v1/chat/completions";
    openai(&fake, path, &body, &[]).await;
    let v = openai(&fake, path, &body, &[]).await.json();
    assert!(cached_tokens(&v) >= 1024);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let v = openai(&fake, path, &body, &[]).await.json();
    assert_eq!(cached_tokens(&v), 0);
}

// ---------------------------------------------------------------- the binary's flags

/// Starts the binary with `args` and `env`, returning the child and its base URL.
async fn spawn_binary(args: &[&str], env: &[(&str, &str)]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-fake-provider"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line.strip_prefix("listening on ").unwrap().to_string();
    (child, format!("http://{addr}"))
}

/// `cached_tokens` of a chat completion sent to `base`.
async fn binary_cached(base: &str, body: &Value) -> u64 {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(
            Request::post(format!("{base}/v1/chat/completions"))
                .header("authorization", "Bearer sk-fake-openai")
                .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    cached_tokens(&v)
}

#[tokio::test]
async fn binary_cache_flags() {
    let body = chat(&filler('b', 6000), "q");
    let (mut child, base) = spawn_binary(&["--cache-ttl-ms", "300"], &[]).await;
    assert_eq!(binary_cached(&base, &body).await, 0);
    assert_eq!(binary_cached(&base, &body).await, 1408);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(binary_cached(&base, &body).await, 0);
    child.kill().await.unwrap();

    let (mut child, base) = spawn_binary(&[], &[("FAKE_PROVIDER_NO_PROMPT_CACHE", "true")]).await;
    assert_eq!(binary_cached(&base, &body).await, 0);
    assert_eq!(binary_cached(&base, &body).await, 0);
    child.kill().await.unwrap();
}
