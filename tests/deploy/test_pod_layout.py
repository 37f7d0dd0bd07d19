"""The OVMS pod of the cpu overlay, laid out on this machine and run by the local server: the servable
starts with the manifest's environment and mounts, answers the manifest's probes, indexes the documents
the ConfigMap lists into the shared index volume, serves its metrics on METRICS_PORT, and follows a
ConfigMap update made as the kubelet makes it. Each volume is a local folder at the path the manifest
mounts it; the local server stands in for OVMS (same flags, same probes) and picks free ports.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import OvmsServer, free_port, wait_until
from tests.deploy.manifests import one, server_pod
from tests.servable.rag import SERVABLE, ServableCopy, ask, require_models, swap_configmap

pytestmark = pytest.mark.slow


def local(path: str, mounts: dict[str, Path]) -> str:
    """A path inside the pod as the local folder its volume is laid out at."""
    for mount_path, folder in mounts.items():
        if path == mount_path or path.startswith(mount_path + "/"):
            return str(folder / os.path.relpath(path, mount_path))
    return path


def servable_metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def status_of(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


def test_the_cpu_pod_runs_here_as_its_manifest_says(
    tmp_path: Path, ovms_server: Callable[..., OvmsServer]
) -> None:
    require_models()
    spec, ovms = server_pod("cpu")
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in ovms["volumeMounts"]:
        volume = volumes[mount["name"]]
        folder = tmp_path / mount["name"]
        if "configMap" in volume:  # the kubelet's layout: files link through ..data to a versioned folder
            data = one("cpu", "ConfigMap", volume["configMap"]["name"])["data"]
            (folder / "..v1").mkdir(parents=True)
            os.symlink("..v1", folder / "..data")
            for key, text in data.items():
                (folder / "..v1" / key).write_text(text, encoding="utf-8")
                os.symlink(f"..data/{key}", folder / key)
        elif volume.get("persistentVolumeClaim", {}).get("claimName") == "ovms-rag-servable":
            ServableCopy.make(folder, {}, [], folders=("documents",))
        else:
            folder.mkdir()
        mounts[mount["mountPath"]] = folder

    env = {e["name"]: local(e["value"], mounts) for e in ovms["env"]}
    env |= one("cpu", "ConfigMap", ovms["envFrom"][0]["configMapRef"]["name"])["data"]
    metrics_port = free_port()
    env["METRICS_PORT"] = str(metrics_port)
    config_path = next(a.partition("=")[2] for a in ovms["args"] if a.startswith("--config_path="))
    server = ovms_server(Path(local(config_path, mounts)), env=env)

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert status_of(server.rest_url + ovms[probe]["httpGet"]["path"]) == 200, probe
    documents = len(list((SERVABLE / "documents").iterdir()))
    wait_until(
        lambda: servable_metrics(metrics_port).get("rag_index_documents") == documents, "the first index"
    )
    index_dir = Path(env["RAG_INDEX_DIR"])
    assert (index_dir / "CURRENT").exists(), "the index is on the index volume"
    answer = ask(server.grpc_url, "How long does the Harvest Tern HT-7 fly on one battery?")
    assert answer.error is None and answer.sources, answer
    assert all(s["document"].startswith("documents/") for s in answer.sources), answer.sources

    docs_dir = Path(env["DOCS_FILE"]).parent
    swap_configmap(docs_dir, "documents/support.txt\n")
    wait_until(lambda: servable_metrics(metrics_port).get("rag_index_documents") == 1, "the updated list")
    assert servable_metrics(metrics_port)["rag_llm_active_requests"] == 0
