"""Shared fixtures: a real ``python -m local_ovms`` server in a subprocess, on loopback.

``ovms_server`` (per test) and ``ovms_server_module`` (per test module) are factories::

    def test_x(ovms_server):
        server = ovms_server(config_path, env={"MY_VAR": "1"}, args=["--grace_period", "2"])
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)
        ...

``start(config_path, *, env=None, args=(), log_level="INFO", ready_timeout=180.0) -> OvmsServer``
picks free loopback ports, starts the server with the given extra ``env`` (added to this process's
environment) and extra command-line ``args``, and waits until ``/v2/health/ready`` answers 200 (all
graphs loaded or failed). It raises ``RuntimeError`` with the server log if the server exits or is
not ready in time. Every server a factory started is stopped at teardown (SIGTERM, then SIGKILL).

``OvmsServer`` has ``grpc_url`` ("127.0.0.1:PORT"), ``rest_url`` ("http://127.0.0.1:PORT"),
``grpc_port``, ``rest_port``, ``process`` (the Popen), ``log_path``, ``log_text()``, ``ready()`` and
``stop(sig=SIGTERM, timeout=30) -> returncode``.

Tests wait on states, never for a fixed time: ``wait_until(condition, what)`` polls until the condition
holds, its timeout only a liveness guard; Hypothesis runs without deadlines, on the same examples.

``tiny_gguf`` and ``tiny_ir`` (session) are the tiny random-weight model of tests/scripts/tiny_models.py,
as a GGUF file and converted by download_model.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]
# Property tests draw the same examples at every run and have no time limit per example (Hypothesis'
# default deadline is 200 ms): a loaded machine or an unlucky draw must not fail the suite.
settings.register_profile(
    "suite", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("suite")
# How long a test waits for a state before it gives up: a liveness guard, generous for a loaded machine.
LIVENESS_S = 120.0


def wait_until(condition: Callable[[], object], what: str, timeout: float = LIVENESS_S) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.05)


def sigint_as_in_a_terminal() -> None:
    """`preexec_fn` of a subprocess that a test interrupts as Ctrl-C in a terminal does.

    A job that a non-interactive shell starts in the background (`make test &`, some CI runners) has
    SIGINT ignored, its children inherit that, and Python then leaves SIGINT ignored instead of raising
    KeyboardInterrupt: the interrupt would never land. A foreground job has the default action."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class OvmsServer:
    """A running ``python -m local_ovms`` subprocess."""

    process: subprocess.Popen
    grpc_port: int
    rest_port: int
    log_path: Path

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        """Whether /v2/health/ready answers 200 (false while the server drains or once it is gone)."""
        try:
            with urllib.request.urlopen(f"{self.rest_url}/v2/health/ready", timeout=10) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float) -> None:
        """Wait until the server reports ready; RuntimeError with the log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"local_ovms exited with {self.process.returncode}:\n{self.log_text()}")
            if self.ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"local_ovms not ready after {timeout} s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for exit (SIGKILL after ``timeout``); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ovms_server(
    config_path: Path,
    log_dir: Path,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    log_level: str = "INFO",
    ready_timeout: float = 180.0,
) -> OvmsServer:
    """Start a server and wait until it is ready (retrying with other ports if one was taken)."""
    for attempt in range(3):
        grpc_port, rest_port = free_port(), free_port()
        log_path = log_dir / f"local_ovms-{grpc_port}.log"
        command = [
            sys.executable, "-m", "local_ovms", "--config_path", str(config_path),
            "--port", str(grpc_port), "--rest_port", str(rest_port),
            "--grpc_bind_address", "127.0.0.1", "--rest_bind_address", "127.0.0.1",
            "--log_level", log_level, *args,
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = OvmsServer(process, grpc_port, rest_port, log_path)
        try:
            server.wait_ready(ready_timeout)
            return server
        except RuntimeError:
            server.stop(signal.SIGKILL)
            if attempt == 2 or "cannot bind" not in server.log_text():
                raise
    raise AssertionError("unreachable")


def _factory(log_dir: Path) -> Iterator[Callable[..., OvmsServer]]:
    servers: list[OvmsServer] = []

    def start(config_path: Path, **kwargs) -> OvmsServer:
        server = start_ovms_server(Path(config_path), log_dir, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def ovms_server(tmp_path: Path) -> Iterator[Callable[..., OvmsServer]]:
    """Factory of servers stopped at the end of the test."""
    yield from _factory(tmp_path)


@pytest.fixture(scope="module")
def ovms_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., OvmsServer]]:
    """Factory of servers shared by a test module, stopped at its end."""
    yield from _factory(tmp_path_factory.mktemp("ovms"))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.scripts.tiny_models import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def tiny_ir(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GGUF converted by download_model.py (the same path as the offline default model)."""
    from tests.scripts.runner import run_script

    out = tmp_path_factory.mktemp("tiny_ir")
    result = run_script("download_model.py", "--model-id", str(tiny_gguf), "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    return out / "tiny-llama"
