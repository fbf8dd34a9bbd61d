"""``truthfulqa-binary``: the 790-question binary-choice TruthfulQA shipped with loctest (Apache-2.0)."""
from __future__ import annotations

from pathlib import Path

from loctest import Dataset, Example, PluginConfig


from .table import read_rows, split_answers

DATA = Path(__file__).resolve().parent.parent / "data" / "truthfulqa"


class TruthfulQABinary(Dataset):
    name = "truthfulqa-binary"
    description = "TruthfulQA 2025 binary edition (790 questions): best answer vs best incorrect answer."

    class Config(PluginConfig):
        pass

    def load(self) -> list[Example]:
        return [
            Example(id=f"tqa-{i}", question=row["Question"].strip(),
                    correct=split_answers(row["Correct Answers"], ";", best=row["Best Answer"].strip()),
                    incorrect=split_answers(row["Incorrect Answers"], ";", best=row["Best Incorrect Answer"].strip()),
                    category=row["Category"])
            for i, row in enumerate(read_rows(DATA / "TruthfulQA.csv"))
        ]
