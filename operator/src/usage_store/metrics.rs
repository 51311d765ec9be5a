//! The usage store's Prometheus metrics, named `tokenwarden_usage_store_*`
//! (not under the operator's `tokenwarden_operator_` prefix: the alerts
//! and dashboards name them so, whichever process writes the store),
//! exported only when a usage store is configured.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `tokenwarden_usage_store_up` | gauge | | 1 when the last connect or write succeeded, 0 when it failed |
//! | `tokenwarden_usage_store_backlog_records` | gauge | | rows waiting for Postgres (queued or in flight) |
//! | `tokenwarden_usage_store_writes_total` | counter | result (`ok`, `error`) | write transactions |
//! | `tokenwarden_usage_store_records_total` | counter | result (`inserted`, `duplicate`, `expired`, `deferred`) | rows by outcome |
//! | `tokenwarden_usage_store_write_seconds` | histogram | | latency of a write, connect and partitions included |

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::Written;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The usage store's metrics and their registry.
#[derive(Debug)]
pub struct UsageStoreMetrics {
    registry: Registry,
    /// Exported only when a usage store is configured (an operator without
    /// one must not show `up 0`).
    enabled: std::sync::atomic::AtomicBool,
    /// 1 when the last write committed, 0 when it failed.
    pub up: Gauge,
    /// Rows waiting for Postgres.
    pub backlog: Gauge,
    writes: Family<ResultLabels, Counter>,
    records: Family<ResultLabels, Counter>,
    /// Write latency.
    pub write_seconds: Histogram,
}

impl Default for UsageStoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageStoreMetrics {
    /// Every metric, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokenwarden_usage_store");
        let m = UsageStoreMetrics {
            registry: Registry::default(),
            enabled: std::sync::atomic::AtomicBool::new(false),
            up: Gauge::default(),
            backlog: Gauge::default(),
            writes: Family::default(),
            records: Family::default(),
            write_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        };
        registry.register(
            "up",
            "1 when the last usage store write committed, 0 when it failed",
            m.up.clone(),
        );
        registry.register(
            "backlog_records",
            "Usage records waiting to be written to the usage store (queued or in flight)",
            m.backlog.clone(),
        );
        registry.register(
            "writes",
            "Usage store write transactions, by result (ok, error)",
            m.writes.clone(),
        );
        registry.register(
            "records",
            "Usage records by outcome: inserted, duplicate (already there), expired (older than the retention), deferred (backlog full: left to the sidecar to resend)",
            m.records.clone(),
        );
        registry.register(
            "write_seconds",
            "Latency of a usage store write",
            m.write_seconds.clone(),
        );
        UsageStoreMetrics { registry, ..m }
    }

    /// The registry (encoded beside the operator's), once enabled.
    pub fn registry(&self) -> Option<&Registry> {
        self.enabled
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(&self.registry)
    }

    /// Export these metrics (a usage store is configured).
    pub fn enable(&self) {
        self.enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A committed write.
    pub fn written(&self, w: Written) {
        self.writes
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        self.up.set(1);
        for (result, n) in [
            ("inserted", w.inserted),
            ("duplicate", w.duplicate),
            ("expired", w.expired),
        ] {
            self.records
                .get_or_create(&ResultLabels { result })
                .inc_by(n);
        }
    }

    /// A failed write.
    pub fn failed(&self) {
        self.writes
            .get_or_create(&ResultLabels { result: "error" })
            .inc();
        self.up.set(0);
    }

    /// Rows not queued because the backlog was full.
    pub fn deferred(&self, n: u64) {
        self.records
            .get_or_create(&ResultLabels { result: "deferred" })
            .inc_by(n);
    }
}
