"""The Helm chart, rendered offline by the real Helm library (helm-python-sdk)
for the default values and each option, validated with kubernetes-validate
(strict) at the oldest (1.33) and newest (1.37) Kubernetes we know, linted
strictly, and checked for what each option must change."""

from __future__ import annotations

import copy
import re
import subprocess

import helm_python
import kubernetes_validate
import pytest
import yaml

from chartlib import CHART, DEPLOY, NAMESPACE, ROOT, manifest, objects, operator_bin

KUBE_VERSIONS = ["1.33.0", "1.37.0"]

OPTIONS = {
    "default": {},
    "cert-manager": {"certManager": {"enabled": True}},
    "cert-manager-issuer": {"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}},
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "dashboards-and-alerts": {
        "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                           "runbookBaseUrl": "https://wiki.example.com/runbooks/tokenwarden"},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "LLM"}},
    },
    "dashboards-and-alerts-scoped": {
        "podMonitor": {"enabled": True, "namespaces": ["agents", "search"], "interval": "15s"},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "labels": {"grafana_dashboard": "tokenwarden"}},
    },
    "otel": {"sidecar": {"otel": {"endpoint": "http://otel-collector.observability:4317",
                                  "sampler": "parentbased_traceidratio", "samplerArg": "0.25",
                                  "resourceAttributes": "deployment.environment=prod"}}},
    "otel-tls-headers": {"sidecar": {"otel": {"endpoint": "https://otel.example.com:4317",
                                              "headersSecret": {"name": "otel-auth", "key": "headers"},
                                              "caConfigMap": {"name": "corp-ca", "key": "bundle.pem"},
                                              "clientCertSecret": "otel-client"}}},
    "usage-store": {"usageStore": {"postgres": {"existingSecret": "tokenwarden-usage-db", "secretKey": "dsn"},
                                   "retentionMonths": 24, "maxBacklog": 2000000}},
    "network-policy": {"networkPolicy": {"enabled": True, "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}]}},
    "single-replica-fail-closed": {
        "replicaCount": 1,
        "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 5, "reinvocationPolicy": "Never",
                    "validation": {"enabled": False}},
        "sidecar": {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}},
    },
}

# Kinds of CRDs that are not part of Kubernetes: checked field by field below.
FOREIGN = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def env_of(docs: list[dict]) -> dict[str, str]:
    c = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in c["env"]}


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_rendered_objects_validate(option: str, kube: str) -> None:
    docs = objects(OPTIONS[option])
    assert docs, "nothing rendered"
    for d in docs:
        if (d["apiVersion"], d["kind"]) in FOREIGN:
            continue
        # Raises ValidationError (with the path) on any schema violation or unknown field.
        kubernetes_validate.validate(d, kube, strict=True)


