"""The human-labelled TruthfulQA judge data shipped with loctest (GPT-judge / GPT-info fine-tuning sets, Apache-2.0).

Each (question, answer) pair may appear several times with human "yes"/"no" labels for truthfulness and for
informativeness; a pair's label is the share of "yes" votes. Reference answers per question come from the same
release's ``eval_examples.csv`` ("Examples: True" / "Examples: False").
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data" / "truthfulqa_judge"
PROMPT = re.compile(r"Q: (.*?)\nA: (.*)\n(True|Helpful):", re.S)


@dataclass(frozen=True)
class LabelledAnswer:
    question: str
    answer: str
    truthful: float  # share of "yes" votes
    informative: float


def read_text(name: str) -> str:
    return gzip.decompress((DATA / name).read_bytes()).decode("utf-8-sig")


def labelled_answers() -> list[LabelledAnswer]:
    """Every distinct (question, answer) pair with its shares of "yes" votes, in first-seen order."""
    votes: dict[tuple[str, str], dict[str, list[bool]]] = defaultdict(lambda: {"True": [], "Helpful": []})
    for name in ("finetune_truth.jsonl.gz", "finetune_info.jsonl.gz"):
        for line in read_text(name).splitlines():
            row = json.loads(line)
            question, answer, aspect = PROMPT.fullmatch(row["prompt"]).groups()
            votes[question.strip(), answer][aspect].append(row["completion"].strip() == "yes")
    return [LabelledAnswer(q, a, float(np.mean(v["True"])), float(np.mean(v["Helpful"])))
            for (q, a), v in votes.items()]


def references() -> dict[str, tuple[list[str], list[str]]]:
    """Question -> (correct, incorrect) reference answers of TruthfulQA v1 (817 questions)."""
    def split(cell: str) -> list[str]:
        return [a.strip() for a in cell.split(";") if a.strip()]

    rows = csv.DictReader(io.StringIO(read_text("eval_examples.csv.gz")))
    return {row["Question"].strip(): (split(row["Examples: True"]), split(row["Examples: False"])) for row in rows}


def question_split(questions: list[str], test_fraction: float = 0.2, seed: int = 0) -> tuple[set[str], set[str]]:
    """(train, test) question sets: a seeded permutation of the sorted distinct questions, the first
    ``test_fraction`` of it held out. No question is in both."""
    distinct = sorted(set(questions))
    order = np.random.default_rng(seed).permutation(len(distinct))
    cut = int(test_fraction * len(distinct))
    test = {distinct[i] for i in order[:cut]}
    return set(distinct) - test, test
