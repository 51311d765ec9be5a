#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The real webhook server on 127.0.0.1 over HTTPS, with a CA and serving
//! certificate from the operator's own rcgen code, verified by a rustls
//! client as the apiserver would (SNI = the Service's DNS name). A renewed
//! certificate is served from the next connection on, without a restart.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::Value;
use tokenwarden_operator::{
    source::Objects,
    webhook::{
        certs::{CertBundle, CertPolicy, Plan, renew},
        inject::InjectConfig,
        server::{CertStore, Handlers, serve},
    },
};
use tokio::sync::watch;

const SNI: &str = "tokenwarden-webhook.tokenwarden.svc";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn new_bundle() -> CertBundle {
    let policy = CertPolicy {
        dns_names: CertPolicy::service_names(
            &["tokenwarden-webhook", "tokenwarden-control"],
            "tokenwarden",
        ),
        validity_secs: 90 * 86_400,
        renew_before_secs: 30 * 86_400,
        ca_validity_secs: 3650 * 86_400,
    };
    let d = renew(Plan::Create, None, now(), &policy).unwrap();
    CertBundle {
        cert_pem: d["tls.crt"].clone(),
        key_pem: d["tls.key"].clone(),
        ca_pem: d["ca.crt"].clone(),
    }
}

fn config() -> InjectConfig {
    InjectConfig {
        operator_namespace: "tokenwarden".into(),
        excluded_namespaces: vec!["kube-system".into()],
        image: "ghcr.io/tokenwarden/sidecar:0.1.0".into(),
        image_pull_policy: "IfNotPresent".into(),
        control_plane: "https://tokenwarden-control.tokenwarden.svc:15810".into(),
        port: 15800,
        admin_port: 15801,
        requests: BTreeMap::new(),
        limits: BTreeMap::new(),
        run_as_user: 65532,
        token_expiration_seconds: 3600,
        state_size_limit: None,
        otel: None,
        version: "0.1.0".into(),
    }
}

async fn start(certs: CertStore) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_tx, objects) = watch::channel(Some(Arc::new(Objects::default())));
    let handlers = Handlers {
        config: Arc::new(config()),
        objects,
        certs,
    };
    tokio::spawn(async move {
        let _keep = _tx;
        serve(listener, handlers).await
    });
    addr
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// One HTTPS request on a new connection; `Err` when the TLS handshake fails.
async fn post(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Value, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(ca_pem));
    let tls = connector
        .connect(ServerName::try_from(SNI).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let peer_cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post(path)
        .header("host", SNI)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, v, peer_cert))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/admission/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test]
async fn injection_and_validation_over_https_with_hot_certificate_reload() {
    let first = new_bundle();
    let certs = CertStore::default();
    assert!(certs.set(first.clone()).unwrap());
    assert!(!certs.set(first.clone()).unwrap(), "same bundle: no reload");
    let addr = start(certs.clone()).await;

    let (status, v, _) = post(
        addr,
        &first.ca_pem,
        "/inject",
        fixture("pod-one-container.json"),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["response"]["uid"], "1f4b7c2a-8e3d-4a6b-9c1f-2d3e4f5a6b7c");
    assert_eq!(v["response"]["allowed"], true);
    let patch = base64::engine::general_purpose::STANDARD
        .decode(v["response"]["patch"].as_str().unwrap())
        .unwrap();
    let ops: Value = serde_json::from_slice(&patch).unwrap();
    // The CA the injected sidecar will trust is the one the server holds.
    let ann = ops
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["path"] == "/metadata/annotations")
        .unwrap();
    assert_eq!(
        ann["value"]["tokenwarden.dev/control-plane-ca"],
        first.ca_pem.as_str()
    );

    let (_, v, _) = post(
        addr,
        &first.ca_pem,
        "/validate",
        fixture("tokenbudget-invalid.json"),
    )
    .await
    .unwrap();
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["status"]["code"], 422);

    let (status, _, _) = post(addr, &first.ca_pem, "/nope", Vec::new())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Renewal with a new CA: the next connection gets the new certificate;
    // a client that trusts only the old CA is refused, one with the new is not.
    let second = new_bundle();
    assert!(certs.set(second.clone()).unwrap());
    let err = post(
        addr,
        &first.ca_pem,
        "/inject",
        fixture("pod-opted-out.json"),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    let (_, v, peer) = post(
        addr,
        &second.ca_pem,
        "/inject",
        fixture("pod-opted-out.json"),
    )
    .await
    .unwrap();
    assert_eq!(v["response"]["allowed"], true);
    let served = CertificateDer::from_pem_slice(second.cert_pem.as_bytes()).unwrap();
    assert_eq!(peer, served.to_vec());
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let b = new_bundle();
    let certs = CertStore::default();
    certs.set(b.clone()).unwrap();
    let addr = start(certs).await;
    let big = vec![b'x'; tokenwarden_operator::webhook::server::MAX_BODY_BYTES + 1];
    let (status, _, _) = post(addr, &b.ca_pem, "/validate", big).await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}
