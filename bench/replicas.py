"""Throughput from one to three replicas: local servers on one servable copy (one docs.txt, one
shared index folder), asked through the client's round_robin balancing (client/ovms_client.py).

`python -m bench.replicas [--replicas 1,2,3] [--streams 12] [--requests 48] [--max-new-tokens 64]`
prints a table and writes it to bench/replicas.md. On one machine the replicas share its cores: the
table shows what balancing costs or gains there, not what more machines would give.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.server import Server, make_servable_copy
from bench.settings import DEFAULT_EMBEDDING_DIR, DEFAULT_LLM_DIR, PROMPTS, REPO, SERVABLE_DIR
from client.ovms_client import EndSignal, GenerationSettings, OvmsClient, TextPiece

READY_TIMEOUT_S = 600


@dataclass
class Level:
    """One number of replicas: what the questions got."""

    replicas: int
    wall_s: float
    answers: int
    errors: int
    tokens: int
    ttft_s: list[float]
    per_replica: list[int]

    def row(self) -> str:
        ttft = statistics.median(self.ttft_s) if self.ttft_s else float("nan")
        return (
            f"| {self.replicas} | {self.answers} | {self.errors} | {self.answers / self.wall_s:.2f} "
            f"| {self.tokens / self.wall_s:.1f} | {ttft:.2f} | {' / '.join(map(str, self.per_replica))} |"
        )


def ask_all(client: OvmsClient, streams: int, requests: int, max_new_tokens: int) -> tuple[float, list]:
    """`requests` questions from `streams` threads, one at a time each; (wall seconds, results)."""
    results: list[tuple[float | None, list]] = []
    lock = threading.Lock()
    next_question = iter(range(requests))
    # Without retrieval: the fixed prompts are not about the documents (they would get the refusal,
    # which is sent without generating), and generation is what the replicas share the cores for.
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0, use_rag=False)

    def user() -> None:
        while True:
            with lock:
                number = next(next_question, None)
            if number is None:
                return
            started, first, events = time.perf_counter(), None, []
            messages = [{"role": "user", "content": PROMPTS[number % len(PROMPTS)]}]
            for event in client.ask(messages, settings):
                if first is None and isinstance(event, TextPiece):
                    first = time.perf_counter() - started
                events.append(event)
            with lock:
                results.append((first, events))

    threads = [threading.Thread(target=user) for _ in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, results


def measure(replicas: int, args: argparse.Namespace) -> Level:
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as folder:
        root = Path(folder)
        env = make_servable_copy(root, args.llm, args.embedding)
        shutil.copytree(SERVABLE_DIR / "documents", root / "documents")
        (root / "docs.txt").write_text("documents/\n", encoding="utf-8")
        env |= {"RAG_INDEX_DIR": str(root / ".rag_index"), "DOCS_FILE": str(root / "docs.txt")}
        servers = [Server(root, env, log_name=f"server-{n}.log") for n in range(replicas)]
        try:
            for server in servers:
                server.wait_ready(READY_TIMEOUT_S)
            client = OvmsClient(",".join(server.grpc_url for server in servers))
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not client.status().model_ready:
                if time.monotonic() > deadline:
                    raise TimeoutError("the replicas are not ready through the client")
                time.sleep(0.5)
            before = [server.metric("rag_llm_generated_tokens_total") for server in servers]
            done = [_answers(server) for server in servers]
            wall, results = ask_all(client, args.streams, args.requests, args.max_new_tokens)
            tokens = [
                server.metric("rag_llm_generated_tokens_total") - b
                for server, b in zip(servers, before, strict=True)
            ]
            per_replica = [_answers(server) - d for server, d in zip(servers, done, strict=True)]
        finally:
            for server in servers:
                server.stop()
    answers = sum(isinstance(events[-1], EndSignal) and events[-1].problem is None for _, events in results)
    return Level(
        replicas=replicas,
        wall_s=wall,
        answers=answers,
        errors=len(results) - answers,
        tokens=round(sum(tokens)),
        ttft_s=[first for first, _ in results if first is not None],
        per_replica=[round(count) for count in per_replica],
    )


def _answers(server: Server) -> float:
    return sum(server.metric("rag_llm_requests_total", {"finish_reason": r}) for r in ("stop", "length"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1,2,3", help="replica counts to measure (1,2,3)")
    parser.add_argument("--streams", type=int, default=12, help="concurrent users (12)")
    parser.add_argument("--requests", type=int, default=48, help="questions per replica count (48)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (64)")
    parser.add_argument("--llm", type=Path, default=DEFAULT_LLM_DIR, help="LLM folder")
    parser.add_argument("--embedding", type=Path, default=DEFAULT_EMBEDDING_DIR, help="embedding folder")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "replicas.md", help="the table's file")
    args = parser.parse_args(argv)
    counts = [int(item) for item in args.replicas.split(",") if item.strip()]
    rows = []
    for count in counts:
        level = measure(count, args)
        rows.append(level.row())
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| replicas | answers | errors | answers/s | tokens/s | TTFT p50 (s) | answers per replica |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = (
        "# Replicas on one machine\n\n"
        f"`python -m bench.replicas {' '.join(argv if argv is not None else sys.argv[1:])}` on "
        f"{os.cpu_count()} cores (load average at the end {load}); LLM {args.llm.name}, "
        f"{args.streams} concurrent users, {args.requests} questions per row, at most "
        f"{args.max_new_tokens} new tokens, greedy, without retrieval, through the client's round_robin. "
        "The replicas share "
        "the cores, so more of them cannot add compute here.\n\n"
        f"{table}\n"
    )
    args.out.write_text(text, encoding="utf-8")
    print(f"\n{table}\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
