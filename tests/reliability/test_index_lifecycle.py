"""Shutdown and the index on disk, over restarts of the real server on one servable copy:
SIGTERM drains the streams in flight and keeps the index whole (the next start embeds nothing); a
SIGKILL during a rebuild leaves the previous complete index, which the next start loads; a SIGTERM
during a rebuild stops it instead of waiting for it; a corrupt or mismatched index is detected,
reported and rebuilt, and answers still work. The tests run in order and hand the running server on
to the next."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.conftest import LIVENESS_S, OvmsServer, wait_until
from tests.reliability.conftest import DEFAULT_DOCS
from tests.reliability.streams import ask, json_request
from tests.servable.rag import ServableCopy, Stream, metrics, wait_for

pytestmark = pytest.mark.slow

# Room for the short answers in flight at a SIGTERM to end on a loaded machine, not for the long ones.
GRACE_S = 10.0
EMBEDDED_DOCUMENTS = 'rag_embedded_texts_total{kind="documents"}'
EMBEDDING_CALLS = 'rag_embedding_calls_total{kind="documents"}'
QUESTION = json_request("Who founded Lumenfold Robotics, and when?", max_new_tokens=8)
BULK_FILES, BULK_CHARS = 150, 5000


@dataclass
class Lifecycle:
    """The module's servable copy and the server running on it now (tests hand it on to the next)."""

    copy: ServableCopy
    start: Callable[..., OvmsServer]
    server: OvmsServer | None = None

    def running(self) -> OvmsServer:
        if self.server is None or self.server.process.poll() is not None:
            self.server = self.start(self.copy, args=("--grace_period", str(GRACE_S)))
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            assert self.server.stop() == 0, self.server.log_text()[-2000:]
            self.server = None


@pytest.fixture(scope="module")
def lifecycle(servable_factory, rag_server) -> Lifecycle:
    copy = servable_factory()
    copy.write_bulk_notes("bulk", BULK_FILES, BULK_CHARS, "orchard")
    return Lifecycle(copy, rag_server)


def _answers(server: OvmsServer) -> None:
    answer = ask(server.grpc_url, QUESTION)
    assert answer.error is None and answer.end is not None, answer
    assert answer.sources and answer.end["generated_tokens"] > 0, answer


def _loaded_without_embedding(copy: ServableCopy, server: OvmsServer, build: str) -> None:
    """The server loaded the stored build and (after comparing it with docs.txt) embedded nothing."""
    assert "loaded stored index" in server.log_text(), server.log_text()[-2000:]
    assert wait_for(lambda: copy.status().get("reason", "").startswith("start: compare"), LIVENESS_S), (
        copy.status()
    )
    status = copy.status()
    assert status["state"] == "ready" and status["embedded_chunks"] == 0, status
    assert metrics(server).get(EMBEDDED_DOCUMENTS, 0.0) == 0.0
    assert copy.whole_build() == build


def test_sigterm_drains_streams_and_keeps_the_index(lifecycle):
    server = lifecycle.running()
    build = lifecycle.copy.whole_build()
    short = json_request("What does error code E-719 mean?", max_new_tokens=8)
    long = json_request(
        "Tell me everything about the Harvest Tern HT-7.", max_new_tokens=3000, ignore_eos=True
    )
    requests = [short, short, long, long, long, long]
    streams = [Stream(server.grpc_url) for _ in requests]
    answers = [stream.send(request) for stream, request in zip(streams, requests, strict=True)]
    deadline = time.monotonic() + LIVENESS_S
    for stream, answer in zip(streams[2:], answers[2:], strict=True):
        while stream.next_event(answer, deadline) != "completion":
            assert answer.error is None, answer
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    wait_until(lambda: not server.ready(), "the server drains")
    refused = ask(server.grpc_url, short, timeout=LIVENESS_S)  # the long answers keep the server up
    assert refused.error and "shutting down" in refused.error, refused
    try:
        for stream, answer in zip(streams, answers, strict=True):
            if answer.end is None and answer.error is None:
                stream.collect(answer=answer, timeout=LIVENESS_S)
    finally:
        for stream in streams:
            stream.close(cancel=False)
    code = server.process.wait(LIVENESS_S)
    exit_s = time.monotonic() - signalled
    log = server.log_text()
    reasons = [a.end["finish_reason"] if a.end else f"error: {a.error}" for a in answers]
    print(
        f"SIGTERM drain: exit code {code} after {exit_s:.1f} s (grace {GRACE_S} s); finish reasons {reasons}"
    )
    assert code == 0, log[-2000:]
    assert set(reasons[:2]) <= {"stop", "length"}, reasons
    assert set(reasons[2:]) <= {"stop", "length", "shutdown"} and "shutdown" in reasons[2:], reasons
    assert all(answer.pieces and answer.end["generated_tokens"] > 0 for answer in answers), answers
    assert "graph 'python_model': finalize" in log and "cutting" not in log, log[-2000:]
    lifecycle.server = None
    assert lifecycle.copy.whole_build() == build
    server = lifecycle.running()
    _loaded_without_embedding(lifecycle.copy, server, build)
    _answers(server)


