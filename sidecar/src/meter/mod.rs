//! Metering: the provider's own usage numbers, read from its responses.
//!
//! Pure and I/O-free: the proxy hands this module response bytes and gets back
//! [`TokenCounts`] in the four disjoint kinds the ledgers keep (uncached input,
//! output, cache read, cache write), plus the model that actually served.
//!
//! - [`from_json`]: a complete non-streaming JSON body.
//! - [`JsonTap`]: a non-streaming JSON body of any size, scanned chunk by
//!   chunk as it is forwarded, in constant memory; [`estimate_json`] when
//!   its usage never came.
//! - [`SseTap`]: a streaming (`text/event-stream`) body, tapped chunk by chunk
//!   while it is forwarded. It never buffers a stream whole and never breaks
//!   it: without stripping, every upstream chunk is forwarded as is (the same
//!   [`bytes::Bytes`], zero-copy) before it is even parsed.
//! - [`estimate_cut_stream`]: the estimated usage of a stream that ended
//!   before the provider reported its final usage.
//!
//! # Using the tap
//!
//! ```ignore
//! let mut tap = SseTap::new(Flavor::OpenAiChat, /* strip_usage */ proxy_added_include_usage);
//! let mut out = Vec::new();
//! while let Some(chunk) = upstream.next().await {
//!     tap.push(chunk?, &mut out);
//!     for bytes in out.drain(..) {
//!         client.send(bytes).await?;
//!     }
//! }
//! let outcome = tap.finish(&mut out); // forward `out` too
//! let (usage, estimated) = match outcome.usage {
//!     Some(usage) => (usage, false), // exact, even if `complete` is false
//!     None => (estimate_cut_stream(flavor, reserved_input, &outcome), true),
//! };
//! ```
//!
//! # Provider usage → [`TokenCounts`]
//!
//! | flavor | uncached input | cache read | cache write | output |
//! |---|---|---|---|---|
//! | OpenAI chat | `prompt_tokens − prompt_tokens_details.cached_tokens` | `cached_tokens` | 0 | `completion_tokens` |
//! | OpenAI Responses | `input_tokens − input_tokens_details.cached_tokens` | `cached_tokens` | 0 | `output_tokens` |
//! | OpenAI embeddings | `prompt_tokens` | 0 | 0 | 0 |
//! | Anthropic | `input_tokens` | `cache_read_input_tokens` | `cache_creation_input_tokens` | `output_tokens` |
//!
//! OpenAI's input counts *include* its cached tokens (the subtraction
//! saturates at 0); Anthropic's `input_tokens` already *excludes* both cache
//! kinds. Missing or `null` counts are 0. Reasoning tokens are part of the
//! output counts of both providers.

mod decode;
mod facts;
mod json;
mod json_tap;
mod sse;
mod strip;

#[cfg(test)]
mod tests;

pub use decode::{Coding, Decoder, decode_all};
pub use facts::ResponseFacts;
pub use json_tap::{JsonOutcome, JsonTap, MAX_CAPTURE_BYTES, estimate as estimate_json};
pub use sse::{MAX_EVENT_BYTES, SseTap, TapOutcome};
pub use tokenwarden_core::tokens::TokenCounts;

/// The wire format of an upstream API, which decides where its usage lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// OpenAI `POST /v1/chat/completions` (and compatible servers).
    OpenAiChat,
    /// OpenAI `POST /v1/responses`.
    OpenAiResponses,
    /// OpenAI `POST /v1/embeddings` (never streamed).
    OpenAiEmbeddings,
    /// Anthropic `POST /v1/messages`.
    Anthropic,
}

/// Usage read from a complete response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metered {
    /// The four disjoint token kinds the provider billed.
    pub usage: TokenCounts,
    /// The model the provider says served the request (its top-level
    /// `model`), when present and non-empty.
    pub served_model: Option<String>,
}

/// Why a response body could not be metered.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    /// The body is not JSON at all (or is truncated).
    #[error("response body is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// The body is a JSON object but its `usage` (or `model`) has an
    /// unexpected shape, e.g. a token count that is a string or negative.
    #[error("response usage has an unexpected shape: {0}")]
    BadUsage(#[source] serde_json::Error),
}

/// Parses a complete non-streaming JSON response body.
///
/// Returns `Ok(None)` when the body is JSON but carries no usage (no `usage`
/// member, `"usage": null`, an error object, or a JSON value that is not an
/// object). Only `model` and `usage` are deserialized; everything else is
/// skipped without allocating.
pub fn from_json(flavor: Flavor, body: &[u8]) -> Result<Option<Metered>, MeterError> {
    json::from_json(flavor, body)
}

/// The estimated usage of a stream that ended before its final usage event
/// (a cut connection, a client that went away, a provider error mid-stream).
///
/// The rule, applied in this order:
///
/// - **Input and cache kinds**: the provider's own numbers when it reported
///   any — `outcome.usage` (the final usage event, which may have arrived even
///   though the terminal event did not), or for Anthropic `outcome.start_usage`
///   (`message_start` reports the exact input and cache numbers before any
///   output). Otherwise all of `reserved_input_tokens_estimate` is counted as
///   uncached input and both cache kinds are 0 (caching can only lower the
///   price, so this never under-counts).
/// - **Output**: `max(reported output, ceil(output_text_bytes / 4))` — the
///   provider's (cumulative) output count if it reported one, but never less
///   than one token per four bytes of generated text seen (text, refusal,
///   tool-call arguments and reasoning deltas).
///
/// Callers should prefer `outcome.usage` verbatim when it is `Some`: every
/// flavor sends its final usage only after generation has ended, so it is
/// exact even if the terminal event (`[DONE]`, `message_stop`) was lost.
pub fn estimate_cut_stream(
    flavor: Flavor,
    reserved_input_tokens_estimate: u64,
    outcome: &TapOutcome,
) -> TokenCounts {
    let reported = match flavor {
        Flavor::Anthropic => outcome.usage.or(outcome.start_usage),
        Flavor::OpenAiChat | Flavor::OpenAiResponses | Flavor::OpenAiEmbeddings => outcome.usage,
    };
    let from_text = outcome.output_text_bytes.div_ceil(4);
    match reported {
        Some(usage) => TokenCounts {
            output_tokens: usage.output_tokens.max(from_text),
            ..usage
        },
        None => TokenCounts {
            input_tokens: reserved_input_tokens_estimate,
            output_tokens: from_text,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
        },
    }
}
