//! The Redis response cache in connected mode: the real operator in
//! Kubernetes mode (against the in-process API server stand-in) reads the
//! Secret a RoutingPolicy's `spec.cache.redis.credentialsSecret` names,
//! and the private CA its `tls.caSecret` names, and sends both to two real
//! sidecars with their config (over TLS); they share entries in a real
//! `redis-server` that requires the password and speaks only TLS with a
//! certificate that CA signed (a fill through one is a hit through the
//! other; the sidecars' own secrets dirs hold no CA), semantic entries too (a
//! question filled through one, embedded by the real `tokenwarden-embedder`,
//! answers its paraphrase through the other). A missing Secret is the
//! policy's `ResponseCacheDegraded` condition and a Warning Event, and the
//! requests still flow (misses). The password is in no status, Event, log
//! or persisted snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{Value, json};
use tokenwarden_tests::{
    apiserver::{FakeApiServer, TokenIdentity},
    embedder::Embedder,
    fake_provider::{FakeConfig, FakeProvider},
    operator::{Operator, Stderr},
    process::free_port,
    redis::{Redis, RedisOptions, RedisTls},
    sidecar::SidecarProc,
    tls::TestCa,
};

const NS: &str = "tokenwarden-system";
const CONTROL_NAME: &str = "tokenwarden-control.tokenwarden-system.svc";
const PASSWORD: &str = "r3dis-pa55word-for-the-test";
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What are your opening hours?"}],"temperature":0}"#;

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod(name: &str, ns: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"serviceAccountName": "sa", "containers": [{"name": "c", "image": "i:1"}]}
    })
}

fn webhook_config(kind: &str, name: &str, hook: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name},
        "webhooks": [{
            "name": hook, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"name": "tokenwarden-webhook", "namespace": NS, "path": "/x", "port": 443}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]
        }]
    })
}

fn policy(name: &str, fake: &FakeProvider, redis: &Redis, secret: &str) -> Value {
    json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "RoutingPolicy",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "workloadSelector": {"matchLabels": {"app": name}},
            "providers": [{"name": "openai", "api": "openai", "baseUrl": fake.base_url(),
                           "apiKeySecretRef": {"name": "provider-keys", "key": "openai"}}],
            "cache": {"backend": "redis",
                      "redis": {"url": redis.url(), "timeout": "200ms",
                                "credentialsSecret": {"name": secret, "key": "password"},
                                "tls": {"caSecret": {"name": secret, "key": "ca.crt"}}},
                      "exact": {"ttl": "10m"}}
        }
    })
}

/// A sidecar of pod `name` (labels app=`app`) connected over TLS.
fn sidecar(api: &FakeApiServer, dir: &Path, name: &str, app: &str, port: u16) -> SidecarProc {
    let created = api.put("pods", pod(name, "team", json!({"app": app})));
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let token = format!("token-{name}");
    api.set_token(
        &token,
        TokenIdentity {
            username: "system:serviceaccount:team:sa".into(),
            pod_name: name.into(),
            pod_uid: uid.clone(),
        },
    );
    std::fs::write(dir.join(format!("{name}.token")), &token).unwrap();
    let mut s = SidecarProc::new();
    s.args(["--control-plane", &format!("https://127.0.0.1:{port}")])
        .args(["--control-plane-server-name", CONTROL_NAME])
        .arg("--control-plane-ca")
        .arg(dir.join("ca.crt"))
        .arg("--credential-file")
        .arg(dir.join(format!("{name}.token")))
        .args(["--pod-name", name, "--pod-uid", &uid])
        .args(["--namespace", "team", "--labels", &format!("app={app}")])
        .arg("--state-dir")
        .arg(dir.join(format!("state-{name}")))
        .arg("--secrets-dir")
        .arg(dir.join("keys"));
    s.rust_log = "info".into();
    s.log = Some(dir.join(format!("{name}.log")));
    s.timeout = Duration::from_secs(30);
    s.spawn();
    s
}

