//! Tests of the meter against byte-exact provider fixtures (`testdata/`).

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

const CHAT_IU: &str = include_str!("testdata/openai_chat_include_usage.sse");
const CHAT: &str = include_str!("testdata/openai_chat.sse");
const CHAT_TOOLS_IU: &str = include_str!("testdata/openai_chat_tools_include_usage.sse");
const CHAT_TOOLS: &str = include_str!("testdata/openai_chat_tools.sse");
const RESPONSES: &str = include_str!("testdata/openai_responses.sse");
const ANTHROPIC: &str = include_str!("testdata/anthropic.sse");
const ANTHROPIC_TOOLS: &str = include_str!("testdata/anthropic_tools.sse");
const ANTHROPIC_OVERLOADED: &str = include_str!("testdata/anthropic_overloaded.sse");

const ALL_FLAVORS: [Flavor; 4] = [
    Flavor::OpenAiChat,
    Flavor::OpenAiResponses,
    Flavor::OpenAiEmbeddings,
    Flavor::Anthropic,
];

/// Every stream fixture, its flavor, and whether it ends with its terminal event.
const STREAMS: &[(&str, Flavor, &str, bool)] = &[
    (
        "openai_chat_include_usage",
        Flavor::OpenAiChat,
        CHAT_IU,
        true,
    ),
    ("openai_chat", Flavor::OpenAiChat, CHAT, true),
    (
        "openai_chat_tools_include_usage",
        Flavor::OpenAiChat,
        CHAT_TOOLS_IU,
        true,
    ),
    ("openai_chat_tools", Flavor::OpenAiChat, CHAT_TOOLS, true),
    ("openai_responses", Flavor::OpenAiResponses, RESPONSES, true),
    ("anthropic", Flavor::Anthropic, ANTHROPIC, true),
    ("anthropic_tools", Flavor::Anthropic, ANTHROPIC_TOOLS, true),
    (
        "anthropic_overloaded",
        Flavor::Anthropic,
        ANTHROPIC_OVERLOADED,
        false,
    ),
];

fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> TokenCounts {
    TokenCounts {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        cache_write_1h_tokens: 0,
    }
}

/// Runs a tap over `input` cut at the given positions (any order, duplicates
/// and out-of-range positions allowed); returns the forwarded bytes.
fn run_cuts(flavor: Flavor, strip: bool, input: &[u8], cuts: &[usize]) -> (Vec<u8>, TapOutcome) {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    cuts.push(0);
    cuts.push(input.len());
    cuts.sort_unstable();
    cuts.dedup();
    let whole = Bytes::copy_from_slice(input);
    let chunks = cuts.windows(2).map(|w| whole.slice(w[0]..w[1]));
    run_chunks(flavor, strip, chunks)
}

fn run_chunks(
    flavor: Flavor,
    strip: bool,
    chunks: impl IntoIterator<Item = Bytes>,
) -> (Vec<u8>, TapOutcome) {
    let mut tap = SseTap::new(flavor, strip);
    let mut out = Vec::new();
    for chunk in chunks {
        tap.push(chunk, &mut out);
    }
    let outcome = tap.finish(&mut out);
    (out.concat(), outcome)
}

fn run(flavor: Flavor, strip: bool, input: &str) -> (Vec<u8>, TapOutcome) {
    run_cuts(flavor, strip, input.as_bytes(), &[])
}

fn one_byte_chunks(input: &[u8]) -> Vec<usize> {
    (0..input.len()).collect()
}

/// The byte offsets just past each event's terminating blank line.
fn event_ends(input: &str) -> Vec<usize> {
    input.match_indices("\n\n").map(|(i, _)| i + 2).collect()
}

