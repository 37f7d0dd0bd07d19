"""docs.txt entries and the document fetcher/loaders.

docs.txt belongs to the operator; nothing a user asks can add an entry. Entries are http(s) URLs
or local files/folders inside the allowed roots. URLs are fetched with verified TLS, a timeout on
the whole download, a size cap and a redirect cap. Files are read as .txt, .md, .html or .pdf.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from bs4 import BeautifulSoup
from pypdf import PdfReader

log = logging.getLogger(__name__)

SUFFIX_KINDS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
CONTENT_TYPE_KINDS = {
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
}
SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class Refused(Exception):
    """A docs.txt entry or document that is not read, with the reason."""


@dataclass(frozen=True)
class Entry:
    """One docs.txt line."""

    line: int
    text: str


@dataclass(frozen=True)
class Document:
    """A loaded document: where it came from, its title, its text and the hash of its bytes."""

    source: str
    title: str
    text: str
    content_hash: str


@dataclass(frozen=True)
class Failure:
    """A document or entry that could not be indexed."""

    source: str
    reason: str


@dataclass(frozen=True)
class FetchLimits:
    timeout_s: float
    max_bytes: int
    max_redirects: int


def parse_docs_file(text: str) -> list[Entry]:
    """The entries of docs.txt: one per line; blank lines and `#` comments are skipped."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            entries.append(Entry(number, stripped))
    return entries


