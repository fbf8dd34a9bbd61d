"""``truthfulqa-binary``: the 790-question binary-choice TruthfulQA shipped with loctest (Apache-2.0)."""
from __future__ import annotations

from pathlib import Path

from loctest import Dataset, Example, PluginConfig

from .reading import check_unique, read_rows

DATA = Path(__file__).resolve().parent.parent / "data" / "truthfulqa"
COLUMNS = ("Question", "Best Answer", "Correct Answers", "Best Incorrect Answer", "Incorrect Answers", "Category")


class TruthfulQABinary(Dataset):
    name = "truthfulqa-binary"
    description = "TruthfulQA 2025 binary edition (790 questions): best answer vs best incorrect answer."

    class Config(PluginConfig):
        pass

    def load(self) -> list[Example]:
        rows = read_rows(DATA / "TruthfulQA.csv", COLUMNS)
        check_unique(rows, "Question")
        return [
            Example(id=f"tqa-{i}", question=row.text("Question"),
                    correct=row.answers("Correct Answers", ";", best=row.text("Best Answer")),
                    incorrect=row.answers("Incorrect Answers", ";", best=row.text("Best Incorrect Answer")),
                    category=row["Category"])
            for i, row in enumerate(rows)
        ]
