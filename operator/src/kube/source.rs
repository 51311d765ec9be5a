//! [`KubeSource`]: objects from reflectors, status by server-side apply,
//! Events through the events.k8s.io/v1 recorder.

use std::{sync::Arc, time::Duration};

use ::kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter},
        reflector::{self, ObjectRef as StoreRef, Store},
        watcher,
    },
};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use serde::{Serialize, de::DeserializeOwned};
use tokenwarden_core::{response_cache::Redacted, workload::ObjectRef};
use tokenwarden_crds::{RoutingPolicy, RoutingPolicyStatus, TokenBudget, TokenBudgetStatus};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use super::{ApiCall, Scope};
use crate::source::{
    BoxFuture, Event, EventType, ObjectSource, Objects, Regarding, SecretData, SourceError,
};

/// The field manager of every status write (and the Event reporter).
pub const FIELD_MANAGER: &str = "tokenwarden-operator";

/// events.k8s.io/v1 limits: reason and action ≤ 128 bytes, note ≤ 1 kB.
const MAX_REASON: usize = 128;
const MAX_NOTE: usize = 1024;

pub(super) const CALLS: &[ApiCall] = &[
    ApiCall {
        group: "tokenwarden.dev",
        resource: "routingpolicies",
        subresource: None,
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        reason: "reflector over RoutingPolicies in all namespaces",
    },
    ApiCall {
        group: "tokenwarden.dev",
        resource: "tokenbudgets",
        subresource: None,
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        reason: "reflector over TokenBudgets in all namespaces",
    },
    ApiCall {
        group: "tokenwarden.dev",
        resource: "routingpolicies",
        subresource: Some("status"),
        verbs: &["patch"],
        scope: Scope::Cluster,
        reason: "RoutingPolicy status (Ready, sidecars on the current version) by server-side apply",
    },
    ApiCall {
        group: "tokenwarden.dev",
        resource: "tokenbudgets",
        subresource: Some("status"),
        verbs: &["patch"],
        scope: Scope::Cluster,
        reason: "TokenBudget status and ledger by server-side apply (acks to sidecars depend on it)",
    },
    ApiCall {
        group: "events.k8s.io",
        resource: "events",
        subresource: None,
        verbs: &["create", "patch"],
        scope: Scope::Cluster,
        reason: "Events on RoutingPolicies and TokenBudgets (thresholds crossed); patch when an Event repeats (series)",
    },
];

/// The call made only when the operator may read the response cache's
/// Redis credentials ([`SourceOptions::cache_secrets`]; the chart grants it
/// with `cacheCredentials.enabled`).
pub(super) const SECRET_CALLS: &[ApiCall] = &[ApiCall {
    group: "",
    resource: "secrets",
    subresource: None,
    verbs: &["get"],
    scope: Scope::Cluster,
    reason: "only with cacheCredentials.enabled: the Secret a RoutingPolicy's spec.cache.redis.credentialsSecret names (in the policy's namespace), whose password goes to the sidecars with their config",
}];

/// How often referenced Secrets are read again (a rotated password reaches
/// the sidecars within this).
pub const SECRET_REFRESH: Duration = Duration::from_secs(60);

/// Options of [`KubeSource`].
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Changes within this window are published as one [`Objects`].
    pub coalesce: Duration,
    /// `reportingInstance` of Events (the pod name); defaults to the
    /// controller name.
    pub instance: Option<String>,
    /// Read the Secrets policies name for their Redis credentials
    /// ([`Objects::cache_secrets`]); needs `get` on Secrets.
    pub cache_secrets: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            coalesce: Duration::from_millis(50),
            instance: None,
            cache_secrets: false,
        }
    }
}

/// Reads RoutingPolicies and TokenBudgets from the Kubernetes API and writes
/// their status. Dropping it stops its watches.
pub struct KubeSource {
    client: Client,
    objects: watch::Receiver<Option<Arc<Objects>>>,
    policies: Store<RoutingPolicy>,
    budgets: Store<TokenBudget>,
    recorder: Recorder,
    tasks: Vec<JoinHandle<()>>,
}

// === impl KubeSource ===

impl KubeSource {
    /// Start the watches (needs a Tokio runtime) with default options.
    pub fn start(client: Client) -> Arc<Self> {
        Self::start_with(client, SourceOptions::default())
    }

