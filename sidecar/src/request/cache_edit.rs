//! Request rewrites that make the provider's prompt cache hit: Anthropic
//! `cache_control` breakpoints and OpenAI's `prompt_cache_key`. Both are
//! opt-in per RoutingPolicy (`caching`); the proxy calls these after routing.
//!
//! As everywhere in [`super`], the body is never re-serialized: the members
//! are spliced in and every other byte is copied as sent (the provider
//! caches by byte-stable prefix, so re-encoding the body would itself break
//! the cache it is meant to make hit).
//!
//! # Anthropic breakpoints ([`insert_anthropic_breakpoints`])
//!
//! Anthropic caches a prompt prefix only up to a block marked
//! `cache_control`, and renders a request as tools → system → messages.
//! For agents its guide recommends breakpoints at the end of the tool
//! definitions, at the end of the system prompt and on the last message, so
//! the conversation so far is read from cache on the next turn and each
//! earlier part stays cached when a later one changes. Source:
//! <https://platform.claude.com/docs/en/build-with-claude/prompt-caching>
//! (formerly `docs.anthropic.com/en/docs/build-with-claude/prompt-caching`),
//! read on 2026-12-06.
//!
//! - A body that carries `cache_control` anywhere (top level, which asks for
//!   Anthropic's automatic caching, or on any tool, system block, message,
//!   content block or nested value) is left alone byte for byte: its client
//!   manages its own cache. The check is structural: a member *key* named
//!   `cache_control`, escapes in keys decoded (`"cache\u005fcontrol"`); the
//!   word inside a text does not count.
//! - Otherwise up to three breakpoints are inserted (the API allows four):
//!   1. on the last `tools[]` entry;
//!   2. on the last `system` block (a string `system` becomes one text
//!      block);
//!   3. on the last content block of the last message that may carry one: a
//!      block is skipped when it is `thinking` or `redacted_thinking` or an
//!      empty `text` (the API refuses `cache_control` on those), and a
//!      message with no such block is skipped for the one before it (a
//!      string `content` becomes one text block; `""` is skipped).
//! - A point is marked only when the prefix up to it reaches the model's
//!   minimum cacheable length ([`BreakpointPlan::min_tokens`], from
//!   [`tokenwarden_core::catalog::cache_minimums`] unless the policy
//!   overrides it): Anthropic does not cache a shorter prefix, so a mark
//!   there would do nothing. The prefix is estimated as
//!   `ceil(bytes / bytes_per_token)` (the sidecar's bytes/4), counting the
//!   raw bytes as sent of: every tool definition; the `system` string or
//!   every system block; the `content` of every earlier message; and the
//!   marked message's `content` from its start to the end of the marked
//!   block.
//!
//! The member added is `"cache_control":{"type":"ephemeral"}` (5-minute
//! TTL, the API's default) or `"cache_control":{"type":"ephemeral","ttl":"1h"}`,
//! as the last member of the block object: `,"cache_control":{…}` right
//! before its closing `}` (no comma when the object is empty). A string
//! becomes `[{"type":"text","text":<the string literal as sent, escapes
//! kept>,"cache_control":{…}}]`.
//!
//! What a breakpoint costs: the first request writes the prefix to the
//! cache at 1.25× the input price (2× with the 1-hour TTL); every later
//! request within the TTL reads it at 0.1×. Anthropic looks for an earlier
//! cache entry up to about 20 blocks back from each breakpoint, so a turn
//! that adds more than 20 blocks reads only the tools and system entries.
//!
//! # OpenAI `prompt_cache_key` ([`insert_prompt_cache_key`])
//!
//! OpenAI caches prefixes of 1,024 tokens and more automatically; requests
//! are routed to a cache machine by a hash of the prompt's first tokens,
//! combined with `prompt_cache_key` when set, so a stable per-workload key
//! keeps a workload's requests on the machines that hold its prefixes.
//! Source: <https://developers.openai.com/api/docs/guides/prompt-caching>
//! (formerly `platform.openai.com/docs/guides/prompt-caching`), read on
//! 2026-12-06. The key is
//! appended as the last top-level member when the body has none (a `null`
//! one is replaced); a body with its own key is left alone.
//!
//! # Cost
//!
//! A body without the text `cache_control` and without a `\u` escape of an
//! ASCII letter is cleared by two `memmem` scans (escapes of non-ASCII
//! characters, which Python clients write for every `é`, do not count);
//! otherwise a scan of its strings (a `memchr` per string) looks for the
//! key. Then one serde_json pass over the body records the spans (tools and
//! message contents as borrowed raw values); only the system blocks and the
//! content blocks of the last message(s) are read a second time, to find the
//! block to mark. The new body is one copy with at most five splices.

