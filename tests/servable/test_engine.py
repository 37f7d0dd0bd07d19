"""The LLM engine in-process on the real SmolLM2 IR: incremental decoding (both detokenizers),
concurrent requests and arrivals."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import openvino_genai as ov_genai
import pytest
import tokenizers
from ragbot import engine as engine_module
from ragbot.detokenizer import (
    INCOMPLETE,
    Detokenizer,
    HubDetokenizer,
    OpenVINODetokenizer,
    detokenizer_for,
)

from tests.servable.rag import LLM_DIR, require_models

TEXTS = (
    "Plain ASCII words, numbers 1234 and punctuation!",
    "Déjà vu: crème brûlée, naïve façade.",
    "日本語のテキスト and 中文 mixed in.",
    "Emoji split across byte tokens: 😀🚀🌱 done.",
)
QUESTIONS = (
    "Count from 1 to 15 with commas.",
    "Say hello in French, Japanese and Chinese.",
    "Write a short line with three emoji.",
)


@pytest.fixture(scope="module")
def tokenizer() -> ov_genai.Tokenizer:
    require_models()
    return ov_genai.Tokenizer(str(LLM_DIR))


@pytest.fixture(scope="module")
def engine():
    require_models()
    llm = engine_module.Engine(LLM_DIR, "CPU", kv_cache_gb=1, max_num_seqs=8)
    yield llm
    llm.stop()


@pytest.fixture(params=["openvino", "tokenizer.json"])
def detokenizer(request, tokenizer) -> Detokenizer:
    if request.param == "openvino":
        return OpenVINODetokenizer(tokenizer)
    return HubDetokenizer(tokenizers.Tokenizer.from_file(str(LLM_DIR / "tokenizer.json")))


def ids_of(tokenizer: ov_genai.Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist()


def test_decoding_releases_each_text_whole_and_in_pieces(tokenizer, detokenizer):
    sequences = [ids_of(tokenizer, text) for text in TEXTS]
    streams = [detokenizer.stream() for _ in TEXTS]
    released: list[list[str]] = [[] for _ in TEXTS]
    for position in range(max(len(ids) for ids in sequences)):
        step = []
        for stream, ids in zip(streams, sequences, strict=True):
            if position < len(ids):
                stream.add(ids[position : position + 1])
                step.append((stream, position == len(ids) - 1))
        for (stream, _), text in zip(step, detokenizer.decode(step), strict=True):
            released[streams.index(stream)].append(text)
    for text, pieces in zip(TEXTS, released, strict=True):
        assert "".join(pieces) == text
        assert not any(INCOMPLETE in piece for piece in pieces), pieces
        assert sum(1 for piece in pieces if piece) > len(text.split()) // 2


def test_the_end_of_a_cut_sequence_is_released_as_it_is(tokenizer, detokenizer):
    ids = ids_of(tokenizer, "ok 😀")
    stream = detokenizer.stream()
    stream.add(ids[:-1])  # the emoji's last byte token is missing
    (held,) = detokenizer.decode([(stream, False)])
    assert INCOMPLETE not in held  # the cut character is held back...
    (last,) = detokenizer.decode([(stream, True)])
    assert held + last == f"ok {INCOMPLETE}"  # ...until the end
    assert not stream.pending


def test_the_faster_detokenizer_is_used_only_where_it_decodes_as_openvino(tokenizer, tmp_path: Path):
    assert isinstance(detokenizer_for(LLM_DIR, tokenizer), HubDetokenizer)
    assert isinstance(detokenizer_for(LLM_DIR / "openvino_model.xml", tokenizer), OpenVINODetokenizer)
    other = tmp_path / "other"
    other.mkdir()
    hub = tokenizers.Tokenizer.from_file(str(LLM_DIR / "tokenizer.json"))
    hub.decoder = tokenizers.decoders.Metaspace()  # decodes the byte-level tokens wrongly
    hub.save(str(other / "tokenizer.json"))
    assert isinstance(detokenizer_for(other, tokenizer), OpenVINODetokenizer)
    shutil.copy(LLM_DIR / "tokenizer.json", other / "tokenizer.json")
    assert isinstance(detokenizer_for(other, tokenizer), HubDetokenizer)
    (other / "tokenizer.json").write_text("{not json", encoding="utf-8")
    assert isinstance(detokenizer_for(other, tokenizer), OpenVINODetokenizer)


def test_concurrent_requests_stream_whole_text_piece_by_piece(engine):
    results: dict[int, engine_module.Generation] = {}
    pieces: dict[int, list[str]] = {}

    def run(index: int) -> None:
        prompt = engine.tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTIONS[index]}], add_generation_prompt=True
        )
        generation = engine.submit(engine.encode(prompt), engine.generation_config(40, 0.0, 1.0, None, False))
        results[index], pieces[index] = generation, list(generation.pieces())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(QUESTIONS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for index, generation in results.items():
        ids = generation.tokens.ids  # what the pipeline generated for this request
        assert len(ids) == generation.generated_tokens > 1
        assert "".join(pieces[index]) == engine.tokenizer.decode(ids)
        assert len(pieces[index]) > 1 and not any(INCOMPLETE in piece for piece in pieces[index])
        assert generation.finish_reason in ("stop", "length")
    assert len(results) == len(QUESTIONS)


def test_an_arrival_that_is_never_closed_stops_holding_the_steps_back(engine, monkeypatch):
    monkeypatch.setattr(engine_module, "ARRIVAL_MAX_AGE_S", 0.2)
    dropped = engine.expect()  # e.g. a request whose generator was discarded before it started
    closed = engine.expect()
    closed.close()
    closed.close()  # idempotent
    generation = engine.submit(engine.encode("Hello"), engine.generation_config(32, 0.0, 1.0, None, True))
    assert "".join(generation.pieces())
    assert generation.finish_reason == "length" and generation.generated_tokens == 32
    assert dropped not in engine._arrivals and closed not in engine._arrivals


class StepCounter:
    """The engine's pipeline, counting the steps started."""

    def __init__(self, pipeline: ov_genai.ContinuousBatchingPipeline) -> None:
        self._pipeline = pipeline
        self.started = 0

    def step(self) -> None:
        self.started += 1
        self._pipeline.step()

    def __getattr__(self, name: str):
        return getattr(self._pipeline, name)


