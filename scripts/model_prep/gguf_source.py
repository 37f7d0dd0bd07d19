"""A GGUF file as a Hugging Face folder: transformers reads its weights, its tokenizer is rebuilt.

transformers' own GGUF tokenizer conversion maps spaces and newlines of this byte-level BPE vocabulary
to <|endoftext|>, so the tokenizer is rebuilt from the GGUF's own metadata (tokens, merges, special
tokens, chat template) with the `tokenizers` library and checked against openvino-genai's reading
of the same GGUF.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from model_prep.errors import ModelPrepError

CONTROL_TOKEN = 3  # llama.cpp's token type of special (control) tokens
# Pre-tokenizers by the GGUF's `tokenizer.ggml.pre`: the byte-level regex split, and for SmolLM also
# one digit per token, as llama.cpp splits them.
DIGIT_SPLITTING_PRE = {"smollm"}
BYTE_LEVEL_PRE = {"gpt2", "default", "smollm"}
TOKENIZER_SAMPLES = (
    "What is the capital of France? Answer in one word.",
    "  Two  spaces,\ttabs\nand\n\nnewlines; numbers 2024, 3.14159 and 1,000,000.",
    "Unicode: café, naïve, Straße, 日本語, emoji 🙂 and don't / I'll / we've.",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
)


@lru_cache(maxsize=2)
def _reader(gguf_path: Path) -> gguf.GGUFReader:
    """The parsed GGUF (parsing a 49k-token vocabulary takes seconds; done once per file)."""
    return gguf.GGUFReader(gguf_path)


def _field(reader: gguf.GGUFReader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def tokenizer_from_gguf(gguf_path: Path):
    """Rebuild the GGUF's byte-level BPE tokenizer (special tokens, chat template) as a transformers one."""
    from transformers import PreTrainedTokenizerFast

    reader = _reader(gguf_path)
    kind, pre = _field(reader, "tokenizer.ggml.model"), _field(reader, "tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in BYTE_LEVEL_PRE:
        raise ModelPrepError(
            f"{gguf_path.name}: tokenizer model {kind!r} with pre-tokenizer {pre!r} is not supported "
            f"(byte-level BPE 'gpt2' with {sorted(BYTE_LEVEL_PRE)} is)"
        )
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(merge.split(" ", 1)) for merge in _field(reader, "tokenizer.ggml.merges")]
    # A byte missing from the vocabulary becomes the unknown token, as llama.cpp and openvino-genai do.
    unknown = _field(reader, "tokenizer.ggml.unknown_token_id")
    vocab = {token: i for i, token in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token=None if unknown is None else tokens[unknown])
    tokenizer = Tokenizer(bpe)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    splits = [pre_tokenizers.Digits(individual_digits=True)] if pre in DIGIT_SPLITTING_PRE else []
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([*splits, byte_level])
    tokenizer.decoder = decoders.ByteLevel()
    types = _field(reader, "tokenizer.ggml.token_type")
    tokenizer.add_special_tokens(
        [
            AddedToken(tokens[i], special=True, normalized=False)
            for i, t in enumerate(types)
            if t == CONTROL_TOKEN
        ]
    )

    def token(key: str) -> str | None:
        token_id = _field(reader, f"tokenizer.ggml.{key}_token_id")
        return None if token_id is None else tokens[token_id]

    bos = token("bos")
    if bos is not None and _field(reader, "tokenizer.ggml.add_bos_token", False):
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokens.index(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=token("eos"),
        unk_token=token("unknown"),
        pad_token=token("padding"),
        chat_template=_field(reader, "tokenizer.chat_template"),
    )


def check_tokenizer_matches_genai(gguf_path: Path, tokenizer) -> None:
    """Fail unless the rebuilt tokenizer encodes the samples exactly as openvino-genai does on the GGUF."""
    import openvino_genai

    reference = openvino_genai.Tokenizer(str(gguf_path))
    for text in TOKENIZER_SAMPLES:
        expected = [int(i) for i in reference.encode(text, add_special_tokens=False).input_ids.data[0]]
        got = tokenizer.encode(text, add_special_tokens=False)
        if got != expected:
            raise ModelPrepError(
                f"the tokenizer rebuilt from {gguf_path.name} encodes {text!r} as {got[:16]}..., "
                f"openvino-genai as {expected[:16]}...; refusing to export a model that would answer garbage"
            )


def gguf_parameter_count(gguf_path: Path) -> int:
    """Number of weights in the GGUF (what sizes its float32 Hugging Face and IR copies)."""
    return sum(int(tensor.n_elements) for tensor in _reader(gguf_path).tensors)


def hf_folder_from_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write a Hugging Face model folder (float32 weights, rebuilt tokenizer) made from `gguf_path`."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer_from_gguf(gguf_path)
    check_tokenizer_matches_genai(gguf_path, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
