"""Part 9: prompt-lookup decoding on RAG answers.

Two servers on servable copies, taking turns round by round: today's engine (PROMPT_LOOKUP=0) and the
new default (prompt lookup on), both answering questions about the benchmark's documents with
retrieval on, at each number of streams. At one stream, GenAI's own `LLMPipeline` without and with
prompt lookup then answers the same prompts (the servable's RAG prompts, rebuilt by its own chain from
the sources it sent), and the greedy answers of the two servers are compared prompt by prompt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import openvino_genai as ov_genai

from bench import report
from bench.genai import TokenClock, generation_config
from bench.servable import ServerBench
from bench.settings import QUERIES, Settings, servable_on_path
from bench.timing import CpuMeter, GenerationResult, RequestTiming, now

servable_on_path()

from ragbot.chain import RagChain  # noqa: E402
from ragbot.chat_model import ROLE_OF_TYPE  # noqa: E402
from ragbot.passages import Passage  # noqa: E402
from ragbot.request import ChatRequest  # noqa: E402
from ragbot.settings import AnswerSettings, PromptLookup  # noqa: E402

OFF, ON = "servable + RAG, lookup off", "servable + RAG, lookup on"
GENAI_OFF, GENAI_ON = "GenAI LLMPipeline, lookup off", "GenAI LLMPipeline, lookup on"
SYSTEMS = (OFF, ON, GENAI_OFF, GENAI_ON, f"{OFF}, extract", f"{ON}, extract")
# The questions the benchmark documents answer (retrieval's queries), asked in this order.
QUESTIONS = QUERIES


@dataclass
class Difference:
    question: str
    token: int  # the first token (of the answers' texts, re-tokenized) where they differ


@dataclass
class LookupOutcome:
    results: list[GenerationResult] = field(default_factory=list)
    compared: int = 0
    differences: list[Difference] = field(default_factory=list)

    def summary(self, system: str, streams: int) -> dict[str, float] | None:
        for result in self.results:
            if result.system == system and result.streams == streams:
                return result.summary() | acceptance(result)
        return None


def acceptance(result: GenerationResult) -> dict[str, float]:
    """The servable's own count of proposed and accepted tokens (end_signal's `lookup`), summed."""
    counts = [r.extra["lookup"] for r in result.requests if "lookup" in r.extra]
    proposed = sum(c["proposed_tokens"] for c in counts)
    accepted = sum(c["accepted_tokens"] for c in counts)
    return {"acceptance_rate": accepted / proposed} if proposed else {}


def rag_prompt(tokenizer: ov_genai.Tokenizer, question: str, sources: list[dict]) -> str:
    """The prompt the servable built in generate mode: its chain's messages from the sources it sent
    (the passages, in order), through the model's chat template."""
    chain = RagChain(None, None, None, 0, 0, AnswerSettings(mode="generate"))
    request = ChatRequest(messages=[{"role": "user", "content": question}], max_new_tokens=1)
    passages = [Passage(source["text"], {}, source["score"]) for source in sources]
    turns = [
        {"role": ROLE_OF_TYPE[m.type], "content": m.content} for m in chain._messages(request, passages, 0)
    ]
    return tokenizer.apply_chat_template(turns, add_generation_prompt=True)


def first_difference(tokenizer: ov_genai.Tokenizer, a: str, b: str) -> int | None:
    ids = [tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist() for text in (a, b)]
    if ids[0] == ids[1]:
        return None
    return next((i for i, (x, y) in enumerate(zip(*ids, strict=False)) if x != y), min(map(len, ids)))


def run_genai(
    pipeline: ov_genai.LLMPipeline, lookup: bool, prompts: list[str], max_new_tokens: int
) -> GenerationResult:
    """GenAI's plain pipeline (one stream) on `prompts`, with GenAI's prompt lookup at the servable's
    default sizes or without."""
    config = generation_config(max_new_tokens)
    if lookup:
        config.num_assistant_tokens = PromptLookup().assistant_tokens
        config.max_ngram_size = PromptLookup().max_ngram_size
    pipeline.generate(prompts[0], config)  # warm-up
    requests = []
    with CpuMeter() as cpu:
        for prompt in prompts:
            timing = RequestTiming(start=now())
            pipeline.generate(prompt, config, TokenClock(timing))
            timing.end = timing.end or now()
            requests.append(timing)
    return GenerationResult(GENAI_ON if lookup else GENAI_OFF, 1, requests, cpu_s=cpu.used)


