//! Connected mode's process: the `Control.Session` client, between the
//! operator and the shared state ([`control`](crate::control) holds what
//! the session and request handling share).
//!
//! One stream at a time. Connect (exponential backoff with full jitter,
//! 100 ms doubling to 10 s, reset after a session that got an answer),
//! send `Hello` with the credential read fresh from its file, then: handle
//! every operator message, replay the spool (unacked records in seq order,
//! batches of at most [`BATCH`]), send new records as they settle and lease
//! requests as they are made. A `Redirect` reconnects to the given address
//! at once (same scheme and CA), falling back to the configured one when
//! that fails. Losing the stream keeps the last good config and the leases
//! (until they expire).

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use tokenwarden_core::{budget::ClusterSpend, money::Usd, workload::ObjectRef};
use tokenwarden_proto::{
    ConfigAck, ConfigSnapshot, Hello, OperatorMessage, PROTOCOL_VERSION, SidecarMessage,
    UsageBatch, control_client::ControlClient, operator_message, record_to_wire,
    sidecar_message::Msg,
};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::{
    control::{Control, Settings, error_chain, snapshot},
    state::{Active, Shared},
    sync::lock,
};

/// Most records in one `UsageBatch`.
pub const BATCH: usize = 500;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Exponential backoff with full jitter.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }
    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
    fn delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        let ms = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(jitter() % (ms + 1))
    }
}

fn jitter() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Timestamp::now().as_nanosecond().unsigned_abs());
    h.finish()
}

/// How a session ended.
enum End {
    /// Could not connect or the stream failed before any answer.
    Failed,
    /// The session got answers, then ended.
    Healthy,
    /// The operator redirected us.
    Redirect(String),
}

/// Run the client forever.
pub async fn run(
    shared: Arc<Shared>,
    control: Arc<Control>,
    settings: Settings,
    mut outbox: mpsc::UnboundedReceiver<SidecarMessage>,
) {
    let mut backoff = Backoff::new();
    let mut redirect: Option<String> = None;
    loop {
        let target = redirect.take();
        let addr = target.clone().unwrap_or_else(|| settings.url.clone());
        let end = session(&shared, &control, &settings, &addr, &mut outbox).await;
        control.set_connected(false);
        shared.metrics.control_connected(false);
        match end {
            End::Redirect(to) if target.is_none() => {
                tracing::info!(to = %to, "redirected by the operator");
                redirect = Some(to);
                continue;
            }
            End::Redirect(to) => {
                // Redirected again by the replica we were sent to (a
                // failover in progress): back off before following it.
                tracing::info!(to = %to, "redirected again; backing off");
                redirect = Some(to);
            }
            End::Healthy => backoff.reset(),
            End::Failed if target.is_some() => {
                // The redirect target failed: back to the configured address.
                tracing::warn!(address = %addr, "redirect target unreachable; using the configured control plane");
            }
            End::Failed => {}
        }
        tokio::time::sleep(backoff.delay()).await;
    }
}

