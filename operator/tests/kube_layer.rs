//! The Kubernetes layer against an in-process API server (tower-test mock
//! pairs): exact requests and the resulting state, one scenario per path.
//! `every_api_call_is_declared_and_exercised` runs all scenarios through one
//! recording log and checks it against `api_calls()`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use http::Method;
use kube::{Client, client::Body};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tokenwarden_core::{cluster_ledger::ClusterLedgerState, workload::ObjectRef};
use tokenwarden_crds::{RoutingPolicyStatus, TokenBudgetStatus};
use tokenwarden_operator::{
    admin::{self, AdminState},
    engine::Cmd,
    kube::{
        KubeSource, LedgerReview, SourceOptions, TokenReviewAuth, api_calls, grants, leader,
        ledger::ConfigMapLedger, rbac_request,
    },
    metrics::Metrics,
    source::{
        Authenticator, Claim, Event, EventType, Identity, Leadership, ObjectSource, Objects,
        Regarding,
    },
};
use tokenwarden_tests::{
    mock_api::{self, Auto, Log, MockApi, Scenario, Seen, new_log},
    probe::get_over,
};
use tokio::sync::{mpsc, watch};

const OPERATOR_NS: &str = "tokenwarden-system";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.secret-token";

// === harness ===

/// The API server side of a mock `kube::Client` (the harness's `MockApi`).
type ApiServer = MockApi<Body, Body>;

fn mock(log: &Log) -> (Client, ApiServer) {
    let (service, api) = mock_api::pair(log);
    (Client::new(service, "default"), api)
}

fn not_found(resource: &str, name: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{resource} \"{name}\" not found"), "reason": "NotFound",
        "details": {"name": name, "kind": resource}, "code": 404
    })
}

fn list(kind: &str, items: &[Value], resource_version: &str) -> Value {
    json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": kind,
        "metadata": {"resourceVersion": resource_version}, "items": items
    })
}

fn watch_events(events: &[(&str, &Value)]) -> String {
    events
        .iter()
        .map(|(type_, object)| format!("{}\n", json!({"type": type_, "object": object})))
        .collect()
}

/// Answer LIST and WATCH of RoutingPolicies/TokenBudgets on `api` (lists
/// with these items, watches parked), so that the test sees only the rest.
fn serve_lists(api: &mut ApiServer, policies: Vec<Value>, budgets: Vec<Value>) {
    api.auto_answer(Box::new(move |seen: &Seen| {
        let path = seen.path();
        let collection = path.ends_with("/routingpolicies") || path.ends_with("/tokenbudgets");
        if seen.method != "GET" || !collection {
            return None;
        }
        Some(if seen.uri.contains("watch=true") {
            Auto::Park
        } else if path.ends_with("/routingpolicies") {
            Auto::Json(200, list("RoutingPolicyList", &policies, "100"))
        } else {
            Auto::Json(200, list("TokenBudgetList", &budgets, "100"))
        })
    }));
}

async fn synced(rx: &mut watch::Receiver<Option<Arc<Objects>>>) -> Arc<Objects> {
    let objects = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(Option::is_some))
        .await
        .expect("objects within 2 s")
        .unwrap()
        .clone();
    objects.unwrap()
}

fn budget(ns: &str, name: &str, uid: &str, rv: &str, tokens: u64) -> Value {
    json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenBudget",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": rv, "generation": 1},
        "spec": {"period": "Weekly", "limit": {"tokens": tokens}}
    })
}

fn policy(ns: &str, name: &str, uid: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "RoutingPolicy",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": rv, "generation": 2},
        "spec": {"providers": [{"name": "openai", "api": "openai", "baseUrl": "https://api.openai.com",
                                "apiKeySecretRef": {"name": "keys", "key": "openai"}}]}
    })
}

fn id(ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn budget_tokens(objects: &Objects, ns: &str, name: &str) -> Option<Value> {
    objects
        .budgets
        .get(&id(ns, name))
        .map(|b| serde_json::to_value(&b.spec.limit).unwrap()["tokens"].clone())
}

// === scenarios (each returns after asserting; the coverage test reruns them) ===

/// LIST then WATCH of both kinds: `None` until both lists arrived; then
/// add, modify and delete from watch events.
async fn scenario_reflector(log: &Log) {
    let (client, mut api) = mock(log);
    let source = KubeSource::start_with(
        client,
        SourceOptions {
            coalesce: Duration::from_millis(20),
            instance: None,
            cache_secrets: false,
        },
    );
    let mut rx = source.objects();

    // Two LISTs, in either order.
    let mut lists = BTreeMap::new();
    for _ in 0..2 {
        let (seen, send) = api.next().await;
        assert_eq!(seen.method, "GET");
        lists.insert(seen.uri.clone(), send);
    }
    let uris: Vec<&String> = lists.keys().collect();
    assert_eq!(
        uris,
        vec![
            "/apis/tokenwarden.dev/v1alpha1/routingpolicies?&limit=500",
            "/apis/tokenwarden.dev/v1alpha1/tokenbudgets?&limit=500",
        ]
    );
    let mut lists = lists.into_values();
    lists.next().unwrap().json(
        200,
        &list(
            "RoutingPolicyList",
            &[policy("team-a", "route", "uid-p", "10")],
            "12",
        ),
    );
    // One kind listed is not synced.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        rx.borrow().is_none(),
        "objects published before both lists synced"
    );
    lists.next().unwrap().json(
        200,
        &list(
            "TokenBudgetList",
            &[budget("team-a", "b1", "uid-b1", "11", 1000)],
            "12",
        ),
    );
    let objects = synced(&mut rx).await;
    assert_eq!(
        objects.policies.keys().cloned().collect::<Vec<_>>(),
        vec![id("team-a", "route")]
    );
    assert_eq!(
        objects.budgets.keys().cloned().collect::<Vec<_>>(),
        vec![id("team-a", "b1")]
    );
    assert_eq!(budget_tokens(&objects, "team-a", "b1"), Some(json!(1000)));
    assert!(objects.errors.is_empty());

    // Two WATCHes from the lists' resourceVersion.
    let mut watches = BTreeMap::new();
    for _ in 0..2 {
        let (seen, send) = api.next().await;
        assert_eq!(seen.method, "GET");
        watches.insert(seen.uri.clone(), send);
    }
    let uris: Vec<&String> = watches.keys().collect();
    assert_eq!(
        uris,
        vec![
            "/apis/tokenwarden.dev/v1alpha1/routingpolicies?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=12",
            "/apis/tokenwarden.dev/v1alpha1/tokenbudgets?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=12",
        ]
    );
    let mut watches = watches.into_values();
    api.parked.push(watches.next().unwrap());

    // Add b2 and modify b1 in one burst.
    rx.mark_unchanged();
    watches.next().unwrap().raw(watch_events(&[
        ("ADDED", &budget("team-b", "b2", "uid-b2", "13", 5)),
        ("MODIFIED", &budget("team-a", "b1", "uid-b1", "14", 2000)),
    ]));
    tokio::time::timeout(
        Duration::from_secs(2),
        rx.wait_for(|o| {
            o.as_ref().is_some_and(|o| {
                o.budgets.len() == 2 && budget_tokens(o, "team-a", "b1") == Some(json!(2000))
            })
        }),
    )
    .await
    .expect("add + modify published")
    .unwrap();

    // The watch reply ended: the watcher re-watches from the last version; delete b2.
    let (seen, send) = api.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        (
            "GET",
            "/apis/tokenwarden.dev/v1alpha1/tokenbudgets?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=14"
        )
    );
    send.raw(watch_events(&[(
        "DELETED",
        &budget("team-b", "b2", "uid-b2", "15", 5),
    )]));
    let objects = tokio::time::timeout(
        Duration::from_secs(2),
        rx.wait_for(|o| o.as_ref().is_some_and(|o| o.budgets.len() == 1)),
    )
    .await
    .expect("delete published")
    .unwrap()
    .clone()
    .unwrap();
    assert_eq!(
        objects.budgets.keys().cloned().collect::<Vec<_>>(),
        vec![id("team-a", "b1")]
    );
    assert_eq!(budget_tokens(&objects, "team-a", "b1"), Some(json!(2000)));
    assert_eq!(objects.policies.len(), 1);
    // Parks the next budget watch.
    let (seen, send) = api.next().await;
    assert!(
        seen.uri.contains("watch=true&") && seen.uri.ends_with("resourceVersion=15"),
        "{}",
        seen.uri
    );
    api.parked.push(send);
}

