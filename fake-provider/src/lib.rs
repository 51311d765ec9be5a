//! A fake LLM provider: a local, deterministic stand-in for the OpenAI and Anthropic HTTP APIs.
//!
//! Tests, the demo and the benchmarks point tokenwarden's sidecar at it instead of a real
//! provider. It speaks HTTP/1.1 (keep-alive) and h2c (HTTP/2 with prior knowledge) on
//! `127.0.0.1`, needs no network, and every number it reports is a pure function of the request,
//! so a test can predict usage exactly and check that a proxy metered what the provider billed.
//!
//! Start it in-process with [`FakeProvider::start`] or as the `tokenwarden-fake-provider` binary
//! (`--listen 127.0.0.1:0` prints `listening on 127.0.0.1:PORT` as its first stdout line).
//!
//! # Endpoints
//!
//! | Method + path | Provider | Notes |
//! |---|---|---|
//! | `POST /v1/chat/completions` | OpenAI | JSON or SSE (`"stream": true`) |
//! | `POST /v1/responses` | OpenAI | JSON or SSE with `event:` lines |
//! | `POST /v1/embeddings` | OpenAI | `input` string / strings / token ids; `dimensions` (default 8); `encoding_format: "base64"` |
//! | `GET /v1/models`, `GET /v1/models/{id}` | OpenAI | Anthropic's list shape when the request carries `x-api-key` and no `authorization` |
//! | `POST /v1/messages` | Anthropic | JSON or SSE; requires `model`, `messages`, `max_tokens` like the real API |
//! | `POST /v1/messages/count_tokens` | Anthropic | `{"input_tokens": N}`, not billed |
//! | `GET /_fake/log`, `DELETE /_fake/log` | fake | the request log as JSON ([`LoggedRequest`] array) / clear it |
//! | `GET /_fake/usage`, `DELETE /_fake/usage` | fake | [`FakeProvider::usage_totals`] as JSON / reset them |
//! | `GET /_fake/cache`, `DELETE /_fake/cache` | fake | `{"entries": N}` ([`FakeProvider::cache_entries`]) / empty the prompt cache ([`FakeProvider::clear_cache`]) |
//! | `GET /_fake/health` | fake | `ok` |
//! | anything else | | 404 in OpenAI's error shape (Anthropic's under `/v1/messages`) |
//!
//! Query strings are ignored for routing (the Anthropic SDK's `?beta=true` works).
//!
//! # Authentication
//!
//! OpenAI routes need `Authorization: Bearer <openai_key>` (default `sk-fake-openai`); Anthropic
//! routes need `x-api-key: <anthropic_key>` (default `sk-fake-anthropic`) and then an
//! `anthropic-version` header. A missing/wrong key is a 401 in the provider's error shape
//! (OpenAI: `invalid_request_error`, code `invalid_api_key` when wrong; Anthropic:
//! `authentication_error`); a missing `anthropic-version` is a 400 `invalid_request_error`.
//! So a test can prove the proxy injected the real key. `/_fake/*` needs no key.
//!
//! # Usage arithmetic (what the fake bills and reports)
//!
//! - **Input**: `T = ceil(request body bytes / 4) + X`, where `X` is `x-fake-extra-input-tokens`
//!   (default 0): input the proxy cannot see in the body (`previous_response_id`, file ids, image
//!   URLs). Without `X`, `T <= body bytes` always.
//!   - **Cache reads and writes** (`R`, `W`) come from the simulated prompt cache (see "Prompt
//!     cache"), which keeps `R + W <= T`, unless a request carries `x-fake-cached-tokens` or
//!     `x-fake-cache-write-tokens`: then those knobs give them (`R = K`, `W` as given, each 0 when
//!     absent) and the simulated cache is neither read nor written for that request.
//!   - OpenAI: `prompt_tokens = T` (`input_tokens` in Responses, `prompt_tokens = total_tokens`
//!     for embeddings); `cached_tokens = min(R, T)`, *included* in `T`; no writes (OpenAI
//!     reports none; `x-fake-cache-write-tokens` is ignored there).
//!   - Anthropic: `cache_read_input_tokens = R`, `cache_creation_input_tokens = W`, both
//!     *excluded*: `input_tokens = max(T - R - W, 0)` (so knob values beyond T inflate the billed
//!     input). `cache_creation` splits `W` into `ephemeral_5m_input_tokens` and
//!     `ephemeral_1h_input_tokens` (knob writes are all 5-minute ones); streams report the same
//!     numbers in `message_start`.
//!   - Embeddings have no cache.
//!   - `count_tokens` answers `ceil(body bytes / 4)`: what the body shows, without `X`.
//! - **Output**: `O = min(max, N)` where `max` is the first of `max_tokens`,
//!   `max_completion_tokens`, `max_output_tokens` present in the body (1000 when none, except
//!   Anthropic `/v1/messages`, which requires `max_tokens`) and `N` is the configured output length
//!   (default 40; header `x-fake-output-tokens: N` overrides). When `max < N` the response is
//!   truncated: `finish_reason: "length"` (chat), `stop_reason: "max_tokens"` (Anthropic),
//!   `status: "incomplete"` + `incomplete_details.reason: "max_output_tokens"` and a final
//!   `response.incomplete` event instead of `response.completed` (Responses, as the real API).
//!   `N` is at most 1,000,000 (9–10 bytes of text per token: a 200k-token chat completion is a
//!   1.9 MB body; it needs `max_completion_tokens` too, the cap being 1000 without it).
//! - **Choices** (chat only): the body's `n` (1..=128; absent or null = 1; anything else is
//!   OpenAI's 400 with `param: "n"`, code `integer_below_min_value` / `integer_above_max_value` /
//!   `invalid_type`) gives `n` choices, indexes `0..n`, each with the same text and finish reason;
//!   billed output is `O × n` (`completion_tokens`, [`UsageReport::output`]). Streams send, for
//!   the role, every delta step and the finish, one chunk per choice index (index order); the
//!   pause of `x-fake-chunk-delay-ms` goes between delta steps.
//! - **Text**: `O` words `tok0 tok1 … tok{O-1}`, one word per output token. Streams split it into
//!   `min(x-fake-chunks (default 8), O)` deltas of consecutive words that concatenate back to the
//!   text; `x-fake-chunk-delay-ms: D` (default 0) pauses `D` ms between consecutive deltas (so a
//!   stream takes about `(chunks - 1) * D` ms).
//! - **Model**: the response's `model` echoes the request's `model`, unless
//!   `x-fake-served-model: NAME` is given.
//! - OpenAI chat streaming: without `stream_options.include_usage` chunks have no `usage` field at
//!   all (the request is still billed: the log marks it `usage_in_body: false`). With it, every
//!   chunk has `"usage": null` and one extra final chunk with `"choices": []` and the full `usage`
//!   comes right before `data: [DONE]`. Like the real API, `stream_options` on a non-streaming
//!   chat request is a 400. Content deltas carry an `obfuscation` filler field (as OpenAI's do since
//!   2025) unless `stream_options.include_obfuscation` is `false`.
//!
//! # Faults (request headers; a proxy forwards them from the app)
//!
//! | Header | Effect |
//! |---|---|
//! | `x-fake-fault: 429` (any 400–599, e.g. 500, 502, 503, 529) | that status with the provider's error body; 429 also sets `retry-after: 1` |
//! | `x-fake-fault: garbage` | 200, `content-type: text/html`, body `<html>oops` |
//! | `x-fake-fault: cut` | streams: about half of the events (never the usage / `[DONE]` / final event), then the connection is dropped; non-stream: the full `content-length`, half the JSON body, then dropped |
//! | `x-fake-fault: slow-head:MS` | sleep MS ms before the response head, then a normal response |
//! | `x-fake-fault: close` | the connection is closed without any response |
//! | `x-fake-fault: stall:MS` | a normal, billed response delivered in two parts with a pause of MS ms: non-stream: the full `content-length`, the first half of the body bytes, the pause, the rest; streams: about half of the events (as `cut`), the pause, the rest |
//! | `x-fake-fault: no-usage` | a normal 200, billed (`usage_in_body: false`, counted in `hidden_usage_requests`) but without any usage: JSON bodies (chat, responses, embeddings, messages) have no `usage` member; chat streams have no usage chunk and no `"usage": null` even with `include_usage`; Responses events (`response.completed` included) have no `usage`; Anthropic `message_start` / `message_delta` have no `usage` |
//! | `x-fake-fault: echo-key` | a misbehaving gateway: 400 in the provider's error shape whose message contains the raw credential header value (`Authorization` on OpenAI routes, e.g. `Bearer sk-…`; `x-api-key` on Anthropic routes), also echoed as response header `x-echo-credential`; not billed |
//! | `x-fake-fail-models: gpt-5-mini=503,claude-haiku-4-5=429` | requests whose body `model` equals one of these get that fault (any fault value works, e.g. `gpt-5=cut`, `gpt-5=stall:500`, `gpt-5=no-usage`); `x-fake-fault` wins when both apply |
//! | `x-fake-fault-times: K` + `x-fake-key: ID` | the fault (header or model) applies only to the first K requests carrying that ID; later ones are normal. Without `x-fake-key` the ID is the empty string |
//!
//! Faults are applied after authentication, header and body validation, so a 401/400 still wins.
//! Model-level faults can also be configured at start ([`FakeConfig::fail_models`],
//! `--fail-models`); header entries are checked first. The log labels are the header values
//! (`"503"`, `"cut"`, `"slow-head:200"`, `"stall:200"`, `"no-usage"`, `"echo-key"`, …).
//!
//! # Other knobs
//!
//! | Header | Effect |
//! |---|---|
//! | `x-fake-output-tokens: N` | output length `N` before `max_tokens` capping (0..=1,000,000; default [`FakeConfig::output_tokens`]) |
//! | `x-fake-chunks: C` | deltas per stream (default [`FakeConfig::chunks`]) |
//! | `x-fake-chunk-delay-ms: D` | pause between stream deltas (default [`FakeConfig::chunk_delay_ms`]) |
//! | `x-fake-cached-tokens: K`, `x-fake-cache-write-tokens: W` | cache reads / writes, replacing the simulated prompt cache for this request (see the usage arithmetic) |
//! | `x-fake-extra-input-tokens: X` | adds `X` (0..=10^12) to the billed input of chat, responses, embeddings and Anthropic messages (`prompt_tokens` / `input_tokens`, [`UsageReport::input_total`]); not to `count_tokens` |
//! | `x-fake-served-model: NAME` | the `model` the response reports (and bills under) |
//! | `x-fake-encoding: CODING` (`gzip`, `deflate`, `br`, `zstd`, `identity`, `x-unknown`) | every provider response body (JSON and SSE; success, error and fault bodies, 401s included) in that content coding whatever `accept-encoding` said, with `content-encoding: CODING`. `deflate` is the zlib format (RFC 9110); `identity`: no header, no coding; `x-unknown`: `content-encoding: x-unknown` on the plain bytes (a coding nobody can decode). Whole bodies: the compressed bytes with their `content-length` (`cut` / `stall` split the compressed bytes). Streams: chunked, compressed incrementally with a flush after every event (deflate sync flush, brotli flush, zstd block flush) so each event decodes as it arrives; pauses still apply; a cut stream lacks the coding's trailer. Billing is unchanged |
//!
//! | `x-fake-answer: KIND` | a scripted answer, written over a non-streaming JSON answer (streams are unchanged; usage is never changed): `empty` (chat `content: ""`; Responses one `output_text` of `""`; Anthropic `content: []`), `refusal` (chat `content: null` + `refusal`; Responses a `refusal` content part; Anthropic `stop_reason: "refusal"`), `truncated` (cut by the model's own limit: chat `finish_reason: "length"`; Responses `status: "incomplete"`, `incomplete_details.reason: "max_output_tokens"`; Anthropic `stop_reason: "model_context_window_exceeded"`), `text:TEXT` (the answer's text is TEXT), `tool:NAME:ARGS` (one call of tool NAME: chat `tool_calls[0].function.arguments` = ARGS and `finish_reason: "tool_calls"`; Responses a `function_call` item; Anthropic a `tool_use` block whose `input` is ARGS parsed as JSON, or the string ARGS when it is not JSON, and `stop_reason: "tool_use"`) |
//! | `x-fake-chunked: 1` | a successful whole JSON body is sent without a `content-length` (chunked on HTTP/1.1), in frames of 64 KiB; streams, errors and `cut` / `stall` bodies are unchanged |
//! | `x-fake-answer-model: MODEL` | `x-fake-answer` applies only to requests whose body `model` is MODEL (the others answer normally) |
//!
//! A malformed `x-fake-*` value is a 400 naming the header (not encoded).
//!
//! # Prompt cache
//!
//! The fake simulates each provider's prompt cache as documented, so a proxy's tests and the
//! demo see real cache behaviour: reads only of byte-identical prefixes, writes where the
//! provider writes, minimum lengths, TTLs. It is on by default ([`FakeConfig::prompt_cache`];
//! `--no-prompt-cache` turns it off, leaving only the knobs).
//!
//! **Blocks and tokens.** A prompt is a sequence of *blocks*: JSON values of the request body,
//! taken as their raw bytes exactly as sent (never re-serialized). The tokens of the prefix up to
//! and including block `i` are `floor(sum of those blocks' byte lengths / 4)` (a block's
//! `cache_control` member counts in its bytes like any other). The blocks are inside the body,
//! so reads plus writes never exceed `T`, and the uncached input is `T - reads - writes`.
//!
//! **Anthropic** (`POST /v1/messages`), after
//! <https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching>:
//! - Blocks in render order: each `tools[]` entry, then `system` (a string is one block, an array
//!   one block per element), then each message's `content` (a string is one block, an array one
//!   block per element).
//! - Breakpoints are blocks with a `cache_control` member (`{"type": "ephemeral"}`, optional
//!   `"ttl": "5m"` (default) or `"1h"`). A top-level `cache_control` (automatic caching) puts a
//!   breakpoint on the last block. Validated with the body, before faults, each a 400
//!   `invalid_request_error` with the API's message: a `type` other than `ephemeral`, a `ttl`
//!   other than `5m`/`1h`, more than 4 breakpoints ("A maximum of 4 blocks with cache_control may
//!   be provided. Found N."), a 1-hour breakpoint after a 5-minute one in render order (longer
//!   TTLs must come first), a top-level `ttl` differing from the one already on the last block.
//! - What is cached is the content: a block's hash leaves out its `cache_control` member (so
//!   moving the breakpoint along a conversation does not change the prefix) and includes its
//!   section and, for a message's first block, the message's `role`. An entry is keyed by (API
//!   key, served model, hash of every block up to and including the breakpoint's).
//! - Minimum cacheable length per model ([`ANTHROPIC_MIN_TOKENS`], with its source; 1,024 for
//!   models it does not name): a breakpoint whose prefix has fewer tokens caches nothing, without
//!   an error.
//! - Lookup: for each breakpoint, the breakpoint's position and up to 20 blocks before it (the
//!   documented automatic lookback) are checked for a live entry; the read is the longest prefix
//!   found (`cache_read_input_tokens`). Writes (`cache_creation_input_tokens`) are the tokens from
//!   the end of the read prefix to the last breakpoint at or above the minimum (0 when all of it
//!   was read); the tokens of each segment go to the TTL of the breakpoint that ends it (the
//!   `ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens` split, as the docs' mixed-TTL
//!   billing), and an entry is written at every such breakpoint.
//! - TTL: 5 minutes or 1 hour from the last use: "the cache is refreshed for no additional cost
//!   each time the cached content is used", so a read refreshes the entry it hit.
//! - Simplifications: string and `[{"type":"text",…}]` content are different bytes, hence
//!   different prefixes; every block is cacheable (thinking blocks too); no `cache-diagnosis`.
//!
//! **OpenAI** (chat completions and responses), after
//! <https://platform.openai.com/docs/guides/prompt-caching>:
//! - Automatic, no markup. The prompt is the concatenated raw bytes of each `tools[]` entry then
//!   each `messages[]` entry (chat), or of each `tools[]` entry, `instructions`, then each
//!   `input` item (a string `input` is one block) (responses).
//! - Cached only from 1,024 tokens, in 128-token steps: `cached_tokens` is the largest `L` in
//!   1024, 1152, 1280, … with `L` at most the prompt's tokens whose first `L` tokens (first `4L`
//!   bytes) equal those of a prompt seen before by the same (API key, served model,
//!   `prompt_cache_key`) within its TTL. A billed request remembers its prefix at every such step.
//! - `prompt_cache_key`, when present, is part of the key: OpenAI combines it with the prefix
//!   hash to route requests, so requests with different keys are not guaranteed to share a cache;
//!   the fake makes them never share one.
//! - TTL: 5 minutes after the last use (the docs say 5 to 10 minutes of inactivity, up to an hour
//!   off-peak; the fake takes the short end); `prompt_cache_retention: "24h"` (extended
//!   retention) keeps the entries 24 hours. Any other value than `"in_memory"` / `"24h"` is
//!   OpenAI's 400 (`param: "prompt_cache_retention"`, code `invalid_value`).
//!
//! **Both.** Entries are written (and refreshed) only when the response is billed: not for
//! errors, error-like faults or cut responses (a stalled or `no-usage` response is billed).
//! [`FakeConfig::cache_ttl_override`] (`--cache-ttl-ms`) replaces every TTL, so tests can see an
//! entry expire. The cache holds at most [`MAX_CACHE_ENTRIES`] entries (a 128-bit hash and an
//! expiry each, never prompt text); when full, expired entries are dropped, then the tenth that
//! expire soonest. `DELETE /_fake/cache`, [`FakeProvider::clear_cache`] and
//! [`FakeProvider::reset`] empty it.
//!
//! # Request log and usage totals
//!
//! Every provider request (not `/_fake/*`) is recorded as a [`LoggedRequest`]: method, path,
//! headers (lowercase name → value), body, response status (`None` for `close`), the usage the
//! fake billed ([`UsageReport`]; `None` for errors, error-like faults (status, `garbage`,
//! `close`, `echo-key`), cut responses and free endpoints), whether the usage was visible in the
//! response and whether the response was cut. [`FakeProvider::log`] / `GET /_fake/log` return it;
//! [`FakeConfig::log`] = `false` (`--no-log`) turns it off for benchmarks (the log is otherwise
//! unbounded). [`FakeProvider::usage_totals`] / `GET /_fake/usage` sum the billed usage per served
//! model (always on, log or not); a cut response bills nothing and counts in `cut_requests`.
//!
//! # The binary
//!
//! `tokenwarden-fake-provider [--listen 127.0.0.1:0] [--output-tokens 40] [--chunks 8] [--chunk-delay-ms 0]
//! [--openai-key K] [--anthropic-key K] [--fail-models SPEC] [--no-prompt-cache] [--cache-ttl-ms MS]
//! [--no-log] [--threads N]` (each also as `FAKE_PROVIDER_*` env var, e.g.
//! `FAKE_PROVIDER_NO_PROMPT_CACHE`, `FAKE_PROVIDER_CACHE_TTL_MS`); SIGINT/SIGTERM stop it.
//!
//! Responses carry `x-request-id` (OpenAI routes) or `request-id` (Anthropic routes).
//!
//! # Simplifications
//!
//! Chat's `n` choices all carry the same text (the other APIs have one output); no tool calls
//! (but a scripted `x-fake-answer: tool:…`), no reasoning tokens, no audio; `created` is the wall clock; ids are `chatcmpl-fake…`,
//! `resp_fake…`, `msg_fake…` from a counter; any model name is accepted; request bodies are only
//! checked for the fields the fake needs.

