"""`python -m client.cli` names the answer's facts that no source holds, from the end_signal's grounding."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from client.cli import HIGHLIGHT, RESET
from tests.client.conftest import GROUNDED_ANSWER, GROUNDED_QUESTION
from tests.conftest import REPO

UNSUPPORTED = "not found in the sources: 1,200, Lima"


def test_facts_no_source_holds_follow_the_answer_before_the_numbered_sources(slow_server, run_cli):
    result = run_cli(GROUNDED_QUESTION, url=slow_server.grpc_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [GROUNDED_ANSWER, UNSUPPORTED, "Sources:"]
    assert "  [1] Setup guide - guide/setup.md (score 0.91)" in lines
    assert "\x1b[" not in result.stdout  # a pipe gets no colors


def test_nothing_extra_when_the_servable_sends_no_grounding(slow_server, run_cli):
    result = run_cli("How do I set it up?", url=slow_server.grpc_url)
    assert result.returncode == 0, result.stderr
    assert "not found in the sources" not in result.stdout + result.stderr
    assert result.stdout.splitlines()[1] == "Sources:"


def on_a_terminal(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Exit code and stdout of the CLI whose stdout is a terminal (a pseudo-terminal read to its end)."""
    leader, follower = pty.openpty()
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    process = subprocess.Popen(
        [sys.executable, "-m", "client.cli", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.DEVNULL,
    )
    os.close(follower)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while select.select([leader], [], [], max(0.0, deadline - time.monotonic()))[0]:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the CLI closed its side of the terminal
                break
            if not chunk:
                break
            output += chunk
        return process.wait(timeout=max(1.0, deadline - time.monotonic())), output.decode()
    finally:
        os.close(leader)
        process.kill()
        process.wait()


def test_on_a_terminal_the_line_is_highlighted(slow_server):
    code, output = on_a_terminal("--url", slow_server.grpc_url, GROUNDED_QUESTION)
    assert code == 0
    assert f"{HIGHLIGHT}{UNSUPPORTED}{RESET}\r\n" in output
