"""``random``: a seeded uniform draw of components, or a draw matched to another arm's counts per layer."""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from loctest import ArmRef, Component, ComponentSet, Locator, PluginConfig
from loctest.errors import UserError


class RandomConfig(PluginConfig):
    kind: Literal["mlp", "head", "attn", "resid"] = Field(
        "mlp", description="Component kind: MLP neurons, attention heads, attention neurons or residual-stream layers.")
    count: int | None = Field(None, ge=1, description="How many components to draw (uniformly over the chosen layers).")
    layers: list[int] | None = Field(None, description="Layers to draw from (default: all).")
    match: ArmRef | None = Field(None, description="Arm whose components to match: same count of each kind in each layer (overrides kind/count/layers).")
    draw: int = Field(0, description="Draw number: different draws give independent random sets under the same seed "
                                     "(an arm's `draws = N` runs draw, draw + 1, ..., draw + N - 1).")


class RandomLocator(Locator):
    name = "random"
    description = "Random components, uniformly or matched to another arm's per-layer counts (a control)."
    Config = RandomConfig

    def locate(self, context) -> ComponentSet:
        shape = context.shape
        rng = context.rng("random-locator", context.arm, self.config.draw)
        if self.config.match:
            wanted = context.components[self.config.match].counts_by_layer()
        else:
            if self.config.count is None:
                raise UserError("random locator: set 'count' (or 'match' to copy another arm's counts)")
            layers = self.config.layers if self.config.layers is not None else list(range(shape.n_layers))
            bad = [l for l in layers if not 0 <= l < shape.n_layers]
            if bad:
                raise UserError(f"random locator: layer {bad[0]} out of range (model has {shape.n_layers} layers)")
            width = shape.per_layer(self.config.kind)
            if self.config.count > width * len(layers):
                raise UserError(f"random locator: count {self.config.count} exceeds the {width * len(layers)} components available")
            flat = rng.choice(width * len(layers), size=self.config.count, replace=False)
            wanted = {}
            for i in flat:
                key = (self.config.kind, layers[i // width])
                wanted[key] = wanted.get(key, 0) + 1
        return ComponentSet(Component.numbered(kind, layer, int(i), shape) for (kind, layer), n in sorted(wanted.items())
                            for i in np.sort(rng.choice(shape.per_layer(kind), size=n, replace=False)))
