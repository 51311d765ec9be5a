//! The shapes `generated.rs` is written in: compact, `'static`, built at
//! compile time. [`super::Catalog`] turns them into the public types once.

use super::clause::Clause;

/// A provider of the price data.
#[derive(Debug)]
pub(crate) struct RawProvider {
    /// genai-prices provider id, e.g. `openai`.
    pub id: &'static str,
    /// Display name, e.g. `OpenAI`.
    pub name: &'static str,
    /// Which model names this provider is the vendor of.
    pub model_match: Option<&'static Clause>,
    /// Which provider identifiers (hints, name prefixes) mean this provider.
    pub provider_match: Option<&'static Clause>,
    /// Providers whose models this one also serves at the same prices.
    pub fallbacks: &'static [&'static str],
    /// The models, in data order (the first whose clause matches wins).
    pub models: &'static [RawModel],
}

/// A model of the price data.
#[derive(Debug)]
pub(crate) struct RawModel {
    /// genai-prices model id.
    pub id: &'static str,
    /// Which names mean this model.
    pub m: &'static Clause,
    /// Context window in tokens, if known.
    pub ctx: Option<u64>,
    /// Deprecated by the provider but still served.
    pub dep: bool,
    /// The prices.
    pub p: RawPrices,
}

/// Input, output, cache-read and cache-write prices.
#[derive(Debug)]
pub(crate) struct RawPrices(
    pub RawPrice,
    pub Option<RawPrice>,
    pub Option<RawPrice>,
    pub Option<RawPrice>,
);

/// A price in nano-USD per million tokens.
#[derive(Debug)]
pub(crate) enum RawPrice {
    /// Flat.
    F(u64),
    /// Tiered: base, then `(start, price)` in ascending `start`.
    T(u64, &'static [(u64, u64)]),
}
