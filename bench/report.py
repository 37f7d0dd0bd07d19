"""The benchmark's tables (printed with rich, written as Markdown), its targets and its plot."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from bench.settings import Settings
from bench.timing import GenerationResult

# (system key, label, part)
SYSTEMS = (
    ("servable", "1. servable", "servable"),
    ("servable + RAG", "1. servable + RAG", "servable"),
    ("genai", "2. GenAI", "genai"),
    ("genai + context", "2. GenAI + context", "genai"),
    ("reference", "3. reference", "reference"),
    ("direct gRPC", "9. direct gRPC", "gateway"),
    ("gateway", "9. OpenAI gateway", "gateway"),
)
LEGEND = (
    "1. servable: the local server and tritonclient streams, use_rag off (same prompts as 2 and 3); "
    "servable + RAG: the same with retrieval on (top-k chunks added to the prompt). "
    "2. GenAI: OpenVINO GenAI in-process, LLMPipeline at 1 stream, ContinuousBatchingPipeline above; "
    "GenAI + context: the same at 1 stream with document text in a system turn, as long as the "
    "servable's RAG prompt (the limit for servable + RAG). "
    "3. reference: one optimum-intel OVModelForCausalLM per stream, HF generate + TextIteratorStreamer "
    "on threads. TTFT and ITL are timed where the tokens are consumed: tritonclient stream callbacks "
    "for 1, the pipeline's output for 2, the streamer for 3. CPU per token is the CPU time of the "
    "requests on the same 2 cores: the benchmark process runs the tritonclient clients for 1, the "
    "pipeline for 2 and the models for 3; the local server process runs the servable for 1. "
    "9. the same server and requests as 1, straight over gRPC and through the OpenAI-compatible gateway "
    "(python -m client.openai_api, SSE over HTTP), taking turns; the gateway's own process is counted "
    "in the CPU table's gateway column."
)
# Measured at one stream only, beside their counterpart.
SINGLE_STREAM_SYSTEMS = ("servable + RAG", "genai + context")
# Part 9, measured at settings.gateway_streams.
GATEWAY_SYSTEMS = ("direct gRPC", "gateway")
GENERATION_COLUMNS = (
    "System", "Streams", "TTFT p50 ms", "TTFT p95 ms", "ITL p50 ms", "ITL p95 ms",
    "Decode tok/s", "Tok/s per stream", "Tok/s aggregate",
)  # fmt: skip
GENERATION_KEYS = ("ttft_p50", "ttft_p95", "itl_p50", "itl_p95", "decode_tps", "stream_tps", "aggregate_tps")
TARGET_COLUMNS = ("Target", "Measured", "Goal", "Result")
LAYER_COLUMNS = ("Layer", "Decode tok/s", "ITL p50 ms", "Of the pipeline", "Of the layer above")
# Part 8's rows: (system key, label), each layer on top of the one before.
LAYER_ROWS = (
    ("pipeline", "ContinuousBatchingPipeline stepped directly"),
    ("engine", "+ the servable's Engine (stepping thread, detokenizer, reader thread)"),
    ("chat model", "+ its LangChain chat model stream"),
    ("servable", "+ Python node, local server, gRPC and tritonclient (part 1)"),
)
OTHER_COLUMNS = ("Measurement", "Value")
CPU_TITLE = "CPU per generated token (ms, user + system, all threads)"
CPU_COLUMNS = ("System", "Streams", "Benchmark process", "Local server process", "Gateway process", "All")


@dataclass
class Outcome:
    """Everything one run produced, and why any part has no numbers."""

    settings: Settings
    command: str
    generation: list[GenerationResult] = field(default_factory=list)
    layers: list[GenerationResult] = field(default_factory=list)  # part 8, one stream
    lookup: Any = None  # part 10's bench.lookup.LookupOutcome, when it ran
    values: dict[str, float] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # part -> "skipped" or "error: ..."
    context: dict[str, str] = field(default_factory=dict)  # when, machine, models, load average

    def summary(self, system: str, streams: int) -> dict[str, float] | None:
        for result in self.generation:
            if result.system == system and result.streams == streams:
                return result.summary()
        return None

    def state(self, part: str) -> str:
        return self.problems.get(part, "missing").split(":")[0]


@dataclass
class Table:
    title: str
    columns: tuple[str, ...]
    rows: list[list[str]]


@dataclass
class Target:
    name: str
    measured: str
    goal: str
    result: str  # PASS, MISS or n/a (skipped / error)
    note: str = ""


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _levels(settings: Settings, system: str) -> list[int]:
    if system in GATEWAY_SYSTEMS:
        return list(settings.gateway_streams)
    if system in SINGLE_STREAM_SYSTEMS:
        return [1] if 1 in settings.streams else []
    return list(settings.streams)


def generation_table(outcome: Outcome) -> Table:
    rows = []
    for system, label, part in SYSTEMS:
        for streams in _levels(outcome.settings, system):
            summary = outcome.summary(system, streams)
            cells = (
                [_num(summary[k]) for k in GENERATION_KEYS]
                if summary
                else [outcome.state(part)] * len(GENERATION_KEYS)
            )
            rows.append([label, str(streams), *cells])
    return Table("Generation (client-side timings)", GENERATION_COLUMNS, rows)


def _check(
    name: str, measured: float | None, goal: float, at_least: bool, shown: Callable[[float], str],
    why: Callable[[], str], missing: str, goal_text: str | None = None,
) -> Target:  # fmt: skip
    goal_text = goal_text or f"{'≥' if at_least else '≤'} {shown(goal)}"
    if measured is None or math.isnan(measured):
        return Target(name, "n/a", goal_text, "n/a", f"not measured ({missing})")
    ok = measured >= goal if at_least else measured <= goal
    return Target(name, shown(measured), goal_text, "PASS" if ok else "MISS", "" if ok else why())


def _layer_shares(o: Outcome) -> str:
    """Part 8 in a sentence, when it ran."""
    rates = {r.system: r.summary()["decode_tps"] for r in o.layers}
    if not {key for key, _ in LAYER_ROWS} <= rates.keys():
        return ""
    return (
        f"In part 8 the engine keeps {rates['engine'] / rates['pipeline']:.0%} of the pipeline's own rate "
        f"and the chat model {rates['chat model'] / rates['engine']:.0%} of the engine's; the node, local "
        f"server, gRPC and client keep {rates['servable'] / rates['chat model']:.0%} of the chat model's. "
    )


FRONT_END_FIX = "A front end with less CPU per token (OVMS's C++ gRPC server) would close it."


def _cpu_split(servable: dict, genai: dict) -> str:
    """The CPU per token of the servable's server and clients against GenAI's, in a sentence."""
    keys = ("cpu_ms_server", "cpu_ms_benchmark")
    if not all(key in servable for key in keys) or "cpu_ms_benchmark" not in genai:
        return ""
    return (
        f"The inference keeps both cores busy (CPU per token: GenAI {genai['cpu_ms_benchmark']:.2f} ms), so "
        f"any other work slows it: per token the local server used {servable['cpu_ms_server']:.2f} ms and "
        f"the tritonclient clients {servable['cpu_ms_benchmark']:.2f} ms, on the same cores. "
    )


def targets(o: Outcome) -> list[Target]:
    """Each target of issue 8, measured as ratios against (2) and (3) on this machine."""
    v, top = o.values, max(o.settings.streams)
    one, one_rag = o.summary("servable", 1) or {}, o.summary("servable + RAG", 1) or {}
    many, rtop = o.summary("servable", top) or {}, o.summary("reference", top) or {}
    g1, gtop = o.summary("genai", 1) or {}, o.summary("genai", top) or {}
    g1_context = o.summary("genai + context", 1) or {}
    gw_top = max(o.settings.gateway_streams)
    gateway, direct = o.summary("gateway", gw_top) or {}, o.summary("direct gRPC", gw_top) or {}
    nan = float("nan")

    def ratio(a: dict, b: dict, key: str) -> float:
        return a.get(key, nan) / b.get(key, nan) if b.get(key) else nan

    def missing(*parts: str) -> str:
        return ", ".join(f"{p} {o.state(p)}" for p in parts if p in o.problems) or "no data"

    times = lambda x: f"{x:.2f}x"  # noqa: E731
    ms = lambda x: f"{x:.1f} ms"  # noqa: E731
    retrieval = one_rag.get("retrieval_ms", nan)
    reload_goal = 2.0 + v.get("reload_embedding_s", 0.0)
    edit_goal = 2.0 + v.get("edit_embedding_s", 0.0)
    return [
        _check(
            "1 stream: decode tok/s, servable / GenAI", ratio(one, g1, "decode_tps"), 0.95, True, times,
            lambda: f"servable {one['decode_tps']:.0f} tok/s against GenAI {g1['decode_tps']:.0f}. "
            f"{_layer_shares(o)}{_cpu_split(one, g1)}`pipeline.step()` holds Python's GIL for the whole "
            "step, so the server's Python work for each token (the node's packet, grpcio's send and its "
            "completion thread) runs between steps and lengthens them; stepping without the GIL (through "
            f"`generate()`, tried) made it compete for the cores instead. {FRONT_END_FIX}",
            missing("servable", "genai"),
        ),
        _check(
            "1 stream: TTFT p50 above GenAI, no RAG", one.get("ttft_p50", nan) - g1.get("ttft_p50", nan), 30,
            False, ms,
            lambda: "the gap is likely the new gRPC stream per question, request parsing and chat "
            "templating, and the hand-off to the stepping thread; reusing one stream per user and "
            "templating in C++ would narrow it.",
            missing("servable", "genai"),
        ),
        _check(
            "1 stream: TTFT p50 above GenAI + context, with RAG",
            one_rag.get("ttft_p50", nan) - g1_context.get("ttft_p50", nan), retrieval + 30, False, ms,
            lambda: f"retrieval took {retrieval:.0f} ms; the rest is the servable's own work before the "
            "first token (request parsing, chat templating and tokenizing a "
            f"{one_rag.get('prompt_tokens', nan):.0f}-token prompt, the hand-off to the stepping thread).",
            missing("servable", "genai"), goal_text=f"≤ retrieval + 30 ms = {_num(retrieval + 30)} ms",
        ),
        _check(
            f"{top} streams: aggregate tok/s / 1 stream", ratio(many, one, "aggregate_tps"), 3.5, True, times,
            lambda: f"on {os.cpu_count()} cores decoding becomes compute-bound after a few "
            f"sequences: GenAI itself scales {ratio(gtop, g1, 'aggregate_tps'):.2f}x here; only more cores "
            "(or a smaller per-token cost) close it.",
            missing("servable"),
        ),
        _check(
            f"{top} streams: aggregate tok/s, servable / GenAI CB", ratio(many, gtop, "aggregate_tps"), 0.85,
            True, times,
            lambda: f"servable {many['aggregate_tps']:.0f} against GenAI {gtop['aggregate_tps']:.0f} tok/s. "
            f"{_cpu_split(many, gtop)}{FRONT_END_FIX}",
            missing("servable", "genai"),
        ),
        _check(
            f"{top} streams: aggregate tok/s, servable / reference", ratio(many, rtop, "aggregate_tps"), 5.0,
            True, times,
            lambda: f"the reference approach reached {rtop['aggregate_tps']:.0f} tok/s with {top} model "
            "instances; with few streams or tokens there is little for batching to win.",
            missing("servable", "reference"),
        ),
        _check(
            "retrieval p50 (embed query + FAISS search)", v.get("retrieval_p50_ms", nan), 25, False, ms,
            lambda: "the query embedding dominates; a static-shape (reshaped) embedding model or a smaller "
            "one (bge-small) would close it.",
            missing("retrieval"),
        ),
        _check(
            "indexing chunks/s, OpenVINO / sentence-transformers",
            v.get("ov_chunks_per_s", nan) / v.get("st_chunks_per_s", nan), 1.8, True, times,
            lambda: "OpenVINOEmbeddings pads every batch to its longest text and pools in PyTorch; an INT8 "
            "embedding model or a larger batch would close it.",
            missing("indexing"),
        ),
        _check(
            "re-index one document of twenty / full rebuild",
            v.get("reindex_one_build_s", nan) / v.get("reindex_all_build_s", nan), 0.10, False, times,
            lambda: "the incremental build still reloads and re-hashes every document and rewrites the "
            "whole index; keeping per-document state and appending to the FAISS index would close it.",
            missing("reindex"),
        ),
        _check(
            "live reload: docs.txt written -> answer cites it", v.get("reload_s", nan), reload_goal, False,
            lambda x: f"{x:.2f} s",
            lambda: "the file watcher's debounce and poll interval add to the build; a shorter "
            "DOCS_WATCH_DEBOUNCE_S would close it.",
            missing("reload"), goal_text=f"≤ 2 s + embedding = {reload_goal:.2f} s",
        ),
        _check(
            "a listed file edited -> an answer cites the new text", v.get("edit_s", nan), edit_goal, False,
            lambda x: f"{x:.2f} s",
            lambda: "the file event's debounce (DOCS_WATCH_DEBOUNCE_S) and the rebuild, which re-reads "
            "every listed document, add to the embedding; a shorter debounce would close it.",
            missing("edit"), goal_text=f"≤ 2 s + embedding = {edit_goal:.2f} s",
        ),
        _check(
            f"{gw_top} streams: aggregate tok/s, OpenAI gateway / direct gRPC (issue 22)",
            ratio(gateway, direct, "aggregate_tps"), 0.9, True, times,
            lambda: f"the gateway used {gateway.get('cpu_ms_gateway', nan):.2f} ms of CPU per token in its "
            "own process (a JSON chunk and an HTTP write per piece, and a thread hop from tritonclient's "
            "callback to the event loop), taken from the same cores the servable decodes on.",
            missing("gateway"),
        ),
    ]  # fmt: skip


def target_table(found: list[Target]) -> Table:
    return Table("Targets (issue 8)", TARGET_COLUMNS, [[t.name, t.measured, t.goal, t.result] for t in found])


def other_table(o: Outcome) -> Table:
    v, top = o.values, max(o.settings.streams)

    def rate(key: str) -> str:
        return f"{v[key]:.0f} chunks/s (on {v['indexing_chunks']:.0f} chunks)"

    def rebuild(kind: str) -> str:
        return (
            f"{v[f'reindex_{kind}_build_s']:.2f} s build, chunks embedded: "
            f"{v[f'reindex_{kind}_embedded_chunks']:.0f}; {v[f'reindex_{kind}_wall_s']:.2f} s from the "
            "docs.txt write to the new index"
        )

    rows = [  # (measurement, part, key that must be there, text)
        (
            "4. retrieval p50 / p95",
            "retrieval",
            "retrieval_p50_ms",
            lambda: (
                f"{v['retrieval_p50_ms']:.1f} / {v['retrieval_p95_ms']:.1f} ms on {v['chunks']:.0f} chunks"
            ),
        ),
        ("5a. OpenVINO embeddings", "indexing", "ov_chunks_per_s", lambda: rate("ov_chunks_per_s")),
        (
            "5a. sentence-transformers on PyTorch",
            "indexing",
            "st_chunks_per_s",
            lambda: rate("st_chunks_per_s"),
        ),
        (
            "5b. re-index after touching 1 of 20 documents",
            "reindex",
            "reindex_one_build_s",
            lambda: rebuild("one"),
        ),
        (
            "5b. full rebuild (all 20 documents changed)",
            "reindex",
            "reindex_all_build_s",
            lambda: rebuild("all"),
        ),
        ("6. live reload, docs.txt written -> cited", "reload", "reload_s", lambda: f"{v['reload_s']:.2f} s"),
        ("6b. live reload, a listed file edited -> cited", "edit", "edit_s", lambda: f"{v['edit_s']:.2f} s"),
        (
            "7. server RSS, default models loaded",
            "memory",
            "rss_loaded_mb",
            lambda: f"{v['rss_loaded_mb']:.0f} MB",
        ),
        (
            f"7. server peak RSS at {top} streams",
            "memory",
            "rss_peak_mb",
            lambda: f"{v['rss_peak_mb']:.0f} MB",
        ),
    ]
    cells = [[name, text() if key in v else o.state(part)] for name, part, key, text in rows]
    return Table("Retrieval, indexing, reload, memory", OTHER_COLUMNS, cells)


def layer_table(o: Outcome) -> Table:
    """Part 8: one stream's decode rate as each layer of the servable is added, in turns in one run."""
    rates = {r.system: r.summary() for r in o.layers}
    base = rates.get("pipeline", {}).get("decode_tps", float("nan"))
    rows, above = [], float("nan")
    for key, label in LAYER_ROWS:
        if key not in rates:
            rows.append([label, *[o.state("layers")] * (len(LAYER_COLUMNS) - 1)])
            continue
        rate = rates[key]["decode_tps"]
        shares = [f"{rate / base:.1%}", f"{rate / above:.1%}" if not math.isnan(above) else "-"]
        rows.append([label, _num(rate), _num(rates[key]["itl_p50"], 2), *shares])
        above = rate
    return Table("One stream, layer by layer (part 8, no target)", LAYER_COLUMNS, rows)


