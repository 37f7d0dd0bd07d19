"""The RAG service behind the Python node: models, index, watcher and chain wired together."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator

from . import grounding, metrics
from .chain import Prepared, RagChain
from .chat_model import OpenVINOChatModel
from .documents import Fetcher, FetchLimits
from .embeddings import CountedOpenVINOEmbeddings
from .engine import Arrival, Engine, model_context_length
from .index import IndexManager
from .request import ChatRequest, StatusRequest
from .settings import Settings
from .status import index_report
from .watcher import DocsWatcher

log = logging.getLogger(__name__)

COMPLETION, SOURCES, END_SIGNAL, STATUS = "completion", "sources", "end_signal", "status"


def setup_logging() -> None:
    """Log ragbot's messages to stderr unless the host process configured logging already."""
    logger = logging.getLogger("ragbot")
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class RagService:
    """Loads everything at start; `answer(request)` gives the stream of (output name, text)."""

    def __init__(self, settings: Settings) -> None:
        settings.check_model_dirs()
        self.settings = settings
        metrics.serve(settings.metrics_port)
        started = time.perf_counter()
        self.engine = Engine(
            settings.llm_model_dir,
            settings.device,
            settings.kv_cache_gb,
            settings.max_num_seqs,
            settings.max_num_batched_tokens,
            settings.prompt_lookup,
            settings.llm_plugin_config,
        )
        embeddings = CountedOpenVINOEmbeddings(
            settings.embedding_model_dir,
            settings.device,
            settings.embedding_pooling,
            settings.embedding_query_instruction,
        )
        fetcher = Fetcher(
            settings.base_path,
            settings.allowed_roots,
            FetchLimits(settings.fetch_timeout_s, settings.fetch_max_bytes, settings.fetch_max_redirects),
        )
        self.index = IndexManager(
            settings.docs_file,
            settings.index_dir,
            fetcher,
            embeddings,
            embeddings.key,
            settings.chunk_size,
            settings.chunk_overlap,
            settings.index_lease_s,
        )
        context_tokens = settings.max_context_tokens or model_context_length(settings.llm_model_dir)
        chat_model = OpenVINOChatModel(engine=self.engine, max_new_tokens=settings.max_new_tokens)
        search = functools.partial(self.index.retrieve, keyword_weight=settings.answer.keyword_weight)
        self.chain = RagChain(chat_model, search, embeddings, settings.top_k, context_tokens, settings.answer)
        # A stored index serves at once and is checked against docs.txt in the background; without
        # one, the first index is built before the node reports ready. The watcher is made first: it
        # keeps docs.txt's content from before the build, so an edit during the build is rebuilt.
        self.watcher = DocsWatcher(
            settings.docs_file,
            self.index.refresh,
            settings.watch_debounce_s,
            settings.watch_poll_s,
            settings.watch_events,
            listed=functools.partial(fetcher.local_paths, settings.docs_file),
            max_files=settings.watch_max_files,
            excluded=(settings.index_dir,),
            refresh_s=settings.refresh_s,
            revalidate_urls=fetcher.revalidate_urls,
        )
        # Replicas sharing the index folder publish builds there: a new CURRENT is served at once.
        self.published = DocsWatcher(
            settings.index_dir / "CURRENT",
            self.index.follow,
            0.0,
            settings.watch_poll_s,
            settings.watch_events,
        )
        stored = self.index.load_stored()
        if not stored:
            self.index.refresh("start")
        self.watcher.start(initial_reason="start: compare the stored index with docs.txt" if stored else None)
        self.published.start(initial_reason="start: a build published during the start")
        self._stopping = False
        log.info(
            "ready in %.1f s: LLM %s on %s (context %d tokens), embeddings %s, %d chunks indexed",
            time.perf_counter() - started, settings.llm_model_dir.name, settings.device, context_tokens,
            settings.embedding_model_dir.name, self.index.status.get("chunks", 0),
        )  # fmt: skip

    def answer(self, request: ChatRequest | StatusRequest) -> Iterator[tuple[str, str]]:
        """Retrieve and build the prompt now (errors raise here), then stream the outputs lazily; a
        status request gets the index status and the end."""
        if isinstance(request, StatusRequest):
            report = index_report(self.index.status, self.index.building)
            return iter([(STATUS, json.dumps(report)), (END_SIGNAL, json.dumps({"finish_reason": "stop"}))])
        if self._stopping:
            raise RuntimeError("the server is shutting down; no new requests")
        started = time.perf_counter()
        arrival = self.engine.expect()
        try:
            prepared = self.chain.prepare(request)
        except BaseException:
            arrival.close()
            raise
        return self._outputs(request, prepared, started, arrival)

    def _outputs(
        self, request: ChatRequest, prepared: Prepared, started: float, arrival: Arrival
    ) -> Iterator[tuple[str, str]]:
        first_piece_at = None
        stats: dict = {}
        usage: dict = {}
        pieces: list[str] = []
        stream = self.chain.stream(prepared, request, arrival)
        try:
            yield SOURCES, json.dumps(prepared.sources, ensure_ascii=False)
            for chunk in stream:
                if chunk.content:
                    if first_piece_at is None:
                        first_piece_at = time.perf_counter()
                    pieces.append(chunk.content)
                    yield COMPLETION, chunk.content
                elif "finish_reason" in chunk.response_metadata:
                    stats, usage = chunk.response_metadata, chunk.usage_metadata or {}
        finally:
            arrival.close()
            stream.close()
        prompt_tokens = int(prepared.input_ids.get_shape()[-1]) if prepared.input_ids is not None else 0
        end = {
            "finish_reason": stats.get("finish_reason", "error"),
            "prompt_tokens": usage.get("input_tokens", prompt_tokens),
            "generated_tokens": usage.get("output_tokens", 0),
            "ttft_ms": round(((first_piece_at or time.perf_counter()) - started) * 1000, 2),
            "tokens_per_s": round(stats.get("tokens_per_s", 0.0), 2),
            "retrieval_ms": round(prepared.retrieval_ms, 2),
        }
        if "lookup" in stats:
            end["lookup"] = stats["lookup"]
        if request.use_rag:
            texts = [source["text"] for source in prepared.sources]
            end["grounding"] = grounding.summary("".join(pieces), texts, self.settings.answer.refusal)
        yield END_SIGNAL, json.dumps(end)

    def stop(self) -> None:
        """Stop watching and stepping; generations still running end with finish_reason "shutdown"."""
        self._stopping = True
        self.index.stop()
        self.watcher.stop()
        self.published.stop()
        self.engine.stop()
