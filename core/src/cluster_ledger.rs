//! The cluster ledger: every usage record from every sidecar, by
//! namespace, workload and model (all-time totals), counted exactly once
//! the way a [`Book`] counts: a per-sidecar watermark of the highest seq
//! counted, persisted with the totals it guards ([`ClusterLedgerState`]).
//! Pure: the operator persists the state and renders it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    book::{Applied, Spend},
    usage::UsageRecord,
};

#[cfg(doc)]
use crate::book::Book;

/// Key of the cluster ledger: namespace, workload, model that served.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LedgerKey {
    /// Namespace.
    pub namespace: String,
    /// Workload name.
    pub workload: String,
    /// Model that served.
    pub model: String,
}

/// What the cluster ledger persists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterLedgerState {
    /// Dedupe watermark per sidecar.
    pub watermarks: BTreeMap<String, u64>,
    /// When each sidecar last sent a record (unix seconds), for pruning.
    #[serde(default)]
    pub seen: BTreeMap<String, i64>,
    /// All-time totals, as a list (JSON map keys must be strings).
    pub rows: Vec<(LedgerKey, Spend)>,
}

/// Every record from every sidecar, by namespace, workload and model
/// (all-time), deduplicated like a [`Book`].
#[derive(Clone, Debug, Default)]
pub struct ClusterLedger {
    watermarks: BTreeMap<String, u64>,
    seen: BTreeMap<String, i64>,
    rows: BTreeMap<LedgerKey, Spend>,
    generation: u64,
}

// === impl ClusterLedger ===

impl ClusterLedger {
    /// Resume from a persisted state.
    pub fn restore(saved: ClusterLedgerState) -> Self {
        Self {
            watermarks: saved.watermarks,
            seen: saved.seen,
            rows: saved.rows.into_iter().collect(),
            generation: 0,
        }
    }

    /// What to persist.
    pub fn to_state(&self) -> ClusterLedgerState {
        ClusterLedgerState {
            watermarks: self.watermarks.clone(),
            seen: self.seen.clone(),
            rows: self
                .rows
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Bumped by every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Count one record, received at `now_unix` (seconds).
    pub fn apply(
        &mut self,
        sidecar: &str,
        namespace: &str,
        workload: &str,
        rec: &UsageRecord,
        now_unix: i64,
    ) -> Applied {
        let wm = self.watermarks.entry(sidecar.to_string()).or_insert(0);
        if rec.seq <= *wm {
            return Applied::Duplicate;
        }
        *wm = rec.seq;
        self.seen.insert(sidecar.to_string(), now_unix);
        self.generation += 1;
        self.rows
            .entry(LedgerKey {
                namespace: namespace.to_string(),
                workload: workload.to_string(),
                model: rec.served_model.clone(),
            })
            .or_default()
            .add(rec);
        Applied::Counted
    }

    /// The rows, sorted by key.
    pub fn rows(&self) -> &BTreeMap<LedgerKey, Spend> {
        &self.rows
    }

    /// The watermark of `sidecar`.
    pub fn watermark(&self, sidecar: &str) -> u64 {
        self.watermarks.get(sidecar).copied().unwrap_or(0)
    }

    /// Forget the watermarks of sidecars that sent nothing for `keep_secs`
    /// (pods come and go; the state must not grow forever). A sidecar
    /// without a last-seen time (state from an older version) is treated as
    /// seen now. Returns how many were dropped. A pruned sidecar that
    /// replays later would be counted again: keep `keep_secs` far above any
    /// outage a spool outlives.
    pub fn prune(&mut self, now_unix: i64, keep_secs: i64) -> usize {
        for id in self.watermarks.keys() {
            if !self.seen.contains_key(id) {
                self.seen.insert(id.clone(), now_unix);
            }
        }
        let cutoff = now_unix.saturating_sub(keep_secs);
        let stale: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, t)| **t < cutoff)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            self.seen.remove(id);
            self.watermarks.remove(id);
        }
        if !stale.is_empty() {
            self.generation += 1;
        }
        stale.len()
    }
}
