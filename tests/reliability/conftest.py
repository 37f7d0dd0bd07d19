"""Fixtures of the reliability tests: a temporary copy of the real servable (its own docs.txt and index
folder, the default models linked in) served by the real local server, plus the index status reader
(`metrics` and `wait_for` are the servable tests' helpers, in tests/servable/rag.py).

``servable_factory(name, docs=None, **env)`` (module scope) makes a copy under the module's temporary
folder; ``rag_server(copy, args=(), env=None)`` starts ``python -m local_ovms`` on it (with
``start_ovms_server`` of tests/conftest.py) and stops every server it started at the module's end.

``shared`` (package scope) is one copy and one server used by the request, cancel, fetcher and load
tests: a start of the real servable costs 10-30 s on this machine, so they share it. Its settings keep
answers short (MAX_NEW_TOKENS) and the fetcher's limits small (FETCH_*).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, OvmsServer, start_ovms_server
from tests.servable.rag import ServableCopy, require_models

DEFAULT_DOCS = ("documents/",)


def make_servable_copy(target: Path, docs: tuple[str, ...] | list[str], env: dict[str, str]) -> ServableCopy:
    """A copy of the servable with its bundled documents, listing `docs`, watched closely."""
    require_models()
    copy = ServableCopy.make(target, {}, docs, folders=("documents",))
    copy.env = {
        "RAG_INDEX_DIR": str(copy.index_dir),
        "DOCS_FILE": str(copy.docs_file),
        "DOCS_WATCH_DEBOUNCE_S": "0.2",
        "DOCS_POLL_INTERVAL_S": "0.5",
        **env,
    }
    return copy


@pytest.fixture(scope="module")
def servable_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ServableCopy]:
    """Makes copies of the servable in this module's temporary folder."""
    root = tmp_path_factory.mktemp("servable")

    def make(name: str = "servable_stream", docs: tuple[str, ...] | list[str] = DEFAULT_DOCS, **env: str):
        return make_servable_copy(root / name, docs, env)

    return make


@pytest.fixture(scope="module")
def rag_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., OvmsServer]]:
    """Starts the local server on a servable copy; every server it started is stopped at the end."""
    log_dir = tmp_path_factory.mktemp("reliability-logs")
    servers: list[OvmsServer] = []

    def start(
        copy: ServableCopy, args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> OvmsServer:
        server = start_ovms_server(copy.config, log_dir, env={**copy.env, **(env or {})}, args=args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


SHARED_ENV = {
    "MAX_NEW_TOKENS": "6",
    "FETCH_TIMEOUT_S": "2",
    "FETCH_MAX_BYTES": "200000",
    "FETCH_MAX_REDIRECTS": "3",
}


@dataclass
class Shared:
    """The package's shared servable copy and the server running it."""

    copy: ServableCopy
    server: OvmsServer


@pytest.fixture(scope="package")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One copy of the servable served for the whole package (see the module docstring)."""
    copy = make_servable_copy(tmp_path_factory.mktemp("shared") / "servable_stream", DEFAULT_DOCS, SHARED_ENV)
    server = start_ovms_server(copy.config, tmp_path_factory.mktemp("reliability-logs"), env=copy.env)
    try:
        yield Shared(copy, server)
    finally:
        server.stop()


def write_artifact(name: str, data: dict[str, Any]) -> Path:
    """Write test figures to test-artifacts/NAME.json (kept whether or not pytest shows stdout)."""
    path = REPO / "test-artifacts" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path
