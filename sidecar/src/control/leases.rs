//! Budget leases in connected mode.
//!
//! After the local checks (loop guard, per-request cap, thresholds) a
//! request reserves its worst case from the lease of every enforcing budget
//! (all or nothing). When one does not fit, the sidecar asks the operator
//! for more (one outstanding request per budget) and waits for a grant
//! until `--lease-wait-ms` after the request began reserving (time it
//! already spent waiting for local reservations counts); then it refuses
//! with the provider-shaped 429. When the operator answers that the need
//! cannot be covered at all this period (`LeaseUnmet`: the budget's cap
//! minus its spend is below it), a request that was waiting when the
//! request was sent and needs more than what is left is refused at once
//! (reason `limit`), without waiting out the lease wait. When the operator
//! is unreachable and a lease is spent, expired or missing, the budget's
//! `failMode` decides: `Closed` refuses, `Open` allows and records (the
//! record is still spooled and reported).
//!
//! A budget split per key (`spec.perKey`) has one lease per key besides
//! its own ([`LeaseId`]): a request of key `k` reserves from both, so a
//! key's limit is a hard cap across pods like the budget's.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use jiff::Timestamp;
use tokenwarden_core::{
    budget::{Held, RefusalReason},
    lease::{Amount, Grant, LeaseClient, Shortfall, Unmet},
    money::Usd,
    workload::{FailMode, ObjectRef},
};
use tokenwarden_proto::{
    BudgetStatus, LeaseGrant, LeaseRecall, LeaseRelease, LeaseRequest, LeaseUnmet, SidecarMessage,
    sidecar_message::Msg,
};
use tokio::sync::Notify;

use super::Control;
use crate::{error::ProxyError, metrics::Metrics, sync::lock};

/// A lease: of a budget (`key` empty) or of one of its per-key keys.
pub type LeaseId = (ObjectRef, String);

/// Leases and cluster-wide budget status, by budget.
#[derive(Debug, Default)]
pub struct Leases {
    inner: Mutex<BTreeMap<LeaseId, LeaseClient>>,
    status: Mutex<BTreeMap<ObjectRef, BudgetStatus>>,
    /// Woken on every grant, revocation and connection change.
    pub changed: Notify,
    next_id: AtomicU64,
}

/// One lease a request must reserve from.
#[derive(Debug, Clone)]
pub struct Want {
    /// The budget.
    pub budget: ObjectRef,
    /// The per-key key whose lease this is (empty: the budget's own).
    pub key: String,
    /// What the local reservation held (worst case).
    pub held: Held,
    /// Start of the budget's current period (unix seconds).
    pub period_start_unix: i64,
    /// What to do without a control plane.
    pub fail_mode: FailMode,
}

// === impl Want ===

impl Want {
    /// The lease.
    fn id(&self) -> LeaseId {
        (self.budget.clone(), self.key.clone())
    }

    /// The budget, and the key if any, as refusals name them.
    fn name(&self) -> String {
        if self.key.is_empty() {
            self.budget.to_string()
        } else {
            format!("{} key {:?}", self.budget, self.key)
        }
    }
}

