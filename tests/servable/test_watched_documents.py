"""The index follows the files and folders docs.txt lists, not only docs.txt: a file added, edited,
renamed or deleted (in nested folders too) is indexed incrementally, by file events and by the polling
fallback; a burst of files makes a few rebuilds; the cap on watched files logs one line; links out of
the allowed roots stay refused. Real watchdog, real files, real OpenVINO embeddings."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ragbot.documents import Fetcher, FetchLimits
from ragbot.index import IndexManager
from ragbot.watcher import DocsWatcher

from tests.conftest import wait_until
from tests.servable.rag import Counting

KETTLE = "# Zephyr kettle\nThe Zephyr kettle boils one litre of water in 94 seconds."
EDITED = "# Zephyr kettle\nThe Zephyr kettle now boils one litre of water in 61 seconds."


@dataclass
class Watched:
    """A folder with docs.txt, its index, the watcher on them, and counts of rebuilds and embeddings."""

    base: Path
    index: IndexManager
    embeddings: Counting
    watcher: DocsWatcher
    rebuilds: list[str]

    def documents(self) -> dict[str, str]:
        """Document -> its text as served (its chunks joined)."""
        store = self.index.store
        texts: dict[str, list[str]] = {}
        for chunk in store.chunks if store else []:
            texts.setdefault(chunk["metadata"]["document"], []).append(chunk["text"])
        return {document: " ".join(parts) for document, parts in texts.items()}

    def failures(self) -> dict[str, str]:
        return {f["document"]: f["reason"] for f in self.index.status.get("failures", [])}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def watched(tmp_path: Path, model) -> Iterator[callable]:
    """Factory: docs.txt listing `entries` in tmp_path, first index built, watcher started."""
    made: list[DocsWatcher] = []

    def make(entries: list[str], events: bool = True, poll_s: float = 0.0, **options) -> Watched:
        write(tmp_path / "docs.txt", "\n".join(entries) + "\n")
        embeddings = Counting(model)
        fetcher = Fetcher(tmp_path, (tmp_path,), FetchLimits(2, 1_000_000, 2))
        index = IndexManager(
            tmp_path / "docs.txt", tmp_path / "index", fetcher, embeddings, model.key, 300, 30
        )
        rebuilds: list[str] = []
        lock = threading.Lock()

        def rebuild(reason: str) -> None:
            with lock:
                rebuilds.append(reason)
            index.refresh(reason)

        watcher = DocsWatcher(
            tmp_path / "docs.txt", rebuild, 0.3, poll_s, events,
            listed=lambda: fetcher.local_paths(tmp_path / "docs.txt"), excluded=(tmp_path / "index",),
            **options,
        )  # fmt: skip
        index.refresh("start")
        watcher.start()
        made.append(watcher)
        return Watched(tmp_path, index, embeddings, watcher, rebuilds)

    yield make
    for watcher in made:
        watcher.stop()


def served(w: Watched, document: str, text: str) -> bool:
    return text in w.documents().get(document, "")


@pytest.mark.parametrize("events", [True, False], ids=["file events", "polling only"])
def test_a_folder_follows_its_files_incrementally(watched, tmp_path: Path, events: bool):
    """Add (in a nested folder), edit, rename and delete: each is served after its rebuild, and only
    the new text is embedded (a rename reuses the chunks of the same content)."""
    write(tmp_path / "docs" / "a.md", "# Ferries\nThe Nordvik ferry leaves at 06:40.")
    w = watched(["docs/"], events=events, poll_s=0.0 if events else 0.2)
    assert set(w.documents()) == {"docs/a.md"}
    embedded = w.embeddings.texts

    kettle = tmp_path / "docs" / "kitchen" / "appliances" / "zephyr-kettle.md"
    name = "docs/kitchen/appliances/zephyr-kettle.md"
    write(kettle, KETTLE)
    wait_until(lambda: served(w, name, "94 seconds"), "the new file in a nested folder served")
    assert w.embeddings.texts == embedded + 1
    assert w.index.search("How fast does the Zephyr kettle boil?", 1)[0][0].metadata["document"] == name

    write(kettle, EDITED)
    wait_until(lambda: served(w, name, "61 seconds"), "the edit served")
    assert w.embeddings.texts == embedded + 2

    kettle.rename(kettle.with_name("kettle.md"))
    wait_until(lambda: "docs/kitchen/appliances/kettle.md" in w.documents(), "the renamed file served")
    assert name not in w.documents()
    assert w.embeddings.texts == embedded + 2  # the same content: its chunks are reused

    shutil.rmtree(tmp_path / "docs" / "kitchen")
    wait_until(lambda: set(w.documents()) == {"docs/a.md"}, "the deleted folder gone")
    assert w.failures() == {} and w.embeddings.texts == embedded + 2


def test_a_listed_file_is_followed_and_the_index_folder_is_not(watched, tmp_path: Path):
    """A file docs.txt names directly, edited in place and saved by rename as editors do; "." lists the
    folder that holds the index too, whose writes must not start rebuilds."""
    write(tmp_path / "kettle.md", KETTLE)
    w = watched(["kettle.md", "."])
    write(tmp_path / "kettle.md", EDITED)
    wait_until(lambda: served(w, "kettle.md", "61 seconds"), "the in-place edit served")
    write(tmp_path / ".kettle.md.swp", KETTLE.replace("94", "75"))
    (tmp_path / ".kettle.md.swp").replace(tmp_path / "kettle.md")
    wait_until(lambda: served(w, "kettle.md", "75 seconds"), "the save by rename served")
    rebuilds = len(w.rebuilds)
    write(tmp_path / "marker.md", "# Marker\nThe last change.")  # a rebuild after any the index started
    wait_until(lambda: "marker.md" in w.documents(), "the last change served")
    # the rebuilds write the index folder inside ".": those writes start no rebuilds of their own
    assert len(w.rebuilds) <= rebuilds + 2, w.rebuilds


def test_a_burst_of_200_files_makes_a_few_rebuilds(watched, tmp_path: Path):
    """200 files copied in at once: events within the debounce of each other make one rebuild; each
    file is embedded once however many rebuilds there are."""
    source = tmp_path / "incoming"
    for n in range(200):
        write(source / f"note-{n:03}.txt", f"Shelf {n} of the Skarv archive holds the letters of {1800 + n}.")
    write(tmp_path / "docs" / "a.md", "# Ferries\nThe Nordvik ferry leaves at 06:40.")
    w = watched(["docs/"])
    before, embedded = len(w.rebuilds), w.embeddings.texts
    for path in sorted(source.iterdir()):
        shutil.copy(path, tmp_path / "docs" / path.name)
    wait_until(lambda: len(w.documents()) == 201, "all 200 files served")
    rebuilds = len(w.rebuilds) - before
    print(f"200 files copied: {rebuilds} rebuilds")
    assert 1 <= rebuilds <= 5, w.rebuilds
    assert w.embeddings.texts == embedded + 200


def test_past_the_cap_the_entries_are_not_watched_and_one_line_says_so(
    watched, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """With DOCS_WATCH_MAX_FILES=2, docs.txt's first entry (1 file) is watched and the folder after it
    (3 files) is not; the line is logged once however often the watcher looks again."""
    write(tmp_path / "first.md", "# First\nThe first entry.")
    for n in range(3):
        write(tmp_path / "docs" / f"{n}.md", f"# Note {n}\nNote number {n}.")
    caplog.set_level(logging.WARNING, logger="ragbot.watcher")
    w = watched(["first.md", "docs/"], events=True, poll_s=0.1, max_files=2)
    for n in range(3):  # each edit of the watched file is a rebuild, and the watcher scans again
        write(tmp_path / "first.md", f"# First\nThe first entry, edit {n}.")
        wait_until(lambda n=n: served(w, "first.md", f"edit {n}"), f"edit {n} of the watched file")
    capped = [r.getMessage() for r in caplog.records if "DOCS_WATCH_MAX_FILES=2" in r.getMessage()]
    assert len(capped) == 1 and f"{tmp_path / 'docs'} and the entries after it" in capped[0], capped
    assert set(w.documents()) == {"first.md", "docs/0.md", "docs/1.md", "docs/2.md"}


def test_links_out_of_the_allowed_roots_stay_refused(watched, tmp_path: Path):
    """A link in a watched folder to a file outside the allowed roots is refused with the reason, and
    edits of that file are never indexed."""
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    write(outside / "secret.md", "The vault combination is 99-31-07.")
    write(tmp_path / "docs" / "a.md", "# Ferries\nThe Nordvik ferry leaves at 06:40.")
    (tmp_path / "docs" / "leak.md").symlink_to(outside / "secret.md")
    try:
        w = watched(["docs/"], events=True, poll_s=0.1)
        assert "outside the allowed roots" in w.failures()["docs/leak.md"]
        write(outside / "secret.md", "The vault combination is now 12-12-12.")
        write(tmp_path / "docs" / "b.md", "# Bakery\nThe bakery sells buns.")
        wait_until(lambda: "docs/b.md" in w.documents(), "a change after the edit outside served")
        assert "vault" not in " ".join(w.documents().values())
        assert "outside the allowed roots" in w.failures()["docs/leak.md"]
    finally:
        shutil.rmtree(outside)
