//! The simulated prompt cache: a bounded store of prefix hashes with expiry times, and the
//! providers' rules that turn a prompt's blocks into cache reads and writes (see the crate docs,
//! "Prompt cache", for the rules and their sources).
//!
//! Nothing here keeps prompt text: an entry is a 128-bit hash of (scope, prefix bytes) and an
//! expiry. The lookups are pure; the writes and refreshes a request implies are returned as a
//! [`Commit`] that the server applies only when the response is billed.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::prompt::{AnthropicPrompt, Ttl};

/// Most entries the cache holds. When an insert finds it full, expired entries are dropped
/// first, then the tenth of the entries that expire soonest.
pub const MAX_CACHE_ENTRIES: usize = 100_000;

/// Anthropic's default breakpoint TTL (`{"type": "ephemeral"}` or `"ttl": "5m"`).
pub(crate) const TTL_5M: Duration = Duration::from_secs(5 * 60);
/// Anthropic's extended breakpoint TTL (`"ttl": "1h"`).
pub(crate) const TTL_1H: Duration = Duration::from_secs(60 * 60);
/// OpenAI's in-memory retention, as the fake models it: 5 minutes after last use.
pub(crate) const TTL_OPENAI: Duration = Duration::from_secs(5 * 60);
/// OpenAI's extended retention (`prompt_cache_retention: "24h"`).
pub(crate) const TTL_24H: Duration = Duration::from_secs(24 * 60 * 60);

/// Blocks before a breakpoint that Anthropic also checks for a hit (its automatic lookback).
pub(crate) const LOOKBACK_BLOCKS: usize = 20;
/// OpenAI caches prompts of at least this many tokens.
pub(crate) const OPENAI_MIN_TOKENS: u64 = 1024;
/// OpenAI cache hits grow in steps of this many tokens.
pub(crate) const OPENAI_STEP_TOKENS: u64 = 128;
/// The fake's tokens are bytes / 4.
const BYTES_PER_TOKEN: u64 = 4;

/// Anthropic's minimum cacheable prompt length by model id prefix, first match wins; any other
/// model: [`ANTHROPIC_DEFAULT_MIN_TOKENS`]. Source:
/// <https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching> ("Cache limitations",
/// as of 2026: 4,096 for Opus 4.6 / 4.5 and Haiku 4.5; 1,024 for Sonnet 4.6 / 4.5 / 4, Opus 4.1 /
/// 4 and Sonnet 3.7; 2,048 for Haiku 3.5 and Haiku 3).
pub const ANTHROPIC_MIN_TOKENS: &[(&str, u64)] = &[
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
    ("claude-sonnet-4", 1024),
    ("claude-opus-4", 1024),
    ("claude-3-7-sonnet", 1024),
];

/// The minimum for a model the table does not name.
pub const ANTHROPIC_DEFAULT_MIN_TOKENS: u64 = 1024;

/// Anthropic's minimum cacheable prompt length for `model` (see [`ANTHROPIC_MIN_TOKENS`]).
pub fn anthropic_min_tokens(model: &str) -> u64 {
    ANTHROPIC_MIN_TOKENS
        .iter()
        .find(|(prefix, _)| model.starts_with(prefix))
        .map_or(ANTHROPIC_DEFAULT_MIN_TOKENS, |&(_, min)| min)
}

/// Writes and refreshes to apply once the response is billed: `(key, TTL)` pairs.
pub(crate) type Commit = Vec<(u128, Duration)>;

/// What the simulated cache decided for one request.
#[derive(Debug, Default)]
pub(crate) struct CacheUse {
    /// Tokens read from the cache (Anthropic `cache_read_input_tokens`, OpenAI `cached_tokens`).
    pub read: u64,
    /// Tokens written with a 5-minute TTL (Anthropic `ephemeral_5m_input_tokens`).
    pub write_5m: u64,
    /// Tokens written with a 1-hour TTL (Anthropic `ephemeral_1h_input_tokens`).
    pub write_1h: u64,
    /// Entries to write or refresh when the response is billed.
    pub commit: Commit,
}

/// Who may share entries: the provider, the API key, the model and (OpenAI) the
/// `prompt_cache_key`. Hashed into every entry key.
pub(crate) struct Scope<'a> {
    pub provider: &'static str,
    pub api_key: &'a str,
    pub model: &'a str,
    pub cache_key: Option<&'a str>,
}

/// A running 128-bit hash of a scope and the prefix bytes fed so far (two SipHash states with
/// different seeds; deterministic across runs).
#[derive(Clone)]
struct PrefixHash(DefaultHasher, DefaultHasher);

