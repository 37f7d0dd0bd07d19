"""SIGTERM/SIGINT: running streams finish within the grace period, finalize runs, exit code 0."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.server.graphs import STANDARD_GRAPHS, write_config
from tests.server.streams import Stream, numpy_input


@pytest.fixture
def start(ovms_server, tmp_path):
    config = write_config(tmp_path, {"count": STANDARD_GRAPHS["count"]})
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
def test_running_stream_finishes_within_the_grace_period(start, sig):
    server, markers = start(grace_period=10)
    stream = Stream(server.grpc_url)
    try:
        stream.send("count", [count_input(10, 50)])
        assert stream.next().output == "number"
        server.process.send_signal(sig)
        time.sleep(0.2)
        late = Stream(server.grpc_url)
        late.send("count", [count_input(1, 0)])
        assert "shutting down" in late.next().error
        late.close()
        events = stream.until("done")
    finally:
        stream.close()
    assert events[-1].data == b"complete"
    assert len(events) == 10
    assert server.stop(timeout=15) == 0
    assert (markers / "finalized").exists()
    assert "finalize" in server.log_text()


def test_stream_past_the_grace_period_is_ended_by_finalize(start):
    server, markers = start(grace_period=0.5)
    stream = Stream(server.grpc_url)
    try:
        stream.send("count", [count_input(1000, 20)])
        assert stream.next().output == "number"
        signalled_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        events = stream.until("done", timeout=10)
    finally:
        stream.close()
    assert events[-1].data == b"shutdown"
    assert server.stop(timeout=15) == 0
    assert time.monotonic() - signalled_at < 5
    assert (markers / "finalized").exists()
