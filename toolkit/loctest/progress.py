"""Rich progress bars for every long loop, one overall line across a run's stages, the run's text log
(``run.log``), and quiet third-party progress bars during a run."""
from __future__ import annotations

import functools
import time
import traceback
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .errors import LoctestWarning, RecipeError, UserError

LOG_NAME = "run.log"


class RunLog:
    """A run's ``run.log``: timestamped lines, kept in memory until the run directory exists (:meth:`attach`),
    then appended to the file there as they come."""

    def __init__(self, header: list[str] = ()):
        self.path: Path | None = None
        self._pending: list[str] = []
        for text in header:
            self.line(text)

    def line(self, text: str) -> None:
        stamped = f"{datetime.now():%H:%M:%S} {text}\n"
        if self.path is None:
            self._pending.append(stamped)
        else:
            with self.path.open("a", encoding="utf-8") as file:
                file.write(stamped)

    def attach(self, run_dir: Path) -> None:
        """Write the lines so far to ``run_dir/run.log``; later lines go there too."""
        self.path = run_dir / LOG_NAME
        self.path.write_text("".join(self._pending), encoding="utf-8")
        self._pending = []

    def echo(self, console: Console, text: str) -> None:
        """Print ``text`` on ``console`` (as plain text) and log it."""
        console.print(text, soft_wrap=True, highlight=False, markup=False)
        self.line(text)

    @contextmanager
    def capturing_warnings(self):
        """Log every warning shown while the block runs (and show it as before)."""
        with warnings.catch_warnings():
            previous = warnings.showwarning

            def show(message, category, filename, lineno, *args, **kwargs):
                own = issubclass(category, LoctestWarning)
                self.line(f"warning: {message}" if own else f"warning: {category.__name__}: {message} ({filename}:{lineno})")
                previous(message, category, filename, lineno, *args, **kwargs)

            warnings.showwarning = show
            yield


def error_lines(err: BaseException) -> tuple[list[str], int]:
    """How an error is reported, one line per problem, and the exit code it deserves: 2 for bad user input, 130 for
    an interrupt, 1 for anything else (an internal error)."""
    if isinstance(err, RecipeError):
        return [f"error: {problem}" for problem in err.problems], 2
    if isinstance(err, UserError):
        return [f"error: {err}"], 2
    if isinstance(err, KeyboardInterrupt):
        return ["interrupted: finished work is kept in the cache; run the same command again to resume"], 130
    message = " ".join([*str(err).splitlines()[:1], *getattr(err, "__notes__", [])])
    return [f"internal error: {type(err).__name__}: {message}"], 1


def log_failure(run_dir: Path, err: BaseException) -> None:
    """Append the error lines, then the traceback, to ``run_dir/run.log``."""
    with (run_dir / LOG_NAME).open("a", encoding="utf-8") as file:
        file.write("".join(f"{datetime.now():%H:%M:%S} {line}\n" for line in error_lines(err)[0]))
        file.write("".join(traceback.format_exception(err)))


@contextmanager
def quiet_third_party_bars():
    """While the block runs, tqdm bars (transformers' "Loading weights", the GGUF de-quantizing bar,
    huggingface_hub downloads) are disabled unless their caller asks for one explicitly."""
    from tqdm import std

    original = vars(std.tqdm)["__init__"]
    std.tqdm.__init__ = functools.partialmethod(original, disable=True)
    try:
        yield
    finally:
        std.tqdm.__init__ = original


class Progress:
    """``with progress.task("scoring", total=n) as advance: ... advance(k)``; silent when disabled. Inside a run
    one more line counts the run's stages (:meth:`plan`, :meth:`stage`), which also go to ``log`` as text."""

    def __init__(self, console: Console | None = None, enabled: bool = True, log: RunLog | None = None):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.log = log or RunLog()
        self._bars: RichProgress | None = None
        self._planned = 0
        self._overall = None

    def __enter__(self):
        if self.enabled:
            self._bars = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
            self._bars.__enter__()
            if self._planned:
                self._overall = self._bars.add_task("stages", total=self._planned)
        return self

    def __exit__(self, *exc):
        if self._bars is not None:
            self._bars.__exit__(*exc)
            self._bars = self._overall = None

    def plan(self, stages: int) -> None:
        """Add ``stages`` to the overall line's total (a run plans its stages up front, sweeps add theirs)."""
        self._planned += stages
        if self._overall is not None:
            self._bars.update(self._overall, total=self._planned)

    @contextmanager
    def stage(self, name: str):
        """One stage of the run: shown on the overall line while it runs, logged when it starts and ends."""
        self.log.line(f"stage {name}")
        if self._overall is not None:
            self._bars.update(self._overall, description=f"stage {name}")
        started = time.perf_counter()
        yield
        self.log.line(f"stage {name}: done in {time.perf_counter() - started:.2f} s")
        if self._overall is not None:
            self._bars.update(self._overall, advance=1, description="stages")

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
