"""Part 2, the limit: the same prompts straight on OpenVINO GenAI, no server and no retrieval.

One stream uses the plain `LLMPipeline` with a streamer; several streams use the
`ContinuousBatchingPipeline`, stepped here, each stream adding its next request when its last one ends.
"""

from __future__ import annotations

from pathlib import Path

import openvino_genai as ov_genai

from bench import corpus
from bench.timing import CpuMeter, GenerationResult, RequestTiming, now

# The scheduler as the servable configures its pipeline by default (KV cache 1 GB, prefix caching).
CACHE_SIZE_GB = 1
PREFIX_CACHING = True


def generation_config(max_new_tokens: int) -> ov_genai.GenerationConfig:
    """Greedy, exactly `max_new_tokens` tokens, on a prompt that is already chat-formatted."""
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.ignore_eos = True
    config.do_sample = False
    config.apply_chat_template = False
    return config


def chat_prompt(tokenizer: ov_genai.Tokenizer, question: str, context: str = "") -> str:
    turns = [{"role": "system", "content": context}] if context else []
    turns.append({"role": "user", "content": question})
    return tokenizer.apply_chat_template(turns, add_generation_prompt=True)


def silent_tokens(tokenizer: ov_genai.Tokenizer) -> frozenset[int]:
    """The tokens that make no text in an answer: the end of sequence."""
    return frozenset({tokenizer.get_eos_token_id()})


def note_tokens(timing: RequestTiming, ids: list[int], stamp: float, silent: frozenset[int]) -> None:
    """Count the tokens a step gave as arriving at `stamp`. Tokens in `silent` (the end of sequence)
    make no text: a step that gives only them is no arrival, as the servable sends no piece for them
    (so both systems' decode window ends at the last text)."""
    if ids and not silent.issuperset(ids):
        timing.arrivals.append(stamp)
    timing.tokens += len(ids)


def record_outputs(
    handle: ov_genai.GenerationHandle, timing: RequestTiming, stamp: float, silent: frozenset[int]
) -> None:
    """Note the tokens a step gave `handle` as arriving at `stamp` (see `note_tokens`)."""
    while handle.can_read():
        for output in handle.read().values():
            note_tokens(timing, output.generated_ids, stamp, silent)


class TokenClock(ov_genai.StreamerBase):
    """Streamer that records when each generated token comes out of the pipeline (see `note_tokens`)."""

    def __init__(self, timing: RequestTiming, silent: frozenset[int]) -> None:
        super().__init__()
        self.timing = timing
        self.silent = silent

    def write(self, token) -> ov_genai.StreamingStatus:
        note_tokens(self.timing, token if isinstance(token, list) else [token], now(), self.silent)
        return ov_genai.StreamingStatus.RUNNING

    def end(self) -> None:
        self.timing.end = now()


