"""The document fetcher and loaders: formats, docs.txt parsing, and every refusal with its reason."""

from __future__ import annotations

import codecs
import shutil
import subprocess
from pathlib import Path

import pytest
from ragbot.documents import Entry, Fetcher, FetchLimits, parse_docs_file

from tests.conftest import LIVENESS_S
from tests.servable.rag import SERVABLE, LoopbackSite

LIMITS = FetchLimits(timeout_s=1.0, max_bytes=4096, max_redirects=2)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "servable"
    (root / "docs" / "nested").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# Alpha title\nThe alpha fact.", encoding="utf-8")
    (root / "docs" / "nested" / "b.txt").write_text("Bravo fact.", encoding="utf-8")
    (root / "docs" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "outside.txt").write_text("secret", encoding="utf-8")
    (root / "docs" / "link.txt").symlink_to(tmp_path / "outside.txt")
    return root


def load(fetcher: Fetcher, text: str):
    return fetcher.load_entry(Entry(1, text))


def reasons(failures) -> list[str]:
    return [f.reason for f in failures]


def test_docs_file_skips_comments_and_blank_lines():
    entries = parse_docs_file(
        "# comment\n\n  documents/  \nhttps://example.org/a.html\n   # indented comment\n"
    )
    assert entries == [Entry(3, "documents/"), Entry(4, "https://example.org/a.html")]


def test_sample_documents_load_in_every_format():
    fetcher = Fetcher(SERVABLE, (SERVABLE,), FetchLimits(5, 10_000_000, 3))
    documents, failures = load(fetcher, "documents/")
    assert failures == []
    by_source = {d.source: d for d in documents}
    assert set(by_source) == {
        "documents/faq.html",
        "documents/harvest-tern-ht7.md",
        "documents/ht7-safety-data-sheet.pdf",
        "documents/lumenfold-company.md",
        "documents/support.txt",
    }
    assert by_source["documents/faq.html"].title == "Lumenfold Robotics FAQ"
    assert "45 days" in by_source["documents/faq.html"].text
    assert "not content" not in by_source["documents/faq.html"].text  # scripts are dropped
    assert by_source["documents/harvest-tern-ht7.md"].title == "Harvest Tern HT-7 product sheet"
    assert "11 metres per second" in by_source["documents/ht7-safety-data-sheet.pdf"].text
    assert by_source["documents/ht7-safety-data-sheet.pdf"].title == "Harvest Tern HT-7 Safety Data Sheet"


def test_folder_reads_supported_files_and_reports_the_rest(base: Path):
    documents, failures = load(Fetcher(base, (base,), LIMITS), "docs")
    assert [d.source for d in documents] == ["docs/a.md", "docs/nested/b.txt"]
    assert documents[0].title == "Alpha title"
    failed = {f.source: f.reason for f in failures}
    assert "unsupported file type '.png'" in failed["docs/image.png"]
    assert "outside the allowed roots" in failed["docs/link.txt"]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file' is not allowed (http and https only)"),
        ("ftp://127.0.0.1/a.txt", "scheme 'ftp' is not allowed"),
        ("/etc/passwd", "path /etc/passwd is outside the allowed roots"),
        ("../outside.txt", "outside the allowed roots"),
        ("docs/missing.md", "no such file or folder"),
    ],
)
def test_refused_entries(base: Path, entry: str, reason: str):
    documents, failures = load(Fetcher(base, (base,), LIMITS), entry)
    assert documents == []
    assert len(failures) == 1 and reason in failures[0].reason


def test_extra_allowed_root(base: Path):
    fetcher = Fetcher(base, (base, base.parent), LIMITS)
    documents, failures = load(fetcher, "../outside.txt")
    assert failures == [] and documents[0].text == "secret"


def test_local_file_over_the_size_limit(base: Path):
    (base / "big.txt").write_text("x" * 5000, encoding="utf-8")
    _, failures = load(Fetcher(base, (base,), LIMITS), "big.txt")
    assert "5000 bytes is more than the limit of 4096 (FETCH_MAX_BYTES)" in failures[0].reason


def test_url_formats_and_redirects(base: Path, site):
    html = b"<html><head><title>Web page</title></head><body><p>Charlie fact.</p></body></html>"
    site.route("/page", html, Content_Type="text/html; charset=utf-8")
    site.route("/hop1", status=302, Location="/page")
    fetcher = Fetcher(base, (base,), LIMITS)
    documents, failures = load(fetcher, site.url("/hop1"))
    assert failures == []
    assert (documents[0].source, documents[0].title, documents[0].text) == (
        site.url("/hop1"),
        "Web page",
        "Web page\nCharlie fact.",
    )


