//! The prefix-stability monitor: finds prompt-cache busts without keeping
//! prompt text.
//!
//! A provider's prompt cache serves a request's prefix at about a tenth of
//! the input price only while the prefix stays byte-for-byte identical to
//! one it saw within its TTL. The sidecar fingerprints each request body as
//! sent upstream ([`Fingerprint::of`]) and, when the usage is settled,
//! hands it with the billed tokens to a [`Monitor`] keyed by workload,
//! provider and model ([`Monitor::observe`]). The monitor names a
//! [`crate::usage::cache::CacheBust`] (where the prefix broke, what
//! changed, how many tokens were billed above the cache-read price because
//! of it), or a TTL expiry, or nothing.
//!
//! # Rendering
//!
//! A fingerprint lists the prompt's blocks in the order the provider's
//! prefix cache sees them, each as the raw JSON bytes sent (byte stability
//! is what matters):
//!
//! - Anthropic `/v1/messages`: each `tools[]` entry, then `system` (a string
//!   is one block, an array one block per element), then each message's
//!   content blocks (string content is one block). A block's own
//!   `cache_control` member is left out: it marks a breakpoint and is not
//!   part of the cached prefix, and clients move it from turn to turn. A
//!   plain text block (`{"type": "text", "text": …}` and nothing else) is
//!   its `text` string: Anthropic renders a string and a one-block text
//!   array alike, and the sidecar's automatic breakpoints turn the one into
//!   the other, so the next turn's string must not look like a change.
//!   <https://docs.claude.com/en/docs/build-with-claude/prompt-caching>
//!   ("Prompt caching references the entire prompt — tools, system, and
//!   messages (in that order)").
//! - OpenAI chat completions: each `tools[]` entry, then each `messages[]`
//!   entry. Responses: `tools[]`, `instructions`, then each `input` item (a
//!   string input is one block).
//!   <https://platform.openai.com/docs/guides/prompt-caching>
//!
//! Labels: `tools[2]`, `system`, `system[1]`, `messages[3]`,
//! `messages[3].content[0]`, `instructions`, `input`, `input[4]`. Offsets
//! count bytes of the block's JSON value as sent (a string's opening quote
//! is byte 0; of a plain text block, of its `text` string; in a block
//! carrying `cache_control`, bytes after that member count as if it were
//! not there). Beyond `max_blocks` blocks the rest of
//! the prompt is one block, labelled by its first.
//!
//! Per block a fingerprint keeps its length; a hash of its bytes; a hash
//! with digit runs and hex-id runs masked (equal when only a timestamp,
//! date, number or UUID changed); a hash with each whitespace run made one
//! space, none at a string's ends (equal when only whitespace changed:
//! indentation, blank lines, trailing newlines); and a chain of hashes of
//! content-defined byte runs (cut after 8-byte anchors, 64–1,024 bytes,
//! ~320 on average) that locate a divergence inside a block and let content
//! after a change of length be recognised. It also keeps where timestamp-, date-, UUID- and long
//! number-like runs start (offset and kind, with hashes of their bytes),
//! never the runs themselves.
//!
//! # Provider rules
//!
//! - Anthropic caches the prefix up to each `cache_control` breakpoint
//!   (at most 4); a top-level `cache_control` (automatic caching) puts it on
//!   the last block. The cacheable point is the end of the last breakpoint
//!   block, 0 without one (then nothing is cached and nothing can bust). A
//!   read looks for an earlier entry at most 20 blocks before each of the
//!   request's breakpoints. TTL: 5 minutes, or 1 hour when a breakpoint says
//!   `"ttl": "1h"`; refreshed on each read. Minimum cacheable length 1,024
//!   tokens (2,048 or 4,096 for some models).
//!   <https://docs.claude.com/en/docs/build-with-claude/prompt-caching>
//! - OpenAI caches prompts of at least 1,024 tokens (the cacheable point is
//!   the whole prompt when it has at least 4,096 bytes, else 0), read in
//!   steps of 128 tokens beyond the first 1,024. TTL: 5 minutes in memory
//!   (the docs say 5–10 minutes of inactivity, so 5 is the conservative
//!   bound), 24 hours with `prompt_cache_retention: "24h"`.
//!   <https://platform.openai.com/docs/guides/prompt-caching>
//!
//! # Detection
//!
//! For a new fingerprint `N` of a key, the monitor picks the recent `O` that
//! shares the most with it: the common prefix `d` (whole equal blocks, then
//! equal runs of the first differing block) plus the content of `N` after
//! `d` whose run hashes appear in `O` after `d` and before `O`'s cacheable
//! point (`shared`). Token counts use the request's own ratio, billed input
//! tokens / `N`'s rendered bytes (integer math). `O`'s cacheable point
//! counts only when it is at least `min_cacheable_tokens` (1,024) tokens.
//!
//! - **TTL expiry**: `O` was last seen longer ago than its TTL (or the
//!   override), and `N` would have read its cache or been busted by it
//!   were it fresh: [`Observation::expired`], never a bust.
//! - **Bust (a) or (b)**: `d` lies before `O`'s cacheable point and the
//!   shared content after `d` that lies before `N`'s own cacheable point
//!   (what `N` could have read but had to bill again), capped at the tokens
//!   billed above the cache-read price (`input + cache_write`), is at least
//!   `min_lost_tokens` (256) tokens. Those are the `lost_tokens`. It is
//!   [`BustReason::VolatilePrefix`](crate::usage::cache::BustReason) (b)
//!   when the common prefix is shorter than the lost content (an early
//!   change in front of content the two share: a timestamp at the start of
//!   the system prompt, a changed tool), else
//!   [`BustReason::PrefixDiverged`](crate::usage::cache::BustReason) (a) (a
//!   long stretch matched, then an edit before the cached point). A normal
//!   next turn (`N` extends `O`: `d` at or past `O`'s cacheable point) and
//!   different questions after a shared system prompt (nothing shared
//!   after `d`) are not busts; a short edit (less than `min_lost_tokens`)
//!   is not either.
//! - **Bust (c)**, provider miss: no divergence before `O`'s cacheable point
//!   and fresh, yet the billed cache reads are under half of what `N`
//!   should have read from `O` (Anthropic: the longest of `O`'s breakpoints
//!   within the common prefix that one of `N`'s breakpoints reaches within
//!   20 blocks; OpenAI: that prefix rounded down to 1,024 + 128·k tokens),
//!   that expectation being at least `min_cacheable_tokens`, and `O` at
//!   least `miss_grace` (5 s) older (a provider writes a prefix once it
//!   starts answering: requests sent together cannot read each other's
//!   cache). Lost: the missing tokens, capped as above. Section empty,
//!   change `none`.
//!
//! Section and offset: the first differing block's label, and the start of
//! its first differing run, moved to the start of the first volatile run
//! (timestamp, date, UUID, number) of that run that differs while the bytes
//! before it are the same. Change, in this order: `tools_reordered` (a
//! divergence in tools, the same tool definitions in another order);
//! `timestamp`/`date`/`uuid`/`number` (the block's masked hashes are equal;
//! the kind of the volatile run at the divergence, `number` when none was
//! located); `whitespace`; `tools_changed` (otherwise in tools);
//! `system_replaced` (a system prompt that shares no run with the earlier
//! one); `content`.
//!
//! After the comparison `N` is stored with `last_seen = now`, taking `O`'s
//! place when it extends `O` (or diverges only in `O`'s last block), busted
//! it, or found it expired, so a conversation or an agent loop holds one
//! slot. `O`'s `last_seen` is refreshed when `N` could read its cache.
//!
//! # Memory
//!
//! Bounded by [`MonitorLimits`]: at most `keys` keys (LRU), `per_key`
//! fingerprints each (least recently seen dropped), and per fingerprint
//! `max_blocks` blocks of 32 bytes, `max_runs` runs of 8 bytes,
//! `max_patterns` located runs of 20 bytes and 8 breakpoints of 16 bytes:
//! [`Fingerprint::max_bytes`] is 13,152 bytes with the defaults. The whole
//! monitor stays under [`Monitor::max_heap_bytes`]: 3,421,248 bytes
//! (3.3 MiB) with the default limits (32 keys × 8 fingerprints) and keys
//! of up to 64 bytes. A fingerprint held between sending a request and
//! settling it is bounded the same way. [`Monitor::heap_bytes`] reports
//! what it holds, as a gauge; [`Monitor::keys`] and
//! [`Monitor::fingerprints`] how many of each.
//!
//! # Cost
//!
//! One pass of serde over the body (borrowing raw values of the prompt
//! members only), then per block: one pass to find run ends, one hash per
//! run (8 bytes a step), one pass for the masked and whitespace hashes that
//! feeds unchanged spans a word at a time. `observe` compares block hashes,
//! then runs of one block, and matches runs in a sorted scratch buffer only
//! when a prefix diverged before a cached point.
//!
//! Measured (not a timed test) with the ignored test `measure`:
//! `cargo test --release -p tokenwarden-core --lib prompt_cache::tests::measure
//! -- --ignored --nocapture`, 2,000 rounds of `Fingerprint::of` +
//! `observe` then 2,000 of `Fingerprint::of` per body, CPU time from
//! `perf stat -e task-clock`, on the 2-core development machine shared
//! with other builds: a 954-byte chat body about 2 µs per request; a
//! 236,660-byte Anthropic agent body (120 messages) about 0.46 ms of CPU
//! per request (~2 ns a byte), `observe` adding little to `of`.

mod fingerprint;
mod limits;
mod monitor;
mod scan;
#[cfg(test)]
mod tests;

pub use fingerprint::Fingerprint;
pub use limits::MonitorLimits;
pub use monitor::{Monitor, Observation};