def test_the_first_piece_is_sent_before_the_next_step(engine, monkeypatch):
    # step() holds the GIL: without the wait the reader would get its first text after another step.
    monkeypatch.setattr(engine_module, "SEND_WAIT_S", 5.0)  # room for a slow CI machine
    counter = StepCounter(engine.pipeline)
    monkeypatch.setattr(engine, "pipeline", counter)
    steps_to_first_piece = []
    for question in QUESTIONS:
        config = engine.generation_config(16, 0.0, 1.0, None, True)
        generation = engine.submit(engine.encode(question), config)  # no step runs meanwhile (GIL)
        submitted_after = counter.started
        pieces = generation.pieces()
        next(pieces)
        steps_to_first_piece.append(counter.started - submitted_after)
        list(pieces)
        assert generation.generated_tokens == 16
    assert steps_to_first_piece == [1] * len(QUESTIONS)  # the prompt's prefill step, nothing after it


@pytest.mark.parametrize("max_readers", [engine_module.SEND_WAIT_MAX_READERS, 0])
def test_each_piece_is_sent_before_the_next_step_while_few_read(engine, monkeypatch, max_readers):
    # With few readers each piece is taken before the next step; with none allowed (as with many
    # readers) only the first is, and later pieces wait for a step to end before their reader runs.
    monkeypatch.setattr(engine_module, "SEND_WAIT_S", 5.0)  # room for a slow CI machine
    monkeypatch.setattr(engine_module, "SEND_WAIT_MAX_READERS", max_readers)
    counter = StepCounter(engine.pipeline)
    monkeypatch.setattr(engine, "pipeline", counter)
    config = engine.generation_config(24, 0.0, 1.0, None, True)
    generation = engine.submit(engine.encode(QUESTIONS[0]), config)
    submitted_after = counter.started  # no step runs meanwhile (GIL)
    steps_ahead = []  # steps started beyond the tokens generated, as the reader gets each piece
    for _ in generation.pieces():
        steps_ahead.append(counter.started - submitted_after - generation.generated_tokens)
    assert generation.generated_tokens == 24
    steps_ahead.pop()  # the last piece is not waited for: its reader will not be back
    if max_readers:
        assert steps_ahead == [0] * len(steps_ahead)  # one token per step, no step started beyond it
    else:
        assert steps_ahead[0] == 0 and max(steps_ahead) > 0


def test_a_reader_that_stops_reading_is_waited_for_once(engine, monkeypatch):
    monkeypatch.setattr(engine_module, "SEND_WAIT_S", 2.0)
    config = engine.generation_config(24, 0.0, 1.0, None, True)
    stalled = engine.submit(engine.encode(QUESTIONS[1]), config)
    stalled_pieces = stalled.pieces()
    next(stalled_pieces)  # takes its first piece, then stops reading for a while
    reading = engine.submit(engine.encode(QUESTIONS[0]), config)
    started = time.monotonic()
    assert "".join(reading.pieces()) and reading.generated_tokens == 24
    # One 2 s wait for the stalled reader, not one in each of the 24 steps (48 s).
    assert time.monotonic() - started < 12
    assert "".join(stalled_pieces) and stalled.generated_tokens == 24  # nothing lost meanwhile
