//! Tests of the prefix-stability monitor: literal bodies of both APIs, one
//! per kind of bust and per case that must not be one.

use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::{Fingerprint, Monitor, MonitorLimits, Observation, scan};
use crate::{
    tokens::TokenCounts,
    usage::cache::{BustReason, CacheBust, ChangeKind},
    workload::Endpoint,
};

const KEY: &str = "ns/agent/anthropic/claude-sonnet";

/// `n` varied sentences (a realistic system prompt, ~60 bytes each).
fn rules(n: usize) -> String {
    rules_from(0, n)
}

/// Sentences `from..from + n`.
fn rules_from(from: usize, n: usize) -> String {
    const WHO: [&str; 7] = [
        "user", "operator", "auditor", "customer", "admin", "guest", "tester",
    ];
    const WHAT: [&str; 11] = [
        "billing", "refunds", "latency", "quotas", "routing", "caching", "budgets", "models",
        "errors", "tokens", "limits",
    ];
    const HOW: [&str; 5] = ["great", "some", "extra", "measured", "gentle"];
    (from..from + n)
        .map(|i| {
            format!(
                "Rule {i}: when the {} asks about {}, answer with {} care. ",
                WHO[i % 7],
                WHAT[(i * 3) % 11],
                HOW[(i * 2) % 5]
            )
        })
        .collect()
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_765_000_000 + secs).unwrap()
}

fn billed(input: u64, read: u64, write: u64) -> TokenCounts {
    TokenCounts {
        input_tokens: input,
        output_tokens: 10,
        cache_read_tokens: read,
        cache_write_tokens: write,
        cache_write_1h_tokens: 0,
    }
}

fn fp(endpoint: Endpoint, body: &str) -> Fingerprint {
    Fingerprint::of(endpoint, body.as_bytes()).unwrap()
}

/// `bytes` of a prompt of `rendered` bytes billed `total` input tokens.
fn tokens(bytes: u64, total: u64, rendered: u64) -> u64 {
    bytes * total / rendered
}

/// An Anthropic body: a timestamp block, then the rules with a breakpoint,
/// then the messages.
fn anthropic_ts(ts: &str, cache: bool, messages: &str) -> (String, String) {
    let head = format!(r#"{{"type":"text","text":"Current time: {ts}. Answer tersely."}}"#);
    let cc = if cache {
        r#","cache_control":{"type":"ephemeral"}"#
    } else {
        ""
    };
    let body = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":1024,"system":[{head},{{"type":"text","text":{}{cc}}}],"messages":{messages}}}"#,
        json(&rules(100))
    );
    (body, head)
}

const MESSAGES: &str = r#"[{"role":"user","content":"What is my quota?"}]"#;

#[test]
fn a_timestamp_at_the_start_of_the_anthropic_system_prompt_is_a_volatile_prefix() {
    let mut m = Monitor::new(MonitorLimits::default());
    let (first, _) = anthropic_ts("2026-12-06T09:30:26Z", true, MESSAGES);
    let o = m.observe(
        KEY,
        fp(Endpoint::Messages, &first),
        t(0),
        &billed(12, 0, 1700),
        None,
    );
    assert_eq!(o, Observation::default());

    let (second, head) = anthropic_ts("2026-12-06T09:31:02Z", true, MESSAGES);
    let n = fp(Endpoint::Messages, &second);
    let rendered = n.rendered_bytes();
    // Nothing read: the whole system prompt was written again.
    let bill = billed(12, 0, 1700);
    let got = m.observe(KEY, n, t(36), &bill, None);
    // A plain text block counts as its text (the string literal).
    let rules_block = json(&rules(100));
    let bust = got.bust.expect("a bust");
    let text_at = head.find(r#""Current"#).unwrap();
    assert_eq!(
        bust,
        CacheBust {
            reason: BustReason::VolatilePrefix,
            section: "system[0]".to_owned(),
            offset: (head.find("2026").unwrap() - text_at) as u64,
            change: ChangeKind::Timestamp,
            lost_tokens: tokens(rules_block.len() as u64, 1712, rendered),
        }
    );
    assert!(bust.lost_tokens > 1000, "{}", bust.lost_tokens);
    assert_eq!((got.expired, got.repeats), (false, 1));

    // The same volatile run again: the guard sees it repeat.
    let (third, _) = anthropic_ts("2026-12-06T09:31:40Z", true, MESSAGES);
    let got = m.observe(KEY, fp(Endpoint::Messages, &third), t(74), &bill, None);
    assert_eq!(
        got.bust.map(|b| (b.section, b.change)),
        Some(("system[0]".to_owned(), ChangeKind::Timestamp))
    );
    assert_eq!(got.repeats, 2);
    assert_eq!(
        m.fingerprints(),
        1,
        "a busted prompt takes its predecessor's place"
    );
}

#[test]
fn a_message_sent_as_a_block_then_as_a_string_is_the_same_prefix() {
    // Automatic breakpoints send the last message as a one-block array; the
    // next turn the app sends it as a string again. Anthropic renders both
    // alike and reads the prefix: no bust, however long the message.
    let system = json(&rules(60));
    let pasted = json(&rules_from(60, 40));
    let turn1 = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":100,"system":[{{"type":"text","text":{system},"cache_control":{{"type":"ephemeral"}}}}],"messages":[{{"role":"user","content":[{{"type":"text","text":{pasted},"cache_control":{{"type":"ephemeral"}}}}]}}]}}"#
    );
    let next = json(&rules_from(100, 40));
    let turn2 = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":100,"system":[{{"type":"text","text":{system},"cache_control":{{"type":"ephemeral"}}}}],"messages":[{{"role":"user","content":{pasted}}},{{"role":"assistant","content":"ok"}},{{"role":"user","content":[{{"type":"text","text":{next},"cache_control":{{"type":"ephemeral"}}}}]}}]}}"#
    );
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        KEY,
        fp(Endpoint::Messages, &turn1),
        t(0),
        &billed(10, 0, 2500),
        None,
    );
    // Read: system and the pasted message; written: the new message.
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &turn2),
        t(30),
        &billed(12, 2500, 1000),
        None,
    );
    assert_eq!(got, Observation::default());
}