fn source_with_objects(log: &Log) -> (Arc<KubeSource>, ApiServer) {
    let (client, mut api) = mock(log);
    serve_lists(
        &mut api,
        vec![policy("team-a", "route", "uid-p", "10")],
        vec![budget("team-a", "b1", "uid-b1", "11", 1000)],
    );
    let source = KubeSource::start_with(
        client,
        SourceOptions {
            coalesce: Duration::from_millis(10),
            instance: Some("tokenwarden-operator-0".into()),
            cache_secrets: false,
        },
    );
    (source, api)
}

/// A new leader's fresh read: both kinds listed again, cluster-wide, without
/// a resourceVersion (a quorum read, not the watch cache), statuses included.
async fn scenario_fresh_read(log: &Log) {
    let (source, mut api) = source_with_objects(log);
    let mut rx = source.objects();
    let sync = tokio::spawn(async move { synced(&mut rx).await });
    api.silent(Duration::from_millis(300)).await;
    sync.await.unwrap();
    let before = log.lock().unwrap().len();
    let fresh = {
        let source = source.clone();
        tokio::spawn(async move { source.fresh().await })
    };
    api.silent(Duration::from_millis(300)).await;
    let objects = fresh.await.unwrap().expect("fresh read");
    assert_eq!(
        objects.budgets.keys().cloned().collect::<Vec<_>>(),
        vec![id("team-a", "b1")]
    );
    assert_eq!(budget_tokens(&objects, "team-a", "b1"), Some(json!(1000)));
    assert_eq!(
        objects.policies.keys().cloned().collect::<Vec<_>>(),
        vec![id("team-a", "route")]
    );
    let lists: Vec<String> = log.lock().unwrap()[before..]
        .iter()
        .filter(|s| s.method == "GET" && !s.uri.contains("watch=true"))
        .map(|s| s.uri.clone())
        .collect();
    assert_eq!(
        lists,
        vec![
            "/apis/tokenwarden.dev/v1alpha1/routingpolicies?".to_string(),
            "/apis/tokenwarden.dev/v1alpha1/tokenbudgets?".to_string(),
        ]
    );
}

/// The cluster ledger ConfigMap: read (absent = empty), written by forced
/// server-side apply with our field manager, read back; errors surface.
async fn scenario_cluster_ledger_configmap(log: &Log) {
    let (client, mut api) = mock(log);
    let store = Arc::new(ConfigMapLedger::new(
        client,
        OPERATOR_NS,
        "tokenwarden-ledger",
    ));
    let path = format!("/api/v1/namespaces/{OPERATOR_NS}/configmaps/tokenwarden-ledger");
    let read = |store: &Arc<ConfigMapLedger>| {
        let store = store.clone();
        tokio::spawn(async move { store.read().await })
    };

    let t = read(&store);
    let (seen, send) = api.next().await;
    assert_eq!((seen.method.as_str(), seen.path()), ("GET", path.as_str()));
    send.json(404, &not_found("configmaps", "tokenwarden-ledger"));
    assert_eq!(t.await.unwrap().unwrap(), ClusterLedgerState::default());

    let state: ClusterLedgerState = serde_json::from_value(json!({
        "watermarks": {"pod-a": 7, "pod-b": 2},
        "seen": {"pod-a": 1_700_000_000, "pod-b": 1_700_000_100},
        "rows": []
    }))
    .unwrap();
    let t = {
        let store = store.clone();
        let state = state.clone();
        tokio::spawn(async move { store.write(&state).await })
    };
    let (seen, send) = api.next().await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.uri,
        format!("{path}?&force=true&fieldManager=tokenwarden-operator")
    );
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let body = seen.json();
    assert_eq!(body["kind"], "ConfigMap");
    assert_eq!(body["metadata"]["name"], "tokenwarden-ledger");
    let written: ClusterLedgerState =
        serde_json::from_str(body["data"]["ledger.json"].as_str().unwrap()).unwrap();
    assert_eq!(written, state);
    let mut stored = body.clone();
    stored["metadata"]["namespace"] = json!(OPERATOR_NS);
    stored["metadata"]["resourceVersion"] = json!("5");
    send.json(200, &stored);
    t.await.unwrap().expect("ledger write succeeds");

    let t = read(&store);
    let (_, send) = api.next().await;
    send.json(200, &stored);
    assert_eq!(t.await.unwrap().unwrap(), state);

    // A failed write is an error (the engine then does not ack).
    let t = {
        let store = store.clone();
        tokio::spawn(async move { store.write(&state).await })
    };
    let (_, send) = api.next().await;
    send.json(500,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500}),
    );
    let err = t.await.unwrap().unwrap_err().to_string();
    assert!(
        err.starts_with("server-side apply of ConfigMap tokenwarden-ledger: "),
        "{err}"
    );
}

