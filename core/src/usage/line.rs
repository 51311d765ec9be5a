//! A [`UsageRecord`]'s journal line, written without serde.
//!
//! Every metered attempt writes one line before its response leaves, so
//! the encoding is on the request path. serde_json spent ~8k instructions
//! a record, most of them escaping the fifteen field names and driving the
//! generic serializer; this writes the same bytes directly (the tests hold
//! it to `serde_json::to_vec` byte for byte, so `Deserialize` and every
//! reader of the journal see no difference).

use std::io::Write as _;

use super::{IntentLine, ReplayFacts, UsageRecord, cache::CacheFigures};
use crate::classify::Features;

impl UsageRecord {
    /// Appends the record as JSON, byte for byte what `serde_json::to_vec`
    /// writes for it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Every field, so a new one cannot be left out of the line.
        let UsageRecord {
            seq,
            ts,
            endpoint,
            requested_model,
            served_model,
            provider,
            route,
            score,
            reason,
            attempt,
            status,
            usage,
            cost,
            estimated,
            budgets,
            cache,
            intent,
            replay,
        } = self;
        out.extend_from_slice(b"{\"seq\":");
        push_u64(out, *seq);
        out.extend_from_slice(b",\"ts\":");
        push_display(out, ts);
        out.extend_from_slice(b",\"endpoint\":\"");
        out.extend_from_slice(endpoint.serde_name().as_bytes());
        out.extend_from_slice(b"\",\"requested_model\":");
        push_str(out, requested_model);
        out.extend_from_slice(b",\"served_model\":");
        push_str(out, served_model);
        out.extend_from_slice(b",\"provider\":");
        push_str(out, provider);
        out.extend_from_slice(b",\"route\":");
        match route {
            Some(r) => push_str(out, r),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"score\":");
        match score {
            Some(s) => push_u64(out, u64::from(*s)),
            None => out.extend_from_slice(b"null"),
        }
        if let Some(r) = reason {
            out.extend_from_slice(b",\"reason\":");
            push_str(out, r);
        }
        out.extend_from_slice(b",\"attempt\":");
        push_u64(out, u64::from(*attempt));
        out.extend_from_slice(b",\"status\":");
        push_u64(out, u64::from(*status));
        out.extend_from_slice(b",\"usage\":{\"input_tokens\":");
        push_u64(out, usage.input_tokens);
        out.extend_from_slice(b",\"output_tokens\":");
        push_u64(out, usage.output_tokens);
        out.extend_from_slice(b",\"cache_read_tokens\":");
        push_u64(out, usage.cache_read_tokens);
        out.extend_from_slice(b",\"cache_write_tokens\":");
        push_u64(out, usage.cache_write_tokens);
        if usage.cache_write_1h_tokens != 0 {
            out.extend_from_slice(b",\"cache_write_1h_tokens\":");
            push_u64(out, usage.cache_write_1h_tokens);
        }
        out.extend_from_slice(b"},\"cost\":");
        match cost {
            Some(c) => push_display(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(if *estimated {
            b",\"estimated\":true,\"budgets\":["
        } else {
            b",\"estimated\":false,\"budgets\":["
        });
        for (i, b) in budgets.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"budget\":{\"namespace\":");
            push_str(out, &b.budget.namespace);
            out.extend_from_slice(b",\"name\":");
            push_str(out, &b.budget.name);
            out.extend_from_slice(b"},\"period_start\":");
            push_display(out, &b.period_start);
            if let Some(k) = &b.key {
                out.extend_from_slice(b",\"key\":");
                push_str(out, k);
            }
            out.push(b'}');
        }
        out.push(b']');
        if !cache.is_empty() {
            push_cache(out, cache);
        }
        if let Some(i) = intent {
            out.extend_from_slice(b",\"intent\":");
            push_u64(out, *i);
        }
        if let Some(r) = replay {
            push_replay(out, r);
        }
        out.push(b'}');
    }
}

