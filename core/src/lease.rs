//! The sidecar's side of a budget lease: what it may still reserve from the
//! slice of a budget the operator granted it. Pure: the caller passes the
//! time (unix milliseconds) and holds the lock.
//!
//! A grant is cumulative for one budget period (see `LeaseGrant` in
//! `proto/control.proto`): the sidecar may spend at most `amount` in the
//! period. Its spend is what the operator already charged it (`charged`,
//! its records with seq ≤ `charged_seq`) plus the cost of its own settled
//! records the operator has not charged yet (seq > `charged_seq`) plus the
//! reservations of requests in flight. Grants may arrive duplicated or out
//! of order: the newest (period, then epoch, then version, then
//! `charged_seq`, then expiry) wins. When the operator recalls unused
//! lease, the sidecar lowers its own limit to what it has spent or reserved
//! and from then on ignores grants of the version it released from.
//!
//! When the operator answers that a request's need cannot be covered at all
//! this period (`LeaseUnmet`: the budget's cap minus its spend is below the
//! need), the sidecar keeps the verdict and refuses at once the requests
//! that were already waiting when it asked and need more than what is left
//! ([`LeaseClient::cannot_cover`]). A request that began waiting later asks
//! again, so a verdict is never applied to a request it was not computed
//! for.

use serde::{Deserialize, Serialize};

/// One lease grant, as the sidecar keeps it (integer picos and tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Newer epochs replace older ones (the budget's limit changed).
    pub epoch: u64,
    /// Cumulative amount this period, pico-USD.
    pub amount_picos: i128,
    /// Cumulative tokens this period.
    pub amount_tokens: u64,
    /// No new reservation at or after this instant (unix ms).
    pub expires_unix_millis: i64,
    /// The period the grant is for (unix seconds).
    pub period_start_unix: i64,
    /// What the operator has charged this sidecar in the period.
    pub charged_picos: i128,
    /// Tokens charged.
    pub charged_tokens: u64,
    /// The charge covers this sidecar's records with seq ≤ this.
    pub charged_seq: u64,
    /// The budget has a USD limit (else USD is not leased).
    pub limits_usd: bool,
    /// The budget has a token limit (else tokens are not leased).
    pub limits_tokens: bool,
    /// Bumped by the operator whenever the amount changes.
    #[serde(default)]
    pub version: u64,
}

/// USD and tokens together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    /// pico-USD.
    pub picos: i128,
    /// Tokens (all kinds).
    pub tokens: u64,
}

/// The operator's answer that a need cannot be covered this period
/// (`LeaseUnmet`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmet {
    /// The period it is about (unix seconds).
    pub period_start_unix: i64,
    /// The epoch it is about (a newer grant epoch makes it stale).
    pub epoch: u64,
    /// The lease request it answers. Request ids increase, so it was
    /// computed after every request that began waiting before this id was
    /// taken.
    pub request_id: u64,
    /// Cap − spend cluster-wide: picos, tokens (`i128::MAX` / `u64::MAX`
    /// for a unit the budget does not limit).
    pub remaining: Amount,
}

/// Why a reservation does not fit the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// No grant for the current period yet.
    NoLease,
    /// The grant expired.
    Expired,
    /// The grant was revoked.
    Revoked,
    /// The grant is too small for this request.
    Insufficient {
        /// What is left of the lease.
        available: Amount,
    },
}

/// A settled record not (yet) covered by a grant's `charged_seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Uncharged {
    seq: u64,
    period_start_unix: i64,
    amount: Amount,
}

/// The lease of one budget.
#[derive(Clone, Debug, Default)]
pub struct LeaseClient {
    grant: Option<Grant>,
    revoked_epoch: Option<u64>,
    uncharged: Vec<Uncharged>,
    reserved: Amount,
    /// Request in flight: (id, sent at, whether it carried a need).
    pending: Option<(u64, i64, bool)>,
    last_reservation: Amount,
    last_increment: i128,
    /// Released from (period, epoch, version): grants at or below it are stale.
    released: Option<(i64, u64, u64)>,
    /// Reservations waiting for more lease (they did not fit).
    waiting: Amount,
    /// The newest `LeaseUnmet` (highest request id).
    unmet: Option<Unmet>,
}

/// Most uncharged records remembered per budget (older ones are folded
/// into one entry so memory stays bounded while the operator is away).
const MAX_UNCHARGED: usize = 100_000;

/// A lease request older than this is considered lost and may be resent.
pub const REQUEST_TIMEOUT_MS: i64 = 5_000;