#[test]
fn only_prompts_the_provider_can_cache_are_worth_a_fingerprint() {
    let short = r#"{"model":"gpt-5-mini","messages":[{"role":"user","content":"hi"}]}"#;
    assert!(!Fingerprint::can_matter(
        Endpoint::ChatCompletions,
        short.as_bytes()
    ));
    let long = chat("Date: 2026-12-06.", 100, "");
    assert!(long.len() >= 4096);
    assert!(Fingerprint::can_matter(
        Endpoint::ChatCompletions,
        long.as_bytes()
    ));
    assert!(Fingerprint::can_matter(
        Endpoint::Responses,
        long.as_bytes()
    ));
    let (marked, _) = anthropic_ts("2026-12-06T09:30:26Z", true, MESSAGES);
    let (plain, _) = anthropic_ts("2026-12-06T09:30:26Z", false, MESSAGES);
    assert!(Fingerprint::can_matter(
        Endpoint::Messages,
        marked.as_bytes()
    ));
    assert!(!Fingerprint::can_matter(
        Endpoint::Messages,
        plain.as_bytes()
    ));
    let escaped = plain.replace(
        r#""type":"text","text":"Current"#,
        r#""type":"text","cache\u005fcontrol":{"type":"ephemeral"},"text":"Current"#,
    );
    assert!(Fingerprint::can_matter(
        Endpoint::Messages,
        escaped.as_bytes()
    ));
    assert!(!Fingerprint::can_matter(
        Endpoint::Embeddings,
        long.as_bytes()
    ));
    // What the shortcut skips could not have busted: the plain Anthropic
    // prompt after a marked one, and a short chat prompt.
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        KEY,
        fp(Endpoint::Messages, &marked),
        t(0),
        &billed(12, 0, 1700),
        None,
    );
    let (plain2, _) = anthropic_ts("2026-12-06T09:31:00Z", false, MESSAGES);
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &plain2),
        t(30),
        &billed(1712, 0, 0),
        None,
    );
    assert_eq!(got, Observation::default());
}

#[test]
fn a_prefix_below_the_models_minimum_cacheable_length_neither_busts_nor_misses() {
    // ~1,700 tokens: above Sonnet's 1,024, below Haiku 4.5's 4,096.
    let run = |min: Option<u64>| {
        let mut m = Monitor::new(MonitorLimits::default());
        let mut seen = Vec::new();
        for (i, ts) in ["09:30:26", "09:31:02", "09:31:40"].iter().enumerate() {
            let (body, _) = anthropic_ts(&format!("2026-12-06T{ts}Z"), true, MESSAGES);
            let mut f = fp(Endpoint::Messages, &body);
            if let Some(min) = min {
                f = f.with_min_cacheable_tokens(min);
            }
            // The provider cached nothing: every request bills it all.
            let got = m.observe(KEY, f, t(40 * i as i64), &billed(1712, 0, 0), None);
            seen.push(got.bust.map(|b| b.reason));
        }
        seen
    };
    assert_eq!(run(Some(4096)), [None, None, None]);
    assert_eq!(
        run(None),
        [
            None,
            Some(BustReason::VolatilePrefix),
            Some(BustReason::VolatilePrefix)
        ]
    );
    // The same prompt again, nothing read: no provider miss below the minimum.
    let (body, _) = anthropic_ts("2026-12-06T09:30:26Z", true, MESSAGES);
    let mut m = Monitor::new(MonitorLimits::default());
    let f = || fp(Endpoint::Messages, &body).with_min_cacheable_tokens(4096);
    m.observe(KEY, f(), t(0), &billed(1712, 0, 0), None);
    assert_eq!(
        m.observe(KEY, f(), t(60), &billed(1712, 0, 0), None),
        Observation::default()
    );
}

