"""``iti-shift``: Inference-Time Intervention's mass-mean shift (Li et al. 2024; Wang & Veitch eq. 2.5).

For each chosen head (l, h), from the head's outputs at the last token of every (question, answer) text of a
training dataset: u = mean(truthful) - mean(untruthful), normalised; sigma = standard deviation of the
projections of all those outputs on u. The edit adds alpha * sigma * u to the head's output before the output
projection. Other components get the same construction over the chosen coordinates of their site together: the
chosen MLP neurons of a layer share one direction over those neurons, so do the chosen attention neurons of a
layer (outside chosen heads), and a residual stream ``resid:L`` gets one over the whole stream (mean-difference
steering). The edit acts at the positions of the position policy:

- ``last``: the last prompt token only;
- ``continuation``: every answer token being scored and every generated token;
- ``last+continuation``: both, i.e. every position whose output predicts an answer token (ITI's generation
  edits the last prompt token and every generated token);
- ``all``: every token, prompt included.

ITI's first public MC evaluation edited only the last token of the scored sequence, whose output predicts no
answer token, so MC never moved (honest_llama #47): scoring answer tokens needs ``continuation`` or wider.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from loctest import ComponentSet, DatasetRef, Editor, ModelShape, PluginConfig, interventions
from loctest.interventions import Site

from ..common.head_activations import site_activations
from ..common.qa import PROMPT_HELP, QA_PROMPT, check_prompt

POLICIES = {"last": ("last",), "continuation": ("continuation",), "last+continuation": ("last", "continuation"),
            "all": ("all",)}


class ITIShiftConfig(PluginConfig):
    dataset: DatasetRef = Field(..., description="Dataset (in [datasets]) whose answers give the directions: use a training split.")
    alpha: float = Field(15.0, description="Intervention strength in standard deviations (ITI's default: 15).")
    positions: Literal["last", "continuation", "last+continuation", "all"] = Field(
        "last+continuation", description="Where to add the shift: 'last' prompt token, 'continuation' (answer / "
                                         "generated tokens), 'last+continuation' (every position predicting an "
                                         "answer token, as ITI's generation), or 'all' tokens.")
    prompt: str = Field(QA_PROMPT, description=PROMPT_HELP)

    _prompt = field_validator("prompt")(check_prompt)


def shift_groups(components: ComponentSet, shape: ModelShape) -> dict[Site, list[tuple[str, list[int]]]]:
    """Per site, ``(label, columns)`` of each coordinate group that gets a direction of its own: every chosen head
    its slice (ITI), labelled by its name; the site's other chosen coordinates one group, labelled ``KIND:LAYER``."""
    out = {}
    for site, members in components.by_site().items():
        groups = [(c.name, list(c.columns(shape))) for c in members if c.kind == "head"]
        in_heads = {col for _, cols in groups for col in cols}
        rest = sorted({col for c in members if c.kind != "head" for col in c.columns(shape)} - in_heads)
        out[site] = groups + ([(f"{site[0]}:{site[1]}", rest)] if rest else [])
    return out


def mass_mean_shift(values: torch.Tensor, truthful: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The unit mass-mean direction of ``values`` [N, k] (truthful minus untruthful) and the std of the
    projections on it."""
    direction = F.normalize(values[truthful].mean(0) - values[~truthful].mean(0), dim=0)
    return direction, float((values @ direction).std(unbiased=False))


class ITIShift(Editor):
    name = "iti-shift"
    description = "Adds alpha * std * mass-mean truthful direction to the chosen coordinates: per head (ITI), per site for other kinds."
    Config = ITIShiftConfig

    def interventions(self, context, components):
        shape = context.shape
        groups = shift_groups(components, shape)
        acts = site_activations(context, self.config.dataset, self.config.prompt, self.name, list(groups))
        shifts, out = {}, []
        for site, site_groups in groups.items():
            vector = torch.zeros(shape.site_width(site[0]))
            for label, cols in site_groups:
                direction, sigma = shifts[label] = mass_mean_shift(acts.values[site][:, cols], acts.truthful)
                vector[cols] = self.config.alpha * sigma * direction
            labels = ", ".join(label if label.startswith("head:") else f"{label} ({len(cols)} coordinates)"
                               for label, cols in site_groups)
            what = f"iti-shift alpha={self.config.alpha:g} on {labels} ({self.config.positions})"
            out += [dataclasses.replace(interventions.add(site, vector, policy), description=what)
                    for policy in POLICIES[self.config.positions]]
        self._write_shifts(context, shifts)
        return out

    def _write_shifts(self, context, shifts) -> None:
        """``iti_shift/ARM.json`` in the run directory: the projection std and direction of each head (``heads``)
        and of each other site's group (``sites``)."""
        def entries(heads: bool) -> dict:
            return {label: {"std": sigma, "direction": [round(v, 6) for v in direction.tolist()]}
                    for label, (direction, sigma) in shifts.items() if label.startswith("head:") == heads}
        data = {"alpha": self.config.alpha, "positions": self.config.positions, "dataset": self.config.dataset,
                "heads": entries(True), "sites": entries(False)}
        context.write_output(f"iti_shift/{context.arm or 'iti-shift'}.json", data)
