"""The LLM engine in-process: incremental decoding (both detokenizers), concurrent requests, arrivals
and the waits for readers, on the real SmolLM2 IR and on the tiny random-weight model.

What a real model generates differs between CPUs (an INT4 model's greedy output too), so the streaming
tests never expect a particular text: they check that the pieces are those the generated ids must give
(`expected_pieces`), whatever the ids are."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
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

from tests.conftest import LIVENESS_S, wait_until
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
def engine() -> Iterator[engine_module.Engine]:
    require_models()
    llm = engine_module.Engine(LLM_DIR, "CPU", kv_cache_gb=1, max_num_seqs=8)
    yield llm
    llm.stop()


@pytest.fixture(scope="module")
def tiny_engine(tiny_ir: Path) -> Iterator[engine_module.Engine]:
    """The engine on the tiny random-weight model: sampled, its output is any mix of byte tokens."""
    llm = engine_module.Engine(tiny_ir, "CPU", kv_cache_gb=1, max_num_seqs=8)
    yield llm
    llm.stop()


@pytest.fixture(params=["openvino", "tokenizer.json"])
def detokenizer(request, tokenizer) -> Detokenizer:
    if request.param == "openvino":
        return OpenVINODetokenizer(tokenizer)
    return HubDetokenizer(tokenizers.Tokenizer.from_file(str(LLM_DIR / "tokenizer.json")))


def ids_of(tokenizer: ov_genai.Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist()


def decoder_of(detokenizer: Detokenizer) -> Callable[[list[list[int]]], list[str]]:
    """The full decode of id sequences by `detokenizer`'s own tokenizer. Both decode valid UTF-8 alike,
    not invalid bytes: `tokenizers` writes a U+FFFD per maximal subpart (the bytes E0 8C F0 then "m"
    give three), OpenVINO's detokenizer fewer (two)."""
    if isinstance(detokenizer, HubDetokenizer):
        return detokenizer.tokenizer.decode_batch
    return detokenizer.tokenizer.decode


def expected_pieces(decode: Callable[[list[list[int]]], list[str]], ids: list[int], end: str) -> list[str]:
    """The pieces a request that generated `ids` (one a step) and ended with finish reason `end` must
    stream, from full decodes of the ids so far: a step's new text once it does not end inside a
    character (U+FFFD); at the end the rest, without trailing U+FFFD if the stream was cut."""
    texts = decode([ids[:count] for count in range(1, len(ids) + 1)])
    pieces, released = [], ""
    for step, text in enumerate(texts, 1):
        piece = text[len(released) :] if not text.endswith(INCOMPLETE) else ""
        if step == len(ids):
            rest = text[len(released) + len(piece) :]
            piece += rest if end == "stop" else rest.rstrip(INCOMPLETE)
        released += piece
        pieces += [piece] if piece else []
    return pieces


def stream_together(
    engine: engine_module.Engine, requests: list[tuple[str, ov_genai.GenerationConfig]]
) -> list[tuple[engine_module.Generation, list[str]]]:
    """Each (chat question, config) submitted and read in its own thread, all at once."""
    results: list[tuple[engine_module.Generation, list[str]] | None] = [None] * len(requests)

    def run(index: int, question: str, config: ov_genai.GenerationConfig) -> None:
        prompt = engine.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True
        )
        generation = engine.submit(engine.encode(prompt), config)
        results[index] = generation, list(generation.pieces())

    threads = [threading.Thread(target=run, args=(i, *request)) for i, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LIVENESS_S)
    assert None not in results, "a request did not end"
    return results