#[test]
fn a_timestamp_inside_one_long_system_string_is_located_and_the_rest_counts() {
    // Automatic caching (top-level cache_control), a string system prompt.
    let body = |ts: &str| {
        format!(
            r#"{{"model":"m","cache_control":{{"type":"ephemeral"}},"system":{},"messages":{MESSAGES}}}"#,
            json(&format!(
                "You are the billing agent. Now: {ts}. {}",
                rules(100)
            ))
        )
    };
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        KEY,
        fp(Endpoint::Messages, &body("Sun, 06 Dec 2026 09:30:26 +0000")),
        t(0),
        &billed(5, 0, 1700),
        None,
    );
    let second = body("Sun, 06 Dec 2026 09:35:59 +0000");
    let n = fp(Endpoint::Messages, &second);
    let rendered = n.rendered_bytes();
    let got = m
        .observe(KEY, n, t(213), &billed(5, 0, 1700), None)
        .bust
        .unwrap();
    let system = json(&format!(
        "You are the billing agent. Now: Sun, 06 Dec 2026 09:35:59 +0000. {}",
        rules(100)
    ));
    // The lost content: every run of the system string after the one holding
    // the timestamp, and the message (before the automatic breakpoint).
    let mut ends = Vec::new();
    scan::run_ends(system.as_bytes(), &mut ends);
    let ts_end = system.find("+0000").unwrap() + 5;
    let first_shared = ends
        .iter()
        .find(|&&e| e as usize >= ts_end)
        .copied()
        .unwrap() as usize;
    let lost = (system.len() - first_shared + r#""What is my quota?""#.len()) as u64;
    assert_eq!(got.reason, BustReason::VolatilePrefix);
    assert_eq!(got.section, "system");
    assert_eq!(got.offset, system.find("Sun,").unwrap() as u64);
    assert_eq!(got.change, ChangeKind::Timestamp);
    assert_eq!(got.lost_tokens, tokens(lost, 1705, rendered));
}

/// An OpenAI chat body whose system message starts with `head`.
fn chat(head: &str, rules_n: usize, rest: &str) -> String {
    format!(
        r#"{{"model":"gpt-4.1","messages":[{{"role":"system","content":{}}}{rest}]}}"#,
        json(&format!("{head} {}", rules(rules_n)))
    )
}

#[test]
fn a_date_in_the_first_openai_system_message_is_a_volatile_prefix() {
    let user = r#",{"role":"user","content":"How do refunds work?"}"#;
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        "k",
        fp(
            Endpoint::ChatCompletions,
            &chat("Today is 2026-12-06.", 100, user),
        ),
        t(0),
        &billed(1500, 0, 0),
        None,
    );
    let body = chat("Today is 2026-12-07.", 100, user);
    let n = fp(Endpoint::ChatCompletions, &body);
    let rendered = n.rendered_bytes();
    let got = m
        .observe("k", n, t(60), &billed(1500, 0, 0), None)
        .bust
        .unwrap();
    let message = format!(
        r#"{{"role":"system","content":{}}}"#,
        json(&format!("Today is 2026-12-07. {}", rules(100)))
    );
    let mut ends = Vec::new();
    scan::run_ends(message.as_bytes(), &mut ends);
    let lost = (message.len() - ends[0] as usize + user.len() - 1) as u64;
    assert_eq!(
        got,
        CacheBust {
            reason: BustReason::VolatilePrefix,
            section: "messages[0]".to_owned(),
            offset: message.find("2026").unwrap() as u64,
            change: ChangeKind::Date,
            lost_tokens: tokens(lost, 1500, rendered),
        }
    );
}

