"""Truth-neuron selection: thresholds and t-tests against scipy on fixed data, the locator on a tiny model with a
planted mechanism, and resuming a killed run from the attribution cache."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from loctest import ComponentSet, Example, RunContext
from loctest.errors import UserError
from loctest.progress import Progress
from loctest_plugins.editors.zero_ablation import ZeroAblation
from loctest_plugins.locators import ig_truth_neurons
from loctest_plugins.locators.ig_truth_neurons import IGTruthNeurons
from loctest_plugins.locators.random import RandomLocator
from loctest_plugins.scorers.binary_choice import BinaryChoice
from loctest_plugins.truth_neurons.selection import candidates, significance, split_halves

from conftest import BACKENDS, PLANTED, planted_model

# -- selection statistics on fixed data -------------------------------------------------------------------

D = np.array([
    [1.0, 0.5, 0.09, -2.0],
    [0.2, 2.0, 0.25, 0.0],
    [-1.0, -0.5, -0.1, -3.0],  # largest D is not positive: nothing is salient
    [0.3, 0.1, 0.05, 0.29],
])


def test_candidates_adaptive_and_share_thresholds():
    # t = 10 %: row maxima 1.0, 2.0, -, 0.3 -> cut-offs 0.1, 0.2, -, 0.03
    salient = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    columns, share = candidates(D, threshold=10, share=50)
    np.testing.assert_allclose(share, salient.mean(0))
    assert columns.tolist() == [0, 1, 2]  # shares 0.5, 0.75, 0.5, 0.25
    assert candidates(D, threshold=10, share=75)[0].tolist() == [1]
    assert candidates(D, threshold=99, share=25)[0].tolist() == [0, 1]  # only each row's own maximum (0.29 < 0.297)


def test_significance_matches_scipy_and_hand_formula():
    rng = np.random.default_rng(3)
    d = rng.normal([0.8, 0.0, -0.5, 0.0, 0.0], 1.0, size=(12, 5))
    d[:, 3] = 0.0  # no variance, zero mean: no defined test, never passes
    d[:, 4] = 0.25  # no variance, positive mean: t = inf as in scipy
    result = significance(d, alpha=0.05)
    n = d.shape[0]
    t_hand = d[:, :3].mean(0) / (d[:, :3].std(0, ddof=1) / np.sqrt(n))
    np.testing.assert_allclose(result.t[:3], t_hand[:3], rtol=1e-12)
    np.testing.assert_allclose(result.p[:3], stats.t.sf(t_hand[:3], n - 1), rtol=1e-10)
    reference = stats.ttest_1samp(d[:, :3], 0.0, alternative="greater")
    np.testing.assert_allclose(result.p[:3], reference.pvalue, rtol=1e-12)
    np.testing.assert_allclose(result.p_bonferroni, np.minimum(1, result.p * 5))
    assert result.p[3] == 1.0 and result.t[4] == np.inf and result.p[4] == 0.0
    assert result.significant.tolist() == [True, False, False, False, True]


def test_split_halves_is_seeded_and_disjoint():
    a = split_halves(11, np.random.default_rng(0))
    b = split_halves(11, np.random.default_rng(0))
    assert all((x == y).all() for x, y in zip(a, b))
    selection, testing = a
    assert len(selection) == 5 and len(testing) == 6
    assert sorted(np.concatenate(a).tolist()) == list(range(11))
    with pytest.raises(UserError, match="testing half"):
        significance(np.zeros((1, 3)), 0.05)


# -- a tiny model with a planted mechanism ----------------------------------------------------------------

PROMPTS = {"user_prompt": "{question} {answer_a}", "system_prompt": ""}  # the prompt shows answer A only


@pytest.fixture(scope="module")
def planted():
    return planted_model()


def questions(n: int) -> list[Example]:
    return [Example(f"q{i}", f"question number {i}", ("T",), ("F",)) for i in range(n)]


def context_for(backend, tmp_path, n: int, arm: str = "truth") -> RunContext:
    data = questions(n)
    return RunContext(backend, 0, tmp_path / "run", tmp_path / "cache", Progress(enabled=False),
                      datasets={"synthetic": lambda: data}, arm=arm)


def locator(**options) -> IGTruthNeurons:
    return IGTruthNeurons({"dataset": "synthetic", "adaptive_threshold": 10, **PROMPTS, **options})


def accuracy(context, components) -> float:
    scorer = BinaryChoice({"dataset": "synthetic", "repetitions": 4, **PROMPTS})
    return float(np.mean(scorer.score(context, ZeroAblation().interventions(context, components)).values["accuracy"]))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_planted_neurons_are_recovered_exactly_and_carry_the_answer(backend_name, tmp_path):
    planted = planted_model(backend_name)
    context = context_for(planted, tmp_path, 20)
    found = locator().locate(context)
    assert found == ComponentSet(PLANTED)
    results = json.loads((context.run_dir / "truth_neurons-truth.json").read_text())
    assert results["counts"]["answered_correctly"] == 20
    assert results["counts"]["selection"] == 10 and results["counts"]["testing"] == 10
    assert results["settings"]["steps"] == 20 and results["settings"]["engine"]["computed_by_layout"] == {"token-copies": 20}
    assert results["completeness"]["max_abs_delta"] < 0.01 * results["completeness"]["mean_abs_f_gap"] + 1e-3
    worst = results["completeness"]["worst_sites"]  # all four sites (2 layers x 2 kinds), worst first
    assert sorted(w["site"] for w in worst) == ["attn:0", "attn:1", "mlp:0", "mlp:1"]
    assert [w["median_abs_delta"] for w in worst] == sorted((w["median_abs_delta"] for w in worst), reverse=True)
    assert max(w["max_abs_delta"] for w in worst) == pytest.approx(results["completeness"]["max_abs_delta"])
    assert all(row["mean_d"] > 0.1 and row["p_bonferroni"] < 1e-6 for row in results["neurons"])
    assert found.scores == {row["name"]: row["t"] for row in results["neurons"]}  # each scored by its t statistic
    finished = SimpleNamespace(run_dir=context.run_dir, data={"arms": {"truth": {"locator": {"plugin": "ig-truth-neurons"}}}})
    section = ig_truth_neurons.loctest_report_sections(finished)
    assert "20 of 20 questions passed the manipulation check; 20 were used" in section and "mlp 3 / 3, attn 2 / 2" in section
    assert all(f"| `{name}` |" in section for name in PLANTED)
    candidates = locator(keep="candidates").locate(context)  # attributions from the cache
    assert candidates.top(len(found)) == found and len(candidates) == results["counts"]["candidates"]

    context.components["truth"] = found
    baseline = accuracy(context, ComponentSet())
    assert baseline == 1.0
    assert accuracy(context, found) <= 0.5  # without the planted neurons the model cannot tell T from F
    for draw in range(3):
        context.arm = f"random-{draw}"
        control = RandomLocator({"match": "truth", "draw": draw}).locate(context)
        assert len(control) == len(found) and control != found
        assert accuracy(context, control) == baseline


def test_balance_labels_uses_as_many_correct_at_a_as_at_b(planted, tmp_path):
    context = context_for(planted, tmp_path, 20)
    locator(balance_labels=True, steps=4).locate(context)
    results = json.loads((context.run_dir / "truth_neurons-truth.json").read_text())
    used = [q["correct_label"] for q in results["questions"] if q["half"]]
    placed = [q["correct_label"] for q in results["questions"]]
    assert used.count("A") == used.count("B") == min(placed.count("A"), placed.count("B")) > 0
    assert results["counts"]["used"] == len(used) < results["counts"]["answered_correctly"] == 20
    assert results["settings"]["balance_labels"] is True


def test_killed_run_resumes_from_the_cache_with_identical_results(planted, tmp_path, monkeypatch):
    computed = []
    real = ig_truth_neurons.integrated_gradients

    def counting(backend, prompt, *args, **kwargs):
        if len(computed) == 5 and kill["now"]:
            raise KeyboardInterrupt  # the run is killed after five questions
        computed.append(prompt)
        return real(backend, prompt, *args, **kwargs)

    kill = {"now": True}
    monkeypatch.setattr(ig_truth_neurons, "integrated_gradients", counting)
    context = context_for(planted, tmp_path / "resumed", 12)
    with pytest.raises(KeyboardInterrupt):
        locator(steps=8, save_attributions=True).locate(context)
    assert len(computed) == 5
    kill["now"] = False
    resumed = locator(steps=8, save_attributions=True).locate(context)
    assert len(computed) == 12 and len(set(computed)) == 12  # the five finished questions were not recomputed
    assert len(list((context.run_dir / "attributions-truth").glob("*.safetensors"))) == 12

    fresh_context = context_for(planted, tmp_path / "fresh", 12)
    fresh = locator(steps=8).locate(fresh_context)
    assert resumed == fresh
    tables = [json.loads((c.run_dir / "truth_neurons-truth.json").read_text())["neurons"] for c in (context, fresh_context)]
    assert tables[0] == tables[1]
    # other settings never reuse these attributions
    locator(steps=9).locate(context_for(planted, tmp_path / "resumed", 12))
    assert len(computed) == 12 + 12 + 12


def test_config_and_input_errors(planted, tmp_path):
    with pytest.raises(ValidationError, match="adaptive_threshold"):
        IGTruthNeurons({"dataset": "synthetic"})
    with pytest.raises(ValidationError):
        locator(kinds=["head"])
    with pytest.raises(UserError, match="layers: 7 is out of range"):
        locator(layers=[0, 7]).locate(context_for(planted, tmp_path, 4))
    with pytest.raises(UserError, match="only 2 of 2 questions"):
        locator().locate(context_for(planted, tmp_path, 2))
