"""The chart's read-only RBAC for `kubectl tokenwarden` grants exactly the
calls the plugin makes.

The calls come from the code: `kubectl-tokenwarden rbac` prints them as JSON
([{apiGroup, resource, resourceNames, verbs, scope, reason}]); the plugin's
own tests check that every request it makes is one of them. Binary:
$TOKENWARDEN_CLI_BIN, else $CARGO_TARGET_DIR/debug or target/debug.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from chartlib import NAMESPACE, RELEASE, ROOT, objects

VIEWER = f"{RELEASE}-viewer"
LEDGER_VIEWER = f"{RELEASE}-ledger-viewer"


def plugin_bin() -> Path:
    if os.environ.get("TOKENWARDEN_CLI_BIN"):
        return Path(os.environ["TOKENWARDEN_CLI_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "kubectl-tokenwarden"


def plugin_calls() -> list[dict]:
    exe = plugin_bin()
    if not exe.exists():
        pytest.fail(f"{exe} missing: build it with `cargo build -p tokenwarden-cli`")
    out = subprocess.run([str(exe), "rbac"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    calls = json.loads(out.stdout)
    assert calls, "the plugin reports no API calls"
    return calls


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def granted(docs: list[dict]) -> set[tuple]:
    """(scope, group, resource, names, verb) of every viewer rule."""
    out = set()
    for kind, name, scope in (("ClusterRole", VIEWER, "Cluster"), ("Role", LEDGER_VIEWER, "OperatorNamespace")):
        role = named(docs, kind, name)
        if kind == "Role":
            assert role["metadata"]["namespace"] == NAMESPACE
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        out.add((scope, g, r, tuple(rule.get("resourceNames", [])), v))
    return out


def test_viewer_roles_grant_exactly_the_plugin_calls() -> None:
    needed = {
        (c["scope"], c["apiGroup"], c["resource"], tuple(c["resourceNames"]), v)
        for c in plugin_calls()
        for v in c["verbs"]
    }
    assert granted(objects()) == needed


def test_viewer_roles_are_read_only() -> None:
    verbs = {v for *_, v in granted(objects())}
    assert verbs <= {"get", "list", "watch"}, verbs


def test_viewer_roles_are_bound_only_to_given_subjects() -> None:
    docs = objects()
    assert not [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding") and "viewer" in d["metadata"]["name"]]
    subjects = [{"kind": "Group", "name": "platform-team", "apiGroup": "rbac.authorization.k8s.io"}]
    docs = objects({"viewerRbac": {"subjects": subjects}})
    crb = named(docs, "ClusterRoleBinding", VIEWER)
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": VIEWER}
    assert crb["subjects"] == subjects
    rb = named(docs, "RoleBinding", LEDGER_VIEWER)
    assert rb["metadata"]["namespace"] == NAMESPACE
    assert rb["roleRef"]["name"] == LEDGER_VIEWER and rb["subjects"] == subjects


def test_viewer_rbac_can_be_left_out() -> None:
    docs = objects({"viewerRbac": {"enabled": False}})
    assert not [d for d in docs if "viewer" in d["metadata"]["name"]]
