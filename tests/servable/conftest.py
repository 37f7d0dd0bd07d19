"""Fixtures of the servable tests (helpers in tests/servable/rag.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.servable.rag import SERVABLE, LoopbackSite

# The servable's helper package imports as `ragbot`, as it does in the server (base path on sys.path).
if str(SERVABLE) not in sys.path:
    sys.path.append(str(SERVABLE))


@pytest.fixture(scope="module")
def site() -> Iterator[LoopbackSite]:
    """A loopback HTTP server for documents, stopped at the end of the module."""
    server = LoopbackSite()
    yield server
    server.close()