/// TokenBudget status: one server-side apply on /status, forced, our field manager.
async fn scenario_budget_status(log: &Log) {
    let (source, mut api) = source_with_objects(log);
    let status: TokenBudgetStatus = serde_json::from_value(json!({
        "observedGeneration": 1, "spentUsd": "0.25", "remainingUsd": "0.75", "requests": 3,
        "state": "Ok"
    }))
    .unwrap();
    let writer = {
        let source = source.clone();
        let status = status.clone();
        tokio::spawn(async move {
            source
                .write_budget_status(&id("team-a", "b1"), &status)
                .await
        })
    };
    let mut applied = budget("team-a", "b1", "uid-b1", "12", 1000);
    applied["status"] = serde_json::to_value(&status).unwrap();
    Scenario::new()
        .request(
            Method::PATCH,
            "/apis/tokenwarden.dev/v1alpha1/namespaces/team-a/tokenbudgets/b1/status?&force=true&fieldManager=tokenwarden-operator",
        )
        .content_type("application/apply-patch+yaml")
        .body(json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenBudget",
            "metadata": {"name": "b1"},
            "status": {"observedGeneration": 1, "spentUsd": "0.25", "remainingUsd": "0.75",
                       "requests": 3, "state": "Ok"}
        }))
        .reply(200, applied)
        .run(&mut api)
        .await;

    writer.await.unwrap().expect("status write succeeds");

    // A conflict or any API error comes back as an error: the ledger must not ack.
    let writer = {
        let source = source.clone();
        tokio::spawn(async move {
            source
                .write_budget_status(&id("team-a", "gone"), &status)
                .await
        })
    };
    Scenario::new()
        .request(
            Method::PATCH,
            "/apis/tokenwarden.dev/v1alpha1/namespaces/team-a/tokenbudgets/gone/status?&force=true&fieldManager=tokenwarden-operator",
        )
        .reply(404, not_found("tokenbudgets.tokenwarden.dev", "gone"))
        .run(&mut api)
        .await;

    let err = writer.await.unwrap().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("server-side apply of TokenBudget team-a/gone status: "),
        "{err}"
    );
}

/// RoutingPolicy status: the same, on routingpolicies.
async fn scenario_policy_status(log: &Log) {
    let (source, mut api) = source_with_objects(log);
    let status: RoutingPolicyStatus = serde_json::from_value(json!({
        "observedGeneration": 2, "routeCount": 0, "sidecars": "3/4",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Compiled",
                        "message": "3 of 4 sidecars run version 7", "lastTransitionTime": "2026-11-01T00:00:00Z",
                        "observedGeneration": 2}]
    }))
    .unwrap();
    let writer = {
        let source = source.clone();
        let status = status.clone();
        tokio::spawn(async move {
            source
                .write_policy_status(&id("team-a", "route"), &status)
                .await
        })
    };
    let mut applied = policy("team-a", "route", "uid-p", "13");
    applied["status"] = serde_json::to_value(&status).unwrap();
    let seen = Scenario::new()
        .request(
            Method::PATCH,
            "/apis/tokenwarden.dev/v1alpha1/namespaces/team-a/routingpolicies/route/status?&force=true&fieldManager=tokenwarden-operator",
        )
        .content_type("application/apply-patch+yaml")
        .body(json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "RoutingPolicy",
            "metadata": {"name": "route"},
            "status": serde_json::to_value(&status).unwrap(),
        }))
        .reply(200, applied)
        .run(&mut api)
        .await;
    assert_eq!(seen[0].json()["status"]["sidecars"], json!("3/4"));

    writer.await.unwrap().expect("status write succeeds");
}

/// Events: created on the object (uid from the cache) in its namespace; a
/// repeat patches the Event's series; an unknown object records nothing.
async fn scenario_events(log: &Log) {
    let (source, mut api) = source_with_objects(log);
    // Serve the lists (and park the watches) until the cache has the objects.
    api.silent(Duration::from_millis(300)).await;
    synced(&mut source.objects()).await;
    let event = Event {
        regarding: Regarding::Budget(id("team-a", "b1")),
        type_: EventType::Warning,
        reason: "ThresholdCrossed".into(),
        message: "80% of the weekly token limit used".into(),
    };
    let recorder = {
        let source = source.clone();
        let event = event.clone();
        tokio::spawn(async move { source.event(&event).await })
    };
    let (seen, send) = api.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/apis/events.k8s.io/v1/namespaces/team-a/events?")
    );
    assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    let mut body = seen.json();
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("b1."), "{name}");
    assert!(body["eventTime"].is_string());
    body["metadata"].as_object_mut().unwrap().remove("name");
    body.as_object_mut().unwrap().remove("eventTime");
    assert_eq!(
        body,
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "action": "ThresholdCrossed",
            "metadata": {"namespace": "team-a"},
            "note": "80% of the weekly token limit used",
            "reason": "ThresholdCrossed",
            "regarding": {"apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenBudget", "name": "b1",
                          "namespace": "team-a", "uid": "uid-b1"},
            "reportingController": "tokenwarden-operator",
            "reportingInstance": "tokenwarden-operator-0",
            "type": "Warning",
        })
    );
    let mut created = seen.json();
    created["metadata"]["resourceVersion"] = json!("1");
    send.json(201, &created);
    recorder.await.unwrap();

    // The same Event again: a series patch on the Event just created.
    let recorder = {
        let source = source.clone();
        let event = event.clone();
        tokio::spawn(async move { source.event(&event).await })
    };
    let (seen, send) = api.next().await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.uri,
        format!("/apis/events.k8s.io/v1/namespaces/team-a/events/{name}?")
    );
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(seen.json()["series"]["count"], json!(2));
    send.json(200, &created);
    recorder.await.unwrap();

    // Not in the cache: nothing is sent.
    source
        .event(&Event {
            regarding: Regarding::Policy(id("team-a", "nope")),
            ..event
        })
        .await;
    api.silent(Duration::from_millis(200)).await;
}

