//! Budget arithmetic: reservations, settlement, thresholds, caps and the loop
//! guard, for one TokenBudget. Pure: the caller passes the time and holds the
//! lock.
//!
//! The hard cap: before a request is forwarded, its worst-case cost (prompt
//! tokens bounded from above + max output tokens, at the target's price) is
//! *reserved*: it must fit under the effective cap together with what is
//! already spent and what other in-flight requests reserved. When usage
//! arrives the reservation is replaced by the actual cost. As long as the
//! actual cost never exceeds the reservation (true when requests carry a
//! max-tokens cap and the prompt bound holds), spend never exceeds the cap,
//! whatever the concurrency.
//!
//! - The effective cap is the limit, or the lowest `Block` threshold.
//! - `Downgrade` and `Alert` thresholds act on *committed* spend.
//! - A request to an unpriced model reserves no USD (its cost is unknown; it
//!   is counted and flagged) but still reserves tokens.
//! - Shadow budgets compute every verdict and report it, but always allow.
//! - Connected to an operator, thresholds act on the larger of this
//!   sidecar's percentage and the cluster-wide one the operator reports
//!   ([`BudgetState::set_cluster`]), so crossing 80% anywhere
//!   flips every sidecar to the downgrade target; a cluster-wide
//!   percentage at or over the effective cap refuses new requests. The
//!   caps are checked against the larger of this sidecar's spend and the
//!   cluster-wide spend reported: a request whose worst case exceeds what
//!   is left cluster-wide is refused at once (spend only grows within a
//!   period, so a late report can only understate it).

use std::collections::{BTreeMap, HashMap, VecDeque};

mod per_key;

use jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};

use crate::{
    money::Usd,
    period::{PeriodError, Window, time_zone},
    tokens::TokenCounts,
    usage::Totals,
    workload::{BudgetConfig, DowngradeTarget, ObjectRef, ProjectedOverrunAction, ThresholdAction},
};

/// Most distinct request digests a loop guard remembers.
const LOOP_GUARD_MAX_KEYS: usize = 10_000;

/// Budget state for the current period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Below every threshold.
    Ok,
    /// At or above a threshold, below the effective cap.
    Threshold,
    /// The effective cap is reached.
    Exhausted,
}

// === impl State ===

impl State {
    /// The name `/ledger`, `report` and status conditions use.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "Ok",
            State::Threshold => "Threshold",
            State::Exhausted => "Exhausted",
        }
    }
}

/// What kind of refusal a budget made: the label of the 429's
/// `x-tokenwarden-error` header and of `tokenwarden_budget_blocks_total`
/// ([`as_str`](Self::as_str)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The request does not fit under the limit.
    Limit,
    /// The request does not fit under a `Block` threshold below the limit.
    Threshold,
    /// The request's worst case exceeds the per-request cap.
    RequestCap,
    /// The same request was sent too often (the loop guard).
    LoopGuard,
    /// The request does not fit under its key's per-key limit
    /// (`spec.perKey`).
    KeyLimit,
    /// Connected mode: the sidecar's lease could not cover the request and
    /// the operator granted no more in time.
    Lease,
    /// Connected mode: the control plane is unreachable, no lease covers
    /// the request and the budget's `failMode` is `Closed`.
    FailClosed,
}

// === impl RefusalReason ===

impl RefusalReason {
    /// The label on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Limit => "limit",
            RefusalReason::Threshold => "threshold",
            RefusalReason::RequestCap => "request_cap",
            RefusalReason::LoopGuard => "loop_guard",
            RefusalReason::KeyLimit => "key_limit",
            RefusalReason::Lease => "lease",
            RefusalReason::FailClosed => "fail_closed",
        }
    }

    /// A refusal about the size of the request against what is left (a
    /// tighter bound on the request may fit), as opposed to one that no
    /// smaller request would avoid.
    pub fn is_about_size(self) -> bool {
        matches!(
            self,
            RefusalReason::Limit
                | RefusalReason::Threshold
                | RefusalReason::RequestCap
                | RefusalReason::KeyLimit
        )
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a budget refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The budget.
    pub budget: ObjectRef,
    /// What kind of refusal.
    pub reason: RefusalReason,
    /// For the app: names the budget, the spend, the limit and the reset.
    pub message: String,
    /// Seconds until the refusal lifts (period end or cool-down end).
    pub retry_after_secs: u64,
    /// The request fits what is spent; only the worst cases reserved by
    /// requests in flight leave no room for it. It may fit once they
    /// settle (they usually cost less than their worst case).
    pub in_flight: bool,
}

/// What one request asks of a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    /// Worst-case cost; `None` when the target model is unpriced.
    pub cost: Option<Usd>,
    /// Worst-case tokens (all kinds).
    pub tokens: u64,
}

/// What was reserved, to be settled later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Held {
    /// USD held.
    pub cost: Usd,
    /// Tokens held.
    pub tokens: u64,
}

/// One budget's live state.
#[derive(Clone, Debug)]
pub struct BudgetState {
    cfg: BudgetConfig,
    tz: TimeZone,
    window: Window,
    totals: Totals,
    reserved: Held,
    /// Per key (`spec.perKey`): what requests in flight reserved.
    key_reserved: BTreeMap<String, Held>,
    loop_guard: HashMap<u64, LoopEntry>,
    /// Cluster-wide spend of a period, from the operator.
    cluster: Option<ClusterSpend>,
    /// Standalone: the start of the period for which the sidecar's own
    /// forecast last reached a limit ([`BudgetState::set_local_projection`]).
    local_overrun: Option<Timestamp>,
}