mod answer;
mod anthropic;
mod body;
mod cache;
mod encoding;
mod knobs;
mod openai;
mod prompt;
mod reply;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use cache::{
    ANTHROPIC_DEFAULT_MIN_TOKENS, ANTHROPIC_MIN_TOKENS, MAX_CACHE_ENTRIES, anthropic_min_tokens,
};

use body::FakeBody;
use cache::{CacheUse, PromptCache, Scope};
use encoding::Encoding;
use knobs::{Fault, Knobs};
use reply::{JSON, Reply};
use text::Words;

/// Start-time settings. Per-request headers override the output shape.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The only OpenAI key accepted (`Authorization: Bearer …`).
    pub openai_key: String,
    /// The only Anthropic key accepted (`x-api-key`).
    pub anthropic_key: String,
    /// Output tokens per response before `max_tokens` capping (`x-fake-output-tokens`); at most
    /// 1,000,000 ([`FakeProvider::start`] refuses more).
    pub output_tokens: u64,
    /// Deltas per stream (`x-fake-chunks`).
    pub chunks: usize,
    /// Pause between stream deltas (`x-fake-chunk-delay-ms`).
    pub chunk_delay_ms: u64,
    /// Keep the request log (turn off for benchmarks).
    pub log: bool,
    /// Model-level faults, `x-fake-fail-models` syntax (`gpt-5-mini=503,claude-haiku-4-5=429`).
    pub fail_models: String,
    /// Simulate the providers' prompt caches (see "Prompt cache"); `false` (`--no-prompt-cache`):
    /// cache reads and writes come only from the `x-fake-cached-tokens` /
    /// `x-fake-cache-write-tokens` knobs.
    pub prompt_cache: bool,
    /// Replaces every cache TTL (Anthropic's 5 minutes and 1 hour, OpenAI's 5 minutes and 24
    /// hours), so a test can watch an entry expire (`--cache-ttl-ms`).
    pub cache_ttl_override: Option<Duration>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            openai_key: "sk-fake-openai".into(),
            anthropic_key: "sk-fake-anthropic".into(),
            output_tokens: 40,
            chunks: 8,
            chunk_delay_ms: 0,
            log: true,
            fail_models: String::new(),
            prompt_cache: true,
            cache_ttl_override: None,
        }
    }
}

