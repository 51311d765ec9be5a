//! Per-model prices and the cost arithmetic of [`TokenCounts`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, de};

use crate::{
    money::{PricePerMtok, PriceVisitor, Usd},
    tokens::TokenCounts,
};

/// A price per million tokens: flat, or tiered by the request's input size.
///
/// Serde form: a flat price is a decimal string (or a number, see
/// [`PricePerMtok`]): `"3.00"`; a tiered price is
/// `{"base": "3.00", "tiers": [{"start": 200000, "price": "6.00"}]}`, the same
/// shape as genai-prices.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Price {
    /// The same price whatever the request size.
    Flat(PricePerMtok),
    /// A price that depends on the request's total input tokens.
    Tiered(TieredPrice),
}

/// A tiered price with genai-prices' threshold ("cliff") semantics: the
/// request's **total input tokens** (uncached input + cache reads + cache
/// writes) select one rate, which then applies to **all** tokens of the kind
/// being priced — not only to the tokens above the threshold.
///
/// The rate is the `price` of the tier with the greatest `start` that the
/// total input tokens strictly exceed, or `base` if they exceed none: with a
/// tier at 200,000, a request with 200,000 input tokens pays `base` and one
/// with 200,001 pays the tier price for every token. The output price of a
/// tiered model is selected by the *input* size too. The order of `tiers`
/// does not matter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TieredPrice {
    /// The rate until the first tier.
    pub base: PricePerMtok,
    /// Higher tiers.
    pub tiers: Vec<Tier>,
}

/// One tier of a [`TieredPrice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The tier applies when the request's total input tokens exceed this.
    pub start: u64,
    /// The rate for all tokens of the kind, in this tier.
    pub price: PricePerMtok,
}

/// The prices of one model, per million tokens of each kind.
///
/// A kind with no price of its own is billed at the input price (for the same
/// request size). That is how providers without a prompt-cache discount bill
/// cached tokens, and it keeps the cost of input-only models (embeddings:
/// the data has no output price, and they produce no output tokens)
/// well-defined. It is never $0.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrices {
    /// Uncached input tokens.
    pub input: Price,
    /// Output tokens; `None`: billed at the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Price>,
    /// Cache reads; `None`: billed at the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<Price>,
    /// Cache writes; `None`: billed at the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Price>,
}

// === impl Price ===

impl Price {
    /// The rate that applies to a request with `total_input_tokens` input
    /// tokens (see [`TieredPrice`]).
    pub fn rate(&self, total_input_tokens: u64) -> PricePerMtok {
        match self {
            Price::Flat(p) => *p,
            Price::Tiered(t) => t.rate(total_input_tokens),
        }
    }
}

