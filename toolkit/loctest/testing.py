"""loctest's pytest plugin, for the test suites of plugin authors (and loctest's own): tiny random models on both
backends, a recipe runner on a tiny model, and plugin registration that ends with the test.

Installed with loctest (the ``pytest11`` entry point ``loctest.testing``), so any test suite gets the fixtures:

- ``backend_name``: each backend in turn ("transformer-lens", "nnsight"): a test that uses it runs once per backend;
- ``tiny_model``: a :class:`loctest.Model`, a random 2-layer tiny-llama on CPU through ``backend_name``'s backend
  (shared between tests: do not edit its weights);
- ``tiny_run``: ``tiny_run(recipe, **options) -> RunResults`` runs a recipe on tiny-llama in the test's ``tmp_path``
  (:func:`run_tiny_recipe`);
- ``register_plugin``: ``register_plugin(plugin) -> PluginHost`` makes a plugin module, class or file part of
  every plugin host until the test ends (:func:`registered`).

The functions behind them are importable too: :func:`make_model` (a :class:`loctest.Model` from a model name),
:func:`make_context` (a :class:`loctest.RunContext` to call a plugin's ``locate``/``interventions``/``score``
directly), :func:`tiny_recipe`, :data:`EXAMPLES` (a few questions with answers). Nothing is downloaded.
"""
from __future__ import annotations

import functools
import inspect
import itertools
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from . import hookspecs, plugin_manager
from .base import Example
from .context import RunContext
from .errors import UserError
from .hookspecs import hookimpl
from .model import Model
from .models import ModelConfig, load_model
from .plugin_manager import KINDS, PluginHost, create_host
from .progress import Progress

BACKENDS = ("transformer-lens", "nnsight")
TINY_MODELS = ("tiny-llama", "tiny-gpt2", "tiny-gpt-neox", "tiny-qwen2", "tiny-gemma2")
EXAMPLES = (  # short: tiny models tokenize byte by byte
    Example("capital", "What is the capital of France?", ("Paris",), ("Lyon", "Nice")),
    Example("sky", "What colour is a clear sky at noon?", ("Blue",), ("Green", "Red")),
    Example("spider", "How many legs has a spider?", ("Eight",), ("Six", "Ten")),
    Example("ice", "Does ice float on water?", ("Yes",), ("No", "Only in the sea")),
)


@functools.cache
def plugin_host() -> PluginHost:
    """A host with loctest's built-in plugins only (shared: do not register into it)."""
    return create_host(autoload=False)


def make_model(backend: str = "transformer-lens", model: str = "tiny-llama", **model_options) -> Model:
    """A freshly loaded :class:`loctest.Model`: ``model`` is any ``[model] name`` ("tiny-llama" and the other
    random tiny models, "smollm2-135m-instruct", a Hugging Face id or a local path), reached through the built-in
    backend ``backend``; ``model_options`` are other ``[model]`` keys (``tiny_layers``, ``dtype``, ``device``:
    "cpu" unless given). Each call loads its own copy (each backend owns its model object)."""
    loaded = load_model(ModelConfig(name=model, **{"device": "cpu", **model_options}))
    return Model(plugin_host().registry("backend").get(backend)(loaded))


@functools.cache
def cached_model(backend: str, model: str = "tiny-llama", layers: int = 2) -> Model:
    """:func:`make_model` of a tiny model, loaded once per process."""
    return make_model(backend, model, tiny_layers=layers)