/// The usage the fake billed for one request, in tokenwarden's terms.
///
/// `input_total` is every input token billed: OpenAI `prompt_tokens` (which includes
/// `cache_read`); Anthropic `input_tokens + cache_read + cache_write`. Uncached input is
/// `input_total - cache_read - cache_write` for both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The served model (the `model` in the response).
    pub model: String,
    pub input_total: u64,
    pub output: u64,
    pub cache_read: u64,
    /// Cache writes, all TTLs (Anthropic `cache_creation_input_tokens`).
    pub cache_write: u64,
    /// The part of `cache_write` written with a 1-hour TTL (Anthropic
    /// `cache_creation.ephemeral_1h_input_tokens`; 0 for OpenAI).
    #[serde(default)]
    pub cache_write_1h: u64,
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// Lowercase header name → value (repeated headers joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// The request body (JSON: a UTF-8 string, lossy).
    #[serde(with = "body_as_text")]
    pub body: Bytes,
    /// `openai.chat`, `openai.responses`, `openai.embeddings`, `openai.models`,
    /// `anthropic.messages`, `anthropic.count_tokens`, `anthropic.models` or `not_found`.
    pub api: String,
    /// The `model` of the request body, when it had one.
    pub model: Option<String>,
    /// The request asked for a stream.
    pub stream: bool,
    /// The response status; `None` when the connection was closed without a response.
    pub status: Option<u16>,
    /// The fault applied (`"503"`, `"cut"`, `"slow-head:200"`, `"stall:200"`, `"no-usage"`,
    /// `"echo-key"`, …).
    pub fault: Option<String>,
    /// What the fake billed; `None` for errors, faults, cut responses and free endpoints.
    pub usage: Option<UsageReport>,
    /// The usage appeared in the response (false for an OpenAI chat stream without
    /// `include_usage` and for the `no-usage` fault: billed, but invisible to the client).
    pub usage_in_body: bool,
    /// The response was cut on purpose (`x-fake-fault: cut`).
    pub cut: bool,
}

