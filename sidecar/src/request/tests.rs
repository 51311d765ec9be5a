//! Unit tests: golden rewrites written out byte for byte, extraction per
//! endpoint, errors, digest, and a timing test (`--ignored`).

use std::{borrow::Cow, fmt, time::Instant};

use bytes::Bytes;
use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::{Value, json};
use tokenwarden_core::{classify::Role, workload::Endpoint};

use super::{BodyError, ParsedRequest, digest, parse, parse_without_texts, rewrite};

const CHAT: Endpoint = Endpoint::ChatCompletions;
const MESSAGES: Endpoint = Endpoint::Messages;
const RESPONSES: Endpoint = Endpoint::Responses;
const EMBEDDINGS: Endpoint = Endpoint::Embeddings;

// === helpers (shared with the property tests) ===

/// The top-level members of a JSON object, in order (independent of
/// serde_json's `preserve_order` feature).
pub(super) fn members(body: &[u8]) -> Vec<(String, Value)> {
    struct V;

    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, Value)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    let out = (&mut de).deserialize_map(V).unwrap();
    de.end().unwrap();
    out
}

/// The top-level members of a JSON object, in order, with the byte spans of
/// their values.
pub(super) fn member_spans(body: &[u8]) -> Vec<(String, std::ops::Range<usize>)> {
    struct V;

    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, &'de serde_json::value::RawValue)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    let pairs = (&mut de).deserialize_map(V).unwrap();
    de.end().unwrap();
    let base = body.as_ptr().addr();
    pairs
        .into_iter()
        .map(|(k, v)| {
            let start = v.get().as_ptr().addr() - base;
            (k, start..start + v.get().len())
        })
        .collect()
}

/// The top-level members of a JSON object, in order, with their values'
/// bytes as written.
pub(super) fn raw_members(body: &[u8]) -> Vec<(String, String)> {
    member_spans(body)
        .into_iter()
        .map(|(k, span)| (k, String::from_utf8(body[span].to_vec()).unwrap()))
        .collect()
}

/// Parses, rewrites, and returns the output as a string.
fn rw(endpoint: Endpoint, input: &str, model: Option<&str>, ensure_usage: bool) -> String {
    let body = Bytes::copy_from_slice(input.as_bytes());
    let parsed = parse(endpoint, &body).unwrap();
    let out = rewrite(&body, &parsed, model, ensure_usage);
    String::from_utf8(out.to_vec()).unwrap()
}

/// The members the output must have: the input's, with `model` set and
/// `stream_options.include_usage` forced as `rewrite` documents.
fn patched(input: &str, model: Option<&str>, include_usage: bool) -> Vec<(String, Value)> {
    let mut out = members(input.as_bytes());
    if let Some(model) = model {
        match out.iter_mut().find(|(k, _)| k == "model") {
            Some((_, v)) => *v = json!(model),
            None => out.push(("model".into(), json!(model))),
        }
    }
    if include_usage {
        match out.iter_mut().find(|(k, _)| k == "stream_options") {
            Some((_, Value::Object(o))) => {
                o.insert("include_usage".into(), json!(true));
            }
            Some((_, v)) => *v = json!({"include_usage": true}),
            None => out.push(("stream_options".into(), json!({"include_usage": true}))),
        }
    }
    out
}

/// Rewrites `input` and checks the output byte for byte against `expected`,
/// and value for value (in order) against the patched input.
#[track_caller]
fn check(endpoint: Endpoint, input: &str, model: Option<&str>, ensure: bool, expected: &str) {
    let out = rw(endpoint, input, model, ensure);
    assert_eq!(out, expected, "rewritten body differs");
    let before = parse(endpoint, input.as_bytes()).unwrap();
    let include_usage =
        ensure && endpoint == CHAT && before.stream && before.include_usage != Some(true);
    let want = patched(input, model, include_usage);
    assert_eq!(
        members(out.as_bytes()),
        want,
        "rewritten body's values differ"
    );
    // The output parses, with the new values.
    let again = parse(endpoint, out.as_bytes()).unwrap();
    if let Some(model) = model {
        assert_eq!(again.model.as_deref(), Some(model));
    }
    if include_usage {
        assert_eq!(again.include_usage, Some(true));
    }
}

/// Rewrites `input` and checks that the very same buffer comes back.
#[track_caller]
fn check_unchanged(endpoint: Endpoint, input: &str, model: Option<&str>, ensure: bool) {
    let body = Bytes::copy_from_slice(input.as_bytes());
    let parsed = parse(endpoint, &body).unwrap();
    let out = rewrite(&body, &parsed, model, ensure);
    assert_eq!(out, body);
    assert_eq!(
        out.as_ptr(),
        body.as_ptr(),
        "expected the original buffer back (zero-copy)"
    );
}

#[track_caller]
fn err(endpoint: Endpoint, input: &str) -> BodyError {
    parse(endpoint, input.as_bytes()).unwrap_err()
}

fn texts<'p>(parsed: &'p ParsedRequest<'_>) -> Vec<(Role, &'p str)> {
    parsed
        .messages
        .iter()
        .map(|(r, t)| (*r, t.as_ref()))
        .collect()
}