#[test]
fn a_uuid_in_the_responses_instructions_is_told() {
    let body = |id: &str| {
        format!(
            r#"{{"model":"gpt-5","instructions":{},"input":"Summarise the refunds policy."}}"#,
            json(&format!("Session {id}. {}", rules(100)))
        )
    };
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        "k",
        fp(
            Endpoint::Responses,
            &body("550e8400-e29b-41d4-a716-446655440000"),
        ),
        t(0),
        &billed(1500, 0, 0),
        None,
    );
    let got = m
        .observe(
            "k",
            fp(
                Endpoint::Responses,
                &body("9b2c1f00-0a1b-4c2d-8e3f-0123456789ab"),
            ),
            t(1),
            &billed(1500, 0, 0),
            None,
        )
        .bust
        .unwrap();
    assert_eq!(
        (got.section.as_str(), got.offset, got.change),
        ("instructions", 9, ChangeKind::Uuid)
    );
    assert_eq!(got.reason, BustReason::VolatilePrefix);
}

#[test]
fn reordered_tools_are_told_at_tools_0() {
    let tool = |name: &str| {
        format!(
            r#"{{"name":"{name}","description":"Look up {name} records by id","input_schema":{{"type":"object","properties":{{"id":{{"type":"string"}}}}}}}}"#
        )
    };
    let body = |tools: &[&str]| {
        let tools: Vec<String> = tools.iter().map(|n| tool(n)).collect();
        format!(
            r#"{{"model":"m","tools":[{}],"system":[{{"type":"text","text":{},"cache_control":{{"type":"ephemeral"}}}}],"messages":{MESSAGES}}}"#,
            tools.join(","),
            json(&rules(100))
        )
    };
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        KEY,
        fp(
            Endpoint::Messages,
            &body(&["invoices", "refunds", "quotas"]),
        ),
        t(0),
        &billed(10, 0, 1800),
        None,
    );
    let n = fp(
        Endpoint::Messages,
        &body(&["refunds", "invoices", "quotas"]),
    );
    let rendered = n.rendered_bytes();
    let got = m
        .observe(KEY, n, t(5), &billed(10, 0, 1800), None)
        .bust
        .unwrap();
    assert_eq!(
        (got.reason, got.section.as_str(), got.offset),
        (BustReason::VolatilePrefix, "tools[0]", 0)
    );
    assert_eq!(got.change, ChangeKind::ToolsReordered);
    // Every tool and the system prompt were shared, all billed again.
    let cached = rendered - MESSAGES.len() as u64 + r#"[{"role":"user","content":}]"#.len() as u64;
    assert_eq!(got.lost_tokens, tokens(cached, 1810, rendered));

    // A changed tool definition.
    let got = m.observe(
        KEY,
        fp(
            Endpoint::Messages,
            &body(&["ledgers", "invoices", "quotas"]),
        ),
        t(9),
        &billed(10, 0, 1800),
        None,
    );
    assert_eq!(
        got.bust.map(|b| (b.section, b.change)),
        Some(("tools[0]".to_owned(), ChangeKind::ToolsChanged))
    );
}

#[test]
fn a_whitespace_only_change_is_told() {
    let user = r#",{"role":"user","content":"Hi"}"#;
    let head = |sep: &str| format!("{}Keep answers short.{sep}Never guess.", rules(30));
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        "k",
        fp(Endpoint::ChatCompletions, &chat(&head("\n"), 70, user)),
        t(0),
        &billed(1500, 0, 0),
        None,
    );
    let got = m
        .observe(
            "k",
            fp(Endpoint::ChatCompletions, &chat(&head("\n\n"), 70, user)),
            t(1),
            &billed(1500, 0, 0),
            None,
        )
        .bust
        .unwrap();
    let message = format!(
        r#"{{"role":"system","content":{}}}"#,
        json(&format!("{} {}", head("\n\n"), rules(70)))
    );
    let change_at = message.find("short.").unwrap() + 6;
    let mut ends = Vec::new();
    scan::run_ends(message.as_bytes(), &mut ends);
    let run_start = ends
        .iter()
        .rev()
        .find(|&&e| (e as usize) <= change_at)
        .copied()
        .unwrap_or(0);
    assert_eq!(
        (got.section.as_str(), got.change),
        ("messages[0]", ChangeKind::Whitespace)
    );
    assert_eq!(got.offset, u64::from(run_start));
}

/// A conversation: a system prompt and `turns` user/assistant messages.
fn conversation(turns: usize, edit: Option<usize>) -> String {
    let msgs: String = (0..turns)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            let text = match edit {
                Some(e) if e == i => format!(
                    "An entirely different message, number {i}, about something new: {}",
                    "zebra crossing ".repeat(20)
                ),
                _ => format!("Turn {i}: {}", rules_from(i * 6, 6)),
            };
            format!(r#",{{"role":"{role}","content":{}}}"#, json(&text))
        })
        .collect();
    chat("You are a helpful agent.", 40, &msgs)
}

