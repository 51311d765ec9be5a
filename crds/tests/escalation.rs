//! `spec.escalation`: what `to_input()` makes of it, from YAML as a user
//! writes it: every rule on by default, each one switched off alone, and
//! the compiled JSON leaving out the rules that keep their default.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pretty_assertions::assert_eq;
use tokenwarden_core::workload::Escalation;
use tokenwarden_crds::load::{Object, load_yaml};

const PROVIDERS: &str = r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: p, namespace: ns}
spec:
  providers:
    - {name: openai, api: openai, baseUrl: "https://api.openai.com", apiKeySecretRef: {name: keys, key: openai}}
"#;

fn escalation_of(spec_tail: &str) -> Escalation {
    load_yaml(&format!("{PROVIDERS}{spec_tail}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find_map(|o| match o {
            Object::RoutingPolicy(p) => Some(p.to_input().unwrap().routing.escalation),
            Object::TokenBudget(_) => None,
        })
        .unwrap()
}

#[test]
fn every_rule_is_on_by_default() {
    let want = Escalation {
        on_upstream_error: true,
        repeated_prompt: None,
        on_truncation: true,
        on_empty_answer: true,
        on_refusal: true,
        on_invalid_tool_call: true,
        on_invalid_response_format: true,
        on_app_signal: true,
    };
    assert_eq!(escalation_of(""), want);
    assert_eq!(escalation_of("  escalation: {}\n"), want);
    assert!(want.checks_answers());
    // Defaults are left out of the compiled JSON (stable version digests).
    assert_eq!(
        serde_json::to_string(&want).unwrap(),
        r#"{"on_upstream_error":true,"repeated_prompt":null}"#
    );
    let back: Escalation =
        serde_json::from_str(r#"{"on_upstream_error":true,"repeated_prompt":null}"#).unwrap();
    assert_eq!(back, want, "an older compiler's JSON gets the defaults");
}

#[test]
fn each_rule_switches_off_alone() {
    let off = escalation_of(
        "  escalation:\n    onTruncation: false\n    onEmptyAnswer: false\n    onRefusal: false\n    onInvalidToolCall: false\n    onInvalidResponseFormat: false\n    onAppSignal: false\n",
    );
    assert!(!off.checks_answers());
    assert!(!off.on_app_signal);
    assert!(off.on_upstream_error);
    assert_eq!(
        serde_json::to_string(&off).unwrap(),
        r#"{"on_upstream_error":true,"repeated_prompt":null,"on_truncation":false,"on_empty_answer":false,"on_refusal":false,"on_invalid_tool_call":false,"on_invalid_response_format":false,"on_app_signal":false}"#
    );
    let one = escalation_of("  escalation: {onRefusal: false}\n");
    assert_eq!(
        one,
        Escalation {
            on_refusal: false,
            ..Escalation::default()
        }
    );
    assert!(one.checks_answers(), "the other answer rules stay on");
}
