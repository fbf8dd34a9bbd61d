"""``zero-ablation``: set the chosen components' activations to zero."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from loctest import Editor, PluginConfig, interventions


class ZeroAblationConfig(PluginConfig):
    positions: Literal["last", "prompt", "continuation", "all"] = Field(
        "last", description="Where to zero: the last prompt token (where the answer is read), every prompt token, "
                            "every continuation token, or all.")


class ZeroAblation(Editor):
    name = "zero-ablation"
    description = "Sets the components' activations to zero (suppression, as in Truth Neurons)."
    Config = ZeroAblationConfig

    def interventions(self, context, components):
        return interventions.zero(components, context.shape, self.config.positions)
