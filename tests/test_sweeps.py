"""Sweeps of k: component scores and "the top k", validation, matched nested draws, the area and its rank p,
results.json, the report's figure, resuming from the cache, and the docs' sweep recipe."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from loctest import ComponentSet, ModelShape, Scores
from loctest.errors import RecipeError, UserError
from loctest.recipe import ArmSpec, Sweep
from loctest.runner import prepare, run_recipe
from loctest.stats import rank_min_p
from loctest.sweeps import nested_draws, point_name, sweep_arms, sweep_summary, trapezoid_area
from loctest_plugins.locators.ig_truth_neurons import t_score

from conftest import ROOT, logging_scorer, tiny_recipe, write_plugin

SHAPE = ModelShape(n_layers=2, n_heads=4, d_head=16, d_mlp=128, d_model=64)

EXAMPLE = ROOT / "docs" / "examples" / "example_plugin.py"  # its top-activation locator scores its neurons

LOGGED_KL = logging_scorer("loctest_plugins.scorers.kl", "KLDivergence", "KLConfig")

BODY = """
[plugins]
paths = ["logged_kl.py", "EXAMPLE"]

[datasets.test]
plugin = "truthfulqa-mc"
limit = 4

[scorers.kl]
plugin = "logged-kl"
dataset = "test"
log = "LOG"
interrupt_arm = "INTERRUPT"

[arms.baseline]