def cpu_table(o: Outcome) -> Table:
    """CPU per generated token of each system and number of streams, by process."""
    rows = []
    for system, label, part in SYSTEMS:
        for streams in _levels(o.settings, system):
            summary = o.summary(system, streams)
            if summary is None:
                rows.append([label, str(streams), *[o.state(part)] * (len(CPU_COLUMNS) - 2)])
                continue
            used = [summary.get(f"cpu_ms_{key}") for key in ("benchmark", "server", "gateway")]
            cells = [_num(ms, 2) if ms is not None else "-" for ms in used]
            cells.append(_num(sum(ms for ms in used if ms is not None), 2))
            rows.append([label, str(streams), *cells])
    return Table(CPU_TITLE, CPU_COLUMNS, rows)


def tables(outcome: Outcome) -> tuple[list[Table], list[Target]]:
    found = targets(outcome)
    lookup, lookup_found = [], []
    if outcome.lookup is not None:
        from bench import lookup as part10

        lookup, lookup_found = part10.tables(outcome.lookup, outcome.settings.streams)
    return [
        generation_table(outcome), target_table(found), cpu_table(outcome), other_table(outcome),
        layer_table(outcome), *lookup,
    ], found + lookup_found  # fmt: skip


def print_tables(all_tables: list[Table], console: Console) -> None:
    for table in all_tables:
        rich_table = RichTable(title=table.title)
        for column in table.columns:
            rich_table.add_column(column)
        for row in table.rows:
            rich_table.add_row(*row)
        console.print(rich_table)


