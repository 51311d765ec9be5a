//! Leader election on a Lease, and routing sidecars to the leader.
//!
//! kube-lease-manager holds the Lease `tokenwarden-operator` (configurable)
//! in the operator's namespace, with the pod name as identity. Only the
//! leader grants budget leases and writes ledgers. Around that:
//!
//! - The leader labels its own Pod `tokenwarden.dev/leader=true` (and removes
//!   the label from any other pod that still has it); a replica that loses
//!   the Lease removes its label. The control Service selects that label, so
//!   sidecars connect to the leader.
//! - The leader writes its control address into the Lease's annotations
//!   (`tokenwarden.dev/leader-identity` + `tokenwarden.dev/leader-address`).
//!   Other replicas read the Lease and fill [`Leadership::leader_address`]
//!   (only while the annotated identity is the Lease's holder), so a stream
//!   that still reaches them during a failover is answered with `Redirect`.
//!
//! Leadership is published as "not leader" before the label is removed, and
//! as "leader" before the label is added: a replica never routes sidecars to
//! itself while it would refuse them.

use std::time::{Duration, SystemTime};

use ::kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

use super::{ApiCall, Scope};
use crate::source::Leadership;

/// The Pod label the control Service selects.
pub const LEADER_LABEL: &str = "tokenwarden.dev/leader";
/// Lease annotation: the identity (pod name) that wrote the address.
pub const IDENTITY_ANNOTATION: &str = "tokenwarden.dev/leader-identity";
/// Lease annotation: the leader's control address (`https://host:port`).
pub const ADDRESS_ANNOTATION: &str = "tokenwarden.dev/leader-address";
/// Default Lease name.
pub const DEFAULT_LEASE_NAME: &str = "tokenwarden-operator";

pub(super) const CALLS: &[ApiCall] = &[
    ApiCall {
        group: "coordination.k8s.io",
        resource: "leases",
        subresource: None,
        verbs: &["get", "create", "patch"],
        scope: Scope::OperatorNamespace,
        reason: "leader election (kube-lease-manager); the leader's control address in the Lease's annotations",
    },
    ApiCall {
        group: "",
        resource: "pods",
        subresource: None,
        verbs: &["list", "patch"],
        scope: Scope::OperatorNamespace,
        reason: "the leader labels its own Pod tokenwarden.dev/leader=true (the control Service selects it) \
                 and removes the label from other replicas",
    },
];

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The operator's namespace (Lease and Pods).
    pub namespace: String,
    /// Lease name.
    pub lease_name: String,
    /// This replica's pod name: the Lease identity, and the Pod it labels.
    pub pod_name: String,
    /// This replica's control address for `Redirect`, e.g.
    /// `https://10.0.0.7:15900` or a per-pod DNS name the TLS certificate
    /// covers.
    pub address: String,
    /// Lease duration, seconds.
    pub lease_duration: u64,
    /// Renew this many seconds before the lease expires.
    pub grace: u64,
    /// How often a follower reads the Lease for the leader's address, and a
    /// failed label patch is retried.
    pub poll: Duration,
}

impl LeaderConfig {
    /// Defaults: Lease `tokenwarden-operator`, 15 s duration, 5 s grace,
    /// 5 s poll.
    pub fn new(
        namespace: impl Into<String>,
        pod_name: impl Into<String>,
        address: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            lease_name: DEFAULT_LEASE_NAME.to_string(),
            pod_name: pod_name.into(),
            address: address.into(),
            lease_duration: 15,
            grace: 5,
            poll: Duration::from_secs(5),
        }
    }
}

/// Run leader election in the background (needs a Tokio runtime). The
/// receiver starts as "not leader"; dropping every receiver stops the
/// election, removes this Pod's label and releases the Lease.
pub fn run(client: Client, config: LeaderConfig) -> watch::Receiver<Leadership> {
    let (tx, rx) = watch::channel(Leadership::default());
    tokio::spawn(elect(client, config, tx, std::future::pending()));
    rx
}

/// [`run`], stopped by `stop`: once `stop` completes the replica publishes
/// "not leader", removes its label (the Service stops routing to it) and
/// releases the Lease; the returned task ends when that is done. A standby
/// takes the Lease when its own view of it expires (kube-lease-manager
/// re-reads a Lease only then). The caller must have stopped everything that
/// acts as leader before completing `stop`.
pub fn run_until(
    client: Client,
    config: LeaderConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (watch::Receiver<Leadership>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Leadership::default());
    let task = tokio::spawn(elect(client, config, tx, stop));
    (rx, task)
}

