"""docs.txt entries and the document fetcher/loaders.

docs.txt belongs to the operator; nothing a user asks can add an entry. Entries are http(s) URLs
or local files/folders inside the allowed roots. URLs are fetched with verified TLS, a timeout on
the whole download, a size cap and a redirect cap. Files are read as .txt, .md, .html or .pdf;
text is decoded by its BOM, else its declared charset, else as UTF-8, and refused if it does not
decode. Whatever goes wrong with one entry or file becomes a `Failure` with the reason.
A URL's last good version is kept with its validators (ETag, Last-Modified), and a URL's failure with
its reason: both stand until `revalidate_urls()` (docs.txt edited, or every DOCS_REFRESH_S), so an edit
of a local file costs no request; then the URL is asked again, conditionally, so an unchanged page is
not downloaded again. A URL docs.txt no longer lists is forgotten.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from bs4 import BeautifulSoup
from pypdf import PdfReader

from . import metrics

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
BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class Refused(Exception):
    """A docs.txt entry or document that is not read, with the reason."""


class NotAllowed(Refused):
    """Refused by the rules (roots, schemes, types, sizes): its previous version is not kept either."""


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
    """A document or entry that could not be indexed; `keep_previous` unless the rules refuse it."""

    source: str
    reason: str
    keep_previous: bool = True


@dataclass(frozen=True)
class Page:
    """A URL's last good version, the validators its server gave for it, and when it was checked."""

    document: Document
    etag: str | None
    last_modified: str | None
    checked_at: float

    def conditions(self) -> dict[str, str]:
        """The headers of a conditional GET (RFC 9110 section 13) for this version."""
        headers = {"If-None-Match": self.etag} if self.etag else {}
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass(frozen=True)
class FetchLimits:
    timeout_s: float
    max_bytes: int
    max_redirects: int


def parse_docs_file(text: str) -> list[Entry]:
    """The entries of docs.txt: one per line; blank lines and `#` comments are skipped."""
    entries = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
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


def _bom_encoding(data: bytes) -> str | None:
    """The encoding a byte order mark at the start of `data` names, if any."""
    return next((name for bom, name in BOMS if data.startswith(bom)), None)


def decode_text(data: bytes, charset: str | None) -> str:
    """Text of a .txt/.md document: by its BOM, else its declared `charset`, else as UTF-8."""
    encoding = _bom_encoding(data) or charset or "utf-8"
    try:
        text = data.decode(encoding)
    except LookupError:
        raise Refused(f"unknown charset {encoding!r}") from None
    except UnicodeDecodeError as exc:
        raise Refused(
            f"not {encoding} text (byte {exc.start}); save it as UTF-8 or declare its charset"
        ) from None
    if "\x00" in text:
        raise Refused(f"not {encoding} text (NUL characters; UTF-16 without a BOM?)")
    return text


def parse_bytes(
    data: bytes, kind: str, source: str, fallback_title: str, charset: str | None = None
) -> Document:
    """Turn a document's bytes into text with the loader for `kind` (`charset`: as declared)."""
    digest = hashlib.sha256(data).hexdigest()
    if kind == "html":
        soup = BeautifulSoup(data, "html.parser", from_encoding=_bom_encoding(data) or charset)
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
    text = decode_text(data, charset)
    return Document(source, _title_from_text(kind, text, fallback_title), text, digest)


