//! Per-key caps (TokenBudget `spec.perKey`): the budget's cap split per
//! key — an agent session header, the pod, or a hash of the app's own
//! credential — so a runaway agent loop hits a hard stop at its key's
//! limit while the other keys keep working.
//!
//! - A request reserves its worst case in the pooled budget **and** in its
//!   key; it goes out only if it fits both. Settlement replaces both
//!   reservations by the actual cost, as for the pooled cap.
//! - A period tracks at most `maxKeys` distinct keys; every further key of
//!   the period counts under [`OVERFLOW_KEY`], which has the per-key limit
//!   like any key, so inventing fresh keys (random session ids) cannot
//!   escape the cap. A request without a key counts under [`MISSING_KEY`].
//!   Both come on top of `maxKeys`, so memory holds `maxKeys + 2` keys.
//! - Keys reset with the budget's period (they live in its [`Totals`]).
//! - The loop guard counts identical requests per key (the key is mixed
//!   into the request's digest).

use jiff::Timestamp;

use super::{Ask, BudgetState, Held, Refusal, RefusalReason};
use crate::{
    money::Usd,
    usage::KeyTotals,
    workload::{MAX_KEY_LEN, MISSING_KEY, OVERFLOW_KEY, PerKeyConfig},
};

/// Whether `key` is one of the two keys that come on top of `maxKeys`.
fn is_reserved(key: &str) -> bool {
    key == MISSING_KEY || key == OVERFLOW_KEY
}

// === impl BudgetState ===

impl BudgetState {
    /// The per-key split, if the budget has one.
    pub fn per_key(&self) -> Option<&PerKeyConfig> {
        self.cfg.per_key.as_ref()
    }

    /// The key a request counts under this period, given the key it
    /// carries (`None`: the header or credential is missing): the key
    /// itself while the period has room for it, else [`OVERFLOW_KEY`].
    /// The key is registered in the period (it counts toward `maxKeys`
    /// even if the request is refused). `None` when the budget has no
    /// per-key split.
    pub fn key_for(&mut self, now: Timestamp, raw: Option<&str>) -> Option<String> {
        self.cfg.per_key.as_ref()?;
        self.roll(now);
        Some(self.admit_key(raw.unwrap_or(MISSING_KEY)))
    }

    /// Register `raw` in the period's keys, or map it to the overflow key
    /// when `maxKeys` distinct keys are already there (or it is longer
    /// than any key the sidecar makes).
    fn admit_key(&mut self, raw: &str) -> String {
        let max = self.cfg.per_key.as_ref().map_or(0, |p| p.max_keys) as usize;
        let keys = &mut self.totals.keys;
        let key = if keys.contains_key(raw) || is_reserved(raw) {
            raw
        } else if raw.len() > MAX_KEY_LEN || keys.keys().filter(|k| !is_reserved(k)).count() >= max
        {
            OVERFLOW_KEY
        } else {
            raw
        };
        keys.entry(key.to_string()).or_default();
        key.to_string()
    }

    /// What each key spent this period (with the keys seen but not yet
    /// charged), by key.
    pub fn key_totals(&self) -> &std::collections::BTreeMap<String, KeyTotals> {
        &self.totals.keys
    }

    /// The `n` keys that spent most this period (USD, then tokens, then
    /// by key), for `/ledger`, `report` and status.
    pub fn top_keys(&self, n: usize) -> Vec<(&String, &KeyTotals)> {
        crate::usage::top_keys(&self.totals.keys, n)
    }

    /// Connected: what the operator last reported `key` spent
    /// cluster-wide this period (USD, tokens).
    pub fn cluster_key_spent(&self, key: &str) -> Option<(Usd, u64)> {
        self.cluster_now()?.keys.get(key).copied()
    }

    /// What requests of `key` in flight hold.
    pub fn key_reserved(&self, key: &str) -> Held {
        self.key_reserved.get(key).copied().unwrap_or_default()
    }

    /// Whether `key` has spent its per-key limit this period.
    pub fn key_exhausted(&self, key: &str) -> bool {
        let (Some(pk), Some(t)) = (self.cfg.per_key.as_ref(), self.totals.keys.get(key)) else {
            return false;
        };
        pk.limit_usd.is_some_and(|l| t.spent >= l)
            || pk.limit_tokens.is_some_and(|l| t.tokens() >= l)
    }