#[test]
fn an_edited_middle_message_of_a_long_conversation_is_a_prefix_divergence() {
    let mut m = Monitor::new(MonitorLimits::default());
    let first = conversation(20, None);
    m.observe(
        "k",
        fp(Endpoint::ChatCompletions, &first),
        t(0),
        &billed(3000, 0, 0),
        None,
    );
    let body = conversation(22, Some(12));
    let n = fp(Endpoint::ChatCompletions, &body);
    let rendered = n.rendered_bytes();
    let got = m
        .observe("k", n, t(30), &billed(1000, 2000, 0), None)
        .bust
        .unwrap();
    // Lost: messages 14..=20 of the first request (13..=19 of the turns),
    // shared after the edit.
    let lost: u64 = (13..20)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            let text = format!("Turn {i}: {}", rules_from(i * 6, 6));
            format!(r#"{{"role":"{role}","content":{}}}"#, json(&text)).len() as u64
        })
        .sum();
    assert_eq!(
        got,
        CacheBust {
            reason: BustReason::PrefixDiverged,
            section: "messages[13]".to_owned(),
            offset: 0,
            change: ChangeKind::Content,
            lost_tokens: tokens(lost, 3000, rendered),
        }
    );
}

#[test]
fn a_normal_next_turn_is_not_a_bust_and_keeps_one_slot() {
    let mut m = Monitor::new(MonitorLimits::default());
    for (i, turns) in [2usize, 4, 6, 8].into_iter().enumerate() {
        let body = conversation(turns, None);
        let n = fp(Endpoint::ChatCompletions, &body);
        // The provider read the earlier prompt from its cache.
        let read = if i == 0 { 0 } else { 1024 + 128 * 4 };
        let got = m.observe("k", n, t(i as i64 * 20), &billed(300, read, 0), None);
        assert_eq!(got, Observation::default(), "turn {turns}");
    }
    assert_eq!(m.fingerprints(), 1);
}

#[test]
fn different_questions_after_the_same_system_prompt_are_not_busts() {
    let mut m = Monitor::new(MonitorLimits::default());
    for (i, q) in [
        "How do refunds work?",
        "What is my quota this month?",
        "Who approved invoice 42?",
    ]
    .into_iter()
    .enumerate()
    {
        let body = chat(
            "You are a helpful agent.",
            100,
            &format!(r#",{{"role":"user","content":"{q}"}}"#),
        );
        let got = m.observe(
            "k",
            fp(Endpoint::ChatCompletions, &body),
            t(i as i64),
            &billed(20, 1536, 0),
            None,
        );
        assert_eq!(got, Observation::default(), "{q}");
    }
}

#[test]
fn the_same_prompt_after_its_ttl_is_an_expiry_not_a_bust() {
    let (body, _) = anthropic_ts("2026-12-06T09:30:26Z", true, MESSAGES);
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        KEY,
        fp(Endpoint::Messages, &body),
        t(0),
        &billed(12, 0, 1700),
        None,
    );
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &body),
        t(301),
        &billed(12, 0, 1700),
        None,
    );
    assert_eq!(
        got,
        Observation {
            bust: None,
            expired: true,
            repeats: 0
        }
    );
    // Also when the prefix changed: past the TTL nothing could be read.
    let (other, _) = anthropic_ts("2026-12-06T09:50:00Z", true, MESSAGES);
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &other),
        t(700),
        &billed(12, 0, 1700),
        None,
    );
    assert!(got.expired && got.bust.is_none());
    // With a one-hour TTL override the same read-nothing answer is a miss.
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &other),
        t(1000),
        &billed(12, 0, 1700),
        Some(Duration::from_secs(3600)),
    );
    assert_eq!(got.bust.map(|b| b.reason), Some(BustReason::ProviderMiss));
}