def make_context(model: Model, folder: Path, datasets: Mapping[str, Sequence[Example]] | None = None,
                 seed: int = 0, arm: str = "test", host: PluginHost | None = None) -> RunContext:
    """The :class:`RunContext` a run would hand a plugin, for calling its ``locate``, ``interventions`` or
    ``score`` directly: ``datasets`` maps the names a config's ``DatasetRef`` uses to examples; the run and cache
    folders are made inside ``folder``; progress bars are off."""
    examples = {name: list(rows) for name, rows in (datasets or {}).items()}
    for sub in ("run", "cache"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return RunContext(model=model, seed=seed, run_dir=folder / "run", cache_dir=folder / "cache",
                      progress=Progress(enabled=False), arm=arm, plugins=host or plugin_host(),
                      datasets={name: functools.partial(list, rows) for name, rows in examples.items()})


def tiny_recipe(folder: Path, body: str, name: str = "recipe.toml") -> Path:
    """A recipe file on tiny-llama (CPU) whose runs and cache stay in ``folder``; ``body`` adds the rest."""
    path = folder / name
    path.write_text(f'[run]\nout = "{folder / "runs"}"\ncache = "{folder / "cache"}"\n'
                    f'[model]\nname = "tiny-llama"\ndevice = "cpu"\n{body}')
    return path


def run_tiny_recipe(folder: Path, recipe: str | Path, overrides: Mapping | None = None, **options):
    """Run a recipe on tiny-llama (CPU) with its runs and cache in ``folder``; returns the ``RunResults``.
    ``recipe`` is a recipe file's path (its model is replaced by tiny-llama) or the TOML text of its sections
    other than ``[run]`` and ``[model]``; ``overrides`` and ``options`` are those of :func:`loctest.run`."""
    from .runner import run_recipe

    if isinstance(recipe, str):
        recipe = tiny_recipe(folder, recipe)
    tiny = {"model.name": "tiny-llama", "model.device": "cpu", "run.out": str(folder / "runs"),
            "run.cache": str(folder / "cache")}
    return run_recipe(recipe, {**tiny, **(overrides or {})}, **{"progress": False, **options})


# -- registering a plugin for one test -----------------------------------------------------------------------

_held = types.SimpleNamespace()  # the plugins registered now, by attribute; entry points load them from here
_serial = itertools.count()


def plugin_object(plugin) -> tuple[object, str]:
    """A pluggy plugin for ``plugin`` and its name: a module or object with ``@hookimpl`` functions as it is, a
    plugin class (Locator, Editor, Scorer, Dataset, Backend, Judge) wrapped in its registration hook, a ``.py``
    file loaded as a drop-in plugin file is."""
    if isinstance(plugin, (str, Path)):
        path = Path(plugin)
        if path.suffix != ".py" or not path.is_file():
            raise UserError(f"plugin file {str(path)!r} is not a .py file")
        return plugin_manager._load_file(path), path.stem
    if inspect.isclass(plugin):
        kind = next((k for k, base in KINDS.items() if issubclass(plugin, base)), None)
        if kind is None:
            raise UserError(f"{plugin.__name__} is not a plugin class (valid bases: "
                            f"{', '.join(base.__name__ for base in KINDS.values())})")
        register_hook = hookimpl(lambda register: register(plugin))
        register_hook.__name__ = f"register_{kind}s"
        return types.SimpleNamespace(**{register_hook.__name__: register_hook}), plugin.name or plugin.__name__
    name = getattr(plugin, "__name__", type(plugin).__name__)
    return plugin, name.rpartition(".")[2].removeprefix("loctest_dropin_")


@contextmanager
def registered(plugin, name: str | None = None) -> Iterator[PluginHost]:
    """Make ``plugin`` (a plugin module, a plugin class, an object with ``@hookimpl`` functions, or the path of a
    plugin file) part of every plugin host created inside the ``with`` block (``loctest.run``, the CLI,
    ``create_host``), as an installed entry point named ``name`` would be, also with autoload disabled. Yields
    a host with the built-ins and it (errors in it raise at once). Always unregistered at the end."""
    obj, default_name = plugin_object(plugin)
    attribute = f"plugin_{next(_serial)}"
    entry = EntryPoint(name or default_name, f"{__name__}:_held.{attribute}", hookspecs.PROJECT_NAME)
    setattr(_held, attribute, obj)
    plugin_manager.DEFAULT_PLUGINS = (*plugin_manager.DEFAULT_PLUGINS, entry)
    try:
        yield create_host(autoload=False, strict=True)
    finally:
        plugin_manager.DEFAULT_PLUGINS = tuple(e for e in plugin_manager.DEFAULT_PLUGINS if e is not entry)
        delattr(_held, attribute)
        if isinstance(plugin, (str, Path)):
            sys.modules.pop(obj.__name__, None)


# -- fixtures ------------------------------------------------------------------------------------------------

@pytest.fixture(params=BACKENDS)
def backend_name(request) -> str:
    """Each backend in turn: a test using it (or ``tiny_model``) runs once per backend."""
    return request.param


@pytest.fixture
def tiny_model(backend_name) -> Model:
    """A random 2-layer tiny-llama on CPU through ``backend_name``'s backend, loaded once per process."""
    return cached_model(backend_name)


@pytest.fixture
def tiny_run(tmp_path) -> Callable:
    """``tiny_run(recipe, **options) -> RunResults``: :func:`run_tiny_recipe` in the test's ``tmp_path``."""
    return functools.partial(run_tiny_recipe, tmp_path)


@pytest.fixture
def register_plugin() -> Iterator[Callable[..., PluginHost]]:
    """``register_plugin(plugin, name=None) -> PluginHost``: :func:`registered` until the test ends."""
    with ExitStack() as stack:
        yield lambda plugin, name=None: stack.enter_context(registered(plugin, name))
