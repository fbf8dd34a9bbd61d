"""``table``: examples from your own CSV / JSONL / JSON file, with a column mapping."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from pydantic import Field

from loctest import Dataset, Example, PluginConfig
from loctest.errors import UserError


class TableConfig(PluginConfig):
    path: str = Field(..., description="CSV, JSONL or JSON (a list of objects) file; relative paths are relative to the recipe.")
    question: str = Field("question", description="Column holding the question.")
    correct: str = Field("correct", description="Column holding the correct answer(s); the first is the best.")
    incorrect: str = Field("incorrect", description="Column holding the incorrect answer(s); the first is the best.")
    category: str | None = Field(None, description="Column holding a category, if any.")
    id: str | None = Field(None, description="Column holding a stable id (default: row number).")
    separator: str | None = Field(";", description="Splits a text cell into several answers (None: one answer per cell).")


def split_answers(cell, separator: str | None, best: str | None = None) -> tuple[str, ...]:
    """A cell's answers (a list, or text split on ``separator``), with ``best`` moved first."""
    items = cell if isinstance(cell, list) else (str(cell).split(separator) if separator else [str(cell)])
    items = [a.strip() for a in items if str(a).strip()]
    if best:
        items = [best] + [a for a in items if a != best]
    return tuple(items)


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise UserError(f"dataset file {str(path)!r} does not exist")
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    raise UserError(f"dataset file {str(path)!r}: expected a .csv, .jsonl or .json file")


class Table(Dataset):
    name = "table"
    description = "Questions with correct/incorrect answers from a CSV, JSONL or JSON file."
    Config = TableConfig


    def load(self) -> list[Example]:
        path = Path(self.config.path)
        rows = read_rows(path)
        cfg = self.config
        wanted = [cfg.question, cfg.correct, cfg.incorrect] + [c for c in (cfg.category, cfg.id) if c]
        if rows:
            missing = [c for c in wanted if c not in rows[0]]
            if missing:
                raise UserError(f"dataset file {str(path)!r}: no column {missing[0]!r}; columns are {', '.join(rows[0])}")
        return [self.example(i, row) for i, row in enumerate(rows)]

    def example(self, i: int, row: dict) -> Example:
        cfg = self.config
        return Example(id=str(row[cfg.id]) if cfg.id else str(i), question=str(row[cfg.question]).strip(),
                       correct=split_answers(row[cfg.correct], cfg.separator),
                       incorrect=split_answers(row[cfg.incorrect], cfg.separator),
                       category=str(row[cfg.category]) if cfg.category else "")