#[test]
fn a_stable_fresh_prefix_without_cache_reads_is_a_provider_miss() {
    let (body, _) = anthropic_ts("2026-12-06T09:30:26Z", true, MESSAGES);
    let mut m = Monitor::new(MonitorLimits::default());
    let o = fp(Endpoint::Messages, &body);
    let cacheable = o.cacheable_bytes();
    m.observe(KEY, o, t(0), &billed(12, 0, 1700), None);
    let next = body.replace(
        r#"[{"role":"user","content":"What is my quota?"}]"#,
        r#"[{"role":"user","content":"What is my quota?"},{"role":"assistant","content":"Ten."},{"role":"user","content":"And next month?"}]"#,
    );
    let n = fp(Endpoint::Messages, &next);
    let rendered = n.rendered_bytes();
    // Billed: 300 tokens read where ~1,700 were expected.
    let got = m.observe(KEY, n, t(60), &billed(30, 300, 1700), None);
    let expected = tokens(cacheable, 2030, rendered);
    assert_eq!(
        got.bust,
        Some(CacheBust {
            reason: BustReason::ProviderMiss,
            section: String::new(),
            offset: 0,
            change: ChangeKind::None,
            lost_tokens: expected - 300,
        })
    );
    // Read as expected: nothing to say.
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &next),
        t(90),
        &billed(30, 1700, 0),
        None,
    );
    assert_eq!(got, Observation::default());
}

#[test]
fn an_openai_provider_miss_expects_128_token_steps() {
    let body = chat(
        "You are a helpful agent.",
        100,
        r#",{"role":"user","content":"Hi"}"#,
    );
    let mut m = Monitor::new(MonitorLimits::default());
    let o = fp(Endpoint::ChatCompletions, &body);
    let cacheable = o.cacheable_bytes();
    m.observe("k", o, t(0), &billed(2000, 0, 0), None);
    let got = m.observe(
        "k",
        fp(Endpoint::ChatCompletions, &body),
        t(10),
        &billed(2000, 0, 0),
        None,
    );
    let t_cached = tokens(cacheable, 2000, cacheable);
    let stepped = 1024 + (t_cached - 1024) / 128 * 128;
    assert_eq!(
        got.bust.map(|b| (b.reason, b.lost_tokens)),
        Some((BustReason::ProviderMiss, stepped))
    );
}

#[test]
fn without_cache_control_anthropic_never_busts() {
    let mut m = Monitor::new(MonitorLimits::default());
    for (i, ts) in [
        "2026-12-06T09:30:26Z",
        "2026-12-06T09:31:00Z",
        "2026-12-06T09:31:30Z",
    ]
    .into_iter()
    .enumerate()
    {
        let (body, _) = anthropic_ts(ts, false, MESSAGES);
        let n = fp(Endpoint::Messages, &body);
        assert_eq!(n.cacheable_bytes(), 0);
        let got = m.observe(KEY, n, t(i as i64 * 10), &billed(1712, 0, 0), None);
        assert_eq!(got, Observation::default());
    }
}

#[test]
fn a_short_edit_is_below_the_threshold() {
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        "k",
        fp(Endpoint::ChatCompletions, &conversation(20, None)),
        t(0),
        &billed(3000, 0, 0),
        None,
    );
    // The second-to-last message edited: little shared content after it.
    let got = m.observe(
        "k",
        fp(Endpoint::ChatCompletions, &conversation(20, Some(18))),
        t(5),
        &billed(3000, 0, 0),
        None,
    );
    assert_eq!(got, Observation::default());
}

#[test]
fn memory_stays_within_the_bound() {
    let limits = MonitorLimits::default();
    let mut m = Monitor::new(limits);
    let big = conversation(60, None);
    let mut max_seen = 0;
    for i in 0..10_000usize {
        let key = format!("ns-{:04}/workload/provider/model", i % 2000);
        // Distinct conversations per key, large and small.
        let body = if i % 3 == 0 {
            big.replace("You are a helpful agent.", &format!("You are agent {i}."))
        } else {
            chat(
                &format!("Agent {i}."),
                5,
                r#",{"role":"user","content":"Hi"}"#,
            )
        };
        m.observe(
            &key,
            fp(Endpoint::ChatCompletions, &body),
            t(i as i64),
            &billed(900, 0, 0),
            None,
        );
        max_seen = max_seen.max(m.heap_bytes());
    }
    assert!(m.keys() <= limits.keys);
    assert!(m.fingerprints() <= limits.keys * limits.per_key);
    let bound = Monitor::max_heap_bytes(&limits, 64);
    assert!(max_seen <= bound, "{max_seen} > {bound}");
    // The figures the module docs state.
    assert_eq!(Fingerprint::max_bytes(&limits), 13_152);
    assert_eq!(bound, 3_421_248);

    // One key, many conversations: at most per_key kept.
    let mut m = Monitor::new(limits);
    for i in 0..1000usize {
        m.observe(
            "one",
            fp(
                Endpoint::ChatCompletions,
                &big.replace("helpful", &format!("agent{i}")),
            ),
            t(i as i64),
            &billed(900, 0, 0),
            None,
        );
    }
    assert_eq!(m.fingerprints(), limits.per_key);
    assert!(m.heap_bytes() <= Monitor::max_heap_bytes(&limits, 3));
}

