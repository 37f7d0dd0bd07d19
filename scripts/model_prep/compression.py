"""NNCF weight compression of an OpenVINO LLM folder into FP16 / INT8 / INT4 variants."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from model_prep.registry import Int4Settings

PRECISIONS = ("FP16", "INT8", "INT4")
# Bytes per weight each variant takes on disk, to check free space before writing (INT4 keeps the
# embeddings and the output layer in INT8, and adds scales and zero points).
BYTES_PER_WEIGHT = {"FP16": 2.0, "INT8": 1.1, "INT4": 0.8}
MODEL_FILES = ("openvino_model.xml", "openvino_model.bin")
# Element types of weights stored compressed (an INT4 model keeps some layers in 8 bits too).
INT4_TYPES = {"u4", "i4", "nf4"}
INT8_TYPES = {"u8", "i8"}
CALIBRATION_TOKENS = 128
CALIBRATION_SAMPLES = 32


def variant_name(name: str, precision: str) -> str:
    """The folder name of a variant, as the servable and the reference demo expect it."""
    return f"{name}_FP16" if precision == "FP16" else f"{name}_{precision}_compressed_weights"


def weight_count(model) -> int:
    """Number of floating-point weights (constants) in an OpenVINO model."""
    floats = {"f32", "f16", "bf16"}
    return sum(
        int(np.prod(op.get_output_shape(0)))
        for op in model.get_ops()
        if op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in floats
    )


def stored_precision(model) -> str | None:
    """ "INT4" or "INT8" when the model's weights are already stored compressed, None for float weights."""
    types = {
        op.get_output_element_type(0).get_type_name()
        for op in model.get_ops()
        if op.get_type_name() == "Constant"
    }
    if types & INT4_TYPES:
        return "INT4"
    return "INT8" if types & INT8_TYPES else None


def model_inputs(model, token_ids: list[int]) -> dict[str, np.ndarray]:
    """The inputs of one full-sequence forward pass of a stateful optimum-intel LLM IR."""
    length = len(token_ids)
    values = {
        "input_ids": np.array([token_ids], dtype=np.int64),
        "attention_mask": np.ones((1, length), dtype=np.int64),
        "position_ids": np.arange(length, dtype=np.int64)[None],
        "beam_idx": np.zeros(1, dtype=np.int32),
    }
    return {name: values[name] for name in (port.get_any_name() for port in model.inputs) if name in values}


def calibration_dataset(model, tokenizer, texts: list[str]):
    """An nncf.Dataset of forward passes over `texts` (paragraphs cut to CALIBRATION_TOKENS tokens)."""
    import nncf

    samples = []
    for text in texts[:CALIBRATION_SAMPLES]:
        ids = [int(i) for i in tokenizer.encode(text).input_ids.data[0]][:CALIBRATION_TOKENS]
        if ids:
            samples.append(model_inputs(model, ids))
    return nncf.Dataset(samples)


def compress(
    source_dir: Path,
    out_dir: Path,
    precision: str,
    int4: Int4Settings,
    calibration_texts: list[str] | None = None,
) -> None:
    """Write `precision` variant of the model in `source_dir` into `out_dir` (same file set).

    FP16 halves float weights; INT8 is per-channel asymmetric; INT4 uses `int4` (group size, ratio of
    INT4 layers with the rest in INT8, symmetric or not), with AWQ and scale estimation when calibration
    texts are given.
    """
    import nncf
    import openvino
    import openvino_genai

    model = openvino.Core().read_model(source_dir / "openvino_model.xml")
    if precision == "INT8":
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    elif precision == "INT4":
        mode = nncf.CompressWeightsMode.INT4_SYM if int4.sym else nncf.CompressWeightsMode.INT4_ASYM
        extra = {}
        if calibration_texts:
            tokenizer = openvino_genai.Tokenizer(str(source_dir))
            extra = {
                "dataset": calibration_dataset(model, tokenizer, calibration_texts),
                "awq": True,
                "scale_estimation": True,
            }
        model = nncf.compress_weights(model, mode=mode, group_size=int4.group_size, ratio=int4.ratio, **extra)
    openvino.save_model(model, out_dir / "openvino_model.xml", compress_to_fp16=True)
    for item in source_dir.iterdir():
        if item.name in MODEL_FILES:
            continue
        if item.is_dir():
            shutil.copytree(item, out_dir / item.name)
        else:
            shutil.copy2(item, out_dir / item.name)
