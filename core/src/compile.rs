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
//!
//! Prompt caching is resolved per workload: the chosen policy's
//! [`CachingPolicy`] becomes the config's [`CachingConfig`], where an
//! opted-in OpenAI `prompt_cache_key` becomes the workload's own key
//! ([`openai_prompt_cache_key`] of the namespace and [`workload_name`]).

use crate::{
    selector::{LabelSelector, Labels},
    workload::{
        AnthropicBreakpoints, BudgetConfig, CachingConfig, DowngradeTarget, ObjectRef,
        PolicyConflict, ProjectedOverrunAction, RoutingConfig, ThresholdAction, VolatileGuard,
        WorkloadConfig, openai_prompt_cache_key, workload_name,
    },
};

/// The pod a config is compiled for.
#[derive(Clone, Copy, Debug)]
pub struct Pod<'a> {
    /// Its namespace: only objects in it select it.
    pub namespace: &'a str,
    /// Its name (names the workload when no label does: see
    /// [`workload_name`]); may be empty where it is not known.
    pub name: &'a str,
    /// Its labels, which selectors match.
    pub labels: &'a Labels,
}

/// A RoutingPolicy's `spec.caching`, validated; [`compile`] resolves it
/// for each workload the policy applies to. The default is everything off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CachingPolicy {
    /// Insert Anthropic breakpoints, with this TTL and these minimums.
    pub anthropic_breakpoints: Option<AnthropicBreakpoints>,
    /// Set the workload's `prompt_cache_key` on OpenAI requests without one.
    pub openai_prompt_cache_key: bool,
    /// Report repeated busts by the same volatile run.
    pub volatile_guard: Option<VolatileGuard>,
}

/// A validated RoutingPolicy, ready to compile.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyInput {
    /// Which pods it selects (within its namespace).
    pub selector: LabelSelector,
    /// Higher wins when several policies select a pod.
    pub priority: i32,
    /// The compiled routing (its `source` names the object).
    pub routing: RoutingConfig,
    /// Its prompt-cache settings.
    pub caching: CachingPolicy,
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

// === impl CachingPolicy ===

impl CachingPolicy {
    /// The settings of workload `workload` in `namespace`.
    fn resolve(&self, namespace: &str, workload: &str) -> CachingConfig {
        CachingConfig {
            anthropic_breakpoints: self.anthropic_breakpoints.clone(),
            openai_prompt_cache_key: self
                .openai_prompt_cache_key
                .then(|| openai_prompt_cache_key(namespace, workload)),
            volatile_guard: self.volatile_guard,
        }
    }
}

/// Compile the config for `pod`.
///
/// Objects from other namespaces are ignored (selectors are namespaced).
pub fn compile(pod: &Pod<'_>, policies: &[PolicyInput], budgets: &[BudgetInput]) -> WorkloadConfig {
    let Pod {
        namespace, labels, ..
    } = *pod;
    let mut selecting: Vec<&PolicyInput> = policies
        .iter()
        .filter(|p| p.source().namespace == namespace && p.selector.matches(labels))
        .collect();
    selecting.sort_by(|a, b| a.rank().cmp(&b.rank()));
    selecting.dedup_by(|a, b| a.source() == b.source());

    let routing = selecting.first().map(|p| p.routing.clone());
    let caching = selecting.first().map_or_else(CachingConfig::default, |p| {
        p.caching
            .resolve(namespace, &workload_name(labels, pod.name))
    });
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
        caching,
        warnings,
    }
}

