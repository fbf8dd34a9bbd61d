"""Site activations at the last token of each (question, answer) text, labelled truthful or not.

ITI (Li et al. 2024) and Wang & Veitch collect these activations for every correct and every incorrect answer
of the training questions; the ``probe-heads`` locator fits probes on every head's output and the ``iti-shift``
editor takes its directions from the sites it edits. Each site's activations are collected once per model and
texts and shared in memory, so a recipe whose locator and editors read the same dataset runs the model over it
once per site.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from loctest import RunContext
from loctest.interventions import Site

from .memo import ModelMemo
from .qa import dataset_examples, labelled_texts

_collected = ModelMemo()


@dataclass(frozen=True)
class SiteActivations:
    """Each site's activation at the last token of each text."""

    values: dict[Site, torch.Tensor]  # {site: [N, width]}
    truthful: torch.Tensor  # [N] bool
    question: torch.Tensor  # [N] index of the text's example


@dataclass(frozen=True)
class HeadActivations:
    """Each head's output before the output projection at the last token of each text."""

    values: torch.Tensor  # [N, n_layers, n_heads, d_head]
    truthful: torch.Tensor  # [N] bool
    question: torch.Tensor  # [N] index of the text's example


def site_activations(context: RunContext, dataset: str, template: str, plugin: str, sites: list[Site]) -> SiteActivations:
    """The ``sites``' activations at the last token of "prompt answer" for every answer of the dataset's examples."""
    texts, truthful, question = labelled_texts(dataset_examples(context, dataset, plugin), template)

    def collect(missing: list[Site]) -> dict[Site, torch.Tensor]:
        with context.progress.task(f"{context.arm}: activations ({dataset})", total=len(texts)) as advance:
            return context.model.capture_last(texts, missing, progress=advance)

    return SiteActivations(_collected.per_site(context.model, texts, sites, collect), truthful, question)


def head_activations(context: RunContext, dataset: str, template: str, plugin: str) -> HeadActivations:
    """Every head's output at the last token of "prompt answer" for every answer of the dataset's examples."""
    shape = context.shape
    sites = [("attn", layer) for layer in range(shape.n_layers)]
    acts = site_activations(context, dataset, template, plugin, sites)
    values = torch.stack([acts.values[site] for site in sites], dim=1)
    return HeadActivations(values.view(len(values), shape.n_layers, shape.n_heads, shape.d_head), acts.truthful,
                           acts.question)
