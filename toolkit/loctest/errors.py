"""Typed exceptions. The library raises these; only the CLI turns them into exit codes."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class LoctestError(Exception):
    """Base class of every error loctest raises on purpose."""


class UserError(LoctestError):
    """Bad input from the user (recipe, CLI flag, plugin config). CLI exit code 2."""


class RecipeError(UserError):
    """One or more located problems in a recipe; ``problems`` holds "file: key: message" lines."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PluginLoadError(UserError):
    """A plugin module failed to import or register; names the plugin and keeps the original error."""


class LoctestWarning(UserWarning):
    """Something the user should know that does not stop the run (e.g. a corrupt cache file was dropped); the CLI
    prints it as one ``warning:`` line."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """'did you mean X? valid: a, b, c' for an unknown ``name``."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}valid: {', '.join(valid) if valid else '(none)'}"
