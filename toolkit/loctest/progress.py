"""Rich progress bars for every long loop."""
from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Progress:
    """``with progress.task("scoring", total=n) as advance: ... advance(k)``; silent when disabled."""

    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self._bars: RichProgress | None = None

    def __enter__(self):
        if self.enabled:
            self._bars = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
            self._bars.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bars is not None:
            self._bars.__exit__(*exc)
            self._bars = None

    @contextmanager
    def task(self, description: str, total: int):
        """Yields ``advance(n=1, description=None)``: moves the bar, and replaces its text when given
        (e.g. to show a running loss)."""
        if self._bars is None:
            yield lambda n=1, description=None: None
            return
        task_id = self._bars.add_task(description, total=total)
        try:
            yield lambda n=1, description=None: self._bars.update(
                task_id, advance=n, **({"description": description} if description else {}))
        finally:
            self._bars.update(task_id, completed=self._bars.tasks[task_id].completed)