    /// Reserve the worst case of one request in the pooled budget and, with
    /// `key` (as [`Self::key_for`] returned it), in that key: all or
    /// nothing. Settle with [`Self::settle_for`] or give back with
    /// [`Self::release_for`], passing the same key.
    pub fn reserve_for(
        &mut self,
        now: Timestamp,
        ask: Ask,
        key: Option<&str>,
    ) -> Result<Held, Refusal> {
        let held = self.reserve(now, ask)?;
        let Some(key) = key else {
            return Ok(held);
        };
        if let Err(refusal) = self.check_key(now, ask, key) {
            self.release(held);
            return Err(refusal);
        }
        let r = self.key_reserved.entry(key.to_string()).or_default();
        r.cost = r.cost.saturating_add(held.cost);
        r.tokens = r.tokens.saturating_add(held.tokens);
        Ok(held)
    }

    /// Give back a reservation made with [`Self::reserve_for`].
    pub fn release_for(&mut self, held: Held, key: Option<&str>) {
        self.release(held);
        let Some(key) = key else {
            return;
        };
        if let Some(r) = self.key_reserved.get_mut(key) {
            r.cost = r.cost.saturating_sub(held.cost).max(Usd::ZERO);
            r.tokens = r.tokens.saturating_sub(held.tokens);
            if *r == Held::default() {
                self.key_reserved.remove(key);
            }
        }
    }

    /// Replace a reservation made with [`Self::reserve_for`] by the actual
    /// usage and cost of the attempt.
    pub fn settle_for(
        &mut self,
        now: Timestamp,
        held: Held,
        key: Option<&str>,
        usage: &crate::tokens::TokenCounts,
        cost: Option<Usd>,
    ) {
        self.roll(now);
        self.release_for(held, key);
        self.record_for(usage, cost, key);
    }

    /// Add usage that was not reserved here (a replay, another sidecar's
    /// record, a shadow budget's request), in the budget and under `key`.
    /// A key the period has no room for counts under the overflow key.
    pub fn record_for(
        &mut self,
        usage: &crate::tokens::TokenCounts,
        cost: Option<Usd>,
        key: Option<&str>,
    ) {
        self.record(usage, cost);
        if let Some(raw) = key
            && self.cfg.per_key.is_some()
        {
            let key = self.admit_key(raw);
            if let Some(t) = self.totals.keys.get_mut(&key) {
                t.add(usage, cost);
            }
        }
    }

    /// The per-key limit: `ask` must fit with what `key` spent and what
    /// its requests in flight reserved.
    fn check_key(&self, now: Timestamp, ask: Ask, key: &str) -> Result<(), Refusal> {
        let Some(pk) = self.cfg.per_key.as_ref() else {
            return Ok(());
        };
        let mut spent = self.totals.keys.get(key).cloned().unwrap_or_default();
        // Connected: the larger of this sidecar's spend for the key and the
        // cluster-wide spend the operator reported (it only grows within
        // a period, so a late report can only understate it).
        let mut scope = "";
        if let Some(&(usd, tokens)) = self.cluster_now().and_then(|c| c.keys.get(key)) {
            scope = " across all pods";
            spent.spent = spent.spent.max(usd);
            let local = spent.tokens();
            if tokens > local {
                spent.usage.input_tokens = spent.usage.input_tokens.saturating_add(tokens - local);
            }
        }
        let reserved = self.key_reserved(key);
        let period = self.cfg.period;
        if let Some(limit) = pk.limit_usd {
            let cost = ask.cost.unwrap_or(Usd::ZERO);
            let committed = spent.spent.saturating_add(reserved.cost);
            if committed.saturating_add(cost) > limit {
                let in_flight = spent.spent.saturating_add(cost) <= limit;
                let used = format!(
                    "spent ${} of its ${limit} per-key limit this {period} period{scope}",
                    spent.spent
                );
                let (room, left) = if in_flight {
                    (
                        format!(
                            ", and its requests in flight have reserved ${} more",
                            reserved.cost
                        ),
                        limit.saturating_sub(committed).max(Usd::ZERO),
                    )
                } else {
                    (
                        String::new(),
                        limit.saturating_sub(spent.spent).max(Usd::ZERO),
                    )
                };
                let message = format!(
                    "{}: {used}{room}; this request's worst-case cost ${cost} exceeds the ${left} left",
                    self.key_subject(key, in_flight, spent.spent >= limit),
                );
                return Err(self.refusal_in_flight(
                    now,
                    RefusalReason::KeyLimit,
                    in_flight,
                    message,
                ));
            }
        }
        if let Some(limit) = pk.limit_tokens {
            let used = spent.tokens();
            let committed = used.saturating_add(reserved.tokens);
            if committed.saturating_add(ask.tokens) > limit {
                let in_flight = used.saturating_add(ask.tokens) <= limit;
                let room = if in_flight {
                    format!(
                        ", and its requests in flight have reserved {} more",
                        reserved.tokens
                    )
                } else {
                    String::new()
                };
                let message = format!(
                    "{}: used {used} of its {limit} per-key tokens this {period} period{scope}{room}; \
                     this request may use up to {} tokens",
                    self.key_subject(key, in_flight, used >= limit),
                    ask.tokens,
                );
                return Err(self.refusal_in_flight(
                    now,
                    RefusalReason::KeyLimit,
                    in_flight,
                    message,
                ));
            }
        }
        Ok(())
    }