[arms.top]
locator = { plugin = "top-activation", dataset = "test", count = 12 }
editor = { plugin = "zero-ablation", positions = "all" }
sweep = { sizes = [2, 4, 8], draws = 4, alternative = "greater" }
"""


def sweep_recipe(tmp_path, interrupt: str = ""):
    write_plugin(tmp_path, "logged_kl", LOGGED_KL)
    return tiny_recipe(tmp_path, BODY.replace("LOG", str(tmp_path / "calls.log")).replace("INTERRUPT", interrupt)
                       .replace("EXAMPLE", str(EXAMPLE)))


# -- component scores --------------------------------------------------------------------------------------


def test_top_k_ranks_by_score_with_ties_in_order():
    found = ComponentSet(["mlp:0:1", "mlp:0:2", "head:1:0", "mlp:1:5"], {"mlp:0:1": 0.5, "mlp:0:2": 0.9,
                                                                           "head:1:0": 0.5, "mlp:1:5": 0.1})
    assert found.top(1).names() == ["mlp:0:2"]
    assert found.top(3).names() == ["mlp:0:2", "mlp:0:1", "head:1:0"]  # the tie keeps the set's order
    assert found.top(3).scores == {"mlp:0:2": 0.9, "mlp:0:1": 0.5, "head:1:0": 0.5}
    again = ComponentSet.from_json(json.loads(json.dumps(found.to_json())))
    assert again.names() == found.names() and again.scores == found.scores
    with pytest.raises(UserError, match="top 5: the set has 4 components"):
        found.top(5)
    with pytest.raises(UserError, match="no scores, so 'the top k' is undefined"):
        ComponentSet(["mlp:0:1"]).top(1)


def test_scores_cover_exactly_the_members_and_are_finite():
    with pytest.raises(UserError, match="component mlp:0:2 has no score"):
        ComponentSet(["mlp:0:1", "mlp:0:2"], {"mlp:0:1": 1.0})
    with pytest.raises(UserError, match="scores of components not in the set: head:0:0"):
        ComponentSet(["mlp:0:1"], {"mlp:0:1": 1.0, "head:0:0": 2.0})
    with pytest.raises(UserError, match="score nan is not a finite number"):
        ComponentSet(["mlp:0:1"], {"mlp:0:1": float("nan")})


def test_truth_neuron_scores_rank_like_the_tests():
    """The t statistic, finite: an undefined t (D constant 0) scores 0, an infinite one the largest float."""
    assert t_score(2.5) == 2.5 and t_score(float("nan")) == 0.0
    assert t_score(float("inf")) == np.finfo(float).max and t_score(float("-inf")) == -np.finfo(float).max


# -- validation --------------------------------------------------------------------------------------------

VALID = """
[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 4

[scorers.tqa]
plugin = "binary-choice"
dataset = "tqa"

[arms.probe]
locator = { plugin = "probe-heads", dataset = "tqa", top_k = 8 }
editor = "zero-ablation"
sweep = { sizes = [1, 2, 4], draws = 3 }
"""


def problems(tmp_path, body: str) -> list[str]:
    path = tiny_recipe(tmp_path, body)
    with pytest.raises(RecipeError) as err:
        prepare(path)
    return [line.removeprefix(f"{path}: ") for line in err.value.problems]


def test_a_valid_sweep(tmp_path):
    recipe, _ = prepare(tiny_recipe(tmp_path, VALID))
    assert recipe.arms["probe"].sweep == Sweep(sizes=[1, 2, 4], draws=3, alternative="two-sided")


@pytest.mark.parametrize("sweep, expected", [
    ("{ sizes = [4, 2], draws = 3 }", ["arms.probe.sweep.sizes: sizes must be distinct and increasing; did you mean [2, 4]? (got [4, 2])"]),
    ("{ sizes = [0, 2], draws = 3 }", ["arms.probe.sweep.sizes: sizes must be at least 1, got 0 (got [0, 2])"]),
    ("{ sizes = [2], draws = 3 }", ["arms.probe.sweep.sizes: List should have at least 2 items after validation, not 1 (got [2])"]),
    ("{ sizes = [1, 2], draw = 3 }", ["arms.probe.sweep.draws: required key is missing",
                                       "arms.probe.sweep.draw: unknown key; did you mean 'draws'? valid: alternative, draws, sizes"]),
    ("{ sizes = [1, 2], draws = 0 }", ["arms.probe.sweep.draws: Input should be greater than or equal to 1 (got 0)"]),
    ("{ sizes = [1, 2], draws = 3, alternative = 'bigger' }",
     ["arms.probe.sweep.alternative: Input should be 'greater', 'less' or 'two-sided' (got 'bigger')"]),
    ("[1, 2, 4]", ["arms.probe.sweep: expected a table, got list [1, 2, 4]"]),
])
def test_bad_sweep_settings(tmp_path, sweep, expected):
    assert problems(tmp_path, VALID.replace("{ sizes = [1, 2, 4], draws = 3 }", sweep)) == expected


def test_a_sweep_needs_a_scoring_locator_and_an_editor(tmp_path):
    random = VALID.replace('{ plugin = "probe-heads", dataset = "tqa", top_k = 8 }', '{ plugin = "random", count = 8 }')
    found = problems(tmp_path, random)
    assert len(found) == 1 and found[0].startswith(
        "arms.probe.sweep: locator 'random' gives no component scores, so its top k is undefined; locators that score: ")
    assert "ig-truth-neurons" in found[0] and "probe-heads" in found[0]
    assert problems(tmp_path, VALID.replace('editor = "zero-ablation"\n', "")) == [
        "arms.probe.sweep: a sweep edits each top-k set: add an 'editor'"]
    fixed = VALID.replace('locator = { plugin = "probe-heads", dataset = "tqa", top_k = 8 }', 'components = ["head:0:1"]')
    assert problems(tmp_path, fixed) == [
        "arms.probe.sweep: a sweep ranks located components by their scores: add a 'locator' that scores them"]
    assert problems(tmp_path, VALID.replace("sweep =", "swep =")) == [
        "arms.probe.swep: unknown key; did you mean 'sweep'? valid: components, draws, editor, locator, sweep"]


# -- draws, area, rank p -----------------------------------------------------------------------------------


def test_draws_are_matched_per_layer_and_kind_and_nested():
    located = ComponentSet(["mlp:1:3", "attn:0:2:5", "mlp:1:9", "head:1:2", "mlp:0:7", "mlp:1:0"],
                           {"mlp:1:3": 6, "attn:0:2:5": 5, "mlp:1:9": 4, "head:1:2": 3, "mlp:0:7": 2, "mlp:1:0": 1})
    tops = [located.top(k) for k in (1, 3, 6)]
    draws = nested_draws(tops, SHAPE, np.random.default_rng(0))
    for top, drawn in zip(tops, draws):
        assert drawn.counts_by_layer() == top.counts_by_layer()
        SHAPE.checked(drawn)
    assert all(set(small) <= set(large) for small, large in zip(draws, draws[1:]))
    assert nested_draws(tops, SHAPE, np.random.default_rng(0))[-1].names() == draws[-1].names()
    assert nested_draws(tops, SHAPE, np.random.default_rng(1))[-1] != draws[-1]


def test_generated_arms_edit_the_top_k_and_the_draws_alike():
    arm = ArmSpec("probe", editor="EDITOR", sweep=Sweep(sizes=[1, 2], draws=2))
    located = ComponentSet(["head:0:1", "head:1:2", "head:1:3"], {"head:0:1": 0.6, "head:1:2": 0.9, "head:1:3": 0.7})
    arms = sweep_arms(arm, located, SHAPE, lambda draw: np.random.default_rng(draw))
    assert list(arms) == ["probe@k1", "probe@k2", "probe@k1~random0", "probe@k2~random0", "probe@k1~random1", "probe@k2~random1"]
    assert arms["probe@k2"].components == ["head:1:2", "head:1:3"]
    assert arms["probe@k2~random1"].sweep_point == {"of": "probe", "k": 2, "draw": 1}
    assert all(a.editor == "EDITOR" and a.locator is None for a in arms.values())
    with pytest.raises(UserError, match="size 4 exceeds the 3 components the locator found"):
        sweep_arms(ArmSpec("probe", sweep=Sweep(sizes=[2, 4], draws=1)), located, SHAPE, np.random.default_rng)
    with pytest.raises(UserError, match="without scores"):
        sweep_arms(arm, ComponentSet(located), SHAPE, np.random.default_rng)


def test_area_over_log_k_and_its_rank_among_the_draws():
    assert trapezoid_area([1, 2, 8], np.array([1.0, 3.0, 0.0])) == pytest.approx(2.0 + 1.5 * 2)
    sweep = Sweep(sizes=[1, 2, 4], draws=3, alternative="greater")
    curves = {None: [0.9, 0.8, 0.5], 0: [1.0, 1.0, 0.9], 1: [1.0, 0.9, 0.9], 2: [0.9, 1.0, 1.0]}
    scores = {point_name("a", k, draw): {"s": Scores({"m": [v, v]})} for draw, c in curves.items() for k, v in zip(sweep.sizes, c)}
    result = sweep_summary("a", sweep, scores)["metrics"]["s.m"]
    mean = np.mean([curves[d] for d in range(3)], axis=0)
    assert result["random_mean"] == pytest.approx(mean)
    assert result["area"] == pytest.approx(trapezoid_area(sweep.sizes, np.array(curves[None]) - mean))
    assert sum(result["draw_areas"]) == pytest.approx(0)
    assert result["p"] == 1.0  # the located curve lies below every draw: "greater" finds nothing
    less = sweep_summary("a", sweep.model_copy(update={"alternative": "less"}), scores)["metrics"]["s.m"]
    assert less["p"] == less["min_p"] == rank_min_p(3) == 0.25


# -- a run: results.json, report, figure, cache ------------------------------------------------------------


def test_a_sweep_run_beats_random_and_resumes_from_the_cache(tmp_path):
    path = sweep_recipe(tmp_path, interrupt="top@k4~random1")
    with pytest.raises(KeyboardInterrupt):
        run_recipe(path, backend="nnsight", progress=False)
    before = (tmp_path / "calls.log").read_text().split()
    assert before[-1] == "top@k2~random1"
    results = run_recipe(path, backend="nnsight", progress=False)
    after = (tmp_path / "calls.log").read_text().split()[len(before):]
    assert after[0] == "top@k4~random1" and not set(after) & set(before)  # finished arms came from the cache

    sweep = results.data["sweeps"]["top"]
    assert sweep["sizes"] == [2, 4, 8] and sweep["draws"] == 4 and sweep["x"] == "log2 k"
    assert sweep["arms"]["random"][1] == [f"top@k4~random{i}" for i in range(4)]
    kl = sweep["metrics"]["kl.kl"]
    assert len(kl["located"]) == 3 and [len(r) for r in kl["random"]] == [4] * 3
    assert kl["located"][1] == results.data["arms"]["top@k4"]["scores"]["kl"]["kl"]["mean"]
    assert kl["random"][1][2] == results.data["arms"]["top@k4~random2"]["scores"]["kl"]["kl"]["mean"]
    assert all(np.greater(kl["located"], kl["random_mean"]))  # the most active neurons matter most
    assert kl["area"] > 0 and kl["p"] == kl["min_p"] == rank_min_p(4) == 0.2
    assert results.data["arms"]["top@k8~random3"]["sweep"] == {"of": "top", "k": 8, "draw": 3}
    assert results.data["arms"]["top@k8~random3"]["counts_by_layer"] == results.data["arms"]["top@k8"]["counts_by_layer"]
    assert set(results.components["top@k8"]) == set(results.components["top"].top(8))

    assert (results.run_dir / "figures" / "sweep_top_kl.kl.png").stat().st_size > 0
    report = (results.run_dir / "report.md").read_text()
    assert "## Sweeps" in report and "![figures/sweep_top_kl.kl.png](figures/sweep_top_kl.kl.png)" in report
    assert re.search(r"\| kl\.kl \| [^|]+ \| [^|]+ \| \+[0-9.e-]+ \| 0\.2000 \(rank, greater; smallest possible with 4 draws: 0\.2\) \|", report)
    assert "top@k2" not in report.split("## Sweeps")[0]  # generated arms are summarised, not listed
    saved = json.loads((results.run_dir / "components" / "top.json").read_text())
    assert [c["score"] for c in saved] == sorted((c["score"] for c in saved), reverse=True)

    again = run_recipe(path, backend="nnsight", progress=False)  # everything from the cache: no scoring at all
    assert len((tmp_path / "calls.log").read_text().split()) == len(before) + len(after)
    assert again.data["sweeps"] == results.data["sweeps"]


def test_the_docs_sweep_recipe_runs(tmp_path):
    """docs/recipes.md's sweep recipe, shrunk to tiny-llama."""
    section = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8").split("## Sweeps", 1)[1]
    recipe = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "sweep.toml"
    path.write_text(recipe)
    overrides = {"model.name": "tiny-llama", "model.device": "cpu", "run.backend": "nnsight", "run.out": str(tmp_path / "runs"),
                 "run.cache": str(tmp_path / "cache"), "datasets.train.limit": 6, "datasets.test.limit": 3,
                 "arms.probe.locator.top_k": 4, "arms.probe.sweep.sizes": [1, 4], "arms.probe.sweep.draws": 1}
    results = run_recipe(path, overrides, progress=False)
    accuracy = json.loads((results.run_dir / "probe_heads" / "probe.json").read_text())["validation_accuracy"]
    probe = results.components["probe"]  # probe heads are scored by their held-out accuracy, best first
    assert probe.scores == pytest.approx({h: accuracy[h] for h in probe.names()}, abs=1e-6)
    assert probe.top(4).names() == probe.names() and results.components["probe@k1"].names() == probe.names()[:1]
    sweep = results.data["sweeps"]["probe"]
    assert set(sweep["metrics"]) == {"mc.mc1", "mc.mc2"} and sweep["metrics"]["mc.mc2"]["min_p"] == rank_min_p(1, "less")
    assert list(results.data["arms"]) == ["baseline", "probe", "probe@k1", "probe@k4", "probe@k1~random0", "probe@k4~random0"]
