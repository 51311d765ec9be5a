#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The admission handlers on AdmissionReview fixtures
//! (`tests/fixtures/admission/`): exact JSONPatch operations, the patched Pod
//! validated by `kubernetes-validate --strict -k 1.33.0`, idempotence,
//! opt-out, excluded namespaces, and the validating webhook's messages.
//!
//! Golden patches live beside the fixtures (`*.patch.json`); regenerate them
//! with `TOKENWARDEN_UPDATE_FIXTURES=1` and review the diff.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use base64::Engine as _;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tokenwarden_core::workload::ObjectRef;
use tokenwarden_crds::{RoutingPolicy, TokenBudget, load};
use tokenwarden_operator::{
    source::Objects,
    webhook::{
        inject::{self, InjectConfig, Outcome, SkipReason},
        review::{self, InjectContext},
    },
};

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfixture\n-----END CERTIFICATE-----\n";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission")
}

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(name)).unwrap()).unwrap()
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
        requests: BTreeMap::from([
            ("cpu".into(), "50m".into()),
            ("memory".into(), "64Mi".into()),
        ]),
        limits: BTreeMap::from([("memory".into(), "256Mi".into())]),
        run_as_user: 65532,
        token_expiration_seconds: 3600,
        state_size_limit: Some("256Mi".into()),
        otel: None,
        version: "0.1.0".into(),
    }
}

fn policy(yaml: &str) -> (ObjectRef, Arc<RoutingPolicy>) {
    let p: RoutingPolicy = serde_norway_free(yaml);
    (
        ObjectRef {
            namespace: p.metadata.namespace.clone().unwrap(),
            name: p.metadata.name.clone().unwrap(),
        },
        Arc::new(p),
    )
}

fn serde_norway_free(yaml: &str) -> RoutingPolicy {
    match load::parse_yaml(yaml).unwrap().remove(0) {
        load::Object::RoutingPolicy(p) => *p,
        load::Object::TokenBudget(_) => panic!("not a policy"),
    }
}

/// The example policy (agents/coding-agent, Secret llm-keys), one selecting
/// the summarizer (Secret summarizer-keys), one in another namespace and one
/// that is invalid: neither of the last two may add a mount.
fn objects() -> Objects {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/examples/01-coding-agent-routing.yaml"),
    )
    .unwrap();
    let mut policies = BTreeMap::new();
    for y in [
        example.as_str(),
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: RoutingPolicy\nmetadata: {name: summarizer, namespace: agents}\nspec:\n  workloadSelector: {matchExpressions: [{key: app, operator: In, values: [summarizer]}]}\n  providers:\n    - {name: openai, api: openai, baseUrl: \"https://api.openai.com\", apiKeySecretRef: {name: summarizer-keys, key: openai}}\n    - {name: anthropic, api: anthropic, baseUrl: \"https://api.anthropic.com\", apiKeySecretRef: {name: summarizer-keys, key: anthropic}}\n",
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: RoutingPolicy\nmetadata: {name: everyone, namespace: other}\nspec:\n  providers:\n    - {name: openai, api: openai, baseUrl: \"https://api.openai.com\", apiKeySecretRef: {name: other-keys, key: openai}}\n",
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: RoutingPolicy\nmetadata: {name: broken, namespace: agents}\nspec:\n  routes: [{name: r, target: {tier: missing}}]\n  providers:\n    - {name: openai, api: openai, baseUrl: \"https://api.openai.com\", apiKeySecretRef: {name: broken-keys, key: openai}}\n",
    ] {
        let (k, v) = policy(y);
        policies.insert(k, v);
    }
    Objects {
        policies,
        budgets: BTreeMap::new(),
        errors: Vec::new(),
        cache_secrets: BTreeMap::new(),
    }
}

/// The response of a review, parsed.
fn response(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    v["response"].clone()
}

/// Decode `response.patch` in both encodings seen on the wire: base64 (what
/// the apiserver's `[]byte` expects and what we send) and an array of numbers
/// (what kube-core's `AdmissionResponse` serializes, kube-rs/kube#1781).
fn decode_patch(resp: &Value) -> Option<Value> {
    let bytes = match &resp["patch"] {
        Value::Null => return None,
        Value::String(s) => base64::engine::general_purpose::STANDARD.decode(s).unwrap(),
        Value::Array(a) => a.iter().map(|n| n.as_u64().unwrap() as u8).collect(),
        other => panic!("unexpected patch encoding {other}"),
    };
    assert_eq!(resp["patchType"], "JSONPatch");
    Some(serde_json::from_slice(&bytes).unwrap())
}

fn mutate(review_json: &Value, objects: Option<&Objects>) -> Value {
    mutate_with(&config(), review_json, objects)
}

fn mutate_with(cfg: &InjectConfig, review_json: &Value, objects: Option<&Objects>) -> Value {
    let body = review::mutate(
        &serde_json::to_vec(review_json).unwrap(),
        &InjectContext {
            config: cfg,
            objects,
            ca_pem: CA,
        },
    );
    let resp = response(&body);
    assert_eq!(resp["uid"], review_json["request"]["uid"]);
    resp
}

fn apply(pod: &Value, patch: &Value) -> Value {
    let mut pod = pod.clone();
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    json_patch::patch(&mut pod, &p).unwrap();
    pod
}

/// Compare with the golden file, or write it when asked to.
fn golden(name: &str, actual: &Value) {
    let path = fixtures().join(name);
    if std::env::var_os("TOKENWARDEN_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(actual).unwrap() + "\n").unwrap();
    }
    let want: Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with TOKENWARDEN_UPDATE_FIXTURES=1)",
            path.display()
        )
    }))
    .unwrap();
    assert_eq!(&want, actual, "golden {name}");
}

