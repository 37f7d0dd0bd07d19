"""deploy/kubernetes renders with Kustomize and every object is one the API server would accept.

No cluster here: each overlay is rendered with `kubectl kustomize` and every built-in object is validated
offline (the network is shut while validating) against the Kubernetes JSON schemas that the
kubernetes-validate package ships, strict (an unknown field fails), for the oldest and newest versions
it knows. KServe's ServingRuntime and InferenceService are custom resources with no schema there: their
pod and container parts (core/v1 types that KServe embeds) are validated against the same schemas, and
their own fields are checked by hand against KServe's API types (required fields, known keys, the
references between them). Whether KServe and the cluster run it is for a cluster to tell (README).
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

from tests.conftest import REPO
from tests.deploy.manifests import (
    KUSTOMIZE,
    OVERLAYS,
    container_fields,
    one,
    pod_template,
    rendered,
    server_pod,
)

KUBERNETES_VERSIONS = ("1.29", kv_utils.latest_version())
KSERVE_GROUP = "serving.kserve.io"
GRAPH = json.loads((REPO / "servable_stream" / "config.json").read_text())["mediapipe_config_list"][0]["name"]
# The servable's drain on SIGTERM (RagService.stop): the generation loop is joined for up to 30 s
# (engine.py), the document watcher for up to 5 + 10 s (watcher.py).
SERVABLE_DRAIN_S = 30 + 15
# ServingRuntimeSpec and the fields of an InferenceService predictor that are KServe's own, from KServe's
# API types (pkg/apis/serving/v1alpha1/servingruntime_types.go, v1beta1 component and predictor types).
SERVING_RUNTIME_FIELDS = {
    "supportedModelFormats", "multiModel", "disabled", "protocolVersions", "workerSpec", "containers",
    "volumes", "nodeSelector", "affinity", "tolerations", "labels", "annotations", "imagePullSecrets",
    "hostIPC", "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint", "replicas", "storageHelper",
    "builtInAdapter",
}  # fmt: skip
PREDICTOR_EXTENSION_FIELDS = {
    "model", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
    "timeoutSeconds", "canaryTrafficPercent", "labels", "annotations", "logger", "batcher",
    "deploymentStrategy", "minAvailable", "maxUnavailable",
}  # fmt: skip


def is_kserve(obj: dict) -> bool:
    return obj["apiVersion"].split("/")[0] == KSERVE_GROUP


@cache
def core_validator(type_name: str, version: str) -> jsonschema.Draft202012Validator:
    """A strict validator for one core/v1 type (Container, Volume, PodSpec) from the shipped schemas."""
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local-strict"
    schema = json.loads((folder / f"{type_name}-v1.json").read_text())
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry = Resource.from_contents(schema) @ (Resource.from_contents(definitions) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_core(type_name: str, value: dict, where: str) -> None:
    for version in KUBERNETES_VERSIONS:
        errors = [e.message for e in core_validator(type_name, version.removesuffix(".0")).iter_errors(value)]
        assert not errors, f"{where} is not a valid core/v1 {type_name} for Kubernetes {version}: {errors}"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: the validation must need no network."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("schema validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def pod_specs(overlay: str) -> Iterator[tuple[str, dict]]:
    """Every pod spec of an overlay, KServe's included (as KServe will build it: runtime + predictor)."""
    for obj in rendered(overlay):
        where = f"{obj['kind']} {obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "Job"):
            yield where, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "ServingRuntime":
            yield where, obj["spec"]
        elif obj["kind"] == "InferenceService":
            predictor = obj["spec"]["predictor"]
            yield where, {k: v for k, v in predictor.items() if k not in PREDICTOR_EXTENSION_FIELDS}


