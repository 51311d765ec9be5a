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
    /// (see [`PricePerMtok::cost`]; exact for every real price).
    pub fn cost(&self, usage: &TokenCounts) -> Usd {
        let total_input = usage.total_input_tokens();
        let input = self.input.rate(total_input);
        let rate = |p: &Option<Price>| p.as_ref().map_or(input, |p| p.rate(total_input));
        input.cost(usage.input_tokens)
            + rate(&self.output).cost(usage.output_tokens)
            + rate(&self.cache_read).cost(usage.cache_read_tokens)
            + rate(&self.cache_write).cost(usage.cache_write_tokens)
    }
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
}
