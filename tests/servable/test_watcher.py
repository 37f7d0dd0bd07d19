"""The docs.txt watcher: file events (with debounce), the polling fallback, no rebuild without a change,
no wake-up from mere reads, the content before the first build as baseline, swapped symlinks followed."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from ragbot import watcher as watcher_module
from ragbot.settings import Settings
from ragbot.watcher import DocsWatcher

from tests.servable.rag import wait_for


class Rebuilds:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        with self.lock:
            self.reasons.append(reason)


def watched(tmp_path: Path, **settings) -> tuple[Path, Rebuilds, DocsWatcher]:
    """A docs.txt listing a.md, what the watcher made on it with `settings` rebuilds, and the watcher."""
    docs = tmp_path / "docs.txt"
    docs.write_text("a.md\n", encoding="utf-8")
    rebuilds = Rebuilds()
    return docs, rebuilds, DocsWatcher(docs, rebuilds, **settings)


def save(path: Path, text: str, rename: bool) -> None:
    if rename:  # how most editors save: a new file renamed over the old one
        tmp = path.with_name(".docs.txt.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    else:
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("rename", [False, True])
def test_file_events_rebuild_once_after_the_debounce(tmp_path: Path, rename: bool):
    docs, rebuilds, watcher = watched(tmp_path, debounce_s=0.3, poll_s=0, use_events=True)
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
    docs, rebuilds, watcher = watched(tmp_path, debounce_s=0.1, poll_s=0.2, use_events=False)
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


def test_reading_docs_txt_does_not_wake_the_watcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Reads (the watcher's own fingerprint, the rebuild's) make opened/closed_no_write events only."""
    docs = tmp_path / "docs.txt"
    docs.write_text("a.md\n", encoding="utf-8")
    reads: list[Path] = []
    fingerprint = watcher_module._fingerprint
    monkeypatch.setattr(watcher_module, "_fingerprint", lambda path: reads.append(path) or fingerprint(path))
    rebuilds = Rebuilds()
    watcher = DocsWatcher(docs, lambda reason: (rebuilds(reason), docs.read_text()), 0.1, 0, True)
    watcher.start(initial_reason="start")
    try:
        assert wait_for(lambda: rebuilds.reasons == ["start"], timeout=5)
        time.sleep(0.3)
        settled = len(reads)
        for _ in range(3):  # a reader such as the index refresh
            docs.read_bytes()
        time.sleep(1.0)
        assert len(reads) == settled and rebuilds.reasons == ["start"]
        save(docs, "a.md\nb.md\n", rename=False)  # a real change still rebuilds
        assert wait_for(lambda: len(rebuilds.reasons) == 2, timeout=5)
    finally:
        watcher.stop()


@pytest.mark.parametrize("edited", [False, True])
def test_start_compares_with_the_content_when_the_watcher_was_made(tmp_path: Path, edited: bool):
    """An edit between making the watcher and starting it (the first build) is rebuilt; none is not."""
    docs, rebuilds, watcher = watched(tmp_path, debounce_s=0.1, poll_s=0, use_events=True)
    if edited:
        docs.write_text("a.md\nb.md\n", encoding="utf-8")
    watcher.start()
    try:
        time.sleep(0.6)
        assert rebuilds.reasons == (["start: docs.txt changed before watching began"] if edited else [])
    finally:
        watcher.stop()


def swap_configmap(folder: Path, text: str) -> None:
    """How Kubernetes updates a ConfigMap volume: a new ..vN folder, ..data re-pointed, the old removed."""
    old = os.readlink(folder / "..data")
    new = folder / f"..v{int(old[3:]) + 1}"
    new.mkdir()
    (new / "docs.txt").write_text(text, encoding="utf-8")
    os.symlink(new.name, folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")
    shutil.rmtree(folder / old)


def relink(folder: Path, text: str) -> None:
    """`ln -sfn new.txt docs.txt`: a new link renamed over the old one (the old target stays)."""
    (folder / "new.txt").write_text(text, encoding="utf-8")
    os.symlink("new.txt", folder / ".docs.txt.tmp")
    os.replace(folder / ".docs.txt.tmp", folder / "docs.txt")


@pytest.mark.parametrize("swap", [swap_configmap, relink])
def test_a_swapped_symlink_is_followed(tmp_path: Path, swap):
    """DOCS_FILE keeps its links: the watcher (events only) notices the swap and reads the new file."""
    folder = tmp_path / "cfg"
    (folder / "..v1").mkdir(parents=True)
    (folder / "..v1" / "docs.txt").write_text("a.md\n", encoding="utf-8")
    os.symlink("..v1", folder / "..data")
    os.symlink("..data/docs.txt", folder / "docs.txt")
    docs_file = Settings.from_env(tmp_path, {"DOCS_FILE": "cfg/docs.txt"}).docs_file
    assert docs_file == folder / "docs.txt"
    read: list[str] = []
    watcher = DocsWatcher(docs_file, lambda reason: read.append(docs_file.read_text()), 0.1, 0, True)
    watcher.start()
    try:
        swap(folder, "a.md\nb.md\n")
        assert wait_for(lambda: read == ["a.md\nb.md\n"], timeout=5), read
    finally:
        watcher.stop()
