"""The chart's Redis for the shared response cache (redis.enabled) and the
operator's permission to read the credentials' Secrets
(cacheCredentials.enabled): both off by default; Redis renders a Deployment,
Service and generated password Secret that validate strictly at Kubernetes
1.33 and 1.37, runs with no persistence, maxmemory and volatile-lru, reads its
password from the Secret (generated or existing); the Secret rule appears in
the ClusterRole only when enabled, with the operator's variable."""

from __future__ import annotations

import kubernetes_validate
import pytest

from chartlib import objects

ON = {"redis": {"enabled": True, "maxmemory": "512mb"}}
EXISTING = {"redis": {"enabled": True, "password": {"existingSecret": "corp-redis", "secretKey": "pw"}}}


def redis_objects(values: dict) -> list[dict]:
    return [d for d in objects(values) if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "redis"]


def container(docs: list[dict]) -> dict:
    dep = [d for d in docs if d["kind"] == "Deployment"]
    assert len(dep) == 1
    return dep[0]["spec"]["template"]["spec"]["containers"][0]


def secret_rules(values: dict) -> list[dict]:
    role = [d for d in objects(values) if d["kind"] == "ClusterRole"][0]
    return [r for r in role["rules"] if "secrets" in r.get("resources", [])]


def operator_env(values: dict) -> dict:
    dep = [d for d in objects(values) if d["kind"] == "Deployment" and d["metadata"]["name"] == "tokenwarden"][0]
    return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_off_by_default() -> None:
    assert redis_objects({}) == []
    assert secret_rules({}) == []
    assert "TOKENWARDEN_OPERATOR_CACHE_CREDENTIALS" not in operator_env({})


@pytest.mark.parametrize("kube", ["1.33.0", "1.37.0"])
@pytest.mark.parametrize("values", [ON, EXISTING], ids=["generated", "existing"])
def test_renders_valid_objects(values: dict, kube: str) -> None:
    docs = redis_objects(values)
    for d in docs:
        kubernetes_validate.validate(d, kube, strict=True)


def test_a_cache_server_bounded_by_volatile_lru() -> None:
    docs = redis_objects(ON)
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Secret", "Service"]
    c = container(docs)
    args = c["args"]
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs == {
        "--port": "6379", "--save": "", "--appendonly": "no", "--maxmemory": "512mb",
        "--maxmemory-policy": "volatile-lru", "--requirepass": "$(REDIS_PASSWORD)",
    }
    env = {e["name"]: e for e in c["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "tokenwarden-redis", "key": "password"}}
    secret = [d for d in docs if d["kind"] == "Secret"][0]
    assert secret["metadata"]["name"] == "tokenwarden-redis"
    assert len(secret["data"]["password"]) >= 40
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    svc = [d for d in docs if d["kind"] == "Service"][0]
    assert svc["metadata"]["name"] == "tokenwarden-redis"
    assert svc["spec"]["ports"][0]["port"] == 6379
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_an_existing_password_secret_is_used_not_generated() -> None:
    docs = redis_objects(EXISTING)
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Service"]
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "corp-redis", "key": "pw"}}


def test_reading_credentials_is_granted_only_when_enabled() -> None:
    on = {"cacheCredentials": {"enabled": True}}
    assert secret_rules(on) == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert operator_env(on)["TOKENWARDEN_OPERATOR_CACHE_CREDENTIALS"] == "true"
