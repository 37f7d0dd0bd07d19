"""Part 9: the OpenAI-compatible gateway (`python -m client.openai_api`) in front of part 1's server,
against direct gRPC to that server, on the same requests.

Each user has its own HTTP connection and streams the answer as server-sent events, timing every
content chunk as it arrives, as part 1's tritonclient callback times every completion piece.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

import httpx

from bench.servable import ServerBench
from bench.server import ANSWER_TIMEOUT_S, MODEL_NAME, READY_TIMEOUT_S, _free_port
from bench.settings import REPO
from bench.timing import CpuMeter, GenerationResult, RequestTiming, now, run_streams


class GatewayBench:
    """The gateway subprocess in front of `bench`'s server; a context manager that stops it."""

    def __init__(self, bench: ServerBench) -> None:
        self.bench = bench
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> GatewayBench:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def start(self) -> None:
        """Start the gateway and wait until it lists the graph."""
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/v1"
        log = (self.bench.root / "gateway.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "client.openai_api", "--ovms_url", self.bench.server.grpc_url,
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/models", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise TimeoutError(f"the gateway did not answer within {READY_TIMEOUT_S} s")

    def ask(self, client: httpx.Client, question: str) -> RequestTiming:
        """One streamed chat completion of exactly max_new_tokens tokens, greedy, without retrieval."""
        body = {
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": self.bench.settings.max_new_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "use_rag": False,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        timing = RequestTiming(start=now())
        with client.stream("POST", f"{self.url}/chat/completions", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"gateway error {response.status_code}: {response.read().decode()}")
            for line in response.iter_lines():
                stamp = now()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    timing.end = stamp
                    return timing
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(f"gateway error: {chunk['error']['message']}")
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    timing.arrivals.append(stamp)
                elif usage := chunk.get("usage"):
                    timing.tokens = usage["completion_tokens"]
                    timing.extra["prompt_tokens"] = usage["prompt_tokens"]
        raise RuntimeError("the gateway's answer ended without data: [DONE]")

    def generation(self, streams: int, prompts: tuple[str, ...]) -> GenerationResult:
        """`streams` concurrent users, one request each, through the gateway."""
        clients = [httpx.Client(timeout=ANSWER_TIMEOUT_S) for _ in range(streams)]
        try:
            with CpuMeter(self.bench.server.process.pid, self.process.pid) as cpu:
                requests = run_streams(streams, 1, prompts, lambda i, q: self.ask(clients[i], q))
        finally:
            for client in clients:
                client.close()
        return GenerationResult("gateway", streams, requests, cpu_s=cpu.used)

    def direct(self, streams: int, prompts: tuple[str, ...]) -> GenerationResult:
        """The same requests straight to the server over gRPC (part 1's clients)."""
        return replace(self.bench.generation(streams, 1, prompts), system="direct gRPC")