fn bound_claim() -> Claim {
    Claim {
        namespace: "team-a".into(),
        pod_name: "app-7d9f".into(),
        pod_uid: "uid-pod-1".into(),
        // What the sidecar says; never used.
        labels: BTreeMap::from([("app".to_string(), "lies".to_string())]),
        credential: TOKEN.into(),
    }
}

fn review_status(
    authenticated: bool,
    audiences: &[&str],
    user: &str,
    pod: &str,
    uid: &str,
) -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {},
        "spec": {"token": TOKEN, "audiences": ["tokenwarden"]},
        "status": {
            "authenticated": authenticated,
            "audiences": audiences,
            "user": {
                "username": user, "uid": "sa-uid",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/pod-name": [pod],
                    "authentication.kubernetes.io/pod-uid": [uid],
                    "authentication.kubernetes.io/credential-id": ["JTI=abc"]
                }
            }
        }
    })
}

fn pod(uid: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app-7d9f", "namespace": "team-a", "uid": uid,
                     "labels": {"app": "chat", "tokenwarden.dev/inject": "enabled"}},
        "spec": {"serviceAccountName": "chat", "containers": [{"name": "app", "image": "app"}]}
    })
}

/// One authentication: asserts the TokenReview request, answers it with
/// `review`, then (when `pod` is given) asserts and answers the Pod GET.
async fn authenticate(
    log: &Log,
    review: Value,
    pod: Option<(u16, Value)>,
) -> (Result<Identity, String>, TokenReviewAuth, ApiServer) {
    let (client, mut api) = mock(log);
    let auth = Arc::new(TokenReviewAuth::new(client));
    let task = {
        let auth = auth.clone();
        tokio::spawn(async move { auth.authenticate(&bound_claim()).await })
    };
    let mut exchange = Scenario::new()
        .request(Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews?")
        .content_type("application/json")
        .body(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {},
            "spec": {"token": TOKEN, "audiences": ["tokenwarden"]}
        }))
        .reply(201, review);
    if let Some((status, body)) = pod {
        exchange = exchange
            .request(Method::GET, "/api/v1/namespaces/team-a/pods/app-7d9f")
            .reply(status, body);
    }
    exchange.run(&mut api).await;
    let result = task.await.unwrap().map_err(|e| e.to_string());
    if let Err(e) = &result {
        assert!(
            !e.contains("secret-token"),
            "the token leaked into an error: {e}"
        );
    }
    let auth = Arc::into_inner(auth).unwrap();
    (result, auth, api)
}

const SA: &str = "system:serviceaccount:team-a:chat";

async fn scenario_token_review_ok(log: &Log) {
    let (result, auth, mut api) = authenticate(
        log,
        review_status(true, &["tokenwarden"], SA, "app-7d9f", "uid-pod-1"),
        Some((200, pod("uid-pod-1"))),
    )
    .await;
    let expected = Identity {
        namespace: "team-a".into(),
        pod_name: "app-7d9f".into(),
        pod_uid: "uid-pod-1".into(),
        labels: BTreeMap::from([
            ("app".to_string(), "chat".to_string()),
            ("tokenwarden.dev/inject".to_string(), "enabled".to_string()),
        ]),
    };
    assert_eq!(result, Ok(expected.clone()));
    // A reconnect with the same token: from the cache, no API call.
    assert_eq!(auth.authenticate(&bound_claim()).await, Ok(expected));
    api.silent(Duration::from_millis(100)).await;
}

async fn auth_error(log: &Log, review: Value, pod: Option<(u16, Value)>) -> String {
    authenticate(log, review, pod).await.0.unwrap_err()
}

async fn scenario_token_review_refusals(log: &Log) {
    let mut unauthenticated = review_status(false, &[], "", "", "");
    unauthenticated["status"] = json!({"authenticated": false, "error": "[invalid bearer token, service account token has expired]"});
    assert_eq!(
        auth_error(log, unauthenticated, None).await,
        "pod team-a/app-7d9f: the API server rejected the service-account token: \
         [invalid bearer token, service account token has expired]"
    );
    assert_eq!(
        auth_error(
            log,
            review_status(
                true,
                &["https://kubernetes.default.svc"],
                SA,
                "app-7d9f",
                "uid-pod-1"
            ),
            None
        )
        .await,
        "pod team-a/app-7d9f: the token is valid for audiences [\"https://kubernetes.default.svc\"], not \"tokenwarden\" \
         (mount a projected service-account token with audience tokenwarden)"
    );
    assert_eq!(
        auth_error(
            log,
            review_status(
                true,
                &["tokenwarden"],
                "system:serviceaccount:team-b:chat",
                "app-7d9f",
                "uid-pod-1"
            ),
            None
        )
        .await,
        "pod team-a/app-7d9f: the token belongs to \"system:serviceaccount:team-b:chat\", not to a service account in namespace \"team-a\""
    );
    assert_eq!(
        auth_error(
            log,
            review_status(true, &["tokenwarden"], SA, "other-pod", "uid-pod-1"),
            None
        )
        .await,
        "pod team-a/app-7d9f: the token is bound to pod \"other-pod\", not \"app-7d9f\""
    );
    assert_eq!(
        auth_error(
            log,
            review_status(true, &["tokenwarden"], SA, "app-7d9f", "uid-other"),
            None
        )
        .await,
        "pod team-a/app-7d9f: the token is bound to pod uid \"uid-other\", not \"uid-pod-1\""
    );
    assert_eq!(
        auth_error(
            log,
            review_status(true, &["tokenwarden"], SA, "app-7d9f", "uid-pod-1"),
            Some((404, not_found("pods", "app-7d9f")))
        )
        .await,
        "pod team-a/app-7d9f does not exist"
    );
    // The token names the claimed uid, but the pod by that name is another one.
    assert_eq!(
        auth_error(
            log,
            review_status(true, &["tokenwarden"], SA, "app-7d9f", "uid-pod-1"),
            Some((200, pod("uid-pod-2")))
        )
        .await,
        "pod team-a/app-7d9f has uid \"uid-pod-2\", the token is bound to \"uid-pod-1\" (the pod was replaced)"
    );
    // A token with no pod binding (a legacy Secret token).
    let mut unbound = review_status(true, &["tokenwarden"], SA, "", "");
    unbound["status"]["user"]["extra"] = json!({});
    assert_eq!(
        auth_error(log, unbound, None).await,
        "pod team-a/app-7d9f: the token is not bound to a pod (no authentication.kubernetes.io/pod-name); \
         use a projected service-account token"
    );
}

