"""Command-line pieces the three scripts share: common options, model choice, error reporting."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from model_prep import registry
from model_prep.errors import ModelPrepError
from model_prep.progress import console


def parser(doc: str, kind: str, sources: bool = True) -> argparse.ArgumentParser:
    """A parser with the options every script has; its help lists the registry's names of `kind`.

    With `sources`, also --model-id / --name / --revision to take any Hub id or local path.
    """
    entries = registry.load_registry()[kind]
    listing = "\n".join(f"  {name:<24} {_about(entry)}" for name, entry in entries.items())
    p = argparse.ArgumentParser(
        description=doc,
        epilog=f"supported names (servable_stream/ragbot/models.json):\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", metavar="NAME", help="a supported name (listed below)")
    if sources:
        p.add_argument("--model-id", help="any Hugging Face model id or local model path instead of --model")
        p.add_argument(
            "--name", help="output folder name for --model-id (default: its last part, lowercased)"
        )
        p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path(os.environ.get("MODELS_DIR", registry.SERVABLE_DIR)),
        help="where model folders go (default: servable_stream/, or $MODELS_DIR)",
    )
    p.add_argument(
        "--device",
        type=str.upper,
        default=os.environ.get("DEVICE", "CPU").upper(),
        help="OpenVINO device to check and measure on: CPU, GPU, GPU.1, AUTO... (default: $DEVICE or CPU)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if the output folder exists")
    return p


def _about(entry: dict) -> str:
    """One line of --help about a registry entry."""
    notes = []
    if "gguf" in entry or "package" in entry:
        notes.append(f"offline, from the {(entry.get('gguf') or entry)['package']} wheel")
    if entry.get("gated"):
        notes.append("gated: accept the licence, set HF_TOKEN")
    return entry["model_id"] + (f" ({'; '.join(notes)})" if notes else "")


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line and check --device is here; with --model-id, exactly one of it or --model."""
    args = p.parse_args()
    if hasattr(args, "model_id") and (args.model is None) == (args.model_id is None):
        p.error("give exactly one of --model NAME or --model-id HF_ID_OR_LOCAL_PATH")
    check_device(args.device)
    return args


def check_device(device: str) -> None:
    """Fail before any work when OpenVINO has no device `device` on this machine."""
    import openvino

    available = openvino.Core().available_devices
    if device not in device_names(available):
        raise ModelPrepError(
            f"--device {device} is not available here; OpenVINO sees {', '.join(available) or 'no device'} "
            f"(or use AUTO)"
        )


def device_names(available: list[str]) -> set[str]:
    """Names that pick an `available` device: each, its family (GPU for GPU.1), GPU.0 for a lone GPU, AUTO."""
    names = {"AUTO", *available}
    for device in available:
        family, _, index = device.partition(".")
        names.add(family if index else f"{device}.0")
    return names


def spec(args: argparse.Namespace, kind: str, remote_code: bool = False) -> registry.ModelSpec:
    """The model the command line asks for."""
    if args.model:
        return registry.spec_from_registry(kind, args.model)
    return registry.spec_from_model_id(args.model_id, args.name, remote_code)


def run(main: Callable[[], None]) -> None:
    """Run a script's main: a ModelPrepError is printed as one line and exits 2, Ctrl-C exits 130."""
    try:
        main()
    except ModelPrepError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; nothing half-written was left behind")
        sys.exit(130)
