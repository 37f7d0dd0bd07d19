"""Part 10: prompt-lookup decoding on RAG answers.

Two servers on servable copies, taking turns round by round: today's engine (PROMPT_LOOKUP=0) and
prompt lookup on, both answering questions about the benchmark's documents with retrieval on, at each
number of streams, in each answer mode: extract (the mode the default model's registry entry sets, and
the one where lookup is on by default) and generate (where it is off by default; once more in f32, at
one stream). At one stream GenAI's own `LLMPipeline` with prompt lookup takes its turn after the
servers' on the same prompt (the servable's RAG prompt, rebuilt by its own chain from the sources it
sent, held to the same passages in extract mode), and without lookup answers them all afterwards. The
greedy answers of the two servers are compared prompt by prompt.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import openvino_genai as ov_genai

from bench import report
from bench.genai import TokenClock, generation_config, silent_tokens
from bench.servable import ServerBench
from bench.settings import QUERIES, Settings, servable_on_path
from bench.timing import CpuMeter, GenerationResult, RequestTiming, now

servable_on_path()

from ragbot.chain import RagChain, extract_regex  # noqa: E402
from ragbot.chat_model import ROLE_OF_TYPE  # noqa: E402
from ragbot.passages import Passage  # noqa: E402
from ragbot.request import ChatRequest  # noqa: E402
from ragbot.settings import AnswerSettings, PromptLookup  # noqa: E402

OFF, ON = "servable + RAG, lookup off", "servable + RAG, lookup on"
GENAI_OFF, GENAI_ON = "GenAI LLMPipeline, lookup off", "GenAI LLMPipeline, lookup on"
# The CPU plugin's settings under which a step over several tokens rounds as one over a single token
# (bench/NOTES.md): f32 inference without dynamic quantization of the activations.
EXACT = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


@dataclass(frozen=True)
class Variant:
    """How both servers answer: an answer mode and the settings on top of the default ones."""

    name: str
    mode: str
    suffix: str  # of its systems' labels
    env: dict[str, str]
    all_streams: bool = True  # else at one stream only, without GenAI's rows


VARIANTS = (
    Variant("extract", "extract", ", extract", {}),  # the default model's mode first
    # With one choice (the default) the regex leaves one text: nothing for lookup to change.
    Variant("extract, 3 choices", "extract", ", extract, 3 choices", {"EXTRACT_CHOICES": "3"}, False),
    Variant("generate", "generate", "", {}),
    Variant("generate, f32", "generate", ", generate, f32", {"LLM_PLUGIN_CONFIG": json.dumps(EXACT)}, False),
)
BY_NAME = {v.name: v for v in VARIANTS}
SYSTEMS = tuple(
    f"{system}{v.suffix}"
    for v in VARIANTS
    for system in ((OFF, ON, GENAI_OFF, GENAI_ON) if v.all_streams else (OFF, ON))
)
# The questions the benchmark documents answer (retrieval's queries), asked in this order.
QUESTIONS = QUERIES


@dataclass
class Difference:
    question: str
    token: int  # the first token (of the answers' texts, re-tokenized) where they differ


@dataclass
class Comparison:
    """One answer mode's greedy answers, lookup off against on, at one stream."""

    compared: int = 0
    differences: list[Difference] = field(default_factory=list)

    def same(self) -> float:
        return (self.compared - len(self.differences)) / self.compared if self.compared else float("nan")


@dataclass
class LookupOutcome:
    results: list[GenerationResult] = field(default_factory=list)
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # by Variant.name

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


@dataclass
class RagPrompt:
    text: str
    regex: str | None  # extract mode's structured output


def rag_prompt(tokenizer: ov_genai.Tokenizer, question: str, sources: list[dict], mode: str) -> RagPrompt:
    """The prompt the servable built: its chain's messages from the sources it sent (the passages, in
    order), through the model's chat template, and in extract mode the passages the answer is held to."""
    answer = AnswerSettings(mode=mode)
    chain = RagChain(None, None, None, 0, 0, answer)
    request = ChatRequest(messages=[{"role": "user", "content": question}], max_new_tokens=1)
    passages = [Passage(source["text"], {}, source["score"]) for source in sources]
    turns = [
        {"role": ROLE_OF_TYPE[m.type], "content": m.content} for m in chain._messages(request, passages, 0)
    ]
    regex = extract_regex(passages, answer.extract_choices) if mode == "extract" else None
    return RagPrompt(tokenizer.apply_chat_template(turns, add_generation_prompt=True), regex)