fn kubernetes_validate() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/kubernetes-validate");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("kubernetes-validate")
}

/// Run kubernetes-validate --strict at 1.33.0 on the objects; panics with its
/// output when it rejects one (or cannot run: this is a tier-A test).
fn validate_k8s(objects: &[(&str, &Value)]) {
    let (ok, text) = run_validate(objects);
    assert!(ok, "kubernetes-validate rejected:\n{text}");
    assert_eq!(
        text.matches("passed for resource pod/").count(),
        objects.len(),
        "every file validated:\n{text}"
    );
}

fn run_validate(objects: &[(&str, &Value)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, obj) in objects {
        // Pods of a ReplicaSet reach admission with only `generateName`; the
        // apiserver names them after the webhooks ran, as we do here.
        let mut obj = (*obj).clone();
        if obj["metadata"]["name"].is_null() {
            let generated = format!("{}x7k2p", obj["metadata"]["generateName"].as_str().unwrap());
            obj["metadata"]["name"] = Value::String(generated);
        }
        let f = dir.path().join(format!("{name}.json"));
        std::fs::write(&f, serde_json::to_vec_pretty(&obj).unwrap()).unwrap();
        files.push(f);
    }
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "-k", "1.33.0"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate not runnable ({e}): scripts/test installs it into .venv")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_validator_catches_a_bad_sidecar() {
    // Guards the guard: a misspelled field or a wrong type in what we inject
    // must fail kubernetes-validate --strict.
    let review = fixture("pod-one-container.json");
    let patch = decode_patch(&mutate(&review, Some(&objects()))).unwrap();
    let mut pod = apply(&review["request"]["object"], &patch);
    pod["spec"]["initContainers"][0]["restartPolicyy"] = json!("Always");
    let (ok, text) = run_validate(&[("typo", &pod)]);
    assert!(!ok, "{text}");
    let mut pod = apply(&review["request"]["object"], &patch);
    pod["spec"]["initContainers"][0]["ports"][0]["containerPort"] = json!("15801");
    let (ok, text) = run_validate(&[("type", &pod)]);
    assert!(!ok, "{text}");
}