    /// The start of a per-key refusal: the budget, the key, and whether
    /// nothing is left, only requests in flight hold the room, or this
    /// request is too big for what is left.
    fn key_subject(&self, key: &str, in_flight: bool, exhausted: bool) -> String {
        let what = if in_flight {
            "has no room for this request now"
        } else if exhausted {
            "is exhausted"
        } else {
            "cannot cover this request"
        };
        format!("TokenBudget {} key {key:?} {what}", self.cfg.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        period::Period,
        tokens::TokenCounts,
        usage::Totals,
        workload::{BudgetConfig, FailMode, KeySource, LoopGuard, ObjectRef},
    };

    fn cfg(max_keys: u32) -> BudgetConfig {
        BudgetConfig {
            source: ObjectRef::new("ns", "agents"),
            generation: 1,
            period: Period::Daily,
            time_zone: "UTC".into(),
            limit_usd: Some(usd("10.00")),
            limit_tokens: None,
            thresholds: vec![],
            per_request_cap_usd: None,
            loop_guard: None,
            fail_mode: FailMode::Closed,
            shadow: false,
            per_key: Some(PerKeyConfig {
                by: KeySource::Header("x-agent-session".into()),
                limit_usd: Some(usd("1.00")),
                limit_tokens: None,
                max_keys,
            }),
            on_projected_overrun: None,
        }
    }

    fn now() -> Timestamp {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    fn usd(s: &str) -> Usd {
        s.parse().unwrap()
    }

    fn ask(cost: &str) -> Ask {
        Ask {
            cost: Some(usd(cost)),
            tokens: 100,
        }
    }

    fn spend(b: &mut BudgetState, key: &str, cost: &str) {
        let h = b.reserve_for(now(), ask(cost), Some(key)).unwrap();
        b.settle_for(
            now(),
            h,
            Some(key),
            &TokenCounts::default(),
            Some(usd(cost)),
        );
    }

    #[test]
    fn a_key_over_its_limit_is_refused_and_the_other_keys_keep_working() {
        let mut b = BudgetState::new(cfg(100), now(), Totals::default()).unwrap();
        let a = b.key_for(now(), Some("sess-a")).unwrap();
        let other = b.key_for(now(), Some("sess-b")).unwrap();
        spend(&mut b, &a, "0.90");
        let err = b.reserve_for(now(), ask("0.20"), Some(&a)).unwrap_err();
        assert_eq!(err.reason, RefusalReason::KeyLimit);
        assert!(!err.in_flight);
        assert_eq!(
            err.message,
            "TokenBudget ns/agents key \"sess-a\" cannot cover this request: spent $0.90 of \
             its $1.00 per-key limit this Daily period; this request's worst-case cost $0.20 \
             exceeds the $0.10 left. It resets at 2026-11-23T00:00:00+00:00 (UTC)."
        );
        // Nothing stayed held, in the pool or the key.
        assert_eq!(b.reserved(), Held::default());
        assert_eq!(b.key_reserved(&a), Held::default());
        // The other key has its own dollar.
        spend(&mut b, &other, "1.00");
        assert!(b.key_exhausted(&other));
        let err = b.reserve_for(now(), ask("0.01"), Some(&other)).unwrap_err();
        assert!(
            err.message
                .starts_with("TokenBudget ns/agents key \"sess-b\" is exhausted: spent $1.00"),
            "{}",
            err.message
        );
        spend(&mut b, &a, "0.10");
        assert_eq!(b.totals().spent, usd("2.00"));
        assert_eq!(b.key_totals()["sess-a"].spent, usd("1.00"));
        assert_eq!(b.key_totals()["sess-a"].requests, 2);
    }

    #[test]
    fn requests_in_flight_count_against_their_key() {
        let mut b = BudgetState::new(cfg(100), now(), Totals::default()).unwrap();
        let held = b.reserve_for(now(), ask("0.60"), Some("k")).unwrap();
        let err = b.reserve_for(now(), ask("0.60"), Some("k")).unwrap_err();
        assert!(err.in_flight);
        assert!(
            err.message.starts_with(
                "TokenBudget ns/agents key \"k\" has no room for this request now: spent $0.00 \
                 of its $1.00 per-key limit this Daily period, and its requests in flight have \
                 reserved $0.60 more; this request's worst-case cost $0.60 exceeds the $0.40 left"
            ),
            "{}",
            err.message
        );
        b.reserve_for(now(), ask("0.60"), Some("j")).unwrap();
        b.release_for(held, Some("k"));
        assert_eq!(b.key_reserved("k"), Held::default());
        b.reserve_for(now(), ask("0.60"), Some("k")).unwrap();
    }

    #[test]
    fn keys_past_max_keys_share_the_overflow_key_and_missing_keys_their_own() {
        let mut b = BudgetState::new(cfg(2), now(), Totals::default()).unwrap();
        assert_eq!(b.key_for(now(), Some("a")).as_deref(), Some("a"));
        assert_eq!(b.key_for(now(), Some("b")).as_deref(), Some("b"));
        assert_eq!(b.key_for(now(), Some("c")).as_deref(), Some(OVERFLOW_KEY));
        assert_eq!(b.key_for(now(), Some("d")).as_deref(), Some(OVERFLOW_KEY));
        assert_eq!(b.key_for(now(), Some("a")).as_deref(), Some("a"));
        assert_eq!(b.key_for(now(), None).as_deref(), Some(MISSING_KEY));
        // Fresh keys cannot escape: every one of them spends from one
        // per-key limit.
        spend(&mut b, OVERFLOW_KEY, "0.70");
        let c = b.key_for(now(), Some("fresh-1")).unwrap();
        assert_eq!(c, OVERFLOW_KEY);
        let err = b.reserve_for(now(), ask("0.40"), Some(&c)).unwrap_err();
        assert!(err.message.contains("key \"(other)\""), "{}", err.message);
        spend(&mut b, MISSING_KEY, "1.00");
        assert!(
            b.reserve_for(now(), ask("0.01"), Some(MISSING_KEY))
                .is_err()
        );
        assert_eq!(b.key_totals().len(), 4, "a, b, (other), (none)");
        // A key longer than any the sidecar makes overflows too.
        let mut b = BudgetState::new(cfg(100), now(), Totals::default()).unwrap();
        let long = "x".repeat(MAX_KEY_LEN + 1);
        assert_eq!(b.key_for(now(), Some(&long)).as_deref(), Some(OVERFLOW_KEY));
    }

    #[test]
    fn keys_reset_with_the_period_and_records_respect_the_bound() {
        let mut b = BudgetState::new(cfg(1), now(), Totals::default()).unwrap();
        spend(&mut b, "a", "1.00");
        assert!(b.reserve_for(now(), ask("0.01"), Some("a")).is_err());
        // Records from elsewhere (another sidecar, a replay) keep the bound.
        b.record_for(&TokenCounts::default(), Some(usd("0.30")), Some("z"));
        assert_eq!(b.key_totals()[OVERFLOW_KEY].spent, usd("0.30"));
        let tomorrow: Timestamp = "2026-11-23T00:00:01Z".parse().unwrap();
        assert_eq!(b.key_for(tomorrow, Some("z")).as_deref(), Some("z"));
        assert_eq!(b.key_totals().len(), 1, "only z this period");
        assert!(b.key_totals()["z"] == KeyTotals::default());
        // Spent a whole key limit yesterday: a fresh one today.
        assert_eq!(
            b.key_for(tomorrow, Some("a")).as_deref(),
            Some(OVERFLOW_KEY)
        );
        let h = b.reserve_for(tomorrow, ask("1.00"), Some("z")).unwrap();
        assert_eq!(b.key_reserved("z"), h);
    }

    #[test]
    fn token_limits_per_key() {
        let mut c = cfg(10);
        if let Some(pk) = c.per_key.as_mut() {
            pk.limit_usd = None;
            pk.limit_tokens = Some(150);
        }
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        let h = b.reserve_for(now(), ask("0.01"), Some("k")).unwrap();
        let used = TokenCounts {
            input_tokens: 60,
            output_tokens: 20,
            ..Default::default()
        };
        b.settle_for(now(), h, Some("k"), &used, Some(usd("0.01")));
        let err = b.reserve_for(now(), ask("0.01"), Some("k")).unwrap_err();
        assert_eq!(
            err.message,
            "TokenBudget ns/agents key \"k\" cannot cover this request: used 80 of its 150 \
             per-key tokens this Daily period; this request may use up to 100 tokens. It \
             resets at 2026-11-23T00:00:00+00:00 (UTC)."
        );
        b.reserve_for(now(), ask("0.01"), Some("other")).unwrap();
    }

    #[test]
    fn the_loop_guard_counts_per_key() {
        let mut c = cfg(10);
        c.loop_guard = Some(LoopGuard {
            max_identical: 2,
            window_ms: 60_000,
            cooldown_ms: 300_000,
        });
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        b.check_loop_for(now(), 7, Some("a")).unwrap();
        b.check_loop_for(now(), 7, Some("b")).unwrap();
        let err = b.check_loop_for(now(), 7, Some("a")).unwrap_err();
        assert_eq!(err.reason, RefusalReason::LoopGuard);
        assert!(
            err.message.starts_with(
                "TokenBudget ns/agents key \"a\": loop guard tripped: the same request was \
                 sent 2 times within 60s"
            ),
            "{}",
            err.message
        );
        // Key b sent it once: it keeps working until it loops itself.
        b.check_loop_for(now(), 8, Some("b")).unwrap();
        assert!(b.check_loop_for(now(), 7, Some("b")).is_err());
        assert!(b.check_loop_for(now(), 7, Some("c")).is_ok());
    }

    #[test]
    fn connected_a_key_is_checked_against_its_cluster_wide_spend() {
        use crate::budget::ClusterSpend;
        let mut b = BudgetState::new(cfg(10), now(), Totals::default()).unwrap();
        spend(&mut b, "a", "0.10");
        let cluster = |start, a: &str| ClusterSpend {
            period_start: start,
            percent: 9,
            spent: usd("0.90"),
            tokens: 0,
            keys: [("a".to_string(), (usd(a), 0))].into_iter().collect(),
            projected_overrun: false,
        };
        // Another period's report does not count.
        b.set_cluster(cluster("2026-11-21T00:00:00Z".parse().unwrap(), "0.95"));
        b.reserve_for(now(), ask("0.85"), Some("a"))
            .map(|h| b.release_for(h, Some("a")))
            .unwrap();
        // Other pods spent $0.95 of key a's dollar: $0.05 is left anywhere.
        b.set_cluster(cluster(b.window().start, "0.95"));
        let err = b.reserve_for(now(), ask("0.06"), Some("a")).unwrap_err();
        assert!(
            err.message.starts_with(
                "TokenBudget ns/agents key \"a\" cannot cover this request: spent $0.95 of its \
                 $1.00 per-key limit this Daily period across all pods; this request's \
                 worst-case cost $0.06 exceeds the $0.05 left"
            ),
            "{}",
            err.message
        );
        b.reserve_for(now(), ask("0.05"), Some("a")).unwrap();
        b.reserve_for(now(), ask("0.50"), Some("b")).unwrap();
    }

    #[test]
    fn the_pooled_cap_still_applies_to_every_key() {
        let mut c = cfg(10);
        c.limit_usd = Some(usd("1.50"));
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        spend(&mut b, "a", "1.00");
        let err = b.reserve_for(now(), ask("0.60"), Some("b")).unwrap_err();
        assert_eq!(err.reason, RefusalReason::Limit);
        assert_eq!(b.key_reserved("b"), Held::default());
    }
}
