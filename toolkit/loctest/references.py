"""Typed references for plugin configs: a field that names a recipe dataset, a recipe arm or a registered plugin.

Recipe validation finds them by type (also inside ``X | None`` and lists) and checks every one before any
weights load, so a plugin uses the name without checking it::

    class Config(PluginConfig):
        dataset: DatasetRef = Field("truthfulqa", description="Dataset (in [datasets]) whose questions are run.")
        match: ArmRef | None = Field(None, description="Arm whose components to copy (it runs first).")
        judge: PluginRef("judge", settings="judge_config") = Field("offline", description="Judge plugin.")
        judge_config: dict = Field(default_factory=dict, description="The judge's settings.")

An arm named by an arm's locator or editor runs before that arm (its components are in ``context.components``).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel


@dataclass(frozen=True)
class Declared:
    """Marks a name declared in a recipe section: ``datasets`` or ``arms``."""

    section: str

    def __str__(self) -> str:
        return {"datasets": "DatasetRef", "arms": "ArmRef"}.get(self.section, f"Declared({self.section!r})")


@dataclass(frozen=True)
class Registered:
    """Marks the name of a registered plugin of ``kind``; ``settings`` names the sibling field holding that
    plugin's settings, validated against its ``Config``."""

    kind: str
    settings: str | None = None

    def __str__(self) -> str:
        return f"PluginRef({self.kind!r})"


DatasetRef = Annotated[str, Declared("datasets")]
ArmRef = Annotated[str, Declared("arms")]


def PluginRef(kind: str, settings: str | None = None) -> Any:  # noqa: N802 - used as a type
    """The name of a registered plugin of ``kind``, e.g. ``PluginRef("judge")``."""
    return Annotated[str, Registered(kind, settings)]


def references(config: BaseModel) -> Iterator[tuple[str, Declared | Registered, str]]:
    """``(key, marker, name)`` for each typed reference in a validated config; ``key`` is the field name, with
    ``[i]`` for an item of a list."""
    for field, info in type(config).model_fields.items():
        yield from _found(field, info.annotation, info.metadata, getattr(config, field))


def type_text(annotation: Any, metadata: list = ()) -> str:
    """A config field's type as ``loctest plugins`` shows it, a reference by its name: ``ArmRef | None``."""
    marker = next((m for m in metadata if isinstance(m, (Declared, Registered))), None)
    origin, args = get_origin(annotation), get_args(annotation)
    if marker is not None:
        return str(marker)
    if origin is Annotated:
        return type_text(args[0], list(annotation.__metadata__))
    if origin in (Union, UnionType):
        return " | ".join(type_text(arg) for arg in args)
    if origin in (list, tuple, set, frozenset, dict):
        return f"{origin.__name__}[{', '.join('...' if arg is Ellipsis else type_text(arg) for arg in args)}]"
    if annotation is type(None):
        return "None"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _found(key: str, annotation: Any, metadata: list, value: Any) -> Iterator[tuple[str, Declared | Registered, str]]:
    if isinstance(value, str):
        yield from ((key, marker, value) for marker in metadata if isinstance(marker, (Declared, Registered)))
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        yield from _found(key, args[0], list(annotation.__metadata__), value)
    elif origin in (Union, UnionType):
        for arg in args:
            yield from _found(key, arg, [], value)
    elif origin in (list, tuple, set, frozenset) and args and isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _found(f"{key}[{i}]", args[0], [], item)