// === golden rewrites ===

#[test]
fn chat_with_tools_model_replaced() {
    let input = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Weather in Paris?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],"tool_choice":"auto","temperature":0}"#;
    let expected = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Weather in Paris?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],"tool_choice":"auto","temperature":0}"#;
    check(CHAT, input, Some("gpt-4o-mini"), false, expected);

    let parsed = parse(CHAT, input.as_bytes()).unwrap();
    assert_eq!(parsed.model.as_deref(), Some("gpt-4o"));
    assert!(!parsed.stream);
    assert_eq!(parsed.include_usage, None);
    assert_eq!(parsed.max_output_tokens, None);
    assert_eq!(parsed.tool_definitions, 1);
    assert_eq!(
        texts(&parsed),
        [
            (Role::System, "You are terse."),
            (Role::User, "Weather in Paris?")
        ]
    );
    assert_eq!(parsed.turns, 1);
}

#[test]
fn pretty_printed_model_in_the_middle_with_trailing_newline() {
    let input = r#"{
  "max_tokens": 1024,
  "model" :  "claude-opus-4-1",
  "system": [
    {"type": "text", "text": "You review code.", "cache_control": {"type": "ephemeral"}}
  ],
  "messages": [
    {"role": "user", "content": "Review this diff."}
  ]
}
"#;
    let expected = r#"{
  "max_tokens": 1024,
  "model" :  "claude-haiku-4-5",
  "system": [
    {"type": "text", "text": "You review code.", "cache_control": {"type": "ephemeral"}}
  ],
  "messages": [
    {"role": "user", "content": "Review this diff."}
  ]
}
"#;
    check(MESSAGES, input, Some("claude-haiku-4-5"), false, expected);
    let parsed = parse(MESSAGES, input.as_bytes()).unwrap();
    assert_eq!(parsed.max_output_tokens, Some(1024));
    assert_eq!(
        texts(&parsed),
        [
            (Role::System, "You review code."),
            (Role::User, "Review this diff.")
        ]
    );
}

#[test]
fn escapes_are_kept_and_decoded() {
    let input = r#"{"messages":[{"role":"user","content":"caf\u00e9 \"quoted\" back\\slash\nnext"}],"model":"gpt\u002d4o","temperature":0.2}"#;
    let parsed = parse(CHAT, input.as_bytes()).unwrap();
    assert_eq!(parsed.model.as_deref(), Some("gpt-4o"));
    assert!(matches!(parsed.model, Some(Cow::Owned(_))));
    assert_eq!(
        texts(&parsed),
        [(Role::User, "café \"quoted\" back\\slash\nnext")]
    );

    // The same model, spelled differently: nothing changes.
    check_unchanged(CHAT, input, Some("gpt-4o"), false);
    let expected = r#"{"messages":[{"role":"user","content":"caf\u00e9 \"quoted\" back\\slash\nnext"}],"model":"o3","temperature":0.2}"#;
    check(CHAT, input, Some("o3"), false, expected);
}

#[test]
fn nested_model_keys_are_not_touched() {
    let input = r#"{"metadata":{"model":"x"},"messages":[{"role":"user","content":"{\"model\": \"y\"}","model":"z"}],"model":"gpt-4o","tools":[{"type":"function","function":{"name":"f","parameters":{"properties":{"model":{"type":"string"}}}}}]}"#;
    let expected = r#"{"metadata":{"model":"x"},"messages":[{"role":"user","content":"{\"model\": \"y\"}","model":"z"}],"model":"gpt-5-mini","tools":[{"type":"function","function":{"name":"f","parameters":{"properties":{"model":{"type":"string"}}}}}]}"#;
    check(CHAT, input, Some("gpt-5-mini"), false, expected);
    let parsed = parse(CHAT, input.as_bytes()).unwrap();
    assert_eq!(parsed.model.as_deref(), Some("gpt-4o"));
    assert_eq!(texts(&parsed), [(Role::User, "{\"model\": \"y\"}")]);
}

#[test]
fn odd_whitespace_and_order_with_both_edits() {
    let input = "{ \"stream\" :true , \"messages\":[ ] ,\"model\"\t:\t\"gpt-4o\" }";
    let expected = "{ \"stream\" :true , \"messages\":[ ] ,\"model\"\t:\t\"gpt-4.1-nano\" \
                    ,\"stream_options\":{\"include_usage\":true}}";
    check(CHAT, input, Some("gpt-4.1-nano"), true, expected);
}

#[test]
fn stream_without_stream_options_gets_one_before_the_closing_brace() {
    let input = r#"{
  "model": "gpt-4o",
  "stream": true,
  "messages": [{"role": "user", "content": "hi"}]
}
"#;
    let expected = r#"{
  "model": "gpt-4o",
  "stream": true,
  "messages": [{"role": "user", "content": "hi"}]
,"stream_options":{"include_usage":true}}
"#;
    check(CHAT, input, None, true, expected);
    let parsed = parse(CHAT, input.as_bytes()).unwrap();
    assert!(parsed.stream);
    assert_eq!(parsed.include_usage, None);
}

