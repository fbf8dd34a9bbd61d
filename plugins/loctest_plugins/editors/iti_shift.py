"""``iti-shift``: Inference-Time Intervention's mass-mean shift (Li et al. 2024; Wang & Veitch eq. 2.5).

For each chosen head (l, h), from the head's outputs at the last token of every (question, answer) text of a
training dataset: u = mean(truthful) - mean(untruthful), normalised; sigma = standard deviation of the
projections of all those outputs on u. The edit adds alpha * sigma * u to the head's output before the output
projection, at the positions of the position policy:

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

from loctest import ComponentSet, DatasetRef, Editor, PluginConfig, interventions
from loctest.errors import UserError

from ..common.head_activations import HeadActivations, head_activations
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


def mass_mean_shifts(acts: HeadActivations, heads: ComponentSet) -> dict[str, tuple[torch.Tensor, float]]:
    """Per head name: (unit mass-mean direction [d_head], std of the projections on it)."""
    out = {}
    for c in heads:
        values = acts.values[:, c.layer, c.index]
        direction = F.normalize(values[acts.truthful].mean(0) - values[~acts.truthful].mean(0), dim=0)
        out[c.name] = (direction, float((values @ direction).std(unbiased=False)))
    return out


class ITIShift(Editor):
    name = "iti-shift"
    description = "Adds alpha * std * mass-mean truthful direction to each chosen head's output (ITI)."
    Config = ITIShiftConfig

    def interventions(self, context, components):
        not_heads = [c.name for c in components if c.kind != "head"]
        if not_heads:
            raise UserError(f"iti-shift: works on attention heads ('head:L:H'), got {not_heads[0]}")
        shape = context.shape
        acts = head_activations(context, self.config.dataset, self.config.prompt, self.name)
        shifts = mass_mean_shifts(acts, components)
        out = []
        for (_, layer), heads in components.by_site().items():
            vector = torch.zeros(shape.n_heads * shape.d_head)
            for c in heads:
                direction, sigma = shifts[c.name]
                vector[c.index * shape.d_head:(c.index + 1) * shape.d_head] = self.config.alpha * sigma * direction
            what = (f"iti-shift alpha={self.config.alpha:g} on {', '.join(c.name for c in heads)} "
                    f"({self.config.positions})")
            out += [dataclasses.replace(interventions.add(("attn", layer), vector, policy), description=what)
                    for policy in POLICIES[self.config.positions]]
        self._write_shifts(context, shifts)
        return out

    def _write_shifts(self, context, shifts) -> None:
        """``iti_shift/ARM.json`` in the run directory: each head's projection std and direction."""
        data = {"alpha": self.config.alpha, "positions": self.config.positions, "dataset": self.config.dataset,
                "heads": {name: {"std": sigma, "direction": [round(v, 6) for v in direction.tolist()]}
                          for name, (direction, sigma) in shifts.items()}}
        context.write_output(f"iti_shift/{context.arm or 'iti-shift'}.json", data)