use std::{borrow::Cow, fmt, ops::Range};

use bytes::Bytes;
use memchr::{memchr, memchr2, memmem};
use serde::{
    Deserialize,
    de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::{error::Category, value::RawValue};
use tokenwarden_core::{
    catalog::cache_minimums::anthropic_min_cacheable_tokens, workload::Endpoint,
};

use super::{BodyError, extract::KeyIn};

/// Tokens are estimated as `ceil(bytes / 4)`, as elsewhere in the sidecar.
pub const BYTES_PER_TOKEN: u64 = 4;

/// Where and how [`insert_anthropic_breakpoints`] may mark the prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakpointPlan {
    /// A point is marked only when the prefix up to it is at least this many
    /// tokens (the model's minimum cacheable length).
    pub min_tokens: u64,
    /// How many body bytes make one token in the estimate (0 counts as 1).
    pub bytes_per_token: u64,
    /// The cache TTL the breakpoints ask for.
    pub ttl: CacheTtl,
}

/// The TTL of an Anthropic cache entry: the workload config's own type
/// (5 minutes writes no `ttl` member, the API's default; 1 hour writes
/// `"ttl":"1h"`).
pub use tokenwarden_core::workload::CacheTtl;

/// The outcome of a cache rewrite.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheEdit {
    /// Send the body as it came; why.
    Untouched(Untouched),
    /// Anthropic breakpoints were inserted.
    Inserted {
        /// The body to send.
        body: Bytes,
        /// How many (1 to 3).
        breakpoints: u8,
    },
    /// A `prompt_cache_key` was set.
    KeySet {
        /// The body to send.
        body: Bytes,
    },
}

/// Why a body was left as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Untouched {
    /// The body carries `cache_control` somewhere: its client manages the
    /// cache.
    HasCacheControl,
    /// There are points to mark, but the prefix up to each is shorter than
    /// the minimum cacheable length.
    BelowMinimum,
    /// No tools, system or message block that may carry `cache_control`.
    NothingToMark,
    /// The body has its own `prompt_cache_key`.
    KeyPresent,
    /// `prompt_cache_key` is set only on chat completions and responses.
    NotOpenAi(Endpoint),
    /// The body is not one the edit can work with (the proxy's
    /// [`super::parse`] rejects most of these before).
    Malformed(BodyError),
}

/// A change: the bytes at `at` (empty: an insertion before `at.start`)
/// become `text`.
#[derive(Debug)]
struct Edit {
    at: Range<usize>,
    text: String,
}

/// What the pass over a `/v1/messages` body records.
#[derive(Debug, Default)]
struct Layout<'a> {
    /// The bytes of every tool definition.
    tools_bytes: usize,
    last_tool: Option<&'a RawValue>,
    system: Option<&'a RawValue>,
    /// Each message's `content` (`None`: absent or `null`).
    contents: Vec<Option<&'a RawValue>>,
}

/// The top-level walk of a `/v1/messages` body.
struct Top<'a> {
    layout: Layout<'a>,
    /// The member being read, for a type error: name and what it must be.
    current: Option<(&'static str, &'static str)>,
    /// An error of ours (serde only sees an opaque custom error).
    fail: Option<BodyError>,
}

