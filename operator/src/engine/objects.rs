//! Objects and config push: a new set of objects rebuilds the compile
//! inputs and the books; each session gets a snapshot when its compiled
//! config changed (and revokes or grants for the budgets that left or
//! joined it).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use jiff::Timestamp;
use opentelemetry::KeyValue;
use tokenwarden_core::{
    book::Book,
    compile::{Pod, PolicyInput, compile},
    response_cache::Redacted,
    workload::{BudgetConfig, ObjectRef, WorkloadConfig},
};
use tokenwarden_crds::{TokenBudget, common::conditions};

use super::{
    Engine, SessionId,
    messages::{BudgetSnapshot, Grant, Outbound},
    state::{BookSlot, KeyPool},
};
use crate::{
    source::{Event, EventType, Identity, Objects, Regarding},
    status,
};

/// Put the password (and user name) a policy's
/// `spec.cache.redis.credentialsSecret` names, and the CA PEM its
/// `tls.caSecret` names, into its compiled cache config, from the Secrets
/// the source read; `None` when the policy names neither or the source
/// does not read Secrets (the sidecar then reads its secrets dir), else
/// whether they were found (the error also goes to the sidecars, which
/// then treat Redis as down).
fn resolve_cache_credentials(
    id: &ObjectRef,
    input: &mut PolicyInput,
    objects: &Objects,
) -> Option<Result<(), String>> {
    let redis = input.routing.response_cache.as_mut()?.redis.as_mut()?;
    if redis.credentials.is_none() && redis.tls_ca.is_none() {
        return None;
    }
    // One Secret's key, or why not; `None`: the source reads no Secrets.
    let get = |name: &str, key: &str| -> Option<Result<Redacted, String>> {
        let secret = ObjectRef {
            namespace: id.namespace.clone(),
            name: name.to_string(),
        };
        let data = objects.cache_secrets.get(&secret)?;
        Some(data.as_ref().map_err(Clone::clone).and_then(|d| {
            d.get(key)
                .cloned()
                .ok_or_else(|| format!("Secret {secret} has no key {key:?}"))
        }))
    };
    let mut found = Ok(());
    if let Some(c) = redis.credentials.clone() {
        let password = get(&c.secret, &c.password_key)?;
        let username = match &c.username_key {
            Some(k) => Some(get(&c.secret, k)?),
            None => None,
        };
        match (password, username.transpose()) {
            (Ok(p), Ok(u)) => {
                redis.password = Some(p);
                redis.username = u.map(|u| u.0);
            }
            (Err(why), _) | (_, Err(why)) => found = Err(why),
        }
    }
    if let (Ok(()), Some(ca)) = (&found, redis.tls_ca.clone()) {
        match get(&ca.secret, &ca.key)? {
            Ok(pem) => redis.ca_pem = Some(pem.0),
            Err(why) => found = Err(why),
        }
    }
    if let Err(why) = &found {
        redis.credentials_error = Some(why.clone());
    }
    Some(found)
}

