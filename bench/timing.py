"""Per-request timings and their summary: TTFT, inter-token latency, tokens/s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import psutil


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, NaN when there are none."""
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class RequestTiming:
    """One generation as seen by its consumer: when it was sent and when each token arrived.

    `arrivals` holds one time per streamed piece; `tokens` is the number of generated tokens (a piece
    may carry more than one token, so the inter-token latency spreads a piece's gap over its tokens).
    """

    start: float
    arrivals: list[float] = field(default_factory=list)
    tokens: int = 0
    end: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ttft(self) -> float:
        return self.arrivals[0] - self.start

    @property
    def inter_token(self) -> list[float]:
        """Gaps between pieces, each divided by the tokens it carried on average."""
        if len(self.arrivals) < 2 or self.tokens < 2:
            return []
        per_piece = (self.tokens - 1) / (len(self.arrivals) - 1)
        return [(b - a) / per_piece for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]

    @property
    def decode_tokens_per_s(self) -> float:
        span = self.arrivals[-1] - self.arrivals[0]
        return (self.tokens - 1) / span if span > 0 and self.tokens > 1 else float("nan")


@dataclass
class GenerationResult:
    """All requests of one system at one number of concurrent streams, and the time they took (the
    sum over the rounds when they ran in several, between other systems' rounds)."""

    system: str
    streams: int
    requests: list[RequestTiming]
    wall: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # CpuMeter.used over the requests

    def __post_init__(self) -> None:
        if not self.wall:
            self.wall = max(r.end for r in self.requests) - min(r.start for r in self.requests)

    @classmethod
    def combine(cls, parts: list[GenerationResult]) -> GenerationResult:
        """One result from the same system's rounds run separately."""
        requests = [timing for part in parts for timing in part.requests]
        cpu = {key: sum(part.cpu_s.get(key, 0.0) for part in parts) for key in parts[0].cpu_s}
        return cls(parts[0].system, parts[0].streams, requests, sum(part.wall for part in parts), cpu)

    def _median_extra(self, key: str) -> float:
        return percentile([r.extra[key] for r in self.requests if key in r.extra], 50)

    def summary(self) -> dict[str, float]:
        """TTFT and inter-token latency percentiles (ms), tokens/s per stream and in aggregate, the
        median prompt length and retrieval time (ms) where the requests report them, and the CPU ms
        per generated token of each process measured."""
        ttft = [r.ttft * 1000 for r in self.requests]
        itl = [gap * 1000 for r in self.requests for gap in r.inter_token]
        tokens = sum(r.tokens for r in self.requests)
        cpu = {f"cpu_ms_{key}": 1000 * used / tokens for key, used in self.cpu_s.items() if tokens}
        return cpu | {
            "ttft_p50": percentile(ttft, 50),
            "ttft_p95": percentile(ttft, 95),
            "itl_p50": percentile(itl, 50),
            "itl_p95": percentile(itl, 95),
            "decode_tps": float(np.mean([r.decode_tokens_per_s for r in self.requests])),
            "stream_tps": float(np.mean([r.tokens / (r.end - r.start) for r in self.requests])),
            "aggregate_tps": tokens / self.wall,
            "prompt_tokens": self._median_extra("prompt_tokens"),
            "retrieval_ms": self._median_extra("retrieval_ms"),
            "tokens": float(np.mean([r.tokens for r in self.requests])),
        }


class CpuMeter:
    """CPU seconds (user + system, all threads) used while open, in `used`: by this process
    ("benchmark": the clients, GenAI or the reference models) and, given their pids, by the local server
    ("server") and the OpenAI gateway ("gateway")."""

    def __init__(self, server_pid: int | None = None, gateway_pid: int | None = None) -> None:
        pids = {"server": server_pid, "gateway": gateway_pid}
        self._others = {key: psutil.Process(pid) for key, pid in pids.items() if pid is not None}
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        # time.process_time() counts in ns; the kernel's per-process counters in clock ticks (10 ms).
        times = {"benchmark": time.process_time()}
        for key, process in self._others.items():
            cpu = process.cpu_times()
            times[key] = cpu.user + cpu.system
        return times

    def __enter__(self) -> CpuMeter:
        self._start = self._read()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.used = {key: value - self._start[key] for key, value in self._read().items()}


def run_streams(
    streams: int, rounds: int, prompts: tuple[str, ...], generate: Callable[[int, str], RequestTiming]
) -> list[RequestTiming]:
    """Run `streams` threads at once, each asking `rounds` prompts one after the other.

    `generate(stream_index, prompt)` performs one request and returns its timing; an exception in any
    thread is raised here after all threads have stopped.
    """
    barrier = threading.Barrier(streams)
    results: list[RequestTiming] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        barrier.wait()
        for r in range(rounds):
            try:
                timing = generate(index, prompts[(index + r) % len(prompts)])
            except Exception as exc:  # re-raised in the caller's thread
                with lock:
                    errors.append(exc)
                return
            with lock:
                results.append(timing)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def now() -> float:
    """The clock every timing uses."""
    return time.perf_counter()
