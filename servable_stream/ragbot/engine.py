"""The LLM engine: one OpenVINO GenAI ContinuousBatchingPipeline shared by every stream.

A single background thread steps the pipeline while requests exist and sleeps on a condition
otherwise. After each step it reads the new token ids of every request, turns them into text (see
`detokenizer`), and puts each request's text into that request's queue; the stream's thread blocks
on its queue (no thread polls). `pipeline.step()` holds the GIL throughout, so the stepping thread
makes room (waits on its condition) for requests being prepared and for pieces to be sent.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import openvino as ov
import openvino_genai as ov_genai

from . import metrics
from .detokenizer import detokenizer_for
from .settings import PromptLookup

log = logging.getLogger(__name__)

_DONE = object()
_FINISH_REASONS = {
    ov_genai.GenerationFinishReason.STOP: "stop",
    ov_genai.GenerationFinishReason.LENGTH: "length",
}
DEFAULT_CONTEXT_TOKENS = 2048
# The pipeline releases a finished or cancelled request (and its KV-cache blocks) only in the second
# step after it ended, so the stepping thread runs that many more steps once it is idle.
CLEANUP_STEPS = 2
# While requests are being prepared (parsed, retrieved, templated: Python work that needs the GIL,
# which `pipeline.step()` holds throughout), the stepping thread waits up to this long before each
# step, so they join the batch within a step or two instead of trickling in over many.
ARRIVAL_WAIT_S = 0.02
ARRIVAL_MAX_AGE_S = 2.0
# Text is sent before the next step, not after it: the stepping thread waits up to SEND_WAIT_S for
# the readers it gave text to to come back for more. It always waits for a request's first text (one
# step less to the first token), and for all text while a step feeds at most SEND_WAIT_MAX_READERS
# (the next piece is not held back a step). With more readers the wait costs more throughput than
# the latency it saves. A reader not back in time is not waited for again until it is back.
SEND_WAIT_S = 0.005
SEND_WAIT_MAX_READERS = 4
# The first prefill of a prompt this long sets up OpenVINO's kernels for it (about 1 s for SmolLM2 on
# 2 cores; a short prompt sets up only part of it), so the engine runs one before it serves.
WARM_UP_PROMPT_TOKENS = 512
# The tokenizer's models are tiny: on one thread a decode costs the same time and half the CPU, which
# the LLM's inference threads get back.
TOKENIZER_PROPERTIES = {"INFERENCE_NUM_THREADS": 1}


def model_context_length(model_path: Path) -> int:
    """Context length from the model's HF config.json; a GGUF file or no config gives 2048."""
    config = model_path / "config.json"
    if model_path.is_dir() and config.exists():
        data = json.loads(config.read_text(encoding="utf-8"))
        for key in ("max_position_embeddings", "n_positions", "seq_length"):
            if isinstance(data.get(key), int):
                return data[key]
    return DEFAULT_CONTEXT_TOKENS


