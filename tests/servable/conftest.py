"""Fixtures of the servable tests (helpers in tests/servable/rag.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.servable.rag import EMBEDDING_DIR, SERVABLE, LoopbackSite, require_models

# The servable's helper package imports as `ragbot`, as it does in the server (base path on sys.path).
if str(SERVABLE) not in sys.path:
    sys.path.append(str(SERVABLE))


@pytest.fixture(scope="module")
def site() -> Iterator[LoopbackSite]:
    """A loopback HTTP server for documents, stopped at the end of the module."""
    server = LoopbackSite()
    yield server
    server.close()


@pytest.fixture(scope="module")
def model():
    """The real default embedding model (CountedOpenVINOEmbeddings), loaded once per module."""
    from ragbot.embeddings import CountedOpenVINOEmbeddings

    require_models()
    return CountedOpenVINOEmbeddings(EMBEDDING_DIR, "CPU", "mean")