    /// Start the watches (needs a Tokio runtime).
    pub fn start_with(client: Client, options: SourceOptions) -> Arc<Self> {
        let changed = Arc::new(Notify::new());
        let (policies, policy_task) =
            spawn_reflector(Api::<RoutingPolicy>::all(client.clone()), changed.clone());
        let (budgets, budget_task) =
            spawn_reflector(Api::<TokenBudget>::all(client.clone()), changed.clone());
        let (tx, objects) = watch::channel(None);
        let publish_task = tokio::spawn(publish(
            policies.clone(),
            budgets.clone(),
            changed,
            tx,
            options.coalesce,
            options.cache_secrets.then(|| client.clone()),
        ));
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance: options.instance,
            },
        );
        Arc::new(Self {
            client,
            objects,
            policies,
            budgets,
            recorder,
            tasks: vec![policy_task, budget_task, publish_task],
        })
    }

    async fn apply_status<K>(
        &self,
        id: &ObjectRef,
        status: &impl Serialize,
    ) -> Result<(), SourceError>
    where
        K: Resource<DynamicType = (), Scope = ::kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let kind = K::kind(&());
        let api: Api<K> = Api::namespaced(self.client.clone(), &id.namespace);
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": kind,
            "metadata": { "name": id.name },
            "status": status,
        });
        api.patch_status(
            &id.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            SourceError::call(
                format!(
                    "server-side apply of {kind} {}/{} status",
                    id.namespace, id.name
                ),
                e,
            )
        })
    }

    async fn record(&self, event: &Event) {
        let (kind, id, reference) = match &event.regarding {
            Regarding::Policy(id) => (
                "RoutingPolicy",
                id,
                self.policies
                    .get(&StoreRef::new(&id.name).within(&id.namespace))
                    .map(|o| o.object_ref(&())),
            ),
            Regarding::Budget(id) => (
                "TokenBudget",
                id,
                self.budgets
                    .get(&StoreRef::new(&id.name).within(&id.namespace))
                    .map(|o| o.object_ref(&())),
            ),
        };
        let Some(reference) = reference else {
            tracing::warn!(
                kind,
                namespace = %id.namespace,
                name = %id.name,
                reason = %event.reason,
                "event dropped: the object is not in the cache"
            );
            return;
        };
        let reason = truncate(&event.reason, MAX_REASON);
        let ev = KubeEvent {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: reason.to_string(),
            note: Some(truncate(&event.message, MAX_NOTE).to_string()),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(
                kind,
                namespace = %id.namespace,
                name = %id.name,
                reason = %event.reason,
                error = %e,
                "event not recorded"
            );
        }
    }
}

impl ObjectSource for KubeSource {
    fn objects(&self) -> watch::Receiver<Option<Arc<Objects>>> {
        self.objects.clone()
    }

    fn write_budget_status<'a>(
        &'a self,
        id: &'a ObjectRef,
        status: &'a TokenBudgetStatus,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(self.apply_status::<TokenBudget>(id, status))
    }

    fn write_policy_status<'a>(
        &'a self,
        id: &'a ObjectRef,
        status: &'a RoutingPolicyStatus,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(self.apply_status::<RoutingPolicy>(id, status))
    }

    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(self.record(event))
    }

    fn fresh(&self) -> BoxFuture<'_, Result<Arc<Objects>, SourceError>> {
        Box::pin(async move {
            // No resourceVersion: served from etcd with a quorum read, so it
            // includes every write acknowledged before it.
            let params = ListParams::default();
            let policies = Api::<RoutingPolicy>::all(self.client.clone())
                .list(&params)
                .await
                .map_err(|e| SourceError::call("listing RoutingPolicies", e))?;
            let budgets = Api::<TokenBudget>::all(self.client.clone())
                .list(&params)
                .await
                .map_err(|e| SourceError::call("listing TokenBudgets", e))?;
            let mut objects = Objects::default();
            for p in policies {
                objects.policies.insert(object_ref(&p), Arc::new(p));
            }
            for b in budgets {
                objects.budgets.insert(object_ref(&b), Arc::new(b));
            }
            Ok(Arc::new(objects))
        })
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Run a reflector for `K` in the background; `changed` is notified when the
/// store changes (after the initial list, on every add, modify, delete and
/// re-list).
fn spawn_reflector<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let kind = K::kind(&());
        let stream =
            reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
                .default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // The store swaps in the new list at InitDone.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff"),
            }
        }
    });
    (reader, task)
}

