"""The service hands every scheduler setting (KV_CACHE_SIZE_GB, MAX_NUM_SEQS, MAX_NUM_BATCHED_TOKENS)
to the engine it builds, and rebuilds once more when docs.txt was edited during the first build; the
shipped docs.txt explains local entries as the fetcher reads them; the answer settings come from the
environment, else the model's registry entry, and a bad one names its variable."""

from __future__ import annotations

import re
from pathlib import Path
from unittest import mock

import pytest
from ragbot import service
from ragbot.documents import Entry, Fetcher, FetchLimits
from ragbot.settings import AnswerSettings, PromptLookup, Settings

from tests.conftest import wait_until
from tests.servable.rag import SERVABLE


class _Built(Exception):
    """Stops RagService right after it built its engine."""


def model_dirs(base: Path) -> dict[str, str]:
    """Model folders that pass the service's checks (nothing loads them: the models are stood in for)."""
    (base / "llm").mkdir()
    (base / "emb").mkdir()
    (base / "emb" / "openvino_model.xml").write_text("<net/>", encoding="utf-8")
    return {"LLM_MODEL_DIR": "llm", "EMBEDDING_MODEL_DIR": "emb", "EMBEDDING_POOLING": "mean"}


def test_scheduler_settings_reach_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = model_dirs(tmp_path) | {
        "KV_CACHE_SIZE_GB": "3",
        "MAX_NUM_SEQS": "7",
        "MAX_NUM_BATCHED_TOKENS": "512",
        "PROMPT_LOOKUP": "1",
        "NUM_ASSISTANT_TOKENS": "4",
        "MAX_NGRAM_SIZE": "2",
        "LLM_PLUGIN_CONFIG": '{"PERFORMANCE_HINT": "LATENCY"}',
    }
    built: list[tuple] = []

    def engine(*args: object) -> None:
        built.append(args)
        raise _Built

    monkeypatch.setattr(service, "Engine", engine)
    with pytest.raises(_Built):
        service.RagService(Settings.from_env(tmp_path, env))
    lookup = PromptLookup(assistant_tokens=4, max_ngram_size=2, busy_sequences=4)
    assert built == [(tmp_path / "llm", "CPU", 3, 7, 512, lookup, {"PERFORMANCE_HINT": "LATENCY"})]


class _Index:
    """Stands in for IndexManager: no stored index; the first build sees docs.txt edited meanwhile."""

    def __init__(self, docs_file: Path, edit_during_build: str) -> None:
        self.docs_file = docs_file
        self.edit_during_build = edit_during_build
        self.reasons: list[str] = []
        self.status: dict = {}

    def load_stored(self) -> bool:
        return False

    def refresh(self, reason: str) -> None:
        self.reasons.append(reason)
        if self.edit_during_build:
            self.docs_file.write_text(self.edit_during_build, encoding="utf-8")
            self.edit_during_build = ""

    def retrieve(self, query: str, k: int, keyword_weight: float) -> list:
        return []

    def follow(self, reason: str) -> None:
        """No other replica publishes builds here."""

    def stop(self) -> None:
        pass


@pytest.mark.parametrize("edited", [False, True])
def test_docs_txt_edited_during_the_first_build_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edited: bool
) -> None:
    (tmp_path / "docs.txt").write_text("a.md\n", encoding="utf-8")
    env = model_dirs(tmp_path) | {"DOCS_WATCH_DEBOUNCE_S": "0.1", "DOCS_POLL_INTERVAL_S": "0"}
    indexes: list[_Index] = []

    def index(docs_file: Path, *args: object) -> _Index:
        indexes.append(_Index(docs_file, "a.md\nb.md\n" if edited else ""))
        return indexes[-1]

    monkeypatch.setattr(service, "Engine", mock.Mock())
    monkeypatch.setattr(service, "CountedOpenVINOEmbeddings", mock.Mock())
    monkeypatch.setattr(service, "OpenVINOChatModel", mock.Mock())
    monkeypatch.setattr(service, "model_context_length", lambda model_dir: 2048)
    monkeypatch.setattr(service, "IndexManager", index)
    rag = service.RagService(Settings.from_env(tmp_path, env))
    try:
        expected = ["start", "start: docs.txt changed before watching began"] if edited else ["start"]
        # A rebuild at start is asked for before the watcher runs, so it comes before the rebuild of a
        # later save; wait for it first all the same, as the save's request would replace a pending one.
        wait_until(lambda: len(indexes[0].reasons) >= len(expected), "the builds at start")
        new = tmp_path / ".docs.txt.new"
        new.write_text("a.md\nc.md\n", encoding="utf-8")
        new.replace(tmp_path / "docs.txt")
        wait_until(lambda: indexes[0].reasons[-1].endswith("event"), "the rebuild of a later save")
        assert indexes[0].reasons[:-1] == expected
    finally:
        rag.stop()


def test_docs_txt_says_local_entries_are_relative_to_the_servable_folder(tmp_path: Path) -> None:
    """As the Fetcher resolves them: against the base path, not the folder docs.txt is in."""
    comments = [
        line for line in (SERVABLE / "docs.txt").read_text(encoding="utf-8").splitlines() if line[:1] == "#"
    ]
    assert "relative to the servable's folder (servable_stream/" in "\n".join(comments)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "notes.md").write_text("# Notes\nTide tables.", encoding="utf-8")
    settings = Settings.from_env(tmp_path, {"DOCS_FILE": "cfg/docs.txt"})
    fetcher = Fetcher(settings.base_path, settings.allowed_roots, FetchLimits(1.0, 1000, 0))
    documents, failures = fetcher.load_entry(Entry(1, "notes.md"))
    assert [d.source for d in documents] == ["notes.md"] and not failures


def test_answer_settings_come_from_the_environment_else_the_models_registry_entry(tmp_path: Path) -> None:
    assert Settings.from_env(tmp_path, {}).answer.mode == "extract"  # smollm2's entry in models.json
    assert Settings.from_env(tmp_path, {"SELECTED_MODEL": "qwen2.5-0.5b-instruct"}).answer == AnswerSettings()
    answer = Settings.from_env(
        tmp_path,
        {
            "ANSWER_MODE": "Generate",
            "REFUSAL_TEXT": "No idea.",
            "PROMPT_TEMPLATE": "Say {refusal}",
            "TOP_K": "5",
        },
    ).answer
    assert (answer.mode, answer.refusal, answer.prompt.format(refusal=answer.refusal)) == (
        "generate",
        "No idea.",
        "Say No idea.",
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ANSWER_MODE": "guess"}, "ANSWER_MODE must be one of generate, extract, got 'guess'"),
        ({"PROMPT_TEMPLATE": "Use {context}"}, "PROMPT_TEMPLATE may use only the placeholder {refusal}"),
        ({"RELEVANCE_THRESHOLD": "high"}, "RELEVANCE_THRESHOLD must be a number, got 'high'"),
        ({"KEYWORD_WEIGHT": "1.5"}, "KEYWORD_WEIGHT must be between 0.0 and 1.0, got 1.5"),
    ],
)
def test_bad_answer_settings_name_the_variable(tmp_path: Path, env: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_env(tmp_path, env)
