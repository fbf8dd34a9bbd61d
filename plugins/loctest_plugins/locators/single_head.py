"""``single-head``: one attention head, named or drawn, for sweeps over heads one at a time.

Wang & Veitch (section 6) edit 24 randomly sampled single heads, one at a time. Here each arm holds one head:
either a named one (``layer`` and ``head``), or entry ``index`` of a seeded permutation of all the model's
heads. The permutation depends only on the run seed and ``order_seed``, never on the arm, so arms with
``index = 0, 1, ..., N-1`` sample N distinct heads without replacement, and ``index`` up to
n_layers * n_heads - 1 sweeps every head.
"""
from __future__ import annotations

from pydantic import Field, model_validator

from loctest import Component, ComponentSet, Locator, PluginConfig
from loctest.errors import UserError


class SingleHeadConfig(PluginConfig):
    layer: int | None = Field(None, ge=0, description="Layer of a named head (with 'head').")
    head: int | None = Field(None, ge=0, description="Head number of a named head (with 'layer').")
    index: int | None = Field(None, ge=0, description="Position in a seeded permutation of all heads (instead of layer/head): arms 0..N-1 sample N distinct heads.")
    order_seed: int = Field(0, description="Picks the permutation (combined with the run seed); arms of one sweep share it.")

    @model_validator(mode="after")
    def _one_way(self):
        named = self.layer is not None or self.head is not None
        if named and (self.layer is None or self.head is None):
            raise ValueError("give both 'layer' and 'head'")
        if named == (self.index is not None):
            raise ValueError("give either 'layer' and 'head', or 'index'")
        return self


class SingleHead(Locator):
    name = "single-head"
    description = "One attention head: named, or entry 'index' of a seeded permutation of all heads (sweeps)."
    Config = SingleHeadConfig

    def locate(self, context) -> ComponentSet:
        shape = context.shape
        if self.config.index is None:
            return ComponentSet([Component("head", self.config.layer, self.config.head)])
        total = shape.n_layers * shape.n_heads
        if self.config.index >= total:
            raise UserError(f"single-head: index {self.config.index} out of range (the model has {total} heads)")
        flat = int(context.rng("single-head", self.config.order_seed).permutation(total)[self.config.index])
        return ComponentSet([Component("head", flat // shape.n_heads, flat % shape.n_heads)])