def _title_from_text(kind: str, text: str, fallback: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            if kind == "markdown" and stripped.startswith("#"):
                return stripped.lstrip("#").strip()[:200] or fallback
            return stripped[:200] if kind == "pdf" else fallback
    return fallback


def parse_bytes(data: bytes, kind: str, source: str, fallback_title: str) -> Document:
    """Turn a document's bytes into text with the loader for `kind`."""
    digest = hashlib.sha256(data).hexdigest()
    if kind == "html":
        soup = BeautifulSoup(data, "html.parser")
        for tag in soup(["script", "style", "noscript"]):
            tag.decompose()
        title = soup.title.get_text(strip=True) if soup.title else ""
        text = "\n".join(line.strip() for line in soup.get_text("\n").splitlines() if line.strip())
        return Document(source, title or fallback_title, text, digest)
    if kind == "pdf":
        try:
            reader = PdfReader(io.BytesIO(data))
            text = "\n".join(page.extract_text() or "" for page in reader.pages)
            meta_title = (reader.metadata.title if reader.metadata else None) or ""
        except Exception as exc:
            raise Refused(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
        return Document(
            source, meta_title.strip() or _title_from_text(kind, text, fallback_title), text, digest
        )
    text = data.decode("utf-8", errors="replace")
    return Document(source, _title_from_text(kind, text, fallback_title), text, digest)


def is_within(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


class Fetcher:
    """Loads docs.txt entries under the security rules (see module docstring)."""

    def __init__(self, base_path: Path, allowed_roots: tuple[Path, ...], limits: FetchLimits) -> None:
        self.base_path = base_path
        self.allowed_roots = tuple(root.resolve() for root in allowed_roots)
        self.limits = limits

    def load_entry(self, entry: Entry) -> tuple[list[Document], list[Failure]]:
        """Every document an entry names (a URL, a file, or the supported files of a folder)."""
        try:
            if SCHEME_RE.match(entry.text):
                return [self.fetch_url(entry.text)], []
            return self._load_local(entry.text)
        except Refused as exc:
            log.warning("docs.txt line %d: %s: %s", entry.line, entry.text, exc)
            return [], [Failure(entry.text, str(exc))]

    def _relative(self, path: Path) -> str:
        return (
            path.relative_to(self.base_path).as_posix() if path.is_relative_to(self.base_path) else str(path)
        )

    def _load_local(self, text: str) -> tuple[list[Document], list[Failure]]:
        path = (self.base_path / text).resolve()
        if not is_within(path, self.allowed_roots):
            roots = ", ".join(str(root) for root in self.allowed_roots)
            raise Refused(f"path {path} is outside the allowed roots ({roots}); see DOCS_ALLOWED_ROOTS")
        if not path.exists():
            raise Refused(f"no such file or folder: {path}")
        if path.is_file():
            return [self._load_file(path)], []
        documents, failures = [], []
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            real = child.resolve()
            try:
                if not is_within(real, self.allowed_roots):
                    raise Refused(f"{real} (linked from the folder) is outside the allowed roots")
                documents.append(self._load_file(real, self._relative(child)))
            except Refused as exc:
                log.warning("%s: skipped: %s", child, exc)
                failures.append(Failure(self._relative(child), str(exc)))
        return documents, failures

    def _load_file(self, path: Path, source: str | None = None) -> Document:
        kind = SUFFIX_KINDS.get(path.suffix.lower())
        if kind is None:
            raise Refused(
                f"unsupported file type {path.suffix or '(none)'!r} (supported: .txt, .md, .html, .pdf)"
            )
        size = path.stat().st_size
        if size > self.limits.max_bytes:
            raise Refused(f"{size} bytes is more than the limit of {self.limits.max_bytes} (FETCH_MAX_BYTES)")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise Refused(f"cannot read: {exc.strerror}") from None
        return parse_bytes(data, kind, source or self._relative(path), path.stem)

    def fetch_url(self, url: str) -> Document:
        """GET an http(s) URL under the limits, following at most max_redirects redirects."""
        deadline = time.monotonic() + self.limits.timeout_s
        current = url
        with requests.Session() as session:
            for _ in range(self.limits.max_redirects + 1):
                scheme = urlsplit(current).scheme.lower()
                if scheme not in ("http", "https"):
                    raise Refused(f"scheme {scheme!r} is not allowed (http and https only)")
                response = self._get(session, current, deadline)
                with response:
                    if response.is_redirect:
                        current = urljoin(current, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise Refused(f"HTTP {response.status_code} {response.reason or ''}".strip())
                    data = self._read_body(response, deadline)
                    kind = self._kind(response, current)
                    name = Path(urlsplit(current).path).stem or urlsplit(current).hostname or url
                    return parse_bytes(data, kind, url, name)
        raise Refused(f"more than {self.limits.max_redirects} redirects (FETCH_MAX_REDIRECTS)")

    def _get(self, session: requests.Session, url: str, deadline: float) -> requests.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Refused(f"took longer than {self.limits.timeout_s} s (FETCH_TIMEOUT_S)")
        try:
            return session.get(url, stream=True, allow_redirects=False, timeout=remaining, verify=True)
        except requests.exceptions.SSLError as exc:
            raise Refused(f"TLS certificate verification failed: {exc}") from None
        except requests.exceptions.Timeout:
            raise Refused(f"took longer than {self.limits.timeout_s} s (FETCH_TIMEOUT_S)") from None
        except requests.exceptions.RequestException as exc:
            raise Refused(f"cannot fetch: {type(exc).__name__}: {exc}") from None

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        limit = self.limits.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Refused(f"{declared} bytes is more than the limit of {limit} (FETCH_MAX_BYTES)")
        body = bytearray()
        try:
            # read1 returns what has arrived (a trickling server cannot hold one read for long), so
            # the deadline is checked after every few bytes; the socket timeout bounds a silent one.
            while block := response.raw.read1(65536, decode_content=True):
                body += block
                if len(body) > limit:
                    raise Refused(f"more than the limit of {limit} bytes (FETCH_MAX_BYTES)")
                if time.monotonic() > deadline:
                    raise Refused(f"took longer than {self.limits.timeout_s} s (FETCH_TIMEOUT_S)")
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise Refused(f"download failed: {type(exc).__name__}: {exc}") from None
        return bytes(body)

    @staticmethod
    def _kind(response: requests.Response, url: str) -> str:
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        kind = CONTENT_TYPE_KINDS.get(content_type) or SUFFIX_KINDS.get(
            Path(urlsplit(url).path).suffix.lower()
        )
        if kind is None:
            raise Refused(f"unsupported content type {content_type or '(none)'!r}")
        return kind
