"""The chart's optional embedder (embedder.enabled): off by default; with a
model from a PVC or copied from an image it renders a Deployment + Service that
validate strictly at Kubernetes 1.33 and 1.37, probe /readyz and /healthz, mount
the model read-only and never download it; without a model source it fails."""

from __future__ import annotations

import helm_python
import kubernetes_validate
import pytest

from chartlib import CHART, objects

PVC = {"embedder": {"enabled": True, "model": {"persistentVolumeClaim": {"claimName": "models", "subPath": "all-minilm-l6-v2"}}}}
IMAGE = {"embedder": {"enabled": True, "model": {"copyFromImage": {"repository": "registry.example.com/models/minilm", "tag": "v1"}}}}


def chart_app_version() -> str:
    import yaml

    return str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


def embedder_objects(values: dict) -> list[dict]:
    return [d for d in objects(values) if d["metadata"]["labels"].get("app.kubernetes.io/component") == "embedder"]


def test_off_by_default() -> None:
    assert embedder_objects({}) == []


@pytest.mark.parametrize("kube", ["1.33.0", "1.37.0"])
@pytest.mark.parametrize("values", [PVC, IMAGE], ids=["pvc", "image"])
def test_renders_valid_objects(values: dict, kube: str) -> None:
    docs = embedder_objects(values)
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Service"]
    for d in docs:
        kubernetes_validate.validate(d, kube, strict=True)


def test_pvc_deployment() -> None:
    docs = embedder_objects(PVC)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "ghcr.io/tokenwarden/embedder:" + chart_app_version()
    assert "--model-dir=/models/model" in c["args"]
    assert "--model-name=all-minilm-l6-v2" in c["args"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    assert c["volumeMounts"] == [{"name": "model", "mountPath": "/models/model", "readOnly": True, "subPath": "all-minilm-l6-v2"}]
    assert pod["volumes"] == [{"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}]
    assert "initContainers" not in pod
    svc = next(d for d in docs if d["kind"] == "Service")
    assert svc["spec"]["ports"][0]["port"] == 8090
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "embedder"


def test_copy_from_image() -> None:
    dep = next(d for d in embedder_objects(IMAGE) if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    assert init["image"] == "registry.example.com/models/minilm:v1"
    assert init["command"] == ["cp", "-r", "/model/.", "/models/model/"]
    assert pod["volumes"] == [{"name": "model", "emptyDir": {"sizeLimit": "1Gi"}}]


def test_needs_exactly_one_model_source() -> None:
    with pytest.raises(Exception, match="needs a model"):
        objects({"embedder": {"enabled": True}})
    both = {"embedder": {"enabled": True, "model": {**PVC["embedder"]["model"], **IMAGE["embedder"]["model"]}}}
    with pytest.raises(Exception, match="not both"):
        objects(both)


def test_schema_rejects_bad_values() -> None:
    for bad in (
        {"embedder": {"maxInputs": 0}},
        {"embedder": {"resources": {"requests": {"memory": "lots"}}}},
        {"embedder": {"model": {"persistentVolumeClaim": {"claimName": "Not_A_Name"}}}},
        {"embedder": {"model": {"url": "https://huggingface.co/x"}}},
        {"embedder": {"unknown": 1}},
    ):
        with pytest.raises(helm_python.HelmValuesError):
            objects(bad)
