"""Start-up failures of ``python -m local_ovms`` exit non-zero with a message naming the problem."""

import socket
import subprocess
import sys

import pytest

from tests.conftest import LIVENESS_S, REPO, free_port
from tests.server.graphs import STANDARD_GRAPHS, write_config


def run_server(*args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "local_ovms",
        "--rest_port",
        "0",
        "--grpc_bind_address",
        "127.0.0.1",
        *args,
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=LIVENESS_S)


def test_missing_config_file(tmp_path):
    result = run_server("--config_path", str(tmp_path / "nope.json"), "--port", str(free_port()))
    assert result.returncode == 1
    assert "cannot read config file" in result.stderr and "nope.json" in result.stderr


def test_config_that_is_not_json(tmp_path):
    config = tmp_path / "config.json"
    config.write_text("{mediapipe_config_list: oops")
    result = run_server("--config_path", str(config), "--port", str(free_port()))
    assert result.returncode == 1
    assert "is not valid JSON" in result.stderr


@pytest.mark.parametrize("which", ["gRPC", "REST"])
def test_port_in_use(tmp_path, which):
    config = write_config(tmp_path, {"increment": STANDARD_GRAPHS["increment"]})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ports = ["--port", port] if which == "gRPC" else ["--port", str(free_port()), "--rest_port", port]
        result = run_server("--config_path", str(config), "--rest_bind_address", "127.0.0.1", *ports)
    assert result.returncode == 1
    assert f"cannot bind {which}" in result.stderr


def test_bad_flag_values_are_refused(tmp_path):
    result = run_server("--config_path", "x", "--max_message_mb", "0")
    assert result.returncode == 2
    assert "--max_message_mb" in result.stderr