async fn elect(
    client: Client,
    config: LeaderConfig,
    tx: watch::Sender<Leadership>,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let mut stop = std::pin::pin!(stop);
    let Some(manager) = build_manager(&client, &config, &tx).await else {
        return;
    };
    let (mut is_leader, manager_task) = manager.watch().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &config.namespace);
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    // What kube-lease-manager says.
    let mut elected = false;
    // What is published: elected, and the Lease shows a recent enough renewal
    // of ours. The manager keeps saying "leader" while its renewals fail; the
    // fence stops this replica before another one can take the Lease.
    let mut leading = false;
    let mut valid_until: Option<SystemTime> = None;
    // What the label on our Pod is known to be (None: unknown, patch it).
    let mut labeled: Option<bool> = None;
    let mut announced = false;
    let fence_margin = Duration::from_millis(config.grace.saturating_mul(500));
    // Poll fast enough to see each renewal before the fence closes.
    let period = config
        .poll
        .min(Duration::from_millis(config.grace.saturating_mul(250)))
        .max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = tx.closed() => break,
            () = &mut stop => {
                tx.send_replace(Leadership::default());
                break;
            }
            changed = is_leader.changed() => {
                if changed.is_err() {
                    tracing::error!("leader election stopped");
                    break;
                }
                elected = *is_leader.borrow_and_update();
            }
            _ = tick.tick() => {}
        }
        let mut address = None;
        match read_lease(&leases, &config.lease_name).await {
            Ok(view) => {
                valid_until = match (&view.holder, view.renewed, view.duration) {
                    (Some(holder), Some(renewed), Some(duration)) if *holder == config.pod_name => {
                        (renewed + duration).checked_sub(fence_margin)
                    }
                    _ => None,
                };
                if view.holder.is_some() && view.holder != Some(config.pod_name.clone()) {
                    address = view.address;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the Lease failed"),
        }
        let now_leading = elected && valid_until.is_some_and(|t| SystemTime::now() < t);
        if now_leading != leading {
            leading = now_leading;
            announced = false;
            tracing::info!(leader = leading, elected, pod = %config.pod_name, "leadership changed");
            // Publish first: stop acting as leader before the label goes,
            // act as leader before sidecars are routed here.
            tx.send_replace(Leadership {
                leader: leading,
                leader_address: None,
            });
        }
        if !leading {
            tx.send_if_modified(|l| {
                let changed = l.leader_address != address;
                if changed {
                    l.leader_address.clone_from(&address);
                }
                changed
            });
        }
        if labeled != Some(leading) {
            match set_label(&pods, &config.pod_name, leading).await {
                Ok(()) => labeled = Some(leading),
                Err(e) => tracing::warn!(error = %e, "leader label patch failed; retrying"),
            }
        }
        if leading && !announced {
            match announce(&leases, &pods, &config).await {
                Ok(()) => announced = true,
                Err(e) => tracing::warn!(error = %e, "leader announcement failed; retrying"),
            }
        }
    }
    // Shutting down: take the label away, then let the manager release the Lease.
    if labeled != Some(false)
        && let Err(e) = set_label(&pods, &config.pod_name, false).await
    {
        tracing::warn!(error = %e, "removing the leader label failed");
    }
    drop(is_leader);
    match manager_task.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
        Err(e) => tracing::warn!(error = %e, "lease manager task failed"),
    }
}

async fn build_manager(
    client: &Client,
    config: &LeaderConfig,
    tx: &watch::Sender<Leadership>,
) -> Option<LeaseManager> {
    let mut backoff = Duration::from_millis(500);
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&config.namespace)
            .with_identity(&config.pod_name)
            .with_duration(config.lease_duration)
            .with_grace(config.grace)
            .build()
            .await;
        match built {
            Ok(manager) => return Some(manager),
            Err(e) => {
                tracing::warn!(error = %e, lease = %config.lease_name, "lease manager start failed; retrying")
            }
        }
        tokio::select! {
            () = tx.closed() => return None,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Add (`true`) or remove (`false`) the leader label on a Pod.
async fn set_label(pods: &Api<Pod>, pod: &str, leader: bool) -> Result<(), ::kube::Error> {
    let value = if leader {
        serde_json::Value::from("true")
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({ "metadata": { "labels": { LEADER_LABEL: value } } });
    pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// As the new leader: write the address into the Lease, and take the label
/// from any other Pod that still has it (a previous leader that could not).
async fn announce(
    leases: &Api<Lease>,
    pods: &Api<Pod>,
    config: &LeaderConfig,
) -> Result<(), ::kube::Error> {
    let patch = serde_json::json!({
        "metadata": { "annotations": {
            IDENTITY_ANNOTATION: config.pod_name,
            ADDRESS_ANNOTATION: config.address,
        } }
    });
    leases
        .patch(
            &config.lease_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    let labeled = pods
        .list(&ListParams::default().labels(&format!("{LEADER_LABEL}=true")))
        .await?;
    for pod in labeled {
        let Some(name) = pod.metadata.name else {
            continue;
        };
        if name != config.pod_name {
            tracing::info!(pod = %name, "removing a stale leader label");
            set_label(pods, &name, false).await?;
        }
    }
    Ok(())
}

/// What a follower and the fence need from the Lease.
struct LeaseView {
    holder: Option<String>,
    renewed: Option<SystemTime>,
    duration: Option<Duration>,
    /// The address the holder announced (only when the annotated identity is
    /// the holder: a stale annotation from a previous leader is ignored).
    address: Option<String>,
}

async fn read_lease(leases: &Api<Lease>, name: &str) -> Result<LeaseView, ::kube::Error> {
    let Some(lease) = leases.get_opt(name).await? else {
        return Ok(LeaseView {
            holder: None,
            renewed: None,
            duration: None,
            address: None,
        });
    };
    let spec = lease.spec.unwrap_or_default();
    let annotations = lease.metadata.annotations.unwrap_or_default();
    let address = match &spec.holder_identity {
        Some(holder) if annotations.get(IDENTITY_ANNOTATION) == Some(holder) => {
            annotations.get(ADDRESS_ANNOTATION).cloned()
        }
        _ => None,
    };
    Ok(LeaseView {
        holder: spec.holder_identity,
        renewed: spec.renew_time.map(|t| SystemTime::from(t.0)),
        duration: spec
            .lease_duration_seconds
            .and_then(|d| u64::try_from(d).ok())
            .map(Duration::from_secs),
        address,
    })
}
