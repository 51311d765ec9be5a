//! Usage records and their aggregation.
//!
//! A [`UsageRecord`] is written for every upstream attempt the sidecar makes:
//! what was asked, what served it, the four disjoint token kinds, the cost
//! (or `None`: unpriced), whether the numbers are estimated (a stream cut
//! off before the provider's usage event), and which budget periods it was
//! counted in. Records carry a per-sidecar sequence number so a ledger can
//! deduplicate replays. [`Aggregate`] folds records into per-model and
//! per-budget-period totals; folding is order-independent.

use std::collections::BTreeMap;

pub mod cache;
mod line;
mod replay;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use self::cache::{CacheFigures, CacheTotals};
pub use self::replay::{
    MAX_HEADER_VALUE_BYTES, NEVER_RECORDED_HEADERS, ReplayFacts, cap_header_value,
    header_recordable,
};
use crate::{
    money::Usd,
    tokens::TokenCounts,
    workload::{Endpoint, ObjectRef},
};

/// Totals of one budget period (or of any set of records): spend, tokens
/// and requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Committed spend (priced requests).
    pub spent: Usd,
    /// Tokens by kind.
    pub usage: TokenCounts,
    /// Requests settled.
    pub requests: u64,
    /// Requests whose model had no price.
    pub unpriced_requests: u64,
    /// Prompt-cache savings, waste and busts.
    #[serde(default)]
    pub cache: CacheTotals,
    /// By per-key budget key (TokenBudget `spec.perKey`), bounded by the
    /// budget's `maxKeys` (plus the missing and overflow keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, KeyTotals>,
}

/// What one per-key budget key spent in a period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyTotals {
    /// Committed spend (priced requests).
    pub spent: Usd,
    /// Tokens by kind.
    pub usage: TokenCounts,
    /// Requests settled.
    pub requests: u64,
    /// Requests whose model had no price.
    #[serde(default)]
    pub unpriced_requests: u64,
}

// === impl KeyTotals ===

impl KeyTotals {
    /// Count one settled request.
    pub fn add(&mut self, usage: &TokenCounts, cost: Option<Usd>) {
        add_usage(&mut self.usage, usage);
        self.requests += 1;
        match cost {
            Some(c) => self.spent = self.spent.saturating_add(c),
            None => self.unpriced_requests += 1,
        }
    }

    /// All tokens of every kind.
    pub fn tokens(&self) -> u64 {
        self.usage.total_tokens()
    }
}

/// The `n` keys of `keys` that spent most (USD, then tokens, then by key).
pub fn top_keys(keys: &BTreeMap<String, KeyTotals>, n: usize) -> Vec<(&String, &KeyTotals)> {
    let mut v: Vec<_> = keys.iter().collect();
    v.sort_by(|a, b| {
        b.1.spent
            .cmp(&a.1.spent)
            .then(b.1.tokens().cmp(&a.1.tokens()))
            .then(a.0.cmp(b.0))
    });
    v.truncate(n);
    v
}

/// A budget period a record was counted in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BudgetPeriodRef {
    /// The budget.
    pub budget: ObjectRef,
    /// Start of the period.
    pub period_start: Timestamp,
    /// The budget's per-key key the record counted under (`spec.perKey`;
    /// a hash prefix for credentials, never a credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One metered upstream attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Sequence number, unique and increasing per sidecar.
    pub seq: u64,
    /// When the attempt finished.
    pub ts: Timestamp,
    /// Endpoint called.
    pub endpoint: Endpoint,
    /// Model the app asked for.
    pub requested_model: String,
    /// Model that served (the provider's answer, else the one sent).
    pub served_model: String,
    /// Provider name from the RoutingPolicy.
    pub provider: String,
    /// Route that matched, if any.
    pub route: Option<String>,
    /// Complexity score, when computed.
    pub score: Option<u16>,
    /// Why the classifier scored it so (e.g. `score 72: +stack trace, +9 turns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// 1 for the first try, 2 for the first retry, ...
    pub attempt: u32,
    /// Upstream HTTP status (0 when no response arrived).
    pub status: u16,
    /// Tokens by kind.
    pub usage: TokenCounts,
    /// Cost at the serving model's price; `None` when unpriced.
    pub cost: Option<Usd>,
    /// True when usage was estimated (stream ended before the usage event).
    pub estimated: bool,
    /// Budget periods this attempt counted in. A response-cache hit
    /// (`cache.response_hit`) names the periods of the budgets it would
    /// have been charged to (without a per-key key): there it counts as a
    /// hit and what it saved, never as spend, tokens or a request.
    pub budgets: Vec<BudgetPeriodRef>,
    /// Prompt-cache figures: saved, wasted, the bust (see [`cache`]).
    #[serde(default, skip_serializing_if = "CacheFigures::is_empty")]
    pub cache: CacheFigures,
    /// The sidecar's intent record this attempt settles (see
    /// [`IntentLine`]); local bookkeeping of a sidecar's journal, not
    /// sent to the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<u64>,
    /// What a what-if replay needs (see [`ReplayFacts`]); `None` on records
    /// written before it existed and on response-cache hits. Boxed: records
    /// and the request future that holds them are moved by value, and the
    /// facts inline cost 9.4k instructions per request in copies
    /// (bench/README.md, issue 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Box<ReplayFacts>>,
}