impl From<PricePerMtok> for Price {
    fn from(p: PricePerMtok) -> Price {
        Price::Flat(p)
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Price, D::Error> {
        struct Visitor;

        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Price;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a price in USD per million tokens (e.g. \"0.075\") or a tiered price \
                     {base, tiers: [{start, price}]}",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Price, E> {
                PriceVisitor.visit_str(v).map(Price::Flat)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Price, E> {
                PriceVisitor.visit_u64(v).map(Price::Flat)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Price, E> {
                PriceVisitor.visit_i64(v).map(Price::Flat)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Price, E> {
                PriceVisitor.visit_f64(v).map(Price::Flat)
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Price, A::Error> {
                TieredPrice::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Price::Tiered)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

// === impl TieredPrice ===

impl TieredPrice {
    /// The rate for a request with `total_input_tokens` input tokens.
    pub fn rate(&self, total_input_tokens: u64) -> PricePerMtok {
        self.tiers
            .iter()
            .filter(|t| total_input_tokens > t.start)
            .max_by_key(|t| t.start)
            .map_or(self.base, |t| t.price)
    }
}

// === impl ModelPrices ===

impl ModelPrices {
    /// Flat input and output prices, cache kinds at the input price.
    pub fn flat(input: PricePerMtok, output: PricePerMtok) -> ModelPrices {
        ModelPrices {
            input: Price::Flat(input),
            output: Some(Price::Flat(output)),
            cache_read: None,
            cache_write: None,
        }
    }

    /// The cost of `usage`: each kind's tokens at that kind's rate for the
    /// request's total input size, each product rounded up to the pico-USD
    /// (see [`PricePerMtok::cost`]; exact for every real price). Cache
    /// writes with a 1-hour TTL ([`TokenCounts::cache_write_1h_tokens`])
    /// bill at [`ModelPrices::cache_write_1h_rate`].
    pub fn cost(&self, usage: &TokenCounts) -> Usd {
        let r = self.rates(usage.total_input_tokens());
        let write_1h = usage.cache_write_1h_tokens.min(usage.cache_write_tokens);
        r.input.cost(usage.input_tokens)
            + r.output.cost(usage.output_tokens)
            + r.cache_read.cost(usage.cache_read_tokens)
            + r.cache_write.cost(usage.cache_write_tokens - write_1h)
            + r.cache_write_1h.cost(write_1h)
    }

    /// What the prompt cache saved on `usage`: its cache reads at the
    /// uncached input rate minus what they cost at the cache-read rate
    /// (zero when reads are not cheaper, e.g. a model without a discount).
    pub fn cache_saved(&self, usage: &TokenCounts) -> Usd {
        let r = self.rates(usage.total_input_tokens());
        let reads = usage.cache_read_tokens;
        r.input
            .cost(reads)
            .saturating_sub(r.cache_read.cost(reads))
            .max(Usd::ZERO)
    }

    /// What a cache bust wasted on `usage`: `lost_tokens` tokens that the
    /// cache could have served were billed above the cache-read rate.
    /// They are taken first from the cache writes (content written again
    /// that an intact prefix would have read: 5-minute writes, then 1-hour
    /// ones), then from the uncached input, never more than were billed so;
    /// each part costs its rate minus the cache-read rate.
    pub fn cache_wasted(&self, usage: &TokenCounts, lost_tokens: u64) -> Usd {
        let r = self.rates(usage.total_input_tokens());
        let write_1h = usage.cache_write_1h_tokens.min(usage.cache_write_tokens);
        let parts = [
            (usage.cache_write_tokens - write_1h, r.cache_write),
            (write_1h, r.cache_write_1h),
            (usage.input_tokens, r.input),
        ];
        let mut left = lost_tokens;
        let mut wasted = Usd::ZERO;
        for (billed, rate) in parts {
            let n = left.min(billed);
            left -= n;
            let extra = rate.cost(n).saturating_sub(r.cache_read.cost(n));
            wasted = wasted.saturating_add(extra.max(Usd::ZERO));
        }
        wasted
    }

    /// The rate of 1-hour cache writes for a request of
    /// `total_input_tokens`: twice the uncached input rate, Anthropic's
    /// published rule ("1-hour cache write tokens are 2 times the base
    /// input tokens price", <https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#pricing>);
    /// the catalog has no price of its own for them.
    pub fn cache_write_1h_rate(&self, total_input_tokens: u64) -> PricePerMtok {
        self.rates(total_input_tokens).cache_write_1h
    }

    fn rates(&self, total_input: u64) -> Rates {
        let input = self.input.rate(total_input);
        let rate = |p: &Option<Price>| p.as_ref().map_or(input, |p| p.rate(total_input));
        Rates {
            input,
            output: rate(&self.output),
            cache_read: rate(&self.cache_read),
            cache_write: rate(&self.cache_write),
            cache_write_1h: PricePerMtok::from_nanos(input.nanos().saturating_mul(2)),
        }
    }
}

/// The rates that apply to one request (its size picked the tiers).
struct Rates {
    input: PricePerMtok,
    output: PricePerMtok,
    cache_read: PricePerMtok,
    cache_write: PricePerMtok,
    cache_write_1h: PricePerMtok,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(nanos: u64) -> PricePerMtok {
        PricePerMtok::from_nanos(nanos)
    }

    fn tiered(base: u64, tiers: &[(u64, u64)]) -> Price {
        Price::Tiered(TieredPrice {
            base: p(base),
            tiers: tiers
                .iter()
                .map(|&(start, price)| Tier {
                    start,
                    price: p(price),
                })
                .collect(),
        })
    }

    #[test]
    fn tier_boundary_is_strictly_greater() {
        let t = tiered(3_000_000_000, &[(200_000, 6_000_000_000)]);
        assert_eq!(t.rate(0), p(3_000_000_000));
        assert_eq!(t.rate(200_000), p(3_000_000_000));
        assert_eq!(t.rate(200_001), p(6_000_000_000));
    }

    #[test]
    fn tiers_in_any_order() {
        let t = tiered(1, &[(500, 3), (100, 2)]);
        assert_eq!(t.rate(50), p(1));
        assert_eq!(t.rate(101), p(2));
        assert_eq!(t.rate(501), p(3));
    }

    #[test]
    fn missing_kinds_fall_back_to_input() {
        // input $2/MTok, nothing else: 1M tokens of each of the 4 kinds = $8.
        let prices = ModelPrices {
            input: Price::Flat(p(2_000_000_000)),
            output: None,
            cache_read: None,
            cache_write: None,
        };
        let usage = TokenCounts {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            cache_read_tokens: 1_000_000,
            cache_write_tokens: 1_000_000,
            cache_write_1h_tokens: 0,
        };
        assert_eq!(prices.cost(&usage), Usd::from_dollars(8));
        assert_eq!(prices.cost(&TokenCounts::default()), Usd::ZERO);
    }

    #[test]
    fn usage_totals_saturate() {
        let u = TokenCounts {
            input_tokens: u64::MAX,
            output_tokens: 1,
            cache_read_tokens: 1,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
        };
        assert_eq!(u.total_input_tokens(), u64::MAX);
        assert_eq!(u.total_tokens(), u64::MAX);
    }

    #[test]
    fn serde_shapes() {
        let prices = ModelPrices {
            input: tiered(3_000_000_000, &[(200_000, 6_000_000_000)]),
            output: Some(Price::Flat(p(15_000_000_000))),
            cache_read: Some(Price::Flat(p(300_000_000))),
            cache_write: None,
        };
        let json = serde_json::to_string(&prices).unwrap();
        assert_eq!(
            json,
            r#"{"input":{"base":"3.00","tiers":[{"start":200000,"price":"6.00"}]},"output":"15.00","cache_read":"0.30"}"#
        );
        assert_eq!(serde_json::from_str::<ModelPrices>(&json).unwrap(), prices);
        // Numbers are accepted too (YAML `input: 3`).
        let from_numbers: ModelPrices = serde_json::from_str(
            r#"{"input":{"base":3,"tiers":[{"start":200000,"price":6}]},"output":15,"cache_read":0.3}"#,
        )
        .unwrap();
        assert_eq!(from_numbers, prices);

        let err = serde_json::from_str::<ModelPrices>(r#"{"input":"1e3"}"#).unwrap_err();
        assert!(err.to_string().contains("not a decimal price"), "{err}");
        let err = serde_json::from_str::<ModelPrices>(r#"{"input":"1","outptu":"2"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err =
            serde_json::from_str::<ModelPrices>(r#"{"input":{"base":"1","tier":[]}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");

        let usage: TokenCounts =
            serde_json::from_str(r#"{"input_tokens":5,"output_tokens":7}"#).unwrap();
        assert_eq!(
            usage,
            TokenCounts {
                input_tokens: 5,
                output_tokens: 7,
                ..TokenCounts::default()
            }
        );
    }

    /// Claude Sonnet 4.5's published prices: $3 input, $15 output, $0.30
    /// cache read, $3.75 cache write (5 minutes) per million tokens.
    fn sonnet() -> ModelPrices {
        ModelPrices {
            input: tiered(3_000_000_000, &[(200_000, 6_000_000_000)]),
            output: Some(Price::Flat(p(15_000_000_000))),
            cache_read: Some(tiered(300_000_000, &[(200_000, 600_000_000)])),
            cache_write: Some(tiered(3_750_000_000, &[(200_000, 7_500_000_000)])),
        }
    }

    fn usd(s: &str) -> Usd {
        s.parse().unwrap()
    }

    #[test]
    fn one_hour_cache_writes_bill_at_twice_the_input_rate() {
        let u = TokenCounts {
            cache_write_tokens: 100_000,
            cache_write_1h_tokens: 40_000,
            ..TokenCounts::default()
        };
        // 60k 5-minute writes at $3.75 + 40k 1-hour writes at $6.
        assert_eq!(sonnet().cost(&u), usd("0.225") + usd("0.24"));
        assert_eq!(sonnet().cache_write_1h_rate(0), p(6_000_000_000));
        // Above 200k input tokens the tier doubles the input rate, so the
        // 1-hour rate too: 250k 1-hour writes at $12.
        let big = TokenCounts {
            cache_write_tokens: 250_000,
            cache_write_1h_tokens: 250_000,
            ..TokenCounts::default()
        };
        assert_eq!(sonnet().cost(&big), usd("3"));
        // More 1-hour tokens than writes (a lying upstream) bill no more
        // than every write at the 1-hour rate.
        let lie = TokenCounts {
            cache_write_tokens: 10,
            cache_write_1h_tokens: 1_000_000,
            ..TokenCounts::default()
        };
        assert_eq!(sonnet().cost(&lie), p(6_000_000_000).cost(10));
    }

    #[test]
    fn cache_saved_is_reads_at_input_minus_reads_at_read_rate() {
        let u = TokenCounts {
            input_tokens: 1_000,
            cache_read_tokens: 100_000,
            ..TokenCounts::default()
        };
        // 100k reads: $0.30 at input price, $0.03 at the read price.
        assert_eq!(sonnet().cache_saved(&u), usd("0.27"));
        // No discount for cache reads: nothing saved.
        assert_eq!(
            ModelPrices::flat(p(1_000_000_000), p(2_000_000_000)).cache_saved(&u),
            Usd::ZERO
        );
        assert_eq!(sonnet().cache_saved(&TokenCounts::default()), Usd::ZERO);
    }

    #[test]
    fn cache_wasted_takes_writes_first_then_uncached_input() {
        let u = TokenCounts {
            input_tokens: 50_000,
            cache_write_tokens: 30_000,
            cache_write_1h_tokens: 10_000,
            cache_read_tokens: 5_000,
            ..TokenCounts::default()
        };
        // 20k 5-minute writes at $3.75-$0.30, 10k 1-hour writes at
        // $6-$0.30, 15k uncached at $3-$0.30.
        let want = usd("0.069") + usd("0.057") + usd("0.0405");
        assert_eq!(sonnet().cache_wasted(&u, 45_000), want);
        // Never more than was billed above the read price.
        let all = usd("0.069") + usd("0.057") + usd("0.135");
        assert_eq!(sonnet().cache_wasted(&u, 1_000_000), all);
        assert_eq!(sonnet().cache_wasted(&u, 0), Usd::ZERO);
    }
}
