//! Where the operator's objects come from and where their status goes.
//!
//! One interface, two implementations:
//! - Kubernetes (`crate::kube`): kube-runtime reflectors, status by
//!   server-side apply, Events, TokenReview for sidecar identity.
//! - Local (`crate::local`): a watched directory of the same YAML files,
//!   status written to one file per object; a shared secret for identity.
//!
//! The control server, the ledger and the webhook only see this module.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use tokenwarden_core::workload::ObjectRef;
use tokenwarden_crds::{RoutingPolicy, RoutingPolicyStatus, TokenBudget, TokenBudgetStatus};

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Every RoutingPolicy and TokenBudget the operator sees, by namespace/name.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// RoutingPolicies.
    pub policies: BTreeMap<ObjectRef, Arc<RoutingPolicy>>,
    /// TokenBudgets.
    pub budgets: BTreeMap<ObjectRef, Arc<TokenBudget>>,
    /// Objects the source could not read (a local file that does not parse),
    /// with the reason. Kubernetes rejects those at admission.
    pub errors: Vec<String>,
}

/// An error from a source's write.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Severity of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Normal.
    Normal,
    /// Warning.
    Warning,
}

/// Which object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regarding {
    /// A RoutingPolicy.
    Policy(ObjectRef),
    /// A TokenBudget.
    Budget(ObjectRef),
}

/// An Event to record on an object (`kubectl describe` shows them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The object.
    pub regarding: Regarding,
    /// Normal or Warning.
    pub type_: EventType,
    /// UpperCamelCase reason, e.g. `ThresholdCrossed`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// Reads objects and writes their status.
pub trait ObjectSource: Send + Sync + 'static {
    /// The current objects. The receiver is updated on every change (a
    /// source may coalesce bursts); it starts with the initial list once the
    /// source has synced (before that it holds `None`).
    fn objects(&self) -> tokio::sync::watch::Receiver<Option<Arc<Objects>>>;

    /// Replace the status of a TokenBudget. When this returns `Ok` the status
    /// is durable (the ledger is acked to sidecars on that basis).
    fn write_budget_status<'a>(
        &'a self,
        id: &'a ObjectRef,
        status: &'a TokenBudgetStatus,
    ) -> BoxFuture<'a, Result<(), SourceError>>;

    /// Replace the status of a RoutingPolicy.
    fn write_policy_status<'a>(
        &'a self,
        id: &'a ObjectRef,
        status: &'a RoutingPolicyStatus,
    ) -> BoxFuture<'a, Result<(), SourceError>>;

    /// Record an Event (best effort: failures are logged, not returned).
    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()>;

    /// A fresh, consistent read of every object with its status (a quorum
    /// LIST on Kubernetes, a re-read of the directory and status files in
    /// local mode). A new leader starts from this, not from the watch: the
    /// watch may not have delivered the previous leader's last status write
    /// yet, and a book restored from an older status would lose what that
    /// write counted (acked records are never replayed) or count replays
    /// twice.
    fn fresh(&self) -> BoxFuture<'_, Result<Arc<Objects>, SourceError>>;
}

/// Who a sidecar is, once its credential checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod_name: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Pod labels, as the source of truth knows them (Kubernetes: read from
    /// the Pod, not taken from the sidecar's word).
    pub labels: BTreeMap<String, String>,
}

/// What a sidecar claims in its Hello.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod_name: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Labels the sidecar reports.
    pub labels: BTreeMap<String, String>,
    /// The credential (service-account token or shared secret). Never logged.
    pub credential: String,
}

/// Why a sidecar was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// Checks a sidecar's credential and says who it is.
pub trait Authenticator: Send + Sync + 'static {
    /// Check `claim`; `Ok` carries the identity to use for this stream.
    fn authenticate<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Identity, AuthError>>;
}

/// Leadership as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leadership {
    /// Whether this replica leads (grants leases, writes ledgers).
    pub leader: bool,
    /// The leader's control address (`https://host:port`) when known and not
    /// this replica, for `Redirect`.
    pub leader_address: Option<String>,
}
