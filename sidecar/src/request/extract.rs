//! Best-effort extraction of the texts the complexity classifier reads.
//!
//! Top-level containers (`messages`, `input`, `system`, `instructions`) are
//! read in the main pass and must have their documented type. What is inside
//! them never fails a request: message and item values are captured as raw
//! values borrowed from the body and decoded afterwards (a string by a
//! `memchr` for `\`, an array by one more parse whose errors are swallowed),
//! and anything of an unexpected shape is skipped.
//!
//! Strings that may be texts are never read through `deserialize_any` /
//! `deserialize_str`: serde_json rejects lone UTF-16 surrogates there, but
//! accepts them (as WTF-8) through `deserialize_bytes` and in raw values.

use std::{borrow::Cow, fmt};

use serde::de::{
    self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;
use tokenwarden_core::classify::Role;

/// Where extracted texts go.
#[derive(Debug)]
pub(super) struct Sink<'a> {
    pub(super) texts: Vec<(Role, Cow<'a, str>)>,
    pub(super) turns: usize,
    /// The first input the request references without carrying it (an
    /// image or file by URL or id, an item reference), if any.
    pub(super) unseen: Option<&'static str>,
    /// False when nobody reads the texts (no route looks at the complexity
    /// score): then nothing is decoded, copied or kept, only `turns` counted.
    keep: bool,
}

/// Which content parts carry text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Parts {
    /// `text`, `input_text` and `output_text` parts (OpenAI; also the blocks
    /// inside an Anthropic `tool_result`).
    Text,
    /// Those, and Anthropic `tool_result` blocks, whose content (a string or
    /// text blocks) is a [`Role::Tool`] text.
    TextAndToolResults,
}

/// The top-level `messages` array (chat completions, Anthropic).
pub(super) struct Messages<'s, 'a> {
    pub(super) sink: &'s mut Sink<'a>,
    pub(super) parts: Parts,
}

/// Anthropic's top-level `system`: a string or text blocks.
pub(super) struct System<'s, 'a> {
    pub(super) sink: &'s mut Sink<'a>,
}

/// The Responses API's `input` (and `instructions`): a string (one text of
/// `role`, one turn if `turn`) or an array of input items.
pub(super) struct Input<'s, 'a> {
    pub(super) sink: &'s mut Sink<'a>,
    pub(super) role: Role,
    pub(super) turn: bool,
}

/// The embeddings `input`: a string, or an array of strings (or of token
/// arrays, which carry no text).
pub(super) struct EmbeddingInput<'s, 'a> {
    pub(super) sink: &'s mut Sink<'a>,
}

/// Counts the elements of an array (or `null`: 0).
pub(super) struct Count;

/// Reads a map key as its index in a list of names (`None`: another key).
pub(super) struct KeyIn<'k>(pub(super) &'k [&'k str]);

/// Accepts `null` (as nothing) and, through `deserialize_bytes`, a string or
/// an array for the wrapped visitor. Anything else is the wrapped visitor's
/// type error.
struct Nullable<V>(V);

/// One message (chat, Anthropic) or input item (Responses), or a content
/// part / block. Values of other types are skipped.
struct Entry<'s, 'a> {
    sink: &'s mut Sink<'a>,
    kind: EntryKind,
}

#[derive(Clone, Copy)]
enum EntryKind {
    Message(Parts),
    Item,
    /// A content part of a message of this role.
    Part {
        role: Role,
        parts: Parts,
    },
}

/// The elements of an array, each read as an [`Entry`] of one kind.
struct Entries<'s, 'a> {
    sink: &'s mut Sink<'a>,
    kind: EntryKind,
}

/// The keys an [`Entry`] reads.
const ENTRY_KEYS: &[&str] = &[
    "role",
    "content",
    "type",
    "text",
    "output",
    "image_url",
    "file",
    "file_id",
    "file_url",
    "source",
];

/// The text of a raw JSON value if it is a string: borrowed from the body
/// when it has no escapes; decoded otherwise (lone surrogates become U+FFFD).
pub(super) fn raw_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let json = raw.get();
    let inner = json.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    Some(Cow::Owned(unescape(inner)))
}

