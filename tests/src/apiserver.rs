//! An in-memory stand-in for the Kubernetes API server, over plain HTTP on
//! 127.0.0.1, for running the real operator binary in Kubernetes mode.
//!
//! It stores any resource generically, keyed by (group, resource,
//! namespace, name), and serves what the operator calls:
//!
//! - LIST (with `labelSelector` equality terms) and WATCH (newline-delimited
//!   JSON events, replayed from the requested `resourceVersion`, held open);
//! - GET, POST (409 `AlreadyExists`), PUT (409 `Conflict` on a stale
//!   `metadata.resourceVersion`), DELETE;
//! - PATCH: JSON merge and strategic merge (both as RFC 7386 merge, `null`
//!   removes), JSON patch (RFC 6902), and server-side apply.
//! - `tokenreviews`: answered from a token table the test fills.
//!
//! Where it departs from a real API server (see
//! docs/testing-kubernetes-mode.md): no schema validation, admission or
//! RBAC; server-side apply is approximated: on `/status` the applied status
//! replaces the stored one (one manager owns status), elsewhere it is a
//! merge that creates a missing object; an apply without `force` that would
//! change a Lease's `holderIdentity` held by another identity is refused
//! with 409 `Conflict` (what field ownership does for kube-lease-manager).
//! Errors are Kubernetes `Status` objects, as kube-client expects.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Who a token belongs to (a TokenReview answer).
#[derive(Debug, Clone)]
pub struct TokenIdentity {
    /// `system:serviceaccount:<ns>:<sa>`.
    pub username: String,
    /// Pod name (the `authentication.kubernetes.io/pod-name` extra).
    pub pod_name: String,
    /// Pod uid (the `authentication.kubernetes.io/pod-uid` extra).
    pub pod_uid: String,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Content type.
    pub content_type: Option<String>,
}

type Key = (String, String, String, String);

struct Watcher {
    group: String,
    resource: String,
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    /// Every change: (rv, group, resource, namespace, event line).
    history: Vec<(u64, String, String, String, Bytes)>,
    watchers: Vec<Watcher>,
    tokens: HashMap<String, TokenIdentity>,
    log: Vec<Seen>,
}

/// The running server; dropping it stops it.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "routingpolicies" => "RoutingPolicy",
        "tokenbudgets" => "TokenBudget",
        "pods" => "Pod",
        "leases" => "Lease",
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "events" => "Event",
        "mutatingwebhookconfigurations" => "MutatingWebhookConfiguration",
        "validatingwebhookconfigurations" => "ValidatingWebhookConfiguration",
        "tokenreviews" => "TokenReview",
        "namespaces" => "Namespace",
        _ => "Object",
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    })
}

/// RFC 7386 merge, except that lists of objects keyed by `name` (webhooks,
/// containers, …) are merged item by item as strategic merge does.
fn merge(target: &mut Value, patch: &Value) {
    if let (Value::Array(t), Value::Array(p)) = (&mut *target, patch)
        && !p.is_empty()
        && p.iter()
            .all(|i| i.get("name").is_some_and(Value::is_string))
        && t.iter()
            .all(|i| i.get("name").is_some_and(Value::is_string))
    {
        for item in p {
            match t.iter_mut().find(|x| x["name"] == item["name"]) {
                Some(existing) => merge(existing, item),
                None => t.push(item.clone()),
            }
        }
        return;
    }
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = json!({});
        }
        let Some(t) = target.as_object_mut() else {
            return;
        };
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        let (k, v) = (k.trim_end_matches('='), v.trim_start_matches('='));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some((*n).to_string()), None),
        [r, n, s] => (*r, Some((*n).to_string()), Some((*s).to_string())),
        _ => return None,
    };
    Some(Target {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        resource: resource.to_string(),
        name,
        sub,
    })
}

type Body = BoxBody<Bytes, Infallible>;

