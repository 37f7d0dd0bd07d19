"""The Makefile serves the models it builds: `make run LLM=... EMBEDDING=...` passes them to the servable."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from tests.scripts.conftest import REPO, SERVABLE


def recipe_env(target: str, *variables: str) -> dict[str, str]:
    """The VAR=value words before the command of `target`'s last recipe line (`make -n`)."""
    # Run as a top-level make even under `make test`: no parent's flags, no "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    shown = subprocess.run(
        ["make", "--no-print-directory", "-n", target, *variables],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=True,
    ).stdout
    words = shlex.split(shown.strip().splitlines()[-1])
    return dict(word.split("=", 1) for word in words[: next(i for i, w in enumerate(words) if "=" not in w)])


@pytest.mark.parametrize("target", ["serve", "run"])
def test_the_servable_gets_the_models_make_builds(target, monkeypatch):
    monkeypatch.setattr(sys, "path", [*sys.path, str(SERVABLE)])
    from ragbot.settings import Settings

    env = recipe_env(target, "LLM=my-llm", "EMBEDDING=my-embedding", "DEVICE=GPU")
    settings = Settings.from_env(SERVABLE, env)
    assert settings.selected_model == "my-llm" and settings.embedding_model == "my-embedding"
    assert settings.llm_model_dir == SERVABLE / "my-llm_INT4_compressed_weights"
    assert settings.embedding_model_dir == SERVABLE / "my-embedding"
    assert settings.device == "GPU"
