//! The cluster ledger in local mode: one JSON file, written atomically.

use std::path::{Path, PathBuf};

use tokenwarden_core::cluster::ClusterLedgerState;

use super::write_atomic;
use crate::engine::LedgerStore;

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

    fn read(&self) -> Result<ClusterLedgerState, String> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", self.path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterLedgerState::default()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }
}

impl LedgerStore for FileLedger {
    fn save(&self, state: &ClusterLedgerState) -> Result<(), String> {
        let bytes = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        write_atomic(&self.path, &bytes).map_err(|e| format!("{}: {e}", self.path.display()))
    }

    fn load(&self) -> Result<ClusterLedgerState, String> {
        self.read()
    }
}
