//! tokenwarden-core: the pure logic shared by the operator and the sidecar.
//!
//! Nothing in this crate performs I/O or depends on Kubernetes, gRPC or HTTP
//! types: the operator and the sidecar convert their inputs into the types
//! here (arrows point inward), so every rule is unit-tested in one place.
//!
//! - [`budget`]: reservations, settlement, thresholds, caps and the loop guard of one budget.
//! - [`cluster`]: the operator's ledger and lease pool of one budget, and the cluster ledger.
//! - [`lease_client`]: a sidecar's lease on a budget: what it may still reserve.
//! - [`money`]: integer money (pico-USD) and prices (nano-USD per million tokens).
//! - [`catalog`]: the built-in price catalog generated from genai-prices, and
//!   the [`catalog::PriceBook`] that applies RoutingPolicy overrides on top.
//! - [`classify`]: the embedded request-complexity classifier.
//! - [`selector`]: Kubernetes label-selector semantics.
//! - [`period`]: calendar-aligned budget periods in an IANA time zone.
//! - [`config`]: the compiled per-workload configuration a sidecar runs.
//! - [`ledger`]: usage records and their aggregation.
//! - [`compile`]: the compiler from policies + budgets + pod labels to that config.
//! - [`route`]: the routing decision (routes, escalation, downgrade).

pub mod budget;
pub mod catalog;
pub mod classify;
pub mod cluster;
pub mod compile;
pub mod config;
pub mod lease_client;
pub mod ledger;
pub mod money;
pub mod period;
pub mod route;
pub mod selector;
