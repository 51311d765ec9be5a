"""The chart's RBAC covers every Kubernetes API call the operator makes.

The list of calls comes from the code: `tokenwarden-operator rbac` prints it
as JSON ([{apiGroup, resource, subresource, verbs, scope, reason}]), merging
the controllers', leader election's, TokenReview's and the webhook's
(`webhook::api_calls()`). Binary: $TOKENWARDEN_OPERATOR_BIN, else
$CARGO_TARGET_DIR/debug or target/debug.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from chartlib import NAMESPACE, RELEASE, objects, operator_bin

# Verbs a rule restricted by resourceNames cannot grant.
UNNAMEABLE = {"list", "watch", "create", "deletecollection"}


def api_calls() -> list[dict]:
    exe = operator_bin()
    if not exe.exists():
        pytest.fail(f"{exe} missing: build it with `cargo build -p tokenwarden-operator`")
    out = subprocess.run([str(exe), "rbac"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0 and "rbac" in out.stderr and ("unrecognized" in out.stderr or "unexpected argument" in out.stderr):
        pytest.skip("this operator build has no `rbac` subcommand yet (wired in main)")
    assert out.returncode == 0, out.stderr
    calls = json.loads(out.stdout)
    assert calls, "the operator reports no API calls"
    return calls


def rules(docs: list[dict], kind: str) -> list[dict]:
    # The operator's own roles (named like the release); the read-only
    # roles for kubectl tokenwarden users are checked in test_viewer_rbac.py.
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == RELEASE]
    assert len(found) == 1
    if kind == "Role":
        assert found[0]["metadata"]["namespace"] == NAMESPACE
    return found[0]["rules"]


def grants(rule: dict, group: str, resource: str, verb: str) -> bool:
    if group not in rule.get("apiGroups", []) or resource not in rule.get("resources", []):
        return False
    if verb not in rule.get("verbs", []) and "*" not in rule.get("verbs", []):
        return False
    return not (rule.get("resourceNames") and verb in UNNAMEABLE)


def covered(call: dict, cluster: list[dict], namespaced: list[dict], verb: str) -> bool:
    res = call["resource"] + (f"/{call['subresource']}" if call.get("subresource") else "")
    pool = cluster if call["scope"] == "Cluster" else cluster + namespaced
    return any(grants(r, call["apiGroup"], res, verb) for r in pool)


# Calls made only when a chart value turns them on (their `reason` starts
# with "only with <value>"), and that value.
GATED = {"cacheCredentials.enabled": {"cacheCredentials": {"enabled": True}}}


def gate(call: dict) -> str | None:
    return next((g for g in GATED if call["reason"].startswith(f"only with {g}")), None)


@pytest.mark.parametrize("gated", [None, *GATED])
def test_every_api_call_is_allowed(gated: str | None) -> None:
    """By default every ungated call is allowed; with a gate's value on, its
    calls are too."""
    docs = objects(GATED[gated] if gated else None)
    cluster, namespaced = rules(docs, "ClusterRole"), rules(docs, "Role")
    missing = [
        f"{c['scope']}: {verb} {c['apiGroup'] or 'core'}/{c['resource']}{'/' + c['subresource'] if c.get('subresource') else ''} ({c['reason']})"
        for c in api_calls()
        if gate(c) in (None, gated)
        for verb in c["verbs"]
        if not covered(c, cluster, namespaced, verb)
    ]
    assert missing == [], "the chart's RBAC lacks:\n" + "\n".join(missing)


def test_a_gated_call_is_not_granted_by_default() -> None:
    docs = objects()
    cluster, namespaced = rules(docs, "ClusterRole"), rules(docs, "Role")
    gated = [c for c in api_calls() if gate(c)]
    assert gated, "the operator reports its gated calls"
    for c in gated:
        assert not any(covered(c, cluster, namespaced, v) for v in c["verbs"]), c


def test_no_verb_is_granted_that_no_call_needs() -> None:
    calls = api_calls()
    needed = {
        (c["apiGroup"], c["resource"] + (f"/{c['subresource']}" if c.get("subresource") else ""), v)
        for c in calls
        for v in c["verbs"]
    }
    docs = objects()
    extra = [
        f"{g or 'core'}/{r}: {v}"
        for rule in rules(docs, "ClusterRole") + rules(docs, "Role")
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
        if (g, r, v) not in needed
    ]
    assert extra == [], "granted but never used (least privilege):\n" + "\n".join(extra)


def test_the_coverage_check_can_fail() -> None:
    docs = objects()
    cluster, namespaced = rules(docs, "ClusterRole"), rules(docs, "Role")
    call = {"apiGroup": "", "resource": "secrets", "subresource": None, "verbs": ["get"], "scope": "Cluster", "reason": "t"}
    assert not covered(call, cluster, namespaced, "get"), "secrets are readable only in the operator's namespace"
    call = {"apiGroup": "admissionregistration.k8s.io", "resource": "mutatingwebhookconfigurations",
            "subresource": None, "verbs": ["list"], "scope": "Cluster", "reason": "t"}
    assert not covered(call, cluster, namespaced, "list"), "resourceNames rules cannot grant list"
    call = {"apiGroup": "", "resource": "secrets", "subresource": None, "verbs": ["update"], "scope": "Namespace", "reason": "t"}
    assert covered(call, cluster, namespaced, "update")
