"""Quick figures of a model variant: next-token logits on a bundled text, and generation speed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_prep.compression import model_inputs

QUALITY_TEXT = Path(__file__).resolve().parents[1] / "data" / "quality_text.txt"
MAX_TOKENS = 384
SPEED_PROMPT = "Write a short story about a lighthouse keeper."
SPEED_TOKENS = 48
SPEED_RUNS = 2


@dataclass
class Figures:
    """Per-variant results: greedy next-token predictions, perplexity, tokens/s."""

    predictions: np.ndarray
    perplexity: float
    tokens_per_s: float

    def agreement(self, reference: Figures) -> float:
        """Share of positions where this variant's greedy next token equals the reference's."""
        return float(np.mean(self.predictions == reference.predictions))


def next_token_figures(model_dir: Path, device: str, text: str) -> tuple[np.ndarray, float]:
    """One teacher-forced forward pass over `text`: greedy next-token ids and perplexity."""
    import openvino
    import openvino_genai

    ids = [int(i) for i in openvino_genai.Tokenizer(str(model_dir)).encode(text).input_ids.data[0]][
        :MAX_TOKENS
    ]
    core = openvino.Core()
    model = core.read_model(model_dir / "openvino_model.xml")
    compiled = core.compile_model(model, device)
    logits = compiled.create_infer_request().infer(model_inputs(model, ids))["logits"][0].astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    targets = np.array(ids[1:])
    nll = -log_probs[np.arange(len(targets)), targets].mean()
    return logits[:-1].argmax(axis=-1), float(np.exp(nll))


def tokens_per_second(model_dir: Path, device: str) -> float:
    """Generation speed (tokens/s) of openvino-genai's LLMPipeline for SPEED_TOKENS tokens on `device`."""
    import openvino_genai

    pipe = openvino_genai.LLMPipeline(str(model_dir), device)
    config = openvino_genai.GenerationConfig(max_new_tokens=SPEED_TOKENS, ignore_eos=True, do_sample=False)
    pipe.generate(SPEED_PROMPT, openvino_genai.GenerationConfig(max_new_tokens=4))  # warm-up
    # The better of two runs: other processes on a busy machine only ever slow a run down.
    runs = [
        pipe.generate([SPEED_PROMPT], config).perf_metrics.get_throughput().mean for _ in range(SPEED_RUNS)
    ]
    return float(max(runs))


def measure(model_dir: Path, device: str, text: str) -> Figures:
    """All figures of one variant folder."""
    predictions, perplexity = next_token_figures(model_dir, device, text)
    return Figures(predictions, perplexity, tokens_per_second(model_dir, device))
