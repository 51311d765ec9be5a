//! Settling an attempt: its intent in the durable ledger before it is
//! forwarded ([`intend`]); once its usage is known (or it failed), its
//! price, the replacement of its budget and lease holds by what it spent,
//! its metrics and its journal line ([`settle`]). A response body settles
//! through a [`Settlement`], which it knows only as a [`body::Settle`].

use std::sync::Arc;

use jiff::Timestamp;
use tokenwarden_core::{
    budget::Held,
    money::Usd,
    tokens::TokenCounts,
    usage::{BudgetPeriodRef, UsageRecord},
    workload::ObjectRef,
};

use super::attempt::{Attempt, Plan};
use crate::{
    body,
    control::leases::LeaseId,
    error::ProxyError,
    meter::{self, Flavor, JsonOutcome, JsonTap, TapOutcome},
    prompt_cache::Settling,
    state::{Active, Shared},
    sync::lock,
};

/// How a settlement's record reaches the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Written before `settle` returns.
    Now,
    /// Staged; the caller flushes it with [`flush_staged`], together with
    /// the lines other requests staged meanwhile, before the response
    /// leaves.
    Deferred,
}

/// What [`settle`] did.
pub struct Settled {
    /// The attempt's cost, when its model is priced.
    pub cost: Option<Usd>,
    /// With [`Commit::Deferred`] and a durable ledger: the seq of the staged
    /// line, not yet written.
    pub staged: Option<u64>,
}

/// What an attempt came to.
pub(crate) struct Outcome {
    /// Upstream status (`0`: no answer).
    pub status: u16,
    /// The usage the provider reported, or an estimate.
    pub usage: TokenCounts,
    /// The model that served (the provider's exact name when it said).
    pub served_model: String,
    /// `usage` is an estimate.
    pub estimated: bool,
    /// The response's id and finish reasons, when read (for traces).
    pub facts: meter::ResponseFacts,
}

/// What settles an attempt once its body is done.
pub struct Settlement {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The config the request ran under.
    pub active: Arc<Active>,
    /// The attempt, with the budget holds to replace by actual usage.
    pub attempt: Attempt,
    /// Upstream status.
    pub status: u16,
    /// Response flavor.
    pub flavor: Flavor,
    /// When the journal line is written.
    pub commit: Commit,
    /// Where the answer is stored if it turns out complete (response cache).
    pub fill: Option<crate::response_cache::Fill>,
    /// The body as the app received it, for `fill` (`None`: too large).
    pub captured: Option<bytes::Bytes>,
    /// A stream ended with its terminal event, usage and no error event.
    pub stream_complete: Option<bool>,
}

// === impl Settlement ===

impl Settlement {
    fn run(self, usage: TokenCounts, served: Option<String>, estimated: bool) -> Settled {
        self.run_with(usage, served, estimated, meter::ResponseFacts::default())
    }

    fn run_with(
        mut self,
        usage: TokenCounts,
        served: Option<String>,
        estimated: bool,
        facts: meter::ResponseFacts,
    ) -> Settled {
        let served_model = served.unwrap_or_else(|| self.attempt.choice.model.clone());
        let fill = self.fill.take();
        let reasons: Vec<String> = if fill.is_some() {
            facts
                .finish_reasons()
                .into_iter()
                .map(str::to_string)
                .collect()
        } else {
            Vec::new()
        };
        let outcome = Outcome {
            status: self.status,
            usage,
            served_model: served_model.clone(),
            estimated,
            facts,
        };
        let settled = settle(
            &self.shared,
            &self.active,
            &mut self.attempt,
            outcome,
            self.commit,
        );
        if let Some(fill) = fill {
            let shared = &self.shared;
            let model = fill.model().to_string();
            let result = crate::response_cache::store(
                fill,
                crate::response_cache::Answer {
                    status: self.status,
                    body: self.captured.take(),
                    flavor: self.flavor,
                    complete: !estimated && self.stream_complete.unwrap_or(true),
                    reasons,
                    usage,
                    served_model,
                    cost: settled.cost,
                },
            );
            shared
                .metrics
                .response_cache(result, &shared.options.workload, &model);
            let (entries, bytes) = shared.response_cache.usage();
            shared.metrics.response_cache_size(entries, bytes);
            shared
                .metrics
                .semantic_entries(shared.response_cache.semantic_entries());
        }
        settled
    }

    fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A JSON body read (whole, or what passed before it broke): its
    /// usage, else an estimate from its text.
    pub fn finish_json(self, body: &[u8]) -> Settled {
        let (usage, served, estimated) =
            json_usage(self.flavor, self.status, self.attempt.prompt_estimate, body);
        let facts = facts(&self.attempt, self.flavor, body);
        self.run_with(usage, served, estimated, facts)
    }

    /// A JSON body went past the tap: the provider's usage if it passed,
    /// else (a success without usage, or cut before it) an estimate from
    /// the text that passed, marked estimated.
    pub fn finish_tapped(self, outcome: &JsonOutcome) -> Settled {
        match &outcome.metered {
            Some(m) => {
                let m = m.clone();
                self.run(m.usage, m.served_model, false)
            }
            None if self.succeeded() => {
                let usage = meter::estimate_json(self.attempt.prompt_estimate, outcome);
                self.run(usage, None, true)
            }
            None => self.run(TokenCounts::default(), None, false),
        }
    }

    /// A stream ended; settle with its usage, or an estimate when it ended early.
    pub fn finish_stream(mut self, mut outcome: TapOutcome) {
        let facts = std::mem::take(&mut outcome.facts);
        self.stream_complete =
            Some(outcome.complete && outcome.usage.is_some() && outcome.error_event.is_none());
        match (&outcome.usage, outcome.complete) {
            (Some(u), true) => {
                let u = *u;
                self.run_with(u, outcome.served_model, false, facts);
            }
            _ if !self.succeeded() => {
                self.run(TokenCounts::default(), outcome.served_model, false);
            }
            _ => {
                let usage =
                    meter::estimate_cut_stream(self.flavor, self.attempt.prompt_estimate, &outcome);
                self.run_with(usage, outcome.served_model, true, facts);
            }
        }
    }

    /// The body broke before any usage could be read.
    pub fn finish_cut(self) {
        if self.succeeded() {
            let usage = TokenCounts {
                input_tokens: self.attempt.prompt_estimate,
                ..Default::default()
            };
            self.run(usage, None, true);
        } else {
            self.run(TokenCounts::default(), None, false);
        }
    }
}

impl body::Settle for Settlement {
    fn flavor(&self) -> Flavor {
        self.flavor
    }

    fn captured(&mut self, body: Option<bytes::Bytes>) {
        self.captured = body;
    }

    fn stalled(&self) {
        self.shared.metrics.error("upstream_stalled");
    }

    fn stream(self: Box<Self>, outcome: TapOutcome) {
        self.finish_stream(outcome);
    }

    fn tapped(self: Box<Self>, outcome: &JsonOutcome) {
        self.finish_tapped(outcome);
    }

    fn plain(self: Box<Self>, clean: bool) {
        if clean {
            self.finish_json(&[]);
        } else {
            self.finish_cut();
        }
    }
}

/// Writes a staged journal line when dropped, unless a flush by another
/// request took it along already. Dropped as well when the future holding
/// it is cancelled (the client went away), so a line is never left behind.
struct JournalFlush<'a> {
    shared: &'a Shared,
    seq: u64,
}

impl Drop for JournalFlush<'_> {
    fn drop(&mut self) {
        let mut journal = lock(&self.shared.journal);
        if journal.written_seq() < self.seq && journal.flush().is_err() {
            self.shared.metrics.error("ledger_write");
            self.shared.metrics.ledger_writable(false);
        }
        drop(journal);
        // The record is on file (by this flush or an earlier one): the
        // session may send it.
        if let Some(control) = &self.shared.control {
            control.spool_added.notify_one();
        }
    }
}

/// Write the line [`Commit::Deferred`] staged (if any) once the other
/// requests that are ready settled too, so that the requests that settled
/// in the same turn of the runtime share one `write(2)`; alone, write at
/// once (a yield would only cost a trip through the scheduler).
pub(super) async fn flush_staged(shared: &Shared, staged: Option<u64>) {
    let Some(seq) = staged else {
        return;
    };
    let flush = JournalFlush { shared, seq };
    if shared.metrics.in_flight().get() > 1 {
        tokio::task::yield_now().await;
    }
    drop(flush);
}

/// The id and finish reasons of a whole JSON body, when the attempt is
/// traced (read only then).
fn facts(attempt: &Attempt, flavor: Flavor, body: &[u8]) -> meter::ResponseFacts {
    if attempt.trace.span.is_some() && !body.is_empty() {
        meter::ResponseFacts::from_json(flavor, body)
    } else {
        meter::ResponseFacts::default()
    }
}

