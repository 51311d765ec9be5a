//! The per-key budget key a request carries (TokenBudget `spec.perKey`),
//! before the budget bounds it ([`tokenwarden_core::budget::BudgetState::key_for`]
//! maps keys past `maxKeys` to `(other)` and a missing key to `(none)`).
//!
//! - `header`: the header's value when it is 1–128 characters of letters,
//!   digits and `._:@/+=-` (a session id, a virtual key); any other value
//!   is keyed by `h:` and a hash prefix of it, so odd bytes never reach the
//!   ledger, `report` or a status. An empty or absent header is no key.
//! - `pod`: the pod's name (`--pod-name`).
//! - `apiKeyHash`: the app's own credential — the token of
//!   `Authorization: Bearer <token>` (OpenAI's scheme,
//!   <https://platform.openai.com/docs/api-reference/authentication>), else
//!   the whole `Authorization` value, else `x-api-key` (Anthropic's,
//!   <https://docs.anthropic.com/en/api/overview#authentication>) — as
//!   `sha256:` and the first 12 hex digits of an HMAC-SHA256 keyed with
//!   the budget's name. Every sidecar computes the same key for the same
//!   credential and budget (so the operator can add them up), the
//!   credential cannot be read back from it, and nothing but this prefix
//!   is kept, logged or exported.

use http::HeaderMap;
use ring::hmac;
use tokenwarden_core::workload::{KeySource, MAX_KEY_LEN, ObjectRef};

/// Hex digits of a hash a key keeps.
const HASH_PREFIX_HEX: usize = 12;

/// The key a request carries for a budget split by `by`; `None` when it
/// carries none.
pub(super) fn raw_key(
    by: &KeySource,
    budget: &ObjectRef,
    headers: &HeaderMap,
    pod: &str,
) -> Option<String> {
    match by {
        KeySource::Header(name) => {
            let v = headers.get(name.as_str())?.as_bytes().trim_ascii();
            if v.is_empty() {
                None
            } else if v.len() <= MAX_KEY_LEN && v.iter().all(|b| plain(*b)) {
                Some(String::from_utf8_lossy(v).into_owned())
            } else {
                Some(format!("h:{}", keyed_hash(budget, v)))
            }
        }
        KeySource::Pod => (!pod.is_empty()).then(|| pod.to_string()),
        KeySource::ApiKeyHash => {
            credential(headers).map(|c| format!("sha256:{}", keyed_hash(budget, c)))
        }
    }
}

/// A byte a header value may keep as its key.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._:@/+=-".contains(&b)
}

/// The app's credential: the Bearer token, else the `Authorization`
/// value, else `x-api-key`; `None` when there is none.
fn credential(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.as_bytes().trim_ascii();
        let token = match v.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => v[7..].trim_ascii(),
            _ => v,
        };
        if !token.is_empty() {
            return Some(token);
        }
    }
    let v = headers.get("x-api-key")?.as_bytes().trim_ascii();
    (!v.is_empty()).then_some(v)
}

/// The first [`HASH_PREFIX_HEX`] hex digits of HMAC-SHA256 of `value`,
/// keyed with the budget's identity.
fn keyed_hash(budget: &ObjectRef, value: &[u8]) -> String {
    let key = hmac::Key::new(
        hmac::HMAC_SHA256,
        format!("tokenwarden.dev/perKey/v1/{budget}").as_bytes(),
    );
    let tag = hmac::sign(&key, value);
    let mut hex = String::with_capacity(HASH_PREFIX_HEX);
    for b in tag.as_ref().iter().take(HASH_PREFIX_HEX / 2) {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn budget() -> ObjectRef {
        ObjectRef::new("agents", "per-session")
    }

    #[test]
    fn a_header_value_is_the_key_when_plain_else_a_hash_prefix() {
        let by = KeySource::Header("x-agent-session".into());
        let key = |pairs: &[(&'static str, &str)]| raw_key(&by, &budget(), &headers(pairs), "p");
        assert_eq!(
            key(&[("x-agent-session", " sess-42 ")]).as_deref(),
            Some("sess-42")
        );
        assert_eq!(key(&[]), None);
        assert_eq!(key(&[("x-agent-session", "")]), None);
        let odd = key(&[("x-agent-session", "a b")]).unwrap();
        assert!(odd.starts_with("h:") && odd.len() == 14, "{odd}");
        let long = key(&[("x-agent-session", &"s".repeat(129))]).unwrap();
        assert!(long.starts_with("h:"), "{long}");
        // Parentheses are not plain: an app cannot claim "(other)".
        assert!(
            key(&[("x-agent-session", "(other)")])
                .unwrap()
                .starts_with("h:")
        );
    }

    #[test]
    fn the_pod_key_is_the_pod_name() {
        let h = HeaderMap::new();
        assert_eq!(
            raw_key(&KeySource::Pod, &budget(), &h, "agent-7d9c-x1").as_deref(),
            Some("agent-7d9c-x1")
        );
        assert_eq!(raw_key(&KeySource::Pod, &budget(), &h, ""), None);
    }

    #[test]
    fn the_api_key_hash_is_a_keyed_prefix_never_the_key() {
        let by = KeySource::ApiKeyHash;
        let key = |pairs: &[(&'static str, &str)]| raw_key(&by, &budget(), &headers(pairs), "");
        let bearer = key(&[("authorization", "Bearer sk-app-1")]).unwrap();
        // HMAC-SHA256(key "tokenwarden.dev/perKey/v1/agents/per-session",
        // "sk-app-1"), first 12 hex digits.
        assert_eq!(bearer, "sha256:d06fdc273a23");
        assert_eq!(
            key(&[("authorization", "bearer  sk-app-1")]).unwrap(),
            bearer
        );
        assert_eq!(key(&[("x-api-key", "sk-app-1")]).unwrap(), bearer);
        assert_ne!(key(&[("x-api-key", "sk-app-2")]).unwrap(), bearer);
        assert!(!bearer.contains("sk-app"));
        assert_eq!(key(&[]), None);
        // Another budget hashes the same credential differently.
        let other = raw_key(
            &by,
            &ObjectRef::new("agents", "other"),
            &headers(&[("x-api-key", "sk-app-1")]),
            "",
        );
        assert_ne!(other.unwrap(), bearer);
    }
}
