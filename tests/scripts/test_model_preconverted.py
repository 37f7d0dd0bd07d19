"""Pre-converted OpenVINO models (as the Hub's OpenVINO/ organisation publishes them): download_model.py
takes a repository or a local folder that already holds an IR as it is, making only missing tokenizer
IRs, and compress_model.py says that such a model is already compressed instead of compressing it again.
The tiny random-weight IR, compressed to INT4, stands in for a real OpenVINO/*-int4-ov repository."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import openvino_genai
import pytest

from tests.scripts.fake_hub import FakeHub, Repo

REPO_ID = "OpenVINO/tiny-llama-int4-ov"
TOKENIZER_IRS = ("openvino_tokenizer.xml", "openvino_tokenizer.bin", "openvino_detokenizer.xml")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def said(result) -> str:
    """What the script told the user (its console writes to stderr), lines rejoined."""
    return " ".join((result.stdout + result.stderr).split())


def generates(folder: Path) -> bool:
    config = openvino_genai.GenerationConfig(max_new_tokens=4, ignore_eos=True, do_sample=False)
    result = openvino_genai.LLMPipeline(str(folder), "CPU").generate(["The train leaves"], config)
    return result.perf_metrics.get_num_generated_tokens() == 4


@pytest.fixture(scope="module")
def int4_ir(script, tiny_ir, tmp_path_factory) -> Path:
    """The tiny IR with INT4 weights, as an OpenVINO/*-int4-ov repository holds it."""
    out = tmp_path_factory.mktemp("int4")
    result = script(
        "compress_model.py", "--model", "tiny-llama", "--source", str(tiny_ir), "--output-dir", str(out),
        "--precision", "INT4", "--no-report",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out / "tiny-llama_INT4_compressed_weights"


@pytest.fixture(scope="module")
def hub_repo(int4_ir, tmp_path_factory) -> Path:
    """The INT4 IR without tokenizer IRs (as older OpenVINO/ uploads are), with the safetensors it was
    converted from beside it (never needed)."""
    folder = tmp_path_factory.mktemp("hub") / "tiny-llama-int4-ov"
    shutil.copytree(int4_ir, folder, ignore=shutil.ignore_patterns("openvino_*tokenizer.*"))
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    return folder


def test_a_hub_repository_with_an_ir_is_downloaded_as_it_is_and_gets_tokenizer_irs(
    script, hub_repo, tmp_path
):
    out = tmp_path / "out"
    with FakeHub({REPO_ID: Repo(hub_repo)}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "cache")}
        result = script("download_model.py", "--model-id", REPO_ID, "--output-dir", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert f"{REPO_ID} is already an OpenVINO IR: taken as it is" in said(result)
    assert "tokenizer IRs made with openvino_tokenizers" in said(result)
    folder = out / "tiny-llama-int4-ov"
    # The weights and graph are the repository's own, byte for byte: nothing was exported.
    for name in ("openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json"):
        assert digest(folder / name) == digest(hub_repo / name), name
    for name in TOKENIZER_IRS:
        assert (folder / name).is_file(), name
    assert not (folder / "model.safetensors").exists()
    fetched = [path for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path]
    assert fetched and not [path for path in fetched if path.endswith("model.safetensors")]
    assert generates(folder)


def test_a_local_ir_folder_is_copied_as_it_is_with_its_own_tokenizer_irs(script, int4_ir, tmp_path):
    out = tmp_path / "out"
    result = script(
        "download_model.py", "--model-id", str(int4_ir), "--name", "mine", "--output-dir", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "with its own tokenizer IRs" in said(result)
    folder = out / "mine"
    assert {p.name for p in folder.iterdir()} == {p.name for p in int4_ir.iterdir()}
    for item in int4_ir.iterdir():
        assert digest(folder / item.name) == digest(item), item.name
    assert generates(folder)


def test_an_ir_folder_without_any_tokenizer_is_a_clear_error(script, int4_ir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("openvino_model.xml", "openvino_model.bin", "config.json"):
        shutil.copy2(int4_ir / name, bare / name)
    result = script("download_model.py", "--model-id", str(bare), "--output-dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "holds an OpenVINO IR but neither tokenizer IRs" in said(result)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "bare").exists()


def test_compressing_an_already_compressed_model_says_so_and_keeps_it_as_it_is(script, int4_ir, tmp_path):
    result = script(
        "compress_model.py", "--model", "pre", "--source", str(int4_ir), "--output-dir", str(tmp_path),
        "--precision", "FP16", "INT4", "--no-report",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "is already compressed: its weights are stored in INT4. It is not compressed again." in said(
        result
    )
    assert "FP16: not made" in said(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre_INT4_compressed_weights"]
    kept = tmp_path / "pre_INT4_compressed_weights"
    assert digest(kept / "openvino_model.bin") == digest(int4_ir / "openvino_model.bin")