impl IntentLine {
    /// Appends the line as JSON, byte for byte what `serde_json::to_vec`
    /// writes for it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"intent\":");
        push_u64(out, self.intent);
        out.extend_from_slice(b",\"record\":");
        self.record.write_json(out);
        out.push(b'}');
    }
}

/// `,"replay":{…}` as serde writes it.
fn push_replay(out: &mut Vec<u8>, r: &ReplayFacts) {
    // Every field, so a new one cannot be left out of the line.
    let ReplayFacts {
        request,
        prompt_estimate,
        tools_present,
        features,
        tier,
        adjusted,
        headers,
    } = r;
    out.extend_from_slice(b",\"replay\":{\"request\":");
    push_u64(out, *request);
    out.extend_from_slice(b",\"promptEstimate\":");
    push_u64(out, *prompt_estimate);
    out.extend_from_slice(if *tools_present {
        b",\"toolsPresent\":true"
    } else {
        b",\"toolsPresent\":false"
    });
    if let Some(f) = features {
        push_features(out, f);
    }
    if let Some(t) = tier {
        out.extend_from_slice(b",\"tier\":");
        push_str(out, t);
    }
    if !adjusted.is_empty() {
        out.extend_from_slice(b",\"adjusted\":[");
        for (i, a) in adjusted.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_str(out, a);
        }
        out.push(b']');
    }
    if !headers.is_empty() {
        out.extend_from_slice(b",\"headers\":[");
        for (i, (name, value)) in headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            push_str(out, name);
            out.push(b',');
            push_str(out, value);
            out.push(b']');
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// `,"features":{…}` as serde writes it (camelCase, every field).
fn push_features(out: &mut Vec<u8>, f: &Features) {
    let Features {
        prompt_bytes,
        scanned_bytes,
        code_blocks,
        code_lines,
        stack_trace_lines,
        reasoning_keywords,
        design_keywords,
        concurrency_keywords,
        debugging_keywords,
        simple_markers,
        solution_hints,
        tool_definitions,
        conversation_turns,
    } = *f;
    out.extend_from_slice(b",\"features\":{\"promptBytes\":");
    push_u64(out, prompt_bytes);
    out.extend_from_slice(b",\"scannedBytes\":");
    push_u64(out, scanned_bytes);
    let counts: [(&[u8], u32); 11] = [
        (b",\"codeBlocks\":", code_blocks),
        (b",\"codeLines\":", code_lines),
        (b",\"stackTraceLines\":", stack_trace_lines),
        (b",\"reasoningKeywords\":", reasoning_keywords),
        (b",\"designKeywords\":", design_keywords),
        (b",\"concurrencyKeywords\":", concurrency_keywords),
        (b",\"debuggingKeywords\":", debugging_keywords),
        (b",\"simpleMarkers\":", simple_markers),
        (b",\"solutionHints\":", solution_hints),
        (b",\"toolDefinitions\":", tool_definitions),
        (b",\"conversationTurns\":", conversation_turns),
    ];
    for (name, n) in counts {
        out.extend_from_slice(name);
        push_u64(out, u64::from(n));
    }
    out.push(b'}');
}

/// `,"cache":{…}` as serde writes it.
fn push_cache(out: &mut Vec<u8>, cache: &CacheFigures) {
    out.extend_from_slice(b",\"cache\":{");
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    if !cache.saved.is_zero() {
        sep(out);
        out.extend_from_slice(b"\"saved\":");
        push_display(out, &cache.saved);
    }
    if !cache.wasted.is_zero() {
        sep(out);
        out.extend_from_slice(b"\"wasted\":");
        push_display(out, &cache.wasted);
    }
    if let Some(b) = &cache.bust {
        sep(out);
        out.extend_from_slice(b"\"bust\":{\"reason\":\"");
        out.extend_from_slice(b.reason.as_str().as_bytes());
        out.extend_from_slice(b"\",\"section\":");
        push_str(out, &b.section);
        out.extend_from_slice(b",\"offset\":");
        push_u64(out, b.offset);
        out.extend_from_slice(b",\"change\":\"");
        out.extend_from_slice(b.change.as_str().as_bytes());
        out.extend_from_slice(b"\",\"lost_tokens\":");
        push_u64(out, b.lost_tokens);
        out.push(b'}');
    }
    if cache.response_hit {
        sep(out);
        out.extend_from_slice(b"\"response_hit\":true");
    }
    if !cache.response_saved.is_zero() {
        sep(out);
        out.extend_from_slice(b"\"response_saved\":");
        push_display(out, &cache.response_saved);
    }
    if cache.response_similarity != 0 {
        sep(out);
        out.extend_from_slice(b"\"response_similarity\":");
        push_u64(out, u64::from(cache.response_similarity));
    }
    if cache.embedding {
        sep(out);
        out.extend_from_slice(b"\"embedding\":true");
    }
    if !cache.embedding_cost.is_zero() {
        sep(out);
        out.extend_from_slice(b"\"embedding_cost\":");
        push_display(out, &cache.embedding_cost);
    }
    out.push(b'}');
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A value serialized through its `Display` (`collect_str`), as a JSON
/// string. The texts written here (timestamps, decimal amounts) never hold
/// a character JSON escapes; the tests check both forms against serde.
fn push_display(out: &mut Vec<u8>, v: &impl std::fmt::Display) {
    out.push(b'"');
    let at = out.len();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{v}");
    debug_assert!(!out[at..].iter().any(|&b| needs_escape(b)));
    out.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// A JSON string, escaped as serde_json escapes: `"` and `\`, the short
/// forms `\b \t \n \f \r`, other control characters as `\u00XX`; nothing
/// else (not `/`, not DEL, not non-ASCII).
fn push_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use proptest::prelude::*;

    use super::*;
    use crate::{
        money::Usd,
        tokens::TokenCounts,
        usage::{
            BudgetPeriodRef,
            cache::{BustReason, CacheBust, ChangeKind},
        },
        workload::{Endpoint, ObjectRef},
    };

    fn endpoint() -> impl Strategy<Value = Endpoint> {
        proptest::sample::select(Endpoint::ALL.to_vec())
    }

    /// Any instant jiff can hold, down to the nanosecond (whole seconds too,
    /// which print without a fraction).
    fn timestamp() -> impl Strategy<Value = Timestamp> {
        let (min, max) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second() - 1);
        (min..max, prop_oneof![Just(0i32), 0..1_000_000_000i32])
            .prop_map(|(s, n)| Timestamp::new(s, n).unwrap())
    }

    /// Text with what JSON escapes: quotes, backslashes, every control
    /// character, DEL, `/` and non-ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9./-]{0,24}",
            "[\\x00-\\x1f\"\\\\/\\x7f a-zé€😀]{0,24}",
            any::<String>(),
        ]
    }

    fn record() -> impl Strategy<Value = UsageRecord> {
        let budget = (text(), text(), timestamp(), proptest::option::of(text())).prop_map(
            |(namespace, name, period_start, key)| BudgetPeriodRef {
                budget: ObjectRef { namespace, name },
                period_start,
                key,
            },
        );
        (
            (
                any::<u64>(),
                timestamp(),
                endpoint(),
                text(),
                text(),
                text(),
            ),
            (
                proptest::option::of(text()),
                proptest::option::of(any::<u16>()),
                proptest::option::of(text()),
                any::<u32>(),
                any::<u16>(),
            ),
            (
                any::<[u64; 4]>(),
                prop_oneof![Just(0u64), any::<u64>()],
                proptest::option::of(any::<i128>()),
                any::<bool>(),
                proptest::collection::vec(budget, 0..3),
                proptest::option::of(any::<u64>()),
            ),
            (cache_figures(), proptest::option::of(replay_facts())),
        )
            .prop_map(
                |(
                    (seq, ts, endpoint, requested_model, served_model, provider),
                    (route, score, reason, attempt, status),
                    (u, write_1h, cost, estimated, budgets, intent),
                    (cache, replay),
                )| UsageRecord {
                    seq,
                    ts,
                    endpoint,
                    requested_model,
                    served_model,
                    provider,
                    route,
                    score,
                    reason,
                    attempt,
                    status,
                    usage: TokenCounts {
                        input_tokens: u[0],
                        output_tokens: u[1],
                        cache_read_tokens: u[2],
                        cache_write_tokens: u[3],
                        cache_write_1h_tokens: write_1h,
                    },
                    cost: cost.map(Usd::from_picos),
                    estimated,
                    budgets,
                    intent,
                    cache,
                    replay: replay.map(Box::new),
                },
            )
    }

    fn features() -> impl Strategy<Value = Features> {
        (any::<[u64; 2]>(), any::<[u32; 11]>()).prop_map(|([p, s], c)| Features {
            prompt_bytes: p,
            scanned_bytes: s,
            code_blocks: c[0],
            code_lines: c[1],
            stack_trace_lines: c[2],
            reasoning_keywords: c[3],
            design_keywords: c[4],
            concurrency_keywords: c[5],
            debugging_keywords: c[6],
            simple_markers: c[7],
            solution_hints: c[8],
            tool_definitions: c[9],
            conversation_turns: c[10],
        })
    }

    fn replay_facts() -> impl Strategy<Value = ReplayFacts> {
        (
            (any::<u64>(), any::<u64>(), any::<bool>()),
            proptest::option::of(features()),
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec((text(), text()), 0..3),
        )
            .prop_map(
                |((request, prompt_estimate, tools_present), features, tier, adjusted, headers)| {
                    ReplayFacts {
                        request,
                        prompt_estimate,
                        tools_present,
                        features,
                        tier,
                        adjusted,
                        headers,
                    }
                },
            )
    }

    fn cache_figures() -> impl Strategy<Value = CacheFigures> {
        let usd = prop_oneof![
            Just(Usd::ZERO),
            any::<i64>().prop_map(|p| Usd::from_picos(p.into()))
        ];
        let bust = (
            proptest::sample::select(BustReason::ALL.to_vec()),
            text(),
            any::<u64>(),
            proptest::sample::select(ChangeKind::ALL.to_vec()),
            any::<u64>(),
        )
            .prop_map(|(reason, section, offset, change, lost_tokens)| CacheBust {
                reason,
                section,
                offset,
                change,
                lost_tokens,
            });
        (
            (
                usd.clone(),
                usd.clone(),
                proptest::option::of(bust),
                any::<bool>(),
                usd.clone(),
            ),
            (any::<u16>(), any::<bool>(), usd),
        )
            .prop_map(
                |(
                    (saved, wasted, bust, response_hit, response_saved),
                    (response_similarity, embedding, embedding_cost),
                )| CacheFigures {
                    saved,
                    wasted,
                    bust,
                    response_hit,
                    response_saved,
                    response_similarity,
                    embedding,
                    embedding_cost,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_line_is_what_serde_json_writes(r in record()) {
            let mut line = Vec::new();
            r.write_json(&mut line);
            let serde = serde_json::to_vec(&r).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&line), String::from_utf8_lossy(&serde));
            prop_assert_eq!(serde_json::from_slice::<UsageRecord>(&line).unwrap(), r.clone());
            let intent = IntentLine { intent: r.seq ^ 7, record: r };
            let mut line = Vec::new();
            intent.write_json(&mut line);
            let serde = serde_json::to_vec(&intent).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&line), String::from_utf8_lossy(&serde));
            prop_assert_eq!(serde_json::from_slice::<IntentLine>(&line).unwrap(), intent);
        }
    }

    #[test]
    fn a_real_record_line() {
        let r = UsageRecord {
            seq: 400063,
            ts: "2026-12-02T20:06:21.555909212Z".parse().unwrap(),
            endpoint: Endpoint::ChatCompletions,
            requested_model: "gpt-4o-mini".into(),
            served_model: "gpt-4o-mini-2024-07-18".into(),
            provider: "openai".into(),
            route: None,
            score: Some(42),
            reason: Some("score 42: +code \"block\"\n".into()),
            attempt: 1,
            status: 200,
            usage: TokenCounts {
                input_tokens: 12,
                output_tokens: 7,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
            },
            cost: Some(Usd::from_picos(6_000_000)),
            estimated: false,
            budgets: vec![BudgetPeriodRef {
                budget: ObjectRef::new("bench", "bench-budget"),
                period_start: "2026-12-02T00:00:00Z".parse().unwrap(),
                key: None,
            }],
            intent: None,
            cache: Default::default(),
            replay: None,
        };
        let mut line = Vec::new();
        r.write_json(&mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"{"seq":400063,"ts":"2026-12-02T20:06:21.555909212Z","endpoint":"chatCompletions","requested_model":"gpt-4o-mini","served_model":"gpt-4o-mini-2024-07-18","provider":"openai","route":null,"score":42,"reason":"score 42: +code \"block\"\n","attempt":1,"status":200,"usage":{"input_tokens":12,"output_tokens":7,"cache_read_tokens":0,"cache_write_tokens":0},"cost":"0.000006","estimated":false,"budgets":[{"budget":{"namespace":"bench","name":"bench-budget"},"period_start":"2026-12-02T00:00:00Z"}]}"#
        );
    }
    #[test]
    fn a_record_line_with_replay_facts() {
        let r = UsageRecord {
            seq: 12,
            ts: "2026-12-06T22:00:00Z".parse().unwrap(),
            endpoint: Endpoint::Messages,
            requested_model: "claude-opus-4-1".into(),
            served_model: "claude-haiku-4-5".into(),
            provider: "anthropic".into(),
            route: Some("easy".into()),
            score: Some(18),
            reason: None,
            attempt: 2,
            status: 200,
            usage: TokenCounts::default(),
            cost: Some(Usd::ZERO),
            estimated: false,
            budgets: vec![],
            intent: Some(3),
            cache: Default::default(),
            replay: Some(Box::new(ReplayFacts {
                request: 11,
                prompt_estimate: 301,
                tools_present: true,
                features: Some(Features {
                    prompt_bytes: 1200,
                    scanned_bytes: 1200,
                    tool_definitions: 2,
                    conversation_turns: 1,
                    ..Features::default()
                }),
                tier: Some("fast".into()),
                adjusted: vec!["escalated:upstream_error".into()],
                headers: vec![("x-team".into(), "search".into())],
            })),
        };
        let mut line = Vec::new();
        r.write_json(&mut line);
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            concat!(
                r#"{"seq":12,"ts":"2026-12-06T22:00:00Z","endpoint":"messages","requested_model":"claude-opus-4-1","#,
                r#""served_model":"claude-haiku-4-5","provider":"anthropic","route":"easy","score":18,"attempt":2,"#,
                r#""status":200,"usage":{"input_tokens":0,"output_tokens":0,"cache_read_tokens":0,"cache_write_tokens":0},"#,
                r#""cost":"0.00","estimated":false,"budgets":[],"intent":3,"replay":{"request":11,"promptEstimate":301,"#,
                r#""toolsPresent":true,"features":{"promptBytes":1200,"scannedBytes":1200,"codeBlocks":0,"codeLines":0,"#,
                r#""stackTraceLines":0,"reasoningKeywords":0,"designKeywords":0,"concurrencyKeywords":0,"#,
                r#""debuggingKeywords":0,"simpleMarkers":0,"solutionHints":0,"toolDefinitions":2,"conversationTurns":1},"#,
                r#""tier":"fast","adjusted":["escalated:upstream_error"],"headers":[["x-team","search"]]}}"#
            )
        );
        assert_eq!(line, serde_json::to_vec(&r).unwrap());
    }
}
