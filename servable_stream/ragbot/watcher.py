"""Watch docs.txt and the files and folders it lists (watchdog events plus a polling fallback) and
rebuild the index in the background; ask the listed URLs again every DOCS_REFRESH_S."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from .documents import SUFFIX_KINDS

log = logging.getLogger(__name__)

# Events that can change what docs.txt reads; opened and closed_no_write come from mere reads (the
# watcher's own and the rebuild's), so reacting to them would re-read docs.txt forever.
CHANGES = {EVENT_TYPE_CLOSED, EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED}
DOCUMENTS_CHANGED = "listed documents changed"


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _readable(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in SUFFIX_KINDS


def _files(target: Path) -> Iterable[tuple[str, int, int, int]]:
    """(path, size, mtime, inode) of the readable files a listed path holds; links are not followed
    (a link is the loader's to check against the allowed roots)."""
    if not target.is_dir():
        try:
            stat = target.lstat()
        except OSError:
            return
        yield str(target), stat.st_size, stat.st_mtime_ns, stat.st_ino
        return
    for folder, folders, names in os.walk(target):
        folders.sort()
        for name in sorted(names):
            if _readable(name):
                path = os.path.join(folder, name)
                try:
                    stat = os.lstat(path)
                except OSError:
                    continue
                yield path, stat.st_size, stat.st_mtime_ns, stat.st_ino


class _Events(FileSystemEventHandler):
    """Changes that can change the index: docs.txt itself (or, while it is a symbolic link, any entry
    of its folder: the link may go through a sibling, as a Kubernetes ConfigMap's docs.txt ->
    ..data/docs.txt does), and readable files or folders inside the watched listed paths."""

    def __init__(self, owner: DocsWatcher) -> None:
        self._owner = owner

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in CHANGES:
            return
        paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
        owner = self._owner
        if str(owner.docs_file) in paths or owner.docs_file.is_symlink():
            owner.request(f"{event.event_type} event")
        elif any(path and owner.watches(path, event.is_directory) for path in paths):
            owner.request(DOCUMENTS_CHANGED, documents=True)


class DocsWatcher:
    """Calls `rebuild(reason)` on a background thread after docs.txt or a document it lists changes.

    Changes are noticed by file-system events (watchdog) and, for bind mounts where events do not
    arrive, by comparing every `poll_s` seconds docs.txt's content and the size, time and inode of
    the listed files (0 turns polling off; events can be turned off too). Events within `debounce_s`
    of each other make one rebuild, so a burst of copied files makes a few rebuilds, not one each; a
    change a poll finds while an event's request waits out its debounce joins that request. An
    event of docs.txt rebuilds only when its content changed since the last rebuild. Rebuilds never
    overlap. A symbolic link is followed at each read: a swap of the link in its folder is an event,
    an edit of the linked file elsewhere is noticed by polling.

    The listed files and folders (`listed()`: resolved paths inside the allowed roots) are watched
    in docs.txt's order up to `max_files` readable files; the entries past the cap are not watched
    (one log line says so). `excluded` (the index folder) is never watched. `revalidate_urls()` is
    called before a rebuild of an edited docs.txt and every `refresh_s` seconds (0 = never), which also
    rebuilds, so listed URLs are asked again; an edit of a listed file costs no request.
    """

    def __init__(
        self,
        docs_file: Path,
        rebuild: Callable[[str], object],
        debounce_s: float,
        poll_s: float,
        use_events: bool = True,
        listed: Callable[[], Iterable[Path]] = tuple,
        max_files: int = 10_000,
        excluded: tuple[Path, ...] = (),
        refresh_s: float = 0.0,
        revalidate_urls: Callable[[], object] = lambda: None,
    ) -> None:
        self.docs_file = docs_file
        self._rebuild = rebuild
        self._debounce_s = debounce_s
        self._poll_s = poll_s
        self._use_events = use_events
        self._listed = listed
        self._max_files = max_files
        self._excluded = tuple(str(path) for path in excluded)
        self._refresh_s = refresh_s
        self._revalidate_urls = revalidate_urls
        self._cond = threading.Condition()
        self._due: float | None = None
        self._reason = ""
        self._documents_changed = False
        self._stopping = False
        self._seen = _fingerprint(docs_file)
        self._watched: tuple[Path, ...] = ()
        self._capped: str | None = None
        self._seen_files = self._scan()
        self._observer: Observer | None = None
        self._watches: dict[tuple[str, bool], ObservedWatch] = {}
        self._thread = threading.Thread(target=self._run, name="docs-watcher", daemon=True)

    def start(self, initial_reason: str | None = None) -> None:
        """Start watching; with `initial_reason`, also rebuild once right away, otherwise only if
        docs.txt or a listed file changed since the watcher was made (such as during the first build)."""
        try:
            if not self._use_events:
                raise OSError("turned off (DOCS_WATCH_EVENTS=0)")
            observer = Observer()
            observer.daemon = True
            observer.start()
            self._observer = observer
            self._schedule()
        except OSError as exc:
            log.warning("file events unavailable for %s (%s); polling only", self.docs_file, exc)
        if initial_reason:
            self.request(initial_reason, delay=0.0)
        elif _fingerprint(self.docs_file) != self._seen:
            self.request("start: docs.txt changed before watching began", delay=0.0)
        elif self._scan() != self._seen_files:
            self.request("start: a listed document changed before watching began", delay=0.0)
        self._thread.start()

    def request(self, reason: str, delay: float | None = None, documents: bool = False) -> None:
        """Ask for a rebuild after the debounce delay (restarted by each new request); `documents`:
        a listed document changed, which rebuilds even when docs.txt did not."""
        with self._cond:
            self._due = time.monotonic() + (self._debounce_s if delay is None else delay)
            self._reason = reason
            self._documents_changed |= documents
            self._cond.notify()

    def watches(self, path: str, is_directory: bool) -> bool:
        """Whether a change of `path` can change a listed document: a readable file or a folder inside
        a watched listed path, or a watched listed file, outside the excluded folders."""
        if any(path == ex or path.startswith(ex + os.sep) for ex in self._excluded):
            return False
        for target in self._watched:
            root = str(target)
            if path == root or (path.startswith(root + os.sep) and (is_directory or _readable(path))):
                return True
        return False

    def _scan(self) -> tuple:
        """The listed paths to watch (set as `_watched`, up to the cap) and their files' signature."""
        try:
            listed = list(dict.fromkeys(self._listed()))
        except Exception as exc:  # an unreadable docs.txt: its own rebuild reports it
            log.debug("listed documents unknown: %s", exc)
            listed = []
        files: list[tuple] = []
        watched: list[Path] = []
        capped = None
        for target in listed:
            found = list(_files(target))
            if len(files) + len(found) > self._max_files:
                capped = str(target)
                break
            files += found
            watched.append(target)
        if capped != self._capped and capped is not None:
            log.warning(
                "watching %d files, the limit (DOCS_WATCH_MAX_FILES=%d): %s and the entries after it in "
                "%s are not watched; their changes are read at the next rebuild",
                len(files), self._max_files, capped, self.docs_file.name,
            )  # fmt: skip
        self._capped = capped
        self._watched = tuple(watched)
        return tuple(files)

    def _schedule(self) -> None:
        """Watch docs.txt's folder and the watched listed paths (folders recursively); drop the rest."""
        if self._observer is None:
            return
        handler = _Events(self)
        wanted = {(str(self.docs_file.parent), False)}
        for target in self._watched:
            if target.is_dir():
                wanted.add((str(target), True))
            elif target.parent.is_dir():
                wanted.add((str(target.parent), False))
        for key in set(self._watches) - wanted:
            self._observer.unschedule(self._watches.pop(key))
        for key in wanted - set(self._watches):
            try:
                self._watches[key] = self._observer.schedule(handler, key[0], recursive=key[1])
            except OSError as exc:  # such as inotify's limit of watches: polling still sees it
                log.warning("cannot watch %s (%s); polling only", key[0], exc)

    def _run(self) -> None:
        now = time.monotonic()
        next_poll = now + self._poll_s
        next_refresh = now + self._refresh_s
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    deadlines = [
                        d
                        for d in (
                            self._due,
                            next_poll if self._poll_s else None,
                            next_refresh if self._refresh_s else None,
                        )
                        if d is not None
                    ]
                    if deadlines and now >= min(deadlines):
                        break
                    self._cond.wait(timeout=(min(deadlines) - now) if deadlines else None)
                if self._stopping:
                    return
                due, reason, documents = self._due, self._reason, self._documents_changed
                if due is not None and time.monotonic() >= due:
                    self._due, self._documents_changed = None, False
                else:
                    due, documents = None, False
                waiting = self._due is not None  # a request waits out its debounce
            if self._refresh_s and time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + self._refresh_s
                self._revalidate_urls()
                due, reason, documents = time.monotonic(), "URL refresh (DOCS_REFRESH_S)", True
            if self._poll_s and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self._poll_s
                if due is None and _fingerprint(self.docs_file) != self._seen:
                    due, reason = time.monotonic(), "docs.txt content changed (poll)"
                elif due is None and self._scan() != self._seen_files:
                    due, reason, documents = time.monotonic(), "listed documents changed (poll)", True
                if waiting and due is not None:  # the change joins the waiting request: one rebuild
                    with self._cond:
                        self._documents_changed |= documents
                    due, documents = None, False
            if due is None:
                continue
            current = _fingerprint(self.docs_file)
            if current == self._seen and reason.endswith("event") and not documents:
                continue
            if current != self._seen:  # the operator edited docs.txt: its URLs are asked again too
                self._revalidate_urls()
            self._seen = current
            self._seen_files = self._scan()
            self._schedule()
            try:
                self._rebuild(reason)
            except Exception:
                log.exception("index rebuild failed")

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread.is_alive():
            self._thread.join(timeout=10)
