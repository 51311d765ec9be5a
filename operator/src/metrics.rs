//! The operator's Prometheus metrics.

use prometheus_client::{
    encoding::{
        EncodeLabelSet,
        text::{encode_eof, encode_registry},
    },
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokenwarden_core::{money::Usd, usage::UsageRecord, workload::ObjectRef};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectedLabels {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Connected sidecar streams.
    pub sidecars: Gauge,
    /// TokenBudgets with a live ledger.
    pub budgets: Gauge,
    /// Whether this replica leads (1) or not (0).
    pub leader: Gauge,
    /// Config snapshots sent.
    pub snapshots_sent: Counter,
    /// Snapshots ACKed.
    pub acks: Counter,
    /// Snapshots NACKed.
    pub nacks: Counter,
    /// Usage records counted (first time seen).
    pub records_ingested: Counter,
    /// Usage records skipped as replays.
    pub records_duplicate: Counter,
    /// Usage records for a period that had ended.
    pub records_late: Counter,
    /// Usage records that could not be read.
    pub records_invalid: Counter,
    /// Lease requests answered.
    pub lease_requests: Counter,
    /// Recalls sent (unused leases asked back for another sidecar).
    pub lease_recalls: Counter,
    /// Usage batches received but not yet durable (acks outstanding).
    pub ledger_lag: Gauge,
    /// Status write latency.
    pub status_write_seconds: Histogram,
    /// Failed status writes (retried).
    pub status_write_errors: Counter,
    /// Refused streams by reason.
    refused: Family<ReasonLabels, Counter>,
    leases: Family<BudgetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    cost: Family<ModelLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// `tokenwarden_budget_*`: per-budget figures named like the sidecars'.
    budget: BudgetMetrics,
    /// The usage store's (`tokenwarden_usage_store_*`).
    pub usage_store: crate::usage_store::UsageStoreMetrics,
}

/// The `tokenwarden_budget_*` metrics of the operator: per-budget figures
/// named like the sidecars' (`budget` label `namespace/name`).
#[derive(Debug)]
struct BudgetMetrics {
    registry: Registry,
    projected: Family<ProjectedLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl BudgetMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("tokenwarden_budget");
        let projected = Family::default();
        registry.register(
            "cluster_projected_spend_usd",
            "USD a TokenBudget is projected to have spent at its period's end (the \
             status' projectedSpendUsd; absent while its forecast warms up)",
            projected.clone(),
        );
        BudgetMetrics {
            registry,
            projected,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokenwarden_operator");
        let m = Metrics {
            registry: Registry::default(),
            sidecars: Gauge::default(),
            budgets: Gauge::default(),
            leader: Gauge::default(),
            snapshots_sent: Counter::default(),
            acks: Counter::default(),
            nacks: Counter::default(),
            records_ingested: Counter::default(),
            records_duplicate: Counter::default(),
            records_late: Counter::default(),
            records_invalid: Counter::default(),
            lease_requests: Counter::default(),
            lease_recalls: Counter::default(),
            ledger_lag: Gauge::default(),
            status_write_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            status_write_errors: Counter::default(),
            refused: Family::default(),
            leases: Family::default(),
            cost: Family::default(),
            budget: BudgetMetrics::new(),
            usage_store: crate::usage_store::UsageStoreMetrics::new(),
        };
        registry.register(
            "sidecars_connected",
            "Connected sidecar streams",
            m.sidecars.clone(),
        );
        registry.register(
            "budgets",
            "TokenBudgets with a live ledger",
            m.budgets.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica leads (grants leases, writes ledgers)",
            m.leader.clone(),
        );
        registry.register(
            "config_snapshots_sent",
            "Config snapshots sent to sidecars",
            m.snapshots_sent.clone(),
        );
        registry.register(
            "config_acks",
            "Config snapshots accepted by sidecars",
            m.acks.clone(),
        );
        registry.register(
            "config_nacks",
            "Config snapshots rejected by sidecars",
            m.nacks.clone(),
        );
        registry.register(
            "usage_records_ingested",
            "Usage records counted in the ledger",
            m.records_ingested.clone(),
        );
        registry.register(
            "usage_records_deduplicated",
            "Usage records skipped as replays of counted ones",
            m.records_duplicate.clone(),
        );
        registry.register(
            "usage_records_late",
            "Usage records for a budget period that had already ended",
            m.records_late.clone(),
        );
        registry.register(
            "usage_records_invalid",
            "Usage records that could not be read",
            m.records_invalid.clone(),
        );
        registry.register(
            "lease_requests",
            "Lease requests answered",
            m.lease_requests.clone(),
        );
        registry.register(
            "lease_recalls",
            "Unused leases asked back because another sidecar needed the budget",
            m.lease_recalls.clone(),
        );
        registry.register(
            "ledger_lag_batches",
            "Usage batches received whose effect is not yet durable (not yet acked)",
            m.ledger_lag.clone(),
        );
        registry.register(
            "status_write_seconds",
            "Latency of TokenBudget status writes",
            m.status_write_seconds.clone(),
        );
        registry.register(
            "status_write_errors",
            "Failed status writes (retried)",
            m.status_write_errors.clone(),
        );
        registry.register(
            "streams_refused",
            "Sidecar streams refused, by reason",
            m.refused.clone(),
        );
        registry.register(
            "leases_outstanding_usd",
            "Granted but unspent lease amount per budget, in USD",
            m.leases.clone(),
        );
        registry.register(
            "cost_usd",
            "Spend ingested, by model that served, in USD",
            m.cost.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Set (or, while warming up, drop) a budget's projected spend.
    pub fn projected_spend(&self, id: &ObjectRef, spend: Option<Usd>) {
        let labels = ProjectedLabels {
            budget: id.to_string(),
        };
        match spend {
            Some(s) => {
                self.budget.projected.get_or_create(&labels).set(usd_f64(s));
            }
            None => {
                self.budget.projected.remove(&labels);
            }
        }
    }

    /// Count a refused stream.
    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Set a budget's outstanding leases.
    pub fn lease_outstanding(&self, id: &ObjectRef, amount: Usd) {
        self.leases
            .get_or_create(&BudgetLabels {
                namespace: id.namespace.clone(),
                name: id.name.clone(),
            })
            .set(usd_f64(amount));
    }

    /// Count an ingested record's cost.
    pub fn record(&self, rec: &UsageRecord) {
        if let Some(c) = rec.cost {
            self.cost
                .get_or_create(&ModelLabels {
                    model: rec.served_model.clone(),
                })
                .inc_by(usd_f64(c));
        }
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let ok = encode_registry(&mut s, &self.registry).is_ok()
            && encode_registry(&mut s, &self.budget.registry).is_ok()
            && self
                .usage_store
                .registry()
                .is_none_or(|r| encode_registry(&mut s, r).is_ok())
            && encode_eof(&mut s).is_ok();
        if !ok {
            s.clear();
        }
        s
    }
}

/// For metrics only (ledgers stay integer).
#[allow(clippy::cast_precision_loss, reason = "display value for Prometheus")]
fn usd_f64(u: Usd) -> f64 {
    u.picos() as f64 / 1e12
}
