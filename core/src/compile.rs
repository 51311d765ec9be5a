//! The compiler: a namespace's policies and budgets + a pod's labels → the
//! [`WorkloadConfig`] that pod's sidecar runs.
//!
//! Precedence, when several objects select one pod:
//!
//! - **TokenBudgets**: every selecting budget applies; the sidecar checks a
//!   request against each and the strictest decides. They are listed in name
//!   order.
//! - **RoutingPolicies**: exactly one applies. The winner is chosen by, in
//!   order: the highest `spec.priority`; then the most specific selector
//!   (most `matchLabels` + `matchExpressions` entries); then the name, in
//!   lexical order. The others are reported in [`WorkloadConfig::conflict`]
//!   (the operator surfaces them as a `Conflicted` condition).
//!
//! The output depends only on the *set* of inputs: the same objects in any
//! order compile to the same config (property-tested below).

use crate::{
    selector::{LabelSelector, Labels},
    workload::{
        BudgetConfig, DowngradeTarget, ObjectRef, PolicyConflict, RoutingConfig, ThresholdAction,
        WorkloadConfig,
    },
};

/// A validated RoutingPolicy, ready to compile.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyInput {
    /// Which pods it selects (within its namespace).
    pub selector: LabelSelector,
    /// Higher wins when several policies select a pod.
    pub priority: i32,
    /// The compiled routing (its `source` names the object).
    pub routing: RoutingConfig,
}

/// A validated TokenBudget, ready to compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetInput {
    /// Which pods it selects (within its namespace).
    pub selector: LabelSelector,
    /// The compiled budget (its `source` names the object).
    pub budget: BudgetConfig,
}

// === impl PolicyInput ===

impl PolicyInput {
    fn source(&self) -> &ObjectRef {
        &self.routing.source
    }

    /// Sort key: smaller sorts first = wins.
    fn rank(&self) -> (std::cmp::Reverse<i32>, std::cmp::Reverse<usize>, &str) {
        (
            std::cmp::Reverse(self.priority),
            std::cmp::Reverse(self.selector.specificity()),
            self.source().name.as_str(),
        )
    }
}

/// Compile the config for a pod in `namespace` with `labels`.
///
/// Objects from other namespaces are ignored (selectors are namespaced).
pub fn compile(
    namespace: &str,
    labels: &Labels,
    policies: &[PolicyInput],
    budgets: &[BudgetInput],
) -> WorkloadConfig {
    let mut selecting: Vec<&PolicyInput> = policies
        .iter()
        .filter(|p| p.source().namespace == namespace && p.selector.matches(labels))
        .collect();
    selecting.sort_by(|a, b| a.rank().cmp(&b.rank()));
    selecting.dedup_by(|a, b| a.source() == b.source());

    let routing = selecting.first().map(|p| p.routing.clone());
    let conflict = (selecting.len() > 1).then(|| PolicyConflict {
        chosen: selecting[0].source().clone(),
        shadowed: selecting[1..].iter().map(|p| p.source().clone()).collect(),
    });

    let mut chosen_budgets: Vec<BudgetConfig> = budgets
        .iter()
        .filter(|b| b.budget.source.namespace == namespace && b.selector.matches(labels))
        .map(|b| b.budget.clone())
        .collect();
    chosen_budgets.sort_by(|a, b| a.source.cmp(&b.source));
    chosen_budgets.dedup_by(|a, b| a.source == b.source);

    let warnings = cross_check(routing.as_ref(), &chosen_budgets);
    WorkloadConfig {
        namespace: namespace.to_string(),
        routing,
        budgets: chosen_budgets,
        conflict,
        warnings,
    }
}

