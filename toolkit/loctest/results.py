"""A run's results as data: :class:`RunResults` (what ``loctest.run`` returns and :func:`load` rebuilds from a run
directory), its rows as pandas frames or CSV files.

Per-example rows follow the layout of ``details/ARM.SCORER.json`` (what a scorer returns as ``Scores.details``):
``id`` lists the N example ids; every other key holding N items is a per-example column; the optional
``per_repetition`` dict holds ``{key: [[N values] per repetition]}`` (then each example gets one row per
repetition). A key named like a metric holds that metric's per-example values.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .base import Scores
from .components import ComponentSet
from .errors import UserError, did_you_mean
from .files import atomic_write
from .interventions import Site

FRAMES_EXTRA = "pip install 'loctest[frames]'"
SCORE_COLUMNS = ("run", "arm", "locator", "editor", "n_components", "scorer", "metric", "repetition", "value")


@dataclass(repr=False)
class RunResults:
    """What a run produced; ``data`` is the content of ``results.json``."""

    run_dir: Path
    data: dict
    components: dict[str, ComponentSet] = field(default_factory=dict)
    scores: dict[str, dict[str, Scores]] = field(default_factory=dict)
    site_names: dict[str, Callable[[Site], str]] = field(default_factory=dict)  # backend name -> its site_name

    def __repr__(self) -> str:
        scorers = list(self.data["resolved"]["scorers"])
        return (f"RunResults({self.run_dir.name!r}, model={self.data['model']['name']!r}, arms={list(self.data['arms'])}, "
                f"scorers={scorers}, path={str(self.run_dir)!r})")

    def values(self, arm: str, metric: str) -> list[float]:
        """Per-repetition values of ``SCORER.METRIC`` for an arm."""
        scorer, _, name = metric.partition(".")
        return self.scores[arm][scorer].values[name]

    @property
    def comparisons(self) -> list[dict]:
        return self.data["comparisons"]

    def comparisons_of(self, plugin: str) -> list[dict]:
        """The comparisons of metrics measured by a scorer of plugin ``plugin`` (recipes name scorers freely)."""
        scorers = {name for name, s in self.data["resolved"]["scorers"].items() if s["plugin"] == plugin}
        return [c for c in self.comparisons if c["metric"].partition(".")[0] in scorers]

    def save_figure(self, fig, name: str) -> str:
        """Save a matplotlib figure as ``figures/NAME`` in the run directory (odd characters of the name become
        "_") and close it; returns that path, for Markdown: ``f"![{path}]({path})"``."""
        import matplotlib.pyplot as plt

        path = "figures/" + re.sub(r"[^\w.-]+", "_", name)
        (self.run_dir / "figures").mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(self.run_dir / path, dpi=110)
        plt.close(fig)
        return path

    def score_rows(self) -> Iterator[dict]:
        """One dict per arm, scorer, metric and repetition (the columns of :data:`SCORE_COLUMNS`), from results.json."""
        for arm, record in self.data["arms"].items():
            plugins = {role: (record[role] or {}).get("plugin") for role in ("locator", "editor")}
            for scorer, metrics in record["scores"].items():
                for metric, summary in metrics.items():
                    if metric == "note":
                        continue
                    for repetition, value in enumerate(summary["values"]):
                        yield {"run": self.run_dir.name, "arm": arm, **plugins, "n_components": record["n_components"],
                               "scorer": scorer, "metric": metric, "repetition": repetition, "value": value}

    def example_rows(self, scorer: str | None = None) -> Iterator[dict]:
        """One dict per arm, scorer (or only ``scorer``), example, and repetition for scorers with per-repetition
        details: run, arm, scorer, example, repetition (None where it does not apply), then the scorer's details."""
        if scorer is not None and scorer not in self.data["resolved"]["scorers"]:
            raise UserError(f"no scorer {scorer!r} in run {self.run_dir.name}: "
                            + did_you_mean(scorer, self.data["resolved"]["scorers"]))
        for arm, by_scorer in self.scores.items():
            for name, scores in by_scorer.items():
                if scorer not in (None, name):
                    continue
                for row in detail_rows(scores.details):
                    yield {"run": self.run_dir.name, "arm": arm, "scorer": name, **row}

    def to_frame(self):
        """A pandas DataFrame, one row per arm, scorer, metric and repetition (``pip install 'loctest[frames]'``)."""
        return pandas().DataFrame(list(self.score_rows()), columns=list(SCORE_COLUMNS))

    def examples_frame(self, scorer: str | None = None):
        """A pandas DataFrame of :meth:`example_rows`: per arm, scorer and example (and repetition), the scorer's
        per-example values, prompt and answer (``pip install 'loctest[frames]'``)."""
        frame = pandas().DataFrame(list(self.example_rows(scorer)))
        if "repetition" in frame:
            frame["repetition"] = frame["repetition"].astype("Int64")  # missing where repetitions do not apply
        return frame

    def to_csv(self, folder: str | Path) -> list[Path]:
        """Write ``scores.csv`` (:meth:`score_rows`) and per scorer ``examples-SCORER.csv`` (:meth:`example_rows`, as
        lm-eval's ``--log_samples`` writes a file per task; list cells as JSON) into ``folder``; returns their paths.
        Needs no pandas."""
        folder = Path(folder)
        return [write_csv(folder / "scores.csv", list(self.score_rows()), SCORE_COLUMNS),
                *(write_csv(folder / f"examples-{scorer}.csv", list(self.example_rows(scorer)))
                  for scorer in self.data["resolved"]["scorers"])]