def test_decoding_releases_each_text_whole_and_in_pieces(tokenizer, detokenizer):
    sequences = [ids_of(tokenizer, text) for text in TEXTS]
    streams = [detokenizer.stream() for _ in TEXTS]
    released: list[list[str]] = [[] for _ in TEXTS]
    for position in range(max(len(ids) for ids in sequences)):
        step = []
        for stream, ids in zip(streams, sequences, strict=True):
            if position < len(ids):
                stream.add(ids[position : position + 1])
                step.append((stream, "stop" if position == len(ids) - 1 else None))
        for (stream, _), text in zip(step, detokenizer.decode(step), strict=True):
            released[streams.index(stream)].append(text)
    for text, pieces in zip(TEXTS, released, strict=True):
        assert "".join(pieces) == text
        assert not any(INCOMPLETE in piece for piece in pieces), pieces
        assert sum(1 for piece in pieces if piece) > len(text.split()) // 2


@pytest.mark.parametrize("end", ["length", "cancelled", "stop"])
@pytest.mark.parametrize("end_comes", ["with the last id", "a step later"])
def test_a_stream_cut_inside_a_character_does_not_end_with_a_replacement_character(
    tokenizer, detokenizer, end, end_comes
):
    # A stream cut short drops the incomplete character; one the model stopped ends as its decode.
    ids = ids_of(tokenizer, "ok 😀")
    stream = detokenizer.stream()
    stream.add(ids[:-2])
    (released,) = detokenizer.decode([(stream, None)])
    stream.add(ids[-2:-1])  # " " and the emoji's first three bytes, without its last byte
    if end_comes == "a step later":
        (held,) = detokenizer.decode([(stream, None)])
        assert held == "" and stream.pending  # the cut character is held back
    (last,) = detokenizer.decode([(stream, end)])
    assert released + last == ("ok \ufffd" if end == "stop" else "ok ")
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


def test_concurrent_requests_stream_whole_text_piece_by_piece(engine, monkeypatch):
    # Each piece is taken before the next step (few readers, a send wait no reader misses), so the
    # pieces are exactly those of the ids, one step at a time.
    monkeypatch.setattr(engine_module, "SEND_WAIT_S", LIVENESS_S)
    monkeypatch.setattr(engine_module, "SEND_WAIT_MAX_READERS", len(QUESTIONS))
    config = engine.generation_config(40, 0.0, 1.0, None, False)
    for generation, pieces in stream_together(engine, [(question, config) for question in QUESTIONS]):
        ids = generation.tokens.ids  # what the pipeline generated for this request
        assert len(ids) == generation.generated_tokens > 0
        assert generation.finish_reason in ("stop", "length")
        assert pieces == expected_pieces(decoder_of(engine.detokenizer), ids, generation.finish_reason)


@pytest.mark.parametrize("decoder", ["tokenizer.json", "openvino"])
def test_random_outputs_stream_as_their_ids_decode(tiny_engine, monkeypatch, decoder):
    # Sampled from random weights, the answers are any mix of byte tokens, split characters and
    # invalid UTF-8: the pieces must still be those of the ids. About a quarter of 64 answers end
    # inside a character, so some certainly are cut there.
    if decoder == "openvino":
        monkeypatch.setattr(tiny_engine, "detokenizer", OpenVINODetokenizer(tiny_engine.tokenizer))
    assert isinstance(
        tiny_engine.detokenizer, HubDetokenizer if decoder == "tokenizer.json" else OpenVINODetokenizer
    )
    monkeypatch.setattr(engine_module, "SEND_WAIT_S", LIVENESS_S)
    decode = decoder_of(tiny_engine.detokenizer)
    cut_inside_a_character = 0
    for wave in range(16):  # waves of 4 streams, each piece taken before the next step
        configs = [
            tiny_engine.generation_config(1 + 7 * seed % 24, 2.0, 1.0, seed, seed % 2 == 0)
            for seed in range(4 * wave, 4 * wave + 4)
        ]
        for generation, pieces in stream_together(tiny_engine, [("Hello there", c) for c in configs]):
            ids, end = generation.tokens.ids, generation.finish_reason
            assert pieces == expected_pieces(decode, ids, end), (ids, end)
            cut_inside_a_character += end == "length" and decode([ids])[0].endswith(INCOMPLETE)
    assert cut_inside_a_character > 0


