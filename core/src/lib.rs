//! tokenwarden-core: the pure logic shared by the operator and the sidecar.
//!
//! Nothing in this crate performs I/O or depends on Kubernetes, gRPC or HTTP
//! types: the operator and the sidecar convert their inputs into the types
//! here (arrows point inward), so every rule is unit-tested in one place.
//!
//! - [`budget`]: reservations, settlement, thresholds, caps and the loop guard of one budget.
//! - [`book`]: the operator's book of one budget period: its cluster-wide spend and lease pool.
//! - [`cluster_ledger`]: every sidecar's usage by namespace, workload and model, counted once.
//! - [`lease`]: a sidecar's lease on a budget: what it may still reserve (arithmetic).
//! - [`money`]: integer money (pico-USD) and prices (nano-USD per million tokens).
//! - [`catalog`]: the built-in price catalog generated from genai-prices, and
//!   the [`catalog::PriceBook`] that applies RoutingPolicy overrides on top.
//! - [`classify`]: the embedded request-complexity classifier.
//! - [`selector`]: Kubernetes label-selector semantics.
//! - [`period`]: calendar-aligned budget periods in an IANA time zone.
//! - [`workload`]: the compiled per-workload configuration a sidecar runs.
//! - [`tokens`]: the four disjoint token kinds of a request ([`tokens::TokenCounts`]).
//! - [`usage`]: usage records and their aggregation.
//! - [`prompt_cache`]: the prefix-stability monitor that finds prompt-cache busts.
//! - [`compile`]: the compiler from policies + budgets + pod labels to that config.
//! - [`route`]: the routing decision (routes, escalation, downgrade).
//! - [`whatif`]: cost foresight: recorded traffic re-priced and re-routed, token-mix projections.

pub mod book;
pub mod budget;
pub mod catalog;
pub mod classify;
pub mod cluster_ledger;
pub mod compile;
pub mod forecast;
pub mod lease;
pub mod money;
pub mod period;
pub mod prompt_cache;
pub mod response_cache;
pub mod route;
pub mod selector;
pub mod semantic_cache;
pub mod semantic_guard;
pub mod tokens;
pub mod usage;
pub mod whatif;
pub mod workload;
