"""One vocabulary for model components, the same for every backend and architecture.

- MLP neuron ``mlp:L:N`` = neuron N of the input to layer L's MLP down projection.
- Attention head ``head:L:H`` = head H's output before layer L's attention output projection.
- Attention neuron ``attn:L:H:D`` = dimension D of that head's output.
- Residual stream ``resid:L`` = the whole residual stream after layer L (the site of steering vectors), one
  component.

A :class:`ComponentSet` is an ordered, duplicate-free set of components, optionally with a score per component
(what makes "the top k" defined: :meth:`ComponentSet.top`), that serialises to JSON and groups itself by *site*
(one activation tensor: ``("mlp", L)``, ``("attn", L)`` or ``("resid", L)``). Each backend names a site
its own way for the architecture at hand (``Backend.site_name``).
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

SITE_KINDS = ("mlp", "attn", "resid")
KINDS = ("mlp", "head", "attn", "resid")
NAME_FORMS = "'mlp:LAYER:NEURON', 'head:LAYER:HEAD', 'attn:LAYER:HEAD:DIM' or 'resid:LAYER'"


@dataclass(frozen=True, order=True)
class Component:
    """One MLP neuron, attention head, attention neuron or residual stream. ``kind`` is "mlp", "head", "attn" or
    "resid" (the whole stream after a layer: ``index`` 0)."""

    kind: str
    layer: int
    index: int = 0  # neuron for "mlp", head for "head" and "attn", 0 for "resid"
    dim: int | None = None  # head dimension, only for "attn"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"component kind must be one of {', '.join(map(repr, KINDS))}, got {self.kind!r}")
        if (self.dim is None) != (self.kind != "attn"):
            raise UserError(f"component {self.kind!r} {'needs' if self.kind == 'attn' else 'takes no'} a head dimension")
        if self.layer < 0 or self.index < 0 or (self.dim is not None and self.dim < 0):
            raise UserError(f"component indices must be >= 0, got {self}")
        if self.kind == "resid" and self.index:
            raise UserError(f"a residual-stream component is a whole layer ('resid:{self.layer}'), got index {self.index}")

    @property
    def name(self) -> str:
        parts = [self.kind, self.layer] + ([self.index] if self.kind != "resid" else []) + ([self.dim] if self.dim is not None else [])
        return ":".join(str(p) for p in parts)

    @property
    def site(self) -> tuple[str, int]:
        """The activation tensor this component lives in: ("mlp", layer), ("attn", layer) or ("resid", layer)."""
        return ("attn" if self.kind in ("head", "attn") else self.kind, self.layer)

    @classmethod
    def parse(cls, text: str) -> "Component":
        """Parse ``mlp:L:N``, ``head:L:H``, ``attn:L:H:D`` or ``resid:L``."""
        m = re.fullmatch(r"(mlp|head|attn|resid):(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
        arity = {"mlp": 1, "head": 1, "attn": 2, "resid": 0}
        if not m or sum(g is not None for g in m.groups()[2:]) != arity[m.group(1)]:
            raise UserError(f"bad component name {text!r}: expected {NAME_FORMS}")
        numbers = [int(g) for g in m.groups()[1:] if g is not None]
        return cls(m.group(1), *numbers)

    @classmethod
    def numbered(cls, kind: str, layer: int, number: int, shape: "ModelShape") -> "Component":
        """Component ``number`` of ``kind`` in ``layer``, counting as :meth:`ModelShape.per_layer` does (attention
        neurons as head * d_head + dim)."""
        if kind == "attn":
            return cls(kind, layer, number // shape.d_head, number % shape.d_head)
        return cls(kind, layer, number)

    def columns(self, shape: "ModelShape") -> range:
        """The component's columns in its site's activation (attention flattened as head * d_head + dim)."""
        if self.kind == "mlp":
            return range(self.index, self.index + 1)
        if self.kind == "attn":
            return range(self.index * shape.d_head + self.dim, self.index * shape.d_head + self.dim + 1)
        if self.kind == "head":
            return range(self.index * shape.d_head, (self.index + 1) * shape.d_head)
        return range(shape.d_model)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide which components exist."""

    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_model: int

    def site_width(self, kind: str) -> int:
        return {"mlp": self.d_mlp, "attn": self.n_heads * self.d_head, "resid": self.d_model}[kind]

    def per_layer(self, kind: str) -> int:
        """How many components of ``kind`` each layer has."""
        return {"mlp": self.d_mlp, "head": self.n_heads, "attn": self.n_heads * self.d_head, "resid": 1}[kind]

    def checked(self, components: "ComponentSet") -> "ComponentSet":
        """``components``, after checking that each exists in a model of this shape."""
        for c in components:
            self.check(c)
        return components

    def check(self, component: Component) -> None:
        """Raise UserError if ``component`` does not exist in a model of this shape."""
        limits = {"mlp": self.d_mlp, "head": self.n_heads, "attn": self.n_heads, "resid": 1}
        if component.layer >= self.n_layers:
            raise UserError(f"component {component}: layer {component.layer} out of range (model has {self.n_layers} layers)")
        if component.index >= limits[component.kind]:
            what = "neurons" if component.kind == "mlp" else "heads"
            raise UserError(f"component {component}: index out of range (model has {limits[component.kind]} {what} per layer)")
        if component.dim is not None and component.dim >= self.d_head:
            raise UserError(f"component {component}: dim out of range (head size is {self.d_head})")


