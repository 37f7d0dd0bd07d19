"""Answer quality: the question sets of eval/ asked through the local server and tritonclient under
each configuration of eval/configs.json, side by side. `make eval`; `--help` for the flags.

Writes eval/results.md (the tables, every answer and the command) and eval/results.png (the quality
measures per configuration).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the bench package at the repo root

from bench.eval_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