/// An attempt about to be forwarded, written to the sidecar's journal
/// before the request leaves: `record` is its worst case (the usage and
/// cost its reservation held, `estimated`, status 0). The attempt's
/// settled [`UsageRecord`] carries the same `intent` id; an intent without
/// one after a restart (the sidecar died with the request in flight) is
/// recorded as `record`, so the ledger never counts less than the
/// provider billed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentLine {
    /// The intent's id, unique among the journal's lines.
    pub intent: u64,
    /// The attempt's worst case, as it is recorded if never settled.
    pub record: UsageRecord,
}

/// Per-model totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTotals {
    /// Attempts that reached the provider and were metered.
    pub requests: u64,
    /// Tokens by kind.
    pub usage: TokenCounts,
    /// Priced spend.
    pub cost: Usd,
    /// Attempts with no known price.
    pub unpriced_requests: u64,
    /// Attempts whose usage was estimated.
    pub estimated_requests: u64,
    /// Prompt-cache savings, waste and busts.
    #[serde(default)]
    pub cache: CacheTotals,
}

/// Totals folded from records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Highest sequence number folded in.
    pub last_seq: u64,
    /// By serving model.
    pub models: BTreeMap<String, ModelTotals>,
    /// By budget and period start. Serialized as a list of
    /// `{budget, periods}` (JSON map keys must be strings).
    #[serde(with = "budgets_as_list")]
    pub budgets: BTreeMap<ObjectRef, BTreeMap<Timestamp, Totals>>,
}

mod budgets_as_list {
    use std::collections::BTreeMap;

    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Totals;
    use crate::workload::ObjectRef;

    type Map = BTreeMap<ObjectRef, BTreeMap<Timestamp, Totals>>;

    #[derive(Serialize, Deserialize)]
    struct Entry {
        budget: ObjectRef,
        periods: BTreeMap<Timestamp, Totals>,
    }

