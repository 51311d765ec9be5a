//! Kubernetes label-selector semantics, without Kubernetes types.
//!
//! The rules are those of `metav1.LabelSelector`: every `matchLabels` pair and
//! every `matchExpressions` requirement must hold (AND). An empty selector
//! matches every set of labels — in tokenwarden that means "every injected pod
//! in the namespace". `NotIn` and `DoesNotExist` match when the key is absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Pod labels, ordered so that everything derived from them is deterministic.
pub type Labels = BTreeMap<String, String>;

/// A validated label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// `key: value` pairs that must all be present.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements that must all hold.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

/// One set-based requirement of a [`LabelSelector`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    /// The label key the requirement applies to.
    pub key: String,
    /// How the key's value is compared with `values`.
    pub operator: Operator,
    /// Candidate values: non-empty for `In`/`NotIn`, empty for `Exists`/`DoesNotExist`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// The operators of `metav1.LabelSelectorRequirement`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// The label is present and its value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label is present (any value).
    Exists,
    /// The label is absent.
    DoesNotExist,
}

// === impl LabelSelector ===

impl LabelSelector {
    /// True when the selector has no requirement at all (selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// How many requirements the selector states; used as the specificity
    /// tie-breaker when several RoutingPolicies select one pod.
    pub fn specificity(&self) -> usize {
        self.match_labels.len() + self.match_expressions.len()
    }
}

// === impl Requirement ===

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// Parse `k=v,k2=v2` (the `--labels` flag of standalone mode).
///
/// Keys and values are trimmed; an empty string yields no labels.
pub fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut out = Labels::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!("label {part:?} is not of the form key=value"));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(format!("label {part:?} has an empty key"));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label key {k:?} is given twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let sel = LabelSelector::default();
        assert!(sel.matches(&Labels::new()));
        assert!(sel.matches(&labels(&[("app", "agent")])));
    }

    #[test]
    fn match_labels_need_exact_values() {
        let sel = LabelSelector {
            match_labels: [("app".to_string(), "agent".to_string())].into(),
            ..Default::default()
        };
        assert!(sel.matches(&labels(&[("app", "agent"), ("team", "a")])));
        assert!(!sel.matches(&labels(&[("app", "agent2")])));
        assert!(!sel.matches(&labels(&[("team", "a")])));
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let l = labels(&[("tier", "gold")]);
        assert!(req("tier", Operator::In, &["gold", "silver"]).matches(&l));
        assert!(!req("tier", Operator::In, &["bronze"]).matches(&l));
        assert!(!req("zone", Operator::In, &["a"]).matches(&l));
        assert!(req("tier", Operator::NotIn, &["bronze"]).matches(&l));
        assert!(!req("tier", Operator::NotIn, &["gold"]).matches(&l));
        // NotIn matches when the key is absent, as in Kubernetes.
        assert!(req("zone", Operator::NotIn, &["a"]).matches(&l));
        assert!(req("tier", Operator::Exists, &[]).matches(&l));
        assert!(!req("zone", Operator::Exists, &[]).matches(&l));
        assert!(req("zone", Operator::DoesNotExist, &[]).matches(&l));
        assert!(!req("tier", Operator::DoesNotExist, &[]).matches(&l));
    }

    #[test]
    fn parse_labels_flag() {
        assert_eq!(parse_labels("").unwrap(), Labels::new());
        assert_eq!(
            parse_labels("app=agent, team = a").unwrap(),
            labels(&[("app", "agent"), ("team", "a")])
        );
        assert!(parse_labels("app").unwrap_err().contains("key=value"));
        assert!(parse_labels("=x").unwrap_err().contains("empty key"));
        assert!(parse_labels("a=1,a=2").unwrap_err().contains("twice"));
    }

    fn arb_labels() -> impl Strategy<Value = Labels> {
        prop::collection::btree_map("[a-c]", "[x-z]", 0..4)
    }

    fn arb_requirement() -> impl Strategy<Value = Requirement> {
        (
            "[a-c]",
            prop_oneof![
                Just(Operator::In),
                Just(Operator::NotIn),
                Just(Operator::Exists),
                Just(Operator::DoesNotExist)
            ],
            prop::collection::vec("[x-z]", 1..3),
        )
            .prop_map(|(key, operator, values)| {
                let values = match operator {
                    Operator::In | Operator::NotIn => values,
                    Operator::Exists | Operator::DoesNotExist => vec![],
                };
                Requirement {
                    key,
                    operator,
                    values,
                }
            })
    }

    fn arb_selector() -> impl Strategy<Value = LabelSelector> {
        (
            prop::collection::btree_map("[a-c]", "[x-z]", 0..3),
            prop::collection::vec(arb_requirement(), 0..3),
        )
            .prop_map(|(match_labels, match_expressions)| LabelSelector {
                match_labels,
                match_expressions,
            })
    }

    /// An independent restatement of the rules, written as a truth table per
    /// operator, to check `matches` against.
    fn reference(sel: &LabelSelector, l: &Labels) -> bool {
        for (k, v) in &sel.match_labels {
            if l.get(k) != Some(v) {
                return false;
            }
        }
        for r in &sel.match_expressions {
            let ok = match (r.operator, l.get(&r.key)) {
                (Operator::In, Some(v)) => r.values.iter().any(|x| x == v),
                (Operator::In, None) => false,
                (Operator::NotIn, Some(v)) => r.values.iter().all(|x| x != v),
                (Operator::NotIn, None) => true,
                (Operator::Exists, found) => found.is_some(),
                (Operator::DoesNotExist, found) => found.is_none(),
            };
            if !ok {
                return false;
            }
        }
        true
    }

    proptest! {
        #[test]
        fn matches_agrees_with_reference(sel in arb_selector(), l in arb_labels()) {
            prop_assert_eq!(sel.matches(&l), reference(&sel, &l));
        }

        #[test]
        fn requirement_order_does_not_matter(sel in arb_selector(), l in arb_labels()) {
            let mut rev = sel.clone();
            rev.match_expressions.reverse();
            prop_assert_eq!(sel.matches(&l), rev.matches(&l));
        }

        #[test]
        fn adding_a_requirement_never_widens(sel in arb_selector(), extra in arb_requirement(), l in arb_labels()) {
            let mut narrower = sel.clone();
            narrower.match_expressions.push(extra);
            prop_assert!(!narrower.matches(&l) || sel.matches(&l));
        }

        #[test]
        fn a_selector_built_from_labels_matches_them(l in arb_labels()) {
            let sel = LabelSelector { match_labels: l.clone(), match_expressions: vec![] };
            prop_assert!(sel.matches(&l));
        }
    }
}
