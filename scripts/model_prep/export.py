"""Export to OpenVINO IR with optimum-intel (LLM + tokenizer/detokenizer IRs, or embeddings) and check it."""

from __future__ import annotations

import shutil
from pathlib import Path

from model_prep.errors import ModelPrepError
from model_prep.hub import IR_FILE, files_to_use

CHECK_QUESTION = "What is the capital of France?"
TOKENIZER_IRS = ("openvino_tokenizer.xml", "openvino_detokenizer.xml")
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
# Files sentence-transformers keeps beside the weights (pooling and normalisation settings).
SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
)


def export_tokenizer_irs(tokenizer, out_dir: Path) -> None:
    """Write openvino_tokenizer.xml / openvino_detokenizer.xml (with the chat template) for openvino-genai."""
    import openvino
    from openvino_tokenizers import convert_tokenizer

    ov_tokenizer, ov_detokenizer = convert_tokenizer(tokenizer, with_detokenizer=True)
    openvino.save_model(ov_tokenizer, out_dir / "openvino_tokenizer.xml")
    openvino.save_model(ov_detokenizer, out_dir / "openvino_detokenizer.xml")


def is_ir(source: Path) -> bool:
    """Whether `source` is a folder that already holds an OpenVINO IR (as the Hub's OpenVINO/ models)."""
    return source.is_dir() and (source / IR_FILE).is_file()


def copy_ir(source: Path, out_dir: Path) -> bool:
    """Copy a pre-converted LLM folder as it is (no export, weights untouched), leaving out framework
    weights; make the tokenizer/detokenizer IRs openvino-genai needs when the folder lacks them.
    Returns whether they were made."""
    from transformers import AutoTokenizer

    files = files_to_use({p.relative_to(source).as_posix(): 0 for p in source.rglob("*") if p.is_file()})
    for name in files:
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, out_dir / name)  # follows the Hub cache's links to the blobs
    if all((out_dir / name).is_file() for name in TOKENIZER_IRS):
        return False
    # Without its files, AutoTokenizer would make an empty tokenizer of the model's type, not fail.
    if not any((out_dir / name).is_file() for name in HF_TOKENIZER_FILES):
        raise ModelPrepError(
            f"{source} holds an OpenVINO IR but neither tokenizer IRs ({', '.join(TOKENIZER_IRS)}) nor a "
            f"Hugging Face tokenizer ({', '.join(HF_TOKENIZER_FILES)}) to make them from"
        )
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    export_tokenizer_irs(tokenizer, out_dir)
    return True


def export_llm(source: Path, out_dir: Path, remote_code: bool = False) -> None:
    """Export a Hugging Face causal LM folder to a stateful OpenVINO IR (weights kept as they are)."""
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    model = OVModelForCausalLM.from_pretrained(
        source, export=True, load_in_8bit=False, compile=False, trust_remote_code=remote_code
    )
    model.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote_code)
    tokenizer.save_pretrained(out_dir)
    export_tokenizer_irs(tokenizer, out_dir)


def check_llm(model_dir: Path, device: str, max_new_tokens: int = 24) -> str:
    """Load the folder in openvino-genai and answer CHECK_QUESTION greedily; returns the answer.

    A model with random weights may answer only special tokens (empty text); generating any token counts.
    """
    import openvino_genai

    try:
        pipe = openvino_genai.LLMPipeline(str(model_dir), device)
    except RuntimeError as e:
        raise ModelPrepError(f"the exported model does not load in openvino-genai on {device}: {e}") from e
    tokenizer = pipe.get_tokenizer()
    prompt = CHECK_QUESTION
    if tokenizer.chat_template:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True
        )
    config = openvino_genai.GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
    result = pipe.generate([prompt], config)
    if result.perf_metrics.get_num_generated_tokens() == 0:
        raise ModelPrepError(f"the exported model loads but generates no token for {CHECK_QUESTION!r}")
    return result.texts[0].strip()


def export_embedding(source: Path, out_dir: Path) -> None:
    """Export a sentence-transformers / Hugging Face encoder folder to an OpenVINO IR with its tokenizer."""
    from optimum.intel import OVModelForFeatureExtraction
    from transformers import AutoTokenizer

    model = OVModelForFeatureExtraction.from_pretrained(source, export=True, compile=False)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(source).save_pretrained(out_dir)
    for name in SENTENCE_TRANSFORMERS_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)
    for pooling in source.glob("*_Pooling"):
        shutil.copytree(pooling, out_dir / pooling.name)


def check_embedding(model_dir: Path, device: str) -> int:
    """Load the folder with optimum-intel and embed one sentence; returns the embedding width."""
    from optimum.intel import OVModelForFeatureExtraction
    from transformers import AutoTokenizer

    model = OVModelForFeatureExtraction.from_pretrained(model_dir, device=device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    hidden = model(**tokenizer(["Paris is the capital of France."], return_tensors="pt")).last_hidden_state
    if hidden.ndim != 3 or hidden.shape[-1] == 0:
        raise ModelPrepError(f"{model_dir} loads but returns an output of shape {tuple(hidden.shape)}")
    return int(hidden.shape[-1])
