"""The docs.txt watcher: file events (with debounce), the polling fallback, no rebuild without a change."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from ragbot.watcher import DocsWatcher

from tests.servable.rag import wait_for


class Rebuilds:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        with self.lock:
            self.reasons.append(reason)


def save(path: Path, text: str, rename: bool) -> None:
    if rename:  # how most editors save: a new file renamed over the old one
        tmp = path.with_name(".docs.txt.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    else:
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("rename", [False, True])
def test_file_events_rebuild_once_after_the_debounce(tmp_path: Path, rename: bool):
    docs = tmp_path / "docs.txt"
    docs.write_text("a.md\n", encoding="utf-8")
    rebuilds = Rebuilds()
    watcher = DocsWatcher(docs, rebuilds, debounce_s=0.3, poll_s=0, use_events=True)
    watcher.start()
    try:
        started = time.monotonic()
        for n in range(3):  # a burst of saves makes one rebuild
            save(docs, f"a.md\nb{n}.md\n", rename)
            time.sleep(0.05)
        assert wait_for(lambda: rebuilds.reasons, timeout=5)
        assert time.monotonic() - started >= 0.3
        time.sleep(0.6)
        assert len(rebuilds.reasons) == 1 and rebuilds.reasons[0].endswith("event")
        save(docs, "a.md\nb2.md\n", rename)  # same content again: nothing to rebuild
        time.sleep(0.8)
        assert len(rebuilds.reasons) == 1
    finally:
        watcher.stop()


def test_polling_notices_changes_without_file_events(tmp_path: Path):
    docs = tmp_path / "docs.txt"
    docs.write_text("a.md\n", encoding="utf-8")
    rebuilds = Rebuilds()
    watcher = DocsWatcher(docs, rebuilds, debounce_s=0.1, poll_s=0.2, use_events=False)
    watcher.start(initial_reason="start")
    try:
        assert wait_for(lambda: rebuilds.reasons == ["start"], timeout=5)
        time.sleep(0.5)
        assert rebuilds.reasons == ["start"]
        docs.write_text("a.md\nc.md\n", encoding="utf-8")
        assert wait_for(lambda: len(rebuilds.reasons) == 2, timeout=5)
        assert rebuilds.reasons[1] == "docs.txt content changed (poll)"
    finally:
        watcher.stop()