@pytest.mark.parametrize(
    ("path", "route", "reason"),
    [
        ("/gone", {}, "HTTP 404 Not Found"),
        (
            "/big",
            {"body": b"y" * 5000, "Content_Type": "text/plain"},
            "5000 bytes is more than the limit of 4096",
        ),
        ("/loop", {"status": 302, "Location": "/loop"}, "more than 2 redirects (FETCH_MAX_REDIRECTS)"),
        ("/to-file", {"status": 301, "Location": "file:///etc/passwd"}, "scheme 'file' is not allowed"),
        (
            "/binary",
            {"body": b"\x00\x01", "Content_Type": "application/octet-stream"},
            "unsupported content type",
        ),
        # a server that does not answer while the test lasts: only the fetch timeout can end the wait
        (
            "/silent",
            {"body": b"late", "delay": LIVENESS_S, "Content_Type": "text/plain"},
            "took longer than 1.0 s (FETCH_TIMEOUT_S)",
        ),
    ],
)
def test_refused_urls(base: Path, site, path: str, route: dict, reason: str):
    if route:
        site.route(path, **route)
    documents, failures = load(Fetcher(base, (base,), LIMITS), site.url(path))
    assert documents == [] and reason in failures[0].reason


def test_tls_certificate_is_verified(base: Path, tmp_path: Path):
    """A loopback HTTPS server with a self-signed certificate is refused (verification stays on)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    pem = tmp_path / "self-signed.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(pem), "-out", str(pem)],
        check=True, capture_output=True,
    )  # fmt: skip
    site = LoopbackSite(tls_cert=pem)
    try:
        site.route("/doc.txt", b"text", Content_Type="text/plain")
        _, failures = load(Fetcher(base, (base,), LIMITS), site.url("/doc.txt"))
    finally:
        site.close()
    assert site.url("").startswith("https://")
    assert "TLS certificate verification failed" in failures[0].reason
    assert "CERTIFICATE_VERIFY_FAILED" in failures[0].reason


def test_docs_file_byte_order_mark_is_not_part_of_the_first_entry():
    assert parse_docs_file("\ufeffdocs/\n# comment\n") == [Entry(1, "docs/")]
    assert parse_docs_file("\ufeff# comment\nweb.md\n") == [Entry(2, "web.md")]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("loop-a.md", "cannot load: RuntimeError: Symlink loop from"),
        ("x" * 300 + ".md", "File name too long"),
        ("nul\0.md", "cannot load: ValueError: embedded null byte"),
        ("http://a..b/", "cannot load: LocationParseError: Failed to parse: 'a..b', label empty or too long"),
        ("http://[::1", "cannot load: ValueError: Invalid IPv6 URL"),
    ],
)
def test_malformed_entries_fail_alone(base: Path, entry: str, reason: str):
    (base / "loop-a.md").symlink_to("loop-b.md")
    (base / "loop-b.md").symlink_to("loop-a.md")
    documents, failures = load(Fetcher(base, (base,), LIMITS), entry)
    assert documents == [] and len(failures) == 1
    assert failures[0].source == entry and reason in failures[0].reason


def test_malformed_redirect_fails_alone(base: Path, site):
    site.route("/bad-hop", status=302, Location="http://docs..example.com/x")
    documents, failures = load(Fetcher(base, (base,), LIMITS), site.url("/bad-hop"))
    assert documents == [] and "label empty or too long" in failures[0].reason


def test_file_vanishing_from_a_folder_fails_alone(base: Path, monkeypatch):
    read = Fetcher._load_file

    def vanish_first(self, path: Path, source: str | None = None):
        if path.name == "a.md":
            path.unlink()  # removed between the folder listing and the read
        return read(self, path, source)

    monkeypatch.setattr(Fetcher, "_load_file", vanish_first)
    documents, failures = load(Fetcher(base, (base,), LIMITS), "docs")
    assert [d.source for d in documents] == ["docs/nested/b.txt"]
    failed = {f.source: f.reason for f in failures}
    assert failed["docs/a.md"] == f"cannot read {base / 'docs' / 'a.md'}: No such file or directory"


def test_rule_refusals_do_not_keep_a_previous_version(base: Path):
    (base / "big.txt").write_text("x" * 5000, encoding="utf-8")
    fetcher = Fetcher(base, (base,), LIMITS)
    assert [f.keep_previous for f in load(fetcher, "docs")[1]] == [False, False]  # .png, outside link
    assert load(fetcher, "big.txt")[1][0].keep_previous is False
    assert load(fetcher, "../outside.txt")[1][0].keep_previous is False
    assert load(fetcher, "docs/missing.md")[1][0].keep_previous is True


@pytest.mark.parametrize(
    ("failed", "source", "covered"),
    [
        ("docs", "docs/nested/b.txt", True),
        ("./docs/", "docs/a.md", True),
        ("docs/a.md", "docs/a.md", True),
        ("docs/a.md", "docs/a.md.old", False),
        ("doc", "docs/a.md", False),
        ("http://127.0.0.1/a", "http://127.0.0.1/a", True),
        ("http://127.0.0.1/a", "http://127.0.0.1/a/b", False),
    ],
)
def test_covers_names_the_documents_of_an_entry(base: Path, failed: str, source: str, covered: bool):
    assert Fetcher(base, (base,), LIMITS).covers(failed, source) is covered


def test_covers_an_absolute_path_inside_the_base(base: Path):
    assert Fetcher(base, (base,), LIMITS).covers(str(base / "docs"), "docs/a.md")


@pytest.mark.parametrize(
    ("name", "data", "text", "title"),
    [
        ("utf16.txt", "Opening hours: 9 to 5.".encode("utf-16"), "Opening hours: 9 to 5.", "utf16"),
        ("utf16be.txt", codecs.BOM_UTF16_BE + "Caf\xe9".encode("utf-16-be"), "Caf\xe9", "utf16be"),
        ("bom.md", "\ufeff# Harvest guide\nText.".encode(), "# Harvest guide\nText.", "Harvest guide"),
    ],
)
def test_text_files_with_a_byte_order_mark(base: Path, name: str, data: bytes, text: str, title: str):
    (base / name).write_bytes(data)
    documents, failures = load(Fetcher(base, (base,), LIMITS), name)
    assert failures == [] and (documents[0].text, documents[0].title) == (text, title)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            "Caf\xe9 cr\xe8me".encode("cp1252"),
            "not utf-8 text (byte 3); save it as UTF-8 or declare its charset",
        ),
        ("Opening hours".encode("utf-16-le"), "not utf-8 text (NUL characters; UTF-16 without a BOM?)"),
    ],
)
def test_text_that_does_not_decode_is_refused(base: Path, data: bytes, reason: str):
    (base / "notes.txt").write_bytes(data)
    documents, failures = load(Fetcher(base, (base,), LIMITS), "notes.txt")
    assert documents == [] and failures[0].reason == reason


@pytest.mark.parametrize(
    ("path", "content_type", "body", "expected"),
    [
        (
            "/menu.txt",
            "text/plain; charset=windows-1252",
            "Caf\xe9 \u20ac 6".encode("cp1252"),
            "Caf\xe9 \u20ac 6",
        ),
        (
            "/menu.md",
            'text/markdown; charset="ISO-8859-1"',
            "# Cr\xe8me\nx".encode("latin-1"),
            "# Cr\xe8me\nx",
        ),
        ("/bom.txt", "text/plain; charset=windows-1252", "\ufeffCaf\xe9".encode(), "Caf\xe9"),
        ("/bom.html", "text/html; charset=windows-1252", "\ufeff<p>Caf\xe9</p>".encode(), "Caf\xe9"),
        (
            "/menu.html",
            "text/html; charset=windows-1252",
            "<html><body><p>Cr\xe8me br\xfbl\xe9e co\xfbte 6 \u20ac</p></body></html>".encode("cp1252"),
            "Cr\xe8me br\xfbl\xe9e co\xfbte 6 \u20ac",
        ),
    ],
)
def test_url_declared_charset_is_honoured(
    base: Path, site, path: str, content_type: str, body: bytes, expected: str
):
    site.route(path, body, Content_Type=content_type)
    documents, failures = load(Fetcher(base, (base,), LIMITS), site.url(path))
    assert failures == [] and documents[0].text == expected


def test_url_unknown_charset_is_refused(base: Path, site):
    site.route("/odd.txt", b"text", Content_Type="text/plain; charset=no-such-charset")
    _, failures = load(Fetcher(base, (base,), LIMITS), site.url("/odd.txt"))
    assert failures[0].reason == "unknown charset 'no-such-charset'"
