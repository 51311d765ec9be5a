//! `spec.caching`: what `to_input()` makes of it (defaults, resolution, all
//! off when absent) and what the compiler gives each workload, from YAML as
//! a user writes it. The rejections are in `tests/invalid/policy-caching-*`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pretty_assertions::assert_eq;
use tokenwarden_core::{
    compile::{CachingPolicy, Pod, PolicyInput, compile},
    selector::Labels,
    workload::{AnthropicBreakpoints, CacheTtl, CachingConfig, MinimumTokens, VolatileGuard},
};
use tokenwarden_crds::{
    RoutingPolicy,
    load::{Object, load_yaml},
};

const PROVIDERS: &str = r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: p, namespace: ns}
spec:
  providers:
    - {name: openai, api: openai, baseUrl: "https://api.openai.com", apiKeySecretRef: {name: keys, key: openai}}
    - {name: anthropic, api: anthropic, baseUrl: "https://api.anthropic.com", apiKeySecretRef: {name: keys, key: anthropic}}
"#;

fn policies(text: &str) -> Vec<PolicyInput> {
    load_yaml(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter_map(|o| match o {
            Object::RoutingPolicy(p) => Some(p.to_input().unwrap()),
            Object::TokenBudget(_) => None,
        })
        .collect()
}

fn caching_of(spec_tail: &str) -> CachingPolicy {
    policies(&format!("{PROVIDERS}{spec_tail}"))
        .remove(0)
        .caching
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn absent_or_disabled_caching_is_all_off() {
    assert_eq!(caching_of(""), CachingPolicy::default());
    assert_eq!(
        policies(&repo_file("crds/tests/valid/caching-disabled.yaml"))
            .remove(0)
            .caching,
        CachingPolicy::default()
    );
    assert_eq!(
        caching_of("  caching: {}\n"),
        CachingPolicy::default(),
        "an empty block enables nothing"
    );
}

#[test]
fn defaults_fill_what_the_block_leaves_out() {
    assert_eq!(
        caching_of(
            "  caching:\n    anthropic: {automaticBreakpoints: true}\n    volatilePrefixGuard: {mode: Report}\n"
        ),
        CachingPolicy {
            anthropic_breakpoints: Some(AnthropicBreakpoints {
                ttl: CacheTtl::FiveMinutes,
                minimum_overrides: vec![],
            }),
            openai_prompt_cache_key: false,
            volatile_guard: Some(VolatileGuard { repeats: 3 }),
        }
    );
}

#[test]
fn every_setting_is_carried_over() {
    let everything = policies(&repo_file("crds/tests/valid/everything.yaml")).remove(0);
    assert_eq!(
        everything.caching,
        CachingPolicy {
            anthropic_breakpoints: Some(AnthropicBreakpoints {
                ttl: CacheTtl::OneHour,
                minimum_overrides: vec![
                    MinimumTokens {
                        model: "claude-custom".into(),
                        tokens: 1,
                    },
                    MinimumTokens {
                        model: "claude-opus-*".into(),
                        tokens: 1_000_000,
                    },
                ],
            }),
            openai_prompt_cache_key: true,
            volatile_guard: Some(VolatileGuard { repeats: 100 }),
        }
    );
}

#[test]
fn the_example_compiles_to_the_workloads_caching_config() {
    let input = policies(&repo_file("deploy/examples/01-coding-agent-routing.yaml"));
    let labels: Labels = [
        ("app".to_string(), "coding-agent".to_string()),
        ("pod-template-hash".to_string(), "7d9f8".to_string()),
    ]
    .into();
    let pod = Pod {
        namespace: "agents",
        name: "coding-agent-7d9f8-x2x4p",
        labels: &labels,
    };
    let cfg = compile(&pod, &input, &[]);
    assert_eq!(
        cfg.caching,
        CachingConfig {
            anthropic_breakpoints: Some(AnthropicBreakpoints {
                ttl: CacheTtl::FiveMinutes,
                minimum_overrides: vec![MinimumTokens {
                    model: "claude-opus-*".into(),
                    tokens: 8192,
                }],
            }),
            openai_prompt_cache_key: Some("tokenwarden:agents/coding-agent".into()),
            volatile_guard: Some(VolatileGuard { repeats: 3 }),
        }
    );
    assert_eq!(
        cfg.routing.unwrap().source.to_string(),
        "agents/coding-agent"
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = format!(
        "{PROVIDERS}  caching:
    anthropic:
      ttl: 1h
      minimumTokens:
        - {{model: \"claude-[\", tokens: 0}}
        - {{model: \"claude-[\", tokens: 5}}
    volatilePrefixGuard: {{mode: Disabled, repeats: 101}}
"
    );
    let policy: RoutingPolicy = serde_norway::from_str(&text).unwrap();
    let errors: Vec<String> = policy
        .validate()
        .unwrap_err()
        .errors
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "spec.caching.anthropic: ttl and minimumTokens apply only to inserted breakpoints: \
             set automaticBreakpoints: true or remove them",
            "spec.caching.anthropic.minimumTokens[1].model: duplicate model \"claude-[\"",
            "spec.caching.anthropic.minimumTokens[0].model: \"claude-[\" is not a valid glob: \
             invalid range pattern",
            "spec.caching.anthropic.minimumTokens[0].tokens: must be between 1 and 1000000",
            "spec.caching.anthropic.minimumTokens[1].model: \"claude-[\" is not a valid glob: \
             invalid range pattern",
            "spec.caching.volatilePrefixGuard.repeats: must be between 2 and 100",
            "spec.caching.volatilePrefixGuard.repeats: repeats applies only with mode: Report",
        ]
    );
}
