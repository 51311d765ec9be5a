//! RoutingPolicy statuses: Ready (how many selected sidecars run the
//! current version, or why not), Conflicted (shadowed by a policy of
//! higher precedence) and PromptCacheUnstable (a selected workload broke
//! the provider's prompt cache in the last day, with a Warning Event),
//! recomputed once per tick when something moved and queued for writing
//! when they changed.

use jiff::Timestamp;
use tokenwarden_core::workload::ObjectRef;
use tokenwarden_crds::{RoutingPolicy, RoutingPolicyStatus, common::conditions as c};

use super::{Engine, state::PolicySlot};
use crate::{
    source::{Event, EventType, Regarding},
    status,
};

/// How the sessions stand towards one policy.
#[derive(Debug, Default)]
struct Sidecars {
    /// Sidecars the policy selects.
    selected: usize,
    /// Of those, running the current version.
    in_sync: usize,
    /// Of those, rejecting the current version: (pod, reason).
    nacks: Vec<(String, String)>,
    /// Sidecars where a higher-precedence policy shadows this one.
    shadowed: usize,
}

/// Same status, ignoring transition times.
fn same(a: &RoutingPolicyStatus, b: &RoutingPolicyStatus) -> bool {
    a.observed_generation == b.observed_generation
        && a.route_count == b.route_count
        && a.sidecars == b.sidecars
        && a.conditions.len() == b.conditions.len()
        && a.conditions.iter().zip(&b.conditions).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
        })
}

impl Engine {
    pub(super) fn update_policy_statuses(&mut self) {
        let now = Timestamp::now();
        let objects = self.objects.clone();
        let mut events = Vec::new();
        for (id, p) in &objects.policies {
            let st = self.policy_status(id, p, now);
            if let Some(u) = self.cache_watch.unstable(id, now, self.volatile_guard(id))
                && self.cache_watch.should_event(id, &u, now)
            {
                events.push(Event {
                    regarding: Regarding::Policy(id.clone()),
                    type_: EventType::Warning,
                    reason: c::PROMPT_CACHE_UNSTABLE.into(),
                    message: u.message,
                });
            }
            let slot = self.policy_slots.entry(id.clone()).or_insert(PolicySlot {
                written: p.status.clone(),
                writing: false,
                last_write: None,
                pending: None,
            });
            if slot.written.as_ref().is_none_or(|w| !same(w, &st)) {
                slot.written = Some(st.clone());
                slot.pending = Some(st);
            }
        }
        self.policy_slots
            .retain(|id, _| objects.policies.contains_key(id));
        if !events.is_empty() {
            let source = self.source.clone();
            tokio::spawn(async move {
                for e in &events {
                    source.event(e).await;
                }
            });
        }
    }

    /// The volatile-prefix guard's repeat threshold of `policy`, when it
    /// turned the guard on (read from a config compiled from it).
    fn volatile_guard(&self, policy: &ObjectRef) -> Option<u32> {
        self.sessions
            .values()
            .filter_map(|s| s.cfg.as_ref())
            .find(|c| c.routing.as_ref().is_some_and(|r| &r.source == policy))
            .and_then(|c| c.caching.volatile_guard)
            .map(|g| g.repeats)
    }

    /// The status policy `id` should show now.
    fn policy_status(
        &self,
        id: &ObjectRef,
        p: &RoutingPolicy,
        now: Timestamp,
    ) -> RoutingPolicyStatus {
        let generation = p.metadata.generation.unwrap_or(0);
        let prev: Vec<_> = self
            .policy_slots
            .get(id)
            .and_then(|s| s.written.as_ref())
            .map(|s| s.conditions.clone())
            .or_else(|| p.status.as_ref().map(|s| s.conditions.clone()))
            .unwrap_or_default();
        let mut conds = Vec::new();
        let route_count = i32::try_from(p.spec.routes.len()).unwrap_or(i32::MAX);
        let sc = self.policy_sidecars(id);
        let (selected, in_sync) = (sc.selected, sc.in_sync);
        let (ready, reason, message) = if let Some(err) = self.policy_errors.get(id) {
            (false, c::REASON_INVALID, err.clone())
        } else if let Some((pod, why)) = sc.nacks.first() {
            let message = format!(
                "{in_sync}/{selected} sidecars run the current version; {} rejected it \
                 (pod {pod}): {why}",
                sc.nacks.len()
            );
            (false, c::REASON_REJECTED, message)
        } else {
            let reason = if in_sync == selected {
                c::REASON_IN_SYNC
            } else {
                c::REASON_PROPAGATING
            };
            let message = format!("{in_sync}/{selected} sidecars run the current version");
            (true, reason, message)
        };
        status::set_condition(
            &mut conds,
            &prev,
            c::READY,
            ready,
            reason,
            message,
            generation,
            now,
        );
        let shadowed = sc.shadowed;
        let (reason, message) = if shadowed > 0 {
            (
                c::REASON_SHADOWED,
                format!("{shadowed} selected pods run a higher-precedence RoutingPolicy"),
            )
        } else {
            (
                c::REASON_ACCEPTED,
                "no higher-precedence RoutingPolicy selects the same pods".into(),
            )
        };
        status::set_condition(
            &mut conds,
            &prev,
            c::CONFLICTED,
            shadowed > 0,
            reason,
            message,
            generation,
            now,
        );
        let (unstable, reason, message) =
            match self.cache_watch.unstable(id, now, self.volatile_guard(id)) {
                Some(u) => (true, u.reason, u.message),
                None => (
                    false,
                    c::REASON_CACHE_STABLE,
                    "no prompt-cache bust in the last 24h".to_string(),
                ),
            };
        status::set_condition(
            &mut conds,
            &prev,
            c::PROMPT_CACHE_UNSTABLE,
            unstable,
            reason,
            message,
            generation,
            now,
        );
        if let Some(r) = self.cache_credentials.get(id) {
            let (reason, message) = match r {
                Ok(()) => (
                    c::REASON_CREDENTIALS_RESOLVED,
                    "the Redis credentials were read from their Secret".to_string(),
                ),
                Err(why) => (
                    c::REASON_CREDENTIALS_UNAVAILABLE,
                    format!("{why}: every response-cache lookup is a miss; requests still flow"),
                ),
            };
            status::set_condition(
                &mut conds,
                &prev,
                c::RESPONSE_CACHE_DEGRADED,
                r.is_err(),
                reason,
                message,
                generation,
                now,
            );
        }
        RoutingPolicyStatus {
            observed_generation: Some(generation),
            route_count: Some(route_count),
            sidecars: Some(format!("{in_sync}/{selected}")),
            conditions: conds,
        }
    }

    /// How the sessions stand towards `policy`.
    fn policy_sidecars(&self, policy: &ObjectRef) -> Sidecars {
        let mut sc = Sidecars::default();
        for s in self.sessions.values() {
            let Some(cfg) = &s.cfg else { continue };
            let runs = cfg.routing.as_ref().is_some_and(|r| &r.source == policy);
            let shadow = cfg
                .conflict
                .as_ref()
                .is_some_and(|c| c.shadowed.contains(policy));
            if shadow {
                sc.shadowed += 1;
            }
            if !runs {
                continue;
            }
            sc.selected += 1;
            if s.acked_version == s.sent_version {
                sc.in_sync += 1;
            } else if let Some((v, reason)) = &s.nack
                && *v == s.sent_version
            {
                sc.nacks.push((
                    format!("{}/{}", s.identity.namespace, s.identity.pod_name),
                    reason.clone(),
                ));
            }
        }
        sc
    }
}