def markdown_table(table: Table) -> list[str]:
    """The table's lines in Markdown (its title is left to the caller)."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]


def markdown(outcome: Outcome, all_tables: list[Table], found: list[Target], plot: str | None) -> str:
    lines = ["# Benchmark results", "", f"Command: `{outcome.command}`", ""]
    lines += [f"- {key}: {value}" for key, value in outcome.context.items()]
    lines += ["", LEGEND]
    for table in all_tables:
        lines += ["", f"## {table.title}", "", *markdown_table(table)]
    if plot:
        lines += ["", f"![throughput and TTFT against concurrent streams]({plot})"]
    notes = [f"- **{t.name}** ({t.result}): {t.note}" for t in found if t.result == "MISS"]
    problems = outcome.problems.items()
    notes += [f"- part {part}: {problem}" for part, problem in problems if problem != "skipped"]
    lines += ["", "## Notes", ""] + (notes or ["- Every target was met."])
    return "\n".join(lines) + "\n"


def plot(outcome: Outcome, path: Path) -> bool:
    """Aggregate tok/s and TTFT p50 against concurrent streams for (1), (2) and (3); False if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = False
    for system, label, _part in SYSTEMS:
        points = [(n, s) for n in outcome.settings.streams if (s := outcome.summary(system, n))]
        if system in SINGLE_STREAM_SYSTEMS + GATEWAY_SYSTEMS or not points:
            continue
        streams = [n for n, _ in points]
        left.plot(streams, [s["aggregate_tps"] for _, s in points], marker="o", label=label)
        right.plot(streams, [s["ttft_p50"] for _, s in points], marker="o", label=label)
        drawn = True
    if not drawn:
        plt.close(figure)
        return False
    for axis, title in ((left, "Aggregate throughput (tok/s)"), (right, "Time to first token p50 (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(outcome.settings.streams), [str(n) for n in outcome.settings.streams])
        axis.set_xlabel("concurrent streams")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    figure.suptitle(f"{outcome.settings.max_new_tokens} new tokens per request, ignore_eos")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
