"""The client over several servers: the list and `dns:///` targets, gRPC's round_robin spreading
questions, a replica that dies before its first text piece (the question is asked again on another)
and one that dies after text was shown (a clear error). Real local servers running the slow test
servable; the dying one kills itself with SIGKILL (CLIENT_TEST_DIE)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from client.ovms_client import EndSignal, OvmsClient, Sources, StreamError, TextPiece, grpc_target
from tests.client.conftest import SLOW_CONFIG
from tests.conftest import LIVENESS_S, REPO, wait_until

QUESTION = [{"role": "user", "content": "How long does it fly?"}]


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("127.0.0.1:9000,127.0.0.2:9001", "ipv4:127.0.0.1:9000,127.0.0.2:9001"),
        ("localhost:9000, 127.0.0.1:9001", "ipv4:127.0.0.1:9000,127.0.0.1:9001"),
        ("[::1]:9000,[::1]:9001", "ipv6:[::1]:9000,[::1]:9001"),
        (
            "dns:///ovms-headless.default.svc.cluster.local:9000",
            "dns:///ovms-headless.default.svc.cluster.local:9000",
        ),
        ("localhost:9000", "localhost:9000"),
    ],
)
def test_a_list_of_servers_is_one_grpc_target(url, target):
    assert grpc_target(url) == target


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("127.0.0.1:9000,127.0.0.1", "'127.0.0.1' is not host:port"),
        ("127.0.0.1:9000,no-such-host.invalid:9000", "server 'no-such-host.invalid'"),
        ("127.0.0.1:9000,[::1]:9001", "mix IPv4 and IPv6"),
        ("", "'' names no server"),
        (" , ", "' , ' names no server"),
    ],
)
def test_a_bad_list_names_the_problem(url, problem):
    with pytest.raises(ValueError, match=problem.replace("[", r"\[")):
        grpc_target(url)


def test_the_cli_refuses_a_bad_list_clearly(run_cli):
    result = run_cli("hello", url="127.0.0.1:9000,nowhere")
    assert result.returncode == 2 and "error: --url: 'nowhere' is not host:port" in result.stderr


def test_a_dns_name_is_resolved_by_grpc(slow_server):
    """`dns:///localhost:PORT`: every address of the name is balanced over; the server listens on
    127.0.0.1 only, so an IPv6 address the name may have is skipped as a replica that is down."""
    port = slow_server.grpc_url.rpartition(":")[2]
    client = OvmsClient(f"dns:///localhost:{port}")
    assert client.status().model_ready
    assert all(isinstance(list(client.ask(QUESTION))[-1], EndSignal) for _ in range(3))


def start_pair(ovms_server, tmp_path, die: str):
    """A healthy server and one that dies at its first answer; the client over both."""
    servers = []
    for name, extra in (("healthy", {}), ("dying", {"CLIENT_TEST_DIE": die})):
        log_dir = tmp_path / name
        log_dir.mkdir()
        servers.append(ovms_server(SLOW_CONFIG, env={"CLIENT_TEST_LOG_DIR": str(log_dir), **extra}))
    client = OvmsClient(",".join(server.grpc_url for server in servers))
    wait_until(lambda: client.status().model_ready, "the servers are ready through the client")
    return client, servers[1]


def ask_until_it_dies(client: OvmsClient, dying) -> list[list[object]]:
    """Questions one after the other until round_robin sent one to the dying server (it is dead)."""
    answers = []
    while dying.process.poll() is None:
        assert len(answers) < 200, "round_robin never chose the second server"
        answers.append(list(client.ask(QUESTION)))
    return answers


def test_questions_spread_and_one_broken_before_its_first_token_is_asked_again(ovms_server, tmp_path):
    client, dying = start_pair(ovms_server, tmp_path, "before_text")
    answers = ask_until_it_dies(client, dying)
    dying.process.wait(LIVENESS_S)
    answers += [list(client.ask(QUESTION)) for _ in range(3)]  # the dead server is skipped
    for events in answers:
        assert isinstance(events[-1], EndSignal) and events[-1].problem is None, events
        assert sum(isinstance(event, Sources) for event in events) == 1, events
        assert "".join(e.text for e in events if isinstance(e, TextPiece)).startswith("[turn 1] word1")
    assert len((tmp_path / "dying" / "requests.jsonl").read_text().splitlines()) == 1


def test_a_stream_broken_after_text_is_a_clear_error(ovms_server, tmp_path):
    client, dying = start_pair(ovms_server, tmp_path, "after_text")
    answers = ask_until_it_dies(client, dying)
    *answered, broken = answers
    assert all(isinstance(events[-1], EndSignal) for events in answered)
    assert [type(event) for event in broken] == [Sources, TextPiece, TextPiece, TextPiece, StreamError]
    assert broken[-1].message == "The connection to the server was lost during the answer."
    assert isinstance(list(client.ask(QUESTION))[-1], EndSignal)


def test_the_page_refuses_a_bad_list_clearly():
    result = subprocess.run(
        [sys.executable, "client/app.py", "--ovms_url", "127.0.0.1:9000,nowhere:x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=LIVENESS_S,
    )
    assert result.returncode == 1 and "error: --ovms_url: 'nowhere:x' is not host:port" in result.stderr