// === /ledger on the admin port: TokenReview + SubjectAccessReview ===

/// A client on the pod network (not loopback).
const REMOTE: &str = "10.244.1.7:40312";
const READER: &str = "system:serviceaccount:monitoring:dashboards";
/// What the fake engine answers to `Cmd::Ledger`.
fn ledger_body() -> Value {
    json!({"ledger": [{"namespace": "team-a", "workload": "chat", "model": "gpt-5-nano"}]})
}

/// An admin server with `LedgerReview` over `client` and a leading engine
/// that answers `/ledger` with [`ledger_body`].
fn admin_state(client: Client) -> AdminState {
    let (tx, mut rx) = mpsc::channel::<Cmd>(4);
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if let Cmd::Ledger(reply) = cmd {
                let _ = reply.send(ledger_body());
            }
        }
    });
    let engine = watch::channel(Some(tx)).1;
    AdminState {
        metrics: Arc::new(Metrics::new()),
        engine,
        leadership: watch::channel(Leadership {
            leader: true,
            leader_address: None,
        })
        .1,
        synced: watch::channel(true).1,
        tls: None,
        ledger_access: Some(Arc::new(LedgerReview::new(client))),
    }
}

/// The admin answer to `GET path` from `peer`: (status, WWW-Authenticate, body).
type AdminAnswer = (u16, Option<String>, String);

/// Send `GET path` from `peer` to the admin server (over an in-memory
/// connection, so the peer address can be any address).
fn admin_get(
    state: &AdminState,
    peer: &str,
    path: &str,
    authorization: Option<&str>,
) -> tokio::task::JoinHandle<AdminAnswer> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(admin::serve_connection(
        server_io,
        peer.parse().unwrap(),
        state.clone(),
    ));
    let mut headers = vec![("host", "tokenwarden-operator".to_string())];
    if let Some(a) = authorization {
        headers.push(("authorization", a.to_string()));
    }
    let path = path.to_string();
    tokio::spawn(async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, headers, body) = get_over(client_io, &path, &headers).await;
        let www = headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (status, www, body)
    })
}

fn access_review(authenticated: bool, error: Option<&str>) -> Value {
    let mut review = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {},
        "spec": {"token": TOKEN},
        "status": {"authenticated": authenticated,
                   "audiences": ["https://kubernetes.default.svc.cluster.local"]}
    });
    if authenticated {
        review["status"]["user"] = json!({
            "username": READER, "uid": "sa-uid-9",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:monitoring", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/credential-id": ["JTI=def"]}
        });
    }
    if let Some(e) = error {
        review["status"]["error"] = json!(e);
    }
    review
}

/// The TokenReview for the bearer token: the API server's own audience
/// (no `audiences`), the token as sent; answered `status`, `review`.
fn token_review(scenario: Scenario, status: u16, review: Value) -> Scenario {
    scenario
        .request(Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews?")
        .content_type("application/json")
        .body(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {},
            "spec": {"token": TOKEN}
        }))
        .reply(status, review)
}

/// The SubjectAccessReview for the reviewed user: `get` on
/// tokenbudgets.tokenwarden.dev, no namespace (all of them), with the
/// user's groups, uid and extras; answered `allowed` (with `reason`).
fn subject_access_review(scenario: Scenario, allowed: bool, reason: &str) -> Scenario {
    let spec = json!({
        "user": READER, "uid": "sa-uid-9",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:monitoring", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/credential-id": ["JTI=def"]},
        "resourceAttributes": {"verb": "get", "group": "tokenwarden.dev", "resource": "tokenbudgets"}
    });
    let mut status = json!({"allowed": allowed});
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    scenario
        .request(
            Method::POST,
            "/apis/authorization.k8s.io/v1/subjectaccessreviews?",
        )
        .content_type("application/json")
        .body(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "metadata": {}, "spec": spec
        }))
        .reply(
            201,
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                   "metadata": {}, "spec": spec, "status": status}),
        )
}