// === impl Shortfall ===

impl Shortfall {
    /// Short description for messages and metrics.
    pub fn describe(&self) -> String {
        match self {
            Shortfall::NoLease => "no lease granted yet".into(),
            Shortfall::Expired => "the lease expired".into(),
            Shortfall::Revoked => "the lease was revoked".into(),
            Shortfall::Insufficient { available } => format!(
                "the lease has {} pico-USD / {} tokens left",
                available.picos, available.tokens
            ),
        }
    }
}

// === impl Grant ===

impl Grant {
    fn key(&self) -> (i64, u64, u64, u64, i64) {
        (
            self.period_start_unix,
            self.epoch,
            self.version,
            self.charged_seq,
            self.expires_unix_millis,
        )
    }
}

// === impl LeaseClient ===

impl LeaseClient {
    /// The grant in force, if any.
    pub fn grant(&self) -> Option<&Grant> {
        self.grant.as_ref()
    }

    /// Reserved by requests in flight.
    pub fn reserved(&self) -> Amount {
        self.reserved
    }

    /// Apply a grant; returns whether it replaced the one held (older or
    /// duplicate grants are ignored). `request_id` answers a pending
    /// request.
    pub fn apply(&mut self, g: Grant, request_id: u64) -> bool {
        if request_id != 0 && self.pending.is_some_and(|(id, _, _)| id == request_id) {
            self.pending = None;
        }
        if self
            .released
            .is_some_and(|(p, e, v)| g.period_start_unix == p && g.epoch == e && g.version <= v)
        {
            return false;
        }
        let newer = match &self.grant {
            None => true,
            Some(old) => g.key() > old.key(),
        };
        if !newer {
            return false;
        }
        let increment = match &self.grant {
            Some(old) if old.period_start_unix == g.period_start_unix && old.epoch == g.epoch => {
                g.amount_picos.saturating_sub(old.amount_picos)
            }
            _ => g.amount_picos.saturating_sub(g.charged_picos),
        };
        if increment > 0 {
            self.last_increment = increment;
        }
        if self.revoked_epoch.is_some_and(|e| g.epoch > e) {
            self.revoked_epoch = None;
        }
        self.uncharged.retain(|u| {
            u.period_start_unix > g.period_start_unix
                || (u.period_start_unix == g.period_start_unix && u.seq > g.charged_seq)
        });
        // A verdict about an older period or epoch (the limit changed) no
        // longer holds.
        if self
            .unmet
            .is_some_and(|u| (u.period_start_unix, u.epoch) < (g.period_start_unix, g.epoch))
        {
            self.unmet = None;
        }
        self.grant = Some(g);
        true
    }

    /// The operator answered request `u.request_id`: its need cannot be
    /// covered this period. The newest verdict is kept (request ids
    /// increase; within a period and epoch what is left only shrinks). It
    /// answers the request, so another may be sent at once.
    pub fn unmet(&mut self, u: Unmet) {
        if self.pending.is_some_and(|(id, _, _)| id == u.request_id) {
            self.pending = None;
        }
        if self
            .grant
            .is_some_and(|g| (g.period_start_unix, g.epoch) > (u.period_start_unix, u.epoch))
        {
            return;
        }
        if self.unmet.is_none_or(|old| u.request_id > old.request_id) {
            self.unmet = Some(u);
        }
    }

    /// What is left cluster-wide, when the operator said that a request
    /// needing `ask` in the period starting at `period_start_unix` cannot
    /// be covered: it answered a lease request with an id above
    /// `waiting_since` (taken after the request began waiting), for that
    /// period and an epoch not older than the grant held, and `ask` exceeds
    /// what is left in a unit the budget limits. `None`: keep waiting.
    pub fn cannot_cover(
        &self,
        period_start_unix: i64,
        ask: Amount,
        waiting_since: u64,
    ) -> Option<Amount> {
        let u = self.unmet?;
        let current = u.period_start_unix == period_start_unix
            && u.request_id > waiting_since
            && self
                .grant
                .is_none_or(|g| (g.period_start_unix, g.epoch) <= (u.period_start_unix, u.epoch));
        (current && (ask.picos > u.remaining.picos || ask.tokens > u.remaining.tokens))
            .then_some(u.remaining)
    }

    /// Void the lease of `epoch` (and older): no new reservations.
    pub fn revoke(&mut self, epoch: u64) {
        self.revoked_epoch = Some(self.revoked_epoch.map_or(epoch, |e| e.max(epoch)));
    }

