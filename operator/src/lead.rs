//! Leading: once the objects are synced and this replica leads, read the
//! state fresh, start the engine and feed it object changes; a replica
//! that loses leadership exits so a clean process takes over.

use std::{future::Future, sync::Arc, time::Duration};

use tokenwarden_core::cluster_ledger::ClusterLedgerState;
use tokio::sync::{mpsc, watch};

use crate::{
    engine::{Cmd, Engine, EngineConfig, LedgerStore, UsageStoreHandle},
    metrics::Metrics,
    source::{Leadership, ObjectSource, Objects},
};

/// What the engine runs on.
pub struct Lead {
    /// Objects and status.
    pub source: Arc<dyn ObjectSource>,
    /// Where the cluster ledger is kept.
    pub ledger: Option<Arc<dyn LedgerStore>>,
    /// Where every usage record goes, if anywhere.
    pub usage: Option<UsageStoreHandle>,
    /// Leadership as this replica sees it.
    pub leadership: watch::Receiver<Leadership>,
    /// Engine tunables.
    pub cfg: EngineConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// What the driver publishes to the servers.
pub struct Published {
    /// The engine's command channel, once leading.
    pub engine: watch::Sender<Option<mpsc::Sender<Cmd>>>,
    /// Whether the objects have synced (`/readyz`).
    pub synced: watch::Sender<bool>,
}

/// Wait until this replica leads and the objects are synced, then run the
/// engine and feed it object changes.
pub async fn drive(mut lead: Lead, out: Published) {
    let mut objects = lead.source.objects();
    if !wait_for(&mut objects, Option::is_some).await {
        return;
    }
    out.synced.send_replace(true);
    if !wait_for(&mut lead.leadership, |l| l.leader).await {
        return;
    }
    lead.metrics.leader.set(1);
    // Leading: statuses are ours now. Read them fresh, not from the watch: a
    // previous leader may have written since, and the watch may lag.
    let latest = until_ok("the objects", &lead.leadership, || lead.source.fresh()).await;
    objects.borrow_and_update();
    let saved = match &lead.ledger {
        Some(l) => Some((load_ledger(l, &lead.leadership).await, l.clone())),
        None => None,
    };
    let tx = Engine::spawn(
        lead.cfg,
        lead.source.clone(),
        saved,
        lead.usage,
        lead.metrics,
        latest,
        lead.leadership.clone(),
    );
    out.engine.send_replace(Some(tx.clone()));
    tracing::info!("leading: granting leases and writing ledgers");
    feed(objects, lead.leadership, tx).await;
}

/// Wait until the watched value satisfies `ready`; `false` when the
/// sender is gone first.
async fn wait_for<T>(rx: &mut watch::Receiver<T>, ready: impl Fn(&T) -> bool) -> bool {
    loop {
        if ready(&rx.borrow_and_update()) {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

async fn load_ledger(
    store: &Arc<dyn LedgerStore>,
    leadership: &watch::Receiver<Leadership>,
) -> ClusterLedgerState {
    until_ok("the cluster ledger", leadership, || {
        let store = store.clone();
        async move {
            tokio::task::spawn_blocking(move || store.load())
                .await
                .unwrap_or_else(|e| Err(e.into()))
        }
    })
    .await
}

/// Pass object changes to the engine until leadership is lost (then exit:
/// another replica may now write ledgers).
async fn feed(
    mut objects: watch::Receiver<Option<Arc<Objects>>>,
    mut leadership: watch::Receiver<Leadership>,
    tx: mpsc::Sender<Cmd>,
) {
    loop {
        tokio::select! {
            r = objects.changed() => {
                if r.is_err() { return; }
                let o = objects.borrow_and_update().clone();
                if let Some(o) = o && tx.send(Cmd::Objects(o)).await.is_err() {
                    return;
                }
            }
            r = leadership.changed() => {
                if r.is_err() || !leadership.borrow().leader {
                    // Another replica may now write ledgers: stop at once.
                    tracing::error!("lost leadership; exiting so a clean process takes over");
                    std::process::exit(1);
                }
            }
        }
    }
}

/// Retry `read` with backoff until it succeeds; a new leader serves nothing
/// before. Exits if leadership is lost meanwhile.
async fn until_ok<T, E, F, Fut>(
    what: &str,
    leadership: &watch::Receiver<Leadership>,
    mut read: F,
) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        match read().await {
            Ok(t) => return t,
            Err(e) => {
                tracing::error!(error = %e, "cannot read {what}; not serving yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                if !leadership.borrow().leader {
                    tracing::error!("lost leadership; exiting so a clean process takes over");
                    std::process::exit(1);
                }
            }
        }
    }
}