def first_difference(tokenizer: ov_genai.Tokenizer, a: str, b: str) -> int | None:
    ids = [tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist() for text in (a, b)]
    if ids[0] == ids[1]:
        return None
    return next((i for i, (x, y) in enumerate(zip(*ids, strict=False)) if x != y), min(map(len, ids)))


def run_genai(
    pipeline: ov_genai.LLMPipeline,
    lookup: bool,
    prompts: list[RagPrompt],
    max_new_tokens: int,
    label: str,
    warm_up: bool = True,
) -> GenerationResult:
    """GenAI's plain pipeline (one stream) on `prompts`, with GenAI's prompt lookup at the servable's
    default sizes for the answer mode or without; held to extract mode's passages (and so ending at
    EOS) where they are."""

    def config(prompt: RagPrompt) -> ov_genai.GenerationConfig:
        config = generation_config(max_new_tokens)
        if lookup:
            sizes = PromptLookup.for_mode("extract" if prompt.regex else "generate")
            config.num_assistant_tokens = sizes.assistant_tokens
            config.max_ngram_size = sizes.max_ngram_size
        if prompt.regex:
            config.ignore_eos = False
            config.structured_output_config = ov_genai.StructuredOutputConfig(regex=prompt.regex)
        return config

    if warm_up:
        pipeline.generate(prompts[0].text, config(prompts[0]))
    requests = []
    silent = silent_tokens(pipeline.get_tokenizer())
    with CpuMeter() as cpu:
        for prompt in prompts:
            timing = RequestTiming(start=now())
            pipeline.generate(prompt.text, config(prompt), TokenClock(timing, silent))
            timing.end = timing.end or now()
            requests.append(timing)
    return GenerationResult(label, 1, requests, cpu_s=cpu.used)


def in_turns(
    settings: Settings,
    attempt: Callable[..., bool],
    envs: dict[str, dict[str, str]],
    levels: tuple[int, ...],
    ignore_eos: bool = True,
    one_stream_turn: Callable[[str, dict[str, dict[str, RequestTiming]]], None] | None = None,
) -> tuple[list[GenerationResult], dict[str, dict[str, RequestTiming]]]:
    """One server per system (label -> its environment), taking turns round by round at each number of
    streams in `levels`, and at one stream `one_stream_turn(question, answers so far)` after them; the
    results, and each system's one-stream answers by question."""
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
                if streams == 1 and one_stream_turn is not None:
                    attempt(f"10. {GENAI_ON}, round {r + 1}/{rounds}", one_stream_turn, questions[0], answers)
            results += [GenerationResult.combine(parts) for parts in done.values() if parts]
    return results, answers


def measure(settings: Settings, attempt: Callable[..., bool]) -> LookupOutcome:
    """Both servers at every number of streams, in turns, for each variant (extract answers end at
    EOS), GenAI with lookup taking its turn at one stream; then GenAI without lookup on the same
    prompts, and the comparisons. `attempt(label, step,
    *args)` runs a step and records a failure (see cli._attempt)."""
    out = LookupOutcome()
    answers: dict[str, dict[str, RequestTiming]] = {}
    for v in VARIANTS:
        env = v.env | {"ANSWER_MODE": v.mode}
        envs = {
            f"{OFF}{v.suffix}": env | {"PROMPT_LOOKUP": "0"},
            f"{ON}{v.suffix}": env | {"PROMPT_LOOKUP": "1"},
        }
        levels = settings.streams if v.all_streams else (1,)
        turns = GenAITurns(settings, v) if v.all_streams else None
        results, found = in_turns(settings, attempt, envs, levels, v.mode == "generate", turns)
        out.results += results + ([turns.finish()] if turns and turns.parts else [])
        answers |= found

    def answered(v: Variant) -> list[str]:
        """The questions both servers answered from passages at one stream."""
        off, on = answers.get(f"{OFF}{v.suffix}", {}), answers.get(f"{ON}{v.suffix}", {})
        return [q for q in QUESTIONS if q in off and q in on and on[q].extra["sources"]]

    def compare(tokenizer: ov_genai.Tokenizer, v: Variant) -> None:
        questions = answered(v)
        found = Comparison(compared=len(questions))
        for question in questions:
            texts = [answers[f"{label}{v.suffix}"][question].extra["text"] for label in (OFF, ON)]
            token = first_difference(tokenizer, *texts)
            if token is not None:
                found.differences.append(Difference(question, token))
        out.comparisons[v.name] = found

    def genai_off() -> None:
        # The pipeline's own tokenizer: another compiled model in this process would slow it down.
        pipeline = ov_genai.LLMPipeline(str(settings.llm_dir), "CPU")
        tokenizer = pipeline.get_tokenizer()
        for v in VARIANTS:
            compare(tokenizer, v)
            questions = answered(v)
            if not questions or not v.all_streams:
                continue
            sources = {q: answers[f"{ON}{v.suffix}"][q].extra["sources"] for q in questions}
            prompts = [rag_prompt(tokenizer, q, sources[q], v.mode) for q in questions]
            out.results.append(
                run_genai(pipeline, False, prompts, settings.max_new_tokens, f"{GENAI_OFF}{v.suffix}")
            )

    attempt(f"10. {GENAI_OFF}", genai_off)
    return out


