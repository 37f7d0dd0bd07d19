"""``python -m local_ovms.run`` (``make run``) starts the server and the OpenAI-compatible gateway, and
stops them again on SIGTERM."""

import signal
import subprocess
import sys
import urllib.request

from tests.conftest import LIVENESS_S, REPO, free_port, wait_until
from tests.server.graphs import STANDARD_GRAPHS, write_config


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


def test_run_starts_the_server_and_the_gateway_and_stops_everything_on_sigterm(tmp_path):
    config = write_config(tmp_path, {"increment": STANDARD_GRAPHS["increment"]})
    grpc_port, rest_port, web_port, api_port = free_port(), free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "local_ovms.run", "--config_path", str(config), "--port", str(grpc_port),
               "--rest_port", str(rest_port), "--web_port", str(web_port),
               "--api_port", str(api_port)]  # fmt: skip
    models = f"http://127.0.0.1:{api_port}/v1/models"
    runner = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def ready() -> bool:
        assert runner.poll() is None, runner.stdout.read()
        return answers(f"http://127.0.0.1:{rest_port}/v2/health/ready") and answers(models)

    try:
        wait_until(ready, "the server and the gateway are ready")
        runner.send_signal(signal.SIGTERM)
        output, _ = runner.communicate(timeout=LIVENESS_S)
    finally:
        runner.kill()
    assert runner.returncode == 0
    assert "local_ovms: stopped" in output
    assert f"OpenAI-compatible API on http://localhost:{api_port}/v1" in output
    assert not answers(f"http://127.0.0.1:{rest_port}/v2/health/live"), "the server still answers"
    assert not answers(models), "the gateway still answers"
