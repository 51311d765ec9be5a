//! Tests of the prompt-cache rewrites: literal bodies in, literal bodies out,
//! and properties over random bodies.

use std::fmt::Write as _;

use bytes::Bytes;
use proptest::{collection::vec, prelude::*, sample::select};
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};
use tokenwarden_core::workload::Endpoint;

use super::{
    BYTES_PER_TOKEN, BodyError, BreakpointPlan, CacheEdit, CacheTtl, Untouched, has_key,
    insert_anthropic_breakpoints, insert_prompt_cache_key, parse,
};

/// Every point whose prefix has at least one byte qualifies.
fn any_prefix() -> BreakpointPlan {
    BreakpointPlan {
        min_tokens: 1,
        bytes_per_token: 1,
        ttl: CacheTtl::FiveMinutes,
    }
}

#[track_caller]
fn inserted(input: &str, plan: &BreakpointPlan, expected: &str, points: u8) {
    let body = Bytes::copy_from_slice(input.as_bytes());
    match insert_anthropic_breakpoints(&body, plan) {
        CacheEdit::Inserted { body, breakpoints } => {
            assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
            assert_eq!(breakpoints, points);
            // JSON (lone surrogates included), and a body the proxy accepts.
            serde_json::from_slice::<IgnoredAny>(&body).expect("the output is JSON");
            parse(Endpoint::Messages, &body).expect("the proxy reads the output");
        }
        other => panic!("expected an insertion, got {other:?}"),
    }
}

#[track_caller]
fn untouched(input: &str, plan: &BreakpointPlan, why: &Untouched) {
    let body = Bytes::copy_from_slice(input.as_bytes());
    let edit = insert_anthropic_breakpoints(&body, plan);
    assert_eq!(&edit, &CacheEdit::Untouched(why.clone()));
    assert!(!edit.changed());
    let out = edit.into_body(&body);
    assert_eq!(out.as_ptr(), body.as_ptr(), "the same buffer comes back");
    assert_eq!(out, body);
}

// --- Anthropic: where the marks go ---

#[test]
fn tools_string_system_and_string_content_get_three_marks() {
    let input = concat!(
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"#,
        r#""tools":[{"name":"a","input_schema":{"type":"object"}},{"name":"b","input_schema":{"type":"object"}}],"#,
        r#""system":"You are terse.","#,
        r#""messages":[{"role":"user","content":"Hi"}]}"#
    );
    let expected = concat!(
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"#,
        r#""tools":[{"name":"a","input_schema":{"type":"object"}},{"name":"b","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}}],"#,
        r#""system":[{"type":"text","text":"You are terse.","cache_control":{"type":"ephemeral"}}],"#,
        r#""messages":[{"role":"user","content":[{"type":"text","text":"Hi","cache_control":{"type":"ephemeral"}}]}]}"#
    );
    inserted(input, &any_prefix(), expected, 3);
}

#[test]
fn system_blocks_get_the_mark_on_the_last_block() {
    let input = concat!(
        r#"{"model":"m","system":[{"type":"text","text":"A"},{"type":"text","text":"B"}],"#,
        r#""messages":[{"role":"user","content":[{"type":"text","text":"Q"}]}]}"#
    );
    let expected = concat!(
        r#"{"model":"m","system":[{"type":"text","text":"A"},{"type":"text","text":"B","cache_control":{"type":"ephemeral"}}],"#,
        r#""messages":[{"role":"user","content":[{"type":"text","text":"Q","cache_control":{"type":"ephemeral"}}]}]}"#
    );
    inserted(input, &any_prefix(), expected, 2);
}

#[test]
fn a_trailing_thinking_block_is_skipped_for_the_block_before_it() {
    let input = concat!(
        r#"{"model":"m","messages":[{"role":"user","content":"Q"},"#,
        r#"{"role":"assistant","content":[{"type":"text","text":"R"},{"type":"thinking","thinking":"t","signature":"s"},{"type":"redacted_thinking","data":"d"}]}]}"#
    );
    let expected = concat!(
        r#"{"model":"m","messages":[{"role":"user","content":"Q"},"#,
        r#"{"role":"assistant","content":[{"type":"text","text":"R","cache_control":{"type":"ephemeral"}},{"type":"thinking","thinking":"t","signature":"s"},{"type":"redacted_thinking","data":"d"}]}]}"#
    );
    inserted(input, &any_prefix(), expected, 1);
}