#[test]
fn no_prompt_text_is_kept() {
    let marker = "ZEBRAMARKER";
    let body = format!(
        r#"{{"model":"m","tools":[{{"name":"{marker}_tool"}}],"system":[{{"type":"text","text":"{marker} 2026-12-06T09:30:26Z {}","cache_control":{{"type":"ephemeral"}}}}],"messages":[{{"role":"user","content":"{marker}"}}]}}"#,
        rules(100)
    );
    let n = fp(Endpoint::Messages, &body);
    let mut m = Monitor::new(MonitorLimits::default());
    let dump = format!("{n:?}");
    m.observe(KEY, n, t(0), &billed(10, 0, 1700), None);
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &body.replace("09:30", "09:31")),
        t(1),
        &billed(10, 0, 1700),
        None,
    );
    assert!(got.bust.is_some());
    for text in [dump, format!("{m:?}"), format!("{got:?}")] {
        assert!(
            !text.contains(marker) && !text.contains("Rule 1") && !text.contains("2026"),
            "{text}"
        );
    }
}

#[test]
fn embeddings_and_unreadable_bodies_have_no_fingerprint() {
    let body = br#"{"model":"text-embedding-3-small","input":"hello"}"#;
    assert_eq!(Fingerprint::of(Endpoint::Embeddings, body), None);
    assert_eq!(
        Fingerprint::of(Endpoint::Messages, br#"{"messages":"#),
        None
    );
    assert_eq!(
        Fingerprint::of(Endpoint::ChatCompletions, br#"{"messages":[]}"#),
        None
    );
    assert_eq!(
        Fingerprint::of(
            Endpoint::Messages,
            br#"{"messages":[{"role":"user","content":7}]}"#
        ),
        None
    );
}

/// Not a timed test: prints the cost per request for the module docs.
#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn measure() {
    let small = chat(
        "Be brief.",
        12,
        r#",{"role":"user","content":"What is the capital of France?"}"#,
    );
    let big_msgs: String = (0..120)
        .map(|i| {
            format!(
                r#",{{"role":"user","content":[{{"type":"text","text":{}}}]}}"#,
                json(&format!("Step {i}: {}", rules(26)))
            )
        })
        .collect();
    let big = format!(
        r#"{{"model":"m","system":[{{"type":"text","text":{},"cache_control":{{"type":"ephemeral"}}}}],"messages":[{}]}}"#,
        json(&rules(200)),
        &big_msgs[1..]
    );
    for (name, body, endpoint) in [
        ("1 KB chat", small, Endpoint::ChatCompletions),
        ("200 KB agent", big, Endpoint::Messages),
    ] {
        let mut m = Monitor::new(MonitorLimits::default());
        let rounds = 2000;
        let start = Instant::now();
        for i in 0..rounds {
            let n = Fingerprint::of(endpoint, body.as_bytes()).unwrap();
            std::hint::black_box(m.observe("k", n, t(i), &billed(1000, 40_000, 0), None));
        }
        let per = start.elapsed() / rounds as u32;
        let fp_start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(Fingerprint::of(endpoint, body.as_bytes()));
        }
        let fp_per = fp_start.elapsed() / rounds as u32;
        println!(
            "{name}: {} bytes, of+observe {per:?}, of {fp_per:?}",
            body.len()
        );
    }
}

#[test]
fn requests_sent_together_are_no_provider_miss() {
    let (body, _) = anthropic_ts("2026-12-06T09:30:26Z", true, MESSAGES);
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        KEY,
        fp(Endpoint::Messages, &body),
        t(0),
        &billed(12, 0, 1700),
        None,
    );
    // Sent a second later (a parallel sub-agent): it could not read the
    // first one's cache yet.
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &body),
        t(1),
        &billed(12, 0, 1700),
        None,
    );
    assert_eq!(got, Observation::default());
}

#[test]
fn a_prompt_sharing_little_with_an_old_one_is_no_expiry() {
    let mut m = Monitor::new(MonitorLimits::default());
    let tools = r#"[{"name":"lookup","input_schema":{"type":"object"}}]"#;
    let body = |system: &str| {
        format!(
            r#"{{"model":"m","tools":{tools},"system":[{{"type":"text","text":{},"cache_control":{{"type":"ephemeral"}}}}],"messages":{MESSAGES}}}"#,
            json(system)
        )
    };
    m.observe(
        KEY,
        fp(Endpoint::Messages, &body(&rules(100))),
        t(0),
        &billed(12, 0, 1700),
        None,
    );
    let other = format!("A different agent. {}", rules_from(500, 100));
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &body(&other)),
        t(900),
        &billed(12, 0, 1700),
        None,
    );
    assert_eq!(got, Observation::default());
    assert_eq!(m.fingerprints(), 2);
}

