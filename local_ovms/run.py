"""``make run``: start the local server, the Gradio client and the OpenAI-compatible gateway together;
Ctrl-C (or SIGTERM) stops them all.

``python -m local_ovms.run --config_path servable_stream/config.json --port 9000 --rest_port 8000
--web_port 9001 --api_port 9002``. The server starts first; the clients (``client/app.py`` and
``python -m client.openai_api``, each its own process) start once the server reports ready. When any
process ends, the others are stopped too.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]


def _ready(rest_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v2/health/ready", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen | None, timeout: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    """Run server and client until one ends or a signal arrives; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m local_ovms.run", description=__doc__.splitlines()[0])
    parser.add_argument("--config_path", required=True)
    parser.add_argument("--port", type=int, default=9000, help="gRPC port")
    parser.add_argument("--rest_port", type=int, default=8000, help="REST port")
    parser.add_argument("--web_port", type=int, default=9001, help="port of the Gradio page")
    parser.add_argument("--api_port", type=int, default=9002, help="port of the OpenAI-compatible API")
    parser.add_argument("--grace_period", type=float, default=5.0, help="server drain time on shutdown")
    args = parser.parse_args(argv)

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server = subprocess.Popen(
        [sys.executable, "-m", "local_ovms", "--config_path", args.config_path, "--port", str(args.port),
         "--rest_port", str(args.rest_port), "--grace_period", str(args.grace_period)],
        cwd=REPO,
        start_new_session=True,
    )  # fmt: skip
    clients: list[subprocess.Popen] = []
    ovms_url = f"localhost:{args.port}"
    print(
        f"starting the server (gRPC :{args.port}, REST :{args.rest_port}); Ctrl-C stops everything",
        flush=True,
    )
    try:
        while not stopping and server.poll() is None and all(c.poll() is None for c in clients):
            if not clients and _ready(args.rest_port):
                clients = [
                    subprocess.Popen(command, cwd=REPO, start_new_session=True)
                    for command in (
                        [sys.executable, "client/app.py", "--web_url", f"0.0.0.0:{args.web_port}",
                         "--ovms_url", ovms_url],
                        [sys.executable, "-m", "client.openai_api", "--ovms_url", ovms_url,
                         "--port", str(args.api_port)],
                    )
                ]  # fmt: skip
                print(
                    f"server ready; chat page on http://localhost:{args.web_port}, "
                    f"OpenAI-compatible API on http://localhost:{args.api_port}/v1",
                    flush=True,
                )
            time.sleep(0.2)
    finally:
        for client in clients:
            _stop(client, 10)
        _stop(server, args.grace_period + 15)
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
