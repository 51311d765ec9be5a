//! The local object source: a watched directory of RoutingPolicy and
//! TokenBudget YAML, each object's status in a JSON file under
//! `<state>/status/`, Events appended to `<state>/events.jsonl`.

use std::{
    collections::HashMap,
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokenwarden_core::workload::ObjectRef;
use tokenwarden_crds::{
    RoutingPolicyStatus, TokenBudgetStatus,
    load::{self, Object},
};
use tokio::sync::watch;

use tokenwarden_durable::write_atomic;

use super::yaml_files;
use crate::source::{BoxFuture, Event, EventType, ObjectSource, Objects, Regarding, SourceError};

/// Local mode: a watched directory of RoutingPolicy/TokenBudget YAML, with
/// each object's status in a JSON file under `<state>/status/`.
#[derive(Debug)]
pub struct LocalSource {
    dir: PathBuf,
    state: PathBuf,
    tx: watch::Sender<Option<Arc<Objects>>>,
    generations: Mutex<HashMap<(bool, ObjectRef), (serde_json::Value, i64)>>,
    events: Mutex<File>,
}

fn status_path(state: &Path, kind: &str, id: &ObjectRef) -> PathBuf {
    state
        .join("status")
        .join(kind)
        .join(format!("{}.{}.json", id.namespace, id.name))
}

/// How long a changed directory must hold still before it is read.
const SETTLE: Duration = Duration::from_millis(100);

fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    yaml_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

impl LocalSource {
    /// Watch `dir` (polling every `every`); statuses live under `state`.
    /// The first load happens before this returns.
    pub fn start(dir: PathBuf, state: PathBuf, every: Duration) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(state.join("status"))?;
        let events = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.join("events.jsonl"))?;
        let (tx, _) = watch::channel(None);
        let me = Arc::new(Self {
            dir,
            state,
            tx,
            generations: Mutex::new(HashMap::new()),
            events: Mutex::new(events),
        });
        // Taken before the first read: an edit made after it is seen below.
        let mut last = fingerprint(&me.dir);
        me.reload();
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(dir) = weak.upgrade().map(|me| me.dir.clone()) else {
                    return;
                };
                let now = fingerprint(&dir);
                if now == last {
                    continue;
                }
                // A file rewritten in place (truncated, then written) is
                // read once it held still, not caught half-written.
                tokio::time::sleep(SETTLE.min(every)).await;
                if fingerprint(&dir) != now {
                    continue;
                }
                let Some(me) = weak.upgrade() else { return };
                me.reload();
                last = now;
            }
        });
        Ok(me)
    }

    /// Re-read every file and publish the objects.
    pub fn reload(&self) {
        let mut objects = Objects::default();
        let files = match yaml_files(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the local directory");
                return;
            }
        };
        let mut gens = self
            .generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for path in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    objects.errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let parsed = match load::parse_yaml(&text) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "file skipped");
                    objects.errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            for o in parsed {
                match o {
                    Object::RoutingPolicy(mut p) => {
                        let id = ObjectRef::new(
                            p.metadata
                                .namespace
                                .get_or_insert_with(|| "default".into())
                                .clone(),
                            p.metadata.name.as_deref().unwrap_or_default(),
                        );
                        let spec = serde_json::to_value(&p.spec).unwrap_or_default();
                        p.metadata.generation = Some(generation(&mut gens, true, &id, spec));
                        p.status = read_json(&status_path(&self.state, "routingpolicies", &id));
                        objects.policies.insert(id, Arc::new(*p));
                    }
                    Object::TokenBudget(mut b) => {
                        let id = ObjectRef::new(
                            b.metadata
                                .namespace
                                .get_or_insert_with(|| "default".into())
                                .clone(),
                            b.metadata.name.as_deref().unwrap_or_default(),
                        );
                        let spec = serde_json::to_value(&b.spec).unwrap_or_default();
                        b.metadata.generation = Some(generation(&mut gens, false, &id, spec));
                        b.status = read_json(&status_path(&self.state, "tokenbudgets", &id));
                        objects.budgets.insert(id, Arc::new(*b));
                    }
                }
            }
        }
        tracing::info!(
            policies = objects.policies.len(),
            budgets = objects.budgets.len(),
            errors = objects.errors.len(),
            "local objects loaded"
        );
        self.tx.send_replace(Some(Arc::new(objects)));
    }

    /// Where statuses and the cluster ledger live.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }
}