impl PrefixHash {
    fn new(scope: &Scope<'_>) -> PrefixHash {
        let mut h = PrefixHash(DefaultHasher::new(), DefaultHasher::new());
        h.0.write_u8(0x5a);
        h.1.write_u8(0xa5);
        for part in [scope.provider, scope.api_key, scope.model] {
            h.field(part.as_bytes());
        }
        match scope.cache_key {
            Some(k) => {
                h.write(&[1]);
                h.field(k.as_bytes());
            }
            None => h.write(&[0]),
        }
        h
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
        self.1.write(bytes);
    }

    /// `bytes` with its length, so that consecutive fields cannot run into each other.
    fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    fn finish(&self) -> u128 {
        (u128::from(self.0.finish()) << 64) | u128::from(self.1.finish())
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    expires: Instant,
    ttl: Duration,
}

/// The bounded store of cache entries.
pub(crate) struct PromptCache {
    entries: Mutex<HashMap<u128, Entry>>,
    ttl_override: Option<Duration>,
}

impl PromptCache {
    pub(crate) fn new(ttl_override: Option<Duration>) -> PromptCache {
        PromptCache {
            entries: Mutex::new(HashMap::new()),
            ttl_override,
        }
    }

    /// The TTL actually used for a nominal one (the override replaces every TTL).
    fn ttl(&self, nominal: Duration) -> Duration {
        self.ttl_override.unwrap_or(nominal)
    }

    /// The TTL of a live entry, `None` when there is none or it expired.
    fn live(&self, key: u128, now: Instant) -> Option<Duration> {
        lock(&self.entries)
            .get(&key)
            .filter(|e| e.expires > now)
            .map(|e| e.ttl)
    }

    /// Writes or refreshes entries: each expires `ttl` from now, never earlier than it already
    /// did (a 5-minute write does not shorten a live 1-hour entry).
    pub(crate) fn commit(&self, commit: &Commit) {
        if commit.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        for &(key, ttl) in commit {
            let expires = now + ttl;
            if let Some(e) = entries.get_mut(&key) {
                if e.expires <= now || e.expires < expires {
                    *e = Entry { expires, ttl };
                }
                continue;
            }
            if entries.len() >= MAX_CACHE_ENTRIES {
                evict(&mut entries, now);
            }
            entries.insert(key, Entry { expires, ttl });
        }
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        lock(&self.entries).clear();
    }

    /// Entries held (live or not yet evicted).
    pub(crate) fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Anthropic's rules: reads at the longest live prefix found at a breakpoint or up to
    /// [`LOOKBACK_BLOCKS`] blocks before one; writes from there to the last breakpoint (split by
    /// the TTL of the breakpoint ending each segment); entries at every breakpoint at or above
    /// the model's minimum.
    pub(crate) fn anthropic(
        &self,
        prompt: &AnthropicPrompt<'_>,
        scope: &Scope<'_>,
        min_tokens: u64,
    ) -> CacheUse {
        if prompt.breakpoints().next().is_none() {
            return CacheUse::default();
        }
        // Prefix tokens and hashes up to and including each block.
        let mut hash = PrefixHash::new(scope);
        let mut bytes = 0u64;
        let mut tokens = Vec::with_capacity(prompt.blocks.len());
        let mut hashes = Vec::with_capacity(prompt.blocks.len());
        for block in &prompt.blocks {
            bytes += block.raw.get().len() as u64;
            block.feed(&mut |b| hash.write(b));
            tokens.push(bytes / BYTES_PER_TOKEN);
            hashes.push(hash.finish());
        }

        let now = Instant::now();
        let mut hit: Option<(usize, Duration)> = None;
        for (b, _) in prompt.breakpoints() {
            let found = (b.saturating_sub(LOOKBACK_BLOCKS)..=b)
                .rev()
                .find_map(|p| self.live(hashes[p], now).map(|ttl| (p, ttl)));
            if let Some((p, ttl)) = found
                && hit.is_none_or(|(q, _)| p > q)
            {
                hit = Some((p, ttl));
            }
        }

        let read = hit.map_or(0, |(p, _)| tokens[p]);
        let mut out = CacheUse {
            read,
            ..CacheUse::default()
        };
        if let Some((p, ttl)) = hit {
            // "The cache is refreshed for no additional cost each time the cached content is used."
            out.commit.push((hashes[p], ttl));
        }
        let mut boundary = read;
        for (b, ttl) in prompt.breakpoints() {
            if tokens[b] < min_tokens {
                continue;
            }
            if tokens[b] > boundary {
                let segment = tokens[b] - boundary;
                match ttl {
                    Ttl::FiveMinutes => out.write_5m += segment,
                    Ttl::OneHour => out.write_1h += segment,
                }
                boundary = tokens[b];
            }
            let nominal = match ttl {
                Ttl::FiveMinutes => TTL_5M,
                Ttl::OneHour => TTL_1H,
            };
            out.commit.push((hashes[b], self.ttl(nominal)));
        }
        out
    }