#[test]
fn a_message_with_no_markable_block_is_skipped_for_the_one_before() {
    // Thinking only, then an empty text: neither may carry cache_control.
    let input = concat!(
        r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":"ok"}]},"#,
        r#"{"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":""}]},"#,
        r#"{"role":"user","content":""}]}"#
    );
    let expected = concat!(
        r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":"ok","cache_control":{"type":"ephemeral"}}]},"#,
        r#"{"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":""}]},"#,
        r#"{"role":"user","content":""}]}"#
    );
    inserted(input, &any_prefix(), expected, 1);
}

#[test]
fn one_hour_ttl_writes_the_ttl_member() {
    let plan = BreakpointPlan {
        ttl: CacheTtl::OneHour,
        ..any_prefix()
    };
    let input = r#"{"tools":[{}],"system":"S","messages":[{"role":"user","content":[{"type":"text","text":"Q"}]}]}"#;
    let expected = concat!(
        r#"{"tools":[{"cache_control":{"type":"ephemeral","ttl":"1h"}}],"#,
        r#""system":[{"type":"text","text":"S","cache_control":{"type":"ephemeral","ttl":"1h"}}],"#,
        r#""messages":[{"role":"user","content":[{"type":"text","text":"Q","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]}"#
    );
    inserted(input, &plan, expected, 3);
}

#[test]
fn points_below_the_minimum_are_not_marked_later_ones_are() {
    // bytes/4, rounded up: the tool is 12 bytes (3 tokens), tools + system
    // 12 + 26 = 38 bytes (10 tokens), + the message content 30 bytes.
    let plan = BreakpointPlan {
        min_tokens: 10,
        bytes_per_token: BYTES_PER_TOKEN,
        ttl: CacheTtl::FiveMinutes,
    };
    let input = r#"{"tools":[{"name":"t"}],"system":"You are a careful agent.","messages":[{"role":"user","content":[{"type":"text","text":"Q"}]}]}"#;
    let expected = concat!(
        r#"{"tools":[{"name":"t"}],"system":[{"type":"text","text":"You are a careful agent.","cache_control":{"type":"ephemeral"}}],"#,
        r#""messages":[{"role":"user","content":[{"type":"text","text":"Q","cache_control":{"type":"ephemeral"}}]}]}"#
    );
    inserted(input, &plan, expected, 2);

    // One token more: the system point falls short, the message does not.
    let plan = BreakpointPlan {
        min_tokens: 11,
        ..plan
    };
    let expected = concat!(
        r#"{"tools":[{"name":"t"}],"system":"You are a careful agent.","#,
        r#""messages":[{"role":"user","content":[{"type":"text","text":"Q","cache_control":{"type":"ephemeral"}}]}]}"#
    );
    inserted(input, &plan, expected, 1);

    // 12 + 26 + 30 = 68 bytes, 17 tokens: at 18 nothing qualifies.
    let plan = BreakpointPlan {
        min_tokens: 17,
        ..plan
    };
    inserted(input, &plan, expected, 1);
    let plan = BreakpointPlan {
        min_tokens: 18,
        ..plan
    };
    untouched(input, &plan, &Untouched::BelowMinimum);
}

#[test]
fn the_prefix_counts_earlier_messages_whole_and_the_marked_one_up_to_its_block() {
    // Tools 0, system 0; message 1 content `"abcdefgh"` 10 bytes; message 2
    // content up to the end of its first block: `[{"type":"text","text":"Q"}`
    // 27 bytes; its last block is thinking.
    let input = concat!(
        r#"{"messages":[{"role":"user","content":"abcdefgh"},"#,
        r#"{"role":"assistant","content":[{"type":"text","text":"Q"},{"type":"thinking","thinking":"long long long long","signature":"s"}]}]}"#
    );
    let expected = concat!(
        r#"{"messages":[{"role":"user","content":"abcdefgh"},"#,
        r#"{"role":"assistant","content":[{"type":"text","text":"Q","cache_control":{"type":"ephemeral"}},{"type":"thinking","thinking":"long long long long","signature":"s"}]}]}"#
    );
    let at = |min| BreakpointPlan {
        min_tokens: min,
        bytes_per_token: 1,
        ttl: CacheTtl::FiveMinutes,
    };
    inserted(input, &at(37), expected, 1);
    untouched(input, &at(38), &Untouched::BelowMinimum);
}

