//! The JSON tap: reads the usage of a non-streaming JSON response as it
//! passes, in constant memory, whatever the body's size.
//!
//! A provider's response is one JSON object whose top-level `usage` member
//! holds what it billed. The tap scans the bytes chunk by chunk (chunk
//! boundaries may fall anywhere: inside a string, an escape or a number)
//! and keeps only two small things: the raw bytes of the top-level `usage`
//! and `model` values (each at most [`MAX_CAPTURE_BYTES`]). Everything else
//! is counted, not kept: the bytes inside strings below the top level (the
//! generated text, tool-call arguments, logprob tokens), which estimate the
//! output of a response whose usage never came, and the total.
//!
//! It does not validate JSON: it follows strings (and their escapes) and
//! brackets, which is all it takes to find top-level members in a body the
//! provider produced. A duplicate `usage` member replaces the earlier one,
//! as the SDKs' JSON parsers (Python's, JavaScript's) do. Once the
//! top-level object has closed, [`JsonTap::complete`] is true: the usage,
//! if any, is final, whether or not the transport's end was seen.

use memchr::memchr2;

use super::{Flavor, Metered, TokenCounts, json};

/// Largest `usage` or `model` value kept; a larger one is dropped (the
/// usage is then estimated). Real usage objects are a few hundred bytes.
pub const MAX_CAPTURE_BYTES: usize = 64 * 1024;

/// The longest top-level key compared (the keys looked for are short).
const MAX_KEY_BYTES: usize = 64;

/// What the tap learned from a JSON body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JsonOutcome {
    /// The provider's usage and served model, when a complete top-level
    /// `usage` value of the expected shape passed.
    pub metered: Option<Metered>,
    /// The top-level object closed.
    pub complete: bool,
    /// Bytes inside strings below the top level (generated text and the
    /// like); the whole body when it is not a JSON object.
    pub text_bytes: u64,
    /// Every byte seen.
    pub total_bytes: u64,
}

/// Which top-level member is being captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Usage,
    Model,
}

/// What the scanner expects next at the top level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Top {
    /// Nothing but whitespace seen yet.
    Start,
    /// Inside the top-level object.
    Object,
    /// The top-level value is not an object (or not JSON): only counted.
    Other,
    /// The top-level object closed.
    Done,
}

/// Scanner of one JSON response body. See the module docs.
#[derive(Debug)]
pub struct JsonTap {
    top: Top,
    /// Nesting depth: 1 inside the top-level object.
    depth: u32,
    in_string: bool,
    escape: bool,
    /// At depth 1: the next string is a key.
    expect_key: bool,
    /// At depth 1: a `:` was seen, the value has not started.
    value_pending: bool,
    /// The current top-level key's raw bytes (without quotes), bounded.
    key: Vec<u8>,
    key_overflow: bool,
    /// The string being read is a top-level key.
    in_key: bool,
    /// The member whose value is being captured, and whether that value is
    /// a scalar (ends at a delimiter, not at a bracket or quote).
    capturing: Option<(Member, bool)>,
    capture: Vec<u8>,
    capture_overflow: bool,
    usage: Option<Vec<u8>>,
    model: Option<Vec<u8>>,
    string_bytes: u64,
    total: u64,
}

impl Default for JsonTap {
    fn default() -> Self {
        Self::new()
    }
}

// === impl JsonTap ===

impl JsonTap {
    /// A tap for a body not yet seen.
    pub fn new() -> Self {
        JsonTap {
            top: Top::Start,
            depth: 0,
            in_string: false,
            escape: false,
            expect_key: false,
            value_pending: false,
            key: Vec::new(),
            key_overflow: false,
            in_key: false,
            capturing: None,
            capture: Vec::new(),
            capture_overflow: false,
            usage: None,
            model: None,
            string_bytes: 0,
            total: 0,
        }
    }

    /// Whether the top-level object has closed.
    pub fn complete(&self) -> bool {
        self.top == Top::Done
    }

