"""``mean-ablation``: set the chosen coordinates to their mean activation over a reference dataset.

The mean is taken at the positions of the edit's own policy: with ``last``, over each reference prompt's last
token; with ``prompt``, over every prompt token of every reference prompt; with ``continuation`` or ``all``, over
those tokens of every (prompt, answer) text of format 'qa' (one text per answer; binary-choice prompts have no
answer, so ``all`` is their prompt tokens and ``continuation`` is refused). Every token of every text weighs the
same. It works on every component kind: MLP and attention neurons, heads (their slice) and ``resid:L``.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from pydantic import Field, model_validator

from loctest import Editor, interventions

from ..common.memo import ModelMemo
from ..common.reference import ReferenceConfig, reference_activations, reference_texts

_means = ModelMemo()


class MeanAblationConfig(ReferenceConfig):
    positions: Literal["last", "prompt", "continuation", "all"] = Field(
        "last", description="Where to replace, and where the mean is taken: the last prompt token, every prompt "
                            "token, every continuation token, or all.")

    @model_validator(mode="after")
    def _continuation_needs_answers(self):
        if self.positions == "continuation" and self.prompt == "binary-choice":
            raise ValueError("positions = 'continuation' takes the mean over answer tokens, and binary-choice "
                             "prompts have none: use prompt = 'qa' or another position policy")
        return self


def mean_of(texts: list[torch.Tensor]) -> torch.Tensor:
    """The mean over every row (token) of every text's [positions, width] activations."""
    return torch.cat(texts).double().mean(0).float()


class MeanAblation(Editor):
    name = "mean-ablation"
    description = "Sets the components' activations to their mean over a reference dataset (at the edit's positions)."
    Config = MeanAblationConfig

    def interventions(self, context, components):
        answers = self.config.positions in ("continuation", "all")
        texts = reference_texts(context, self.config, self.name, answers)
        sites = list(components.site_indices(context.shape))
        means = reference_activations(context, texts, sites, self.config.positions, mean_of, _means)
        edits = interventions.replace(components, context.shape, means, self.config.positions)
        return [dataclasses.replace(iv, description=f"mean-ablation ({self.config.dataset}, {self.config.positions}): "
                                                    f"{iv.description}") for iv in edits]
