//! Black-box tests of the two promises against adversarial apps and
//! misbehaving upstreams: a budget is a hard cap, and every request the
//! provider billed is in the ledger. Each test fails on a sidecar without
//! the fix it names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::*;

const BIG_BUDGET: &str = r#"---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: team, namespace: apps}
spec:
  period: Daily
  limit: {usd: "100.00"}
"#;

/// gpt-4o-mini list prices in picos per token: $0.15 / $0.60 per MTok.
const MINI_IN: i128 = 150_000;
const MINI_OUT: i128 = 600_000;

/// Defect 1: a JSON response over 1 MiB with a `content-length` is metered
/// from its usage (over HTTP/1.1 hyper drops such a body once its length is
/// written, without polling its end), and so is one over h2c.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_json_response_is_metered_from_its_usage_over_http1_and_h2c() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let body = r#"{"model":"gpt-4o-mini","max_tokens":200000,"messages":[{"role":"user","content":"write a lot"}]}"#;
    let out_tokens: i128 = 160_000;
    let r = sc
        .openai(
            "/v1/chat/completions",
            body,
            &[("x-fake-output-tokens", "160000")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.len() > 1024 * 1024, "{} bytes", r.body.len());
    assert_eq!(r.json()["usage"]["completion_tokens"], 160_000);

    // The same over h2c.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::post(format!("http://{}/v1/chat/completions", sc.app))
        .header("content-type", "application/json")
        .header("x-fake-output-tokens", "160000")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(got.len() > 1024 * 1024);

    let billed = &fake.usage_totals()["gpt-4o-mini"];
    assert_eq!(billed.requests, 2);
    assert_eq!(i128::from(billed.output), 2 * out_tokens);
    let row = wait_for_requests(&sc, "gpt-4o-mini", 2).await;
    assert_eq!(row["estimated_requests"], 0, "{row}");
    assert_eq!(row["output_tokens"], 2 * 160_000);
    assert_eq!(row["input_tokens"], billed.input_total);
    let want = i128::from(billed.input_total) * MINI_IN + 2 * out_tokens * MINI_OUT;
    assert_eq!(cost_str(&row["cost_usd"]), want, "{row}");
}

/// Risk 8: a 200 whose body carries no usage (or is not JSON) is recorded
/// with its output estimated from the text that passed, marked estimated,
/// never as 0 output.
#[tokio::test(flavor = "multi_thread")]
async fn a_success_without_usage_is_estimated_from_its_text() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc
        .openai("/v1/chat/completions", body, &[("x-fake-fault", "garbage")])
        .await;
    assert_eq!(r.status, 200);
    let row = sc.model_row("gpt-4o-mini").await;
    assert_eq!(row["estimated_requests"], 1, "{row}");
    // `<html>oops`: 10 bytes of text, 3 tokens at a quarter token a byte.
    assert_eq!(row["output_tokens"], 3, "{row}");
    assert_eq!(row["input_tokens"], (body.len() as u64).div_ceil(4));
}

