"""SIGTERM/SIGINT: running streams finish within the grace period, finalize runs, exit code 0.

The streams here never end by themselves (one waits for a file the test creates, one counts for years),
so what ends them is the drain, not the machine's speed."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.conftest import LIVENESS_S, wait_until
from tests.server.graphs import GATE_GRAPH, STANDARD_GRAPHS, write_config
from tests.server.streams import Stream, bytes_input, numpy_input


@pytest.fixture
def start(ovms_server, tmp_path):
    config = write_config(tmp_path, {"count": STANDARD_GRAPHS["count"], "gate": GATE_GRAPH})
    markers = tmp_path / "markers"
    markers.mkdir()

    def start_server(grace_period: float):
        server = ovms_server(
            config, env={"LOCAL_OVMS_TEST_MARKERS": str(markers)}, args=["--grace_period", str(grace_period)]
        )
        return server, markers

    return start_server


def count_input(n: int, delay_ms: int) -> grpcclient.InferInput:
    return numpy_input("count", np.array([n, delay_ms], dtype=np.int32))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_running_stream_finishes_within_the_grace_period(start, sig, tmp_path):
    server, markers = start(grace_period=LIVENESS_S)  # the test ends the stream long before
    gate = tmp_path / "end-the-answer"
    stream = Stream(server.grpc_url)
    try:
        stream.send("gate", [bytes_input("gate", str(gate).encode())])
        assert stream.next().output == "number"
        server.process.send_signal(sig)
        wait_until(lambda: not server.ready(), "the server drains")
        late = Stream(server.grpc_url)
        late.send("count", [count_input(1, 0)])
        assert "shutting down" in (late.next().error or "")
        late.close()
        gate.touch()  # the running stream may end now
        events = stream.until("done")
    finally:
        stream.close()
    assert [event.data for event in events] == [b"complete"]
    assert server.process.wait(LIVENESS_S) == 0
    assert (markers / "finalized").exists()
    assert "finalize" in server.log_text()


def test_stream_past_the_grace_period_is_ended_by_finalize(start):
    server, markers = start(grace_period=0.5)
    stream = Stream(server.grpc_url)
    try:
        stream.send("count", [count_input(2**31 - 1, 20)])  # years of numbers
        assert stream.next().output == "number"
        server.process.send_signal(signal.SIGTERM)
        events = stream.until("done")
    finally:
        stream.close()
    assert events[-1].data == b"shutdown"
    assert server.process.wait(LIVENESS_S) == 0
    assert (markers / "finalized").exists()
