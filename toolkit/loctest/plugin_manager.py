"""Plugin discovery and the registries.

Plugins come from, in order: the default plugins (:data:`DEFAULT_PLUGINS`: the built-ins' entry point, loaded
from this list even when the source tree is not installed), the ``loctest`` entry-point group, drop-in ``*.py``
files at the top of the repository's ``plugins/`` folder, ``--plugins-dir`` folders, and a recipe's ``[plugins]
paths``. ``LOCTEST_DISABLE_PLUGIN_AUTOLOAD=1`` skips all but the default plugins and explicit paths;
``--no-plugin NAME`` blocks one plugin by name. A plugin that fails to import is reported with its original
error; the others still load.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path

import pluggy

from . import hookspecs
from .backend import Backend
from .base import Dataset, Editor, Judge, Locator, Scorer
from .errors import PluginLoadError, UserError, did_you_mean
from .registry import Registry

BUILTIN_PLUGIN = "builtins"
DEFAULT_PLUGINS = (EntryPoint(BUILTIN_PLUGIN, "loctest_plugins", hookspecs.PROJECT_NAME),)  # as pyproject.toml declares
DISABLE_AUTOLOAD_ENV = "LOCTEST_DISABLE_PLUGIN_AUTOLOAD"
KINDS = {"locator": Locator, "editor": Editor, "scorer": Scorer, "backend": Backend, "dataset": Dataset, "judge": Judge}


def repo_dropin_dir() -> Path | None:
    """The top-level ``plugins/`` folder of a source checkout (``toolkit/loctest`` is this package), if there is one."""
    package = Path(__file__).resolve().parent
    root = package.parent.parent
    folder = root / "plugins"
    return folder if package.parent.name == "toolkit" and (root / "pyproject.toml").exists() and folder.is_dir() else None


@dataclass
class PluginHost:
    """A pluggy manager plus one registry per kind, filled by the registration hooks."""

    pm: pluggy.PluginManager
    registries: dict[str, Registry] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def plugin_names(self) -> list[str]:
        return sorted(name for name, plugin in self.pm.list_name_plugin() if plugin is not None)  # None: blocked


def _load_file(path: Path):
    module_name = f"loctest_dropin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _check_hook_names(pm: pluggy.PluginManager) -> None:
    """``pm.check_pending()``, with a misspelled hook name reported as a user error naming the plugin."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        specs = [n for n in vars(pm.hook) if not n.startswith("_") and getattr(pm.hook, n).has_spec()]
        unknown = [n for n in vars(pm.hook) if not n.startswith("_") and not getattr(pm.hook, n).has_spec()
                   and any(i.plugin is err.plugin for i in getattr(pm.hook, n).get_hookimpls())]
        raise PluginLoadError(f"plugin {pm.get_name(err.plugin)!r}: unknown hook {unknown[0]!r}; "
                              f"{did_you_mean(unknown[0], specs)}") from err


def create_host(extra_paths: list[str | Path] = (), blocked: list[str] = (), autoload: bool | None = None,
                strict: bool = False) -> PluginHost:
    """Discover plugins and fill the registries. Import failures are collected in ``host.failures`` (or raised
    when ``strict``); a misspelled hook name always raises."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    host = PluginHost(pm)
    if autoload is None:
        autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)

    def add(name: str, source: str, loader):
        if pm.is_blocked(name) or pm.has_plugin(name):
            return
        try:
            pm.register(loader(), name=name)
        except Exception as err:  # a broken plugin must not take the others down
            message = f"plugin {name!r} ({source}) failed to load: {type(err).__name__}: {err}"
            if strict:
                raise PluginLoadError(message) from err
            host.failures.append(" ".join(message.split()))

    installed = importlib.metadata.entry_points(group=hookspecs.PROJECT_NAME) if autoload else ()
    for ep in [*DEFAULT_PLUGINS, *installed]:
        add(ep.name, f"entry point {ep.value}", ep.load)
    folders = [repo_dropin_dir()] if autoload else []
    for entry in [*folders, *map(Path, extra_paths)]:
        if entry is None:
            continue
        if not entry.exists():
            raise UserError(f"plugin path {str(entry)!r} does not exist")
        for file in sorted(entry.glob("*.py")) if entry.is_dir() else [entry]:
            if not file.name.startswith("_"):
                add(file.stem, str(file), lambda f=file: _load_file(f))
    _check_hook_names(pm)

    for kind, base in KINDS.items():
        registry = Registry(kind, base)
        host.registries[kind] = registry
        hook = getattr(pm.hook, f"register_{kind}s")
        for impl in hook.get_hookimpls():  # in registration order = discovery order: built-ins first
            owner = pm.get_name(impl.plugin)
            impl.function(register=lambda cls, o=owner, r=registry: r.register(cls, o))
    return host