    /// This sidecar's spend in the grant's period: charged + uncharged
    /// records + reservations in flight.
    pub fn spent(&self) -> Amount {
        let Some(g) = &self.grant else {
            return self.reserved;
        };
        let mut a = Amount {
            picos: g.charged_picos.saturating_add(self.reserved.picos),
            tokens: g.charged_tokens.saturating_add(self.reserved.tokens),
        };
        for u in &self.uncharged {
            if u.period_start_unix == g.period_start_unix {
                a.picos = a.picos.saturating_add(u.amount.picos);
                a.tokens = a.tokens.saturating_add(u.amount.tokens);
            }
        }
        a
    }

    /// What is left of a usable lease for the period starting at
    /// `period_start_unix`, or why there is none.
    pub fn available(&self, now_ms: i64, period_start_unix: i64) -> Result<Amount, Shortfall> {
        let Some(g) = &self.grant else {
            return Err(Shortfall::NoLease);
        };
        if g.period_start_unix != period_start_unix {
            return Err(Shortfall::NoLease);
        }
        if self.revoked_epoch.is_some_and(|e| g.epoch <= e) {
            return Err(Shortfall::Revoked);
        }
        if now_ms >= g.expires_unix_millis {
            return Err(Shortfall::Expired);
        }
        let spent = self.spent();
        Ok(Amount {
            picos: if g.limits_usd {
                g.amount_picos.saturating_sub(spent.picos)
            } else {
                i128::MAX
            },
            tokens: if g.limits_tokens {
                g.amount_tokens.saturating_sub(spent.tokens)
            } else {
                u64::MAX
            },
        })
    }

    /// Reserve `ask` from the lease, or say why it does not fit.
    pub fn try_reserve(
        &mut self,
        now_ms: i64,
        period_start_unix: i64,
        ask: Amount,
    ) -> Result<(), Shortfall> {
        self.last_reservation = ask;
        let available = self.available(now_ms, period_start_unix)?;
        if ask.picos > available.picos || ask.tokens > available.tokens {
            return Err(Shortfall::Insufficient { available });
        }
        self.hold(ask);
        Ok(())
    }

    /// Count `ask` as reserved without checking the lease (fail-open).
    pub fn hold(&mut self, ask: Amount) {
        self.reserved.picos = self.reserved.picos.saturating_add(ask.picos);
        self.reserved.tokens = self.reserved.tokens.saturating_add(ask.tokens);
    }

    /// Give back a reservation that spent nothing.
    pub fn release(&mut self, held: Amount) {
        self.reserved.picos = self.reserved.picos.saturating_sub(held.picos).max(0);
        self.reserved.tokens = self.reserved.tokens.saturating_sub(held.tokens);
    }

    /// Replace a reservation by the settled record `seq` (counted in the
    /// period starting at `period_start_unix`) that cost `actual`.
    pub fn settle(&mut self, held: Amount, seq: u64, period_start_unix: i64, actual: Amount) {
        self.release(held);
        self.record(seq, period_start_unix, actual);
    }

    /// Count a settled record of this sidecar that no grant covers yet
    /// (also used to rebuild the state from the spool after a restart).
    pub fn record(&mut self, seq: u64, period_start_unix: i64, actual: Amount) {
        if let Some(g) = &self.grant
            && (period_start_unix < g.period_start_unix
                || (period_start_unix == g.period_start_unix && seq <= g.charged_seq))
        {
            return; // already charged by the operator
        }
        if self.uncharged.len() >= MAX_UNCHARGED
            && let Some(first) = self.uncharged.first().copied()
        {
            // Fold the oldest two: the sum is kept, under the newer seq.
            self.uncharged.remove(0);
            if let Some(next) = self.uncharged.first_mut() {
                next.amount.picos = next.amount.picos.saturating_add(first.amount.picos);
                next.amount.tokens = next.amount.tokens.saturating_add(first.amount.tokens);
            }
        }
        self.uncharged.push(Uncharged {
            seq,
            period_start_unix,
            amount: actual,
        });
    }

