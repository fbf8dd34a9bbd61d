"""loctest.testing, the pytest plugin for plugin authors: its entry point, fixtures, model and context helpers, the
recipe runner and plugin registration that always ends; and Model.capture's position policies."""
from __future__ import annotations

import importlib.metadata
import json
import sys
import textwrap
import types

import pytest
import torch

import loctest
from loctest import ComponentSet, Locator, PluginConfig, hookimpl
from loctest.errors import RecipeError, UserError
from loctest.plugin_manager import create_host
from loctest.testing import EXAMPLES, make_context, make_model, registered

from conftest import write_plugin

pytest_plugins = ["pytester"]


class LastNeurons(Locator):
    name = "last-neurons"
    description = "The last two neurons of MLP layer 0."

    def locate(self, context):
        return ComponentSet([f"mlp:0:{context.shape.d_mlp - 1}", f"mlp:0:{context.shape.d_mlp - 2}"])


USES_IT = """
[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 2
[scorers.tqa]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 2
[arms.base]
[arms.last]
locator = { plugin = "last-neurons" }
editor = { plugin = "zero-ablation" }
"""


def test_installed_as_a_pytest_plugin(request):
    entry = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.value == "loctest.testing"]
    assert [ep.name for ep in entry] == ["loctest.testing"]
    assert request.config.pluginmanager.get_plugin("loctest.testing") is sys.modules["loctest.testing"]


def test_tiny_model_runs_once_per_backend(tiny_model, backend_name, request):
    assert tiny_model.backend.name == backend_name
    assert (tiny_model.shape.n_layers, tiny_model.device.type) == (2, "cpu")
    assert request.node.callspec.params["backend_name"] in loctest.testing.BACKENDS


def test_make_model_builds_any_named_model_on_any_backend():
    model = make_model("nnsight", "tiny-gpt2", tiny_layers=1)
    assert (model.name, model.backend.name, model.shape.n_layers, model.device.type) == ("tiny-gpt2", "nnsight", 1, "cpu")
    assert model.next_token_logprobs(["Hi"]).shape[0] == 1
    with pytest.raises(UserError, match="did you mean 'nnsight'"):
        make_model("nnsigth")


def test_make_context_serves_datasets_rng_and_outputs(tiny_model, tmp_path):
    context = make_context(tiny_model, tmp_path, {"qa": EXAMPLES}, seed=3, arm="mine")
    assert context.dataset("qa") == list(EXAMPLES) and (context.arm, context.shape) == ("mine", tiny_model.shape)
    assert context.rng("x").integers(1 << 30) == make_context(tiny_model, tmp_path / "b", seed=3).rng("x").integers(1 << 30)
    assert context.rng("x").integers(1 << 30) != make_context(tiny_model, tmp_path / "c", seed=4).rng("x").integers(1 << 30)
    written = context.write_output("a/b.json", {"k": 1})
    assert written == tmp_path / "run" / "a" / "b.json" and json.loads(written.read_text()) == {"k": 1}
    with pytest.raises(UserError, match="no dataset 'q'"):
        context.dataset("q")


def test_registered_class_is_in_every_host_and_runs_then_is_gone(tmp_path, tiny_run):
    with registered(LastNeurons) as host:
        assert host.registry("locator").owner("last-neurons") == "last-neurons"
        assert "last-neurons" in create_host(autoload=False).registry("locator")
        results = tiny_run(USES_IT)
    assert results.components["last"].names() == ["mlp:0:127", "mlp:0:126"]
    assert "last-neurons" not in create_host().registry("locator")
    with pytest.raises(RecipeError, match="unknown locator 'last-neurons'"):
        tiny_run(USES_IT)


def test_registered_module_file_and_object_under_their_names(tmp_path):
    module = types.ModuleType("my_pkg.my_plugin")
    module.register_locators = hookimpl(lambda register: register(LastNeurons))
    with registered(module) as host:
        assert host.registry("locator").owner("last-neurons") == "my_plugin"
    path = write_plugin(tmp_path, "first_neurons")
    with registered(path, name="mine") as host:
        assert host.registry("locator").owner("first-neurons") == "mine"
        loaded = [m for m in sys.modules if m == "loctest_dropin_first_neurons"]
    assert loaded and "loctest_dropin_first_neurons" not in sys.modules
    assert "first-neurons" not in create_host(autoload=False).registry("locator")


