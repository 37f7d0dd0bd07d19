"""OpenVINO embeddings (LangChain's OpenVINOEmbeddings), shared safely between threads and counted."""

from __future__ import annotations

import functools
import hashlib
import threading
from pathlib import Path

from langchain_community.embeddings import OpenVINOEmbeddings
from langchain_core.embeddings import Embeddings

from . import metrics


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
        ir_hash = hashlib.sha256((model_dir / "openvino_model.xml").read_bytes()).hexdigest()[:16]
        self.key = f"{model_dir.name}:{ir_hash}:{pooling}"
        # The first inference sets the model up; done here (and not counted) so the first query is fast.
        self._model.embed_documents(["warm-up"])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts, "documents")

    def embed_passages(self, texts: list[str]) -> list[list[float]]:
        """Passages of retrieved chunks, ranked at question time: counted apart from indexing."""
        return self._embed(texts, "passages")

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