fn amount(h: Held) -> Amount {
    Amount {
        picos: h.cost.picos(),
        tokens: h.tokens,
    }
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

fn money(picos: i128) -> String {
    Usd::from_picos(picos).to_string()
}

// === impl Leases ===

impl Leases {
    /// Apply a grant from the operator.
    pub fn grant(&self, g: &LeaseGrant, metrics: &Metrics) {
        let id = (
            ObjectRef::new(g.budget_namespace.clone(), g.budget_name.clone()),
            g.key.clone(),
        );
        let grant = Grant {
            epoch: g.epoch,
            amount_picos: i128::from(g.amount_picos),
            amount_tokens: g.amount_tokens,
            expires_unix_millis: g.expires_unix_millis,
            period_start_unix: g.period_start_unix,
            charged_picos: i128::from(g.charged_picos),
            charged_tokens: g.charged_tokens,
            charged_seq: g.charged_seq,
            limits_usd: g.limits_usd,
            limits_tokens: g.limits_tokens,
            version: g.version,
        };
        {
            let mut inner = lock(&self.inner);
            let l = inner.entry(id.clone()).or_default();
            l.apply(grant, g.request_id);
            if let Ok(a) = l.available(now_ms(), g.period_start_unix)
                && id.1.is_empty()
            {
                metrics.lease_available(&id.0.to_string(), a.picos);
            }
        }
        self.changed.notify_waiters();
    }

    /// The operator says a lease request's need cannot be covered this
    /// period: wake the waiting requests so those it applies to are
    /// refused at once.
    pub fn unmet(&self, u: &LeaseUnmet) {
        let id = (
            ObjectRef::new(u.budget_namespace.clone(), u.budget_name.clone()),
            u.key.clone(),
        );
        let verdict = Unmet {
            period_start_unix: u.period_start_unix,
            epoch: u.epoch,
            request_id: u.request_id,
            remaining: Amount {
                picos: if u.limits_usd {
                    i128::from(u.remaining_picos.max(0))
                } else {
                    i128::MAX
                },
                tokens: if u.limits_tokens {
                    u.remaining_tokens
                } else {
                    u64::MAX
                },
            },
        };
        tracing::debug!(
            budget = %id.0,
            key = %id.1,
            request_id = u.request_id,
            remaining_picos = u.remaining_picos,
            remaining_tokens = u.remaining_tokens,
            "the operator cannot cover a lease request's need this period"
        );
        lock(&self.inner).entry(id).or_default().unmet(verdict);
        self.changed.notify_waiters();
    }

    /// The lease of `budget` up to `epoch` is void, and the leases of its
    /// keys are dropped (a new grant starts them over).
    pub fn revoke(&self, budget: ObjectRef, epoch: u64) {
        let mut inner = lock(&self.inner);
        inner.retain(|(b, key), _| *b != budget || key.is_empty());
        inner
            .entry((budget, String::new()))
            .or_default()
            .revoke(epoch);
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Keep the cluster-wide status of a budget.
    pub fn set_status(&self, s: BudgetStatus) {
        let id = ObjectRef::new(s.namespace.clone(), s.name.clone());
        lock(&self.status).insert(id, s);
        self.changed.notify_waiters();
    }

    /// The cluster-wide status of a budget, if the operator sent one.
    pub fn status(&self, budget: &ObjectRef) -> Option<BudgetStatus> {
        lock(&self.status).get(budget).cloned()
    }

    /// The lease of a budget as JSON for `/ledger`.
    pub fn describe(&self, budget: &ObjectRef, period_start_unix: i64) -> serde_json::Value {
        let inner = lock(&self.inner);
        let Some(l) = inner.get(&(budget.clone(), String::new())) else {
            return serde_json::Value::Null;
        };
        let spent = l.spent();
        let available = l.available(now_ms(), period_start_unix);
        serde_json::json!({
            "granted_usd": l.grant().map(|g| money(g.amount_picos)),
            "granted_tokens": l.grant().map(|g| g.amount_tokens),
            "epoch": l.grant().map(|g| g.epoch),
            "expires_unix_millis": l.grant().map(|g| g.expires_unix_millis),
            "charged_seq": l.grant().map(|g| g.charged_seq),
            "spent_usd": money(spent.picos),
            "reserved_usd": money(l.reserved().picos),
            "available_usd": available.ok().map(|a| money(a.picos)),
            "unusable": available.err().map(|s| s.describe()),
        })
    }

    /// Replace a lease hold by the settled record `seq`.
    pub fn settle(&self, id: &LeaseId, held: Held, seq: u64, period: i64, actual: Held) {
        let mut inner = lock(&self.inner);
        inner
            .entry(id.clone())
            .or_default()
            .settle(amount(held), seq, period, amount(actual));
    }

    /// Give back a lease hold that spent nothing.
    pub fn release(&self, id: &LeaseId, held: Held) {
        if let Some(l) = lock(&self.inner).get_mut(id) {
            l.release(amount(held));
        }
        self.changed.notify_waiters();
    }

    /// Count an unacked record from the spool (after a restart).
    pub fn record(&self, id: &LeaseId, seq: u64, period: i64, actual: Held) {
        lock(&self.inner)
            .entry(id.clone())
            .or_default()
            .record(seq, period, amount(actual));
    }

    pub(crate) fn forget_pending(&self) {
        for l in lock(&self.inner).values_mut() {
            l.forget_pending();
        }
    }

    /// The operator recalled unused lease (another sidecar needs the
    /// budget): lower the limit to what is spent or reserved, then tell it.
    pub fn recall(&self, control: &Control, r: &LeaseRecall) {
        let id = (
            ObjectRef::new(r.budget_namespace.clone(), r.budget_name.clone()),
            r.key.clone(),
        );
        let released = lock(&self.inner)
            .get_mut(&id)
            .and_then(|l| l.release_unused(r.period_start_unix));
        let Some((version, keep)) = released else {
            return;
        };
        tracing::debug!(budget = %id.0, key = %id.1, keep_usd = %money(keep.picos), "unused lease released");
        control.send(SidecarMessage {
            msg: Some(Msg::LeaseRelease(LeaseRelease {
                budget_namespace: id.0.namespace,
                budget_name: id.0.name,
                key: id.1,
                period_start_unix: r.period_start_unix,
                version,
                keep_picos: i64::try_from(keep.picos).unwrap_or(i64::MAX),
                keep_tokens: keep.tokens,
            })),
        });
    }

    /// Ask for more of every budget in `wants` that runs low. `blocked`
    /// lists the budgets a request is waiting on: their request carries
    /// the request's worst case as `need`.
    fn top_up(&self, control: &Control, wants: &[Want], blocked: &[usize]) {
        if !control.connected() {
            return;
        }
        let now = now_ms();
        let mut inner = lock(&self.inner);
        for (i, w) in wants.iter().enumerate() {
            let l = inner.entry(w.id()).or_default();
            let need = blocked.contains(&i).then(|| amount(w.held));
            if let Some(more) = l.wants_more(now, w.period_start_unix, need.is_some()) {
                // Ids increase: a `LeaseUnmet` for an id above the one a
                // waiting request noted was computed after it began.
                let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
                l.requested(id, now, need.is_some());
                let need = need.unwrap_or_default();
                control.send(SidecarMessage {
                    msg: Some(Msg::LeaseRequest(LeaseRequest {
                        budget_namespace: w.budget.namespace.clone(),
                        budget_name: w.budget.name.clone(),
                        want_picos: i64::try_from(more.picos).unwrap_or(i64::MAX),
                        want_tokens: more.tokens,
                        request_id: id,
                        period_start_unix: w.period_start_unix,
                        need_picos: i64::try_from(need.picos).unwrap_or(i64::MAX),
                        need_tokens: need.tokens,
                        key: w.key.clone(),
                    })),
                });
            }
        }
    }
}

/// Outcome of the lease step of one request.
#[derive(Debug, Default)]
pub struct Reserved {
    /// Leases (or fail-open holds) that hold the request.
    pub leased: Vec<LeaseId>,
}

/// Reserve from the lease of every budget in `wants` (all or nothing),
/// waiting up to the control's lease wait for grants. While a request
/// waits, its worst case counts in what the sidecar asks for, so a burst of
/// waiting requests is served by one grant.
pub async fn reserve(
    control: &Control,
    metrics: &Metrics,
    wants: &[Want],
    since: Instant,
) -> Result<Reserved, ProxyError> {
    if wants.is_empty() {
        return Ok(Reserved::default());
    }
    // Lease requests sent from now on are answered about this request.
    let asked_after = control.leases.next_id.load(Ordering::SeqCst);
    let mut waiting = Vec::new();
    let out = reserve_waiting(control, metrics, wants, since, asked_after, &mut waiting).await;
    if !waiting.is_empty() {
        let mut inner = lock(&control.leases.inner);
        for i in waiting {
            let w: &Want = &wants[i];
            if let Some(l) = inner.get_mut(&w.id()) {
                l.wait_end(amount(w.held));
            }
        }
    }
    out
}

async fn reserve_waiting(
    control: &Control,
    metrics: &Metrics,
    wants: &[Want],
    since: Instant,
    asked_after: u64,
    waiting: &mut Vec<usize>,
) -> Result<Reserved, ProxyError> {
    let leases = &control.leases;
    let deadline = since + control.lease_wait;
    let mut waited = false;
    loop {
        let notified = leases.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let short = match try_reserve(control, metrics, wants, asked_after)? {
            Tried::Reserved(r) => return Ok(r),
            Tried::Short(short) => short,
        };
        let blocked: Vec<usize> = short.iter().map(|(i, _)| *i).collect();
        begin_waiting(leases, wants, &blocked, waiting);
        leases.top_up(control, wants, &blocked);
        let now_i = Instant::now();
        if now_i >= deadline {
            return Err(lease_refusal(control, metrics, wants, short[0]));
        }
        if !waited {
            waited = true;
            for (i, _) in &short {
                metrics.lease_wait(&wants[*i].budget.to_string());
            }
        }
        let left = deadline.saturating_duration_since(now_i);
        let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), notified).await;
    }
}