def load(run_dir: str | Path) -> RunResults:
    """The :class:`RunResults` of a run directory (``results.json``, ``components/``, ``details/``), as ``loctest.run``
    returned it (without the backends' site names). A UserError names what is missing or corrupt."""
    run_dir = Path(run_dir)
    data = read_results(run_dir)
    components = {arm: read_components(run_dir / "components" / f"{arm}.json") for arm in data["arms"]}
    scores = {arm: {scorer: Scores(values={m: s["values"] for m, s in metrics.items() if m != "note"},
                                   details=read_details(run_dir / "details" / f"{arm}.{scorer}.json"),
                                   note=metrics.get("note", ""))
                    for scorer, metrics in record["scores"].items()}
              for arm, record in data["arms"].items()}
    return RunResults(run_dir, data, components, scores)


def read_json(path: Path):
    """A JSON file's content; a UserError naming the file when it is missing, unreadable or not JSON."""
    if not path.is_file():
        raise UserError(f"{path}: missing (a partial run directory?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror})") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: corrupt, not valid JSON ({err})") from err


def not_a_run_dir(run_dir: Path) -> str:
    """Why ``run_dir`` (an existing folder) holds no run, with the run directories inside it as suggestions."""
    failed = run_dir / "FAILED.txt"
    if failed.is_file():
        error = failed.read_text(errors="replace").partition("\n")[0]
        return f"{run_dir}: the run failed, no results.json ({error})"
    inside = sorted(p.name for p in run_dir.iterdir() if (p / "results.json").is_file())
    hint = f"; run directories in it: {', '.join(inside[:5])}{', ...' if len(inside) > 5 else ''}" if inside else ""
    return f"{run_dir}: not a run directory (no results.json){hint}"


