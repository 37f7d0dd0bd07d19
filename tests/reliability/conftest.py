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
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, OvmsServer, start_ovms_server

SERVABLE = REPO / "servable_stream"
MODELS = ("smollm2-135m-instruct_INT4_compressed_weights", "all-MiniLM-L6-v2")
SERVABLE_FILES = ("config.json", "graph.pbtxt", "model.py")
SERVABLE_FOLDERS = ("ragbot", "documents")
DEFAULT_DOCS = ("documents/",)


@dataclass
class ServableCopy:
    """A copy of servable_stream/ with its own docs.txt and index folder."""

    base: Path
    env: dict[str, str]

    @property
    def config(self) -> Path:
        return self.base / "config.json"

    @property
    def docs_file(self) -> Path:
        return self.base / "docs.txt"

    @property
    def index_dir(self) -> Path:
        return self.base / "index"

    def write_docs(self, entries: list[str] | tuple[str, ...]) -> None:
        """Replace docs.txt (written to a temporary file and renamed, as an editor would save it)."""
        tmp = self.docs_file.with_name(".docs.txt.tmp")
        tmp.write_text("\n".join(entries) + "\n", encoding="utf-8")
        tmp.replace(self.docs_file)

    def status(self) -> dict[str, Any]:
        """The servable's index status (status.json in the index folder); {} before it exists."""
        try:
            return json.loads((self.index_dir / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def current_build(self) -> Path:
        """The build folder named by the index's CURRENT file."""
        return self.index_dir / (self.index_dir / "CURRENT").read_text(encoding="utf-8").strip()


def make_servable_copy(target: Path, docs: tuple[str, ...] | list[str], env: dict[str, str]) -> ServableCopy:
    """Copy the servable's code, config and documents to `target`, link the default models in."""
    missing = [name for name in MODELS if not (SERVABLE / name / "openvino_model.xml").exists()]
    if missing or not (SERVABLE / "config.json").exists():
        pytest.skip(f"the real servable or its default models are missing ({missing}): run `make models`")
    target.mkdir(parents=True)
    for name in SERVABLE_FILES:
        shutil.copy2(SERVABLE / name, target / name)
    for name in SERVABLE_FOLDERS:
        shutil.copytree(SERVABLE / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in MODELS:
        (target / name).symlink_to(SERVABLE / name, target_is_directory=True)
    copy = ServableCopy(target, {})
    copy.env = {
        "RAG_INDEX_DIR": str(copy.index_dir),
        "DOCS_FILE": str(copy.docs_file),
        "DOCS_WATCH_DEBOUNCE_S": "0.2",
        "DOCS_POLL_INTERVAL_S": "0.5",
        **env,
    }
    copy.write_docs(list(docs))
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