/// What one try to reserve from every lease came to.
enum Tried {
    /// Every lease holds the request (or failMode Open allows it).
    Reserved(Reserved),
    /// These wants (by index) do not fit; nothing is held.
    Short(Vec<(usize, Shortfall)>),
}

/// Reserve from every lease at once (all or nothing). Disconnected, a
/// shortfall is allowed when every short budget fails open, and refused
/// when one fails closed; a shortfall the operator said no lease can
/// cover this period is refused at once.
fn try_reserve(
    control: &Control,
    metrics: &Metrics,
    wants: &[Want],
    asked_after: u64,
) -> Result<Tried, ProxyError> {
    let leases = &control.leases;
    let connected = control.connected();
    let now = now_ms();
    let mut short: Vec<(usize, Shortfall)> = Vec::new();
    let mut inner = lock(&leases.inner);
    for (i, w) in wants.iter().enumerate() {
        let l = inner.entry(w.id()).or_default();
        if let Err(s) = l.try_reserve(now, w.period_start_unix, amount(w.held)) {
            short.push((i, s));
        }
    }
    let fail_open = !connected
        && short
            .iter()
            .all(|(i, _)| wants[*i].fail_mode == FailMode::Open);
    if short.is_empty() || fail_open {
        hold_failing_open(&mut inner, metrics, wants, &short);
        drop(inner);
        leases.top_up(control, wants, &[]);
        return Ok(Tried::Reserved(Reserved {
            leased: wants.iter().map(Want::id).collect(),
        }));
    }
    // Something does not fit: give back what did.
    for (i, w) in wants.iter().enumerate() {
        if !short.iter().any(|(j, _)| *j == i)
            && let Some(l) = inner.get_mut(&w.id())
        {
            l.release(amount(w.held));
        }
    }
    if !connected
        && let Some((i, s)) = short
            .iter()
            .find(|(i, _)| wants[*i].fail_mode == FailMode::Closed)
    {
        let w = &wants[*i];
        let spent = inner
            .get(&w.id())
            .map(LeaseClient::spent)
            .unwrap_or_default();
        metrics.lease_refusal(&w.budget.to_string(), RefusalReason::FailClosed.as_str());
        return Err(fail_closed_refusal(w, s, spent));
    }
    // The operator said no lease can cover it this period: refuse
    // now rather than wait for a grant that cannot come.
    for (i, _) in &short {
        let w = &wants[*i];
        let left = inner
            .get(&w.id())
            .and_then(|l| l.cannot_cover(w.period_start_unix, amount(w.held), asked_after));
        if let Some(left) = left {
            drop(inner);
            metrics.budget_block(&w.budget.to_string(), unmet_reason(w).as_str(), false);
            return Err(unmet_refusal(leases, w, left));
        }
    }
    Ok(Tried::Short(short))
}

