//! Where the engine's durability goes: the store of the cluster ledger,
//! and why a write failed.

use tokenwarden_core::cluster_ledger::ClusterLedgerState;

use crate::source::{BoxError, SourceError};

/// Where the cluster ledger is persisted: a file in local mode, a
/// ConfigMap on Kubernetes. Both calls block (they run on blocking threads).
pub trait LedgerStore: Send + Sync + 'static {
    /// Write durably.
    fn save(&self, state: &ClusterLedgerState) -> Result<(), LedgerError>;
    /// Read what was saved (empty when nothing was saved yet).
    fn load(&self) -> Result<ClusterLedgerState, LedgerError>;
}

/// Why the cluster ledger could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store failed; `context` says where (a file, a ConfigMap).
    #[error("{context}: {source}")]
    Store {
        /// The file or ConfigMap, and the step.
        context: String,
        /// Why it failed.
        source: BoxError,
    },
    /// The ledger could not be encoded.
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
    /// The ledger is larger than the store holds.
    #[error(
        "the cluster ledger is {size} bytes, more than a ConfigMap holds ({max}); \
         too many sidecars were seen in the last 7 days"
    )]
    TooLarge {
        /// Its size.
        size: usize,
        /// What the store holds.
        max: usize,
    },
    /// The blocking task that ran the call failed.
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

impl LedgerError {
    /// A failed store call, with where it failed.
    pub fn store(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Store {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Why a status or ledger write failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A TokenBudget or RoutingPolicy status.
    #[error(transparent)]
    Status(#[from] SourceError),
    /// The cluster ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The usage store.
    #[error(transparent)]
    UsageStore(#[from] crate::usage_store::StoreError),
}
