"""Running the model scripts as a user does: `python scripts/NAME ARGS`, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
HOOKED = Path(__file__).resolve().parent / "hooked_script.py"


def script_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with Hub client settings isolated, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    base.update({"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0", "NO_COLOR": "1", "COLUMNS": "160"})
    return {**base, **(env or {})}


def script_command(script: str, *args: str, hooked: bool = False) -> list[str]:
    """The command running scripts/`script` with this Python; `hooked`: under hooked_script.py's test
    hooks (set by environment variables)."""
    return [sys.executable, *([str(HOOKED)] if hooked else []), str(SCRIPTS / script), *args]


def run_script(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """Run scripts/`script` with this Python in `cwd`; Hub client settings isolated unless given."""
    return subprocess.run(
        script_command(script, *args),
        capture_output=True,
        text=True,
        env=script_env(env),
        timeout=timeout,
        cwd=cwd,
    )
