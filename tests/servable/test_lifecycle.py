"""Start-up and shutdown of the servable in the real local server: a missing model names the command
that makes it; SIGTERM ends a running answer with finish_reason "shutdown"; a restart serves the
stored index without embedding anything."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import LIVENESS_S
from tests.servable.rag import ServableCopy, Stream, ask, metrics, model_ready, require_models, wait_for

pytestmark = pytest.mark.slow

DOCS = {"docs/otters.md": "# Otters\nThe harbour otter colony has exactly nineteen otters, counted in May."}


def test_missing_model_folder_fails_initialize_naming_the_command(tmp_path, ovms_server):
    copy = ServableCopy.make(tmp_path / "servable_stream", DOCS, ["docs/"])
    server = ovms_server(copy.config, env={"LLM_MODEL_DIR": "no-such-model"})
    assert not model_ready(server)
    log = server.log_text()
    assert f"LLM model not found at {copy.base / 'no-such-model'}" in log
    assert "python scripts/download_model.py --model smollm2-135m-instruct" in log
    assert "python scripts/compress_model.py --model smollm2-135m-instruct --precision INT4" in log
    assert "make models" in log


def test_bad_setting_fails_initialize_naming_the_variable(tmp_path, ovms_server):
    copy = ServableCopy.make(tmp_path / "servable_stream", DOCS, ["docs/"])
    server = ovms_server(copy.config, env={"TOP_K": "many"})
    assert not model_ready(server)
    assert "TOP_K must be an integer, got 'many'" in server.log_text()


def test_shutdown_ends_running_answers_and_restart_reuses_the_index(tmp_path_factory, ovms_server):
    require_models()
    copy = ServableCopy.make(tmp_path_factory.mktemp("life") / "servable_stream", DOCS, ["docs/"])
    first = ovms_server(copy.config, args=["--grace_period", "0.5"])
    assert copy.status()["embedded_chunks"] == 1
    assert (
        ask(first.grpc_url, "How many otters live in the harbour?").sources[0]["document"] == "docs/otters.md"
    )

    stream = Stream(first.grpc_url)
    stream.send(
        {"question": "Tell a very long story.", "max_new_tokens": 2000, "ignore_eos": True, "use_rag": False}
    )
    assert stream.events.get(timeout=60)[0] == "sources"
    assert stream.events.get(timeout=60)[0] == "completion"
    assert first.stop(signal.SIGTERM) == 0
    kinds = []
    while not kinds or kinds[-1] not in ("end_signal", "error"):
        kind, value = stream.events.get(timeout=30)
        kinds.append(kind)
    stream.close(cancel=False)
    assert kinds[-1] == "end_signal", value
    end = json.loads(value)
    assert end["finish_reason"] == "shutdown" and 0 < end["generated_tokens"] < 2000
    assert "finalize" in first.log_text()

    second = ovms_server(copy.config)
    assert "loaded stored index: 1 documents, 1 chunks" in second.log_text()
    # The background comparison with docs.txt finds nothing new: still nothing embedded.
    assert wait_for(lambda: copy.status().get("reason", "").startswith("start"), timeout=LIVENESS_S)
    assert copy.status()["embedded_chunks"] == 0
    answer = ask(second.grpc_url, "How many otters live in the harbour?")
    assert answer.sources[0]["document"] == "docs/otters.md"
    values = metrics(second)
    assert values.get('rag_embedded_texts_total{kind="documents"}', 0) == 0
    assert values['rag_embedded_texts_total{kind="query"}'] == 1
