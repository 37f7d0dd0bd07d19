"""Streams cancelled mid-answer leave no request running in the LLM pipeline and memory near where it was.

The pipeline's KV cache (KV_CACHE_SIZE_GB) is reserved at start but its pages become resident only as
blocks are first used, so the RSS of a fresh server grows with every request, cancelled or not, until
the cache has been used once (about +1 GB with the default). The memory check therefore allows, on top
of the margin, what the same number of completed requests added just before."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.conftest import LIVENESS_S
from tests.reliability.conftest import write_artifact
from tests.reliability.streams import ask, json_request
from tests.servable.rag import Stream, metrics, wait_for

pytestmark = pytest.mark.slow

WAVES, WAVE_SIZE = 10, 10
QUESTION = "Tell me everything about the Harvest Tern HT-7."
# The allocator keeps freed memory in its pools, and prompt lookup (on by default in extract mode)
# sizes the pipeline's step buffers by the batch: a quarter of the RSS, not a leak's growth per wave.
MARGIN_MB, MARGIN_FRACTION = 150.0, 0.25


@pytest.fixture(scope="module")
def server(shared):
    return shared.server


def _rss_mb(server) -> float:
    return psutil.Process(server.process.pid).memory_info().rss / 2**20


def _cancel_wave(url: str, size: int, server) -> float:
    """Open `size` streams, cancel each after its first completion piece; the active-requests gauge
    seen while they all generate is returned."""
    request = json_request(QUESTION, max_new_tokens=400, ignore_eos=True)
    streams = [Stream(url) for _ in range(size)]
    try:
        answers = [stream.send(request) for stream in streams]
        deadline = time.monotonic() + LIVENESS_S
        for stream, answer in zip(streams, answers, strict=True):
            while stream.next_event(answer, deadline) != "completion":
                assert answer.error is None and answer.end is None, answer
        active = metrics(server)["rag_llm_active_requests"]
    finally:
        for stream in streams:
            stream.close(cancel=True)
    return active


def _completed_wave(url: str, size: int) -> None:
    """`size` concurrent requests that run to their end (the reference for memory growth)."""
    streams = [Stream(url) for _ in range(size)]
    try:
        answers = [stream.send(json_request(QUESTION, max_new_tokens=2)) for stream in streams]
        for stream, answer in zip(streams, answers, strict=True):
            assert stream.collect(answer=answer, timeout=LIVENESS_S).end is not None, answer
    finally:
        for stream in streams:
            stream.close(cancel=False)


def test_cancelled_streams_leave_no_request_running(server):
    cancelled = 'rag_llm_requests_total{finish_reason="cancelled"}'
    before = metrics(server)
    rss_start = _rss_mb(server)
    _cancel_wave(server.grpc_url, WAVE_SIZE, server)  # warm-up: the pipeline's first allocations
    assert wait_for(lambda: metrics(server)["rag_llm_active_requests"] == 0, LIVENESS_S)
    rss_reference = _rss_mb(server)
    for _ in range(WAVES):
        _completed_wave(server.grpc_url, WAVE_SIZE)
    rss_before = _rss_mb(server)
    reference_growth = max(0.0, rss_before - rss_reference)
    at_start = metrics(server)
    active_before = at_start["rag_llm_active_requests"]
    during = [_cancel_wave(server.grpc_url, WAVE_SIZE, server) for _ in range(WAVES)]
    started = time.monotonic()
    settled = wait_for(
        lambda: (
            (m := metrics(server))["rag_llm_active_requests"] == 0
            and m["rag_llm_pipeline_requests"] == 0
            and m['ovms_active_streams{model="python_model"}'] == 0
        ),
        LIVENESS_S,
    )
    settle_s = time.monotonic() - started
    after = metrics(server)
    rss_after = _rss_mb(server)
    tokens = (after["rag_llm_generated_tokens_total"] - at_start["rag_llm_generated_tokens_total"]) / (
        WAVES * WAVE_SIZE
    )
    report = (
        f"cancel test: {WAVES * WAVE_SIZE} streams cancelled after their first piece, "
        f"in waves of {WAVE_SIZE}; "
        f"rag_llm_active_requests before={active_before:.0f} "
        f"during waves={min(during):.0f}..{max(during):.0f} "
        f"after={after['rag_llm_active_requests']:.0f} (settled in {settle_s:.2f} s), "
        f"rag_llm_pipeline_requests after={after['rag_llm_pipeline_requests']:.0f}; "
        f"{tokens:.1f} tokens generated per cancelled request; "
        f"RSS start={rss_start:.0f} MB, before={rss_before:.0f} MB, after={rss_after:.0f} MB "
        f"(growth of {WAVES * WAVE_SIZE} completed requests just before: {reference_growth:.0f} MB)"
    )
    print(report)
    write_artifact(
        "cancel_test",
        {
            "streams_cancelled": WAVES * WAVE_SIZE,
            "wave_size": WAVE_SIZE,
            "active_requests_before": active_before,
            "active_requests_during_waves": during,
            "active_requests_after": after["rag_llm_active_requests"],
            "pipeline_requests_after": after["rag_llm_pipeline_requests"],
            "settle_seconds": round(settle_s, 3),
            "tokens_generated_per_cancelled_request": round(tokens, 1),
            "rss_mb_at_start": round(rss_start, 1),
            "rss_mb_before": round(rss_before, 1),
            "rss_mb_after": round(rss_after, 1),
            "rss_mb_growth_of_as_many_completed_requests": round(reference_growth, 1),
        },
    )
    assert settled, report
    assert max(during) > 0, report  # the gauge did see the generations
    assert after[cancelled] - before.get(cancelled, 0.0) >= WAVES * WAVE_SIZE, (after[cancelled], report)
    margin = max(rss_before * MARGIN_FRACTION, MARGIN_MB)
    assert rss_after <= rss_before + reference_growth + margin, report
    answer = ask(server.grpc_url, json_request("Who founded Lumenfold Robotics?", max_new_tokens=4))
    assert answer.end is not None and answer.error is None, answer