class SteppedPipeline:
    """The engine's pipeline, one step at a time: before each step the stepping thread waits for the
    test's `step_once`, which returns once that step's text has been handed out. `let_go()` releases
    the waiting thread without a step and lets every later step through."""

    def __init__(self, pipeline: ov_genai.ContinuousBatchingPipeline) -> None:
        self._pipeline = pipeline
        self._turn = threading.Semaphore(0)
        self._arrived = threading.Semaphore(0)  # the stepping thread came to wait for its turn
        self._let = 0  # steps let through
        self.free = False

    def step(self) -> None:
        if not self.free:
            self._arrived.release()
            self._turn.acquire()
            if self.free:
                return
        self._pipeline.step()

    def step_once(self) -> None:
        if self._let == 0:
            self._wait_for_arrival()
        self._let += 1
        self._turn.release()
        self._wait_for_arrival()

    def _wait_for_arrival(self) -> None:
        assert self._arrived.acquire(timeout=LIVENESS_S), "the stepping thread did not come to a step"

    def let_go(self) -> None:
        self.free = True
        self._turn.release()

    def __getattr__(self, name: str):
        return getattr(self._pipeline, name)


def test_a_stream_cancelled_or_shut_down_inside_a_character_stops_before_it(tiny_ir):
    # The engine is stepped by hand until a stream is left inside a character (a quarter of the
    # sampled tokens are bytes of multi-byte characters), then that stream is cancelled; the next one
    # is cut by the engine's shutdown. Neither may send the incomplete character.
    llm = engine_module.Engine(tiny_ir, "CPU", kv_cache_gb=1, max_num_seqs=8)
    pipeline = SteppedPipeline(llm.pipeline)
    llm.pipeline = pipeline
    decode = decoder_of(llm.detokenizer)
    configs = [llm.generation_config(900, 2.0, 1.0, seed, True) for seed in range(8)]
    generations = [llm.submit(llm.encode("Hello there"), config) for config in configs]
    cut: dict[str, tuple[engine_module.Generation, list[int]]] = {}
    try:
        for _ in range(200):
            pipeline.step_once()
            running = [g for g in generations if g.finish_reason is None]
            inside = [g for g in running if decode([g.tokens.ids])[0].endswith(INCOMPLETE)]
            if inside and "cancelled" not in cut:
                cut["cancelled"] = inside[0], list(inside[0].tokens.ids)
                inside[0].cancel()
            elif inside:
                cut["shutdown"] = inside[0], list(inside[0].tokens.ids)
                stopping = threading.Thread(target=llm.stop)
                stopping.start()
                wait_until(lambda: llm._stopping, "the engine is stopping")
                pipeline.let_go()  # the stepping thread ends without another step
                stopping.join(LIVENESS_S)
                break
    finally:
        if not pipeline.free:
            pipeline.let_go()
            llm.stop()
    assert set(cut) == {"cancelled", "shutdown"}, f"too few streams cut inside a character: {cut}"
    texts = {generation: "".join(generation.pieces()) for generation in generations}
    assert not [text for text in texts.values() if text.endswith(INCOMPLETE)]
    for end, (generation, ids) in cut.items():
        assert generation.finish_reason == end
        (full,) = decode([ids])  # the ids when it was cut
        assert full.endswith(INCOMPLETE) and full.startswith(texts[generation])


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
    """The engine's pipeline, counting the steps started; `puts` holds, for each request, (steps started,
    text) for each text the engine put in its queue."""

    def __init__(self, pipeline: ov_genai.ContinuousBatchingPipeline) -> None:
        self._pipeline = pipeline
        self.started = 0
        self.puts: dict[engine_module.Generation, list[tuple[int, str]]] = {}

    def step(self) -> None:
        self.started += 1
        self._pipeline.step()

    def steps_ahead(self, generation: engine_module.Generation, pieces: Iterator[str]) -> Iterator[int]:
        """For each piece of `pieces` as the reader gets it: the steps started since the step that made
        its last text (0: the reader had it before the next step)."""
        taken = 0
        for piece in pieces:
            joined = ""
            while joined != piece:  # a piece may join texts that queued up while the reader was busy
                made_after, text = self.puts[generation][taken]
                joined, taken = joined + text, taken + 1
            yield self.started - made_after

    def __getattr__(self, name: str):
        return getattr(self._pipeline, name)