/// A short content hash: the config version.
fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Engine {
    pub(super) fn set_objects(&mut self, objects: Arc<Objects>, now: Timestamp) {
        let _span = crate::otel::enter(
            "tokenwarden.reconcile",
            vec![
                KeyValue::new(
                    "tokenwarden.routing_policies",
                    objects.policies.len() as i64,
                ),
                KeyValue::new("tokenwarden.token_budgets", objects.budgets.len() as i64),
            ],
        );
        self.objects = objects.clone();
        self.policies.clear();
        self.budgets_in.clear();
        self.policy_errors.clear();
        let before = std::mem::take(&mut self.cache_credentials);
        for (id, p) in &objects.policies {
            match p.to_input() {
                Ok(mut i) => {
                    if let Some(r) = resolve_cache_credentials(id, &mut i, &objects) {
                        self.cache_credentials.insert(id.clone(), r);
                    }
                    self.policies.push(i);
                }
                Err(e) => {
                    self.policy_errors.insert(id.clone(), e.to_string());
                }
            }
        }
        self.credential_events(&before);
        crate::otel::note(KeyValue::new(
            "tokenwarden.invalid_policies",
            self.policy_errors.len() as i64,
        ));
        let mut wanted = BTreeSet::new();
        for (id, b) in &objects.budgets {
            let input = match b.to_input() {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(budget = %id, error = %e, "invalid TokenBudget ignored");
                    continue;
                }
            };
            wanted.insert(id.clone());
            self.update_book(id, b, input.budget.clone(), now);
            self.budgets_in.push(input);
        }
        self.books.retain(|id, _| wanted.contains(id));
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.push_config(id);
        }
        self.policy_statuses_dirty = true;
        self.metrics
            .budgets
            .set(i64::try_from(self.books.len()).unwrap_or(0));
    }

    /// Reconfigure a known book, or start one from the budget's saved status.
    fn update_book(
        &mut self,
        id: &ObjectRef,
        budget: &TokenBudget,
        cfg: BudgetConfig,
        now: Timestamp,
    ) {
        if let Some(slot) = self.books.get_mut(id) {
            if slot.book.config() != &cfg {
                if let Err(e) = slot.book.reconfigure(cfg.clone(), now) {
                    tracing::warn!(budget = %id, error = %e, "budget reconfigure failed");
                }
                // The keys' pools follow the per-key limits (none: gone).
                match cfg.key_config() {
                    Some(kc) => {
                        for kp in slot.keys.values_mut() {
                            let _ = kp.book.reconfigure(kc.clone(), now);
                        }
                    }
                    None => slot.keys.clear(),
                }
            }
            return;
        }
        let key_cfg = cfg.key_config();
        let book = match status::book_state(budget.status.as_ref()) {
            Some(s) => Book::restore(cfg, now, s),
            None => Book::new(cfg, now),
        };
        match book {
            Ok(book) => {
                let mut slot = BookSlot::new(book, budget.status.clone());
                // The keys' lease pools, as the status left them.
                if let Some(kc) = key_cfg {
                    for (key, state) in status::key_pool_states(budget.status.as_ref()) {
                        if let Ok(b) = Book::restore(kc.clone(), now, state) {
                            slot.keys.insert(key, KeyPool::new(b));
                        }
                    }
                }
                self.books.insert(id.clone(), slot);
            }
            Err(e) => {
                tracing::warn!(budget = %id, error = %e, "budget period invalid");
            }
        }
    }

    /// A Warning Event for each policy whose Redis credentials just became
    /// unavailable (or changed why).
    fn credential_events(&self, before: &BTreeMap<ObjectRef, Result<(), String>>) {
        let events: Vec<Event> = self
            .cache_credentials
            .iter()
            .filter_map(|(id, r)| {
                let why = r.as_ref().err()?;
                (before.get(id) != Some(r)).then(|| Event {
                    regarding: Regarding::Policy(id.clone()),
                    type_: EventType::Warning,
                    reason: conditions::REASON_CREDENTIALS_UNAVAILABLE.into(),
                    message: format!(
                        "{why}: the response cache treats Redis as down (every lookup a miss; requests still flow)"
                    ),
                })
            })
            .collect();
        if events.is_empty() {
            return;
        }
        let source = self.source.clone();
        tokio::spawn(async move {
            for e in &events {
                source.event(e).await;
            }
        });
    }

    fn compile_for(&self, identity: &Identity) -> WorkloadConfig {
        let pod = Pod {
            namespace: &identity.namespace,
            name: &identity.pod_name,
            labels: &identity.labels,
        };
        compile(&pod, &self.policies, &self.budgets_in)
    }

    /// Compile for the session's pod; send a snapshot if it changed.
    pub(super) fn push_config(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let _span = crate::otel::enter(
            "tokenwarden.config.push",
            vec![
                KeyValue::new("tokenwarden.sidecar.id", s.sidecar_id.to_string()),
                KeyValue::new("k8s.namespace.name", s.identity.namespace.clone()),
                KeyValue::new("k8s.pod.name", s.identity.pod_name.clone()),
            ],
        );
        let cfg = self.compile_for(&s.identity);
        let json = match serde_json::to_vec(&cfg) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize a config");
                return;
            }
        };
        let version = digest(&json);
        let old_budgets: BTreeSet<ObjectRef> = s
            .cfg
            .iter()
            .flat_map(|c| c.budgets.iter().map(|b| b.source.clone()))
            .collect();
        crate::otel::note(KeyValue::new("tokenwarden.config.version", version.clone()));
        crate::otel::note(KeyValue::new(
            "tokenwarden.config.changed",
            version != s.sent_version,
        ));
        if version == s.sent_version {
            return;
        }
        let new_budgets: BTreeSet<ObjectRef> =
            cfg.budgets.iter().map(|b| b.source.clone()).collect();
        let sidecar = s.sidecar_id.clone();
        if let Some(s) = self.sessions.get_mut(&id) {
            s.sent_version.clone_from(&version);
            s.cfg = Some(cfg);
        }
        self.send(id, Outbound::Config { version, json });
        self.metrics.snapshots_sent.inc();
        // Revoke leases of budgets that no longer select the pod.
        for gone in old_budgets.difference(&new_budgets) {
            let epoch = self.books.get(gone).map_or(0, |b| b.book.epoch());
            self.send(
                id,
                Outbound::Revoke {
                    budget: gone.clone(),
                    epoch,
                    reason: "the TokenBudget no longer selects this pod".into(),
                },
            );
        }
        // Budget state and current leases of newly selecting budgets.
        // Their current leases go out once what they show is durable.
        for b in new_budgets.difference(&old_budgets) {
            if let Some(slot) = self.books.get_mut(b) {
                let st = BudgetSnapshot::of(b, &slot.book, slot.projected_overrun());
                let grant = Grant {
                    budget: b.clone(),
                    key: String::new(),
                    view: slot.book.lease(&sidecar),
                    request_id: 0,
                };
                slot.pending_grants
                    .push((id, slot.book.generation(), grant));
                self.send(id, Outbound::BudgetStatus(st));
            }
        }
    }
}