fn endpoint(settings: &Settings, addr: &str) -> Result<Endpoint, String> {
    // A redirect address may come without a scheme: use the configured one.
    let url = if addr.contains("://") {
        addr.to_string()
    } else if settings.url.starts_with("https://") {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let mut ep = Endpoint::from_shared(url.clone())
        .map_err(|e| format!("invalid control plane address {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    if url.starts_with("https://") {
        let tls = match &settings.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--control-plane-ca {}: {e}", path.display()))?;
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
            None => ClientTlsConfig::new().trust_anchors(webpki_roots::TLS_SERVER_ROOTS.to_vec()),
        };
        // A redirect points at a replica's address; its certificate names
        // the configured control plane, so that is the name checked.
        let tls = match tls_server_name(settings) {
            Some(name) => tls.domain_name(name),
            None => tls,
        };
        ep = ep
            .tls_config(tls)
            .map_err(|e| format!("control plane TLS: {e}"))?;
    }
    Ok(ep)
}

/// The name the control plane's certificate must carry: `--control-plane-server-name`,
/// else the host of the configured URL.
fn tls_server_name(settings: &Settings) -> Option<String> {
    if let Some(name) = settings.server_name.as_deref().map(str::trim)
        && !name.is_empty()
    {
        return Some(name.to_string());
    }
    let uri: http::Uri = settings.url.parse().ok()?;
    let host = uri.host()?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

fn read_credential(settings: &Settings) -> Result<String, String> {
    match &settings.credential_file {
        None => Ok(String::new()),
        Some(p) => std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("--credential-file {}: {e}", p.display())),
    }
}

async fn session(
    shared: &Arc<Shared>,
    control: &Arc<Control>,
    settings: &Settings,
    addr: &str,
    outbox: &mut mpsc::UnboundedReceiver<SidecarMessage>,
) -> End {
    let ep = match endpoint(settings, addr) {
        Ok(ep) => ep,
        Err(e) => {
            tracing::error!(error = %e, "cannot use the control plane address");
            return End::Failed;
        }
    };
    let credential = match read_credential(settings) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the credential");
            return End::Failed;
        }
    };
    let channel = match ep.connect().await {
        Ok(c) => c,
        Err(e) => {
            // tonic says only "transport error"; the cause (refused, TLS,
            // DNS, timeout) is down its source chain.
            tracing::warn!(address = %addr, error = %error_chain(&e), "cannot connect to the control plane");
            return End::Failed;
        }
    };
    let mut client = ControlClient::new(channel);
    let (tx, rx) = mpsc::channel::<SidecarMessage>(8);
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        sidecar_id: control.sidecar_id.clone(),
        namespace: settings.namespace.clone(),
        pod_name: settings.pod_name.clone(),
        pod_uid: settings.pod_uid.clone(),
        labels: settings.labels.clone().into_iter().collect(),
        sidecar_version: env!("CARGO_PKG_VERSION").to_string(),
        credential,
        config_version: control.config_version(),
    };
    if tx
        .send(SidecarMessage {
            msg: Some(Msg::Hello(hello)),
        })
        .await
        .is_err()
    {
        return End::Failed;
    }
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut inbound = match client.session(outbound).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            tracing::warn!(address = %addr, code = ?status.code(), message = %status.message(), "control plane refused the session");
            return End::Failed;
        }
    };
    tracing::info!(address = %addr, sidecar_id = %control.sidecar_id, "connected to the control plane");
    control.set_connected(true);
    shared.metrics.control_connected(true);
    // Lease requests queued while down are stale; the operator sends the
    // current grants on connect and requests are re-made as needed.
    while outbox.try_recv().is_ok() {}
    let mut answered = false;
    // Replay from the ack watermark: everything unacked, in seq order.
    let mut sent = lock(&shared.journal).acked();
    loop {
        let more = lock(&shared.journal).has_after(sent);
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    answered = true;
                    if let Some(to) = handle(shared, control, settings, m, &tx).await {
                        return End::Redirect(to);
                    }
                }
                Ok(None) => {
                    tracing::warn!("the control plane closed the session");
                    return if answered { End::Healthy } else { End::Failed };
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = %status.message(), "control session ended");
                    return if answered { End::Healthy } else { End::Failed };
                }
            },
            permit = tx.reserve(), if more => {
                let Ok(permit) = permit else { return End::Failed };
                let batch = lock(&shared.journal).after(sent, BATCH);
                if let Some(last) = batch.last() {
                    sent = last.seq;
                }
                let records = batch
                    .iter()
                    .map(|r| record_to_wire(&control.sidecar_id, &control.pod_name, r))
                    .collect();
                permit.send(SidecarMessage { msg: Some(Msg::Usage(UsageBatch { records })) });
            },
            () = control.spool_added.notified(), if !more => {}
            Some(m) = outbox.recv() => {
                if tx.send(m).await.is_err() {
                    return End::Failed;
                }
            }
        }
    }
}

