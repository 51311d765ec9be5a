//! Prompt-cache economics, black-box: the real sidecar binary between a
//! test app and the fake provider, whose simulated prompt cache bills reads
//! and writes as the providers do. Asserts what a user relies on: a
//! timestamp at the start of a system prompt is reported as a
//! `volatile_prefix` bust with its section, byte offset and kind, priced
//! from the billed usage; a TTL expiry is not a bust; no prompt text leaves
//! the request path; the policy's `caching` rewrites (Anthropic
//! breakpoints, OpenAI `prompt_cache_key`) put exactly the expected bytes
//! on the wire and make the cache hit.
//!
//! Token arithmetic of the fake (see `tokenwarden-fake-provider`, "Prompt
//! cache"): the billed input is `ceil(body bytes / 4)`; an Anthropic prefix
//! up to a block is `floor(raw block bytes / 4)`; OpenAI reads the largest
//! `1024 + 128·k` tokens of a prefix seen before.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::*;

/// claude-sonnet-4-5 list prices in picos per token: $3 input, $15 output,
/// $0.30 cache read, $3.75 5-minute write, and 1-hour writes at twice the
/// input price (Anthropic's rule, `ModelPrices::cache_write_1h_rate`).
const SONNET: Rates = Rates {
    input: 3_000_000,
    output: 15_000_000,
    read: 300_000,
    write_5m: 3_750_000,
    write_1h: 6_000_000,
};

/// gpt-5-mini list prices in picos per token: $0.25 input, $2 output,
/// $0.025 cached input; OpenAI bills no cache writes.
const MINI: Rates = Rates {
    input: 250_000,
    output: 2_000_000,
    read: 25_000,
    write_5m: 250_000,
    write_1h: 250_000,
};

const SONNET_MODEL: &str = "claude-sonnet-4-5";
const MINI_MODEL: &str = "gpt-5-mini";

const BIG_BUDGET: &str = r#"---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: team, namespace: apps}
spec:
  period: Daily
  limit: {usd: "100.00"}
"#;

/// Two timestamps of the same shape (same length, so every later byte
/// keeps its offset).
const TS1: &str = "2026-12-06T10:00:00Z";
const TS2: &str = "2026-12-06T10:00:07Z";

#[derive(Clone, Copy)]
struct Rates {
    input: i128,
    output: i128,
    read: i128,
    write_5m: i128,
    write_1h: i128,
}

/// What a bust wasted, by hand: `lost` tokens taken first from the 5-minute
/// writes, then the 1-hour writes, then the uncached input, each at its
/// rate minus the cache-read rate (`ModelPrices::cache_wasted`).
fn wasted_by_hand(r: Rates, input: u64, write_5m: u64, write_1h: u64, lost: u64) -> i128 {
    let mut left = lost;
    let mut sum = 0i128;
    for (billed, rate) in [
        (write_5m, r.write_5m),
        (write_1h, r.write_1h),
        (input, r.input),
    ] {
        let n = left.min(billed);
        left -= n;
        sum += i128::from(n) * (rate - r.read);
    }
    sum
}

/// About `bytes` bytes of prose without digits or JSON escapes (nothing the
/// monitor takes for a volatile run), varied so that content-defined runs
/// have boundaries, with `marker` in the middle.
fn long_text(bytes: usize, marker: &str) -> String {
    const WORDS: [&str; 24] = [
        "always",
        "review",
        "the",
        "diff",
        "before",
        "committing",
        "changes",
        "keep",
        "tests",
        "green",
        "prefer",
        "small",
        "functions",
        "document",
        "public",
        "items",
        "never",
        "log",
        "secrets",
        "explain",
        "why",
        "not",
        "what",
        "carefully",
    ];
    let mut s = String::from("You are a careful coding agent. ");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut marked = false;
    while s.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        s.push(if x.is_multiple_of(11) { '.' } else { ' ' });
        if !marked && s.len() >= bytes / 2 {
            s.push_str(marker);
            s.push(' ');
            marked = true;
        }
    }
    s
}

/// The fake's tokens for `bytes` raw bytes of a prefix.
fn floor4(bytes: usize) -> u64 {
    (bytes / 4) as u64
}

/// The fake's billed input for a body of `bytes` bytes.
fn ceil4(bytes: usize) -> u64 {
    bytes.div_ceil(4) as u64
}

/// The monitor's bytes → tokens at the request's own ratio (billed input
/// over rendered prompt bytes), floored.
fn at_ratio(bytes: usize, billed_input: u64, rendered: usize) -> u64 {
    (bytes as u128 * u128::from(billed_input) / rendered as u128) as u64
}

