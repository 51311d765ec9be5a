//! The local object source: a directory of YAML files.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use tokenwarden_crds::load::{self, Object};

/// The outcome for one file.
#[derive(Debug)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// One line per object (`ok Kind ns/name`), or the error.
    pub result: Result<Vec<String>, String>,
}

/// The outcome for a directory.
#[derive(Debug, Default)]
pub struct DirReport {
    /// Per file, in name order.
    pub files: Vec<FileReport>,
    /// A problem with the directory itself.
    pub error: Option<String>,
}

// === impl DirReport ===

impl DirReport {
    /// Whether every object in every file is valid.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.files.iter().all(|f| f.result.is_ok())
    }

    /// One line per object or error.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(e) = &self.error {
            let _ = writeln!(s, "error: {e}");
        }
        for f in &self.files {
            match &f.result {
                Ok(lines) => {
                    for l in lines {
                        let _ = writeln!(s, "{}: {l}", f.path.display());
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "{}: invalid: {e}", f.path.display());
                }
            }
        }
        s
    }
}

/// The YAML files of a directory, sorted by name.
pub fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Validate every object of every YAML file in `dir`.
pub fn check_dir(dir: &Path) -> DirReport {
    let files = match yaml_files(dir) {
        Ok(f) => f,
        Err(e) => {
            return DirReport {
                files: vec![],
                error: Some(format!("cannot read {}: {e}", dir.display())),
            };
        }
    };
    let mut report = DirReport::default();
    if files.is_empty() {
        report.error = Some(format!("{} has no *.yaml or *.yml files", dir.display()));
    }
    for path in files {
        let result = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| load::load_yaml(&text).map_err(|e| e.to_string()))
            .map(|objects| {
                objects
                    .iter()
                    .map(|o| match o {
                        Object::RoutingPolicy(p) => format!(
                            "ok RoutingPolicy {}/{}",
                            p.metadata.namespace.as_deref().unwrap_or("default"),
                            p.metadata.name.as_deref().unwrap_or_default()
                        ),
                        Object::TokenBudget(b) => format!(
                            "ok TokenBudget {}/{}",
                            b.metadata.namespace.as_deref().unwrap_or("default"),
                            b.metadata.name.as_deref().unwrap_or_default()
                        ),
                    })
                    .collect()
            });
        report.files.push(FileReport { path, result });
    }
    report
}

// ---- the running local source ------------------------------------------------

use std::{
    collections::HashMap,
    fs::File,
    io::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokenwarden_core::{cluster_ledger::ClusterLedgerState, workload::ObjectRef};
use tokenwarden_crds::{RoutingPolicyStatus, TokenBudgetStatus};
use tokio::sync::watch;

use crate::{
    engine::LedgerStore,
    source::{
        AuthError, Authenticator, BoxFuture, Claim, Event, EventType, Identity, Leadership,
        ObjectSource, Objects, Regarding, SourceError,
    },
};

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

/// Write `bytes` to `path` atomically and durably: a temporary file,
/// fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("status")
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
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
        Box::pin(async move {
            current.ok_or_else(|| SourceError(format!("{}: not readable", self.dir.display())))
        })
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
    let bytes = bytes.map_err(|e| SourceError(e.to_string()))?;
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(|e| SourceError(e.to_string()))?
        .map_err(|e| SourceError(e.to_string()))
}

/// The cluster ledger in `<state>/ledger.json`.
#[derive(Debug)]
pub struct FileLedger {
    path: PathBuf,
}

impl FileLedger {
    /// The ledger file under `state`.
    pub fn new(state: &Path) -> Self {
        Self {
            path: state.join("ledger.json"),
        }
    }

    fn read(&self) -> Result<ClusterLedgerState, String> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", self.path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterLedgerState::default()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }
}

impl LedgerStore for FileLedger {
    fn save(&self, state: &ClusterLedgerState) -> Result<(), String> {
        let bytes = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        write_atomic(&self.path, &bytes).map_err(|e| format!("{}: {e}", self.path.display()))
    }

    fn load(&self) -> Result<ClusterLedgerState, String> {
        self.read()
    }
}

/// Local mode identity: every sidecar presents the same shared secret; its
/// pod identity and labels are taken from its Hello.
pub struct SharedSecret {
    secret: Vec<u8>,
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

impl SharedSecret {
    /// Read the secret from a file (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let secret = text.trim().as_bytes().to_vec();
        if secret.len() < 16 {
            return Err(format!(
                "{}: the shared secret must be at least 16 characters",
                path.display()
            ));
        }
        Ok(Self { secret })
    }
}

/// Compare in time independent of where the inputs differ: hash both, then
/// fold the XOR of the digests.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    da.as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Authenticator for SharedSecret {
    fn authenticate<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            let given = claim.credential.trim().as_bytes();
            if given.is_empty() {
                return Err(AuthError("no credential in Hello".into()));
            }
            if !same_secret(given, &self.secret) {
                return Err(AuthError(
                    "the credential does not match the shared secret".into(),
                ));
            }
            if claim.namespace.is_empty() || claim.pod_name.is_empty() {
                return Err(AuthError(
                    "Hello must name the pod's namespace and name".into(),
                ));
            }
            Ok(Identity {
                namespace: claim.namespace.clone(),
                pod_name: claim.pod_name.clone(),
                pod_uid: claim.pod_uid.clone(),
                labels: claim.labels.clone(),
            })
        })
    }
}

/// Local mode leader election: an exclusive lock on `<state>/leader.lock`
/// (released by the kernel when the process dies, even by `kill -9`). The
/// leader writes its control address to `<state>/leader.addr` for
/// redirects.
pub fn local_leadership(
    state: &Path,
    address: String,
) -> std::io::Result<watch::Receiver<Leadership>> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(state.join("leader.lock"))?;
    let addr_file = state.join("leader.addr");
    let (tx, rx) = watch::channel(Leadership::default());
    std::thread::Builder::new()
        .name("leader-lock".into())
        .spawn(move || {
            loop {
                match lock.try_lock() {
                    Ok(()) => {
                        if let Err(e) = write_atomic(&addr_file, address.as_bytes()) {
                            tracing::warn!(error = %e, "cannot publish the leader address");
                        }
                        tracing::info!("acquired leadership (local lock)");
                        tx.send_replace(Leadership {
                            leader: true,
                            leader_address: None,
                        });
                        // Held until the process exits.
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(_) => {
                        let leader = std::fs::read_to_string(&addr_file)
                            .ok()
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty());
                        tx.send_if_modified(|l| {
                            let new = Leadership {
                                leader: false,
                                leader_address: leader.clone(),
                            };
                            let changed = *l != new;
                            *l = new;
                            changed
                        });
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: &str = include_str!("../../deploy/examples/02-team-daily-budget.yaml");
    const ROUTING: &str = include_str!("../../deploy/examples/01-coding-agent-routing.yaml");

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
