"""download_model.py's GGUF path (the one the offline default takes) on a tiny random-weight GGUF."""

from __future__ import annotations

import numpy as np
import openvino
import openvino_genai
import torch

TEXT = "The train to the city leaves every half hour from platform two."


def test_folder_has_the_ir_tokenizers_and_nothing_half_written(tiny_ir):
    names = {p.name for p in tiny_ir.iterdir()}
    expected = {
        "openvino_model.xml",
        "openvino_model.bin",
        "openvino_tokenizer.xml",
        "openvino_detokenizer.xml",
    }
    assert expected | {"config.json", "tokenizer.json"} <= names
    assert [p.name for p in tiny_ir.parent.iterdir()] == [tiny_ir.name]  # no staging or temporary folders


def test_ir_computes_what_transformers_computes_from_the_gguf(tiny_gguf, tiny_ir):
    """The IR's logits equal those of transformers' own model read from the same GGUF."""
    from model_prep.compression import model_inputs
    from transformers import AutoModelForCausalLM

    token_ids = [int(i) for i in openvino_genai.Tokenizer(str(tiny_ir)).encode(TEXT).input_ids.data[0]]
    reference = AutoModelForCausalLM.from_pretrained(
        tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32
    )
    with torch.no_grad():
        expected = reference(torch.tensor([token_ids])).logits[0].numpy()
    core = openvino.Core()
    model = core.read_model(tiny_ir / "openvino_model.xml")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled.create_infer_request().infer(model_inputs(model, token_ids))["logits"][0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_tokenizer_irs_encode_and_decode_as_the_gguf(tiny_gguf, tiny_ir):
    exported, reference = openvino_genai.Tokenizer(str(tiny_ir)), openvino_genai.Tokenizer(str(tiny_gguf))
    assert exported.chat_template == reference.chat_template
    for text in [TEXT, "  spaces\n\nand 3.14 \U00040000 🙂", "<|im_start|>assistant\n"]:
        ids = exported.encode(text, add_special_tokens=False).input_ids.data[0].tolist()
        assert ids == reference.encode(text, add_special_tokens=False).input_ids.data[0].tolist()
        assert exported.decode(ids, skip_special_tokens=False) == text


def test_loads_in_both_openvino_genai_pipelines(tiny_ir):
    config = openvino_genai.GenerationConfig(max_new_tokens=8, ignore_eos=True, do_sample=False)
    result = openvino_genai.LLMPipeline(str(tiny_ir), "CPU").generate([TEXT], config)
    assert result.perf_metrics.get_num_generated_tokens() == 8
    pipe = openvino_genai.ContinuousBatchingPipeline(str(tiny_ir), openvino_genai.SchedulerConfig(), "CPU")
    [output] = pipe.generate([TEXT], [config])
    assert len(output.m_generation_ids) == 1


def test_second_run_skips_the_existing_model(script, tiny_gguf, tiny_ir):
    before = (tiny_ir / "openvino_model.bin").stat().st_mtime_ns
    result = script(
        "download_model.py",
        "--model-id",
        str(tiny_gguf),
        "--name",
        tiny_ir.name,
        "--output-dir",
        str(tiny_ir.parent),
    )
    assert result.returncode == 0, result.stderr
    assert "already exists; skipping" in result.stderr
    assert (tiny_ir / "openvino_model.bin").stat().st_mtime_ns == before
