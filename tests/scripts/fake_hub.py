"""A loopback HTTP server that serves model folders the way the Hugging Face Hub does.

It answers what huggingface_hub 1.21 asks while downloading a snapshot: the model API
(`/api/models/{repo}` and `/api/models/{repo}/revision/{rev}`, with file sizes when `blobs=true`) and
file downloads (`HEAD`/`GET /{repo}/resolve/{rev}/{path}` with the X-Repo-Commit, ETag and
Content-Length headers the client reads). Gated repositories answer file requests with 401 (no token)
or 403 (a token without access) and `X-Error-Code: GatedRepo`; unknown repositories answer 401 with
`X-Error-Code: RepoNotFound`, as the Hub does for anonymous requests.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    """One served repository: a local folder, and the tokens allowed when it is gated."""

    folder: Path
    gated: bool = False
    tokens: set[str] = field(default_factory=set)

    @property
    def files(self) -> dict[str, Path]:
        return {
            p.relative_to(self.folder).as_posix(): p for p in sorted(self.folder.rglob("*")) if p.is_file()
        }

    @property
    def sha(self) -> str:
        digest = hashlib.sha1()
        for name, path in self.files.items():
            digest.update(name.encode() + hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


class FakeHub:
    """Serve `repos` ({"org/name": Repo}) on 127.0.0.1; records every request as (method, path, auth)."""

    def __init__(self, repos: dict[str, Repo]):
        self.repos = repos
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub._handle(self, body=True)

            def do_HEAD(self) -> None:
                hub._handle(self, body=False)

            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _handle(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        auth = request.headers.get("Authorization")
        self.requests.append((request.command, path, auth))
        if path.startswith("/api/models/"):
            repo_id = path.removeprefix("/api/models/").split("/revision/")[0]
            self._model_info(request, repo_id, body)
            return
        parts = path.lstrip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(request, "/".join(parts[:2]), "/".join(parts[4:]), auth, body)
            return
        self._send(request, 404, b'{"error": "not found"}', body)

    def _error(self, request, status: int, code: str, message: str, body: bool) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        self._send(request, status, json.dumps({"error": message}).encode(), body, headers)

    def _model_info(self, request, repo_id: str, body: bool) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(request, 401, "RepoNotFound", "Repository not found", body)
            return
        siblings = [
            {"rfilename": name, "size": p.stat().st_size, "blobId": hashlib.sha1(p.read_bytes()).hexdigest()}
            for name, p in repo.files.items()
        ]
        info = {
            "_id": repo_id,
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": ["text-generation"],
            "siblings": siblings,
        }
        self._send(request, 200, json.dumps(info).encode(), body, {"Content-Type": "application/json"})

    def _resolve(self, request, repo_id: str, filename: str, auth: str | None, body: bool) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(request, 401, "RepoNotFound", "Repository not found", body)
            return
        if repo.gated:
            token = (auth or "").removeprefix("Bearer ").strip()
            if not token:
                self._error(request, 401, "GatedRepo", f"Access to model {repo_id} is restricted.", body)
                return
            if token not in repo.tokens:
                self._error(request, 403, "GatedRepo", f"Access to model {repo_id} is restricted.", body)
                return
        file = repo.files.get(filename)
        if file is None:
            self._error(request, 404, "EntryNotFound", f"{filename} does not exist", body)
            return
        data = file.read_bytes()
        headers = {
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Content-Type": "application/octet-stream",
        }
        self._send(request, 200, data, body, headers)

    @staticmethod
    def _send(request, status: int, data: bytes, body: bool, headers: dict[str, str] | None = None) -> None:
        request.send_response(status)
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if body:
            request.wfile.write(data)