/// The usage of a JSON body read (whole, or what passed before it broke)
/// with `status`: the provider's, else an estimate from its text (marked
/// estimated); nothing for an error status.
fn json_usage(
    flavor: Flavor,
    status: u16,
    prompt_estimate: u64,
    body: &[u8],
) -> (TokenCounts, Option<String>, bool) {
    if !(200..300).contains(&status) {
        return (TokenCounts::default(), None, false);
    }
    if let Ok(Some(m)) = meter::from_json(flavor, body) {
        return (m.usage, m.served_model, false);
    }
    let mut tap = JsonTap::new();
    tap.push(body);
    let outcome = tap.finish(flavor);
    match outcome.metered {
        Some(m) => (m.usage, m.served_model, false),
        None => (meter::estimate_json(prompt_estimate, &outcome), None, true),
    }
}

/// Meter an answered attempt from its whole JSON body (decoded) and keep
/// the attempt for another try: an answer that failed an escalation rule.
pub(super) fn answered(
    shared: &Shared,
    active: &Active,
    attempt: &mut Attempt,
    status: u16,
    flavor: Flavor,
    body: &[u8],
) -> Settled {
    let (usage, served, estimated) = json_usage(flavor, status, attempt.prompt_estimate, body);
    let outcome = Outcome {
        status,
        usage,
        served_model: served.unwrap_or_else(|| attempt.choice.model.clone()),
        estimated,
        facts: facts(attempt, flavor, body),
    };
    settle(shared, active, attempt, outcome, Commit::Now)
}

/// Meter an attempt that produced no usage.
pub(super) fn failed(shared: &Shared, active: &Active, attempt: &mut Attempt, status: u16) {
    let outcome = Outcome {
        status,
        usage: TokenCounts::default(),
        served_model: attempt.choice.model.clone(),
        estimated: false,
        facts: meter::ResponseFacts::default(),
    };
    settle(shared, active, attempt, outcome, Commit::Now);
}

/// Replace the attempt's holds by its actual usage: budgets, metrics,
/// journal, leases. Leaves the attempt holding nothing.
pub(crate) fn settle(
    shared: &Shared,
    active: &Active,
    attempt: &mut Attempt,
    outcome: Outcome,
    commit: Commit,
) -> Settled {
    let now = Timestamp::now();
    let sent_at = attempt.sent_at.take();
    let provider = active
        .router
        .as_ref()
        .map(|r| &r.config().providers[attempt.choice.provider]);
    let hint = provider.map(|p| p.api.as_str());
    let Outcome {
        status,
        usage,
        served_model,
        estimated,
        facts,
    } = outcome;
    let prices = active.prices.price(hint, &served_model);
    let prices = prices.prices();
    let cost: Option<Usd> = if usage == TokenCounts::default() {
        Some(Usd::ZERO)
    } else {
        prices.map(|p| p.cost(&usage))
    };
    let cache = shared.prompt_cache.figures(
        &shared.metrics,
        Settling {
            fingerprint: attempt.fingerprint.take(),
            provider: provider.map_or("", |p| p.name.as_str()),
            model: &attempt.choice.model,
            cache_key: attempt.cache_key.take(),
            usage: &usage,
            prices,
            exact: (200..300).contains(&status) && !estimated,
            sent: sent_at.unwrap_or(now),
        },
        now,
    );
    if let Some(m) = &shared.otel_metrics {
        m.attempt(&crate::otel::MeteredAttempt {
            endpoint: attempt.endpoint,
            api: provider.map(|p| p.api),
            model: &attempt.choice.model,
            served_model: &served_model,
            status,
            usage: &usage,
            cost,
            // A clock stepped back makes it zero.
            duration: sent_at
                .map(|s| std::time::Duration::try_from(now.duration_since(s)).unwrap_or_default()),
        });
    }
    let spent = usage != TokenCounts::default() || status != 0;
    let holds = std::mem::take(&mut attempt.holds);
    let (periods, lease_holds) = charge_budgets(shared, attempt, holds, spent, &usage, cost, now);
    let record = UsageRecord {
        seq: 0,
        ts: now,
        endpoint: attempt.endpoint,
        requested_model: attempt.requested_model.clone(),
        served_model,
        provider: provider.map(|p| p.name.clone()).unwrap_or_default(),
        route: attempt.route.clone(),
        score: attempt.score,
        reason: attempt.reason.clone(),
        attempt: attempt.number,
        status,
        usage,
        cost,
        estimated,
        budgets: periods,
        intent: attempt.intent,
        replay: Some(attempt.replay_facts(active.router.as_ref().map(|r| r.config()))),
        cache,
    };
    if !record.cache.is_empty() {
        shared.metrics.cache(&record.served_model, &record.cache);
    }
    shared.metrics.attempt(&crate::metrics::Attempt {
        endpoint: attempt.endpoint.as_str(),
        requested_model: &attempt.requested_model,
        served_model: &record.served_model,
        route: attempt.route.as_deref().unwrap_or("none"),
        status,
        usage: &record.usage,
        cost_usd: cost.map(crate::metrics::usd_f64),
        estimated,
    });
    if let Some(span) = attempt.trace.span.take() {
        span.settled(&crate::otel::Settled {
            status,
            usage: &record.usage,
            served_model: &record.served_model,
            estimated,
            cost,
            budgets: record
                .budgets
                .iter()
                .map(|b| b.budget.to_string())
                .collect(),
            response_id: facts.id.as_deref(),
            finish_reasons: facts.finish_reasons(),
        });
    }
    let (record, staged) = journal(shared, record, commit);
    if let Some(r) = &record.replay {
        // The later attempts of the request carry the first one's id.
        attempt.replay.request = r.request;
    }
    settle_leases(shared, lease_holds, &record, spent);
    attempt.leased.clear();
    attempt.intent = None;
    Settled { cost, staged }
}