/// A token the API server authenticates, whose user RBAC allows to get
/// tokenbudgets everywhere: the ledger.
async fn scenario_ledger_allowed(log: &Log) {
    let (client, mut api) = mock(log);
    let state = admin_state(client);
    let get = admin_get(&state, REMOTE, "/ledger", Some(&format!("Bearer {TOKEN}")));
    let exchange = token_review(Scenario::new(), 201, access_review(true, None));
    subject_access_review(
        exchange,
        true,
        "RBAC: allowed by ClusterRoleBinding \"ledger-readers\"",
    )
    .run(&mut api)
    .await;

    let (status, www, body) = get.await.unwrap();
    assert_eq!((status, www), (200, None), "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), ledger_body());
}

/// Authenticated, but RBAC does not allow it: 403 with the reason.
async fn scenario_ledger_forbidden(log: &Log) {
    let (client, mut api) = mock(log);
    let state = admin_state(client);
    // The scheme is case-insensitive (RFC 9110).
    let get = admin_get(&state, REMOTE, "/ledger", Some(&format!("bearer {TOKEN}")));
    let exchange = token_review(Scenario::new(), 201, access_review(true, None));
    subject_access_review(exchange, false, "")
        .run(&mut api)
        .await;

    let (status, www, body) = get.await.unwrap();
    assert_eq!((status, www), (403, None));
    assert_eq!(
        body,
        "forbidden: user \"system:serviceaccount:monitoring:dashboards\" may not get \
         tokenbudgets.tokenwarden.dev in all namespaces\n"
    );
    assert!(!body.contains(TOKEN));
}

/// A token the API server does not authenticate: 401, no SubjectAccessReview.
async fn scenario_ledger_invalid_token(log: &Log) {
    let (client, mut api) = mock(log);
    let state = admin_state(client);
    let get = admin_get(&state, REMOTE, "/ledger", Some(&format!("Bearer {TOKEN}")));
    token_review(
        Scenario::new(),
        201,
        access_review(false, Some("[invalid bearer token, token has expired]")),
    )
    .run(&mut api)
    .await;

    let (status, www, body) = get.await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        www.as_deref(),
        Some("Bearer realm=\"tokenwarden-operator\"")
    );
    assert_eq!(
        body,
        "unauthorized: invalid bearer token: [invalid bearer token, token has expired]\n"
    );
    api.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn ledger_with_an_allowed_token_is_served() {
    scenario_ledger_allowed(&new_log()).await;
}

#[tokio::test]
async fn ledger_with_a_token_rbac_denies_is_403() {
    scenario_ledger_forbidden(&new_log()).await;
}

#[tokio::test]
async fn ledger_with_an_invalid_token_is_401() {
    scenario_ledger_invalid_token(&new_log()).await;
}

/// No token from the pod network: 401 (with the header saying how), and
/// the API server is not asked; health and metrics stay open; a loopback
/// client (`kubectl port-forward`) needs no token.
#[tokio::test]
async fn ledger_without_a_token_is_401_and_other_endpoints_stay_open() {
    let log = new_log();
    let (client, mut api) = mock(&log);
    let state = admin_state(client);
    for auth in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
        Some(TOKEN),
    ] {
        let (status, www, body) = admin_get(&state, REMOTE, "/ledger", auth).await.unwrap();
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert_eq!(
            www.as_deref(),
            Some("Bearer realm=\"tokenwarden-operator\"")
        );
        assert_eq!(
            body,
            "unauthorized: /ledger needs `Authorization: Bearer <token>` (a service-account \
             token whose user may get tokenbudgets.tokenwarden.dev)\n"
        );
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, body) = admin_get(&state, REMOTE, path, None).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
    }
    for peer in ["127.0.0.1:50000", "[::1]:50000", "[::ffff:127.0.0.1]:50000"] {
        let (status, _, body) = admin_get(&state, peer, "/ledger", None).await.unwrap();
        assert_eq!(status, 200, "{peer}: {body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), ledger_body());
    }
    api.silent(Duration::from_millis(200)).await;
}

/// The API server fails the TokenReview: 503 (the token is neither valid
/// nor invalid), never the ledger.
#[tokio::test]
async fn ledger_when_the_token_cannot_be_checked_is_503() {
    let log = new_log();
    let (client, mut api) = mock(&log);
    let state = admin_state(client);
    let get = admin_get(&state, REMOTE, "/ledger", Some(&format!("Bearer {TOKEN}")));
    token_review(
        Scenario::new(),
        500,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500}),
    )
    .run(&mut api)
    .await;

    let (status, _, body) = get.await.unwrap();
    assert_eq!(status, 503);
    assert!(
        body.starts_with("cannot check the bearer token: TokenReview failed: "),
        "{body}"
    );
    assert!(!body.contains(TOKEN));
}

// === the fake Lease/Pod API for leader election ===

/// RFC 7386 merge.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[derive(Default)]
struct Cluster {
    lease: Option<Value>,
    pods: BTreeMap<String, Value>,
    /// Answer Lease patches with 500 (the API server is unreachable for writes).
    fail_lease_patches: bool,
}

type Shared = Arc<Mutex<Cluster>>;

fn leader_pod(name: &str, leader: bool) -> Value {
    let mut labels = json!({"app.kubernetes.io/name": "tokenwarden-operator"});
    if leader {
        labels["tokenwarden.dev/leader"] = json!("true");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": OPERATOR_NS, "labels": labels}})
}

/// Serves Lease GET/POST/PATCH and Pod LIST/PATCH from `cluster` until the
/// client goes away.
fn serve_cluster(mut api: ApiServer, cluster: Shared) -> tokio::task::JoinHandle<()> {
    let lease_path = format!("/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NS}/leases");
    let pod_path = format!("/api/v1/namespaces/{OPERATOR_NS}/pods");
    tokio::spawn(async move {
        while let Some((seen, send)) = api.try_next(Duration::from_secs(3600)).await {
            let mut c = cluster.lock().unwrap();
            let path = seen.path().to_string();
            match (seen.method.as_str(), path.as_str()) {
                ("GET", p) if p == format!("{lease_path}/tokenwarden-operator") => match &c.lease {
                    Some(lease) => send.json(200, lease),
                    None => send.json(
                        404,
                        &not_found("leases.coordination.k8s.io", "tokenwarden-operator"),
                    ),
                },
                ("POST", p) if p == lease_path => {
                    let mut lease = seen.json();
                    lease["metadata"]["namespace"] = json!(OPERATOR_NS);
                    c.lease = Some(lease.clone());
                    send.json(201, &lease);
                }
                ("PATCH", _) if c.fail_lease_patches && path.contains("/leases/") => {
                    send.json(500,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500}),
                    );
                }
                ("PATCH", p) if p == format!("{lease_path}/tokenwarden-operator") => {
                    let lease = c
                        .lease
                        .as_mut()
                        .expect("patch of a lease that does not exist");
                    merge(lease, &seen.json());
                    send.json(200, lease);
                }
                ("GET", p) if p == pod_path => {
                    assert_eq!(
                        seen.uri,
                        format!("{pod_path}?&labelSelector=tokenwarden.dev%2Fleader%3Dtrue")
                    );
                    let items: Vec<Value> = c
                        .pods
                        .values()
                        .filter(|p| {
                            p["metadata"]["labels"]["tokenwarden.dev/leader"] == json!("true")
                        })
                        .cloned()
                        .collect();
                    send.json(200,
                        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
                    );
                }
                ("PATCH", p) if p.starts_with(&format!("{pod_path}/")) => {
                    let name = p.rsplit('/').next().unwrap();
                    let pod = c.pods.get_mut(name).expect("patch of an unknown pod");
                    merge(pod, &seen.json());
                    send.json(200, pod);
                }
                _ => panic!("unexpected request {} {}", seen.method, seen.uri),
            }
        }
    })
}

