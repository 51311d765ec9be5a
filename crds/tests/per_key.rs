//! `spec.perKey` compiles into the budget's per-key split: the key source
//! (header names lower-cased), the per-key limit, and `maxKeys` with its
//! default.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokenwarden_core::workload::{KeySource, PerKeyConfig};
use tokenwarden_crds::{TokenBudget, load::Object};

fn compile(per_key: &str) -> Option<PerKeyConfig> {
    let yaml = format!(
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\n\
         metadata: {{name: b, namespace: ns}}\n\
         spec:\n  period: Daily\n  limit: {{usd: \"100\"}}\n{per_key}"
    );
    let objects = tokenwarden_crds::load::load_yaml(&yaml).unwrap();
    let Object::TokenBudget(b) = &objects[0] else {
        panic!("not a budget");
    };
    let b: &TokenBudget = b;
    b.to_input().unwrap().budget.per_key
}

#[test]
fn per_key_compiles_with_its_source_limit_and_bound() {
    assert_eq!(compile(""), None);
    assert_eq!(
        compile("  perKey:\n    by: {header: X-Agent-Session}\n    limit: {usd: \"5.00\"}\n"),
        Some(PerKeyConfig {
            by: KeySource::Header("x-agent-session".into()),
            limit_usd: Some("5".parse().unwrap()),
            limit_tokens: None,
            max_keys: 100,
        })
    );
    assert_eq!(
        compile("  perKey:\n    by: {pod: {}}\n    limit: {tokens: 5000}\n    maxKeys: 7\n"),
        Some(PerKeyConfig {
            by: KeySource::Pod,
            limit_usd: None,
            limit_tokens: Some(5000),
            max_keys: 7,
        })
    );
    let pk = compile(
        "  perKey:\n    by: {apiKeyHash: {}}\n    limit: {usd: \"1\", tokens: 9}\n    maxKeys: 1000\n",
    )
    .unwrap();
    assert_eq!(pk.by, KeySource::ApiKeyHash);
    assert_eq!((pk.limit_tokens, pk.max_keys), (Some(9), 1000));
}

#[test]
fn the_compiled_config_keeps_its_digest_without_per_key() {
    // A budget without perKey serializes exactly as before the field
    // existed, so running sidecars keep their config version.
    let objects = tokenwarden_crds::load::load_yaml(
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\n\
         metadata: {name: b, namespace: ns}\nspec:\n  period: Daily\n  limit: {usd: \"1\"}\n",
    )
    .unwrap();
    let Object::TokenBudget(b) = &objects[0] else {
        panic!("not a budget");
    };
    let json = serde_json::to_string(&b.to_input().unwrap().budget).unwrap();
    assert!(!json.contains("per_key"), "{json}");
}