class ComponentSet:
    """An ordered, duplicate-free collection of components. ``scores`` (component name -> finite float, higher
    ranks first), when a locator gives them, covers exactly the members and is kept in their order."""

    def __init__(self, components: Iterable[Component | str] = (), scores: Mapping[str, float] | None = None):
        seen: dict[Component, None] = {}
        for c in components:
            seen[Component.parse(c) if isinstance(c, str) else c] = None
        self._items = tuple(seen)
        self.scores = None if scores is None else self._checked_scores(scores)

    def _checked_scores(self, scores: Mapping[str, float]) -> dict[str, float]:
        names = self.names()
        if extra := set(scores) - set(names):
            raise UserError(f"scores of components not in the set: {', '.join(sorted(extra))}")
        if missing := [n for n in names if n not in scores]:
            raise UserError(f"component {missing[0]} has no score (a scored set scores every component)")
        if bad := [n for n in names if not math.isfinite(scores[n])]:
            raise UserError(f"component {bad[0]}: score {scores[bad[0]]} is not a finite number")
        return {n: float(scores[n]) for n in names}

    def top(self, k: int) -> "ComponentSet":
        """The ``k`` highest-scored components, highest first (ties: the earlier first), with their scores."""
        if self.scores is None:
            raise UserError("these components have no scores, so 'the top k' is undefined")
        if not 1 <= k <= len(self):
            raise UserError(f"top {k}: the set has {len(self)} components")
        ranked = sorted(self._items, key=lambda c: -self.scores[c.name])[:k]  # stable: ties keep their order
        return ComponentSet(ranked, {c.name: self.scores[c.name] for c in ranked})

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
            out[c.site].update(c.columns(shape))
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
        """One dict per component, with its ``score`` when the set is scored; ``site_names`` maps a label (a
        backend's name) to that backend's ``site_name``, and each component gets its site's name under the label."""
        site_names = site_names or {}
        return [{"name": c.name, "kind": c.kind, "layer": c.layer, "index": c.index, "dim": c.dim,
                 **({"score": self.scores[c.name]} if self.scores is not None else {}),
                 **{label: name(c.site) for label, name in site_names.items()}} for c in self._items]

    @classmethod
    def from_json(cls, data: list) -> "ComponentSet":
        """The set :meth:`to_json` wrote (or a plain list of names), scores included."""
        items = [d if isinstance(d, dict) else {"name": d} for d in data]
        scores = {d["name"]: d["score"] for d in items if "score" in d}
        return cls((Component.parse(d["name"]) for d in items), scores or None)

    def save(self, path: str | Path, site_names: dict[str, Callable[[tuple[str, int]], str]] | None = None) -> None:
        Path(path).write_text(json.dumps(self.to_json(site_names), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "ComponentSet":
        return cls.from_json(json.loads(Path(path).read_text()))
