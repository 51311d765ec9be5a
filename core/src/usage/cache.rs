//! The cache figures of a usage record: what the provider's prompt cache
//! saved, what a broken prefix wasted, and the cache bust that wasted it;
//! and whether the sidecar's own response cache answered the request, with
//! what that saved (docs/response-cache.md).
//!
//! The sidecar's prefix-stability monitor ([`crate::prompt_cache`]) finds
//! busts; pricing them is [`crate::catalog::ModelPrices::cache_saved`] and
//! [`crate::catalog::ModelPrices::cache_wasted`]. No prompt text is ever
//! part of these types: a bust names a section, an offset and the kind of
//! change.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{money::Usd, tokens::TokenCounts};

/// Why a request counts as a cache bust.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BustReason {
    /// (a) The prompt matched a recent one for a stretch, then diverged
    /// before the point up to which the earlier request was cached.
    PrefixDiverged,
    /// (b) An early part differs (a timestamp at the start of the system
    /// prompt, a changed or reordered tool) and is followed by content the
    /// two requests share: the provider's prefix cache cannot serve it.
    VolatilePrefix,
    /// (c) The prefix was stable and fresh, yet the provider read far fewer
    /// tokens from its cache than the shared prefix should have given.
    ProviderMiss,
}

/// What changed where the prefix diverged, where it can be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A timestamp-like run (date and time) changed.
    Timestamp,
    /// A date-like run changed.
    Date,
    /// A UUID- or hex-id-like run changed.
    Uuid,
    /// Another run of digits changed (a counter, a number).
    Number,
    /// Only whitespace differs.
    Whitespace,
    /// The same tool definitions, in another order.
    ToolsReordered,
    /// A tool definition was added, removed or changed.
    ToolsChanged,
    /// The system prompt (or instructions) shares nothing with the earlier one.
    SystemReplaced,
    /// Content changed in a way not told apart above.
    Content,
    /// Nothing in the request changed (reason [`BustReason::ProviderMiss`]).
    None,
}

/// One cache bust: where the prefix broke, what changed, what it lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheBust {
    /// Why it is a bust.
    pub reason: BustReason,
    /// Where the prefix first diverged, in the provider's rendering order:
    /// `tools[2]`, `system`, `system[1]`, `messages[3].content[0]`,
    /// `instructions`, `input[4]`; empty for [`BustReason::ProviderMiss`].
    pub section: String,
    /// Byte offset of the divergence inside that section's value (as sent),
    /// at the monitor's resolution.
    pub offset: u64,
    /// What changed.
    pub change: ChangeKind,
    /// Tokens of content shared with the earlier request that the provider
    /// could not serve from its cache (estimated from byte lengths and the
    /// request's billed input).
    pub lost_tokens: u64,
}

/// The prompt-cache figures of one record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheFigures {
    /// What the cache reads would have cost at the uncached input price,
    /// minus what they cost. Zero when unpriced.
    #[serde(default, skip_serializing_if = "Usd::is_zero")]
    pub saved: Usd,
    /// What the bust cost: the lost tokens at the price they were billed at
    /// (uncached input or cache write) minus the cache-read price.
    #[serde(default, skip_serializing_if = "Usd::is_zero")]
    pub wasted: Usd,
    /// The bust this request suffered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bust: Option<CacheBust>,
    /// The sidecar's response cache answered the request: no provider was
    /// called, it cost $0 and was charged to no budget.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub response_hit: bool,
    /// With `response_hit`: what the stored answer cost when the provider
    /// made it (its usage at the catalog's price), which this request did
    /// not spend again. Zero when unpriced.
    #[serde(default, skip_serializing_if = "Usd::is_zero")]
    pub response_saved: Usd,
    /// With `response_hit`: the semantic cache answered with the stored
    /// answer to a similar prompt, this alike (cosine, parts per 10,000);
    /// 0 for an exact hit.
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub response_similarity: u16,
    /// This record is the semantic cache's own embedding call (a cost of
    /// the cache, set against what it saved).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub embedding: bool,
    /// With `embedding`: what the call cost (the record's cost; zero when
    /// unpriced, e.g. the self-hosted embedder).
    #[serde(default, skip_serializing_if = "Usd::is_zero")]
    pub embedding_cost: Usd,
}

