//! The operator's book of one budget period: the cluster-wide spend of the
//! budget (every sidecar's records, counted once) and its lease pool. Pure:
//! the caller passes the time, persists [`BookState`] and talks to the
//! sidecars. The totals by namespace, workload and model are the
//! [`crate::cluster_ledger`].
//!
//! # Exactly once
//! Every usage record carries (sidecar id, seq), with seq increasing per
//! sidecar, and a sidecar sends its records in seq order. Each book keeps,
//! per sidecar, the highest seq it has counted (the watermark); a record at
//! or below it is a replay and is skipped. The watermark is persisted in the
//! same write as the totals it guards, so a crash between two books'
//! writes is harmless: each book dedupes on its own.
//!
//! # Leases: the cap holds across pods
//! A sidecar spends only from its lease: a cumulative grant for the period.
//! Per sidecar the book knows `granted` and `charged` (what it has counted
//! from that sidecar); the unspent part `granted - charged` is outstanding.
//! A grant never makes `spent + Σ outstanding` exceed the effective cap, so
//! as long as each sidecar spends at most its grant (true when requests
//! carry max-tokens caps: the sidecar reserves the worst case before
//! forwarding) the total spent never exceeds the cap.
//!
//! A grant expires `ttl` after it was made or renewed; the sidecar starts no
//! new request on an expired lease, and the book reclaims the outstanding
//! part once `grace` more has passed (for requests still in flight). A
//! record that arrives after its lease was reclaimed is still counted (the
//! ledger is never wrong), so the overshoot past the cap is bounded by what
//! a sidecar had in flight when its lease expired, more than `grace` earlier.
//!
//! # A need that cannot be covered
//! A request waiting on a lease carries its worst case (`need`). When the
//! pool cannot cover it but the cap minus the spend can, other sidecars
//! hold the rest: they are recalled ([`Book::recall_candidates`]) and the
//! request waits. When even the cap minus the spend cannot cover it, no
//! recall, release or expiry ever will in this period: the spend only grows
//! while the period and the epoch (the limit) stay the same. Then
//! [`Book::cannot_cover`] says so, with what is left, and the sidecar
//! refuses the request at once instead of waiting for a grant. The verdict
//! only ever refuses: it grants nothing, so it cannot move the cap.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    budget::{BudgetState, State},
    money::Usd,
    period::{PeriodError, Window},
    tokens::TokenCounts,
    usage::UsageRecord,
    usage::{Totals, cache::CacheTotals},
    workload::{BudgetConfig, ObjectRef},
};

/// The smallest grant, as a fraction of the cap (1/32), so a sidecar that
/// asks for a little does not come back for every request.
const MIN_CHUNK_DIVISOR: i128 = 32;

/// One sidecar's standing with a budget in the current period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarEntry {
    /// Highest seq counted (dedupe watermark). Survives period roll-over.
    pub seq: u64,
    /// Granted this period (cumulative).
    pub granted: Usd,
    /// Tokens granted this period (cumulative).
    pub granted_tokens: u64,
    /// Spend counted from this sidecar this period.
    pub charged: Usd,
    /// Tokens counted from this sidecar this period.
    pub charged_tokens: u64,
    /// Lease expiry, Unix milliseconds (0: no live lease).
    pub expires_ms: i64,
    /// Bumped whenever `granted` changes (see `LeaseGrant.version`).
    #[serde(default)]
    pub version: u64,
}

impl SidecarEntry {
    /// Granted but not yet spent.
    pub fn outstanding(&self) -> (Usd, u64) {
        (
            self.granted.saturating_sub(self.charged).max(Usd::ZERO),
            self.granted_tokens.saturating_sub(self.charged_tokens),
        )
    }
}

/// Spend of one model or workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    /// Priced spend.
    pub cost: Usd,
    /// Records (metered attempts).
    pub requests: u64,
    /// Tokens by kind.
    pub usage: TokenCounts,
    /// Records whose model had no price.
    pub unpriced: u64,
    /// Records whose usage was estimated.
    pub estimated: u64,
    /// Prompt-cache savings, waste and busts.
    #[serde(default)]
    pub cache: CacheTotals,
}

impl Spend {
    pub(crate) fn add(&mut self, r: &UsageRecord) {
        self.requests += 1;
        match r.cost {
            Some(c) => self.cost = self.cost.saturating_add(c),
            None => self.unpriced += 1,
        }
        if r.estimated {
            self.estimated += 1;
        }
        crate::usage::add_usage(&mut self.usage, &r.usage);
        self.cache.add(&r.cache);
    }
}

