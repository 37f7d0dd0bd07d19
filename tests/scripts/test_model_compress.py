"""compress_model.py on the tiny converted model: FP16 / INT8 / INT4 folders that openvino-genai loads."""

from __future__ import annotations

import re
from pathlib import Path

import openvino
import openvino_genai
import pytest

from tests.scripts.tiny_models import TRAINING_TEXT

VARIANTS = {"FP16": "tiny-llama_FP16", "INT8": "tiny-llama_INT8_compressed_weights"}
VARIANTS["INT4"] = "tiny-llama_INT4_compressed_weights"


@pytest.fixture(scope="module")
def compressed(script, tiny_ir, tmp_path_factory):
    out = tmp_path_factory.mktemp("compressed")
    result = script(
        "compress_model.py", "--model", "tiny-llama", "--source", str(tiny_ir), "--output-dir", str(out)
    )
    assert result.returncode == 0, result.stderr
    return out, result


def weight_types(folder: Path) -> set[str]:
    """Element types of the model's constants (what the weights are stored as)."""
    model = openvino.Core().read_model(folder / "openvino_model.xml")
    return {
        op.get_output_element_type(0).get_type_name()
        for op in model.get_ops()
        if op.get_type_name() == "Constant"
    }


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_three_variants_with_the_same_files_smaller_each_step(compressed, tiny_ir):
    out, _ = compressed
    assert sorted(p.name for p in out.iterdir()) == sorted(VARIANTS.values())
    for name in VARIANTS.values():
        assert {p.name for p in (out / name).iterdir()} == {p.name for p in tiny_ir.iterdir()}
    fp16, int8, int4 = (size(out / VARIANTS[p]) for p in ("FP16", "INT8", "INT4"))
    assert int4 < int8 < fp16


def test_weights_are_stored_in_each_precision(compressed):
    out, _ = compressed
    assert "f16" in weight_types(out / VARIANTS["FP16"])
    assert "u8" in weight_types(out / VARIANTS["INT8"])
    assert "u4" in weight_types(out / VARIANTS["INT4"])  # asymmetric INT4 by default


@pytest.mark.parametrize("precision", list(VARIANTS))
def test_each_variant_loads_in_both_pipelines(compressed, precision):
    folder = str(compressed[0] / VARIANTS[precision])
    config = openvino_genai.GenerationConfig(max_new_tokens=6, ignore_eos=True, do_sample=False)
    result = openvino_genai.LLMPipeline(folder, "CPU").generate(["The train leaves"], config)
    assert result.perf_metrics.get_num_generated_tokens() == 6
    pipe = openvino_genai.ContinuousBatchingPipeline(folder, openvino_genai.SchedulerConfig(), "CPU")
    assert len(pipe.generate(["The train leaves"], [config])[0].m_generation_ids) == 1


def test_table_reports_size_quality_and_speed(compressed):
    _, result = compressed
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if cells and cells[0] in VARIANTS:
            rows[cells[0]] = cells
    assert set(rows) == set(VARIANTS)
    assert "agreement vs FP16" in result.stdout and "tokens/s" in result.stdout
    assert rows["FP16"][2] == "100.0 %"
    for cells in rows.values():
        assert float(cells[1].split()[0]) > 0  # MiB
        assert 0 <= float(cells[2].split()[0]) <= 100
        assert float(cells[3]) > 1  # perplexity
        assert float(cells[4]) > 0  # tokens/s


def test_existing_variants_are_skipped_unless_forced(script, compressed, tiny_ir):
    out, _ = compressed
    before = {p: (out / n / "openvino_model.bin").stat().st_mtime_ns for p, n in VARIANTS.items()}
    args = ("--model", "tiny-llama", "--source", str(tiny_ir), "--output-dir", str(out), "--no-report")
    result = script("compress_model.py", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("already exists; skipping") == 3
    result = script("compress_model.py", *args, "--precision", "INT8", "--force")
    assert result.returncode == 0, result.stderr
    after = {p: (out / n / "openvino_model.bin").stat().st_mtime_ns for p, n in VARIANTS.items()}
    assert [p for p in VARIANTS if after[p] != before[p]] == ["INT8"]


def test_int4_with_a_dataset_uses_awq_and_scale_estimation(script, tiny_ir, tmp_path):
    args = ("--model", "tiny-llama", "--source", str(tiny_ir), "--output-dir", str(tmp_path), "--no-report")
    result = script(
        "compress_model.py", *args, "--precision", "INT4", "--sym", "--dataset", str(TRAINING_TEXT)
    )
    assert result.returncode == 0, result.stderr
    assert "AWQ + scale estimation" in result.stderr and "sym" in result.stderr
    folder = tmp_path / VARIANTS["INT4"]
    assert "i4" in weight_types(folder)  # symmetric INT4
    config = openvino_genai.GenerationConfig(max_new_tokens=4, ignore_eos=True)
    assert openvino_genai.LLMPipeline(str(folder), "CPU").generate(["Hi"], config) is not None
