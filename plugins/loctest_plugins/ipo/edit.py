"""The paper's reparameterised rank-1 LoRA as an activation edit (Wang & Veitch, Eq. 4.1-4.3).

At a site (the input ``o`` of a layer's attention output projection ``W``, heads concatenated; or of its MLP
down projection) the edit is ``o <- o + <a, o> (m * b)``: ``a`` reads the whole site, ``m`` is 1 on the chosen
components' columns (a chosen head's whole slice) and 0 elsewhere, and one (a, b) pair serves each site with a
chosen component. Before the projection this adds ``<a, o> W (m * b)`` to the residual stream: a rank-1 LoRA
update ``(W m b) a^T`` of ``W`` whose output direction lies in the span of the chosen heads. At a residual-stream
site (``resid:L``, every column chosen) the same formula edits the stream after the layer directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from loctest import ComponentSet, Intervention, ModelShape
from loctest.interventions import Site


def site_key(site: Site) -> str:
    return f"{site[0]}.{site[1]}"


def parse_site_key(key: str) -> Site:
    kind, layer = key.split(".")
    return kind, int(layer)


@dataclass
class SiteEdit:
    """One site's ``a`` and ``b`` (trainable, [width]) and fixed 0/1 ``mask`` ([width])."""

    site: Site
    a: torch.nn.Parameter
    b: torch.nn.Parameter
    mask: torch.Tensor

    def direction(self) -> torch.Tensor:
        """``m * b``: exactly zero outside the chosen columns (so is its gradient)."""
        return self.b * self.mask

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + (x @ self.a.to(x.dtype)).unsqueeze(-1) * self.direction().to(x.dtype)


class RankOneEdit:
    """The rank-1 edits of all sites with a chosen component."""

    def __init__(self, sites: list[SiteEdit]):
        self.sites = sites

    @classmethod
    def masks(cls, components: ComponentSet, shape: ModelShape, whole_sites: bool = False) -> dict[Site, torch.Tensor]:
        """Per site, 1 on the components' columns (every column with ``whole_sites``)."""
        out = {}
        for site, cols in components.site_indices(shape).items():
            mask = torch.ones(shape.site_width(site[0])) if whole_sites else torch.zeros(shape.site_width(site[0]))
            mask[cols] = 1.0
            out[site] = mask
        return out

    @classmethod
    def initial(cls, masks: dict[Site, torch.Tensor], generator: torch.Generator, device="cpu") -> "RankOneEdit":
        """LoRA's initialisation: ``a`` uniform in +-1/sqrt(width) (Kaiming-uniform, as LoRA's A), ``b`` zero,
        so training starts from the unedited model."""
        sites = []
        for site, mask in masks.items():
            bound = 1.0 / math.sqrt(mask.numel())
            a = (torch.rand(mask.numel(), generator=generator) * 2 - 1) * bound
            sites.append(SiteEdit(site, torch.nn.Parameter(a.to(device)), torch.nn.Parameter(torch.zeros_like(a, device=device)),
                                  mask.to(device)))
        return cls(sites)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for s in self.sites for p in (s.a, s.b)]

    def interventions(self, positions: str) -> list[Intervention]:
        return [Intervention(s.site, positions, s, f"rank-1 edit o + <a,o> b at {s.site[0]}:{s.site[1]} "
                                                   f"(b on {int(s.mask.sum())} of {s.mask.numel()} columns)")
                for s in self.sites]

    def tensors(self) -> dict[str, torch.Tensor]:
        """``SITE.a``, ``SITE.b`` (masked) and ``SITE.mask`` for every site, detached on CPU."""
        out = {}
        for s in self.sites:
            key = site_key(s.site)
            out |= {f"{key}.a": s.a.detach().cpu().contiguous(), f"{key}.b": s.direction().detach().cpu().contiguous(),
                    f"{key}.mask": s.mask.detach().cpu().contiguous()}
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], device="cpu") -> "RankOneEdit":
        keys = sorted({k.rsplit(".", 1)[0] for k in tensors}, key=parse_site_key)
        return cls([SiteEdit(parse_site_key(k), torch.nn.Parameter(tensors[f"{k}.a"].float().to(device)),
                             torch.nn.Parameter(tensors[f"{k}.b"].float().to(device)), tensors[f"{k}.mask"].float().to(device))
                    for k in keys])
