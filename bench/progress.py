"""A progress bar for long bench runs, on stderr and only on a terminal.

Piped or under CI the bar is off, so a bench's output stays one final JSON
line; the bench updates it from its own polling, never per request.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class Bars:
    def __init__(self, progress: Progress, tasks: dict[str, TaskID]) -> None:
        self._progress = progress
        self._tasks = tasks

    def update(self, label: str, completed: int) -> None:
        self._progress.update(self._tasks[label], completed=completed)


@contextmanager
def bars(total: int, *labels: str, enabled: bool | None = None) -> Iterator[Bars]:
    """One bar per label, each counting up to ``total``."""
    show = sys.stderr.isatty() if enabled is None else enabled
    progress = Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show,
    )
    with progress:
        yield Bars(progress, {label: progress.add_task(label, total=total) for label in labels})
