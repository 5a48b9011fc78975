"""Progress bars on stderr (rich), with a rate column; quiet when SEQDISTILL_NO_PROGRESS is set."""

from __future__ import annotations

import os
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text


class RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        # completed / elapsed: results arrive in bursts (a batch at a time), which fools a windowed estimate
        elapsed = task.finished_time if task.finished else task.elapsed
        if not elapsed or not task.completed:
            return Text(f"-- {self.unit}/s", style="progress.data.speed")
        return Text(f"{task.completed / elapsed:.2f} {self.unit}/s", style="progress.data.speed")


class Bar:
    """A running bar: `advance(k)` counts work done, `status(text)` shows a short live line beside it."""

    def __init__(self, progress: Progress, task):
        self._progress, self._task = progress, task

    def advance(self, k: int = 1) -> None:
        self._progress.advance(self._task, k)

    def status(self, text: str) -> None:
        self._progress.update(self._task, status=text)


@contextmanager
def progress_bar(total: int | None, description: str, unit: str = "samples"):
    """Yield a `Bar`; the bar shows done/total (total None: a count), rate, elapsed time and a status line."""
    disabled = bool(os.environ.get("SEQDISTILL_NO_PROGRESS"))
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        console=Console(stderr=True),
        disable=disabled,
    )
    with progress:
        yield Bar(progress, progress.add_task(description, total=total, status=""))