fn has_leader_label(cluster: &Shared, pod: &str) -> bool {
    cluster.lock().unwrap().pods[pod]["metadata"]["labels"]["tokenwarden.dev/leader"]
        == json!("true")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// This replica wins the Lease, labels its Pod, takes the label from a stale
/// leader and announces its address; another replica takes over; this one
/// steps down, removes its label and redirects to the new leader.
async fn scenario_leader(log: &Log) {
    let (client, api) = mock(log);
    let cluster: Shared = Arc::default();
    {
        let mut c = cluster.lock().unwrap();
        c.pods.insert("op-0".into(), leader_pod("op-0", false));
        c.pods.insert("op-old".into(), leader_pod("op-old", true));
    }
    let server = serve_cluster(api, cluster.clone());
    let config = leader::LeaderConfig {
        lease_duration: 2,
        grace: 1,
        poll: Duration::from_millis(100),
        ..leader::LeaderConfig::new(OPERATOR_NS, "op-0", "https://10.0.0.7:15900")
    };
    let mut rx = leader::run(client, config);
    assert_eq!(
        *rx.borrow(),
        Leadership {
            leader: false,
            leader_address: None
        }
    );

    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| l.leader))
        .await
        .expect("leader within 5 s")
        .unwrap();
    assert_eq!(
        *rx.borrow(),
        Leadership {
            leader: true,
            leader_address: None
        }
    );
    eventually("the leader label on op-0, none on op-old", || {
        has_leader_label(&cluster, "op-0") && !has_leader_label(&cluster, "op-old")
    })
    .await;
    eventually("the address on the Lease", || {
        cluster.lock().unwrap().lease.as_ref().is_some_and(|l| {
            l["metadata"]["annotations"]
                == json!({"tokenwarden.dev/leader-identity": "op-0",
                          "tokenwarden.dev/leader-address": "https://10.0.0.7:15900"})
        })
    })
    .await;
    assert_eq!(
        cluster.lock().unwrap().lease.as_ref().unwrap()["spec"]["holderIdentity"],
        json!("op-0")
    );

    // The exact label patches.
    let patches: Vec<Seen> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "PATCH" && s.path().contains("/pods/"))
        .cloned()
        .collect();
    let label = |s: &Seen| (s.uri.clone(), s.content_type.clone().unwrap(), s.json());
    assert!(patches.iter().map(label).any(|p| p
        == (
            format!("/api/v1/namespaces/{OPERATOR_NS}/pods/op-0?"),
            "application/merge-patch+json".to_string(),
            json!({"metadata": {"labels": {"tokenwarden.dev/leader": "true"}}})
        )));
    assert!(patches.iter().map(label).any(|p| p
        == (
            format!("/api/v1/namespaces/{OPERATOR_NS}/pods/op-old?"),
            "application/merge-patch+json".to_string(),
            json!({"metadata": {"labels": {"tokenwarden.dev/leader": null}}})
        )));

    // op-1 takes the Lease (as after a partition) and announces itself.
    {
        let mut c = cluster.lock().unwrap();
        let lease = c.lease.as_mut().unwrap();
        merge(
            lease,
            &json!({
                "metadata": {"annotations": {"tokenwarden.dev/leader-identity": "op-1",
                                             "tokenwarden.dev/leader-address": "https://10.0.0.8:15900"}},
                "spec": {"holderIdentity": "op-1", "leaseDurationSeconds": 3600,
                         "renewTime": serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now())).unwrap()}
            }),
        );
    }
    tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|l| {
            *l == Leadership {
                leader: false,
                leader_address: Some("https://10.0.0.8:15900".into()),
            }
        }),
    )
    .await
    .expect("stepped down and redirecting within 5 s")
    .unwrap();
    eventually("no leader label on op-0", || {
        !has_leader_label(&cluster, "op-0")
    })
    .await;
    assert!(log.lock().unwrap().iter().any(|s| s.method == "PATCH"
        && s.uri == format!("/api/v1/namespaces/{OPERATOR_NS}/pods/op-0?")
        && s.json() == json!({"metadata": {"labels": {"tokenwarden.dev/leader": null}}})));
    drop(rx);
    server.abort();
}

/// The leader's renewals fail: kube-lease-manager still says "leader", but
/// the fence stops this replica (and takes its label) before the Lease
/// expires, so no other replica can lead at the same time.
async fn scenario_leader_fence(log: &Log) {
    let (client, api) = mock(log);
    let cluster: Shared = Arc::default();
    cluster
        .lock()
        .unwrap()
        .pods
        .insert("op-0".into(), leader_pod("op-0", false));
    let server = serve_cluster(api, cluster.clone());
    let config = leader::LeaderConfig {
        lease_duration: 2,
        grace: 1,
        poll: Duration::from_millis(100),
        ..leader::LeaderConfig::new(OPERATOR_NS, "op-0", "https://10.0.0.7:15900")
    };
    let mut rx = leader::run(client, config);
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| l.leader))
        .await
        .expect("leader")
        .unwrap();
    eventually("the leader label on op-0", || {
        has_leader_label(&cluster, "op-0")
    })
    .await;
    let renewed_at = std::time::Instant::now();
    cluster.lock().unwrap().fail_lease_patches = true;
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| !l.leader))
        .await
        .expect("fenced")
        .unwrap();
    // Before the 2 s Lease could expire for the others.
    assert!(
        renewed_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        renewed_at.elapsed()
    );
    assert_eq!(
        *rx.borrow(),
        Leadership {
            leader: false,
            leader_address: None
        }
    );
    eventually("no leader label on op-0", || {
        !has_leader_label(&cluster, "op-0")
    })
    .await;
    drop(rx);
    server.abort();
}

