//! The edge between the engine and the wire: sidecar messages become
//! [`Inbound`] on the way in, and what the engine says ([`Outbound`])
//! becomes an `OperatorMessage` only when it is sent. The other rooms work
//! on core types.

use jiff::Timestamp;
use tokenwarden_core::{
    book::{Book, LeaseAsk, LeaseView, Unmet},
    money::Usd,
    usage::UsageRecord,
    workload::ObjectRef,
};
use tokenwarden_proto::{
    self as pb, InvalidRecord, OperatorMessage, operator_message::Msg as Out,
    sidecar_message::Msg as In,
};

/// What a sidecar says in its Hello, as far as the engine cares.
#[derive(Debug, Clone)]
pub(super) struct Hello {
    pub(super) sidecar_id: String,
    pub(super) sidecar_version: String,
    pub(super) config_version: String,
}

impl From<pb::Hello> for Hello {
    fn from(h: pb::Hello) -> Self {
        Self {
            sidecar_id: h.sidecar_id,
            sidecar_version: h.sidecar_version,
            config_version: h.config_version,
        }
    }
}

/// One usage record of a batch: the sidecar id it claims, and the record
/// (or why it cannot be read).
#[derive(Debug)]
pub(super) struct IncomingRecord {
    pub(super) claimed_sidecar: String,
    pub(super) record: Result<UsageRecord, InvalidRecord>,
}

/// A sidecar's message, decoded.
#[derive(Debug)]
pub(super) enum Inbound {
    /// A second Hello on the stream (ignored).
    Hello,
    /// The sidecar took (or refused) a config snapshot.
    ConfigAck {
        version: String,
        accepted: bool,
        reason: String,
    },
    /// A batch of usage records.
    Usage(Vec<IncomingRecord>),
    /// A lease request (`key`: a per-key key's lease, empty: the
    /// budget's own).
    LeaseRequest {
        budget: ObjectRef,
        key: String,
        ask: LeaseAsk,
        request_id: u64,
    },
    /// A sidecar gives part of its lease back.
    LeaseRelease(Release),
}

/// A sidecar gives back what it holds of a lease beyond `keep`.
#[derive(Debug)]
pub(super) struct Release {
    pub(super) budget: ObjectRef,
    /// The per-key key of the lease (empty: the budget's own).
    pub(super) key: String,
    /// The period the lease is of (a release for another is ignored).
    pub(super) period_start_unix: i64,
    /// The lease version the sidecar saw.
    pub(super) version: u64,
    pub(super) keep: Usd,
    pub(super) keep_tokens: u64,
}

fn usd(picos: i64) -> Usd {
    Usd::from_picos(i128::from(picos.max(0)))
}

impl From<In> for Inbound {
    fn from(msg: In) -> Self {
        match msg {
            In::Hello(_) => Inbound::Hello,
            In::ConfigAck(ack) => Inbound::ConfigAck {
                version: ack.version,
                accepted: ack.accepted,
                reason: ack.reason,
            },
            In::Usage(batch) => Inbound::Usage(
                batch
                    .records
                    .iter()
                    .map(|wire| IncomingRecord {
                        claimed_sidecar: wire.sidecar_id.clone(),
                        record: pb::record_from_wire(wire),
                    })
                    .collect(),
            ),
            In::LeaseRequest(req) => Inbound::LeaseRequest {
                budget: ObjectRef::new(&req.budget_namespace, &req.budget_name),
                key: req.key,
                ask: LeaseAsk {
                    want: usd(req.want_picos),
                    want_tokens: req.want_tokens,
                    need: usd(req.need_picos),
                    need_tokens: req.need_tokens,
                },
                request_id: req.request_id,
            },
            In::LeaseRelease(rel) => Inbound::LeaseRelease(Release {
                budget: ObjectRef::new(&rel.budget_namespace, &rel.budget_name),
                key: rel.key,
                period_start_unix: rel.period_start_unix,
                version: rel.version,
                keep: usd(rel.keep_picos),
                keep_tokens: rel.keep_tokens,
            }),
        }
    }
}

/// A budget's cluster state as a sidecar is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BudgetSnapshot {
    budget: ObjectRef,
    period_start: Timestamp,
    period_end: Timestamp,
    spent: Usd,
    spent_tokens: u64,
    percent_spent: u64,
    state: &'static str,
    limit_usd: Option<Usd>,
    limit_tokens: Option<u64>,
    /// Per-key spend (`spec.perKey`): key, USD, tokens.
    keys: Vec<(String, Usd, u64)>,
    /// The forecast reaches a limit before the period ends.
    projected_overrun: bool,
}

impl BudgetSnapshot {
    /// What `book` shows now, with the last forecast's verdict.
    pub(super) fn of(budget: &ObjectRef, book: &Book, projected_overrun: bool) -> Self {
        let w = book.window();
        let cfg = book.config();
        Self {
            budget: budget.clone(),
            period_start: w.start,
            period_end: w.end,
            spent: book.totals().spent,
            spent_tokens: book.totals().tokens(),
            percent_spent: book.percent_spent(),
            state: book.budget_state().as_str(),
            limit_usd: cfg.limit_usd,
            limit_tokens: cfg.limit_tokens,
            keys: book
                .totals()
                .keys
                .iter()
                .map(|(k, t)| (k.clone(), t.spent, t.tokens()))
                .collect(),
            projected_overrun,
        }
    }
}