/// The control plane is unreachable and every short budget fails open:
/// hold the request in their leases anyway (counted and logged).
fn hold_failing_open(
    inner: &mut BTreeMap<LeaseId, LeaseClient>,
    metrics: &Metrics,
    wants: &[Want],
    short: &[(usize, Shortfall)],
) {
    for (i, s) in short {
        let w = &wants[*i];
        if let Some(l) = inner.get_mut(&w.id()) {
            l.hold(amount(w.held));
        }
        metrics.lease_fail_open(&w.budget.to_string());
        tracing::warn!(
            budget = %w.name(),
            reason = %s.describe(),
            "control plane unreachable and no usable lease: failMode Open allows the request"
        );
    }
}

/// Count the `blocked` wants the request did not wait for yet as waiting
/// (their worst case goes into what the sidecar asks for).
fn begin_waiting(leases: &Leases, wants: &[Want], blocked: &[usize], waiting: &mut Vec<usize>) {
    let mut inner = lock(&leases.inner);
    for i in blocked {
        if !waiting.contains(i) {
            waiting.push(*i);
            if let Some(l) = inner.get_mut(&wants[*i].id()) {
                l.wait_begin(amount(wants[*i].held));
            }
        }
    }
}

/// The 429 of failMode Closed: the control plane is unreachable and the
/// lease cannot cover the request.
fn fail_closed_refusal(w: &Want, s: &Shortfall, spent: Amount) -> ProxyError {
    ProxyError::BudgetBlocked {
        reason: RefusalReason::FailClosed,
        message: format!(
            "TokenBudget {}: the tokenwarden control plane is unreachable and this \
             sidecar's lease cannot cover the request ({}; spent ${} this period, \
             worst-case cost ${}); failMode Closed refuses until the control plane \
             is back",
            w.name(),
            s.describe(),
            money(spent.picos),
            w.held.cost
        ),
        retry_after_secs: None,
    }
}