/// Settle (what was `spent`) or release (nothing was) every budget hold;
/// returns the budgets' periods the attempt counts in, and the holds its
/// leases also have.
fn charge_budgets(
    shared: &Shared,
    attempt: &Attempt,
    holds: Vec<(ObjectRef, Option<Held>)>,
    spent: bool,
    usage: &TokenCounts,
    cost: Option<Usd>,
    now: Timestamp,
) -> (Vec<BudgetPeriodRef>, Vec<(LeaseId, Held)>) {
    let mut periods = Vec::new();
    let mut lease_holds = Vec::new();
    let mut budgets = lock(&shared.budgets);
    for (id, held) in holds {
        let Some(state) = budgets.get_mut(&id) else {
            continue;
        };
        if let Some(h) = held {
            for lease in attempt.leased.iter().filter(|(b, _)| *b == id) {
                lease_holds.push((lease.clone(), h));
            }
        }
        let key = attempt.key_of(&id);
        if spent {
            match held {
                Some(h) => state.settle_for(now, h, key, usage, cost),
                None => {
                    state.roll(now);
                    state.record_for(usage, cost, key);
                }
            }
        } else if let Some(h) = held {
            state.release_for(h, key);
        }
        periods.push(BudgetPeriodRef {
            budget: id.clone(),
            period_start: state.window().start,
            key: key.map(str::to_string),
        });
        shared.metrics.budget(state);
    }
    drop(budgets);
    if !periods.is_empty() {
        shared.reservations_freed.notify_waiters();
    }
    (periods, lease_holds)
}

/// A response-cache hit in the budgets a charged request of the workload
/// counts in (every budget of its config, shadow ones too): each counts
/// the hit and what it saved (`figures`) in its current period, never
/// spend, tokens or a request. Returns those periods, for the hit's
/// record (without a per-key key: hits are counted per budget, and a hit
/// takes no key slot of `maxKeys`).
pub(super) fn count_hit(
    shared: &Shared,
    active: &Active,
    figures: &tokenwarden_core::usage::cache::CacheFigures,
    now: Timestamp,
) -> Vec<BudgetPeriodRef> {
    let mut budgets = lock(&shared.budgets);
    active
        .cfg
        .budgets
        .iter()
        .filter_map(|b| {
            let state = budgets.get_mut(&b.source)?;
            state.roll(now);
            state.record_cache(figures);
            Some(BudgetPeriodRef {
                budget: b.source.clone(),
                period_start: state.window().start,
                key: None,
            })
        })
        .collect()
}

/// Append the attempt's line to the journal: one line, one seq, which is
/// also the spool's in connected mode (the record is held until the
/// operator acks it). With a state dir the line is staged, or written now;
/// without one the journal is in memory. Returns the record under its seq,
/// and the staged seq with [`Commit::Deferred`].
fn journal(shared: &Shared, mut record: UsageRecord, commit: Commit) -> (UsageRecord, Option<u64>) {
    let mut staged = None;
    let mut journal = lock(&shared.journal);
    let seq = journal.stage(&mut record);
    if journal.is_durable() {
        if commit == Commit::Deferred {
            staged = Some(seq);
        } else if journal.flush().is_err() {
            // flush() logged the lines it could not write.
            shared.metrics.error("ledger_write");
            shared.metrics.ledger_writable(false);
        }
    }
    if shared.control.is_some() {
        shared.metrics.spool(journal.depth(), journal.oldest());
    }
    drop(journal);
    (record, staged)
}

