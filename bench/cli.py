"""Command line of the benchmark: runs every part not skipped, prints the tables and writes
results.md and results.png."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from bench import report
from bench.servable import ServerBench
from bench.settings import PARTS, PROMPTS, REPO, SERVER_PARTS, Settings, prompts_from
from bench.timing import GenerationResult

console = Console(width=None if sys.stdout.isatty() else 160)


def _streams(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(item) for item in text.split(",") if item.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--streams must be comma-separated integers, got {text!r}"
        ) from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"--streams must list numbers >= 1, got {text!r}")
    return values


def _skip(text: str) -> frozenset[str]:
    parts = frozenset(item.strip() for item in text.split(",") if item.strip())
    unknown = parts - PARTS.keys()
    if unknown:
        raise argparse.ArgumentTypeError(
            f"--skip: unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}"
        )
    return parts


def parse_args(argv: list[str]) -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="scripts/benchmark.py",
        description="Benchmark the servable against OpenVINO GenAI and the reference demo's approach.",
        epilog="Parts: " + "; ".join(f"{key} = {text}" for key, text in PARTS.items()),
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings (for the smoke test)")
    parser.add_argument("--streams", type=_streams, help="concurrent streams, e.g. 1,4,16 (default 1,4,16)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens generated per request (default 128)")
    parser.add_argument("--skip", type=_skip, default=frozenset(), help="comma-separated parts to skip")
    parser.add_argument("--only", type=_skip, help="comma-separated parts to run (the others are skipped)")
    parser.add_argument(
        "--out", type=Path, default=defaults.out, help="folder for results.md and results.png"
    )
    parser.add_argument("--llm", type=Path, default=defaults.llm_dir, help="LLM folder (OpenVINO IR)")
    parser.add_argument(
        "--embedding", type=Path, default=defaults.embedding_dir, help="embedding model folder"
    )
    args = parser.parse_args(argv)
    if args.max_new_tokens is not None and args.max_new_tokens < 2:
        parser.error(f"--max-new-tokens must be at least 2, got {args.max_new_tokens}")
    for flag, path in (("--llm", args.llm), ("--embedding", args.embedding)):
        if not path.exists():
            parser.error(f"{flag}: no model at {path} (make the default models with `make models`)")
    skip = args.skip | (PARTS.keys() - args.only if args.only else frozenset())
    overrides = {
        "skip": frozenset(skip),
        "out": args.out,
        "llm_dir": args.llm,
        "embedding_dir": args.embedding,
    }
    if args.streams:
        overrides["streams"] = args.streams
    if args.max_new_tokens:
        overrides["max_new_tokens"] = args.max_new_tokens
    return Settings.quick(**overrides) if args.quick else Settings(**overrides)


def machine() -> str:
    """The CPU, its cores and the Python and OpenVINO versions, for a results file."""
    import openvino

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    python, ov = platform.python_version(), openvino.__version__
    return f"{cpu}, {os.cpu_count()} cores, Python {python}, OpenVINO {ov}"


def _context(settings: Settings) -> dict[str, str]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "models": f"LLM {settings.llm_dir.name}, embeddings {settings.embedding_dir.name}",
        "requests": f"{settings.max_new_tokens} new tokens each (ignore_eos, greedy), "
        f"{len(PROMPTS)} fixed prompts, {settings.requests_per_level} or more requests per level "
        f"in {settings.min_rounds} or more rounds, the systems taking turns round by round",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _attempt(
    outcome: report.Outcome, parts: set[str], label: str, step: Callable[..., object], *args: object
) -> bool:
    """Run `step(*args)` for those of `parts` still wanted; a failure is recorded against them and the run
    goes on with the other parts. True when it ran and succeeded."""
    wanted = {part for part in parts if part not in outcome.problems}
    if not wanted:
        return False
    console.log(f"{label} ...")
    started = time.monotonic()
    try:
        step(*args)
    except Exception as exc:  # reported in the tables; the other parts still run
        traceback.print_exc()
        for part in wanted:
            outcome.problems[part] = f"error: {type(exc).__name__}: {exc}".splitlines()[0]
        return False
    console.log(f"{label}: {time.monotonic() - started:.0f} s")
    return True


# A system measured at some number of streams: runner(streams, round) runs that one round of requests.
Runner = Callable[[int, int], GenerationResult]


def run(settings: Settings, command: str) -> report.Outcome:
    """All parts in one run. At each number of streams the servable and GenAI take turns round by
    round, so that a machine that gets busier or quieter meanwhile skews them alike; the reference
    models come after the GenAI pipelines are freed (loaded in the same process they slow GenAI down
    several times)."""
    outcome = report.Outcome(settings, command, context=_context(settings))
    outcome.problems |= dict.fromkeys(settings.skip, "skipped")
    values = outcome.values

    def in_turns(systems: dict[str, tuple[str, Runner]], streams: int, rounds: int) -> None:
        """Run round 1 of every system (part -> (label, runner)), then round 2, ...; one result each."""

        def collect(into: list[GenerationResult], runner: Runner, r: int) -> None:
            into.append(runner(streams, r))

        done: dict[str, list[GenerationResult]] = {part: [] for part in systems}
        for r in range(rounds):
            for part, (label, runner) in systems.items():
                label = f"{label} at {streams} streams, round {r + 1}/{rounds}"
                _attempt(outcome, {part}, label, collect, done[part], runner, r)
        for part, results in done.items():
            if results and part not in outcome.problems:
                outcome.generation.append(GenerationResult.combine(results))

    def add_values(measure: Callable[..., dict[str, float]], *args: object) -> None:
        values.update(measure(*args))

    def embeddings() -> dict[str, float]:
        from bench import embeddings

        return embeddings.measure(settings)

    def load_genai() -> None:
        nonlocal genai
        from bench.genai import GenAI

        genai = GenAI(settings.llm_dir, settings.max_new_tokens)
        runners["genai"] = ("genai", lambda n, r: genai.run(n, 1, prompts_from(r)))

    def load_reference() -> None:
        from bench.reference import Reference

        models = Reference(settings.llm_dir, settings.max_new_tokens)
        runners["reference"] = ("reference", lambda n, r: models.run(n, 1, prompts_from(r)))

    def layer_by_layer(bench: ServerBench | None) -> None:
        """The layers and (when the server runs) part 1's servable take turns, one request each."""
        from bench.layers import LAYERS, Layers

        layers = Layers(settings.llm_dir, settings.max_new_tokens)
        done: dict[str, list[GenerationResult]] = {key: [] for key in LAYERS}
        try:
            for r in range(settings.rounds(1)):
                for key in LAYERS:
                    done[key].append(layers.run(key, prompts_from(r), 1))
                if bench:
                    done.setdefault("servable", []).append(bench.generation(1, 1, prompts_from(r)))
        finally:
            layers.close()
        outcome.layers = [GenerationResult.combine(results) for results in done.values()]

    def levels(systems: dict[str, tuple[str, Runner]]) -> None:
        for streams in settings.streams:
            in_turns(systems, streams, settings.rounds(streams))

    _attempt(outcome, {"retrieval", "indexing"}, "4, 5a. retrieval and indexing", add_values, embeddings)
    gc.collect()
    runners: dict[str, tuple[str, Runner]] = {}
    genai = None
    with contextlib.ExitStack() as stack:
        bench = stack.enter_context(ServerBench(settings)) if SERVER_PARTS - settings.skip else None
        if bench and _attempt(
            outcome, set(SERVER_PARTS), "1, 5b, 6, 6b, 7. start the local server", bench.start
        ):
            if settings.runs("servable"):
                runners["servable"] = ("servable", lambda n, r: bench.generation(n, 1, prompts_from(r)))
        else:
            bench = None
        _attempt(outcome, {"genai"}, "2. GenAI (each pipeline loads before its first level)", load_genai)
        levels(runners)
        if bench and 1 in settings.streams:
            # GenAI + context gets prompts as long as the servable's RAG prompts, learnt from a first
            # servable + RAG request (not counted).
            def rag(streams: int, first_round: int) -> GenerationResult:
                return bench.generation(streams, 1, prompts_from(first_round), use_rag=True)

            probe: list[GenerationResult] = []
            label = "servable + RAG: one request for its prompt length"
            _attempt(outcome, {"servable"}, label, lambda: probe.append(rag(1, 0)))
            pair: dict[str, tuple[str, Runner]] = {"servable": ("servable + RAG", rag)}
            if genai is not None and probe:
                tokens = round(probe[0].summary()["prompt_tokens"])
                pair["genai"] = (
                    "GenAI + context (the RAG prompt's length)",
                    lambda n, r: genai.run_with_context(tokens, 1, prompts_from(r), first_round=r),
                )
            in_turns(pair, 1, settings.rounds(1))
        runners.clear()  # frees the GenAI pipelines before the reference models load
        genai = None
        gc.collect()
        if bench and settings.runs("gateway"):
            from bench.gateway import GatewayBench

            gateway = stack.enter_context(GatewayBench(bench))
            if _attempt(outcome, {"gateway"}, "9. start the OpenAI gateway", gateway.start):
                pair: dict[str, tuple[str, Runner]] = {
                    "direct gRPC": ("direct gRPC", lambda n, r: gateway.direct(n, prompts_from(r))),
                    "gateway": ("OpenAI gateway", lambda n, r: gateway.generation(n, prompts_from(r))),
                }
                for streams in settings.gateway_streams:
                    in_turns(pair, streams, settings.rounds(streams))
        _attempt(outcome, {"reference"}, "3. reference (N streams load N models first)", load_reference)
        levels(runners)
        runners.clear()
        gc.collect()
        if 1 in settings.streams:
            servable = bench if settings.runs("servable") else None
            _attempt(outcome, {"layers"}, "8. one stream, layer by layer", layer_by_layer, servable)
        if bench:
            _attempt(outcome, {"memory"}, "7. memory", add_values, bench.memory)
            _attempt(outcome, {"reindex"}, "5b. re-index", add_values, bench.reindex)
            reload_args = (bench.live_reload, values.get("ov_chunks_per_s"))
            _attempt(outcome, {"reload"}, "6. live reload", add_values, *reload_args)
            edit_args = (bench.edit_reload, values.get("ov_chunks_per_s"))
            _attempt(outcome, {"edit"}, "6b. live reload of an edited file", add_values, *edit_args)
    if settings.runs("lookup"):
        from bench import lookup

        def attempt(label: str, step: Callable[..., object], *args: object) -> bool:
            return _attempt(outcome, {"lookup"}, label, step, *args)

        outcome.lookup = lookup.measure(settings, attempt)
    outcome.context["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return outcome


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = parse_args(argv)
    python = os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else "python"
    command = shlex.join([python, "scripts/benchmark.py", *argv])
    started = time.monotonic()
    outcome = run(settings, command)
    outcome.context["duration"] = f"{time.monotonic() - started:.0f} s"
    settings.out.mkdir(parents=True, exist_ok=True)
    plotted = report.plot(outcome, settings.out / "results.png")
    tables, found = report.tables(outcome)
    report.print_tables(tables, console)
    text = report.markdown(outcome, tables, found, "results.png" if plotted else None)
    (settings.out / "results.md").write_text(text, encoding="utf-8")
    console.print(f"wrote {settings.out / 'results.md'}" + (" and results.png" if plotted else ""))
    errors = [part for part, problem in outcome.problems.items() if problem.startswith("error")]
    if errors:
        console.print(f"[red]parts that failed: {', '.join(sorted(errors))}[/red]")
    return 1 if errors else 0