/// What the book persists (in TokenBudget status, or a status file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookState {
    /// Start of the period the totals are for.
    pub period_start: Timestamp,
    /// Lease epoch.
    pub epoch: u64,
    /// Totals of the period.
    pub totals: Totals,
    /// Per sidecar id.
    pub sidecars: BTreeMap<String, SidecarEntry>,
    /// By model that served.
    pub models: BTreeMap<String, Spend>,
    /// By workload (`namespace/name`).
    pub workloads: BTreeMap<String, Spend>,
    /// The smallest lease request this period that the remaining budget
    /// could not cover (it makes the budget `Exhausted`).
    pub unmet: Option<Usd>,
    /// The same for tokens.
    pub unmet_tokens: Option<u64>,
}

/// What happened to one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Counted in the current period.
    Counted,
    /// Already counted (a replay): skipped.
    Duplicate,
    /// For a period that has ended: the watermark moves, the totals do not
    /// (the finished period's ledger is closed). Reported in metrics.
    Late,
}

/// What a sidecar asks of a budget (see `LeaseRequest`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseAsk {
    /// How much more it would like.
    pub want: Usd,
    /// Tokens it would like.
    pub want_tokens: u64,
    /// The worst case of a request waiting on the lease (0: topping up).
    pub need: Usd,
    /// Its worst-case tokens.
    pub need_tokens: u64,
}

impl LeaseAsk {
    /// Top up by `want` (no request waiting).
    pub fn want(want: Usd) -> Self {
        Self {
            want,
            ..Self::default()
        }
    }
}

/// A sidecar's lease as the book sees it (what a `LeaseGrant` carries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// Lease epoch.
    pub epoch: u64,
    /// The period.
    pub period_start: Timestamp,
    /// Cumulative grant.
    pub granted: Usd,
    /// Cumulative token grant.
    pub granted_tokens: u64,
    /// Counted from the sidecar.
    pub charged: Usd,
    /// Tokens counted from the sidecar.
    pub charged_tokens: u64,
    /// The sidecar's watermark: its records up to here are in `charged`.
    pub charged_seq: u64,
    /// Expiry, Unix milliseconds.
    pub expires_ms: i64,
    /// Lease version (bumped when the amount changes).
    pub version: u64,
    /// Whether the budget has a USD limit.
    pub limits_usd: bool,
    /// Whether it has a token limit.
    pub limits_tokens: bool,
}

/// A need no lease can cover in the current period (see
/// [`Book::cannot_cover`]; what a `LeaseUnmet` carries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmet {
    /// Lease epoch the verdict is for.
    pub epoch: u64,
    /// The period.
    pub period_start: Timestamp,
    /// Effective USD cap − spent, never negative; `None` without a USD
    /// limit.
    pub remaining: Option<Usd>,
    /// Effective token cap − tokens used; `None` without a token limit.
    pub remaining_tokens: Option<u64>,
}

/// One budget's cluster-wide ledger and lease pool.
#[derive(Clone, Debug)]
pub struct Book {
    state: BudgetState,
    epoch: u64,
    sidecars: BTreeMap<String, SidecarEntry>,
    models: BTreeMap<String, Spend>,
    workloads: BTreeMap<String, Spend>,
    unmet: Option<Usd>,
    unmet_tokens: Option<u64>,
    generation: u64,
}

// === impl Book ===

impl Book {
    /// A new, empty book for the period containing `now`.
    pub fn new(cfg: BudgetConfig, now: Timestamp) -> Result<Self, PeriodError> {
        Ok(Self {
            state: BudgetState::new(cfg, now, Totals::default())?,
            epoch: 1,
            sidecars: BTreeMap::new(),
            models: BTreeMap::new(),
            workloads: BTreeMap::new(),
            unmet: None,
            unmet_tokens: None,
            generation: 0,
        })
    }

