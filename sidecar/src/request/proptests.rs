//! Property tests: random objects written with random whitespace and random
//! escapes; random and mutated bytes.

use std::fmt::Write as _;

use bytes::Bytes;
use proptest::{collection::vec, prelude::*, sample::select};
use serde_json::{Map, Value, json};
use tokenwarden_core::workload::Endpoint;

use super::{
    BodyError, StreamOptions, digest,
    extract::unescape,
    parse, parse_without_texts, rewrite,
    tests::{member_spans, members as ordered, raw_members},
};

const ENDPOINTS: [Endpoint; 4] = [
    Endpoint::ChatCompletions,
    Endpoint::Responses,
    Endpoint::Embeddings,
    Endpoint::Messages,
];

/// Every top-level key some endpoint reads.
const READ_KEYS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "previous_response_id",
    "conversation",
    "prompt",
    "mcp_servers",
    "container",
    "web_search_options",
    "tools",
    "functions",
    "messages",
    "system",
    "instructions",
    "input",
];

/// The keys `endpoint` reads.
fn read_keys(endpoint: Endpoint) -> &'static [&'static str] {
    match endpoint {
        Endpoint::ChatCompletions => &[
            "model",
            "stream",
            "stream_options",
            "max_tokens",
            "max_completion_tokens",
            "n",
            "web_search_options",
            "tools",
            "functions",
            "messages",
        ],
        Endpoint::Responses => &[
            "model",
            "stream",
            "max_output_tokens",
            "previous_response_id",
            "conversation",
            "prompt",
            "tools",
            "instructions",
            "input",
        ],
        Endpoint::Embeddings => &["model", "input"],
        Endpoint::Messages => &[
            "model",
            "stream",
            "max_tokens",
            "mcp_servers",
            "container",
            "tools",
            "system",
            "messages",
        ],
    }
}

/// Whether `parse` must accept `value` for the top-level `key`.
fn accepted(key: &str, value: &Value) -> bool {
    match (key, value) {
        (_, Value::Null) => true,
        ("model", v) => v.is_string(),
        ("stream", v) => v.is_boolean(),
        ("stream_options", Value::Object(o)) => o
            .get("include_usage")
            .is_none_or(|v| v.is_boolean() || v.is_null()),
        ("stream_options", _) => false,
        ("max_tokens" | "max_completion_tokens" | "max_output_tokens" | "n", v) => v.is_u64(),
        ("tools" | "functions" | "messages", v) => v.is_array(),
        ("system" | "instructions" | "input", v) => v.is_string() || v.is_array(),
        _ => true,
    }
}

// === writing JSON with random whitespace and escapes ===

/// Writes JSON, taking whitespace and escaping choices from `style`.
struct Writer<'s> {
    out: String,
    style: &'s [u8],
    at: usize,
}

impl<'s> Writer<'s> {
    fn new(style: &'s [u8]) -> Self {
        Self {
            out: String::new(),
            style,
            at: 0,
        }
    }

    fn pick(&mut self) -> u8 {
        let b = if self.style.is_empty() {
            0
        } else {
            self.style[self.at % self.style.len()]
        };
        self.at += 1;
        b
    }

    fn ws(&mut self) {
        const WS: [&str; 8] = ["", "", "", " ", "\n", "\n    ", "\t", "\r\n "];
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
                '\n' if p.is_multiple_of(2) => self.out.push_str("\\n"),
                '\t' if p.is_multiple_of(2) => self.out.push_str("\\t"),
                '/' if p.is_multiple_of(2) => self.out.push_str("\\/"),
                c if (c as u32) < 0x20 || p.is_multiple_of(7) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        if p.is_multiple_of(3) {
                            write!(self.out, "\\u{unit:04X}").unwrap();
                        } else {
                            write!(self.out, "\\u{unit:04x}").unwrap();
                        }
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => self.out.push_str(&n.to_string()),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.ws();
                        self.out.push(',');
                    }
                    self.ws();
                    self.value(item);
                }
                self.ws();
                self.out.push(']');
            }
            Value::Object(map) => {
                let pairs: Vec<(String, Value)> =
                    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                self.object(&pairs);
            }
        }
    }

    fn object(&mut self, members: &[(String, Value)]) {
        self.out.push('{');
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                self.ws();
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

    /// A whole document: an object with whitespace around it.
    fn document(style: &[u8], members: &[(String, Value)]) -> Vec<u8> {
        let mut w = Writer::new(style);
        w.ws();
        w.object(members);
        w.ws();
        w.out.into_bytes()
    }
}