/// Waits (at most 5 s) until the ledger has settled `n` requests in all.
async fn settled(sc: &Sidecar, n: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let l = sc.ledger().await;
        let total: u64 = l["models"]
            .as_array()
            .map(|rows| rows.iter().filter_map(|m| m["requests"].as_u64()).sum())
            .unwrap_or(0);
        if total >= n {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{n} requests not settled within 5 s: {l}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The API and stream mode a bust scenario runs in.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Messages { stream: bool },
    Chat { stream: bool },
    Responses { stream: bool },
}

/// A prompt whose first block is only `Now: <ts>` (shorter than the
/// monitor's smallest content run, so it is one run) followed by a long
/// block the requests share: the content the bust loses is exactly the
/// long block's bytes.
struct Scenario {
    mode: Mode,
    long: String,
}

impl Scenario {
    fn model(&self) -> &'static str {
        match self.mode {
            Mode::Messages { .. } => SONNET_MODEL,
            _ => MINI_MODEL,
        }
    }

    fn rates(&self) -> Rates {
        match self.mode {
            Mode::Messages { .. } => SONNET,
            _ => MINI,
        }
    }

    /// The first block (as sent), holding the timestamp.
    fn head(&self, ts: &str) -> String {
        match self.mode {
            Mode::Messages { .. } => format!(r#"{{"type":"text","text":"Now: {ts}"}}"#),
            Mode::Chat { .. } => format!(r#"{{"role":"system","content":"Now: {ts}"}}"#),
            Mode::Responses { .. } => format!(r#""Now: {ts}""#),
        }
    }

    /// The first block as the monitor renders it: a plain Anthropic text
    /// block is its text literal (Anthropic renders it as a string).
    fn rendered_head(&self, ts: &str) -> String {
        match self.mode {
            Mode::Messages { .. } => format!(r#""Now: {ts}""#),
            _ => self.head(ts),
        }
    }

    /// The long shared block as the monitor renders it (Anthropic: its text
    /// literal, without the block's `cache_control` member).
    fn shared(&self) -> String {
        let long = &self.long;
        match self.mode {
            Mode::Messages { .. } => format!(r#""{long}""#),
            Mode::Chat { .. } => format!(r#"{{"role":"system","content":"{long}"}}"#),
            Mode::Responses { .. } => format!(r#"{{"role":"developer","content":"{long}"}}"#),
        }
    }

    /// The last block, the question.
    fn question(&self) -> String {
        match self.mode {
            Mode::Messages { .. } => r#""What changed?""#.into(),
            _ => r#"{"role":"user","content":"What changed?"}"#.into(),
        }
    }

    fn body(&self, ts: &str) -> String {
        let (head, long, q) = (self.head(ts), &self.long, self.question());
        match self.mode {
            Mode::Messages { stream } => format!(
                r#"{{"model":"{SONNET_MODEL}","max_tokens":64,"stream":{stream},"system":[{head},{{"type":"text","text":"{long}","cache_control":{{"type":"ephemeral"}}}}],"messages":[{{"role":"user","content":{q}}}]}}"#
            ),
            Mode::Chat { stream } => format!(
                r#"{{"model":"{MINI_MODEL}","max_tokens":64,"stream":{stream},"messages":[{head},{shared},{q}]}}"#,
                shared = self.shared()
            ),
            Mode::Responses { stream } => format!(
                r#"{{"model":"{MINI_MODEL}","max_output_tokens":64,"stream":{stream},"instructions":{head},"input":[{shared},{q}]}}"#,
                shared = self.shared()
            ),
        }
    }

    /// The rendered prompt bytes (every block as the monitor sees it).
    fn rendered(&self, ts: &str) -> usize {
        self.rendered_head(ts).len() + self.shared().len() + self.question().len()
    }

    /// The section label the bust must name and the timestamp's offset in
    /// that section's value.
    fn expected_place(&self) -> (&'static str, u64) {
        match self.mode {
            // "Now: ⟨ts⟩ (the text of the block {"type":"text","text":…})
            Mode::Messages { .. } => ("system[0]", 6),
            // {"role":"system","content":"Now: ⟨ts⟩
            Mode::Chat { .. } => ("messages[0]", 33),
            // "Now: ⟨ts⟩
            Mode::Responses { .. } => ("instructions", 6),
        }
    }

    async fn send(&self, sc: &Sidecar, ts: &str) -> Reply {
        let body = self.body(ts);
        let r = match self.mode {
            Mode::Messages { .. } => sc.anthropic(&body, &[]).await,
            Mode::Chat { .. } => sc.openai("/v1/chat/completions", &body, &[]).await,
            Mode::Responses { .. } => sc.openai("/v1/responses", &body, &[]).await,
        };
        assert_eq!(r.status, 200, "{:?}: {}", self.mode, r.text());
        r
    }

    /// What the fake reads from its cache when the whole prompt of a
    /// request is one seen before.
    fn full_read(&self) -> u64 {
        match self.mode {
            Mode::Messages { .. } => {
                // Up to the breakpoint: the head and the long block with
                // its cache_control member, raw.
                let bp = format!(
                    r#"{{"type":"text","text":"{}","cache_control":{{"type":"ephemeral"}}}}"#,
                    self.long
                );
                floor4(self.head(TS2).len() + bp.len())
            }
            _ => {
                let tokens = floor4(self.rendered(TS2));
                1024 + (tokens - 1024) / 128 * 128
            }
        }
    }
}

/// One run of assertion 1 for `mode`: a bust at the timestamp, its price,
/// its metric, and what a repeat saves.
async fn volatile_timestamp_is_a_priced_bust(mode: Mode) {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let s = Scenario {
        mode,
        long: long_text(7_000, "shared-context"),
    };
    let (model, rates) = (s.model(), s.rates());
    s.send(&sc, TS1).await;
    s.send(&sc, TS2).await;
    let l = settled(&sc, 2).await;
    let log = fake.log();
    assert_eq!(log.len(), 2);
    let u1 = log[0].usage.clone().unwrap();
    let u2 = log[1].usage.clone().unwrap();
    // The fake wrote (Anthropic) or remembered (OpenAI) the first prompt and
    // could not read any of it for the second: its first bytes differ.
    assert_eq!(u1.cache_read, 0, "{mode:?}");
    assert_eq!(u2.cache_read, 0, "{mode:?}");
    assert_eq!(u2.input_total, ceil4(log[1].body.len()), "{mode:?}");
    if let Mode::Messages { .. } = mode {
        assert_eq!(u1.cache_write, s.full_read(), "{mode:?}");
        assert_eq!(u2.cache_write, s.full_read(), "{mode:?}");
    }

    let busts = l["prompt_cache"]["recent_busts"].as_array().unwrap();
    assert_eq!(busts.len(), 1, "{mode:?}: {l}");
    let b = &busts[0];
    let (section, offset) = s.expected_place();
    assert_eq!(b["model"], model, "{mode:?}");
    assert_eq!(b["reason"], "volatile_prefix", "{mode:?}: {b}");
    assert_eq!(b["section"], section, "{mode:?}: {b}");
    assert_eq!(b["offset"], offset, "{mode:?}: {b}");
    assert_eq!(
        &s.rendered_head(TS2)[offset as usize..offset as usize + TS2.len()],
        TS2,
        "the offset is the timestamp's"
    );
    assert_eq!(b["change"], "timestamp", "{mode:?}: {b}");
    assert_eq!(b["repeats"], 1, "{mode:?}: {b}");
    // Lost: what the two prompts share before the point the provider
    // caches to, at the request's billed-input-per-byte ratio. Anthropic:
    // the long block up to its breakpoint; OpenAI, which caches the whole
    // prompt: the long block and the question.
    let lost_bytes = match mode {
        Mode::Messages { .. } => s.shared().len(),
        _ => s.shared().len() + s.question().len(),
    };
    let lost = at_ratio(lost_bytes, u2.input_total, s.rendered(TS2));
    assert_eq!(b["lost_tokens"], lost, "{mode:?}: {b}");
    // Priced at the billed rate minus the cache-read rate: Anthropic bills
    // the lost content as a 5-minute cache write, OpenAI as uncached input.
    let (uncached, write_5m) = match mode {
        Mode::Messages { .. } => (
            u2.input_total - u2.cache_write,
            u2.cache_write - u2.cache_write_1h,
        ),
        _ => (u2.input_total, 0),
    };
    let wasted = wasted_by_hand(rates, uncached, write_5m, 0, lost);
    assert!(wasted > 0);
    assert_eq!(cost_str(&b["wasted_usd"]), wasted, "{mode:?}: {b}");
    let row = sc.model_row(model).await;
    assert_eq!(row["cache_busts"], 1, "{mode:?}: {row}");
    assert_eq!(cost_str(&row["cache_wasted_usd"]), wasted, "{mode:?}");
    assert_eq!(cost_str(&row["cache_saved_usd"]), 0, "{mode:?}");

    let m = metrics(&sc).await;
    let busts_metric = sample(
        &m,
        "tokenwarden_cache_busts_total",
        &[("reason", "volatile_prefix"), ("change", "timestamp")],
    );
    assert_eq!(busts_metric, Some(1.0), "{mode:?}");
    // The monitor's memory: a gauge, the same figure as /ledger's.
    let bytes = sample(&m, "tokenwarden_cache_monitor_bytes", &[]).unwrap();
    assert!(bytes > 0.0);
    assert_eq!(Some(bytes), l["prompt_cache"]["monitor_bytes"].as_f64());
    let wasted_metric = sample(
        &m,
        "tokenwarden_cache_wasted_usd_total",
        &[("served_model", model)],
    )
    .unwrap();
    assert!(
        (wasted_metric - wasted as f64 / 1e12).abs() < 1e-12,
        "{mode:?}: {wasted_metric}"
    );

    // The same prompt again: read from the cache, no bust, and the record
    // says what the reads saved.
    s.send(&sc, TS2).await;
    settled(&sc, 3).await;
    let u3 = fake.log()[2].usage.clone().unwrap();
    assert_eq!(u3.cache_read, s.full_read(), "{mode:?}");
    let saved = i128::from(u3.cache_read) * (rates.input - rates.read);
    let row = sc.model_row(model).await;
    assert_eq!(cost_str(&row["cache_saved_usd"]), saved, "{mode:?}");
    assert_eq!(row["cache_busts"], 1, "{mode:?}: no new bust");
    assert_eq!(row["cache_read_tokens"], u3.cache_read, "{mode:?}");
    let m = metrics(&sc).await;
    let saved_metric = sample(
        &m,
        "tokenwarden_cache_saved_usd_total",
        &[("served_model", model)],
    )
    .unwrap();
    assert!((saved_metric - saved as f64 / 1e12).abs() < 1e-12);
    assert_eq!(
        sample(
            &m,
            "tokenwarden_cache_busts_total",
            &[("reason", "volatile_prefix"), ("change", "timestamp")],
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_json_timestamp_bust() {
    volatile_timestamp_is_a_priced_bust(Mode::Messages { stream: false }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_sse_timestamp_bust() {
    volatile_timestamp_is_a_priced_bust(Mode::Messages { stream: true }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_json_timestamp_bust() {
    volatile_timestamp_is_a_priced_bust(Mode::Chat { stream: false }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_sse_timestamp_bust() {
    volatile_timestamp_is_a_priced_bust(Mode::Chat { stream: true }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_json_timestamp_bust() {
    volatile_timestamp_is_a_priced_bust(Mode::Responses { stream: false }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_sse_timestamp_bust() {
    volatile_timestamp_is_a_priced_bust(Mode::Responses { stream: true }).await;
}

/// The usual shape: one system block, the timestamp at its start, the
/// long instructions after it in the same block. The bust names the block
/// and the timestamp's offset; what it lost is the block after the
/// monitor's first content run (64 to 1,024 bytes), priced as billed.
#[tokio::test(flavor = "multi_thread")]
async fn timestamp_at_the_start_of_one_long_system_block() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let long = long_text(7_000, "one-block");
    // The block as the monitor renders it: its text literal.
    let block = |ts: &str| format!(r#""Now: {ts}.\n\n{long}""#);
    let body = |ts: &str| {
        format!(
            r#"{{"model":"{SONNET_MODEL}","max_tokens":64,"system":[{{"type":"text","text":"Now: {ts}.\n\n{long}","cache_control":{{"type":"ephemeral"}}}}],"messages":[{{"role":"user","content":"Go on."}}]}}"#
        )
    };
    for ts in [TS1, TS2] {
        let r = sc.anthropic(&body(ts), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let l = settled(&sc, 2).await;
    let u2 = fake.log()[1].usage.clone().unwrap();
    assert_eq!(u2.cache_read, 0);
    let busts = l["prompt_cache"]["recent_busts"].as_array().unwrap();
    assert_eq!(busts.len(), 1, "{l}");
    let b = &busts[0];
    assert_eq!(b["reason"], "volatile_prefix", "{b}");
    assert_eq!(b["section"], "system[0]", "{b}");
    // "Now: ⟨ts⟩, the text of {"type":"text","text":…}
    assert_eq!(b["offset"], 6, "{b}");
    assert_eq!(b["change"], "timestamp", "{b}");
    let rendered = block(TS2).len() + r#""Go on.""#.len();
    let lost = b["lost_tokens"].as_u64().unwrap();
    let bound = |bytes: usize| at_ratio(bytes, u2.input_total, rendered);
    assert!(
        lost <= bound(block(TS2).len() - 64) && lost >= bound(block(TS2).len() - 1024),
        "lost {lost} is the block after its first run"
    );
    let wasted = wasted_by_hand(
        SONNET,
        u2.input_total - u2.cache_write,
        u2.cache_write,
        0,
        lost,
    );
    assert_eq!(cost_str(&b["wasted_usd"]), wasted);
    assert_eq!(
        cost_str(&sc.model_row(SONNET_MODEL).await["cache_wasted_usd"]),
        wasted
    );
}

/// A prompt sent again after the cache's TTL (shortened on both sides) is
/// billed in full again, and that is an expiry, not a bust.
#[tokio::test(flavor = "multi_thread")]
async fn ttl_expiry_is_not_a_bust() {
    let ttl = Duration::from_millis(300);
    let fake = FakeProvider::start(FakeConfig {
        cache_ttl_override: Some(ttl),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let sc = Sidecar::start_with(
        &policy(&fake, "", BIG_BUDGET),
        &["--prompt-cache-ttl-ms", "300"],
    );
    let s = Scenario {
        mode: Mode::Messages { stream: false },
        long: long_text(7_000, "expiring"),
    };
    s.send(&sc, TS1).await;
    tokio::time::sleep(ttl * 2).await;
    s.send(&sc, TS1).await;
    let l = settled(&sc, 2).await;
    let log = fake.log();
    let u2 = log[1].usage.clone().unwrap();
    assert_eq!(u2.cache_read, 0, "the fake's entry expired");
    assert_eq!(u2.cache_write, s.full_read(), "and was written again");
    assert_eq!(l["prompt_cache"]["recent_busts"], serde_json::json!([]));
    let row = sc.model_row(SONNET_MODEL).await;
    assert_eq!(row["cache_busts"], 0);
    assert_eq!(cost_str(&row["cache_wasted_usd"]), 0);
    let m = metrics(&sc).await;
    assert_eq!(
        sample(&m, "tokenwarden_cache_expiries_total", &[]),
        Some(1.0)
    );
    assert!(
        sample(&m, "tokenwarden_cache_busts_total", &[]).is_none_or(|v| v == 0.0),
        "{m}"
    );
    // Within the TTL it is read again: neither an expiry nor a bust.
    s.send(&sc, TS1).await;
    settled(&sc, 3).await;
    assert_eq!(
        fake.log()[2].usage.clone().unwrap().cache_read,
        s.full_read()
    );
    let m = metrics(&sc).await;
    assert_eq!(
        sample(&m, "tokenwarden_cache_expiries_total", &[]),
        Some(1.0)
    );
    assert_eq!(sc.model_row(SONNET_MODEL).await["cache_busts"], 0);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Prompts with busts through every API: their text appears in none of
/// `/ledger`, `/metrics`, the sidecar's log (at trace level) and the
/// journal under `--state-dir`.
#[tokio::test(flavor = "multi_thread")]
async fn no_prompt_text_leaves_the_request_path() {
    const MARKER: &str = "zebra-quokka-marker-text";
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let mut sc = Sidecar::unstarted(&policy(&fake, "", BIG_BUDGET), &[]);
    let log_path = sc.dir.path().join("sidecar.log");
    sc.log = Some(log_path.clone());
    sc.rust_log = "trace".into();
    sc.spawn();
    let modes = [
        Mode::Messages { stream: false },
        Mode::Messages { stream: true },
        Mode::Chat { stream: false },
        Mode::Chat { stream: true },
        Mode::Responses { stream: false },
        Mode::Responses { stream: true },
    ];
    for mode in modes {
        let s = Scenario {
            mode,
            long: long_text(6_000, MARKER),
        };
        assert!(s.body(TS1).contains(MARKER));
        s.send(&sc, TS1).await;
        s.send(&sc, TS2).await;
    }
    let l = settled(&sc, 12).await;
    let busts = l["prompt_cache"]["recent_busts"].as_array().unwrap();
    assert!(!busts.is_empty(), "{l}");
    let ledger = sc.admin_get("/ledger").await.text();
    let m = metrics(&sc).await;
    assert!(!ledger.contains(MARKER), "{ledger}");
    assert!(!m.contains(MARKER));
    // The log has the busts (so it was written), not the text.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("prompt-cache bust"), "{log}");
    assert!(!log.contains(MARKER), "{log}");
    let mut files = Vec::new();
    files_under(&sc.state_dir(), &mut files);
    assert!(!files.is_empty());
    let mut journal_bytes = 0;
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        journal_bytes += bytes.len();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{} holds prompt text",
            f.display()
        );
    }
    assert!(journal_bytes > 0);
}

/// The policy's `caching` section, indented for [`policy`].
fn caching(yaml: &str) -> String {
    format!("  caching:\n{yaml}")
}

/// An Anthropic text block, optionally with the 5-minute breakpoint.
fn text_block(text: &str, marked: bool) -> String {
    if marked {
        format!(r#"{{"type":"text","text":"{text}","cache_control":{{"type":"ephemeral"}}}}"#)
    } else {
        format!(r#"{{"type":"text","text":"{text}"}}"#)
    }
}

/// `automaticBreakpoints`: the sidecar marks the system prompt and the
/// last message of a request without `cache_control`; the fake receives
/// exactly those bytes, and a conversation then reads its prefix from the
/// cache turn after turn. A request with its own `cache_control` is not
/// touched.
#[tokio::test(flavor = "multi_thread")]
async fn automatic_breakpoints_make_a_conversation_hit() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let spec = caching("    anthropic: {automaticBreakpoints: true}\n");
    let sc = Sidecar::start(&policy(&fake, &spec, BIG_BUDGET));
    let long = long_text(7_000, "auto");
    let turns = ["First question?", "Second question?", "Third question?"];
    let answers = ["First answer.", "Second answer."];
    // The app sends each turn's whole conversation, no cache_control.
    let app_body = |turn: usize| {
        let mut msgs = Vec::new();
        for i in 0..=turn {
            msgs.push(format!(
                r#"{{"role":"user","content":[{}]}}"#,
                text_block(turns[i], false)
            ));
            if i < turn {
                msgs.push(format!(
                    r#"{{"role":"assistant","content":[{}]}}"#,
                    text_block(answers[i], false)
                ));
            }
        }
        format!(
            r#"{{"model":"{SONNET_MODEL}","max_tokens":64,"system":"{long}","messages":[{}]}}"#,
            msgs.join(",")
        )
    };

    let r = sc.anthropic(&app_body(0), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-cache-control"), Some("inserted"));
    // Turn 1 on the wire: the system string became one marked text block,
    // the last (only) content block got the member; nothing else moved.
    let expected = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":64,"system":[{{"type":"text","text":"{long}","cache_control":{{"type":"ephemeral"}}}}],"messages":[{{"role":"user","content":[{{"type":"text","text":"First question?","cache_control":{{"type":"ephemeral"}}}}]}}]}}"#
    );
    assert_eq!(std::str::from_utf8(&fake.log()[0].body).unwrap(), expected);

    for turn in [1, 2] {
        let r = sc.anthropic(&app_body(turn), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-tokenwarden-cache-control"), Some("inserted"));
    }
    let l = settled(&sc, 3).await;
    let log = fake.log();
    let usage: Vec<_> = log.iter().map(|e| e.usage.clone().unwrap()).collect();
    // Raw bytes of the blocks as the fake sees them.
    let sys = text_block(&long, true).len();
    let plain = |t: &str| text_block(t, false).len();
    let marked = |t: &str| text_block(t, true).len();
    // Turn 1: nothing to read; everything up to the last breakpoint written.
    assert_eq!(usage[0].cache_read, 0);
    assert_eq!(usage[0].cache_write, floor4(sys + marked(turns[0])));
    // Turn 2: reads the system and the first question (turn 1's entry),
    // writes up to its new last breakpoint.
    let r2 = floor4(sys + plain(turns[0]));
    assert_eq!(usage[1].cache_read, r2);
    assert_eq!(
        usage[1].cache_write,
        floor4(sys + plain(turns[0]) + plain(answers[0]) + marked(turns[1])) - r2
    );
    // Turn 3: reads through turn 2's breakpoint.
    let r3 = floor4(sys + plain(turns[0]) + plain(answers[0]) + plain(turns[1]));
    assert_eq!(usage[2].cache_read, r3);
    assert_eq!(
        usage[2].cache_write,
        floor4(
            sys + plain(turns[0])
                + plain(answers[0])
                + plain(turns[1])
                + plain(answers[1])
                + marked(turns[2])
        ) - r3
    );
    assert!(
        usage[2].cache_read * 10 > usage[2].input_total * 9,
        "most of turn 3 is read from the cache: {:?}",
        usage[2]
    );
    // Every turn's body as sent was the app's with two members added.
    for (i, e) in log.iter().enumerate() {
        let sent = std::str::from_utf8(&e.body).unwrap();
        assert_eq!(
            sent.len(),
            app_body(i).len()
                + 2 * r#","cache_control":{"type":"ephemeral"}"#.len()
                + r#"[{"type":"text","text":}]"#.len(),
            "turn {}",
            i + 1
        );
    }
    // A growing conversation is not a bust.
    assert_eq!(l["prompt_cache"]["recent_busts"], serde_json::json!([]));
    let row = sc.model_row(SONNET_MODEL).await;
    assert_eq!(row["cache_busts"], 0);
    assert_eq!(row["cache_read_tokens"], r2 + r3);
    assert_eq!(
        cost_str(&row["cache_saved_usd"]),
        i128::from(r2 + r3) * (SONNET.input - SONNET.read)
    );
    let m = metrics(&sc).await;
    assert_eq!(
        sample(
            &m,
            "tokenwarden_cache_rewrites_total",
            &[("kind", "breakpoints")]
        ),
        Some(3.0)
    );

    // The app's own cache_control: byte for byte, no header, not counted.
    let own = format!(
        r#"{{"model":"{SONNET_MODEL}","max_tokens":64,"system":[{{"type":"text","text":"{long}", "cache_control": {{"type":"ephemeral"}}}}],"messages":[{{"role":"user","content":"Own breakpoints."}}]}}"#
    );
    let r = sc.anthropic(&own, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-cache-control"), None);
    assert_eq!(std::str::from_utf8(&fake.log()[3].body).unwrap(), own);
    let m = metrics(&sc).await;
    assert_eq!(
        sample(
            &m,
            "tokenwarden_cache_rewrites_total",
            &[("kind", "breakpoints")]
        ),
        Some(3.0)
    );

    // A stream is marked the same way, a string content becoming a block.
    let stream = format!(
        r#"{{"model":"{SONNET_MODEL}","max_tokens":64,"stream":true,"system":"{long}","messages":[{{"role":"user","content":"Stream?"}}]}}"#
    );
    let r = sc.anthropic(&stream, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-cache-control"), Some("inserted"));
    assert_eq!(
        std::str::from_utf8(&fake.log()[4].body).unwrap(),
        format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"system":[{{"type":"text","text":"{long}","cache_control":{{"type":"ephemeral"}}}}],"messages":[{{"role":"user","content":[{{"type":"text","text":"Stream?","cache_control":{{"type":"ephemeral"}}}}]}}]}}"#
        )
    );
    assert_eq!(
        sample(
            &metrics(&sc).await,
            "tokenwarden_cache_rewrites_total",
            &[("kind", "breakpoints")]
        ),
        Some(4.0)
    );
}

/// `ttl: 1h`: the inserted member asks for the 1-hour TTL, and the record
/// bills those writes at twice the input price.
#[tokio::test(flavor = "multi_thread")]
async fn one_hour_breakpoints_bill_twice_the_input_price() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let spec = caching("    anthropic: {automaticBreakpoints: true, ttl: 1h}\n");
    let sc = Sidecar::start(&policy(&fake, &spec, BIG_BUDGET));
    let long = long_text(7_000, "hour");
    let body = format!(
        r#"{{"model":"{SONNET_MODEL}","max_tokens":64,"system":"{long}","messages":[{{"role":"user","content":"Question?"}}]}}"#
    );
    let r = sc.anthropic(&body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-cache-control"), Some("inserted"));
    let expected = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":64,"system":[{{"type":"text","text":"{long}","cache_control":{{"type":"ephemeral","ttl":"1h"}}}}],"messages":[{{"role":"user","content":[{{"type":"text","text":"Question?","cache_control":{{"type":"ephemeral","ttl":"1h"}}}}]}}]}}"#
    );
    let log = fake.log();
    assert_eq!(std::str::from_utf8(&log[0].body).unwrap(), expected);
    settled(&sc, 1).await;
    let u = log[0].usage.clone().unwrap();
    let marked_1h = |t: &str| {
        format!(
            r#"{{"type":"text","text":"{t}","cache_control":{{"type":"ephemeral","ttl":"1h"}}}}"#
        )
        .len()
    };
    let w = floor4(marked_1h(&long) + marked_1h("Question?"));
    assert_eq!(u.cache_write, w);
    assert_eq!(u.cache_write_1h, w, "all of it at the 1-hour TTL");
    let uncached = u.input_total - w;
    let row = sc.model_row(SONNET_MODEL).await;
    assert_eq!(row["cache_write_tokens"], w);
    assert_eq!(row["cache_write_1h_tokens"], w);
    assert_eq!(row["input_tokens"], uncached);
    let want = i128::from(uncached) * SONNET.input
        + i128::from(w) * SONNET.write_1h
        + i128::from(u.output) * SONNET.output;
    assert_eq!(SONNET.write_1h, 2 * SONNET.input);
    assert_eq!(cost_str(&row["cost_usd"]), want);
    assert_eq!(picos(r.header("x-tokenwarden-cost-usd").unwrap()), want);
}

/// `promptCacheKey`: requests without a key get the workload's key as the
/// last member, byte for byte; a request with its own key is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn prompt_cache_key_is_appended_unless_the_app_sets_one() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let spec = caching("    openai: {promptCacheKey: true}\n");
    let sc = Sidecar::start(&policy(&fake, &spec, BIG_BUDGET));
    let chat = r#"{"model":"gpt-5-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc.openai("/v1/chat/completions", chat, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-tokenwarden-cache-control"),
        Some("prompt-cache-key")
    );
    assert_eq!(
        std::str::from_utf8(&fake.log()[0].body).unwrap(),
        r#"{"model":"gpt-5-mini","messages":[{"role":"user","content":"hi"}],"prompt_cache_key":"tokenwarden:apps/agent"}"#
    );
    let resp = r#"{"model":"gpt-5-mini","input":"hi"}"#;
    let r = sc.openai("/v1/responses", resp, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-tokenwarden-cache-control"),
        Some("prompt-cache-key")
    );
    assert_eq!(
        std::str::from_utf8(&fake.log()[1].body).unwrap(),
        r#"{"model":"gpt-5-mini","input":"hi","prompt_cache_key":"tokenwarden:apps/agent"}"#
    );
    let own = r#"{"model":"gpt-5-mini","prompt_cache_key":"mine","messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc.openai("/v1/chat/completions", own, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tokenwarden-cache-control"), None);
    assert_eq!(std::str::from_utf8(&fake.log()[2].body).unwrap(), own);
    let m = metrics(&sc).await;
    assert_eq!(
        sample(
            &m,
            "tokenwarden_cache_rewrites_total",
            &[("kind", "prompt_cache_key")]
        ),
        Some(2.0)
    );
    // A stream gets the key and the header too.
    let stream =
        r#"{"model":"gpt-5-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc.openai("/v1/chat/completions", stream, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-tokenwarden-cache-control"),
        Some("prompt-cache-key")
    );
    assert_eq!(
        std::str::from_utf8(&fake.log()[3].body).unwrap(),
        r#"{"model":"gpt-5-mini","stream":true,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true},"prompt_cache_key":"tokenwarden:apps/agent"}"#
    );
    fake.clear_log();
    // Anthropic requests are not OpenAI's: no key, no header.
    let msg = r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = sc.anthropic(msg, &[]).await;
    assert_eq!(r.header("x-tokenwarden-cache-control"), None);
    assert_eq!(std::str::from_utf8(&fake.log()[0].body).unwrap(), msg);
}

/// The same volatile run busting again and again: each bust is counted and
/// priced, and `/ledger` says how often that section and change repeated.
#[tokio::test(flavor = "multi_thread")]
async fn a_timestamp_that_changes_every_request_repeats() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let s = Scenario {
        mode: Mode::Messages { stream: false },
        long: long_text(7_000, "again"),
    };
    let stamps = [
        "2026-12-06T10:00:00Z",
        "2026-12-06T10:00:01Z",
        "2026-12-06T10:00:02Z",
        "2026-12-06T10:00:03Z",
    ];
    for ts in stamps {
        s.send(&sc, ts).await;
    }
    let l = settled(&sc, 4).await;
    let busts = l["prompt_cache"]["recent_busts"].as_array().unwrap();
    let repeats: Vec<_> = busts.iter().map(|b| b["repeats"].clone()).collect();
    assert_eq!(repeats, [3, 2, 1], "newest first: {l}");
    assert!(
        busts
            .iter()
            .all(|b| b["section"] == "system[0]" && b["offset"] == 6 && b["change"] == "timestamp")
    );
    let mut wasted = 0;
    for (i, e) in fake.log().iter().enumerate().skip(1) {
        let u = e.usage.clone().unwrap();
        assert_eq!(u.cache_read, 0);
        let lost = at_ratio(s.shared().len(), u.input_total, s.rendered(stamps[i]));
        wasted += wasted_by_hand(
            SONNET,
            u.input_total - u.cache_write,
            u.cache_write,
            0,
            lost,
        );
    }
    let row = sc.model_row(SONNET_MODEL).await;
    assert_eq!(row["cache_busts"], 3);
    assert_eq!(cost_str(&row["cache_wasted_usd"]), wasted);
    assert_eq!(
        sample(
            &metrics(&sc).await,
            "tokenwarden_cache_busts_total",
            &[("reason", "volatile_prefix"), ("change", "timestamp")],
        ),
        Some(3.0)
    );
}

/// Anthropic's automatic caching (a top-level `cache_control`, the
/// breakpoint on the last block): the timestamp bust is found the same
/// way, and what it lost runs to the end of the prompt.
#[tokio::test(flavor = "multi_thread")]
async fn top_level_cache_control_timestamp_bust() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let long = long_text(7_000, "top-level");
    let head = |ts: &str| format!(r#"{{"type":"text","text":"Now: {ts}"}}"#);
    let shared = format!(r#"{{"type":"text","text":"{long}"}}"#);
    let question = r#""What changed?""#;
    // As the monitor renders them: a plain text block is its text.
    let (r_head, r_shared) = (format!(r#""Now: {TS2}""#), format!(r#""{long}""#));
    let body = |ts: &str| {
        format!(
            r#"{{"model":"{SONNET_MODEL}","max_tokens":64,"cache_control":{{"type":"ephemeral"}},"system":[{h},{shared}],"messages":[{{"role":"user","content":{question}}}]}}"#,
            h = head(ts)
        )
    };
    for ts in [TS1, TS2, TS2] {
        let r = sc.anthropic(&body(ts), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let l = settled(&sc, 3).await;
    let usage: Vec<_> = fake
        .log()
        .iter()
        .map(|e| e.usage.clone().unwrap())
        .collect();
    // The whole prompt is the cached prefix.
    let prefix = floor4(head(TS2).len() + shared.len() + question.len());
    assert_eq!(usage[1].cache_read, 0);
    assert_eq!(usage[1].cache_write, prefix);
    assert_eq!(usage[2].cache_read, prefix);
    let busts = l["prompt_cache"]["recent_busts"].as_array().unwrap();
    assert_eq!(busts.len(), 1, "{l}");
    let b = &busts[0];
    assert_eq!(
        (&b["reason"], &b["section"], &b["offset"], &b["change"]),
        (
            &"volatile_prefix".into(),
            &"system[0]".into(),
            &6.into(),
            &"timestamp".into()
        )
    );
    let rendered = r_head.len() + r_shared.len() + question.len();
    let lost = at_ratio(
        r_shared.len() + question.len(),
        usage[1].input_total,
        rendered,
    );
    assert_eq!(b["lost_tokens"], lost);
    let u = &usage[1];
    let wasted = wasted_by_hand(
        SONNET,
        u.input_total - u.cache_write,
        u.cache_write,
        0,
        lost,
    );
    assert_eq!(cost_str(&b["wasted_usd"]), wasted);
    let row = sc.model_row(SONNET_MODEL).await;
    assert_eq!(cost_str(&row["cache_wasted_usd"]), wasted);
    assert_eq!(
        cost_str(&row["cache_saved_usd"]),
        i128::from(prefix) * (SONNET.input - SONNET.read)
    );
}

/// OpenAI's `prompt_cache_key` is part of where a prompt is cached
/// ("combined with the prefix hash" to route it): two users of the same
/// app, each with their own key, do not share a cache, and the second
/// one's full bill is not a provider miss.
#[tokio::test(flavor = "multi_thread")]
async fn different_prompt_cache_keys_are_not_a_provider_miss() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let long = long_text(7_000, "per-user");
    for key in ["user-a", "user-b"] {
        let body = format!(
            r#"{{"model":"{MINI_MODEL}","prompt_cache_key":"{key}","messages":[{{"role":"system","content":"{long}"}},{{"role":"user","content":"hi"}}]}}"#
        );
        let r = sc.openai("/v1/chat/completions", &body, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let l = settled(&sc, 2).await;
    let reads: Vec<u64> = fake
        .log()
        .iter()
        .map(|e| e.usage.clone().unwrap().cache_read)
        .collect();
    assert_eq!(reads, [0, 0], "separate caches per key");
    assert_eq!(
        l["prompt_cache"]["recent_busts"],
        serde_json::json!([]),
        "{l}"
    );
    let row = sc.model_row(MINI_MODEL).await;
    assert_eq!(row["cache_busts"], 0);
    assert_eq!(cost_str(&row["cache_wasted_usd"]), 0);
}

/// With automatic breakpoints the monitor sees the body as sent: a string
/// `system` became one text block, so a timestamp at its start is
/// reported in `system[0]`, at its offset inside that block's text. The figures
/// survive a restart (they are in the journal's records).
#[tokio::test(flavor = "multi_thread")]
async fn inserted_breakpoints_then_a_timestamp_bust_survives_a_restart() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let spec = caching("    anthropic: {automaticBreakpoints: true}\n");
    let mut sc = Sidecar::start(&policy(&fake, &spec, BIG_BUDGET));
    let long = long_text(7_000, "restart");
    let body = |ts: &str| {
        format!(
            r#"{{"model":"{SONNET_MODEL}","max_tokens":64,"system":"Now: {ts}. {long}","messages":[{{"role":"user","content":"Next?"}}]}}"#
        )
    };
    for ts in [TS1, TS2] {
        let r = sc.anthropic(&body(ts), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-tokenwarden-cache-control"), Some("inserted"));
    }
    let l = settled(&sc, 2).await;
    let b = &l["prompt_cache"]["recent_busts"][0];
    assert_eq!(b["reason"], "volatile_prefix", "{l}");
    assert_eq!(b["section"], "system[0]", "{b}");
    // "Now: ⟨ts⟩: the text of the block the string became.
    assert_eq!(b["offset"], 6, "{b}");
    assert_eq!(b["change"], "timestamp", "{b}");
    let u = fake.log()[1].usage.clone().unwrap();
    let lost = b["lost_tokens"].as_u64().unwrap();
    let wasted = wasted_by_hand(
        SONNET,
        u.input_total - u.cache_write,
        u.cache_write,
        0,
        lost,
    );
    let before = sc.model_row(SONNET_MODEL).await;
    assert_eq!(before["cache_busts"], 1);
    assert_eq!(cost_str(&before["cache_wasted_usd"]), wasted);

    sc.kill();
    sc.spawn();
    let after = sc.model_row(SONNET_MODEL).await;
    for k in [
        "requests",
        "cache_busts",
        "cache_wasted_usd",
        "cache_saved_usd",
        "cache_write_tokens",
        "cost_usd",
    ] {
        assert_eq!(after[k], before[k], "{k} after a restart");
    }
}

/// The same prompt again within the TTL, but the provider's cache lost it
/// (emptied here): nothing changed in the prompt, so it is a provider miss
/// with no section and change `none`, its loss what should have been read.
async fn provider_miss(mode: Mode) {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let s = Scenario {
        mode,
        long: long_text(7_000, "evicted"),
    };
    s.send(&sc, TS1).await;
    settled(&sc, 1).await;
    fake.clear_cache();
    s.send(&sc, TS1).await;
    let l = settled(&sc, 2).await;
    let u = fake.log()[1].usage.clone().unwrap();
    assert_eq!(u.cache_read, 0, "{mode:?}");
    let busts = l["prompt_cache"]["recent_busts"].as_array().unwrap();
    assert_eq!(busts.len(), 1, "{mode:?}: {l}");
    let b = &busts[0];
    assert_eq!(b["reason"], "provider_miss", "{b}");
    assert_eq!(b["section"], "", "{b}");
    assert_eq!(b["offset"], 0, "{b}");
    assert_eq!(b["change"], "none", "{b}");
    let rendered = s.rendered(TS1);
    let (lost, uncached, write_5m, rates) = match mode {
        Mode::Messages { .. } => {
            // Up to the breakpoint: the head and the long block (as
            // rendered: their texts), at the request's ratio.
            let expected = at_ratio(
                s.rendered_head(TS1).len() + s.shared().len(),
                u.input_total,
                rendered,
            );
            (
                expected,
                u.input_total - u.cache_write,
                u.cache_write,
                SONNET,
            )
        }
        _ => {
            let t = at_ratio(rendered, u.input_total, rendered);
            (1024 + (t - 1024) / 128 * 128, u.input_total, 0, MINI)
        }
    };
    assert_eq!(b["lost_tokens"], lost, "{mode:?}: {b}");
    let wasted = wasted_by_hand(rates, uncached, write_5m, 0, lost);
    assert_eq!(cost_str(&b["wasted_usd"]), wasted, "{mode:?}");
    assert_eq!(
        sample(
            &metrics(&sc).await,
            "tokenwarden_cache_busts_total",
            &[("reason", "provider_miss"), ("change", "none")],
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_provider_miss() {
    provider_miss(Mode::Messages { stream: false }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_provider_miss() {
    provider_miss(Mode::Chat { stream: true }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_provider_miss() {
    provider_miss(Mode::Responses { stream: false }).await;
}

/// Two requests with the same prompt at once, as parallel sub-agents send
/// them: the first one (a slow stream) writes the cache, the second one,
/// sent while the first still streams, reads it and is settled first.
/// Nothing was lost, so neither is a bust.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_first_request_is_not_a_miss_of_a_faster_later_one() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = std::sync::Arc::new(Sidecar::start(&policy(&fake, "", BIG_BUDGET)));
    let long = long_text(7_000, "parallel");
    let slow = Scenario {
        mode: Mode::Messages { stream: true },
        long: long.clone(),
    };
    let fast = Scenario {
        mode: Mode::Messages { stream: false },
        long,
    };
    let first = {
        let (sc, body) = (sc.clone(), slow.body(TS1));
        tokio::spawn(async move {
            let r = sc
                .anthropic(&body, &[("x-fake-chunk-delay-ms", "150")])
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        })
    };
    // The fake has billed the first request (and written its cache entry).
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.log().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first request reached the fake"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fast.send(&sc, TS1).await;
    first.await.unwrap();
    let l = settled(&sc, 2).await;
    let log = fake.log();
    let (u1, u2) = (log[0].usage.clone().unwrap(), log[1].usage.clone().unwrap());
    assert_eq!((u1.cache_read, u1.cache_write), (0, slow.full_read()));
    assert_eq!((u2.cache_read, u2.cache_write), (fast.full_read(), 0));
    assert_eq!(
        l["prompt_cache"]["recent_busts"],
        serde_json::json!([]),
        "{l}"
    );
    assert_eq!(sc.model_row(SONNET_MODEL).await["cache_busts"], 0);
}

/// Tool definitions sent in another order (as some MCP clients do): the
/// cached prefix starts with the tools, so everything is billed again; the
/// bust names `tools[0]` and `tools_reordered`.
#[tokio::test(flavor = "multi_thread")]
async fn reordered_tools_are_a_volatile_prefix() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = Sidecar::start(&policy(&fake, "", BIG_BUDGET));
    let long = long_text(5_000, "tools");
    let ta = format!(
        r#"{{"name":"read_file","description":"Read a file. {}","input_schema":{{"type":"object","properties":{{"path":{{"type":"string"}}}}}}}}"#,
        &long[..1500]
    );
    let tb = format!(
        r#"{{"name":"write_file","description":"Write a file. {}","input_schema":{{"type":"object","properties":{{"path":{{"type":"string"}},"text":{{"type":"string"}}}}}}}}"#,
        &long[1500..3000]
    );
    let body = |tools: String| {
        format!(
            r#"{{"model":"{SONNET_MODEL}","max_tokens":64,"tools":[{tools}],"system":[{{"type":"text","text":"{long}","cache_control":{{"type":"ephemeral"}}}}],"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    };
    for tools in [format!("{ta},{tb}"), format!("{tb},{ta}")] {
        let r = sc.anthropic(&body(tools), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let l = settled(&sc, 2).await;
    let u = fake.log()[1].usage.clone().unwrap();
    assert_eq!(u.cache_read, 0);
    let busts = l["prompt_cache"]["recent_busts"].as_array().unwrap();
    assert_eq!(busts.len(), 1, "{l}");
    let b = &busts[0];
    assert_eq!(b["reason"], "volatile_prefix", "{b}");
    assert_eq!(b["section"], "tools[0]", "{b}");
    assert_eq!(b["offset"], 0, "{b}");
    assert_eq!(b["change"], "tools_reordered", "{b}");
    // Lost: both tools and the system prompt, up to the breakpoint.
    let system = text_block(&long, false).len();
    let rendered = ta.len() + tb.len() + system + r#""hi""#.len();
    let lost = at_ratio(ta.len() + tb.len() + system, u.input_total, rendered);
    assert_eq!(b["lost_tokens"], lost, "{b}");
    let wasted = wasted_by_hand(
        SONNET,
        u.input_total - u.cache_write,
        u.cache_write,
        0,
        lost,
    );
    assert_eq!(cost_str(&b["wasted_usd"]), wasted);
    assert_eq!(
        sample(
            &metrics(&sc).await,
            "tokenwarden_cache_busts_total",
            &[("reason", "volatile_prefix"), ("change", "tools_reordered")],
        ),
        Some(1.0)
    );
}

/// Breakpoints are inserted only where the prefix reaches the model's
/// minimum cacheable length (1,024 tokens for Sonnet 4.5, or the policy's
/// `minimumTokens`): a shorter prompt reaches the provider unchanged, with
/// no header and no rewrite counted.
#[tokio::test(flavor = "multi_thread")]
async fn no_breakpoints_below_the_minimum() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let spec = caching(
        "    anthropic:\n      automaticBreakpoints: true\n      minimumTokens:\n        - {model: \"claude-opus-*\", tokens: 8192}\n",
    );
    let sc = Sidecar::start(&policy(&fake, &spec, BIG_BUDGET));
    // About 750 tokens: under Sonnet's 1,024.
    let short = long_text(3_000, "short");
    let sonnet = format!(
        r#"{{"model":"{SONNET_MODEL}","max_tokens":64,"system":"{short}","messages":[{{"role":"user","content":"Hi."}}]}}"#
    );
    // About 1,750 tokens: over Opus 4.1's built-in 1,024, under the policy's 8,192.
    let long = long_text(7_000, "long");
    let opus = format!(
        r#"{{"model":"claude-opus-4-1","max_tokens":64,"system":"{long}","messages":[{{"role":"user","content":"Hi."}}]}}"#
    );
    for (i, body) in [&sonnet, &opus].into_iter().enumerate() {
        let r = sc.anthropic(body, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-tokenwarden-cache-control"), None, "{i}");
        assert_eq!(std::str::from_utf8(&fake.log()[i].body).unwrap(), *body);
    }
    // The same long prompt on Sonnet (no override) is marked.
    let marked = opus.replace("claude-opus-4-1", SONNET_MODEL);
    let r = sc.anthropic(&marked, &[]).await;
    assert_eq!(r.header("x-tokenwarden-cache-control"), Some("inserted"));
    let m = metrics(&sc).await;
    assert_eq!(
        sample(
            &m,
            "tokenwarden_cache_rewrites_total",
            &[("kind", "breakpoints")]
        ),
        Some(1.0)
    );
}