#[test]
fn stream_options_with_other_keys_keeps_them() {
    let input = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}"#;
    let expected = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true},"messages":[]}"#;
    check(CHAT, input, None, true, expected);

    let input = r#"{"model": "gpt-4o", "stream": true, "stream_options": { "include_usage": false, "include_obfuscation": true }, "messages": []}"#;
    let expected = r#"{"model": "gpt-4o", "stream": true, "stream_options": { "include_usage": true, "include_obfuscation": true }, "messages": []}"#;
    check(CHAT, input, None, true, expected);
    assert_eq!(
        parse(CHAT, input.as_bytes()).unwrap().include_usage,
        Some(false)
    );

    // Pretty-printed, include_usage last, both edits.
    let input = "{\n  \"stream_options\": {\n    \"x\": [1, 2],\n    \"include_usage\": null\n  },\n  \"model\": \"a\",\n  \"stream\": true\n}";
    let expected = "{\n  \"stream_options\": {\n    \"x\": [1, 2],\n    \"include_usage\": true\n  },\n  \"model\": \"b\",\n  \"stream\": true\n}";
    check(CHAT, input, Some("b"), true, expected);
}

#[test]
fn stream_options_empty_or_null() {
    check(
        CHAT,
        r#"{"model":"m","stream":true,"stream_options":{}}"#,
        None,
        true,
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
    );
    check(
        CHAT,
        r#"{"model":"m","stream":true,"stream_options":{ }}"#,
        None,
        true,
        r#"{"model":"m","stream":true,"stream_options":{ "include_usage":true}}"#,
    );
    check(
        CHAT,
        r#"{"model":"m","stream_options":null,"stream":true}"#,
        None,
        true,
        r#"{"model":"m","stream_options":{"include_usage":true},"stream":true}"#,
    );
}