fn assert_text_eq(actual: &[u8], expected: &str) {
    let actual = String::from_utf8_lossy(actual);
    if actual != expected {
        let at = actual
            .bytes()
            .zip(expected.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let from = at.saturating_sub(80);
        panic!(
            "output differs at byte {at}\n  actual:   {:?}\n  expected: {:?}",
            actual.get(from..(at + 80).min(actual.len())),
            expected.get(from..(at + 80).min(expected.len())),
        );
    }
}

// ------------------------------------------------------------------ from_json

#[test]
fn json_openai_chat_splits_cached_prompt_tokens() {
    let m = from_json(
        Flavor::OpenAiChat,
        include_bytes!("testdata/openai_chat.json"),
    )
    .unwrap()
    .unwrap();
    // prompt_tokens 2006 includes cached_tokens 1920.
    assert_eq!(m.usage, usage(86, 8, 1920, 0));
    assert_eq!(m.served_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
}

#[test]
fn json_openai_responses_splits_cached_input_tokens() {
    let m = from_json(
        Flavor::OpenAiResponses,
        include_bytes!("testdata/openai_responses.json"),
    )
    .unwrap()
    .unwrap();
    // input_tokens 1536 includes cached_tokens 1280.
    assert_eq!(m.usage, usage(256, 20, 1280, 0));
    assert_eq!(m.served_model.as_deref(), Some("gpt-4.1-2025-04-14"));
}

#[test]
fn json_openai_embeddings() {
    let m = from_json(
        Flavor::OpenAiEmbeddings,
        include_bytes!("testdata/openai_embeddings.json"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(m.usage, usage(8, 0, 0, 0));
    assert_eq!(m.served_model.as_deref(), Some("text-embedding-3-small"));
}

#[test]
fn json_anthropic_input_excludes_cache() {
    let m = from_json(Flavor::Anthropic, include_bytes!("testdata/anthropic.json"))
        .unwrap()
        .unwrap();
    assert_eq!(m.usage, usage(14, 13, 10240, 2051));
    assert_eq!(
        m.served_model.as_deref(),
        Some("claude-sonnet-4-5-20250929")
    );
}

#[test]
fn json_missing_and_null_counts_are_zero() {
    let cases: &[(Flavor, &str, TokenCounts)] = &[
        (
            Flavor::OpenAiChat,
            r#"{"usage":{"prompt_tokens":10}}"#,
            usage(10, 0, 0, 0),
        ),
        (
            Flavor::OpenAiChat,
            r#"{"usage":{"prompt_tokens":10,"completion_tokens":null,"prompt_tokens_details":null}}"#,
            usage(10, 0, 0, 0),
        ),
        (
            Flavor::OpenAiChat,
            r#"{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":null}}}"#,
            usage(10, 0, 0, 0),
        ),
        // More cached than prompt (never seen; must not wrap).
        (
            Flavor::OpenAiChat,
            r#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":7}}}"#,
            usage(0, 0, 7, 0),
        ),
        (
            Flavor::OpenAiResponses,
            r#"{"usage":{}}"#,
            usage(0, 0, 0, 0),
        ),
        (
            Flavor::OpenAiResponses,
            r#"{"usage":{"input_tokens":9,"output_tokens":4,"input_tokens_details":null}}"#,
            usage(9, 4, 0, 0),
        ),
        (
            Flavor::Anthropic,
            r#"{"usage":{"input_tokens":3,"output_tokens":2,"cache_creation_input_tokens":null,"cache_read_input_tokens":null}}"#,
            usage(3, 2, 0, 0),
        ),
        (
            Flavor::OpenAiEmbeddings,
            r#"{"usage":{"total_tokens":3}}"#,
            usage(0, 0, 0, 0),
        ),
    ];
    for (flavor, body, expected) in cases {
        let m = from_json(*flavor, body.as_bytes()).unwrap().unwrap();
        assert_eq!(m.usage, *expected, "{flavor:?} {body}");
        assert_eq!(m.served_model, None);
    }
}

#[test]
fn json_without_usage_is_none() {
    for flavor in ALL_FLAVORS {
        for body in [
            "{}",
            r#"{"model":"gpt-4o","usage":null}"#,
            r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            "[1,2]",
            "[]",
            "\"text\"",
            "null",
            " 42 ",
        ] {
            assert_eq!(
                from_json(flavor, body.as_bytes()).unwrap(),
                None,
                "{flavor:?} {body}"
            );
        }
    }
}

#[test]
fn json_errors() {
    for flavor in ALL_FLAVORS {
        for body in ["", "not json", "{\"usage\":", "{} trailing"] {
            assert!(
                matches!(
                    from_json(flavor, body.as_bytes()),
                    Err(MeterError::InvalidJson(_))
                ),
                "{flavor:?} {body}"
            );
        }
        for body in [
            r#"{"usage":{"prompt_tokens":"12","input_tokens":"12"}}"#,
            r#"{"usage":"many"}"#,
        ] {
            assert!(
                matches!(
                    from_json(flavor, body.as_bytes()),
                    Err(MeterError::BadUsage(_))
                ),
                "{flavor:?} {body}"
            );
        }
    }
    let negative = r#"{"usage":{"input_tokens":-1}}"#;
    assert!(from_json(Flavor::Anthropic, negative.as_bytes()).is_err());
}

#[test]
fn json_ignores_everything_else() {
    let body = br#"{"model":"gpt-4o","choices":[{"message":{"content":"{\"usage\":1}"}}],
        "usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"extra":{"a":[1,2]}},
        "unknown":{"deep":[[[]]]}}"#;
    let m = from_json(Flavor::OpenAiChat, body).unwrap().unwrap();
    assert_eq!(m.usage, usage(1, 2, 0, 0));
    assert_eq!(m.served_model.as_deref(), Some("gpt-4o"));
    let empty_model = br#"{"model":"","usage":{"prompt_tokens":1}}"#;
    assert_eq!(
        from_json(Flavor::OpenAiChat, empty_model)
            .unwrap()
            .unwrap()
            .served_model,
        None
    );
}

// ------------------------------------------------------------------ SSE: usage per flavor

#[test]
fn sse_openai_chat_include_usage() {
    let (out, o) = run(Flavor::OpenAiChat, false, CHAT_IU);
    assert_text_eq(&out, CHAT_IU);
    assert_eq!(o.usage, Some(usage(86, 29, 1920, 0)));
    assert_eq!(o.start_usage, None);
    assert_eq!(o.served_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert!(o.complete);
    assert_eq!(o.output_text_bytes, 125);
    assert_eq!(o.events, 33);
    assert_eq!(o.error_event, None);
}

#[test]
fn sse_openai_chat_without_usage() {
    let (out, o) = run(Flavor::OpenAiChat, false, CHAT);
    assert_text_eq(&out, CHAT);
    assert_eq!(o.usage, None);
    assert_eq!(o.served_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert!(o.complete);
    assert_eq!(o.output_text_bytes, 125);
    assert_eq!(o.events, 32);
}

#[test]
fn sse_openai_chat_tool_call_arguments_count_as_output() {
    let (_, o) = run(Flavor::OpenAiChat, false, CHAT_TOOLS_IU);
    assert_eq!(o.usage, Some(usage(88, 18, 0, 0)));
    assert!(o.complete);
    assert_eq!(o.output_text_bytes, 45);
    assert_eq!(o.events, 16);
}

#[test]
fn sse_openai_responses() {
    let (out, o) = run(Flavor::OpenAiResponses, false, RESPONSES);
    assert_text_eq(&out, RESPONSES);
    assert_eq!(o.usage, Some(usage(256, 20, 1280, 0)));
    assert_eq!(o.served_model.as_deref(), Some("gpt-4.1-2025-04-14"));
    assert!(o.complete);
    assert_eq!(o.output_text_bytes, 78);
    assert_eq!(o.events, 28);
    assert_eq!(o.error_event, None);
}

#[test]
fn sse_anthropic_with_cache_tokens() {
    let (out, o) = run(Flavor::Anthropic, false, ANTHROPIC);
    assert_text_eq(&out, ANTHROPIC);
    assert_eq!(o.usage, Some(usage(14, 31, 10240, 2051)));
    assert_eq!(o.start_usage, Some(usage(14, 1, 10240, 2051)));
    assert_eq!(
        o.served_model.as_deref(),
        Some("claude-sonnet-4-5-20250929")
    );
    assert!(o.complete);
    assert_eq!(o.output_text_bytes, 137);
    assert_eq!(o.events, 34);
    assert_eq!(o.error_event, None);
}

#[test]
fn sse_anthropic_output_only_message_delta_keeps_start_input() {
    let (_, o) = run(Flavor::Anthropic, false, ANTHROPIC_TOOLS);
    assert_eq!(o.usage, Some(usage(472, 89, 0, 0)));
    assert_eq!(o.start_usage, Some(usage(472, 2, 0, 0)));
    assert_eq!(o.served_model.as_deref(), Some("claude-opus-4-1-20250805"));
    assert!(o.complete);
    // thinking (70) + tool input JSON (41); the signature is not text.
    assert_eq!(o.output_text_bytes, 111);
    assert_eq!(o.events, 27);
}

#[test]
fn sse_anthropic_error_mid_stream() {
    let (out, o) = run(Flavor::Anthropic, false, ANTHROPIC_OVERLOADED);
    assert_text_eq(&out, ANTHROPIC_OVERLOADED);
    assert!(!o.complete);
    assert_eq!(o.usage, None);
    assert_eq!(o.start_usage, Some(usage(3120, 1, 4096, 0)));
    assert_eq!(o.output_text_bytes, 27);
    assert_eq!(
        o.error_event.as_deref(),
        Some(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
    );
    // Exact input and cache numbers from message_start; output from the text.
    let est = estimate_cut_stream(Flavor::Anthropic, 999_999, &o);
    assert_eq!(est, usage(3120, 7, 4096, 0));
}

#[test]
fn sse_anthropic_message_delta_with_input_and_nulls() {
    let stream = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"model":"claude-haiku-4-5","usage":{"input_tokens":100,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":1}}}"#,
        "\n\nevent: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":null,"cache_creation_input_tokens":25,"cache_read_input_tokens":null,"output_tokens":7}}"#,
        "\n\nevent: message_delta\n",
        r#"data: {"type":"message_delta","delta":{},"usage":{"output_tokens":9}}"#,
        "\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let (_, o) = run(Flavor::Anthropic, false, stream);
    assert_eq!(o.usage, Some(usage(100, 9, 30, 25)));
    assert_eq!(o.start_usage, Some(usage(100, 1, 30, 20)));
    assert!(o.complete);
}

#[test]
fn anthropic_one_hour_cache_writes_are_metered_as_a_part_of_the_writes() {
    let with_1h = |u: TokenCounts, h: u64| TokenCounts {
        cache_write_1h_tokens: h,
        ..u
    };
    let stream = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"model":"claude-haiku-4-5","usage":{"input_tokens":100,"cache_creation_input_tokens":2000,"cache_read_input_tokens":30,"cache_creation":{"ephemeral_5m_input_tokens":500,"ephemeral_1h_input_tokens":1500},"output_tokens":1}}}"#,
        "\n\nevent: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
        "\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let (_, o) = run(Flavor::Anthropic, false, stream);
    assert_eq!(o.usage, Some(with_1h(usage(100, 9, 30, 2000), 1500)));
    let body = br#"{"model":"claude-haiku-4-5","usage":{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":0,"cache_creation_input_tokens":700,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":700}}}"#;
    let m = from_json(Flavor::Anthropic, body).unwrap().unwrap();
    assert_eq!(m.usage, with_1h(usage(10, 20, 0, 700), 700));
    // More 1-hour writes than writes: capped, never billed twice.
    let lie = br#"{"model":"m","usage":{"input_tokens":1,"output_tokens":1,"cache_creation_input_tokens":5,"cache_creation":{"ephemeral_1h_input_tokens":900}}}"#;
    assert_eq!(
        from_json(Flavor::Anthropic, lie)
            .unwrap()
            .unwrap()
            .usage
            .cache_write_1h_tokens,
        5
    );
}

#[test]
fn usage_so_far_while_streaming() {
    let mut tap = SseTap::new(Flavor::Anthropic, false);
    let mut out = Vec::new();
    let ends = event_ends(ANTHROPIC);
    tap.push(
        Bytes::from_static(&ANTHROPIC.as_bytes()[..ends[0] - 1]),
        &mut out,
    );
    assert_eq!(tap.usage_so_far(), None);
    tap.push(
        Bytes::from_static(&ANTHROPIC.as_bytes()[ends[0] - 1..ends[0]]),
        &mut out,
    );
    assert_eq!(tap.usage_so_far(), Some(&usage(14, 1, 10240, 2051)));
    assert_eq!(tap.served_model(), Some("claude-sonnet-4-5-20250929"));
    assert!(!tap.is_complete());

    let mut tap = SseTap::new(Flavor::OpenAiChat, true);
    let ends = event_ends(CHAT_IU);
    let usage_chunk_end = ends[ends.len() - 2];
    tap.push(
        Bytes::from_static(&CHAT_IU.as_bytes()[..usage_chunk_end - 1]),
        &mut out,
    );
    assert_eq!(tap.usage_so_far(), None);
    tap.push(
        Bytes::from_static(&CHAT_IU.as_bytes()[usage_chunk_end - 1..]),
        &mut out,
    );
    assert_eq!(tap.usage_so_far(), Some(&usage(86, 29, 1920, 0)));
    assert!(tap.is_complete());
}

#[test]
fn sse_responses_failed_and_incomplete() {
    let failed = concat!(
        "event: response.created\n",
        r#"data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","model":"o4-mini-2025-04-16","usage":null,"error":null}}"#,
        "\n\nevent: response.output_text.delta\n",
        r#"data: {"type":"response.output_text.delta","sequence_number":1,"delta":"Hello wor"}"#,
        "\n\nevent: response.failed\n",
        r#"data: {"type":"response.failed","sequence_number":2,"response":{"id":"resp_1","status":"failed","model":"o4-mini-2025-04-16","error":{"code":"server_error","message":"The model failed."},"usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":0},"output_tokens":3}}}"#,
        "\n\n",
    );
    let (_, o) = run(Flavor::OpenAiResponses, false, failed);
    assert!(o.complete);
    assert_eq!(o.usage, Some(usage(50, 3, 0, 0)));
    assert_eq!(o.served_model.as_deref(), Some("o4-mini-2025-04-16"));
    assert_eq!(o.output_text_bytes, 9);
    assert_eq!(
        o.error_event.as_deref(),
        Some(r#"{"code":"server_error","message":"The model failed."}"#)
    );

    let incomplete = concat!(
        "event: response.incomplete\n",
        r#"data: {"type":"response.incomplete","response":{"model":"gpt-5","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":16}}}"#,
        "\n\n",
    );
    let (_, o) = run(Flavor::OpenAiResponses, false, incomplete);
    assert!(o.complete);
    assert_eq!(o.usage, Some(usage(6, 16, 4, 0)));
    assert_eq!(o.error_event, None);

    let error = "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"Slow down\"}\n\n";
    let (_, o) = run(Flavor::OpenAiResponses, false, error);
    assert!(!o.complete);
    assert_eq!(
        o.error_event.as_deref(),
        Some(r#"{"type":"error","code":"rate_limit_exceeded","message":"Slow down"}"#)
    );
    // A failure event without a parsable body still ends the stream.
    let (_, o) = run(
        Flavor::OpenAiResponses,
        false,
        "event: response.failed\ndata: oops\n\n",
    );
    assert!(o.complete);
    assert_eq!(o.error_event.as_deref(), Some("response.failed"));
    // Audio deltas are not text.
    let audio = "data: {\"type\":\"response.audio.delta\",\"delta\":\"UklGRgAAAAA=\"}\n\n";
    assert_eq!(
        run(Flavor::OpenAiResponses, false, audio)
            .1
            .output_text_bytes,
        0
    );
}

#[test]
fn sse_chat_error_chunk_and_event() {
    let stream = concat!(
        r#"data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
        "\n\n",
        r#"data: {"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#,
        "\n\n",
    );
    let (_, o) = run(Flavor::OpenAiChat, false, stream);
    assert!(!o.complete);
    assert_eq!(o.output_text_bytes, 2);
    assert!(o.error_event.as_deref().unwrap().contains("server_error"));

    // An `event: error` with non-JSON data, truncated at a char boundary.
    let long = format!("event: error\ndata: {}\n\n", "é".repeat(3000));
    let (_, o) = run(Flavor::OpenAiChat, false, &long);
    let err = o.error_event.unwrap();
    assert_eq!(err.len(), 2048);
    assert!(err.chars().all(|c| c == 'é'));
}

#[test]
fn chat_usage_on_every_chunk_takes_the_latest() {
    // vLLM's `continuous_usage_stats`: cumulative usage on every chunk.
    let stream = concat!(
        r#"data: {"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":10,"completion_tokens":1}}"#,
        "\n\n",
        r#"data: {"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"b"}}],"usage":{"prompt_tokens":10,"completion_tokens":2}}"#,
        "\n\ndata: [DONE]\n\n",
    );
    let (out, o) = run(Flavor::OpenAiChat, true, stream);
    assert_eq!(o.usage, Some(usage(10, 2, 0, 0)));
    // Stripped: the client did not ask for usage.
    assert_text_eq(
        &out,
        concat!(
            r#"data: {"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            "\n\n",
            r#"data: {"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"b"}}]}"#,
            "\n\ndata: [DONE]\n\n",
        ),
    );
}

// ------------------------------------------------------------------ pass-through and strip

#[test]
fn without_strip_every_chunk_is_forwarded_as_is() {
    for &(name, flavor, input, _) in STREAMS {
        for f in ALL_FLAVORS {
            // Any flavor (even the wrong one) forwards the exact bytes.
            let chunks: Vec<Bytes> = input
                .as_bytes()
                .chunks(97)
                .map(Bytes::copy_from_slice)
                .collect();
            let mut tap = SseTap::new(f, false);
            let mut out = Vec::new();
            for chunk in &chunks {
                let before = out.len();
                tap.push(chunk.clone(), &mut out);
                // Forwarded immediately, zero-copy (the same buffer).
                assert_eq!(out.len(), before + 1, "{name}");
                assert_eq!(out[before].as_ptr(), chunk.as_ptr(), "{name}");
            }
            tap.finish(&mut out);
            assert_text_eq(&out.concat(), input);
        }
        // strip_usage is ignored by non-chat flavors.
        if flavor != Flavor::OpenAiChat {
            assert_text_eq(&run(flavor, true, input).0, input);
        }
    }
}

#[test]
fn strip_usage_yields_the_stream_without_include_usage() {
    for (with, without) in [(CHAT_IU, CHAT), (CHAT_TOOLS_IU, CHAT_TOOLS)] {
        let (out, o) = run(Flavor::OpenAiChat, true, with);
        assert_text_eq(&out, without);
        // Metered all the same.
        assert_eq!(o, run(Flavor::OpenAiChat, false, with).1);
        // A stream that has nothing to strip passes unchanged.
        assert_text_eq(&run(Flavor::OpenAiChat, true, without).0, without);
    }
}

#[test]
fn strip_is_zero_copy_and_forwards_each_event_when_complete() {
    let input = Bytes::from_static(CHAT_IU.as_bytes());
    let ends = event_ends(CHAT_IU);
    let mut tap = SseTap::new(Flavor::OpenAiChat, true);
    let mut out = Vec::new();
    // Feed the first event minus its final newline: nothing forwarded yet.
    tap.push(input.slice(..ends[0] - 1), &mut out);
    assert!(out.is_empty());
    tap.push(input.slice(ends[0] - 1..ends[1]), &mut out);
    let first = out.concat();
    assert_text_eq(&first, &CHAT[..event_ends(CHAT)[1]]);
    tap.push(input.slice(ends[1]..), &mut out);
    tap.finish(&mut out);
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    for piece in &out {
        assert!(
            range.contains(&(piece.as_ptr() as usize)),
            "copied instead of sliced"
        );
    }
    assert_text_eq(&out.concat(), CHAT);
}

#[test]
fn strip_removes_usage_wherever_it_is_in_the_chunk() {
    let input = concat!(
        r#"data: {"usage":null,"id":"a","choices":[{"delta":{"content":"x"}}]}"#,
        "\n\n",
        r#"data: { "id": "b", "usage": null, "choices": [ ] }"#,
        "\r\n\r\n",
        r#"data:{"id":"c","usage":null}"#,
        "\n\n",
        // A comment and an id line around the data; an `event:` name.
        ": keep-alive\nid: 7\nevent: chunk\n",
        r#"data: {"id":"d","choices":[],"usage":null}"#,
        "\nretry: 10\n\n",
        // Usage chunk preceded by a comment: the whole event goes.
        ": the end\n",
        r#"data: {"id":"e","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );
    let expected = concat!(
        r#"data: {"id":"a","choices":[{"delta":{"content":"x"}}]}"#,
        "\n\n",
        r#"data: { "id": "b", "choices": [ ] }"#,
        "\r\n\r\n",
        r#"data:{"id":"c"}"#,
        "\n\n",
        ": keep-alive\nid: 7\nevent: chunk\n",
        r#"data: {"id":"d","choices":[]}"#,
        "\nretry: 10\n\n",
        "data: [DONE]\n\n",
    );
    for cuts in [vec![], one_byte_chunks(input.as_bytes())] {
        let (out, o) = run_cuts(Flavor::OpenAiChat, true, input.as_bytes(), &cuts);
        assert_text_eq(&out, expected);
        assert_eq!(o.usage, Some(usage(3, 1, 0, 0)));
        assert!(o.complete);
    }
}

#[test]
fn strip_leaves_multiline_data_and_bad_json_alone() {
    // The data value is not one contiguous run of bytes, or not JSON: forwarded unchanged.
    let input = "data: {\"id\":\"a\",\ndata: \"usage\":null}\n\ndata: {\"usage\":null\n\n";
    let (out, _) = run(Flavor::OpenAiChat, true, input);
    assert_text_eq(&out, input);
}

// ------------------------------------------------------------------ SSE syntax

#[test]
fn sse_field_syntax() {
    let stream = concat!(
        "\u{FEFF}: a comment first, after a BOM\n",
        "event: message_start\n",
        "id: 1\n",
        "data:{\"type\":\"message_start\",\n",
        "data:  \"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":5}}}\n",
        "\n",
        // An event with no data is not dispatched.
        "event: ping\n\n",
        "data\n\n", // a `data` field with no colon: empty data, dispatched
        "unknown: field\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let (out, o) = run(Flavor::Anthropic, false, stream);
    assert_text_eq(&out, stream);
    assert_eq!(o.start_usage, Some(usage(5, 0, 0, 0)));
    assert_eq!(o.served_model.as_deref(), Some("m"));
    assert_eq!(o.events, 3);
    assert!(o.complete);

    // A BOM before a data line, in strip mode: offsets stay right.
    let with_bom = "\u{FEFF}data: {\"choices\":[],\"usage\":null}\n\n";
    let (out, _) = run(Flavor::OpenAiChat, true, with_bom);
    assert_text_eq(&out, "\u{FEFF}data: {\"choices\":[]}\n\n");
}

#[test]
fn unterminated_last_event_is_not_dispatched() {
    let cut = CHAT_IU.strip_suffix('\n').unwrap();
    let (out, o) = run(Flavor::OpenAiChat, false, cut);
    assert_text_eq(&out, cut);
    assert!(!o.complete);
    // The usage chunk before it was complete.
    assert_eq!(o.usage, Some(usage(86, 29, 1920, 0)));
    // With stripping, the held partial event is forwarded as it came.
    let (out, o) = run(Flavor::OpenAiChat, true, cut);
    assert_text_eq(&out, CHAT.strip_suffix('\n').unwrap());
    assert!(!o.complete);
}

fn with_line_endings(s: &str, eol: &str) -> String {
    s.replace('\n', eol)
}

#[test]
fn crlf_and_cr_line_endings() {
    for eol in ["\r\n", "\r"] {
        for &(name, flavor, input, _) in STREAMS {
            let converted = with_line_endings(input, eol);
            let lf = run(flavor, false, input).1;
            for cuts in [vec![], one_byte_chunks(converted.as_bytes())] {
                let (out, o) = run_cuts(flavor, false, converted.as_bytes(), &cuts);
                assert_text_eq(&out, &converted);
                assert_eq!(o, lf, "{name} {eol:?}");
            }
        }
        for (with, without) in [(CHAT_IU, CHAT), (CHAT_TOOLS_IU, CHAT_TOOLS)] {
            let (with, without) = (
                with_line_endings(with, eol),
                with_line_endings(without, eol),
            );
            for cuts in [vec![], one_byte_chunks(with.as_bytes())] {
                let (out, _) = run_cuts(Flavor::OpenAiChat, true, with.as_bytes(), &cuts);
                assert_text_eq(&out, &without);
            }
        }
    }
}

#[test]
fn one_byte_chunks_match_the_unsplit_run() {
    for &(name, flavor, input, _) in STREAMS {
        for strip in [false, true] {
            let whole = run(flavor, strip, input);
            let split = run_cuts(
                flavor,
                strip,
                input.as_bytes(),
                &one_byte_chunks(input.as_bytes()),
            );
            assert_eq!(split, whole, "{name} strip={strip}");
        }
    }
}

// ------------------------------------------------------------------ oversize events

#[test]
fn oversize_event_is_forwarded_unparsed() {
    let big = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}],\"usage\":null}}\n\n",
        "x".repeat(MAX_EVENT_BYTES + 10)
    );
    let tail = concat!(
        r#"data: {"model":"gpt-4o","choices":[{"delta":{"content":"ok"}}],"usage":null}"#,
        "\n\n",
        r#"data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}"#,
        "\n\ndata: [DONE]\n\n"
    );
    let input = format!("{big}{tail}");
    let expected_stripped = format!(
        "{big}{}",
        concat!(
            r#"data: {"model":"gpt-4o","choices":[{"delta":{"content":"ok"}}]}"#,
            "\n\ndata: [DONE]\n\n"
        )
    );
    for cuts in [
        vec![],
        (0..input.len()).step_by(65_536).collect::<Vec<_>>(),
        vec![100, 4_194_310],
    ] {
        let (out, o) = run_cuts(Flavor::OpenAiChat, false, input.as_bytes(), &cuts);
        assert!(out == input.as_bytes());
        assert_eq!(o.events, 4);
        assert_eq!(o.output_text_bytes, 2, "the oversize event is not parsed");
        assert_eq!(o.usage, Some(usage(9, 4, 0, 0)));
        assert!(o.complete);
        let (out, o2) = run_cuts(Flavor::OpenAiChat, true, input.as_bytes(), &cuts);
        assert!(
            out == expected_stripped.as_bytes(),
            "stripped output differs"
        );
        assert_eq!(o2, o);
    }
}

#[test]
fn memory_stays_bounded_on_an_endless_line() {
    for strip in [false, true] {
        let mut tap = SseTap::new(Flavor::OpenAiChat, strip);
        let chunk = Bytes::from(vec![b'a'; 64 * 1024]);
        let mut out = Vec::new();
        let mut forwarded = 0;
        for _ in 0..200 {
            tap.push(chunk.clone(), &mut out);
            forwarded += out.drain(..).map(|b| b.len()).sum::<usize>();
            assert!(tap.held_bytes() <= 2 * MAX_EVENT_BYTES + 2 * chunk.len());
        }
        // Everything but at most one event's worth was forwarded already.
        assert!(200 * chunk.len() - forwarded <= MAX_EVENT_BYTES + chunk.len());
        tap.push(Bytes::from_static(b"\n\ndata: [DONE]\n\n"), &mut out);
        let o = tap.finish(&mut out);
        assert!(o.complete);
        assert_eq!(o.events, 2);
    }
}

// ------------------------------------------------------------------ cut streams

/// The estimate rule, restated independently.
fn expected_estimate(flavor: Flavor, reserved: u64, o: &TapOutcome) -> TokenCounts {
    let text = o.output_text_bytes.div_ceil(4);
    let reported = o.usage.or(if flavor == Flavor::Anthropic {
        o.start_usage
    } else {
        None
    });
    match reported {
        Some(u) => TokenCounts {
            output_tokens: u.output_tokens.max(text),
            ..u
        },
        None => usage(reserved, text, 0, 0),
    }
}

fn check_cut(name: &str, flavor: Flavor, input: &str, ends_with_terminal: bool, at: usize) {
    let full = run(flavor, false, input).1;
    let cut = &input.as_bytes()[..at];
    let (out, o) = run_cuts(flavor, false, cut, &[at / 2]);
    assert!(out == cut, "{name}@{at}: output is not the input");
    if at < input.len() || !ends_with_terminal {
        assert!(!o.complete, "{name}@{at}: complete");
    }
    assert!(o.output_text_bytes <= full.output_text_bytes);
    assert!(o.events <= full.events);
    let est = estimate_cut_stream(flavor, 1234, &o);
    assert_eq!(est, expected_estimate(flavor, 1234, &o), "{name}@{at}");
    assert!(est.output_tokens >= o.output_text_bytes.div_ceil(4));
    // Stripping does not change what is metered.
    let (_, stripped) = run_cuts(flavor, true, cut, &[at / 3]);
    assert_eq!(stripped, o, "{name}@{at}");
}

#[test]
fn cut_streams_at_event_boundaries() {
    for &(name, flavor, input, terminal) in STREAMS {
        for end in event_ends(input) {
            for at in end.saturating_sub(2)..=end.min(input.len()) {
                check_cut(name, flavor, input, terminal, at);
            }
        }
    }
}

#[test]
fn cut_stream_estimates() {
    let ends = event_ends(CHAT);
    // After ten chunks: "The capital of France is Paris. It’s" = 38 bytes.
    let (_, o) = run(Flavor::OpenAiChat, false, &CHAT[..ends[9]]);
    assert_eq!(o.output_text_bytes, 38);
    assert_eq!(
        estimate_cut_stream(Flavor::OpenAiChat, 2006, &o),
        usage(2006, 10, 0, 0)
    );
    // The usage chunk arrived but [DONE] did not: the reported numbers stand.
    let ends = event_ends(CHAT_IU);
    let (_, o) = run(Flavor::OpenAiChat, false, &CHAT_IU[..ends[ends.len() - 2]]);
    assert!(!o.complete);
    assert_eq!(
        estimate_cut_stream(Flavor::OpenAiChat, 5000, &o),
        usage(86, 32, 1920, 0)
    );
    // Anthropic cut right after message_start: exact input, text-based output.
    let ends = event_ends(ANTHROPIC);
    let (_, o) = run(Flavor::Anthropic, false, &ANTHROPIC[..ends[6]]);
    assert_eq!(o.usage, None);
    assert_eq!(o.output_text_bytes, 21); // "Based on the contract"
    assert_eq!(
        estimate_cut_stream(Flavor::Anthropic, 1, &o),
        usage(14, 6, 10240, 2051)
    );
    // Nothing at all arrived.
    let o = run(Flavor::OpenAiResponses, false, "").1;
    assert_eq!(o, TapOutcome::default());
    assert_eq!(
        estimate_cut_stream(Flavor::OpenAiResponses, 77, &o),
        usage(77, 0, 0, 0)
    );
}

// ------------------------------------------------------------------ properties

fn stream_strategy() -> impl Strategy<Value = (usize, bool)> {
    (0..STREAMS.len(), any::<bool>())
}

fn cuts_strategy(max_cuts: usize) -> impl Strategy<Value = Vec<prop::sample::Index>> {
    prop::collection::vec(any::<prop::sample::Index>(), 0..max_cuts)
}

fn positions(indices: &[prop::sample::Index], len: usize) -> Vec<usize> {
    indices.iter().map(|i| i.index(len + 1)).collect()
}

/// SSE-ish noise: fragments that reach every branch of the parser and the stripper.
fn sse_noise() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        "data: ",
        "data:",
        "data",
        "event: error",
        "event: message_start",
        ": comment",
        "id: 3",
        "\n",
        "\r",
        "\r\n",
        "\n\n",
        "\u{FEFF}",
        "[DONE]",
        "{",
        "}",
        "[",
        "]",
        ",",
        "\"usage\":null",
        "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}",
        "\"choices\":[]",
        "\"choices\":[{\"delta\":{\"content\":\"hé\"}}]",
        "\"model\":\"m\"",
        "\"error\":{}",
        "\"type\":\"message_delta\"",
        "\"usage\":{\"output_tokens\":3}",
        "\"type\":\"response.completed\"",
        "\"response\":{\"usage\":{\"input_tokens\":1}}",
        "{\"choices\":[],\"usage\":null}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}",
        "\"\\\"",
        "é",
        "\u{1F44B}",
    ]);
    prop::collection::vec(pieces, 0..60).prop_map(|v| v.concat().into_bytes())
}