/// An Anthropic agent conversation of `turns` messages with content blocks,
/// the breakpoint on the last block (moved each turn, as SDKs do).
fn agent(turns: usize) -> String {
    let msgs: Vec<String> = (0..turns)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            let cc = if i + 1 == turns {
                r#","cache_control":{"type":"ephemeral"}"#
            } else {
                ""
            };
            let text = json(&format!("Step {i}: {}", rules_from(i * 3, 3)));
            format!(r#"{{"role":"{role}","content":[{{"type":"text","text":{text}{cc}}}]}}"#)
        })
        .collect();
    format!(
        r#"{{"model":"m","system":{},"messages":[{}]}}"#,
        json(&rules(100)),
        msgs.join(",")
    )
}

#[test]
fn a_moving_anthropic_breakpoint_reads_the_last_turn_and_a_miss_is_told() {
    let mut m = Monitor::new(MonitorLimits::default());
    let first = fp(Endpoint::Messages, &agent(3));
    let cached = first.cacheable_bytes();
    assert_eq!(cached, first.rendered_bytes());
    m.observe(KEY, first, t(0), &billed(10, 0, 2000), None);
    // The next turn read the whole previous prompt: nothing to say.
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &agent(5)),
        t(20),
        &billed(150, 2000, 150),
        None,
    );
    assert_eq!(got, Observation::default());
    assert_eq!(m.fingerprints(), 1);
    // The turn after read nothing although its breakpoint is two blocks on.
    let n = fp(Endpoint::Messages, &agent(7));
    let (rendered, expected_bytes) = (
        n.rendered_bytes(),
        fp(Endpoint::Messages, &agent(5)).cacheable_bytes(),
    );
    let got = m.observe(KEY, n, t(40), &billed(2300, 0, 0), None);
    assert_eq!(
        got.bust.map(|b| (b.reason, b.lost_tokens)),
        Some((
            BustReason::ProviderMiss,
            tokens(expected_bytes, 2300, rendered)
        ))
    );
}

#[test]
fn a_breakpoint_beyond_the_20_block_lookback_expects_no_read() {
    let mut m = Monitor::new(MonitorLimits::default());
    m.observe(
        KEY,
        fp(Endpoint::Messages, &agent(3)),
        t(0),
        &billed(10, 0, 2000),
        None,
    );
    // 22 blocks later: Anthropic does not look back that far.
    let got = m.observe(
        KEY,
        fp(Endpoint::Messages, &agent(25)),
        t(20),
        &billed(3000, 0, 0),
        None,
    );
    assert_eq!(got, Observation::default());
}

proptest::proptest! {
    /// Any body, any text: no panic, and the rendered bytes add up.
    #[test]
    fn any_body_is_fingerprinted_and_observed_without_panic(
        raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        text in "(\\PC|\n|\t){0,400}",
        text2 in "[0-9a-f: \\-TZ\n]{0,200}",
        secs in 0i64..10_000,
    ) {
        for endpoint in [Endpoint::Messages, Endpoint::ChatCompletions, Endpoint::Responses] {
            let _ = Fingerprint::of(endpoint, &raw);
        }
        let mut m = Monitor::new(MonitorLimits { keys: 2, per_key: 2, ..MonitorLimits::default() });
        for (i, t2) in [text2.as_str(), "", text.as_str()].into_iter().enumerate() {
            let system = format!("{t2}{text}{}", rules(20));
            let a = format!(
                r#"{{"cache_control":{{"type":"ephemeral"}},"system":{},"messages":[{{"role":"user","content":[{{"type":"text","text":{},"cache_control":{{"type":"ephemeral"}}}}]}}]}}"#,
                json(&system), json(&text)
            );
            let n = fp(Endpoint::Messages, &a);
            let sum: u64 = n.blocks.iter().map(|b| u64::from(b.len)).sum();
            proptest::prop_assert_eq!(sum, n.rendered_bytes());
            m.observe("k", n, t(secs * i as i64), &billed(5000, 10, 10), None);
            let c = chat(&system, 3, &format!(r#",{{"role":"user","content":{}}}"#, json(t2)));
            m.observe("c", fp(Endpoint::ChatCompletions, &c), t(secs), &billed(5000, 0, 0), None);
        }
        proptest::prop_assert!(m.heap_bytes() <= Monitor::max_heap_bytes(m.limits(), 1));
    }
}
