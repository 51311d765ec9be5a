//! Request bodies: read what routing and budgets need, change only the bytes
//! that must change.
//!
//! Providers cache prompts by prefix, so one changed byte before the end of a
//! system prompt re-bills the whole prompt at full price. The body is
//! therefore never re-serialized: [`parse`] reads the few fields the proxy
//! needs (borrowing strings from the body where they have no escapes) and
//! records the byte spans of the top-level values it may edit; [`rewrite`]
//! splices new bytes into exactly those spans and copies everything else
//! verbatim; [`digest`] hashes the body without its `model` value.
//!
//! # What is checked
//!
//! Only what the proxy relies on. Invalid JSON (including trailing bytes after
//! the object), a body that is not a JSON object, and top-level fields the
//! proxy reads having the wrong type are [`BodyError`]s. Those fields are, per
//! endpoint:
//!
//! | endpoint | fields |
//! |---|---|
//! | chat completions | `model`, `stream`, `stream_options` (and its `include_usage`), `max_tokens`, `max_completion_tokens`, `n`, `tools`, `functions`, `messages`, `web_search_options` |
//! | responses | `model`, `stream`, `max_output_tokens`, `tools`, `instructions`, `input`, `previous_response_id`, `conversation`, `prompt` |
//! | embeddings | `model`, `input` |
//! | messages (Anthropic) | `model`, `stream`, `max_tokens`, `tools`, `system`, `messages`, `mcp_servers`, `container` |
//!
//! The members that make the provider bill input the body does not carry
//! (`previous_response_id`, `conversation`, `prompt`, `mcp_servers`,
//! `container`, `web_search_options`) are read as any JSON (only `null`,
//! or an empty list, means absent); with server-side tools in `tools` and
//! content parts that reference images, files or items by URL or id, they
//! set [`ParsedRequest::unseen_input`].
//!
//! `null` counts as absent for every one of them (`"model": null` gives
//! `model: None`, and a rewrite replaces the `null`). Every other member is
//! skipped unread and passed through byte for byte (serde_json skips values
//! iteratively: no depth limit, no stack growth with nesting).
//!
//! Inside `messages` / `input` / `system` / `instructions` extraction is best
//! effort: the texts the classifier reads are taken from the shapes the
//! providers document (string content, text parts, Anthropic `tool_result`
//! blocks, Responses `*_call_output` items) and anything else is ignored, so a
//! new content-part type never makes the proxy reject a request the provider
//! would accept. Strings holding lone UTF-16 surrogates (`"\ud83d"`, which
//! JavaScript clients produce when they cut a string inside an emoji) are
//! accepted wherever the providers' schemas put a string; the text handed to
//! the classifier has U+FFFD in their place (the body keeps them).
//!
//! # Duplicate keys
//!
//! JSON allows them; providers' parsers disagree on which one wins. A
//! duplicate of any field in the table above (including the same key spelled
//! with escapes, `"mod\u0065l"`) is rejected with [`BodyError::DuplicateKey`],
//! as a `#[derive(Deserialize)]` struct would: if the proxy rewrote one
//! `model` and the provider read the other, routing and budgets would be
//! bypassed. Duplicates of members the proxy does not read pass through.
//!
//! # Cost
//!
//! One pass of serde_json over the body; message contents are captured as
//! borrowed [`serde_json::value::RawValue`]s and decoded after (a string
//! without escapes costs a `memchr`, one with escapes a copy; an array of
//! parts is parsed once more). About 1 GB/s on escape-heavy agent bodies
//! (a 200 KB chat body in ~0.2 ms); [`parse_without_texts`] skips the
//! decoding, for when no route reads the complexity score. `rewrite` is a
//! copy with at most three splices; `digest` hashes at ~5 GB/s. See
//! `perf_parse_rewrite_digest`.
//!
//! The prompt-cache rewrites (Anthropic `cache_control` breakpoints, OpenAI
//! `prompt_cache_key`) splice the same way; see [`insert_anthropic_breakpoints`].

mod cache_edit;
mod edit;
mod extract;
mod scan;

#[cfg(test)]
mod cache_edit_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::{borrow::Cow, ops::Range};

use bytes::Bytes;
use tokenwarden_core::{classify::Role, workload::Endpoint};

pub use cache_edit::{
    BYTES_PER_TOKEN, BreakpointPlan, CacheEdit, CacheTtl, Untouched, has_key,
    insert_anthropic_breakpoints, insert_prompt_cache_key,
};

/// What the proxy reads from a request body, plus the byte spans it needs to
/// rewrite it. Strings borrow from the body unless they contain escapes.
#[derive(Clone, Debug)]
pub struct ParsedRequest<'a> {
    /// The endpoint the body was parsed for.
    pub endpoint: Endpoint,
    /// The top-level `model`; `None` when absent or `null`.
    pub model: Option<Cow<'a, str>>,
    /// The top-level `stream` (chat, responses, messages); `false` when absent.
    pub stream: bool,
    /// `stream_options.include_usage` as sent by the app (chat completions
    /// only); `None` when absent or `null`.
    pub include_usage: Option<bool>,
    /// The output-token cap: chat `max_completion_tokens` / `max_tokens` (the
    /// larger when both are sent: it is a worst case for the reservation),
    /// responses `max_output_tokens`, Anthropic `max_tokens`.
    pub max_output_tokens: Option<u64>,
    /// How many answers the request asks for, each up to
    /// `max_output_tokens`: chat `n` (1 when absent, `null` or 0). The
    /// provider bills every choice, so the worst case counts them all.
    /// The other APIs generate one answer per request.
    pub choices: u64,
    /// Tool definitions: the length of `tools` (+ the legacy chat `functions`).
    pub tool_definitions: usize,
    /// Texts for the complexity classifier, in request order: chat
    /// `messages`; Anthropic `system` then `messages` (`tool_result` texts as
    /// [`Role::Tool`]); Responses `instructions` then `input`
    /// (`*_call_output` texts as [`Role::Tool`]); embeddings `input` strings
    /// as [`Role::User`]. One entry per string content or text part.
    pub messages: Vec<(Role, Cow<'a, str>)>,
    /// Conversation entries: chat / Anthropic messages and Responses input
    /// items (a string `input` is one), not counting `system` / `developer`
    /// ones. Zero for embeddings.
    pub turns: usize,
    /// The first input the request makes the provider bill without
    /// carrying it, if any: a Responses `previous_response_id`,
    /// `conversation` or stored `prompt`, an `item_reference`; an image,
    /// file or document by URL or id; a server-side tool (web search, file
    /// search, code execution, MCP, …) or MCP servers, a container, web
    /// search options. The body's size then does not bound the prompt.
    pub unseen_input: Option<&'static str>,
    layout: Layout,
}

