"""Load: 64 concurrent streams for two minutes on loopback, each asking a fixed question again and again.
Every request must end with end_signal and no error; the figures go to stdout and to
test-artifacts/load_test.json."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from tests.conftest import LIVENESS_S
from tests.reliability.conftest import write_artifact
from tests.reliability.streams import json_request
from tests.servable.rag import Answer, Stream, metrics, wait_for

pytestmark = pytest.mark.slow

STREAMS = 64
DURATION_S = 120.0
# A liveness guard: with a busy loop beside it on 2 cores, answers took 44 s at p95 to start.
REQUEST_TIMEOUT_S = 300.0
MAX_NEW_TOKENS = 16
QUESTION = json_request(
    "How long does the Harvest Tern HT-7 fly on one battery?", max_new_tokens=MAX_NEW_TOKENS
)


def _client(url: str, until: float, answers: list[Answer], problems: list[str]) -> None:
    stream = Stream(url)
    last_s = 0.0
    try:
        # A new request starts only when one as long as the last still ends within the time.
        while time.monotonic() + last_s < until:
            answer = stream.send(QUESTION)
            try:
                stream.collect(answer=answer, timeout=REQUEST_TIMEOUT_S)
            except Exception as exc:  # queue.Empty: no end_signal in time
                problems.append(f"no end_signal within {REQUEST_TIMEOUT_S} s ({type(exc).__name__})")
                return
            answers.append(answer)
            last_s = answer.done_at - answer.sent_at
            if answer.error is not None:
                return
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        stream.close(cancel=False)


def _percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


@pytest.mark.timeout(DURATION_S + 2 * REQUEST_TIMEOUT_S + 60)
def test_64_concurrent_streams_for_two_minutes(shared):
    server = shared.server
    answers: list[Answer] = []
    problems: list[str] = []
    started = time.monotonic()
    until = started + DURATION_S
    threads = [
        threading.Thread(target=_client, args=(server.grpc_url, until, answers, problems), name=f"load-{i}")
        for i in range(STREAMS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, until + REQUEST_TIMEOUT_S + 10 - time.monotonic()))
    wall_s = time.monotonic() - started
    assert not [t.name for t in threads if t.is_alive()], "streams still running after the hard timeout"
    errors = [a.error for a in answers if a.error is not None]
    ended = [a for a in answers if a.end is not None]
    ttfts = sorted(a.ttft_s for a in ended if a.ttft_s is not None)
    server_ttfts = sorted(a.end["ttft_ms"] for a in ended)
    tokens = sum(a.end["generated_tokens"] for a in ended)
    figures = {
        "streams": STREAMS,
        "duration_s": DURATION_S,
        "wall_s": round(wall_s, 2),
        "max_new_tokens": MAX_NEW_TOKENS,
        "requests": len(answers),
        "ended_with_end_signal": len(ended),
        "errors": len(errors) + len(problems),
        "ttft_p50_ms": round(_percentile(ttfts, 50) * 1000, 1) if ttfts else None,
        "ttft_p95_ms": round(_percentile(ttfts, 95) * 1000, 1) if ttfts else None,
        "server_ttft_p50_ms": round(_percentile(server_ttfts, 50), 1) if server_ttfts else None,
        "server_ttft_p95_ms": round(_percentile(server_ttfts, 95), 1) if server_ttfts else None,
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / wall_s, 1),
        "requests_per_s": round(len(answers) / wall_s, 2),
        "finish_reasons": {
            r: sum(a.end["finish_reason"] == r for a in ended)
            for r in {a.end["finish_reason"] for a in ended}
        },
    }
    path = write_artifact("load_test", figures)
    print(f"load test ({path}): {figures}")
    assert not problems and not errors, (problems[:5], errors[:5])
    assert len(ended) == len(answers) >= STREAMS, figures
    assert all(a.end["finish_reason"] in ("stop", "length") for a in ended), figures
    assert all(0 < a.end["generated_tokens"] <= MAX_NEW_TOKENS for a in ended), figures
    assert wait_for(
        lambda: (
            (m := metrics(server))["rag_llm_active_requests"] == 0
            and m['ovms_active_streams{model="python_model"}'] == 0
        ),
        LIVENESS_S,
    ), metrics(server)