class GenAI:
    """The plain pipeline for one stream, the continuous-batching one above, over one model (a folder
    with an OpenVINO IR, or a GGUF file).

    Only one of them is loaded at a time: a second compiled LLM in the same process, even idle, slows
    the first one down several times on this machine.
    """

    def __init__(self, model: Path, max_new_tokens: int) -> None:
        self.model = str(model)
        self.config = generation_config(max_new_tokens)
        self._pipeline: ov_genai.LLMPipeline | ov_genai.ContinuousBatchingPipeline | None = None
        self._next_id = 0

    def _load(self, batching: bool):
        """The pipeline of that kind, loaded and warmed up (dropping the other kind) if need be."""
        kind = ov_genai.ContinuousBatchingPipeline if batching else ov_genai.LLMPipeline
        if not isinstance(self._pipeline, kind):
            self._pipeline = None
            if batching:
                scheduler = ov_genai.SchedulerConfig()
                scheduler.cache_size = CACHE_SIZE_GB
                scheduler.enable_prefix_caching = PREFIX_CACHING
                self._pipeline = ov_genai.ContinuousBatchingPipeline(self.model, scheduler, "CPU")
            else:
                self._pipeline = ov_genai.LLMPipeline(self.model, "CPU")
            self.tokenizer = self._pipeline.get_tokenizer()
            self.silent = silent_tokens(self.tokenizer)
            warm = chat_prompt(self.tokenizer, "Hello")
            if batching:
                self._pipeline.generate([warm], [generation_config(4)])
            else:
                self._pipeline.generate(warm, generation_config(4))
        return self._pipeline

    def run(self, streams: int, rounds: int, prompts: tuple[str, ...]) -> GenerationResult:
        pipeline = self._load(batching=streams > 1)
        with CpuMeter() as cpu:
            if streams == 1:
                requests = [self._plain(pipeline, prompts[r % len(prompts)]) for r in range(rounds)]
            else:
                requests = self._batched(pipeline, streams, rounds, prompts)
        return GenerationResult("genai", streams, requests, cpu_s=cpu.used)

    def run_with_context(
        self, prompt_tokens: int, rounds: int, prompts: tuple[str, ...], first_round: int = 0
    ) -> GenerationResult:
        """One stream on the plain pipeline, each prompt given a system turn of document text that makes
        it `prompt_tokens` long: the servable's RAG prompt without the retrieval. Round r uses
        document `first_round + r`."""
        pipeline = self._load(batching=False)
        requests = []
        with CpuMeter() as cpu:
            for r in range(rounds):
                # Each request its own document, as retrieval gives each question its own chunks (a context
                # shared by all requests would be served from the prefix cache).
                text = corpus.document(first_round + r, 400)
                filler = self.tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]
                question = prompts[r % len(prompts)]
                room = (
                    prompt_tokens
                    - self._timing(chat_prompt(self.tokenizer, question, "x")).extra["prompt_tokens"]
                )
                context = self.tokenizer.decode(filler[: max(room, 1)].tolist())
                requests.append(self._plain(pipeline, question, context))
        return GenerationResult("genai + context", 1, requests, cpu_s=cpu.used)

    def _timing(self, prompt: str) -> RequestTiming:
        tokens = self.tokenizer.encode(prompt, add_special_tokens=False).input_ids.get_shape()[-1]
        return RequestTiming(start=now(), extra={"prompt_tokens": int(tokens)})

    def _plain(self, pipeline: ov_genai.LLMPipeline, question: str, context: str = "") -> RequestTiming:
        prompt = chat_prompt(self.tokenizer, question, context)
        timing = self._timing(prompt)
        pipeline.generate(prompt, self.config, TokenClock(timing, self.silent))
        timing.end = timing.end or now()
        return timing

    def _batched(
        self,
        pipeline: ov_genai.ContinuousBatchingPipeline,
        streams: int,
        rounds: int,
        prompts: tuple[str, ...],
    ) -> list[RequestTiming]:
        """Keep `streams` requests in flight; stream i asks prompts i, i+1, ... in turn."""
        pending = {i: [prompts[(i + r) % len(prompts)] for r in range(rounds)] for i in range(streams)}
        active: dict[int, tuple[object, RequestTiming]] = {}  # stream -> (GenerationHandle, timing)
        done: list[RequestTiming] = []

        def submit(stream: int) -> None:
            if pending[stream]:
                prompt = chat_prompt(self.tokenizer, pending[stream].pop(0))
                timing = self._timing(prompt)
                self._next_id += 1
                active[stream] = (pipeline.add_request(self._next_id, prompt, self.config), timing)

        for stream in range(streams):
            submit(stream)
        while active:
            pipeline.step()
            stamp = now()
            for stream, (handle, timing) in list(active.items()):
                record_outputs(handle, timing, stamp, self.silent)
                if handle.get_status() != ov_genai.GenerationStatus.RUNNING:
                    timing.end = stamp
                    done.append(timing)
                    del active[stream]
                    submit(stream)
        return done
