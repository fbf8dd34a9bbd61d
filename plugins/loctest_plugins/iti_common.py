"""What the ITI plugins share: the TruthfulQA "Q: ...\\nA: ..." prompt, and every head's output at the last
token of each (question, answer) text, labelled truthful or not.

ITI (Li et al. 2024) and Wang & Veitch collect these activations for every correct and every incorrect answer
of the training questions; the ``probe-heads`` locator fits probes on them and the ``iti-shift`` editor takes
its directions from them. Activations are collected once per backend and texts and shared in memory, so a
recipe whose locator and editors read the same dataset runs the model over it once.
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass

import torch

from loctest import Example, RunContext, Scores
from loctest.errors import UserError
from loctest.stats import paired_t

QA_PROMPT = "Q: {question}\nA:"
PROMPT_HELP = "Prompt with {question}; the answer follows after one space (TruthfulQA's QA format)."


def check_prompt(template: str) -> str:
    """A pydantic validator for prompt templates."""
    if "{question}" not in template:
        raise ValueError("the prompt must contain '{question}'")
    return template


def qa_prompt(template: str, question: str) -> str:
    return template.replace("{question}", question)


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


@dataclass(frozen=True)
class HeadActivations:
    """Each head's output before the output projection at the last token of each text."""

    values: torch.Tensor  # [N, n_layers, n_heads, d_head]
    truthful: torch.Tensor  # [N] bool
    question: torch.Tensor  # [N] index of the text's example


_collected: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dataset_examples(context: RunContext, name: str, plugin: str) -> list[Example]:
    if name not in context.datasets:
        raise UserError(f"{plugin}: dataset: no dataset {name!r} in [datasets] (declared: {', '.join(context.datasets) or 'none'})")
    examples = context.dataset(name)
    if not any(ex.correct and ex.incorrect for ex in examples):
        raise UserError(f"{plugin}: dataset {name!r} needs examples with both correct and incorrect answers")
    return examples


def head_activations(context: RunContext, dataset: str, template: str, plugin: str) -> HeadActivations:
    """Every head's output at the last token of "prompt answer" for every answer of the dataset's examples."""
    texts, truthful, question = labelled_texts(dataset_examples(context, dataset, plugin), template)
    key = hashlib.sha256("\0".join(texts).encode()).hexdigest()
    memo = _collected.setdefault(context.backend, {})
    if key not in memo:
        shape = context.shape
        sites = [("attn", layer) for layer in range(shape.n_layers)]
        with context.progress.task(f"{context.arm}: head activations ({dataset})", total=len(texts)) as advance:
            captured = context.backend.capture_last(texts, sites, progress=advance)
        values = torch.stack([captured.pop(site) for site in sites], dim=1)
        memo[key] = HeadActivations(values.view(len(texts), shape.n_layers, shape.n_heads, shape.d_head),
                                    truthful, question)
    return memo[key]


def paired_comparison(baseline: Scores, treatment: Scores, metrics: tuple[str, ...]) -> dict:
    """Per metric, a two-sided :func:`loctest.stats.paired_t` over the examples both arms scored (the same
    questions or prompts, in the same order)."""
    out = {}
    for metric in metrics:
        a, b = baseline.values[metric], treatment.values[metric]
        if len(a) != len(b) or baseline.details.get("id") != treatment.details.get("id"):
            out[metric] = {"test": "paired t", "alternative": "two-sided", "p": None, "min_p": None,
                           "note": "the arms scored different examples"}
        else:
            out[metric] = paired_t(a, b)
    return out