def is_within(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _failure(source: str, exc: Exception) -> Failure:
    """`exc` (raised while loading `source`) as a Failure with a clear reason."""
    if isinstance(exc, Refused):
        reason = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        reason = (
            f"cannot read {exc.filename}: {exc.strerror}" if exc.filename else f"cannot read: {exc.strerror}"
        )
    else:
        reason = f"cannot load: {type(exc).__name__}: {exc}"
    return Failure(source, reason, keep_previous=not isinstance(exc, NotAllowed))


class Fetcher:
    """Loads docs.txt entries under the security rules (see module docstring)."""

    def __init__(self, base_path: Path, allowed_roots: tuple[Path, ...], limits: FetchLimits) -> None:
        self.base_path = base_path
        self.allowed_roots = tuple(root.resolve() for root in allowed_roots)
        self.limits = limits
        self._pages: dict[str, Page] = {}
        self._errors: dict[str, tuple[Refused, float]] = {}
        self._revalidate_before = -float("inf")

    def revalidate_urls(self) -> None:
        """Make the next load of every URL ask its server again (conditionally)."""
        self._revalidate_before = time.monotonic()

    def forget_unlisted(self, entries: list[Entry]) -> None:
        """Drop the last version and failure kept for URLs that docs.txt no longer lists: a page
        holds its whole text, and a long-running server's list may change many times."""
        listed = {entry.text for entry in entries}
        for kept in (self._pages, self._errors):
            for url in kept.keys() - listed:
                del kept[url]

    def local_paths(self, docs_file: Path) -> Iterator[Path]:
        """The resolved local files and folders docs.txt lists inside the allowed roots, existing or
        not (what the watcher watches); URLs and refused paths are left out."""
        for entry in parse_docs_file(docs_file.read_text(encoding="utf-8")):
            if not SCHEME_RE.match(entry.text):
                path = (self.base_path / entry.text).resolve()
                if is_within(path, self.allowed_roots):
                    yield path

    def load_entry(self, entry: Entry) -> tuple[list[Document], list[Failure]]:
        """Every document an entry names (a URL, a file, or the supported files of a folder)."""
        try:
            if SCHEME_RE.match(entry.text):
                return [self.fetch_url(entry.text)], []
            return self._load_local(entry.text)
        except Exception as exc:  # one bad entry (a loop, a bad name, a bad URL) fails alone
            failure = _failure(entry.text, exc)
            log.warning("docs.txt line %d: %s: %s", entry.line, entry.text, failure.reason)
            return [], [failure]

    def covers(self, failed: str, source: str) -> bool:
        """True when the document `source` is the failed entry or file `failed`, or lies in it."""
        if SCHEME_RE.match(failed) or SCHEME_RE.match(source):
            return failed == source
        named, document = (Path(os.path.normpath(self.base_path / name)) for name in (failed, source))
        return document.is_relative_to(named)

    def _relative(self, path: Path) -> str:
        return (
            path.relative_to(self.base_path).as_posix() if path.is_relative_to(self.base_path) else str(path)
        )

    def _load_local(self, text: str) -> tuple[list[Document], list[Failure]]:
        path = (self.base_path / text).resolve()
        if not is_within(path, self.allowed_roots):
            roots = ", ".join(str(root) for root in self.allowed_roots)
            raise NotAllowed(f"path {path} is outside the allowed roots ({roots}); see DOCS_ALLOWED_ROOTS")
        if not path.exists():
            raise Refused(f"no such file or folder: {path}")
        if path.is_file():
            return [self._load_file(path)], []
        documents, failures = [], []
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            try:
                real = child.resolve()
                if not is_within(real, self.allowed_roots):
                    raise NotAllowed(f"{real} (linked from the folder) is outside the allowed roots")
                documents.append(self._load_file(real, self._relative(child)))
            except Exception as exc:  # one bad file (gone, unreadable) fails alone
                failures.append(_failure(self._relative(child), exc))
                log.warning("%s: skipped: %s", child, failures[-1].reason)
        return documents, failures

    def _load_file(self, path: Path, source: str | None = None) -> Document:
        kind = SUFFIX_KINDS.get(path.suffix.lower())
        if kind is None:
            raise NotAllowed(
                f"unsupported file type {path.suffix or '(none)'!r} (supported: .txt, .md, .html, .pdf)"
            )
        size = path.stat().st_size
        if size > self.limits.max_bytes:
            raise NotAllowed(
                f"{size} bytes is more than the limit of {self.limits.max_bytes} (FETCH_MAX_BYTES)"
            )
        return parse_bytes(path.read_bytes(), kind, source or self._relative(path), path.stem)

    def fetch_url(self, url: str) -> Document:
        """The URL's document, or its failure, as last checked until `revalidate_urls()`; then asked
        again (see `_fetch`)."""
        error, checked_at = self._errors.get(url, (None, -float("inf")))
        if error is not None and checked_at > self._revalidate_before:
            raise type(error)(str(error))
        page = self._pages.get(url)
        if error is None and page is not None and page.checked_at > self._revalidate_before:
            return page.document
        try:
            document = self._fetch(url, page)
        except Exception as exc:
            self._errors[url] = (
                exc if isinstance(exc, Refused) else Refused(_failure(url, exc).reason),
                time.monotonic(),
            )
            raise
        self._errors.pop(url, None)
        return document

    def _fetch(self, url: str, page: Page | None) -> Document:
        """A GET under the limits, conditional when there is a last good `page` (304 Not Modified keeps
        it), following at most max_redirects redirects."""
        deadline = time.monotonic() + self.limits.timeout_s
        current = url
        with requests.Session() as session:
            if page is not None:
                session.headers.update(page.conditions())
            for _ in range(self.limits.max_redirects + 1):
                scheme = urlsplit(current).scheme.lower()
                if scheme not in ("http", "https"):
                    raise NotAllowed(f"scheme {scheme!r} is not allowed (http and https only)")
                response = self._get(session, current, deadline)
                with response:
                    if response.is_redirect:
                        current = urljoin(current, response.headers.get("location", ""))
                        continue
                    if response.status_code == 304 and page is not None:
                        metrics.URL_FETCHES.labels("not_modified").inc()
                        self._pages[url] = Page(
                            page.document, page.etag, page.last_modified, time.monotonic()
                        )
                        return page.document
                    if response.status_code != 200:
                        raise Refused(f"HTTP {response.status_code} {response.reason or ''}".strip())
                    data = self._read_body(response, deadline)
                    kind = self._kind(response, current)
                    name = Path(urlsplit(current).path).stem or urlsplit(current).hostname or url
                    document = parse_bytes(data, kind, url, name, _charset(response))
                    metrics.URL_FETCHES.labels("downloaded").inc()
                    headers = response.headers
                    self._pages[url] = Page(
                        document, headers.get("etag"), headers.get("last-modified"), time.monotonic()
                    )
                    return document
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
            raise NotAllowed(f"{declared} bytes is more than the limit of {limit} (FETCH_MAX_BYTES)")
        body = bytearray()
        try:
            # read1 returns what has arrived (a trickling server cannot hold one read for long), so
            # the deadline is checked after every few bytes; the socket timeout bounds a silent one.
            while block := response.raw.read1(65536, decode_content=True):
                body += block
                if len(body) > limit:
                    raise NotAllowed(f"more than the limit of {limit} bytes (FETCH_MAX_BYTES)")
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
            raise NotAllowed(f"unsupported content type {content_type or '(none)'!r}")
        return kind


def _charset(response: requests.Response) -> str | None:
    """The charset the Content-Type header declares, if any."""
    for parameter in response.headers.get("content-type", "").split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip("\"'") or None
    return None