    /// Whether to ask for more, and how much: when nothing is pending and
    /// what is left is below max(2× the last reservation, 25% of the last
    /// increment, what is in flight), or there is no usable lease. Want:
    /// max(4× the last reservation, the last increment, 2× what is in
    /// flight).
    pub fn wants_more(&self, now_ms: i64, period_start_unix: i64, blocked: bool) -> Option<Amount> {
        // One request in flight per budget; a blocked request may replace a
        // mere top-up, so the operator learns what it needs.
        if self.pending.is_some_and(|(_, at, had_need)| {
            now_ms.saturating_sub(at) < REQUEST_TIMEOUT_MS && (had_need || !blocked)
        }) {
            return None;
        }
        // Enough for the requests in flight twice over: grants take up to a
        // status-write interval (1 s) to arrive, so ask for a second's worth.
        let want = Amount {
            picos: self
                .last_reservation
                .picos
                .saturating_mul(4)
                .max(self.last_increment)
                .max(
                    self.reserved
                        .picos
                        .saturating_add(self.waiting.picos)
                        .saturating_mul(2),
                ),
            tokens: self.last_reservation.tokens.saturating_mul(4).max(
                self.reserved
                    .tokens
                    .saturating_add(self.waiting.tokens)
                    .saturating_mul(2),
            ),
        };
        match self.available(now_ms, period_start_unix) {
            Err(Shortfall::Revoked) => None,
            Err(_) => Some(want),
            Ok(left) => {
                let low_picos = self
                    .last_reservation
                    .picos
                    .saturating_mul(2)
                    .max(self.last_increment / 4)
                    .max(self.reserved.picos);
                let low_tokens = self
                    .last_reservation
                    .tokens
                    .saturating_mul(2)
                    .max(self.reserved.tokens);
                let usd = self.grant.is_some_and(|g| g.limits_usd);
                let tok = self.grant.is_some_and(|g| g.limits_tokens);
                ((usd && left.picos < low_picos) || (tok && left.tokens < low_tokens))
                    .then_some(want)
            }
        }
    }

    /// A reservation of `a` starts waiting for more lease (counted in the
    /// next request's want).
    pub fn wait_begin(&mut self, a: Amount) {
        self.waiting.picos = self.waiting.picos.saturating_add(a.picos);
        self.waiting.tokens = self.waiting.tokens.saturating_add(a.tokens);
    }

    /// It stopped waiting (reserved or refused).
    pub fn wait_end(&mut self, a: Amount) {
        self.waiting.picos = self.waiting.picos.saturating_sub(a.picos).max(0);
        self.waiting.tokens = self.waiting.tokens.saturating_sub(a.tokens);
    }

    /// A request `id` was sent at `now_ms` (`with_need`: a request was
    /// waiting on it).
    pub fn requested(&mut self, id: u64, now_ms: i64, with_need: bool) {
        self.pending = Some((id, now_ms, with_need));
    }

    /// The operator recalled unused lease: lower the limit to what is
    /// spent or reserved. Returns the version released from and what is
    /// kept, to send in `LeaseRelease` (`None`: nothing to give back).
    pub fn release_unused(&mut self, period_start_unix: i64) -> Option<(u64, Amount)> {
        let spent = self.spent();
        let g = self.grant.as_mut()?;
        if g.period_start_unix != period_start_unix {
            return None;
        }
        let keep = Amount {
            picos: if g.limits_usd {
                spent.picos.min(g.amount_picos)
            } else {
                g.amount_picos
            },
            tokens: if g.limits_tokens {
                spent.tokens.min(g.amount_tokens)
            } else {
                g.amount_tokens
            },
        };
        if keep.picos == g.amount_picos && keep.tokens == g.amount_tokens {
            return None;
        }
        g.amount_picos = keep.picos;
        g.amount_tokens = keep.tokens;
        self.released = Some((g.period_start_unix, g.epoch, g.version));
        Some((g.version, keep))
    }

