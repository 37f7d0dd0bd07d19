"""OpenVINO embeddings (LangChain's OpenVINOEmbeddings), shared safely between threads and counted."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from langchain_community.embeddings import OpenVINOEmbeddings
from langchain_core.embeddings import Embeddings

from . import metrics

# Ranking embeds every window of the retrieved chunks for each question, one question at a time behind
# the model's lock: 0.11 s a question on the 2-core benchmark machine, and at 16 streams about 40% of
# the server's CPU (bench/NOTES.md). A window of a chunk asked about before is taken from this cache
# instead. About 1.5 KB a window: 16384 windows are 25 MB.
PASSAGE_CACHE_WINDOWS = 16384


class CountedOpenVINOEmbeddings(Embeddings):
    """OpenVINOEmbeddings behind a lock (its single infer request is not thread-safe), with metrics.

    `key` names the model exactly (folder name + hash of its IR + pooling), so a stored index made
    with another model is never mixed with this one.
    """

    def __init__(self, model_dir: Path, device: str, pooling: str, query_instruction: str = "") -> None:
        self._model = OpenVINOEmbeddings(
            model_name_or_path=str(model_dir),
            model_kwargs={"device": device},
            encode_kwargs={"normalize_embeddings": True, "mean_pooling": pooling == "mean", "batch_size": 32},
        )
        self._query_instruction = query_instruction
        self._lock = threading.Lock()
        # Retrieval and the passages' ranking both embed the question: it is embedded once.
        self._query_vector = functools.lru_cache(maxsize=256)(self._embed_query)
        self._passages: OrderedDict[str, np.ndarray] = OrderedDict()  # least recently used first
        self._passages_lock = threading.Lock()
        ir_hash = hashlib.sha256((model_dir / "openvino_model.xml").read_bytes()).hexdigest()[:16]
        self.key = f"{model_dir.name}:{ir_hash}:{pooling}"
        # The first inference sets the model up; done here (and not counted) so the first query is fast.
        self._model.embed_documents(["warm-up"])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts, "documents")

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        """Passages of retrieved chunks, ranked at question time (a row each): the ones embedded before
        come from a cache of the PASSAGE_CACHE_WINDOWS last used, the others are embedded (and counted
        apart from indexing)."""
        with self._passages_lock:
            found = {text: self._passages.get(text) for text in texts}
            for text, vector in found.items():
                if vector is not None:
                    self._passages.move_to_end(text)
        missing = [text for text, vector in found.items() if vector is None]
        if missing:
            vectors = np.asarray(self._embed(missing, "passages"), dtype=np.float32)
            found.update(zip(missing, vectors, strict=True))
            with self._passages_lock:
                self._passages.update(zip(missing, vectors, strict=True))
                while len(self._passages) > PASSAGE_CACHE_WINDOWS:
                    self._passages.popitem(last=False)
        return np.stack([found[text] for text in texts]) if texts else np.empty((0, 0), np.float32)

    def _embed(self, texts: list[str], kind: str) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            metrics.EMBEDDING_CALLS.labels(kind).inc()
            metrics.EMBEDDED_TEXTS.labels(kind).inc(len(texts))
            return self._model.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return list(self._query_vector(text))

    def _embed_query(self, text: str) -> tuple[float, ...]:
        with self._lock:
            metrics.EMBEDDING_CALLS.labels("query").inc()
            metrics.EMBEDDED_TEXTS.labels("query").inc()
            return tuple(self._model.embed_documents([self._query_instruction + text])[0])
