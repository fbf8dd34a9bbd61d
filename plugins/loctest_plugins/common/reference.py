"""Reference texts of the ablation editors (``mean-ablation``, ``resample-ablation``): a recipe dataset's questions
in one of two prompt formats, and site activations over them, computed once per model, texts and site."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from loctest import DatasetRef, PluginConfig, RunContext
from loctest.errors import UserError
from loctest.interventions import Site

from .binary_prompts import BinaryPromptConfig, binary_prompts
from .memo import ModelMemo
from .qa import QA_PROMPT, qa_prompt


class ReferenceConfig(PluginConfig):
    """The settings of editors that take activations from reference texts."""

    dataset: DatasetRef = Field(..., description="Reference dataset (in [datasets]) whose activations the chosen "
                                                 "coordinates take.")
    prompt: Literal["qa", "binary-choice"] = Field(
        "qa", description="Reference prompts: 'qa', TruthfulQA's 'Q: {question}\\nA:' (as mc, probe-heads and iti-shift "
                          "read it), with each correct and incorrect answer after one space as continuation; "
                          "'binary-choice', the Truth Neurons A/B prompt through the chat template with the paper's "
                          "default messages (as binary-choice and ig-truth-neurons read it), both answer orders, no "
                          "continuation. Use the format of the scorer you edit.")


@dataclass(frozen=True)
class ReferenceTexts:
    prompts: list[str]
    continuations: list[str] | None  # one per prompt, or None
    example: list[int]  # index of each text's example in the dataset


def reference_texts(context: RunContext, config: ReferenceConfig, plugin: str, answers: bool) -> ReferenceTexts:
    """The dataset's prompts in ``config.prompt``'s format; with ``answers`` (format 'qa' only), one text per
    answer of each question, the answer as continuation."""
    examples = context.dataset(config.dataset)
    if config.prompt == "binary-choice":
        kept = [i for i, ex in enumerate(examples) if ex.correct and ex.incorrect]
        texts = ReferenceTexts(binary_prompts(context.model, BinaryPromptConfig(), [examples[i] for i in kept]),
                               None, [i for i in kept for _ in range(2)])
    elif answers:
        pairs = [(i, answer) for i, ex in enumerate(examples) for answer in ex.correct + ex.incorrect]
        texts = ReferenceTexts([qa_prompt(QA_PROMPT, examples[i].question) for i, _ in pairs],
                               [f" {answer}" for _, answer in pairs], [i for i, _ in pairs])
    else:
        texts = ReferenceTexts([qa_prompt(QA_PROMPT, ex.question) for ex in examples], None, list(range(len(examples))))
    if not texts.prompts:
        raise UserError(f"{plugin}: dataset {config.dataset!r} gives no reference texts"
                        + (" (binary-choice needs examples with a correct and an incorrect answer)"
                           if config.prompt == "binary-choice" else ""))
    return texts


def reference_activations(context: RunContext, texts: ReferenceTexts, sites: list[Site], positions: str,
                          reduce: Callable[[list[torch.Tensor]], torch.Tensor], memo: ModelMemo) -> dict[Site, torch.Tensor]:
    """Per site, ``reduce`` of the texts' activations at the positions of a policy (one [positions, width] tensor
    per text, :meth:`loctest.Model.capture`), kept in ``memo`` (one per ``reduce``) as long as the model lives."""
    def collect(missing: list[Site]) -> dict[Site, torch.Tensor]:
        with context.progress.task(f"{context.arm}: reference activations", total=len(texts.prompts)) as advance:
            captured = context.model.capture(texts.prompts, missing, positions, texts.continuations, progress=advance)
        return {site: reduce([text[site] for text in captured]) for site in missing}

    key = [positions, *texts.prompts, *(texts.continuations or ())]
    return memo.per_site(context.model, key, sites, collect)
