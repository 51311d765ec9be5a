//! Where the operator's objects come from and where their status goes.
//!
//! One interface, two implementations:
//! - Kubernetes (`crate::kube`): kube-runtime reflectors, status by
//!   server-side apply, Events, TokenReview for sidecar identity.
//! - Local (`crate::local`): a watched directory of the same YAML files,
//!   status written to one file per object; a shared secret for identity.
//!
//! The control server, the ledger and the webhook only see this module.

use std::{collections::BTreeMap, future::Future, path::PathBuf, pin::Pin, sync::Arc};

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
    /// The Secrets named by policies' `spec.cache.redis.credentialsSecret`
    /// (Kubernetes mode, when the operator may read them), by
    /// namespace/name: their keys and values, or why they could not be
    /// read. Absent: not resolved (the sidecar reads its secrets dir).
    pub cache_secrets: BTreeMap<ObjectRef, Result<SecretData, String>>,
}

/// A Secret's keys and (decoded) values; `Debug` never shows a value.
pub type SecretData = BTreeMap<String, tokenwarden_core::response_cache::Redacted>;

/// Any error of the store behind a source (the Kubernetes API, the file
/// system), kept as the source of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error from a source's read or write.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A call to the store failed; `context` says which.
    #[error("{context}: {source}")]
    Call {
        /// What was being done, e.g. `listing TokenBudgets`.
        context: String,
        /// Why it failed.
        source: BoxError,
    },
    /// A status file could not be written.
    #[error("{0}")]
    Write(#[source] BoxError),
    /// The watched directory could not be read.
    #[error("{}: not readable", .0.display())]
    Unreadable(PathBuf),
}

impl SourceError {
    /// A failed call, with what it was doing.
    pub fn call(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Call {
            context: context.into(),
            source: source.into(),
        }
    }
}

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
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The credential does not prove the claim: why.
    #[error("{0}")]
    Refused(String),
    /// The credential could not be checked; `context` says which step.
    #[error("{context}: {source}")]
    Unchecked {
        /// The step, e.g. `pod team-a/app: TokenReview failed`.
        context: String,
        /// Why it failed.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl AuthError {
    /// A refusal with its reason.
    pub fn refused(reason: impl Into<String>) -> Self {
        Self::Refused(reason.into())
    }

    /// A check that could not be made.
    pub fn unchecked(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unchecked {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

/// Two errors are equal when they are of the same kind and say the same.
impl PartialEq for AuthError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Refused(a), Self::Refused(b)) => a == b,
            (Self::Unchecked { .. }, Self::Unchecked { .. }) => {
                self.to_string() == other.to_string()
            }
            _ => false,
        }
    }
}

impl Eq for AuthError {}

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