/// Connected: settle the lease holds with what was `spent` (under the
/// record's seq and period), or release them; wake the spool's sender.
fn settle_leases(
    shared: &Shared,
    lease_holds: Vec<(LeaseId, Held)>,
    record: &UsageRecord,
    spent: bool,
) {
    let Some(control) = &shared.control else {
        return;
    };
    let actual = Held {
        cost: record.cost.unwrap_or(Usd::ZERO),
        tokens: record.usage.total_tokens(),
    };
    for (id, h) in lease_holds {
        if spent {
            let period = record
                .budgets
                .iter()
                .find(|b| b.budget == id.0)
                .map_or(0, |b| b.period_start.as_second());
            control.leases.settle(&id, h, record.seq, period, actual);
        } else {
            control.leases.release(&id, h);
        }
    }
    control.spool_added.notify_one();
}

/// Write the attempt's intent (its worst case) to the durable ledger
/// before it is forwarded, so that a sidecar killed with the request in
/// flight still records it. Without a state dir there is nothing to write.
/// A failed write refuses the request (a provider-shaped 503), unless
/// `--ledger-fail-open`.
pub(super) fn intend(
    plan: &Plan<'_>,
    attempt: &mut Attempt,
    prompt_bound: u64,
) -> Result<(), ProxyError> {
    let shared = plan.shared;
    if !lock(&shared.journal).is_durable() {
        return Ok(());
    }
    let record = intent_record(plan, attempt, prompt_bound);
    let intended = lock(&shared.journal).intend(record);
    match intended {
        Ok(id) => {
            attempt.intent = Some(id);
            shared.metrics.ledger_writable(true);
            Ok(())
        }
        Err(e) => {
            shared.metrics.ledger_writable(false);
            shared.metrics.error("ledger_write");
            if shared.options.ledger_fail_open {
                tracing::error!(error = %e, "cannot write the ledger; forwarding anyway (--ledger-fail-open): this request's spend is kept in memory only");
                Ok(())
            } else {
                tracing::error!(error = %e, "cannot write the ledger; refusing the request (fail-closed)");
                Err(ProxyError::LedgerUnavailable(e.to_string()))
            }
        }
    }
}

/// The intent's line: the attempt's worst case, estimated, in the periods
/// of the budgets it holds.
fn intent_record(plan: &Plan<'_>, attempt: &Attempt, prompt_bound: u64) -> UsageRecord {
    let active = plan.active;
    let (usage, cost) = attempt.worst_case(active, prompt_bound, plan.max_output);
    // Before the ledger's lock: a reload takes the budgets' lock, then the
    // ledger's (new budgets start from the ledger's totals).
    let budgets = {
        let states = lock(&plan.shared.budgets);
        attempt
            .holds
            .iter()
            .filter_map(|(id, _)| {
                Some(BudgetPeriodRef {
                    budget: id.clone(),
                    period_start: states.get(id)?.window().start,
                    key: attempt.key_of(id).map(str::to_string),
                })
            })
            .collect()
    };
    let provider = active
        .router
        .as_ref()
        .map(|r| r.config().providers[attempt.choice.provider].name.clone())
        .unwrap_or_default();
    UsageRecord {
        seq: 0,
        ts: Timestamp::now(),
        endpoint: attempt.endpoint,
        requested_model: attempt.requested_model.clone(),
        served_model: attempt.choice.model.clone(),
        provider,
        route: attempt.route.clone(),
        score: attempt.score,
        reason: None,
        attempt: attempt.number,
        status: 0,
        usage,
        cost,
        estimated: true,
        budgets,
        intent: None,
        // Recorded as is when the sidecar dies with the attempt in flight.
        replay: Some(attempt.replay_facts(active.router.as_ref().map(|r| r.config()))),
        cache: Default::default(),
    }
}

/// Write a line no attempt settles (a hit, the semantic cache's embedding
/// call) to the journal, durably when the journal is, and wake the spool.
pub(super) fn write_record(shared: &Shared, record: &mut UsageRecord) {
    let mut journal = lock(&shared.journal);
    journal.stage(record);
    if journal.is_durable() && journal.flush().is_err() {
        shared.metrics.error("ledger_write");
        shared.metrics.ledger_writable(false);
    }
    if shared.control.is_some() {
        shared.metrics.spool(journal.depth(), journal.oldest());
    }
    drop(journal);
    if let Some(control) = &shared.control {
        control.spool_added.notify_one();
    }
}