/// Handle one operator message; `Some(address)` on a redirect.
async fn handle(
    shared: &Arc<Shared>,
    control: &Arc<Control>,
    settings: &Settings,
    m: OperatorMessage,
    tx: &mpsc::Sender<SidecarMessage>,
) -> Option<String> {
    use operator_message::Msg as M;
    match m.msg? {
        M::Config(snap) => {
            let ack = apply_snapshot(shared, control, settings, &snap);
            let _ = tx
                .send(SidecarMessage {
                    msg: Some(Msg::ConfigAck(ack)),
                })
                .await;
        }
        M::UsageAck(a) => {
            if a.sidecar_id.is_empty() || a.sidecar_id == control.sidecar_id {
                let mut journal = lock(&shared.journal);
                if let Err(e) = journal.ack(a.up_to_seq) {
                    tracing::warn!(error = %e, "cannot record the usage ack (records may be resent)");
                }
                shared.metrics.spool(journal.depth(), journal.oldest());
            }
        }
        M::LeaseGrant(g) => control.leases.grant(&g, &shared.metrics),
        M::LeaseRecall(r) => control.leases.recall(control, &r),
        M::LeaseUnmet(u) => control.leases.unmet(&u),
        M::LeaseRevoke(r) => {
            tracing::warn!(budget = %format!("{}/{}", r.budget_namespace, r.budget_name), reason = %r.reason, "lease revoked");
            control.leases.revoke(
                ObjectRef::new(r.budget_namespace.clone(), r.budget_name.clone()),
                r.epoch,
            );
        }
        M::BudgetStatus(s) => {
            let id = ObjectRef::new(s.namespace.clone(), s.name.clone());
            shared.metrics.cluster_status(&id.to_string(), &s);
            if let Ok(start) = Timestamp::from_second(s.period_start_unix) {
                let mut budgets = lock(&shared.budgets);
                if let Some(b) = budgets.get_mut(&id) {
                    b.set_cluster(cluster_spend(start, &s));
                    shared.metrics.budget(b);
                    shared.metrics.cluster_overrun(b);
                }
            }
            control.leases.set_status(s);
        }
        M::Redirect(r) => {
            if !r.address.is_empty() {
                return Some(r.address);
            }
        }
    }
    None
}

/// Check and install a snapshot; the ACK or NACK to send.
pub fn apply_snapshot(
    shared: &Arc<Shared>,
    control: &Control,
    settings: &Settings,
    snap: &ConfigSnapshot,
) -> ConfigAck {
    match snapshot::check(snap, &settings.namespace) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                tracing::warn!(warning = %w, "configuration warning");
            }
            let active = Active::new(cfg, shared.options.secrets_dir.as_deref());
            for p in active.keys.problems() {
                tracing::warn!(problem = %p, "provider key unavailable");
            }
            shared.install(active, Timestamp::now());
            reapply_cluster_status(shared, control);
            *lock(&control.config_version) = snap.version.clone();
            if let Some(dir) = &settings.state_dir
                && let Err(e) = snapshot::persist(dir, &snap.version, &snap.config_json)
            {
                tracing::warn!(error = %e, "cannot persist the config snapshot");
            }
            shared.metrics.snapshot(true, &snap.version);
            tracing::info!(version = %snap.version, "configuration installed");
            ConfigAck {
                version: snap.version.clone(),
                accepted: true,
                reason: String::new(),
            }
        }
        Err(rejected) => {
            shared.metrics.snapshot(false, &snap.version);
            tracing::error!(version = %snap.version, reason = %rejected, "configuration rejected; keeping the last good one");
            ConfigAck {
                version: snap.version.clone(),
                accepted: false,
                reason: rejected.to_string(),
            }
        }
    }
}

/// The cluster-wide spend a BudgetStatus reports.
fn cluster_spend(period_start: Timestamp, s: &tokenwarden_proto::BudgetStatus) -> ClusterSpend {
    ClusterSpend {
        period_start,
        percent: u64::from(s.percent_spent),
        spent: Usd::from_picos(i128::from(s.spent_picos)),
        tokens: s.spent_tokens,
        keys: s
            .keys
            .iter()
            .map(|k| {
                (
                    k.key.clone(),
                    (Usd::from_picos(i128::from(k.spent_picos)), k.spent_tokens),
                )
            })
            .collect(),
        projected_overrun: s.projected_overrun,
    }
}

/// Budgets created by a new config learn the cluster-wide status known.
fn reapply_cluster_status(shared: &Shared, control: &Control) {
    let mut budgets = lock(&shared.budgets);
    for (id, b) in budgets.iter_mut() {
        if let Some(s) = control.leases.status(id)
            && let Ok(start) = Timestamp::from_second(s.period_start_unix)
        {
            b.set_cluster(cluster_spend(start, &s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_under_a_doubling_cap() {
        let mut b = Backoff::new();
        let caps = [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000];
        for cap in caps {
            let d = b.delay();
            assert!(d <= Duration::from_millis(cap), "{d:?} > {cap} ms");
        }
        b.reset();
        assert!(b.delay() <= BACKOFF_START);
    }
}