/// The top-level members the walk reads, with what each must be.
const TOP: [(&str, &str); 3] = [
    ("tools", "an array"),
    ("system", "a string or an array of content blocks"),
    ("messages", "an array of message objects"),
];

/// A content block's `type`, and its `text` for an empty-text check.
#[derive(Deserialize)]
struct BlockHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// Opens a string `system` / `content` turned into one text block.
const TEXT_BLOCK_OPEN: &str = r#"[{"type":"text","text":"#;

/// Marks `body` (a `/v1/messages` request) with `cache_control` breakpoints
/// per `plan`; see the module docs for where and which bytes.
pub fn insert_anthropic_breakpoints(body: &Bytes, plan: &BreakpointPlan) -> CacheEdit {
    if has_key(body, b"cache_control") {
        return CacheEdit::Untouched(Untouched::HasCacheControl);
    }
    let layout = match walk_messages_body(body) {
        Ok(layout) => layout,
        Err(e) => return CacheEdit::Untouched(Untouched::Malformed(e)),
    };
    let (edits, points) = match plan_breakpoints(body, &layout, plan) {
        Ok(planned) => planned,
        Err(why) => return CacheEdit::Untouched(why),
    };
    match splice(body, &edits) {
        Some(out) => CacheEdit::Inserted {
            body: Bytes::from(out),
            breakpoints: points,
        },
        None => CacheEdit::Untouched(Untouched::Malformed(internal())),
    }
}

/// Sets the top-level `prompt_cache_key` of a chat completions or responses
/// body to `key` (a JSON string literal written by serde_json), when the
/// body has none or `null`: `,"prompt_cache_key":"…"` before the closing
/// `}` of the body (no comma when it is empty), or in place of the `null`.
pub fn insert_prompt_cache_key(body: &Bytes, endpoint: Endpoint, key: &str) -> CacheEdit {
    if !matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Responses) {
        return CacheEdit::Untouched(Untouched::NotOpenAi(endpoint));
    }
    let (members, found) = match top_member(body, "prompt_cache_key") {
        Ok(top) => top,
        Err(e) => return CacheEdit::Untouched(Untouched::Malformed(e)),
    };
    let literal = serde_json::Value::from(key).to_string();
    let edit = match found.as_slice() {
        [] => {
            let Some(close) = closing_brace(body) else {
                return CacheEdit::Untouched(Untouched::Malformed(internal()));
            };
            let comma = if members > 0 { "," } else { "" };
            Edit {
                at: close..close,
                text: format!("{comma}\"prompt_cache_key\":{literal}"),
            }
        }
        [value] if value.get() == "null" => match offset(body, value) {
            Some(at) => Edit { at, text: literal },
            None => return CacheEdit::Untouched(Untouched::Malformed(internal())),
        },
        [_] => return CacheEdit::Untouched(Untouched::KeyPresent),
        _ => {
            let field = "prompt_cache_key";
            return CacheEdit::Untouched(Untouched::Malformed(BodyError::DuplicateKey { field }));
        }
    };
    match splice(body, &[edit]) {
        Some(out) => CacheEdit::KeySet {
            body: Bytes::from(out),
        },
        None => CacheEdit::Untouched(Untouched::Malformed(internal())),
    }
}

/// Whether any object in `body` has a member whose key, unescaped, is
/// `name` (an ASCII name without `"` or `\`). Values are never matched.
///
/// Meant for valid JSON (on other bytes it answers something, without
/// panicking): outside strings JSON has no `"`, so every `"` found from one
/// string's end on opens the next string, and a string followed by `:` is a
/// key.
#[must_use]
pub fn has_key(body: &[u8], name: &[u8]) -> bool {
    if !may_have_key(body, name) {
        return false;
    }
    let mut at = 0;
    loop {
        let Some(open) = body.get(at..).and_then(|rest| memchr(b'"', rest)) else {
            return false;
        };
        let start = at + open + 1;
        let Some(end) = string_end(body, start) else {
            return false;
        };
        let next = body
            .get(end + 1..)
            .and_then(|rest| rest.iter().find(|b| !is_ws(**b)));
        if next == Some(&b':') && body.get(start..end).is_some_and(|key| key_is(key, name)) {
            return true;
        }
        at = end + 1;
    }
}

