"""Parts 1, 5b, 6 and 7, all through one local server running a temporary copy of the servable.

The copy lists `settings.documents` generated documents in its own docs.txt and keeps its own index
folder, so the repository's servable_stream/ is never touched.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from bench.corpus import document
from bench.server import Server, StreamClient, make_servable_copy
from bench.settings import PROMPTS, Settings
from bench.timing import GenerationResult, now, run_streams

DOCS_FOLDER = "bench_docs"
INDEX_FOLDER = ".rag_index"  # the servable's default RAG_INDEX_DIR
TOUCHED_DOCUMENT = 7
NEW_DOCUMENT = f"{DOCS_FOLDER}/kettle-island.txt"
NEW_DOCUMENT_TEXT = (
    "The Zorblax lighthouse on Kettle Island is painted violet. Its lamp was first lit in 1893 and the "
    "keeper rings a brass bell at noon every Sunday."
)
NEW_QUESTION = "What colour is the Zorblax lighthouse on Kettle Island?"
BUILD_TIMEOUT_S = 300
RELOAD_TIMEOUT_S = 120
MB = 2**20


class ServerBench:
    """The running server plus the files of its servable copy."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.settings = settings
        self.status_file = root / INDEX_FOLDER / "status.json"
        env = make_servable_copy(root, settings.llm_dir, settings.embedding_dir)
        (root / DOCS_FOLDER).mkdir()
        self.write_documents(revision=0, indexes=range(settings.documents))
        self.write_docs_txt()
        self.server = Server(root, env)

    # documents ---------------------------------------------------------------------------------
    def document_path(self, index: int) -> Path:
        return self.root / DOCS_FOLDER / f"report-{index:02d}.txt"

    def write_documents(self, revision: int, indexes: range | list[int]) -> None:
        for i in indexes:
            text = document(i, self.settings.document_sentences) + f" Revision {revision}."
            self.document_path(i).write_text(text, encoding="utf-8")

    def write_docs_txt(self, revision: int = 0, extra: tuple[str, ...] = ()) -> None:
        """docs.txt listing every document; the servable watches only this file, so a changed
        document is announced by rewriting it (with a revision comment, so its content changes too)."""
        paths = (self.document_path(i) for i in range(self.settings.documents))
        lines = [f"# benchmark revision {revision}", *(p.relative_to(self.root).as_posix() for p in paths)]
        (self.root / "docs.txt").write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")

    # index builds ------------------------------------------------------------------------------
    def _builds(self) -> float:
        return self.server.metric("rag_index_builds_total", {"result": "ok"})

    def _status_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.status_file.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def wait_for_build(self, builds_before: float, status_before: tuple[int, int] | None) -> dict:
        """Wait until the server reports one more good build and has written its status; returns it."""
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._builds() > builds_before and self._status_stamp() != status_before:
                return json.loads(self.status_file.read_text(encoding="utf-8"))
            time.sleep(0.05)
        raise TimeoutError(f"no index build within {BUILD_TIMEOUT_S} s:\n{self.server.log_tail()}")

    def timed_rebuild(self, indexes: range | list[int], revision: int) -> dict[str, float]:
        """Change documents `indexes` (and rewrite docs.txt); time until the new index is built."""
        builds, status = self._builds(), self._status_stamp()
        start = now()
        self.write_documents(revision, indexes)
        self.write_docs_txt(revision)
        report = self.wait_for_build(builds, status)
        return {
            "wall_s": now() - start,
            "build_s": float(report["build_seconds"]),
            "embedded_chunks": float(report.get("embedded_chunks", 0)),
        }

    # requests ----------------------------------------------------------------------------------
    def request(self, question: str, use_rag: bool, max_new_tokens: int) -> dict:
        return {
            "messages": [{"role": "user", "content": question}],
            "max_new_tokens": max_new_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "use_rag": use_rag,
        }

    def generation(self, streams: int, use_rag: bool) -> GenerationResult:
        clients = [StreamClient(self.server.grpc_url) for _ in range(streams)]
        tokens = self.settings.max_new_tokens
        try:
            requests = run_streams(
                streams,
                self.settings.rounds(streams),
                PROMPTS,
                lambda i, q: clients[i].ask(self.request(q, use_rag, tokens)),
            )
        finally:
            for client in clients:
                client.close()
        return GenerationResult("servable + RAG" if use_rag else "servable", streams, requests)


def _live_reload(bench: ServerBench, ov_chunks_per_s: float | None) -> dict[str, float]:
    """Part 6: from writing docs.txt to the first answer whose sources include the new document."""
    (bench.root / NEW_DOCUMENT).write_text(NEW_DOCUMENT_TEXT, encoding="utf-8")
    builds, status = bench._builds(), bench._status_stamp()
    client = StreamClient(bench.server.grpc_url)
    try:
        start = now()
        bench.write_docs_txt(revision=3, extra=(NEW_DOCUMENT,))
        while now() - start < RELOAD_TIMEOUT_S:
            answer = client.ask(bench.request(NEW_QUESTION, use_rag=True, max_new_tokens=1))
            if any(source["document"] == NEW_DOCUMENT for source in answer.extra["sources"]):
                seconds = answer.extra["sources_at"] - start
                break
        else:
            raise TimeoutError(f"{NEW_DOCUMENT} never showed up in the sources within {RELOAD_TIMEOUT_S} s")
    finally:
        client.close()
    embedded = bench.wait_for_build(builds, status).get("embedded_chunks", 0)
    embedding_s = embedded / ov_chunks_per_s if ov_chunks_per_s else 0.0
    return {"reload_s": seconds, "reload_embedding_s": embedding_s}


def measure(settings: Settings, ov_chunks_per_s: float | None = None) -> tuple[list[GenerationResult], dict]:
    """Run parts 1, 5b, 6 and 7 (those not skipped) against one server; returns generation results
    and the other values (seconds, MB)."""
    values: dict[str, float] = {}
    results: list[GenerationResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-servable-") as tmp:
        bench = ServerBench(Path(tmp), settings)
        try:
            bench.server.wait_ready()
            bench.wait_for_build(0, None)
            bench.generation(1, use_rag=False)  # warm-up
            if settings.runs("memory"):
                values["rss_loaded_mb"] = bench.server.memory.rss() / MB
            top = max(settings.streams)
            for streams in settings.streams if settings.runs("servable") else ():
                bench.server.memory.reset()
                results.append(bench.generation(streams, use_rag=False))
                if streams == top and settings.runs("memory"):
                    values["rss_peak_mb"] = bench.server.memory.peak() / MB
            if settings.runs("servable") and 1 in settings.streams:
                results.append(bench.generation(1, use_rag=True))
            if settings.runs("memory") and "rss_peak_mb" not in values:
                bench.server.memory.reset()
                bench.generation(top, use_rag=False)
                values["rss_peak_mb"] = bench.server.memory.peak() / MB
            if settings.runs("reindex"):
                one = bench.timed_rebuild([TOUCHED_DOCUMENT], revision=1)
                full = bench.timed_rebuild(range(settings.documents), revision=2)
                values |= {f"reindex_one_{k}": v for k, v in one.items()}
                values |= {f"reindex_all_{k}": v for k, v in full.items()}
            if settings.runs("reload"):
                values |= _live_reload(bench, ov_chunks_per_s)
        finally:
            bench.server.stop()
    return results, values
