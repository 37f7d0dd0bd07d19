"""Part 3, the reference demo's approach: one optimum-intel `OVModelForCausalLM` per concurrent request,
Hugging Face `generate` on its own thread feeding a `TextIteratorStreamer` that the request's thread reads.

(The reference demo cloned one compiled model per request with a fork of optimum-intel that had
`clone()`; current optimum-intel has none, so each stream loads its own instance here.)
"""

from __future__ import annotations

import threading
from pathlib import Path

from optimum.intel import OVModelForCausalLM
from transformers import AutoTokenizer, TextIteratorStreamer

from bench.timing import CpuMeter, GenerationResult, RequestTiming, now, run_streams

# The OpenVINO settings the reference demo compiled its model with.
REFERENCE_OV_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "CACHE_DIR": ""}


class _TimedStreamer(TextIteratorStreamer):
    """A TextIteratorStreamer that also notes when each generated token reaches it."""

    def __init__(self, tokenizer, timing: RequestTiming) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.timing = timing

    def put(self, value) -> None:
        if not self.next_tokens_are_prompt:
            self.timing.arrivals.append(now())
            self.timing.tokens += int(value.numel())
        super().put(value)


class Reference:
    """One model instance (and tokenizer) per stream: at N streams exactly N instances are loaded, each
    warmed up by one short generation before the run."""

    def __init__(self, model_dir: Path, max_new_tokens: int) -> None:
        self.model_dir = model_dir
        self.max_new_tokens = max_new_tokens
        self.instances: list[tuple[OVModelForCausalLM, object]] = []

    def _load(self, count: int) -> None:
        while len(self.instances) < count:
            model = OVModelForCausalLM.from_pretrained(
                self.model_dir, device="CPU", ov_config=REFERENCE_OV_CONFIG
            )
            # A Rust-backed tokenizer must not be used by two threads at once: one per instance.
            instance = (model, AutoTokenizer.from_pretrained(self.model_dir))
            self._generate(instance, "Hello", 4)
            self.instances.append(instance)
        del self.instances[count:]

    def run(self, streams: int, rounds: int, prompts: tuple[str, ...]) -> GenerationResult:
        self._load(streams)
        tokens = self.max_new_tokens
        with CpuMeter() as cpu:
            requests = run_streams(
                streams, rounds, prompts, lambda i, q: self._generate(self.instances[i], q, tokens)
            )
        return GenerationResult("reference", streams, requests, cpu_s=cpu.used)

    def _generate(self, instance: tuple, question: str, max_new_tokens: int) -> RequestTiming:
        model, tokenizer = instance
        timing = RequestTiming(start=now())
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        timing.extra["prompt_tokens"] = int(inputs["input_ids"].shape[-1])
        streamer = _TimedStreamer(tokenizer, timing)
        kwargs = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
        worker = threading.Thread(target=model.generate, kwargs=kwargs, daemon=True)
        worker.start()
        for _piece in streamer:
            pass
        worker.join()
        timing.end = now()
        return timing
