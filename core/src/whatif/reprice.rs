//! Re-pricing: what a token mix costs at other prices or on other models.
//!
//! A [`Repricer`] is a [`PriceBook`] (the built-in catalog under the
//! `--prices` overrides) plus a model map (`--model A=B`). Each kind of
//! token is billed at the target model's own rate for it: cache reads at
//! its cache-read rate, cache writes at its cache-write rate (1-hour writes
//! at twice its input rate), exactly as [`ModelPrices::cost`] bills a live
//! request. Tiered prices (e.g. `claude-sonnet-4-5` above 200k input tokens,
//! <https://docs.anthropic.com/en/docs/about-claude/pricing>) pick their
//! rate from one request's total input, so they are exact per request and
//! only approximate on aggregates ([`Repricer::is_tiered`] says when).
//! An unknown model is unpriced (`None`), never $0.

use crate::{
    catalog::{ModelPrices, Price, PriceBook, PriceOverride},
    money::Usd,
    tokens::TokenCounts,
};

/// Prices and a model map for a what-if.
#[derive(Clone, Debug)]
pub struct Repricer {
    book: PriceBook,
    map: Vec<(String, String)>,
}

// === impl Repricer ===

impl Repricer {
    /// The catalog under `overrides`, with `map` (`from`, `to`) pairs: a
    /// model named `from` (case-insensitive, exact) is priced as `to`.
    pub fn new(overrides: Vec<PriceOverride>, map: Vec<(String, String)>) -> Self {
        Self {
            book: PriceBook::new(overrides),
            map,
        }
    }

    /// The price book.
    pub fn book(&self) -> &PriceBook {
        &self.book
    }

    /// The model `served` is moved to (itself when the map does not name it).
    pub fn target<'a>(&'a self, served: &'a str) -> &'a str {
        self.map
            .iter()
            .find(|(from, _)| from.eq_ignore_ascii_case(served))
            .map_or(served, |(_, to)| to.as_str())
    }

    /// The cost of one request's (or an aggregate's) `usage` on `model`,
    /// priced as served through the `hint` API (`anthropic`, `openai`, as
    /// the sidecar prices; `None`: the catalog's preferred vendors). A
    /// request without tokens costs $0 (as the sidecar records it); an
    /// unknown model is `None`.
    pub fn cost(&self, hint: Option<&str>, model: &str, usage: &TokenCounts) -> Option<Usd> {
        let prices = self.book.price(hint, model).prices()?;
        if *usage == TokenCounts::default() {
            return Some(Usd::ZERO);
        }
        Some(prices.cost(usage))
    }

    /// Whether `model` has a tiered price for any kind of token (then a
    /// cost of summed tokens is only an approximation of the sum of the
    /// per-request costs).
    pub fn is_tiered(&self, hint: Option<&str>, model: &str) -> bool {
        self.book.price(hint, model).prices().is_some_and(has_tiers)
    }
}

fn has_tiers(p: &ModelPrices) -> bool {
    std::iter::once(Some(&p.input))
        .chain([
            p.output.as_ref(),
            p.cache_read.as_ref(),
            p.cache_write.as_ref(),
        ])
        .flatten()
        .any(|p| matches!(p, Price::Tiered(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::PricePerMtok;

    fn tokens(input: u64, output: u64, read: u64, write: u64) -> TokenCounts {
        TokenCounts {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: read,
            cache_write_tokens: write,
            cache_write_1h_tokens: 0,
        }
    }

    fn usd(s: &str) -> Usd {
        s.parse().unwrap()
    }

    #[test]
    fn opus_to_sonnet_by_hand_including_a_request_over_200k_input() {
        let r = Repricer::new(
            vec![],
            vec![("claude-opus-4-1".into(), "claude-sonnet-4-5".into())],
        );
        assert_eq!(r.target("Claude-Opus-4-1"), "claude-sonnet-4-5");
        assert_eq!(r.target("claude-haiku-4-5"), "claude-haiku-4-5");
        let small = tokens(10_000, 1_000, 50_000, 2_000);
        // Opus 4.1: $15 in, $75 out, $1.50 read, $18.75 write per MTok.
        // 0.15 + 0.075 + 0.075 + 0.0375
        assert_eq!(
            r.cost(Some("anthropic"), "claude-opus-4-1", &small),
            Some(usd("0.3375"))
        );
        // Sonnet 4.5 at base rates ($3/$15/$0.30/$3.75): 62k input total.
        // 0.03 + 0.015 + 0.015 + 0.0075
        assert_eq!(
            r.cost(Some("anthropic"), r.target("claude-opus-4-1"), &small),
            Some(usd("0.0675"))
        );
        // 150k + 60k read + 0 write = 210k input > 200k: every token of the
        // request at the tier ($6/$22.50/$0.60/$7.50 per MTok).
        let large = tokens(150_000, 2_000, 60_000, 0);
        // 0.9 + 0.045 + 0.036
        assert_eq!(
            r.cost(Some("anthropic"), "claude-sonnet-4-5", &large),
            Some(usd("0.981"))
        );
        assert!(r.is_tiered(Some("anthropic"), "claude-sonnet-4-5"));
        assert!(!r.is_tiered(Some("anthropic"), "claude-opus-4-1"));
    }

    #[test]
    fn cache_reads_and_writes_bill_at_each_models_own_rates() {
        let r = Repricer::new(vec![], vec![]);
        let reads = tokens(0, 0, 1_000_000, 0);
        let writes = tokens(0, 0, 0, 1_000_000);
        assert_eq!(r.cost(None, "claude-opus-4-1", &reads), Some(usd("1.50")));
        assert_eq!(r.cost(None, "claude-haiku-4-5", &reads), Some(usd("0.10")));
        assert_eq!(r.cost(None, "claude-opus-4-1", &writes), Some(usd("18.75")));
        assert_eq!(r.cost(None, "claude-haiku-4-5", &writes), Some(usd("1.25")));
        // 1-hour writes: twice the model's input rate.
        let mut w1h = writes;
        w1h.cache_write_1h_tokens = 1_000_000;
        assert_eq!(r.cost(None, "claude-haiku-4-5", &w1h), Some(usd("2.00")));
    }

    #[test]
    fn unknown_models_are_unpriced_never_zero_and_overrides_win() {
        let r = Repricer::new(
            vec![PriceOverride {
                model: "my-finetune-*".into(),
                prices: ModelPrices::flat(
                    PricePerMtok::from_nanos(2_000_000_000),
                    PricePerMtok::from_nanos(8_000_000_000),
                ),
            }],
            vec![("gpt-4o".into(), "no-such-model-x".into())],
        );
        let t = tokens(1_000, 500, 0, 0);
        assert_eq!(r.cost(None, r.target("gpt-4o"), &t), None);
        assert_eq!(r.cost(None, "my-finetune-v2", &t), Some(usd("0.006")));
        // An empty request costs nothing on a priced model only.
        assert_eq!(
            r.cost(None, "my-finetune-v2", &TokenCounts::default()),
            Some(Usd::ZERO)
        );
        assert_eq!(
            r.cost(None, "no-such-model-x", &TokenCounts::default()),
            None
        );
    }
}
