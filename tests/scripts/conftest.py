"""Fixtures of the model-script tests: running the scripts, tiny models, the offline default models
(`tiny_gguf` and `tiny_ir` are in tests/conftest.py: the engine's tests use them too)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.scripts.runner import REPO, SCRIPTS, run_script
from tests.scripts.tiny_models import SMOLLM2_GGUF, write_tiny_hf_llama

SERVABLE = REPO / "servable_stream"
sys.path.insert(0, str(SCRIPTS))  # the scripts' shared package `model_prep`, for in-process tests

from model_prep.staging import is_model_folder  # noqa: E402


@pytest.fixture(scope="session")
def script() -> Callable[..., subprocess.CompletedProcess]:
    return run_script


@pytest.fixture(scope="session")
def rebuilt_tokenizer():
    """SmolLM2's tokenizer rebuilt from the GGUF's metadata."""
    from model_prep.gguf_source import tokenizer_from_gguf

    return tokenizer_from_gguf(SMOLLM2_GGUF)


@pytest.fixture(scope="session")
def tiny_hf_llama(tmp_path_factory, rebuilt_tokenizer) -> Path:
    return write_tiny_hf_llama(tmp_path_factory.mktemp("hf") / "tiny-llama-hf", rebuilt_tokenizer)


def _default_model(folder: Path, tmp_path_factory, *commands: tuple[str, ...]) -> Path:
    """`folder` when `make models` built it already, else the same commands run into a temporary folder."""
    if is_model_folder(folder):
        return folder
    out = tmp_path_factory.mktemp("default_models")
    for command in commands:
        result = run_script(*command, "--output-dir", str(out))
        assert result.returncode == 0, result.stderr
    return out / folder.name


@pytest.fixture(scope="session")
def default_llm(tmp_path_factory) -> Path:
    """The offline default LLM, smollm2-135m-instruct INT4 (as `make models` makes it)."""
    name = "smollm2-135m-instruct"
    return _default_model(
        SERVABLE / f"{name}_INT4_compressed_weights",
        tmp_path_factory,
        ("download_model.py", "--model", name),
        ("compress_model.py", "--model", name, "--precision", "INT4", "--no-report"),
    )


@pytest.fixture(scope="session")
def default_embedding(tmp_path_factory) -> Path:
    name = "all-MiniLM-L6-v2"
    return _default_model(SERVABLE / name, tmp_path_factory, ("download_embedding_model.py", "--model", name))