def test_the_validator_can_fail() -> None:
    deployment = copy.deepcopy(one(objects(), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33.0", strict=True)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_lint_strict(option: str) -> None:
    report = helm_python.lint(str(CHART), OPTIONS[option], strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_schema_rejects_bad_values() -> None:
    for bad in (
        {"webhook": {"failurePolicy": "Sometimes"}},
        {"webhook": {"timeoutSeconds": 31}},
        {"replicaCount": 0},
        {"sidecar": {"resources": {"requests": {"memory": "lots"}}}},
        {"sidecar": {"otel": {"endpoint": "otel-collector:4317"}}},
        {"sidecar": {"otel": {"endpoint": "grpcs://collector.example.com"}}},
        {"sidecar": {"otel": {"protocol": "http/json"}}},
        {"sidecar": {"otel": {"samplerArg": "2"}}},
        {"sidecar": {"otel": {"headersSecret": {"name": "Otel_Auth"}}}},
        {"sidecar": {"otel": {"headersSecret": {"name": "otel-auth", "key": ""}}}},
        {"sidecar": {"otel": {"headersSecret": {"name": "otel-auth", "key": "a/b"}}}},
        {"sidecar": {"otel": {"headersSecret": "otel-auth/headers"}}},
        {"sidecar": {"otel": {"headersSecret": {"name": "otel-auth", "value": "x-token=1"}}}},
        {"sidecar": {"otel": {"caConfigMap": {"name": "-corp-ca"}}}},
        {"sidecar": {"otel": {"caConfigMap": {"name": "corp-ca", "key": "..data"}}}},
        {"sidecar": {"otel": {"clientCertSecret": "otel/client"}}},
        {"sidecar": {"otel": {"clientCertSecret": {"name": "otel-client"}}}},
        {"podMonitor": {"interval": "often"}},
        {"podMonitor": {"namespaces": ["Not_A_Namespace"]}},
        {"prometheusRule": {"runbookBaseUrl": "docs/observability.md"}},
        {"prometheusRule": {"runbookBaseUrl": "https://wiki.example.com/page#anchor"}},
        {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}},
        {"grafanaDashboard": {"folder": "LLM"}},
        {"usageStore": {"postgres": {"existingSecret": "Not_A_Name"}}},
        {"usageStore": {"postgres": {"url": "postgres://inline:password@db/x"}}},
        {"usageStore": {"retentionMonths": -1}},
        {"usageStore": {"maxBacklog": 0}},
        {"unknownKey": True},
    ):
        with pytest.raises(helm_python.HelmValuesError):
            objects(bad)


def test_defaults_ha_operator() -> None:
    docs = objects()
    dep = one(docs, "Deployment", "tokenwarden")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    pod = spec["template"]["spec"]
    keys = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {p["containerPort"] for p in c["ports"]} == {15810, 15811, 15812}
    env = env_of(docs)
    assert env["TOKENWARDEN_OPERATOR_WEBHOOK_CERT_MODE"] == "secret"
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_REQUESTS"] == "cpu=50m,memory=64Mi"
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_LIMITS"] == "memory=256Mi"
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_IMAGE"] == "ghcr.io/tokenwarden/sidecar:0.1.0"
    for name in ("POD_NAMESPACE", "POD_NAME", "POD_IP"):
        assert name in env
    # The operator defaults to loopback; in the pod, sidecars, probes and
    # scrapers come over the pod network (/ledger is guarded by the operator).
    assert env["TOKENWARDEN_OPERATOR_GRPC_LISTEN"] == "0.0.0.0:15810"
    assert env["TOKENWARDEN_OPERATOR_ADMIN_LISTEN"] == "0.0.0.0:15811"
    assert env["TOKENWARDEN_OPERATOR_WEBHOOK_LISTEN"] == "0.0.0.0:15812"
    # Only the operator's own variables (the sidecar reads TOKENWARDEN_SIDECAR_*).
    assert [n for n in env if n.startswith("TOKENWARDEN_") and not n.startswith("TOKENWARDEN_OPERATOR_")] == []
    # The Secret the operator writes is mounted optionally for the gRPC server.
    vol = pod["volumes"][0]
    assert vol["secret"] == {"secretName": "tokenwarden-tls", "optional": True}
    assert not by_kind(docs, "Certificate") and not by_kind(docs, "ServiceMonitor") and not by_kind(docs, "NetworkPolicy")
    assert not by_kind(docs, "PodMonitor") and not by_kind(docs, "PrometheusRule") and not by_kind(docs, "ConfigMap")


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_variable_set_is_one_the_operator_reads(option: str) -> None:
    """A misspelt or renamed variable would be ignored silently: every one the
    chart sets must be listed in the operator's --help (`[env: NAME=...]`)."""
    exe = operator_bin()
    if not exe.exists():
        pytest.fail(f"{exe} missing: build it with `cargo build -p tokenwarden-operator`")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # `[env: NAME=value]`, or `[env: NAME]` for a secret (hide_env_values).
    read = set(re.findall(r"\[env:\s+([A-Z0-9_]+)[=\]]", out.stdout))
    assert "TOKENWARDEN_OPERATOR_ADMIN_LISTEN" in read, out.stdout
    # OTEL_*: the OpenTelemetry SDK's own variables, read by its exporter.
    unread = sorted(
        n for n in set(env_of(objects(OPTIONS[option]))) - read - {"RUST_LOG"} if not n.startswith("OTEL_")
    )
    assert unread == [], f"the operator does not read {unread}"


def test_services() -> None:
    docs = objects()
    control = one(docs, "Service", "tokenwarden-control")
    assert control["spec"]["selector"]["tokenwarden.dev/leader"] == "true"
    assert control["spec"]["ports"][0]["port"] == 15810
    webhook = one(docs, "Service", "tokenwarden-webhook")
    assert "tokenwarden.dev/leader" not in webhook["spec"]["selector"]
    assert webhook["spec"]["ports"][0] == {"name": "https-webhook", "port": 443, "targetPort": "https-webhook", "protocol": "TCP"}
    assert one(docs, "Service", "tokenwarden-metrics")["spec"]["ports"][0]["port"] == 15811


def test_webhook_configuration_defaults() -> None:
    docs = objects()
    mwc = one(docs, "MutatingWebhookConfiguration", "tokenwarden-injector")
    assert [w["name"] for w in mwc["webhooks"]] == ["namespace.inject.tokenwarden.dev", "pod.inject.tokenwarden.dev"]
    for w in mwc["webhooks"]:
        assert w["failurePolicy"] == "Ignore"
        assert w["timeoutSeconds"] == 10
        assert w["reinvocationPolicy"] == "IfNeeded"
        assert w["sideEffects"] == "None"
        assert w["clientConfig"]["service"] == {"name": "tokenwarden-webhook", "namespace": NAMESPACE, "path": "/inject", "port": 443}
        assert "caBundle" not in w["clientConfig"]
        exprs = {e["key"]: e for e in w["namespaceSelector"]["matchExpressions"]}
        excluded = exprs["kubernetes.io/metadata.name"]
        assert excluded["operator"] == "NotIn"
        assert excluded["values"][:2] == [NAMESPACE, "kube-system"]
    ns_hook, pod_hook = mwc["webhooks"]
    ns_sel = {e["key"]: e for e in ns_hook["namespaceSelector"]["matchExpressions"]}
    assert ns_sel["tokenwarden.dev/inject"] == {"key": "tokenwarden.dev/inject", "operator": "In", "values": ["enabled"]}
    assert ns_hook["objectSelector"]["matchExpressions"] == [{"key": "tokenwarden.dev/inject", "operator": "NotIn", "values": ["disabled"]}]
    assert pod_hook["objectSelector"] == {"matchLabels": {"tokenwarden.dev/inject": "enabled"}}
    vwc = one(docs, "ValidatingWebhookConfiguration", "tokenwarden-validator")
    (v,) = vwc["webhooks"]
    assert v["clientConfig"]["service"]["path"] == "/validate"
    assert v["rules"][0]["resources"] == ["routingpolicies", "tokenbudgets"]
    env = env_of(docs)
    assert env["TOKENWARDEN_OPERATOR_MUTATING_WEBHOOK"] == mwc["metadata"]["name"]
    assert env["TOKENWARDEN_OPERATOR_VALIDATING_WEBHOOK"] == vwc["metadata"]["name"]


def test_webhook_options() -> None:
    docs = objects(OPTIONS["single-replica-fail-closed"])
    for w in one(docs, "MutatingWebhookConfiguration")["webhooks"]:
        assert (w["failurePolicy"], w["timeoutSeconds"], w["reinvocationPolicy"]) == ("Fail", 5, "Never")
    assert not by_kind(docs, "ValidatingWebhookConfiguration")
    assert not by_kind(docs, "PodDisruptionBudget"), "a PDB of 1 with 1 replica blocks node drains"
    env = env_of(docs)
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_REQUESTS"] == "cpu=100m,memory=128Mi"
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_LIMITS"] == "cpu=1,memory=512Mi"


def test_sidecar_otel_settings() -> None:
    # Off by default: the operator gets no OpenTelemetry settings to inject.
    assert not [n for n in env_of(objects()) if "OTEL" in n]
    env = env_of(objects(OPTIONS["otel"]))
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_OTEL_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_OTEL_PROTOCOL"] == "grpc"
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_OTEL_SAMPLER"] == "parentbased_traceidratio"
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_OTEL_SAMPLER_ARG"] == "0.25"
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_OTEL_RESOURCE_ATTRIBUTES"] == "deployment.environment=prod"
    # The operator's own spans go to the same collector.
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "deployment.environment=prod"
    own = env_of(objects({"sidecar": {"otel": {**OPTIONS["otel"]["sidecar"]["otel"], "operator": False}}}))
    assert not [n for n in own if n.startswith("OTEL_")]
    # TLS to the collector.
    tls = env_of(objects({"sidecar": {"otel": {"endpoint": "https://otel.example.com:4317"}}}))
    assert tls["TOKENWARDEN_OPERATOR_SIDECAR_OTEL_ENDPOINT"] == "https://otel.example.com:4317"
    assert tls["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://otel.example.com:4317"


def test_sidecar_otel_headers_and_tls_files() -> None:
    # Off by default: nothing of it rendered.
    dep = one(objects(), "Deployment")
    assert "otel" not in yaml.safe_dump(dep)
    docs = objects(OPTIONS["otel-tls-headers"])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    # The operator injects them into every sidecar from the pod's own namespace.
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_OTEL_HEADERS_SECRET"]["value"] == "otel-auth/headers"
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_OTEL_CA_CONFIGMAP"]["value"] == "corp-ca/bundle.pem"
    assert env["TOKENWARDEN_OPERATOR_SIDECAR_OTEL_CLIENT_CERT_SECRET"]["value"] == "otel-client"
    # The operator's own exporter: the same Secret and ConfigMap in the release namespace.
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == {
        "name": "OTEL_EXPORTER_OTLP_HEADERS",
        "valueFrom": {"secretKeyRef": {"name": "otel-auth", "key": "headers", "optional": True}},
    }
    assert env["OTEL_EXPORTER_OTLP_CERTIFICATE"]["value"] == "/etc/tokenwarden/otel-ca/ca.crt"
    assert env["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"]["value"] == "/etc/tokenwarden/otel-client/tls.crt"
    assert env["OTEL_EXPORTER_OTLP_CLIENT_KEY"]["value"] == "/etc/tokenwarden/otel-client/tls.key"
    assert c["volumeMounts"][1:] == [
        {"name": "otel-ca", "mountPath": "/etc/tokenwarden/otel-ca", "readOnly": True},
        {"name": "otel-client", "mountPath": "/etc/tokenwarden/otel-client", "readOnly": True},
    ]
    assert pod["volumes"][1:] == [
        {"name": "otel-ca", "configMap": {"name": "corp-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}],
                                          "optional": True}},
        {"name": "otel-client", "secret": {"secretName": "otel-client",
                                           "items": [{"key": "tls.crt", "path": "tls.crt"},
                                                     {"key": "tls.key", "path": "tls.key"}],
                                           "optional": True}},
    ]
    # operator: false: the sidecars still get them, the operator's container does not.
    own = one(objects({"sidecar": {"otel": {**OPTIONS["otel-tls-headers"]["sidecar"]["otel"], "operator": False}}}),
              "Deployment")["spec"]["template"]["spec"]
    names = {e["name"] for e in own["containers"][0]["env"]}
    assert "TOKENWARDEN_OPERATOR_SIDECAR_OTEL_HEADERS_SECRET" in names
    assert not [n for n in names if n.startswith("OTEL_")]
    assert [v["name"] for v in own["volumes"]] == ["tls"]
    # Without an endpoint nothing is passed on.
    off = one(objects({"sidecar": {"otel": {"headersSecret": {"name": "otel-auth"}, "caConfigMap": {"name": "corp-ca"}}}}),
              "Deployment")
    assert "otel" not in yaml.safe_dump(off)


def test_usage_store_url_comes_from_the_secret() -> None:
    # Off by default.
    assert not [n for n in env_of(objects()) if "USAGE_STORE" in n]
    c = one(objects(OPTIONS["usage-store"]), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["TOKENWARDEN_OPERATOR_USAGE_STORE_URL"] == {
        "name": "TOKENWARDEN_OPERATOR_USAGE_STORE_URL",
        "valueFrom": {"secretKeyRef": {"name": "tokenwarden-usage-db", "key": "dsn"}},
    }
    assert env["TOKENWARDEN_OPERATOR_USAGE_STORE_RETENTION_MONTHS"]["value"] == "24"
    # A large number stays an integer (not 2e+06).
    assert env["TOKENWARDEN_OPERATOR_USAGE_STORE_MAX_BACKLOG"]["value"] == "2000000"


def test_release_namespace_is_always_excluded() -> None:
    docs = objects({"webhook": {"excludeNamespaces": []}}, release="tw", namespace="llm-platform")
    mwc = one(docs, "MutatingWebhookConfiguration", "tw-tokenwarden-injector")
    for w in mwc["webhooks"]:
        exprs = {e["key"]: e for e in w["namespaceSelector"]["matchExpressions"]}
        assert exprs["kubernetes.io/metadata.name"]["values"] == ["llm-platform"]
    assert one(docs, "Service", "tw-tokenwarden-control")


@pytest.mark.parametrize("option", ["cert-manager", "cert-manager-issuer"])
def test_cert_manager(option: str) -> None:
    docs = objects(OPTIONS[option])
    assert env_of(docs)["TOKENWARDEN_OPERATOR_WEBHOOK_CERT_MODE"] == "files"
    serving = one(docs, "Certificate", "tokenwarden-serving")
    assert serving["spec"]["secretName"] == "tokenwarden-tls"
    assert "tokenwarden-webhook.tokenwarden.svc" in serving["spec"]["dnsNames"]
    assert "tokenwarden-control.tokenwarden.svc" in serving["spec"]["dnsNames"]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        ann = one(docs, kind)["metadata"]["annotations"]
        assert ann == {"cert-manager.io/inject-ca-from": "tokenwarden/tokenwarden-serving"}
    if option == "cert-manager":
        ca = one(docs, "Certificate", "tokenwarden-ca")
        assert ca["spec"]["isCA"] is True
        assert serving["spec"]["issuerRef"] == {"name": "tokenwarden-ca", "kind": "Issuer", "group": "cert-manager.io"}
        assert {d["metadata"]["name"] for d in by_kind(docs, "Issuer")} == {"tokenwarden-selfsigned", "tokenwarden-ca"}
    else:
        assert serving["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}
        assert not by_kind(docs, "Issuer")


def test_monitoring() -> None:
    docs = objects(OPTIONS["monitoring"])
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    (ep,) = sm["spec"]["endpoints"]
    assert (ep["port"], ep["path"]) == ("http-admin", "/metrics")
    metrics = one(docs, "Service", "tokenwarden-metrics")
    assert all(metrics["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())


def test_dashboards_and_alerts() -> None:
    docs = objects(OPTIONS["dashboards-and-alerts"])
    pm = one(docs, "PodMonitor", "tokenwarden-sidecars")
    assert pm["metadata"]["labels"]["release"] == "prometheus"
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    # Every pod, but only the port the injection gives the sidecar is scraped.
    assert pm["spec"]["selector"] == {}
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    assert (ep["port"], ep["path"], ep["interval"]) == ("tw-admin", "/metrics", "30s")
    assert {r["targetLabel"] for r in ep["relabelings"]} == {"workload"}
    rule = one(docs, "PrometheusRule", "tokenwarden")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert urls and all(u.startswith("https://wiki.example.com/runbooks/tokenwarden#tokenwarden") for u in urls)
    cm = one(docs, "ConfigMap", "tokenwarden-dashboard")
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    assert list(cm["data"]) == ["tokenwarden.json"]

    scoped = objects(OPTIONS["dashboards-and-alerts-scoped"])
    pm = one(scoped, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["agents", "search"]}
    assert pm["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"
    cm = one(scoped, "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "tokenwarden"
    assert "annotations" not in cm["metadata"]
    rule = one(scoped, "PrometheusRule")
    assert all(r["annotations"]["runbook_url"].startswith(
        "https://github.com/tokenwarden/tokenwarden/blob/main/docs/observability.md#")
        for g in rule["spec"]["groups"] for r in g["rules"])


def test_network_policy() -> None:
    docs = objects(OPTIONS["network-policy"])
    np = one(docs, "NetworkPolicy")
    ports = [r["ports"][0]["port"] for r in np["spec"]["ingress"]]
    assert ports == [15810, 15812, 15811]
    assert np["spec"]["ingress"][1]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/16"}}]


def test_chart_crds_equal_the_generated() -> None:
    chart = helm_python.Chart.load(str(CHART))
    from_chart = sorted((yaml.safe_load(c["data"]) for c in chart.crds), key=lambda d: d["metadata"]["name"])
    generated = sorted((d for d in yaml.safe_load_all((ROOT / "deploy" / "crds.yaml").read_text()) if d),
                       key=lambda d: d["metadata"]["name"])
    assert [d["metadata"]["name"] for d in from_chart] == ["routingpolicies.tokenwarden.dev", "tokenbudgets.tokenwarden.dev"]
    assert from_chart == generated


def test_deploy_manifest_is_current() -> None:
    assert DEPLOY.read_text() == manifest(), "run cargo xtask gen"
    for d in yaml.safe_load_all(DEPLOY.read_text()):
        if d:
            kubernetes_validate.validate(d, "1.33.0", strict=True)
