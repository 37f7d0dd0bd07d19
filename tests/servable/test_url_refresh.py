"""Listed URLs stay current: asked again every DOCS_REFRESH_S with conditional requests, so an unchanged
page (304 from a loopback server) costs no download and no embedding, a changed one is embedded again,
a failing one keeps its last good version, and an edit of a local file asks no URL. Real HTTP on
loopback, real OpenVINO embeddings, the embedding counters of /metrics (prometheus_client)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from ragbot.documents import Fetcher, FetchLimits
from ragbot.index import IndexManager
from ragbot.watcher import DocsWatcher

from tests.conftest import wait_until
from tests.servable.rag import Counting

PIER = b"The new pier of Skarv opened in May 2019."
PIER_LATER = b"The new pier of Skarv closed for repairs in March 2031."


def embedded_documents() -> float:
    """The servable's counter of texts embedded for the index (rag_embedded_texts_total)."""
    return REGISTRY.get_sample_value("rag_embedded_texts_total", {"kind": "documents"}) or 0.0


def fetches(result: str) -> float:
    return REGISTRY.get_sample_value("rag_url_fetches_total", {"result": result}) or 0.0


def manager(base: Path, model, docs: list[str]) -> tuple[IndexManager, Counting]:
    (base / "docs.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    embeddings = Counting(model)
    fetcher = Fetcher(base, (base,), FetchLimits(2, 1_000_000, 2))
    return IndexManager(
        base / "docs.txt", base / "index", fetcher, embeddings, model.key, 300, 30
    ), embeddings


def text_of(index: IndexManager, url: str) -> str:
    return " ".join(c["text"] for c in index.store.chunks if c["metadata"]["document"] == url)


@pytest.mark.parametrize(
    "validator", [{"ETag": '"v1"'}, {"Last_Modified": "Wed, 21 Oct 2026 07:28:00 GMT"}], ids=["etag", "date"]
)
def test_an_unchanged_page_is_neither_downloaded_nor_embedded(tmp_path: Path, model, site, validator):
    path = f"/pier-{next(iter(validator)).lower()}.txt"
    url = site.route(path, PIER, Content_Type="text/plain", **validator)
    index, embeddings = manager(tmp_path, model, [url])
    index.refresh("start")
    assert embeddings.texts == 1 and PIER.decode() in text_of(index, url)
    counted, not_modified = embedded_documents(), fetches("not_modified")

    index.fetcher.revalidate_urls()
    status = index.refresh("URL refresh")
    hits = [hit for hit in site.hits if hit.path == path]
    assert [(hit.status, hit.body_bytes) for hit in hits] == [(200, len(PIER)), (304, 0)]
    conditional = (
        {"If-None-Match": '"v1"'}
        if "ETag" in validator
        else {"If-Modified-Since": validator["Last_Modified"]}
    )
    assert conditional.items() <= hits[1].headers.items()
    assert embeddings.texts == 1 and embedded_documents() == counted and status["embedded_chunks"] == 0
    assert fetches("not_modified") == not_modified + 1
    assert PIER.decode() in text_of(index, url) and status["failures"] == []


def test_a_changed_page_is_embedded_again_and_a_failing_one_keeps_its_version(tmp_path: Path, model, site):
    url = site.route("/pier.txt", PIER, Content_Type="text/plain", ETag='"v1"')
    index, embeddings = manager(tmp_path, model, [url])
    index.refresh("start")
    site.route("/pier.txt", PIER_LATER, Content_Type="text/plain", ETag='"v2"')
    index.fetcher.revalidate_urls()
    status = index.refresh("URL refresh")
    assert status["embedded_chunks"] == 1 and embeddings.texts == 2
    assert "closed for repairs" in text_of(index, url)

    site.route("/pier.txt", status=503)
    index.fetcher.revalidate_urls()
    status = index.refresh("URL refresh")
    assert "closed for repairs" in text_of(index, url) and embeddings.texts == 2
    assert status["failures"] == [
        {"document": url, "reason": "HTTP 503 Service Unavailable; kept the previous version"}
    ]


def watching(index: IndexManager, base: Path, refresh_s: float) -> DocsWatcher:
    watcher = DocsWatcher(
        base / "docs.txt", index.refresh, 0.1, 0.0, True,
        listed=lambda: index.fetcher.local_paths(base / "docs.txt"),
        refresh_s=refresh_s, revalidate_urls=index.fetcher.revalidate_urls,
    )  # fmt: skip
    watcher.start()
    return watcher


def test_the_watcher_asks_the_urls_again_every_refresh(tmp_path: Path, model, site):
    """DOCS_REFRESH_S (0.3 s here) revalidates on its own: unchanged, nothing is embedded; changed, the
    new text is served."""
    url = site.route("/every.txt", PIER, Content_Type="text/plain", ETag='"v1"')
    index, embeddings = manager(tmp_path, model, [url])
    index.refresh("start")
    watcher = watching(index, tmp_path, refresh_s=0.3)
    try:
        answered = lambda: [hit.status for hit in site.hits if hit.path == "/every.txt"]  # noqa: E731
        wait_until(lambda: answered().count(304) >= 2, "two refreshes answered 304")
        assert embeddings.texts == 1
        site.route("/every.txt", PIER_LATER, Content_Type="text/plain", ETag='"v2"')
        wait_until(lambda: "closed for repairs" in text_of(index, url), "the changed page served")
        assert embeddings.texts == 2
    finally:
        watcher.stop()


def test_a_local_edit_asks_no_url_and_a_docs_txt_edit_asks_them_conditionally(tmp_path: Path, model, site):
    url = site.route("/local.txt", PIER, Content_Type="text/plain", ETag='"v1"')
    (tmp_path / "kettle.md").write_text("# Kettle\nThe kettle boils in 94 seconds.", encoding="utf-8")
    index, embeddings = manager(tmp_path, model, ["kettle.md", url])
    index.refresh("start")
    watcher = watching(index, tmp_path, refresh_s=0)
    try:
        (tmp_path / "kettle.md").write_text("# Kettle\nThe kettle boils in 61 seconds.", encoding="utf-8")
        wait_until(lambda: "61 seconds" in text_of(index, "kettle.md"), "the local edit served")
        assert [hit.status for hit in site.hits if hit.path == "/local.txt"] == [200]
        (tmp_path / "docs.txt").write_text(f"# the pier and the kettle\nkettle.md\n{url}\n", encoding="utf-8")
        wait_until(lambda: len([h for h in site.hits if h.path == "/local.txt"]) == 2, "the URL asked again")
        assert [hit.status for hit in site.hits if hit.path == "/local.txt"] == [200, 304]
        assert embeddings.texts == 3  # the kettle twice and the pier once
    finally:
        watcher.stop()


def test_a_url_taken_off_docs_txt_is_forgotten(tmp_path: Path, model, site):
    """Its kept version goes with it: listed again, it is downloaded whole, not asked conditionally."""
    url = site.route("/pier-gone.txt", PIER, Content_Type="text/plain", ETag='"v1"')
    (tmp_path / "notes.txt").write_text("The harbour office opens at eight.", encoding="utf-8")
    index, _ = manager(tmp_path, model, [url, "notes.txt"])
    index.refresh("start")
    (tmp_path / "docs.txt").write_text("notes.txt\n", encoding="utf-8")
    index.refresh("docs.txt changed")
    assert text_of(index, url) == ""
    (tmp_path / "docs.txt").write_text(f"{url}\nnotes.txt\n", encoding="utf-8")
    index.fetcher.revalidate_urls()
    status = index.refresh("docs.txt changed")
    hits = [hit for hit in site.hits if hit.path == "/pier-gone.txt"]
    assert [(hit.status, hit.body_bytes) for hit in hits] == [(200, len(PIER)), (200, len(PIER))]
    assert "If-None-Match" not in hits[1].headers
    assert PIER.decode() in text_of(index, url) and status["failures"] == []
