//! `spec.onProjectedOverrun` compiles into the budget's
//! `on_projected_overrun`, which the sidecar acts on while the operator
//! reports a projected overrun.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokenwarden_core::workload::{BudgetConfig, DowngradeTarget, ProjectedOverrunAction};
use tokenwarden_crds::{TokenBudget, load::Object};

fn compile(extra: &str) -> BudgetConfig {
    let yaml = format!(
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\n\
         metadata: {{name: b, namespace: ns}}\n\
         spec:\n  period: Daily\n  limit: {{usd: \"100\"}}\n{extra}"
    );
    let objects = tokenwarden_crds::load::load_yaml(&yaml).unwrap();
    let Object::TokenBudget(b) = &objects[0] else {
        panic!("not a budget");
    };
    let b: &TokenBudget = b;
    b.to_input().unwrap().budget
}

#[test]
fn on_projected_overrun_compiles_with_its_target() {
    assert_eq!(compile("").on_projected_overrun, None);
    assert_eq!(
        compile("  onProjectedOverrun: {action: Alert}\n").on_projected_overrun,
        Some(ProjectedOverrunAction::Alert)
    );
    assert_eq!(
        compile("  onProjectedOverrun: {action: Downgrade, downgradeTo: {tier: cheap}}\n")
            .on_projected_overrun,
        Some(ProjectedOverrunAction::Downgrade(DowngradeTarget::Tier(
            "cheap".into()
        )))
    );
    let b =
        compile("  onProjectedOverrun: {action: Downgrade, downgradeTo: {model: gpt-5-nano}}\n");
    assert_eq!(
        serde_json::to_value(&b).unwrap()["on_projected_overrun"],
        serde_json::json!({"downgrade": {"model": "gpt-5-nano"}}),
        "the sidecar's config JSON"
    );
}

#[test]
fn the_compiled_config_keeps_its_digest_without_it() {
    let json = serde_json::to_string(&compile("")).unwrap();
    assert!(!json.contains("on_projected_overrun"), "{json}");
}