/// What the operator reports as spent by every workload a budget selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpend {
    /// Start of the period it is about.
    pub period_start: Timestamp,
    /// Percent of the limit spent (the larger of USD and tokens).
    pub percent: u64,
    /// USD spent.
    pub spent: Usd,
    /// Tokens used (all kinds).
    pub tokens: u64,
    /// Per key (`spec.perKey`): USD and tokens spent, cluster-wide.
    pub keys: BTreeMap<String, (Usd, u64)>,
    /// The operator's forecast reaches the limit before the period ends
    /// (the budget's `ProjectedOverrun` condition).
    pub projected_overrun: bool,
}

#[derive(Clone, Debug, Default)]
struct LoopEntry {
    seen: VecDeque<Timestamp>,
    blocked_until: Option<Timestamp>,
}

// === impl Totals ===

impl Totals {
    /// All tokens of every kind.
    pub fn tokens(&self) -> u64 {
        self.usage.total_tokens()
    }
}

// === impl BudgetState ===

impl BudgetState {
    /// Start tracking a budget at `now`, with `totals` already spent in the
    /// period that contains `now` (from a ledger or the operator).
    pub fn new(cfg: BudgetConfig, now: Timestamp, totals: Totals) -> Result<Self, PeriodError> {
        Self::from_ledger(cfg, now, |_| totals)
    }

    /// Start tracking a budget at `now` with what a ledger holds for the
    /// period that contains it: `spent_in(start)` is the totals of the
    /// period beginning at `start`.
    pub fn from_ledger(
        cfg: BudgetConfig,
        now: Timestamp,
        spent_in: impl FnOnce(Timestamp) -> Totals,
    ) -> Result<Self, PeriodError> {
        let tz = time_zone(&cfg.time_zone)?;
        let window = cfg.period.window(&tz, now)?;
        let totals = spent_in(window.start);
        Ok(Self {
            cfg,
            tz,
            window,
            totals,
            reserved: Held::default(),
            key_reserved: BTreeMap::new(),
            loop_guard: HashMap::new(),
            cluster: None,
            local_overrun: None,
        })
    }

    /// The config.
    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    /// Replace the config (a reload). The period is recomputed if the
    /// period or time zone changed; spend carries over when the window is
    /// the same.
    pub fn reconfigure(&mut self, cfg: BudgetConfig, now: Timestamp) -> Result<(), PeriodError> {
        let tz = time_zone(&cfg.time_zone)?;
        let window = cfg.period.window(&tz, now)?;
        if window != self.window {
            self.totals = Totals::default();
        }
        self.cfg = cfg;
        self.tz = tz;
        self.window = window;
        Ok(())
    }

    /// The current period.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Totals of the current period.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Currently reserved by in-flight requests.
    pub fn reserved(&self) -> Held {
        self.reserved
    }

    /// Move to the period containing `now` if the current one ended.
    /// Returns the finished period's window and totals when it rolled.
    pub fn roll(&mut self, now: Timestamp) -> Option<(Window, Totals)> {
        if now < self.window.end {
            return None;
        }
        let next = self.cfg.period.window(&self.tz, now).ok()?;
        let done = (self.window, std::mem::take(&mut self.totals));
        self.window = next;
        Some(done)
    }

    /// The effective USD cap: the limit, or the lowest Block threshold of it.
    pub fn cap_usd(&self) -> Option<Usd> {
        let limit = self.cfg.limit_usd?;
        Some(scale(limit, self.block_percent()))
    }

    /// The effective token cap.
    pub fn cap_tokens(&self) -> Option<u64> {
        let limit = self.cfg.limit_tokens?;
        Some(
            u64::try_from(u128::from(limit) * u128::from(self.block_percent()) / 100)
                .unwrap_or(u64::MAX),
        )
    }

    fn block_percent(&self) -> u8 {
        self.cfg
            .thresholds
            .iter()
            .filter(|t| matches!(t.action, ThresholdAction::Block))
            .map(|t| t.percent)
            .min()
            .unwrap_or(100)
    }

    /// Record the cluster-wide spend the operator reports (its
    /// BudgetStatus).
    pub fn set_cluster(&mut self, spend: ClusterSpend) {
        self.cluster = Some(spend);
    }

    /// The cluster-wide spend of the current period, if known.
    fn cluster_now(&self) -> Option<&ClusterSpend> {
        self.cluster
            .as_ref()
            .filter(|c| c.period_start == self.window.start)
    }

    /// The cluster-wide percent spent of the current period, if known.
    pub fn cluster_percent(&self) -> Option<u64> {
        self.cluster_now().map(|c| c.percent)
    }

    /// USD and tokens spent as the caps see them: the larger of this
    /// sidecar's committed spend and the cluster-wide spend reported, and
    /// whether the cluster-wide figure is known.
    fn spent_for_caps(&self) -> (Usd, u64, bool) {
        match self.cluster_now() {
            Some(c) => (
                self.totals.spent.max(c.spent),
                self.totals.tokens().max(c.tokens),
                true,
            ),
            None => (self.totals.spent, self.totals.tokens(), false),
        }
    }

    /// The percentage thresholds act on: the larger of this sidecar's
    /// committed spend and the cluster-wide percentage (when connected).
    pub fn percent_spent(&self) -> u64 {
        self.local_percent_spent()
            .max(self.cluster_percent().unwrap_or(0))
    }