/// Decodes the inside of a JSON string literal that serde_json has already
/// checked (every escape well formed, no raw control characters) in one
/// pass, runs without escapes copied whole. A UTF-16 surrogate that is not
/// half of a pair becomes U+FFFD.
pub(super) fn unescape(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    // Escapes are dense in code and logs (a `\n` every few dozen bytes): a
    // plain byte loop beats setting up a `memchr` per run.
    while let Some(at) = rest.bytes().position(|b| b == b'\\') {
        let (run, escape) = rest.split_at_checked(at).unwrap_or((rest, ""));
        out.push_str(run);
        let tail = escape.get(2..).unwrap_or("");
        let decoded = match escape.as_bytes().get(1) {
            Some(b'u') => {
                let (c, after) = unicode_escape(tail);
                out.push(c);
                rest = after;
                continue;
            }
            Some(b'n') => '\n',
            Some(b't') => '\t',
            Some(b'r') => '\r',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            // `"`, `\`, `/` (serde_json accepts no other escape).
            Some(&b) => char::from(b),
            None => break,
        };
        out.push(decoded);
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Decodes the `XXXX` of a `\uXXXX` escape, with the `\uXXXX` low surrogate
/// that follows when `XXXX` is a high one; returns the char and the rest.
fn unicode_escape(s: &str) -> (char, &str) {
    fn hex(s: &str) -> Option<(u32, &str)> {
        let value = u32::from_str_radix(s.get(..4)?, 16).ok()?;
        Some((value, s.get(4..)?))
    }
    let Some((unit, rest)) = hex(s) else {
        return (char::REPLACEMENT_CHARACTER, s);
    };
    if (0xD800..0xDC00).contains(&unit)
        && let Some((low, after)) = rest.strip_prefix("\\u").and_then(hex)
        && (0xDC00..0xE000).contains(&low)
    {
        let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
        return (
            char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER),
            after,
        );
    }
    (
        char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER),
        rest,
    )
}

/// Whether a value is there and not `null`.
fn present(v: Option<&RawValue>) -> bool {
    v.is_some_and(|v| v.get() != "null")
}

/// The raw value of `key` in the object `raw` (none when `raw` is not an
/// object or lacks it).
fn member<'a>(raw: &'a RawValue, key: &'static str) -> Option<&'a RawValue> {
    let keys = [key];
    struct V<'k>(&'k [&'k str]);
    impl<'a> Visitor<'a> for V<'_> {
        type Value = Option<&'a RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(k) = map.next_key_seed(KeyIn(self.0))? {
                let value: &'a RawValue = map.next_value()?;
                if k.is_some() {
                    found = Some(value);
                }
            }
            Ok(found)
        }
    }
    if !raw.get().starts_with('{') {
        return None;
    }
    serde_json::Deserializer::from_str(raw.get())
        .deserialize_map(V(&keys))
        .ok()
        .flatten()
}

/// Whether an image reference carries its data (a `data:` URL), as a
/// string or as `{"url": …}`; anything else is fetched by the provider.
fn inline_url(raw: &RawValue) -> bool {
    let url = if raw.get().starts_with('{') {
        member(raw, "url").and_then(raw_text)
    } else {
        raw_text(raw)
    };
    url.is_some_and(|u| u.trim_start().starts_with("data:"))
}

fn role_of(name: &str) -> Role {
    match name {
        "system" | "developer" => Role::System,
        "assistant" | "model" => Role::Assistant,
        "tool" | "function" => Role::Tool,
        _ => Role::User,
    }
}