#[test]
fn nothing_to_change_returns_the_same_buffer() {
    let with_usage = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    check_unchanged(CHAT, with_usage, None, true);
    check_unchanged(CHAT, with_usage, Some("m"), true);
    // Not streaming, or not chat completions: include_usage is not added.
    check_unchanged(CHAT, r#"{"model":"m","messages":[]}"#, None, true);
    check_unchanged(CHAT, r#"{"model":"m","stream":false}"#, None, true);
    check_unchanged(
        RESPONSES,
        r#"{"model":"m","stream":true,"input":"hi"}"#,
        None,
        true,
    );
    check_unchanged(
        MESSAGES,
        r#"{"model":"m","stream":true,"messages":[]}"#,
        None,
        true,
    );
    check_unchanged(CHAT, r#"{"model":"m"}"#, None, false);
}

#[test]
fn missing_or_null_model_is_set() {
    check(
        EMBEDDINGS,
        r#"{"input":"hello"}"#,
        Some("text-embedding-3-small"),
        false,
        r#"{"input":"hello","model":"text-embedding-3-small"}"#,
    );
    check(CHAT, "{}", Some("m"), false, r#"{"model":"m"}"#);
    check(CHAT, "{ }\n", Some("m"), false, "{ \"model\":\"m\"}\n");
    check(
        CHAT,
        r#"{"stream":true}"#,
        Some("m"),
        true,
        r#"{"stream":true,"model":"m","stream_options":{"include_usage":true}}"#,
    );
    check(
        CHAT,
        r#"{"model":null,"n":1}"#,
        Some("m"),
        false,
        r#"{"model":"m","n":1}"#,
    );
    assert_eq!(parse(CHAT, br#"{"model":null}"#).unwrap().model, None);
}

#[test]
fn new_model_is_a_serde_json_string_literal() {
    check(
        CHAT,
        r#"{"model":"a"}"#,
        Some("we\"ird\\"),
        false,
        r#"{"model":"we\"ird\\"}"#,
    );
    check(
        CHAT,
        r#"{"model":"a"}"#,
        Some("modèle"),
        false,
        r#"{"model":"modèle"}"#,
    );
    check(
        CHAT,
        r#"{"model":"a"}"#,
        Some("a\u{1}\n"),
        false,
        r#"{"model":"a\u0001\n"}"#,
    );
}

#[test]
fn model_key_spelled_with_escapes() {
    let input = r#"{"mod\u0065l":"a","x":1}"#;
    assert_eq!(
        parse(CHAT, input.as_bytes()).unwrap().model.as_deref(),
        Some("a")
    );
    check(CHAT, input, Some("b"), false, r#"{"mod\u0065l":"b","x":1}"#);
    assert_eq!(
        err(CHAT, r#"{"model":"a","mod\u0065l":"b"}"#),
        BodyError::DuplicateKey { field: "model" }
    );
}

#[test]
fn lone_surrogates_are_accepted_and_kept() {
    // A JavaScript client cut a string inside an emoji.
    let input = r#"{"model":"m","\ud800":1,"messages":[{"role":"user","content":"hi \ud83d"},{"role":"user","content":[{"type":"text","text":"\udc00x"}]}]}"#;
    let parsed = parse(CHAT, input.as_bytes()).unwrap();
    assert_eq!(parsed.messages.len(), 2);
    assert!(parsed.messages[0].1.starts_with("hi \u{fffd}"));
    assert!(parsed.messages[1].1.ends_with('x'));
    let expected = r#"{"model":"n","\ud800":1,"messages":[{"role":"user","content":"hi \ud83d"},{"role":"user","content":[{"type":"text","text":"\udc00x"}]}]}"#;
    assert_eq!(rw(CHAT, input, Some("n"), false), expected);
}

#[test]
fn rewrite_and_digest_given_another_buffer_parse_it_again() {
    let a = Bytes::from_static(br#"{"model":"a","messages":[]}"#);
    let b = Bytes::copy_from_slice(br#"{"x":1,"model":"a","messages":[]}"#);
    let parsed = parse(CHAT, &a).unwrap();
    assert_eq!(
        rewrite(&b, &parsed, Some("z"), false),
        &br#"{"x":1,"model":"z","messages":[]}"#[..]
    );
    let parsed_b = parse(CHAT, &b).unwrap();
    assert_eq!(digest(&b, &parsed), digest(&b, &parsed_b));
    // An unparsable buffer comes back as it is.
    let junk = Bytes::from_static(b"not json");
    assert_eq!(rewrite(&junk, &parsed, Some("z"), true), junk);
}

// === extraction ===

#[test]
fn chat_extraction() {
    let input = r#"{"model":"m","max_tokens":100,"max_completion_tokens":300,
      "functions":[{"name":"a"}],"tools":[{"type":"function"},{"type":"function"}],
      "messages":[
        {"role":"developer","content":"Be brief."},
        {"content":[{"type":"text","text":"part one"},{"type":"image_url","image_url":{"url":"data:"}},{"text":"part two","type":"text"}],"role":"user"},
        {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"a","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"42"},
        {"role":"assistant","content":[{"type":"refusal","refusal":"no"}]},
        "not a message", 7, null
      ]}"#;
    let parsed = parse(CHAT, input.as_bytes()).unwrap();
    assert_eq!(parsed.max_output_tokens, Some(300));
    assert_eq!(parsed.tool_definitions, 3);
    assert_eq!(
        texts(&parsed),
        [
            (Role::System, "Be brief."),
            (Role::User, "part one"),
            (Role::User, "part two"),
            (Role::Tool, "42"),
        ]
    );
    assert_eq!(parsed.turns, 4);
    // Texts without escapes borrow from the body.
    assert!(
        parsed
            .messages
            .iter()
            .all(|(_, t)| matches!(t, Cow::Borrowed(_)))
    );
    assert_eq!(
        parse(CHAT, br#"{"max_tokens":5}"#)
            .unwrap()
            .max_output_tokens,
        Some(5)
    );
}

#[test]
fn anthropic_extraction() {
    let input = r#"{"model":"claude-sonnet-4-5","max_tokens":2048,"stream":true,
      "system":"You are a careful engineer.",
      "tools":[{"name":"bash","input_schema":{"type":"object"}}],
      "messages":[
        {"role":"user","content":"Fix the flaky test."},
        {"role":"assistant","content":[
          {"type":"thinking","thinking":"hmm","signature":"s"},
          {"type":"text","text":"Running it."},
          {"type":"tool_use","id":"t1","name":"bash","input":{"cmd":"cargo test"}}]},
        {"role":"user","content":[
          {"type":"tool_result","tool_use_id":"t1","content":"test a ... FAILED"},
          {"type":"tool_result","tool_use_id":"t2","content":[{"type":"text","text":"panicked at"},{"type":"image","source":{}}]},
          {"type":"text","text":"Go on."}]},
        {"role":"assistant","content":[{"type":"web_search_tool_result","tool_use_id":"w","content":{"type":"web_search_tool_result_error","error_code":"unavailable"}}]}
      ]}"#;
    let parsed = parse(MESSAGES, input.as_bytes()).unwrap();
    assert!(parsed.stream);
    assert_eq!(parsed.max_output_tokens, Some(2048));
    assert_eq!(parsed.tool_definitions, 1);
    assert_eq!(
        texts(&parsed),
        [
            (Role::System, "You are a careful engineer."),
            (Role::User, "Fix the flaky test."),
            (Role::Assistant, "Running it."),
            (Role::Tool, "test a ... FAILED"),
            (Role::Tool, "panicked at"),
            (Role::User, "Go on."),
        ]
    );
    assert_eq!(parsed.turns, 4);
    // Without texts: everything else the same, and the same bytes go out.
    let lite = parse_without_texts(MESSAGES, input.as_bytes()).unwrap();
    assert!(lite.messages.is_empty());
    assert!(lite.stream);
    assert_eq!(lite.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(lite.max_output_tokens, Some(2048));
    assert_eq!(lite.tool_definitions, 1);
    assert_eq!(lite.turns, 4);
    let body = Bytes::from(input);
    assert_eq!(
        rewrite(&body, &lite, Some("claude-haiku-4-5"), false),
        rewrite(&body, &parsed, Some("claude-haiku-4-5"), false)
    );
    assert_eq!(digest(&body, &lite), digest(&body, &parsed));
    // stream_options is not an Anthropic field: ignored, never rewritten.
    let other = r#"{"model":"m","stream":true,"stream_options":5}"#;
    assert_eq!(
        parse(MESSAGES, other.as_bytes()).unwrap().include_usage,
        None
    );
}

#[test]
fn responses_extraction() {
    let input = r#"{"model":"gpt-5","instructions":"Answer in French.","max_output_tokens":512,
      "tools":[{"type":"web_search"}],
      "input":[
        {"role":"developer","content":"Cite sources."},
        {"role":"user","content":"Quelle heure est-il ?"},
        {"type":"message","role":"user","content":[{"type":"input_text","text":"À Paris."},{"type":"input_image","image_url":"x"}]},
        {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Je regarde.","annotations":[]}]},
        {"type":"reasoning","id":"r","summary":[{"type":"summary_text","text":"thinking"}]},
        {"type":"function_call","call_id":"c","name":"clock","arguments":"{}"},
        {"type":"function_call_output","call_id":"c","output":"14:02"},
        {"type":"computer_call_output","call_id":"d","output":{"type":"computer_screenshot"}}
      ]}"#;
    let parsed = parse(RESPONSES, input.as_bytes()).unwrap();
    assert_eq!(parsed.max_output_tokens, Some(512));
    assert_eq!(parsed.tool_definitions, 1);
    assert_eq!(
        texts(&parsed),
        [
            (Role::System, "Answer in French."),
            (Role::System, "Cite sources."),
            (Role::User, "Quelle heure est-il ?"),
            (Role::User, "À Paris."),
            (Role::Assistant, "Je regarde."),
            (Role::Tool, "14:02"),
        ]
    );
    assert_eq!(parsed.turns, 7);

    let simple = parse(RESPONSES, br#"{"model":"gpt-5","input":"Hello"}"#).unwrap();
    assert_eq!(texts(&simple), [(Role::User, "Hello")]);
    assert_eq!(simple.turns, 1);
}

#[test]
fn embeddings_extraction() {
    let one = parse(EMBEDDINGS, br#"{"model":"e","input":"alpha"}"#).unwrap();
    assert_eq!(texts(&one), [(Role::User, "alpha")]);
    assert_eq!(one.turns, 0);
    let many = parse(
        EMBEDDINGS,
        br#"{"model":"e","input":["a","b\u0021"],"dimensions":8}"#,
    )
    .unwrap();
    assert_eq!(texts(&many), [(Role::User, "a"), (Role::User, "b!")]);
    let tokens = parse(EMBEDDINGS, br#"{"model":"e","input":[[1,2],[3]]}"#).unwrap();
    assert!(tokens.messages.is_empty());
    let flat = parse(EMBEDDINGS, br#"{"model":"e","input":[1,2,3]}"#).unwrap();
    assert!(flat.messages.is_empty());
    // Fields of other endpoints are not read: no type errors from them.
    assert!(
        parse(
            EMBEDDINGS,
            br#"{"model":"e","input":"x","messages":5,"stream":"no"}"#
        )
        .is_ok()
    );
}

#[test]
fn nulls_count_as_absent() {
    let p = parse(
        CHAT,
        br#"{"model":"m","stream":null,"stream_options":null,"max_tokens":null,"tools":null,"messages":null}"#,
    )
    .unwrap();
    assert!(!p.stream);
    assert_eq!(
        (p.include_usage, p.max_output_tokens, p.tool_definitions),
        (None, None, 0)
    );
    assert!(p.messages.is_empty());
    let p = parse(
        MESSAGES,
        br#"{"model":"m","system":null,"messages":[{"role":"user","content":null}]}"#,
    )
    .unwrap();
    assert!(p.messages.is_empty());
    assert_eq!(p.turns, 1);
}

// === errors ===

#[test]
fn invalid_json_reports_line_and_column() {
    let e = err(CHAT, "{\n  \"model\": \"gpt-4o\",\n");
    let BodyError::InvalidJson { message } = &e else {
        panic!("{e:?}")
    };
    assert!(message.contains("line 3 column 0"), "{message}");
    assert!(
        e.to_string()
            .starts_with("request body is not valid JSON: "),
        "{e}"
    );

    for bad in [
        "",
        "   ",
        "{",
        "{\"model\"}",
        "{\"a\":1} x",
        "{\"a\":1}{}",
        "{'a':1}",
        "{\"a\":tru}",
    ] {
        assert!(
            matches!(err(CHAT, bad), BodyError::InvalidJson { .. }),
            "{bad:?}: {:?}",
            err(CHAT, bad)
        );
    }
    // A raw control character inside a message text.
    assert!(matches!(
        err(
            CHAT,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"a\u{1}b\"}]}"
        ),
        BodyError::InvalidJson { .. }
    ));
}

#[test]
fn deep_nesting_is_skipped_without_recursion() {
    // serde_json skips (and captures raw) values iteratively, and the
    // extraction's own recursion is bounded: no depth limit, no stack overflow.
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let d = deep(100_000);
    let bodies = [
        format!(r#"{{"model":"m","x":{d}}}"#),
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":{d}}}]}}"#),
        format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"a","x":{d}}}]}}]}}"#
        ),
        format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"tool_result","content":{d}}}]}}]}}"#
        ),
    ];
    for body in bodies {
        let parsed = parse(MESSAGES, body.as_bytes()).unwrap();
        assert_eq!(parsed.model.as_deref(), Some("m"));
    }
}