impl LoggedRequest {
    /// A request header by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body parsed as JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

mod body_as_text {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(body))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(String::deserialize(d)?))
    }
}

/// Totals of the usage the fake billed for one served model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedUsage {
    /// Requests billed (successful, not cut).
    pub requests: u64,
    pub input_total: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    /// The 1-hour part of `cache_write`.
    #[serde(default)]
    pub cache_write_1h: u64,
    /// Responses cut on purpose: they report (and bill) nothing.
    pub cut_requests: u64,
    /// Billed requests whose response did not show the usage (chat stream without
    /// include_usage, `no-usage` fault).
    pub hidden_usage_requests: u64,
}

/// A running fake provider; stops (closing its connections) when dropped.
pub struct FakeProvider {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeProvider {
    /// Binds `127.0.0.1:0` and serves in a tokio task.
    pub async fn start(cfg: FakeConfig) -> io::Result<FakeProvider> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// Binds `addr` and serves in a tokio task.
    pub async fn start_on(addr: SocketAddr, cfg: FakeConfig) -> io::Result<FakeProvider> {
        let fail_models = knobs::parse_fail_models(&cfg.fail_models)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if cfg.output_tokens > knobs::MAX_OUTPUT_TOKENS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("output_tokens: at most {}", knobs::MAX_OUTPUT_TOKENS),
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(cfg, fail_models));
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(FakeProvider { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash, no `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of the request log, oldest first.
    pub fn log(&self) -> Vec<LoggedRequest> {
        lock(&self.state.log).clone()
    }

    pub fn clear_log(&self) {
        lock(&self.state.log).clear();
    }

    /// Billed usage per served model.
    pub fn usage_totals(&self) -> BTreeMap<String, ReportedUsage> {
        self.state.usage_totals()
    }

    /// Clears the log, the usage totals, the `x-fake-fault-times` counters and the prompt cache.
    pub fn reset(&self) {
        lock(&self.state.log).clear();
        lock(&self.state.usage).clear();
        lock(&self.state.fault_counts).clear();
        self.state.cache.clear();
    }

    /// Empties the simulated prompt cache (`DELETE /_fake/cache`).
    pub fn clear_cache(&self) {
        self.state.cache.clear();
    }

    /// Entries the simulated prompt cache holds (expired ones included until evicted).
    pub fn cache_entries(&self) -> usize {
        self.state.cache.len()
    }

    /// Stops accepting and closes every open connection.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) struct State {
    pub cfg: FakeConfig,
    fail_models: Vec<(String, Fault)>,
    pub words: Words,
    seq: AtomicU64,
    log: Mutex<Vec<LoggedRequest>>,
    usage: Mutex<HashMap<String, ReportedUsage>>,
    fault_counts: Mutex<HashMap<String, u64>>,
    cache: PromptCache,
    openai_models: Bytes,
    anthropic_models: Bytes,
}

impl State {
    fn new(cfg: FakeConfig, fail_models: Vec<(String, Fault)>) -> State {
        State {
            words: Words::new(cfg.output_tokens.clamp(1024, text::PRECOMPUTED_WORDS)),
            cache: PromptCache::new(cfg.cache_ttl_override),
            cfg,
            fail_models,
            seq: AtomicU64::new(1),
            log: Mutex::new(Vec::new()),
            usage: Mutex::new(HashMap::new()),
            fault_counts: Mutex::new(HashMap::new()),
            openai_models: openai::models_list(),
            anthropic_models: anthropic::models_list(),
        }
    }

    fn usage_totals(&self) -> BTreeMap<String, ReportedUsage> {
        lock(&self.usage)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// True when the fault applies to this request (counts it against `x-fake-fault-times`).
    fn fault_applies(&self, knobs: &Knobs) -> bool {
        let Some(times) = knobs.fault_times else {
            return true;
        };
        let mut counts = lock(&self.fault_counts);
        let seen = counts.entry(knobs.fault_key.clone()).or_insert(0);
        *seen += 1;
        *seen <= times
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    // Owning the connection tasks here means aborting this task closes them all.
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // Out of file descriptors and the like: back off a little.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let builder = Arc::clone(&builder);
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Which provider's conventions (auth, error shape) a route follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    OpenAi,
    Anthropic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Chat,
    Responses,
    Embeddings,
    OpenAiModels,
    OpenAiModel(String),
    Messages,
    CountTokens,
    AnthropicModels,
    NotFound(Provider),
}

impl Route {
    fn of(method: &Method, path: &str, headers: &HeaderMap) -> Route {
        let anthropic_caller =
            headers.contains_key("x-api-key") && !headers.contains_key("authorization");
        match (method, path) {
            (&Method::POST, "/v1/chat/completions") => Route::Chat,
            (&Method::POST, "/v1/responses") => Route::Responses,
            (&Method::POST, "/v1/embeddings") => Route::Embeddings,
            (&Method::POST, "/v1/messages") => Route::Messages,
            (&Method::POST, "/v1/messages/count_tokens") => Route::CountTokens,
            (&Method::GET, "/v1/models") if anthropic_caller => Route::AnthropicModels,
            (&Method::GET, "/v1/models") => Route::OpenAiModels,
            (&Method::GET, p) if p.starts_with("/v1/models/") && !anthropic_caller => {
                Route::OpenAiModel(p["/v1/models/".len()..].to_string())
            }
            (_, p) if p.starts_with("/v1/messages") || anthropic_caller => {
                Route::NotFound(Provider::Anthropic)
            }
            _ => Route::NotFound(Provider::OpenAi),
        }
    }

    fn provider(&self) -> Provider {
        match self {
            Route::Messages | Route::CountTokens | Route::AnthropicModels => Provider::Anthropic,
            Route::NotFound(p) => *p,
            _ => Provider::OpenAi,
        }
    }

    fn api(&self) -> &'static str {
        match self {
            Route::Chat => "openai.chat",
            Route::Responses => "openai.responses",
            Route::Embeddings => "openai.embeddings",
            Route::OpenAiModels | Route::OpenAiModel(_) => "openai.models",
            Route::Messages => "anthropic.messages",
            Route::CountTokens => "anthropic.count_tokens",
            Route::AnthropicModels => "anthropic.models",
            Route::NotFound(_) => "not_found",
        }
    }

    fn has_json_body(&self) -> bool {
        matches!(
            self,
            Route::Chat
                | Route::Responses
                | Route::Embeddings
                | Route::Messages
                | Route::CountTokens
        )
    }
}

/// The fields of a request body the fake looks at.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Fields {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub messages: Option<serde::de::IgnoredAny>,
    /// Chat completions: the number of choices (checked by [`Fields::choices`]).
    #[serde(default)]
    pub n: Option<serde_json::Value>,
    /// OpenAI: `"in_memory"` or `"24h"` (checked by [`Fields::retention_24h`]).
    #[serde(default)]
    pub prompt_cache_retention: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
    #[serde(default)]
    pub include_obfuscation: Option<bool>,
}

impl Fields {
    pub(crate) fn max_tokens(&self) -> Option<u64> {
        self.max_tokens
            .or(self.max_completion_tokens)
            .or(self.max_output_tokens)
    }

    pub(crate) fn streaming(&self) -> bool {
        self.stream == Some(true)
    }

    /// OpenAI's `prompt_cache_retention`: `"24h"` is true; absent, null or `"in_memory"` false;
    /// anything else OpenAI's 400 message.
    pub(crate) fn retention_24h(&self) -> Result<bool, String> {
        match &self.prompt_cache_retention {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(v) => match v.as_str() {
                Some("in_memory") => Ok(false),
                Some("24h") => Ok(true),
                _ => Err(format!(
                    "Invalid value: {}. Supported values are: 'in_memory' and '24h'.",
                    match v.as_str() {
                        Some(s) => format!("'{s}'"),
                        None => v.to_string(),
                    }
                )),
            },
        }
    }

    /// Chat's `n` (absent or null: 1), or OpenAI's error message and code for a value
    /// outside `1..=128` (a 400 on param `n`).
    pub(crate) fn choices(&self) -> Result<u64, (String, &'static str)> {
        const MAX_N: i64 = 128;
        let n = match &self.n {
            None | Some(serde_json::Value::Null) => return Ok(1),
            Some(v) => v,
        };
        match n.as_i64() {
            Some(n) if n < 1 => Err((
                format!(
                    "Invalid 'n': integer below minimum value. Expected a value >= 1, but got {n} instead."
                ),
                "integer_below_min_value",
            )),
            Some(n) if n <= MAX_N => Ok(n.unsigned_abs()),
            // Above the maximum (possibly beyond i64).
            _ if n.is_u64() => Err((
                format!(
                    "Invalid 'n': integer above maximum value. Expected a value <= {MAX_N}, but got {n} instead."
                ),
                "integer_above_max_value",
            )),
            _ => {
                let kind = match n {
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Number(_) => "a decimal",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Array(_) => "an array",
                    _ => "an object",
                };
                Err((
                    format!("Invalid type for 'n': expected an integer, but got {kind} instead."),
                    "invalid_type",
                ))
            }
        }
    }
}

impl Reply {
    /// The response with its body in `encoding` (and `content-encoding` unless identity).
    fn into_response(
        self,
        request_id: &str,
        provider: Provider,
        encoding: Encoding,
    ) -> Response<FakeBody> {
        let body = match self.body.into_body(encoding) {
            Ok(body) => body,
            Err(e) => {
                let msg = format!("fake provider: {encoding:?} encoding failed: {e}");
                let mut resp = Response::new(FakeBody::full(Bytes::from(msg)));
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return resp;
            }
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if let Some(coding) = encoding.header() {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            let name = match provider {
                Provider::OpenAi => HeaderName::from_static("x-request-id"),
                Provider::Anthropic => HeaderName::from_static("request-id"),
            };
            h.insert(name, v);
        }
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        resp
    }
}

/// Per-request context handed to the API handlers.
pub(crate) struct Call<'a> {
    pub state: &'a State,
    pub knobs: &'a Knobs,
    pub body_len: usize,
    /// The model the response reports.
    pub served_model: String,
    pub cut: bool,
    /// `no-usage` fault: leave every usage member out of the body and the events.
    pub no_usage: bool,
    pub seq: u64,
    pub created: u64,
    /// What the simulated prompt cache decided (empty when a knob or the config disables it).
    pub cache: CacheUse,
}

/// The cache figures a handler reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheFigures {
    pub read: u64,
    /// All writes (Anthropic `cache_creation_input_tokens`).
    pub write: u64,
    /// The 1-hour part of `write`.
    pub write_1h: u64,
}

impl Call<'_> {
    /// `ceil(body bytes / 4)`: the input the body shows.
    pub(crate) fn body_tokens(&self) -> u64 {
        text::tokens_for_bytes(self.body_len)
    }

    /// The billed input: the body's tokens plus `x-fake-extra-input-tokens`.
    pub(crate) fn input_total(&self) -> u64 {
        self.body_tokens()
            .saturating_add(self.knobs.extra_input_tokens)
    }

    /// The cache reads and writes to report: the knobs' when either header is present (see
    /// "Usage arithmetic"), else the simulated cache's, which never exceed the billed input.
    pub(crate) fn cache_figures(&self) -> CacheFigures {
        if self.knobs.cache_knobs() {
            return CacheFigures {
                read: self.knobs.cached_tokens.unwrap_or(0),
                write: self.knobs.cache_write_tokens.unwrap_or(0),
                write_1h: 0,
            };
        }
        let c = &self.cache;
        let figures = CacheFigures {
            read: c.read,
            write: c.write_5m + c.write_1h,
            write_1h: c.write_1h,
        };
        // The prompt's blocks are inside the body, and the input is at least the body's tokens.
        debug_assert!(figures.read + figures.write <= self.input_total());
        figures
    }

    /// `(output tokens, truncated by max_tokens)`.
    pub(crate) fn output(&self, max_tokens: Option<u64>) -> (u64, bool) {
        let max = max_tokens.unwrap_or(1000);
        let wanted = self.knobs.output_tokens;
        if max < wanted {
            (max, true)
        } else {
            (wanted, false)
        }
    }

    /// Pieces for a stream: `before`, the deltas with pauses between them, then `after`.
    pub(crate) fn paced(
        &self,
        before: Vec<Bytes>,
        deltas: Vec<Bytes>,
        after: Vec<Bytes>,
    ) -> Vec<body::Piece> {
        let steps = deltas.into_iter().map(|d| vec![d]).collect();
        self.paced_steps(before, steps, after)
    }

    /// Like [`Call::paced`] with several events per delta step (one per choice): the pauses
    /// go between steps, every event is its own data piece.
    pub(crate) fn paced_steps(
        &self,
        before: Vec<Bytes>,
        steps: Vec<Vec<Bytes>>,
        after: Vec<Bytes>,
    ) -> Vec<body::Piece> {
        let delay = self.knobs.chunk_delay;
        let events: usize = steps.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(before.len() + events + steps.len() + after.len());
        out.extend(before.into_iter().map(body::Piece::Data));
        for (i, step) in steps.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                out.push(body::Piece::Delay(delay));
            }
            out.extend(step.into_iter().map(body::Piece::Data));
        }
        out.extend(after.into_iter().map(body::Piece::Data));
        out
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The outcome of one provider request, before logging.
struct Outcome {
    reply: Option<Reply>,
    model: Option<String>,
    stream: bool,
    fault: Option<Fault>,
    slow_head: Option<Duration>,
    served_model: Option<String>,
    /// `x-fake-encoding` (identity when absent or malformed: the 400 is not encoded).
    encoding: Encoding,
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<FakeBody>, io::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let path = parts.uri.path();
    if let Some(rest) = path.strip_prefix("/_fake/") {
        return Ok(admin(&state, &parts.method, rest));
    }
    let route = Route::of(&parts.method, path, &parts.headers);
    let provider = route.provider();
    let seq = state.seq.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("req_fake{seq:012x}");
    let outcome = process(&state, &route, &parts, &body, seq);

    if let Some(reply) = &outcome.reply {
        if let Some(usage) = &reply.usage {
            let mut totals = lock(&state.usage);
            let t = totals.entry(usage.model.clone()).or_default();
            t.requests += 1;
            t.input_total += usage.input_total;
            t.output += usage.output;
            t.cache_read += usage.cache_read;
            t.cache_write += usage.cache_write;
            t.cache_write_1h += usage.cache_write_1h;
            if !reply.usage_in_body {
                t.hidden_usage_requests += 1;
            }
        } else if reply.cut {
            let model = outcome.served_model.clone().unwrap_or_default();
            lock(&state.usage).entry(model).or_default().cut_requests += 1;
        }
        // Prompt caching is billed: only a billed response leaves (or refreshes) entries.
        if reply.usage.is_some() {
            state.cache.commit(&reply.cache_commit);
        }
    }
    if state.cfg.log {
        let mut headers = BTreeMap::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_string())
                .and_modify(|v: &mut String| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let entry = LoggedRequest {
            method: parts.method.to_string(),
            path: path.to_string(),
            query: parts.uri.query().map(str::to_string),
            headers,
            body: body.clone(),
            api: route.api().to_string(),
            model: outcome.model.clone(),
            stream: outcome.stream,
            status: outcome.reply.as_ref().map(|r| r.status.as_u16()),
            fault: outcome.fault.as_ref().map(Fault::label),
            usage: outcome.reply.as_ref().and_then(|r| r.usage.clone()),
            usage_in_body: outcome.reply.as_ref().is_some_and(|r| r.usage_in_body),
            cut: outcome.reply.as_ref().is_some_and(|r| r.cut),
        };
        lock(&state.log).push(entry);
    }

    if let Some(d) = outcome.slow_head {
        tokio::time::sleep(d).await;
    }
    match outcome.reply {
        Some(reply) => Ok(reply.into_response(&request_id, provider, outcome.encoding)),
        None => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "fake provider: close fault",
        )),
    }
}

fn process(
    state: &State,
    route: &Route,
    parts: &http::request::Parts,
    body: &Bytes,
    seq: u64,
) -> Outcome {
    let provider = route.provider();
    let headers = &parts.headers;
    let mut outcome = Outcome {
        reply: None,
        model: None,
        stream: false,
        fault: None,
        slow_head: None,
        served_model: None,
        encoding: knobs::encoding(headers).unwrap_or_default(),
    };
    let done = |mut outcome: Outcome, reply: Reply| {
        outcome.reply = Some(reply);
        outcome
    };

    if let Route::NotFound(_) = route {
        return done(
            outcome,
            not_found(provider, &parts.method, parts.uri.path()),
        );
    }
    if let Some(reply) = check_auth(state, provider, headers) {
        return done(outcome, reply);
    }
    let knobs = match Knobs::from_headers(headers, &state.cfg) {
        Ok(k) => k,
        Err(msg) => return done(outcome, invalid_request(provider, &msg)),
    };
    let fields = if route.has_json_body() {
        match serde_json::from_slice::<Fields>(body) {
            Ok(f) => f,
            Err(e) => return done(outcome, body_error(provider, &e)),
        }
    } else {
        Fields::default()
    };
    outcome.model = fields.model.clone();
    outcome.stream = fields.streaming();
    if let Some(reply) = validate(route, &fields) {
        return done(outcome, reply);
    }
    let anthropic_prompt = match messages_prompt(route, body) {
        Ok(p) => p,
        Err(msg) => return done(outcome, invalid_request(provider, &msg)),
    };

    let fault = pick_fault(state, &knobs, &fields);
    outcome.fault = fault.clone();
    let mut cut = false;
    let mut stall = None;
    let mut no_usage = false;
    match fault {
        None => {}
        Some(Fault::Status(code)) => {
            let reply = fault_error(provider, code, fields.model.as_deref());
            return done(outcome, reply);
        }
        Some(Fault::Garbage) => {
            let reply = Reply::bytes(
                StatusCode::OK,
                "text/html",
                Bytes::from_static(b"<html>oops"),
            );
            return done(outcome, reply);
        }
        Some(Fault::Close) => return outcome,
        Some(Fault::SlowHead(d)) => outcome.slow_head = Some(d),
        Some(Fault::Cut) => cut = true,
        Some(Fault::Stall(d)) => stall = Some(d),
        Some(Fault::NoUsage) => no_usage = true,
        Some(Fault::EchoKey) => return done(outcome, echo_key(provider, headers)),
    }

    let served_model = knobs
        .served_model
        .clone()
        .or_else(|| fields.model.clone())
        .unwrap_or_default();
    outcome.served_model = Some(served_model.clone());
    let cache = simulate_cache(
        state,
        route,
        &knobs,
        &fields,
        &served_model,
        body,
        anthropic_prompt.as_ref(),
    );
    let mut call = Call {
        state,
        knobs: &knobs,
        body_len: body.len(),
        served_model,
        cut,
        no_usage,
        seq,
        created: now_secs(),
        cache,
    };
    let mut reply = dispatch(route, &call, &fields, parts, body);
    reply.cache_commit = std::mem::take(&mut call.cache.commit);
    reply.body = match stall {
        Some(d) => reply.body.stalled(d),
        None if knobs.chunked => reply.body.without_length(),
        None => reply.body,
    };
    if no_usage {
        // Billed all the same: the client just cannot see it.
        reply.usage_in_body = false;
    }
    done(outcome, reply)
}

/// The prompt of a `/v1/messages` request (`None` for other routes), or the message of
/// Anthropic's 400 for bad `cache_control` markup (validated with the rest of the body, before
/// faults).
fn messages_prompt<'a>(
    route: &Route,
    body: &'a [u8],
) -> Result<Option<prompt::AnthropicPrompt<'a>>, String> {
    if *route != Route::Messages {
        return Ok(None);
    }
    prompt::anthropic(body).map(Some)
}

/// What the simulated prompt cache reads and writes for this request: nothing when it is off
/// or a cache knob header is present (the knobs win), else the provider's rules.
fn simulate_cache(
    state: &State,
    route: &Route,
    knobs: &Knobs,
    fields: &Fields,
    served_model: &str,
    body: &[u8],
    anthropic_prompt: Option<&prompt::AnthropicPrompt<'_>>,
) -> CacheUse {
    if !state.cfg.prompt_cache || knobs.cache_knobs() {
        return CacheUse::default();
    }
    match route {
        Route::Messages => {
            let Some(prompt) = anthropic_prompt else {
                return CacheUse::default();
            };
            let scope = Scope {
                provider: "anthropic",
                api_key: &state.cfg.anthropic_key,
                model: served_model,
                cache_key: None,
            };
            let min = cache::anthropic_min_tokens(served_model);
            state.cache.anthropic(prompt, &scope, min)
        }
        Route::Chat | Route::Responses => {
            let min_bytes = cache::OPENAI_MIN_TOKENS * 4;
            if (body.len() as u64) < min_bytes {
                // The prompt is inside the body: it cannot reach the minimum.
                return CacheUse::default();
            }
            let prompt = prompt::openai(body, *route == Route::Responses);
            let scope = Scope {
                provider: "openai",
                api_key: &state.cfg.openai_key,
                model: served_model,
                cache_key: prompt.cache_key.as_deref(),
            };
            let ttl = if fields.retention_24h().unwrap_or(false) {
                cache::TTL_24H
            } else {
                cache::TTL_OPENAI
            };
            state.cache.openai(&prompt.blocks, &scope, ttl)
        }
        _ => CacheUse::default(),
    }
}

/// The fault to apply: the header first, then model-level ones (header
/// list, then config), when this request is one the fault applies to.
fn pick_fault(state: &State, knobs: &Knobs, fields: &Fields) -> Option<Fault> {
    let fault = knobs.fault.clone().or_else(|| {
        let model = fields.model.as_deref()?;
        knobs
            .fail_models
            .iter()
            .chain(state.fail_models.iter())
            .find(|(m, _)| m == model)
            .map(|(_, f)| f.clone())
    });
    fault.filter(|_| state.fault_applies(knobs))
}

/// The endpoint's own answer.
fn dispatch(
    route: &Route,
    call: &Call<'_>,
    fields: &Fields,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Reply {
    let (state, cut) = (call.state, call.cut);
    match route {
        Route::Chat => openai::chat(call, fields),
        Route::Responses => openai::responses(call, fields),
        Route::Embeddings => openai::embeddings(call, body),
        Route::OpenAiModels => openai::models(state, cut),
        Route::OpenAiModel(id) => openai::model(id, cut),
        Route::Messages => anthropic::messages(call, fields),
        Route::CountTokens => anthropic::count_tokens(call),
        Route::AnthropicModels => anthropic::models(state, cut),
        Route::NotFound(_) => not_found(route.provider(), &parts.method, parts.uri.path()),
    }
}

fn check_auth(state: &State, provider: Provider, headers: &HeaderMap) -> Option<Reply> {
    match provider {
        Provider::OpenAi => {
            let auth = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let key = auth.and_then(|a| {
                let (scheme, key) = a.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            });
            match key {
                Some(k) if k == state.cfg.openai_key => None,
                Some(k) => Some(openai::error(
                    StatusCode::UNAUTHORIZED,
                    &format!(
                        "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                        redact(k)
                    ),
                    "invalid_request_error",
                    Some("invalid_api_key"),
                    None,
                )),
                None => Some(openai::error(
                    StatusCode::UNAUTHORIZED,
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    None,
                    None,
                )),
            }
        }
        Provider::Anthropic => {
            let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
            match key {
                Some(k) if k.trim() == state.cfg.anthropic_key => {}
                Some(_) => {
                    return Some(anthropic::error(
                        StatusCode::UNAUTHORIZED,
                        "authentication_error",
                        "invalid x-api-key",
                    ));
                }
                None => {
                    return Some(anthropic::error(
                        StatusCode::UNAUTHORIZED,
                        "authentication_error",
                        "x-api-key header is required",
                    ));
                }
            }
            if !headers.contains_key("anthropic-version") {
                return Some(anthropic::error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "anthropic-version: header is required",
                ));
            }
            None
        }
    }
}

/// The `echo-key` fault: a misbehaving gateway's 400 that leaks the raw credential header
/// (`Authorization` for OpenAI routes, `x-api-key` for Anthropic ones) in its message and in an
/// `x-echo-credential` header.
fn echo_key(provider: Provider, headers: &HeaderMap) -> Reply {
    let name = match provider {
        Provider::OpenAi => http::header::AUTHORIZATION.as_str(),
        Provider::Anthropic => "x-api-key",
    };
    let raw = headers.get(name).cloned();
    let shown = raw
        .as_ref()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let message = format!("Upstream gateway rejected the request made with {name}: {shown}");
    let reply = match provider {
        Provider::OpenAi => openai::error(
            StatusCode::BAD_REQUEST,
            &message,
            "invalid_request_error",
            Some("gateway_error"),
            None,
        ),
        Provider::Anthropic => {
            anthropic::error(StatusCode::BAD_REQUEST, "invalid_request_error", &message)
        }
    };
    match raw {
        Some(v) => reply.with_header(HeaderName::from_static("x-echo-credential"), v),
        None => reply,
    }
}

/// OpenAI's way of echoing a wrong key: the first 3 and last 4 characters.
fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// The first missing/invalid field as the provider's 400, if any.
fn validate(route: &Route, f: &Fields) -> Option<Reply> {
    // (ok, OpenAI message, Anthropic message, param)
    let checks: &[(bool, &str, &str, &str)] = match route {
        Route::Chat => &[
            (
                f.model.is_some(),
                "you must provide a model parameter",
                "",
                "model",
            ),
            (
                f.messages.is_some(),
                "Missing required parameter: 'messages'.",
                "",
                "messages",
            ),
            (
                f.stream_options.is_none() || f.streaming(),
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "",
                "stream_options",
            ),
        ],
        Route::Responses | Route::Embeddings => &[(
            f.model.is_some(),
            "you must provide a model parameter",
            "",
            "model",
        )],
        Route::Messages => &[
            (f.model.is_some(), "", "model: Field required", ""),
            (f.messages.is_some(), "", "messages: Field required", ""),
            (f.max_tokens.is_some(), "", "max_tokens: Field required", ""),
        ],
        Route::CountTokens => &[
            (f.model.is_some(), "", "model: Field required", ""),
            (f.messages.is_some(), "", "messages: Field required", ""),
        ],
        _ => &[],
    };
    let Some(&(_, openai_msg, anthropic_msg, param)) = checks.iter().find(|c| !c.0) else {
        let choices = match route {
            Route::Chat => f.choices().err().map(|(m, code)| (m, code, "n")),
            _ => None,
        };
        let retention = || {
            let bad = f.retention_24h().err()?;
            Some((bad, "invalid_value", "prompt_cache_retention"))
        };
        let (message, code, param) = match route {
            Route::Chat | Route::Responses => choices.or_else(retention)?,
            _ => return None,
        };
        return Some(openai::error(
            StatusCode::BAD_REQUEST,
            &message,
            "invalid_request_error",
            Some(code),
            Some(param),
        ));
    };
    Some(match route.provider() {
        Provider::OpenAi => openai::error(
            StatusCode::BAD_REQUEST,
            openai_msg,
            "invalid_request_error",
            None,
            Some(param),
        ),
        Provider::Anthropic => anthropic::error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            anthropic_msg,
        ),
    })
}

fn invalid_request(provider: Provider, msg: &str) -> Reply {
    match provider {
        Provider::OpenAi => openai::error(
            StatusCode::BAD_REQUEST,
            msg,
            "invalid_request_error",
            None,
            None,
        ),
        Provider::Anthropic => {
            anthropic::error(StatusCode::BAD_REQUEST, "invalid_request_error", msg)
        }
    }
}

fn body_error(provider: Provider, e: &serde_json::Error) -> Reply {
    match provider {
        Provider::OpenAi => {
            let msg = if e.is_data() {
                format!("Invalid request body: {e}")
            } else {
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)".to_string()
            };
            openai::error(
                StatusCode::BAD_REQUEST,
                &msg,
                "invalid_request_error",
                None,
                None,
            )
        }
        Provider::Anthropic => {
            let msg = if e.is_data() {
                format!("invalid request body: {e}")
            } else {
                "There was an issue with your request body: the body could not be parsed as JSON"
                    .to_string()
            };
            anthropic::error(StatusCode::BAD_REQUEST, "invalid_request_error", &msg)
        }
    }
}

fn fault_error(provider: Provider, code: u16, model: Option<&str>) -> Reply {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reply = match provider {
        Provider::OpenAi => openai::fault_error(status, model),
        Provider::Anthropic => anthropic::fault_error(status),
    };
    if code == 429 {
        reply.with_header(RETRY_AFTER, HeaderValue::from_static("1"))
    } else {
        reply
    }
}

fn not_found(provider: Provider, method: &Method, path: &str) -> Reply {
    match provider {
        Provider::OpenAi => openai::error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
            None,
        ),
        Provider::Anthropic => {
            anthropic::error(StatusCode::NOT_FOUND, "not_found_error", "Not found")
        }
    }
}

fn admin(state: &State, method: &Method, path: &str) -> Response<FakeBody> {
    let json = |value: Result<String, serde_json::Error>| {
        let reply = match value {
            Ok(s) => Reply::bytes(StatusCode::OK, JSON, Bytes::from(s)),
            Err(e) => Reply::bytes(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                Bytes::from(e.to_string()),
            ),
        };
        reply.into_response("", Provider::OpenAi, Encoding::Identity)
    };
    let no_content = || {
        let mut resp = Response::new(FakeBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp
    };
    match (method, path) {
        (&Method::GET, "log") => json(serde_json::to_string(&*lock(&state.log))),
        (&Method::DELETE, "log") => {
            lock(&state.log).clear();
            no_content()
        }
        (&Method::GET, "usage") => json(serde_json::to_string(&state.usage_totals())),
        (&Method::DELETE, "usage") => {
            lock(&state.usage).clear();
            no_content()
        }
        (&Method::GET, "cache") => json(serde_json::to_string(
            &serde_json::json!({"entries": state.cache.len()}),
        )),
        (&Method::DELETE, "cache") => {
            state.cache.clear();
            no_content()
        }
        (&Method::GET, "health") => Reply::bytes(
            StatusCode::OK,
            "text/plain",
            Bytes::from_static(b"ok"),
        )
        .into_response("", Provider::OpenAi, Encoding::Identity),
        _ => Reply::bytes(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found"),
        )
        .into_response("", Provider::OpenAi, Encoding::Identity),
    }
}