/// The 429 of a request whose lease wait ran out: the first short
/// budget, its lease and what it spent (counted).
fn lease_refusal(
    control: &Control,
    metrics: &Metrics,
    wants: &[Want],
    (i, s): (usize, Shortfall),
) -> ProxyError {
    let w = &wants[i];
    let inner = lock(&control.leases.inner);
    let l = inner.get(&w.id());
    let spent = l.map(LeaseClient::spent).unwrap_or_default();
    let granted = l.and_then(|l| l.grant().map(|g| g.amount_picos));
    drop(inner);
    metrics.lease_refusal(&w.budget.to_string(), RefusalReason::Lease.as_str());
    ProxyError::BudgetBlocked {
        reason: RefusalReason::Lease,
        message: format!(
            "TokenBudget {}: this request's worst-case cost ${} does not fit this \
             sidecar's lease ({}; spent ${} of a ${} lease this period) and the \
             operator granted no more within {} ms",
            w.name(),
            w.held.cost,
            s.describe(),
            money(spent.picos),
            money(granted.unwrap_or(0)),
            control.lease_wait.as_millis()
        ),
        retry_after_secs: Some(1),
    }
}

/// What a refusal for a need no lease can cover is: the key's limit for a
/// key's lease, else the budget's.
fn unmet_reason(w: &Want) -> RefusalReason {
    if w.key.is_empty() {
        RefusalReason::Limit
    } else {
        RefusalReason::KeyLimit
    }
}

/// The 429 for a request the operator said no lease can cover this period:
/// names the budget, what is left of it cluster-wide and the request's
/// worst case (like a standalone budget's `limit` refusal).
fn unmet_refusal(leases: &Leases, w: &Want, left: Amount) -> ProxyError {
    let what = if amount(w.held).picos > left.picos {
        format!(
            "this request's worst-case cost ${} exceeds the ${} left of it cluster-wide this \
             period",
            w.held.cost,
            money(left.picos)
        )
    } else {
        format!(
            "this request may use up to {} tokens, more than the {} tokens left of it \
             cluster-wide this period",
            w.held.tokens, left.tokens
        )
    };
    let now = Timestamp::now();
    let reset = leases
        .status(&w.budget)
        .filter(|s| s.period_start_unix == w.period_start_unix)
        .and_then(|s| Timestamp::from_second(s.period_end_unix).ok())
        .filter(|end| *end > now);
    ProxyError::BudgetBlocked {
        reason: unmet_reason(w),
        message: format!(
            "TokenBudget {} cannot cover this request: {what}, so no lease can cover it{}",
            w.name(),
            reset.map_or_else(|| ".".to_string(), |end| format!(". It resets at {end}.")),
        ),
        retry_after_secs: reset
            .map(|end| u64::try_from(end.duration_since(now).as_secs()).unwrap_or(0)),
    }
}