// === impl BreakpointPlan, CacheEdit ===

impl BreakpointPlan {
    /// The plan for an Anthropic `model`: its minimum cacheable length from
    /// the built-in table, tokens as bytes / [`BYTES_PER_TOKEN`].
    #[must_use]
    pub fn for_model(model: &str, ttl: CacheTtl) -> Self {
        Self {
            min_tokens: anthropic_min_cacheable_tokens(model),
            bytes_per_token: BYTES_PER_TOKEN,
            ttl,
        }
    }

    /// Whether a prefix of `bytes` reaches the minimum.
    fn reaches(&self, bytes: usize) -> bool {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        bytes.div_ceil(self.bytes_per_token.max(1)) >= self.min_tokens
    }

    /// The member a breakpoint adds.
    fn member(&self) -> &'static str {
        match self.ttl {
            CacheTtl::FiveMinutes => r#""cache_control":{"type":"ephemeral"}"#,
            CacheTtl::OneHour => r#""cache_control":{"type":"ephemeral","ttl":"1h"}"#,
        }
    }
}

impl CacheEdit {
    /// The body to send: the new one, or `original` (a reference-count
    /// bump, no copy).
    #[must_use]
    pub fn into_body(self, original: &Bytes) -> Bytes {
        match self {
            Self::Untouched(_) => original.clone(),
            Self::Inserted { body, .. } | Self::KeySet { body } => body,
        }
    }

    /// Whether the body was changed.
    #[must_use]
    pub fn changed(&self) -> bool {
        !matches!(self, Self::Untouched(_))
    }
}

impl fmt::Display for Untouched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HasCacheControl => f.write_str("the request carries cache_control"),
            Self::BelowMinimum => f.write_str("the prompt is below the minimum cacheable length"),
            Self::NothingToMark => f.write_str("no block may carry cache_control"),
            Self::KeyPresent => f.write_str("the request carries a prompt_cache_key"),
            Self::NotOpenAi(endpoint) => write!(f, "{endpoint:?} takes no prompt_cache_key"),
            Self::Malformed(e) => e.fmt(f),
        }
    }
}

// === The Anthropic walk ===

/// One serde_json pass over a `/v1/messages` body.
fn walk_messages_body(body: &[u8]) -> Result<Layout<'_>, BodyError> {
    let mut top = Top {
        layout: Layout::default(),
        current: None,
        fail: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    match (&mut de).deserialize_map(&mut top).and_then(|()| de.end()) {
        Ok(()) => Ok(top.layout),
        Err(e) => Err(top
            .fail
            .take()
            .unwrap_or_else(|| body_error(&e, top.current))),
    }
}

impl<'a> Visitor<'a> for &mut Top<'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let names = TOP.map(|(name, _)| name);
        let mut seen = [false; TOP.len()];
        while let Some(key) = map.next_key_seed(KeyIn(&names))? {
            let Some((i, &(name, expected))) = key.and_then(|i| Some((i, TOP.get(i)?))) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if seen.get(i).copied().unwrap_or(false) {
                self.fail = Some(BodyError::DuplicateKey { field: name });
                return Err(de::Error::custom("duplicate key"));
            }
            if let Some(s) = seen.get_mut(i) {
                *s = true;
            }
            self.current = Some((name, expected));
            match i {
                0 => {
                    let (bytes, last) = map.next_value_seed(Tools)?;
                    self.layout.tools_bytes = bytes;
                    self.layout.last_tool = last;
                }
                1 => {
                    let system: Option<&'a RawValue> = map.next_value()?;
                    if system.is_some_and(|s| !s.get().starts_with(['"', '['])) {
                        return Err(de::Error::custom("system has the wrong type"));
                    }
                    self.layout.system = system;
                }
                _ => {
                    let fail = &mut self.fail;
                    self.layout.contents = map.next_value_seed(Messages { fail })?;
                }
            }
            self.current = None;
        }
        Ok(())
    }
}