// === tests ===

#[tokio::test]
async fn reflector_lists_then_watches_and_publishes_objects() {
    scenario_reflector(&new_log()).await;
}

#[tokio::test]
async fn budget_status_is_one_forced_server_side_apply() {
    scenario_budget_status(&new_log()).await;
}

#[tokio::test]
async fn policy_status_is_one_forced_server_side_apply() {
    scenario_policy_status(&new_log()).await;
}

#[tokio::test]
async fn events_are_recorded_on_the_object() {
    scenario_events(&new_log()).await;
}

#[tokio::test]
async fn token_review_accepts_a_bound_token_and_reads_labels_from_the_pod() {
    scenario_token_review_ok(&new_log()).await;
}

#[tokio::test]
async fn token_review_refusals_say_why() {
    scenario_token_review_refusals(&new_log()).await;
}

#[tokio::test]
async fn leader_steps_down_when_renewals_fail() {
    scenario_leader_fence(&new_log()).await;
}

#[tokio::test]
async fn leader_labels_its_pod_and_redirects_after_losing_the_lease() {
    scenario_leader(&new_log()).await;
}

#[tokio::test]
async fn a_new_leader_reads_fresh_from_the_api_server() {
    scenario_fresh_read(&new_log()).await;
}

#[tokio::test]
async fn cluster_ledger_lives_in_a_configmap() {
    scenario_cluster_ledger_configmap(&new_log()).await;
}

/// With `cache_secrets`, the Secret a policy's `spec.cache.redis.
/// credentialsSecret` names (and the one its `tls.caSecret` names) is read
/// with one GET in the policy's namespace: its values decoded (and
/// redacted in Debug); a missing one is an error naming it.
async fn scenario_cache_secrets(log: &Log) {
    let (client, mut api) = mock(log);
    let mut with_cache = policy("team-a", "shared", "uid-s", "10");
    with_cache["spec"]["cache"] = json!({"backend": "redis", "redis": {
        "url": "rediss://redis:6379", "credentialsSecret": {"name": "redis-auth", "key": "password"},
        "tls": {"caSecret": {"name": "redis-ca", "key": "ca.crt"}}}});
    let mut missing = policy("team-b", "broken", "uid-m", "10");
    missing["spec"]["cache"] = json!({"backend": "redis", "redis": {
        "url": "redis://redis:6379", "credentialsSecret": {"name": "gone", "key": "password"}}});
    serve_lists(&mut api, vec![with_cache, missing], vec![]);
    let source = KubeSource::start_with(
        client,
        SourceOptions {
            coalesce: Duration::from_millis(10),
            instance: None,
            cache_secrets: true,
        },
    );
    let mut rx = source.objects();
    // One GET per Secret, in order (namespace, name).
    let (seen, send) = api.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("GET", "/api/v1/namespaces/team-a/secrets/redis-auth")
    );
    send.json(
        200,
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "redis-auth", "namespace": "team-a", "resourceVersion": "7"},
                "data": {"password": "aHVudGVyMg=="}}),
    );
    let (seen, send) = api.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("GET", "/api/v1/namespaces/team-a/secrets/redis-ca")
    );
    send.json(
        200,
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "redis-ca", "namespace": "team-a", "resourceVersion": "8"},
                "data": {"ca.crt": "LS0tLS1CRUdJTg=="}}),
    );
    let (seen, send) = api.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("GET", "/api/v1/namespaces/team-b/secrets/gone")
    );
    send.json(404, &not_found("secrets", "gone"));
    let objects = synced(&mut rx).await;
    let found = objects.cache_secrets[&id("team-a", "redis-auth")]
        .as_ref()
        .unwrap();
    assert_eq!(found["password"].0, "hunter2");
    let ca = objects.cache_secrets[&id("team-a", "redis-ca")]
        .as_ref()
        .unwrap();
    assert_eq!(ca["ca.crt"].0, "-----BEGIN");
    assert!(
        !format!("{objects:?}").contains("hunter2"),
        "redacted in Debug"
    );
    assert_eq!(
        objects.cache_secrets[&id("team-b", "gone")],
        Err("Secret team-b/gone not found".to_string())
    );
}

#[tokio::test]
async fn cache_credentials_are_read_from_the_named_secret() {
    scenario_cache_secrets(&new_log()).await;
}

/// Every request the scenarios make is granted by an `api_calls()` entry,
/// and every entry's every verb is used by some scenario.
#[tokio::test]
async fn every_api_call_is_declared_and_exercised() {
    let log = new_log();
    scenario_reflector(&log).await;
    scenario_budget_status(&log).await;
    scenario_policy_status(&log).await;
    scenario_events(&log).await;
    scenario_token_review_ok(&log).await;
    scenario_token_review_refusals(&log).await;
    scenario_leader(&log).await;
    scenario_leader_fence(&log).await;
    scenario_fresh_read(&log).await;
    scenario_cluster_ledger_configmap(&log).await;
    scenario_ledger_allowed(&log).await;
    scenario_ledger_forbidden(&log).await;
    scenario_ledger_invalid_token(&log).await;
    scenario_cache_secrets(&log).await;

    let calls = api_calls();
    let mut used = BTreeSet::new();
    for seen in log.lock().unwrap().iter() {
        let request = rbac_request(&seen.method, &seen.uri)
            .unwrap_or_else(|| panic!("not a resource request: {} {}", seen.method, seen.uri));
        let granting: Vec<usize> = (0..calls.len())
            .filter(|&i| grants(&calls[i], &request, OPERATOR_NS))
            .collect();
        assert!(
            !granting.is_empty(),
            "{} {} ({request:?}) is not in api_calls()",
            seen.method,
            seen.uri
        );
        for i in granting {
            used.insert((i, request.verb.clone()));
        }
    }
    for (i, call) in calls.iter().enumerate() {
        for verb in call.verbs {
            assert!(
                used.contains(&(i, verb.to_string())),
                "api_calls() declares {verb} on {call:?} but no scenario uses it"
            );
        }
    }
}
