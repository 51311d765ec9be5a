//! The operator in Kubernetes mode, end to end, against the in-process API
//! server stand-in (`tokenwarden_tests::apiserver`): two real operator
//! processes elect a leader on a Lease, make the webhook CA and patch the
//! caBundles, serve the injection webhook over HTTPS; real sidecars
//! authenticate with TokenReview, are redirected from the standby to the
//! leader over TLS, and their usage lands in TokenBudget status (server-side
//! apply) and the cluster-ledger ConfigMap, exactly. A SIGTERM of the leader
//! hands over to the other replica without losing or double counting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::SocketAddr,
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokenwarden_core::money::Usd;
use tokenwarden_tests::{
    apiserver::{FakeApiServer, TokenIdentity},
    fake_provider::{FakeConfig, FakeProvider},
    operator::Stderr,
    probe::http_get_within,
    process::{free_port, workspace_bin},
    sidecar::SidecarProc,
};

const NS: &str = "tokenwarden-system";
const CONTROL_NAME: &str = "tokenwarden-control.tokenwarden-system.svc";
const WEBHOOK_NAME: &str = "tokenwarden-webhook.tokenwarden-system.svc";

/// GET over plain HTTP/1.1 (1 s read timeout): (status, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_within(addr, path, Duration::from_millis(1000))
}

async fn eventually<T>(what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = check() {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One replica of the operator in Kubernetes mode, logging to `<name>.log`.
struct Operator {
    name: String,
    webhook: u16,
    log: PathBuf,
    op: tokenwarden_tests::operator::Operator,
}

impl Deref for Operator {
    type Target = tokenwarden_tests::operator::Operator;
    fn deref(&self) -> &Self::Target {
        &self.op
    }
}

impl DerefMut for Operator {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.op
    }
}

impl Operator {
    fn spawn(name: &str, kubeconfig: &Path, dir: &Path) -> Operator {
        let log = dir.join(format!("{name}.log"));
        let webhook = free_port();
        let mut op = tokenwarden_tests::operator::Operator::new();
        op.listen()
            .args(["--webhook-listen", &format!("127.0.0.1:{webhook}")])
            .args(["--status-interval-ms", "200"])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", NS)
            .env("POD_NAME", name)
            .env("POD_IP", "127.0.0.1");
        op.rust_log = "info".into();
        op.stderr = Stderr::Append(log.clone());
        let mut op = Operator {
            name: name.into(),
            webhook,
            log,
            op,
        };
        op.start();
        op
    }

    fn start(&mut self) {
        self.op.spawn();
    }

    fn readyz(&self) -> Option<String> {
        match http_get(self.admin_addr(), "/readyz") {
            Some((200, body)) => Some(body.trim().to_string()),
            _ => None,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A real sidecar connected to an operator over TLS.
struct Sidecar(SidecarProc);

impl Sidecar {
    async fn chat(&self, body: &str) -> u16 {
        self.0
            .openai("/v1/chat/completions", body, &[])
            .await
            .status
            .as_u16()
    }

    fn metrics(&self) -> String {
        http_get(self.0.admin, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

/// Everything the test needs on disk.
struct World {
    dir: tempfile::TempDir,
    api: FakeApiServer,
    kubeconfig: PathBuf,
}

impl World {
    fn sidecar(&self, name: &str, token: &str, control_port: u16) -> Sidecar {
        let d = self.dir.path();
        // The uid the API server gave the pod (the downward API's metadata.uid).
        let uid = self.api.get("", "pods", "team", name).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        std::fs::write(d.join(format!("{name}.token")), token).unwrap();
        let mut s = SidecarProc::new();
        s.args([
            "--control-plane",
            &format!("https://127.0.0.1:{control_port}"),
        ])
        .args(["--control-plane-server-name", CONTROL_NAME])
        .arg("--control-plane-ca")
        .arg(d.join("ca.crt"))
        .arg("--credential-file")
        .arg(d.join(format!("{name}.token")))
        .args(["--pod-name", name])
        .args(["--pod-uid", &uid])
        .args(["--namespace", "team"])
        .args(["--labels", "app=load"])
        .arg("--state-dir")
        .arg(d.join(format!("state-{name}")))
        .arg("--secrets-dir")
        .arg(d.join("keys"));
        s.rust_log = "info".into();
        s.log = Some(d.join(format!("{name}.log")));
        s.wait_ready = false;
        s.timeout = Duration::from_secs(30);
        s.spawn();
        Sidecar(s)
    }

    fn budget_status(&self) -> Value {
        self.api
            .get("tokenwarden.dev", "tokenbudgets", "team", "cap")
            .and_then(|b| b.get("status").cloned())
            .unwrap_or(Value::Null)
    }
}

fn app_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team", "labels": {"app": "load"}},
        "spec": {"serviceAccountName": "load", "containers": [{"name": "app", "image": "app:1"}]}
    })
}

fn operator_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"app.kubernetes.io/name": "tokenwarden"}},
        "spec": {"serviceAccountName": "tokenwarden",
                 "containers": [{"name": "operator", "image": "operator:1"}]}
    })
}