#[test]
fn pretty_printed_bodies_keep_their_whitespace() {
    let input = "{\n  \"model\": \"m\",\n  \"tools\": [\n    {\n      \"name\": \"t\"\n    }\n  ],\n  \"system\": \"S\",\n  \"messages\": [\n    {\n      \"role\": \"user\",\n      \"content\": [\n        {\n          \"type\": \"text\",\n          \"text\": \"Hi\"\n        }\n      ]\n    }\n  ]\n}\n";
    let expected = "{\n  \"model\": \"m\",\n  \"tools\": [\n    {\n      \"name\": \"t\"\n    ,\"cache_control\":{\"type\":\"ephemeral\"}}\n  ],\n  \"system\": [{\"type\":\"text\",\"text\":\"S\",\"cache_control\":{\"type\":\"ephemeral\"}}],\n  \"messages\": [\n    {\n      \"role\": \"user\",\n      \"content\": [\n        {\n          \"type\": \"text\",\n          \"text\": \"Hi\"\n        ,\"cache_control\":{\"type\":\"ephemeral\"}}\n      ]\n    }\n  ]\n}\n";
    inserted(input, &any_prefix(), expected, 3);
}

#[test]
fn unicode_and_escapes_in_texts_are_kept_byte_for_byte() {
    let input = r#"{"system":"caf\u00e9 \"q\" \ud83d\ude00 ☕ \\n","messages":[{"role":"user","content":"\ud83d lone \/ é"}]}"#;
    let expected = concat!(
        r#"{"system":[{"type":"text","text":"caf\u00e9 \"q\" \ud83d\ude00 ☕ \\n","cache_control":{"type":"ephemeral"}}],"#,
        r#""messages":[{"role":"user","content":[{"type":"text","text":"\ud83d lone \/ é","cache_control":{"type":"ephemeral"}}]}]}"#
    );
    inserted(input, &any_prefix(), expected, 2);
}