fn reply(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn fail(code: u16, reason: &str, message: &str) -> Response<Body> {
    reply(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &status(code, reason, message),
    )
}

impl State {
    fn now() -> String {
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_string()
    }

    /// Record a change and tell the watchers.
    fn emit(&mut self, kind: &str, group: &str, resource: &str, ns: &str, obj: &Value) {
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": obj})));
        self.history.push((
            self.rv,
            group.to_string(),
            resource.to_string(),
            ns.to_string(),
            line.clone(),
        ));
        self.watchers.retain(|w| {
            if w.group == group
                && w.resource == resource
                && w.namespace.as_deref().is_none_or(|n| n == ns)
            {
                w.tx.send(line.clone()).is_ok()
            } else {
                !w.tx.is_closed()
            }
        });
    }

    fn stamp(&mut self, t: &Target, obj: &mut Value, existing: Option<&Value>) {
        self.rv += 1;
        let api_version = if t.group.is_empty() {
            t.version.clone()
        } else {
            format!("{}/{}", t.group, t.version)
        };
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind_of(&t.resource));
        let meta = &mut obj["metadata"];
        meta["resourceVersion"] = json!(self.rv.to_string());
        if let Some(ns) = &t.namespace {
            meta["namespace"] = json!(ns);
        }
        match existing {
            Some(e) => {
                meta["uid"] = e["metadata"]["uid"].clone();
                meta["creationTimestamp"] = e["metadata"]["creationTimestamp"].clone();
                let generation = e["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = e.get("spec") != obj.get("spec");
                obj["metadata"]["generation"] = json!(generation + i64::from(changed));
            }
            None => {
                self.uid += 1;
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uid));
                meta["creationTimestamp"] = json!(Self::now());
                meta["generation"] = json!(1);
            }
        }
    }

    fn put_object(&mut self, t: &Target, name: &str, mut obj: Value) -> Value {
        let key = (
            t.group.clone(),
            t.resource.clone(),
            t.namespace.clone().unwrap_or_default(),
            name.to_string(),
        );
        let existing = self.objects.get(&key).cloned();
        obj["metadata"]["name"] = json!(name);
        obj.as_object_mut()
            .map(|o| o.remove("managedFields"))
            .unwrap_or_default();
        self.stamp(t, &mut obj, existing.as_ref());
        self.objects.insert(key, obj.clone());
        let kind = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.emit(
            kind,
            &t.group,
            &t.resource,
            &t.namespace.clone().unwrap_or_default(),
            &obj,
        );
        obj
    }
}

// === impl FakeApiServer ===

impl FakeApiServer {
    /// Start on a free loopback port.
    pub async fn start() -> std::io::Result<FakeApiServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(FakeApiServer { addr, state, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write a kubeconfig pointing at this server (bearer token, namespace
    /// `default`).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: fake\n  user:\n    token: fake-admin-token\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(path, cfg)
    }

    /// Create or replace an object (its path comes from `apiVersion`, a
    /// plural given by the caller, and `metadata`). Returns it as stored.
    pub fn put(&self, resource: &str, obj: Value) -> Value {
        let api_version = obj["apiVersion"].as_str().unwrap_or("v1").to_string();
        let (group, version) = api_version
            .split_once('/')
            .map_or((String::new(), api_version.clone()), |(g, v)| {
                (g.to_string(), v.to_string())
            });
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let t = Target {
            group,
            version,
            namespace: obj["metadata"]["namespace"].as_str().map(str::to_string),
            resource: resource.to_string(),
            name: Some(name.clone()),
            sub: None,
        };
        self.lock().put_object(&t, &name, obj)
    }

    /// An object, if it exists (`group` is `""` for the core group).
    pub fn get(&self, group: &str, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(
                group.to_string(),
                resource.to_string(),
                namespace.to_string(),
                name.to_string(),
            ))
            .cloned()
    }

    /// Every object of a resource.
    pub fn list(&self, group: &str, resource: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((g, r, _, _), _)| g == group && r == resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Let TokenReviews of `token` authenticate as `who`.
    pub fn set_token(&self, token: &str, who: TokenIdentity) {
        self.lock().tokens.insert(token.to_string(), who);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().log.clone()
    }
}

async fn handle(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.to_string());
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return fail(400, "BadRequest", &e.to_string()),
    };
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    lock().log.push(Seen {
        method: parts.method.to_string(),
        uri: uri.clone(),
        content_type: content_type.clone(),
    });
    let (path, query) = uri.split_once('?').unwrap_or((&uri, ""));
    let Some(t) = parse_path(path) else {
        return fail(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        );
    };
    let ns = t.namespace.clone().unwrap_or_default();
    match (&parts.method, t.name.clone()) {
        (&Method::GET, None) => list_or_watch(&mut lock(), &t, query),
        (&Method::GET, Some(name)) => get_one(&lock(), &t, ns, &name),
        (&Method::POST, None) if t.resource == "tokenreviews" => {
            with_json(&body, |review| token_review(&lock(), &review))
        }
        (&Method::POST, None) => with_json(&body, |obj| create(&mut lock(), &t, ns, obj)),
        (&Method::PUT, Some(name)) => {
            with_json(&body, |obj| replace(&mut lock(), &t, ns, &name, obj))
        }
        (&Method::PATCH, Some(name)) => {
            let force = matches!(query_param(query, "force").as_deref(), Some("true"));
            let ct = content_type.as_deref().unwrap_or_default();
            with_json(&body, |p| {
                apply_patch(&mut lock(), &t, ns, &name, p, ct, force)
            })
        }
        (&Method::DELETE, Some(name)) => delete(&mut lock(), &t, ns, &name),
        _ => fail(405, "MethodNotAllowed", "method not supported here"),
    }
}