/// A request body the proxy cannot work with; answered with a 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not valid JSON.
    #[error("request body is not valid JSON: {message}")]
    InvalidJson {
        /// serde_json's message, with line and column.
        message: String,
    },
    /// Valid JSON, but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// A field the proxy reads has the wrong type.
    #[error("`{field}` must be {expected}")]
    FieldType {
        /// The field, e.g. `model` or `stream_options.include_usage`.
        field: &'static str,
        /// What it must be, e.g. `a string`.
        expected: &'static str,
    },
    /// A field the proxy reads appears twice (see the module docs).
    #[error("`{field}` appears more than once in the request body")]
    DuplicateKey {
        /// The field.
        field: &'static str,
    },
}

/// Where the editable parts of the body are. Offsets are into the body that
/// was parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Layout {
    /// Address and length of the parsed body: [`rewrite`] and [`digest`]
    /// given another buffer parse it again rather than trust these spans.
    body_addr: usize,
    body_len: usize,
    /// Offset of the closing `}` of the top-level object.
    close: usize,
    /// Whether the top-level object has at least one member.
    has_members: bool,
    /// The value of the top-level `model` member, if present (any type).
    model: Option<Range<usize>>,
    /// The value of `stream_options` (chat completions only), if present.
    stream_options: Option<StreamOptions>,
}

/// The layout of a `stream_options` value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StreamOptions {
    /// `null`, at this span.
    Null(Range<usize>),
    /// An object.
    Object {
        /// Offset of its closing `}`.
        close: usize,
        /// Whether it has at least one member.
        has_members: bool,
        /// The span of the `include_usage` value, if present.
        include_usage: Option<Range<usize>>,
    },
}

/// Parses a request body for `endpoint`. See the module docs for what is
/// checked.
pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<ParsedRequest<'_>, BodyError> {
    scan::parse(endpoint, body, true)
}

/// [`parse`] for when nothing reads the conversation's texts (no route looks
/// at the complexity score): the same checks, fields, spans and `turns`, but
/// [`ParsedRequest::messages`] stays empty, because message contents are
/// skipped instead of decoded. On agent contexts full of escapes, decoding
/// them is most of the parse (a 200 KB body: about a third of it).
pub fn parse_without_texts(
    endpoint: Endpoint,
    body: &[u8],
) -> Result<ParsedRequest<'_>, BodyError> {
    scan::parse(endpoint, body, false)
}

/// The body to send upstream.
///
/// - `new_model`: the value of the top-level `model` member is replaced by
///   this string (a JSON string literal written by serde_json); when the body
///   has no `model` member, `"model":…` is appended as the last member. When
///   it equals the current model nothing is changed, even if the app spelled
///   it with escapes.
/// - `ensure_include_usage` (applies to streaming chat completions only,
///   ignored otherwise): makes `stream_options.include_usage` true. Without
///   `stream_options`, `,"stream_options":{"include_usage":true}` is inserted
///   before the closing `}` of the body (no comma when the object is empty);
///   `"stream_options": null` becomes `{"include_usage":true}`; in an object,
///   an `include_usage` value other than `true` is replaced by `true`, and a
///   missing one is inserted as `,"include_usage":true` before its closing
///   `}` (its other members keep their bytes and order).
///
/// Every other byte is copied unchanged. When nothing changes, the original
/// `Bytes` is returned (a reference-count bump, no copy).
///
/// `parsed` should come from [`parse`] of this same buffer; given another
/// buffer, `rewrite` parses it again (and returns it unchanged if that fails).
#[must_use]
pub fn rewrite(
    body: &Bytes,
    parsed: &ParsedRequest<'_>,
    new_model: Option<&str>,
    ensure_include_usage: bool,
) -> Bytes {
    edit::rewrite(body, parsed, new_model, ensure_include_usage)
}

/// A 64-bit digest of the request for loop and repeated-prompt detection: a
/// hash of the body bytes with the top-level `model` value left out, so the
/// same request sent again for another model (a rerouted retry) still
/// matches. Every other byte counts, whitespace included.
///
/// The hash is std's `DefaultHasher` (SipHash-1-3 with fixed keys): stable
/// within one build of the sidecar, which is all an in-process window needs;
/// do not persist it or compare it across versions.
///
/// `parsed` should come from [`parse`] of this same buffer; given another
/// buffer, `digest` parses it again (and hashes all of it if that fails).
#[must_use]
pub fn digest(body: &[u8], parsed: &ParsedRequest<'_>) -> u64 {
    edit::digest(body, parsed)
}
