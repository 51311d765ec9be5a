#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Webhook certificates: renewal decisions on real rcgen certificates, and
//! the exact Kubernetes API requests (tower-test mock) for the shared Secret
//! and the caBundle patches, including the races between replicas.

use std::{collections::BTreeMap, time::Duration};

use base64::Engine as _;
use http::Method;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, client::Body};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tokenwarden_operator::webhook::certs::{
    CertBundle, CertError, CertPolicy, Plan, ensure_secret, inspect, patch_ca_bundles, pem_blocks,
    plan, renew,
};
use tokenwarden_tests::mock_api::{self, MockApi, Scenario};
use tokio::task::JoinHandle;

const NOW: i64 = 1_790_000_000; // 2026-09-21
const DAY: i64 = 86_400;
const NS: &str = "tokenwarden";

type Handle = MockApi<Body, Body>;

fn policy() -> CertPolicy {
    CertPolicy {
        dns_names: CertPolicy::service_names(&["tokenwarden-webhook", "tokenwarden-control"], NS),
        validity_secs: 90 * DAY,
        renew_before_secs: 30 * DAY,
        ca_validity_secs: 3650 * DAY,
    }
}

fn mock() -> (Client, Handle) {
    let (svc, api) = mock_api::pair(&mock_api::new_log());
    (Client::new(svc, NS), api)
}

/// `ensure_secret` of `tokenwarden-tls` at `now`, in the background
/// against a mock API.
fn ensure_secret_at(now: i64) -> (JoinHandle<Result<CertBundle, CertError>>, Handle) {
    let (client, handle) = mock();
    let api: Api<Secret> = Api::namespaced(client, NS);
    let task =
        tokio::spawn(async move { ensure_secret(&api, "tokenwarden-tls", now, &policy()).await });
    (task, handle)
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

fn secret_json(data: &BTreeMap<String, String>, rv: &str) -> Value {
    let b64 = |s: &String| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "tokenwarden-tls", "namespace": NS, "resourceVersion": rv},
        "data": data.iter().map(|(k, v)| (k.clone(), json!(b64(v)))).collect::<serde_json::Map<_, _>>(),
    })
}

fn data_of(secret: &Value) -> BTreeMap<String, String> {
    secret["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            (k.clone(), String::from_utf8(bytes).unwrap())
        })
        .collect()
}

const SECRET_URI: &str = "/api/v1/namespaces/tokenwarden/secrets/tokenwarden-tls";

#[test]
fn renewal_decisions() {
    let p = policy();
    assert_eq!(plan(None, NOW, &p), Plan::Create);
    let fresh = renew(Plan::Create, None, NOW, &p).unwrap();
    assert_eq!(plan(Some(&fresh), NOW, &p), Plan::Keep);
    // 61 days on: 29 days left < 30 → renew the leaf, same CA.
    assert_eq!(plan(Some(&fresh), NOW + 61 * DAY, &p), Plan::RenewLeaf);
    assert_eq!(plan(Some(&fresh), NOW + 59 * DAY, &p), Plan::Keep);
    let renewed = renew(Plan::RenewLeaf, Some(&fresh), NOW + 61 * DAY, &p).unwrap();
    assert_eq!(renewed["ca.crt"], fresh["ca.crt"]);
    assert_eq!(renewed["ca.key"], fresh["ca.key"]);
    assert_ne!(renewed["tls.crt"], fresh["tls.crt"]);
    let leaf = inspect(&renewed["tls.crt"]).unwrap();
    assert_eq!(leaf.not_after, NOW + 61 * DAY + 90 * DAY);
    assert_eq!(leaf.dns_names, p.dns_names);
    assert_eq!(plan(Some(&renewed), NOW + 61 * DAY, &p), Plan::Keep);

    // A renamed Service: the certificate lacks a name → renew.
    let mut p2 = p.clone();
    p2.dns_names
        .push("tokenwarden-webhook-2.tokenwarden.svc".into());
    assert_eq!(plan(Some(&fresh), NOW, &p2), Plan::RenewLeaf);

    // Near the CA's end: new CA, the old one stays trusted in the bundle.
    let late = NOW + 3650 * DAY - 100 * DAY;
    assert_eq!(plan(Some(&fresh), late, &p), Plan::RenewCa);
    let rolled = renew(Plan::RenewCa, Some(&fresh), late, &p).unwrap();
    let blocks = pem_blocks(&rolled["ca.crt"]);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[1], fresh["ca.crt"]);
    assert_ne!(rolled["ca.key"], fresh["ca.key"]);
    // Once the old CA has expired, the next renewal drops it.
    let after = NOW + 3650 * DAY + DAY;
    let next = renew(Plan::RenewLeaf, Some(&rolled), after, &p).unwrap();
    assert_eq!(pem_blocks(&next["ca.crt"]), vec![blocks[0].clone()]);

    // Garbage or missing keys: start over.
    let mut broken = fresh.clone();
    broken.insert("tls.key".into(), "not a key".into());
    assert_eq!(plan(Some(&broken), NOW, &p), Plan::Create);
    let mut missing = fresh.clone();
    missing.remove("ca.key");
    assert_eq!(plan(Some(&missing), NOW, &p), Plan::Create);
}