/// A lease as granted to one sidecar (sent once the write that records it
/// is durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Grant {
    pub(super) budget: ObjectRef,
    /// The per-key key of the lease (empty: the budget's own).
    pub(super) key: String,
    pub(super) view: LeaseView,
    /// The request it answers (0: none, a renewal or a state change).
    pub(super) request_id: u64,
}

/// What the engine tells a sidecar.
#[derive(Debug, Clone)]
pub(super) enum Outbound {
    /// A config snapshot: its version and the compiled config as JSON.
    Config { version: String, json: Vec<u8> },
    /// A budget's cluster state.
    BudgetStatus(BudgetSnapshot),
    /// A lease grant.
    Grant(Grant),
    /// A need the budget cannot cover this period.
    Unmet {
        budget: ObjectRef,
        key: String,
        unmet: Unmet,
        request_id: u64,
    },
    /// Drop the lease of a budget.
    Revoke {
        budget: ObjectRef,
        epoch: u64,
        reason: String,
    },
    /// Give unused lease back.
    Recall {
        budget: ObjectRef,
        key: String,
        period_start: Timestamp,
        version: u64,
        reason: String,
    },
    /// Usage up to this sequence number is durable.
    Ack { sidecar_id: String, up_to_seq: u64 },
}

fn picos(u: Usd) -> i64 {
    i64::try_from(u.picos()).unwrap_or(i64::MAX)
}

impl From<Outbound> for OperatorMessage {
    fn from(out: Outbound) -> Self {
        let msg = match out {
            Outbound::Config { version, json } => Out::Config(pb::ConfigSnapshot {
                version,
                protocol_version: pb::PROTOCOL_VERSION,
                config_schema: pb::CONFIG_SCHEMA,
                config_json: json,
            }),
            Outbound::BudgetStatus(s) => Out::BudgetStatus(budget_status(s)),
            Outbound::Grant(g) => Out::LeaseGrant(grant(g)),
            Outbound::Unmet {
                budget,
                key,
                unmet,
                request_id,
            } => Out::LeaseUnmet(pb::LeaseUnmet {
                key,
                budget_namespace: budget.namespace,
                budget_name: budget.name,
                period_start_unix: unmet.period_start.as_second(),
                epoch: unmet.epoch,
                request_id,
                remaining_picos: unmet.remaining.map_or(0, picos),
                remaining_tokens: unmet.remaining_tokens.unwrap_or(0),
                limits_usd: unmet.remaining.is_some(),
                limits_tokens: unmet.remaining_tokens.is_some(),
            }),
            Outbound::Revoke {
                budget,
                epoch,
                reason,
            } => Out::LeaseRevoke(pb::LeaseRevoke {
                budget_namespace: budget.namespace,
                budget_name: budget.name,
                epoch,
                reason,
            }),
            Outbound::Recall {
                budget,
                key,
                period_start,
                version,
                reason,
            } => Out::LeaseRecall(pb::LeaseRecall {
                key,
                budget_namespace: budget.namespace,
                budget_name: budget.name,
                period_start_unix: period_start.as_second(),
                version,
                reason,
            }),
            Outbound::Ack {
                sidecar_id,
                up_to_seq,
            } => Out::UsageAck(pb::UsageAck {
                sidecar_id,
                up_to_seq,
            }),
        };
        OperatorMessage { msg: Some(msg) }
    }
}

fn budget_status(s: BudgetSnapshot) -> pb::BudgetStatus {
    pb::BudgetStatus {
        namespace: s.budget.namespace,
        name: s.budget.name,
        period_start_unix: s.period_start.as_second(),
        period_end_unix: s.period_end.as_second(),
        spent_picos: picos(s.spent),
        spent_tokens: s.spent_tokens,
        percent_spent: u32::try_from(s.percent_spent).unwrap_or(u32::MAX),
        state: s.state.into(),
        limit_picos: s.limit_usd.map_or(0, picos),
        has_limit_usd: s.limit_usd.is_some(),
        limit_tokens: s.limit_tokens.unwrap_or(0),
        has_limit_tokens: s.limit_tokens.is_some(),
        keys: s
            .keys
            .into_iter()
            .map(|(key, usd, tokens)| pb::KeySpend {
                key,
                spent_picos: picos(usd),
                spent_tokens: tokens,
            })
            .collect(),
        projected_overrun: s.projected_overrun,
    }
}

fn grant(g: Grant) -> pb::LeaseGrant {
    let v = g.view;
    pb::LeaseGrant {
        budget_namespace: g.budget.namespace,
        budget_name: g.budget.name,
        epoch: v.epoch,
        amount_picos: picos(v.granted),
        amount_tokens: v.granted_tokens,
        expires_unix_millis: v.expires_ms,
        period_start_unix: v.period_start.as_second(),
        request_id: g.request_id,
        charged_picos: picos(v.charged),
        charged_tokens: v.charged_tokens,
        charged_seq: v.charged_seq,
        limits_usd: v.limits_usd,
        limits_tokens: v.limits_tokens,
        version: v.version,
        key: g.key,
    }
}