/// Prompt-cache figures folded over records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheTotals {
    /// Sum of [`CacheFigures::saved`].
    #[serde(default)]
    pub saved: Usd,
    /// Sum of [`CacheFigures::wasted`].
    #[serde(default)]
    pub wasted: Usd,
    /// Records with a bust.
    #[serde(default)]
    pub busts: u64,
    /// Requests the response cache answered.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub response_hits: u64,
    /// Sum of [`CacheFigures::response_saved`].
    #[serde(default, skip_serializing_if = "Usd::is_zero")]
    pub response_saved: Usd,
    /// Of `response_hits`, those the semantic cache answered.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub semantic_hits: u64,
    /// The semantic cache's embedding calls.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub embedding_calls: u64,
    /// Sum of [`CacheFigures::embedding_cost`]: the net saving of the
    /// response cache is `response_saved - embedding_cost`.
    #[serde(default, skip_serializing_if = "Usd::is_zero")]
    pub embedding_cost: Usd,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

// === impl BustReason ===

impl BustReason {
    /// Every reason, in label order.
    pub const ALL: [BustReason; 3] = [
        BustReason::PrefixDiverged,
        BustReason::VolatilePrefix,
        BustReason::ProviderMiss,
    ];

    /// The metric label and wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BustReason::PrefixDiverged => "prefix_diverged",
            BustReason::VolatilePrefix => "volatile_prefix",
            BustReason::ProviderMiss => "provider_miss",
        }
    }

    /// Inverse of [`BustReason::as_str`].
    pub fn from_name(s: &str) -> Option<BustReason> {
        BustReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for BustReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl ChangeKind ===

impl ChangeKind {
    /// Every kind, in label order.
    pub const ALL: [ChangeKind; 10] = [
        ChangeKind::Timestamp,
        ChangeKind::Date,
        ChangeKind::Uuid,
        ChangeKind::Number,
        ChangeKind::Whitespace,
        ChangeKind::ToolsReordered,
        ChangeKind::ToolsChanged,
        ChangeKind::SystemReplaced,
        ChangeKind::Content,
        ChangeKind::None,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Timestamp => "timestamp",
            ChangeKind::Date => "date",
            ChangeKind::Uuid => "uuid",
            ChangeKind::Number => "number",
            ChangeKind::Whitespace => "whitespace",
            ChangeKind::ToolsReordered => "tools_reordered",
            ChangeKind::ToolsChanged => "tools_changed",
            ChangeKind::SystemReplaced => "system_replaced",
            ChangeKind::Content => "content",
            ChangeKind::None => "none",
        }
    }

    /// Inverse of [`ChangeKind::as_str`].
    pub fn from_name(s: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A phrase for conditions and reports, e.g. `a timestamp-like value changed`.
    pub const fn describe(self) -> &'static str {
        match self {
            ChangeKind::Timestamp => "a timestamp-like value changed",
            ChangeKind::Date => "a date-like value changed",
            ChangeKind::Uuid => "a UUID-like value changed",
            ChangeKind::Number => "a number changed",
            ChangeKind::Whitespace => "only whitespace changed",
            ChangeKind::ToolsReordered => "tool definitions were reordered",
            ChangeKind::ToolsChanged => "a tool definition changed",
            ChangeKind::SystemReplaced => "a different system prompt",
            ChangeKind::Content => "content changed",
            ChangeKind::None => "no change in the request",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl CacheFigures ===

impl CacheFigures {
    /// True when there is nothing to record.
    pub fn is_empty(&self) -> bool {
        *self == CacheFigures::default()
    }
}

// === impl CacheTotals ===

impl CacheTotals {
    /// Fold one record's figures in.
    pub fn add(&mut self, f: &CacheFigures) {
        self.saved = self.saved.saturating_add(f.saved);
        self.wasted = self.wasted.saturating_add(f.wasted);
        if f.bust.is_some() {
            self.busts += 1;
        }
        if f.response_hit {
            self.response_hits += 1;
            if f.response_similarity > 0 {
                self.semantic_hits += 1;
            }
        }
        self.response_saved = self.response_saved.saturating_add(f.response_saved);
        if f.embedding {
            self.embedding_calls += 1;
        }
        self.embedding_cost = self.embedding_cost.saturating_add(f.embedding_cost);
    }

    /// `self += other`.
    pub fn merge(&mut self, other: &CacheTotals) {
        self.saved = self.saved.saturating_add(other.saved);
        self.wasted = self.wasted.saturating_add(other.wasted);
        self.busts = self.busts.saturating_add(other.busts);
        self.response_hits = self.response_hits.saturating_add(other.response_hits);
        self.response_saved = self.response_saved.saturating_add(other.response_saved);
        self.semantic_hits = self.semantic_hits.saturating_add(other.semantic_hits);
        self.embedding_calls = self.embedding_calls.saturating_add(other.embedding_calls);
        self.embedding_cost = self.embedding_cost.saturating_add(other.embedding_cost);
    }

    /// What the response cache saved net of its embedding calls' cost
    /// (negative when the embeddings cost more than the hits saved).
    pub fn response_net_saved(&self) -> Usd {
        self.response_saved.saturating_sub(self.embedding_cost)
    }
}

/// The share of a request's (or a total's) input read from the provider's
/// cache: cache read / (cache read + cache write + uncached input), in
/// tenths of a percent, rounded down. `None` when there was no input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HitRatio(u16);

// === impl HitRatio ===

impl HitRatio {
    /// The hit ratio of `usage`.
    pub fn of(usage: &TokenCounts) -> Option<HitRatio> {
        let total = u128::from(usage.total_input_tokens());
        if total == 0 {
            return None;
        }
        let permille = u128::from(usage.cache_read_tokens).min(total) * 1000 / total;
        Some(HitRatio(u16::try_from(permille).unwrap_or(1000)))
    }

    /// Tenths of a percent, 0..=1000.
    pub const fn permille(self) -> u16 {
        self.0
    }

    /// As a decimal fraction with three digits, e.g. `0.873` (for status
    /// fields and JSON, which carry no floats).
    pub fn as_decimal(self) -> String {
        format!("{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// `87.3%`.
impl fmt::Display for HitRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}%", self.0 / 10, self.0 % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_ratio_is_reads_over_all_input() {
        let u = TokenCounts {
            input_tokens: 100,
            output_tokens: 5_000,
            cache_read_tokens: 873,
            cache_write_tokens: 27,
            cache_write_1h_tokens: 0,
        };
        let r = HitRatio::of(&u).unwrap();
        assert_eq!(
            (r.permille(), r.as_decimal(), r.to_string()),
            (873, "0.873".into(), "87.3%".into())
        );
        assert_eq!(
            HitRatio::of(&TokenCounts {
                output_tokens: 9,
                ..TokenCounts::default()
            }),
            None
        );
        let all = TokenCounts {
            cache_read_tokens: u64::MAX,
            ..TokenCounts::default()
        };
        assert_eq!(HitRatio::of(&all).unwrap().as_decimal(), "1.000");
    }

    #[test]
    fn totals_fold_figures() {
        let bust = CacheBust {
            reason: BustReason::VolatilePrefix,
            section: "system".into(),
            offset: 12,
            change: ChangeKind::Timestamp,
            lost_tokens: 4000,
        };
        let mut t = CacheTotals::default();
        t.add(&CacheFigures {
            saved: Usd::from_picos(5),
            wasted: Usd::from_picos(7),
            bust: Some(bust.clone()),
            ..CacheFigures::default()
        });
        t.add(&CacheFigures {
            saved: Usd::from_picos(1),
            response_hit: true,
            response_saved: Usd::from_picos(40),
            ..CacheFigures::default()
        });
        assert_eq!(
            (t.saved, t.wasted, t.busts),
            (Usd::from_picos(6), Usd::from_picos(7), 1)
        );
        assert_eq!(
            (t.response_hits, t.response_saved),
            (1, Usd::from_picos(40))
        );
        let mut u = t.clone();
        u.merge(&t);
        assert_eq!(u.busts, 2);
        for r in BustReason::ALL {
            assert_eq!(BustReason::from_name(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for k in ChangeKind::ALL {
            assert_eq!(ChangeKind::from_name(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(
            serde_json::to_string(&bust).unwrap(),
            r#"{"reason":"volatile_prefix","section":"system","offset":12,"change":"timestamp","lost_tokens":4000}"#
        );
    }
}