    /// Committed spend as a percentage of the limit (the larger of the USD
    /// and token percentages), rounded down.
    pub fn local_percent_spent(&self) -> u64 {
        let usd = self.cfg.limit_usd.map_or(0, |l| {
            if l.picos() <= 0 {
                100
            } else {
                u64::try_from(self.totals.spent.picos().max(0).saturating_mul(100) / l.picos())
                    .unwrap_or(u64::MAX)
            }
        });
        let tokens = self.cfg.limit_tokens.map_or(0, |l| {
            u64::try_from(u128::from(self.totals.tokens()) * 100 / u128::from(l.max(1)))
                .unwrap_or(u64::MAX)
        });
        usd.max(tokens)
    }

    /// What is left of the USD limit (never below zero); `None` without one.
    pub fn remaining_usd(&self) -> Option<Usd> {
        self.cfg
            .limit_usd
            .map(|l| l.saturating_sub(self.totals.spent).max(Usd::ZERO))
    }

    /// `Ok`, `Threshold` or `Exhausted` from committed spend.
    pub fn state(&self) -> State {
        let usd_done = self.cap_usd().is_some_and(|c| self.totals.spent >= c);
        let tok_done = self.cap_tokens().is_some_and(|c| self.totals.tokens() >= c);
        if usd_done || tok_done || self.cluster_exhausted() {
            State::Exhausted
        } else if self.cfg.active_threshold(self.percent_spent()).is_some() {
            State::Threshold
        } else {
            State::Ok
        }
    }

    /// Whether the operator reports the effective cap reached cluster-wide.
    fn cluster_exhausted(&self) -> bool {
        self.cluster_percent()
            .is_some_and(|p| p >= u64::from(self.block_percent()))
    }

    /// The downgrade in force. Precedence:
    /// 1. a `Downgrade` threshold that committed spend reached (the highest
    ///    reached one decides): it is about spend that happened, and a
    ///    team sets it deliberately at that level;
    /// 2. otherwise `onProjectedOverrun: Downgrade` while the operator
    ///    reports a projected overrun for the current period, or, with no
    ///    operator report, while the sidecar's own forecast does
    ///    ([`BudgetState::projected_overrun`]): the early downgrade before
    ///    any threshold.
    ///
    /// A `Block` threshold or the limit still refuses requests whatever
    /// the downgrade. Shadow budgets report it through
    /// [`BudgetState::state`] but return `None` here.
    pub fn downgrade(&self) -> Option<&DowngradeTarget> {
        if self.cfg.shadow {
            return None;
        }
        let pct = self.percent_spent();
        let threshold = self
            .cfg
            .thresholds
            .iter()
            .rev()
            .filter(|t| pct >= u64::from(t.percent))
            .find_map(|t| match &t.action {
                ThresholdAction::Downgrade(d) => Some(d),
                _ => None,
            });
        threshold.or(match &self.cfg.on_projected_overrun {
            Some(ProjectedOverrunAction::Downgrade(d)) if self.projected_overrun() => Some(d),
            _ => None,
        })
    }

    /// Whether a projected overrun is reported for the current period: by
    /// the operator when it reports this period (its forecast covers every
    /// workload), else by the sidecar's own forecast
    /// ([`BudgetState::set_local_projection`], standalone).
    pub fn projected_overrun(&self) -> bool {
        match self.cluster_now() {
            Some(c) => c.projected_overrun,
            None => self.local_overrun == Some(self.window.start),
        }
    }

    /// Standalone: whether the sidecar's own forecast of the current
    /// period reaches a limit before its end. It holds for this period
    /// only: a roll-over clears it.
    pub fn set_local_projection(&mut self, overrun: bool) {
        self.local_overrun = overrun.then_some(self.window.start);
    }

    /// Loop guard: record this request's digest; refuse when it was seen too
    /// often. Call once per request, before reserving.
    pub fn check_loop(&mut self, now: Timestamp, digest: u64) -> Result<(), Refusal> {
        self.check_loop_for(now, digest, None)
    }