/// `f` of the body as JSON, or 400.
fn with_json(body: &Bytes, f: impl FnOnce(Value) -> Response<Body>) -> Response<Body> {
    match serde_json::from_slice(body) {
        Ok(v) => f(v),
        Err(e) => fail(400, "BadRequest", &e.to_string()),
    }
}

fn not_found_name(t: &Target, name: &str) -> Response<Body> {
    fail(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", t.resource),
    )
}

/// LIST (label selector equality terms) or WATCH (replayed from the
/// requested resourceVersion, then held open).
fn list_or_watch(st: &mut State, t: &Target, query: &str) -> Response<Body> {
    let watch = matches!(query_param(query, "watch").as_deref(), Some("true" | "1"));
    let selector = query_param(query, "labelSelector").unwrap_or_default();
    if watch {
        let from: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(st.rv);
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        for (rv, g, r, n, line) in &st.history {
            if *rv > from
                && *g == t.group
                && *r == t.resource
                && t.namespace.as_deref().is_none_or(|x| x == n)
            {
                let _ = tx.send(line.clone());
            }
        }
        st.watchers.push(Watcher {
            group: t.group.clone(),
            resource: t.resource.clone(),
            namespace: t.namespace.clone(),
            tx,
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((g, r, n, _), v)| {
            *g == t.group
                && *r == t.resource
                && t.namespace.as_deref().is_none_or(|x| x == n)
                && labels_match(v, &selector)
        })
        .map(|(_, v)| v.clone())
        .collect();
    let api_version = if t.group.is_empty() {
        t.version.clone()
    } else {
        format!("{}/{}", t.group, t.version)
    };
    reply(
        StatusCode::OK,
        &json!({
            "apiVersion": api_version,
            "kind": format!("{}List", kind_of(&t.resource)),
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        }),
    )
}

fn get_one(st: &State, t: &Target, ns: String, name: &str) -> Response<Body> {
    match st
        .objects
        .get(&(t.group.clone(), t.resource.clone(), ns, name.to_string()))
    {
        Some(o) => reply(StatusCode::OK, o),
        None => not_found_name(t, name),
    }
}

/// A TokenReview, answered from the token table.
fn token_review(st: &State, review: &Value) -> Response<Body> {
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let audiences = review["spec"]["audiences"].clone();
    let status = match st.tokens.get(token) {
        Some(w) => json!({
            "authenticated": true,
            "audiences": audiences,
            "user": {
                "username": w.username,
                "uid": format!("sa-uid-{}", w.pod_name),
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/pod-name": [w.pod_name],
                    "authentication.kubernetes.io/pod-uid": [w.pod_uid],
                }
            }
        }),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    reply(
        StatusCode::CREATED,
        &json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "metadata": {"creationTimestamp": null},
            "spec": review["spec"], "status": status
        }),
    )
}

/// POST: 409 `AlreadyExists` when the name is taken.
fn create(st: &mut State, t: &Target, ns: String, obj: Value) -> Response<Body> {
    let name = match obj["metadata"]["name"].as_str() {
        Some(n) => n.to_string(),
        None => {
            let prefix = obj["metadata"]["generateName"].as_str().unwrap_or("obj-");
            format!("{prefix}{:05}", st.rv + 1)
        }
    };
    let key = (t.group.clone(), t.resource.clone(), ns, name.clone());
    if st.objects.contains_key(&key) {
        return fail(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", t.resource),
        );
    }
    let stored = st.put_object(t, &name, obj);
    reply(StatusCode::CREATED, &stored)
}

/// PUT: 409 `Conflict` on a stale `metadata.resourceVersion`; on `/status`
/// only the status is replaced.
fn replace(st: &mut State, t: &Target, ns: String, name: &str, mut obj: Value) -> Response<Body> {
    let key = (t.group.clone(), t.resource.clone(), ns, name.to_string());
    let Some(existing) = st.objects.get(&key).cloned() else {
        return not_found_name(t, name);
    };
    if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
        && Some(rv) != existing["metadata"]["resourceVersion"].as_str()
    {
        return fail(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                t.resource
            ),
        );
    }
    if t.sub.as_deref() == Some("status") {
        let mut next = existing;
        next["status"] = obj["status"].take();
        obj = next;
    }
    let stored = st.put_object(t, name, obj);
    reply(StatusCode::OK, &stored)
}

