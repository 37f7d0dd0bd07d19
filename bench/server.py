"""The local server as a black box: a temporary copy of the servable, the server subprocess on free
loopback ports, a tritonclient streaming client, its Prometheus metrics and its memory."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from bench.settings import REPO, SERVABLE_DIR
from bench.timing import RequestTiming, now

MODEL_NAME = "python_model"
SERVABLE_FILES = ("config.json", "graph.pbtxt", "model.py")
READY_TIMEOUT_S = 600
ANSWER_TIMEOUT_S = 300


def make_servable_copy(
    root: Path, llm_dir: Path, embedding_dir: Path, source: Path = SERVABLE_DIR
) -> dict[str, str]:
    """Copy the servable's code from `source` (the working tree's, or one extracted from an earlier
    commit) into `root` with links to the model folders; returns the servable's env."""
    for name in SERVABLE_FILES:
        shutil.copy2(source / name, root / name)
    shutil.copytree(source / "ragbot", root / "ragbot", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in (llm_dir, embedding_dir):
        (root / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    return {"LLM_MODEL_DIR": llm_dir.name, "EMBEDDING_MODEL_DIR": embedding_dir.name}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m local_ovms` on a servable folder; stopped (SIGTERM, then kill) by `stop()`."""

    def __init__(self, servable: Path, env: dict[str, str], log_name: str = "server.log") -> None:
        self.servable = servable
        self.port, self.rest_port = _free_port(), _free_port()
        self.grpc_url = f"127.0.0.1:{self.port}"
        self.rest_url = f"http://127.0.0.1:{self.rest_port}"
        self.log_path = servable / log_name
        command = [sys.executable, "-m", "local_ovms", "--config_path", str(servable / "config.json"),
                   "--port", str(self.port), "--rest_port", str(self.rest_port)]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT
            )
        self.memory = ProcessMemory(self.process.pid)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait for ServerReady (every graph loaded or failed), then require the servable's graph."""
        client = grpcclient.InferenceServerClient(self.grpc_url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(InferenceServerException):  # not listening yet
                    if client.is_server_ready():
                        if client.is_model_ready(MODEL_NAME):
                            return
                        raise RuntimeError(
                            f"{MODEL_NAME} failed to load: {self.first_error()}\n{self.log_tail()}"
                        )
                time.sleep(0.5)
        finally:
            client.close()
        raise TimeoutError(f"server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def first_error(self) -> str:
        """The server log's first ERROR line and the line after it (the reason), on one line."""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        found = next((i for i, line in enumerate(lines) if " ERROR " in line), None)
        return "no ERROR in the server log" if found is None else " ".join(lines[found : found + 2])

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of one sample of /metrics (0 when absent)."""
        text = requests.get(f"{self.rest_url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return float(sample.value)
        return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ProcessMemory:
    """RSS of one process and its peak since the last `reset()`, both kept by the Linux kernel
    (VmRSS and VmHWM in /proc/<pid>/status; writing 5 to clear_refs resets VmHWM), so measuring
    memory costs the benchmarked machine no CPU: a sampling thread would compete with the server."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _status_kb(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field} in /proc/{self.pid}/status")

    def rss(self) -> int:
        return self._status_kb("VmRSS") * 1024

    def reset(self) -> None:
        with open(f"/proc/{self.pid}/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")

    def peak(self) -> int:
        return self._status_kb("VmHWM") * 1024


class StreamClient:
    """One benchmark user: a tritonclient connection that asks one question per gRPC stream.

    A completion piece only needs its arrival time, which tritonclient's callback thread notes as the
    GenAI benchmark's streamer does for a token; the other responses go to the asking thread."""

    def __init__(self, url: str, keep_text: bool = False) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._arrivals: list[float] = []
        self.keep_text = keep_text  # the pieces' text too, in `extra["text"]`
        self._pieces: list[str] = []

    def _on_response(self, result, error) -> None:
        stamp = now()
        if error is None and result.get_response().outputs[0].name == "completion":
            self._arrivals.append(stamp)
            if self.keep_text:
                self._pieces.append(result.as_numpy("completion").tobytes().decode("utf-8"))
        else:
            self._events.put((stamp, result, error))

    def ask(self, request: dict) -> RequestTiming:
        """Send one JSON request and time its answer; `extra` gets `sources` and the end_signal fields."""
        tensor = grpcclient.InferInput("pre_prompt", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([json.dumps(request).encode()], dtype=object))
        timing = RequestTiming(start=now())
        self._arrivals = timing.arrivals
        self._pieces = []
        self.client.start_stream(callback=self._on_response)
        try:
            self.client.async_stream_infer(MODEL_NAME, [tensor])
            while True:
                stamp, result, error = self._events.get(timeout=ANSWER_TIMEOUT_S)
                if error is not None:
                    raise RuntimeError(f"servable error: {error}")
                name = result.get_response().outputs[0].name
                text = result.as_numpy(name).tobytes().decode("utf-8")
                if name == "sources":
                    timing.extra["sources"] = json.loads(text)
                    timing.extra["sources_at"] = stamp
                elif name == "end_signal":
                    timing.extra |= json.loads(text)
                    if timing.extra["finish_reason"] not in ("length", "stop"):
                        raise RuntimeError(f"servable ended the answer with {text}")
                    timing.tokens = timing.extra["generated_tokens"]
                    timing.end = stamp
                    if self.keep_text:
                        timing.extra |= {"question": request["messages"][-1]["content"]}
                        timing.extra["text"] = "".join(self._pieces)
                    return timing
        finally:
            self.client.stop_stream()

    def close(self) -> None:
        self.client.close()
