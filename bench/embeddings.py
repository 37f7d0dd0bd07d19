"""Parts 4 and 5a: retrieval latency on a FAISS index of ~1,000 chunks, and embedding throughput of
OpenVINO (LangChain's OpenVINOEmbeddings) against sentence-transformers on PyTorch."""

from __future__ import annotations

from pathlib import Path

from langchain_community.embeddings import OpenVINOEmbeddings
from langchain_community.vectorstores import FAISS

from bench.corpus import chunks
from bench.settings import QUERIES, Settings, sentence_transformers_dir
from bench.timing import now, percentile

BATCH_SIZE = 32  # the same for both embedders
TOP_K = 4


def openvino_embeddings(model_dir: Path) -> OpenVINOEmbeddings:
    if not (model_dir / "openvino_model.xml").exists():
        raise FileNotFoundError(f"no OpenVINO embedding model in {model_dir} (run `make models`)")
    return OpenVINOEmbeddings(
        model_name_or_path=str(model_dir),
        model_kwargs={"device": "CPU"},
        encode_kwargs={"normalize_embeddings": True, "mean_pooling": True, "batch_size": BATCH_SIZE},
    )


def _chunks_per_s(embed, texts: list[str]) -> tuple[float, list]:
    embed(texts[:BATCH_SIZE])  # warm-up
    start = now()
    vectors = embed(texts)
    return len(texts) / (now() - start), vectors


def measure(settings: Settings) -> dict[str, float]:
    """Embed the first `settings.indexing_chunks` chunks both ways (chunks/s), index all
    `settings.chunks` chunks in FAISS and time `settings.queries` similarity searches."""
    texts = chunks(settings.chunks)
    sample = texts[: settings.indexing_chunks]
    embeddings = openvino_embeddings(settings.embedding_dir)
    ov_rate, vectors = _chunks_per_s(embeddings.embed_documents, sample)
    result = {"chunks": float(len(texts)), "indexing_chunks": float(len(sample)), "ov_chunks_per_s": ov_rate}
    if settings.runs("retrieval"):
        vectors += embeddings.embed_documents(texts[len(sample) :])
        store = FAISS.from_embeddings(list(zip(texts, vectors, strict=True)), embeddings)
        store.similarity_search(QUERIES[0], k=TOP_K)  # warm-up
        latencies = []
        for i in range(settings.queries):
            start = now()
            store.similarity_search(QUERIES[i % len(QUERIES)], k=TOP_K)
            latencies.append((now() - start) * 1000)
        result["retrieval_p50_ms"] = percentile(latencies, 50)
        result["retrieval_p95_ms"] = percentile(latencies, 95)
    if settings.runs("indexing"):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(sentence_transformers_dir()), device="cpu")
        st_rate, _ = _chunks_per_s(
            lambda batch: model.encode(batch, batch_size=BATCH_SIZE, normalize_embeddings=True), sample
        )
        result["st_chunks_per_s"] = st_rate
    return result
