"""Every head's output at the last token of each (question, answer) text, labelled truthful or not.

ITI (Li et al. 2024) and Wang & Veitch collect these activations for every correct and every incorrect answer
of the training questions; the ``probe-heads`` locator fits probes on them and the ``iti-shift`` editor takes
its directions from them. Activations are collected once per model and texts and shared in memory, so a
recipe whose locator and editors read the same dataset runs the model over it once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from loctest import RunContext

from .memo import ModelMemo
from .qa import dataset_examples, labelled_texts

_collected = ModelMemo()


@dataclass(frozen=True)
class HeadActivations:
    """Each head's output before the output projection at the last token of each text."""

    values: torch.Tensor  # [N, n_layers, n_heads, d_head]
    truthful: torch.Tensor  # [N] bool
    question: torch.Tensor  # [N] index of the text's example


def head_activations(context: RunContext, dataset: str, template: str, plugin: str) -> HeadActivations:
    """Every head's output at the last token of "prompt answer" for every answer of the dataset's examples."""
    texts, truthful, question = labelled_texts(dataset_examples(context, dataset, plugin), template)

    def collect() -> HeadActivations:
        shape = context.shape
        sites = [("attn", layer) for layer in range(shape.n_layers)]
        with context.progress.task(f"{context.arm}: head activations ({dataset})", total=len(texts)) as advance:
            captured = context.model.capture_last(texts, sites, progress=advance)
        values = torch.stack([captured.pop(site) for site in sites], dim=1)
        return HeadActivations(values.view(len(texts), shape.n_layers, shape.n_heads, shape.d_head), truthful, question)

    return _collected.get(context.model, texts, collect)