/// The bytes of a string read through `deserialize_bytes`: UTF-8, unless it
/// held lone surrogates (serde_json gives WTF-8) or invalid bytes, which are
/// replaced by U+FFFD.
fn text_of_bytes(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

// === impl Sink ===

impl<'a> Sink<'a> {
    /// A sink that keeps texts (`keep`) or only counts turns.
    pub(super) fn new(keep: bool) -> Self {
        Sink {
            texts: Vec::new(),
            turns: 0,
            unseen: None,
            keep,
        }
    }

    fn push(&mut self, role: Role, text: Cow<'a, str>) {
        if self.keep {
            self.texts.push((role, text));
        }
    }

    /// A string borrowed from the body, decoded only when texts are kept.
    fn push_bytes(&mut self, role: Role, v: &'a [u8]) {
        if self.keep {
            self.texts.push((role, text_of_bytes(v)));
        }
    }

    /// A string serde_json had to copy (it had escapes).
    fn push_owned_bytes(&mut self, role: Role, v: &[u8]) {
        if self.keep {
            self.texts
                .push((role, Cow::Owned(text_of_bytes(v).into_owned())));
        }
    }

    /// The request references input it does not carry.
    pub(super) fn unseen(&mut self, what: &'static str) {
        self.unseen.get_or_insert(what);
    }

    fn turn(&mut self) {
        self.turns = self.turns.saturating_add(1);
    }

    /// A `content` (or `output`) value: a string, or an array of parts read
    /// in a second parse; anything else, or an array that fails to parse,
    /// adds nothing. Arrays are read even when texts are not kept: a part
    /// may reference input the body does not carry.
    fn content(&mut self, raw: &'a RawValue, role: Role, parts: Parts) {
        match raw.get().as_bytes().first() {
            Some(b'"') if self.keep => {
                if let Some(text) = raw_text(raw) {
                    self.push(role, text);
                }
            }
            Some(b'[') => {
                let start = self.texts.len();
                let entries = Entries {
                    sink: self,
                    kind: EntryKind::Part { role, parts },
                };
                let parsed = serde_json::Deserializer::from_str(raw.get()).deserialize_seq(entries);
                if parsed.is_err() {
                    self.texts.truncate(start);
                }
            }
            _ => {}
        }
    }
}

// === impl Messages, System, Input, EmbeddingInput, Count ===

impl<'a> DeserializeSeed<'a> for Messages<'_, 'a> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(Nullable(self))
    }
}

impl<'a> Visitor<'a> for Messages<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, seq: A) -> Result<(), A::Error> {
        Entries {
            sink: self.sink,
            kind: EntryKind::Message(self.parts),
        }
        .visit_seq(seq)
    }
}

impl<'a> DeserializeSeed<'a> for System<'_, 'a> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(Nullable(self))
    }
}

impl<'a> Visitor<'a> for System<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of content blocks")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'a [u8]) -> Result<(), E> {
        self.sink.push_bytes(Role::System, v);
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.sink.push_owned_bytes(Role::System, v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'a>>(self, seq: A) -> Result<(), A::Error> {
        let kind = EntryKind::Part {
            role: Role::System,
            parts: Parts::Text,
        };
        Entries {
            sink: self.sink,
            kind,
        }
        .visit_seq(seq)
    }
}

impl<'a> DeserializeSeed<'a> for Input<'_, 'a> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(Nullable(self))
    }
}

impl<'a> Visitor<'a> for Input<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of input items")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'a [u8]) -> Result<(), E> {
        self.sink.push_bytes(self.role, v);
        if self.turn {
            self.sink.turn();
        }
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.sink.push_owned_bytes(self.role, v);
        if self.turn {
            self.sink.turn();
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'a>>(self, seq: A) -> Result<(), A::Error> {
        Entries {
            sink: self.sink,
            kind: EntryKind::Item,
        }
        .visit_seq(seq)
    }
}

impl<'a> DeserializeSeed<'a> for EmbeddingInput<'_, 'a> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(Nullable(self))
    }
}

impl<'a> Visitor<'a> for EmbeddingInput<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'a [u8]) -> Result<(), E> {
        self.sink.push_bytes(Role::User, v);
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.sink.push_owned_bytes(Role::User, v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'a RawValue>()? {
            if self.sink.keep
                && let Some(text) = raw_text(raw)
            {
                self.sink.push(Role::User, text);
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Count {
    type Value = usize;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_option(Nullable(self))
    }
}

impl<'de> Visitor<'de> for Count {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0usize;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n = n.saturating_add(1);
        }
        Ok(n)
    }
}

