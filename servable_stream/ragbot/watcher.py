"""Watch docs.txt (watchdog events plus a polling fallback) and rebuild the index in the background."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
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

log = logging.getLogger(__name__)

# Events that can change what docs.txt reads; opened and closed_no_write come from mere reads (the
# watcher's own and the rebuild's), so reacting to them would re-read docs.txt forever.
CHANGES = {EVENT_TYPE_CLOSED, EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED}


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class _Events(FileSystemEventHandler):
    """Changes in docs.txt's folder that can change what it reads: docs.txt itself, or, while it is a
    symbolic link, any entry of the folder (the link may go through a sibling, as a Kubernetes
    ConfigMap's docs.txt -> ..data/docs.txt does)."""

    def __init__(self, target: Path, on_change: Callable[[str], None]) -> None:
        self._target = target
        self._on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in CHANGES:
            return
        paths = {str(event.src_path), str(getattr(event, "dest_path", ""))}
        if str(self._target) in paths or self._target.is_symlink():
            self._on_change(f"{event.event_type} event")


class DocsWatcher:
    """Calls `rebuild(reason)` on a background thread after docs.txt changes.

    Changes are noticed by file-system events (watchdog) and, for bind mounts where events do not
    arrive, by comparing the file's content every `poll_s` seconds (0 turns polling off; events
    can be turned off too). Events within `debounce_s` of each other make one rebuild, and they
    rebuild only when the content changed since the watcher was made or last rebuilt. Rebuilds never
    overlap. A symbolic link is followed at each read: a swap of the link in its folder is an event,
    an edit of the linked file elsewhere is noticed by polling.
    """

    def __init__(
        self,
        docs_file: Path,
        rebuild: Callable[[str], object],
        debounce_s: float,
        poll_s: float,
        use_events: bool = True,
    ) -> None:
        self.docs_file = docs_file
        self._rebuild = rebuild
        self._debounce_s = debounce_s
        self._poll_s = poll_s
        self._use_events = use_events
        self._cond = threading.Condition()
        self._due: float | None = None
        self._reason = ""
        self._stopping = False
        self._seen = _fingerprint(docs_file)
        self._observer: Observer | None = None
        self._thread = threading.Thread(target=self._run, name="docs-watcher", daemon=True)

    def start(self, initial_reason: str | None = None) -> None:
        """Start watching; with `initial_reason`, also rebuild once right away, otherwise only if
        docs.txt changed since the watcher was made (such as during the first build)."""
        try:
            if not self._use_events:
                raise OSError("turned off (DOCS_WATCH_EVENTS=0)")
            observer = Observer()
            observer.schedule(
                _Events(self.docs_file, self.request), str(self.docs_file.parent), recursive=False
            )
            observer.daemon = True
            observer.start()
            self._observer = observer
        except OSError as exc:
            log.warning("file events unavailable for %s (%s); polling only", self.docs_file, exc)
        if initial_reason:
            self.request(initial_reason, delay=0.0)
        elif _fingerprint(self.docs_file) != self._seen:
            self.request("start: docs.txt changed before watching began", delay=0.0)
        self._thread.start()

    def request(self, reason: str, delay: float | None = None) -> None:
        """Ask for a rebuild after the debounce delay (restarted by each new request)."""
        with self._cond:
            self._due = time.monotonic() + (self._debounce_s if delay is None else delay)
            self._reason = reason
            self._cond.notify()

    def _run(self) -> None:
        next_poll = time.monotonic() + self._poll_s
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._due is not None and now >= self._due:
                        break
                    if self._poll_s and now >= next_poll:
                        break
                    deadlines = [d for d in (self._due, next_poll if self._poll_s else None) if d is not None]
                    self._cond.wait(timeout=(min(deadlines) - now) if deadlines else None)
                if self._stopping:
                    return
                due, reason = self._due, self._reason
                if due is not None and time.monotonic() >= due:
                    self._due = None
                else:
                    due = None
            if self._poll_s and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self._poll_s
                if due is None and _fingerprint(self.docs_file) != self._seen:
                    due, reason = time.monotonic(), "docs.txt content changed (poll)"
            if due is None:
                continue
            current = _fingerprint(self.docs_file)
            if current == self._seen and reason.endswith("event"):
                continue
            self._seen = current
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