class GenAITurns:
    """GenAI's `LLMPipeline` with prompt lookup, taking its turn after the servers' at one stream on
    the prompt the servable with lookup built for the same question: the target that compares them
    sees the machine as they did."""

    def __init__(self, settings: Settings, v: Variant) -> None:
        self.pipeline: ov_genai.LLMPipeline | None = ov_genai.LLMPipeline(
            str(settings.llm_dir), "CPU", prompt_lookup=True
        )
        self.tokenizer = self.pipeline.get_tokenizer()  # not another compiled model (see genai_off)
        self.settings, self.variant = settings, v
        self.parts: list[GenerationResult] = []

    def __call__(self, question: str, answers: dict[str, dict[str, RequestTiming]]) -> None:
        answer = answers.get(f"{ON}{self.variant.suffix}", {}).get(question)
        if answer is None or not answer.extra["sources"]:
            return
        prompt = rag_prompt(self.tokenizer, question, answer.extra["sources"], self.variant.mode)
        label = f"{GENAI_ON}{self.variant.suffix}"
        self.parts.append(
            run_genai(
                self.pipeline, True, [prompt], self.settings.max_new_tokens, label, warm_up=not self.parts
            )
        )

    def finish(self) -> GenerationResult:
        """The turns' result; the pipeline is let go, as another compiled model in this process would
        slow down the next one."""
        self.pipeline = None
        return GenerationResult.combine(self.parts)


COLUMNS = ("System", "Streams", "TTFT p50 ms", "ITL p50 ms", "Decode tok/s", "Tok/s aggregate", "Accepted")


def tables(out: LookupOutcome, streams: tuple[int, ...]) -> tuple[list[report.Table], list[report.Target]]:
    """Part 10's rows, its targets (issue 23, on the default model's extract-mode answers), the same
    measures in generate mode, and the answers that differ."""
    rows = []
    for system in SYSTEMS:
        for n in (1,) if system.startswith("GenAI") else streams:
            s = out.summary(system, n)
            if s is None:
                continue
            rate = f"{s['acceptance_rate']:.0%}" if "acceptance_rate" in s else "-"
            cells = [report._num(s[k]) for k in ("ttft_p50", "itl_p50", "decode_tps", "aggregate_tps")]
            rows.append([system, str(n), *cells, rate])
    found = [check(out, streams, BY_NAME["extract"], goal) for goal in GOALS[:3]]
    found.append(check(out, streams, BY_NAME["extract, 3 choices"], GOALS[3]))
    generate = [check(out, streams, BY_NAME["generate"], goal) for goal in GOALS]
    exact = BY_NAME["generate, f32"]
    generate += [check(out, streams, exact, goal) for goal in (GOALS[0], GOALS[3])]
    generate.append(
        report._check(
            "1 stream: decode tok/s, lookup on in f32 / today's (off, the plugin's default precision)",
            _ratio(out, f"{ON}{exact.suffix}", OFF, "decode_tps"),
            1.2,
            True,
            _times,
            lambda: f"{_accepted(out, exact)} of the proposals were accepted.",
            "no data",
        )  # fmt: skip
    )
    differ = [
        [name, d.question, str(d.token)] for name, c in out.comparisons.items() for d in c.differences
    ] or [["-", "(none)", "-"]]
    counts = ", ".join(f"{name} {len(c.differences)} of {c.compared}" for name, c in out.comparisons.items())
    return [
        report.Table("Prompt-lookup decoding on RAG answers (part 10)", COLUMNS, rows),
        report.Table(
            TARGETS_TITLE, report.TARGET_COLUMNS, [[t.name, t.measured, t.goal, t.result] for t in found]
        ),
        report.Table(
            "The same measures in generate mode, where prompt lookup is off by default, and in f32 "
            f"(LLM_PLUGIN_CONFIG={json.dumps(EXACT)})",
            ("Measure", "Measured", "Issue 23's goal", "Why it falls short"),
            [[t.name, t.measured, t.goal, t.note or "-"] for t in generate],
        ),
        report.Table(
            f"Greedy answers that differ with lookup on (1 stream: {counts})",
            ("Answers", "Question", "First differing token (answers re-tokenized)"),
            differ,
        ),
    ], found