#[tokio::test]
async fn first_replica_creates_the_secret() {
    let (task, mut handle) = ensure_secret_at(NOW);
    let seen = Scenario::new()
        .request(Method::GET, SECRET_URI)
        .reply(404, status(404, "NotFound"))
        .request(Method::POST, "/api/v1/namespaces/tokenwarden/secrets?")
        .echo(201)
        .run(&mut handle)
        .await;
    let posted = seen[1].json();
    let bundle = task.await.unwrap().unwrap();
    assert_eq!(posted["type"], "kubernetes.io/tls");
    assert_eq!(posted["metadata"]["name"], "tokenwarden-tls");
    assert_eq!(posted["metadata"]["resourceVersion"], Value::Null);
    assert_eq!(
        posted["metadata"]["labels"]["app.kubernetes.io/component"],
        "webhook-tls"
    );
    let data = data_of(&posted);
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    );
    assert_eq!(bundle.cert_pem, data["tls.crt"]);
    assert_eq!(bundle.ca_pem, data["ca.crt"]);
    assert_eq!(plan(Some(&data), NOW, &policy()), Plan::Keep);
}

#[tokio::test]
async fn a_valid_secret_is_only_read() {
    let data = renew(Plan::Create, None, NOW, &policy()).unwrap();
    let (task, mut handle) = ensure_secret_at(NOW);
    Scenario::new()
        .request(Method::GET, SECRET_URI)
        .reply(200, secret_json(&data, "41"))
        .run(&mut handle)
        .await;
    let bundle = task.await.unwrap().unwrap();
    assert_eq!(bundle.cert_pem, data["tls.crt"]);
    assert_eq!(bundle.key_pem, data["tls.key"]);
    // No further request.
    handle.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn an_expiring_certificate_is_renewed_with_the_resource_version() {
    let data = renew(Plan::Create, None, NOW, &policy()).unwrap();
    let later = NOW + 70 * DAY;
    let (task, mut handle) = ensure_secret_at(later);
    let seen = Scenario::new()
        .request(Method::GET, SECRET_URI)
        .reply(200, secret_json(&data, "41"))
        .request(Method::PUT, format!("{SECRET_URI}?"))
        .echo(200)
        .run(&mut handle)
        .await;
    let put = seen[1].json();
    let bundle = task.await.unwrap().unwrap();
    // Optimistic concurrency: the PUT carries what was read.
    assert_eq!(put["metadata"]["resourceVersion"], "41");
    let new = data_of(&put);
    assert_eq!(new["ca.crt"], data["ca.crt"], "same CA: no caBundle change");
    assert_ne!(new["tls.crt"], data["tls.crt"]);
    assert_eq!(
        inspect(&new["tls.crt"]).unwrap().not_after,
        later + 90 * DAY
    );
    assert_eq!(bundle.cert_pem, new["tls.crt"]);
}

#[tokio::test]
async fn losing_the_create_race_adopts_the_winner() {
    let winner = renew(Plan::Create, None, NOW, &policy()).unwrap();
    let (task, mut handle) = ensure_secret_at(NOW);
    Scenario::new()
        .request(Method::GET, SECRET_URI)
        .reply(404, status(404, "NotFound"))
        .request(Method::POST, "/api/v1/namespaces/tokenwarden/secrets?")
        .reply(409, status(409, "AlreadyExists"))
        .request(Method::GET, SECRET_URI)
        .reply(200, secret_json(&winner, "7"))
        .run(&mut handle)
        .await;
    let bundle = task.await.unwrap().unwrap();
    assert_eq!(bundle.cert_pem, winner["tls.crt"]);
    assert_eq!(bundle.ca_pem, winner["ca.crt"]);
}

#[tokio::test]
async fn a_conflicting_renewal_rereads() {
    let old = renew(Plan::Create, None, NOW, &policy()).unwrap();
    let later = NOW + 70 * DAY;
    let theirs = renew(Plan::RenewLeaf, Some(&old), later, &policy()).unwrap();
    let (task, mut handle) = ensure_secret_at(later);
    Scenario::new()
        .request(Method::GET, SECRET_URI)
        .reply(200, secret_json(&old, "41"))
        .request(Method::PUT, format!("{SECRET_URI}?"))
        .reply(409, status(409, "Conflict"))
        .request(Method::GET, SECRET_URI)
        .reply(200, secret_json(&theirs, "42"))
        .run(&mut handle)
        .await;
    let bundle = task.await.unwrap().unwrap();
    assert_eq!(bundle.cert_pem, theirs["tls.crt"]);
}

#[tokio::test]
async fn ca_bundles_are_patched_only_where_stale() {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
    let (client, mut handle) = mock();
    let task = tokio::spawn(async move {
        patch_ca_bundles(&client, "tokenwarden-injector", "tokenwarden-validator", ca).await
    });
    let webhook = |name: &str, bundle: Option<&str>| {
        let mut cc = json!({"service": {"name": "tokenwarden-webhook", "namespace": NS, "path": "/inject", "port": 443}});
        if let Some(b) = bundle {
            cc["caBundle"] = json!(b);
        }
        json!({"name": name, "clientConfig": cc, "sideEffects": "None", "admissionReviewVersions": ["v1"]})
    };
    Scenario::new()
        .request(Method::GET, "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/tokenwarden-injector")
        .reply(200, json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
               "metadata": {"name": "tokenwarden-injector"},
               // as `helm upgrade` leaves them: no caBundle
               "webhooks": [webhook("namespace.inject.tokenwarden.dev", None), webhook("pod.inject.tokenwarden.dev", None)]}))
        .request(Method::PATCH, "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/tokenwarden-injector?&fieldManager=tokenwarden-operator")
        .content_type("application/strategic-merge-patch+json")
        .body(json!({"webhooks": [
            {"name": "namespace.inject.tokenwarden.dev", "clientConfig": {"caBundle": b64}},
            {"name": "pod.inject.tokenwarden.dev", "clientConfig": {"caBundle": b64}},
        ]}))
        .reply(200, json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "tokenwarden-injector"}}))
        // The validating configuration is already current: read, not patched.
        .request(Method::GET, "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/tokenwarden-validator")
        .reply(200, json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
               "metadata": {"name": "tokenwarden-validator"},
               "webhooks": [webhook("validate.tokenwarden.dev", Some(&b64))]}))
        .run(&mut handle)
        .await;
    assert_eq!(task.await.unwrap().unwrap(), 2);
}

#[tokio::test]
async fn a_missing_webhook_configuration_is_skipped() {
    let (client, mut handle) = mock();
    let task = tokio::spawn(async move { patch_ca_bundles(&client, "a", "b", "pem").await });
    Scenario::new()
        .request(
            Method::GET,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/a",
        )
        .reply(404, status(404, "NotFound"))
        .request(
            Method::GET,
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/b",
        )
        .reply(404, status(404, "NotFound"))
        .run(&mut handle)
        .await;
    assert_eq!(task.await.unwrap().unwrap(), 0);
}

#[test]
fn certificates_chain_to_the_ca() {
    let data = renew(Plan::Create, None, NOW, &policy()).unwrap();
    let ca = inspect(&data["ca.crt"]).unwrap();
    assert_eq!(ca.not_after, NOW + 3650 * DAY);
    assert!(ca.not_before <= NOW);
    // Verification of the chain by a TLS client is in webhook_https.rs.
}
