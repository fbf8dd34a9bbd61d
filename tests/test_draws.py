"""``draws = N`` on an arm: N independent draws of its locator in one line, matched like a hand-written arm, used as
the control of a comparison with the rank test; and the mistakes validation refuses."""
from __future__ import annotations

import pytest

from loctest.errors import RecipeError
from loctest.runner import prepare, run_recipe
from loctest.stats import rank_min_p, rank_test

from conftest import tiny_recipe

BODY = """
[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 3

[scorers.kl]
plugin = "kl"
dataset = "tqa"
count = 3

[arms.located]
components = ["mlp:0:1", "mlp:0:2", "mlp:1:7", "head:1:0"]
editor = "zero-ablation"

[arms.control]
locator = { plugin = "random", match = "located", draw = 10 }
editor = "zero-ablation"
draws = 5

[[comparisons]]
baseline = "located"
treatment = "control"
metric = "kl.kl"
alternative = "greater"
"""


def test_draws_run_as_matched_independent_arms_and_the_comparison_ranks_among_them(tmp_path):
    results = run_recipe(tiny_recipe(tmp_path, BODY), progress=False)
    draws = [f"control~draw{i}" for i in range(5)]
    assert [arm for arm in results.data["arms"] if arm.startswith("control")] == draws
    located = results.components["located"].counts_by_layer()
    sets = {tuple(results.components[arm].names()) for arm in draws}
    assert len(sets) == 5  # independent draws, not one set five times
    for i, arm in enumerate(draws):
        assert results.components[arm].counts_by_layer() == located
        record = results.data["arms"][arm]
        assert record["draw"] == {"of": "control", "draw": i} and record["locator"]["draw"] == 10 + i
    (comparison,) = results.comparisons
    means = [results.data["arms"][arm]["scores"]["kl"]["kl"]["mean"] for arm in draws]
    assert comparison["treatment_arms"] == draws and comparison["draw_means"] == pytest.approx(means)
    expected = rank_test(results.data["arms"]["located"]["scores"]["kl"]["kl"]["mean"], means, "greater")
    assert comparison["p"] == pytest.approx(expected["p"])
    assert comparison["min_p"] == pytest.approx(rank_min_p(5, "greater"))
    heatmaps = sorted(path.name for path in (results.run_dir / "figures").glob("layers_*"))
    assert heatmaps == ["layers_control_draw0.png", "layers_located.png"]  # the draws share the located counts


@pytest.mark.parametrize(("change", "key", "expected"), [
    ("draws = 5", "draws = 1", "at least 2"),
    ("draws = 5", 'draws = "5"', "whole number"),
    ('locator = { plugin = "random", match = "located", draw = 10 }', 'locator = { plugin = "probe-heads", dataset = "tqa" }',
     "has no 'draw' setting"),
    ("draws = 5", "draws = 5\nsweep = { sizes = [1, 2], draws = 2 }", "not both"),
    ('baseline = "located"\ntreatment = "control"', 'baseline = "control"\ntreatment = "located"', "make it the treatment"),
    ('treatment = "control"', 'treatment = "control"\ntreatment_draws = ["located"]', "drop this key"),
    ("[[comparisons]]", '[arms.again]\nlocator = { plugin = "random", match = "control" }\n\n[[comparisons]]',
     "no single set of components"),
])
def test_draws_mistakes_are_refused_with_the_reason(tmp_path, change, key, expected):
    assert change in BODY
    with pytest.raises(RecipeError) as err:
        prepare(tiny_recipe(tmp_path, BODY.replace(change, key, 1)))
    assert any(expected in problem for problem in err.value.problems), err.value.problems


def test_a_config_problem_of_a_drawn_arm_is_reported_once_under_its_own_name(tmp_path):
    with pytest.raises(RecipeError) as err:
        prepare(tiny_recipe(tmp_path, BODY.replace('match = "located"', 'match = "locatd"')))
    assert [p for p in err.value.problems if "match" in p] == [
        f"{tmp_path / 'recipe.toml'}: arms.control.locator.match: no arm 'locatd' in [arms]; did you mean 'located'? valid: control, located"]
