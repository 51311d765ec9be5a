//! [`MonitorLimits`]: the bounds of the prefix-stability monitor (how many
//! keys and fingerprints it keeps, how detailed a fingerprint is) and its
//! thresholds. A leaf: both the fingerprint and the monitor read it.

use std::time::Duration;

/// Bounds and thresholds of a [`super::Monitor`].
///
/// The memory the monitor can hold is about `keys × per_key ×` the largest
/// fingerprint ([`super::Fingerprint::max_bytes`]); with the defaults at
/// most 3,421,248 bytes for keys of up to 64 bytes
/// ([`super::Monitor::max_heap_bytes`], the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorLimits {
    /// Keys (workload × provider × model) kept; the least recently used
    /// one is dropped beyond this. Default 32.
    pub keys: usize,
    /// Fingerprints kept per key (distinct conversations or agents that
    /// share the key); the least recently seen one is dropped beyond this.
    /// Default 8.
    pub per_key: usize,
    /// Byte runs hashed per fingerprint. Runs beyond this (in rendering
    /// order) are not kept: their blocks are compared whole. Default 512
    /// (with runs of about 320 bytes, the first ~160 KB of a prompt).
    pub max_runs: usize,
    /// Blocks per fingerprint. Blocks beyond `max_blocks - 1` are folded
    /// into the last one, labelled by its first block. Default 256.
    pub max_blocks: usize,
    /// Volatile runs (timestamps, dates, UUIDs, long numbers) located per
    /// fingerprint, in rendering order. Default 32.
    pub max_patterns: usize,
    /// A prefix divergence is a bust only when at least this many tokens of
    /// shared content were billed above the cache-read price, so ordinary
    /// edits of a short conversation do not count. Default 256.
    pub min_lost_tokens: u64,
    /// The provider caches nothing shorter than this many tokens (OpenAI's
    /// minimum and Anthropic's smallest per-model one): a shorter cached
    /// prefix cannot bust, and a provider miss needs an expected read of at
    /// least this. Default 1,024.
    pub min_cacheable_tokens: u64,
    /// Recent busts remembered per key for [`super::Observation::repeats`].
    /// Default 16.
    pub bust_window: usize,
    /// A provider miss needs the earlier request to be at least this much
    /// older: a provider writes a prefix to its cache only once it starts
    /// answering, so requests sent together (parallel tool calls, sub-agents)
    /// cannot read each other's. Default 5 s.
    pub miss_grace: Duration,
}

impl Default for MonitorLimits {
    fn default() -> Self {
        MonitorLimits {
            keys: 32,
            per_key: 8,
            max_runs: 512,
            max_blocks: 256,
            max_patterns: 32,
            min_lost_tokens: 256,
            min_cacheable_tokens: 1024,
            bust_window: 16,
            miss_grace: Duration::from_secs(5),
        }
    }
}
