"""Interventions: what an editor asks a backend to do to activations at one site.

A *site* is one activation tensor, ``("mlp", layer)`` (width d_mlp), ``("attn", layer)`` (width
n_heads * d_head, heads concatenated) or ``("resid", layer)`` (width d_model). An intervention maps the site's
activations ``[batch, pos, width]`` to new ones; the backend applies it only at the positions chosen by its
position policy:

- ``"last"``: the last prompt token of each example;
- ``"prompt"``: every prompt token (padding excluded);
- ``"continuation"``: every token after the prompt (generated tokens, or the answer tokens being scored);
- ``"all"``: prompt and continuation tokens.

A transform that must know which example each row holds (``resample-ablation`` pairs each row with another
example) sets ``with_batch``: it is then called as ``transform(x, batch)`` with the :class:`~loctest.backend.Batch`
being run, whose ``input_ids`` and ``prompt_mask`` tell each row's prompt tokens.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .components import ComponentSet, ModelShape
from .errors import UserError

POSITION_POLICIES = ("last", "prompt", "continuation", "all")
Site = tuple[str, int]


@dataclass(frozen=True)
class Intervention:
    """``transform`` maps site activations [batch, pos, width] to new ones of the same shape; with ``with_batch``
    it is called as ``transform(x, batch)``."""

    site: Site
    positions: str
    transform: Callable[..., torch.Tensor]
    description: str
    with_batch: bool = False

    def __post_init__(self):
        if self.positions not in POSITION_POLICIES:
            raise UserError(f"position policy must be one of {', '.join(POSITION_POLICIES)}, got {self.positions!r}")


def _column_edits(components: ComponentSet, shape: ModelShape, positions: str, what: str,
                  edit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list[Intervention]:
    out = []
    for site, cols in components.site_indices(shape).items():
        index = torch.tensor(cols, dtype=torch.long)
        out.append(Intervention(site, positions, lambda x, i=index: edit(x, i.to(x.device)),
                                f"{what} {len(cols)} columns of {site[0]}:{site[1]}"))
    return out


def zero(components: ComponentSet, shape: ModelShape, positions: str = "last") -> list[Intervention]:
    """Set the components' activations to zero."""
    return _column_edits(components, shape, positions, "zero", lambda x, i: x.index_fill(-1, i, 0.0))


def scale(components: ComponentSet, shape: ModelShape, factor: float | torch.Tensor,
          positions: str = "last") -> list[Intervention]:
    """Multiply the components' activations by ``factor`` (a number, or a [batch] tensor: one factor per row)."""
    def edit(x, i):
        f = factor if not torch.is_tensor(factor) else factor.to(x).view(-1, *([1] * (x.dim() - 1)))
        selected = torch.zeros(x.shape[-1], dtype=torch.bool, device=x.device).index_fill(0, i, True)
        return torch.where(selected, x * f, x)
    return _column_edits(components, shape, positions, "scale", edit)


def replace(components: ComponentSet, shape: ModelShape, values: dict[Site, torch.Tensor],
            positions: str = "last") -> list[Intervention]:
    """Replace the components' activations by ``values[site]`` (a full-width vector; only the components'
    columns are used)."""
    def make(site):
        v = values[site]
        return lambda x, i: x.index_copy(-1, i, v.to(x)[i].expand(*x.shape[:-1], len(i)))
    out = []
    for site, cols in components.site_indices(shape).items():
        if site not in values:
            raise UserError(f"replace: no value given for site {site}")
        index = torch.tensor(cols, dtype=torch.long)
        out.append(Intervention(site, positions, lambda x, i=index, f=make(site): f(x, i.to(x.device)),
                                f"replace {len(cols)} columns of {site[0]}:{site[1]}"))
    return out


def add(site: Site, vector: torch.Tensor, positions: str = "last") -> Intervention:
    """Add a full-width ``vector`` to the site's activations."""
    return Intervention(site, positions, lambda x: x + vector.to(x), f"add a vector (norm {float(vector.norm()):.3g}) at {site[0]}:{site[1]}")


def group_by_site(interventions: Sequence[Intervention]) -> dict[Site, list[Intervention]]:
    groups: dict[Site, list[Intervention]] = {}
    for iv in interventions:
        groups.setdefault(iv.site, []).append(iv)
    return groups
