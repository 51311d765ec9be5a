//! The cluster ledger in local mode: one JSON file, written atomically.

use std::path::{Path, PathBuf};

use tokenwarden_core::cluster_ledger::ClusterLedgerState;

use crate::engine::{LedgerError, LedgerStore};
use tokenwarden_durable::write_atomic;

/// The cluster ledger in `<state>/ledger.json`.
#[derive(Debug)]
pub struct FileLedger {
    path: PathBuf,
}

impl FileLedger {
    /// The ledger file under `state`.
    pub fn new(state: &Path) -> Self {
        Self {
            path: state.join("ledger.json"),
        }
    }

    fn read(&self) -> Result<ClusterLedgerState, LedgerError> {
        let at = || self.path.display().to_string();
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| LedgerError::store(at(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterLedgerState::default()),
            Err(e) => Err(LedgerError::store(at(), e)),
        }
    }
}

impl LedgerStore for FileLedger {
    fn save(&self, state: &ClusterLedgerState) -> Result<(), LedgerError> {
        let bytes = serde_json::to_vec(state)?;
        write_atomic(&self.path, &bytes, true)
            .map_err(|e| LedgerError::store(self.path.display().to_string(), e))
    }

    fn load(&self) -> Result<ClusterLedgerState, LedgerError> {
        self.read()
    }
}