def read_results(run_dir: Path) -> dict:
    """``results.json`` of a run directory, checked for what :class:`RunResults` reads."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: " + ("a file, not a run directory" if run_dir.exists() else "no such run directory"))
    path = run_dir / "results.json"
    if not path.exists():
        raise UserError(not_a_run_dir(run_dir))
    data = read_json(path)
    problem = results_problem(data)
    if problem:
        raise UserError(f"{path}: not a loctest results file ({problem})")
    return data


def results_problem(data) -> str | None:
    """What ``data`` lacks of a results.json (None if nothing)."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if missing := [k for k in ("resolved", "model", "arms", "comparisons") if k not in data]:
        return "missing " + ", ".join(map(repr, missing))
    if not isinstance(data["arms"], dict):
        return "'arms' is not an object"
    for arm, record in data["arms"].items():
        if not isinstance(record, dict) or not {"locator", "editor", "n_components", "scores"} <= record.keys():
            return f"arms.{arm} lacks locator, editor, n_components or scores"
        if not all(isinstance(record[role], (dict, type(None))) for role in ("locator", "editor")):
            return f"arms.{arm}: locator and editor must be objects or null"
        if not isinstance(record["scores"], dict) or not all(isinstance(m, dict) for m in record["scores"].values()):
            return f"arms.{arm}.scores is not an object of scorers"
        for scorer, metrics in record["scores"].items():
            for metric, summary in metrics.items():
                if metric != "note" and not (isinstance(summary, dict) and isinstance(summary.get("values"), list)):
                    return f"arms.{arm}.scores.{scorer}.{metric} has no list of values"
    return None


def read_components(path: Path) -> ComponentSet:
    data = read_json(path)
    try:
        return ComponentSet.from_json(data)
    except (UserError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path}: corrupt, not a list of components ({err})") from err


def read_details(path: Path) -> dict:
    details = read_json(path)
    if not isinstance(details, dict):
        raise UserError(f"{path}: corrupt, a JSON {type(details).__name__} instead of an object")
    try:
        check_repetitions(details.get("per_repetition") or {}, len(details.get("id") or []))
    except ValueError as err:
        raise UserError(f"{path}: corrupt: {err}") from err
    return details


def pandas():
    """The pandas module, or a UserError naming the extra that installs it."""
    try:
        import pandas
    except ImportError as err:
        raise UserError(f"results as data frames need pandas: {FRAMES_EXTRA}") from err
    return pandas


def detail_rows(details: dict) -> Iterator[dict]:
    """Rows of a scorer's details (the layout in this module's docstring): one per example, or per example and
    repetition when ``per_repetition`` is given. Details without ``id`` give no rows."""
    ids = details.get("id")
    if not isinstance(ids, list):
        return
    per_example = {k: v for k, v in details.items()
                   if k not in ("id", "per_repetition") and isinstance(v, list) and len(v) == len(ids)}
    repeated = details.get("per_repetition") or {}
    check_repetitions(repeated, len(ids))
    counts = {len(v) for v in repeated.values()}
    for i, example in enumerate(ids):
        row = {"example": example, "repetition": None, **{k: v[i] for k, v in per_example.items()}}
        if not repeated:
            yield row
        for r in range(max(counts, default=0)):
            yield {**row, "repetition": r, **{k: v[r][i] for k, v in repeated.items()}}


def check_repetitions(repeated, n_examples: int) -> None:
    """A ValueError unless ``repeated`` (details' ``per_repetition``) maps keys to lists with the same number of
    repetitions, each holding ``n_examples`` values."""
    if not isinstance(repeated, dict) or any(not isinstance(v, list) for v in repeated.values()):
        raise ValueError("per_repetition must map each key to a list of repetitions")
    if len({len(v) for v in repeated.values()}) > 1 or any(
            not isinstance(values, list) or len(values) != n_examples for v in repeated.values() for values in v):
        raise ValueError(f"per_repetition needs the same number of repetitions for every key and {n_examples} values "
                         "(one per example id) in each")


def csv_cell(value):
    """A CSV cell: lists and dicts as JSON, None as empty."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value


def write_csv(path: Path, rows: list[dict], columns=None) -> Path:
    """Rows as a CSV file; the columns are ``columns`` or every key, in order of first appearance."""
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: csv_cell(row.get(k)) for k in columns} for row in rows)
    return atomic_write(path, text.getvalue())
