"""One registry per plugin kind: name -> class, with owner tracking and helpful lookups."""
from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import UserError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps plugin names to classes of one kind and remembers which plugin registered each."""

    def __init__(self, kind: str, base: type):
        self.kind = kind
        self.base = base
        self._classes: dict[str, type[T]] = {}
        self._owners: dict[str, str] = {}

    def register(self, cls: type[T], owner: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise UserError(f"plugin {owner!r} registered {cls!r} as a {self.kind}, but it is not a subclass of {self.base.__name__}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise UserError(f"plugin {owner!r}: {self.kind} class {cls.__name__} has no 'name'")
        problem = config_problem(getattr(cls, "Config", None))
        if problem:
            raise UserError(f"plugin {owner!r}: {self.kind} {name!r}: {problem}")
        if name in self._classes:
            raise UserError(
                f"duplicate {self.kind} name {name!r}: registered by {self._owners[name]!r} and again by {owner!r}"
            )
        self._classes[name] = cls
        self._owners[name] = owner

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise UserError(f"unknown {self.kind} {name!r}: {did_you_mean(name, self._classes)}") from None

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def items(self):
        return sorted(self._classes.items())


def config_problem(config) -> str | None:
    """Why a plugin's ``Config`` is unusable: not a pydantic model, or a default that fails its own field's type."""
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        return f"Config must be a PluginConfig subclass, got {config!r}"
    try:
        config.model_validate({})
    except ValidationError as err:
        for e in err.errors():
            if e["loc"] and e["type"] != "missing":
                field = ".".join(map(str, e["loc"]))
                return f"config field {field!r}: the default {e.get('input')!r} fails its own type: {e['msg']}"
    return None
