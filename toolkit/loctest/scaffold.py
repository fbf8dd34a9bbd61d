"""``loctest new locator|editor|scorer NAME``: a working plugin file to start from, with its own tests and a tiny
recipe that uses it. The files come from the templates in ``loctest/templates/KIND/``."""
from __future__ import annotations

import importlib.util
import keyword
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

from .errors import UserError, did_you_mean

KINDS = ("locator", "editor", "scorer")
PLUGIN_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
TEMPLATES = {"plugin.py": "{module}.py", "test.py": "test_{module}.py", "recipe.toml": "{module}.toml"}


@dataclass(frozen=True)
class Skeleton:
    """The files of one new plugin: ``{module}.py``, ``test_{module}.py`` and ``{module}.toml``."""

    kind: str
    name: str

    @property
    def module(self) -> str:
        return self.name.replace("-", "_")

    @property
    def class_name(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("-"))

    def files(self) -> dict[str, str]:
        """File name -> text."""
        folder = files("loctest") / "templates" / self.kind
        values = {"name": self.name, "module": self.module, "cls": self.class_name}
        return {target.format(module=self.module): Template((folder / f"{source}.tmpl").read_text(encoding="utf-8")).substitute(values)
                for source, target in TEMPLATES.items()}


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a new plugin file, or None."""
    if not PLUGIN_NAME.fullmatch(name):
        return (f"plugin name {name!r} must be lowercase letters and digits in dash-separated words, starting with a "
                f"letter (e.g. 'my-locator')")
    module = name.replace("-", "_")
    if keyword.iskeyword(module):
        return f"plugin name {name!r} is a Python keyword; choose another name"
    if importlib.util.find_spec(module) is not None:
        return (f"plugin name {name!r} would write {module}.py, which shadows the importable module {module!r}; "
                f"choose another name")
    return None


def checked_skeleton(kind: str, name: str, host) -> Skeleton:
    """The skeleton for a known kind and a usable name that no plugin of that kind in ``host`` has."""
    if kind not in KINDS:
        raise UserError(f"unknown plugin kind {kind!r} for 'loctest new'; {did_you_mean(kind, KINDS)}")
    registry = host.registry(kind)
    if name in registry:
        article = "an" if kind[0] in "aeiou" else "a"
        raise UserError(f"{article} {kind} named {name!r} exists already (registered by {registry.owner(name)!r}); "
                        f"choose another name")
    problem = name_problem(name)
    if problem:
        raise UserError(problem)
    return Skeleton(kind, name)


def write_skeleton(kind: str, name: str, folder: Path, host) -> list[Path]:
    """Write the skeleton's files into ``folder`` (made if missing); nothing is written when any of them exists."""
    skeleton = checked_skeleton(kind, name, host)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--dir {str(folder)!r} is a file, not a folder")
    texts = skeleton.files()
    existing = [str(folder / file) for file in texts if (folder / file).exists()]
    if existing:
        raise UserError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; nothing written "
                        f"(choose another name or --dir)")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file, text in texts.items():
        with open(folder / file, "x", encoding="utf-8") as out:  # "x": never overwrite
            out.write(text)
        written.append(folder / file)
    return written
