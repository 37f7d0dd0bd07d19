"""Smoke test of the benchmark's plumbing: `scripts/benchmark.py --quick` runs every part on the real
offline models through the real local server, and its tables have every row and column (part 10,
prompt lookup, in a run of its own)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servable.rag import require_models

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "benchmark.py"
NUMBER = re.compile(r"^-?[\d,]+\.\d+$")


def _tables(markdown: str) -> dict[str, list[list[str]]]:
    """Markdown tables by their `## ` heading: header row first, then the body rows."""
    tables: dict[str, list[list[str]]] = {}
    title = ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("|") and not line.startswith("|---"):
            tables.setdefault(title, []).append([cell.strip() for cell in line.strip("|").split(" | ")])
    return tables


def quick_run(out: Path, *flags: str) -> tuple[str, str]:
    """`scripts/benchmark.py --quick` with `flags`, writing to `out`: its printed text and results.md."""
    require_models()
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", *flags, "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return run.stdout, (out / "results.md").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_run_fills_every_row_and_column(tmp_path: Path) -> None:
    printed, markdown = quick_run(tmp_path, "--skip", "lookup")
    assert "Targets (issue 8)" in printed  # the printed (rich) table

    assert "scripts/benchmark.py --quick --skip lookup --out" in markdown  # the command that made it
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tables = _tables(markdown)

    generation = tables["Generation (client-side timings)"]
    assert generation[0] == ["System", "Streams", "TTFT p50 ms", "TTFT p95 ms", "ITL p50 ms", "ITL p95 ms",
                             "Decode tok/s", "Tok/s per stream", "Tok/s aggregate"]  # fmt: skip
    rows = [(row[0], row[1]) for row in generation[1:]]
    expected = [("1. servable", "1"), ("1. servable", "2"), ("1. servable + RAG", "1"), ("2. GenAI", "1"),
                ("2. GenAI", "2"), ("2. GenAI + context", "1"), ("3. reference", "1"),
                ("3. reference", "2"), ("9. direct gRPC", "1"), ("9. direct gRPC", "2"),
                ("9. OpenAI gateway", "1"), ("9. OpenAI gateway", "2")]  # fmt: skip
    assert rows == expected
    for row in generation[1:]:
        assert all(NUMBER.match(cell) for cell in row[2:]), row

    found = tables["Targets (issue 8)"]
    assert found[0] == ["Target", "Measured", "Goal", "Result"]
    assert len(found) == 1 + 12
    for row in found[1:]:
        assert row[3] in ("PASS", "MISS") and row[1] != "n/a", row

    cpu = tables["CPU per generated token (ms, user + system, all threads)"]
    assert cpu[0] == [
        "System",
        "Streams",
        "Benchmark process",
        "Local server process",
        "Gateway process",
        "All",
    ]
    assert [(row[0], row[1]) for row in cpu[1:]] == expected
    for row in cpu[1:]:
        benchmark, server, gateway, total = row[2:]
        assert NUMBER.match(benchmark) and float(benchmark) > 0, row
        measured = [float(benchmark)]
        # The servable: its client here, the server in its own process (and the gateway in another).
        if row[0].startswith(("1. ", "9. ")):
            assert NUMBER.match(server) and float(server) > 0, row
            measured.append(float(server))
        else:
            assert server == "-", row
        if row[0] == "9. OpenAI gateway":
            assert NUMBER.match(gateway) and float(gateway) > 0, row
            measured.append(float(gateway))
        else:
            assert gateway == "-", row
        assert float(total) == pytest.approx(sum(measured), abs=0.02), row

    other = tables["Retrieval, indexing, reload, memory"]
    assert other[0] == ["Measurement", "Value"]
    assert [row[0][:3] for row in other[1:]] == [
        "4. ",
        "5a.",
        "5a.",
        "5b.",
        "5b.",
        "6. ",
        "6b.",
        "7. ",
        "7. ",
    ]
    for row in other[1:]:
        assert re.search(r"\d", row[1]) and "error" not in row[1], row
    layers = tables["One stream, layer by layer (part 8, no target)"]
    assert layers[0] == ["Layer", "Decode tok/s", "ITL p50 ms", "Of the pipeline", "Of the layer above"]
    assert [row[0][:2] for row in layers[1:]] == ["Co", "+ ", "+ ", "+ "]
    assert layers[1][3:] == ["100.0%", "-"]
    for row in layers[1:]:
        assert NUMBER.match(row[1]) and NUMBER.match(row[2]) and row[3].endswith("%"), row
    # Every target that was missed is explained in the notes.
    for row in found[1:]:
        if row[3] == "MISS":
            assert f"**{row[0]}** (MISS)" in markdown


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_prompt_lookup_part_runs_alone_and_fills_its_rows(tmp_path: Path) -> None:
    markdown = quick_run(tmp_path, "--only", "lookup")[1]
    tables = _tables(markdown)
    assert tables["Generation (client-side timings)"][1][2] == "skipped"  # only part 10 ran
    rows = tables["Prompt-lookup decoding on RAG answers (part 10)"]
    assert rows[0] == ["System", "Streams", "TTFT p50 ms", "ITL p50 ms", "Decode tok/s", "Tok/s aggregate",
                       "Accepted"]  # fmt: skip
    expected = []
    for mode, one_stream in ((", extract", ", extract, 3 choices"), ("", ", generate, f32")):
        expected += [
            (f"servable + RAG, lookup {state}{mode}", n) for state in ("off", "on") for n in ("1", "2")
        ]
        expected += [(f"GenAI LLMPipeline, lookup {state}{mode}", "1") for state in ("off", "on")]
        expected += [(f"servable + RAG, lookup {state}{one_stream}", "1") for state in ("off", "on")]
    assert [(row[0], row[1]) for row in rows[1:]] == expected
    for row in rows[1:]:
        assert all(NUMBER.match(cell) for cell in row[2:6]), row
        # The servable with lookup reports its acceptance in end_signal; the others have none.
        assert row[6].endswith("%") if "servable" in row[0] and "lookup on" in row[0] else row[6] == "-", row
    found = next(rows for title, rows in tables.items() if title.startswith("Targets (issue 23"))
    assert len(found) == 1 + 4
    assert [row[0].rpartition(" (")[2] for row in found[1:]] == ["extract)"] * 3 + ["extract, 3 choices)"]
    for row in found[1:]:
        assert row[3] in ("PASS", "MISS") and row[1] != "n/a", row
        if row[3] == "MISS":
            assert f"**{row[0]}** (MISS)" in markdown
    generate = next(
        rows for title, rows in tables.items() if title.startswith("The same measures in generate")
    )
    assert [row[0].rpartition(" (")[2] for row in generate[1:]] == ["generate)"] * 4 + [
        "generate, f32)"
    ] * 2 + ["off, the plugin's default precision)"]
    assert all(row[1] != "n/a" for row in generate[1:]), generate
    differ = next(rows for title, rows in tables.items() if title.startswith("Greedy answers that differ"))
    assert differ[0] == ["Answers", "Question", "First differing token (answers re-tokenized)"]


def test_bad_flags_name_the_problem() -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--skip", "servable,nonsense", "--streams", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "unknown part(s) nonsense" in run.stderr
