#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The fake provider over real HTTP on 127.0.0.1.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokenwarden_fake_provider::{FakeConfig, FakeProvider, LoggedRequest, ReportedUsage};

const OPENAI_KEY: &str = "sk-fake-openai";
const ANTHROPIC_KEY: &str = "sk-fake-anthropic";

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

fn request(
    fake: &FakeProvider,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("{}{path}", fake.base_url()));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(v).unwrap())
        }
        None => Bytes::new(),
    };
    b.body(Full::new(body)).unwrap()
}

async fn send(
    fake: &FakeProvider,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Resp {
    let resp = client()
        .request(request(fake, method, path, headers, body))
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

/// POST with the right OpenAI key plus `extra` headers.
async fn openai(fake: &FakeProvider, path: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
    let auth = format!("Bearer {OPENAI_KEY}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    send(fake, Method::POST, path, &headers, Some(body)).await
}

/// POST with the right Anthropic key and version plus `extra` headers.
async fn anthropic(fake: &FakeProvider, path: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![
        ("x-api-key", ANTHROPIC_KEY),
        ("anthropic-version", "2023-06-01"),
    ];
    headers.extend_from_slice(extra);
    send(fake, Method::POST, path, &headers, Some(body)).await
}

/// The token count the fake derives from a JSON body (as serialized by `request`).
fn tokens(body: &Value) -> u64 {
    (serde_json::to_vec(body).unwrap().len() as u64).div_ceil(4)
}

fn words(n: u64) -> String {
    (0..n)
        .map(|i| format!("tok{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses an SSE body into (event name, data) pairs.
fn sse(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (event, data)
        })
        .collect()
}

fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-5-mini",
        "messages": [{"role": "user", "content": "Say hello to the fake provider, please."}],
        "stream": stream
    })
}

fn messages_body(stream: bool) -> Value {
    json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
        "stream": stream
    })
}

async fn start() -> FakeProvider {
    FakeProvider::start(FakeConfig::default()).await.unwrap()
}

// ---------------------------------------------------------------- OpenAI chat

#[tokio::test]
async fn chat_completion_shape_and_usage() {
    let fake = start().await;
    let body = chat_body(false);
    let r = openai(&fake, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
    let v = r.json();
    let p = tokens(&body);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["model"], "gpt-5-mini");
    assert_eq!(v["service_tier"], "default");
    assert!(v["system_fingerprint"].as_str().unwrap().starts_with("fp_"));
    assert_eq!(
        v["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": words(40), "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }])
    );
    assert_eq!(
        v["usage"],
        json!({
            "prompt_tokens": p,
            "completion_tokens": 40,
            "total_tokens": p + 40,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
            }
        })
    );
    // Prompt tokens never exceed the body bytes.
    assert!(p <= serde_json::to_vec(&body).unwrap().len() as u64);
}

#[tokio::test]
async fn chat_output_length_cap_cache_and_served_model() {
    let fake = start().await;
    // max_completion_tokens below the output length: truncated.
    let mut body = chat_body(false);
    body["max_completion_tokens"] = json!(5);
    let v = openai(&fake, "/v1/chat/completions", &body, &[])
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["choices"][0]["message"]["content"], words(5));
    assert_eq!(v["usage"]["completion_tokens"], 5);

    // Legacy max_tokens works too; the header sets the output length.
    let mut body = chat_body(false);
    body["max_tokens"] = json!(100);
    let v = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[
            ("x-fake-output-tokens", "3"),
            ("x-fake-cached-tokens", "7"),
            ("x-fake-served-model", "gpt-5-mini-2025-08-07"),
        ],
    )
    .await
    .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 tok2");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["prompt_tokens"], tokens(&body));
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 7);
    assert_eq!(v["model"], "gpt-5-mini-2025-08-07");

    // Cached tokens never exceed the prompt.
    let body = chat_body(false);
    let v = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-cached-tokens", "100000")],
    )
    .await
    .json();
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"],
        tokens(&body)
    );

    let totals = fake.usage_totals();
    assert_eq!(totals["gpt-5-mini"].requests, 2);
    assert_eq!(totals["gpt-5-mini-2025-08-07"].cache_read, 7);
    assert_eq!(totals["gpt-5-mini-2025-08-07"].output, 3);
}

#[tokio::test]
async fn chat_stream_without_include_usage() {
    let fake = start().await;
    let body = chat_body(true);
    let r = openai(&fake, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse(&r.text());
    assert_eq!(events.last().unwrap(), &(None, "[DONE]".to_string()));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(e, d)| {
            assert!(e.is_none());
            serde_json::from_str(d).unwrap()
        })
        .collect();
    // role chunk + 8 content deltas + finish chunk
    assert_eq!(chunks.len(), 10);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-5-mini");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert!(
            c.get("usage").is_none(),
            "no usage field without include_usage: {c}"
        );
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..9]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, words(40));
    assert_eq!(chunks[9]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[9]["choices"][0]["delta"], json!({}));

    // Billed, though the client could not see it.
    let log = fake.log();
    assert_eq!(log.len(), 1);
    assert!(log[0].stream);
    assert!(!log[0].usage_in_body);
    assert_eq!(log[0].usage.as_ref().unwrap().output, 40);
    assert_eq!(fake.usage_totals()["gpt-5-mini"].hidden_usage_requests, 1);
}

#[tokio::test]
async fn chat_stream_with_include_usage() {
    let fake = start().await;
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    body["max_tokens"] = json!(6);
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-chunks", "4"), ("x-fake-cached-tokens", "3")],
    )
    .await;
    let events = sse(&r.text());
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    // role + 4 deltas + finish + usage chunk
    assert_eq!(chunks.len(), 7);
    for c in &chunks[..6] {
        assert_eq!(c["usage"], Value::Null);
        assert!(c.get("usage").is_some(), "every chunk carries usage: null");
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
    let text: String = chunks[1..5]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, words(6));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    let last = &chunks[6];
    assert_eq!(last["choices"], json!([]));
    let p = tokens(&body);
    assert_eq!(last["usage"]["prompt_tokens"], p);
    assert_eq!(last["usage"]["completion_tokens"], 6);
    assert_eq!(last["usage"]["total_tokens"], p + 6);
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 3);

    let log = fake.log();
    assert!(log[0].usage_in_body);
    assert_eq!(fake.usage_totals()["gpt-5-mini"].hidden_usage_requests, 0);
}

