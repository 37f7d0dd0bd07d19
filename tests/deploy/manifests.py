"""deploy/kubernetes as `kubectl kustomize` renders it, and the parts of it the tests look at."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache

import pytest
import yaml

from tests.conftest import REPO

KUSTOMIZE = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUSTOMIZE / "overlays").iterdir() if (p / "kustomization.yaml").exists())
# The fields of an InferenceService's model that are KServe's own; the rest is a core/v1 Container
# (KServe's v1beta1 ModelSpec and PredictorExtensionSpec).
MODEL_EXTENSION_FIELDS = {
    "modelFormat",
    "runtime",
    "storageUri",
    "runtimeVersion",
    "protocolVersion",
    "storage",
}


@cache
def rendered(overlay: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize` makes of one overlay."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH: it renders deploy/kubernetes (kubectl kustomize)")
    out = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{out.stderr}"
    return tuple(obj for obj in yaml.safe_load_all(out.stdout) if obj)


def objects(overlay: str, kind: str) -> list[dict]:
    return [obj for obj in rendered(overlay) if obj["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict:
    found = [obj for obj in objects(overlay, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"overlays/{overlay}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def container_fields(model: dict) -> dict:
    """What an InferenceService's model sets of its container (KServe embeds core/v1 Container there)."""
    return {key: value for key, value in model.items() if key not in MODEL_EXTENSION_FIELDS}


def pod_template(overlay: str) -> dict:
    return one(overlay, "Deployment", "ovms-rag")["spec"]["template"]


def server_pod(overlay: str) -> tuple[dict, dict]:
    """The OVMS pod spec and its OVMS container; under KServe the runtime's container with the
    InferenceService's container fields merged in, as KServe does."""
    if overlay == "kserve":
        spec = one(overlay, "ServingRuntime", "ovms-rag")["spec"]
        model = one(overlay, "InferenceService", "ovms-rag")["spec"]["predictor"]["model"]
        return spec, {**spec["containers"][0], **container_fields(model)}
    spec = pod_template(overlay)["spec"]
    return spec, next(c for c in spec["containers"] if c["name"] == "ovms")
