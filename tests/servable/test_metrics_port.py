"""METRICS_PORT: the servable serves its own Prometheus metrics, for real OVMS, whose /metrics holds only
the server's (deploy/kubernetes/README.md: the autoscaler reads rag_llm_active_requests there)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from ragbot import service
from ragbot.settings import Settings

from tests.conftest import LIVENESS_S, free_port
from tests.servable.rag import SERVABLE
from tests.servable.test_service import model_dirs

# A fresh process, as a server is: metrics.serve twice (a reloaded graph), then wait for stdin to close.
SERVE = """
import sys
from ragbot import metrics
port = int(sys.argv[1])
metrics.serve(port)
metrics.serve(port)
print("serving", flush=True)
sys.stdin.read()
"""


def test_metrics_port_serves_the_servables_metrics_once_per_process() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SERVABLE)}
    with subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        try:
            line = process.stdout.readline()
            assert line == "serving\n", process.stderr.read()
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=LIVENESS_S) as response:
                text = response.read().decode()
            assert re.search(r"^rag_llm_active_requests 0\.0$", text, re.M), text[:2000]
            assert "rag_embedded_texts_total" in text
        finally:
            process.stdin.close()
            process.wait(timeout=LIVENESS_S)
    assert process.returncode == 0, process.stderr.read()


def test_metrics_port_is_off_by_default_and_checked(tmp_path: Path) -> None:
    assert Settings.from_env(tmp_path, {}).metrics_port == 0
    assert Settings.from_env(tmp_path, {"METRICS_PORT": "8001"}).metrics_port == 8001
    with pytest.raises(ValueError, match="METRICS_PORT must be between 0 and 65535, got 70000"):
        Settings.from_env(tmp_path, {"METRICS_PORT": "70000"})


class _Loading(Exception):
    """Stops RagService where it starts loading the LLM."""


def test_the_service_serves_its_metrics_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[int] = []

    def engine(*_args: object) -> None:
        raise _Loading

    monkeypatch.setattr(service.metrics, "serve", served.append)
    monkeypatch.setattr(service, "Engine", engine)
    with pytest.raises(_Loading):
        service.RagService(Settings.from_env(tmp_path, model_dirs(tmp_path) | {"METRICS_PORT": "8001"}))
    assert served == [8001]