/// The `tools` array: the bytes of its entries and the last one.
struct Tools;

impl<'de> DeserializeSeed<'de> for Tools {
    type Value = (usize, Option<&'de RawValue>);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Tools {
    type Value = (usize, Option<&'de RawValue>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((0, None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((0, None))
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (mut bytes, mut last) = (0usize, None);
        while let Some(tool) = seq.next_element::<&'de RawValue>()? {
            bytes = bytes.saturating_add(tool.get().len());
            last = Some(tool);
        }
        Ok((bytes, last))
    }
}

/// The `messages` array: each message's `content`.
struct Messages<'f> {
    fail: &'f mut Option<BodyError>,
}

impl<'de> DeserializeSeed<'de> for Messages<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Messages<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of message objects")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut contents = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(content) = seq.next_element_seed(Message {
            fail: &mut *self.fail,
        })? {
            contents.push(content);
        }
        Ok(contents)
    }
}

/// One message: its `content`.
struct Message<'f> {
    fail: &'f mut Option<BodyError>,
}

impl<'de> DeserializeSeed<'de> for Message<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Message<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut content, mut seen) = (None, false);
        while let Some(key) = map.next_key_seed(KeyIn(&["content"]))? {
            if key.is_none() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if seen {
                *self.fail = Some(BodyError::DuplicateKey {
                    field: "messages[].content",
                });
                return Err(de::Error::custom("duplicate content"));
            }
            seen = true;
            content = map.next_value::<Option<&'de RawValue>>()?;
        }
        Ok(content)
    }
}

// === Planning ===

/// The edits for `layout` and how many points they mark; `Err` when none.
fn plan_breakpoints(
    body: &[u8],
    layout: &Layout<'_>,
    plan: &BreakpointPlan,
) -> Result<(Vec<Edit>, u8), Untouched> {
    let member = plan.member();
    let mut edits = Vec::with_capacity(5);
    let (mut points, mut candidates) = (0u8, 0u8);
    let mut mark = |marked: Option<Vec<Edit>>, reaches: bool| {
        if let Some(marked) = marked {
            candidates += 1;
            if reaches {
                edits.extend(marked);
                points += 1;
            }
        }
    };

    let mut prefix = layout.tools_bytes;
    let tool = layout.last_tool.filter(|t| t.get().starts_with('{'));
    mark(
        tool.and_then(|t| Some(vec![object_member(body, t, member)?])),
        plan.reaches(prefix),
    );

    if let Some(system) = layout.system {
        let (bytes, marked) = mark_system(body, system, member);
        prefix = prefix.saturating_add(bytes);
        mark(marked, plan.reaches(prefix));
    }

    // The last message with a block that may carry the mark.
    let mut before = layout
        .contents
        .iter()
        .flatten()
        .fold(prefix, |sum, c| sum.saturating_add(c.get().len()));
    for content in layout.contents.iter().rev() {
        let Some(content) = content else { continue };
        before = before.saturating_sub(content.get().len());
        if let Some((upto, marked)) = mark_content(body, content, member) {
            mark(Some(marked), plan.reaches(before.saturating_add(upto)));
            break;
        }
    }

    match (points, candidates) {
        (0, 0) => Err(Untouched::NothingToMark),
        (0, _) => Err(Untouched::BelowMinimum),
        _ => {
            edits.sort_by_key(|e| e.at.start);
            Ok((edits, points))
        }
    }
}