    /// The loop guard of one per-key key (`key`, as [`Self::key_for`]
    /// returned it): identical requests count per key, so a looping agent
    /// session trips only its own key. `None` counts for the whole budget.
    pub fn check_loop_for(
        &mut self,
        now: Timestamp,
        digest: u64,
        key: Option<&str>,
    ) -> Result<(), Refusal> {
        let Some(lg) = self.cfg.loop_guard else {
            return Ok(());
        };
        let digest = key.map_or(digest, |k| keyed_digest(digest, k));
        let window =
            jiff::SignedDuration::from_millis(i64::try_from(lg.window_ms).unwrap_or(i64::MAX));
        let cooldown =
            jiff::SignedDuration::from_millis(i64::try_from(lg.cooldown_ms).unwrap_or(i64::MAX));
        if self.loop_guard.len() >= LOOP_GUARD_MAX_KEYS && !self.loop_guard.contains_key(&digest) {
            // Forget entries with nothing recent and no active block.
            self.loop_guard.retain(|_, e| {
                e.blocked_until.is_some_and(|b| b > now)
                    || e.seen
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < window)
            });
            if self.loop_guard.len() >= LOOP_GUARD_MAX_KEYS {
                return Ok(()); // Bounded memory beats perfect recall.
            }
        }
        let entry = self.loop_guard.entry(digest).or_default();
        if let Some(until) = entry.blocked_until {
            if until > now {
                return Err(self.refuse_loop(until, now, lg.max_identical, key));
            }
            entry.blocked_until = None;
            entry.seen.clear();
        }
        while entry
            .seen
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            entry.seen.pop_front();
        }
        entry.seen.push_back(now);
        if entry.seen.len() >= lg.max_identical as usize {
            let until = now.checked_add(cooldown).unwrap_or(now);
            entry.blocked_until = Some(until);
            return Err(self.refuse_loop(until, now, lg.max_identical, key));
        }
        Ok(())
    }

    fn refuse_loop(
        &self,
        until: Timestamp,
        now: Timestamp,
        max: u32,
        key: Option<&str>,
    ) -> Refusal {
        Refusal {
            budget: self.cfg.source.clone(),
            reason: RefusalReason::LoopGuard,
            message: format!(
                "TokenBudget {}{}: loop guard tripped: the same request was sent {max} times within {}s; \
                 identical requests are blocked until {}",
                self.cfg.source,
                key.map(|k| format!(" key {k:?}")).unwrap_or_default(),
                self.cfg.loop_guard.map_or(0, |l| l.window_ms / 1000),
                until
                    .to_zoned(self.tz.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z"),
            ),
            retry_after_secs: secs_until(now, until),
            in_flight: false,
        }
    }

    /// Reserve the worst case of one request. On success the caller must
    /// later [`settle`](Self::settle) or [`release`](Self::release) the
    /// returned [`Held`].
    pub fn reserve(&mut self, now: Timestamp, ask: Ask) -> Result<Held, Refusal> {
        self.roll(now);
        self.check_request_cap(now, ask)?;
        self.check_cluster(now)?;
        let (spent, used, cluster) = self.spent_for_caps();
        let scope = if cluster { " across all workloads" } else { "" };
        let cost = ask.cost.unwrap_or(Usd::ZERO);
        self.check_usd_cap(now, cost, spent, scope)?;
        self.check_token_cap(now, ask.tokens, used, scope)?;
        let held = Held {
            cost,
            tokens: ask.tokens,
        };
        self.reserved.cost = self.reserved.cost.saturating_add(held.cost);
        self.reserved.tokens = self.reserved.tokens.saturating_add(held.tokens);
        Ok(held)
    }

    /// The per-request cap: a worst case above it is refused whatever is left.
    fn check_request_cap(&self, now: Timestamp, ask: Ask) -> Result<(), Refusal> {
        if let (Some(cap), Some(cost)) = (self.cfg.per_request_cap_usd, ask.cost)
            && cost > cap
        {
            return Err(self.refusal(
                now,
                RefusalReason::RequestCap,
                format!(
                    "TokenBudget {}: this request's worst-case cost ${cost} exceeds the \
                     per-request cap of ${cap}",
                    self.cfg.source
                ),
            ));
        }
        Ok(())
    }

    /// Connected: the cluster-wide percentage at or over the effective cap
    /// refuses every new request.
    fn check_cluster(&self, now: Timestamp) -> Result<(), Refusal> {
        if !self.cluster_exhausted() {
            return Ok(());
        }
        let pct = self.cluster_percent().unwrap_or(0);
        let block = self.block_percent();
        Err(self.refusal(
            now,
            if block < 100 {
                RefusalReason::Threshold
            } else {
                RefusalReason::Limit
            },
            format!(
                "TokenBudget {} is exhausted cluster-wide: {pct}% of its limit is spent \
                 across all workloads{}",
                self.cfg.source,
                if block < 100 {
                    format!(" (blocking from {block}%)")
                } else {
                    String::new()
                }
            ),
        ))
    }

    /// The USD cap: `cost` must fit with what is `spent` and reserved.
    fn check_usd_cap(
        &self,
        now: Timestamp,
        cost: Usd,
        spent: Usd,
        scope: &str,
    ) -> Result<(), Refusal> {
        let Some(cap) = self.cap_usd() else {
            return Ok(());
        };
        let committed = spent.saturating_add(self.reserved.cost);
        if committed.saturating_add(cost) <= cap {
            return Ok(());
        }
        let reason = if cap < self.cfg.limit_usd.unwrap_or(cap) {
            RefusalReason::Threshold
        } else {
            RefusalReason::Limit
        };
        let remaining = cap.saturating_sub(committed).max(Usd::ZERO);
        let in_flight = spent.saturating_add(cost) <= cap;
        let spend = format!(
            "spent ${spent} of ${} this {} period{scope}{}",
            self.cfg.limit_usd.unwrap_or(cap),
            self.cfg.period,
            if reason == RefusalReason::Threshold {
                format!(" (blocking from {}%, ${cap})", self.block_percent())
            } else {
                String::new()
            },
        );
        let message = if in_flight {
            format!(
                "TokenBudget {} has no room for this request now: {spend}, and requests \
                 in flight have reserved ${} more (their worst case, released as they \
                 finish); this request's worst-case cost ${cost} exceeds the ${remaining} \
                 left",
                self.cfg.source, self.reserved.cost,
            )
        } else {
            // Exhausted only when nothing is left; otherwise it is
            // this request that is too big for what is left.
            format!(
                "TokenBudget {} {}: {spend}; this request's worst-case cost ${cost} \
                 exceeds the ${} left",
                self.cfg.source,
                if spent >= cap {
                    "is exhausted"
                } else {
                    "cannot cover this request"
                },
                cap.saturating_sub(spent).max(Usd::ZERO),
            )
        };
        Err(self.refusal_in_flight(now, reason, in_flight, message))
    }

    /// The token cap: `tokens` must fit with what is `used` and reserved.
    fn check_token_cap(
        &self,
        now: Timestamp,
        tokens: u64,
        used: u64,
        scope: &str,
    ) -> Result<(), Refusal> {
        let Some(cap) = self.cap_tokens() else {
            return Ok(());
        };
        let committed = used.saturating_add(self.reserved.tokens);
        if committed.saturating_add(tokens) <= cap {
            return Ok(());
        }
        let in_flight = used.saturating_add(tokens) <= cap;
        let usage = format!(
            "used {used} of {} tokens this {} period{scope}",
            self.cfg.limit_tokens.unwrap_or(cap),
            self.cfg.period,
        );
        let message = if in_flight {
            format!(
                "TokenBudget {} has no room for this request now: {usage}, and requests \
                 in flight have reserved {} more (their worst case, released as they \
                 finish); this request may use up to {tokens} tokens",
                self.cfg.source, self.reserved.tokens
            )
        } else {
            format!(
                "TokenBudget {} {}: {usage}; this request may use up to {tokens} tokens",
                self.cfg.source,
                if used >= cap {
                    "is exhausted"
                } else {
                    "cannot cover this request"
                },
            )
        };
        Err(self.refusal_in_flight(now, RefusalReason::Limit, in_flight, message))
    }

    /// Give back a reservation without spending (the request never reached
    /// the provider).
    pub fn release(&mut self, held: Held) {
        self.reserved.cost = self.reserved.cost.saturating_sub(held.cost).max(Usd::ZERO);
        self.reserved.tokens = self.reserved.tokens.saturating_sub(held.tokens);
    }

    /// Replace a reservation by the actual usage and cost (`None` =
    /// unpriced) of one attempt.
    pub fn settle(&mut self, now: Timestamp, held: Held, usage: &TokenCounts, cost: Option<Usd>) {
        self.roll(now);
        self.release(held);
        self.record(usage, cost);
    }

    /// Add usage that was not reserved here (e.g. replayed from a ledger).
    pub fn record(&mut self, usage: &TokenCounts, cost: Option<Usd>) {
        let t = &mut self.totals;
        crate::usage::add_usage(&mut t.usage, usage);
        t.requests += 1;
        match cost {
            Some(c) => t.spent = t.spent.saturating_add(c),
            None => t.unpriced_requests += 1,
        }
    }

    /// Count a recorded request's prompt-cache figures in the period's
    /// totals (what it saved, what a bust wasted).
    pub fn record_cache(&mut self, figures: &crate::usage::cache::CacheFigures) {
        self.totals.cache.add(figures);
    }

    fn refusal(&self, now: Timestamp, reason: RefusalReason, message: String) -> Refusal {
        self.refusal_in_flight(now, reason, false, message)
    }

    fn refusal_in_flight(
        &self,
        now: Timestamp,
        reason: RefusalReason,
        in_flight: bool,
        message: String,
    ) -> Refusal {
        let reset = self.window.end.to_zoned(self.tz.clone());
        Refusal {
            in_flight,
            budget: self.cfg.source.clone(),
            reason,
            message: format!(
                "{message}. It resets at {} ({}).",
                reset.strftime("%Y-%m-%dT%H:%M:%S%:z"),
                self.cfg.time_zone
            ),
            retry_after_secs: secs_until(now, self.window.end),
        }
    }
}