    /// Resume from a persisted state. Totals, leases and breakdowns carry
    /// over when `saved` is for the period containing `now`; the dedupe
    /// watermarks always do.
    pub fn restore(
        cfg: BudgetConfig,
        now: Timestamp,
        saved: BookState,
    ) -> Result<Self, PeriodError> {
        let mut book = Self::new(cfg, now)?;
        book.epoch = saved.epoch.max(1);
        if saved.period_start == book.state.window().start {
            book.state = BudgetState::new(book.state.config().clone(), now, saved.totals)?;
            book.sidecars = saved.sidecars;
            book.models = saved.models;
            book.workloads = saved.workloads;
            book.unmet = saved.unmet;
            book.unmet_tokens = saved.unmet_tokens;
        } else {
            book.sidecars = saved
                .sidecars
                .into_iter()
                .map(|(id, e)| {
                    (
                        id,
                        SidecarEntry {
                            seq: e.seq,
                            version: e.version + 1,
                            ..SidecarEntry::default()
                        },
                    )
                })
                .collect();
        }
        Ok(book)
    }

    /// What to persist.
    pub fn to_state(&self) -> BookState {
        BookState {
            period_start: self.state.window().start,
            epoch: self.epoch,
            totals: self.state.totals().clone(),
            sidecars: self.sidecars.clone(),
            models: self.models.clone(),
            workloads: self.workloads.clone(),
            unmet: self.unmet,
            unmet_tokens: self.unmet_tokens,
        }
    }

    /// Bumped by every change; persist when it moved.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Mark a change made outside this book that its persisted state
    /// carries (a per-key lease pool written with the budget's status).
    pub fn bump(&mut self) {
        self.generation += 1;
    }

    /// The budget's config.
    pub fn config(&self) -> &BudgetConfig {
        self.state.config()
    }

    /// The current period.
    pub fn window(&self) -> Window {
        self.state.window()
    }

    /// Totals of the current period.
    pub fn totals(&self) -> &Totals {
        self.state.totals()
    }

    /// Per-sidecar standing.
    pub fn sidecars(&self) -> &BTreeMap<String, SidecarEntry> {
        &self.sidecars
    }

    /// Spend by model.
    pub fn models(&self) -> &BTreeMap<String, Spend> {
        &self.models
    }

    /// Spend by workload.
    pub fn workloads(&self) -> &BTreeMap<String, Spend> {
        &self.workloads
    }

    /// Lease epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A new config for the same object (spec edit). A changed limit bumps
    /// the epoch, so sidecars replace their grants.
    pub fn reconfigure(&mut self, cfg: BudgetConfig, now: Timestamp) -> Result<(), PeriodError> {
        let old = self.state.config();
        let limits_changed = old.limit_usd != cfg.limit_usd
            || old.limit_tokens != cfg.limit_tokens
            || old.thresholds != cfg.thresholds;
        let before = self.state.window();
        self.state.reconfigure(cfg, now)?;
        if self.state.window() != before {
            self.reset_period();
        }
        if limits_changed {
            self.epoch += 1;
            self.unmet = None;
            self.unmet_tokens = None;
        }
        self.generation += 1;
        Ok(())
    }

    /// Move to the period containing `now` if the current one ended.
    /// Returns the finished period and its totals.
    pub fn roll(&mut self, now: Timestamp) -> Option<(Window, Totals)> {
        let done = self.state.roll(now)?;
        self.reset_period();
        self.generation += 1;
        Some(done)
    }

    fn reset_period(&mut self) {
        self.models.clear();
        self.workloads.clear();
        self.unmet = None;
        self.unmet_tokens = None;
        for e in self.sidecars.values_mut() {
            *e = SidecarEntry {
                seq: e.seq,
                version: e.version + 1,
                ..SidecarEntry::default()
            };
        }
    }

    /// Count one record from `sidecar` (of `workload`, `namespace/name`)
    /// that the sidecar attributed to this budget's period `period_start`.
    pub fn apply(
        &mut self,
        sidecar: &str,
        workload: &str,
        period_start: Timestamp,
        rec: &UsageRecord,
        now: Timestamp,
    ) -> Applied {
        if self.sidecars.get(sidecar).is_some_and(|e| rec.seq <= e.seq) {
            return Applied::Duplicate;
        }
        // The sidecar's clock may be ahead of ours at a period boundary.
        self.roll(now.max(period_start));
        self.generation += 1;
        let current = self.state.window().start;
        let entry = self.sidecars.entry(sidecar.to_string()).or_default();
        entry.seq = rec.seq;
        if period_start != current {
            return Applied::Late;
        }
        if rec.cache.response_hit {
            // A response-cache hit names the budgets it would have been
            // charged to: it counts as a hit and what it saved, never as
            // spend, tokens or a request.
            self.state.record_cache(&rec.cache);
            return Applied::Counted;
        }
        if let Some(c) = rec.cost {
            entry.charged = entry.charged.saturating_add(c);
        }
        entry.charged_tokens = entry
            .charged_tokens
            .saturating_add(rec.usage.total_tokens());
        // The record's key for this budget (`spec.perKey`), counted
        // within the budget's own bound on keys.
        let key = rec
            .budgets
            .iter()
            .find(|b| b.budget == self.state.config().source)
            .and_then(|b| b.key.as_deref());
        self.state.record_for(&rec.usage, rec.cost, key);
        self.state.record_cache(&rec.cache);
        self.models
            .entry(rec.served_model.clone())
            .or_default()
            .add(rec);
        self.workloads
            .entry(workload.to_string())
            .or_default()
            .add(rec);
        Applied::Counted
    }

