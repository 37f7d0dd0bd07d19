"""The vector index: FAISS (langchain_community) over document chunks, kept on disk.

On disk (`RAG_INDEX_DIR`): `CURRENT` names the build folder in use; each build folder holds
`index.faiss` (FAISS inner-product index of normalized embeddings), `chunks.json` (chunk texts and
metadata) and `manifest.json` (embedding model key, chunking, documents, file checksums). A build
is written to a temporary folder, renamed into place, and only then is `CURRENT` replaced, so a
crash leaves the previous complete build. Nothing is unpickled. Chunks are reused by document
content hash, so only new or changed documents are embedded. A document that docs.txt still lists but
that fails to load keeps its previous chunks. `status.json` reports the last build.

Replicas may share the folder: a build is made under the folder's lease (lease.py), after taking up
the build another replica published, so each changed document is embedded once among them all; a
replica that did not build follows `CURRENT` (`follow`) and serves the published build as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from langchain_classic.retrievers import EnsembleRetriever
from langchain_community.docstore.in_memory import InMemoryDocstore
from langchain_community.retrievers import BM25Retriever
from langchain_community.vectorstores import FAISS
from langchain_community.vectorstores.utils import DistanceStrategy
from langchain_core.documents import Document as LcDocument
from langchain_core.embeddings import Embeddings
from langchain_text_splitters import RecursiveCharacterTextSplitter

from . import metrics
from .documents import Document, Failure, Fetcher, parse_docs_file
from .lease import BuildLease, confirm
from .passages import tokens

log = logging.getLogger(__name__)

FORMAT = 1
FILES = ("index.faiss", "chunks.json")
# Chunks embedded per call during a build; a shutdown stops a rebuild between two calls.
EMBED_BATCH = 64


class BuildStopped(Exception):
    """The server is shutting down: a rebuild in progress gives up (the index on disk stays whole)."""


class IndexProblem(Exception):
    """The stored index cannot be used (corrupt, truncated, or made with other settings)."""


def _relevance(score: float) -> float:
    """Cosine similarity of normalized vectors, clamped to 0..1."""
    return min(1.0, max(0.0, float(score)))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass
class Store:
    """One complete index: chunks (text + metadata), their vectors and the LangChain FAISS store."""

    chunks: list[dict[str, Any]]
    vectors: np.ndarray
    documents: list[dict[str, Any]]
    vectorstore: FAISS
    keywords: BM25Retriever | None  # None when there are no chunks

    @classmethod
    def create(
        cls, chunks: list[dict], vectors: np.ndarray, documents: list[dict], embeddings: Embeddings
    ) -> Store:
        index = faiss.IndexFlatIP(vectors.shape[1])
        if len(chunks):
            index.add(vectors)
        ids = [str(i) for i in range(len(chunks))]
        documents_by_id = {
            i: LcDocument(page_content=c["text"], metadata=c["metadata"])
            for i, c in zip(ids, chunks, strict=True)
        }
        docstore = InMemoryDocstore(documents_by_id)
        vectorstore = FAISS(
            embedding_function=embeddings,
            index=index,
            docstore=docstore,
            index_to_docstore_id=dict(enumerate(ids)),
            relevance_score_fn=_relevance,
            distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
        )
        keywords = None
        if chunks:
            keywords = BM25Retriever.from_documents(list(documents_by_id.values()), preprocess_func=tokens)
        return cls(chunks, vectors, documents, vectorstore, keywords)

    def by_hash(self) -> dict[str, list[int]]:
        """Chunk positions of one document per content hash (copies have the same chunks)."""
        by_document: dict[tuple[str, str], list[int]] = {}
        for i, chunk in enumerate(self.chunks):
            metadata = chunk["metadata"]
            by_document.setdefault((metadata["document"], metadata["content_hash"]), []).append(i)
        positions: dict[str, list[int]] = {}
        for (_, content_hash), found in by_document.items():
            positions.setdefault(content_hash, found)
        return positions


class IndexStore:
    """Reads and writes builds under the index folder."""

    def __init__(self, folder: Path, embedding_key: str, chunking: dict[str, int]) -> None:
        self.folder = folder
        self.embedding_key = embedding_key
        self.chunking = chunking

    def current(self) -> str | None:
        """The name of the build `CURRENT` names, None when there is none yet."""
        try:
            return (self.folder / "CURRENT").read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def save(self, store: Store) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"build-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        tmp = self.folder / f".tmp-{name}"
        tmp.mkdir()
        faiss.write_index(store.vectorstore.index, str(tmp / "index.faiss"))
        (tmp / "chunks.json").write_text(json.dumps(store.chunks, ensure_ascii=False), encoding="utf-8")
        manifest = {
            "format": FORMAT,
            "embedding_model": self.embedding_key,
            "chunking": self.chunking,
            "documents": store.documents,
            "chunks": len(store.chunks),
            "files": {f: _sha256(tmp / f) for f in FILES},
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        for path in tmp.iterdir():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        final = self.folder / name
        os.rename(tmp, final)
        _write_atomic(self.folder / "CURRENT", name + "\n")
        self._remove_old(keep=name)
        return final

    def _remove_old(self, keep: str) -> None:
        for path in self.folder.iterdir():
            if path.is_dir() and path.name != keep and path.name.startswith(("build-", ".tmp-build-")):
                shutil.rmtree(path, ignore_errors=True)

    def load(self, embeddings: Embeddings, name: str | None) -> Store | None:
        """The build `name` (see `current`), None for None; IndexProblem when it is unusable."""
        if name is None:
            return None
        build = self.folder / name
        try:
            manifest = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexProblem(f"manifest of {build.name} is unreadable: {exc}") from None
        if manifest.get("format") != FORMAT:
            raise IndexProblem(f"format {manifest.get('format')} is not {FORMAT}")
        if manifest.get("embedding_model") != self.embedding_key:
            raise IndexProblem(
                f"made with embedding model {manifest.get('embedding_model')}, now {self.embedding_key}"
            )
        if manifest.get("chunking") != self.chunking:
            raise IndexProblem(f"made with chunking {manifest.get('chunking')}, now {self.chunking}")
        for name, expected in manifest["files"].items():
            path = build / name
            if not path.exists() or _sha256(path) != expected:
                raise IndexProblem(f"{build.name}/{name} is missing or corrupt (checksum mismatch)")
        index = faiss.read_index(str(build / "index.faiss"))
        chunks = json.loads((build / "chunks.json").read_text(encoding="utf-8"))
        if index.ntotal != len(chunks) or index.ntotal != manifest["chunks"]:
            raise IndexProblem(f"{build.name} holds {index.ntotal} vectors for {len(chunks)} chunks")
        vectors = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), "float32")
        return Store.create(chunks, vectors, manifest["documents"], embeddings)


class IndexManager:
    """Builds the index from docs.txt (incrementally), persists it and serves searches."""

    def __init__(
        self,
        docs_file: Path,
        folder: Path,
        fetcher: Fetcher,
        embeddings: Embeddings,
        embedding_key: str,
        chunk_size: int,
        chunk_overlap: int,
        lease_s: float = 30.0,
    ) -> None:
        self.docs_file = docs_file
        self.fetcher = fetcher
        self.embeddings = embeddings
        self.splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
        self.disk = IndexStore(
            folder, embedding_key, {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap}
        )
        self.lease = BuildLease(folder, lease_s)
        self.store: Store | None = None
        self.serving: str | None = None  # the build folder `store` was loaded from or saved to
        self.status: dict[str, Any] = {"state": "empty"}
        self._build_lock = threading.Lock()
        self.building: dict[str, str] | None = None  # the rebuild in progress: reason, started_at
        self._serve_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stored_problem: str | None = None

    def load_stored(self) -> bool:
        """Serve the index on disk if it is whole and matches the settings; report it if not."""
        with self._serve_lock:
            try:
                return self._take_current("start")
            except Exception as exc:
                log.warning("stored index in %s is unusable (%s); it will be rebuilt", self.disk.folder, exc)
                self._stored_problem = f"stored index unusable: {exc}"
                self._write_status({"state": "rebuilding", "message": self._stored_problem})
                return False

    def follow(self, reason: str) -> None:
        """Serve the build `CURRENT` names if it is not the one served (another replica published
        it); nothing is embedded. A build replaced while it was read is followed by the next one."""
        with self._serve_lock:
            for _ in range(3):
                try:
                    self._take_current(reason)
                    return
                except Exception as exc:
                    problem = exc
            log.error("cannot load the index build another replica published: %s", problem)

    def _take_current(self, reason: str) -> bool:
        """Swap in the build `CURRENT` names unless it is served already; whether one is served."""
        name = self.disk.current()
        if name is None or name == self.serving:
            return name is not None
        store = self.disk.load(self.embeddings, name)
        self._swap(store, name)
        self._write_status(
            {
                "state": "ready",
                "reason": reason,
                "loaded_from_disk": True,
                "embedded_chunks": 0,
                **self._summary(store, []),
            }
        )
        log.info(
            "loaded stored index: %d documents, %d chunks (%s; %s)",
            len(store.documents), len(store.chunks), name, reason,
        )  # fmt: skip
        return True

    def refresh(self, reason: str) -> dict[str, Any]:
        """Read docs.txt, load its documents, embed what is new, save and swap in the new index."""
        with self._build_lock, self._building(reason):
            started = time.perf_counter()
            try:
                entries = parse_docs_file(self.docs_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                return self._keep(f"cannot read {self.docs_file}: {exc}", [], started)
            if not entries:
                return self._keep(f"{self.docs_file.name} lists no documents", [], started)
            failures: list[Failure] = []
            try:
                with self.lease.held(self._check_stopping) as lock, self._serve_lock:
                    self._take_published()
                    documents, failures = self._load(entries)
                    if not documents:
                        return self._keep("no document could be loaded", failures, started)
                    store, embedded = self._build(documents)
                    name = self.serving
                    if not self._same_as_serving(store):
                        confirm(lock)
                        name = self.disk.save(store).name
                    self._swap(store, name)
            except BuildStopped:
                log.info("index rebuild stopped: the server is shutting down")
                return self.status
            except Exception as exc:
                log.exception("index build failed")
                return self._keep(f"build failed: {type(exc).__name__}: {exc}", failures, started)
            elapsed = time.perf_counter() - started
            metrics.INDEX_BUILDS.labels("ok").inc()
            metrics.INDEX_BUILD_SECONDS.set(elapsed)
            metrics.INDEX_FAILED_DOCUMENTS.set(len(failures))
            status = {
                "state": "ready",
                "reason": reason,
                "loaded_from_disk": False,
                "embedded_chunks": embedded,
                "reused_chunks": len(store.chunks) - embedded,
                "build_seconds": round(elapsed, 3),
                **self._summary(store, failures),
            }
            if self._stored_problem:
                status["replaced_stored_index"] = self._stored_problem
                self._stored_problem = None
            self._write_status(status)
            log.info(
                "index rebuilt (%s): %d documents, %d chunks (%d embedded), %d failures, %.2f s",
                reason, len(store.documents), len(store.chunks), embedded, len(failures), elapsed,
            )  # fmt: skip
            return status

    @contextlib.contextmanager
    def _building(self, reason: str) -> Iterator[None]:
        """Report the rebuild in progress (the index status users see) while it runs."""
        self.building = {"reason": reason, "started_at": _now()}
        try:
            yield
        finally:
            self.building = None

    def stop(self) -> None:
        """Make a rebuild in progress give up at its next document or embedding batch."""
        self._stopping.set()

    def _take_published(self) -> None:
        """Start from the build another replica published, if any: its chunks are not embedded again."""
        try:
            self._take_current("published by another replica")
        except Exception as exc:
            log.warning("the published index build is unusable (%s); it will be replaced", exc)

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise BuildStopped

    def search(self, query: str, k: int) -> list[tuple[LcDocument, float]]:
        """The k best chunks for `query` with relevance 0..1 (higher is better)."""
        store = self.store
        if store is None or not store.chunks:
            return []
        started = time.perf_counter()
        hits = store.vectorstore.similarity_search_with_relevance_scores(query, k=k)
        metrics.RETRIEVAL_SECONDS.observe(time.perf_counter() - started)
        return hits

    def retrieve(self, query: str, k: int, keyword_weight: float) -> list[LcDocument]:
        """The k best chunks for `query`: the dense index's and BM25's rankings fused (LangChain's
        EnsembleRetriever, reciprocal rank), BM25 counting `keyword_weight` (0 = dense only). Names
        and codes such as "E-204" are found by their letters, not only by their meaning."""
        store = self.store
        if store is None or not store.chunks:
            return []
        started = time.perf_counter()
        dense = store.vectorstore.as_retriever(search_kwargs={"k": k})
        if keyword_weight > 0:
            keywords = store.keywords.model_copy(update={"k": k})
            weights = [1 - keyword_weight, keyword_weight]
            hits = EnsembleRetriever(retrievers=[dense, keywords], weights=weights).invoke(query)[:k]
        else:
            hits = dense.invoke(query)
        metrics.RETRIEVAL_SECONDS.observe(time.perf_counter() - started)
        return hits

    def _load(self, entries: list) -> tuple[list[Document], list[Failure]]:
        documents: dict[str, Document] = {}
        failures: list[Failure] = []
        self.fetcher.forget_unlisted(entries)
        for entry in entries:
            self._check_stopping()
            loaded, failed = self.fetcher.load_entry(entry)
            for document in loaded:
                if not document.text.strip():
                    failed.append(Failure(document.source, "no text found in the document"))
                else:
                    documents.setdefault(document.source, document)
            failures.extend(self._keep_previous(failure, documents) for failure in failed)
        return list(documents.values()), failures

    def _keep_previous(self, failure: Failure, documents: dict[str, Document]) -> Failure:
        """Add the serving version of the documents `failure` names to `documents` (docs.txt still
        lists them); the failure says so. The text is left out: the chunks are reused by hash."""
        if self.store is None or not failure.keep_previous:
            return failure
        kept = [
            d
            for d in self.store.documents
            if d["document"] not in documents and self.fetcher.covers(failure.source, d["document"])
        ]
        for d in kept:
            documents[d["document"]] = Document(d["document"], d["title"], "", d["content_hash"])
        if not kept:
            return failure
        return Failure(failure.source, f"{failure.reason}; kept the previous version", failure.keep_previous)

    def _build(self, documents: list[Document]) -> tuple[Store, int]:
        previous = self.store
        reusable = previous.by_hash() if previous is not None else {}
        indexed_at = {
            (d["document"], d["content_hash"]): d.get("indexed_at")
            for d in (previous.documents if previous is not None else [])
        }
        now = _now()
        chunks: list[dict] = []
        vectors: list[np.ndarray | None] = []
        pending: list[int] = []
        summaries = []
        for document in documents:
            base = {
                "document": document.source,
                "title": document.title,
                "content_hash": document.content_hash,
            }
            positions = reusable.get(document.content_hash)
            if positions is not None:
                texts = [previous.chunks[p]["text"] for p in positions]
                found = [previous.vectors[p] for p in positions]
            else:
                texts = self.splitter.split_text(document.text)
                found = [None] * len(texts)
            for number, (text, vector) in enumerate(zip(texts, found, strict=True)):
                if vector is None:
                    pending.append(len(chunks))
                chunks.append({"text": text, "metadata": {**base, "chunk": number}})
                vectors.append(vector)
            when = now if positions is None else indexed_at.get((document.source, document.content_hash))
            summaries.append(
                {**base, "chunks": len(texts), "embedded": positions is None, "indexed_at": when or now}
            )
        for start in range(0, len(pending), EMBED_BATCH):
            self._check_stopping()
            batch = pending[start : start + EMBED_BATCH]
            fresh = self.embeddings.embed_documents([chunks[i]["text"] for i in batch])
            for i, vector in zip(batch, fresh, strict=True):
                vectors[i] = np.asarray(vector, dtype="float32")
        dim = len(vectors[0]) if vectors else len(self.embeddings.embed_query("dimension"))
        matrix = np.vstack(vectors).astype("float32") if vectors else np.zeros((0, dim), "float32")
        return Store.create(chunks, matrix, summaries, self.embeddings), len(pending)

    def _same_as_serving(self, store: Store) -> bool:
        """True when `store` holds the same documents, in order, as the index being served."""

        def identity(s: Store) -> list[tuple]:
            return [(d["document"], d["title"], d["content_hash"]) for d in s.documents]

        return self.store is not None and identity(self.store) == identity(store)

    def _swap(self, store: Store, name: str | None) -> None:
        self.store, self.serving = store, name
        metrics.INDEX_DOCUMENTS.set(len(store.documents))
        metrics.INDEX_CHUNKS.set(len(store.chunks))

    @staticmethod
    def _summary(store: Store, failures: list[Failure]) -> dict[str, Any]:
        return {
            "documents": store.documents,
            "document_count": len(store.documents),
            "chunks": len(store.chunks),
            "failures": [{"document": f.source, "reason": f.reason} for f in failures],
        }

    def _keep(self, message: str, failures: list[Failure], started: float) -> dict[str, Any]:
        log.error("index not rebuilt: %s; the previous index keeps serving", message)
        metrics.INDEX_BUILDS.labels("failed").inc()
        metrics.INDEX_FAILED_DOCUMENTS.set(len(failures))
        status = {
            **self.status,
            "state": "error" if self.store is None else "ready",
            "message": f"{message}; previous index kept" if self.store is not None else message,
            "failures": [{"document": f.source, "reason": f.reason} for f in failures],
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        self._write_status(status)
        return status

    def _write_status(self, status: dict[str, Any]) -> None:
        status = {**status, "updated_at": _now()}
        self.status = status
        try:
            self.disk.folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.disk.folder / "status.json", json.dumps(status, indent=1))
        except OSError as exc:
            log.error("cannot write index status: %s", exc)