#[test]
fn not_an_object() {
    for body in [
        "[]",
        "[{\"model\":\"m\"}]",
        "\"model\"",
        "42",
        "null",
        "true",
    ] {
        assert_eq!(err(CHAT, body), BodyError::NotAnObject, "{body}");
    }
    assert_eq!(
        BodyError::NotAnObject.to_string(),
        "request body must be a JSON object"
    );
}

#[test]
fn field_type_errors_name_the_field() {
    let cases: &[(Endpoint, &str, &str, &str)] = &[
        (CHAT, r#"{"model":4}"#, "model", "a string"),
        (CHAT, r#"{"model":["gpt-4o"]}"#, "model", "a string"),
        (
            CHAT,
            r#"{"model":"m","messages":{"role":"user"}}"#,
            "messages",
            "an array of messages",
        ),
        (
            CHAT,
            r#"{"model":"m","messages":"hi"}"#,
            "messages",
            "an array of messages",
        ),
        (
            CHAT,
            r#"{"model":"m","stream":"yes"}"#,
            "stream",
            "a boolean",
        ),
        (
            CHAT,
            r#"{"model":"m","stream_options":true}"#,
            "stream_options",
            "an object",
        ),
        (
            CHAT,
            r#"{"model":"m","stream_options":{"include_usage":"yes"}}"#,
            "stream_options.include_usage",
            "a boolean",
        ),
        (
            CHAT,
            r#"{"model":"m","max_tokens":-1}"#,
            "max_tokens",
            "a non-negative integer",
        ),
        (
            CHAT,
            r#"{"max_completion_tokens":1.5}"#,
            "max_completion_tokens",
            "a non-negative integer",
        ),
        (CHAT, r#"{"tools":{}}"#, "tools", "an array"),
        (CHAT, r#"{"functions":"f"}"#, "functions", "an array"),
        (
            RESPONSES,
            r#"{"max_output_tokens":"10"}"#,
            "max_output_tokens",
            "a non-negative integer",
        ),
        (
            RESPONSES,
            r#"{"input":{"role":"user"}}"#,
            "input",
            "a string or an array of input items",
        ),
        (
            RESPONSES,
            r#"{"instructions":1}"#,
            "instructions",
            "a string",
        ),
        (
            MESSAGES,
            r#"{"system":5}"#,
            "system",
            "a string or an array of content blocks",
        ),
        (
            MESSAGES,
            r#"{"max_tokens":true}"#,
            "max_tokens",
            "a non-negative integer",
        ),
        (
            EMBEDDINGS,
            r#"{"input":3}"#,
            "input",
            "a string or an array",
        ),
    ];
    for &(endpoint, body, field, expected) in cases {
        assert_eq!(
            err(endpoint, body),
            BodyError::FieldType { field, expected },
            "{body}"
        );
    }
    assert_eq!(
        err(CHAT, r#"{"model":4}"#).to_string(),
        "`model` must be a string"
    );
}

#[test]
fn duplicate_fields_are_rejected() {
    assert_eq!(
        err(CHAT, r#"{"model":"a","model":"b"}"#),
        BodyError::DuplicateKey { field: "model" }
    );
    assert_eq!(
        err(CHAT, r#"{"stream":true,"messages":[],"stream":false}"#),
        BodyError::DuplicateKey { field: "stream" }
    );
    assert_eq!(
        err(
            CHAT,
            r#"{"stream_options":{"include_usage":false,"include_usage":true}}"#
        ),
        BodyError::DuplicateKey {
            field: "stream_options.include_usage"
        }
    );
    assert_eq!(
        err(CHAT, r#"{"model":"a","model":"b"}"#).to_string(),
        "`model` appears more than once in the request body"
    );
    // Members the proxy does not read may repeat.
    let p = parse(CHAT, br#"{"user":"a","model":"m","user":"b"}"#).unwrap();
    assert_eq!(p.model.as_deref(), Some("m"));
}

// === digest ===

#[test]
fn digest_leaves_out_the_model_value_only() {
    let d = |s: &str| {
        let p = parse(CHAT, s.as_bytes()).unwrap();
        digest(s.as_bytes(), &p)
    };
    let base = d(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(
        base,
        d(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
    );
    assert_eq!(
        base,
        d(r#"{"model":null,"messages":[{"role":"user","content":"hi"}]}"#)
    );
    assert_ne!(
        base,
        d(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi!"}]}"#)
    );
    assert_ne!(
        base,
        d(r#"{"model": "gpt-4o","messages":[{"role":"user","content":"hi"}]}"#)
    );
    assert_ne!(base, d(r#"{"messages":[{"role":"user","content":"hi"}]}"#));
    // A rewritten body has the digest of the original.
    let body = Bytes::from_static(br#"{"model":"a","messages":[],"n":2}"#);
    let parsed = parse(CHAT, &body).unwrap();
    let out = rewrite(&body, &parsed, Some("b"), false);
    assert_eq!(
        digest(&body, &parsed),
        digest(&out, &parse(CHAT, &out).unwrap())
    );
}

// === timing ===

/// A chat body of about `messages × 4 KB`: a system prompt, alternating
/// user / assistant turns with code, newlines and quotes (so most texts
/// have escapes), ten tool definitions.
pub(super) fn agent_body(messages: usize) -> Vec<u8> {
    let chunk = "fn main() {\n    println!(\"hello, {}\", name); // a \"quoted\" word\n}\n\
                 The build failed with error[E0382]: borrow of moved value: `x`.\n\tat line 42\n";
    let text = |i: usize| format!("message {i}: {}", chunk.repeat(4096 / chunk.len()));
    let mut msgs = vec![json!({"role": "system", "content": text(0)})];
    for i in 1..messages {
        let role = if i % 2 == 1 { "user" } else { "assistant" };
        msgs.push(json!({"role": role, "content": text(i)}));
    }
    let tools: Vec<Value> = (0..10)
        .map(|i| {
            json!({"type": "function", "function": {"name": format!("tool_{i}"),
                "description": "Runs a tool.",
                "parameters": {"type": "object", "properties": {"arg": {"type": "string"}}}}})
        })
        .collect();
    serde_json::to_vec(&json!({
        "model": "gpt-4o", "messages": msgs, "tools": tools, "stream": true, "temperature": 0.2
    }))
    .unwrap()
}

/// An Anthropic agent body of about `messages × 4 KB`: assistant turns with
/// text + tool_use blocks, user turns with tool_result blocks holding
/// command output (arrays of text blocks: the second-parse path).
fn anthropic_body(messages: usize) -> Vec<u8> {
    let log = "running 12 tests\ntest parse::escapes ... ok\ntest rewrite::\"model\" ... FAILED\n";
    let out = |i: usize| format!("run {i}: {}", log.repeat(4000 / log.len()));
    let mut msgs = vec![json!({"role": "user", "content": "Fix the failing test."})];
    for i in 1..messages {
        msgs.push(if i % 2 == 1 {
            json!({"role": "assistant", "content": [
                {"type": "text", "text": "Running the tests again."},
                {"type": "tool_use", "id": format!("t{i}"), "name": "bash", "input": {"cmd": "cargo test"}}]})
        } else {
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": format!("t{}", i - 1),
                 "content": [{"type": "text", "text": out(i)}]}]})
        });
    }
    serde_json::to_vec(&json!({
        "model": "claude-sonnet-4-5", "max_tokens": 8192, "stream": true,
        "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
        "messages": msgs
    }))
    .unwrap()
}

/// Prints the time per call: the best of 10 batches (the machine is shared;
/// the minimum is the least noisy estimate).
fn time<T>(label: &str, bytes: usize, iterations: u32, mut f: impl FnMut() -> T) {
    let batch = (iterations / 10).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..11 {
        let start = Instant::now();
        for _ in 0..batch {
            std::hint::black_box(f());
        }
        best = best.min(start.elapsed().as_secs_f64() / f64::from(batch));
    }
    let mb_s = bytes as f64 / best / 1e6;
    println!("{label:<28} {:>9.1} µs   {mb_s:>7.0} MB/s", best * 1e6);
}

#[test]
#[ignore = "timing; run with --release -- --ignored --nocapture"]
fn perf_parse_rewrite_digest() {
    let bodies = [
        ("chat", 50, agent_body(50), 2000),
        ("chat", 500, agent_body(500), 200),
        ("anthropic", 50, anthropic_body(50), 2000),
        ("anthropic", 500, anthropic_body(500), 200),
    ];
    for (kind, messages, body, iterations) in bodies {
        let body = Bytes::from(body);
        let n = body.len();
        let endpoint = if kind == "chat" { CHAT } else { MESSAGES };
        println!("{kind} body: {messages} messages, {} KB", n / 1024);
        time("parse", n, iterations, || parse(endpoint, &body).unwrap());
        time("parse without texts", n, iterations, || {
            parse_without_texts(endpoint, &body).unwrap()
        });
        let parsed = parse(endpoint, &body).unwrap();
        assert_eq!(
            parsed.messages.len(),
            messages + usize::from(kind == "anthropic")
        );
        time("rewrite (model + usage)", n, iterations, || {
            rewrite(&body, &parsed, Some("o3"), true)
        });
        time("rewrite (no change)", n, iterations, || {
            rewrite(&body, &parsed, None, false)
        });
        time("digest", n, iterations, || digest(&body, &parsed));
        time("serde_json::Value (compare)", n, iterations, || {
            serde_json::from_slice::<Value>(&body).unwrap()
        });
        time("IgnoredAny (compare)", n, iterations, || {
            serde_json::from_slice::<serde::de::IgnoredAny>(&body).unwrap()
        });
    }
}

#[test]
fn chat_n_multiplies_the_answers_and_other_apis_have_one() {
    let n = |endpoint, body: &str| parse(endpoint, body.as_bytes()).map(|p| p.choices);
    assert_eq!(n(CHAT, r#"{"n":100,"max_tokens":1000}"#), Ok(100));
    assert_eq!(n(CHAT, r#"{"n":null}"#), Ok(1));
    assert_eq!(n(CHAT, r#"{"n":0}"#), Ok(1));
    assert_eq!(n(CHAT, r#"{}"#), Ok(1));
    assert_eq!(
        n(CHAT, r#"{"n":"100"}"#),
        Err(BodyError::FieldType {
            field: "n",
            expected: "a non-negative integer"
        })
    );
    assert_eq!(
        n(CHAT, r#"{"n":-1}"#).unwrap_err(),
        BodyError::FieldType {
            field: "n",
            expected: "a non-negative integer"
        }
    );
    assert_eq!(
        n(CHAT, r#"{"n":2,"n":100}"#),
        Err(BodyError::DuplicateKey { field: "n" }),
        "a second n the provider might read instead is refused"
    );
    // `n` means nothing to the other APIs (passed through, not read).
    assert_eq!(n(MESSAGES, r#"{"n":"x"}"#), Ok(1));
    assert_eq!(n(RESPONSES, r#"{"n":5}"#), Ok(1));
}

#[test]
fn input_the_body_does_not_carry_is_noticed() {
    let unseen = |endpoint, body: &str| {
        let full = parse(endpoint, body.as_bytes()).unwrap().unseen_input;
        let bare = parse_without_texts(endpoint, body.as_bytes())
            .unwrap()
            .unseen_input;
        assert_eq!(full, bare, "{body}");
        full
    };
    // Carried in full: no allowance needed.
    for (e, body) in [
        (
            CHAT,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
        ),
        (
            RESPONSES,
            r#"{"input":[{"role":"user","content":[{"type":"input_image","image_url":"data:image/png;base64,AA"},{"type":"input_file","file_data":"JVBERi0"}]}],"previous_response_id":null,"tools":[{"type":"function","name":"f"}]}"#,
        ),
        (
            MESSAGES,
            r#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"AA"}}]}],"tools":[{"name":"f","input_schema":{}},{"type":"bash_20250124","name":"bash"}]}"#,
        ),
    ] {
        assert_eq!(unseen(e, body), None, "{body}");
    }
    for (e, body, what) in [
        (
            RESPONSES,
            r#"{"input":"go on","previous_response_id":"resp_1"}"#,
            "a previous_response_id",
        ),
        (
            RESPONSES,
            r#"{"input":"go on","conversation":"conv_1"}"#,
            "a conversation",
        ),
        (
            RESPONSES,
            r#"{"prompt":{"id":"pmpt_1","variables":{}}}"#,
            "a stored prompt",
        ),
        (
            RESPONSES,
            r#"{"input":[{"type":"item_reference","id":"msg_1"}]}"#,
            "an item_reference",
        ),
        (
            RESPONSES,
            r#"{"input":[{"role":"user","content":[{"type":"input_file","file_id":"file-1"}]}]}"#,
            "a file by id or URL",
        ),
        (
            RESPONSES,
            r#"{"input":[{"role":"user","content":[{"type":"input_image","image_url":"https://x/y.png"}]}]}"#,
            "an image by URL",
        ),
        (
            RESPONSES,
            r#"{"input":"q","tools":[{"type":"web_search"}]}"#,
            "a server-side tool",
        ),
        (
            CHAT,
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
            "an image by URL",
        ),
        (
            CHAT,
            r#"{"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}"#,
            "a file by id",
        ),
        (
            CHAT,
            r#"{"messages":[],"web_search_options":{}}"#,
            "web search",
        ),
        (
            MESSAGES,
            r#"{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://x/a.pdf"}}]}]}"#,
            "an image or document by URL or file id",
        ),
        (
            MESSAGES,
            r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}]}"#,
            "an image or document by URL or file id",
        ),
        (
            MESSAGES,
            r#"{"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
            "a server-side tool",
        ),
        (
            MESSAGES,
            r#"{"messages":[],"mcp_servers":[{"type":"url","url":"https://mcp"}]}"#,
            "MCP servers",
        ),
    ] {
        assert_eq!(unseen(e, body), Some(what), "{body}");
    }
    // A reference with a misspelled-by-escape key is still a reference
    // (providers unescape keys).
    assert_eq!(
        unseen(RESPONSES, r#"{"previous_resp\u006fnse_id":"resp_1"}"#),
        Some("a previous_response_id")
    );
}

/// Fuzzing found bodies that are not JSON text accepted: bytes that are not
/// UTF-8 where nothing decodes them, raw control characters in keys.
#[test]
fn invalid_json_text_found_by_fuzzing_is_refused() {
    for body in [
        &b"{\"model\":\"m\",\"x\":\"\xff\"}"[..],
        b"{\"\xc3\":1}",
        b"{\"messages\":[{\"role\":\"user\",\"name\":\"\xfe\"}]}",
        b"{\"\x00\":true}",
        b"{\"mo\x01del\":\"m\"}",
    ] {
        for endpoint in [CHAT, RESPONSES, EMBEDDINGS, MESSAGES] {
            assert!(
                matches!(parse(endpoint, body), Err(BodyError::InvalidJson { .. })),
                "{endpoint:?} {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