    /// Granted but unspent, over every sidecar.
    pub fn outstanding(&self) -> (Usd, u64) {
        self.sidecars
            .values()
            .fold((Usd::ZERO, 0), |(usd, tok), e| {
                let (u, t) = e.outstanding();
                (usd.saturating_add(u), tok.saturating_add(t))
            })
    }

    /// What can still be granted: cap − spent − outstanding (never
    /// negative); `None` for a unit the budget does not limit.
    pub fn available(&self) -> (Option<Usd>, Option<u64>) {
        let (out_usd, out_tok) = self.outstanding();
        let usd = self.state.cap_usd().map(|cap| {
            cap.saturating_sub(self.state.totals().spent)
                .saturating_sub(out_usd)
                .max(Usd::ZERO)
        });
        let tokens = self.state.cap_tokens().map(|cap| {
            cap.saturating_sub(self.state.totals().tokens())
                .saturating_sub(out_tok)
        });
        (usd, tokens)
    }

    /// Grant `sidecar` more lease: up to `want` (at least a minimum chunk
    /// and at least `need`, the worst case of a request waiting on it),
    /// never more than is available, and — while other sidecars hold
    /// leases — no more than half of what is left per holder, so one busy
    /// sidecar cannot starve the rest. `want` and `need` 0 renew without
    /// growing. The lease expires `ttl_ms` from `now`.
    ///
    /// When what is left of the budget (cap − spent) cannot cover `need`,
    /// the budget is `Exhausted` (see [`Book::budget_state`]).
    pub fn grant(
        &mut self,
        sidecar: &str,
        ask: LeaseAsk,
        now: Timestamp,
        ttl_ms: i64,
    ) -> LeaseView {
        self.roll(now);
        let (avail_usd, avail_tok) = self.available();
        let cap_usd = self.state.cap_usd();
        let cap_tok = self.state.cap_tokens();
        let spent = self.state.totals().spent;
        let spent_tok = self.state.totals().tokens();
        let holders = self
            .sidecars
            .iter()
            .filter(|(id, e)| id.as_str() != sidecar && e.expires_ms != 0)
            .count();
        let entry = self.sidecars.entry(sidecar.to_string()).or_default();
        let mut changed = false;
        if let (Some(avail), Some(cap)) = (avail_usd, cap_usd)
            && (ask.want > Usd::ZERO || ask.need > Usd::ZERO)
        {
            let chunk = Usd::from_picos(cap.picos() / MIN_CHUNK_DIVISOR);
            let mut add = ask.want.max(chunk).max(ask.need);
            if holders > 0 {
                let fair = Usd::from_picos(avail.picos() / (2 * (holders as i128 + 1)));
                add = add.min(fair.max(ask.need));
            }
            let add = add.min(avail);
            if add > Usd::ZERO {
                entry.granted = entry.granted.saturating_add(add);
                changed = true;
            }
            if short_usd(Some(cap), spent, ask.need) {
                self.unmet = Some(self.unmet.map_or(ask.need, |u| u.min(ask.need)));
            }
        }
        if let (Some(avail), Some(cap)) = (avail_tok, cap_tok)
            && (ask.want_tokens > 0 || ask.need_tokens > 0)
        {
            let chunk = cap / MIN_CHUNK_DIVISOR as u64;
            let mut add = ask.want_tokens.max(chunk).max(ask.need_tokens);
            if holders > 0 {
                let fair = avail / (2 * (holders as u64 + 1));
                add = add.min(fair.max(ask.need_tokens));
            }
            let add = add.min(avail);
            if add > 0 {
                entry.granted_tokens = entry.granted_tokens.saturating_add(add);
                changed = true;
            }
            if short_tokens(Some(cap), spent_tok, ask.need_tokens) {
                self.unmet_tokens = Some(
                    self.unmet_tokens
                        .map_or(ask.need_tokens, |u| u.min(ask.need_tokens)),
                );
            }
        }
        if changed {
            entry.version += 1;
        }
        entry.expires_ms = now.as_millisecond().saturating_add(ttl_ms);
        self.generation += 1;
        self.lease(sidecar)
    }

