"""A misbehaving HTTP server on 127.0.0.1 for the document-fetcher tests.

Paths: `/doc/NAME.txt` (a small text document, `documents[NAME]`), `/slow` (trickles a byte every
0.1 s, forever), `/endless` (64 KiB blocks as fast as it can, forever, no length), `/big` (declares
and sends 50 MB), `/redirect/N` (redirects to `/redirect/N+1`, forever). Every request path is kept
in `hits`. With `tls=(certificate file, key file)` it speaks HTTPS (e.g. with a self-signed
certificate, which a fetcher that verifies certificates must refuse).
"""

from __future__ import annotations

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BLOCK = b"orchard " * 8192


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackHttp.Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        owner.hits.append(self.path)
        try:
            if self.path.startswith("/doc/") and self.path[5:].removesuffix(".txt") in owner.documents:
                self._send(200, owner.documents[self.path[5:].removesuffix(".txt")].encode())
            elif self.path == "/slow":
                self._start(200)
                while not owner.stopping.is_set():
                    self.wfile.write(b"s")
                    self.wfile.flush()
                    time.sleep(0.1)
            elif self.path == "/endless":
                self._start(200)
                while not owner.stopping.is_set():
                    self.wfile.write(BLOCK)
            elif self.path == "/big":
                self._start(200, 50_000_000)
                for _ in range(50_000_000 // len(BLOCK)):
                    self.wfile.write(BLOCK)
            elif self.path.startswith("/redirect/"):
                number = int(self.path.rsplit("/", 1)[1])
                self.send_response(302)
                self.send_header("Location", f"/redirect/{number + 1}")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(404, b"not here")
        except OSError:  # the fetcher gave up and closed the connection
            pass

    def _start(self, status: int, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send(self, status: int, body: bytes) -> None:
        self._start(status, len(body))
        self.wfile.write(body)


class LoopbackHttp:
    """The server, running in a thread; use as a context manager."""

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        owner: LoopbackHttp

    def __init__(self, documents: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.documents = dict(documents or {})
        self.hits: list[str] = []
        self.stopping = threading.Event()
        self._server = self.Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-http", daemon=True)

    def __enter__(self) -> LoopbackHttp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
