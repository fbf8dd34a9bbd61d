"""``table``: examples from your own CSV / JSONL / JSON file, with a column mapping."""
from __future__ import annotations

from pydantic import Field

from loctest import Dataset, Example, PluginConfig

from .reading import ALLOW_DUPLICATES, Row, check_unique, read_rows


class TableConfig(PluginConfig):
    path: str = Field(..., description="CSV, JSONL or JSON (a list of objects) file; relative paths are relative to the recipe.")
    question: str = Field("question", description="Column holding the question.")
    correct: str = Field("correct", description="Column holding the correct answer(s); the first is the best.")
    incorrect: str = Field("incorrect", description="Column holding the incorrect answer(s); the first is the best.")
    category: str | None = Field(None, description="Column holding a category, if any.")
    id: str | None = Field(None, description="Column holding a stable id (default: row number).")
    separator: str | None = Field(";", description="Splits a text cell into several answers (None: one answer per cell).")
    allow_duplicates: bool = ALLOW_DUPLICATES


class Table(Dataset):
    name = "table"
    description = "Questions with correct/incorrect answers from a CSV, JSONL or JSON file."
    Config = TableConfig

    def load(self) -> list[Example]:
        cfg = self.config
        rows = read_rows(cfg.path, [cfg.question, cfg.correct, cfg.incorrect] + [c for c in (cfg.category, cfg.id) if c])
        check_unique(rows, cfg.question, cfg.allow_duplicates)
        if cfg.id:
            check_unique(rows, cfg.id, hint="")
        return [self.example(i, row) for i, row in enumerate(rows)]

    def example(self, i: int, row: Row) -> Example:
        cfg = self.config
        return Example(id=row.text(cfg.id) if cfg.id else str(i), question=row.text(cfg.question),
                       correct=row.answers(cfg.correct, cfg.separator),
                       incorrect=row.answers(cfg.incorrect, cfg.separator),
                       category=str(row.get(cfg.category) or "") if cfg.category else "")
