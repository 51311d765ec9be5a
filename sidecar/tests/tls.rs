//! HTTPS to providers: webpki roots plus an optional extra CA bundle.
//!
//! A local TLS front (rustls, certificate from the harness's test CA)
//! terminates TLS for `localhost` and forwards to the fake provider. With
//! `--ca-bundle` pointing at the test CA the sidecar reaches it; without, the
//! certificate is rejected (the webpki roots do not contain the test CA).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use support::*;
use tokenwarden_tests::tls::TestCa;
use tokio::net::{TcpListener, TcpStream};

async fn tls_front(upstream: std::net::SocketAddr) -> (u16, String) {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"]);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.cert_der.into()],
            rustls::pki_types::PrivateKeyDer::try_from(leaf.key_der).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut up = TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (port, ca.pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn providers_over_https_with_an_extra_ca_bundle() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let (port, ca_pem) = tls_front(fake.addr()).await;
    let policy = format!(
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: RoutingPolicy\nmetadata: {{name: p, namespace: apps}}\nspec:\n  providers:\n    - {{name: openai, api: openai, baseUrl: \"https://localhost:{port}\", apiKeySecretRef: {{name: llm-keys, key: openai}}}}\n"
    );
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca_pem).unwrap();
    let body = r#"{"model":"gpt-5-mini","messages":[{"role":"user","content":"hi"}]}"#;

    let trusted = Sidecar::start_with(&policy, &["--ca-bundle", ca_file.path().to_str().unwrap()]);
    let r = trusted.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "gpt-5-mini");
    assert_eq!(fake.log().len(), 1);
    assert_eq!(
        fake.log()[0].header("authorization"),
        Some("Bearer sk-fake-openai")
    );

    let untrusted = Sidecar::start(&policy);
    let r = untrusted.openai("/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status, 502, "an unknown CA is refused: {}", r.text());
    assert_eq!(
        r.header("x-tokenwarden-error"),
        Some("upstream_unreachable")
    );
    assert_eq!(fake.log().len(), 1, "nothing reached the provider");
}

#[test]
fn a_bad_ca_bundle_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: {name: b}\nspec: {period: Daily, limit: {usd: \"1\"}}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))
        .arg("--policy-file")
        .arg(dir.path().join("p.yaml"))
        .arg("--ca-bundle")
        .arg(dir.path().join("ca.pem"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no PEM certificates found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