class Generation:
    """One request in the pipeline. Iterate `pieces()` for text as it is generated.

    With prompt lookup, each step after the first verifies `assistant_tokens` proposed tokens and
    gives the accepted ones plus the model's own next token. GenAI does not report per request how
    many it accepted, so they are counted from the steps: accepted = tokens after the first - steps
    after the first; proposed = `assistant_tokens` a step (GenAI's own acceptance rate is per step,
    accepted / `assistant_tokens`)."""

    def __init__(
        self, engine: Engine, request_id: int, prompt_tokens: int, assistant_tokens: int = 0
    ) -> None:
        self._engine = engine
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.assistant_tokens = assistant_tokens
        self.generated_tokens = 0
        self.decode_steps = 0  # steps that gave tokens after the first token
        self.finish_reason: str | None = None
        self.first_token_time: float | None = None
        self.end_time: float | None = None
        self.handle: ov_genai.GenerationHandle | None = None
        self.tokens = engine.detokenizer.stream()
        self.started_streaming = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._finish_lock = threading.Lock()

    def pump(self) -> str | None:
        """Move new token ids into `tokens` (stepping thread only); the finish reason once over."""
        handle = self.handle
        reason = None
        while handle.can_read():
            for output in handle.read().values():
                ids = output.generated_ids
                if ids:
                    if self.first_token_time is None:
                        self.first_token_time = time.perf_counter()
                    else:
                        self.decode_steps += 1
                    self.generated_tokens += len(ids)
                    self.tokens.add(ids)
                reason = _FINISH_REASONS.get(output.finish_reason, reason)
        if handle.get_status() == ov_genai.GenerationStatus.RUNNING:
            return None
        return reason or "stop"

    def lookup(self) -> dict[str, float] | None:
        """Proposed and accepted tokens of prompt lookup; None when it was off."""
        if not self.assistant_tokens:
            return None
        proposed = self.decode_steps * self.assistant_tokens
        accepted = max(self.generated_tokens - 1 - self.decode_steps, 0)
        return {
            "assistant_tokens": self.assistant_tokens,
            "proposed_tokens": proposed,
            "accepted_tokens": accepted,
            "acceptance_rate": round(accepted / proposed, 4) if proposed else 0.0,
        }

    def put(self, text: str) -> None:
        self._queue.put(text)

    def finish(self, reason: str) -> None:
        """Record how the request ended and close its queue (once)."""
        with self._finish_lock:
            if self.finish_reason is not None:
                return
            self.finish_reason = reason
        self.end_time = time.perf_counter()
        metrics.REQUESTS.labels(reason).inc()
        metrics.GENERATED_TOKENS.inc(self.generated_tokens)
        metrics.count_lookup(self.lookup())
        self._queue.put(_DONE)

    def pieces(self) -> Iterator[str]:
        """Text pieces as generated; pieces that queued up while the reader was busy come joined."""
        done = False
        while not done:
            texts: list[str] = []
            self._engine._back(self)
            item = self._queue.get()
            while True:
                if item is _DONE:
                    done = True
                    break
                texts.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if texts:
                yield "".join(texts)

    def cancel(self) -> None:
        """Abort the request and free its KV cache (idempotent)."""
        self._engine.cancel(self)