fn condition(api: &FakeApiServer, policy: &str, type_: &str) -> Option<Value> {
    let p = api.get("tokenwarden.dev", "routingpolicies", "team", policy)?;
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// A real `redis-server` that requires [`PASSWORD`] and speaks only TLS
/// with a certificate a test CA signed; and that CA's PEM.
fn tls_redis() -> Option<(Redis, String)> {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let redis = Redis::start(RedisOptions {
        password: Some(PASSWORD.into()),
        tls: Some(RedisTls {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
            ca_pem: ca.pem(),
        }),
        ..Default::default()
    })?;
    Some((redis, ca.pem()))
}

/// The operator in Kubernetes mode with `policies`, the Redis password and
/// the CA `ca_pem` in Secret `team/redis-auth`, its certificates issued (the CA in
/// `<dir>/ca.crt`), ready for [`sidecar`]s on `port`.
struct Cluster {
    // Dropped in this order: the operator before the API server.
    _op: Operator,
    api: FakeApiServer,
    dir: tempfile::TempDir,
    port: u16,
    log: std::path::PathBuf,
}

async fn cluster(ca_pem: &str, policies: &[Value]) -> Cluster {
    let api = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kubeconfig = d.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    std::fs::create_dir_all(d.join("keys/provider-keys")).unwrap();
    std::fs::write(d.join("keys/provider-keys/openai"), "sk-fake-openai").unwrap();
    std::fs::write(d.join("keys/provider-keys/embedder"), "sk-embedder").unwrap();
    api.put(
        "pods",
        pod(
            "tokenwarden-0",
            NS,
            json!({"app.kubernetes.io/name": "tokenwarden"}),
        ),
    );
    api.put(
        "mutatingwebhookconfigurations",
        webhook_config(
            "MutatingWebhookConfiguration",
            "tokenwarden-injector",
            "inject.tokenwarden.dev",
        ),
    );
    api.put(
        "validatingwebhookconfigurations",
        webhook_config(
            "ValidatingWebhookConfiguration",
            "tokenwarden-validator",
            "validate.tokenwarden.dev",
        ),
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    api.put(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "redis-auth", "namespace": "team"},
               "data": {"password": b64,
                        "ca.crt": base64::engine::general_purpose::STANDARD.encode(ca_pem)}}),
    );
    for p in policies {
        api.put("routingpolicies", p.clone());
    }

    let log = d.join("operator.log");
    let mut op = Operator::new();
    op.listen()
        .args(["--webhook-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--status-interval-ms", "200"])
        .arg("--cache-credentials")
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", "tokenwarden-0")
        .env("POD_IP", "127.0.0.1");
    op.rust_log = "debug".into();
    op.stderr = Stderr::Append(log.clone());
    op.spawn();
    let secret = eventually("the certificate Secret", || {
        api.get("", "secrets", NS, "tokenwarden-tls")
    })
    .await;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["ca.crt"].as_str().unwrap())
        .unwrap();
    std::fs::write(d.join("ca.crt"), ca).unwrap();
    let port = op.url().rsplit(':').next().unwrap().parse::<u16>().unwrap();

    Cluster {
        api,
        _op: op,
        dir,
        port,
        log,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_resolves_the_redis_password_and_sidecars_share_entries() {
    let Some((redis, ca_pem)) = tls_redis() else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let c = cluster(
        &ca_pem,
        &[
            policy("shared", &fake, &redis, "redis-auth"),
            policy("broken", &fake, &redis, "no-such-secret"),
        ],
    )
    .await;
    let (api, d, port, log) = (&c.api, c.dir.path(), c.port, c.log.clone());
    let a = sidecar(api, d, "shared-0", "shared", port);
    let b = sidecar(api, d, "shared-1", "shared", port);
    let first = a.openai("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-tokenwarden-cache"), Some("miss"));
    eventually("the entry in Redis", || {
        let keys = redis.cli(&["--scan", "--pattern", "tw:team:shared:x:*"])?;
        (keys.lines().count() == 1).then_some(())
    })
    .await;
    let hit = b.openai("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(hit.header("x-tokenwarden-cache"), Some("hit"));
    assert_eq!(hit.body, first.body, "B replays A's bytes");
    assert_eq!(fake.log().len(), 1);

    // The policy whose Secret is missing: a condition and an Event that
    // say which Secret; its requests still flow, as misses.
    let c = eventually("ResponseCacheDegraded on the broken policy", || {
        condition(api, "broken", "ResponseCacheDegraded").filter(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(c["reason"], "CredentialsUnavailable", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("Secret team/no-such-secret not found"),
        "{c}"
    );
    let ok = condition(api, "shared", "ResponseCacheDegraded").unwrap();
    assert_eq!(ok["status"], "False", "{ok}");
    let events = eventually("the Warning Event", || {
        let evs = api.list("events.k8s.io", "events");
        evs.iter()
            .any(|e| e["reason"] == "CredentialsUnavailable")
            .then_some(evs)
    })
    .await;
    let c2 = sidecar(api, d, "broken-0", "broken", port);
    for _ in 0..2 {
        let r = c2.openai("/v1/chat/completions", CHAT, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-tokenwarden-cache"), Some("miss"));
    }

    // The password is nowhere but in Redis's own config and the Secret.
    let statuses: String = api
        .list("tokenwarden.dev", "routingpolicies")
        .iter()
        .map(|p| p["status"].to_string())
        .collect();
    let everything = format!(
        "{statuses}{}{}{}{}",
        serde_json::to_string(&events).unwrap(),
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(d.join("shared-0.log")).unwrap_or_default(),
        std::fs::read_to_string(d.join("state-shared-0/config-snapshot.json")).unwrap_or_default(),
    );
    assert!(!everything.contains(PASSWORD), "the password leaked");
    assert!(
        std::fs::read_to_string(d.join("state-shared-0/config-snapshot.json"))
            .unwrap()
            .contains("tw"),
        "the snapshot was persisted"
    );
}

/// `policy`, with the semantic cache on, embedding with `embedder`.
fn semantic_policy(name: &str, fake: &FakeProvider, redis: &Redis, embedder: &str) -> Value {
    let mut p = policy(name, fake, redis, "redis-auth");
    p["spec"]["providers"].as_array_mut().unwrap().push(json!({
        "name": "embedder", "api": "openai", "baseUrl": embedder,
        "apiKeySecretRef": {"name": "provider-keys", "key": "embedder"},
        "prices": [{"model": "all-minilm-l6-v2", "inputPerMTok": "0", "outputPerMTok": "0"}]
    }));
    p["spec"]["cache"]["semantic"] =
        json!({"embedding": {"provider": "embedder", "model": "all-minilm-l6-v2"}});
    p
}

fn chat(text: &str) -> String {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_semantic_entry_filled_through_one_connected_sidecar_answers_another() {
    let Some(embedder) = Embedder::start() else {
        return;
    };
    let Some((redis, ca_pem)) = tls_redis() else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let c = cluster(
        &ca_pem,
        &[semantic_policy("faq", &fake, &redis, &embedder.url)],
    )
    .await;
    let (api, d) = (&c.api, c.dir.path());
    let a = sidecar(api, d, "faq-0", "faq", c.port);
    let b = sidecar(api, d, "faq-1", "faq", c.port);

    let first = a
        .openai(
            "/v1/chat/completions",
            &chat("How do I reset my password?"),
            &[],
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-tokenwarden-cache"), Some("miss"));
    // Published with the password the operator resolved; B's tail (blocked
    // in XREAD, woken by the XADD) indexes it a moment later.
    eventually("the semantic entry in Redis", || {
        let keys = redis.cli(&["--scan", "--pattern", "tw:team:faq:s:*"])?;
        (keys.lines().count() == 1).then_some(())
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b
        .admin_get("/metrics")
        .await
        .text()
        .lines()
        .any(|l| l == "tokenwarden_semantic_cache_entries 1")
    {
        assert!(Instant::now() < deadline, "B never indexed A's entry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let hit = b
        .openai(
            "/v1/chat/completions",
            &chat("How can I reset my password?"),
            &[],
        )
        .await;
    assert_eq!(
        hit.header("x-tokenwarden-cache"),
        Some("hit"),
        "{}",
        hit.text()
    );
    let sim = hit.header("x-tokenwarden-cache-similarity").unwrap();
    assert!(sim.starts_with("0.99"), "{sim}");
    assert_eq!(hit.body, first.body, "B replays A's bytes");
    assert_eq!(hit.header("x-tokenwarden-cost-usd"), Some("0.00"));
    let chats = fake.log().iter().filter(|r| r.api == "openai.chat").count();
    assert_eq!(chats, 1, "one provider call for two answers");
}
