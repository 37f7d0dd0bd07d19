"""Prompt-lookup decoding in the engine, on the tiny random-weight model: greedy answers are those
of plain decoding, and the proposed and accepted tokens add up to what was generated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from ragbot import engine as engine_module
from ragbot.settings import PromptLookup, Settings

from tests.conftest import wait_until

MAX_NEW = 40
# Prompts that repeat themselves, so the n-grams of the answer (a random model's greedy answer falls
# into loops) are found in them and some proposals are accepted.
PROMPTS = (
    "one two three four one two three four one two",
    "Hello there, hello there, hello there",
    "a b c d e f a b c d e f a b",
    "The orchard drone picks apples. The orchard drone picks pears. The orchard drone",
)


def greedy(llm: engine_module.Engine, prompt: str) -> engine_module.Generation:
    generation = llm.submit(llm.encode(prompt), llm.generation_config(MAX_NEW, 0.0, 1.0, None, True))
    for _ in generation.pieces():  # read to the end
        pass
    return generation


@pytest.fixture(scope="module")
def plain_answers(tiny_ir: Path) -> list[list[int]]:
    llm = engine_module.Engine(tiny_ir, "CPU", kv_cache_gb=1, max_num_seqs=8)
    try:
        generations = [greedy(llm, prompt) for prompt in PROMPTS]
        assert all(generation.lookup() is None for generation in generations)
        return [generation.tokens.ids for generation in generations]
    finally:
        llm.stop()


@pytest.fixture(scope="module")
def lookup_engine(tiny_ir: Path) -> Iterator[engine_module.Engine]:
    llm = engine_module.Engine(tiny_ir, "CPU", kv_cache_gb=1, max_num_seqs=8, prompt_lookup=PromptLookup())
    yield llm
    llm.stop()


def counted(kind: str) -> float:
    """The servable's /metrics counter of prompt lookup's `kind` ("proposed", "accepted") tokens."""
    return REGISTRY.get_sample_value(f"rag_llm_lookup_{kind}_tokens_total") or 0.0


def test_greedy_answers_are_the_same_with_prompt_lookup(plain_answers, lookup_engine):
    proposed_before, accepted_before = counted("proposed"), counted("accepted")
    counts = []
    for prompt, plain in zip(PROMPTS, plain_answers, strict=True):
        generation = greedy(lookup_engine, prompt)
        assert generation.tokens.ids == plain, prompt
        lookup = generation.lookup()
        assert lookup is not None and lookup["assistant_tokens"] == PromptLookup().assistant_tokens
        # Each step after the first gives the accepted proposals and one token of the model's own.
        assert generation.generated_tokens == 1 + generation.decode_steps + lookup["accepted_tokens"]
        assert lookup["proposed_tokens"] == generation.decode_steps * lookup["assistant_tokens"]
        assert 0 <= lookup["accepted_tokens"] <= lookup["proposed_tokens"]
        counts.append(lookup)
    accepted = sum(c["accepted_tokens"] for c in counts)
    assert accepted > 0, "no proposal was accepted: the answers were not checked against lookup"
    assert counted("accepted") - accepted_before == accepted
    assert counted("proposed") - proposed_before == sum(c["proposed_tokens"] for c in counts)


def test_a_request_that_comes_while_the_engine_is_busy_gets_one_assistant_token(lookup_engine, monkeypatch):
    monkeypatch.setattr(lookup_engine, "prompt_lookup", PromptLookup(busy_sequences=1))
    config = lookup_engine.generation_config(900, 0.0, 1.0, None, True)  # runs past the second
    first = lookup_engine.submit(lookup_engine.encode(PROMPTS[0]), config)
    try:
        second = greedy(lookup_engine, PROMPTS[1])  # while the first runs
    finally:
        first.cancel()
    assert (first.assistant_tokens, second.assistant_tokens) == (PromptLookup().assistant_tokens, 1)
    assert second.lookup()["proposed_tokens"] == second.decode_steps


def test_requests_being_prepared_count_as_busy(lookup_engine, monkeypatch):
    # A burst of questions: the first one submitted is not alone once the others are prepared.
    monkeypatch.setattr(lookup_engine, "prompt_lookup", PromptLookup(busy_sequences=1))
    config = lookup_engine.generation_config(4, 0.0, 1.0, None, True)
    alone = lookup_engine.submit(lookup_engine.encode(PROMPTS[0]), config, lookup_engine.expect())
    "".join(alone.pieces())
    wait_until(lambda: not lookup_engine.active_count(), "the first request left the engine")
    other, own = lookup_engine.expect(), lookup_engine.expect()
    try:
        in_burst = lookup_engine.submit(lookup_engine.encode(PROMPTS[1]), config, own)
    finally:
        other.close()
    "".join(in_burst.pieces())
    assert (alone.assistant_tokens, in_burst.assistant_tokens) == (PromptLookup().assistant_tokens, 1)


def test_an_arrival_dropped_unclosed_stops_counting_as_busy(lookup_engine, monkeypatch):
    monkeypatch.setattr(lookup_engine, "prompt_lookup", PromptLookup(busy_sequences=1))
    monkeypatch.setattr(engine_module, "ARRIVAL_MAX_AGE_S", 0.0)  # every arrival is already stale
    wait_until(lambda: not lookup_engine.active_count(), "the engine is idle")
    lookup_engine.expect()  # e.g. a request whose generator was discarded before it started
    config = lookup_engine.generation_config(4, 0.0, 1.0, None, True)
    generation = lookup_engine.submit(lookup_engine.encode(PROMPTS[0]), config)
    "".join(generation.pieces())
    assert generation.assistant_tokens == PromptLookup().assistant_tokens


def test_prompt_lookup_is_set_in_the_environment(tiny_ir):
    # By default on in extract mode (SmolLM2's, in models.json), off in generate mode: bench/NOTES.md.
    assert Settings.from_env(tiny_ir, {}).prompt_lookup == PromptLookup()
    assert Settings.from_env(tiny_ir, {"ANSWER_MODE": "generate"}).prompt_lookup is None
    generate = Settings.from_env(tiny_ir, {"ANSWER_MODE": "generate", "PROMPT_LOOKUP": "1"}).prompt_lookup
    assert (PromptLookup().assistant_tokens, generate.assistant_tokens) == (8, 3)
    assert Settings.from_env(tiny_ir, {"ANSWER_MODE": "extract", "PROMPT_LOOKUP": "0"}).prompt_lookup is None
    env = {"PROMPT_LOOKUP": "1", "NUM_ASSISTANT_TOKENS": "5", "MAX_NGRAM_SIZE": "2"}
    on = Settings.from_env(tiny_ir, env).prompt_lookup
    assert (on.assistant_tokens, on.max_ngram_size) == (5, 2)
    with pytest.raises(ValueError, match="NUM_ASSISTANT_TOKENS must be between 1 and 64, got 0"):
        Settings.from_env(tiny_ir, {"PROMPT_LOOKUP": "1", "NUM_ASSISTANT_TOKENS": "0"})


def test_plugin_config_is_read_from_the_environment(tiny_ir):
    assert Settings.from_env(tiny_ir, {}).llm_plugin_config == {}
    exact = '{"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}'
    assert Settings.from_env(tiny_ir, {"LLM_PLUGIN_CONFIG": exact}).llm_plugin_config == {
        "INFERENCE_PRECISION_HINT": "f32",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
    }
    for raw, problem in (
        ("{INFERENCE_PRECISION_HINT: f32}", "must be a JSON object"),
        ('["f32"]', "must map property names to strings or numbers"),
        ('{"PERF_COUNT": true}', "must map property names to strings or numbers"),
        ('{"prompt_lookup": true}', "set prompt lookup with PROMPT_LOOKUP"),
    ):
        with pytest.raises(ValueError, match=f"LLM_PLUGIN_CONFIG.*{problem}"):
            Settings.from_env(tiny_ir, {"LLM_PLUGIN_CONFIG": raw})


def test_the_device_gets_the_plugin_config(tiny_ir):
    """The properties reach the LLM's device: ones it knows compile and serve, one it does not know is
    refused by name when the server starts."""
    exact = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
    llm = engine_module.Engine(tiny_ir, "CPU", kv_cache_gb=1, max_num_seqs=8, plugin_config=exact)
    try:
        assert greedy(llm, PROMPTS[0]).generated_tokens == MAX_NEW
    finally:
        llm.stop()
    with pytest.raises(Exception, match="NO_SUCH_PROPERTY"):
        engine_module.Engine(
            tiny_ir, "CPU", kv_cache_gb=1, max_num_seqs=8, plugin_config={"NO_SUCH_PROPERTY": "1"}
        )
