"""Helpers of the servable tests: a copy of servable_stream/ to serve, a tritonclient stream reader,
/metrics and status readers, and a loopback HTTP server for the document fetcher."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from langchain_core.embeddings import Embeddings
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, OvmsServer

SERVABLE = REPO / "servable_stream"
LLM_DIR = SERVABLE / "smollm2-135m-instruct_INT4_compressed_weights"
EMBEDDING_DIR = SERVABLE / "all-MiniLM-L6-v2"
MODEL = "python_model"


def require_models() -> None:
    missing = [str(d) for d in (LLM_DIR, EMBEDDING_DIR) if not (d / "openvino_model.xml").exists()]
    if missing:
        pytest.skip(f"default models missing ({', '.join(missing)}): run `make models`")


class Counting(Embeddings):
    """Counts the texts sent to the embedding model (wraps the real one)."""

    def __init__(self, model: Embeddings) -> None:
        self.model = model
        self.texts = 0
        self.key = model.key

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.texts += len(texts)
        return self.model.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.model.embed_query(text)


def current_build(index_dir: Path) -> Path:
    """The build folder named by an index folder's CURRENT file."""
    return index_dir / (index_dir / "CURRENT").read_text(encoding="utf-8").strip()


@dataclass
class ServableCopy:
    """servable_stream/ copied to a temporary folder with its own docs.txt and index; models linked.

    `env` is what the server running the copy gets on top of the test's own settings.
    """

    base: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        target: Path,
        docs: dict[str, str],
        entries: list[str] | tuple[str, ...],
        folders: tuple[str, ...] = (),
    ) -> ServableCopy:
        """Copy the code and `folders` of the servable, write `docs` (relative path -> text) and a
        docs.txt listing `entries`."""
        target.mkdir(parents=True)
        for name in ("config.json", "graph.pbtxt", "model.py"):
            shutil.copy2(SERVABLE / name, target / name)
        for name in ("ragbot", *folders):
            shutil.copytree(SERVABLE / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        for model in (LLM_DIR, EMBEDDING_DIR):
            (target / model.name).symlink_to(model, target_is_directory=True)
        for name, text in docs.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_text(text, encoding="utf-8")
        copy = cls(target)
        copy.write_docs(entries)
        return copy

    @property
    def config(self) -> Path:
        return self.base / "config.json"

    @property
    def docs_file(self) -> Path:
        return self.base / "docs.txt"

    @property
    def index_dir(self) -> Path:
        return self.base / ".rag_index"

    def write_docs(self, entries: list[str] | tuple[str, ...]) -> None:
        """Replace docs.txt the way editors save: a new file renamed over the old one."""
        tmp = self.base / ".docs.txt.new"
        tmp.write_text("# test documents\n" + "\n".join(entries) + "\n", encoding="utf-8")
        tmp.replace(self.docs_file)

    def write_bulk_notes(self, folder: str, files: int, chars: int, word: str) -> None:
        """`files` distinct notes of about `chars` characters in `folder`, for a build long enough to
        act on while it runs (each note's sentences name `word`, so one copy's notes differ from
        another's)."""
        bulk = self.base / folder
        bulk.mkdir()
        for number in range(files):
            words = " ".join(
                f"{word}{number}-{i} row {i % 17} item {i * number % 101}." for i in range(chars // 30)
            )
            (bulk / f"note-{number:03d}.txt").write_text(words, encoding="utf-8")

    def status(self) -> dict[str, Any]:
        """The servable's index status (status.json in the index folder); {} before it exists."""
        try:
            return json.loads((self.index_dir / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def current_build(self) -> Path:
        return current_build(self.index_dir)

    def whole_build(self) -> str:
        """The name of the build CURRENT names, after checking its files against its manifest (a build
        is never published torn)."""
        build = self.current_build()
        manifest = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
        for name, digest in manifest["files"].items():
            assert hashlib.sha256((build / name).read_bytes()).hexdigest() == digest, f"{build.name}/{name}"
        return build.name


@dataclass
class Answer:
    """What one request produced, in arrival order."""

    order: list[str] = field(default_factory=list)
    sources: list[dict] | None = None
    status: dict | None = None
    pieces: list[str] = field(default_factory=list)
    end: dict | None = None
    error: str | None = None
    sent_at: float = 0.0
    first_piece_at: float | None = None
    done_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_piece_at is None else self.first_piece_at - self.sent_at


class Stream:
    """One tritonclient gRPC stream to the servable."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()
        self.client.start_stream(callback=self._on_response)

    def _on_response(self, result: Any, error: Any) -> None:
        if error is not None:
            self.events.put(("error", error.message() if hasattr(error, "message") else str(error)))
            return
        for output in result.get_response().outputs:
            self.events.put((output.name, result.as_numpy(output.name).tobytes().decode("utf-8")))

    def send(self, request: str | bytes | dict, serialized: bool = False, tensor: Any = None) -> Answer:
        """Send a question: raw BYTES content (the reference client), a tritonclient-serialized
        element (`serialized`), a JSON request (dict), or a ready-made InferInput (`tensor`).
        Returns the Answer that `next_event` / `collect` fill."""
        if tensor is None:
            data = json.dumps(request) if isinstance(request, dict) else request
            data = data.encode("utf-8") if isinstance(data, str) else data
            tensor = grpcclient.InferInput("pre_prompt", [1], "BYTES")
            if serialized:
                tensor.set_data_from_numpy(np.array([data], dtype=object))
            else:
                tensor._raw_content = data
        answer = Answer(sent_at=time.perf_counter())
        self.client.async_stream_infer(MODEL, [tensor])
        return answer

    def next_event(self, answer: Answer, deadline: float) -> str:
        """Take the next event into `answer` (queue.Empty past the monotonic `deadline`); its kind."""
        kind, value = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
        now = time.perf_counter()
        answer.order.append(kind)
        if kind == "error":
            answer.error, answer.done_at = value, now
        elif kind == "sources":
            answer.sources = json.loads(value)
        elif kind == "status":
            answer.status = json.loads(value)
        elif kind == "completion":
            answer.pieces.append(value)
            if answer.first_piece_at is None:
                answer.first_piece_at = now
        elif kind == "end_signal":
            answer.end, answer.done_at = json.loads(value), now
        return kind

    def collect(self, timeout: float = 120.0, answer: Answer | None = None) -> Answer:
        """Events until end_signal or an error, into `answer` (a new one if none)."""
        answer = Answer() if answer is None else answer
        deadline = time.monotonic() + timeout
        while self.next_event(answer, deadline) not in ("end_signal", "error"):
            pass
        return answer

    def close(self, cancel: bool = True) -> None:
        try:
            self.client.stop_stream(cancel_requests=cancel)
        finally:
            self.client.close()


def ask(url: str, request: str | bytes | dict, timeout: float = 120.0, **send: Any) -> Answer:
    """One request on a fresh stream."""
    stream = Stream(url)
    try:
        stream.send(request, **send)
        return stream.collect(timeout)
    finally:
        stream.close()


def swap_configmap(folder: Path, text: str) -> None:
    """How Kubernetes updates a ConfigMap volume: a new ..vN folder, ..data re-pointed, the old removed."""
    old = os.readlink(folder / "..data")
    new = folder / f"..v{int(old[3:]) + 1}"
    new.mkdir()
    (new / "docs.txt").write_text(text, encoding="utf-8")
    os.symlink(new.name, folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")
    shutil.rmtree(folder / old)


def metrics(server: OvmsServer) -> dict[str, float]:
    """/metrics as {'name{label="v"}': value}."""
    with urllib.request.urlopen(f"{server.rest_url}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def model_ready(server: OvmsServer) -> bool:
    try:
        with urllib.request.urlopen(f"{server.rest_url}/v2/models/{MODEL}/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Call `check` until it returns something true (returned) or `timeout` passes (last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@dataclass(frozen=True)
class Hit:
    """One GET the site answered: the path, the request's headers, the status and the body bytes sent."""

    path: str
    headers: dict[str, str]
    status: int
    body_bytes: int


class LoopbackSite:
    """A threaded HTTP server on 127.0.0.1 with canned routes: path -> (status, headers, body, delay).

    A route with an `ETag` or `Last-Modified` header answers a conditional GET that matches it with
    304 Not Modified and no body, as a web server does. `hits` records every GET."""

    def __init__(self, tls_cert: Path | None = None) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes, float]] = {}
        self.hits: list[Hit] = []
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, headers, body, delay = routes.get(self.path, (404, {}, b"not found", 0.0))
                time.sleep(delay)
                etag, modified = headers.get("ETag"), headers.get("Last-Modified")
                if status == 200 and (
                    (etag and self.headers.get("If-None-Match") == etag)
                    or (modified and not etag and self.headers.get("If-Modified-Since") == modified)
                ):
                    status, body = 304, b""
                hits.append(Hit(self.path, dict(self.headers), status, len(body)))
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                with contextlib.suppress(OSError):  # the client may have given up (timeout tests)
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls_cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}{path}"

    def route(
        self, path: str, body: bytes = b"", status: int = 200, delay: float = 0.0, **headers: str
    ) -> str:
        self.routes[path] = (status, {k.replace("_", "-"): v for k, v in headers.items()}, body, delay)
        return self.url(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
