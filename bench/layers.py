"""Part 8, no target: where one stream's decode rate goes, layer by layer, in this process.

The servable's own code, one request at a time, each layer adding one to the one above it:
- the continuous-batching pipeline stepped directly, as GenAI's own loop does;
- the servable's `Engine`: its stepping thread, the detokenizer and a reader thread;
- its LangChain chat model streaming over that engine.
Part 1's server adds the Python node, the local server, gRPC and tritonclient on top of the last.
"""

from __future__ import annotations

import time
from pathlib import Path

import openvino_genai as ov_genai
from langchain_core.messages import HumanMessage

from bench.genai import chat_prompt, record_outputs, silent_tokens
from bench.settings import SERVABLE_DIR, servable_on_path
from bench.timing import GenerationResult, RequestTiming, now

servable_on_path()

from ragbot.chat_model import OpenVINOChatModel  # noqa: E402
from ragbot.engine import CLEANUP_STEPS, Engine  # noqa: E402
from ragbot.settings import Settings  # noqa: E402

# Bottom layer first (the report's LAYER_ROWS label them).
LAYERS = ("pipeline", "engine", "chat model")
IDLE_POLL_S = 0.01
IDLE_TIMEOUT_S = 60


class Layers:
    """The servable's engine and chat model over one LLM folder, and its pipeline stepped directly."""

    def __init__(self, model: Path, max_new_tokens: int) -> None:
        defaults = Settings.from_env(SERVABLE_DIR, env={})  # the servable's scheduler, as it runs by default
        self.engine = Engine(
            model, "CPU", defaults.kv_cache_gb, defaults.max_num_seqs, defaults.max_num_batched_tokens
        )
        self.chat_model = OpenVINOChatModel(engine=self.engine)
        self.max_new_tokens = max_new_tokens
        self._next_id = 1_000_000  # far from the engine's own request ids
        self._runners = {"pipeline": self._pipeline, "engine": self._engine, "chat model": self._chat_model}

    def run(self, layer: str, prompts: tuple[str, ...], rounds: int) -> GenerationResult:
        """`rounds` requests on `layer`, one after the other, prompts[r] for round r."""
        return GenerationResult(
            layer, 1, [self._runners[layer](prompts[r % len(prompts)]) for r in range(rounds)]
        )

    def close(self) -> None:
        self.engine.stop()

    def _config(self) -> ov_genai.GenerationConfig:
        return self.engine.generation_config(self.max_new_tokens, 0.0, 1.0, None, ignore_eos=True)

    def _ids(self, question: str):
        return self.engine.encode(chat_prompt(self.engine.tokenizer, question))

    def _wait_idle(self) -> None:
        """Until the engine's thread has run its clean-up steps and sleeps (it wakes only for its own
        requests), so that this thread alone steps the pipeline."""
        deadline = time.monotonic() + IDLE_TIMEOUT_S
        while self.engine.active_count() or self.engine.pipeline.has_non_finished_requests():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the engine still had requests after {IDLE_TIMEOUT_S} s")
            time.sleep(IDLE_POLL_S)
        time.sleep(10 * IDLE_POLL_S)

    def _pipeline(self, question: str) -> RequestTiming:
        self._wait_idle()
        pipeline = self.engine.pipeline
        ids = self._ids(question)
        timing = RequestTiming(start=now(), extra={"prompt_tokens": int(ids.get_shape()[-1])})
        self._next_id += 1
        handle = pipeline.add_request(self._next_id, ids, self._config())
        silent = silent_tokens(self.engine.tokenizer)
        while handle.get_status() == ov_genai.GenerationStatus.RUNNING:
            pipeline.step()
            record_outputs(handle, timing, now(), silent)
        timing.end = now()
        for _ in range(CLEANUP_STEPS):  # the pipeline lets go of a finished request in these
            pipeline.step()
        return timing

    def _engine(self, question: str) -> RequestTiming:
        ids = self._ids(question)
        timing = RequestTiming(start=now(), extra={"prompt_tokens": int(ids.get_shape()[-1])})
        generation = self.engine.submit(ids, self._config())
        for _ in generation.pieces():
            timing.arrivals.append(now())
        timing.end = now()
        timing.tokens = generation.generated_tokens
        return timing

    def _chat_model(self, question: str) -> RequestTiming:
        timing = RequestTiming(start=now())
        stream = self.chat_model.stream(
            [HumanMessage(question)], max_new_tokens=self.max_new_tokens, temperature=0.0, ignore_eos=True
        )
        for chunk in stream:
            if chunk.content:
                timing.arrivals.append(now())
            elif chunk.usage_metadata:
                timing.tokens = chunk.usage_metadata["output_tokens"]
                timing.extra["prompt_tokens"] = chunk.usage_metadata["input_tokens"]
        timing.end = now()
        return timing
