"""`python hooked_script.py SCRIPT ARGS...`: run a model script as `python SCRIPT ARGS...` does, with the
test hooks that environment variables ask for, so that a test never races the conversion's speed:

MODEL_PREP_TEST_HOLD=FILE: once the LLM export has written its files into the staging folder, FILE is
written and the script waits there until it is interrupted (Ctrl-C lands in a conversion in progress).

MODEL_PREP_TEST_NO_WORK=1: finding a model's files or staging an output folder fails the run with a
traceback (a refusal must come before any work).
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path


def held_after(export: Callable[..., None], marker: Path) -> Callable[..., None]:
    """`export`, then `marker` written, then a wait for Ctrl-C."""

    def held(*args: object, **kwargs: object) -> None:
        export(*args, **kwargs)
        marker.write_text("held\n")
        while True:
            time.sleep(1)  # ends in KeyboardInterrupt, within a second even if another thread got the signal

    return held


def no_work(what: str) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{what} started: the script went on to work it should have refused")

    return fail


def main() -> None:
    script = Path(sys.argv[1]).resolve()
    sys.argv = sys.argv[1:]
    sys.path[0] = str(script.parent)  # as when the script itself is run
    from model_prep import export, sources, staging

    if marker := os.environ.get("MODEL_PREP_TEST_HOLD"):
        export.export_llm = held_after(export.export_llm, Path(marker))
    if os.environ.get("MODEL_PREP_TEST_NO_WORK"):
        sources.locate = no_work("finding the model")
        staging.staged_folder = no_work("writing an output folder")
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