class Arrival:
    """A request on its way to `Engine.submit`: the stepping thread makes room for it until it is
    submitted or closed (idempotent), or for at most ARRIVAL_MAX_AGE_S if it is dropped unclosed."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.opened = time.monotonic()
        engine._track_arrival(self, True)

    def close(self) -> None:
        self._engine._track_arrival(self, False)


class Engine:
    """The shared continuous-batching pipeline and its stepping thread."""

    def __init__(
        self,
        model_path: Path,
        device: str,
        kv_cache_gb: int,
        max_num_seqs: int,
        max_num_batched_tokens: int = 2048,
        prompt_lookup: PromptLookup | None = None,
        plugin_config: Mapping[str, str] | None = None,
    ) -> None:
        scheduler = ov_genai.SchedulerConfig()
        scheduler.cache_size = kv_cache_gb
        scheduler.max_num_seqs = max_num_seqs
        # Room for a whole RAG prompt in one step: its first token is not held back by split prefill.
        scheduler.max_num_batched_tokens = max_num_batched_tokens
        scheduler.enable_prefix_caching = True
        self.prompt_lookup = prompt_lookup
        # GenAI turns prompt lookup on for the pipeline's lifetime; every request then needs its sizes.
        properties: dict[str, Any] = dict(plugin_config or {})
        if prompt_lookup:
            properties["prompt_lookup"] = True
        self.pipeline = ov_genai.ContinuousBatchingPipeline(
            str(model_path), scheduler, device, properties, tokenizer_properties=TOKENIZER_PROPERTIES
        )
        self.tokenizer = self.pipeline.get_tokenizer()
        self.detokenizer = detokenizer_for(model_path, self.tokenizer)
        self._ids = itertools.count()
        self._active: dict[int, Generation] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._cleanup = 0
        self._arrivals: set[Arrival] = set()
        self._sending: set[Generation] = set()
        self._late: set[Generation] = set()  # readers not back within SEND_WAIT_S
        self._warm_up()
        self._thread = threading.Thread(target=self._run, name="llm-stepper", daemon=True)
        self._thread.start()

    def _warm_up(self) -> None:
        """One RAG-sized prompt through the pipeline, so the first user does not pay for the set-up."""
        words = " ".join(f"word{i}" for i in range(WARM_UP_PROMPT_TOKENS))
        ids = self.tokenizer.encode(words, add_special_tokens=False).input_ids.data[:, :WARM_UP_PROMPT_TOKENS]
        config = self._model_config()
        config.max_new_tokens = 2
        # Keep the handle: the pipeline drops a request whose handle is gone.
        handle = self.pipeline.add_request(next(self._ids), ov.Tensor(ids.copy()), config)
        while handle.get_status() == ov_genai.GenerationStatus.RUNNING:
            self.pipeline.step()
        for _ in range(CLEANUP_STEPS):
            self.pipeline.step()

    def generation_config(
        self,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        ignore_eos: bool,
        regex: str | None = None,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> ov_genai.GenerationConfig:
        """The model's own generation config with the request's settings applied; `regex` holds the
        output to it (GenAI's structured output)."""
        config = self._model_config()
        config.max_new_tokens = max_new_tokens
        config.ignore_eos = ignore_eos
        config.do_sample = temperature > 0
        if config.do_sample:
            config.temperature = temperature
            config.top_p = top_p
            if seed is not None:
                config.rng_seed = seed
        if repetition_penalty != 1.0:
            config.repetition_penalty = repetition_penalty
        if no_repeat_ngram_size:
            config.no_repeat_ngram_size = no_repeat_ngram_size
        if regex:
            config.structured_output_config = ov_genai.StructuredOutputConfig(regex=regex)
        return config

    def _model_config(self) -> ov_genai.GenerationConfig:
        """The model's generation config, with prompt lookup's sizes when it is on (`submit` may
        lower the assistant tokens)."""
        config = self.pipeline.get_config()
        if self.prompt_lookup:
            config.num_assistant_tokens = self.prompt_lookup.assistant_tokens
            config.max_ngram_size = self.prompt_lookup.max_ngram_size
        return config

    def encode(self, prompt: str):
        """Token ids (an openvino Tensor of shape [1, n]) of an already templated prompt."""
        return self.tokenizer.encode(prompt, add_special_tokens=False).input_ids

    def expect(self) -> Arrival:
        """Announce a request that will be submitted once it is prepared."""
        return Arrival(self)

    def _track_arrival(self, arrival: Arrival, open_: bool) -> None:
        with self._cond:
            if open_:
                self._arrivals.add(arrival)
            else:
                self._arrivals.discard(arrival)
            self._cond.notify()

    def submit(
        self, input_ids, config: ov_genai.GenerationConfig, arrival: Arrival | None = None
    ) -> Generation:
        """Queue a request; the stepping thread picks it up at its next step. With prompt lookup, a
        request that comes while PromptLookup.busy_sequences or more others run or are being prepared
        (a burst of questions: they join within a step or two) gets one assistant token (GenAI keeps
        a request's count to its end)."""
        generation = Generation(self, next(self._ids), int(input_ids.get_shape()[-1]))
        try:
            with self._cond:
                if self._stopping:
                    raise RuntimeError("the server is shutting down; no new generations")
                if self.prompt_lookup:
                    self._drop_stale_arrivals()
                    load = len(self._active) + len(self._arrivals - {arrival})
                    if load >= self.prompt_lookup.busy_sequences:
                        config.num_assistant_tokens = 1
                    generation.assistant_tokens = config.num_assistant_tokens
                generation.handle = self.pipeline.add_request(generation.request_id, input_ids, config)
                self._active[generation.request_id] = generation
                metrics.ACTIVE_REQUESTS.inc()
                self._cond.notify()
        finally:
            if arrival is not None:
                arrival.close()
        return generation

    def cancel(self, generation: Generation) -> None:
        """Abort `generation` if it still runs; the pipeline frees its KV cache in the next steps."""
        with self._cond:
            if self._active.pop(generation.request_id, None) is None:
                return
            metrics.ACTIVE_REQUESTS.dec()
            generation.handle.cancel()
            generation.finish("cancelled")
            self._cleanup = CLEANUP_STEPS
            self._cond.notify()

    def active_count(self) -> int:
        return len(self._active)

    def _update_metrics(self) -> None:
        stats = self.pipeline.get_metrics()
        metrics.PIPELINE_REQUESTS.set(stats.requests)
        metrics.KV_CACHE_USAGE.set(stats.cache_usage)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (
                    self._stopping
                    or self._active
                    or self._cleanup > 0
                    or self.pipeline.has_non_finished_requests()
                ):
                    self._update_metrics()
                    self._cond.wait()
                if self._stopping:
                    return
                self._make_room_for_arrivals()
                batch = list(self._active.values())
                if not batch:
                    self._cleanup -= 1
            try:
                self.pipeline.step()
                finished = self._deliver(batch)
                self._make_room_for_sends()
            except Exception:
                log.exception("LLM pipeline step failed; ending the requests in it")
                self._end_all("error")
                continue
            if finished:
                with self._cond:
                    for generation in finished:
                        if self._active.pop(generation.request_id, None) is not None:
                            metrics.ACTIVE_REQUESTS.dec()
                    self._cleanup = CLEANUP_STEPS

    def _drop_stale_arrivals(self) -> None:
        """Forget arrivals dropped unclosed more than ARRIVAL_MAX_AGE_S ago (under `_cond`)."""
        now = time.monotonic()
        self._arrivals = {a for a in self._arrivals if now - a.opened < ARRIVAL_MAX_AGE_S}

    def _make_room_for_arrivals(self) -> None:
        """Wait (releasing the GIL) while requests are being prepared, up to ARRIVAL_WAIT_S."""
        self._drop_stale_arrivals()
        deadline = time.monotonic() + ARRIVAL_WAIT_S
        while self._arrivals and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _back(self, generation: Generation) -> None:
        """`generation`'s reader is back for more text, the last sent (called by the reader)."""
        if generation in self._sending or generation in self._late:
            with self._cond:
                self._late.discard(generation)
                if generation in self._sending:
                    self._sending.discard(generation)
                    if not self._sending:
                        self._cond.notify()

    def _make_room_for_sends(self) -> None:
        """Wait (releasing the GIL) until the readers in `_sending` are back, up to SEND_WAIT_S."""
        if not self._sending:
            return
        with self._cond:
            self._cond.wait_for(lambda: not self._sending or self._stopping, SEND_WAIT_S)
            self._late |= self._sending
            self._sending = set()

    def _deliver(self, batch: list[Generation]) -> list[Generation]:
        """Read the step's tokens, decode them, queue the text (the readers to wait for become
        `_sending`), and end the requests that are over; returns those."""
        ends = [generation.pump() for generation in batch]
        decoding = [(g, end) for g, end in zip(batch, ends, strict=True) if g.tokens.pending]
        texts = self.detokenizer.decode([(g.tokens, end) for g, end in decoding])
        deliveries = [(g, text) for (g, _), text in zip(decoding, texts, strict=True) if text]
        ending = {g for g, end in decoding if end is not None}  # their readers will not be back
        few = len(deliveries) <= SEND_WAIT_MAX_READERS
        with self._cond:  # before the texts are put: a reader may take them at once
            self._late.intersection_update(batch)  # the rest left the pipeline
            self._sending = {
                g
                for g, _ in deliveries
                if g not in ending and g not in self._late and (few or not g.started_streaming)
            }
        for generation, text in deliveries:
            generation.started_streaming = True
            generation.put(text)
        finished = []
        for generation, end in zip(batch, ends, strict=True):
            if end is not None:
                generation.finish(end)
                finished.append(generation)
        return finished

    def _end_all(self, reason: str) -> None:
        with self._cond:
            ended, self._active = list(self._active.values()), {}
        for generation in ended:
            generation.handle.cancel()
            generation.finish(reason)
            metrics.ACTIVE_REQUESTS.dec()

    def stop(self) -> None:
        """Stop stepping; requests still running end with finish_reason "shutdown"."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        self._end_all("shutdown")
        for _ in range(CLEANUP_STEPS):
            self.pipeline.step()
        self._update_metrics()
