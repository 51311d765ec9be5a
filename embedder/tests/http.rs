//! Black-box tests of the `tokenwarden-embedder` binary over HTTP: response
//! shape and token usage, base64 = the float vector's little-endian bytes,
//! OpenAI-shaped errors with their statuses, probes, metrics, 503 when
//! overloaded, and SIGTERM draining.

// The helpers below (start, call, post) are test code too.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine as _;
use serde_json::{Value, json};

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Option<Server> {
    let dir = common::model_dir()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenwarden-embedder"))
        .args(["--listen", "127.0.0.1:0", "--model-dir"])
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("tokenwarden-embedder listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Some(Server { child, addr })
}

/// Sends one HTTP/1.1 request; returns status, headers (lowercased names) and body.
fn call(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec())
        .unwrap()
        .to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

fn post(addr: &str, body: &Value) -> (u16, Value) {
    let (status, _, body) = call(addr, "POST", "/v1/embeddings", body.to_string().as_bytes());
    (status, serde_json::from_slice(&body).unwrap())
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn embeddings_shape_usage_and_base64() {
    let Some(srv) = start(&[]) else { return };
    let (status, v) = post(
        &srv.addr,
        &json!({"model": "all-minilm-l6-v2", "input": ["The new movie is awesome", "The new movie is so great"], "user": "u1"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "all-minilm-l6-v2");
    // 7 + 8 tokens with [CLS]/[SEP].
    assert_eq!(v["usage"], json!({"prompt_tokens": 15, "total_tokens": 15}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"].as_array().unwrap().len(), 384);
    }
    let a = floats(&data[0]["embedding"]);
    let b = floats(&data[1]["embedding"]);
    let cos = common::dot(&a, &b);
    assert!((cos - 0.8939).abs() <= 0.002, "{cos}");

    let (status, v) = post(
        &srv.addr,
        &json!({"model": "all-minilm-l6-v2", "input": "The new movie is awesome", "encoding_format": "base64", "dimensions": 384}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 7);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // JSON floats are printed shortest-round-trip, so both encodings carry the same f32s.
    assert_eq!(decoded, a);
}

#[test]
fn errors_are_openai_shaped() {
    let Some(srv) = start(&["--max-inputs", "2", "--max-body-bytes", "1000"]) else {
        return;
    };
    let cases = [
        (json!({"model": "all-minilm-l6-v2"}), 400, Some("input")),
        (
            json!({"model": "all-minilm-l6-v2", "input": ""}),
            400,
            Some("input"),
        ),
        (
            json!({"model": "all-minilm-l6-v2", "input": [[101, 102]]}),
            400,
            Some("input"),
        ),
        (
            json!({"model": "all-minilm-l6-v2", "input": ["a", "b", "c"]}),
            400,
            Some("input"),
        ),
        (
            json!({"model": "all-minilm-l6-v2", "input": "a", "dimensions": 256}),
            400,
            Some("dimensions"),
        ),
        (
            json!({"model": "all-minilm-l6-v2", "input": "a", "encoding_format": "int8"}),
            400,
            Some("encoding_format"),
        ),
        (
            json!({"model": "text-embedding-3-small", "input": "a"}),
            404,
            Some("model"),
        ),
    ];
    for (body, want_status, want_param) in cases {
        let (status, v) = post(&srv.addr, &body);
        assert_eq!(status, want_status, "{body} -> {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["param"], json!(want_param), "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, _, body) = call(&srv.addr, "POST", "/v1/embeddings", b"{not json");
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let big = json!({"model": "all-minilm-l6-v2", "input": "x".repeat(2000)});
    let (status, v) = post(&srv.addr, &big);
    assert_eq!(
        (status, &v["error"]["code"]),
        (413, &json!("request_too_large"))
    );

    let (status, _, body) = call(&srv.addr, "POST", "/v1/chat/completions", b"{}");
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["error"]["message"],
        "Invalid URL (POST /v1/chat/completions)"
    );

    let (status, head, _) = call(&srv.addr, "GET", "/v1/embeddings", b"");
    assert_eq!(status, 405);
    assert!(head.contains("\r\nallow: post"), "{head}");

    let (status, _, body) = call(&srv.addr, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    for line in [
        "tokenwarden_embedder_errors_total{reason=\"invalid_request\"} 7",
        "tokenwarden_embedder_errors_total{reason=\"model_not_found\"} 1",
        "tokenwarden_embedder_errors_total{reason=\"too_large\"} 1",
        "tokenwarden_embedder_errors_total{reason=\"not_found\"} 1",
        "tokenwarden_embedder_requests_total{route=\"embeddings\",status=\"400\"} 7",
        "tokenwarden_embedder_inputs_total 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn probes_metrics_and_sigterm() {
    let Some(mut srv) = start(&[]) else { return };
    assert_eq!(call(&srv.addr, "GET", "/healthz", b"").0, 200);
    assert_eq!(call(&srv.addr, "GET", "/readyz", b"").0, 200);
    let (status, _) = post(
        &srv.addr,
        &json!({"model": "all-minilm-l6-v2", "input": ["Is Python slow?", "Is Python not slow?", "hi"]}),
    );
    assert_eq!(status, 200);
    let (_, head, body) = call(&srv.addr, "GET", "/metrics", b"");
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let text = String::from_utf8(body).unwrap();
    for line in [
        "tokenwarden_embedder_inputs_total 3",
        // [CLS] is python slow ? [SEP] = 6, + "not" = 7, [CLS] hi [SEP] = 3
        "tokenwarden_embedder_tokens_total 16",
        "tokenwarden_embedder_request_duration_seconds_count 1",
        "tokenwarden_embedder_requests_total{route=\"embeddings\",status=\"200\"} 1",
        "tokenwarden_embedder_requests_total{route=\"healthz\",status=\"200\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let pid = srv.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = srv.child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[test]
fn overload_is_503() {
    // One admitted request at a time: while a large request is embedded, the
    // next one is refused at once with 503 (OpenAI's SDKs retry it).
    let Some(srv) = start(&["--max-in-flight", "1", "--workers", "1"]) else {
        return;
    };
    let long = "the quick brown fox jumps over the lazy dog ".repeat(25);
    let inputs: Vec<String> = (0..16).map(|i| format!("{i} {long}")).collect();
    let addr = srv.addr.clone();
    let slow = std::thread::spawn(move || {
        post(
            &addr,
            &json!({"model": "all-minilm-l6-v2", "input": inputs}),
        )
        .0
    });
    let mut saw_503 = false;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(20));
        let (status, v) = post(
            &srv.addr,
            &json!({"model": "all-minilm-l6-v2", "input": "hi"}),
        );
        if status == 503 {
            assert_eq!(v["error"]["code"], "overloaded", "{v}");
            saw_503 = true;
            break;
        }
        assert_eq!(status, 200);
    }
    assert_eq!(slow.join().unwrap(), 200);
    assert!(saw_503, "no 503 while the only slot was busy");
}
