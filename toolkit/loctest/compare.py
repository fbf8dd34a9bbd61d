"""``loctest compare``: the same metrics of several run directories side by side (mean ± std per arm and metric, a
column per run), and what differs between the runs (model, package versions, recipe)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from .errors import UserError
from .files import atomic_write
from .report import fmt
from .results import RunResults, write_csv

OUTPUT_FORMATS = (".csv", ".md")
WHERE_KEYS = {"out", "cache"}  # [run] keys that say where results went, not what was computed


@dataclass
class SideBySide:
    """``runs``: a label per run; ``rows``: (arm, SCORER.METRIC, a summary per run or None where the run lacks it);
    ``differences``: one line per way the runs differ."""

    runs: list[str]
    rows: list[tuple[str, str, list[dict | None]]]
    differences: list[str]

    def table(self) -> Table:
        table = Table(title="loctest compare: mean ± std")
        for column in ("arm", "metric", *self.runs):
            table.add_column(column, overflow="fold")  # long run names wrap rather than lose their time stamp
        for arm, metric, cells in self.rows:
            table.add_row(arm, metric, *map(cell_text, cells))
        return table

    def markdown(self) -> str:
        lines = ["| arm | metric | " + " | ".join(self.runs) + " |", "|---|---|" + "---|" * len(self.runs)]
        lines += [f"| {arm} | {metric} | " + " | ".join(map(cell_text, cells)) + " |" for arm, metric, cells in self.rows]
        if self.differences:
            lines += ["", "The runs differ in:", "", *(f"- {d}" for d in self.differences)]
        return "\n".join(["# loctest compare: mean ± std", "", *lines]) + "\n"

    def csv_rows(self) -> list[dict]:
        return [{"arm": arm, "metric": metric,
                 **{f"{run} {stat}": (s or {}).get(stat) for run, s in zip(self.runs, cells) for stat in ("mean", "std", "n")}}
                for arm, metric, cells in self.rows]

    def write(self, path: Path) -> Path:
        """Write the comparison as CSV or Markdown, by the suffix of ``path``."""
        if path.suffix == ".csv":
            return write_csv(path, self.csv_rows())
        return atomic_write(path, self.markdown())


def cell_text(summary: dict | None) -> str:
    return "" if summary is None else f"{fmt(summary['mean'])} ± {fmt(summary['std'])}"


def run_labels(runs: list[RunResults]) -> list[str]:
    """Each run's directory name, or its path where two runs share a name."""
    names = [r.run_dir.name for r in runs]
    return [str(r.run_dir) if names.count(r.run_dir.name) > 1 else r.run_dir.name for r in runs]


def side_by_side(runs: list[RunResults]) -> SideBySide:
    """Every (arm, metric) any run measured, in order of first appearance, with each run's summary."""
    keys: dict[tuple[str, str], None] = {}
    for r in runs:
        for arm, record in r.data["arms"].items():
            for scorer, metrics in record["scores"].items():
                keys.update({(arm, f"{scorer}.{m}"): None for m in metrics if m != "note"})
    rows = [(arm, metric, [summary_of(r, arm, metric) for r in runs]) for arm, metric in keys]
    labels = run_labels(runs)
    return SideBySide(labels, rows, differences(runs, labels))


def summary_of(run: RunResults, arm: str, metric: str) -> dict | None:
    scorer, _, name = metric.partition(".")
    return run.data["arms"].get(arm, {}).get("scores", {}).get(scorer, {}).get(name)


def flatten(value, prefix: str = "") -> dict[str, object]:
    """A nested dict as {"dotted.key": leaf value}."""
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}.{key}" if prefix else key).items()}


def differing_keys(flat: list[dict]) -> list[str]:
    """The keys of flattened dicts (:func:`flatten`) whose value is not the same in every one."""
    return [key for key in dict.fromkeys(k for f in flat for k in f) if len({repr(f.get(key)) for f in flat}) > 1]


def differing(values: list[dict], labels: list[str]) -> list[str]:
    """'KEY: A (run1), B (run2)' for every dotted key whose value is not the same in every run."""
    flat = [flatten(v) for v in values]
    return [f"{key}: " + ", ".join(f"{f.get(key, '(absent)')} ({label})" for f, label in zip(flat, labels))
            for key in differing_keys(flat)]


def differences(runs: list[RunResults], labels: list[str]) -> list[str]:
    """How the runs differ: model (name, initialisation, dtype, device), package versions, recipe keys."""
    if len(runs) < 2:
        return []
    model = differing([{k: r.data["model"].get(k) for k in ("name", "init", "dtype", "device")} for r in runs], labels)
    versions = differing([r.data.get("versions", {}) for r in runs], labels)
    recipes = [{**r.data.get("recipe", {}), "run": {k: v for k, v in r.data.get("recipe", {}).get("run", {}).items()
                                                   if k not in WHERE_KEYS}} for r in runs]
    recipe = differing_keys([flatten(r) for r in recipes])
    return ([f"model {line}" for line in model] + [f"versions: {line}" for line in versions]
            + ([f"recipe keys: {', '.join(recipe[:8])}{f' and {len(recipe) - 8} more' if len(recipe) > 8 else ''}"]
               if recipe else []))


def expand_run_dirs(paths: list[str]) -> list[Path]:
    """Each path as given when it holds results.json; a folder of run directories (a recipe's ``out``) as the run
    directories in it, in name order. Anything else is left for :func:`loctest.load` to explain."""
    found = []
    for path in map(Path, paths):
        inside = sorted(p for p in path.iterdir() if (p / "results.json").is_file()) if path.is_dir() else []
        found += inside if inside and not (path / "results.json").exists() else [path]
    return found


def output_paths(outs: list[str]) -> list[Path]:
    """The ``--out`` files, each a .csv or .md file; a UserError before any work otherwise."""
    for out in outs:
        if Path(out).suffix not in OUTPUT_FORMATS:
            raise UserError(f"--out {out}: give a file ending in {' or '.join(OUTPUT_FORMATS)} (CSV or Markdown)")
    return [Path(out) for out in outs]