TARGETS_TITLE = "Targets (issue 23, prompt lookup, on RAG answers in extract mode: the default model's mode)"
SLOTS = "GenAI checks every assistant slot of every sequence at each step, found in the prompt or not"


@dataclass(frozen=True)
class Goal:
    name: str
    goal: float
    shown: Callable[[float], str]
    measured: Callable[[LookupOutcome, Variant, int], float]  # (outcome, variant, most streams)
    why: Callable[[LookupOutcome, Variant, int], str]


def _ratio(out: LookupOutcome, a: str, b: str, key: str, n: int = 1) -> float:
    x, y = out.summary(a, n), out.summary(b, n)
    return x[key] / y[key] if x and y and y[key] else float("nan")


def _accepted(out: LookupOutcome, v: Variant) -> str:
    return f"{(out.summary(f'{ON}{v.suffix}', 1) or {}).get('acceptance_rate', float('nan')):.0%}"


def _busy(top: int) -> str:
    return (
        f"{SLOTS}, so {top} sequences make each step several times the work on cores that are already "
        "the limit; a lookup pipeline refuses a request without lookup, so the engine can only lower a "
        "busy request to one slot."
    )


def _times(x: float) -> str:
    return f"{x:.2f}x"


def _same(out: LookupOutcome, v: Variant) -> float:
    return out.comparisons[v.name].same() if v.name in out.comparisons else float("nan")


GOALS = (
    Goal(
        "1 stream: decode tok/s, lookup on / today's (off)", 1.2, _times,
        lambda o, v, top: _ratio(o, f"{ON}{v.suffix}", f"{OFF}{v.suffix}", "decode_tps"),
        lambda o, v, top: f"{_accepted(o, v)} of the proposals were accepted: the model writes more of "
        f"its own words than it copies, and {SLOTS}.",
    ),
    Goal(
        "1 stream: decode tok/s, servable / LLMPipeline, both with lookup", 0.95, _times,
        lambda o, v, top: _ratio(o, f"{ON}{v.suffix}", f"{GENAI_ON}{v.suffix}", "decode_tps"),
        lambda o, v, top: "the servable's local server and gRPC cost CPU per message that GenAI's "
        "in-process streamer does not (part 8; bench/NOTES.md).",
    ),
    Goal(
        "most streams: aggregate tok/s, lookup on / today's (off)", 1.0, _times,
        lambda o, v, top: _ratio(o, f"{ON}{v.suffix}", f"{OFF}{v.suffix}", "aggregate_tps", top),
        lambda o, v, top: _busy(top),
    ),
    Goal(
        "greedy answers identical with and without", 0.95, lambda x: f"{x:.0%}",
        lambda o, v, top: _same(o, v),
        lambda o, v, top: "the CPU plugin infers in bf16 by default where the CPU has AMX, and a step over "
        "several tokens rounds differently from one over one token (in f32 without dynamic quantization "
        "it does not: the f32 rows).",
    ),
)  # fmt: skip


def check(out: LookupOutcome, streams: tuple[int, ...], v: Variant, goal: Goal) -> report.Target:
    """One of issue 23's targets, measured on the answers of `v`."""
    top = max(streams)
    name = goal.name.replace("most streams", f"{top} streams")
    return report._check(
        f"{name} ({v.name})", goal.measured(out, v, top), goal.goal, True, goal.shown,
        lambda: goal.why(out, v, top), "no data",
    )  # fmt: skip
