"""Parts 1, 5b, 6, 6b and 7, all through one local server running a temporary copy of the servable.

The copy lists `settings.documents` generated documents in its own docs.txt and keeps its own index
folder, so the repository's servable_stream/ is never touched.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.corpus import document
from bench.server import Server, StreamClient, make_servable_copy
from bench.settings import PROMPTS, Settings
from bench.timing import CpuMeter, GenerationResult, now, run_streams

DOCS_FOLDER = "bench_docs"
INDEX_FOLDER = ".rag_index"  # the servable's default RAG_INDEX_DIR
TOUCHED_DOCUMENT = 7
NEW_DOCUMENT = f"{DOCS_FOLDER}/kettle-island.txt"
NEW_DOCUMENT_TEXT = (
    "The Zorblax lighthouse on Kettle Island is painted violet. Its lamp was first lit in 1893 and the "
    "keeper rings a brass bell at noon every Sunday."
)
NEW_QUESTION = "What colour is the Zorblax lighthouse on Kettle Island?"
EDITED_DOCUMENT = 11
EDITED_FACT = "The Quillon ferry of the town archive now leaves from pier nine at 17:25."
EDITED_QUESTION = "When does the Quillon ferry leave from pier nine?"
BUILD_TIMEOUT_S = 300
RELOAD_TIMEOUT_S = 120
MB = 2**20


def chat_request(question: str, use_rag: bool, max_new_tokens: int, ignore_eos: bool = True) -> dict:
    """The servable's JSON request: greedy, exactly `max_new_tokens` tokens (at most, without
    `ignore_eos`)."""
    return {
        "messages": [{"role": "user", "content": question}],
        "max_new_tokens": max_new_tokens,
        "ignore_eos": ignore_eos,
        "temperature": 0,
        "use_rag": use_rag,
    }


class ServerBench:
    """The server on a temporary servable copy; a context manager that stops it and removes the copy."""

    def __init__(self, settings: Settings, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.env = env or {}  # the servable's settings beside the benchmark's own
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-servable-")
        self.root = Path(self._tmp.name)
        self.status_file = self.root / INDEX_FOLDER / "status.json"
        self.revision = 0
        self.peak_rss: dict[int, int] = {}
        self.loaded_rss = 0
        self.server: Server | None = None

    def __enter__(self) -> ServerBench:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.server is not None:
                self.server.stop()
        finally:
            self._tmp.cleanup()

    def start(self) -> None:
        """Make the servable copy, start the server and wait until it is ready (the servable builds
        its first index before that), answer one short request, and note the memory with the models
        loaded."""
        env = make_servable_copy(self.root, self.settings.llm_dir, self.settings.embedding_dir)
        # The benchmark times generation with and without retrieved context, on the same open-ended
        # prompts as GenAI: the model writes freely, and no prompt is turned away by the answer gate.
        env |= {
            "ANSWER_MODE": "generate",
            "RELEVANCE_THRESHOLD": "0",
            "REQUIRE_QUESTION_NAMES": "0",
            "REQUIRE_ANSWER_KIND": "0",
        }
        env |= self.env
        (self.root / DOCS_FOLDER).mkdir()
        self.write_documents(range(self.settings.documents))
        self.write_docs_txt()
        self.server = Server(self.root, env)
        self.server.wait_ready()
        client = StreamClient(self.server.grpc_url)
        try:
            client.ask(chat_request(PROMPTS[0], use_rag=True, max_new_tokens=4))
        finally:
            client.close()
        self.loaded_rss = self.server.memory.rss()

    # part 1 --------------------------------------------------------------------------------------
    def generation(
        self,
        streams: int,
        rounds: int,
        prompts: tuple[str, ...],
        use_rag: bool = False,
        keep_text: bool = False,
        ignore_eos: bool = True,
    ) -> GenerationResult:
        """`streams` concurrent users, each with its own client, asking `prompts` for `rounds` rounds;
        with `keep_text` each timing's `extra` also holds the question and the answer's text."""
        clients = [StreamClient(self.server.grpc_url, keep_text) for _ in range(streams)]
        tokens = self.settings.max_new_tokens
        self.server.memory.reset()
        try:
            with CpuMeter(self.server.process.pid) as cpu:
                requests = run_streams(
                    streams,
                    rounds,
                    prompts,
                    lambda i, q: clients[i].ask(chat_request(q, use_rag, tokens, ignore_eos)),
                )
        finally:
            for client in clients:
                client.close()
        self.peak_rss[streams] = max(self.peak_rss.get(streams, 0), self.server.memory.peak())
        system = "servable + RAG" if use_rag else "servable"
        return GenerationResult(system, streams, requests, cpu_s=cpu.used)

    # part 7 --------------------------------------------------------------------------------------
    def memory(self) -> dict[str, float]:
        """RSS with the models loaded, and the peak at the largest number of streams."""
        top = max(self.settings.streams)
        if top not in self.peak_rss:
            self.generation(top, self.settings.rounds(top), PROMPTS)
        return {"rss_loaded_mb": self.loaded_rss / MB, "rss_peak_mb": self.peak_rss[top] / MB}

    # part 5b -------------------------------------------------------------------------------------
    def document_path(self, index: int) -> Path:
        return self.root / DOCS_FOLDER / f"report-{index:02d}.txt"

    def write_documents(self, indexes: range | list[int]) -> None:
        for i in indexes:
            text = document(i, self.settings.document_sentences) + f" Revision {self.revision}."
            self.document_path(i).write_text(text, encoding="utf-8")

    def write_docs_txt(self, extra: tuple[str, ...] = ()) -> None:
        """docs.txt listing every document (with a revision comment, so its content changes too): part
        5b rewrites it with the documents, as it did when only docs.txt was watched."""
        paths = (self.document_path(i) for i in range(self.settings.documents))
        lines = [
            f"# benchmark revision {self.revision}",
            *(p.relative_to(self.root).as_posix() for p in paths),
        ]
        (self.root / "docs.txt").write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")

    def embedded(self) -> float:
        """Chunks the servable embedded for its index so far (/metrics)."""
        return self.server.metric("rag_embedded_texts_total", {"kind": "documents"})

    def wait_for_index(self, written: list[Path]) -> dict:
        """Wait until the index status lists the `written` files with the content now on disk; returns
        the status. Its `embedded_chunks` is the last build's: count the chunks on /metrics instead."""
        expected = {
            path.relative_to(self.root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in written
        }
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.status_file.exists():
                status = json.loads(self.status_file.read_text(encoding="utf-8"))
                served = {d["document"]: d["content_hash"] for d in status.get("documents", [])}
                if expected.items() <= served.items():
                    return status
            time.sleep(0.05)
        raise TimeoutError(f"the index did not take {sorted(expected)} within {BUILD_TIMEOUT_S} s:\n"
                           f"{self.server.log_tail()}")  # fmt: skip

    def timed_rebuild(self, indexes: range | list[int]) -> dict[str, float]:
        """Change documents `indexes` and rewrite docs.txt; time until the index serves them."""
        embedded = self.embedded()
        self.revision += 1
        start = now()
        self.write_documents(indexes)
        self.write_docs_txt()
        report = self.wait_for_index([self.document_path(i) for i in indexes])
        return {
            "wall_s": now() - start,
            "build_s": float(report["build_seconds"]),
            "embedded_chunks": self.embedded() - embedded,
        }

    def reindex(self) -> dict[str, float]:
        """One document of twenty changed against all of them changed (a full rebuild)."""
        one = self.timed_rebuild([TOUCHED_DOCUMENT])
        full = self.timed_rebuild(range(self.settings.documents))
        return {f"reindex_one_{k}": v for k, v in one.items()} | {
            f"reindex_all_{k}": v for k, v in full.items()
        }

    def cited_after(self, start: float, question: str, cited: Callable[[dict], bool]) -> float:
        """Ask `question` until a source satisfies `cited`; seconds from `start` to those sources."""
        client = StreamClient(self.server.grpc_url)
        try:
            while now() - start < RELOAD_TIMEOUT_S:
                answer = client.ask(chat_request(question, use_rag=True, max_new_tokens=1))
                if any(cited(source) for source in answer.extra["sources"]):
                    return answer.extra["sources_at"] - start
        finally:
            client.close()
        raise TimeoutError(f"no source for {question!r} cited the change within {RELOAD_TIMEOUT_S} s")

    # part 6 --------------------------------------------------------------------------------------
    def live_reload(self, ov_chunks_per_s: float | None) -> dict[str, float]:
        """From writing docs.txt to the first answer whose sources include the new document.

        The index status is polled until it lists the new document, and only then is the question
        asked (asking in a loop would take the CPU the rebuild needs). The allowance for embedding the
        new document uses the OpenVINO chunks/s of part 5a when that ran.
        """
        (self.root / NEW_DOCUMENT).write_text(NEW_DOCUMENT_TEXT, encoding="utf-8")
        before = self.embedded()
        start = now()
        self.write_docs_txt(extra=(NEW_DOCUMENT,))
        self.wait_for_index([self.root / NEW_DOCUMENT])
        embedded = self.embedded() - before
        seconds = self.cited_after(start, NEW_QUESTION, lambda source: source["document"] == NEW_DOCUMENT)
        return {
            "reload_s": seconds,
            "reload_embedding_s": embedded / ov_chunks_per_s if ov_chunks_per_s else 0.0,
        }

    # part 6b -------------------------------------------------------------------------------------
    def edit_reload(self, ov_chunks_per_s: float | None) -> dict[str, float]:
        """From saving an edit of a document docs.txt lists (docs.txt untouched) to the first answer
        whose sources hold the new text; measured as part 6 is."""
        path = self.document_path(EDITED_DOCUMENT)
        edited = f"{path.read_text(encoding='utf-8')} {EDITED_FACT}"
        before = self.embedded()
        start = now()
        path.write_text(edited, encoding="utf-8")
        self.wait_for_index([path])
        embedded = self.embedded() - before
        seconds = self.cited_after(start, EDITED_QUESTION, lambda source: "Quillon" in source["text"])
        return {
            "edit_s": seconds,
            "edit_embedding_s": embedded / ov_chunks_per_s if ov_chunks_per_s else 0.0,
        }
