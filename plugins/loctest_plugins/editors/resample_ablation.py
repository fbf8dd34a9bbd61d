"""``resample-ablation``: the counterfactual control. The chosen coordinates take, at the last prompt token, their
activation at the last token of ANOTHER example's prompt from a reference dataset.

Pairing is seeded and never picks the example itself: each edited row is recognised by its prompt tokens; a
stable hash of them picks a start in a seeded permutation of the reference prompts, and the first prompt there
from another example (another question: a binary-choice prompt's other answer order is the same example) is its
partner. A row keeps its partner in any batch and in every arm of a run (a paired design). A row whose prompt is
not a reference prompt (another dataset or format) cannot be recognised and takes the partner its hash picks.
Only ``last`` is defined: other positions differ in number and meaning between texts.
"""
from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from loctest import Editor, Intervention
from loctest.backend import Batch
from loctest.errors import UserError

from ..common.memo import ModelMemo
from ..common.reference import ReferenceConfig, ReferenceTexts, reference_activations, reference_texts

_last_tokens = ModelMemo()


class ResampleAblationConfig(ReferenceConfig):
    positions: Literal["last"] = Field("last", description="Where activations are swapped: the last prompt token only.")

    @field_validator("positions", mode="before")
    @classmethod
    def _only_last(cls, value):
        if value != "last":
            raise ValueError(f"resample-ablation swaps one activation per text, at the last prompt token; {value!r} "
                             "positions differ in number and meaning between texts: use 'last'")
        return value


def prompt_tokens(batch: Batch) -> list[tuple[int, ...]]:
    """Each row's prompt token ids (padding and continuation excluded)."""
    return [tuple(ids[mask].tolist()) for ids, mask in zip(batch.input_ids, batch.prompt_mask)]


class Pairing:
    """Which reference prompt each edited row takes its activations from."""

    def __init__(self, texts: ReferenceTexts, tokens: list[tuple[int, ...]], rng: np.random.Generator):
        if len(set(texts.example)) < 2:
            raise UserError("resample-ablation: the reference dataset needs at least two examples")
        self.example = texts.example
        self.order = rng.permutation(len(tokens)).tolist()
        self.examples_of: dict[tuple[int, ...], set[int]] = {}
        for ids, example in zip(tokens, texts.example):
            self.examples_of.setdefault(ids, set()).add(example)

    def partner(self, tokens: tuple[int, ...]) -> int:
        """The reference prompt (index) for a row with these prompt tokens: never one of its own example."""
        own, n = self.examples_of.get(tokens, set()), len(self.order)
        start = int.from_bytes(hashlib.sha256(repr(tokens).encode()).digest()[:8], "big") % n
        candidates = (self.order[(start + k) % n] for k in range(n))
        found = next((i for i in candidates if self.example[i] not in own), None)
        if found is None:
            raise UserError("resample-ablation: every reference prompt belongs to the edited example")
        return found

    def rows(self, batch: Batch) -> torch.Tensor:
        return torch.tensor([self.partner(tokens) for tokens in prompt_tokens(batch)], dtype=torch.long)


class ResampleAblation(Editor):
    name = "resample-ablation"
    description = ("Sets the components' activations at the last prompt token to another example's (seeded pairing): "
                   "the counterfactual control.")
    Config = ResampleAblationConfig

    def interventions(self, context, components):
        texts = reference_texts(context, self.config, self.name, answers=False)
        pairing = Pairing(texts, prompt_tokens(context.model.encode(texts.prompts)),
                          context.rng("resample-ablation", self.config.dataset, self.config.prompt))
        indices = components.site_indices(context.shape)
        pool = reference_activations(context, texts, list(indices), "last", torch.cat, _last_tokens)  # [texts, width]
        return [Intervention(site, "last", self._swap(pool[site], cols, pairing), with_batch=True,
                             description=f"resample-ablation ({self.config.dataset}): {len(cols)} columns of "
                                         f"{site[0]}:{site[1]} from another example")
                for site, cols in indices.items()]

    @staticmethod
    def _swap(values: torch.Tensor, cols: list[int], pairing: Pairing):
        """The transform: each row's ``cols`` take its partner's values."""
        index = torch.tensor(cols, dtype=torch.long)

        def swap(x: torch.Tensor, batch: Batch) -> torch.Tensor:
            chosen = values[pairing.rows(batch)][:, index].to(x)  # [B, k]
            i = index.to(x.device)
            return x.index_copy(-1, i, chosen[:, None, :].expand(*x.shape[:-1], len(cols)))
        return swap