/// The per-model row of `model` once it counts `n` requests (the ledger
/// line of a body the app read to its end is written as the body ends).
async fn wait_for_requests(sc: &Sidecar, model: &str, n: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let l = sc.ledger().await;
        let row = l["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == model)
            .cloned();
        if let Some(row) = row
            && row["requests"] == n
        {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {n} requests for {model} in {l}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Defect 2: every choice `n` asks for is billed, so the worst case counts
/// them all, for the hard cap and the per-request cap alike.
#[tokio::test(flavor = "multi_thread")]
async fn n_choices_are_in_the_worst_case() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget(
        "small",
        "  period: Daily\n  limit: {usd: \"0.10\"}\n  perRequestMaxUsd: \"0.02\"",
    );
    let sc = Sidecar::start(&policy(&fake, "", &b));
    // gpt-4o: $10/MTok output; 100 × 1000 tokens = $1.00 worst case.
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","n":100,"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-error"), Some("request_cap"));
    assert!(
        r.text().contains("exceeds the per-request cap"),
        "{}",
        r.text()
    );
    assert!(fake.log().is_empty(), "nothing reached the provider");

    // Without a per-request cap, the hard cap refuses it too.
    let b = budget("small", "  period: Daily\n  limit: {usd: \"0.10\"}");
    std::fs::write(sc.policy_path(), policy(&fake, "", &b)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","n":100,"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-error"), Some("limit"));
    assert!(fake.log().is_empty(), "nothing reached the provider");

    // A request whose choices fit is served, and every choice is metered.
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","n":2,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let billed = &fake.usage_totals()["gpt-4o"];
    assert_eq!(billed.output, 80, "the fake bills 40 tokens per choice");
    let row = sc.model_row("gpt-4o").await;
    assert_eq!(row["output_tokens"], 80, "{row}");
}

/// Defect 3: apps that go away before the response head (an HTTP/1.1
/// close, an h2 `RST_STREAM`, an h2 connection closed) neither leak their
/// reservation nor lose the request the provider answered and billed.
#[tokio::test(flavor = "multi_thread")]
async fn apps_that_leave_before_the_head_release_their_reservation_and_are_metered() {
    use tokio::io::AsyncWriteExt;
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget("team", "  period: Daily\n  limit: {usd: \"5.00\"}");
    let sc = Sidecar::start(&policy(&fake, "", &b));
    let body = r#"{"model":"gpt-4o-mini","max_tokens":1000,"messages":[{"role":"user","content":"slow"}]}"#;
    let per_mode = 10;

    // HTTP/1.1: the app closes its connection 150 ms into a 600 ms wait.
    let mut tasks = Vec::new();
    for _ in 0..per_mode {
        let addr = sc.app;
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-fake-fault: slow-head:600\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            drop(s);
        }));
    }
    // h2: a stream reset (the request future dropped) on a shared
    // connection, and a connection closed with its streams in flight.
    let h2_request = || {
        http::Request::post(format!("http://{}/v1/chat/completions", sc.app))
            .header("content-type", "application/json")
            .header("x-fake-fault", "slow-head:600")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let stream = tokio::net::TcpStream::connect(sc.app).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let shared_conn = tokio::spawn(conn);
    for _ in 0..per_mode {
        let mut send = send.clone();
        let req = h2_request();
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_millis(150), send.send_request(req)).await;
        }));
    }
    let stream = tokio::net::TcpStream::connect(sc.app).await.unwrap();
    let (send2, conn2) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let closing = tokio::spawn(conn2);
    let mut in_flight = Vec::new();
    for _ in 0..per_mode {
        let mut send2 = send2.clone();
        let req = h2_request();
        in_flight.push(tokio::spawn(async move {
            let _ = send2.send_request(req).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Close the second connection with its streams in flight.
    closing.abort();
    for t in in_flight {
        t.abort();
    }
    drop(send2);

    // The provider answers all of them (600 ms after it got them) and
    // bills them; the sidecar reads every answer and settles it.
    let total = 3 * per_mode as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let row = loop {
        let l = sc.ledger().await;
        let row = l["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == "gpt-4o-mini")
            .cloned();
        let reserved = l["budgets"][0]["reserved_usd"]
            .as_str()
            .unwrap()
            .to_string();
        if let Some(row) = row
            && row["requests"] == total
            && picos(&reserved) == 0
        {
            break row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not settled: {l}\nbilled: {:?}",
            fake.usage_totals()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let billed = &fake.usage_totals()["gpt-4o-mini"];
    assert_eq!(billed.requests, total, "the provider billed every one");
    assert_eq!(row["output_tokens"], billed.output, "{row}");
    assert_eq!(row["input_tokens"], billed.input_total, "{row}");
    assert_eq!(row["estimated_requests"], 0, "{row}");
    shared_conn.abort();

    // Nothing is held: the next request is served at once.
    let started = std::time::Instant::now();
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// An app that leaves before its request was forwarded (here: while it
/// waits for room in the budget) is not forwarded at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_app_left_while_waiting_is_never_forwarded() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    // Room for one worst case at a time: $0.60/MTok × 1000 output tokens
    // is $0.0006; the second request waits for the first to settle.
    let b = budget("team", "  period: Daily\n  limit: {usd: \"0.001\"}");
    let sc = Sidecar::start(&policy(&fake, "", &b));
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":1000,"messages":[{"role":"user","content":"x"}]}"#;
    let slow = {
        let client = sc.client.clone();
        let uri = format!("http://{}/v1/chat/completions", sc.app);
        tokio::spawn(async move {
            let req = http::Request::post(uri)
                .header("content-type", "application/json")
                .header("x-fake-fault", "slow-head:1500")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            client.request(req).await.unwrap().status()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The second app gives up while it waits for the reservation.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(sc.app).await.unwrap();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(slow.await.unwrap(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.log().len(),
        1,
        "the request whose app left was not sent"
    );
    let l = sc.ledger().await;
    assert_eq!(
        picos(l["budgets"][0]["reserved_usd"].as_str().unwrap()),
        0,
        "{l}"
    );
}

/// A small tmpfs mounted on a directory for one test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` (the test is skipped, saying why) unless this runs as root
    /// with `mount` available.
    fn mount(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "SKIPPED: mounting a tmpfs needs root (a real full file system is the point of this test)"
            );
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }

    /// Fill the file system with one file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Defect 4: with the state dir's disk full, a request whose record cannot
/// be made durable is not forwarded (a provider-shaped 503), `/readyz`
/// says why, a metric shows it; room again, and everything is back; the
/// spend before it survives a restart. `--ledger-fail-open` forwards.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_disk_fails_closed() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut sc = Sidecar::unstarted(&policy(&fake, "", BIG_BUDGET), &[]);
    let Some(fs) = Tmpfs::mount(&sc.state_dir(), "512k") else {
        return;
    };
    sc.spawn();
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let filler = fs.fill();
    // The journal's last page may still take a few lines; past it, the
    // ledger cannot grow.
    let mut served = 1;
    let r = loop {
        let r = sc.openai("/v1/chat/completions", body, &[]).await;
        if r.status != 200 {
            break r;
        }
        served += 1;
        assert!(served < 40, "the ledger kept growing on a full disk");
    };
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-error"), Some("ledger_unavailable"));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("was not sent to the provider") && msg.contains("No space left"),
        "{msg}"
    );
    assert_eq!(r.json()["error"]["type"], "server_error");
    assert_eq!(fake.log().len(), served, "the refused request never left");
    let ready = sc.admin_get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.text().contains("the ledger cannot be written"),
        "{}",
        ready.text()
    );
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tokenwarden_ledger_writable 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokenwarden_errors_total{reason=\"ledger_unavailable\"} 1"),
        "{metrics}"
    );

    // Room again: ready, and requests are served and recorded.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(sc.admin_get("/readyz").await.status, 200);
    let r = sc.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        sc.admin_get("/metrics")
            .await
            .text()
            .contains("tokenwarden_ledger_writable 1")
    );
    let before = sc.ledger().await["budgets"][0]["spent_usd"].clone();
    sc.kill();
    sc.spawn();
    // Every served request is on file: exactly, or, where its record met
    // the full disk after its intent was written, at its worst case.
    let after = sc.ledger().await;
    assert_eq!(after["total"]["requests"], served + 1, "{after}");
    let (before, now) = (
        cost_str(&before),
        cost_str(&after["budgets"][0]["spent_usd"]),
    );
    assert!(now >= before, "{now} < {before}: {after}");
    assert!(
        after["models"][0]["estimated_requests"].as_u64().unwrap() <= 1,
        "{after}"
    );

    // Fail-open, by choice: forwarded, spend in memory only.
    sc.kill();
    let filler = fs.fill();
    let mut open = Sidecar::unstarted(&policy(&fake, "", BIG_BUDGET), &["--ledger-fail-open"]);
    std::mem::swap(&mut open.dir, &mut sc.dir);
    open.spawn();
    let r = open.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(open.admin_get("/readyz").await.status, 200);
    open.kill();
    std::mem::swap(&mut open.dir, &mut sc.dir);
    let _ = std::fs::remove_file(filler);
    drop(fs);
}

/// Risk 11: requests the provider billed but had not answered when the
/// sidecar was `kill -9`ed are recorded after the restart, each at the
/// worst case it reserved, marked estimated: the ledger never counts less
/// than the provider billed. Answered requests stay exact.
#[tokio::test(flavor = "multi_thread")]
async fn requests_in_flight_at_kill_9_are_recorded_at_their_worst_case() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":500,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..5 {
        assert_eq!(
            sc.openai("/v1/chat/completions", body, &[]).await.status,
            200
        );
    }
    let in_flight = 40;
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let client = sc.client.clone();
        let uri = format!("http://{}/v1/chat/completions", sc.app);
        tasks.push(tokio::spawn(async move {
            let req = http::Request::post(uri)
                .header("content-type", "application/json")
                .header("x-fake-fault", "slow-head:3000")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            let _ = client.request(req).await;
        }));
    }
    // Every one of them reached the provider (which bills on receipt).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.log().len() < 5 + in_flight {
        assert!(
            std::time::Instant::now() < deadline,
            "{} sent",
            fake.log().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sc.kill();
    for t in tasks {
        let _ = t.await;
    }
    sc.spawn();
    let l = sc.ledger().await;
    let billed = &fake.usage_totals()["gpt-4o-mini"];
    assert_eq!(billed.requests, 5 + in_flight as u64);
    let row = sc.model_row("gpt-4o-mini").await;
    assert_eq!(row["requests"], 5 + in_flight as u64, "{l}");
    assert_eq!(row["estimated_requests"], in_flight as u64, "{l}");
    // Worst case: at least what was billed, kind by kind.
    assert!(
        row["input_tokens"].as_u64().unwrap() >= billed.input_total,
        "{row}"
    );
    assert!(
        row["output_tokens"].as_u64().unwrap() >= billed.output,
        "{row}"
    );
    let billed_cost =
        i128::from(billed.input_total) * MINI_IN + i128::from(billed.output) * MINI_OUT;
    assert!(cost_str(&row["cost_usd"]) >= billed_cost, "{row}");
    assert_eq!(
        l["budgets"][0]["spent_usd"], row["cost_usd"],
        "the budget counts them"
    );
    // Recorded once: a second restart adds nothing.
    sc.kill();
    sc.spawn();
    assert_eq!(sc.model_row("gpt-4o-mini").await, row);
}

/// Risk 5: an unbounded model name is refused in the provider's shape
/// (never forwarded, never in the ledger or a header); control characters
/// in a model name never reach a metrics label raw.
#[tokio::test(flavor = "multi_thread")]
async fn model_names_are_bounded_and_labels_escaped() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let huge = "m".repeat(1 << 20);
    let body = format!(r#"{{"model":"{huge}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let r = sc.openai("/v1/chat/completions", &body, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(
        r.text()
            .contains("the longest model name accepted is 256 bytes"),
        "{}",
        r.text()
    );
    assert!(r.header("x-tokenwarden-model").is_none());
    let r = sc
        .anthropic(
            &format!(r#"{{"model":"{huge}","max_tokens":5,"messages":[]}}"#),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    assert!(fake.log().is_empty());
    assert_eq!(sc.ledger().await["total"]["requests"], 0);

    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"evil\rmodel\u0000x","messages":[{"role":"user","content":"hi"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(!metrics.contains('\r') && !metrics.contains('\0'));
    assert!(
        metrics.contains("requested_model=\"evil\u{FFFD}model\u{FFFD}x\""),
        "{metrics}"
    );
}

/// Risk 9: the provider is asked for `accept-encoding: identity`; a reply
/// compressed anyway passes through as sent and is metered exactly (the
/// taps read it decoded), in every coding; a stream whose usage chunk the
/// sidecar strips goes to the app decoded. A coding nobody can read is
/// counted by its size, marked estimated.
#[tokio::test(flavor = "multi_thread")]
async fn compressed_replies_are_metered() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let mut exact = 0;
    for coding in ["gzip", "deflate", "br", "zstd"] {
        // Small JSON (read whole), large JSON (tapped as it passes).
        for tokens in ["40", "150000"] {
            let r = sc
                .openai(
                    "/v1/chat/completions",
                    &chat.replace("\"hi\"", &format!("\"{coding} {tokens}\"")),
                    &[
                        ("x-fake-encoding", coding),
                        ("x-fake-output-tokens", tokens),
                        ("accept-encoding", "gzip, br"),
                    ],
                )
                .await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-encoding"), Some(coding), "passed as sent");
            exact += 1;
        }
        // Anthropic stream (not rewritten): passed as sent.
        let r = sc
            .anthropic(
                r#"{"model":"claude-haiku-4-5","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
                &[("x-fake-encoding", coding)],
            )
            .await;
        assert_eq!(r.header("content-encoding"), Some(coding));
        // OpenAI stream without include_usage: the sidecar strips the usage
        // chunk it asked for, so the app gets it decoded.
        let r = sc
            .openai(
                "/v1/chat/completions",
                r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
                &[("x-fake-encoding", coding)],
            )
            .await;
        assert_eq!(r.header("content-encoding"), None);
        let text = r.text();
        assert!(
            text.ends_with("data: [DONE]\n\n") && !text.contains("usage"),
            "{text}"
        );
        exact += 1;
    }
    for sent in fake.log() {
        assert_eq!(sent.header("accept-encoding"), Some("identity"));
    }
    let billed = fake.usage_totals();
    let mini = sc.model_row("gpt-4o-mini").await;
    assert_eq!(mini["estimated_requests"], 0, "{mini}");
    assert_eq!(mini["requests"], exact);
    assert_eq!(mini["output_tokens"], billed["gpt-4o-mini"].output);
    assert_eq!(mini["input_tokens"], billed["gpt-4o-mini"].input_total);
    let haiku = sc.model_row("claude-haiku-4-5").await;
    assert_eq!(haiku["estimated_requests"], 0, "{haiku}");
    assert_eq!(haiku["output_tokens"], billed["claude-haiku-4-5"].output);

    // A coding the sidecar cannot decode: counted by its size, estimated.
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
            &[
                ("x-fake-encoding", "x-unknown"),
                ("x-fake-fault", "no-usage"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let row = sc.model_row("gpt-4o").await;
    assert_eq!(row["estimated_requests"], 1, "{row}");
    assert!(row["output_tokens"].as_u64().unwrap() > 0, "{row}");
}

/// Risk 6: connections that say nothing, send a head or a body too slowly,
/// are closed (or refused, in the provider's shape) instead of being held.
#[tokio::test(flavor = "multi_thread")]
async fn slow_and_silent_clients_are_timed_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start_with(
        &policy(&fake, "", BIG_BUDGET),
        &["--header-timeout-ms", "400", "--body-timeout-ms", "400"],
    );
    let mut conns = Vec::new();
    for i in 0..150 {
        let mut s = tokio::net::TcpStream::connect(sc.app).await.unwrap();
        match i % 3 {
            0 => {}                                // silent
            1 => s.write_all(b"P").await.unwrap(), // a preface or a method?
            _ => s
                .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
                .await
                .unwrap(),
        }
        conns.push(s);
    }
    let started = std::time::Instant::now();
    for mut s in conns {
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a slow connection was held open");
    }
    assert!(started.elapsed() < Duration::from_secs(4));

    // A body that never finishes: a provider-shaped 408.
    let mut s = tokio::net::TcpStream::connect(sc.app).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(
        got.contains("x-tokenwarden-error: request_timeout"),
        "{got}"
    );
    assert!(got.contains("invalid_request_error"), "{got}");
    assert!(fake.log().is_empty());

    // A client that is merely idle between requests on a keep-alive
    // connection within the limit is served as before.
    let r = sc
        .openai(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","messages":[]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
}

/// Risk 7: a provider that stalls after its response head is cut after the
/// idle timeout: the app's response ends with an error instead of hanging,
/// and the attempt is settled as cut (estimated from what passed).
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_stalls_mid_body_is_cut() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start_with(
        &policy(&fake, "", BIG_BUDGET),
        &["--upstream-idle-timeout-ms", "300"],
    );
    let cases = [
        // A stream, a small JSON body, a large (tapped) JSON body.
        (
            r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
            "40",
        ),
        (r#"{"model":"gpt-4o-mini","messages":[]}"#, "40"),
        (
            r#"{"model":"gpt-4o-mini","max_tokens":200000,"messages":[]}"#,
            "150000",
        ),
    ];
    for (body, tokens) in cases {
        let started = std::time::Instant::now();
        let req = http::Request::post(format!("http://{}/v1/chat/completions", sc.app))
            .header("content-type", "application/json")
            .header("x-fake-fault", "stall:5000")
            .header("x-fake-output-tokens", tokens)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let resp = sc.client.request(req).await.unwrap();
        let complete = resp.into_body().collect().await;
        assert!(
            complete.is_err() || started.elapsed() < Duration::from_secs(3),
            "the app got no error"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    let row = wait_for_requests(&sc, "gpt-4o-mini", 3).await;
    assert_eq!(row["estimated_requests"], 3, "{row}");
    let metrics = sc.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tokenwarden_errors_total{reason=\"upstream_stalled\"} 3"),
        "{metrics}"
    );
}

/// Risk 12: an upstream that echoes the credential it was sent (in an
/// error body or a header) never hands the provider key to the app.
#[tokio::test(flavor = "multi_thread")]
async fn an_echoed_provider_key_is_masked() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let masked = |key: &str| "*".repeat(key.len());
    let checks = [
        (
            sc.openai(
                "/v1/chat/completions",
                r#"{"model":"gpt-4o-mini","messages":[]}"#,
                &[("x-fake-fault", "echo-key")],
            )
            .await,
            "sk-fake-openai",
        ),
        (
            sc.anthropic(
                r#"{"model":"claude-haiku-4-5","max_tokens":5,"messages":[]}"#,
                &[("x-fake-fault", "echo-key")],
            )
            .await,
            "sk-fake-anthropic",
        ),
        (
            sc.send(
                http::Method::GET,
                "/v1/models",
                &[("x-fake-fault", "echo-key")],
                "",
            )
            .await,
            "sk-fake-openai",
        ),
    ];
    for (r, key) in checks {
        assert_eq!(r.status, 400, "{}", r.text());
        let text = r.text();
        assert!(!text.contains(key), "{text}");
        assert!(text.contains(&masked(key)), "{text}");
        let echoed = r.header("x-echo-credential").unwrap();
        assert!(
            !echoed.contains(key) && echoed.contains(&masked(key)),
            "{echoed}"
        );
        // The content-length still matches the (masked) body.
        if let Some(len) = r.header("content-length") {
            assert_eq!(len.parse::<usize>().unwrap(), r.body.len());
        }
    }
}

/// Risk 10: a request that makes the provider bill input its body does
/// not carry (here a `previous_response_id`) reserves an allowance for it:
/// the model's context window by default, the policy's `unseenInputTokens`
/// when set. The ledger counts what the provider billed either way.
#[tokio::test(flavor = "multi_thread")]
async fn input_the_body_does_not_carry_is_in_the_worst_case() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let b = budget("small", "  period: Daily\n  limit: {usd: \"0.10\"}");
    let sc = Sidecar::start(&policy(&fake, "", &b));
    let follow_up = r#"{"model":"gpt-4o","input":"and then?","max_output_tokens":100,"previous_response_id":"resp_abc"}"#;
    // gpt-4o's context window is 128000 tokens: $0.32 at $2.50/MTok.
    let r = sc.openai("/v1/responses", follow_up, &[]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("counts 128000 input tokens for a previous_response_id"),
        "{msg}"
    );
    assert!(fake.log().is_empty());
    // The same request carrying its whole prompt fits.
    let r = sc
        .openai(
            "/v1/responses",
            r#"{"model":"gpt-4o","input":"and then?","max_output_tokens":100}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A policy that allows 1000 unseen tokens lets it through; the ledger
    // then counts what the provider billed, hidden input included.
    let with_allowance = policy(&fake, "  unseenInputTokens: 1000", &b);
    std::fs::write(sc.policy_path(), with_allowance).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = sc
        .openai(
            "/v1/responses",
            follow_up,
            &[("x-fake-extra-input-tokens", "2000")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let billed = &fake.usage_totals()["gpt-4o"];
    let row = sc.model_row("gpt-4o").await;
    assert_eq!(row["input_tokens"], billed.input_total, "{row}");
    assert!(billed.input_total > 2000);
}