/// `n` proptest cases (or `PROPTEST_CASES` when set, for long soak runs);
/// failing seeds are kept beside this file (`<file>.proptest-regressions`).
fn config(n: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: cases.unwrap_or(n),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_split_of_a_fixture_matches_the_unsplit_run(
        (which, strip) in stream_strategy(),
        cuts in cuts_strategy(64),
    ) {
        let (_, flavor, input, _) = STREAMS[which];
        let whole = run(flavor, strip, input);
        let split = run_cuts(flavor, strip, input.as_bytes(), &positions(&cuts, input.len()));
        prop_assert_eq!(String::from_utf8(split.0).unwrap(), String::from_utf8(whole.0).unwrap());
        prop_assert_eq!(split.1, whole.1);
    }

    #[test]
    fn any_split_with_crlf_or_cr_matches(
        (which, strip) in stream_strategy(),
        cr_only in any::<bool>(),
        cuts in cuts_strategy(64),
    ) {
        let (_, flavor, input, _) = STREAMS[which];
        let converted = with_line_endings(input, if cr_only { "\r" } else { "\r\n" });
        let eol = if cr_only { "\r" } else { "\r\n" };
        let lf = run(flavor, strip, input);
        let (out, o) =
            run_cuts(flavor, strip, converted.as_bytes(), &positions(&cuts, converted.len()));
        prop_assert_eq!(o, lf.1);
        let expected = with_line_endings(&String::from_utf8(lf.0).unwrap(), eol);
        prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn a_cut_stream_is_incomplete_and_estimated(
        (which, _) in stream_strategy(),
        at in any::<prop::sample::Index>(),
    ) {
        let (name, flavor, input, terminal) = STREAMS[which];
        check_cut(name, flavor, input, terminal, at.index(input.len()));
    }

    #[test]
    fn garbage_never_panics_and_passes_through(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in cuts_strategy(32),
        strip in any::<bool>(),
    ) {
        for flavor in ALL_FLAVORS {
            let whole = run_cuts(flavor, strip, &bytes, &[]);
            if !strip {
                prop_assert_eq!(&whole.0, &bytes);
            }
            let split = run_cuts(flavor, strip, &bytes, &positions(&cuts, bytes.len()));
            prop_assert_eq!(split, whole);
        }
    }

    #[test]
    fn sse_noise_never_panics_and_is_split_invariant(
        bytes in sse_noise(),
        cuts in cuts_strategy(32),
        strip in any::<bool>(),
    ) {
        for flavor in ALL_FLAVORS {
            let whole = run_cuts(flavor, strip, &bytes, &[]);
            if !strip || flavor != Flavor::OpenAiChat {
                prop_assert_eq!(&whole.0, &bytes);
            }
            let split = run_cuts(flavor, strip, &bytes, &positions(&cuts, bytes.len()));
            prop_assert_eq!(&split, &whole);
            let bytewise = run_cuts(flavor, strip, &bytes, &one_byte_chunks(&bytes));
            prop_assert_eq!(bytewise, whole);
        }
    }
}

// ------------------------------------------------------------------ cost

/// A typical stream of `n` events built from a fixture: its head, its text
/// deltas repeated, its tail.
fn typical_stream(input: &str, head: usize, tail: usize, n: usize) -> String {
    let events: Vec<&str> = input.split_inclusive("\n\n").collect();
    let middle = &events[head..events.len() - tail];
    let mut out: String = events[..head].concat();
    for e in middle.iter().cycle().take(n - head - tail) {
        out.push_str(e);
    }
    out.push_str(&events[events.len() - tail..].concat());
    out
}

/// `cargo test --release -- --ignored --nocapture tap_cost`
#[test]
#[ignore = "timing; run in release with --nocapture"]
fn tap_cost() {
    let cases = [
        (
            "chat include_usage, stripped",
            Flavor::OpenAiChat,
            true,
            CHAT_IU,
            1,
            3,
        ),
        (
            "chat include_usage",
            Flavor::OpenAiChat,
            false,
            CHAT_IU,
            1,
            3,
        ),
        ("responses", Flavor::OpenAiResponses, false, RESPONSES, 4, 4),
        ("anthropic", Flavor::Anthropic, false, ANTHROPIC, 3, 4),
    ];
    for (label, flavor, strip, fixture, head, tail) in cases {
        let stream = typical_stream(fixture, head, tail, 50);
        let chunks: Vec<Bytes> = stream
            .split_inclusive("\n\n")
            .map(|e| Bytes::copy_from_slice(e.as_bytes()))
            .collect();
        assert_eq!(chunks.len(), 50);
        let iterations = 5_000;
        let mut out = Vec::with_capacity(200);
        let mut sink = 0u64;
        let start = std::time::Instant::now();
        for _ in 0..iterations {
            let mut tap = SseTap::new(flavor, strip);
            for chunk in &chunks {
                tap.push(chunk.clone(), &mut out);
            }
            let o = tap.finish(&mut out);
            sink += o.events + out.len() as u64;
            out.clear();
        }
        let per_stream = start.elapsed() / iterations;
        println!(
            "{label:32} {:>6} bytes, 50 events: {:>7.1} µs/stream, {:>5} ns/event ({sink})",
            stream.len(),
            per_stream.as_secs_f64() * 1e6,
            per_stream.as_nanos() / 50,
        );
    }
    let body = include_bytes!("testdata/openai_responses.json");
    let start = std::time::Instant::now();
    for _ in 0..20_000 {
        std::hint::black_box(from_json(
            Flavor::OpenAiResponses,
            std::hint::black_box(body),
        ))
        .unwrap();
    }
    println!(
        "from_json responses body: {} ns",
        (start.elapsed() / 20_000).as_nanos()
    );
}

/// Fuzzing found arrays read by position as a response or a usage.
#[test]
fn arrays_are_never_read_as_responses_or_usage() {
    for flavor in ALL_FLAVORS {
        assert_eq!(from_json(flavor, br#"["gpt-x",[1000,20]]"#).unwrap(), None);
        assert!(matches!(
            from_json(flavor, br#"{"model":"m","usage":[1000,20]}"#),
            Err(MeterError::BadUsage(_))
        ));
        let mut tap = super::JsonTap::new();
        tap.push(br#"{"model":"m","usage":[1000,20]}"#);
        assert_eq!(tap.finish(flavor).metered, None);
    }
}

/// Fuzzing found a chat chunk that is an array metered by position.
#[test]
fn an_array_event_is_no_chunk() {
    let mut tap = SseTap::new(Flavor::OpenAiChat, false);
    let mut out = Vec::new();
    tap.push(
        Bytes::from_static(b"data: [\"gpt-x\",[],[1000,20]]\n\ndata: [DONE]\n\n"),
        &mut out,
    );
    let outcome = tap.finish(&mut out);
    assert_eq!(outcome.usage, None);
}
