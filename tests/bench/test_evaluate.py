"""`make eval` end to end on a subset (the real offline models, the local server, tritonclient), and
the Makefile passing the chosen model to it. Only properties are checked, never the model's text."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.settings import SERVABLE_DIR, servable_on_path
from tests.bench.test_benchmark import REPO, _tables
from tests.scripts.test_makefile import recipe_env
from tests.servable.rag import require_models

SCRIPT = REPO / "scripts" / "evaluate.py"
PERCENT_COLUMNS = (1, 2, 3, 4, 5, 7)  # of the "Answer quality" table; 6 is a count, 8 and 9 timings


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_subset_reports_every_configuration(tmp_path: Path) -> None:
    require_models()
    args = ["--limit", "4", "--configs", "current", "--max-new-tokens", "48", "--output-dir", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=280
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "Answer quality" in run.stdout  # the printed (rich) table

    markdown = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "scripts/evaluate.py --limit 4 --configs current" in markdown
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tables = _tables(markdown)
    quality = tables["Answer quality"]
    assert [row[0] for row in quality[1:]] == ["current"]
    for row in quality[1:]:
        for column in PERCENT_COLUMNS:
            assert row[column] == "n/a" or 0 <= float(row[column]) <= 100, (quality[0][column], row)
        assert int(row[6]) >= 0 and float(row[8]) > 0 and float(row[9]) > 0, row
    assert tables["Right % (answerable) by set"][0] == ["Configuration", "invented", "sample"]
    answers = re.findall(r"^\| (invented|sample)/", markdown, flags=re.MULTILINE)
    assert sorted(answers) == ["invented"] * 4 + ["sample"] * 4  # four questions of each set


@pytest.mark.parametrize(
    ("variables", "folder"),
    [
        (["LLM=my-llm"], "my-llm_INT4_compressed_weights"),
        (["LLM=my-llm", "LLM_MODEL_DIR=my-llm_FP16"], "my-llm_FP16"),
        (["LLM_MODEL_DIR=other_INT8_compressed_weights"], "other_INT8_compressed_weights"),
    ],
)
def test_make_eval_evaluates_the_model_it_is_given(variables: list[str], folder: str) -> None:
    servable_on_path()
    from ragbot.settings import Settings

    env = recipe_env("eval", *variables, "EVAL_ARGS=--limit 2")
    assert Settings.from_env(SERVABLE_DIR, env).llm_model_dir == SERVABLE_DIR / folder
