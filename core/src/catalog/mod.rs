//! Model prices: the built-in catalog, price overrides, and cost arithmetic.
//!
//! - [`Catalog::builtin`]: prices of ~1,300 models from 34 providers,
//!   generated at build time from the genai-prices data (pydantic/genai-prices,
//!   MIT; a copy with its licence is in `core/data/genai-prices/`). The
//!   generator and its rules are in `xtask/src/generate/catalog.rs`; regenerate
//!   with `cargo xtask gen`.
//! - [`PriceBook`]: the catalog with RoutingPolicy overrides on top; what
//!   the sidecar and the operator price usage with. An unknown model is
//!   [`Pricing::Unpriced`] and [`PriceBook::cost`] returns `None`: it is
//!   reported, never counted as $0.
//! - [`ModelPrices::cost`]: the cost of a [`TokenCounts`](crate::tokens::TokenCounts) in integer pico-USD.
//!
//! # How a request is priced
//!
//! Four disjoint token kinds ([`TokenCounts`](crate::tokens::TokenCounts)) are each billed at their own rate:
//! uncached input, output, cache read and cache write. A kind the model has
//! no price for is billed at its input price. Tiered prices follow
//! genai-prices: the request's total input tokens (all three input kinds)
//! pick one tier, whose rate applies to *all* tokens of each kind (see
//! [`TieredPrice`]). Each kind's cost is rounded up to the pico-USD, which is
//! exact for every price in the data.
//!
//! # What the data gives and what it does not
//!
//! Only text-token prices are kept (input, output, cache read, cache write);
//! audio, image and video token prices and per-request prices are ignored.
//! Prices that genai-prices conditions on the date are resolved as of the
//! date the data was copied; time-of-day discounts (DeepSeek off-peak) are
//! not applied. The details are in the generator, `xtask/src/generate/catalog.rs`.

mod book;
pub mod cache_minimums;
mod clause;
#[rustfmt::skip]
mod generated;
mod lookup;
mod prices;
mod raw;

#[cfg(test)]
mod tests;

pub use book::{InvalidOverride, PriceBook, PriceOverride, PriceSource, Pricing};
pub use lookup::{Catalog, PricedModel};
pub use prices::{ModelPrices, Price, Tier, TieredPrice};