fn webhook_config(kind: &str, name: &str, hook: &str, path: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name},
        "webhooks": [{
            "name": hook,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": {"service": {"name": "tokenwarden-webhook", "namespace": NS, "path": path, "port": 443}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]
        }]
    })
}

/// Seed the API server: operator and app pods, the webhook configurations,
/// a RoutingPolicy and a TokenBudget in namespace `team`.
fn seed(api: &FakeApiServer, fake: &FakeProvider) {
    api.put("pods", operator_pod("tokenwarden-0"));
    api.put("pods", operator_pod("tokenwarden-1"));
    for name in ["load-0", "load-1", "intruder"] {
        let pod = api.put("pods", app_pod(name));
        let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
        if name != "intruder" {
            api.set_token(
                &format!("token-{name}"),
                TokenIdentity {
                    username: "system:serviceaccount:team:load".into(),
                    pod_name: name.into(),
                    pod_uid: uid,
                },
            );
        }
    }
    api.put(
        "mutatingwebhookconfigurations",
        webhook_config(
            "MutatingWebhookConfiguration",
            "tokenwarden-injector",
            "inject.tokenwarden.dev",
            "/inject",
        ),
    );
    api.put(
        "validatingwebhookconfigurations",
        webhook_config(
            "ValidatingWebhookConfiguration",
            "tokenwarden-validator",
            "validate.tokenwarden.dev",
            "/validate",
        ),
    );
    api.put(
        "routingpolicies",
        json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "RoutingPolicy",
            "metadata": {"name": "load", "namespace": "team"},
            "spec": {
                "workloadSelector": {"matchLabels": {"app": "load"}},
                "providers": [{
                    "name": "openai", "api": "openai", "baseUrl": fake.base_url(),
                    "apiKeySecretRef": {"name": "provider-keys", "key": "openai"},
                    "prices": [{"model": "tw-test", "inputPerMTok": "1", "outputPerMTok": "10"}]
                }]
            }
        }),
    );
    api.put(
        "tokenbudgets",
        json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenBudget",
            "metadata": {"name": "cap", "namespace": "team"},
            "spec": {"workloadSelector": {"matchLabels": {"app": "load"}},
                     "period": "Daily", "limit": {"usd": "100.00"}}
        }),
    );
}

/// What the fake provider billed, priced like the sidecar prices it.
fn billed_picos(fake: &FakeProvider) -> i128 {
    let mut total = 0i128;
    for r in fake.log() {
        let Some(u) = r.usage else { continue };
        assert_eq!(u.model, "tw-test");
        let part = |tokens: u64, price: i128| (i128::from(tokens) * price + 999) / 1000;
        total += part(u.input_total - u.cache_read - u.cache_write, 1_000_000_000)
            + part(u.output, 10_000_000_000);
    }
    total
}

fn ledger_spent(w: &World) -> Option<i128> {
    w.budget_status()["ledger"]["spentPicos"]
        .as_str()?
        .parse()
        .ok()
}

fn configmap_spent(w: &World) -> Option<i128> {
    let cm = w.api.get("", "configmaps", NS, "tokenwarden-ledger")?;
    let state: Value = serde_json::from_str(cm["data"]["ledger.json"].as_str()?).ok()?;
    let mut total = 0i128;
    for row in state["rows"].as_array()? {
        total += row[1]["cost"].as_str()?.parse::<Usd>().ok()?.picos();
    }
    Some(total)
}