    pub fn serialize<S: Serializer>(m: &Map, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|(b, p)| Entry {
            budget: b.clone(),
            periods: p.clone(),
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Map, D::Error> {
        Ok(Vec::<Entry>::deserialize(d)?
            .into_iter()
            .map(|e| (e.budget, e.periods))
            .collect())
    }
}

// === impl ModelTotals ===

impl ModelTotals {
    fn add(&mut self, r: &UsageRecord) {
        self.requests += 1;
        add_usage(&mut self.usage, &r.usage);
        match r.cost {
            Some(c) => self.cost = self.cost.saturating_add(c),
            None => self.unpriced_requests += 1,
        }
        if r.estimated {
            self.estimated_requests += 1;
        }
        self.cache.add(&r.cache);
    }
}

/// `a += b`, kind by kind.
pub fn add_usage(a: &mut TokenCounts, b: &TokenCounts) {
    a.input_tokens = a.input_tokens.saturating_add(b.input_tokens);
    a.output_tokens = a.output_tokens.saturating_add(b.output_tokens);
    a.cache_read_tokens = a.cache_read_tokens.saturating_add(b.cache_read_tokens);
    a.cache_write_tokens = a.cache_write_tokens.saturating_add(b.cache_write_tokens);
    a.cache_write_1h_tokens = a
        .cache_write_1h_tokens
        .saturating_add(b.cache_write_1h_tokens);
}

// === impl Aggregate ===

impl Aggregate {
    /// Fold one record in.
    pub fn add(&mut self, r: &UsageRecord) {
        self.last_seq = self.last_seq.max(r.seq);
        self.models
            .entry(r.served_model.clone())
            .or_default()
            .add(r);
        for b in &r.budgets {
            let t = self
                .budgets
                .entry(b.budget.clone())
                .or_default()
                .entry(b.period_start)
                .or_default();
            if r.cache.response_hit {
                // A response-cache hit counts in the budgets it would have
                // been charged to as a hit and what it saved, nothing else.
                t.cache.add(&r.cache);
                continue;
            }
            add_usage(&mut t.usage, &r.usage);
            t.requests += 1;
            match r.cost {
                Some(c) => t.spent = t.spent.saturating_add(c),
                None => t.unpriced_requests += 1,
            }
            t.cache.add(&r.cache);
            if let Some(k) = &b.key {
                t.keys.entry(k.clone()).or_default().add(&r.usage, r.cost);
            }
        }
    }

    /// Totals of one budget period (zero if none recorded).
    pub fn budget_period(&self, budget: &ObjectRef, start: Timestamp) -> Totals {
        self.budgets
            .get(budget)
            .and_then(|p| p.get(&start))
            .cloned()
            .unwrap_or_default()
    }

    /// Keep only the `keep` most recent periods of each budget.
    pub fn prune_periods(&mut self, keep: usize) {
        for periods in self.budgets.values_mut() {
            while periods.len() > keep {
                periods.pop_first();
            }
        }
    }

    /// Sum over every model.
    pub fn total(&self) -> ModelTotals {
        let mut t = ModelTotals::default();
        for m in self.models.values() {
            t.requests += m.requests;
            add_usage(&mut t.usage, &m.usage);
            t.cost = t.cost.saturating_add(m.cost);
            t.unpriced_requests += m.unpriced_requests;
            t.estimated_requests += m.estimated_requests;
            t.cache.merge(&m.cache);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, model: &str, cost: Option<&str>, budget: Option<&str>) -> UsageRecord {
        UsageRecord {
            seq,
            ts: "2026-11-22T10:00:00Z".parse().unwrap(),
            endpoint: Endpoint::Messages,
            requested_model: "claude-opus-4-1".into(),
            served_model: model.into(),
            provider: "anthropic".into(),
            route: Some("default".into()),
            score: Some(12),
            reason: None,
            attempt: 1,
            status: 200,
            usage: TokenCounts {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 2,
                cache_write_tokens: 1,
                cache_write_1h_tokens: 0,
            },
            cost: cost.map(|c| c.parse().unwrap()),
            estimated: seq.is_multiple_of(2),
            budgets: budget
                .map(|b| BudgetPeriodRef {
                    budget: ObjectRef::new("ns", b),
                    period_start: "2026-11-22T00:00:00Z".parse().unwrap(),
                    key: None,
                })
                .into_iter()
                .collect(),
            intent: None,
            cache: Default::default(),
            replay: None,
        }
    }

    #[test]
    fn folds_models_and_budget_periods() {
        let mut a = Aggregate::default();
        a.add(&rec(1, "claude-haiku-4-5", Some("0.01"), Some("team")));
        a.add(&rec(2, "claude-haiku-4-5", None, Some("team")));
        a.add(&rec(3, "claude-sonnet-4-5", Some("0.20"), None));
        assert_eq!(a.last_seq, 3);
        let h = &a.models["claude-haiku-4-5"];
        assert_eq!(
            (h.requests, h.unpriced_requests, h.estimated_requests),
            (2, 1, 1)
        );
        assert_eq!(h.cost.to_string(), "0.01");
        assert_eq!(h.usage.total_tokens(), 36);
        let t = a.budget_period(
            &ObjectRef::new("ns", "team"),
            "2026-11-22T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(
            (
                t.requests,
                t.unpriced_requests,
                t.spent.to_string().as_str()
            ),
            (2, 1, "0.01")
        );
        assert_eq!(a.total().cost.to_string(), "0.21");
        // The aggregate (with budget periods) round-trips through JSON:
        // it is the ledger's snapshot.
        let snap = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Aggregate>(&snap).unwrap(), a);
        let json = serde_json::to_string(&rec(1, "m", Some("0.01"), None)).unwrap();
        let back: UsageRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec(1, "m", Some("0.01"), None));
    }

    #[test]
    fn a_response_cache_hit_counts_in_its_budget_as_a_hit_and_its_saving_only() {
        let mut a = Aggregate::default();
        a.add(&rec(1, "claude-haiku-4-5", Some("0.01"), Some("team")));
        let mut hit = rec(2, "claude-haiku-4-5", Some("0"), Some("team"));
        hit.usage = TokenCounts::default();
        hit.cache.response_hit = true;
        hit.cache.response_saved = "0.01".parse().unwrap();
        a.add(&hit);
        a.add(&hit.clone());
        let t = a.budget_period(
            &ObjectRef::new("ns", "team"),
            "2026-11-22T00:00:00Z".parse().unwrap(),
        );
        // Spend, tokens and requests are the charged request's alone.
        assert_eq!(
            (t.requests, t.spent.to_string().as_str(), t.tokens()),
            (1, "0.01", 18)
        );
        assert_eq!(
            (t.cache.response_hits, t.cache.response_saved.to_string()),
            (2, "0.02".to_string())
        );
    }
}
