"""One vocabulary for model components, the same for every backend and architecture.

- MLP neuron ``mlp:L:N`` = neuron N of the input to layer L's MLP down projection.
- Attention head ``head:L:H`` = head H's output before layer L's attention output projection.
- Attention neuron ``attn:L:H:D`` = dimension D of that head's output.

A :class:`ComponentSet` is an ordered, duplicate-free set of components that serialises to JSON and
groups itself by *site* (one activation tensor: ``("mlp", L)`` or ``("attn", L)``). Each backend names a site
its own way for the architecture at hand (``Backend.site_name``: a TransformerLens hook, an nnsight path).
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

SITE_KINDS = ("mlp", "attn")


@dataclass(frozen=True, order=True)
class Component:
    """One MLP neuron, attention head or attention neuron. ``kind`` is "mlp", "head" or "attn"."""

    kind: str
    layer: int
    index: int  # neuron for "mlp", head for "head" and "attn"
    dim: int | None = None  # head dimension, only for "attn"

    def __post_init__(self):
        if self.kind not in ("mlp", "head", "attn"):
            raise UserError(f"component kind must be 'mlp', 'head' or 'attn', got {self.kind!r}")
        if (self.dim is None) != (self.kind != "attn"):
            raise UserError(f"component {self.kind!r} {'needs' if self.kind == 'attn' else 'takes no'} a head dimension")
        if self.layer < 0 or self.index < 0 or (self.dim is not None and self.dim < 0):
            raise UserError(f"component indices must be >= 0, got {self}")

    @property
    def name(self) -> str:
        parts = [self.kind, self.layer, self.index] + ([self.dim] if self.dim is not None else [])
        return ":".join(str(p) for p in parts)

    @property
    def site(self) -> tuple[str, int]:
        """The activation tensor this component lives in: ("mlp", layer) or ("attn", layer)."""
        return ("mlp" if self.kind == "mlp" else "attn", self.layer)

    @classmethod
    def parse(cls, text: str) -> "Component":
        """Parse ``mlp:L:N``, ``head:L:H`` or ``attn:L:H:D``."""
        m = re.fullmatch(r"(mlp|head|attn):(\d+):(\d+)(?::(\d+))?", text.strip())
        if not m or (m.group(4) is None) != (m.group(1) != "attn"):
            raise UserError(f"bad component name {text!r}: expected 'mlp:LAYER:NEURON', 'head:LAYER:HEAD' or 'attn:LAYER:HEAD:DIM'")
        return cls(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)) if m.group(4) else None)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide which components exist."""

    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int

    def site_width(self, kind: str) -> int:
        return self.d_mlp if kind == "mlp" else self.n_heads * self.d_head

    def checked(self, components: "ComponentSet") -> "ComponentSet":
        """``components``, after checking that each exists in a model of this shape."""
        for c in components:
            self.check(c)
        return components

    def check(self, component: Component) -> None:
        """Raise UserError if ``component`` does not exist in a model of this shape."""
        limits = {"mlp": self.d_mlp, "head": self.n_heads, "attn": self.n_heads}
        if component.layer >= self.n_layers:
            raise UserError(f"component {component}: layer {component.layer} out of range (model has {self.n_layers} layers)")
        if component.index >= limits[component.kind]:
            what = "neurons" if component.kind == "mlp" else "heads"
            raise UserError(f"component {component}: index out of range (model has {limits[component.kind]} {what} per layer)")
        if component.dim is not None and component.dim >= self.d_head:
            raise UserError(f"component {component}: dim out of range (head size is {self.d_head})")


class ComponentSet:
    """An ordered, duplicate-free collection of components."""

    def __init__(self, components: Iterable[Component | str] = ()):
        seen: dict[Component, None] = {}
        for c in components:
            seen[Component.parse(c) if isinstance(c, str) else c] = None
        self._items = tuple(seen)

    def __iter__(self) -> Iterator[Component]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other) -> bool:
        return isinstance(other, ComponentSet) and set(self._items) == set(other._items)

    def __repr__(self) -> str:
        shown = ", ".join(c.name for c in self._items[:5])
        return f"ComponentSet({len(self)}: {shown}{', ...' if len(self) > 5 else ''})"

    def by_site(self) -> dict[tuple[str, int], list[Component]]:
        groups: dict[tuple[str, int], list[Component]] = defaultdict(list)
        for c in self._items:
            groups[c.site].append(c)
        return dict(groups)

    def site_indices(self, shape: ModelShape) -> dict[tuple[str, int], list[int]]:
        """Flat column indices into each site's activation (attention flattened as head * d_head + dim)."""
        out: dict[tuple[str, int], set[int]] = defaultdict(set)
        for c in self._items:
            shape.check(c)
            if c.kind == "mlp":
                out[c.site].add(c.index)
            elif c.kind == "attn":
                out[c.site].add(c.index * shape.d_head + c.dim)
            else:
                out[c.site].update(range(c.index * shape.d_head, (c.index + 1) * shape.d_head))
        return {site: sorted(cols) for site, cols in sorted(out.items())}

    def counts_by_layer(self) -> dict[tuple[str, int], int]:
        """How many components of each kind sit in each layer: {(kind, layer): count}."""
        counts: dict[tuple[str, int], int] = defaultdict(int)
        for c in self._items:
            counts[(c.kind, c.layer)] += 1
        return dict(sorted(counts.items()))

    def names(self) -> list[str]:
        return [c.name for c in self._items]

    def to_json(self, site_names: dict[str, Callable[[tuple[str, int]], str]] | None = None) -> list[dict]:
        """One dict per component; ``site_names`` maps a label (a backend's name) to that backend's
        ``site_name``, and each component gets its site's name under the label."""
        site_names = site_names or {}
        return [{"name": c.name, "kind": c.kind, "layer": c.layer, "index": c.index, "dim": c.dim,
                 **{label: name(c.site) for label, name in site_names.items()}} for c in self._items]

    @classmethod
    def from_json(cls, data: list) -> "ComponentSet":
        return cls(Component.parse(d["name"] if isinstance(d, dict) else d) for d in data)

    def save(self, path: str | Path, site_names: dict[str, Callable[[tuple[str, int]], str]] | None = None) -> None:
        Path(path).write_text(json.dumps(self.to_json(site_names), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "ComponentSet":
        return cls.from_json(json.loads(Path(path).read_text()))