fn leader_of(w: &World) -> Option<String> {
    let lease = w
        .api
        .get("coordination.k8s.io", "leases", NS, "tokenwarden-operator")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

fn labeled_leaders(w: &World) -> Vec<String> {
    w.api
        .list("", "pods")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["tokenwarden.dev/leader"] == "true")
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

const REQUEST: &str = r#"{"model":"tw-test","max_tokens":200,"messages":[{"role":"user","content":"write a haiku about budgets"}]}"#;

/// POST an AdmissionReview to a replica's webhook over HTTPS, trusting only
/// `ca_pem` and checking the webhook Service's name.
async fn admission(port: u16, ca_pem: &str, review: &Value) -> Value {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(WEBHOOK_NAME).unwrap(), tcp)
        .await
        .expect("TLS handshake with the webhook, verified by the CA");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/inject")
        .header("host", WEBHOOK_NAME)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review.to_string())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_in_kubernetes_mode_end_to_end() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let api = FakeApiServer::start().await.unwrap();
    let mut dir = tempfile::tempdir().unwrap();
    // TOKENWARDEN_KEEP_LOGS=1 keeps the processes' logs after the run.
    if std::env::var_os("TOKENWARDEN_KEEP_LOGS").is_some() {
        dir.disable_cleanup(true);
        eprintln!("logs in {}", dir.path().display());
    }
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    std::fs::create_dir_all(dir.path().join("keys/provider-keys")).unwrap();
    std::fs::write(
        dir.path().join("keys/provider-keys/openai"),
        "sk-fake-openai",
    )
    .unwrap();
    seed(&api, &fake);
    let w = World {
        dir,
        api,
        kubeconfig,
    };

    // Two replicas: one leads (Lease, label, /readyz), both are ready.
    let mut ops = [
        Operator::spawn("tokenwarden-0", &w.kubeconfig, w.dir.path()),
        Operator::spawn("tokenwarden-1", &w.kubeconfig, w.dir.path()),
    ];
    let leader = eventually("a leader", 30, || {
        let l = leader_of(&w)?;
        (labeled_leaders(&w) == vec![l.clone()]).then_some(l)
    })
    .await;
    let (li, fi) = if leader == ops[0].name {
        (0, 1)
    } else {
        (1, 0)
    };
    eventually("both replicas ready", 30, || {
        (ops[li].readyz()? == "ok (leader)" && ops[fi].readyz()? == "ok (standby)").then_some(())
    })
    .await;

    // The webhook CA: one Secret, both caBundles, both replicas serve it.
    let secret = eventually("the certificate Secret", 20, || {
        w.api.get("", "secrets", NS, "tokenwarden-tls")
    })
    .await;
    let b64 = |k: &str| secret["data"][k].as_str().unwrap().to_string();
    let ca_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64("ca.crt"))
            .unwrap(),
    )
    .unwrap();
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!b64("tls.crt").is_empty() && !b64("tls.key").is_empty());
    for (resource, name) in [
        ("mutatingwebhookconfigurations", "tokenwarden-injector"),
        ("validatingwebhookconfigurations", "tokenwarden-validator"),
    ] {
        let got = eventually("caBundle patched", 20, || {
            let cfg = w
                .api
                .get("admissionregistration.k8s.io", resource, "", name)?;
            let hook = &cfg["webhooks"][0];
            // The rest of the webhook entry survives the patch.
            assert!(hook["rules"].is_array(), "{cfg}");
            hook["clientConfig"]["caBundle"]
                .as_str()
                .map(str::to_string)
        })
        .await;
        assert_eq!(got, b64("ca.crt"), "{name}");
    }
    std::fs::write(w.dir.path().join("ca.crt"), &ca_pem).unwrap();
    let mut pod = app_pod("new-pod");
    pod["metadata"]["labels"]["tokenwarden.dev/inject"] = json!("enabled");
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "e2e-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team", "operation": "CREATE", "userInfo": {"username": "e2e"},
            "object": pod
        }
    });
    for op in &ops {
        let answer = admission(op.webhook, &ca_pem, &review).await;
        let resp = &answer["response"];
        assert_eq!(resp["uid"], "e2e-1");
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["patchType"], "JSONPatch");
        let patch: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(resp["patch"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let text = patch.to_string();
        assert!(text.contains("tokenwarden-sidecar"), "{text}");
        assert!(
            text.contains(&format!("https://{CONTROL_NAME}:15810")),
            "{text}"
        );
        assert!(
            text.contains("provider-keys"),
            "the policy's key Secret is mounted: {text}"
        );
        // Every flag and variable the webhook gives the sidecar is one the
        // sidecar binary reads (a renamed one would be ignored silently).
        let sidecar = patch
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["path"] == "/spec/initContainers")
            .map(|o| o["value"][0].clone())
            .expect("the sidecar added as the first init container");
        let help = std::process::Command::new(workspace_bin("tokenwarden-sidecar"))
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8(help.stdout).unwrap();
        let env: Vec<&str> = sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            env,
            [
                "TOKENWARDEN_SIDECAR_POD_NAME",
                "TOKENWARDEN_SIDECAR_POD_UID",
                "TOKENWARDEN_SIDECAR_NAMESPACE"
            ]
        );
        for name in env {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "the sidecar does not read {name}:\n{help}"
            );
        }
        for flag in sidecar["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str().filter(|a| a.starts_with("--")))
        {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "the sidecar has no {flag}:\n{help}"
            );
        }
    }

    // Sidecars dial the standby: redirected to the leader (its pod IP, the
    // certificate checked against the control Service's name).
    let sidecars = [
        w.sidecar("load-0", "token-load-0", ops[fi].grpc),
        w.sidecar("load-1", "token-load-1", ops[fi].grpc),
    ];
    for (s, name) in sidecars.iter().zip(["load-0", "load-1"]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s
            .metrics()
            .contains("tokenwarden_control_plane_connected 1")
        {
            if Instant::now() >= deadline {
                // Its log says why (it lives in the test's temp dir, gone after).
                let log = std::fs::read_to_string(w.dir.path().join(format!("{name}.log")))
                    .unwrap_or_else(|e| format!("(no log: {e})"));
                panic!("sidecar {name} connected: not within 30 s; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A sidecar whose token TokenReview rejects never gets config.
    let intruder = w.sidecar("intruder", "token-stolen", ops[li].grpc);
    let policy_ready = eventually("RoutingPolicy Ready 2/2", 20, || {
        let p = w
            .api
            .get("tokenwarden.dev", "routingpolicies", "team", "load")?;
        let st = &p["status"];
        (st["sidecars"] == "2/2").then(|| st.clone())
    })
    .await;
    assert!(
        policy_ready["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        "{policy_ready}"
    );

    // Traffic; the ledgers equal what the provider billed.
    for round in 0..10 {
        for s in &sidecars {
            assert_eq!(s.chat(REQUEST).await, 200, "round {round}");
        }
    }
    assert_ne!(intruder.chat(REQUEST).await, 200);
    let want = billed_picos(&fake);
    assert!(want > 0);
    eventually("TokenBudget ledger == billed", 20, || {
        (ledger_spent(&w)? == want).then_some(())
    })
    .await;
    eventually("cluster ledger ConfigMap == billed", 20, || {
        (configmap_spent(&w)? == want).then_some(())
    })
    .await;
    let status = w.budget_status();
    let ids: Vec<&str> = status["ledger"]["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "one watermark per sidecar: {status}");
    // The leader's /ledger answers a loopback client without a token (as
    // `kubectl port-forward` arrives); others need a bearer token (tested
    // in operator/tests/kube_layer.rs).
    let (code, body) = http_get(ops[li].admin_addr(), "/ledger").unwrap();
    assert_eq!(code, 200, "{body}");
    let ledger: Value = serde_json::from_str(&body).unwrap();
    assert!(ledger.is_object(), "{ledger}");
    assert!(
        ops[li].log().contains("TokenReview") || ops[li].log().contains("refused"),
        "the intruder's refusal is logged"
    );
    let applies: Vec<_> = w
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.uri.contains("/tokenbudgets/cap/status"))
        .collect();
    assert!(!applies.is_empty());
    for r in &applies {
        assert!(
            r.uri.contains("fieldManager=tokenwarden-operator") && r.uri.contains("force=true"),
            "{}",
            r.uri
        );
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
    }

    // SIGTERM the leader: it finishes its writes, ends its sessions, then
    // drops its label and releases the Lease before it exits. The standby
    // takes the Lease when its view of it expires (kube-lease-manager
    // re-reads a Lease only then: at most the 15 s duration) and the
    // sidecars follow.
    let exit = ops[li]
        .proc
        .terminate(Duration::from_secs(20))
        .expect("the leader exits on SIGTERM");
    assert!(exit.success(), "clean exit: {exit:?}\n{}", ops[li].log());
    let lease = w
        .api
        .get("coordination.k8s.io", "leases", NS, "tokenwarden-operator")
        .unwrap();
    let holder = &lease["spec"]["holderIdentity"];
    assert!(
        holder.is_null() || *holder == json!(ops[fi].name),
        "released at exit: {lease}"
    );
    assert!(
        !labeled_leaders(&w).contains(&ops[li].name),
        "the leader label is gone at exit"
    );
    let new_leader = eventually("the standby takes over", 25, || {
        let l = leader_of(&w)?;
        (l == ops[fi].name && labeled_leaders(&w) == vec![l.clone()]).then_some(l)
    })
    .await;
    assert_eq!(new_leader, ops[fi].name);
    for round in 0..10 {
        for s in &sidecars {
            assert_eq!(s.chat(REQUEST).await, 200, "after hand-over, round {round}");
        }
    }
    let want = billed_picos(&fake);
    eventually("ledger == billed after the hand-over", 30, || {
        (ledger_spent(&w)? == want).then_some(())
    })
    .await;
    eventually("cluster ledger == billed after the hand-over", 20, || {
        (configmap_spent(&w)? == want).then_some(())
    })
    .await;

    // The old leader comes back as a standby.
    ops[li].start();
    eventually("the restarted replica is a standby", 30, || {
        (ops[li].readyz()? == "ok (standby)").then_some(())
    })
    .await;
    assert_eq!(leader_of(&w), Some(ops[fi].name.clone()));
}