def test_the_three_overlays_exist_and_render() -> None:
    assert set(OVERLAYS) >= {"cpu", "gpu", "kserve"}
    for overlay in OVERLAYS:
        kinds = {obj["kind"] for obj in rendered(overlay)}
        assert {"PersistentVolumeClaim", "ConfigMap", "Job", "Deployment", "Service"} <= kinds, overlay
        assert {"PodDisruptionBudget"} <= kinds, overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_builtin_object_validates_offline(overlay: str, offline: None) -> None:
    checked = 0
    for obj in rendered(overlay):
        if is_kserve(obj):
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = f"{obj['kind']} {obj['metadata']['name']}." + ".".join(str(p) for p in e.path)
                pytest.fail(f"overlays/{overlay}: {where}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                pytest.fail(f"overlays/{overlay}: no schema to check {obj['kind']}: {e.message}")
        checked += 1
    assert checked >= 8, f"overlays/{overlay}: only {checked} objects validated"


def test_the_validation_rejects_a_misspelt_field(offline: None) -> None:
    """The check above can fail: strict schemas refuse a field Kubernetes does not know."""
    deployment = json.loads(json.dumps(one("cpu", "Deployment", "ovms-rag")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 5}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    with pytest.raises(AssertionError, match="'readinesProbe' was unexpected"):
        validate_core("container", container, "the ovms container")


def test_kserve_objects_hold_kserves_required_fields(offline: None) -> None:
    """Custom resources: their embedded core/v1 parts validate; their own fields are checked by hand."""
    runtime = one("kserve", "ServingRuntime", "ovms-rag")
    service = one("kserve", "InferenceService", "ovms-rag")
    assert runtime["apiVersion"] == f"{KSERVE_GROUP}/v1alpha1"
    assert service["apiVersion"] == f"{KSERVE_GROUP}/v1beta1"

    spec = runtime["spec"]
    assert set(spec) <= SERVING_RUNTIME_FIELDS, set(spec) - SERVING_RUNTIME_FIELDS
    assert spec["containers"], "ServingRuntime.spec.containers is required"
    assert spec["containers"][0]["name"] == "kserve-container"  # the container KServe merges the model into
    for container in spec["containers"]:
        validate_core("container", container, f"ServingRuntime container {container['name']}")
    for volume in spec.get("volumes", []):
        validate_core("volume", volume, f"ServingRuntime volume {volume['name']}")
    formats = {f["name"]: f for f in spec["supportedModelFormats"]}

    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] in formats, "the model format is not one the runtime supports"
    assert model["runtime"] == runtime["metadata"]["name"]
    claim = model["storageUri"].removeprefix("pvc://").split("/")[0]
    assert model["storageUri"].startswith("pvc://") and claim
    assert one("kserve", "PersistentVolumeClaim", claim)
    container = {"name": "kserve-container", **container_fields(model)}
    validate_core("container", container, "InferenceService predictor.model")
    pod = {k: v for k, v in predictor.items() if k not in PREDICTOR_EXTENSION_FIELDS}
    validate_core("podspec", {**pod, "containers": [container]}, "InferenceService predictor")
    assert predictor["minReplicas"] >= 2 and predictor["maxReplicas"] > predictor["minReplicas"]
    assert predictor["scaleMetric"] == "cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_resolves(overlay: str) -> None:
    """ConfigMaps, claims and Secrets named by a pod exist in the render (Kustomize renamed them all)."""
    have = {(obj["kind"], obj["metadata"]["name"]) for obj in rendered(overlay)}
    for where, spec in pod_specs(overlay):
        wanted: list[tuple[str, str]] = []
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                wanted.append(("ConfigMap", volume["configMap"]["name"]))
            if "persistentVolumeClaim" in volume:
                wanted.append(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            for source in container.get("envFrom", []):
                wanted.append(("ConfigMap", source["configMapRef"]["name"]))
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                assert ref is None or ref.get("optional"), f"{where}: Secret {ref} must exist or be optional"
        missing = [w for w in wanted if w not in have]
        assert not missing, f"overlays/{overlay}: {where} names {missing}, which the render lacks"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_server_runs_the_servable_as_ovms_does(overlay: str) -> None:
    spec, ovms = server_pod(overlay)
    assert ovms["image"] == "openvino/model_server:py"  # `make python_image`
    args = dict(arg.removeprefix("--").partition("=")[::2] for arg in ovms["args"])
    assert args["port"] == "9000" and args["rest_port"] == "8000"
    ports = {p["name"]: p["containerPort"] for p in ovms["ports"]}
    assert {9000, 8000} <= set(ports.values())
    # The servable's own metrics, which real OVMS's /metrics lacks, are where Prometheus looks.
    env = {e["name"]: e.get("value") for e in ovms["env"]}
    assert int(env["METRICS_PORT"]) == ports["metrics"]
    annotations = (
        spec["annotations"] if overlay == "kserve" else pod_template(overlay)["metadata"]["annotations"]
    )
    assert annotations["prometheus.io/port"] == env["METRICS_PORT"]
    config_dir = str(Path(args["config_path"]).parent)
    if overlay == "kserve":
        assert config_dir == "/mnt/models"  # where KServe mounts the storageUri
    else:
        mount = next(m for m in ovms["volumeMounts"] if m["mountPath"] == config_dir)
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["persistentVolumeClaim"]["claimName"] == "ovms-rag-servable"

    ready = f"/v2/models/{GRAPH}/ready"
    assert ovms["readinessProbe"]["httpGet"]["path"] == ready
    assert ovms["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = ovms["startupProbe"]
    assert startup["httpGet"]["path"] == ready
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "model loading gets 10 minutes"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert ovms[probe]["httpGet"]["port"] in ("http", 8000)
    assert ovms["resources"]["requests"]["cpu"] and ovms["resources"]["limits"]["memory"]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_grace_period_covers_the_servables_drain(overlay: str) -> None:
    spec, ovms = server_pod(overlay)
    pause = int(ovms["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] >= pause + SERVABLE_DRAIN_S
    predictor = one("kserve", "InferenceService", "ovms-rag")["spec"]["predictor"]
    assert predictor["terminationGracePeriodSeconds"] == spec["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_docs_come_from_a_configmap_and_the_index_from_a_shared_claim(overlay: str) -> None:
    spec, ovms = server_pod(overlay)
    env = {e["name"]: e.get("value") for e in ovms["env"]}
    mounts = {m["mountPath"]: m for m in ovms["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}

    docs_dir = mounts[str(Path(env["DOCS_FILE"]).parent)]
    assert "subPath" not in docs_dir, "a subPath mount never sees a ConfigMap update"
    docs = one(overlay, "ConfigMap", volumes[docs_dir["name"]]["configMap"]["name"])
    assert docs["metadata"]["name"] == "ovms-rag-docs", "a hashed name would restart pods on every edit"
    assert Path(env["DOCS_FILE"]).name in docs["data"]

    index = volumes[mounts[env["RAG_INDEX_DIR"]]["name"]]
    assert not mounts[env["RAG_INDEX_DIR"]].get("readOnly")
    claim = one(overlay, "PersistentVolumeClaim", index["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_clients_balance_over_the_headless_service(overlay: str) -> None:
    headless = one(overlay, "Service", "ovms-rag-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["port"] for p in headless["spec"]["ports"]] == [9000]
    client = one(overlay, "Deployment", "ovms-rag-client")["spec"]["template"]["spec"]["containers"][0]
    assert "--ovms_url=dns:///ovms-rag-headless:9000" in client["args"]
    assert one(overlay, "Service", "ovms-rag-client")["spec"]["ports"][0]["port"] == 9001
    if overlay != "kserve":
        labels = pod_template(overlay)["metadata"]["labels"]
        for name in ("ovms-rag", "ovms-rag-headless"):
            selector = one(overlay, "Service", name)["spec"]["selector"]
            assert selector.items() <= labels.items(), f"Service {name} selects no OVMS pod"
        ports = {p["name"]: p["port"] for p in one(overlay, "Service", "ovms-rag")["spec"]["ports"]}
        assert ports == {"grpc": 9000, "http": 8000}
        pdb = one(overlay, "PodDisruptionBudget", "ovms-rag")["spec"]["selector"]["matchLabels"]
        assert pdb.items() <= labels.items()
        hpa = one(overlay, "HorizontalPodAutoscaler", "ovms-rag")["spec"]
        assert hpa["scaleTargetRef"]["name"] == "ovms-rag"
        assert hpa["metrics"][0]["resource"]["name"] == "cpu"


def test_the_gpu_overlay_requests_an_intel_gpu_and_sets_the_device() -> None:
    for overlay, device in (("cpu", "CPU"), ("gpu", "GPU")):
        _, ovms = server_pod(overlay)
        env = one(overlay, "ConfigMap", ovms["envFrom"][0]["configMapRef"]["name"])["data"]
        assert env["DEVICE"] == device
        gpus = [ovms["resources"].get(part, {}).get("gpu.intel.com/i915") for part in ("requests", "limits")]
        assert gpus == (["1", "1"] if device == "GPU" else [None, None])


def test_the_prepare_script_parses_and_runs_the_projects_scripts() -> None:
    script = KUSTOMIZE / "base" / "prepare-models.sh"
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    for name in ("download_model.py", "compress_model.py", "download_embedding_model.py"):
        assert f"scripts/{name}" in text and (REPO / "scripts" / name).exists()
    job = one("cpu", "Job", "ovms-rag-prepare-models")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in job["containers"][0]["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in job["volumes"]}
    assert claims[mounts["/workspace"]] == "ovms-rag-servable"