def in_turns(
    settings: Settings,
    attempt: Callable[..., bool],
    envs: dict[str, dict[str, str]],
    levels: tuple[int, ...],
    ignore_eos: bool = True,
) -> tuple[list[GenerationResult], dict[str, dict[str, RequestTiming]]]:
    """One server per system (label -> its environment), taking turns round by round at each number of
    streams in `levels`; the results, and each system's one-stream answers by question."""
    results: list[GenerationResult] = []
    answers: dict[str, dict[str, RequestTiming]] = {label: {} for label in envs}

    def ask(bench: ServerBench, label: str, streams: int, questions: tuple[str, ...], into: list) -> None:
        result = bench.generation(streams, 1, questions, use_rag=True, keep_text=True, ignore_eos=ignore_eos)
        result.system = label
        into.append(result)
        if streams == 1:
            answers[label].update({t.extra["question"]: t for t in result.requests})

    with contextlib.ExitStack() as stack:
        benches = {label: stack.enter_context(ServerBench(settings, env)) for label, env in envs.items()}
        for label, bench in benches.items():
            if not attempt(f"10. start the server, {label}", bench.start):
                return results, answers
        for streams in levels:
            done: dict[str, list[GenerationResult]] = {label: [] for label in envs}
            rounds = max(settings.min_rounds, -(-len(QUESTIONS) // streams))
            for r in range(rounds):
                k = r % len(QUESTIONS)
                questions = QUESTIONS[k:] + QUESTIONS[:k]
                for label, bench in benches.items():
                    step = f"10. {label} at {streams} streams, round {r + 1}/{rounds}"
                    attempt(step, ask, bench, label, streams, questions, done[label])
            results += [GenerationResult.combine(parts) for parts in done.values() if parts]
    return results, answers


def measure(settings: Settings, attempt: Callable[..., bool]) -> LookupOutcome:
    """Both servers at every number of streams, in turns; then GenAI at one stream and the comparison;
    then both again in extract mode (the default model's answer mode; its answers end at EOS).
    `attempt(label, step, *args)` runs a step and records a failure (see cli._attempt)."""
    out = LookupOutcome()
    envs = {OFF: {"PROMPT_LOOKUP": "0"}, ON: {"PROMPT_LOOKUP": "1"}}
    out.results, answers = in_turns(settings, attempt, envs, settings.streams)
    both = [q for q in QUESTIONS if q in answers[OFF] and q in answers[ON]]

    def genai(lookup: bool) -> None:
        # The pipeline's own tokenizer: another compiled model in this process would slow it down.
        pipeline = ov_genai.LLMPipeline(
            str(settings.llm_dir), "CPU", **({"prompt_lookup": True} if lookup else {})
        )
        tokenizer = pipeline.get_tokenizer()
        if not lookup:
            compare(tokenizer)
        prompts = [rag_prompt(tokenizer, q, answers[ON][q].extra["sources"]) for q in both]
        out.results.append(run_genai(pipeline, lookup, prompts, settings.max_new_tokens))

    def compare(tokenizer: ov_genai.Tokenizer) -> None:
        out.compared = len(both)
        for question in both:
            texts = (answers[OFF][question].extra["text"], answers[ON][question].extra["text"])
            token = first_difference(tokenizer, *texts)
            if token is not None:
                out.differences.append(Difference(question, token))

    if both:
        attempt(f"10. {GENAI_OFF}", genai, False)
        attempt(f"10. {GENAI_ON}", genai, True)
    extract = {f"{label}, extract": env | {"ANSWER_MODE": "extract"} for label, env in envs.items()}
    out.results += in_turns(settings, attempt, extract, settings.streams, ignore_eos=False)[0]
    return out


COLUMNS = ("System", "Streams", "TTFT p50 ms", "ITL p50 ms", "Decode tok/s", "Tok/s aggregate", "Accepted")


def tables(out: LookupOutcome, streams: tuple[int, ...]) -> tuple[list[report.Table], list[report.Target]]:
    """Part 9's rows, its targets (issue 23) and the answers that differ."""
    rows = []
    for system in SYSTEMS:
        for n in (1,) if system in (GENAI_OFF, GENAI_ON) else streams:
            s = out.summary(system, n)
            if s is None:
                continue
            rate = f"{s['acceptance_rate']:.0%}" if "acceptance_rate" in s else "-"
            cells = [report._num(s[k]) for k in ("ttft_p50", "itl_p50", "decode_tps", "aggregate_tps")]
            rows.append([system, str(n), *cells, rate])
    found = targets(out, streams)
    differ = [[d.question, str(d.token)] for d in out.differences] or [["(none)", "-"]]
    title = f"Greedy answers that differ with lookup on ({len(out.differences)} of {out.compared}, 1 stream)"
    return [
        report.Table("Prompt-lookup decoding on RAG answers (part 10)", COLUMNS, rows),
        report.Table(
            TARGETS_TITLE, report.TARGET_COLUMNS, [[t.name, t.measured, t.goal, t.result] for t in found]
        ),
        report.Table(title, ("Question", "First differing token (answers re-tokenized)"), differ),
    ], found


TARGETS_TITLE = "Targets (issue 23, prompt lookup)"
SLOTS = "GenAI checks every assistant slot of every sequence at each step, found in the prompt or not"


def targets(out: LookupOutcome, streams: tuple[int, ...]) -> list[report.Target]:
    """Issue 23's targets, in each answer mode. The new default is lookup on in extract mode and off
    (today's engine, 1.00x by construction) in generate mode."""
    top, nan = max(streams), float("nan")
    xon, xoff = f"{ON}, extract", f"{OFF}, extract"

    def ratio(a: str, b: str, key: str, n: int = 1) -> float:
        x, y = out.summary(a, n), out.summary(b, n)
        return x[key] / y[key] if x and y and y[key] else nan

    def accepted(system: str, n: int = 1) -> str:
        return f"{(out.summary(system, n) or {}).get('acceptance_rate', nan):.0%}"

    times = lambda x: f"{x:.2f}x"  # noqa: E731
    same = (out.compared - len(out.differences)) / out.compared if out.compared else nan
    busy = (
        f"{SLOTS}, so {top} sequences make each step several times the work on cores that are already "
        "the limit; a lookup pipeline refuses a request without lookup, so the engine can only lower a "
        "busy request to one slot."
    )
    return [
        report._check(
            "1 stream, RAG, extract mode: decode tok/s, lookup / today's", ratio(xon, xoff, "decode_tps"),
            1.2, True, times, lambda: f"{accepted(xon)} of the proposals were accepted.", "no data",
        ),
        report._check(
            "1 stream, RAG, generate mode: decode tok/s, lookup / today's", ratio(ON, OFF, "decode_tps"), 1.2,
            True, times,
            lambda: f"{accepted(ON)} of the proposals were accepted: the model writes more of its own words "
            f"than it copies, and {SLOTS}. Off by default in generate mode.",
            "no data",
        ),
        report._check(
            "1 stream: decode tok/s, servable / LLMPipeline, both with lookup",
            ratio(ON, GENAI_ON, "decode_tps"), 0.95, True, times,
            lambda: "see part 1's note on the servable against GenAI.", "no data",
        ),
        report._check(
            f"{top} streams, extract mode: aggregate tok/s, new default (on) / today's",
            ratio(xon, xoff, "aggregate_tps", top), 1.0, True, times, lambda: busy, "no data",
        ),
        report._check(
            f"{top} streams, generate mode: aggregate tok/s, lookup on / off",
            ratio(ON, OFF, "aggregate_tps", top), 1.0, True, times,
            lambda: f"{busy} Off by default in generate mode.", "no data",
        ),
        report._check(
            "greedy answers identical with and without (generate mode)", same, 0.95, True,
            lambda x: f"{x:.0%}",
            lambda: "the CPU plugin infers in bf16 here (AMX), and a step over several tokens rounds "
            "differently from one over one token; in f32 (INFERENCE_PRECISION_HINT, KV cache, no dynamic "
            "quantization) the answers were the same (bench/NOTES.md).",
            "no data",
        ),
    ]  # fmt: skip