    /// Whether a waiting request of `ask.need` could be covered if other
    /// sidecars gave back their unused leases: the pool alone cannot cover
    /// it but the cap minus spend can. Returns the sidecars to recall from
    /// (none when [`Book::cannot_cover`]: recalling would not help).
    pub fn recall_candidates(&self, sidecar: &str, ask: LeaseAsk) -> Vec<String> {
        if self.cannot_cover(ask).is_some() {
            return Vec::new();
        }
        let (avail_usd, avail_tok) = self.available();
        let short_usd = avail_usd.is_some_and(|a| a < ask.need);
        let short_tok = avail_tok.is_some_and(|a| a < ask.need_tokens);
        if !short_usd && !short_tok {
            return Vec::new();
        }
        self.sidecars
            .iter()
            .filter(|(id, e)| {
                let (u, t) = e.outstanding();
                id.as_str() != sidecar && (u > Usd::ZERO || t > 0)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// What is left of the budget in the current period whatever the
    /// leases: effective cap − spent (never negative); `None` for a unit
    /// the budget does not limit. Within one period and epoch it only
    /// shrinks.
    pub fn remaining(&self) -> (Option<Usd>, Option<u64>) {
        let t = self.state.totals();
        (
            self.state
                .cap_usd()
                .map(|cap| cap.saturating_sub(t.spent).max(Usd::ZERO)),
            self.state
                .cap_tokens()
                .map(|cap| cap.saturating_sub(t.tokens())),
        )
    }

    /// Count `ask`'s need as one the period cannot cover, when it cannot
    /// (the budget's state turns `Exhausted`, as [`Book::grant`] does for a
    /// need it meets). For a waiter found impossible after its grant, once
    /// later spend arrived.
    pub fn note_unmet(&mut self, ask: LeaseAsk) {
        let t = self.state.totals();
        if short_usd(self.state.cap_usd(), t.spent, ask.need) {
            self.unmet = Some(self.unmet.map_or(ask.need, |u| u.min(ask.need)));
            self.generation += 1;
        }
        if short_tokens(self.state.cap_tokens(), t.tokens(), ask.need_tokens) {
            self.unmet_tokens = Some(
                self.unmet_tokens
                    .map_or(ask.need_tokens, |u| u.min(ask.need_tokens)),
            );
            self.generation += 1;
        }
    }

    /// Whether the need of `ask` cannot be covered in this period however
    /// leases move: in a unit the budget limits, it exceeds the cap minus
    /// the spend, so even if every lease (the asker's own included) came
    /// back unspent, no grant could cover it. Call after [`Book::grant`] or
    /// [`Book::apply`] (they move the book to the current period).
    ///
    /// Never wrong later in the same period and epoch: the spend only
    /// grows and the cap changes only with the epoch. A need that only the
    /// pool cannot cover (other sidecars hold the rest) is not unmet: see
    /// [`Book::recall_candidates`].
    pub fn cannot_cover(&self, ask: LeaseAsk) -> Option<Unmet> {
        let t = self.state.totals();
        let usd = short_usd(self.state.cap_usd(), t.spent, ask.need);
        let tokens = short_tokens(self.state.cap_tokens(), t.tokens(), ask.need_tokens);
        if !usd && !tokens {
            return None;
        }
        let (remaining, remaining_tokens) = self.remaining();
        Some(Unmet {
            epoch: self.epoch,
            period_start: self.state.window().start,
            remaining,
            remaining_tokens,
        })
    }

    /// `sidecar` gives back the unused part of its lease: it keeps `keep`
    /// (at least everything it spent or reserved). Applied only when the
    /// lease is still at `version` (no newer grant crossed it); the
    /// returned view is what to send back either way.
    pub fn release(
        &mut self,
        sidecar: &str,
        version: u64,
        keep: Usd,
        keep_tokens: u64,
    ) -> LeaseView {
        if let Some(e) = self.sidecars.get_mut(sidecar) {
            if e.version == version {
                e.granted = e.granted.min(keep.max(e.charged));
                e.granted_tokens = e.granted_tokens.min(keep_tokens.max(e.charged_tokens));
            }
            // Newer than anything the sidecar saw, so it applies this view.
            e.version += 1;
            self.generation += 1;
        }
        self.lease(sidecar)
    }

    /// The lease of `sidecar` as it stands.
    pub fn lease(&self, sidecar: &str) -> LeaseView {
        let e = self.sidecars.get(sidecar).cloned().unwrap_or_default();
        LeaseView {
            epoch: self.epoch,
            period_start: self.state.window().start,
            granted: e.granted,
            granted_tokens: e.granted_tokens,
            charged: e.charged,
            charged_tokens: e.charged_tokens,
            charged_seq: e.seq,
            expires_ms: e.expires_ms,
            version: e.version,
            limits_usd: self.state.config().limit_usd.is_some(),
            limits_tokens: self.state.config().limit_tokens.is_some(),
        }
    }

    /// Reclaim the unspent part of leases that expired more than `grace_ms`
    /// before `now`. Returns the sidecars whose lease was reclaimed.
    pub fn reclaim(&mut self, now: Timestamp, grace_ms: i64) -> Vec<String> {
        let now_ms = now.as_millisecond();
        let mut out = Vec::new();
        for (id, e) in &mut self.sidecars {
            if e.expires_ms != 0 && e.expires_ms.saturating_add(grace_ms) < now_ms {
                e.granted = e.charged.min(e.granted);
                e.granted_tokens = e.charged_tokens.min(e.granted_tokens);
                e.expires_ms = 0;
                e.version += 1;
                out.push(id.clone());
            }
        }
        if !out.is_empty() {
            self.generation += 1;
        }
        out
    }

    /// Forget sidecars with no lease and no spend this period whose
    /// watermark is no longer needed (`keep` says which are still known,
    /// e.g. connected or seen recently). Bounds the persisted state.
    pub fn prune(&mut self, keep: impl Fn(&str) -> bool) {
        let before = self.sidecars.len();
        self.sidecars.retain(|id, e| {
            keep(id) || e.expires_ms != 0 || e.charged > Usd::ZERO || e.charged_tokens > 0
        });
        if self.sidecars.len() != before {
            self.generation += 1;
        }
    }

    /// Committed spend as a percentage of the limit.
    pub fn percent_spent(&self) -> u64 {
        self.state.percent_spent()
    }

    /// `Ok`, `Threshold` or `Exhausted`. Exhausted: the cap is reached, or
    /// what is left of it is less than a lease a sidecar needed this period.
    pub fn budget_state(&self) -> State {
        let s = self.state.state();
        if s == State::Exhausted {
            return s;
        }
        let t = self.state.totals();
        let usd_short = match (self.state.cap_usd(), self.unmet) {
            (Some(cap), Some(unmet)) => cap.saturating_sub(t.spent) < unmet,
            _ => false,
        };
        let tok_short = match (self.state.cap_tokens(), self.unmet_tokens) {
            (Some(cap), Some(unmet)) => cap.saturating_sub(t.tokens()) < unmet,
            _ => false,
        };
        if usd_short || tok_short {
            State::Exhausted
        } else {
            s
        }
    }

    /// The smallest unmet lease request this period.
    pub fn unmet(&self) -> (Option<Usd>, Option<u64>) {
        (self.unmet, self.unmet_tokens)
    }

    /// The effective USD cap (limit or lowest Block threshold).
    pub fn cap_usd(&self) -> Option<Usd> {
        self.state.cap_usd()
    }

    /// The effective token cap.
    pub fn cap_tokens(&self) -> Option<u64> {
        self.state.cap_tokens()
    }
}

/// Whether a USD `need` exceeds what `cap` leaves after `spent`.
fn short_usd(cap: Option<Usd>, spent: Usd, need: Usd) -> bool {
    need > Usd::ZERO && cap.is_some_and(|cap| cap.saturating_sub(spent) < need)
}

/// Whether a token `need` exceeds what `cap` leaves after `spent`.
fn short_tokens(cap: Option<u64>, spent: u64, need: u64) -> bool {
    need > 0 && cap.is_some_and(|cap| cap.saturating_sub(spent) < need)
}

/// A budget's identity, for maps.
pub type BudgetId = ObjectRef;

#[cfg(test)]
mod tests;
