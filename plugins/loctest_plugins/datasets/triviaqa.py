"""``triviaqa-iti``: ITI's TriviaQA binary choice (gold aliases vs one GPT-4 "plausible but false" answer).

Not shipped (the license of the false answers is unclear): point ``path`` at your copy of the CSV with columns
``question,answer,false_answer``, ``answer`` holding the gold aliases joined by "; ". Use the filtered file
(TriviaQA_false_not_in_gold.csv), which drops rows whose false answer is itself a gold alias.

TriviaQA lists aliases in no particular order (often a Wikipedia redirect first, e.g. "Yukon Optics" for
"Pulsar"), so the best correct answer is, by default, the alias that the most aliases mention as whole words
once parenthetical qualifiers and case are dropped ("Red" for "Red (comics); Red (song); Red"). Ties go to the
quiz's own answer, which TriviaQA keeps as an upper-case alias ("PULSAR"; acronyms such as "FCOJ" do not
count), then to mixed case ("Giglio" over "GIGLIO"), no parentheses and fewer words.

A row without gold aliases or false answer is an error. The filtered file repeats 143 questions (58 of them in identical
rows), which could put one question in both parts of a split: a repeated question is an error unless
``allow_duplicates = true``.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from loctest import Dataset, Example, PluginConfig

from .reading import ALLOW_DUPLICATES, check_unique, read_rows

COLUMNS = ("question", "answer", "false_answer")


def normalise(alias: str) -> str:
    return " ".join(re.findall(r"\w+", re.sub(r"\([^)]*\)", " ", alias).casefold()))


def most_mentioned(aliases: tuple[str, ...]) -> str:
    """The alias whose normalised words appear in the most aliases (see the module docstring)."""
    forms = [normalise(a) for a in aliases]
    quiz = {f for a, f in zip(aliases, forms) if a.isupper() and re.search(r"[A-Z]{5}", a)}

    padded = [f" {f} " for f in forms]

    def rank(i: int):
        mentions = sum(padded[i] in other for other in padded) if forms[i] else -1
        return mentions, forms[i] in quiz, not aliases[i].isupper(), "(" not in aliases[i], -len(forms[i].split()), -i

    return aliases[max(range(len(aliases)), key=rank)]


class TriviaQAConfig(PluginConfig):
    path: str = Field(..., description="ITI's TriviaQA binary-choice CSV (question, answer, false_answer); use "
                                       "TriviaQA_false_not_in_gold.csv. Relative paths are relative to the recipe.")
    best_answer: Literal["most-mentioned", "first"] = Field(
        "most-mentioned", description="Which gold alias is the correct answer shown: the one most aliases mention, "
                                      "or the first listed.")
    allow_duplicates: bool = ALLOW_DUPLICATES


class TriviaQAITI(Dataset):
    name = "triviaqa-iti"
    description = "TriviaQA binary choice from ITI (Li et al. 2023): gold answer vs a plausible false one. Needs 'path'."
    Config = TriviaQAConfig

    def load(self) -> list[Example]:
        rows = read_rows(self.config.path, COLUMNS)
        check_unique(rows, "question", self.config.allow_duplicates)
        examples = []
        for i, row in enumerate(rows):
            aliases = row.answers("answer", ";")
            best = most_mentioned(aliases) if self.config.best_answer == "most-mentioned" else aliases[0]
            examples.append(Example(id=f"triviaqa-{i}", question=row.text("question"),
                                    correct=(best,) + tuple(a for a in aliases if a != best),
                                    incorrect=(row.text("false_answer"),)))
        return examples
