//! [`ReplayFacts`]: what a what-if replay of a changed RoutingPolicy needs
//! to know about one recorded request, beyond its tokens and route.
//!
//! A route matches on the requested model, the endpoint, request headers,
//! the classifier score, the prompt-size estimate and whether tools were
//! defined (`core::route::RequestFacts`); a changed policy can also move the
//! served model by tier, or escalate and downgrade differently. The record
//! keeps each of those inputs as counts and sizes only: never prompt text,
//! never a credential (see `docs/ledger.md`, "Replay facts").

use serde::{Deserialize, Serialize};

use crate::classify::Features;

/// Request headers that are never recorded, whatever a route matches on:
/// credentials and session state.
pub const NEVER_RECORDED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
];

/// A recorded header value is cut to at most this many bytes (at a UTF-8
/// character boundary).
pub const MAX_HEADER_VALUE_BYTES: usize = 256;

/// What a what-if replay of a changed RoutingPolicy needs about one request,
/// beyond its tokens and route (counts and sizes only: never prompt text).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayFacts {
    /// Groups the attempts of one app request (every retry/escalation/
    /// fallback attempt of it carries the same id; unique per sidecar;
    /// 0 = unknown).
    pub request: u64,
    /// The prompt-size estimate routes match `promptTokens` on (body bytes
    /// / 4, rounded up, exactly as the sidecar's route step computes it).
    pub prompt_estimate: u64,
    /// Whether the request defined tools (routes' `toolsPresent`).
    pub tools_present: bool,
    /// The classifier's integer features, when the request was scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// The tier of the choice that served this attempt, when the model came
    /// from a tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// What changed the model before/within this request, in order:
    /// `escalated`, `downgraded`, `fallback` (as `x-tokenwarden-adjusted`),
    /// each with its reason when there is one, as `how:reason` (e.g.
    /// `escalated:upstream_error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjusted: Vec<String>,
    /// Values of the request headers that the policy's routes match on
    /// (names lowercased; never authorization, x-api-key, cookie or any
    /// credential; values capped at [`MAX_HEADER_VALUE_BYTES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// Whether a header (any case) may be recorded: not one of
/// [`NEVER_RECORDED_HEADERS`].
pub fn header_recordable(name: &str) -> bool {
    !NEVER_RECORDED_HEADERS
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// `value` cut to at most [`MAX_HEADER_VALUE_BYTES`] bytes, at a character
/// boundary.
pub fn cap_header_value(value: &str) -> &str {
    if value.len() <= MAX_HEADER_VALUE_BYTES {
        return value;
    }
    let mut end = MAX_HEADER_VALUE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_never_recordable_in_any_case() {
        for h in [
            "Authorization",
            "X-API-KEY",
            "cookie",
            "Proxy-Authorization",
        ] {
            assert!(!header_recordable(h), "{h}");
        }
        assert!(header_recordable("x-team"));
    }

    #[test]
    fn values_are_capped_at_a_char_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let cut = cap_header_value(&long);
        assert_eq!(cut.len(), 256);
        assert_eq!(cap_header_value("a€b"), "a€b");
        let odd = format!("a{}", "é".repeat(200)); // boundary at 255
        assert_eq!(cap_header_value(&odd).len(), 255);
    }

    #[test]
    fn serde_is_camel_case_and_omits_empty_parts() {
        let f = ReplayFacts {
            request: 7,
            prompt_estimate: 1234,
            tools_present: true,
            ..ReplayFacts::default()
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"request":7,"promptEstimate":1234,"toolsPresent":true}"#
        );
    }
}