/// Problems that span objects: a budget downgrading to a tier the chosen
/// policy lacks, or downgrading with no policy at all.
fn cross_check(routing: Option<&RoutingConfig>, budgets: &[BudgetConfig]) -> Vec<String> {
    let mut out = Vec::new();
    for b in budgets {
        let thresholds = b.thresholds.iter().filter_map(|t| match &t.action {
            ThresholdAction::Downgrade(DowngradeTarget::Tier(tier)) => {
                Some((tier, format!("at {}%", t.percent)))
            }
            _ => None,
        });
        let projected = match &b.on_projected_overrun {
            Some(ProjectedOverrunAction::Downgrade(DowngradeTarget::Tier(tier))) => {
                Some((tier, "on a projected overrun".to_string()))
            }
            _ => None,
        };
        for (tier, when) in thresholds.chain(projected) {
            match routing {
                None => out.push(format!(
                    "TokenBudget {} downgrades to tier {tier:?} {when}, but no RoutingPolicy \
                     selects this workload: the downgrade cannot apply",
                    b.source
                )),
                Some(r) if r.tier_index(tier).is_none() => out.push(format!(
                    "TokenBudget {} downgrades to tier {tier:?} {when}, but RoutingPolicy {} \
                     defines no such tier (tiers: {})",
                    b.source,
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
            Api, CacheTtl, Escalation, FailMode, Fallback, MinimumTokens, Provider, SecretRef,
            Target, Threshold, Tier,
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
                response_cache: None,
                semantic_cache: true,
            }],
            escalation: Escalation::default(),
            fallback: Fallback::default(),
            classifier: ClassifierConfig::default(),
            default_max_output_tokens: 4096,
            unseen_input_tokens: None,
            response_cache: None,
        }
    }

    fn policy(ns: &str, name: &str, priority: i32, sel: LabelSelector) -> PolicyInput {
        PolicyInput {
            selector: sel,
            priority,
            routing: routing(ns, name),
            caching: CachingPolicy::default(),
        }
    }

    /// Compile for a pod named `pod` (no naming label: the name is the workload).
    fn compile_in(
        ns: &str,
        l: &Labels,
        policies: &[PolicyInput],
        budgets: &[BudgetInput],
    ) -> WorkloadConfig {
        let pod = Pod {
            namespace: ns,
            name: "pod",
            labels: l,
        };
        compile(&pod, policies, budgets)
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
                per_key: None,
                on_projected_overrun: None,
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
        let cfg = compile_in("ns", &labels(&[("app", "x")]), &[], &[]);
        assert!(cfg.routing.is_none() && cfg.budgets.is_empty() && cfg.conflict.is_none());
    }

    #[test]
    fn a_per_key_split_reaches_the_selected_pods_config_unchanged() {
        use crate::workload::{KeySource, PerKeyConfig};
        let mut b = budget("ns", "agents", sel(&[("app", "x")]), None);
        let pk = PerKeyConfig {
            by: KeySource::Header("x-agent-session".into()),
            limit_usd: Some("5".parse().unwrap()),
            limit_tokens: Some(100_000),
            max_keys: 200,
        };
        b.budget.per_key = Some(pk.clone());
        let plain = budget("ns", "plain", sel(&[("app", "x")]), None);
        let cfg = compile_in("ns", &labels(&[("app", "x")]), &[], &[b, plain]);
        assert_eq!(cfg.budgets[0].per_key, Some(pk));
        assert_eq!(cfg.budgets[1].per_key, None);
        // The config a sidecar receives carries it; a budget without one
        // serializes as before.
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(
            json["budgets"][0]["per_key"]["by"]["header"],
            "x-agent-session"
        );
        assert_eq!(json["budgets"][0]["per_key"]["max_keys"], 200);
        assert!(json["budgets"][1].get("per_key").is_none());
        let back: WorkloadConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn other_namespaces_are_ignored() {
        let p = policy("other", "p", 0, LabelSelector::default());
        let b = budget("other", "b", LabelSelector::default(), None);
        let cfg = compile_in("ns", &Labels::new(), &[p], &[b]);
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

        let cfg = compile_in("ns", &l, &[broad.clone(), specific.clone()], &[]);
        assert_eq!(cfg.routing.unwrap().source.name, "z-specific");
        let conflict = cfg.conflict.unwrap();
        assert_eq!(conflict.chosen.name, "z-specific");
        assert_eq!(conflict.shadowed, vec![ObjectRef::new("ns", "a-broad")]);

        let cfg = compile_in("ns", &l, &[broad.clone(), specific, important], &[]);
        assert_eq!(cfg.routing.unwrap().source.name, "m-important");

        let other_broad = policy("ns", "b-broad", 0, LabelSelector::default());
        let cfg = compile_in("ns", &l, &[other_broad, broad], &[]);
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
        let cfg = compile_in("ns", &l, &[], &[b1, b2, b3]);
        let names: Vec<_> = cfg.budgets.iter().map(|b| b.source.name.as_str()).collect();
        assert_eq!(names, ["agent", "team"]);
    }

    #[test]
    fn downgrade_to_a_missing_tier_is_a_warning() {
        let l = Labels::new();
        let p = policy("ns", "p", 0, LabelSelector::default());
        let ok = budget("ns", "ok", LabelSelector::default(), Some("cheap"));
        let bad = budget("ns", "bad", LabelSelector::default(), Some("tiny"));
        let cfg = compile_in(
            "ns",
            &l,
            std::slice::from_ref(&p),
            &[ok.clone(), bad.clone()],
        );
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].contains("ns/bad") && cfg.warnings[0].contains("\"tiny\""));
        let cfg = compile_in("ns", &l, &[], &[ok]);
        assert!(
            cfg.warnings[0].contains("no RoutingPolicy selects"),
            "{:?}",
            cfg.warnings
        );
        // The same for onProjectedOverrun's downgrade target.
        let mut early = budget("ns", "early", LabelSelector::default(), None);
        early.budget.on_projected_overrun = Some(ProjectedOverrunAction::Downgrade(
            DowngradeTarget::Tier("tiny".into()),
        ));
        let cfg = compile_in("ns", &l, &[p], &[early]);
        assert_eq!(
            cfg.warnings,
            [
                "TokenBudget ns/early downgrades to tier \"tiny\" on a projected overrun, but \
                 RoutingPolicy ns/p defines no such tier (tiers: cheap)"
            ]
        );
    }

    fn caching_on() -> CachingPolicy {
        CachingPolicy {
            anthropic_breakpoints: Some(AnthropicBreakpoints {
                ttl: CacheTtl::OneHour,
                minimum_overrides: vec![MinimumTokens {
                    model: "claude-sonnet-*".into(),
                    tokens: 8192,
                }],
            }),
            openai_prompt_cache_key: true,
            volatile_guard: Some(VolatileGuard { repeats: 5 }),
        }
    }

    #[test]
    fn a_policy_without_caching_turns_everything_off() {
        let l = labels(&[("app", "agent")]);
        let cfg = compile_in(
            "ns",
            &l,
            &[policy("ns", "p", 0, LabelSelector::default())],
            &[],
        );
        assert_eq!(cfg.caching, CachingConfig::default());
        assert!(cfg.caching.is_off());
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(!json.contains("caching"), "{json}");
        // No policy at all: off too, whatever other namespaces configure.
        let mut other = policy("other", "p", 0, LabelSelector::default());
        other.caching = caching_on();
        assert!(compile_in("ns", &l, &[other], &[]).caching.is_off());
    }

    #[test]
    fn caching_is_resolved_with_a_per_workload_key() {
        let mut p = policy("shop", "agents", 0, LabelSelector::default());
        p.caching = caching_on();
        let agent = labels(&[("app", "agent")]);
        let cfg = compile_in("shop", &agent, std::slice::from_ref(&p), &[]);
        assert_eq!(
            cfg.caching,
            CachingConfig {
                anthropic_breakpoints: Some(AnthropicBreakpoints {
                    ttl: CacheTtl::OneHour,
                    minimum_overrides: vec![MinimumTokens {
                        model: "claude-sonnet-*".into(),
                        tokens: 8192,
                    }],
                }),
                openai_prompt_cache_key: Some("tokenwarden:shop/agent".into()),
                volatile_guard: Some(VolatileGuard { repeats: 5 }),
            }
        );
        // The policy it came from is the routing's source.
        assert_eq!(
            cfg.routing.unwrap().source,
            ObjectRef::new("shop", "agents")
        );

        // Two pods of one Deployment (no naming label) share the key; another
        // workload selected by the same policy gets its own.
        let hash = labels(&[("pod-template-hash", "7d9f8b6c5d")]);
        let key = |pod_name: &str, l: &Labels| {
            let pod = Pod {
                namespace: "shop",
                name: pod_name,
                labels: l,
            };
            compile(&pod, std::slice::from_ref(&p), &[])
                .caching
                .openai_prompt_cache_key
                .unwrap()
        };
        assert_eq!(
            key("checkout-7d9f8b6c5d-x2x4p", &hash),
            "tokenwarden:shop/checkout"
        );
        assert_eq!(
            key("checkout-7d9f8b6c5d-q8w2z", &hash),
            "tokenwarden:shop/checkout"
        );
        assert_eq!(key("cart-5f6d7c8b9a-abcde", &hash), "tokenwarden:shop/cart");
        assert_eq!(key("anything", &agent), "tokenwarden:shop/agent");
    }

    #[test]
    fn the_chosen_policy_decides_caching() {
        let l = labels(&[("app", "agent")]);
        let mut loser = policy("ns", "a-broad", 0, LabelSelector::default());
        loser.caching = caching_on();
        let winner = policy("ns", "z-specific", 0, sel(&[("app", "agent")]));
        let cfg = compile_in("ns", &l, &[loser.clone(), winner], &[]);
        assert!(
            cfg.caching.is_off(),
            "the shadowed policy's caching must not apply"
        );
        let mut winner = policy("ns", "z-specific", 0, sel(&[("app", "agent")]));
        winner.caching = CachingPolicy {
            openai_prompt_cache_key: true,
            ..CachingPolicy::default()
        };
        let cfg = compile_in("ns", &l, &[loser, winner], &[]);
        assert_eq!(
            cfg.caching,
            CachingConfig {
                openai_prompt_cache_key: Some("tokenwarden:ns/agent".into()),
                ..CachingConfig::default()
            }
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
                any::<bool>(),
            ),
            0..6,
        )
        .prop_map(|v| {
            let mut seen = std::collections::BTreeSet::new();
            v.into_iter()
                .filter(|(name, _, _, ns, _)| seen.insert((name.clone(), *ns)))
                .map(|(name, prio, sel, ns, cached)| {
                    let mut p = policy(ns, &name, prio, sel);
                    if cached {
                        p.caching = caching_on();
                    }
                    p
                })
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
            let expected = compile_in("ns", &l, &policies, &budgets);
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
            let got = compile_in("ns", &l, &p2, &b2);
            prop_assert_eq!(&got, &expected);
            // Serialized form (what the operator hashes into a version) is stable too.
            prop_assert_eq!(serde_json::to_string(&got).unwrap(), serde_json::to_string(&expected).unwrap());
        }

        #[test]
        fn chosen_policy_selects_the_pod_and_outranks_the_rest(
            (policies, _) in arb_inputs(),
            l in prop::collection::btree_map("[ab]", "[xy]", 0..3),
        ) {
            let cfg = compile_in("ns", &l, &policies, &[]);
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
            let cfg = compile_in("ns", &l, &[], &budgets);
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
