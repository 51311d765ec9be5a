//! Sidecar sessions: open (one per sidecar id), close, dispatch of their
//! messages, config acks, and sending (a sidecar that does not read its
//! stream is dropped).

use std::{collections::VecDeque, time::Instant};

use jiff::Timestamp;
use tokenwarden_proto::OperatorMessage;
use tokio::sync::mpsc;

use super::{
    Engine, SessionId,
    messages::{Hello, Inbound, Outbound},
    state::Session,
};
use crate::source::Identity;

/// The workload a pod belongs to: `app.kubernetes.io/name`, `app`, else
/// the pod name without its generated suffixes (the rule is
/// [`tokenwarden_core::workload::workload_name`], which the compiler also
/// uses for the workload's prompt-cache key).
pub fn workload_of(identity: &Identity) -> String {
    tokenwarden_core::workload::workload_name(&identity.labels, &identity.pod_name)
}

impl Engine {
    pub(super) fn open(
        &mut self,
        id: SessionId,
        identity: Identity,
        hello: Hello,
        tx: mpsc::Sender<Result<OperatorMessage, tonic::Status>>,
    ) -> Result<(), tonic::Status> {
        if hello.sidecar_id.is_empty() || hello.sidecar_id.len() > 253 {
            return Err(tonic::Status::invalid_argument(
                "Hello.sidecar_id must be 1-253 characters",
            ));
        }
        // A sidecar id names one process lineage; a second stream replaces
        // the first (a reconnect racing with the old stream's end).
        if let Some(old) = self.by_sidecar.get(&hello.sidecar_id).copied() {
            self.close(old);
        }
        let workload = format!("{}/{}", identity.namespace, workload_of(&identity));
        tracing::info!(
            sidecar = %hello.sidecar_id,
            pod = %format!("{}/{}", identity.namespace, identity.pod_name),
            version = %hello.sidecar_version,
            "sidecar connected"
        );
        self.by_sidecar.insert(hello.sidecar_id.clone(), id);
        self.sessions.insert(
            id,
            Session {
                identity,
                sidecar_id: hello.sidecar_id,
                workload,
                tx,
                cfg: None,
                sent_version: String::new(),
                acked_version: hello.config_version,
                nack: None,
                pending: VecDeque::new(),
                opened: Instant::now(),
                usage_deferred: false,
            },
        );
        self.metrics.sidecars.set(self.sessions.len() as i64);
        self.push_config(id);
        Ok(())
    }

    pub(super) fn close(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.remove(&id) {
            if self.by_sidecar.get(&s.sidecar_id) == Some(&id) {
                self.by_sidecar.remove(&s.sidecar_id);
            }
            tracing::info!(
                sidecar = %s.sidecar_id,
                connected_secs = s.opened.elapsed().as_secs(),
                "sidecar disconnected"
            );
            for slot in self.books.values_mut() {
                slot.pending_grants.retain(|(sid, _, _)| *sid != id);
                slot.waiters.retain(|w| w.session != id);
                for kp in slot.keys.values_mut() {
                    kp.pending_grants.retain(|(sid, _, _)| *sid != id);
                    kp.waiters.retain(|w| w.session != id);
                }
            }
            self.metrics.sidecars.set(self.sessions.len() as i64);
            self.policy_statuses_dirty = true;
        }
    }

    /// End every session with `reason` (they reconnect).
    pub(super) fn end_sessions(&mut self, reason: &str) {
        for (_, session) in self.sessions.drain() {
            let _ = session
                .tx
                .try_send(Err(tonic::Status::unavailable(reason.to_string())));
        }
        self.by_sidecar.clear();
    }

    pub(super) fn send(&mut self, id: SessionId, msg: Outbound) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        if s.tx.try_send(Ok(msg.into())).is_err() {
            // A sidecar that does not read its stream is dropped; it
            // reconnects and replays.
            tracing::warn!(sidecar = %s.sidecar_id, "sidecar stream full or closed; dropping it");
            let _ = s.tx.try_send(Err(tonic::Status::resource_exhausted(
                "the sidecar is not reading its stream",
            )));
            self.close(id);
        }
    }

    pub(super) fn message(&mut self, id: SessionId, msg: Inbound, now: Timestamp) {
        match msg {
            Inbound::Hello => {
                if let Some(s) = self.sessions.get(&id) {
                    tracing::warn!(sidecar = %s.sidecar_id, "second Hello on a stream ignored");
                }
            }
            Inbound::ConfigAck {
                version,
                accepted,
                reason,
            } => self.config_ack(id, version, accepted, reason),
            Inbound::Usage(records) => self.usage(id, records, now),
            Inbound::LeaseRequest {
                budget,
                key,
                ask,
                request_id,
            } => self.lease_request(id, budget, &key, ask, request_id, now),
            Inbound::LeaseRelease(release) => self.lease_release(id, release, now),
        }
    }

    fn config_ack(&mut self, id: SessionId, version: String, accepted: bool, reason: String) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if accepted {
            s.acked_version = version;
            s.nack = None;
            self.metrics.acks.inc();
        } else {
            tracing::warn!(
                sidecar = %s.sidecar_id,
                version = %version,
                reason = %reason,
                "sidecar rejected a config snapshot"
            );
            s.nack = Some((version, reason));
            self.metrics.nacks.inc();
        }
        self.policy_statuses_dirty = true;
    }
}
