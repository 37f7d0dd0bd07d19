"""Command-line pieces the three scripts share: common options and error reporting."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from model_prep.errors import ModelPrepError
from model_prep.progress import console
from model_prep.registry import SERVABLE_DIR

DEVICES = ("CPU", "GPU", "AUTO")


def parser(description: str, kind: str, choices: list[str]) -> argparse.ArgumentParser:
    """A parser with the options every script has; its help lists the registry's names of `kind`."""
    p = argparse.ArgumentParser(
        description=description,
        epilog=f"supported {kind} names (servable_stream/ragbot/models.json): {', '.join(choices)}",
    )
    p.add_argument("--model", metavar="NAME", help=f"a supported name, one of: {', '.join(choices)}")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path(os.environ.get("MODELS_DIR", SERVABLE_DIR)),
        help="where model folders go (default: servable_stream/, or $MODELS_DIR)",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default=os.environ.get("DEVICE", "CPU").upper(),
        help="OpenVINO device to check the result on (default: CPU, or $DEVICE)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if the output folder exists")
    return p


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