/// The bytes of `system` and the edits marking its last block, if it may
/// carry the mark.
fn mark_system(body: &[u8], system: &RawValue, member: &str) -> (usize, Option<Vec<Edit>>) {
    let json = system.get();
    if json.starts_with('"') {
        let marked = (json != r#""""#)
            .then(|| wrap_text(body, system, member))
            .flatten();
        return (json.len(), marked);
    }
    let Ok(blocks) = serde_json::from_str::<Vec<&RawValue>>(json) else {
        return (json.len(), None);
    };
    let bytes = blocks.iter().map(|b| b.get().len()).sum();
    let marked = blocks
        .last()
        .filter(|b| cacheable(b))
        .and_then(|b| Some(vec![object_member(body, b, member)?]));
    (bytes, marked)
}

/// For a message `content`: the bytes from its start to the end of its last
/// block that may carry the mark, and the edits marking it.
fn mark_content(body: &[u8], content: &RawValue, member: &str) -> Option<(usize, Vec<Edit>)> {
    let json = content.get();
    if json.starts_with('"') {
        return (json != r#""""#)
            .then(|| Some((json.len(), wrap_text(body, content, member)?)))
            .flatten();
    }
    let start = offset(body, content)?.start;
    let blocks = serde_json::from_str::<Vec<&RawValue>>(json).ok()?;
    let block = blocks.iter().rev().find(|b| cacheable(b))?;
    let end = offset(body, block)?.end;
    Some((
        end.checked_sub(start)?,
        vec![object_member(body, block, member)?],
    ))
}

/// Whether a content block may carry `cache_control`: an object with a
/// `type`, not a thinking block, not an empty text.
fn cacheable(block: &RawValue) -> bool {
    if !block.get().starts_with('{') {
        return false;
    }
    let Ok(head) = serde_json::from_str::<BlockHead<'_>>(block.get()) else {
        return false;
    };
    match head.kind.as_deref() {
        None | Some("thinking" | "redacted_thinking") => false,
        Some("text") => head.text.is_none_or(|t| t.get() != r#""""#),
        Some(_) => true,
    }
}

/// `member` appended to the object `raw` (a value borrowed from `body`).
fn object_member(body: &[u8], raw: &RawValue, member: &str) -> Option<Edit> {
    let span = offset(body, raw)?;
    let close = span.end.checked_sub(1)?;
    let inner = body.get(span.start.checked_add(1)?..close)?;
    let comma = if inner.iter().any(|b| !is_ws(*b)) {
        ","
    } else {
        ""
    };
    Some(Edit {
        at: close..close,
        text: format!("{comma}{member}"),
    })
}

/// The string literal `raw` turned into a one-text-block array carrying
/// `member`; the literal's bytes stay where they are.
fn wrap_text(body: &[u8], raw: &RawValue, member: &str) -> Option<Vec<Edit>> {
    let span = offset(body, raw)?;
    Some(vec![
        Edit {
            at: span.start..span.start,
            text: TEXT_BLOCK_OPEN.into(),
        },
        Edit {
            at: span.end..span.end,
            text: format!(",{member}}}]"),
        },
    ])
}

// === Helpers ===

/// The top-level members of `body`: how many, and the values of `name`.
fn top_member<'a>(
    body: &'a [u8],
    name: &'static str,
) -> Result<(usize, Vec<&'a RawValue>), BodyError> {
    struct V(&'static str);

    impl<'a> Visitor<'a> for V {
        type Value = (usize, Vec<&'a RawValue>);

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut count, mut found) = (0usize, Vec::new());
            let names = [self.0];
            while let Some(key) = map.next_key_seed(KeyIn(&names))? {
                count += 1;
                if key.is_some() {
                    found.push(map.next_value::<&'a RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok((count, found))
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    let top = (&mut de).deserialize_map(V(name));
    top.and_then(|top| de.end().map(|()| top))
        .map_err(|e| body_error(&e, None))
}

/// The offset of the closing `}` of the top-level object.
fn closing_brace(body: &[u8]) -> Option<usize> {
    body.iter()
        .rposition(|b| !is_ws(*b))
        .filter(|&at| body.get(at) == Some(&b'}'))
}

/// The span of `raw` in `body` (it must be borrowed from it).
fn offset(body: &[u8], raw: &RawValue) -> Option<Range<usize>> {
    let text = raw.get();
    let start = text.as_ptr().addr().checked_sub(body.as_ptr().addr())?;
    let end = start.checked_add(text.len())?;
    (end <= body.len()).then_some(start..end)
}

/// `body` with `edits` (sorted, not overlapping) applied.
fn splice(body: &[u8], edits: &[Edit]) -> Option<Vec<u8>> {
    let added: usize = edits.iter().map(|e| e.text.len()).sum();
    let mut out = Vec::with_capacity(body.len().saturating_add(added));
    let mut at = 0;
    for edit in edits {
        out.extend_from_slice(body.get(at..edit.at.start)?);
        out.extend_from_slice(edit.text.as_bytes());
        at = edit.at.end;
    }
    out.extend_from_slice(body.get(at..)?);
    Some(out)
}

/// False when `body` cannot hold the key `name`: a key spelled without
/// escapes appears as is, and one spelled with escapes holds a `\u00XX`
/// escape of one of its ASCII characters (no other escape gives a letter, a
/// digit or `_`). The `\u` escapes clients write on their own are of
/// non-ASCII and control characters (`\u00e9`, `\u001b`, Python's
/// `ensure_ascii`), which this tells apart by the escape's third hex digit.
fn may_have_key(body: &[u8], name: &[u8]) -> bool {
    let high = |c: u8| b"0123456789abcdef".get(usize::from(c >> 4)).copied();
    memmem::find(body, name).is_some()
        || memmem::find_iter(body, br"\u00").any(|at| {
            let digit = body.get(at + 4).copied();
            digit.is_some() && name.iter().any(|&c| high(c) == digit)
        })
}

/// The offset of the `"` closing the string whose contents start at
/// `start`.
fn string_end(body: &[u8], mut start: usize) -> Option<usize> {
    loop {
        let at = start + memchr2(b'"', b'\\', body.get(start..)?)?;
        if body.get(at) == Some(&b'"') {
            return Some(at);
        }
        // An escape: skip the backslash and the byte after it (a `\u`'s
        // four hex digits hold neither `"` nor `\`).
        start = at + 2;
    }
}

/// Whether the raw (escaped) key `raw` decodes to the ASCII `name`.
fn key_is(raw: &[u8], name: &[u8]) -> bool {
    if raw == name {
        return true;
    }
    if raw.len() < name.len() || memchr(b'\\', raw).is_none() {
        return false;
    }
    let mut rest = raw;
    for &want in name {
        let (got, tail) = match rest {
            [b'\\', b'u', a, b, c, d, tail @ ..] => {
                let hex = [*a, *b, *c, *d];
                let unit = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u16::from_str_radix(h, 16).ok());
                match unit.and_then(|u| u8::try_from(u).ok()) {
                    Some(byte) => (byte, tail),
                    None => return false,
                }
            }
            [b'\\', escaped, tail @ ..] => (simple_escape(*escaped), tail),
            [byte, tail @ ..] => (*byte, tail),
            [] => return false,
        };
        if got != want {
            return false;
        }
        rest = tail;
    }
    rest.is_empty()
}

/// The byte a one-character escape (`\n`, `\"`, …) stands for.
fn simple_escape(c: u8) -> u8 {
    match c {
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        other => other,
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A serde_json error as a [`BodyError`]: a data error is a type error of
/// the member being read, or of the body itself.
fn body_error(e: &serde_json::Error, current: Option<(&'static str, &'static str)>) -> BodyError {
    match (e.classify(), current) {
        (Category::Data, Some((field, expected))) => BodyError::FieldType { field, expected },
        (Category::Data, None) => BodyError::NotAnObject,
        (Category::Io | Category::Syntax | Category::Eof, _) => BodyError::InvalidJson {
            message: e.to_string(),
        },
    }
}

fn internal() -> BodyError {
    BodyError::InvalidJson {
        message: "internal error: a span was not found in the body".into(),
    }
}