#[tokio::test]
async fn chat_rejects_stream_options_without_stream_and_bad_json() {
    let fake = start().await;
    let mut body = chat_body(false);
    body["stream_options"] = json!({"include_usage": true});
    let r = openai(&fake, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "stream_options");

    let r = openai(&fake, "/v1/chat/completions", &json!({"messages": []}), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["param"], "model");

    let auth = format!("Bearer {OPENAI_KEY}");
    let resp = client()
        .request(
            Request::post(format!("{}/v1/chat/completions", fake.base_url()))
                .header("authorization", auth)
                .body(Full::new(Bytes::from_static(b"{not json")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let r = openai(
        &fake,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-fake-output-tokens", "many")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-fake-output-tokens")
    );
}

// ---------------------------------------------------------------- OpenAI responses

#[tokio::test]
async fn responses_non_stream() {
    let fake = start().await;
    let body = json!({"model": "gpt-5", "input": "Tell me a joke.", "max_output_tokens": 500});
    let r = openai(
        &fake,
        "/v1/responses",
        &body,
        &[("x-fake-cached-tokens", "2")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let p = tokens(&body);
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-5");
    assert_eq!(v["incomplete_details"], Value::Null);
    let output = v["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["type"], "message");
    assert_eq!(output[0]["role"], "assistant");
    assert_eq!(output[0]["status"], "completed");
    assert_eq!(output[0]["content"][0]["type"], "output_text");
    assert_eq!(output[0]["content"][0]["text"], words(40));
    assert_eq!(
        v["usage"],
        json!({
            "input_tokens": p,
            "input_tokens_details": {"cached_tokens": 2},
            "output_tokens": 40,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": p + 40
        })
    );

    // Truncated by max_output_tokens: incomplete, like the real API.
    let body = json!({"model": "gpt-5", "input": "Tell me a joke.", "max_output_tokens": 16});
    let v = openai(&fake, "/v1/responses", &body, &[]).await.json();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["usage"]["output_tokens"], 16);
}

#[tokio::test]
async fn responses_stream_events() {
    let fake = start().await;
    let body = json!({"model": "gpt-5", "input": "Tell me a joke.", "stream": true});
    let r = openai(&fake, "/v1/responses", &body, &[("x-fake-chunks", "3")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text();
    assert!(!text.contains("[DONE]"));
    let events = sse(&text);
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for (i, (d, kind)) in data.iter().zip(&kinds).enumerate() {
        assert_eq!(d["type"], *kind);
        assert_eq!(d["sequence_number"], i as u64);
    }
    assert_eq!(data[0]["response"]["status"], "in_progress");
    assert_eq!(data[0]["response"]["usage"], Value::Null);
    let deltas: String = data[4..7]
        .iter()
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, words(40));
    assert_eq!(data[7]["text"], words(40));
    let done = &data[10]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], words(40));
    assert_eq!(done["usage"]["input_tokens"], tokens(&body));
    assert_eq!(done["usage"]["output_tokens"], 40);

    // Capped: the final event is response.incomplete.
    let body = json!({"model": "gpt-5", "input": "x", "stream": true, "max_output_tokens": 4});
    let events = sse(&openai(&fake, "/v1/responses", &body, &[]).await.text());
    let (kind, data) = events.last().unwrap();
    assert_eq!(kind.as_deref(), Some("response.incomplete"));
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["response"]["usage"]["output_tokens"], 4);
    assert_eq!(
        data["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
}

// ---------------------------------------------------------------- embeddings, models

#[tokio::test]
async fn embeddings_and_models() {
    let fake = start().await;
    let body = json!({"model": "text-embedding-3-small", "input": ["hello world", "goodbye"]});
    let v = openai(&fake, "/v1/embeddings", &body, &[]).await.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    let p = tokens(&body);
    assert_eq!(v["usage"], json!({"prompt_tokens": p, "total_tokens": p}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"].as_array().unwrap().len(), 8);
    }

    // A single string; the same text embeds the same.
    let one = json!({"model": "text-embedding-3-small", "input": "hello world"});
    let v1 = openai(&fake, "/v1/embeddings", &one, &[]).await.json();
    assert_eq!(v1["data"].as_array().unwrap().len(), 1);
    assert_eq!(v1["data"][0]["embedding"], data[0]["embedding"]);

    // base64 (the OpenAI SDKs' default) and dimensions.
    let b64 = json!({"model": "text-embedding-3-small", "input": "hi", "encoding_format": "base64", "dimensions": 4});
    let v = openai(&fake, "/v1/embeddings", &b64, &[]).await.json();
    let s = v["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(s.len(), 24); // 16 bytes -> 24 base64 chars

    let empty = json!({"model": "text-embedding-3-small", "input": []});
    assert_eq!(
        openai(&fake, "/v1/embeddings", &empty, &[]).await.status,
        StatusCode::BAD_REQUEST
    );

    let auth = format!("Bearer {OPENAI_KEY}");
    let r = send(
        &fake,
        Method::GET,
        "/v1/models",
        &[("authorization", &auth)],
        None,
    )
    .await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-5" && m["object"] == "model" && m["owned_by"] == "openai")
    );
    let r = send(
        &fake,
        Method::GET,
        "/v1/models",
        &[
            ("x-api-key", ANTHROPIC_KEY),
            ("anthropic-version", "2023-06-01"),
        ],
        None,
    )
    .await;
    let v = r.json();
    assert_eq!(v["has_more"], false);
    assert_eq!(v["data"][0]["type"], "model");

    let r = send(
        &fake,
        Method::GET,
        "/v1/nope",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

// ---------------------------------------------------------------- Anthropic

#[tokio::test]
async fn anthropic_message_shape_and_cache_usage() {
    let fake = start().await;
    let body = messages_body(false);
    let r = anthropic(
        &fake,
        "/v1/messages",
        &body,
        &[
            ("x-fake-cached-tokens", "5"),
            ("x-fake-cache-write-tokens", "3"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("request-id").unwrap().starts_with("req_"));
    let v = r.json();
    let t = tokens(&body);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-haiku-4-5");
    assert_eq!(v["content"], json!([{"type": "text", "text": words(40)}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["usage"]["input_tokens"], t - 8);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 5);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 3);
    assert_eq!(v["usage"]["output_tokens"], 40);

    let log = fake.log();
    let u = log[0].usage.as_ref().unwrap();
    assert_eq!(
        (u.input_total, u.cache_read, u.cache_write, u.output),
        (t, 5, 3, 40)
    );

    // Truncated; cache tokens beyond the total floor input_tokens at 0.
    let mut body = messages_body(false);
    body["max_tokens"] = json!(2);
    let v = anthropic(
        &fake,
        "/v1/messages",
        &body,
        &[("x-fake-cached-tokens", "99999")],
    )
    .await
    .json();
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 2);
    assert_eq!(v["usage"]["input_tokens"], 0);
    assert_eq!(v["content"][0]["text"], "tok0 tok1");

    let r = anthropic(
        &fake,
        "/v1/messages/count_tokens",
        &json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let ct = r.json();
    assert!(ct["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(fake.log().last().unwrap().usage, None); // free
}

#[tokio::test]
async fn anthropic_stream_events() {
    let fake = start().await;
    let body = messages_body(true);
    let r = anthropic(
        &fake,
        "/v1/messages",
        &body,
        &[("x-fake-cached-tokens", "4"), ("x-fake-chunks", "5")],
    )
    .await;
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse(&r.text());
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 5]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(kinds, expected);
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for (d, kind) in data.iter().zip(&kinds) {
        assert_eq!(d["type"], *kind);
    }
    let t = tokens(&body);
    let start = &data[0]["message"];
    assert_eq!(start["model"], "claude-haiku-4-5");
    assert_eq!(start["usage"]["input_tokens"], t - 4);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 4);
    assert_eq!(start["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(start["usage"]["output_tokens"], 1);
    let text: String = data[3..8]
        .iter()
        .map(|d| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, words(40));
    assert_eq!(data[9]["delta"]["stop_reason"], "end_turn");
    assert_eq!(data[9]["usage"]["output_tokens"], 40);
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn auth_failures_in_provider_shapes() {
    let fake = start().await;
    let body = chat_body(false);
    let r = send(
        &fake,
        Method::POST,
        "/v1/chat/completions",
        &[],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let r = send(
        &fake,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-the-apps-placeholder")],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let v = r.json();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(
        !v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sk-the-apps-placeholder")
    );

    // The Anthropic key is not an OpenAI key.
    let r = send(
        &fake,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {ANTHROPIC_KEY}"))],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let body = messages_body(false);
    let r = send(
        &fake,
        Method::POST,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    let r = send(
        &fake,
        Method::POST,
        "/v1/messages",
        &[("x-api-key", "wrong"), ("anthropic-version", "2023-06-01")],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["type"], "authentication_error");

    let r = send(
        &fake,
        Method::POST,
        "/v1/messages",
        &[("x-api-key", ANTHROPIC_KEY)],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version")
    );

    // max_tokens is required by the Messages API.
    let mut no_max = messages_body(false);
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let r = anthropic(&fake, "/v1/messages", &no_max, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );

    // Custom keys.
    let custom = FakeProvider::start(FakeConfig {
        openai_key: "sk-real-looking".into(),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let r = openai(&custom, "/v1/chat/completions", &chat_body(false), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(
        &custom,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-real-looking")],
        Some(&chat_body(false)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let log = fake.log();
    assert!(log.iter().all(|l| l.usage.is_none()));
    assert_eq!(log[0].status, Some(401));
    assert!(fake.usage_totals().is_empty());
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn status_faults_in_both_shapes() {
    let fake = start().await;
    for code in [429u16, 500, 502, 503, 529] {
        let c = code.to_string();
        let r = openai(
            &fake,
            "/v1/chat/completions",
            &chat_body(false),
            &[("x-fake-fault", &c)],
        )
        .await;
        assert_eq!(r.status.as_u16(), code);
        let v = r.json();
        assert!(v["error"]["message"].is_string());
        assert!(v["error"].get("param").is_some());
        let expected_type = if code == 429 {
            "requests"
        } else {
            "server_error"
        };
        assert_eq!(v["error"]["type"], expected_type);
        assert_eq!(
            r.header("retry-after"),
            if code == 429 { Some("1") } else { None }
        );

        let r = anthropic(
            &fake,
            "/v1/messages",
            &messages_body(true),
            &[("x-fake-fault", &c)],
        )
        .await;
        assert_eq!(r.status.as_u16(), code);
        let v = r.json();
        assert_eq!(v["type"], "error");
        let expected = match code {
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        assert_eq!(v["error"]["type"], expected);
    }
    let log = fake.log();
    assert_eq!(log.len(), 10);
    assert_eq!(log[0].fault.as_deref(), Some("429"));
    assert!(log.iter().all(|l| l.usage.is_none()));
    assert!(fake.usage_totals().is_empty());

    let r = openai(
        &fake,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-fake-fault", "teapot")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn garbage_fault() {
    let fake = start().await;
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-fake-fault", "garbage")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(r.text(), "<html>oops");
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
}

/// Sends a request and reads the body until the connection drops; returns what arrived.
async fn read_until_cut(fake: &FakeProvider, req: Request<Full<Bytes>>) -> (StatusCode, String) {
    let _ = fake;
    let resp = client().request(req).await.unwrap();
    let status = resp.status();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => break,
            None => panic!(
                "the body ended cleanly; expected a cut: {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (status, String::from_utf8(got).unwrap())
}

#[tokio::test]
async fn cut_fault_streams_and_bodies() {
    let fake = start().await;
    let auth = format!("Bearer {OPENAI_KEY}");

    // OpenAI chat stream with include_usage: about half the chunks, no usage chunk, no [DONE].
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let req = request(
        &fake,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", &auth), ("x-fake-fault", "cut")],
        Some(&body),
    );
    let (status, text) = read_until_cut(&fake, req).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse(&text);
    // 8 deltas + role + finish + usage + [DONE] = 12 -> 6
    assert_eq!(events.len(), 6);
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("\"choices\":[]"));

    // Anthropic stream: message_start arrives, message_delta never does.
    let req = request(
        &fake,
        Method::POST,
        "/v1/messages",
        &[
            ("x-api-key", ANTHROPIC_KEY),
            ("anthropic-version", "2023-06-01"),
            ("x-fake-fault", "cut"),
        ],
        Some(&messages_body(true)),
    );
    let (_, text) = read_until_cut(&fake, req).await;
    assert!(text.contains("message_start"));
    assert!(text.contains("content_block_delta"));
    assert!(!text.contains("message_delta"));

    // Responses stream: never response.completed.
    let req = request(
        &fake,
        Method::POST,
        "/v1/responses",
        &[("authorization", &auth), ("x-fake-fault", "cut")],
        Some(&json!({"model": "gpt-5", "input": "hi", "stream": true})),
    );
    let (_, text) = read_until_cut(&fake, req).await;
    assert!(text.contains("response.created"));
    assert!(!text.contains("response.completed"));

    // Non-stream: half of the JSON body.
    let req = request(
        &fake,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", &auth), ("x-fake-fault", "cut")],
        Some(&chat_body(false)),
    );
    let (status, text) = read_until_cut(&fake, req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("{\"id\":\"chatcmpl-"));
    assert!(serde_json::from_str::<Value>(&text).is_err());

    let log = fake.log();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|l| l.cut && l.usage.is_none()));
    let totals = fake.usage_totals();
    assert_eq!(
        totals["gpt-5-mini"],
        ReportedUsage {
            cut_requests: 2,
            ..ReportedUsage::default()
        }
    );
    assert_eq!(totals["claude-haiku-4-5"].cut_requests, 1);
    assert_eq!(totals["gpt-5"].cut_requests, 1);
    assert_eq!(totals["gpt-5"].requests, 0);
}

#[tokio::test]
async fn slow_head_and_close_faults() {
    let fake = start().await;
    let started = Instant::now();
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-fake-fault", "slow-head:300")],
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["usage"]["completion_tokens"], 40);

    let auth = format!("Bearer {OPENAI_KEY}");
    let req = request(
        &fake,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", &auth), ("x-fake-fault", "close")],
        Some(&chat_body(false)),
    );
    let err = client()
        .request(req)
        .await
        .expect_err("no response expected");
    assert!(!err.is_connect(), "connected, then closed: {err:?}");

    let log = fake.log();
    assert_eq!(log[0].fault.as_deref(), Some("slow-head:300"));
    assert!(log[0].usage.is_some());
    assert_eq!(log[1].status, None);
    assert_eq!(log[1].fault.as_deref(), Some("close"));
}

#[tokio::test]
async fn fault_times_per_key() {
    let fake = start().await;
    let h = [
        ("x-fake-fault", "503"),
        ("x-fake-fault-times", "2"),
        ("x-fake-key", "retry-test-1"),
    ];
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            openai(&fake, "/v1/chat/completions", &chat_body(false), &h)
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [503, 503, 200, 200]);

    // Another key has its own count.
    let h2 = [
        ("x-fake-fault", "429"),
        ("x-fake-fault-times", "1"),
        ("x-fake-key", "retry-test-2"),
    ];
    let a = openai(&fake, "/v1/chat/completions", &chat_body(false), &h2).await;
    let b = openai(&fake, "/v1/chat/completions", &chat_body(false), &h2).await;
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (429, 200));

    let log = fake.log();
    let faults: Vec<Option<&str>> = log.iter().map(|l| l.fault.as_deref()).collect();
    assert_eq!(
        faults,
        [Some("503"), Some("503"), None, None, Some("429"), None]
    );
    assert_eq!(fake.usage_totals()["gpt-5-mini"].requests, 3);
}

#[tokio::test]
async fn model_level_faults() {
    let fake = start().await;
    let fail = ("x-fake-fail-models", "gpt-5-mini=503,claude-haiku-4-5=429");
    let r = openai(&fake, "/v1/chat/completions", &chat_body(false), &[fail]).await;
    assert_eq!(r.status.as_u16(), 503);
    let mut other = chat_body(false);
    other["model"] = json!("gpt-5");
    let r = openai(&fake, "/v1/chat/completions", &other, &[fail]).await;
    assert_eq!(r.status.as_u16(), 200);
    let r = anthropic(&fake, "/v1/messages", &messages_body(false), &[fail]).await;
    assert_eq!(r.status.as_u16(), 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");

    // Configured at start, gated by fault-times like header faults.
    let cfg_fake = FakeProvider::start(FakeConfig {
        fail_models: "gpt-5-mini=500".into(),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let r = openai(&cfg_fake, "/v1/chat/completions", &chat_body(false), &[]).await;
    assert_eq!(r.status.as_u16(), 500);
    let h = [("x-fake-fault-times", "1"), ("x-fake-key", "k")];
    let a = openai(&cfg_fake, "/v1/chat/completions", &chat_body(false), &h).await;
    let b = openai(&cfg_fake, "/v1/chat/completions", &chat_body(false), &h).await;
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (500, 200));

    assert!(
        FakeProvider::start(FakeConfig {
            fail_models: "nonsense".into(),
            ..FakeConfig::default()
        })
        .await
        .is_err()
    );
}

// ---------------------------------------------------------------- pacing, h2c

#[tokio::test]
async fn paced_stream_deltas() {
    let fake = start().await;
    let auth = format!("Bearer {OPENAI_KEY}");
    let req = request(
        &fake,
        Method::POST,
        "/v1/chat/completions",
        &[
            ("authorization", &auth),
            ("x-fake-chunks", "4"),
            ("x-fake-chunk-delay-ms", "150"),
        ],
        Some(&chat_body(true)),
    );
    let started = Instant::now();
    let resp = client().request(req).await.unwrap();
    let mut body = resp.into_body();
    let mut arrivals = Vec::new(); // (ms, text so far)
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
            arrivals.push((started.elapsed(), text.clone()));
        }
    }
    let total = started.elapsed();
    assert!(
        total >= Duration::from_millis(450),
        "3 pauses of 150 ms: {total:?}"
    );
    let first_content = arrivals
        .iter()
        .find(|(_, t)| t.contains("\"content\":\"tok0"))
        .unwrap()
        .0;
    assert!(
        first_content < Duration::from_millis(150),
        "first delta at {first_content:?}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let fake = start().await;
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let auth = format!("Bearer {OPENAI_KEY}");
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = h2
        .request(request(
            &fake,
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &auth)],
            Some(&body),
        ))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(text.contains("\"completion_tokens\":40"));
}

// ---------------------------------------------------------------- log and usage

#[tokio::test]
async fn log_and_usage_over_http() {
    let fake = start().await;
    let body = chat_body(false);
    openai(
        &fake,
        "/v1/chat/completions?trace=1",
        &body,
        &[("x-app-header", "kept")],
    )
    .await;
    anthropic(&fake, "/v1/messages", &messages_body(false), &[]).await;
    anthropic(
        &fake,
        "/v1/messages",
        &messages_body(false),
        &[("x-fake-cache-write-tokens", "2")],
    )
    .await;

    let log = fake.log();
    assert_eq!(log.len(), 3);
    let first = &log[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.query.as_deref(), Some("trace=1"));
    assert_eq!(first.api, "openai.chat");
    assert_eq!(first.model.as_deref(), Some("gpt-5-mini"));
    assert_eq!(first.header("authorization"), Some("Bearer sk-fake-openai"));
    assert_eq!(first.header("x-app-header"), Some("kept"));
    assert_eq!(first.body_json().unwrap(), body);
    assert_eq!(first.status, Some(200));
    assert!(!first.cut);
    let u = first.usage.as_ref().unwrap();
    assert_eq!(u.model, "gpt-5-mini");
    assert_eq!(u.input_total, tokens(&body));
    assert_eq!(u.output, 40);

    // Over HTTP: the same log.
    let r = send(&fake, Method::GET, "/_fake/log", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let over_http: Vec<LoggedRequest> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(over_http, log);

    let r = send(&fake, Method::GET, "/_fake/usage", &[], None).await;
    let usage = r.json();
    let t = tokens(&messages_body(false));
    assert_eq!(usage["claude-haiku-4-5"]["requests"], 2);
    assert_eq!(usage["claude-haiku-4-5"]["input_total"], 2 * t);
    assert_eq!(usage["claude-haiku-4-5"]["cache_write"], 2);
    assert_eq!(usage["claude-haiku-4-5"]["output"], 80);
    assert_eq!(usage["gpt-5-mini"]["requests"], 1);
    assert_eq!(usage, serde_json::to_value(fake.usage_totals()).unwrap());

    let r = send(&fake, Method::DELETE, "/_fake/log", &[], None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(fake.log().is_empty());
    assert_eq!(
        fake.usage_totals().len(),
        2,
        "clearing the log keeps the totals"
    );
    send(&fake, Method::DELETE, "/_fake/usage", &[], None).await;
    assert!(fake.usage_totals().is_empty());

    openai(&fake, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(fake.log().len(), 1);
    fake.clear_log();
    assert!(fake.log().is_empty());
    fake.reset();
    assert!(fake.usage_totals().is_empty());
}

#[tokio::test]
async fn log_can_be_turned_off() {
    let fake = FakeProvider::start(FakeConfig {
        log: false,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    openai(&fake, "/v1/chat/completions", &chat_body(false), &[]).await;
    assert!(fake.log().is_empty());
    assert_eq!(fake.usage_totals()["gpt-5-mini"].requests, 1);
}

#[tokio::test]
async fn config_defaults_shape_output() {
    let fake = FakeProvider::start(FakeConfig {
        output_tokens: 3,
        chunks: 2,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let r = anthropic(&fake, "/v1/messages", &messages_body(true), &[]).await;
    let events = sse(&r.text());
    let deltas: Vec<Value> = events
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(deltas.len(), 2);
    assert_eq!(deltas[0]["delta"]["text"], "tok0");
    assert_eq!(deltas[1]["delta"]["text"], " tok1 tok2");
}

#[tokio::test]
async fn many_concurrent_requests_on_keep_alive() {
    let fake = FakeProvider::start(FakeConfig {
        log: false,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let c = client();
    let auth = format!("Bearer {OPENAI_KEY}");
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let req = request(
            &fake,
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &auth)],
            Some(&chat_body(false)),
        );
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let resp = c.request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.into_body().collect().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(fake.usage_totals()["gpt-5-mini"].requests, 200);
}

// ---------------------------------------------------------------- the binary

#[tokio::test]
async fn binary_prints_its_address_and_serves() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-fake-provider"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--output-tokens",
            "2",
            "--openai-key",
            "sk-bin",
        ])
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
    let addr = line.strip_prefix("listening on ").unwrap();
    assert!(addr.starts_with("127.0.0.1:"));

    let resp = client()
        .request(
            Request::post(format!("http://{addr}/v1/chat/completions"))
                .header("authorization", "Bearer sk-bin")
                .body(Full::new(Bytes::from(
                    serde_json::to_vec(&chat_body(false)).unwrap(),
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1");
    child.kill().await.unwrap();
}

// ---------------------------------------------------------------- chat `n`

#[tokio::test]
async fn chat_n_choices_are_billed_n_times() {
    let fake = start().await;
    let mut body = chat_body(false);
    body["n"] = json!(3);
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-output-tokens", "5")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i as u64);
        assert_eq!(c["message"]["content"], words(5));
        assert_eq!(c["finish_reason"], "stop");
    }
    let p = tokens(&body);
    assert_eq!(v["usage"]["completion_tokens"], 15);
    assert_eq!(v["usage"]["total_tokens"], p + 15);
    assert_eq!(fake.log()[0].usage.as_ref().unwrap().output, 15);

    // Capped per choice: O = min(max, N), billed O × n.
    let mut body = chat_body(false);
    body["n"] = json!(2);
    body["max_completion_tokens"] = json!(2);
    let v = openai(&fake, "/v1/chat/completions", &body, &[])
        .await
        .json();
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["message"]["content"], "tok0 tok1");
    assert_eq!(v["choices"][1]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 4);

    // null means 1.
    let mut body = chat_body(false);
    body["n"] = Value::Null;
    let v = openai(&fake, "/v1/chat/completions", &body, &[])
        .await
        .json();
    assert_eq!(v["choices"].as_array().unwrap().len(), 1);
    assert_eq!(v["usage"]["completion_tokens"], 40);

    // Out of range or not an integer: OpenAI's 400 on param n.
    for (n, code) in [
        (json!(0), "integer_below_min_value"),
        (json!(-3), "integer_below_min_value"),
        (json!(129), "integer_above_max_value"),
        (json!(u64::MAX), "integer_above_max_value"),
        (json!("two"), "invalid_type"),
        (json!(1.5), "invalid_type"),
    ] {
        let mut body = chat_body(false);
        body["n"] = n.clone();
        let r = openai(&fake, "/v1/chat/completions", &body, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "n = {n}");
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "n");
        assert_eq!(v["error"]["code"], code, "n = {n}");
        assert!(v["error"]["message"].as_str().unwrap().contains("'n'"));
    }
    let mut body = chat_body(false);
    body["n"] = json!(128);
    let v = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-output-tokens", "1")],
    )
    .await
    .json();
    assert_eq!(v["choices"].as_array().unwrap().len(), 128);
    assert_eq!(v["usage"]["completion_tokens"], 128);

    let totals = fake.usage_totals();
    assert_eq!(totals["gpt-5-mini"].requests, 4);
    assert_eq!(totals["gpt-5-mini"].output, 15 + 4 + 40 + 128);
}

#[tokio::test]
async fn chat_n_choices_stream() {
    let fake = start().await;
    let mut body = chat_body(true);
    body["n"] = json!(2);
    body["stream_options"] = json!({"include_usage": true});
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-output-tokens", "6"), ("x-fake-chunks", "3")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = sse(&r.text());
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    // 2 role chunks + 3 steps × 2 choices + 2 finish chunks + the usage chunk.
    assert_eq!(chunks.len(), 11);
    let indexes: Vec<u64> = chunks[..10]
        .iter()
        .map(|c| {
            let choices = c["choices"].as_array().unwrap();
            assert_eq!(choices.len(), 1, "one choice per chunk: {c}");
            choices[0]["index"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(indexes, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["delta"]["role"], "assistant");
    for index in 0..2u64 {
        let text: String = chunks[2..8]
            .iter()
            .filter(|c| c["choices"][0]["index"] == index)
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, words(6), "choice {index}");
    }
    assert_eq!(chunks[8]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[9]["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[10];
    assert_eq!(usage["choices"], json!([]));
    let p = tokens(&body);
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    assert_eq!(usage["usage"]["total_tokens"], p + 12);
    let log = fake.log();
    assert_eq!(log[0].usage.as_ref().unwrap().output, 12);
    assert!(log[0].usage_in_body);
}

// ---------------------------------------------------------------- extra input tokens

#[tokio::test]
async fn extra_input_tokens_are_billed_everywhere() {
    let fake = start().await;
    let body = chat_body(false);
    let v = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[
            ("x-fake-extra-input-tokens", "1000"),
            ("x-fake-cached-tokens", "7"),
        ],
    )
    .await
    .json();
    let p = tokens(&body) + 1000;
    assert_eq!(v["usage"]["prompt_tokens"], p);
    assert_eq!(v["usage"]["total_tokens"], p + 40);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 7);

    // Cached tokens may cover the invisible input too.
    let v = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[
            ("x-fake-extra-input-tokens", "1000"),
            ("x-fake-cached-tokens", "999999"),
        ],
    )
    .await
    .json();
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], p);

    let rbody =
        json!({"model": "gpt-5", "input": "hi", "previous_response_id": "resp_x", "stream": true});
    let r = openai(
        &fake,
        "/v1/responses",
        &rbody,
        &[("x-fake-extra-input-tokens", "500")],
    )
    .await;
    let events = sse(&r.text());
    let done: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(done["type"], "response.completed");
    assert_eq!(
        done["response"]["usage"]["input_tokens"],
        tokens(&rbody) + 500
    );
    assert_eq!(
        done["response"]["usage"]["total_tokens"],
        tokens(&rbody) + 540
    );

    let ebody = json!({"model": "text-embedding-3-small", "input": "hello"});
    let v = openai(
        &fake,
        "/v1/embeddings",
        &ebody,
        &[("x-fake-extra-input-tokens", "300")],
    )
    .await
    .json();
    let e = tokens(&ebody) + 300;
    assert_eq!(v["usage"], json!({"prompt_tokens": e, "total_tokens": e}));

    let mbody = messages_body(false);
    let v = anthropic(
        &fake,
        "/v1/messages",
        &mbody,
        &[
            ("x-fake-extra-input-tokens", "200"),
            ("x-fake-cached-tokens", "5"),
            ("x-fake-cache-write-tokens", "3"),
        ],
    )
    .await
    .json();
    let t = tokens(&mbody) + 200;
    assert_eq!(v["usage"]["input_tokens"], t - 8);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 5);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 3);

    // count_tokens counts what the body shows.
    let cbody =
        json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]});
    let v = anthropic(
        &fake,
        "/v1/messages/count_tokens",
        &cbody,
        &[("x-fake-extra-input-tokens", "200")],
    )
    .await
    .json();
    assert_eq!(v["input_tokens"], tokens(&cbody));

    let log = fake.log();
    let inputs: Vec<Option<u64>> = log
        .iter()
        .map(|l| l.usage.as_ref().map(|u| u.input_total))
        .collect();
    assert_eq!(
        inputs,
        [
            Some(p),
            Some(p),
            Some(tokens(&rbody) + 500),
            Some(e),
            Some(t),
            None
        ]
    );
    let totals = fake.usage_totals();
    assert_eq!(totals["gpt-5-mini"].input_total, 2 * p);
    assert_eq!(totals["claude-haiku-4-5"].input_total, t);

    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-extra-input-tokens", "-1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-fake-extra-input-tokens")
    );
}

// ---------------------------------------------------------------- stall, no-usage, echo-key

/// Sends a request and collects the body frames with their arrival time (since the head).
async fn timed_frames(
    req: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, Vec<(Duration, Bytes)>) {
    let resp = client().request(req).await.unwrap();
    let started = Instant::now();
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push((started.elapsed(), data));
        }
    }
    (status, headers, frames)
}

/// The bytes that arrived more than `gap` before the last frame, and all of them.
fn split_by_pause(frames: &[(Duration, Bytes)], gap: Duration) -> (Vec<u8>, Vec<u8>) {
    let last = frames.last().unwrap().0;
    let mut before = Vec::new();
    let mut all = Vec::new();
    for (t, data) in frames {
        if *t + gap < last {
            before.extend_from_slice(data);
        }
        all.extend_from_slice(data);
    }
    (before, all)
}

#[tokio::test]
async fn stall_fault_pauses_mid_body() {
    let fake = start().await;
    let auth = format!("Bearer {OPENAI_KEY}");

    // JSON: full content-length, the first half, a pause, the rest.
    let req = request(
        &fake,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", &auth), ("x-fake-fault", "stall:400")],
        Some(&chat_body(false)),
    );
    let (status, headers, frames) = timed_frames(req).await;
    assert_eq!(status, StatusCode::OK);
    let (before, all) = split_by_pause(&frames, Duration::from_millis(200));
    let len: usize = headers["content-length"].to_str().unwrap().parse().unwrap();
    assert_eq!(all.len(), len);
    assert_eq!(before.len(), len / 2, "half of the body before the pause");
    assert!(frames.last().unwrap().0 >= Duration::from_millis(400));
    let v: Value = serde_json::from_slice(&all).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 40);
    assert_eq!(v["choices"][0]["message"]["content"], words(40));

    // Stream: half of the 12 events, the pause, the other half.
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let req = request(
        &fake,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", &auth), ("x-fake-fault", "stall:400")],
        Some(&body),
    );
    let (status, headers, frames) = timed_frames(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("content-length").is_none());
    let (before, all) = split_by_pause(&frames, Duration::from_millis(200));
    let before = sse(std::str::from_utf8(&before).unwrap());
    let all = sse(std::str::from_utf8(&all).unwrap());
    assert_eq!(before.len(), 6);
    assert_eq!(all.len(), 12);
    assert_eq!(all.last().unwrap().1, "[DONE]");
    assert!(all[10].1.contains("\"completion_tokens\":40"));

    // Model-level syntax, Anthropic stream.
    let r = anthropic(
        &fake,
        "/v1/messages",
        &messages_body(true),
        &[("x-fake-fail-models", "claude-haiku-4-5=stall:50")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text()
            .ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    );

    let log = fake.log();
    let faults: Vec<Option<&str>> = log.iter().map(|l| l.fault.as_deref()).collect();
    assert_eq!(
        faults,
        [Some("stall:400"), Some("stall:400"), Some("stall:50")]
    );
    assert!(
        log.iter()
            .all(|l| l.usage.is_some() && l.usage_in_body && !l.cut)
    );
    let totals = fake.usage_totals();
    assert_eq!(totals["gpt-5-mini"].requests, 2);
    assert_eq!(totals["gpt-5-mini"].output, 80);
    assert_eq!(totals["claude-haiku-4-5"].output, 40);
    assert_eq!(totals["gpt-5-mini"].cut_requests, 0);
}

#[tokio::test]
async fn no_usage_fault_bills_but_hides_usage() {
    let fake = start().await;
    let nu = [("x-fake-fault", "no-usage")];

    let body = chat_body(false);
    let r = openai(&fake, "/v1/chat/completions", &body, &nu).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert!(v.get("usage").is_none(), "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], words(40));
    assert!(!r.text().contains("usage"));

    let mut sbody = chat_body(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let text = openai(&fake, "/v1/chat/completions", &sbody, &nu)
        .await
        .text();
    assert!(!text.contains("usage"), "{text}");
    assert!(!text.contains("\"choices\":[]"));
    let events = sse(&text);
    assert_eq!(events.len(), 11); // role + 8 deltas + finish + [DONE]
    assert_eq!(events.last().unwrap().1, "[DONE]");

    let rbody = json!({"model": "gpt-5", "input": "hi"});
    let v = openai(&fake, "/v1/responses", &rbody, &nu).await.json();
    assert!(v.get("usage").is_none());
    assert_eq!(v["status"], "completed");
    let mut rsbody = rbody.clone();
    rsbody["stream"] = json!(true);
    let text = openai(&fake, "/v1/responses", &rsbody, &nu).await.text();
    assert!(!text.contains("usage"));
    assert!(text.contains("event: response.completed"));

    let ebody = json!({"model": "text-embedding-3-small", "input": "hello"});
    let v = openai(&fake, "/v1/embeddings", &ebody, &nu).await.json();
    assert!(v.get("usage").is_none());
    assert_eq!(v["data"].as_array().unwrap().len(), 1);

    let v = anthropic(&fake, "/v1/messages", &messages_body(false), &nu)
        .await
        .json();
    assert!(v.get("usage").is_none());
    assert_eq!(v["stop_reason"], "end_turn");
    let text = anthropic(&fake, "/v1/messages", &messages_body(true), &nu)
        .await
        .text();
    assert!(!text.contains("usage"));
    let events = sse(&text);
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert!(kinds.contains(&"message_start") && kinds.contains(&"message_delta"));

    let log = fake.log();
    assert_eq!(log.len(), 7);
    for l in &log {
        assert_eq!(l.status, Some(200));
        assert_eq!(l.fault.as_deref(), Some("no-usage"));
        assert!(!l.usage_in_body);
        assert!(l.usage.is_some());
    }
    assert_eq!(log[0].usage.as_ref().unwrap().input_total, tokens(&body));
    assert_eq!(log[0].usage.as_ref().unwrap().output, 40);
    let totals = fake.usage_totals();
    assert_eq!(totals["gpt-5-mini"].requests, 2);
    assert_eq!(totals["gpt-5-mini"].hidden_usage_requests, 2);
    assert_eq!(totals["gpt-5-mini"].output, 80);
    assert_eq!(totals["gpt-5"].hidden_usage_requests, 2);
    assert_eq!(totals["gpt-5"].output, 80);
    assert_eq!(totals["text-embedding-3-small"].hidden_usage_requests, 1);
    assert_eq!(totals["text-embedding-3-small"].input_total, tokens(&ebody));
    assert_eq!(totals["claude-haiku-4-5"].hidden_usage_requests, 2);
    assert_eq!(totals["claude-haiku-4-5"].output, 80);
}

#[tokio::test]
async fn echo_key_fault_leaks_the_credential() {
    let fake = start().await;
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-fake-fault", "echo-key")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("x-echo-credential"), Some("Bearer sk-fake-openai"));
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"].get("param").is_some());
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("Bearer sk-fake-openai"), "{message}");

    let r = anthropic(
        &fake,
        "/v1/messages",
        &messages_body(true),
        &[("x-fake-fail-models", "claude-haiku-4-5=echo-key")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("x-echo-credential"), Some(ANTHROPIC_KEY));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(ANTHROPIC_KEY)
    );

    let log = fake.log();
    let faults: Vec<Option<&str>> = log.iter().map(|l| l.fault.as_deref()).collect();
    assert_eq!(faults, [Some("echo-key"), Some("echo-key")]);
    assert!(
        log.iter()
            .all(|l| l.usage.is_none() && l.status == Some(400))
    );
    assert!(fake.usage_totals().is_empty());
}

// ---------------------------------------------------------------- content codings

const CODINGS: [&str; 4] = ["gzip", "deflate", "br", "zstd"];

fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        // HTTP's deflate is the zlib format.
        "deflate" => {
            flate2::read::ZlibDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::stream::decode_all(bytes).unwrap(),
        other => panic!("no decoder for {other}"),
    }
    out
}

/// A decoder fed frame by frame: what has been decoded so far.
enum StreamDecoder {
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    Br(Box<brotli::DecompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
}

impl StreamDecoder {
    fn new(coding: &str) -> StreamDecoder {
        match coding {
            "gzip" => StreamDecoder::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            "deflate" => StreamDecoder::Zlib(flate2::write::ZlibDecoder::new(Vec::new())),
            "br" => StreamDecoder::Br(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
            "zstd" => StreamDecoder::Zstd(zstd::stream::write::Decoder::new(Vec::new()).unwrap()),
            other => panic!("no decoder for {other}"),
        }
    }

    fn feed(&mut self, data: &[u8]) -> &[u8] {
        use std::io::Write;
        match self {
            StreamDecoder::Gzip(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
                d.get_ref()
            }
            StreamDecoder::Zlib(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
                d.get_ref()
            }
            StreamDecoder::Br(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
                d.get_ref()
            }
            StreamDecoder::Zstd(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
                d.get_ref()
            }
        }
    }
}

/// A JSON body without the per-request `id` and `created`.
fn normalized(mut v: Value) -> Value {
    let map = v.as_object_mut().unwrap();
    map.remove("id");
    map.remove("created");
    v
}

#[tokio::test]
async fn encoded_json_bodies() {
    let fake = start().await;
    let body = chat_body(false);
    let plain = openai(&fake, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(plain.header("content-encoding"), None);
    let plain = normalized(plain.json());
    let mplain = normalized(
        anthropic(&fake, "/v1/messages", &messages_body(false), &[])
            .await
            .json(),
    );

    for coding in CODINGS {
        let r = openai(
            &fake,
            "/v1/chat/completions",
            &body,
            &[("accept-encoding", "identity"), ("x-fake-encoding", coding)],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-encoding"), Some(coding));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let len: usize = r.header("content-length").unwrap().parse().unwrap();
        assert_eq!(
            len,
            r.body.len(),
            "{coding}: content-length of the coded bytes"
        );
        assert!(
            serde_json::from_slice::<Value>(&r.body).is_err(),
            "{coding}: coded"
        );
        let decoded: Value = serde_json::from_slice(&decode(coding, &r.body)).unwrap();
        assert_eq!(normalized(decoded), plain, "{coding}");

        let r = anthropic(
            &fake,
            "/v1/messages",
            &messages_body(false),
            &[("x-fake-encoding", coding)],
        )
        .await;
        assert_eq!(r.header("content-encoding"), Some(coding));
        let decoded: Value = serde_json::from_slice(&decode(coding, &r.body)).unwrap();
        assert_eq!(normalized(decoded), mplain, "{coding}");
    }

    // Error bodies are coded too: a fault and a wrong key.
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-encoding", "br"), ("x-fake-fault", "429")],
    )
    .await;
    assert_eq!(r.status.as_u16(), 429);
    assert_eq!(r.header("content-encoding"), Some("br"));
    let v: Value = serde_json::from_slice(&decode("br", &r.body)).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let r = send(
        &fake,
        Method::POST,
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer wrong"),
            ("x-fake-encoding", "gzip"),
        ],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let v: Value = serde_json::from_slice(&decode("gzip", &r.body)).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");

    // identity: no header, plain bytes; x-unknown: the label on plain bytes.
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-encoding", "identity")],
    )
    .await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(normalized(r.json()), plain);
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-encoding", "x-unknown")],
    )
    .await;
    assert_eq!(r.header("content-encoding"), Some("x-unknown"));
    assert_eq!(normalized(r.json()), plain);

    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-encoding", "lz4")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("content-encoding"), None);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-fake-encoding")
    );

    // Billing ignores the coding: 1 + 4 + identity + x-unknown chat requests, all alike.
    let totals = fake.usage_totals();
    assert_eq!(totals["gpt-5-mini"].requests, 7);
    assert_eq!(totals["gpt-5-mini"].input_total, 7 * tokens(&body));
    assert_eq!(totals["gpt-5-mini"].output, 7 * 40);
    assert_eq!(totals["claude-haiku-4-5"].requests, 5);
    assert_eq!(totals["claude-haiku-4-5"].output, 5 * 40);
}

/// Parses an SSE body into its data JSONs without `id`/`created` (`[DONE]` as a string).
fn normalized_events(text: &str) -> Vec<(Option<String>, Value)> {
    sse(text)
        .into_iter()
        .map(|(e, d)| match serde_json::from_str::<Value>(&d) {
            Ok(v) => (e, normalized(v)),
            Err(_) => (e, Value::String(d)),
        })
        .collect()
}

#[tokio::test]
async fn encoded_streams_decode_event_by_event() {
    let fake = start().await;
    let auth = format!("Bearer {OPENAI_KEY}");
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let knobs = [
        ("authorization", auth.as_str()),
        ("x-fake-chunks", "4"),
        ("x-fake-chunk-delay-ms", "100"),
    ];
    let plain = openai(&fake, "/v1/chat/completions", &body, &knobs[1..]).await;
    let plain = normalized_events(&plain.text());
    assert_eq!(plain.len(), 8); // role + 4 deltas + finish + usage + [DONE]

    for coding in CODINGS {
        let mut headers = knobs.to_vec();
        headers.push(("x-fake-encoding", coding));
        headers.push(("accept-encoding", "identity"));
        let req = request(
            &fake,
            Method::POST,
            "/v1/chat/completions",
            &headers,
            Some(&body),
        );
        let (status, h, frames) = timed_frames(req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["content-encoding"], coding);
        assert!(h.get("content-length").is_none(), "{coding}: chunked");

        let mut decoder = StreamDecoder::new(coding);
        let mut first_delta_at = None;
        let mut wire = Vec::new();
        for (t, data) in &frames {
            wire.extend_from_slice(data);
            let so_far = String::from_utf8(decoder.feed(data).to_vec()).unwrap();
            if first_delta_at.is_none() && so_far.contains("\"content\":\"tok0") {
                // Decodable as it arrives: the whole first delta event is there.
                assert!(so_far.ends_with("\n\n"), "{coding}: {so_far:?}");
                first_delta_at = Some(*t);
            }
        }
        let end = frames.last().unwrap().0;
        let first = first_delta_at.unwrap();
        assert!(
            end - first >= Duration::from_millis(200),
            "{coding}: the first delta decoded at {first:?}, the stream ended at {end:?}"
        );
        let text = String::from_utf8(decode(coding, &wire)).unwrap();
        assert_eq!(normalized_events(&text), plain, "{coding}");
        assert!(text.contains("\"completion_tokens\":40"));
    }

    // Responses and Anthropic streams too.
    for coding in CODINGS {
        let rbody = json!({"model": "gpt-5", "input": "hi", "stream": true});
        let r = openai(
            &fake,
            "/v1/responses",
            &rbody,
            &[("x-fake-encoding", coding)],
        )
        .await;
        assert_eq!(r.header("content-encoding"), Some(coding));
        let text = String::from_utf8(decode(coding, &r.body)).unwrap();
        let events = sse(&text);
        assert_eq!(events.len(), 16); // 4 + 8 deltas + 4
        assert_eq!(
            events.last().unwrap().0.as_deref(),
            Some("response.completed")
        );

        let r = anthropic(
            &fake,
            "/v1/messages",
            &messages_body(true),
            &[("x-fake-encoding", coding)],
        )
        .await;
        assert_eq!(r.header("content-encoding"), Some(coding));
        let text = String::from_utf8(decode(coding, &r.body)).unwrap();
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        assert!(text.contains("\"output_tokens\":40"));
    }

    // x-unknown: the label on the plain event stream.
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-encoding", "x-unknown")],
    )
    .await;
    assert_eq!(r.header("content-encoding"), Some("x-unknown"));
    assert!(r.text().ends_with("data: [DONE]\n\n"));

    let totals = fake.usage_totals();
    assert_eq!(totals["gpt-5-mini"].requests, 6);
    assert_eq!(totals["gpt-5-mini"].output, 6 * 40);
    assert_eq!(totals["gpt-5-mini"].input_total, 6 * tokens(&body));
    assert_eq!(totals["gpt-5"].requests, 4);
    assert_eq!(totals["claude-haiku-4-5"].requests, 4);
}

// ---------------------------------------------------------------- large responses

#[tokio::test]
async fn large_non_stream_completion() {
    let fake = start().await;
    let mut body = chat_body(false);
    body["max_completion_tokens"] = json!(200_000);
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-output-tokens", "200000")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.len() > 1 << 20, "{} bytes", r.body.len());
    let len: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, r.body.len());
    let v = r.json();
    assert_eq!(v["usage"]["completion_tokens"], 200_000);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content, words(200_000));
    assert!(content.ends_with(" tok199999"));
    assert_eq!(fake.usage_totals()["gpt-5-mini"].output, 200_000);

    let r = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-output-tokens", "1000001")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        FakeProvider::start(FakeConfig {
            output_tokens: 2_000_000,
            ..FakeConfig::default()
        })
        .await
        .is_err()
    );
}

#[tokio::test]
async fn scripted_answers_per_api_and_model() {
    let fake = start().await;
    let body = chat_body(false);
    // Only for the named model; others answer normally.
    let other = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[
            ("x-fake-answer", "refusal"),
            ("x-fake-answer-model", "gpt-5"),
        ],
    )
    .await
    .json();
    assert_eq!(other["choices"][0]["message"]["refusal"], Value::Null);
    assert_eq!(other["choices"][0]["finish_reason"], "stop");
    let chat = |answer: &'static str| {
        let (fake, body) = (&fake, &body);
        async move {
            openai(
                fake,
                "/v1/chat/completions",
                body,
                &[("x-fake-answer", answer), ("x-fake-output-tokens", "2")],
            )
            .await
            .json()
        }
    };
    let v = chat("refusal").await;
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": null, "refusal": "I'm sorry, but I can't help with that.", "annotations": []})
    );
    assert_eq!(v["usage"]["completion_tokens"], 2, "usage unchanged");
    let v = chat("empty").await;
    assert_eq!(v["choices"][0]["message"]["content"], "");
    let v = chat("truncated").await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1");
    let v = chat("text:{\"n\":1}").await;
    assert_eq!(v["choices"][0]["message"]["content"], "{\"n\":1}");
    let v = chat("tool:get_weather:{\"city\":\"Paris\"").await;
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"],
        json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\""})
    );

    let resp_body = json!({"model": "gpt-5-mini", "input": "hi"});
    let resp = |answer: &'static str| {
        let (fake, body) = (&fake, &resp_body);
        async move {
            openai(fake, "/v1/responses", body, &[("x-fake-answer", answer)])
                .await
                .json()
        }
    };
    let v = resp("truncated").await;
    assert_eq!(v["status"], "incomplete");
    assert_eq!(
        v["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    let v = resp("refusal").await;
    assert_eq!(v["output"][0]["content"][0]["type"], "refusal");
    let v = resp("tool:add:{\"a\":1}").await;
    assert_eq!(v["output"][0]["type"], "function_call");
    assert_eq!(v["output"][0]["arguments"], "{\"a\":1}");

    let mbody = messages_body(false);
    let msg = |answer: &'static str| {
        let (fake, body) = (&fake, &mbody);
        async move {
            anthropic(fake, "/v1/messages", body, &[("x-fake-answer", answer)])
                .await
                .json()
        }
    };
    assert_eq!(msg("refusal").await["stop_reason"], "refusal");
    assert_eq!(msg("empty").await["content"], json!([]));
    assert_eq!(
        msg("truncated").await["stop_reason"],
        "model_context_window_exceeded"
    );
    let v = msg("tool:get_weather:{\"location\":7}").await;
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"location": 7}));

    // Without a length, in 64 KiB frames: the same JSON.
    let mut long = chat_body(false);
    long["max_completion_tokens"] = json!(20000);
    let r = openai(
        &fake,
        "/v1/chat/completions",
        &long,
        &[("x-fake-chunked", "1"), ("x-fake-output-tokens", "20000")],
    )
    .await;
    assert_eq!(r.header("content-length"), None);
    assert!(r.body.len() > 2 * 64 * 1024);
    assert_eq!(r.json()["usage"]["completion_tokens"], 20000);

    let bad = openai(
        &fake,
        "/v1/chat/completions",
        &body,
        &[("x-fake-answer", "sometimes")],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("x-fake-answer"), "{}", bad.text());
}