/// A request digest made specific to one key, so the loop guard counts
/// identical requests per key (FNV-1a of the key, mixed into the digest).
fn keyed_digest(digest: u64, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    digest ^ h.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

fn secs_until(now: Timestamp, then: Timestamp) -> u64 {
    u64::try_from(then.duration_since(now).as_secs()).unwrap_or(0)
}

/// `amount × percent / 100`, exact in picos (rounded down).
fn scale(amount: Usd, percent: u8) -> Usd {
    Usd::from_picos(amount.picos().saturating_mul(i128::from(percent)) / 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        period::Period,
        workload::{FailMode, LoopGuard, Threshold},
    };

    fn cfg(limit: &str) -> BudgetConfig {
        BudgetConfig {
            source: ObjectRef::new("ns", "team"),
            generation: 1,
            period: Period::Daily,
            time_zone: "UTC".into(),
            limit_usd: Some(limit.parse().unwrap()),
            limit_tokens: None,
            thresholds: vec![],
            per_request_cap_usd: None,
            loop_guard: None,
            fail_mode: FailMode::Closed,
            shadow: false,
            per_key: None,
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

    #[test]
    fn from_ledger_asks_for_the_period_containing_now_and_remaining_never_goes_negative() {
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let mut asked = None;
        let b = BudgetState::from_ledger(cfg("1.00"), now, |start| {
            asked = Some(start);
            Totals {
                spent: "0.25".parse().unwrap(),
                ..Totals::default()
            }
        })
        .unwrap();
        assert_eq!(asked, Some("2026-12-03T00:00:00Z".parse().unwrap()));
        assert_eq!(b.remaining_usd(), Some("0.75".parse().unwrap()));
        assert_eq!(b.state().as_str(), "Ok");
        let over = Totals {
            spent: "3".parse().unwrap(),
            ..Totals::default()
        };
        let b = BudgetState::new(cfg("1.00"), now, over).unwrap();
        assert_eq!(b.remaining_usd(), Some(Usd::ZERO));
        assert_eq!(b.state().as_str(), "Exhausted");
        let mut tokens_only = cfg("1.00");
        tokens_only.limit_usd = None;
        tokens_only.limit_tokens = Some(10);
        let b = BudgetState::new(tokens_only, now, Totals::default()).unwrap();
        assert_eq!(b.remaining_usd(), None);
    }

    #[test]
    fn a_refusal_says_exhausted_only_when_nothing_is_left() {
        let spent = |usd: &str, tokens: u64| Totals {
            spent: usd.parse().unwrap(),
            usage: TokenCounts {
                input_tokens: tokens,
                ..Default::default()
            },
            ..Totals::default()
        };
        let mut b = BudgetState::new(cfg("1.00"), now(), spent("1.00", 0)).unwrap();
        let err = b.reserve(now(), ask("0.01")).unwrap_err();
        assert!(
            err.message
                .starts_with("TokenBudget ns/team is exhausted: spent $1.00 of $1.00"),
            "{}",
            err.message
        );
        let mut b = BudgetState::new(cfg("1.00"), now(), spent("0", 0)).unwrap();
        let err = b.reserve(now(), ask("1.50")).unwrap_err();
        assert!(
            err.message
                .starts_with("TokenBudget ns/team cannot cover this request: spent $0.00 of $1.00"),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("worst-case cost $1.50 exceeds the $1.00 left")
        );
        let mut c = cfg("1.00");
        c.limit_usd = None;
        c.limit_tokens = Some(100);
        let mut b = BudgetState::new(c, now(), spent("0", 100)).unwrap();
        let err = b.reserve(now(), ask("0")).unwrap_err();
        assert!(
            err.message
                .starts_with("TokenBudget ns/team is exhausted: used 100 of 100 tokens"),
            "{}",
            err.message
        );
    }

    #[test]
    fn refusal_reasons_keep_their_labels_on_the_wire() {
        use RefusalReason::*;
        let all = [
            Limit, Threshold, RequestCap, LoopGuard, KeyLimit, Lease, FailClosed,
        ];
        let labels: Vec<String> = all.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            labels,
            [
                "limit",
                "threshold",
                "request_cap",
                "loop_guard",
                "key_limit",
                "lease",
                "fail_closed"
            ]
        );
        let sized: Vec<bool> = all.iter().map(|r| r.is_about_size()).collect();
        assert_eq!(sized, [true, true, true, false, true, false, false]);
    }

    #[test]
    fn reservations_never_let_spend_pass_the_limit() {
        let mut b = BudgetState::new(cfg("1.00"), now(), Totals::default()).unwrap();
        let h1 = b.reserve(now(), ask("0.40")).unwrap();
        let h2 = b.reserve(now(), ask("0.40")).unwrap();
        // 0.80 reserved: a third 0.40 would pass 1.00.
        let err = b.reserve(now(), ask("0.40")).unwrap_err();
        assert_eq!(err.reason.as_str(), "limit");
        // Only the worst cases in flight leave no room: it may fit later.
        assert!(err.in_flight);
        assert!(
            err.message.contains(
                "TokenBudget ns/team has no room for this request now: spent $0.00 of $1.00 \
                 this Daily period, and requests in flight have reserved $0.80 more"
            ),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("worst-case cost $0.40 exceeds the $0.20 left"),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("resets at 2026-11-23T00:00:00+00:00 (UTC)"),
            "{}",
            err.message
        );
        assert_eq!(err.retry_after_secs, 14 * 3600);
        // Settling below the reservation frees room.
        let u = TokenCounts {
            input_tokens: 10,
            output_tokens: 5,
            ..Default::default()
        };
        b.settle(now(), h1, &u, Some(usd("0.10")));
        assert_eq!(b.totals().spent, usd("0.10"));
        assert_eq!(b.reserved().cost, usd("0.40"));
        let h3 = b.reserve(now(), ask("0.40")).unwrap();
        b.release(h2);
        b.release(h3);
        assert_eq!(b.reserved(), Held::default());
        assert_eq!(b.totals().requests, 1);
        assert_eq!(b.totals().tokens(), 15);
        // What is spent leaves no room: exhausted, nothing to wait for,
        // whatever is in flight.
        let _h4 = b.reserve(now(), ask("0.10")).unwrap();
        let err = b.reserve(now(), ask("0.95")).unwrap_err();
        assert!(!err.in_flight);
        assert!(
            err.message.starts_with(
                "TokenBudget ns/team cannot cover this request: spent $0.10 of $1.00 this \
                 Daily period; this request's worst-case cost $0.95 exceeds the $0.90 left"
            ),
            "{}",
            err.message
        );
    }

    #[test]
    fn token_refusals_say_whether_requests_in_flight_hold_the_room() {
        let mut c = cfg("1000.00");
        c.limit_usd = None;
        c.limit_tokens = Some(1000);
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        let tokens = |n| Ask {
            cost: None,
            tokens: n,
        };
        let held = b.reserve(now(), tokens(700)).unwrap();
        let err = b.reserve(now(), tokens(400)).unwrap_err();
        assert!(err.in_flight);
        assert!(
            err.message.starts_with(
                "TokenBudget ns/team has no room for this request now: used 0 of 1000 tokens \
                 this Daily period, and requests in flight have reserved 700 more (their \
                 worst case, released as they finish); this request may use up to 400 tokens"
            ),
            "{}",
            err.message
        );
        let u = TokenCounts {
            input_tokens: 500,
            output_tokens: 200,
            ..Default::default()
        };
        b.settle(now(), held, &u, None);
        let err = b.reserve(now(), tokens(400)).unwrap_err();
        assert!(!err.in_flight);
        assert!(
            err.message.starts_with(
                "TokenBudget ns/team cannot cover this request: used 700 of 1000 tokens this \
                 Daily period; this request may use up to 400 tokens"
            ),
            "{}",
            err.message
        );
        assert!(b.reserve(now(), tokens(300)).is_ok());
    }

    #[test]
    fn block_threshold_lowers_the_cap_and_downgrade_acts_on_committed_spend() {
        let mut c = cfg("10.00");
        c.thresholds = vec![
            Threshold {
                percent: 50,
                action: ThresholdAction::Alert,
            },
            Threshold {
                percent: 80,
                action: ThresholdAction::Downgrade(DowngradeTarget::Tier("cheap".into())),
            },
            Threshold {
                percent: 90,
                action: ThresholdAction::Block,
            },
        ];
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        assert_eq!(b.cap_usd(), Some(usd("9.00")));
        assert_eq!(b.state(), State::Ok);
        b.record(&TokenCounts::default(), Some(usd("5.00")));
        assert_eq!(b.state(), State::Threshold);
        assert_eq!(b.downgrade(), None, "alert only");
        b.record(&TokenCounts::default(), Some(usd("3.00")));
        assert_eq!(b.downgrade(), Some(&DowngradeTarget::Tier("cheap".into())));
        let err = b.reserve(now(), ask("1.01")).unwrap_err();
        assert_eq!(err.reason.as_str(), "threshold");
        assert!(
            err.message.contains("(blocking from 90%, $9.00)"),
            "{}",
            err.message
        );
        b.reserve(now(), ask("1.00")).unwrap();
        b.record(&TokenCounts::default(), Some(usd("1.00")));
        assert_eq!(b.state(), State::Exhausted);
    }

    #[test]
    fn per_request_cap_and_unpriced_requests() {
        let mut c = cfg("100");
        c.per_request_cap_usd = Some(usd("0.50"));
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        let err = b.reserve(now(), ask("0.51")).unwrap_err();
        assert_eq!(err.reason.as_str(), "request_cap");
        assert!(
            err.message
                .contains("worst-case cost $0.51 exceeds the per-request cap of $0.50")
        );
        let h = b
            .reserve(
                now(),
                Ask {
                    cost: None,
                    tokens: 10,
                },
            )
            .unwrap();
        assert_eq!(h.cost, Usd::ZERO);
        b.settle(
            now(),
            h,
            &TokenCounts {
                output_tokens: 3,
                ..Default::default()
            },
            None,
        );
        assert_eq!(b.totals().unpriced_requests, 1);
        assert_eq!(b.totals().spent, Usd::ZERO);
    }

    #[test]
    fn token_limits() {
        let mut c = cfg("1");
        c.limit_usd = None;
        c.limit_tokens = Some(1000);
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        let h = b
            .reserve(
                now(),
                Ask {
                    cost: None,
                    tokens: 900,
                },
            )
            .unwrap();
        assert_eq!(
            b.reserve(
                now(),
                Ask {
                    cost: None,
                    tokens: 101
                }
            )
            .unwrap_err()
            .reason
            .as_str(),
            "limit"
        );
        b.settle(
            now(),
            h,
            &TokenCounts {
                input_tokens: 400,
                output_tokens: 100,
                ..Default::default()
            },
            None,
        );
        assert_eq!(b.percent_spent(), 50);
        b.reserve(
            now(),
            Ask {
                cost: None,
                tokens: 500,
            },
        )
        .unwrap();
    }

    #[test]
    fn periods_roll_over() {
        let mut b = BudgetState::new(cfg("1"), now(), Totals::default()).unwrap();
        b.record(&TokenCounts::default(), Some(usd("1")));
        assert_eq!(b.state(), State::Exhausted);
        assert!(b.reserve(now(), ask("0.01")).is_err());
        let tomorrow: Timestamp = "2026-11-23T00:00:01Z".parse().unwrap();
        b.reserve(tomorrow, ask("0.01")).unwrap();
        assert_eq!(b.totals().spent, Usd::ZERO);
        assert_eq!(b.window().start.to_string(), "2026-11-23T00:00:00Z");
    }

    #[test]
    fn loop_guard_blocks_for_the_cooldown() {
        let mut c = cfg("100");
        c.loop_guard = Some(LoopGuard {
            max_identical: 3,
            window_ms: 60_000,
            cooldown_ms: 600_000,
        });
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        let at = |s: i64| {
            now()
                .checked_add(jiff::SignedDuration::from_secs(s))
                .unwrap()
        };
        b.check_loop(at(0), 7).unwrap();
        b.check_loop(at(1), 7).unwrap();
        b.check_loop(at(1), 8).unwrap();
        let err = b.check_loop(at(2), 7).unwrap_err();
        assert_eq!(err.reason.as_str(), "loop_guard");
        assert_eq!(err.retry_after_secs, 600);
        assert!(
            err.message.contains("sent 3 times within 60s"),
            "{}",
            err.message
        );
        assert!(b.check_loop(at(300), 7).is_err(), "still cooling down");
        b.check_loop(at(603), 7).unwrap();
        // Spread out beyond the window: never trips.
        for i in 0..10 {
            b.check_loop(at(1000 + i * 61), 9).unwrap();
        }
    }

    #[test]
    fn cluster_percent_drives_thresholds_in_its_period_only() {
        let mut c = cfg("10.00");
        c.thresholds = vec![
            Threshold {
                percent: 80,
                action: ThresholdAction::Downgrade(DowngradeTarget::Tier("cheap".into())),
            },
            Threshold {
                percent: 95,
                action: ThresholdAction::Block,
            },
        ];
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        b.record(&TokenCounts::default(), Some(usd("1.00")));
        assert_eq!(b.local_percent_spent(), 10);
        assert_eq!(b.downgrade(), None);
        // Another period's status does not count.
        let cluster = |start, percent, spent: &str| ClusterSpend {
            period_start: start,
            percent,
            spent: usd(spent),
            tokens: 0,
            keys: BTreeMap::new(),
            projected_overrun: false,
        };
        b.set_cluster(cluster("2026-11-21T00:00:00Z".parse().unwrap(), 90, "9.00"));
        assert_eq!(b.percent_spent(), 10);
        b.set_cluster(cluster(b.window().start, 80, "8.00"));
        assert_eq!(b.percent_spent(), 80);
        assert_eq!(b.downgrade(), Some(&DowngradeTarget::Tier("cheap".into())));
        assert_eq!(b.state(), State::Threshold);
        b.reserve(now(), ask("0.01")).unwrap();
        // The cap (95% of $10) is checked against the cluster-wide spend:
        // $0.99 more cannot fit beside $8.60 whatever this sidecar spent.
        b.set_cluster(cluster(b.window().start, 86, "8.60"));
        let err = b.reserve(now(), ask("0.99")).unwrap_err();
        assert!(!err.in_flight);
        assert!(
            err.message.starts_with(
                "TokenBudget ns/team cannot cover this request: spent $8.60 of $10.00 this \
                 Daily period across all workloads (blocking from 95%, $9.50); this request's worst-case \
                 cost $0.99 exceeds the $0.90 left"
            ),
            "{}",
            err.message
        );
        b.set_cluster(cluster(b.window().start, 95, "9.50"));
        assert_eq!(b.state(), State::Exhausted);
        let err = b.reserve(now(), ask("0.01")).unwrap_err();
        assert_eq!(err.reason.as_str(), "threshold");
        assert!(
            err.message.contains("exhausted cluster-wide: 95%"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_projected_overrun_downgrades_before_any_threshold() {
        let mut c = cfg("10.00");
        c.thresholds = vec![Threshold {
            percent: 80,
            action: ThresholdAction::Downgrade(DowngradeTarget::Tier("cheap".into())),
        }];
        c.on_projected_overrun = Some(ProjectedOverrunAction::Downgrade(DowngradeTarget::Model(
            "mini".into(),
        )));
        let mut b = BudgetState::new(c.clone(), now(), Totals::default()).unwrap();
        let cluster = |start, percent, projected_overrun| ClusterSpend {
            period_start: start,
            percent,
            spent: Usd::ZERO,
            tokens: 0,
            keys: BTreeMap::new(),
            projected_overrun,
        };
        // Standalone: no forecast, no early downgrade.
        assert!(!b.projected_overrun());
        assert_eq!(b.downgrade(), None);
        b.set_cluster(cluster(b.window().start, 30, true));
        assert_eq!(b.downgrade(), Some(&DowngradeTarget::Model("mini".into())));
        assert_eq!(b.state(), State::Ok, "a forecast is not a threshold");
        // A reached Downgrade threshold takes precedence.
        b.set_cluster(cluster(b.window().start, 80, true));
        assert_eq!(b.downgrade(), Some(&DowngradeTarget::Tier("cheap".into())));
        // Cleared: back to the routed model.
        b.set_cluster(cluster(b.window().start, 30, false));
        assert_eq!(b.downgrade(), None);
        // Another period's forecast does not count.
        b.set_cluster(cluster("2026-11-21T00:00:00Z".parse().unwrap(), 30, true));
        assert_eq!(b.downgrade(), None);
        // Standalone: the sidecar's own forecast, for this period only.
        let mut local = BudgetState::new(c.clone(), now(), Totals::default()).unwrap();
        local.set_local_projection(true);
        assert_eq!(
            local.downgrade(),
            Some(&DowngradeTarget::Model("mini".into()))
        );
        local.roll(local.window().end);
        assert!(!local.projected_overrun(), "a roll-over clears it");
        local.set_local_projection(true);
        local.set_local_projection(false);
        assert_eq!(local.downgrade(), None);
        // An operator's report of the period decides over the local one.
        local.set_local_projection(true);
        local.set_cluster(cluster(local.window().start, 30, false));
        assert_eq!(local.downgrade(), None);
        // Alert only: never a downgrade.
        c.on_projected_overrun = Some(ProjectedOverrunAction::Alert);
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        b.set_cluster(cluster(b.window().start, 30, true));
        assert!(b.projected_overrun());
        assert_eq!(b.downgrade(), None);
    }

    #[test]
    fn shadow_budgets_report_but_never_downgrade() {
        let mut c = cfg("1");
        c.shadow = true;
        c.thresholds = vec![Threshold {
            percent: 10,
            action: ThresholdAction::Downgrade(DowngradeTarget::Model("m".into())),
        }];
        let mut b = BudgetState::new(c, now(), Totals::default()).unwrap();
        b.record(&TokenCounts::default(), Some(usd("0.5")));
        assert_eq!(b.state(), State::Threshold);
        assert_eq!(b.downgrade(), None);
    }
}
