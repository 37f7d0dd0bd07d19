"""What the chatbot knows, for users: the index status through the graph (KServe, as on real OVMS), the
CLI's --status and the page's Documents panel in Chromium, which follows the documents by itself while
open. The real servable (default offline models) from a temporary copy whose docs.txt also lists a file
that does not exist, on the real local server."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from client.cli import EXIT_OK, EXIT_UNREACHABLE
from client.ovms_client import IndexStatus, OvmsClient

pytestmark = pytest.mark.slow

MISSING = "documents/missing-manual.md"
SAMPLES = (
    "faq.html",
    "harvest-tern-ht7.md",
    "ht7-safety-data-sheet.pdf",
    "lumenfold-company.md",
    "support.txt",
)
KETTLE = "# Zephyr kettle\nThe Zephyr kettle boils one litre of water in 94 seconds."


@pytest.fixture(scope="module")
def base(servable_copy) -> Path:
    return servable_copy.config.parent


@pytest.fixture(scope="module")
def real_server(ovms_server_module, servable_copy, base):
    """The real servable whose docs.txt also lists MISSING; file events and a short debounce."""
    docs = base / "docs.txt"
    docs.write_text(docs.read_text(encoding="utf-8") + f"{MISSING}\n", encoding="utf-8")
    return ovms_server_module(servable_copy.config, env={**servable_copy.env, "DOCS_WATCH_DEBOUNCE_S": "0.2"})


def test_the_index_status_comes_through_the_graph(real_server, base):
    status = OvmsClient(real_server.grpc_url).index_status()
    assert isinstance(status, IndexStatus), status
    states = {d.document: d.state for d in status.documents}
    assert states == {**{f"documents/{name}": "indexed" for name in SAMPLES}, MISSING: "failed"}
    assert all(d.chunks > 0 and d.indexed_at for d in status.documents if d.state == "indexed")
    assert [(d.document, d.reason) for d in status.failures] == [
        (MISSING, f"no such file or folder: {base / MISSING}")
    ]
    assert status.building is None and status.chunks == sum(d.chunks for d in status.documents)


def test_cli_status_lists_the_documents_and_the_failure(real_server, run_cli, base):
    result = run_cli("--status", url=real_server.grpc_url)
    assert result.returncode == EXIT_OK, result.stderr
    summary, *rows = result.stdout.splitlines()
    assert summary.startswith("Index ready: 5 documents, ")
    indexed = {row.split()[-1]: row.split() for row in rows if row.split()[0] == "indexed"}
    assert sorted(indexed) == [f"documents/{name}" for name in SAMPLES]
    assert all(int(chunks) > 0 and when.startswith("20") for _, chunks, _, when, _ in indexed.values())
    (failed,) = [row for row in rows if row.split()[0] == "failed"]
    assert failed.split()[1:4] == ["0", "chunks", "-"]
    assert failed.endswith(f"{MISSING}: no such file or folder: {base / MISSING}")


def test_cli_status_of_an_unreachable_server_exit_3_with_one_line(unused_port, run_cli):
    result = run_cli("--status", url=f"127.0.0.1:{unused_port}")
    assert result.returncode == EXIT_UNREACHABLE and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "not reachable" in result.stderr


@pytest.mark.browser
def test_the_documents_panel_follows_the_documents_while_open(
    real_server, base, start_page, browser_page, artifacts
):
    page = browser_page
    page.goto(start_page(real_server.grpc_url))
    panel = page.locator("#documents-status")
    expect(panel).not_to_be_visible()
    page.click("#documents")
    for name in SAMPLES:
        expect(panel).to_contain_text(f"documents/{name}")
    row = panel.locator("tr", has_text="missing-manual.md")
    expect(row).to_contain_text("failed: no such file or folder")
    expect(panel).to_contain_text("Index ready: 5 documents")
    row.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "client-page-documents.png"))

    # A file added to the listed folder shows up with no click: the open panel asks again by itself.
    (base / "documents" / "zephyr-kettle.md").write_text(KETTLE, encoding="utf-8")
    expect(panel.locator("tr", has_text="documents/zephyr-kettle.md")).to_contain_text("indexed")
    expect(panel).to_contain_text("Index ready: 6 documents")
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "Exception" not in body
