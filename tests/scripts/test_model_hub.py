"""download_model.py against a loopback server that serves a tiny model the way the Hugging Face Hub does.

The real huggingface_hub client talks to it through HF_ENDPOINT; HF_TOKEN and the cache are honoured.
"""

from __future__ import annotations

import socket

import openvino_genai
import pytest

from tests.scripts.fake_hub import FakeHub, Repo

GATED = "tiny-org/tiny-llama-gated"
TOKEN = "hf_test_token_with_access"


@pytest.fixture(scope="module")
def tiny_hf(tiny_gguf, tmp_path_factory):
    """A tiny Hugging Face Llama folder (safetensors) with the tokenizer rebuilt from the tiny GGUF."""
    from model_prep.gguf_source import tokenizer_from_gguf

    from tests.scripts.tiny_models import write_tiny_hf_llama

    folder = tmp_path_factory.mktemp("hub_repo") / "tiny-llama"
    write_tiny_hf_llama(folder, tokenizer_from_gguf(tiny_gguf))
    # Other runtimes' copies of the weights, as many Hub repositories carry; never needed for the export.
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 1024)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"\0" * 1024)
    return folder


@pytest.fixture
def hub(tiny_hf):
    repos = {GATED: Repo(tiny_hf, gated=True, tokens={TOKEN})}
    with FakeHub(repos) as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gated_model_with_token_downloads_exports_loads_and_stays_cached(script, hub, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_CACHE": str(cache)}
    result = script("download_model.py", "--model-id", GATED, "--output-dir", str(out), env=env)
    assert result.returncode == 0, result.stderr
    folder = out / "tiny-llama-gated"
    for name in (
        "openvino_model.xml",
        "openvino_tokenizer.xml",
        "openvino_detokenizer.xml",
        "tokenizer.json",
    ):
        assert (folder / name).is_file(), name
    config = openvino_genai.GenerationConfig(max_new_tokens=5, ignore_eos=True)
    assert openvino_genai.LLMPipeline(str(folder), "CPU").generate(["Hi"], config) is not None
    # The real client asked the model API, then resolved each file at that commit, with the token.
    paths = [(method, path) for method, path, _ in hub.requests]
    assert ("GET", f"/api/models/{GATED}") in paths
    assert ("GET", f"/{GATED}/resolve/{hub.repos[GATED].sha}/model.safetensors") in paths
    assert not [path for _, path in paths if path.endswith(("pytorch_model.bin", "model.onnx"))]
    resolves = [auth for _, path, auth in hub.requests if "/resolve/" in path]
    assert resolves and all(auth == f"Bearer {TOKEN}" for auth in resolves)
    assert list(cache.glob("models--tiny-org--tiny-llama-gated/snapshots/*/model.safetensors"))

    # With the Hub gone, the cached copy is exported again (--force replaces the folder).
    offline = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HUB_CACHE": str(cache)}
    before = (folder / "openvino_model.bin").stat().st_mtime_ns
    result = script(
        "download_model.py", "--model-id", GATED, "--output-dir", str(out), "--force", env=offline
    )
    assert result.returncode == 0, result.stderr
    assert (folder / "openvino_model.bin").stat().st_mtime_ns != before
    assert sorted(p.name for p in out.iterdir()) == ["tiny-llama-gated"]


def test_gated_model_without_token_says_so(script, hub, tmp_path):
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "cache")}
    result = script("download_model.py", "--model-id", GATED, "--output-dir", str(tmp_path / "out"), env=env)
    assert result.returncode == 2
    assert "gated" in result.stderr and "HF_TOKEN" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_gated_model_with_a_token_without_access_says_so(script, hub, tmp_path):
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_TOKEN": "hf_other"}
    result = script("download_model.py", "--model-id", GATED, "--output-dir", str(tmp_path / "out"), env=env)
    assert result.returncode == 2
    assert "gated" in result.stderr and "HF_TOKEN" in result.stderr
    assert any(auth == "Bearer hf_other" for _, path, auth in hub.requests if "/resolve/" in path)


def test_unknown_repository_says_not_found(script, hub, tmp_path):
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "cache")}
    result = script(
        "download_model.py", "--model-id", "tiny-org/nothing", "--output-dir", str(tmp_path), env=env
    )
    assert result.returncode == 2
    assert "tiny-org/nothing was not found" in result.stderr


def test_unreachable_hub_names_the_offline_model_and_local_paths(script, tmp_path):
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HUB_CACHE": str(tmp_path / "cache")}
    result = script(
        "download_model.py", "--model", "qwen2.5-0.5b-instruct", "--output-dir", str(tmp_path), env=env
    )
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert (
        "unreachable" in message
        and "smollm2-135m-instruct" in message
        and "--model-id /local/path" in message
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"] or list(tmp_path.iterdir()) == []
