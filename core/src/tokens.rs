//! [`TokenCounts`]: the four disjoint token kinds of one request, which
//! prices apply to and every total adds up. A leaf: it depends on nothing
//! else in the crate.

use serde::{Deserialize, Serialize};

/// Tokens billed for one request, in four disjoint kinds that add up to
/// everything the provider billed.
///
/// Adapters convert provider usage into this: OpenAI's `prompt_tokens`
/// *includes* its `cached_tokens` (so `input_tokens = prompt_tokens -
/// cached_tokens`, `cache_read_tokens = cached_tokens`), Anthropic's
/// `input_tokens` already *excludes* `cache_creation_input_tokens` and
/// `cache_read_input_tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenCounts {
    /// Uncached input (prompt) tokens only.
    pub input_tokens: u64,
    /// Output (completion) tokens, reasoning tokens included.
    pub output_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Of [`TokenCounts::cache_write_tokens`], those written with a 1-hour
    /// TTL (Anthropic's `cache_creation.ephemeral_1h_input_tokens`), which
    /// bill at a higher rate than 5-minute writes. Not a fifth kind: a part
    /// of the fourth, at most `cache_write_tokens`.
    #[serde(skip_serializing_if = "is_zero")]
    pub cache_write_1h_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

// === impl TokenCounts ===

impl TokenCounts {
    /// All input tokens: uncached + cache reads + cache writes (saturating).
    /// This is what selects a tier.
    pub const fn total_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }

    /// All tokens of all four kinds (saturating).
    pub const fn total_tokens(&self) -> u64 {
        self.total_input_tokens().saturating_add(self.output_tokens)
    }
}