/// Publish [`Objects`] once both stores have their initial list, then after
/// every burst of changes (at most one per `coalesce`), skipping bursts that
/// changed nothing (a re-list of the same objects). With `secrets` (a
/// client allowed to read them), the Secrets policies name for their Redis
/// credentials are read with each snapshot and every [`SECRET_REFRESH`].
async fn publish(
    policies: Store<RoutingPolicy>,
    budgets: Store<TokenBudget>,
    changed: Arc<Notify>,
    tx: watch::Sender<Option<Arc<Objects>>>,
    coalesce: Duration,
    secrets: Option<Client>,
) {
    if policies.wait_until_ready().await.is_err() || budgets.wait_until_ready().await.is_err() {
        return;
    }
    let mut last: Option<(SnapshotKey, Vec<String>)> = None;
    loop {
        let (key, mut objects) = snapshot(&policies, &budgets);
        let mut versions = Vec::new();
        if let Some(client) = &secrets {
            versions = resolve_secrets(client, &mut objects).await;
        }
        let key = (key, versions);
        if last.as_ref() != Some(&key) {
            tx.send_replace(Some(Arc::new(objects)));
            last = Some(key);
        }
        tokio::select! {
            () = changed.notified() => {}
            () = tx.closed() => return,
            () = tokio::time::sleep(SECRET_REFRESH), if secrets.is_some() => {}
        }
        tokio::time::sleep(coalesce).await;
    }
}

/// Read every Secret a policy's `spec.cache.redis.credentialsSecret` or
/// `spec.cache.redis.tls.caSecret` names into `objects.cache_secrets`;
/// returns what identifies what was read (a resourceVersion or the error,
/// per Secret) to tell a change.
async fn resolve_secrets(client: &Client, objects: &mut Objects) -> Vec<String> {
    let wanted: std::collections::BTreeSet<ObjectRef> = objects
        .policies
        .iter()
        .filter_map(|(id, p)| Some((id, p.spec.cache.as_ref()?.redis.as_ref()?)))
        .flat_map(|(id, r)| {
            let creds = r.credentials_secret.as_ref().map(|c| &c.name);
            let ca = r
                .tls
                .as_ref()
                .and_then(|t| t.ca_secret.as_ref())
                .map(|c| &c.name);
            creds.into_iter().chain(ca).map(|name| ObjectRef {
                namespace: id.namespace.clone(),
                name: name.clone(),
            })
        })
        .collect();
    let mut versions = Vec::new();
    for id in wanted {
        let api: Api<Secret> = Api::namespaced(client.clone(), &id.namespace);
        let read = match api.get_opt(&id.name).await {
            Ok(Some(s)) => {
                versions.push(format!("{id}@{}", s.resource_version().unwrap_or_default()));
                Ok(secret_data(s))
            }
            Ok(None) => Err(format!("Secret {id} not found")),
            Err(e) => Err(format!(
                "Secret {id} could not be read: {}",
                short_error(&e)
            )),
        };
        if let Err(e) = &read {
            versions.push(e.clone());
        }
        objects.cache_secrets.insert(id, read);
    }
    versions
}

/// A Secret's `data` (and `stringData`, as some fakes send it), decoded.
fn secret_data(s: Secret) -> SecretData {
    let mut out = SecretData::new();
    for (k, v) in s.data.unwrap_or_default() {
        if let Ok(text) = String::from_utf8(v.0) {
            out.insert(k, Redacted(text));
        }
    }
    for (k, v) in s.string_data.unwrap_or_default() {
        out.insert(k, Redacted(v));
    }
    out
}

/// An API error without the response body.
fn short_error(e: &::kube::Error) -> String {
    match e {
        ::kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        other => other.to_string(),
    }
}

type SnapshotKey = Vec<(bool, ObjectRef, Option<String>)>;

fn snapshot(
    policies: &Store<RoutingPolicy>,
    budgets: &Store<TokenBudget>,
) -> (SnapshotKey, Objects) {
    let mut objects = Objects::default();
    let mut key = Vec::new();
    for p in policies.state() {
        let id = object_ref(p.as_ref());
        key.push((false, id.clone(), p.resource_version()));
        objects.policies.insert(id, p);
    }
    for b in budgets.state() {
        let id = object_ref(b.as_ref());
        key.push((true, id.clone(), b.resource_version()));
        objects.budgets.insert(id, b);
    }
    key.sort();
    (key, objects)
}

fn object_ref<K: ResourceExt>(o: &K) -> ObjectRef {
    ObjectRef {
        namespace: o.namespace().unwrap_or_default(),
        name: o.name_any(),
    }
}

/// The longest prefix of `s` of at most `max` bytes, on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }
}
