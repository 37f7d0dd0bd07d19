#!/usr/bin/env python3
"""Compress an exported LLM (servable_stream/NAME, made by download_model.py) with NNCF into
NAME_FP16, NAME_INT8_compressed_weights and NAME_INT4_compressed_weights, then print sizes, a quality
figure against FP16 on a bundled text, and tokens/s on DEVICE.

    python scripts/compress_model.py --model smollm2-135m-instruct --precision INT4 --device CPU
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

from model_prep import cli, compression, quality, registry
from model_prep.errors import ModelPrepError, reported_as
from model_prep.progress import console, results, steps
from model_prep.staging import (
    GIB,
    check_folder_name,
    check_free_space,
    folder_size,
    is_model_folder,
    should_build,
    staged_folder,
    target_folder,
)
from rich.table import Table


def parse_args():
    p = cli.parser(__doc__, "llm", sources=False)
    p.add_argument(
        "--precision",
        nargs="+",
        choices=compression.PRECISIONS,
        default=list(compression.PRECISIONS),
        help="variants to make (default: all three)",
    )
    p.add_argument("--source", type=Path, help="the exported model folder (default: OUTPUT_DIR/NAME)")
    p.add_argument(
        "--dataset",
        type=Path,
        help="a UTF-8 text file (paragraphs separated by blank lines) for INT4 AWQ + scale estimation",
    )
    p.add_argument("--group-size", type=int, help="INT4 group size (default: the registry's, else 128)")
    p.add_argument(
        "--ratio", type=float, help="share of layers in INT4, the rest INT8 (default: registry's, else 1.0)"
    )
    p.add_argument(
        "--sym",
        action=argparse.BooleanOptionalAction,
        help="symmetric INT4 (default: the registry's, else asymmetric)",
    )
    p.add_argument("--no-report", action="store_true", help="skip the quality and speed measurements")
    args = cli.parse(p)
    if not args.model:
        p.error("--model NAME is required (a supported name, or the folder name of a model you exported)")
    return args


def int4_settings(name: str, args) -> registry.Int4Settings:
    """The registry's INT4 settings for `name` (defaults for other models), overridden by the options."""
    base = (
        registry.spec_from_registry("llm", name).int4
        if name in registry.names("llm")
        else registry.Int4Settings()
    )
    overrides = {"group_size": args.group_size, "ratio": args.ratio, "sym": args.sym}
    settings = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    if settings.group_size != -1 and settings.group_size <= 0:
        raise ModelPrepError(
            f"--group-size must be a positive number or -1 (per channel), got {settings.group_size}"
        )
    if not 0 < settings.ratio <= 1:
        raise ModelPrepError(f"--ratio must be in (0, 1], got {settings.ratio}")
    return settings


def calibration_texts(path: Path | None) -> list[str] | None:
    """Paragraphs of the --dataset file."""
    if path is None:
        return None
    if not path.is_file():
        raise ModelPrepError(f"--dataset {path} is not a file")
    texts = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    if not texts:
        raise ModelPrepError(f"--dataset {path} has no text")
    return texts


def report(name: str, folders: dict[str, Path], device: str) -> None:
    """Measure every variant folder and print a table (agreement against FP16, else the exported source)."""
    text = quality.QUALITY_TEXT.read_text(encoding="utf-8")
    figures = {}
    with steps("Measure", total=len(folders)) as step:
        for label, folder in folders.items():
            step(label)
            with reported_as(f"measuring {label} on {device}"):
                figures[label] = quality.measure(folder, device, text)
    reference = "FP16" if "FP16" in figures else "source"
    table = Table(title=f"{name} on {device}; quality on scripts/data/{quality.QUALITY_TEXT.name}")
    for column in ("variant", "size", f"agreement vs {reference}", "perplexity", "tokens/s"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for label, folder in folders.items():
        f = figures[label]
        table.add_row(
            label,
            f"{folder_size(folder) / 2**20:.1f} MiB",
            f"{100 * f.agreement(figures[reference]):.1f} %",
            f"{f.perplexity:.2f}",
            f"{f.tokens_per_s:.1f}",
        )
    results.print(table)


def main() -> None:
    args = parse_args()
    check_folder_name(args.model, "--model")
    source = args.source or args.output_dir / args.model
    known = registry.names("llm")
    if not is_model_folder(source) and args.source is None and args.model not in known:
        raise ModelPrepError(
            f"unknown model name {args.model!r}: no such supported name ({', '.join(known)}) and no model "
            f"you exported at {source}"
        )
    if not is_model_folder(source):
        hint = f"python scripts/download_model.py --model {args.model}"
        raise ModelPrepError(
            f"no exported model at {source}; make it first with `{hint}` (or pass --source DIR)"
        )
    settings = int4_settings(args.model, args)
    texts = calibration_texts(args.dataset)
    targets = {
        p: target_folder(args.output_dir, compression.variant_name(args.model, p)) for p in args.precision
    }
    todo = [p for p, target in targets.items() if should_build(target, args.force)]
    for p in set(targets) - set(todo):
        console.print(f"{targets[p]} already exists; skipping (pass --force to rebuild)")

    if todo:
        import openvino

        model = openvino.Core().read_model(source / "openvino_model.xml")
        stored = compression.stored_precision(model)
        if stored is not None:
            todo = keep_as_is(source, stored, {p: targets[p] for p in todo})
        else:
            weights = compression.weight_count(model)
            needed = int(weights * sum(compression.BYTES_PER_WEIGHT[p] for p in todo))
            check_free_space(args.output_dir, needed, f"{', '.join(todo)} of {args.model}")
            console.print(
                f"{args.model}: {weights / 1e6:.0f} M weights, about {needed / GIB:.2f} GiB to write; "
                f"INT4 group size {settings.group_size}, ratio {settings.ratio}, "
                f"{'sym' if settings.sym else 'asym'}{', AWQ + scale estimation' if texts else ''}"
            )
    with steps(f"Compress {args.model}", total=max(len(todo), 1)) as step:
        for precision in todo:
            step(precision)
            with staged_folder(targets[precision]) as staging, reported_as(f"{precision} compression"):
                compression.compress(source, staging, precision, settings, texts)
    if not args.no_report:
        folders = {p: folder for p, folder in targets.items() if is_model_folder(folder)}
        report(args.model, folders if "FP16" in folders else {"source": source, **folders}, args.device)


def keep_as_is(source: Path, stored: str, targets: dict[str, Path]) -> list[str]:
    """A model whose weights are already compressed is not compressed again: its own precision's folder
    is a copy of it as it is, and the other variants are not made. Returns what is left to compress."""
    console.print(
        f"{source} is already compressed: its weights are stored in {stored}. It is not compressed again.",
        style="bold yellow",
    )
    for precision, target in targets.items():
        if precision == stored:
            with staged_folder(target) as staging:
                shutil.copytree(source, staging, dirs_exist_ok=True)
            console.print(f"{target}: the {stored} model as it is")
        else:
            console.print(
                f"{precision}: not made; an already {stored} model cannot give back lost precision, and "
                "compressing it again would only lose more"
            )
    return []


if __name__ == "__main__":
    cli.run(main)
