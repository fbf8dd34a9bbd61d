"""TruthfulQA's QA format: the "Q: {question}\\nA:" prompt, the answer after one space, and every (question,
answer) text of a dataset labelled truthful or not."""
from __future__ import annotations

import torch

from loctest import Example, RunContext
from loctest.errors import UserError

QA_PROMPT = "Q: {question}\nA:"
PROMPT_HELP = "Prompt with {question}; the answer follows after one space (TruthfulQA's QA format)."


def check_prompt(template: str) -> str:
    """A pydantic validator for prompt templates."""
    if "{question}" not in template:
        raise ValueError("the prompt must contain '{question}'")
    return template


def qa_prompt(template: str, question: str) -> str:
    return template.replace("{question}", question)


def dataset_examples(context: RunContext, name: str, plugin: str) -> list[Example]:
    examples = context.dataset(name)
    if not any(ex.correct and ex.incorrect for ex in examples):
        raise UserError(f"{plugin}: dataset {name!r} needs examples with both correct and incorrect answers")
    return examples


def labelled_texts(examples: list[Example], template: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Prompt plus each answer, as one text: the texts, ``truthful`` [N] bool and ``question`` [N] (index of the
    example each text comes from)."""
    texts, truthful, question = [], [], []
    for i, ex in enumerate(examples):
        prompt = qa_prompt(template, ex.question)
        for answers, label in ((ex.correct, True), (ex.incorrect, False)):
            texts += [f"{prompt} {answer}" for answer in answers]
            truthful += [label] * len(answers)
            question += [i] * len(answers)
    return texts, torch.tensor(truthful, dtype=torch.bool), torch.tensor(question, dtype=torch.long)
