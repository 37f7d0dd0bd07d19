"""Command line of the evaluation (scripts/evaluate.py): chooses the sets, configurations and models,
runs them, prints the tables and writes results.md and results.png."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

from bench import scorecard
from bench.cli import machine
from bench.evaluation import CONFIGS_FILE, EVAL_DIR, Options, console, load_configs, run_all
from bench.questions import FetchLimits, SetError, find_sets, load_set
from bench.report import print_tables
from bench.settings import REPO, SERVABLE_DIR


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _set_folder(name: str) -> Path:
    """A set by its folder name under eval/, or any folder path."""
    named = EVAL_DIR / name
    return named if named.is_dir() else Path(name)


def parse_args(argv: list[str]) -> tuple[Options, Path]:
    """The run's options and its output folder; a bad flag, set or configuration exits with its reason."""
    from ragbot.settings import Settings  # importable once bench.questions is (the servable's package)

    parser = argparse.ArgumentParser(
        prog="scripts/evaluate.py",
        description="Measure answer quality: every configuration's servable through the local server "
        "and tritonclient, the questions of the chosen sets, the answers scored (eval/README.md).",
        epilog=f"Sets in {EVAL_DIR.relative_to(REPO)}/: {', '.join(p.name for p in find_sets(EVAL_DIR))}.",
    )
    parser.add_argument("--configs", type=_names, help="comma-separated configuration names (default: all)")
    parser.add_argument("--config-file", type=Path, default=CONFIGS_FILE, help="the configurations (JSON)")
    parser.add_argument(
        "--sets", type=_names, help="comma-separated set names under eval/ or set folders (default: all)"
    )
    parser.add_argument("--limit", type=int, help="ask only the first N questions of each set")
    parser.add_argument("--max-new-tokens", type=int, help="answer length limit (default: the servable's)")
    parser.add_argument("--output-dir", type=Path, default=EVAL_DIR, help="folder for results.md and .png")
    parser.add_argument("--llm", type=Path, help="LLM folder (default: what the servable's env selects)")
    parser.add_argument("--embedding", type=Path, help="embedding model folder (default: likewise)")
    args = parser.parse_args(argv)
    for flag, value in (("--limit", args.limit), ("--max-new-tokens", args.max_new_tokens)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    try:
        servable = Settings.from_env(SERVABLE_DIR)  # SELECTED_MODEL, LLM_MODEL_DIR, ... as `make eval` sets
    except ValueError as exc:
        parser.error(f"the servable's environment: {exc}")
    llm, embedding = args.llm or servable.llm_model_dir, args.embedding or servable.embedding_model_dir
    for flag, path in (("--llm", llm), ("--embedding", embedding)):
        if not path.exists():
            parser.error(
                f"{flag}: no model at {path}; `make eval LLM=<name>` makes a model's INT4 variant, "
                "`scripts/compress_model.py --model <name> --precision INT8` (or FP16) the others"
            )
    try:
        configs = load_configs(args.config_file)
        folders = [_set_folder(name) for name in args.sets] if args.sets else find_sets(EVAL_DIR)
        sets = [load_set(folder) for folder in folders]
    except (ValueError, SetError) as exc:
        parser.error(str(exc))
    if args.configs:
        known = {config.name: config for config in configs}
        unknown = [name for name in args.configs if name not in known]
        if unknown:
            parser.error(f"--configs: unknown {', '.join(unknown)}; known: {', '.join(known)}")
        configs = [known[name] for name in args.configs]
    if args.limit:
        sets = [dataclasses.replace(s, questions=s.questions[: args.limit]) for s in sets]
    limits = FetchLimits(servable.fetch_timeout_s, servable.fetch_max_bytes, servable.fetch_max_redirects)
    return Options(
        sets, configs, llm.resolve(), embedding.resolve(), args.max_new_tokens, limits
    ), args.output_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options, output_dir = parse_args(argv)
    python = os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else "python"
    started = time.monotonic()
    runs = run_all(options)
    questions = sum(len(s.questions) for s in options.sets)
    tokens = options.max_new_tokens or "the servable's default"
    context = {
        "command": shlex.join([python, "scripts/evaluate.py", *argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "models": f"LLM {options.llm_dir.name}, embeddings {options.embedding_dir.name}",
        "questions": f"{questions}: " + ", ".join(f"{s.name} {len(s.questions)}" for s in options.sets)
        + f"; one at a time, greedy, max_new_tokens {tokens}",
        "duration": f"{time.monotonic() - started:.0f} s",
    }  # fmt: skip
    set_names = [s.name for s in options.sets]
    output_dir.mkdir(parents=True, exist_ok=True)
    scorecard.plot(runs, output_dir / "results.png", f"Answer quality, {options.llm_dir.name}")
    text = scorecard.markdown(runs, context, set_names, "results.png")
    (output_dir / "results.md").write_text(text, encoding="utf-8")
    print_tables([scorecard.quality_table(runs), scorecard.by_set_table(runs, set_names)], console)
    console.print(f"wrote {output_dir / 'results.md'} and results.png ({context['duration']})")
    failed = sum(result.answer.error is not None for run in runs for result in run.results)
    if failed:
        console.print(f"[red]{failed} answers failed; see the notes in results.md[/red]")
    return 1 if failed else 0