def test_registration_ends_even_when_the_block_or_the_plugin_fails():
    with pytest.raises(ZeroDivisionError), registered(LastNeurons):
        1 / 0
    assert "last-neurons" not in create_host().registry("locator")

    class Random(LastNeurons):
        name = "random"
    with pytest.raises(UserError, match="duplicate locator name 'random'"), registered(Random):
        pass
    assert create_host(autoload=False).registry("locator").owner("random") == "builtins"


def test_registered_refuses_what_is_not_a_plugin(tmp_path):
    with pytest.raises(UserError, match="PluginConfig is not a plugin class"), registered(PluginConfig):
        pass
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(UserError, match="is not a .py file"), registered(tmp_path / "notes.txt"):
        pass


def test_register_plugin_fixture_lasts_one_test(pytester):
    pytester.makepyfile(textwrap.dedent("""
        from loctest import ComponentSet, Locator
        from loctest.plugin_manager import create_host


        class Mine(Locator):
            name = "mine"

            def locate(self, context):
                return ComponentSet()


        def test_registers(register_plugin):
            assert "mine" in register_plugin(Mine).registry("locator")
            assert "mine" in create_host().registry("locator")


        def test_then_gone():
            assert "mine" not in create_host().registry("locator")
    """))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_tiny_run_puts_a_recipe_file_on_tiny_llama(tmp_path, tiny_run):
    recipe = tmp_path / "elsewhere.toml"
    recipe.write_text('[model]\nname = "tiny-gpt2"\n' + USES_IT.replace('{ plugin = "last-neurons" }',
                                                                       '{ plugin = "random", count = 3 }'))
    results = tiny_run(recipe)
    assert results.data["model"]["name"] == "tiny-llama"
    assert results.run_dir.parent == tmp_path / "runs" and len(results.components["last"]) == 3


# -- Model.capture: last token, every prompt token, answer tokens ----------------------------------------------

PROMPTS = ["Q: sky? A:", "Q: two plus two? A:"]
ANSWERS = [" blue", " four"]
SITES = [("mlp", 1), ("resid", 0)]


def test_capture_policies_select_the_tokens_they_name(tiny_model):
    prompt_ids = tiny_model.tokenize(PROMPTS, special=not tiny_model.uses_chat_template)
    answer_ids = tiny_model.tokenize(ANSWERS, special=False)
    assert tiny_model.tokens_at(PROMPTS, "prompt") == prompt_ids
    assert tiny_model.tokens_at(PROMPTS, "last") == [ids[-1:] for ids in prompt_ids]
    assert tiny_model.tokens_at(PROMPTS, "continuation", ANSWERS) == answer_ids
    assert tiny_model.tokens_at(PROMPTS, "all", ANSWERS) == [p + a for p, a in zip(prompt_ids, answer_ids)]
    every = tiny_model.capture(PROMPTS, SITES, "all", ANSWERS)
    last = tiny_model.capture(PROMPTS, SITES, "last", ANSWERS)
    answers = tiny_model.capture(PROMPTS, SITES, "continuation", ANSWERS)
    prompts = tiny_model.capture(PROMPTS, SITES, "prompt")
    for i, (p, a) in enumerate(zip(prompt_ids, answer_ids)):
        for site in SITES:
            assert every[i][site].shape == (len(p) + len(a), tiny_model.shape.site_width(site[0]))
            torch.testing.assert_close(prompts[i][site], every[i][site][: len(p)], atol=1e-4, rtol=0)
            torch.testing.assert_close(last[i][site], every[i][site][len(p) - 1: len(p)], atol=1e-4, rtol=0)
            torch.testing.assert_close(answers[i][site], every[i][site][len(p):], atol=1e-4, rtol=0)


def test_capture_refuses_unknown_policies_and_missing_answers(tiny_model):
    with pytest.raises(UserError, match="unknown position policy 'answer'; valid"):
        tiny_model.capture(PROMPTS, SITES, "answer", ANSWERS)
    with pytest.raises(UserError, match="'continuation' needs continuations"):
        tiny_model.capture(PROMPTS, SITES, "continuation")
    with pytest.raises(UserError, match="2 prompts but 1 continuations"):
        tiny_model.tokens_at(PROMPTS, "all", ANSWERS[:1])
