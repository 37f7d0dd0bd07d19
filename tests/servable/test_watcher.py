"""The docs.txt watcher: file events (with debounce), the polling fallback, no rebuild without a change,
no wake-up from mere reads, the content before the first build as baseline, swapped symlinks followed."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from pathlib import Path

import pytest
from ragbot import watcher as watcher_module
from ragbot.settings import Settings
from ragbot.watcher import DocsWatcher

from tests.conftest import wait_until
from tests.servable.rag import swap_configmap


def digest(text: str) -> str:
    """The fingerprint the watcher takes of a docs.txt holding `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Rebuilds:
    """The watcher's rebuilds, each with the fingerprint it read just before (on the same thread), and
    all its reads: tests wait on these, never for a time, and check what every rebuild saw."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reasons: list[str] = []
        self.at: list[float] = []
        self.seen: list[str | None] = []
        self.reads: list[str | None] = []
        self.lock = threading.Lock()
        fingerprint = watcher_module._fingerprint

        def recorded(path: Path) -> str | None:
            value = fingerprint(path)
            with self.lock:
                self.reads.append(value)
            return value

        monkeypatch.setattr(watcher_module, "_fingerprint", recorded)

    def __call__(self, reason: str) -> None:
        with self.lock:
            self.reasons.append(reason)
            self.at.append(time.monotonic())
            self.seen.append(self.reads[-1])


def watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: float | bool
) -> tuple[Path, Rebuilds, DocsWatcher]:
    """A docs.txt listing a.md, what the watcher made on it with `settings` rebuilds, and the watcher."""
    docs = tmp_path / "docs.txt"
    docs.write_text("a.md\n", encoding="utf-8")
    rebuilds = Rebuilds(monkeypatch)
    return docs, rebuilds, DocsWatcher(docs, rebuilds, **settings)


def save(path: Path, text: str, rename: bool) -> None:
    if rename:  # how most editors save: a new file renamed over the old one
        tmp = path.with_name(".docs.txt.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    else:
        path.write_text(text, encoding="utf-8")


def changed_every_time(rebuilds: Rebuilds, first: str) -> bool:
    """Whether every rebuild saw another docs.txt than the one before (than `first` for the first)."""
    seen = [digest(first), *rebuilds.seen]
    return all(before != after for before, after in itertools.pairwise(seen))


@pytest.mark.parametrize("rename", [False, True])
def test_file_events_rebuild_after_the_debounce_and_only_on_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rename: bool
):
    """A burst of saves makes a few rebuilds at most, none sooner than the debounce; a save of the same
    content rebuilds nothing. How many saves share a debounce depends on the machine's speed, so the
    counts are bounds, and "nothing" is that no rebuild ever saw the content of the one before."""
    docs, rebuilds, watcher = watched(tmp_path, monkeypatch, debounce_s=0.3, poll_s=0, use_events=True)
    texts = [f"a.md\nb{n}.md\n" for n in range(3)]
    watcher.start()
    try:
        started = time.monotonic()
        for text in texts:
            save(docs, text, rename)
        wait_until(lambda: digest(texts[-1]) in rebuilds.seen, "a rebuild of the last save")
        assert rebuilds.at[0] - started >= 0.3
        # an in-place write passes through an empty file, which a slow enough test may show the watcher
        assert 1 <= len(rebuilds.reasons) <= len(texts) * (1 if rename else 2)
        save(docs, texts[-1], rename)  # the same content again: nothing to rebuild
        save(docs, "a.md\nc.md\n", rename)  # a change after it, whose rebuild comes last
        wait_until(lambda: rebuilds.seen[-1] == digest("a.md\nc.md\n"), "a rebuild of the change")
        assert changed_every_time(rebuilds, "a.md\n"), rebuilds.reasons
        assert all(reason.endswith("event") for reason in rebuilds.reasons), rebuilds.reasons
    finally:
        watcher.stop()


def test_polling_notices_changes_without_file_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    docs, rebuilds, watcher = watched(tmp_path, monkeypatch, debounce_s=0.1, poll_s=0.2, use_events=False)
    watcher.start(initial_reason="start")
    try:
        wait_until(lambda: rebuilds.reasons == ["start"], "the start rebuild")
        polled = len(rebuilds.reads)
        # the watcher polls on one thread: once a second poll has read, the first one's outcome is in
        wait_until(lambda: len(rebuilds.reads) >= polled + 2, "two polls of the same content")
        assert rebuilds.reasons == ["start"]
        docs.write_text("a.md\nc.md\n", encoding="utf-8")
        wait_until(lambda: len(rebuilds.reasons) >= 2, "a rebuild after the edit")
        assert rebuilds.reasons[1] == "docs.txt content changed (poll)"
    finally:
        watcher.stop()


def test_a_change_polled_while_a_request_waits_out_its_debounce_joins_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """An edit's events and the next poll make one rebuild, not one at the poll and another when the
    debounce ends (the second with nothing left to change)."""
    docs, rebuilds, watcher = watched(tmp_path, monkeypatch, debounce_s=3600, poll_s=0.02, use_events=False)
    watcher.start()
    try:
        watcher.request("modified event")  # as the edit's file event does, before the edit lands
        docs.write_text("a.md\nc.md\n", encoding="utf-8")
        polled = len(rebuilds.reads)
        # the watcher polls on one thread: once a second poll has read, the first one's outcome is in
        wait_until(lambda: len(rebuilds.reads) >= polled + 2, "two polls of the edited docs.txt")
        assert rebuilds.reasons == []
        watcher.request("modified event", delay=0.0)  # the debounce is over
        wait_until(lambda: rebuilds.reasons, "the rebuild")
        assert rebuilds.reasons == ["modified event"]
        assert rebuilds.seen == [digest("a.md\nc.md\n")]
    finally:
        watcher.stop()


def test_reading_docs_txt_does_not_wake_the_watcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Reads (the watcher's own fingerprint, the rebuild's, any reader's) make opened/closed_no_write
    events only, which ask for nothing. File events arrive in order, so once a later write has
    rebuilt, the requests of the reads before it would be in."""
    requested: list[str] = []
    request = DocsWatcher.request

    def recorded(self: DocsWatcher, reason: str, delay: float | None = None) -> None:
        requested.append(reason)
        request(self, reason, delay)

    monkeypatch.setattr(DocsWatcher, "request", recorded)
    docs = tmp_path / "docs.txt"
    docs.write_text("a.md\n", encoding="utf-8")
    rebuilds = Rebuilds(monkeypatch)
    watcher = DocsWatcher(docs, lambda reason: (rebuilds(reason), docs.read_text()), 0.1, 0, True)
    watcher.start(initial_reason="start")
    try:
        wait_until(lambda: rebuilds.reasons == ["start"], "the start rebuild")
        for _ in range(3):  # a reader such as the index refresh
            docs.read_bytes()
        save(docs, "a.md\nb.md\n", rename=False)  # a real change still rebuilds
        wait_until(lambda: len(rebuilds.reasons) >= 2, "a rebuild after the edit")
        assert not {"opened event", "closed_no_write event"} & set(requested), requested
    finally:
        watcher.stop()


@pytest.mark.parametrize("edited", [False, True])
def test_start_compares_with_the_content_when_the_watcher_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edited: bool
):
    """An edit between making the watcher and starting it (the first build) is rebuilt; none is not.
    A start rebuild is asked for before the watcher thread runs, so it would come before the rebuild
    of a later save, which the test waits for."""
    docs, rebuilds, watcher = watched(tmp_path, monkeypatch, debounce_s=0.1, poll_s=0, use_events=True)
    if edited:
        docs.write_text("a.md\nb.md\n", encoding="utf-8")
    watcher.start()
    try:
        if edited:  # before the save, whose request would replace the pending one
            wait_until(lambda: rebuilds.reasons, "the start rebuild")
        save(docs, "a.md\nc.md\n", rename=True)
        wait_until(lambda: rebuilds.reasons and rebuilds.reasons[-1].endswith("event"), "the save's rebuild")
        assert rebuilds.reasons[:-1] == (["start: docs.txt changed before watching began"] if edited else [])
    finally:
        watcher.stop()


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
        wait_until(lambda: read, "a rebuild after the swap")
        assert read == ["a.md\nb.md\n"]
    finally:
        watcher.stop()
