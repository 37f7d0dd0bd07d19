"""`python -m client.cli` against the real local server serving the slow test servable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.conftest import LIVENESS_S, REPO, sigint_as_in_a_terminal

ANSWER_12 = "[turn 1] " + " ".join(f"word{i}" for i in range(1, 13))
# Words the slow servable would take hours to send: the answer cannot end before the test stops it.
ENDLESS = 1_000_000


def test_answer_then_sources_then_timing_exit_0(slow_server, run_cli):
    result = run_cli("How do I set it up?", url=slow_server.grpc_url)
    assert result.returncode == 0, result.stderr
    answer, sources = result.stdout.split("Sources:\n")
    assert answer.strip() == ANSWER_12
    assert "[1] Setup guide - guide/setup.md (score 0.91)" in sources
    assert "About: How do I set it up?" in sources
    assert "[2] FAQ - https://example.com/faq (score 0.42)" in sources
    assert "tokens/s" in result.stderr and "first token" in result.stderr


def test_max_new_tokens_and_no_rag_go_to_the_server(slow_server, run_cli):
    result = run_cli("Short, please", "--max-new-tokens", "4", "--no-rag", url=slow_server.grpc_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[turn 1] word1 word2 word3 word4"
    assert slow_server.log.requests()[-1] == {
        "messages": [{"role": "user", "content": "Short, please"}],
        "max_new_tokens": 4,
        "use_rag": False,
        "format": "json",
    }


def test_interactive_mode_keeps_the_history(slow_server, run_cli):
    result = run_cli("--max-new-tokens", "2", url=slow_server.grpc_url, stdin="First?\n\nSecond?\n")
    assert result.returncode == 0, result.stderr
    assert "[turn 1] word1 word2" in result.stdout and "[turn 2] word1 word2" in result.stdout
    second = slow_server.log.requests()[-1]["messages"]
    assert second == [
        {"role": "user", "content": "First?"},
        {"role": "assistant", "content": "[turn 1] word1 word2"},
        {"role": "user", "content": "Second?"},
    ]


def test_unreachable_server_exit_3_with_one_line(unused_port, run_cli):
    for args in (("Anyone there?",), ()):
        result = run_cli(*args, url=f"127.0.0.1:{unused_port}", stdin="")
        assert result.returncode == 3
        assert result.stderr.strip().count("\n") == 0
        assert "not reachable" in result.stderr and "Traceback" not in result.stderr


def test_server_error_exit_1_with_one_line(slow_server, run_cli):
    result = run_cli("please fail", url=slow_server.grpc_url)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: The server could not answer: pre_prompt: the test servable was asked to fail"
    )


def test_a_question_that_is_not_utf8_exit_2_with_one_line(unused_port, run_cli):
    """`caf\xe9?` from a Latin-1 terminal reaches Python as a lone surrogate: a message, no traceback."""
    result = run_cli("caf\udce9?", url=f"127.0.0.1:{unused_port}")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "not valid UTF-8" in result.stderr and "Traceback" not in result.stderr


def test_interactive_mode_says_so_and_goes_on_after_a_question_that_is_not_utf8(slow_server):
    # A UTF-8 terminal whose stdin decodes strictly, as outside the C locale.
    result = subprocess.run(
        [sys.executable, "-m", "client.cli", "--url", slow_server.grpc_url, "--max-new-tokens", "2"],
        cwd=REPO,
        input=b"caf\xe9?\nSecond?\n",
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
        timeout=LIVENESS_S,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "not valid UTF-8" in stderr and "Traceback" not in stderr
    assert "[turn 1] word1 word2" in result.stdout.decode()
    assert slow_server.log.requests()[-1]["messages"] == [{"role": "user", "content": "Second?"}]


def _start_an_endless_answer(slow_server) -> subprocess.Popen:
    """The CLI asking for an answer that does not end by itself, once its first word has been printed.
    Its SIGINT is as in a terminal's foreground job, whatever this test run inherited."""
    process = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "--url", slow_server.grpc_url, "--max-new-tokens", str(ENDLESS)]
        + ["Go on"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )
    try:
        assert process.stdout.read(len("[turn 1] word1")) == "[turn 1] word1"
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def test_ctrl_c_stops_the_answer_in_the_server(slow_server):
    process = _start_an_endless_answer(slow_server)
    try:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=LIVENESS_S)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, err
    assert "cancelled" in err and "Traceback" not in err
    cancelled = slow_server.log.wait_for_cancellations(timeout=LIVENESS_S)
    assert [c["question"] for c in cancelled] == ["Go on"]


def test_closed_output_stops_the_answer_in_the_server_without_a_traceback(slow_server):
    process = _start_an_endless_answer(slow_server)
    try:
        process.stdout.close()  # as `| head -c 14` does
        _, err = process.communicate(timeout=LIVENESS_S)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 141, err
    assert "Traceback" not in err, err
    cancelled = slow_server.log.wait_for_cancellations(timeout=LIVENESS_S)
    assert [c["question"] for c in cancelled] == ["Go on"]