// === impl KeyIn ===

impl<'de> DeserializeSeed<'de> for KeyIn<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for KeyIn<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|k| k.as_bytes() == v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        self.visit_bytes(v.as_bytes())
    }
}

// === impl Nullable ===

impl<'de, V> Visitor<'de> for Nullable<V>
where
    V: Visitor<'de>,
    V::Value: Default,
{
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        Ok(V::Value::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        Ok(V::Value::default())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        d.deserialize_bytes(self.0)
    }
}

// === impl Entries, Entry ===

impl<'a> Visitor<'a> for Entries<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Entry {
                sink: &mut *self.sink,
                kind: self.kind,
            })?
            .is_some()
        {}
        Ok(())
    }
}

impl<'a> DeserializeSeed<'a> for Entry<'_, 'a> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        // Objects are read; any other value is skipped (strings through
        // `deserialize_any` would be validated, but a string where an object
        // belongs is already a request the provider rejects).
        d.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for Entry<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let mut values: [Option<&'a RawValue>; ENTRY_KEYS.len()] = [None; ENTRY_KEYS.len()];
        while let Some(k) = map.next_key_seed(KeyIn(ENTRY_KEYS))? {
            match k.and_then(|i| values.get_mut(i)) {
                Some(slot) => *slot = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let [
            role,
            content,
            kind,
            text,
            output,
            image_url,
            file,
            file_id,
            file_url,
            source,
        ] = values;
        let kind = kind.and_then(raw_text);
        let kind = kind.as_deref();
        let role = role.and_then(raw_text).map(|r| role_of(&r));
        let sink = self.sink;
        match self.kind {
            EntryKind::Message(parts) => {
                let role = role.unwrap_or(Role::User);
                if let Some(content) = content {
                    sink.content(content, role, parts);
                }
                if role != Role::System {
                    sink.turn();
                }
            }
            EntryKind::Item => {
                if kind == Some("item_reference") {
                    sink.unseen("an item_reference");
                }
                let role = role.unwrap_or(match kind {
                    Some(k) if k.ends_with("_output") => Role::Tool,
                    Some(k) if k.ends_with("_call") || k == "reasoning" => Role::Assistant,
                    _ => Role::User,
                });
                if let Some(content) = content {
                    sink.content(content, role, Parts::Text);
                }
                if let Some(output) = output {
                    sink.content(output, Role::Tool, Parts::Text);
                }
                if role != Role::System {
                    sink.turn();
                }
            }
            EntryKind::Part {
                role: message_role,
                parts,
            } => match kind {
                None | Some("text" | "input_text" | "output_text") => {
                    if sink.keep
                        && let Some(text) = text.and_then(raw_text)
                    {
                        sink.push(message_role, text);
                    }
                }
                Some("image_url" | "input_image") => {
                    if image_url.is_some_and(|u| !inline_url(u)) {
                        sink.unseen("an image by URL");
                    } else if present(file_id) {
                        sink.unseen("an image by file id");
                    }
                }
                Some("input_file") => {
                    if present(file_id) || present(file_url) {
                        sink.unseen("a file by id or URL");
                    }
                }
                Some("file") => {
                    if file.is_some_and(|f| present(member(f, "file_id"))) {
                        sink.unseen("a file by id");
                    }
                }
                Some("image" | "document") => {
                    let by = source.and_then(|s| member(s, "type")).and_then(raw_text);
                    if matches!(by.as_deref(), Some("url" | "file")) {
                        sink.unseen("an image or document by URL or file id");
                    }
                }
                Some("container_upload") => sink.unseen("a container upload"),
                Some("tool_result") if parts == Parts::TextAndToolResults => {
                    if let Some(content) = content {
                        sink.content(content, Role::Tool, Parts::Text);
                    }
                }
                Some(_) => {}
            },
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}
