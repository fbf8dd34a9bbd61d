"""The plugin contract: every hook a loctest plugin may implement.

A plugin is a module (or object) with functions decorated by ``@loctest.hookimpl`` whose names match the
specs below. Registration hooks receive a ``register`` callback owned by the host; call it once per class.
Lifecycle hooks let cross-cutting plugins observe a run; the hot path never broadcasts hooks.
"""
from __future__ import annotations

import pluggy

PROJECT_NAME = "loctest"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_locators(register):
    """Register locator classes (subclasses of ``loctest.Locator``): call ``register(cls)`` for each.

    A locator finds components (MLP neurons, attention heads or attention neurons) and returns a
    ``ComponentSet``. Returns nothing.
    """


@hookspec
def register_editors(register):
    """Register editor classes (subclasses of ``loctest.Editor``): call ``register(cls)`` for each.

    An editor turns a ``ComponentSet`` into interventions that the backend applies while scoring.
    Returns nothing.
    """


@hookspec
def register_scorers(register):
    """Register scorer classes (subclasses of ``loctest.Scorer``): call ``register(cls)`` for each.

    A scorer measures the model's behaviour (with an arm's interventions in place) and returns one value
    per repetition for each metric it reports. Returns nothing.
    """


@hookspec
def register_backends(register):
    """Register backend classes (subclasses of ``loctest.Backend``): call ``register(cls)`` for each.

    A backend gives activation access (forward, capture, intervene, gradients) over a loaded model.
    Returns nothing.
    """


@hookspec
def register_datasets(register):
    """Register dataset classes (subclasses of ``loctest.Dataset``): call ``register(cls)`` for each.

    A dataset turns rows of a file into ``Example`` objects (question, correct and incorrect answers).
    Returns nothing.
    """


@hookspec
def register_judges(register):
    """Register judge classes (subclasses of ``loctest.Judge``): call ``register(cls)`` for each.

    A judge rates generated answers for truthfulness and informativeness (used by the ``info-truth``
    scorer). Returns nothing.
    """


@hookspec
def loctest_before_stage(stage, context):
    """Called before each stage of a run. ``stage`` is, in order: "load" (``context`` is None: nothing is loaded
    yet); per arm, in an order where an arm comes after the arms its plugins name: "locate:ARM" (an arm with a
    locator), "edit:ARM" (an arm with an editor) and "score:ARM:SCORER" (once per scorer of the recipe); then
    "report". ``context`` is the ``RunContext``. Returns nothing."""


@hookspec
def loctest_after_stage(stage, context, result):
    """Called after each stage of a run with the stage's ``result``: None after "load", the ``ComponentSet``
    after "locate:ARM", the list of interventions after "edit:ARM", the ``Scores`` after "score:ARM:SCORER", the
    ``RunResults`` after "report". Returns nothing."""


@hookspec
def loctest_report_sections(results):
    """The one way a plugin adds to the run's report (built-in scorers and locators use it too): return a
    Markdown section (a string starting with a "## " heading) or None. ``results`` is the finished run's
    ``RunResults``: ``results.data`` is results.json, ``results.comparisons_of(plugin)`` the comparisons of a
    scorer plugin's metrics, and ``results.save_figure(fig, name)`` saves a matplotlib figure under ``figures/``
    and returns the path to embed. Sections follow the host's comparison tables."""
