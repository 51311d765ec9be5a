//! The cluster ledger (every record by namespace, workload and model, with
//! its dedupe watermarks) in a ConfigMap of the operator's namespace.
//!
//! TokenBudget status holds each budget's ledger; usage that no budget
//! selects would otherwise be counted nowhere durable. The leader writes
//! the whole state as `ledger.json` by server-side apply (which creates the
//! ConfigMap on first write), at most once per status interval, and acks
//! the records it counts only after the write succeeded.

use ::kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use k8s_openapi::api::core::v1::ConfigMap;
use tokenwarden_core::cluster_ledger::ClusterLedgerState;
use tokio::runtime::Handle;

use super::{ApiCall, FIELD_MANAGER, Scope};
use crate::engine::{LedgerError, LedgerStore};

/// Default ConfigMap name.
pub const DEFAULT_NAME: &str = "tokenwarden-ledger";
/// The key holding the JSON state.
pub const KEY: &str = "ledger.json";
/// A ConfigMap holds at most 1 MiB; refuse a bit earlier with a clear error.
pub const MAX_BYTES: usize = 960 * 1024;

pub(super) const CALLS: &[ApiCall] = &[ApiCall {
    group: "",
    resource: "configmaps",
    subresource: None,
    verbs: &["get", "patch"],
    scope: Scope::OperatorNamespace,
    reason: "the cluster ledger (spend by namespace, workload and model, with dedupe watermarks) \
             in one ConfigMap, read by a new leader and written by server-side apply",
}];

/// The cluster ledger in a ConfigMap.
pub struct ConfigMapLedger {
    api: Api<ConfigMap>,
    name: String,
    runtime: Handle,
}

impl ConfigMapLedger {
    /// The ConfigMap `name` in `namespace`. Must be created inside a Tokio
    /// runtime; `save`/`load` block, so call them from blocking threads.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            runtime: Handle::current(),
        }
    }

    /// [`LedgerStore::load`] without blocking.
    pub async fn read(&self) -> Result<ClusterLedgerState, LedgerError> {
        let cm = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| LedgerError::store(format!("reading ConfigMap {}", self.name), e))?;
        let Some(json) = cm.and_then(|c| c.data).and_then(|mut d| d.remove(KEY)) else {
            return Ok(ClusterLedgerState::default());
        };
        serde_json::from_str(&json)
            .map_err(|e| LedgerError::store(format!("ConfigMap {} key {KEY}", self.name), e))
    }

    /// [`LedgerStore::save`] without blocking.
    pub async fn write(&self, state: &ClusterLedgerState) -> Result<(), LedgerError> {
        let json = serde_json::to_string(state)?;
        if json.len() > MAX_BYTES {
            return Err(LedgerError::TooLarge {
                size: json.len(),
                max: MAX_BYTES,
            });
        }
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "labels": {"app.kubernetes.io/managed-by": "tokenwarden-operator"},
            },
            "data": { KEY: json },
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                LedgerError::store(format!("server-side apply of ConfigMap {}", self.name), e)
            })
    }
}

impl LedgerStore for ConfigMapLedger {
    fn save(&self, state: &ClusterLedgerState) -> Result<(), LedgerError> {
        self.runtime.block_on(self.write(state))
    }

    fn load(&self) -> Result<ClusterLedgerState, LedgerError> {
        self.runtime.block_on(self.read())
    }
}
