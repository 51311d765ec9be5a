"""Render the chart offline with helm-python-sdk (the real Helm v4 library).

Also the generator of deploy/tokenwarden.yaml, run by `cargo xtask gen`
(`cargo xtask gen --check` fails when the committed file differs); `manifest()`
is the generated text.
"""

from __future__ import annotations

import os
from pathlib import Path

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tokenwarden"
DEPLOY = ROOT / "deploy" / "tokenwarden.yaml"
RELEASE = "tokenwarden"
NAMESPACE = "tokenwarden"

HEADER = f"""\
# Generated from charts/tokenwarden with default values (release {RELEASE!r},
# namespace {NAMESPACE!r}); do not edit. Regenerate with: cargo xtask gen
# Install: kubectl apply --server-side -f deploy/
# (deploy/crds.yaml holds the CRDs; examples/ is not applied by that command.)
"""


def operator_bin() -> Path:
    """The operator binary: $TOKENWARDEN_OPERATOR_BIN, else $CARGO_TARGET_DIR/debug or target/debug."""
    if os.environ.get("TOKENWARDEN_OPERATOR_BIN"):
        return Path(os.environ["TOKENWARDEN_OPERATOR_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "tokenwarden-operator"


def render(values: dict | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt and empty files dropped)."""
    chart = helm_python.Chart.load(str(CHART))
    out = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    return {k: v for k, v in sorted(out.items()) if not k.endswith("NOTES.txt") and v.strip()}


def objects(values: dict | None = None, **kw) -> list[dict]:
    """Every rendered object, in template order."""
    docs = []
    for text in render(values, **kw).values():
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def manifest() -> str:
    """deploy/tokenwarden.yaml: a Namespace, then the default render."""
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/name": "tokenwarden"}},
    }
    parts = [HEADER + "---\n" + yaml.safe_dump(ns, sort_keys=False)]
    for path, text in render().items():
        body = text.strip("\n")
        if body.startswith("---"):
            body = body[3:].lstrip("\n")
        parts.append(f"---\n# Source: {path}\n{body}\n")
    return "".join(parts)
