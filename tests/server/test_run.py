"""``python -m local_ovms.run`` (``make run``) starts the server and stops it again on SIGTERM."""

import signal
import subprocess
import sys
import urllib.request

from tests.conftest import LIVENESS_S, REPO, free_port, wait_until
from tests.server.graphs import STANDARD_GRAPHS, write_config


def test_run_starts_the_server_and_stops_everything_on_sigterm(tmp_path):
    config = write_config(tmp_path, {"increment": STANDARD_GRAPHS["increment"]})
    grpc_port, rest_port, web_port = free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "local_ovms.run", "--config_path", str(config), "--port", str(grpc_port),
               "--rest_port", str(rest_port), "--web_port", str(web_port)]  # fmt: skip
    runner = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def ready() -> bool:
        assert runner.poll() is None, runner.stdout.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v2/health/ready", timeout=10) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, "the server is ready")
        runner.send_signal(signal.SIGTERM)
        output, _ = runner.communicate(timeout=LIVENESS_S)
    finally:
        runner.kill()
    assert runner.returncode == 0
    assert "local_ovms: stopped" in output
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v2/health/live", timeout=1)
        raise AssertionError("the server still answers")
    except OSError:
        pass