    /// OpenAI's rules: the largest `L` in 1024, 1152, … (at most the prompt's tokens) whose
    /// first `4L` bytes match a live entry is read; entries at every such step are written.
    pub(crate) fn openai(&self, blocks: &[&[u8]], scope: &Scope<'_>, ttl: Duration) -> CacheUse {
        let total: u64 = blocks.iter().map(|b| b.len() as u64).sum();
        let prompt_tokens = total / BYTES_PER_TOKEN;
        if prompt_tokens < OPENAI_MIN_TOKENS {
            return CacheUse::default();
        }
        let step_bytes = OPENAI_STEP_TOKENS * BYTES_PER_TOKEN;
        let mut next = OPENAI_MIN_TOKENS * BYTES_PER_TOKEN;
        let mut hash = PrefixHash::new(scope);
        let mut fed = 0u64;
        // (tokens, hash) at every step.
        let mut steps: Vec<(u64, u128)> = Vec::new();
        for block in blocks {
            let mut rest: &[u8] = block;
            while !rest.is_empty() {
                let want = usize::try_from(next - fed).unwrap_or(usize::MAX);
                let (now, later) = rest.split_at(want.min(rest.len()));
                hash.write(now);
                fed += now.len() as u64;
                rest = later;
                if fed == next {
                    steps.push((fed / BYTES_PER_TOKEN, hash.finish()));
                    next += step_bytes;
                }
            }
        }
        let now = Instant::now();
        let read = steps
            .iter()
            .rev()
            .find(|(_, key)| self.live(*key, now).is_some())
            .map_or(0, |(tokens, _)| *tokens);
        let ttl = self.ttl(ttl);
        CacheUse {
            read,
            write_5m: 0,
            write_1h: 0,
            commit: steps.iter().map(|&(_, key)| (key, ttl)).collect(),
        }
    }
}

/// The entries, even if a panicking holder poisoned the lock (they stay consistent: every
/// update is a single insert or assignment).
fn lock(m: &Mutex<HashMap<u128, Entry>>) -> MutexGuard<'_, HashMap<u128, Entry>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes room: drops expired entries, then (if that freed nothing) the tenth that expire soonest.
fn evict(entries: &mut HashMap<u128, Entry>, now: Instant) {
    entries.retain(|_, e| e.expires > now);
    if entries.len() < MAX_CACHE_ENTRIES {
        return;
    }
    let mut expiries: Vec<Instant> = entries.values().map(|e| e.expires).collect();
    let cut = MAX_CACHE_ENTRIES / 10;
    expiries.select_nth_unstable(cut);
    let threshold = expiries[cut];
    entries.retain(|_, e| e.expires > threshold);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_tokens_table() {
        assert_eq!(anthropic_min_tokens("claude-opus-4-6"), 4096);
        assert_eq!(anthropic_min_tokens("claude-opus-4-5-20251101"), 4096);
        assert_eq!(anthropic_min_tokens("claude-haiku-4-5-20251001"), 4096);
        assert_eq!(anthropic_min_tokens("claude-3-5-haiku-20241022"), 2048);
        assert_eq!(anthropic_min_tokens("claude-3-haiku-20240307"), 2048);
        assert_eq!(anthropic_min_tokens("claude-sonnet-4-5-20250929"), 1024);
        assert_eq!(anthropic_min_tokens("claude-opus-4-1-20250805"), 1024);
        assert_eq!(anthropic_min_tokens("claude-opus-4-20250514"), 1024);
        assert_eq!(anthropic_min_tokens("claude-3-7-sonnet-20250219"), 1024);
        assert_eq!(anthropic_min_tokens("some-other-model"), 1024);
    }

    #[test]
    fn hashing_ignores_how_bytes_are_split() {
        let scope = Scope {
            provider: "openai",
            api_key: "k",
            model: "m",
            cache_key: None,
        };
        let mut a = PrefixHash::new(&scope);
        a.write(b"hello world");
        let mut b = PrefixHash::new(&scope);
        b.write(b"hello");
        b.write(b" world");
        assert_eq!(a.finish(), b.finish());
        let other = Scope {
            cache_key: Some("x"),
            ..scope
        };
        let mut c = PrefixHash::new(&other);
        c.write(b"hello world");
        assert_ne!(a.finish(), c.finish());
    }

    #[test]
    fn eviction_keeps_the_bound() {
        let cache = PromptCache::new(None);
        let commit: Commit = (0..MAX_CACHE_ENTRIES as u128 + 5)
            .map(|k| (k, Duration::from_secs(60 + (k % 1000) as u64)))
            .collect();
        cache.commit(&commit);
        assert!(cache.len() <= MAX_CACHE_ENTRIES);
        assert!(cache.len() >= MAX_CACHE_ENTRIES * 8 / 10);
    }
}
