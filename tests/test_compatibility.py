"""Every registered locator with every registered editor, on both backends: the pair runs on a tiny model, or
``validate`` refuses it with a one-line reason. A new plugin joins the matrix without a test of its own.

Each plugin runs with its defaults, every dataset reference pointed at the recipe's one dataset, and required
fields from ``SETTINGS`` (the cheapest settings that exercise it; a new plugin with a required field that is not
a reference needs an entry there, and the test says so).
"""
from __future__ import annotations

import json

import pytest

from loctest.errors import RecipeError
from loctest.references import Declared
from loctest.runner import prepare, run_recipe

from conftest import BACKENDS, plugin_host, tiny_recipe

DATASET = "data"
SETTINGS = {
    "ig-truth-neurons": {"adaptive_threshold": 20.0, "steps": 2},
    "probe-heads": {"top_k": 2},
    "random": {"count": 3},
    "ipo-lora": {"max_pairs": 4, "epochs": 1},
}
BODY = f"""
[datasets.{DATASET}]
plugin = "truthfulqa-binary"
limit = 24

[scorers.choice]
plugin = "binary-choice"
dataset = "{DATASET}"
repetitions = 1
"""


def settings(kind: str, name: str) -> dict:
    """The plugin's settings for the matrix: dataset references to the recipe's dataset, then ``SETTINGS``."""
    config = plugin_host().registry(kind).get(name).Config
    chosen = {field: DATASET for field, info in config.model_fields.items()
              if any(isinstance(m, Declared) and m.section == "datasets" for m in info.metadata)}
    chosen |= SETTINGS.get(name, {})
    missing = [f for f, info in config.model_fields.items() if info.is_required() and f not in chosen]
    assert not missing, f"{kind} {name!r}: required {missing}: add its cheapest settings to SETTINGS in {__file__}"
    return chosen


def inline(table: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + " }"


def pairs() -> list[tuple[str, str]]:
    host = plugin_host()
    return [(loc, ed) for loc in host.registry("locator").names() for ed in host.registry("editor").names()]


def arm(locator: str, editor: str) -> str:
    return (f"[arms.{locator}--{editor}]\nlocator = {inline({'plugin': locator, **settings('locator', locator)})}\n"
            f"editor = {inline({'plugin': editor, **settings('editor', editor)})}\n")


def accepted_pairs(tmp_path) -> list[tuple[str, str]]:
    """The pairs ``validate`` accepts; a refused pair must come with a one-line reason naming its arm."""
    accepted = []
    for locator, editor in pairs():
        recipe = tiny_recipe(tmp_path, BODY + arm(locator, editor), name=f"{locator}--{editor}.toml")
        try:
            prepare(recipe)
        except RecipeError as err:
            assert all("\n" not in p and f"arms.{locator}--{editor}" in p for p in err.problems), err.problems
            continue
        accepted.append((locator, editor))
    return accepted


def test_the_matrix_covers_every_registered_locator_and_editor():
    host = plugin_host()
    assert {"ig-truth-neurons", "probe-heads", "random", "single-head"} <= set(host.registry("locator").names())
    assert {"zero-ablation", "iti-shift", "ipo-lora"} <= set(host.registry("editor").names())
    assert len(pairs()) == len(host.registry("locator").names()) * len(host.registry("editor").names())


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_accepted_locator_editor_pair_runs_on_both_backends(backend, tmp_path):
    accepted = accepted_pairs(tmp_path)
    assert accepted, "validate refused every pair"
    recipe = tiny_recipe(tmp_path, BODY + "".join(arm(loc, ed) for loc, ed in accepted), name="matrix.toml")
    results = run_recipe(recipe, {"run.backend": backend}, progress=False)
    for locator, editor in accepted:
        data = results.data["arms"][f"{locator}--{editor}"]
        assert data["locator"]["plugin"] == locator and data["editor"]["plugin"] == editor
        assert data["scores"]["choice"]["accuracy"]["n"] == 1
        if data["n_components"]:
            assert data["interventions"], f"{locator} x {editor}: components but no intervention"
