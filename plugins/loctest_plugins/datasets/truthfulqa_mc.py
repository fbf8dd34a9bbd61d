"""``truthfulqa-mc``: the original 817 TruthfulQA questions with their MC1/MC2 targets (Apache-2.0).

Each example's ``correct`` answers are the MC2 true answers with the MC1 answer first; ``incorrect`` are the
false answers (identical for MC1 and MC2 in ``mc_task.json``). So MC1 = ``correct[0]`` against every
``incorrect`` answer, and MC2 = all ``correct`` against all ``incorrect``.
"""
from __future__ import annotations

from loctest import Dataset, Example, PluginConfig

from .reading import Row, check_unique, read_rows
from .truthfulqa import DATA


def mc_example(i: int, row: Row) -> Example:
    best = next((answer for answer, label in row["mc1_targets"].items() if label), None)
    if best is None:
        raise row.error("mc1_targets", "no answer is labelled 1")
    true = [answer for answer, label in row["mc2_targets"].items() if label and answer != best]
    false = [answer for answer, label in row["mc2_targets"].items() if not label]
    return Example(id=f"tqa-mc-{i}", question=row.text("question"), correct=(best, *true), incorrect=tuple(false))


class TruthfulQAMC(Dataset):
    name = "truthfulqa-mc"
    description = "TruthfulQA MC1/MC2 targets (817 questions, every true and false answer)."

    class Config(PluginConfig):
        pass

    def load(self) -> list[Example]:
        rows = read_rows(DATA / "mc_task.json", ("question", "mc1_targets", "mc2_targets"))
        check_unique(rows, "question")
        return [mc_example(i, row) for i, row in enumerate(rows)]
