"""``mmlu``: the 4-choice MMLU questions shipped with loctest (MIT), by subject, from the test or dev files."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from loctest import Dataset, Example, PluginConfig
from loctest.errors import UserError, did_you_mean

from .reading import read_rows

DATA = Path(__file__).resolve().parent.parent / "data" / "mmlu"
LABELS = "ABCD"
COLUMNS = ("question", *LABELS, "answer")


def subjects(subset: str = "test") -> list[str]:
    """The subjects with a file in the shipped ``subset`` ("test" or "dev")."""
    return sorted(p.name.removesuffix(f"_{subset}.csv") for p in (DATA / subset).glob(f"*_{subset}.csv"))


class MMLUConfig(PluginConfig):
    subjects: list[str] | None = Field(None, min_length=1, description="Subjects to load, e.g. ['astronomy', 'virology'] "
                                                         "(default: all 57).")
    subset: Literal["test", "dev"] = Field("test", description="MMLU file set: 'test' (14,042 questions) or 'dev' (5 "
                                                               "per subject, the k-shot examples). Not the "
                                                               "recipe's seeded 'split'.")


class MMLU(Dataset):
    name = "mmlu"
    description = "MMLU (Hendrycks et al. 2021): 4-choice questions in 57 subjects, original option order."
    Config = MMLUConfig

    def load(self) -> list[Example]:
        available = subjects(self.config.subset)
        wanted = self.config.subjects if self.config.subjects is not None else available
        for name in wanted:
            if name not in available:
                raise UserError(f"mmlu dataset: subjects: unknown subject {name!r}; {did_you_mean(name, available)}")
        return [example for name in wanted for example in self.read(name)]

    def read(self, subject: str) -> list[Example]:
        rows = read_rows(DATA / self.config.subset / f"{subject}_{self.config.subset}.csv", header=COLUMNS)
        examples = []
        for i, row in enumerate(rows):
            choices = tuple(row[label] for label in LABELS)
            answer = LABELS.find(row["answer"].strip())
            if answer < 0:
                raise row.error("answer", f"expected one of {', '.join(LABELS)}, got {row['answer']!r}")
            row.text("question")  # an error when empty; the question is kept as written (leading spaces too)
            examples.append(Example(id=f"mmlu/{subject}/{self.config.subset}/{i}", question=row["question"],
                                    correct=(choices[answer],),
                                    incorrect=tuple(c for j, c in enumerate(choices) if j != answer),
                                    category=subject, choices=choices, answer=answer))
        return examples
