"""loctest: localization tests for language models.

Plugins write ``from loctest import hookimpl`` and subclass :class:`Locator`, :class:`Editor`,
:class:`Scorer`, :class:`Dataset` or :class:`Backend`; ``loctest.run("recipe.toml")`` runs a recipe.
"""
from . import interventions
from .backend import Backend, Batch
from .model import Model
from .base import Dataset, Editor, Example, Judge, Locator, PluginConfig, Scorer, Scores, Verdict
from .components import Component, ComponentSet, ModelShape
from .context import RunContext
from .hookspecs import hookimpl
from .interventions import Intervention
from .references import ArmRef, DatasetRef, PluginRef
from .results import RunResults, load

__version__ = "0.1.0"


def run(recipe, overrides=None, **options):
    """Run a recipe file (the Python twin of ``loctest run``); returns :class:`loctest.RunResults`
    (``loctest.load(run_dir)`` gives it back later).

    ``overrides`` maps dotted keys to values (like ``--set``); ``options`` are ``out``, ``limit``,
    ``device``, ``backend``, ``plugins_dirs``, ``blocked_plugins``, ``progress``.
    """
    from .runner import run_recipe

    return run_recipe(recipe, overrides or {}, **options)


__all__ = ["ArmRef", "Backend", "Batch", "Component", "ComponentSet", "Dataset", "DatasetRef", "Editor", "Example",
           "Intervention", "Judge", "Locator", "Model", "ModelShape", "PluginConfig", "PluginRef", "RunContext", "Scorer",
           "RunResults", "Scores", "hookimpl", "interventions", "load", "run", "Verdict"]
