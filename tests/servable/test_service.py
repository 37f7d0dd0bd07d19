"""The service hands every scheduler setting (KV_CACHE_SIZE_GB, MAX_NUM_SEQS, MAX_NUM_BATCHED_TOKENS)
to the engine it builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from ragbot import service
from ragbot.settings import Settings


class _Built(Exception):
    """Stops RagService right after it built its engine."""


def test_scheduler_settings_reach_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "llm").mkdir()
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "openvino_model.xml").write_text("<net/>", encoding="utf-8")
    env = {
        "LLM_MODEL_DIR": "llm",
        "EMBEDDING_MODEL_DIR": "emb",
        "EMBEDDING_POOLING": "mean",
        "KV_CACHE_SIZE_GB": "3",
        "MAX_NUM_SEQS": "7",
        "MAX_NUM_BATCHED_TOKENS": "512",
    }
    built: list[tuple] = []

    def engine(*args: object) -> None:
        built.append(args)
        raise _Built

    monkeypatch.setattr(service, "Engine", engine)
    with pytest.raises(_Built):
        service.RagService(Settings.from_env(tmp_path, env))
    assert built == [(tmp_path / "llm", "CPU", 3, 7, 512)]