    /// Bytes seen so far.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Read the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total = self.total.saturating_add(chunk.len() as u64);
        if self.top == Top::Other {
            return;
        }
        let mut i = 0;
        while i < chunk.len() {
            if self.in_string {
                i += self.string_run(&chunk[i..]);
                continue;
            }
            let b = chunk[i];
            i += 1;
            self.structural(b);
            if self.top == Top::Other {
                return;
            }
        }
    }

    /// Consume string bytes from the start of `rest` up to and including
    /// the closing quote (or all of `rest`); returns how many.
    fn string_run(&mut self, rest: &[u8]) -> usize {
        if self.escape {
            // The byte after a backslash never ends the string.
            self.escape = false;
            self.string_bytes(&rest[..1]);
            return 1;
        }
        match memchr2(b'"', b'\\', rest) {
            None => {
                self.string_bytes(rest);
                rest.len()
            }
            Some(at) => {
                self.string_bytes(&rest[..at]);
                if rest[at] == b'\\' {
                    self.escape = true;
                    self.string_bytes(&rest[at..=at]);
                } else {
                    self.in_string = false;
                    self.end_string();
                }
                at + 1
            }
        }
    }

    /// Bytes inside a string (not its quotes).
    fn string_bytes(&mut self, bytes: &[u8]) {
        if self.in_key {
            if self.key.len() + bytes.len() <= MAX_KEY_BYTES {
                self.key.extend_from_slice(bytes);
            } else {
                self.key_overflow = true;
            }
            return;
        }
        if self.depth >= 2 {
            self.string_bytes = self.string_bytes.saturating_add(bytes.len() as u64);
        }
        self.capture_bytes(bytes);
    }

    fn capture_bytes(&mut self, bytes: &[u8]) {
        if self.capturing.is_none() || self.capture_overflow {
            return;
        }
        if self.capture.len() + bytes.len() <= MAX_CAPTURE_BYTES {
            self.capture.extend_from_slice(bytes);
        } else {
            self.capture_overflow = true;
            self.capture = Vec::new();
        }
    }

    /// The closing quote of a string was read.
    fn end_string(&mut self) {
        if self.in_key {
            self.in_key = false;
            return;
        }
        self.capture_bytes(b"\"");
        if self.depth == 1 && self.capturing.is_some() {
            // A string value of a top-level member ended.
            self.end_capture();
        }
    }

    /// One byte outside any string.
    fn structural(&mut self, b: u8) {
        match self.top {
            Top::Start => match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'{' => {
                    self.top = Top::Object;
                    self.depth = 1;
                    self.expect_key = true;
                }
                _ => self.top = Top::Other,
            },
            // Trailing bytes after the object: counted only.
            Top::Done | Top::Other => {}
            Top::Object => self.in_object(b),
        }
    }

    fn in_object(&mut self, b: u8) {
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if self.scalar_capture() {
                self.end_capture();
            }
            return;
        }
        if self.depth == 1 {
            match b {
                b'"' if self.expect_key => {
                    self.expect_key = false;
                    self.in_key = true;
                    self.in_string = true;
                    self.key.clear();
                    self.key_overflow = false;
                    return;
                }
                b':' => {
                    self.value_pending = true;
                    return;
                }
                b',' => {
                    if self.scalar_capture() {
                        self.end_capture();
                    }
                    self.expect_key = true;
                    return;
                }
                b'}' => {
                    if self.scalar_capture() {
                        self.end_capture();
                    }
                    self.depth = 0;
                    self.top = Top::Done;
                    return;
                }
                _ => {}
            }
            if self.value_pending {
                self.value_pending = false;
                self.start_value(b);
            }
        }
        match b {
            b'"' => {
                self.in_string = true;
                self.capture_bytes(b"\"");
            }
            b'{' | b'[' => {
                self.depth = self.depth.saturating_add(1);
                self.capture_bytes(&[b]);
            }
            b'}' | b']' => {
                self.capture_bytes(&[b]);
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 1 && self.capturing.is_some() {
                    self.end_capture();
                }
            }
            _ => self.capture_bytes(&[b]),
        }
    }

    /// A top-level member's value starts with `b`: capture it when it is
    /// one of the members looked for.
    fn start_value(&mut self, b: u8) {
        let member = if self.key_overflow {
            None
        } else {
            member_of(&self.key)
        };
        if let Some(m) = member {
            let scalar = !matches!(b, b'"' | b'{' | b'[');
            self.capturing = Some((m, scalar));
            self.capture.clear();
            self.capture_overflow = false;
        }
    }

    fn scalar_capture(&self) -> bool {
        matches!(self.capturing, Some((_, true)))
    }

    fn end_capture(&mut self) {
        let Some((member, _)) = self.capturing.take() else {
            return;
        };
        let value = (!self.capture_overflow).then(|| std::mem::take(&mut self.capture));
        match member {
            Member::Usage => self.usage = value,
            Member::Model => self.model = value,
        }
        self.capture_overflow = false;
    }

    /// What the body carried; `flavor` says where its usage lives.
    pub fn finish(&self, flavor: Flavor) -> JsonOutcome {
        let complete = self.complete();
        let text_bytes = match self.top {
            Top::Object | Top::Done => self.string_bytes,
            Top::Start | Top::Other => self.total,
        };
        JsonOutcome {
            metered: self.metered(flavor),
            complete,
            text_bytes,
            total_bytes: self.total,
        }
    }

    /// The captured members, read by the same typed structs as a whole
    /// body ([`super::from_json`]).
    fn metered(&self, flavor: Flavor) -> Option<Metered> {
        let usage = self.usage.as_ref()?;
        let mut doc = Vec::with_capacity(usage.len() + 64);
        doc.extend_from_slice(b"{\"usage\":");
        doc.extend_from_slice(usage);
        if let Some(model) = &self.model {
            doc.extend_from_slice(b",\"model\":");
            doc.extend_from_slice(model);
        }
        doc.push(b'}');
        match json::from_json(flavor, &doc) {
            Ok(m) => m,
            // A model of an odd type must not cost the usage.
            Err(_) if self.model.is_some() => {
                let mut doc = b"{\"usage\":".to_vec();
                doc.extend_from_slice(usage);
                doc.push(b'}');
                json::from_json(flavor, &doc).ok().flatten()
            }
            Err(_) => None,
        }
    }
}