fn ops_paths(patch: &Value) -> Vec<String> {
    patch
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["op"].as_str().unwrap(),
                o["path"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn one_container_pod_gets_the_sidecar() {
    let review = fixture("pod-one-container.json");
    let resp = mutate(&review, Some(&objects()));
    assert_eq!(resp["allowed"], true);
    assert!(
        resp["patch"].is_string(),
        "patch is base64, not a byte array"
    );
    let patch = decode_patch(&resp).unwrap();
    assert_eq!(
        ops_paths(&patch),
        [
            "add /spec/containers/0/env",
            "add /spec/initContainers",
            "add /spec/volumes",
            "add /metadata/annotations",
        ]
    );
    golden("pod-one-container.patch.json", &patch);

    let pod = apply(&review["request"]["object"], &patch);
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], inject::SIDECAR_NAME);
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The sidecar's own variables (never the operator's, nor unprefixed).
    assert_eq!(
        sidecar["env"],
        json!([
            {"name": "TOKENWARDEN_SIDECAR_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "TOKENWARDEN_SIDECAR_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "TOKENWARDEN_SIDECAR_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ])
    );
    assert_eq!(
        sidecar["volumeMounts"][3],
        json!({"name": "tokenwarden-key-0", "mountPath": "/var/run/tokenwarden/secrets/llm-keys", "readOnly": true})
    );
    // Only the example policy selects app=coding-agent: one key Secret.
    assert_eq!(
        pod["metadata"]["annotations"][inject::ANNOTATION_SECRETS],
        "llm-keys"
    );
    assert_eq!(pod["metadata"]["annotations"][inject::ANNOTATION_CA], CA);
    let env = &pod["spec"]["containers"][0]["env"];
    assert_eq!(
        env[0],
        json!({"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:15800/v1"})
    );
    assert_eq!(
        env[2],
        json!({"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:15800"})
    );
    // The app container never mounts the key Secret.
    assert!(pod["spec"]["containers"][0]["volumeMounts"].is_null());
    let token = &pod["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "tokenwarden");

    validate_k8s(&[("one-container", &pod)]);

    // Idempotent: the injected pod comes back unchanged.
    let mut again = review.clone();
    again["request"]["object"] = pod.clone();
    let resp = mutate(&again, Some(&objects()));
    assert_eq!(resp["allowed"], true);
    assert_eq!(decode_patch(&resp), None);
    // ... and the committed already-injected fixture is exactly that pod.
    golden("pod-already-injected.json", &again);
}

#[test]
fn already_injected_fixture_is_left_alone() {
    let review = fixture("pod-already-injected.json");
    let resp = mutate(&review, Some(&objects()));
    assert_eq!(resp["allowed"], true);
    assert_eq!(resp.get("patch"), None);
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(review["request"]["object"].clone()).unwrap();
    assert_eq!(
        inject::inject(&pod, "agents", &[], CA, &config()),
        Outcome::Skip(SkipReason::AlreadyInjected)
    );
}

#[test]
fn several_containers_keep_their_own_settings() {
    let review = fixture("pod-several-containers.json");
    let resp = mutate(&review, Some(&objects()));
    let patch = decode_patch(&resp).unwrap();
    assert_eq!(
        ops_paths(&patch),
        [
            // the app's init container: it had no env
            "add /spec/initContainers/0/env",
            // worker: sets OPENAI_BASE_URL itself, which wins
            "add /spec/containers/0/env/-",
            "add /spec/containers/0/env/-",
            "add /spec/containers/0/env/-",
            "add /spec/containers/0/env/-",
            // anthropic-worker: envFrom may hold the keys: no placeholder keys
            "add /spec/containers/1/env",
            "add /spec/containers/2/env",
            // the sidecar goes before the app's init container
            "add /spec/initContainers/0",
            "add /spec/volumes/-",
            "add /spec/volumes/-",
            "add /spec/volumes/-",
            "add /spec/volumes/-",
            "add /metadata/annotations/tokenwarden.dev~1injected",
            "add /metadata/annotations/tokenwarden.dev~1sidecar-image",
            "add /metadata/annotations/tokenwarden.dev~1provider-secrets",
            "add /metadata/annotations/tokenwarden.dev~1control-plane-ca",
        ]
    );
    golden("pod-several-containers.patch.json", &patch);
    let pod = apply(&review["request"]["object"], &patch);
    let spec = &pod["spec"];
    assert_eq!(spec["initContainers"][0]["name"], inject::SIDECAR_NAME);
    assert_eq!(spec["initContainers"][1]["name"], "migrate");
    let names = |c: &Value| -> Vec<String> {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}={}",
                    e["name"].as_str().unwrap(),
                    e["value"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        names(&spec["containers"][0]),
        [
            "LOG_LEVEL=info",
            "OPENAI_BASE_URL=https://llm-gateway.internal/v1",
            "OPENAI_API_BASE=http://127.0.0.1:15800/v1",
            "ANTHROPIC_BASE_URL=http://127.0.0.1:15800",
            "OPENAI_API_KEY=injected-by-tokenwarden",
            "ANTHROPIC_API_KEY=injected-by-tokenwarden",
        ]
    );
    assert_eq!(
        names(&spec["containers"][1]),
        [
            "OPENAI_BASE_URL=http://127.0.0.1:15800/v1",
            "OPENAI_API_BASE=http://127.0.0.1:15800/v1",
            "ANTHROPIC_BASE_URL=http://127.0.0.1:15800",
        ]
    );
    // The existing service-account volume stays first; ours follow.
    let vols: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        vols,
        [
            "kube-api-access-x7k2p",
            "tokenwarden-state",
            "tokenwarden-token",
            "tokenwarden-podinfo",
            "tokenwarden-key-0",
        ]
    );
    // The summarizer policy's Secret only; the other namespace's and the
    // invalid policy's are not mounted.
    assert_eq!(
        pod["metadata"]["annotations"][inject::ANNOTATION_SECRETS],
        "summarizer-keys"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    validate_k8s(&[("several-containers", &pod)]);
}

#[test]
fn opted_out_and_excluded_namespaces_are_not_injected() {
    for (file, reason) in [
        ("pod-opted-out.json", SkipReason::OptedOut),
        (
            "pod-operator-namespace.json",
            SkipReason::ExcludedNamespace("tokenwarden".into()),
        ),
        (
            "pod-kube-system.json",
            SkipReason::ExcludedNamespace("kube-system".into()),
        ),
    ] {
        let review = fixture(file);
        let resp = mutate(&review, Some(&objects()));
        assert_eq!(resp["allowed"], true, "{file}");
        assert_eq!(resp.get("patch"), None, "{file}");
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(review["request"]["object"].clone()).unwrap();
        let ns = review["request"]["namespace"].as_str().unwrap();
        assert_eq!(
            inject::inject(&pod, ns, &[], CA, &config()),
            Outcome::Skip(reason),
            "{file}"
        );
    }
}

#[test]
fn host_network_pods_are_not_injected() {
    let mut review = fixture("pod-one-container.json");
    review["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    let resp = mutate(&review, Some(&objects()));
    assert_eq!(resp.get("patch"), None);
}

#[test]
fn before_the_first_sync_the_pod_is_injected_with_a_warning() {
    let review = fixture("pod-one-container.json");
    let resp = mutate(&review, None);
    let patch = decode_patch(&resp).unwrap();
    let pod = apply(&review["request"]["object"], &patch);
    assert_eq!(
        pod["metadata"]["annotations"][inject::ANNOTATION_SECRETS],
        ""
    );
    assert!(
        resp["warnings"][0]
            .as_str()
            .unwrap()
            .contains("RoutingPolicies not loaded yet")
    );
    validate_k8s(&[("no-secrets", &pod)]);
}

#[test]
fn kube_core_number_array_patches_decode_like_ours() {
    // kube-core serializes `patch` as an array of numbers (kube-rs/kube#1781);
    // the helper reads both, and the two decode to the same operations.
    let review = fixture("pod-one-container.json");
    let ours = mutate(&review, Some(&objects()));
    let ops: json_patch::Patch = serde_json::from_value(decode_patch(&ours).unwrap()).unwrap();
    let req: kube::core::admission::AdmissionReview<kube::core::DynamicObject> =
        serde_json::from_value(review.clone()).unwrap();
    let req: kube::core::admission::AdmissionRequest<_> = req.try_into().unwrap();
    let theirs = kube::core::admission::AdmissionResponse::from(&req)
        .with_patch(ops)
        .unwrap()
        .into_review();
    let theirs = serde_json::to_value(&theirs).unwrap()["response"].clone();
    assert!(
        theirs["patch"].is_array(),
        "kube-core still uses numbers: {}",
        theirs["patch"]
    );
    assert_eq!(decode_patch(&theirs), decode_patch(&ours));
}

#[test]
fn validating_webhook_allows_a_valid_policy() {
    let body = serde_json::to_vec(&fixture("routingpolicy-valid.json")).unwrap();
    let resp = response(&review::validate(&body));
    assert_eq!(resp["uid"], "6e9a2b7f-3d8c-4f1a-8b6e-7c8d9e0f1a2b");
    assert_eq!(resp["allowed"], true);
}

#[test]
fn validating_webhook_denies_with_the_shared_field_path_messages() {
    let review = fixture("tokenbudget-invalid.json");
    let resp = response(&review::validate(&serde_json::to_vec(&review).unwrap()));
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["status"]["code"], 422);
    assert_eq!(resp["status"]["reason"], "Invalid");
    let budget: TokenBudget = serde_json::from_value(review["request"]["object"].clone()).unwrap();
    let shared = budget.validate().unwrap_err().to_string();
    assert_eq!(resp["status"]["message"], shared.as_str());
    assert_eq!(
        shared,
        "TokenBudget ns/b is invalid: spec.thresholds[0].downgradeTo: downgradeTo is only \
         allowed for action Downgrade, not Block"
    );

    let review = fixture("tokenbudget-unknown-field.json");
    let resp = response(&review::validate(&serde_json::to_vec(&review).unwrap()));
    assert_eq!(resp["allowed"], false);
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "TokenBudget ns/b is invalid: spec.limits: unknown field `limits`, expected one of"
        ),
        "{msg}"
    );
}

#[test]
fn garbage_is_refused_not_panicked_on() {
    for body in [
        &b"not json"[..],
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    ] {
        let resp = response(&review::validate(body));
        assert_eq!(resp["allowed"], false);
        assert_eq!(resp["status"]["code"], 400);
    }
}

#[test]
fn otel_settings_reach_every_injected_sidecar_as_otel_variables() {
    let mut cfg = config();
    cfg.otel = Some(inject::OtelInject {
        endpoint: "http://otel-collector.observability:4317".into(),
        protocol: "grpc".into(),
        sampler: "parentbased_traceidratio".into(),
        sampler_arg: Some("0.25".into()),
        resource_attributes: Some("deployment.environment=prod".into()),
        headers_secret: None,
        ca_config_map: None,
        client_cert_secret: None,
    });
    let review = fixture("pod-one-container.json");
    let resp = mutate_with(&cfg, &review, Some(&objects()));
    let pod = apply(&review["request"]["object"], &decode_patch(&resp).unwrap());
    let sidecar = &pod["spec"]["initContainers"][0];
    // After the downward-API variables, so Kubernetes expands $(...) in the
    // resource attributes to this pod's namespace, name and uid.
    assert_eq!(
        sidecar["env"].as_array().unwrap()[3..],
        json!([
            {"name": "OTEL_SERVICE_NAME", "value": "tokenwarden-sidecar"},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4317"},
            {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "grpc"},
            {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
            {"name": "OTEL_TRACES_SAMPLER_ARG", "value": "0.25"},
            {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "k8s.namespace.name=$(TOKENWARDEN_SIDECAR_NAMESPACE),k8s.pod.name=$(TOKENWARDEN_SIDECAR_POD_NAME),k8s.pod.uid=$(TOKENWARDEN_SIDECAR_POD_UID),k8s.container.name=tokenwarden-sidecar,deployment.environment=prod"},
        ])
        .as_array()
        .unwrap()[..]
    );
    // The app containers get no OTEL variables: the app's own telemetry
    // is the app's business.
    let app_env = pod["spec"]["containers"][0]["env"].to_string();
    assert!(!app_env.contains("OTEL_"), "{app_env}");
    validate_k8s(&[("otel", &pod)]);
}

fn otel_tls() -> InjectConfig {
    let mut cfg = config();
    cfg.otel = Some(inject::OtelInject {
        endpoint: "https://otel.example.com:4317".into(),
        protocol: "grpc".into(),
        sampler: "parentbased_always_on".into(),
        sampler_arg: None,
        resource_attributes: None,
        headers_secret: Some(inject::KeyRef {
            name: "otel-auth".into(),
            key: "headers".into(),
        }),
        ca_config_map: Some(inject::KeyRef {
            name: "otel-ca".into(),
            key: "bundle.pem".into(),
        }),
        client_cert_secret: Some("otel-client".into()),
    });
    cfg
}

#[test]
fn otel_headers_ca_and_client_certificate_come_from_the_pods_namespace() {
    let cfg = otel_tls();
    // A pod without volumes: ours make the list.
    let review = fixture("pod-one-container.json");
    let resp = mutate_with(&cfg, &review, Some(&objects()));
    let patch = decode_patch(&resp).unwrap();
    assert_eq!(
        ops_paths(&patch),
        [
            "add /spec/containers/0/env",
            "add /spec/initContainers",
            "add /spec/volumes",
            "add /metadata/annotations",
        ]
    );
    let pod = apply(&review["request"]["object"], &patch);
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(
        sidecar["env"].as_array().unwrap()[3..],
        json!([
            {"name": "OTEL_SERVICE_NAME", "value": "tokenwarden-sidecar"},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "https://otel.example.com:4317"},
            {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "grpc"},
            // The headers (a token) never appear as a value in the pod spec.
            {"name": "OTEL_EXPORTER_OTLP_HEADERS", "valueFrom": {"secretKeyRef": {"name": "otel-auth", "key": "headers", "optional": true}}},
            {"name": "OTEL_EXPORTER_OTLP_CERTIFICATE", "value": "/var/run/tokenwarden/otel-ca/ca.crt"},
            {"name": "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "value": "/var/run/tokenwarden/otel-client/tls.crt"},
            {"name": "OTEL_EXPORTER_OTLP_CLIENT_KEY", "value": "/var/run/tokenwarden/otel-client/tls.key"},
            {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_always_on"},
            {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "k8s.namespace.name=$(TOKENWARDEN_SIDECAR_NAMESPACE),k8s.pod.name=$(TOKENWARDEN_SIDECAR_POD_NAME),k8s.pod.uid=$(TOKENWARDEN_SIDECAR_POD_UID),k8s.container.name=tokenwarden-sidecar"},
        ])
        .as_array()
        .unwrap()[..]
    );
    assert_eq!(
        sidecar["volumeMounts"].as_array().unwrap()[4..],
        json!([
            {"name": "tokenwarden-otel-ca", "mountPath": "/var/run/tokenwarden/otel-ca", "readOnly": true},
            {"name": "tokenwarden-otel-client", "mountPath": "/var/run/tokenwarden/otel-client", "readOnly": true},
        ])
        .as_array()
        .unwrap()[..]
    );
    let otel_volumes = json!([
        {"name": "tokenwarden-otel-ca", "configMap": {
            "name": "otel-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}], "optional": true}},
        {"name": "tokenwarden-otel-client", "secret": {
            "secretName": "otel-client",
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
            "optional": true}},
    ]);
    let vols = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 6, "{vols:?}");
    assert_eq!(vols[4..], otel_volumes.as_array().unwrap()[..]);
    // Nothing of it reaches the app container.
    let app = pod["spec"]["containers"][0].to_string();
    assert!(!app.contains("OTEL_") && !app.contains("otel-"), "{app}");
    validate_k8s(&[("otel-tls", &pod)]);

    // Re-invoked (reinvocationPolicy IfNeeded): nothing is added twice.
    let mut again = review.clone();
    again["request"]["object"] = pod.clone();
    assert_eq!(
        decode_patch(&mutate_with(&cfg, &again, Some(&objects()))),
        None
    );

    // A pod with volumes of its own: ours are appended after them.
    let review = fixture("pod-several-containers.json");
    let patch = decode_patch(&mutate_with(&cfg, &review, Some(&objects()))).unwrap();
    let adds: Vec<&Value> = patch
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["path"] == "/spec/volumes/-")
        .map(|o| &o["value"])
        .collect();
    assert_eq!(adds.len(), 6);
    assert_eq!(
        adds[4..].iter().map(|v| (*v).clone()).collect::<Vec<_>>(),
        otel_volumes.as_array().unwrap()[..]
    );
    let pod = apply(&review["request"]["object"], &patch);
    let names: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "kube-api-access-x7k2p",
            "tokenwarden-state",
            "tokenwarden-token",
            "tokenwarden-podinfo",
            "tokenwarden-key-0",
            "tokenwarden-otel-ca",
            "tokenwarden-otel-client",
        ]
    );
    validate_k8s(&[("otel-tls-several", &pod)]);
    let mut again = review.clone();
    again["request"]["object"] = pod;
    assert_eq!(
        decode_patch(&mutate_with(&cfg, &again, Some(&objects()))),
        None
    );
}