/// PATCH: server-side apply, JSON patch, or merge (JSON and strategic).
fn apply_patch(
    st: &mut State,
    t: &Target,
    ns: String,
    name: &str,
    patch: Value,
    ct: &str,
    force: bool,
) -> Response<Body> {
    let key = (t.group.clone(), t.resource.clone(), ns, name.to_string());
    let existing = st.objects.get(&key).cloned();
    let next = if ct.starts_with("application/apply-patch") {
        match server_side_apply(t, name, existing, patch, force) {
            Ok(v) => v,
            Err(r) => return *r,
        }
    } else {
        let Some(mut e) = existing else {
            return not_found_name(t, name);
        };
        if ct.starts_with("application/json-patch") {
            let ops: json_patch::Patch = match serde_json::from_value(patch) {
                Ok(p) => p,
                Err(e) => return fail(400, "BadRequest", &e.to_string()),
            };
            if let Err(err) = json_patch::patch(&mut e, &ops) {
                return fail(422, "Invalid", &err.to_string());
            }
        } else {
            merge(&mut e, &patch);
        }
        e
    };
    let stored = st.put_object(t, name, next);
    reply(StatusCode::OK, &stored)
}

/// Server-side apply, approximated: on `/status` the applied status
/// replaces the stored one, elsewhere a merge that creates a missing
/// object; a Lease holder held by another identity is a 409 without `force`.
fn server_side_apply(
    t: &Target,
    name: &str,
    existing: Option<Value>,
    patch: Value,
    force: bool,
) -> Result<Value, Box<Response<Body>>> {
    if t.resource == "leases"
        && !force
        && let Some(e) = &existing
        && let (Some(held), Some(wanted)) = (
            e["spec"]["holderIdentity"].as_str(),
            patch["spec"]["holderIdentity"].as_str(),
        )
        && held != wanted
    {
        return Err(Box::new(fail(
            409,
            "Conflict",
            &format!(
                "Apply failed with 1 conflict: conflict with \"{held}\": .spec.holderIdentity"
            ),
        )));
    }
    Ok(match (existing, t.sub.as_deref()) {
        (Some(mut e), Some("status")) => {
            e["status"] = patch["status"].clone();
            e
        }
        (None, Some(_)) => return Err(Box::new(not_found_name(t, name))),
        (Some(mut e), _) => {
            merge(&mut e, &patch);
            e
        }
        (None, None) => patch,
    })
}

fn delete(st: &mut State, t: &Target, ns: String, name: &str) -> Response<Body> {
    let key = (
        t.group.clone(),
        t.resource.clone(),
        ns.clone(),
        name.to_string(),
    );
    match st.objects.remove(&key) {
        Some(o) => {
            st.rv += 1;
            st.emit("DELETED", &t.group, &t.resource, &ns, &o);
            reply(StatusCode::OK, &o)
        }
        None => not_found_name(t, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_removes_nulls_and_replaces_lists() {
        let mut v = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge(&mut v, &json!({"a": {"b": null, "c": [3]}, "e": "x"}));
        assert_eq!(v, json!({"a": {"c": [3]}, "d": 1, "e": "x"}));
        let mut w = json!({"webhooks": [{"name": "a", "rules": [1], "clientConfig": {}}]});
        merge(
            &mut w,
            &json!({"webhooks": [{"name": "a", "clientConfig": {"caBundle": "Q0E="}}]}),
        );
        assert_eq!(
            w,
            json!({"webhooks": [{"name": "a", "rules": [1], "clientConfig": {"caBundle": "Q0E="}}]})
        );
    }

    #[test]
    fn paths_and_selectors_parse() {
        let t = parse_path("/apis/tokenwarden.dev/v1alpha1/namespaces/a/tokenbudgets/b/status")
            .unwrap();
        assert_eq!(
            (
                t.group.as_str(),
                t.namespace.as_deref(),
                t.resource.as_str()
            ),
            ("tokenwarden.dev", Some("a"), "tokenbudgets")
        );
        assert_eq!(
            (t.name.as_deref(), t.sub.as_deref()),
            (Some("b"), Some("status"))
        );
        let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        assert!(labels_match(&pod, "a=1,b=2"));
        assert!(labels_match(&pod, &percent_decode("a%3D1")));
        assert!(!labels_match(&pod, "a=2"));
    }
}
