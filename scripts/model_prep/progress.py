"""Progress display for the long steps the libraries do not report themselves (rich)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

console = Console(stderr=True)  # progress and messages
results = Console()  # result tables, on standard output


@contextmanager
def steps(title: str, total: int) -> Iterator[Callable[[str], None]]:
    """A bar over `total` named steps; call the yielded function with each step's name as it starts."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task(title, total=total)
        started = False

        def start(name: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, description=f"{title}: {name}")

        yield start
        progress.update(task, completed=total, description=f"{title}: done")