/// Problems that span objects: a budget downgrading to a tier the chosen
/// policy lacks, or downgrading with no policy at all.
fn cross_check(routing: Option<&RoutingConfig>, budgets: &[BudgetConfig]) -> Vec<String> {
    let mut out = Vec::new();
    for b in budgets {
        for t in &b.thresholds {
            let ThresholdAction::Downgrade(DowngradeTarget::Tier(tier)) = &t.action else {
                continue;
            };
            match routing {
                None => out.push(format!(
                    "TokenBudget {} downgrades to tier {tier:?} at {}%, but no RoutingPolicy \
                     selects this workload: the downgrade cannot apply",
                    b.source, t.percent
                )),
                Some(r) if r.tier_index(tier).is_none() => out.push(format!(
                    "TokenBudget {} downgrades to tier {tier:?} at {}%, but RoutingPolicy {} \
                     defines no such tier (tiers: {})",
                    b.source,
                    t.percent,
                    r.source,
                    r.tiers
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Some(_) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        classify::ClassifierConfig,
        period::Period,
        selector::{Operator, Requirement},
        workload::{
            Api, Escalation, FailMode, Fallback, Provider, SecretRef, Target, Threshold, Tier,
        },
    };
    use proptest::prelude::*;

    fn routing(ns: &str, name: &str) -> RoutingConfig {
        RoutingConfig {
            source: ObjectRef::new(ns, name),
            generation: 1,
            providers: vec![Provider {
                name: "openai".into(),
                api: Api::OpenAi,
                base_url: "https://api.openai.com".into(),
                api_key: SecretRef {
                    name: "openai".into(),
                    key: "api-key".into(),
                },
                prices: vec![],
            }],
            tiers: vec![Tier {
                name: "cheap".into(),
                provider: "openai".into(),
                model: "m".into(),
            }],
            routes: vec![crate::workload::Route {
                name: "all".into(),
                matcher: Default::default(),
                target: Target::Tier("cheap".into()),
            }],
            escalation: Escalation {
                on_upstream_error: true,
                repeated_prompt: None,
            },
            fallback: Fallback::default(),
            classifier: ClassifierConfig::default(),
            default_max_output_tokens: 4096,
            unseen_input_tokens: None,
        }
    }

    fn policy(ns: &str, name: &str, priority: i32, sel: LabelSelector) -> PolicyInput {
        PolicyInput {
            selector: sel,
            priority,
            routing: routing(ns, name),
        }
    }

    fn budget(
        ns: &str,
        name: &str,
        sel: LabelSelector,
        downgrade_tier: Option<&str>,
    ) -> BudgetInput {
        let mut thresholds = vec![Threshold {
            percent: 100,
            action: ThresholdAction::Block,
        }];
        if let Some(t) = downgrade_tier {
            thresholds.insert(
                0,
                Threshold {
                    percent: 80,
                    action: ThresholdAction::Downgrade(DowngradeTarget::Tier(t.into())),
                },
            );
        }
        BudgetInput {
            selector: sel,
            budget: BudgetConfig {
                source: ObjectRef::new(ns, name),
                generation: 1,
                period: Period::Daily,
                time_zone: "UTC".into(),
                limit_usd: Some("10".parse().unwrap()),
                limit_tokens: None,
                thresholds,
                per_request_cap_usd: None,
                loop_guard: None,
                fail_mode: FailMode::Closed,
                shadow: false,
            },
        }
    }

    fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: vec![],
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_selects_gives_an_empty_config() {
        let cfg = compile("ns", &labels(&[("app", "x")]), &[], &[]);
        assert!(cfg.routing.is_none() && cfg.budgets.is_empty() && cfg.conflict.is_none());
    }

    #[test]
    fn other_namespaces_are_ignored() {
        let p = policy("other", "p", 0, LabelSelector::default());
        let b = budget("other", "b", LabelSelector::default(), None);
        let cfg = compile("ns", &Labels::new(), &[p], &[b]);
        assert!(cfg.routing.is_none() && cfg.budgets.is_empty());
    }

    #[test]
    fn priority_then_specificity_then_name() {
        let l = labels(&[("app", "agent"), ("team", "a")]);
        let broad = policy("ns", "a-broad", 0, LabelSelector::default());
        let specific = policy(
            "ns",
            "z-specific",
            0,
            sel(&[("app", "agent"), ("team", "a")]),
        );
        let important = policy("ns", "m-important", 10, LabelSelector::default());

        let cfg = compile("ns", &l, &[broad.clone(), specific.clone()], &[]);
        assert_eq!(cfg.routing.unwrap().source.name, "z-specific");
        let conflict = cfg.conflict.unwrap();
        assert_eq!(conflict.chosen.name, "z-specific");
        assert_eq!(conflict.shadowed, vec![ObjectRef::new("ns", "a-broad")]);

        let cfg = compile("ns", &l, &[broad.clone(), specific, important], &[]);
        assert_eq!(cfg.routing.unwrap().source.name, "m-important");

        let other_broad = policy("ns", "b-broad", 0, LabelSelector::default());
        let cfg = compile("ns", &l, &[other_broad, broad], &[]);
        assert_eq!(
            cfg.routing.unwrap().source.name,
            "a-broad",
            "name breaks the final tie"
        );
    }

    #[test]
    fn every_selecting_budget_applies() {
        let l = labels(&[("app", "agent")]);
        let b1 = budget("ns", "team", LabelSelector::default(), None);
        let b2 = budget("ns", "agent", sel(&[("app", "agent")]), None);
        let b3 = budget("ns", "other", sel(&[("app", "web")]), None);
        let cfg = compile("ns", &l, &[], &[b1, b2, b3]);
        let names: Vec<_> = cfg.budgets.iter().map(|b| b.source.name.as_str()).collect();
        assert_eq!(names, ["agent", "team"]);
    }

    #[test]
    fn downgrade_to_a_missing_tier_is_a_warning() {
        let l = Labels::new();
        let p = policy("ns", "p", 0, LabelSelector::default());
        let ok = budget("ns", "ok", LabelSelector::default(), Some("cheap"));
        let bad = budget("ns", "bad", LabelSelector::default(), Some("tiny"));
        let cfg = compile("ns", &l, &[p], &[ok.clone(), bad.clone()]);
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].contains("ns/bad") && cfg.warnings[0].contains("\"tiny\""));
        let cfg = compile("ns", &l, &[], &[ok]);
        assert!(
            cfg.warnings[0].contains("no RoutingPolicy selects"),
            "{:?}",
            cfg.warnings
        );
    }

    fn arb_selector() -> impl Strategy<Value = LabelSelector> {
        (
            prop::collection::btree_map("[ab]", "[xy]", 0..2),
            prop::collection::vec(
                (
                    "[ab]",
                    prop::sample::select(vec![Operator::Exists, Operator::DoesNotExist]),
                ),
                0..2,
            ),
        )
            .prop_map(|(match_labels, exprs)| LabelSelector {
                match_labels,
                match_expressions: exprs
                    .into_iter()
                    .map(|(key, operator)| Requirement {
                        key,
                        operator,
                        values: vec![],
                    })
                    .collect(),
            })
    }

    fn arb_inputs() -> impl Strategy<Value = (Vec<PolicyInput>, Vec<BudgetInput>)> {
        let policies = prop::collection::vec(
            (
                "[pqr]",
                -1i32..2,
                arb_selector(),
                prop::sample::select(vec!["ns", "other"]),
            ),
            0..6,
        )
        .prop_map(|v| {
            let mut seen = std::collections::BTreeSet::new();
            v.into_iter()
                .filter(|(name, _, _, ns)| seen.insert((name.clone(), *ns)))
                .map(|(name, prio, sel, ns)| policy(ns, &name, prio, sel))
                .collect::<Vec<_>>()
        });
        let budgets = prop::collection::vec(
            (
                "[bcd]",
                arb_selector(),
                prop::option::of(prop::sample::select(vec!["cheap", "x"])),
            ),
            0..5,
        )
        .prop_map(|v| {
            let mut seen = std::collections::BTreeSet::new();
            v.into_iter()
                .filter(|(name, _, _)| seen.insert(name.clone()))
                .map(|(name, sel, tier)| budget("ns", &name, sel, tier))
                .collect::<Vec<_>>()
        });
        (policies, budgets)
    }

    proptest! {
        #[test]
        fn same_inputs_in_any_order_compile_the_same(
            (policies, budgets) in arb_inputs(),
            l in prop::collection::btree_map("[ab]", "[xy]", 0..3),
            seed in any::<u64>(),
        ) {
            let expected = compile("ns", &l, &policies, &budgets);
            // A deterministic shuffle driven by the seed.
            let mut p2 = policies.clone();
            let mut b2 = budgets.clone();
            let mut s = seed;
            for i in (1..p2.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                p2.swap(i, (s >> 33) as usize % (i + 1));
            }
            for i in (1..b2.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                b2.swap(i, (s >> 33) as usize % (i + 1));
            }
            let got = compile("ns", &l, &p2, &b2);
            prop_assert_eq!(&got, &expected);
            // Serialized form (what the operator hashes into a version) is stable too.
            prop_assert_eq!(serde_json::to_string(&got).unwrap(), serde_json::to_string(&expected).unwrap());
        }

        #[test]
        fn chosen_policy_selects_the_pod_and_outranks_the_rest(
            (policies, _) in arb_inputs(),
            l in prop::collection::btree_map("[ab]", "[xy]", 0..3),
        ) {
            let cfg = compile("ns", &l, &policies, &[]);
            let selecting: Vec<_> = policies.iter()
                .filter(|p| p.routing.source.namespace == "ns" && p.selector.matches(&l))
                .collect();
            match cfg.routing {
                None => prop_assert!(selecting.is_empty()),
                Some(r) => {
                    let winner = selecting.iter().find(|p| p.routing.source == r.source).unwrap();
                    for p in &selecting {
                        prop_assert!(winner.rank() <= p.rank());
                    }
                    prop_assert_eq!(cfg.conflict.map_or(0, |c| c.shadowed.len()), selecting.len() - 1);
                }
            }
        }

        #[test]
        fn budgets_are_exactly_the_selecting_ones(
            (_, budgets) in arb_inputs(),
            l in prop::collection::btree_map("[ab]", "[xy]", 0..3),
        ) {
            let cfg = compile("ns", &l, &[], &budgets);
            let mut expected: Vec<_> = budgets.iter()
                .filter(|b| b.selector.matches(&l))
                .map(|b| b.budget.source.name.clone())
                .collect();
            expected.sort();
            let got: Vec<_> = cfg.budgets.iter().map(|b| b.source.name.clone()).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
