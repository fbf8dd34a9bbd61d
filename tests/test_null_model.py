"""The null-model control: ``[model] init = "random"`` re-draws every weight of the named architecture (seeded),
any recipe runs unchanged, and results and report say so first."""
from __future__ import annotations

import json

import pytest
import torch

from loctest.models import ModelConfig, load_model
from loctest.runner import prepare, run_recipe

from conftest import ROOT, tiny_recipe


def _weights(config: ModelConfig) -> dict[str, torch.Tensor]:
    return dict(load_model(config).instantiate().state_dict())


def test_random_init_redraws_every_weight_of_the_same_architecture_seeded():
    pretrained = _weights(ModelConfig(name="tiny-gpt2", device="cpu"))
    null = _weights(ModelConfig(name="tiny-gpt2", device="cpu", init="random", init_seed=1))
    again = _weights(ModelConfig(name="tiny-gpt2", device="cpu", init="random", init_seed=1))
    assert null.keys() == pretrained.keys()
    assert all(null[k].shape == pretrained[k].shape for k in null)
    drawn = [k for k in null if null[k].std() > 0]  # biases and norms start constant
    assert drawn and all(not torch.equal(null[k], pretrained[k]) for k in drawn)
    assert all(torch.equal(null[k], again[k]) for k in null)


def test_a_recipe_runs_unchanged_on_the_null_model_and_says_so_first(tmp_path):
    recipe = tiny_recipe(tmp_path, """init = "random"
init_seed = 3

[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 6

[scorers.tqa]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 2

[arms.baseline]

[arms.rand]
locator = { plugin = "random", kind = "resid", count = 1 }
editor = { plugin = "zero-ablation" }
""")
    results = run_recipe(recipe, progress=False)
    model = results.data["model"]
    assert model["init"] == "random" and model["caveat"].startswith("NULL MODEL")
    assert "init_seed = 3" in model["caveat"]
    report = (results.run_dir / "report.md").read_text()
    assert "NULL MODEL" in "\n".join(report.splitlines()[:8])
    assert json.loads((results.run_dir / "components" / "rand.json").read_text())[0]["name"].startswith("resid:")


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda path: path.stem)
def test_every_shipped_recipe_takes_the_null_model_unchanged(recipe):
    prepared, _ = prepare(recipe, {"model.init": "random", "model.init_seed": 5})
    assert (prepared.model.init, prepared.model.init_seed) == ("random", 5)