/// The member a top-level key names (its raw bytes, escapes undone).
fn member_of(raw: &[u8]) -> Option<Member> {
    let decoded;
    let key: &[u8] = if raw.contains(&b'\\') {
        let mut quoted = Vec::with_capacity(raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(raw);
        quoted.push(b'"');
        decoded = serde_json::from_slice::<String>(&quoted).ok()?;
        decoded.as_bytes()
    } else {
        raw
    };
    match key {
        b"usage" => Some(Member::Usage),
        b"model" => Some(Member::Model),
        _ => None,
    }
}

/// The usage to record for a JSON body whose provider usage never came
/// (missing, malformed, not JSON, cut): the prompt estimate as uncached
/// input, and a quarter token per byte of text seen as output (the same
/// rule as a cut stream's).
pub fn estimate(prompt_estimate: u64, outcome: &JsonOutcome) -> TokenCounts {
    TokenCounts {
        input_tokens: prompt_estimate,
        output_tokens: outcome.text_bytes.div_ceil(4),
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        cache_write_1h_tokens: 0,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tap_all(body: &[u8], flavor: Flavor) -> JsonOutcome {
        let mut t = JsonTap::new();
        t.push(body);
        t.finish(flavor)
    }

    fn split_each(body: &[u8], flavor: Flavor) -> JsonOutcome {
        let mut t = JsonTap::new();
        for b in body {
            t.push(std::slice::from_ref(b));
        }
        t.finish(flavor)
    }

    const CHAT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"world\" {not: a key} \\ done"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":4}},"system_fingerprint":"fp_1"}"#;

    #[test]
    fn reads_usage_and_model_like_the_whole_body_parser() {
        let whole = super::super::from_json(Flavor::OpenAiChat, CHAT.as_bytes())
            .unwrap()
            .unwrap();
        for out in [
            tap_all(CHAT.as_bytes(), Flavor::OpenAiChat),
            split_each(CHAT.as_bytes(), Flavor::OpenAiChat),
        ] {
            assert!(out.complete);
            assert_eq!(out.metered.as_ref(), Some(&whole));
            assert_eq!(out.total_bytes, CHAT.len() as u64);
        }
        assert_eq!(whole.usage.input_tokens, 8);
        assert_eq!(whole.usage.cache_read_tokens, 4);
        assert_eq!(
            whole.served_model.as_deref(),
            Some("gpt-4o-mini-2024-07-18")
        );
    }

    #[test]
    fn nested_usage_and_model_keys_are_not_top_level() {
        let body = r#"{"choices":[{"message":{"content":"x","usage":{"prompt_tokens":999}},"model":"inner"}],"data":{"usage":{"completion_tokens":5}}}"#;
        let out = tap_all(body.as_bytes(), Flavor::OpenAiChat);
        assert!(out.complete);
        assert_eq!(out.metered, None);
        // Text below the top level is counted for the estimate.
        assert!(out.text_bytes > 0);
    }

    #[test]
    fn anthropic_usage_first_and_a_duplicate_usage_last_wins() {
        let body = r#"{"usage":{"input_tokens":1,"output_tokens":1},"model":"claude-haiku-4-5","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":3,"cache_creation_input_tokens":2}}"#;
        let out = split_each(body.as_bytes(), Flavor::Anthropic);
        let m = out.metered.unwrap();
        assert_eq!(
            m.usage,
            TokenCounts {
                input_tokens: 10,
                output_tokens: 20,
                cache_read_tokens: 3,
                cache_write_tokens: 2,
                cache_write_1h_tokens: 0,
            }
        );
        assert_eq!(m.served_model.as_deref(), Some("claude-haiku-4-5"));
    }

    #[test]
    fn escaped_keys_scalars_and_whitespace() {
        let body = "{ \"mod\\u0065l\" : \"m\\\"1\" ,\n \"usage\" :{\"input_tokens\" : 5 , \"output_tokens\":6 } , \"n\": 12 }  ";
        let out = split_each(body.as_bytes(), Flavor::OpenAiResponses);
        assert!(out.complete);
        let m = out.metered.unwrap();
        assert_eq!(m.usage.input_tokens, 5);
        assert_eq!(m.usage.output_tokens, 6);
        assert_eq!(m.served_model.as_deref(), Some("m\"1"));
    }

    #[test]
    fn a_body_cut_before_its_end_is_not_complete_but_keeps_a_usage_that_passed() {
        let body = r#"{"usage":{"input_tokens":5,"output_tokens":6},"output":[{"content":[{"text":"abcdefgh"#;
        let out = tap_all(body.as_bytes(), Flavor::OpenAiResponses);
        assert!(!out.complete);
        assert_eq!(out.metered.unwrap().usage.output_tokens, 6);
        let cut_in_usage = r#"{"usage":{"input_tokens":5,"output_to"#;
        let out = tap_all(cut_in_usage.as_bytes(), Flavor::OpenAiResponses);
        assert_eq!(out.metered, None, "an unfinished usage value is no usage");
    }

    #[test]
    fn not_json_counts_every_byte_as_text() {
        let out = tap_all(b"<html>oops</html>", Flavor::OpenAiChat);
        assert!(!out.complete);
        assert_eq!(out.metered, None);
        assert_eq!(out.text_bytes, 17);
        assert_eq!(estimate(10, &out).output_tokens, 5);
        assert_eq!(estimate(10, &out).input_tokens, 10);
    }

    #[test]
    fn a_usage_too_large_to_keep_is_dropped_not_truncated() {
        let pad = "x".repeat(MAX_CAPTURE_BYTES);
        let body = format!(r#"{{"usage":{{"pad":"{pad}","prompt_tokens":1}}}}"#);
        let out = tap_all(body.as_bytes(), Flavor::OpenAiChat);
        assert!(out.complete);
        assert_eq!(out.metered, None);
    }

    #[test]
    fn large_bodies_take_constant_memory() {
        let text = "tok ".repeat(400_000);
        let body = format!(
            r#"{{"model":"gpt-4o-mini","choices":[{{"message":{{"content":"{text}"}}}}],"usage":{{"prompt_tokens":3,"completion_tokens":400000}}}}"#
        );
        let mut t = JsonTap::new();
        for chunk in body.as_bytes().chunks(16 * 1024) {
            t.push(chunk);
        }
        assert!(t.capture.capacity() < 4096 && t.key.capacity() <= 2 * MAX_KEY_BYTES);
        let out = t.finish(Flavor::OpenAiChat);
        assert_eq!(out.metered.unwrap().usage.output_tokens, 400_000);
        assert!(out.text_bytes >= text.len() as u64);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any split of a body gives what the whole-body parser reads.
        #[test]
        fn splits_do_not_matter(cuts in proptest::collection::vec(0usize..CHAT.len(), 0..8)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let body = CHAT.as_bytes();
            let mut t = JsonTap::new();
            let mut at = 0;
            for c in cuts {
                t.push(&body[at..c.max(at)]);
                at = c.max(at);
            }
            t.push(&body[at..]);
            prop_assert_eq!(t.finish(Flavor::OpenAiChat), tap_all(body, Flavor::OpenAiChat));
        }

        /// Garbage never panics and never counts more bytes than it saw.
        #[test]
        fn garbage_is_harmless(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let out = split_each(&bytes, Flavor::Anthropic);
            prop_assert!(out.text_bytes <= out.total_bytes);
            prop_assert_eq!(out.total_bytes, bytes.len() as u64);
        }

        /// Generated JSON objects with a usage member: the tap agrees with
        /// serde_json on every one of them.
        #[test]
        fn agrees_with_serde_on_generated_objects(
            input in 0u64..1_000_000,
            output in 0u64..1_000_000,
            noise in proptest::collection::vec(("[a-z_]{1,8}", "[ -~]{0,20}"), 0..6),
            usage_at in 0usize..6,
        ) {
            let mut obj = serde_json::Map::new();
            for (i, (k, v)) in noise.iter().enumerate() {
                if i == usage_at {
                    obj.insert("usage".into(), serde_json::json!({"input_tokens": input, "output_tokens": output}));
                }
                if k != "usage" && k != "model" {
                    obj.insert(k.clone(), serde_json::json!({"nested": [v, {"usage": 1}]}));
                }
            }
            obj.insert("usage".into(), serde_json::json!({"input_tokens": input, "output_tokens": output}));
            let body = serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap();
            let whole = super::super::from_json(Flavor::OpenAiResponses, &body).unwrap();
            prop_assert_eq!(split_each(&body, Flavor::OpenAiResponses).metered, whole);
        }
    }
}
