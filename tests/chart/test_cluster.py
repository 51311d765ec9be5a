"""Tier B: a real cluster (KUBECONFIG set). Otherwise skipped, with the reason.

Installs deploy/ (the chart rendered with default values) with kubectl,
labels a namespace for injection, runs a pod that calls the sidecar, and
reads the spend in the TokenBudget status; then uninstalls.

Needs: kubectl, the images of this version pullable by the cluster, and an
OpenAI-compatible endpoint reachable from the cluster with a key:
TOKENWARDEN_E2E_BASE_URL, TOKENWARDEN_E2E_API_KEY (and optionally
TOKENWARDEN_E2E_MODEL, default gpt-5-nano).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from chartlib import ROOT

NS = "tokenwarden-e2e"


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    out = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=input, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {out.stderr}")
    return out.stdout


def requirements() -> str | None:
    if not os.environ.get("KUBECONFIG"):
        return "KUBECONFIG is not set: tier-B tests need a real cluster (see docs/testing.md)"
    if not shutil.which("kubectl"):
        return "kubectl is not installed"
    for var in ("TOKENWARDEN_E2E_BASE_URL", "TOKENWARDEN_E2E_API_KEY"):
        if not os.environ.get(var):
            return f"{var} is not set: the e2e pod needs a provider reachable from the cluster"
    return None


@pytest.fixture(scope="module")
def installed():
    reason = requirements()
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    kubectl("apply", "--server-side", "-f", str(ROOT / "deploy" / "crds.yaml"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "deploy" / "tokenwarden.yaml"))
    kubectl("-n", "tokenwarden", "rollout", "status", "deployment/tokenwarden", "--timeout=180s")
    yield
    kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", check=False)
    kubectl("delete", "-f", str(ROOT / "deploy" / "tokenwarden.yaml"), "--ignore-not-found", check=False)
    kubectl("delete", "-f", str(ROOT / "deploy" / "crds.yaml"), "--ignore-not-found", check=False)


def test_injected_pod_spend_shows_in_the_budget(installed) -> None:
    base, key = os.environ["TOKENWARDEN_E2E_BASE_URL"], os.environ["TOKENWARDEN_E2E_API_KEY"]
    model = os.environ.get("TOKENWARDEN_E2E_MODEL", "gpt-5-nano")
    kubectl("create", "namespace", NS)
    kubectl("label", "namespace", NS, "tokenwarden.dev/inject=enabled")
    kubectl("-n", NS, "create", "secret", "generic", "llm-keys", f"--from-literal=openai={key}")
    objs = f"""
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: e2e, namespace: {NS}}}
spec:
  providers:
    - {{name: openai, api: openai, baseUrl: "{base}", apiKeySecretRef: {{name: llm-keys, key: openai}}}}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: e2e, namespace: {NS}}}
spec:
  period: Daily
  limit: {{usd: "1"}}
"""
    kubectl("apply", "-f", "-", input=objs)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say ok."}]})
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "caller", "namespace": NS},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "curl", "image": "curlimages/curl:8.11.1",
            "command": ["sh", "-c", f"curl -sf -H 'content-type: application/json' -d '{body}' $OPENAI_BASE_URL/chat/completions"],
        }]},
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod))
    spec = json.loads(kubectl("-n", NS, "get", "pod", "caller", "-o", "json"))["spec"]
    assert spec["initContainers"][0]["name"] == "tokenwarden-sidecar"
    kubectl("-n", NS, "wait", "pod/caller", "--for=jsonpath={.status.containerStatuses[0].state.terminated.reason}=Completed", "--timeout=180s")
    deadline = time.time() + 120
    while time.time() < deadline:
        status = json.loads(kubectl("-n", NS, "get", "tokenbudget", "e2e", "-o", "json")).get("status", {})
        if status.get("requests", 0) >= 1:
            assert status["spentUsd"] != "0"
            return
        time.sleep(5)
    raise AssertionError(f"no usage in the TokenBudget status: {status}")