    /// The stream dropped: requests in flight are lost.
    pub fn forget_pending(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USD: i128 = 1_000_000_000_000;
    const P: i64 = 1_700_000_000;

    fn grant(epoch: u64, amount: i128, charged: i128, charged_seq: u64) -> Grant {
        Grant {
            epoch,
            amount_picos: amount,
            amount_tokens: 0,
            expires_unix_millis: 10_000,
            period_start_unix: P,
            charged_picos: charged,
            charged_tokens: 0,
            charged_seq,
            limits_usd: true,
            limits_tokens: false,
            // These tests only ever grow a lease, so its version grows
            // with the amount (one step per 0.001 USD).
            version: u64::try_from(amount / 1_000_000_000).unwrap_or(0),
        }
    }

    fn usd(p: i128) -> Amount {
        Amount {
            picos: p,
            tokens: 10,
        }
    }

    #[test]
    fn spend_is_charged_plus_own_uncharged_records_plus_reservations() {
        let mut l = LeaseClient::default();
        assert_eq!(l.try_reserve(0, P, usd(1)), Err(Shortfall::NoLease));
        assert!(l.apply(grant(1, USD, 0, 0), 0));
        l.try_reserve(0, P, usd(USD / 2)).unwrap();
        // Half reserved: another half fits, a bit more does not.
        assert_eq!(
            l.try_reserve(0, P, usd(USD / 2 + 1)),
            Err(Shortfall::Insufficient {
                available: Amount {
                    picos: USD / 2,
                    tokens: u64::MAX
                }
            })
        );
        // Settled below the reservation: record 7 cost 0.10.
        l.settle(usd(USD / 2), 7, P, usd(USD / 10));
        assert_eq!(l.available(0, P).unwrap().picos, USD * 9 / 10);
        // A grant that charged seq 7 (0.10) and more from earlier: the
        // record is not counted twice.
        assert!(l.apply(grant(1, 2 * USD, USD / 10 + USD / 5, 7), 0));
        assert_eq!(l.available(0, P).unwrap().picos, 2 * USD - USD * 3 / 10);
        // A record the grant already covers (settled after the grant
        // arrived) is not counted again either.
        l.record(6, P, usd(USD));
        assert_eq!(l.available(0, P).unwrap().picos, 2 * USD - USD * 3 / 10);
    }

    #[test]
    fn newest_grant_wins_and_duplicates_are_harmless() {
        let mut l = LeaseClient::default();
        assert!(l.apply(grant(1, 5 * USD, 0, 0), 0));
        assert!(!l.apply(grant(1, 3 * USD, 0, 0), 0), "older amount");
        assert!(!l.apply(grant(1, 5 * USD, 0, 0), 0), "duplicate");
        assert_eq!(l.grant().unwrap().amount_picos, 5 * USD);
        // A newer epoch replaces, even when smaller (the limit dropped).
        assert!(l.apply(grant(2, USD, 0, 0), 0));
        assert_eq!(l.available(0, P).unwrap().picos, USD);
        // A new period replaces; records of the old one stop counting.
        l.record(9, P, usd(USD / 2));
        let mut next = grant(1, USD, 0, 0);
        next.period_start_unix = P + 86_400;
        assert!(l.apply(next, 0));
        assert_eq!(l.available(0, P), Err(Shortfall::NoLease), "old period");
        assert_eq!(l.available(0, P + 86_400).unwrap().picos, USD);
    }

    #[test]
    fn expiry_and_revocation_stop_new_reservations_only() {
        let mut l = LeaseClient::default();
        l.apply(grant(3, USD, 0, 0), 0);
        l.try_reserve(9_999, P, usd(10)).unwrap();
        assert_eq!(l.try_reserve(10_000, P, usd(10)), Err(Shortfall::Expired));
        // The request in flight still settles.
        l.settle(usd(10), 1, P, usd(5));
        assert_eq!(l.spent().picos, 5);
        l.revoke(3);
        assert_eq!(l.try_reserve(0, P, usd(1)), Err(Shortfall::Revoked));
        assert_eq!(
            l.wants_more(0, P, false),
            None,
            "a revoked lease is not renewed"
        );
        // A grant of a newer epoch lifts the revocation.
        l.apply(grant(4, USD, 0, 0), 0);
        l.try_reserve(0, P, usd(1)).unwrap();
    }

    #[test]
    fn asks_for_more_when_low_with_one_request_outstanding() {
        let mut l = LeaseClient::default();
        assert!(l.wants_more(0, P, false).is_some(), "no lease: ask");
        l.apply(grant(1, USD, 0, 0), 0);
        l.try_reserve(0, P, usd(USD / 10)).unwrap();
        assert_eq!(l.wants_more(0, P, false), None, "0.90 left, plenty");
        l.try_reserve(0, P, usd(USD / 2)).unwrap();
        // 0.40 left: below 25% of the last increment (1.00)? no; below 2× the
        // last reservation (1.00)? yes.
        let want = l.wants_more(0, P, false).unwrap();
        assert_eq!(want.picos, 2 * USD);
        l.requested(42, 0, false);
        assert!(
            l.wants_more(100, P, true).is_some(),
            "a blocked request replaces a pending top-up"
        );
        l.requested(43, 100, true);
        assert_eq!(l.wants_more(200, P, true), None, "but only once");
        assert_eq!(l.wants_more(100, P, false), None, "one outstanding request");
        assert!(
            l.wants_more(REQUEST_TIMEOUT_MS + 100, P, false).is_some(),
            "a lost request is resent"
        );
        l.apply(grant(1, 3 * USD, 0, 0), 43);
        assert_eq!(l.wants_more(0, P, false), None);
    }

    #[test]
    fn a_recall_gives_back_what_is_not_spent_or_reserved_and_stale_grants_are_ignored() {
        let mut l = LeaseClient::default();
        let mut g = grant(1, USD, 0, 0);
        g.version = 4;
        l.apply(g, 0);
        l.try_reserve(0, P, usd(USD / 10)).unwrap();
        l.settle(usd(USD / 10), 1, P, usd(USD / 20));
        l.try_reserve(0, P, usd(USD / 5)).unwrap();
        // 0.05 spent + 0.20 in flight are kept.
        let (version, keep) = l.release_unused(P).unwrap();
        assert_eq!(version, 4);
        assert_eq!(keep.picos, USD / 20 + USD / 5);
        assert_eq!(l.available(0, P).unwrap().picos, 0);
        // A renewal of version 4 sent before the operator saw the release
        // must not bring the old amount back.
        let mut stale = g;
        stale.expires_unix_millis += 1_000;
        assert!(!l.apply(stale, 0));
        assert_eq!(l.available(0, P).unwrap().picos, 0);
        // The operator's answer (version 5) is applied.
        let mut answer = g;
        answer.version = 5;
        answer.amount_picos = USD / 20 + USD / 5;
        assert!(l.apply(answer, 0));
        // Nothing more to give back.
        assert_eq!(l.release_unused(P), None);
    }

    fn unmet(request_id: u64, remaining: i128) -> Unmet {
        Unmet {
            period_start_unix: P,
            epoch: 1,
            request_id,
            remaining: Amount {
                picos: remaining,
                tokens: u64::MAX,
            },
        }
    }

    #[test]
    fn an_unmet_need_refuses_only_what_waited_for_the_answer_and_needs_more() {
        let mut l = LeaseClient::default();
        l.apply(grant(1, USD / 10, 0, 0), 0);
        l.try_reserve(0, P, usd(USD / 10)).unwrap();
        let big = usd(USD / 20);
        let small = usd(USD / 100);
        assert_eq!(l.cannot_cover(P, big, 0), None, "no verdict yet");
        // A request waiting since id 4 asked (id 5): 0.03 is left.
        l.requested(5, 0, true);
        l.unmet(unmet(5, USD * 3 / 100));
        assert_eq!(l.wants_more(0, P, true).map(|_| ()), Some(()), "answered");
        assert_eq!(
            l.cannot_cover(P, big, 4).map(|a| a.picos),
            Some(USD * 3 / 100)
        );
        // A request that fits what is left keeps waiting (a recall may
        // make room); so does one that began waiting after the request was
        // sent: it asks again.
        assert_eq!(l.cannot_cover(P, small, 4), None);
        assert_eq!(l.cannot_cover(P, big, 5), None);
        // Another period, or a grant of a newer epoch (the limit changed):
        // the verdict no longer holds.
        assert_eq!(l.cannot_cover(P + 86_400, big, 4), None);
        // An older answer does not replace a newer one.
        l.unmet(unmet(3, USD));
        assert!(l.cannot_cover(P, big, 2).is_some());
        l.apply(grant(2, USD / 10, 0, 0), 0);
        assert_eq!(l.cannot_cover(P, big, 4), None);
        // Nor is a verdict of the old epoch taken in afterwards.
        l.unmet(unmet(9, 0));
        assert_eq!(l.cannot_cover(P, big, 4), None);
        // One of the new epoch is.
        l.unmet(Unmet {
            epoch: 2,
            ..unmet(10, USD / 100)
        });
        assert_eq!(l.cannot_cover(P, big, 4).map(|a| a.picos), Some(USD / 100));
        assert_eq!(l.cannot_cover(P, small, 4), None, "0.01 fits 0.01");
    }

    #[test]
    fn token_leases() {
        let mut l = LeaseClient::default();
        let mut g = grant(1, 0, 0, 0);
        g.limits_usd = false;
        g.limits_tokens = true;
        g.amount_tokens = 1000;
        l.apply(g, 0);
        l.try_reserve(
            0,
            P,
            Amount {
                picos: 5 * USD,
                tokens: 900,
            },
        )
        .unwrap();
        assert!(matches!(
            l.try_reserve(
                0,
                P,
                Amount {
                    picos: 0,
                    tokens: 101
                }
            ),
            Err(Shortfall::Insufficient { .. })
        ));
    }
}
