"""An example loctest plugin file: one locator, one editor and one scorer (see docs/writing-plugins.md).

Use it by dropping this file into the repository's top-level ``plugins/`` folder, by passing
``--plugins-dir docs/examples``, or from a recipe with ``[plugins] paths = ["docs/examples/example_plugin.py"]``.

- ``top-activation`` (locator): the N MLP neurons with the largest mean |activation| at the last prompt token,
  each scored by it (so recipes can sweep its top k).
- ``scale-activations`` (editor): multiplies the chosen components' activations by a factor.
- ``answer-margin`` (scorer): log P(correct answer) - log P(incorrect answer) given the question, with each
  repetition drawing one correct and one incorrect answer per question at random; it adds a section with a
  figure to the run's report (``loctest_report_sections``).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from loctest import (Component, ComponentSet, DatasetRef, Editor, Locator, PluginConfig, Scorer, Scores, hookimpl,
                     interventions)
from loctest.errors import UserError


# -- a locator -------------------------------------------------------------------------------------------------
class TopActivationConfig(PluginConfig):
    dataset: DatasetRef = Field("truthfulqa", description="Dataset (from the recipe's [datasets]) whose questions are run.")
    count: int = Field(100, ge=1, description="How many MLP neurons to return.")
    layers: list[int] | None = Field(None, description="Layers to search (default: all).")


class TopActivation(Locator):
    name = "top-activation"
    description = "The MLP neurons with the largest mean |activation| at the last prompt token of a dataset's questions."
    Config = TopActivationConfig
    scored = True  # every neuron returned has a score: "the top k" is defined, recipes can sweep k

    def locate(self, context) -> ComponentSet:
        shape = context.shape
        layers = self.config.layers if self.config.layers is not None else list(range(shape.n_layers))
        if any(not 0 <= layer < shape.n_layers for layer in layers):
            raise UserError(f"top-activation: layers must lie in 0..{shape.n_layers - 1}, got {layers}")
        if self.config.count > shape.d_mlp * len(layers):
            raise UserError(f"top-activation: count {self.config.count} exceeds the {shape.d_mlp * len(layers)} neurons searched")
        prompts = [context.model.chat_prompt(ex.question) for ex in context.dataset(self.config.dataset)]
        sites = [("mlp", layer) for layer in layers]
        with context.progress.task(f"{context.arm}: top-activation", total=len(prompts)) as advance:
            activations = context.model.capture_last(prompts, sites, progress=advance)  # {site: [N, d_mlp]}
        strength = torch.cat([activations[site].abs().mean(0) for site in sites])  # [layers * d_mlp]
        top = torch.topk(strength, self.config.count).indices.tolist()
        neurons = [Component("mlp", layers[i // shape.d_mlp], i % shape.d_mlp) for i in top]
        return ComponentSet(neurons, {n.name: float(strength[i]) for n, i in zip(neurons, top)})


# -- an editor -------------------------------------------------------------------------------------------------
class ScaleActivationsConfig(PluginConfig):
    factor: float = Field(0.5, description="Multiplier of the components' activations (0 ablates, 1 leaves them as they are).")
    positions: Literal["last", "prompt", "continuation", "all"] = Field(
        "all", description="Position policy: the last prompt token, every prompt token, every continuation token, or all.")


class ScaleActivations(Editor):
    name = "scale-activations"
    description = "Multiplies the components' activations by a factor."
    Config = ScaleActivationsConfig

    def interventions(self, context, components):
        return interventions.scale(components, context.shape, self.config.factor, self.config.positions)


# -- a scorer --------------------------------------------------------------------------------------------------
class AnswerMarginConfig(PluginConfig):
    dataset: DatasetRef = Field("truthfulqa", description="Dataset (from the recipe's [datasets]) to score.")
    repetitions: int = Field(5, ge=1, description="Repetitions, each drawing one correct and one incorrect answer per question.")
    system_prompt: str | None = Field(None, description="System message of the chat prompt (none by default).")


class AnswerMargin(Scorer):
    name = "answer-margin"
    description = "log P(correct answer) - log P(incorrect answer) given the question, over random answer draws."
    Config = AnswerMarginConfig
    metrics = ("margin", "prefers_correct")
    higher_is_better = {"margin": True, "prefers_correct": True}

    def score(self, context, interventions) -> Scores:
        examples = context.dataset(self.config.dataset)
        # every answer of every question is scored once; repetitions only draw among them
        pairs = [(i, answer) for i, ex in enumerate(examples) for answer in ex.correct + ex.incorrect]
        prompts = [context.model.chat_prompt(ex.question, self.config.system_prompt) for ex in examples]
        with context.progress.task(f"{context.arm}: answer margin", total=len(pairs)) as advance:
            logprobs = context.model.continuation_logprobs([prompts[i] for i, _ in pairs], [a for _, a in pairs],
                                                             interventions, progress=advance).tolist()
        per_example: list[tuple[list[float], list[float]]] = []  # (correct answers', incorrect answers' log-probs)
        start = 0
        for ex in examples:
            middle, end = start + len(ex.correct), start + len(ex.correct) + len(ex.incorrect)
            per_example.append((logprobs[start:middle], logprobs[middle:end]))
            start = end
        margins, prefers = [], []
        for r in range(self.config.repetitions):
            rng = context.rng("answer-margin", self.config.dataset, r)  # same draws in every arm: a paired design
            drawn = np.array([rng.choice(good) - rng.choice(bad) for good, bad in per_example])
            margins.append(float(drawn.mean()))
            prefers.append(float((drawn > 0).mean()))
        return Scores(values={"margin": margins, "prefers_correct": prefers},
                      details={"id": [ex.id for ex in examples],
                               "correct_logprobs": [good for good, _ in per_example],
                               "incorrect_logprobs": [bad for _, bad in per_example]})


# -- registration: one hook per kind -----------------------------------------------------------------------------
@hookimpl
def register_locators(register):
    register(TopActivation)


@hookimpl
def register_editors(register):
    register(ScaleActivations)


@hookimpl
def register_scorers(register):
    register(AnswerMargin)


# -- a report section --------------------------------------------------------------------------------------------
@hookimpl
def loctest_report_sections(results):
    """How far each compared treatment moved an answer-margin metric from its baseline, as a table and a figure."""
    comparisons = results.comparisons_of(AnswerMargin.name)
    if not comparisons:
        return None
    import matplotlib.pyplot as plt

    shifts = [c["treatment_mean"] - c["baseline_mean"] for c in comparisons]
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(comparisons) + 1.5))
    ax.barh([f"{c['metric']}: {c['treatment']} vs {c['baseline']}" for c in comparisons], shifts)
    ax.set_xlabel("treatment mean - baseline mean")
    figure = results.save_figure(fig, "answer_margin_shifts.png")
    rows = [f"| {c['metric']} | {c['baseline']} | {c['treatment']} | {shift:+.3f} |" for c, shift in zip(comparisons, shifts)]
    return "\n".join(["## Answer margin: shift of each treatment", "", "| metric | baseline | treatment | shift |",
                      "|---|---|---|---|", *rows, "", f"![{figure}]({figure})"])