fn generation(
    gens: &mut HashMap<(bool, ObjectRef), (serde_json::Value, i64)>,
    policy: bool,
    id: &ObjectRef,
    spec: serde_json::Value,
) -> i64 {
    let e = gens
        .entry((policy, id.clone()))
        .or_insert((spec.clone(), 1));
    if e.0 != spec {
        e.0 = spec;
        e.1 += 1;
    }
    e.1
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "unreadable status file ignored");
            None
        }
    }
}

impl ObjectSource for LocalSource {
    fn objects(&self) -> watch::Receiver<Option<Arc<Objects>>> {
        self.tx.subscribe()
    }

    fn fresh(&self) -> BoxFuture<'_, Result<Arc<Objects>, SourceError>> {
        // The poll loop only notices changes of the YAML files; statuses
        // written by another process are read here.
        self.reload();
        let current = self.tx.borrow().clone();
        Box::pin(async move { current.ok_or_else(|| SourceError::Unreadable(self.dir.clone())) })
    }

    fn write_budget_status<'a>(
        &'a self,
        id: &'a ObjectRef,
        status: &'a TokenBudgetStatus,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        let path = status_path(&self.state, "tokenbudgets", id);
        Box::pin(write_status(path, serde_json::to_vec_pretty(status)))
    }

    fn write_policy_status<'a>(
        &'a self,
        id: &'a ObjectRef,
        status: &'a RoutingPolicyStatus,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        let path = status_path(&self.state, "routingpolicies", id);
        Box::pin(write_status(path, serde_json::to_vec_pretty(status)))
    }

    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (kind, id) = match &event.regarding {
                Regarding::Policy(id) => ("RoutingPolicy", id),
                Regarding::Budget(id) => ("TokenBudget", id),
            };
            let line = serde_json::json!({
                "time": jiff::Timestamp::now().to_string(),
                "kind": kind,
                "namespace": id.namespace,
                "name": id.name,
                "type": match event.type_ { EventType::Normal => "Normal", EventType::Warning => "Warning" },
                "reason": event.reason,
                "message": event.message,
            });
            let mut f = self
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = writeln!(f, "{line}") {
                tracing::warn!(error = %e, "cannot record an event");
            }
        })
    }
}

async fn write_status(
    path: PathBuf,
    bytes: Result<Vec<u8>, serde_json::Error>,
) -> Result<(), SourceError> {
    let bytes = bytes.map_err(|e| SourceError::Write(e.into()))?;
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes, true))
        .await
        .map_err(|e| SourceError::Write(e.into()))?
        .map_err(|e| SourceError::Write(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: &str = include_str!("../../../deploy/examples/02-team-daily-budget.yaml");
    const ROUTING: &str = include_str!("../../../deploy/examples/01-coding-agent-routing.yaml");

    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_rewritten_in_place_is_never_published_half_read() {
        let dir = tempfile::tempdir().unwrap();
        let (yaml, state) = (dir.path().join("yaml"), dir.path().join("state"));
        std::fs::create_dir_all(&yaml).unwrap();
        let file = yaml.join("team.yaml");
        let full = format!("{BUDGET}\n---\n{ROUTING}");
        std::fs::write(&file, &full).unwrap();
        let source = LocalSource::start(yaml, state, Duration::from_millis(100)).unwrap();
        let mut rx = source.objects();
        let count = |o: &Objects| (o.budgets.len(), o.policies.len(), o.errors.len());
        let first = rx.borrow_and_update().clone().unwrap();
        assert_eq!(count(&first), (1, 1, 0), "{:?}", first.errors);

        // Every version published while the file is rewritten, recorded.
        let recorder = tokio::spawn(async move {
            let mut seen = Vec::new();
            while rx.changed().await.is_ok() {
                if let Some(o) = rx.borrow_and_update().clone() {
                    seen.push(count(&o));
                }
            }
            seen
        });
        let path = file.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let cut = BUDGET.len();
            for i in 0..12 {
                // Truncate, the first document, a pause, the rest (with a
                // change, so each rewrite is a new version).
                let text = full.replace("usd: \"50.00\"", &format!("usd: \"{}.00\"", 50 + i));
                let mut f = std::fs::File::create(&path).unwrap();
                f.write_all(&text.as_bytes()[..cut]).unwrap();
                std::thread::sleep(Duration::from_millis(30));
                f.write_all(&text.as_bytes()[cut..]).unwrap();
                drop(f);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
        .await
        .unwrap();
        drop(source);
        let seen = recorder.await.unwrap();
        assert!(
            seen.len() >= 6,
            "only {} versions published: {seen:?}",
            seen.len()
        );
        assert!(
            seen.iter().all(|c| *c == (1, 1, 0)),
            "a half-written file was published: {seen:?}"
        );
    }
}