#[test]
fn empty_tools_no_system_and_empty_objects() {
    let input = r#"{"tools":[],"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"u"}}]}]}"#;
    let expected = r#"{"tools":[],"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"u"},"cache_control":{"type":"ephemeral"}}]}]}"#;
    inserted(input, &any_prefix(), expected, 1);

    let input = r#"{"tools":[{ }],"system":null,"messages":null}"#;
    let expected =
        r#"{"tools":[{ "cache_control":{"type":"ephemeral"}}],"system":null,"messages":null}"#;
    inserted(input, &any_prefix(), expected, 1);

    // A tool that is not an object is not marked.
    untouched(
        r#"{"tools":[1],"system":"","messages":[]}"#,
        &any_prefix(),
        &Untouched::NothingToMark,
    );
    untouched(r#"{"model":"m"}"#, &any_prefix(), &Untouched::NothingToMark);
}

#[test]
fn member_order_in_the_body_does_not_matter() {
    // Render order is tools, system, messages whatever the JSON order.
    let input = r#"{"messages":[{"content":"Q","role":"user"}],"system":[{"text":"S","type":"text"}],"tools":[{"name":"t"}]}"#;
    let expected = concat!(
        r#"{"messages":[{"content":[{"type":"text","text":"Q","cache_control":{"type":"ephemeral"}}],"role":"user"}],"#,
        r#""system":[{"text":"S","type":"text","cache_control":{"type":"ephemeral"}}],"tools":[{"name":"t","cache_control":{"type":"ephemeral"}}]}"#
    );
    inserted(input, &any_prefix(), expected, 3);
    // The tool alone (12 bytes) is below 13; tools + system (12 + 28) is not.
    let plan = BreakpointPlan {
        min_tokens: 13,
        ..any_prefix()
    };
    let expected = concat!(
        r#"{"messages":[{"content":[{"type":"text","text":"Q","cache_control":{"type":"ephemeral"}}],"role":"user"}],"#,
        r#""system":[{"text":"S","type":"text","cache_control":{"type":"ephemeral"}}],"tools":[{"name":"t"}]}"#
    );
    inserted(input, &plan, expected, 2);
}

// --- Anthropic: bodies left alone ---

#[test]
fn a_body_with_cache_control_anywhere_is_untouched() {
    let why = Untouched::HasCacheControl;
    // On a tool.
    untouched(
        r#"{"tools":[{"name":"t","cache_control":{"type":"ephemeral"}}],"system":"S","messages":[{"role":"user","content":"Q"}]}"#,
        &any_prefix(),
        &why,
    );
    // Nested: on a block inside a tool_result.
    untouched(
        r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":[{"type":"text","text":"r","cache_control":{"type":"ephemeral"}}]}]}]}"#,
        &any_prefix(),
        &why,
    );
    // Spelled with an escape.
    untouched(
        r#"{"system":[{"type":"text","text":"S","cache\u005fcontrol":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"Q"}]}"#,
        &any_prefix(),
        &why,
    );
    // At the top level: Anthropic's automatic caching.
    untouched(
        r#"{"cache_control" : {"type":"ephemeral"},"system":"S","messages":[{"role":"user","content":"Q"}]}"#,
        &any_prefix(),
        &why,
    );
}

#[test]
fn the_words_cache_control_in_a_text_do_not_count() {
    let input = r#"{"system":"set \"cache_control\": {} on blocks; cache_control","messages":[{"role":"user","content":"{\"cache_control\":1}"}]}"#;
    let expected = concat!(
        r#"{"system":[{"type":"text","text":"set \"cache_control\": {} on blocks; cache_control","cache_control":{"type":"ephemeral"}}],"#,
        r#""messages":[{"role":"user","content":[{"type":"text","text":"{\"cache_control\":1}","cache_control":{"type":"ephemeral"}}]}]}"#
    );
    inserted(input, &any_prefix(), expected, 2);
}

#[test]
fn has_key_reads_keys_not_values() {
    assert!(has_key(br#"{"a":{"cache_control":1}}"#, b"cache_control"));
    assert!(has_key(
        br#"{"a":[{"cache_control" :1}]}"#,
        b"cache_control"
    ));
    assert!(has_key(br#"{"\u0063ache_control":1}"#, b"cache_control"));
    assert!(has_key(
        br#"{"CACHE":0,"cache\u005Fcontrol":1}"#,
        b"cache_control"
    ));
    assert!(!has_key(br#"{"a":"cache_control"}"#, b"cache_control"));
    assert!(!has_key(br#"{"a":["cache_control", 1]}"#, b"cache_control"));
    assert!(!has_key(
        br#"{"a":"\"cache_control\":1"}"#,
        b"cache_control"
    ));
    assert!(!has_key(br#"{"cache_controls":1}"#, b"cache_control"));
    assert!(!has_key(br#"{"\u0063ache_contro":1}"#, b"cache_control"));
    assert!(!has_key(br#"{"x":"\u00e9"}"#, b"cache_control"));
    // Escapes of non-ASCII and control characters cannot spell the key.
    assert!(!has_key(
        br#"{"caf\u00e9":"\u001b\u00e9\u4e2d"}"#,
        b"cache_control"
    ));
    assert!(has_key(
        br#"{"caf\u00e9":1,"cache_contro\u006c":2}"#,
        b"cache_control"
    ));
    assert!(!has_key(b"", b"cache_control"));
    assert!(!has_key(br#"{"cache_control"#, b"cache_control"));
}

#[test]
fn malformed_bodies_are_untouched_with_the_reason() {
    let plan = any_prefix();
    let invalid = |input: &str| {
        let body = Bytes::copy_from_slice(input.as_bytes());
        match insert_anthropic_breakpoints(&body, &plan) {
            CacheEdit::Untouched(Untouched::Malformed(BodyError::InvalidJson { .. })) => {}
            other => panic!("{input}: {other:?}"),
        }
    };
    invalid("");
    invalid(r#"{"system":"#);
    invalid(r#"{"system":"S"} x"#);
    untouched("[]", &plan, &Untouched::Malformed(BodyError::NotAnObject));
    untouched(
        r#"{"system":5}"#,
        &plan,
        &Untouched::Malformed(BodyError::FieldType {
            field: "system",
            expected: "a string or an array of content blocks",
        }),
    );
    untouched(
        r#"{"messages":["hi"]}"#,
        &plan,
        &Untouched::Malformed(BodyError::FieldType {
            field: "messages",
            expected: "an array of message objects",
        }),
    );
    untouched(
        r#"{"tools":[],"tools":[{}]}"#,
        &plan,
        &Untouched::Malformed(BodyError::DuplicateKey { field: "tools" }),
    );
    untouched(
        r#"{"messages":[{"content":"a","content":"b"}]}"#,
        &plan,
        &Untouched::Malformed(BodyError::DuplicateKey {
            field: "messages[].content",
        }),
    );
}

#[test]
fn a_short_prompt_is_below_every_model_minimum() {
    let input =
        r#"{"model":"claude-sonnet-4-5","system":"S","messages":[{"role":"user","content":"Q"}]}"#;
    let plan = BreakpointPlan::for_model("claude-sonnet-4-5", CacheTtl::FiveMinutes);
    untouched(input, &plan, &Untouched::BelowMinimum);
    assert_eq!(
        Untouched::BelowMinimum.to_string(),
        "the prompt is below the minimum cacheable length"
    );
    assert_eq!(
        Untouched::Malformed(BodyError::NotAnObject).to_string(),
        "request body must be a JSON object"
    );
}

#[test]
fn plan_for_model_uses_the_table() {
    let plan = BreakpointPlan::for_model("claude-haiku-4-5-20251001", CacheTtl::OneHour);
    assert_eq!(
        plan,
        BreakpointPlan {
            min_tokens: 4096,
            bytes_per_token: 4,
            ttl: CacheTtl::OneHour,
        }
    );
    assert_eq!(
        BreakpointPlan::for_model("claude-sonnet-4-5", CacheTtl::FiveMinutes).min_tokens,
        1024
    );
}

// --- OpenAI prompt_cache_key ---

#[track_caller]
fn key_set(endpoint: Endpoint, input: &str, key: &str, expected: &str) {
    let body = Bytes::copy_from_slice(input.as_bytes());
    match insert_prompt_cache_key(&body, endpoint, key) {
        CacheEdit::KeySet { body } => {
            assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
            serde_json::from_slice::<Value>(&body).expect("the output is JSON");
        }
        other => panic!("expected a key, got {other:?}"),
    }
}

#[track_caller]
fn key_untouched(endpoint: Endpoint, input: &str, why: &Untouched) {
    let body = Bytes::copy_from_slice(input.as_bytes());
    let edit = insert_prompt_cache_key(&body, endpoint, "k");
    assert_eq!(&edit, &CacheEdit::Untouched(why.clone()));
    assert_eq!(edit.into_body(&body).as_ptr(), body.as_ptr());
}

#[test]
fn prompt_cache_key_is_appended_when_absent() {
    let chat = Endpoint::ChatCompletions;
    key_set(
        chat,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        "ns/app",
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"prompt_cache_key":"ns/app"}"#,
    );
    key_set(
        Endpoint::Responses,
        "{\n  \"model\": \"gpt-5\",\n  \"input\": \"hi\"\n}\n",
        "a\"b",
        "{\n  \"model\": \"gpt-5\",\n  \"input\": \"hi\"\n,\"prompt_cache_key\":\"a\\\"b\"}\n",
    );
    key_set(chat, "{ }", "k", r#"{ "prompt_cache_key":"k"}"#);
    // A nested one is not the top-level member.
    key_set(
        chat,
        r#"{"metadata":{"prompt_cache_key":"x"}}"#,
        "k",
        r#"{"metadata":{"prompt_cache_key":"x"},"prompt_cache_key":"k"}"#,
    );
}

#[test]
fn a_null_prompt_cache_key_is_replaced() {
    key_set(
        Endpoint::ChatCompletions,
        r#"{"prompt_cache_key" : null ,"model":"m"}"#,
        "k",
        r#"{"prompt_cache_key" : "k" ,"model":"m"}"#,
    );
}

#[test]
fn a_present_prompt_cache_key_is_kept() {
    let chat = Endpoint::ChatCompletions;
    key_untouched(
        chat,
        r#"{"model":"m","prompt_cache_key":"mine"}"#,
        &Untouched::KeyPresent,
    );
    key_untouched(
        Endpoint::Responses,
        r#"{"prompt\u005fcache_key":"mine"}"#,
        &Untouched::KeyPresent,
    );
    key_untouched(
        chat,
        r#"{"prompt_cache_key":null,"prompt_cache_key":"x"}"#,
        &Untouched::Malformed(BodyError::DuplicateKey {
            field: "prompt_cache_key",
        }),
    );
    key_untouched(
        Endpoint::Messages,
        r#"{"model":"m"}"#,
        &Untouched::NotOpenAi(Endpoint::Messages),
    );
    key_untouched(chat, "[1]", &Untouched::Malformed(BodyError::NotAnObject));
    let body = Bytes::from_static(b"{\"model\":");
    assert!(matches!(
        insert_prompt_cache_key(&body, chat, "k"),
        CacheEdit::Untouched(Untouched::Malformed(BodyError::InvalidJson { .. }))
    ));
}

// --- Properties ---

/// Writes JSON with whitespace and `\u` escapes chosen by `style`.
struct Writer<'s> {
    out: String,
    style: &'s [u8],
    at: usize,
}

impl Writer<'_> {
    fn pick(&mut self) -> u8 {
        let b = self
            .style
            .get(self.at % self.style.len().max(1))
            .copied()
            .unwrap_or(0);
        self.at += 1;
        b
    }

    fn ws(&mut self) {
        const WS: [&str; 6] = ["", "", " ", "\n", "\n    ", "\t"];
        let k = usize::from(self.pick()) % WS.len();
        self.out.push_str(WS[k]);
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            let p = self.pick();
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                c if (c as u32) < 0x20 || p.is_multiple_of(5) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        write!(self.out, "\\u{unit:04x}").unwrap();
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.ws();
                    self.value(item);
                }
                self.ws();
                self.out.push(']');
            }
            Value::Object(map) => {
                self.out.push('{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.ws();
                    self.string(k);
                    self.ws();
                    self.out.push(':');
                    self.ws();
                    self.value(v);
                }
                self.ws();
                self.out.push('}');
            }
            other => self.out.push_str(&other.to_string()),
        }
    }

    fn document(style: &[u8], v: &Value) -> Vec<u8> {
        let mut w = Writer {
            out: String::new(),
            style,
            at: 0,
        };
        w.ws();
        w.value(v);
        w.ws();
        w.out.into_bytes()
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z \"\\\\/\n\u{1}é漢😀]{0,12}",
        select(&["cache_control", "\"cache_control\":", ""][..]).prop_map(String::from),
    ]
}

fn block() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        (text(), text()).prop_map(|(t, s)| json!({"type": "thinking", "thinking": t, "signature": s})),
        Just(json!({"type": "redacted_thinking", "data": "d"})),
        text().prop_map(|t| json!({"type": "tool_result", "tool_use_id": "x", "content": [{"type": "text", "text": t}]})),
        Just(json!({"type": "tool_use", "id": "x", "name": "n", "input": {}})),
        Just(json!({})),
        Just(json!("not a block")),
    ]
}

fn content() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::from),
        vec(block(), 0..4).prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn message() -> impl Strategy<Value = Value> {
    (select(&["user", "assistant"][..]), content())
        .prop_map(|(role, content)| json!({"role": role, "content": content}))
}

fn tool() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(
            |d| json!({"name": "t", "description": d, "input_schema": {"type": "object"}})
        ),
        Just(json!({})),
        Just(json!({"type": "web_search_20250305", "name": "web_search"})),
    ]
}

/// A `/v1/messages` body; `cache_control` somewhere when `marked`.
fn messages_body() -> impl Strategy<Value = Value> {
    let system = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        text().prop_map(|t| Some(Value::from(t))),
        vec(text(), 0..3).prop_map(|ts| Some(
            ts.into_iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect()
        )),
    ];
    let tools = prop_oneof![
        Just(None),
        vec(tool(), 0..3).prop_map(|t| Some(Value::from(t)))
    ];
    (
        tools,
        system,
        vec(message(), 0..4),
        any::<bool>(),
        any::<u8>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(tools, system, messages, stream, max, marked)| {
            let mut body = Map::new();
            body.insert("model".into(), "claude-sonnet-4-5".into());
            body.insert("max_tokens".into(), u64::from(max).into());
            body.insert("stream".into(), stream.into());
            if let Some(tools) = tools {
                body.insert("tools".into(), tools);
            }
            if let Some(system) = system {
                body.insert("system".into(), system);
            }
            body.insert("messages".into(), messages.into());
            if marked {
                body.insert("metadata".into(), json!({"x": [{"cache_control": 1}]}));
            }
            Value::Object(body)
        })
}

/// Whether some object in `v` has the member `key`.
fn contains_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(map) => map.contains_key(key) || map.values().any(|v| contains_key(v, key)),
        Value::Array(items) => items.iter().any(|v| contains_key(v, key)),
        _ => false,
    }
}

/// Removes every `cache_control` member from `v`; returns how many.
fn strip(v: &mut Value) -> usize {
    match v {
        Value::Object(map) => {
            let here = usize::from(map.shift_remove("cache_control").is_some());
            here + map.values_mut().map(strip).sum::<usize>()
        }
        Value::Array(items) => items.iter_mut().map(strip).sum(),
        _ => 0,
    }
}

/// Turns `[{"type":"text","text":X}]` at `at` back into `X` where the input
/// had a string.
fn unwrap_text(out: &mut Value, input: &Value, at: &str) {
    if let (Some(Value::String(_)), Some(slot)) = (input.pointer(at), out.pointer_mut(at))
        && let Some(text) = slot.pointer("/0/text").cloned()
    {
        *slot = text;
    }
}

/// Whether `needle`'s bytes all appear in `hay` in order.
fn is_subsequence(needle: &[u8], hay: &[u8]) -> bool {
    let mut hay = hay.iter();
    needle.iter().all(|b| hay.any(|h| h == b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breakpoints_only_add_members(
        value in messages_body(),
        style in vec(any::<u8>(), 1..32),
        min in 0u64..200,
        bpt in 0u64..6,
        hour in any::<bool>(),
    ) {
        let body = Bytes::from(Writer::document(&style, &value));
        let input: Value = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(&input, &value);
        let plan = BreakpointPlan {
            min_tokens: min,
            bytes_per_token: bpt,
            ttl: if hour { CacheTtl::OneHour } else { CacheTtl::FiveMinutes },
        };
        let marked = contains_key(&value, "cache_control");
        prop_assert_eq!(has_key(&body, b"cache_control"), marked);
        match insert_anthropic_breakpoints(&body, &plan) {
            CacheEdit::Inserted { body: out, breakpoints } => {
                prop_assert!(!marked);
                prop_assert!((1..=3).contains(&breakpoints));
                prop_assert!(is_subsequence(&body, &out), "an input byte was lost");
                let mut got: Value = serde_json::from_slice(&out).unwrap();
                prop_assert_eq!(strip(&mut got), usize::from(breakpoints));
                unwrap_text(&mut got, &input, "/system");
                let n = input["messages"].as_array().map_or(0, Vec::len);
                for i in 0..n {
                    unwrap_text(&mut got, &input, &format!("/messages/{i}/content"));
                }
                prop_assert_eq!(&got, &input);
                let ttl = r#""ttl":"1h""#;
                prop_assert_eq!(String::from_utf8_lossy(&out).matches(ttl).count(),
                    if hour { usize::from(breakpoints) } else { 0 });
                let (a, b) = (parse(Endpoint::Messages, &body).unwrap(),
                    parse(Endpoint::Messages, &out).unwrap());
                prop_assert_eq!(a.model, b.model);
                prop_assert_eq!(a.stream, b.stream);
                prop_assert_eq!(a.max_output_tokens, b.max_output_tokens);
                prop_assert_eq!(a.turns, b.turns);
            }
            CacheEdit::Untouched(why) => {
                prop_assert_eq!(marked, why == Untouched::HasCacheControl, "{:?}", why);
                prop_assert!(!matches!(why, Untouched::Malformed(_)), "{:?}", why);
            }
            CacheEdit::KeySet { .. } => prop_assert!(false, "a key was set"),
        }
    }

    #[test]
    fn prompt_cache_key_only_adds_the_member(
        value in messages_body(),
        style in vec(any::<u8>(), 1..32),
        key in "[a-z/\"\\\\é]{0,12}",
    ) {
        let body = Bytes::from(Writer::document(&style, &value));
        match insert_prompt_cache_key(&body, Endpoint::ChatCompletions, &key) {
            CacheEdit::KeySet { body: out } => {
                prop_assert!(is_subsequence(&body, &out));
                let mut got: Value = serde_json::from_slice(&out).unwrap();
                let set = got.as_object_mut().unwrap().shift_remove("prompt_cache_key");
                prop_assert_eq!(set, Some(Value::from(key)));
                prop_assert_eq!(got, value);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..200), min in 0u64..4) {
        let body = Bytes::from(body);
        let plan = BreakpointPlan { min_tokens: min, bytes_per_token: 1, ttl: CacheTtl::OneHour };
        if let CacheEdit::Inserted { body: out, .. } = insert_anthropic_breakpoints(&body, &plan) {
            prop_assert!(is_subsequence(&body, &out));
        }
        let _ = insert_prompt_cache_key(&body, Endpoint::Responses, "k");
        let _ = has_key(&body, b"cache_control");
    }

    #[test]
    fn mutated_bodies_never_panic(
        value in messages_body(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut body = serde_json::to_vec(&value).unwrap();
        let i = at.index(body.len());
        body[i] = byte;
        let body = Bytes::from(body);
        if let CacheEdit::Inserted { body: out, .. } =
            insert_anthropic_breakpoints(&body, &any_prefix())
        {
            prop_assert!(is_subsequence(&body, &out));
        }
    }
}

// --- Timing ---

/// An Anthropic agent body of about `messages × 4 KB` without
/// `cache_control`: tools, a system prompt, assistant turns with text +
/// tool_use blocks, user turns with tool_result blocks. Non-ASCII as `\u`
/// escapes when `ascii` (Python's `json.dumps` default), so the key scan
/// cannot be skipped.
fn agent_body(messages: usize, ascii: bool) -> Vec<u8> {
    let log = "running 12 tests\ntest café::escapes ... ok\ntest rewrite::\"model\" ... FAILED\n";
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
    let tools: Vec<Value> = (0..10)
        .map(|i| {
            json!({"name": format!("tool_{i}"), "description": "Runs a tool.",
            "input_schema": {"type": "object", "properties": {"arg": {"type": "string"}}}})
        })
        .collect();
    let body = serde_json::to_string(&json!({
        "model": "claude-sonnet-4-5", "max_tokens": 8192, "stream": true, "tools": tools,
        "system": "You are a coding agent.".repeat(200), "messages": msgs
    }))
    .unwrap();
    if ascii {
        body.replace('é', "\\u00e9").into_bytes()
    } else {
        body.into_bytes()
    }
}

/// Prints the time per call: the best of 10 batches.
fn time<T>(label: &str, bytes: usize, iterations: u32, mut f: impl FnMut() -> T) {
    let batch = (iterations / 10).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..11 {
        let start = std::time::Instant::now();
        for _ in 0..batch {
            std::hint::black_box(f());
        }
        best = best.min(start.elapsed().as_secs_f64() / f64::from(batch));
    }
    let mb_s = bytes as f64 / best / 1e6;
    println!("{label:<32} {:>9.1} µs   {mb_s:>7.0} MB/s", best * 1e6);
}

#[test]
#[ignore = "timing; run with --release -- --ignored --nocapture"]
fn perf_cache_edits() {
    let plan = BreakpointPlan::for_model("claude-sonnet-4-5", CacheTtl::FiveMinutes);
    for (messages, iterations) in [(50, 2000), (500, 200)] {
        for ascii in [false, true] {
            let body = Bytes::from(agent_body(messages, ascii));
            let n = body.len();
            println!("{messages} messages, {} KB, escapes: {ascii}", n / 1024);
            let edit = insert_anthropic_breakpoints(&body, &plan);
            // The tools (~1.3 KB, ~330 tokens) are below Sonnet's 1,024.
            assert!(matches!(edit, CacheEdit::Inserted { breakpoints: 2, .. }));
            time("insert breakpoints", n, iterations, || {
                insert_anthropic_breakpoints(&body, &plan)
            });
            time("has_key (the check alone)", n, iterations, || {
                has_key(&body, b"cache_control")
            });
            let marked = edit.into_body(&body);
            time("already marked (untouched)", n, iterations, || {
                insert_anthropic_breakpoints(&marked, &plan)
            });
            time("parse_without_texts (compare)", n, iterations, || {
                super::parse_without_texts(Endpoint::Messages, &body).unwrap()
            });
            time("IgnoredAny (compare)", n, iterations, || {
                serde_json::from_slice::<IgnoredAny>(&body).unwrap()
            });
        }
    }
}
