//! The one Rust validation of both kinds, shared by the webhook, the
//! operator and standalone mode, and its field-path errors.
//!
//! Validating an object *is* converting it into the core compiler's input
//! (`to_input()`; `validate()` keeps only the verdict), so there is one code
//! path and nothing that passes validation can fail later. Each conversion
//! checks every rule the schema and the CEL rules state (so that standalone
//! mode, which has no apiserver, rejects what a cluster would) plus the rules
//! only Rust can check (time zones, globs, known classifier features), and
//! reports every problem with its field path. Arrows point into core: core
//! knows nothing of these types.
//!
//! - `routing_policy`: `RoutingPolicy::validate()` / `to_input()`.
//! - `token_budget`: `TokenBudget::validate()` / `to_input()`.
//! - `fields`: the checks both share and the error collector.

mod fields;
mod routing_policy;
mod token_budget;

use std::fmt;

pub use fields::{DEFAULT_NAMESPACE, parse_duration_ms};

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field in kubectl notation, e.g. `spec.routes[2].target.tier`.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

/// Every problem found in one object (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// `Kind namespace/name` of the object, for messages.
    pub object: String,
    /// The problems, in field order.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is invalid: ", self.object)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