@pytest.fixture
def counter(engine, monkeypatch) -> StepCounter:
    """The engine's steps and queued texts counted, for this test."""
    counter = StepCounter(engine.pipeline)
    monkeypatch.setattr(engine, "pipeline", counter)
    put = engine_module.Generation.put

    def counted_put(generation: engine_module.Generation, text: str) -> None:
        counter.puts.setdefault(generation, []).append((counter.started, text))
        put(generation, text)

    monkeypatch.setattr(engine_module.Generation, "put", counted_put)
    return counter


def test_the_first_piece_is_sent_before_the_next_step(engine, counter, monkeypatch):
    # step() holds the GIL: without the wait the reader would get its first text after another step.
    monkeypatch.setattr(engine_module, "SEND_WAIT_S", LIVENESS_S)
    for question in QUESTIONS:
        config = engine.generation_config(16, 0.0, 1.0, None, True)
        generation = engine.submit(engine.encode(question), config)
        steps_ahead = counter.steps_ahead(generation, generation.pieces())
        assert next(steps_ahead) == 0
        list(steps_ahead)
        assert generation.generated_tokens == 16


@pytest.mark.parametrize("max_readers", [engine_module.SEND_WAIT_MAX_READERS, 0])
def test_each_piece_is_sent_before_the_next_step_while_few_read(engine, counter, monkeypatch, max_readers):
    # With few readers each piece is taken before the next step; with none allowed (as with many
    # readers) only the first is, and later pieces wait for a step to end before their reader runs.
    monkeypatch.setattr(engine_module, "SEND_WAIT_S", LIVENESS_S)
    monkeypatch.setattr(engine_module, "SEND_WAIT_MAX_READERS", max_readers)
    config = engine.generation_config(24, 0.0, 1.0, None, True)
    generation = engine.submit(engine.encode(QUESTIONS[0]), config)
    steps_ahead = list(counter.steps_ahead(generation, generation.pieces()))
    assert generation.generated_tokens == 24
    steps_ahead.pop()  # the last piece is not waited for: its reader will not be back
    if max_readers:
        assert steps_ahead == [0] * len(steps_ahead)
    else:
        assert steps_ahead[0] == 0 and max(steps_ahead) > 0


def test_a_reader_that_stops_reading_is_waited_for_once(engine, monkeypatch):
    monkeypatch.setattr(engine_module, "SEND_WAIT_S", 0.5)
    waits: list[set[engine_module.Generation]] = []  # the readers each wait was for
    make_room_for_sends = engine._make_room_for_sends

    def recorded() -> None:
        waits.append(set(engine._sending))
        make_room_for_sends()

    monkeypatch.setattr(engine, "_make_room_for_sends", recorded)
    config = engine.generation_config(24, 0.0, 1.0, None, True)
    stalled = engine.submit(engine.encode(QUESTIONS[1]), config)  # its reader comes only at the end
    reading = engine.submit(engine.encode(QUESTIONS[0]), config)
    assert "".join(reading.pieces()) and reading.generated_tokens == 24
    # One wait for the stalled reader (for its first piece), not one at each of its 24 steps.
    assert sum(stalled in readers for readers in waits) == 1
    assert "".join(stalled.pieces()) and stalled.generated_tokens == 24  # nothing lost meanwhile