// === strategies ===

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z \"\\\\/\n\t\u{1}é漢😀-]{0,16}",
        vec(any::<char>(), 0..8).prop_map(String::from_iter),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        select(
            &[
                "model",
                "messages",
                "content",
                "role",
                "text",
                "type",
                "include_usage"
            ][..]
        )
        .prop_map(String::from),
        "[a-z_]{1,8}",
        text(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((key(), inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A message-, item- or part-like object with random fields.
fn message_like() -> impl Strategy<Value = Value> {
    let part = (
        select(
            &[
                "text",
                "input_text",
                "output_text",
                "tool_result",
                "image",
                "x",
            ][..],
        ),
        prop_oneof![text().prop_map(Value::String), json_value()],
        json_value(),
    )
        .prop_map(|(kind, text, content)| json!({"type": kind, "text": text, "content": content}));
    let content = prop_oneof![
        text().prop_map(Value::String),
        vec(prop_oneof![part, json_value()], 0..4).prop_map(Value::Array),
        json_value(),
    ];
    (
        select(&["user", "assistant", "system", "developer", "tool", "x"][..]),
        content,
        json_value(),
        select(&["message", "function_call_output", "function_call", "reasoning"][..]),
    )
        .prop_map(|(role, content, output, kind)| {
            json!({"role": role, "content": content, "output": output, "type": kind})
        })
}

/// A value for the top-level `key`: usually well typed, sometimes not.
fn top_value(key: &str) -> BoxedStrategy<Value> {
    let conversation = vec(prop_oneof![message_like(), json_value()], 0..4).prop_map(Value::Array);
    match key {
        "model" => prop_oneof![4 => text().prop_map(Value::String), 1 => json_value()].boxed(),
        "stream" => prop_oneof![any::<bool>().prop_map(Value::Bool), json_value()].boxed(),
        "messages" | "input" | "system" | "instructions" => prop_oneof![
            3 => conversation,
            1 => text().prop_map(Value::String),
            1 => json_value()
        ]
        .boxed(),
        "max_tokens" | "max_completion_tokens" | "max_output_tokens" | "n" => {
            prop_oneof![any::<u32>().prop_map(Value::from), json_value()].boxed()
        }
        "stream_options" => prop_oneof![
            (
                prop_oneof![any::<bool>().prop_map(Value::Bool), json_value()],
                json_value()
            )
                .prop_map(|(usage, other)| json!({"other": other, "include_usage": usage})),
            json_value(),
        ]
        .boxed(),
        _ => json_value().boxed(),
    }
}

/// Top-level members with keys no endpoint reads.
fn passive_members() -> impl Strategy<Value = Vec<(String, Value)>> {
    vec((key(), json_value()), 0..6).prop_map(|members| {
        members
            .into_iter()
            .filter(|(k, _)| !READ_KEYS.contains(&k.as_str()))
            .collect()
    })
}

/// Any top-level members, read keys included (possibly repeated).
fn any_members() -> impl Strategy<Value = Vec<(String, Value)>> {
    let member = prop_oneof![
        select(READ_KEYS).prop_flat_map(|k| top_value(k).prop_map(move |v| (k.to_string(), v))),
        (key(), json_value()),
    ];
    vec(member, 0..8)
}

fn style() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    select(&ENDPOINTS[..])
}

/// Inserts `member` at `at` (modulo the length + 1).
fn insert_at(members: &mut Vec<(String, Value)>, at: usize, member: (String, Value)) {
    let at = at % (members.len() + 1);
    members.insert(at, member);
}

/// Parses and rewrites arbitrary bytes; when they parse, the output must be
/// a body that parses again with the new values.
fn never_panics(endpoint: Endpoint, body: &[u8]) {
    let body = Bytes::copy_from_slice(body);
    let Ok(parsed) = parse(endpoint, &body) else {
        return;
    };
    let _ = digest(&body, &parsed);
    let out = rewrite(&body, &parsed, Some("routed-model"), true);
    let again = parse(endpoint, &out).unwrap();
    assert_eq!(again.model.as_deref(), Some("routed-model"));
    if endpoint == Endpoint::ChatCompletions && parsed.stream {
        assert_eq!(again.include_usage, Some(true));
    }
}

proptest! {
    // 512 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    /// Rewriting the model changes exactly the bytes of its value (or
    /// appends the member), and the result has the same members in order.
    #[test]
    fn model_rewrite_changes_only_the_model_value(
        endpoint in endpoint(),
        mut members in passive_members(),
        model in prop::option::of((any::<usize>(), prop_oneof![
            4 => text().prop_map(Value::String), 1 => Just(Value::Null)])),
        new_model in prop::option::of(text()),
        style in style(),
    ) {
        if let Some((at, value)) = &model {
            insert_at(&mut members, *at, ("model".into(), value.clone()));
        }
        let body = Bytes::from(Writer::document(&style, &members));
        let parsed = parse(endpoint, &body).unwrap();
        let old = model.as_ref().and_then(|(_, v)| v.as_str());
        prop_assert_eq!(parsed.model.as_deref(), old);

        let out = rewrite(&body, &parsed, new_model.as_deref(), false);
        let Some(new_model) = new_model.filter(|m| Some(m.as_str()) != old) else {
            prop_assert_eq!(out.as_ptr(), body.as_ptr());
            return Ok(());
        };
        let literal = serde_json::to_string(&new_model).unwrap();
        let expected_bytes = match &parsed.layout.model {
            Some(span) => {
                // The span is exactly the old value.
                let old_value: Value = serde_json::from_slice(&body[span.clone()]).unwrap();
                prop_assert_eq!(&old_value, &model.as_ref().unwrap().1);
                [&body[..span.start], literal.as_bytes(), &body[span.end..]].concat()
            }
            None => {
                let close = parsed.layout.close;
                let comma = if members.is_empty() { "" } else { "," };
                let member = format!("{comma}\"model\":{literal}");
                [&body[..close], member.as_bytes(), &body[close..]].concat()
            }
        };
        prop_assert_eq!(&out[..], &expected_bytes[..]);

        let mut expected = ordered(&body);
        match expected.iter_mut().find(|(k, _)| k == "model") {
            Some((_, v)) => *v = Value::String(new_model.clone()),
            None => expected.push(("model".into(), Value::String(new_model.clone()))),
        }
        prop_assert_eq!(ordered(&out), expected);
        let again = parse(endpoint, &out).unwrap();
        prop_assert_eq!(again.model.as_deref(), Some(new_model.as_str()));
        if model.is_some() {
            prop_assert_eq!(digest(&out, &again), digest(&body, &parsed));
        }
    }

    /// Forcing include_usage touches only the `stream_options` value (or
    /// appends the member) and keeps its other members in order.
    #[test]
    fn include_usage_rewrite_touches_only_stream_options(
        mut members in passive_members(),
        stream_at in any::<usize>(),
        options in prop::option::of(prop::option::of((
            vec(("[a-z_]{1,8}".prop_filter("not include_usage", |k| k != "include_usage"),
                json_value()), 0..4),
            prop::option::of((any::<usize>(), prop_oneof![
                any::<bool>().prop_map(Value::Bool), Just(Value::Null)])),
        ))),
        options_at in any::<usize>(),
        style in style(),
    ) {
        insert_at(&mut members, stream_at, ("stream".into(), Value::Bool(true)));
        let mut inner_members = None;
        if let Some(options) = &options {
            let value = match options {
                None => Value::Null,
                Some((others, usage)) => {
                    let mut inner: Vec<(String, Value)> = others.clone();
                    inner.dedup_by(|a, b| a.0 == b.0);
                    let mut seen = std::collections::HashSet::new();
                    inner.retain(|(k, _)| seen.insert(k.clone()));
                    if let Some((at, v)) = usage {
                        insert_at(&mut inner, *at, ("include_usage".into(), v.clone()));
                    }
                    inner_members = Some(inner.clone());
                    Value::Object(inner.into_iter().collect::<Map<_, _>>())
                }
            };
            insert_at(&mut members, options_at, ("stream_options".into(), value));
        }
        // Write stream_options members in the generated order (a Map may
        // reorder them without preserve_order).
        let body = {
            let mut w = Writer::new(&style);
            w.ws();
            w.out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 { w.ws(); w.out.push(','); }
                w.ws(); w.string(k); w.ws(); w.out.push(':'); w.ws();
                match (k.as_str(), &inner_members) {
                    ("stream_options", Some(inner)) => w.object(inner),
                    _ => w.value(v),
                }
            }
            w.ws();
            w.out.push('}');
            w.ws();
            Bytes::from(w.out)
        };
        let parsed = parse(Endpoint::ChatCompletions, &body).unwrap();
        prop_assert!(parsed.stream);
        let out = rewrite(&body, &parsed, None, true);
        if parsed.include_usage == Some(true) {
            prop_assert_eq!(out.as_ptr(), body.as_ptr());
            return Ok(());
        }
        let again = parse(Endpoint::ChatCompletions, &out).unwrap();
        prop_assert_eq!(again.include_usage, Some(true));

        // Bytes outside the stream_options value are unchanged.
        match &parsed.layout.stream_options {
            None => {
                let close = parsed.layout.close;
                let member = r#","stream_options":{"include_usage":true}"#;
                let expected = [&body[..close], member.as_bytes(), &body[close..]].concat();
                prop_assert_eq!(&out[..], &expected[..]);
            }
            Some(StreamOptions::Null(span)) => {
                let value = br#"{"include_usage":true}"#;
                let expected = [&body[..span.start], value, &body[span.end..]].concat();
                prop_assert_eq!(&out[..], &expected[..]);
            }
            Some(StreamOptions::Object { .. }) => {
                let spans = member_spans(&body);
                let span = spans.iter().find(|(k, _)| k == "stream_options").unwrap().1.clone();
                let tail = body.len() - span.end;
                prop_assert_eq!(&out[..span.start], &body[..span.start]);
                prop_assert_eq!(&out[out.len() - tail..], &body[span.end..]);
            }
        }

        // Same members in the same order, other values byte for byte; inside
        // stream_options too.
        let (before, after) = (raw_members(&body), raw_members(&out));
        let keys = |m: &[(String, String)]| m.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        let mut expected_keys = keys(&before);
        if options.is_none() {
            expected_keys.push("stream_options".into());
        }
        prop_assert_eq!(keys(&after), expected_keys);
        for ((k, old), (_, new)) in before.iter().zip(&after) {
            if k != "stream_options" {
                prop_assert_eq!(old, new);
            }
        }
        let options_raw = |m: &[(String, String)]| {
            m.iter().find(|(k, _)| k == "stream_options").map(|(_, v)| v.clone())
        };
        let new_inner = raw_members(options_raw(&after).unwrap_or_default().as_bytes());
        let mut expected_inner: Vec<(String, String)> = match options_raw(&before) {
            Some(raw) if raw != "null" => raw_members(raw.as_bytes()),
            _ => Vec::new(),
        };
        match expected_inner.iter_mut().find(|(k, _)| k == "include_usage") {
            Some((_, v)) => *v = "true".into(),
            None => expected_inner.push(("include_usage".into(), "true".into())),
        }
        prop_assert_eq!(new_inner, expected_inner);
        let _ = inner_members;
    }

    /// Any object: `parse` accepts it iff every read field has an accepted
    /// type and none repeats; then a model rewrite keeps all other members.
    #[test]
    fn any_object_parses_iff_read_fields_are_well_typed(
        endpoint in endpoint(),
        members in any_members(),
        style in style(),
    ) {
        let body = Bytes::from(Writer::document(&style, &members));
        let keys = read_keys(endpoint);
        let repeated = keys.iter().any(|k| members.iter().filter(|(m, _)| m == k).count() > 1);
        let well_typed = members
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .all(|(k, v)| accepted(k, v));
        match parse(endpoint, &body) {
            Ok(parsed) => {
                prop_assert!(!repeated && well_typed, "accepted: {:?}", members);
                let out = rewrite(&body, &parsed, Some("m2"), true);
                let mut expected = ordered(&body);
                match expected.iter_mut().find(|(k, _)| k == "model") {
                    Some((_, v)) => *v = json!("m2"),
                    None => expected.push(("model".into(), json!("m2"))),
                }
                let got: Vec<(String, Value)> = ordered(&out)
                    .into_iter()
                    .filter(|(k, _)| k != "stream_options")
                    .collect();
                expected.retain(|(k, _)| k != "stream_options");
                prop_assert_eq!(got, expected);
                let _ = digest(&body, &parsed);
            }
            Err(BodyError::DuplicateKey { field }) => {
                prop_assert!(repeated || field == "stream_options.include_usage", "{}", field);
            }
            Err(BodyError::FieldType { field, .. }) => {
                prop_assert!(!well_typed || field == "stream_options.include_usage",
                    "{}: {:?}", field, members);
            }
            Err(e) => prop_assert!(false, "{e}: {:?}", members),
        }
    }

    /// Without texts, a parse answers exactly as the full one (the same
    /// fields, spans, turns and errors) with no texts.
    #[test]
    fn parsing_without_texts_differs_only_in_the_texts(
        endpoint in endpoint(),
        members in any_members(),
        conversation in vec(prop_oneof![3 => message_like(), 1 => json_value()], 0..6),
        style in style(),
    ) {
        let key = match endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages => "messages",
            Endpoint::Responses | Endpoint::Embeddings => "input",
        };
        let mut members = members;
        members.push((key.to_string(), Value::Array(conversation)));
        let body = Writer::document(&style, &members);
        match (parse(endpoint, &body), parse_without_texts(endpoint, &body)) {
            (Ok(mut full), Ok(lite)) => {
                prop_assert!(lite.messages.is_empty());
                full.messages.clear();
                prop_assert_eq!(format!("{full:?}"), format!("{lite:?}"));
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "full {:?}, without texts {:?}", a.err(), b.err()),
        }
    }

    /// Conversations of random shape never fail a well-typed request, and
    /// every extracted text is a string of the request.
    #[test]
    fn conversations_of_any_shape_are_read_best_effort(
        endpoint in endpoint(),
        conversation in vec(prop_oneof![3 => message_like(), 1 => json_value()], 0..6),
        system in prop_oneof![text().prop_map(Value::String),
            vec(message_like(), 0..3).prop_map(Value::Array)],
        style in style(),
    ) {
        let key = match endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages => "messages",
            Endpoint::Responses | Endpoint::Embeddings => "input",
        };
        let mut members = vec![
            ("model".to_string(), json!("m")),
            (key.to_string(), Value::Array(conversation.clone())),
        ];
        if endpoint == Endpoint::Messages {
            members.push(("system".into(), system.clone()));
        }
        if endpoint == Endpoint::Responses {
            members.push(("instructions".into(), system.clone()));
        }
        let body = Writer::document(&style, &members);
        let parsed = parse(endpoint, &body).unwrap();
        let mut strings = Vec::new();
        collect_strings(&Value::Array(conversation), &mut strings);
        collect_strings(&system, &mut strings);
        for (_, text) in &parsed.messages {
            prop_assert!(strings.iter().any(|s| s == text), "{text:?} not in the request");
        }
    }

    /// Message texts come back exactly, however they were escaped.
    #[test]
    fn message_texts_round_trip(
        texts in vec(text(), 0..6),
        style in style(),
    ) {
        let messages: Vec<Value> =
            texts.iter().map(|t| json!({"role": "user", "content": t})).collect();
        let body = Writer::document(&style, &[
            ("model".into(), json!("m")),
            ("messages".into(), Value::Array(messages)),
        ]);
        let parsed = parse(Endpoint::ChatCompletions, &body).unwrap();
        let got: Vec<&str> = parsed.messages.iter().map(|(_, t)| t.as_ref()).collect();
        prop_assert_eq!(got, texts.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// UTF-16 code units, paired or not, decode like `from_utf16_lossy`.
    #[test]
    fn surrogates_decode_like_utf16_lossy(units in vec(prop_oneof![
        0xD800u16..0xE000, 0x20u16..0x80, any::<u16>()], 0..8)) {
        let mut inner = String::new();
        for unit in &units {
            write!(inner, "\\u{unit:04x}").unwrap();
        }
        prop_assert_eq!(unescape(&inner), String::from_utf16_lossy(&units));
        let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{inner}"}}]}}"#);
        let parsed = parse(Endpoint::ChatCompletions, body.as_bytes()).unwrap();
        prop_assert_eq!(parsed.messages[0].1.as_ref(), String::from_utf16_lossy(&units));
    }

    #[test]
    fn arbitrary_bytes_never_panic(endpoint in endpoint(), body in vec(any::<u8>(), 0..256)) {
        never_panics(endpoint, &body);
    }

    /// JSON-looking token soup: mostly invalid, sometimes valid and odd.
    #[test]
    fn token_soup_never_panics(endpoint in endpoint(), tokens in vec(select(&[
        "{", "}", "[", "]", ":", ",", " ", "\n", "null", "true", "false", "0", "-1", "1e400",
        "\"model\"", "\"stream\"", "\"stream_options\"", "\"include_usage\"",
        "\"messages\"", "\"input\"", "\"system\"", "\"content\"", "\"role\"",
        "\"type\"", "\"text\"", "\"tool_result\"", "\"user\"", "\"x\\ud800\"",
        "\"\\u00e9\\\"\"", "\"",
    ][..]), 0..48)) {
        never_panics(endpoint, tokens.concat().as_bytes());
    }

    #[test]
    fn mutated_bodies_never_panic(
        endpoint in endpoint(),
        members in any_members(),
        style in style(),
        edits in vec((any::<usize>(), 0u8..3, any::<u8>()), 1..4),
    ) {
        let mut body = Writer::document(&style, &members);
        for (at, op, byte) in edits {
            let at = at % (body.len() + 1);
            match op {
                0 => body.insert(at, byte),
                1 if at < body.len() => { body.remove(at); }
                _ if at < body.len() => body[at] = byte,
                _ => body.truncate(at),
            }
        }
        never_panics(endpoint, &body);
    }
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}
