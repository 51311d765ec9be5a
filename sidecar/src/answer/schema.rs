//! JSON Schema checks of answers, with a bounded cost.
//!
//! The schema is the request's own (a tool's `parameters` /
//! `input_schema`, a structured output's `schema`), compiled per check by
//! the `jsonschema` crate (drafts 4 to 2020-12; 2020-12 when the schema
//! names none, as OpenAI and Anthropic schemas do not). The cost is
//! bounded:
//!
//! - a schema of more than [`MAX_SCHEMA_NODES`] JSON values is not
//!   checked (real tool schemas have tens to a few hundred), nor are the
//!   tools of a `tools` list longer than [`MAX_TOOLS_BYTES`];
//! - `$ref`s resolve only inside the schema: the validator is offline (the
//!   crate is built without its HTTP and file resolvers), so a remote
//!   `$ref` makes the schema unsupported rather than fetched;
//! - `pattern`s run on the `regex` crate's engine (linear time, no
//!   backtracking) with compiled-size limits, so a pathological pattern
//!   can neither hang a request nor take memory; a pattern that engine
//!   cannot run (look-around, back-references) makes the schema
//!   unsupported;
//! - `format` is an annotation (2020-12's default), not checked.
//!
//! The instance is bounded by the held answer (at most the sidecar's
//! buffered-response size, 1 MiB). A schema that is invalid or unsupported
//! yields [`Verdict::Unchecked`], and the answer passes: a schema problem
//! never fails a request nor escalates it (the provider, which checked the
//! request, accepted the schema).

use serde_json::Value;

/// The largest schema checked, in JSON values (objects, arrays and
/// scalars, counted recursively).
pub const MAX_SCHEMA_NODES: usize = 10_000;

/// The largest `tools` list (as sent, in bytes) read for schemas; with a
/// longer one no call is checked against a schema (its arguments must
/// still be JSON).
pub const MAX_TOOLS_BYTES: usize = 1024 * 1024;

/// Compiled-size limit of one `pattern` (and of its lazy DFA's cache).
const REGEX_SIZE_LIMIT: usize = 1024 * 1024;

/// What a schema check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The instance matches the schema.
    Valid,
    /// It does not.
    Invalid,
    /// The schema is too large, invalid or unsupported: not checked.
    Unchecked,
}

/// Check `instance` against `schema` (see the module docs for the bounds).
pub fn validate(schema: &Value, instance: &Value) -> Verdict {
    let mut budget = MAX_SCHEMA_NODES;
    if !within(schema, &mut budget) {
        return Verdict::Unchecked;
    }
    let built = jsonschema::options()
        .offline()
        .with_pattern_options(
            jsonschema::PatternOptions::regex()
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT),
        )
        .build(schema);
    match built {
        Ok(v) if v.is_valid(instance) => Verdict::Valid,
        Ok(_) => Verdict::Invalid,
        Err(_) => Verdict::Unchecked,
    }
}

/// `v` has at most `budget` values (the budget is spent as they are counted).
fn within(v: &Value, budget: &mut usize) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    match v {
        Value::Array(a) => a.iter().all(|x| within(x, budget)),
        Value::Object(o) => o.values().all(|x| within(x, budget)),
        _ => true,
    }
}
