//! The `tokenwarden.dev/v1alpha1` API.
//!
//! - [`RoutingPolicy`] and [`TokenBudget`]: the custom resources, with the
//!   schema, CEL rules and printer columns of their CRDs.
//! - [`validate`]: `validate()` / `to_input()` on each, the one Rust
//!   validation, returning field-path errors ([`FieldError`],
//!   [`ValidationErrors`]), reused by the webhook, the operator and
//!   standalone mode; `to_input()` also converts into the core compiler's
//!   input.
//! - [`load`]: reading the same objects from YAML files.
//!
//! The CRD YAML is generated from these types by `cargo xtask gen`
//! (`xtask/src/generate/crds.rs`).

pub mod common;
pub mod load;
pub mod policy_file;
pub mod routing_policy;
pub mod token_budget;
pub mod validate;

pub use routing_policy::{RoutingPolicy, RoutingPolicySpec, RoutingPolicyStatus};
pub use token_budget::{
    KeyLeaseLedger, LedgerSpend, LedgerStatus, SidecarLedger, TokenBudget, TokenBudgetSpec,
    TokenBudgetStatus,
};
pub use validate::{FieldError, ValidationErrors};