def _start_a_rebuild(copy: ServableCopy, server: OvmsServer) -> str:
    """Once the index is ready, list bulk/ in docs.txt and wait until its embedding starts; the build
    that was serving before."""
    assert wait_for(lambda: copy.status().get("state") == "ready", LIVENESS_S), copy.status()
    build = copy.whole_build()
    calls = metrics(server).get(EMBEDDING_CALLS, 0.0)
    copy.write_docs([*DEFAULT_DOCS, "bulk/"])
    started = wait_for(lambda: metrics(server).get(EMBEDDING_CALLS, 0.0) > calls, LIVENESS_S, interval=0.05)
    assert started, f"the rebuild did not start: {copy.status()}"
    return build


def test_sigkill_during_a_rebuild_leaves_the_previous_index(lifecycle):
    copy = lifecycle.copy
    server = lifecycle.running()
    build = _start_a_rebuild(copy, server)
    server.process.kill()
    server.process.wait(LIVENESS_S)
    lifecycle.server = None
    assert copy.current_build().name == build, "the rebuild finished before the kill: make bulk/ bigger"
    leftovers = sorted(p.name for p in copy.index_dir.iterdir() if p.name.startswith(".tmp"))
    print(f"SIGKILL during rebuild: CURRENT still {build}; leftovers {leftovers}")
    assert copy.whole_build() == build
    copy.write_docs(DEFAULT_DOCS)
    server = lifecycle.running()
    assert metrics(server)["rag_index_documents"] == 5
    _loaded_without_embedding(copy, server, build)
    _answers(server)


def test_sigterm_during_a_rebuild_stops_it_and_keeps_the_index(lifecycle):
    copy = lifecycle.copy
    server = lifecycle.running()
    build = _start_a_rebuild(copy, server)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(LIVENESS_S)
    except subprocess.TimeoutExpired:
        code = None
        server.process.kill()
        server.process.wait(LIVENESS_S)
    exit_s = time.monotonic() - signalled
    lifecycle.server = None
    copy.write_docs(DEFAULT_DOCS)
    print(f"SIGTERM during a rebuild: exit code {code} after {exit_s:.1f} s")
    assert copy.whole_build() == build
    log = server.log_text()
    assert code is not None, f"no exit within {LIVENESS_S} s of SIGTERM during a rebuild:\n{log[-1500:]}"
    assert code == 0, f"exit code {code} {exit_s:.1f} s after SIGTERM during a rebuild:\n{log[-1500:]}"
    # The exit did not wait for the rebuild: it gave up.
    assert "index rebuild stopped: the server is shutting down" in log, log[-1500:]


def _restart_rebuilds(lifecycle: Lifecycle, damage, problem: str) -> None:
    """Stop the server, `damage` the stored build, start again: the problem is reported and the index
    rebuilt in full, and answers work."""
    copy = lifecycle.copy
    lifecycle.stop()
    build = copy.whole_build()
    damage(copy.current_build())
    server = lifecycle.running()
    log = server.log_text()
    assert "unusable" in log and problem in log, log[-3000:]
    status = copy.status()
    chunks = status.get("chunks")
    assert status["state"] == "ready" and not status["loaded_from_disk"], status
    assert status["embedded_chunks"] == chunks > 0 and metrics(server)[EMBEDDED_DOCUMENTS] == chunks, status
    assert copy.whole_build() != build
    _answers(server)


def test_a_truncated_index_is_detected_and_rebuilt(lifecycle):
    def truncate(build):
        path = build / "index.faiss"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    _restart_rebuilds(lifecycle, truncate, "checksum")


def test_an_index_of_another_embedding_model_is_detected_and_rebuilt(lifecycle):
    def other_model(build):
        path = build / "manifest.json"
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["embedding_model"] = "bge-small-en-v1.5:0123456789abcdef:cls"
        path.write_text(json.dumps(manifest), encoding="utf-8")

    _restart_rebuilds(lifecycle, other_model, "made with embedding model bge-small-en-v1.5")
