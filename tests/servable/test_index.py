"""The on-disk index: incremental builds, reuse across restarts without embedding, atomic writes,
corrupt or mismatched stores detected and rebuilt, the last good index kept when docs.txt is bad.
Real OpenVINO embeddings (the default MiniLM folder)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ragbot.documents import Fetcher, FetchLimits
from ragbot.index import IndexManager
from ragbot.status import index_report

from tests.servable.rag import Counting, current_build

DOCS = {
    "docs/ferries.md": "# Ferries\nThe Nordvik ferry leaves the harbour at 06:40 every weekday.",
    "docs/bakery.txt": "The Hallgrim bakery sells cardamom buns for 38 kroner.",
    "docs/lighthouse.txt": "The Skarv lighthouse was painted teal in 1987.",
}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    for name, text in DOCS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "docs.txt").write_text("docs/\n", encoding="utf-8")
    return tmp_path


def manager(base: Path, model, key: str | None = None) -> tuple[IndexManager, Counting]:
    embeddings = Counting(model)
    fetcher = Fetcher(base, (base,), FetchLimits(2, 1_000_000, 2))
    index = IndexManager(base / "docs.txt", base / "index", fetcher, embeddings, key or model.key, 300, 30)
    return index, embeddings


def top_document(index: IndexManager, question: str) -> str:
    return index.search(question, 1)[0][0].metadata["document"]


def test_build_search_and_restart_without_embedding(base: Path, model):
    index, embeddings = manager(base, model)
    assert index.load_stored() is False
    status = index.refresh("first")
    assert (status["document_count"], status["embedded_chunks"], status["failures"]) == (3, 3, [])
    assert embeddings.texts == 3
    assert top_document(index, "When does the ferry leave?") == "docs/ferries.md"
    doc, score = index.search("How much is a cardamom bun?", 1)[0]
    assert doc.metadata["document"] == "docs/bakery.txt" and 0.3 < score <= 1.0

    restarted, embeddings = manager(base, model)
    assert restarted.load_stored() is True
    assert restarted.status["loaded_from_disk"] is True
    assert restarted.refresh("compare with docs.txt")["embedded_chunks"] == 0
    assert embeddings.texts == 0
    assert top_document(restarted, "What colour is the lighthouse?") == "docs/lighthouse.txt"
    saved = json.loads((base / "index" / "status.json").read_text(encoding="utf-8"))
    assert saved["chunks"] == 3 and saved["embedded_chunks"] == 0


def test_only_new_or_changed_documents_are_embedded(base: Path, model):
    index, embeddings = manager(base, model)
    index.refresh("first")
    (base / "docs" / "bakery.txt").write_text(
        "The Hallgrim bakery closed; it sells nothing now.", encoding="utf-8"
    )
    (base / "docs" / "museum.md").write_text("# Museum\nThe whaling museum opens at noon.", encoding="utf-8")
    embeddings.texts = 0
    status = index.refresh("changed")
    assert (status["embedded_chunks"], status["reused_chunks"], status["document_count"]) == (2, 2, 4)
    assert embeddings.texts == 2
    assert {d["document"]: d["embedded"] for d in status["documents"]} == {
        "docs/bakery.txt": True,
        "docs/ferries.md": False,
        "docs/lighthouse.txt": False,
        "docs/museum.md": True,
    }
    assert top_document(index, "When does the museum open?") == "docs/museum.md"


def test_bad_docs_file_keeps_the_last_good_index(base: Path, model):
    index, _ = manager(base, model)
    index.refresh("first")
    (base / "docs.txt").write_text("# nothing listed\n", encoding="utf-8")
    status = index.refresh("emptied")
    assert "lists no documents; previous index kept" in status["message"]
    (base / "docs.txt").write_text("docs/missing.md\n", encoding="utf-8")
    status = index.refresh("broken")
    assert "no document could be loaded" in status["message"]
    assert "no such file" in status["failures"][0]["reason"]
    (base / "docs.txt").unlink()
    assert "cannot read" in index.refresh("deleted")["message"]
    assert top_document(index, "When does the ferry leave?") == "docs/ferries.md"
    assert index.status["document_count"] == 3


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_chunks"])
def test_corrupt_store_is_detected_and_rebuilt(base: Path, model, damage: str):
    index, _ = manager(base, model)
    index.refresh("first")
    build = current_build(base / "index")
    if damage == "truncate":
        data = (build / "index.faiss").read_bytes()
        (build / "index.faiss").write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        (build / "chunks.json").write_text((build / "chunks.json").read_text().replace("ferry", "fairy"))
    else:
        (build / "chunks.json").unlink()
    restarted, embeddings = manager(base, model)
    assert restarted.load_stored() is False
    assert "missing or corrupt" in restarted.status["message"]
    status = restarted.refresh("rebuild")
    assert status["embedded_chunks"] == 3 and embeddings.texts == 3
    assert restarted.load_stored() is True


def test_index_of_another_embedding_model_is_rebuilt(base: Path, model):
    index, _ = manager(base, model)
    index.refresh("first")
    other, embeddings = manager(base, model, key="other-model:0000:mean")
    assert other.load_stored() is False
    assert "made with embedding model" in other.status["message"]
    assert other.refresh("rebuild")["embedded_chunks"] == 3 and embeddings.texts == 3


def test_interrupted_build_leaves_the_previous_index(base: Path, model):
    index, _ = manager(base, model)
    index.refresh("first")
    previous = current_build(base / "index")
    # What a crash (SIGKILL) in the middle of writing the next build leaves behind.
    partial = base / "index" / ".tmp-build-crashed"
    partial.mkdir()
    (partial / "index.faiss").write_bytes(b"partial")
    restarted, embeddings = manager(base, model)
    assert restarted.load_stored() is True and current_build(base / "index") == previous
    (base / "docs" / "new.txt").write_text("A new pier opened in May.", encoding="utf-8")
    restarted.refresh("next")
    assert embeddings.texts == 1
    assert not partial.exists() and not previous.exists()
    builds = sorted(p.name for p in (base / "index").iterdir() if p.is_dir())
    assert builds == [current_build(base / "index").name]


def test_identical_documents_keep_their_own_chunks(base: Path, model):
    (base / "docs" / "ferries-copy.md").write_text(DOCS["docs/ferries.md"], encoding="utf-8")
    index, embeddings = manager(base, model)
    for reason in ("first", "second", "third"):
        status = index.refresh(reason)
        assert (status["document_count"], status["chunks"]) == (4, 4), reason
        assert {d["document"]: d["chunks"] for d in status["documents"]} == {
            "docs/bakery.txt": 1,
            "docs/ferries-copy.md": 1,
            "docs/ferries.md": 1,
            "docs/lighthouse.txt": 1,
        }
    assert embeddings.texts == 4
    hits = index.search("When does the ferry leave?", 2)
    assert sorted(doc.metadata["document"] for doc, _ in hits) == ["docs/ferries-copy.md", "docs/ferries.md"]


def test_bad_entries_fail_alone_and_the_rest_is_indexed(base: Path, model):
    (base / "loop-a.md").symlink_to("loop-b.md")
    (base / "loop-b.md").symlink_to("loop-a.md")
    long_name = "x" * 300 + ".md"
    (base / "docs.txt").write_text(
        f"docs/\nloop-a.md\n{long_name}\nnul\0.md\nhttp://a..b/\nhttp://[::1\n", encoding="utf-8"
    )
    index, _ = manager(base, model)
    status = index.refresh("bad lines")
    assert (status["state"], status["document_count"]) == ("ready", 3)
    failures = {f["document"]: f["reason"] for f in status["failures"]}
    assert "Symlink loop" in failures["loop-a.md"]
    assert "File name too long" in failures[long_name]
    assert "embedded null byte" in failures["nul\0.md"]
    assert "label empty or too long" in failures["http://a..b/"]
    assert "Invalid IPv6 URL" in failures["http://[::1"]


def test_an_unexpected_error_while_loading_keeps_the_index(base: Path, model, monkeypatch):
    index, _ = manager(base, model)
    index.refresh("first")

    def broken(entry):
        raise KeyError("a loader bug")

    monkeypatch.setattr(index.fetcher, "load_entry", broken)
    status = index.refresh("broken loader")
    assert status["state"] == "ready" and "build failed: KeyError" in status["message"]
    assert json.loads((base / "index" / "status.json").read_text(encoding="utf-8"))["message"]
    assert top_document(index, "When does the ferry leave?") == "docs/ferries.md"


def test_docs_file_with_a_byte_order_mark(base: Path, model):
    (base / "docs.txt").write_text("\ufeffdocs/\n", encoding="utf-8")
    index, _ = manager(base, model)
    status = index.refresh("bom")
    assert (status["document_count"], status["failures"]) == (3, [])


def test_a_document_that_fails_keeps_its_previous_version(base: Path, model, site):
    url = site.route("/pier.txt", b"The new pier opened in May 2019.", Content_Type="text/plain")
    (base / "docs.txt").write_text(f"docs/\n{url}\n", encoding="utf-8")
    index, embeddings = manager(base, model)
    index.refresh("first")
    site.route("/pier.txt", status=503)
    index.fetcher.revalidate_urls()  # as every DOCS_REFRESH_S
    (base / "docs" / "bakery.txt").write_bytes("Kanelbullar f\xf6r 38 kronor.".encode("cp1252"))
    embeddings.texts = 0
    status = index.refresh("site down, bakery not UTF-8")
    assert status["document_count"] == 4 and embeddings.texts == 0
    failures = {f["document"]: f["reason"] for f in status["failures"]}
    assert failures == {
        url: "HTTP 503 Service Unavailable; kept the previous version",
        "docs/bakery.txt": "not utf-8 text (byte 13); save it as UTF-8 or declare its charset; "
        "kept the previous version",
    }
    assert top_document(index, "When did the pier open?") == url
    assert top_document(index, "How much is a cardamom bun?") == "docs/bakery.txt"
    report = {
        d["document"]: (d["state"], d.get("reason", "")) for d in index_report(status, None)["documents"]
    }
    assert report[url] == ("kept", failures[url]) and report["docs/ferries.md"] == ("indexed", "")

    restarted, _ = manager(base, model)
    assert restarted.load_stored() is True
    assert {d["document"] for d in restarted.store.documents} >= {url, "docs/bakery.txt"}
    status = restarted.refresh("still down")
    assert status["document_count"] == 4 and len(status["failures"]) == 2

    (base / "docs.txt").write_text("docs/\n", encoding="utf-8")
    (base / "docs" / "bakery.txt").unlink()
    status = restarted.refresh("removed")
    assert sorted(d["document"] for d in status["documents"]) == ["docs/ferries.md", "docs/lighthouse.txt"]


def test_a_document_the_rules_refuse_is_dropped(base: Path, model, site):
    url = site.route("/buoy", b"The red buoy marks the reef.", Content_Type="text/plain")
    (base / "docs.txt").write_text(f"docs/\n{url}\n", encoding="utf-8")
    index, _ = manager(base, model)
    index.refresh("first")
    site.route("/buoy", b"\x00\x01", Content_Type="application/octet-stream")
    index.fetcher.revalidate_urls()
    status = index.refresh("not a document any more")
    assert status["document_count"] == 3
    assert status["failures"] == [
        {"document": url, "reason": "unsupported content type 'application/octet-stream'"}
    ]


def test_replicas_sharing_the_folder_embed_each_document_once(base: Path, model):
    """Two managers on one folder (two replicas) refresh at the same time: the build lease makes one
    embed and the other take up its build; after a change, only the changed document is embedded."""
    replicas = [manager(base, model) for _ in range(2)]

    def refresh_all(reason: str) -> list[dict]:
        with ThreadPoolExecutor(len(replicas)) as pool:
            return list(pool.map(lambda replica: replica[0].refresh(reason), replicas))

    statuses = refresh_all("cold start")
    assert sum(embeddings.texts for _, embeddings in replicas) == 3
    assert sorted(status["embedded_chunks"] for status in statuses) == [0, 3]
    assert {index.serving for index, _ in replicas} == {current_build(base / "index").name}

    (base / "docs" / "bakery.txt").write_text("The Hallgrim bakery sells rye bread.", encoding="utf-8")
    for _, embeddings in replicas:
        embeddings.texts = 0
    refresh_all("bakery changed")
    assert sum(embeddings.texts for _, embeddings in replicas) == 1
    for index, _ in replicas:
        assert top_document(index, "Who sells rye bread?") == "docs/bakery.txt"
        assert "rye" in index.search("Who sells rye bread?", 1)[0][0].page_content


def test_a_replica_follows_the_build_another_published(base: Path, model):
    builder, _ = manager(base, model)
    follower, embeddings = manager(base, model)
    builder.refresh("first")
    follower.follow("published")
    assert follower.serving == builder.serving and len(follower.store.chunks) == 3
    (base / "docs" / "museum.md").write_text("# Museum\nThe whaling museum opens at noon.", encoding="utf-8")
    builder.refresh("museum added")
    follower.follow("published")
    assert top_document(follower, "When does the museum open?") == "docs/museum.md"
    assert embeddings.texts == 0 and follower.status["loaded_from_disk"] is True
