"""Benchmark: the servable through the local server against OpenVINO GenAI and the reference demo's
approach, plus retrieval, indexing, live reload and memory. `make bench`; `--help` for the flags.

Writes bench/results.md (the tables and the command) and bench/results.png (throughput and time to
first token against concurrent streams).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the bench package at the repo root

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
