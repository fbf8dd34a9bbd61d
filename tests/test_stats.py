"""Welch's t-test across repetitions: scipy.stats, an independent formula, and the no-spread cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from loctest.stats import mcnemar, paired_examples, paired_t, per_example_values, sign_test_min_p, summary, welch

BASELINE = [0.62, 0.60, 0.65, 0.61, 0.63, 0.59, 0.64]
TREATMENT = [0.55, 0.58, 0.52, 0.57, 0.56]


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_welch_equals_scipy(alternative):
    result = welch(BASELINE, TREATMENT, alternative)
    ref = stats.ttest_ind(BASELINE, TREATMENT, equal_var=False, alternative=alternative)
    assert result["test"] == "welch" and result["alternative"] == alternative
    assert result["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert result["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert result["df"] == pytest.approx(ref.df, rel=1e-12)


def test_welch_matches_the_textbook_formula():
    a, b = np.array(BASELINE), np.array(TREATMENT)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    result = welch(BASELINE, TREATMENT, "greater")
    assert result["t"] == pytest.approx(t, rel=1e-10)
    assert result["df"] == pytest.approx(df, rel=1e-10)
    assert result["p"] == pytest.approx(stats.t.sf(t, df), rel=1e-8)
    assert result["p"] < 1e-3  # the baseline is clearly higher
    assert welch(BASELINE, TREATMENT, "less")["p"] == pytest.approx(1 - result["p"], abs=1e-12)
    assert welch(BASELINE, TREATMENT, "two-sided")["p"] == pytest.approx(2 * result["p"], rel=1e-10)


@pytest.mark.parametrize("a, b, alternative, p", [
    ([0.7] * 3, [0.5] * 3, "greater", 0.0),
    ([0.7] * 3, [0.5] * 3, "less", 1.0),
    ([0.7] * 3, [0.5] * 3, "two-sided", 0.0),
    ([0.5] * 3, [0.7] * 3, "greater", 1.0),
    ([0.5] * 3, [0.5] * 4, "greater", 1.0),
    ([0.5] * 3, [0.5] * 4, "two-sided", 1.0),
    ([0.7] * 3, [0.7] * 4, "two-sided", 1.0),  # the float means differ in the last bit; the values do not
    ([0.7] * 3, [0.7] * 4, "greater", 1.0),
])
def test_no_spread_in_either_arm(a, b, alternative, p):
    result = welch(a, b, alternative)
    assert result["p"] == p and result["t"] is None
    assert result["note"] == "no spread across repetitions"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_why_no_spread_is_not_left_to_scipy():
    assert math.isnan(stats.ttest_ind([0.5] * 3, [0.5] * 4, equal_var=False).pvalue)
    assert np.std([0.7] * 3) > 0  # rounding: scipy sees a tiny spread and a meaningless, huge t
    assert abs(stats.ttest_ind([0.7] * 3, [0.5] * 3, equal_var=False).statistic) > 1e12


@pytest.mark.filterwarnings("error")
def test_no_spread_in_one_arm_still_uses_scipy_without_warnings():
    a, b = [0.7, 0.7, 0.7], [0.6, 0.65, 0.62]
    with pytest.warns(RuntimeWarning, match="Precision loss"):
        ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert welch(a, b)["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert 0 < welch(a, b)["p"] < 0.05


def test_fewer_than_two_repetitions_give_no_p_value():
    result = welch([0.5], [0.4, 0.3])
    assert result["p"] is None and result["t"] is None
    assert "at least 2 repetitions" in result["note"]


def test_summary():
    assert summary([1.0, 2.0, 4.0]) == {"mean": pytest.approx(7 / 3), "std": pytest.approx(np.std([1, 2, 4], ddof=1)),
                                        "n": 3}
    assert summary([0.25]) == {"mean": 0.25, "std": 0.0, "n": 1}


def test_rank_test_counts_draws_at_least_as_extreme():
    from loctest.stats import rank_test

    draws = [0.50, 0.52, 0.55, 0.60]
    assert rank_test(0.70, draws, "greater")["p"] == 1 / 5  # above every draw: the smallest p 4 draws allow
    assert rank_test(0.53, draws, "greater")["p"] == 3 / 5  # 0.55 and 0.60 are at least as large
    assert rank_test(0.40, draws, "less")["p"] == 1 / 5
    assert rank_test(0.40, draws, "two-sided")["p"] == 2 / 5


def test_every_test_states_the_smallest_p_its_design_can_reach():
    from loctest.stats import draws_needed, rank_test, sign_test_min_p

    assert welch([0.5, 0.6], [0.4, 0.3])["min_p"] == 0.0 and welch([0.5], [0.4, 0.3])["min_p"] is None
    assert rank_test(0.7, [0.5] * 4)["min_p"] == 1 / 5 and rank_test(0.7, [0.5] * 4, "two-sided")["min_p"] == 2 / 5
    assert rank_test(0.7, [0.5] * 19)["min_p"] == 0.05 and rank_test(0.7, [0.5] * 19, "two-sided")["min_p"] == 0.1
    assert (draws_needed(0.05), draws_needed(0.05, "two-sided"), draws_needed(0.01)) == (19, 39, 99)
    assert sign_test_min_p(0) == 1.0 and sign_test_min_p(5) == stats.binomtest(5, 5, 0.5).pvalue == 0.0625
    assert sign_test_min_p(5, "greater") == stats.binomtest(5, 5, 0.5, alternative="greater").pvalue


def test_comparison_with_treatment_draws_uses_arms_as_units(tmp_path):
    """A comparison listing control draws ranks the baseline's mean among the draws' means."""
    import loctest

    recipe = tmp_path / "draws.toml"
    recipe.write_text(f"""
[run]
cache = "{tmp_path / 'cache'}"
[model]
name = "tiny-llama"
[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 4
[scorers.acc]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 2
[arms.base]
""" + "".join(f"""
[arms.r{d}]
locator = {{ plugin = "random", kind = "mlp", count = 20, draw = {d} }}
editor = {{ plugin = "zero-ablation" }}
""" for d in range(3)) + """
[[comparisons]]
baseline = "base"
treatment = "r0"
treatment_draws = ["r1", "r2"]
metric = "acc.correct_prob"
""")
    results = loctest.run(recipe, out=tmp_path / "runs", progress=False)
    comp = results.comparisons[0]
    means = [float(np.mean(results.values(a, "acc.correct_prob"))) for a in ("r0", "r1", "r2")]
    base = float(np.mean(results.values("base", "acc.correct_prob")))
    assert comp["unit"] == "arm" and comp["treatment_arms"] == ["r0", "r1", "r2"]
    assert comp["draw_means"] == pytest.approx(means)
    assert comp["p"] == pytest.approx((1 + sum(m >= base for m in means)) / 4)
    assert comp["min_p"] == 1 / 4
    report = (results.run_dir / "report.md").read_text()
    assert f"| base | r0 + 2 more draws | acc.correct_prob |" in report and "| greater | rank |" in report
    assert f"{comp['p']:.4f} (smallest possible with 3 draws: 0.25) |" in report
    assert ("- **Warning:** base vs r0, acc.correct_prob: this design cannot reach p ≤ 0.05 (smallest possible with 3 "
            "draws: 0.25); add draws (19 draws can reach it).") in report

    from rich.console import Console

    from loctest.report import results_table

    console = Console(width=200, record=True)
    console.print(results_table(results))
    assert "rank p = " + f"{comp['p']:.4f} (smallest possible with 3 draws: 0.25)" in console.export_text()


def test_mcnemar_is_a_binomial_test_on_the_discordant_pairs():
    from loctest.stats import mcnemar

    baseline = [1, 1, 1, 1, 0, 0, 1, 0]
    treatment = [0, 0, 0, 1, 1, 0, 1, 0]  # right only under the baseline 3 times, only under the treatment once
    for alternative in ("greater", "less", "two-sided"):
        out = mcnemar(baseline, treatment, alternative)
        assert out["p"] == pytest.approx(stats.binomtest(3, 4, 0.5, alternative=alternative).pvalue, rel=1e-12)
        assert (out["baseline_only"], out["treatment_only"], out["n"]) == (3, 1, 8)
        assert out["min_p"] == sign_test_min_p(4, alternative) and out["alternative"] == alternative
    assert out["mean_difference"] == pytest.approx(-2 / 8)
    same = mcnemar(baseline, baseline)
    assert same["p"] == 1.0 and same["min_p"] == 1.0


def test_paired_t_equals_scipy_and_handles_constant_differences():
    from loctest.stats import paired_t

    for alternative in ("greater", "less", "two-sided"):
        out = paired_t(BASELINE[:5], TREATMENT, alternative)
        assert out["p"] == pytest.approx(stats.ttest_rel(BASELINE[:5], TREATMENT, alternative=alternative).pvalue, rel=1e-12)
        assert out["test"] == "paired t" and out["min_p"] == 0.0 and out["n"] == 5
    assert paired_t([1.0, 2.0, 3.0], [0.5, 1.5, 2.5], "greater")["p"] == 0.0  # always 0.5 lower: certain
    assert paired_t([1.0, 2.0, 3.0], [0.5, 1.5, 2.5], "less")["p"] == 1.0
    assert paired_t([1.0, 2.0], [1.0, 2.0])["p"] == 1.0
    assert paired_t([1.0], [0.5])["p"] is None and paired_t([1.0], [0.5])["min_p"] is None


def test_per_example_values_come_from_the_details_or_the_mean_over_repetitions():
    details = {"id": ["a", "b", "c"], "kl": [0.1, 0.2, 0.3], "per_repetition": {"accuracy": [[1, 0, 1], [1, 1, 0]]}}
    assert per_example_values(details, "kl").tolist() == [0.1, 0.2, 0.3]
    assert per_example_values(details, "accuracy").tolist() == [1.0, 0.5, 0.5]
    assert per_example_values(details, "mc2") is None
    assert per_example_values({**details, "kl": [0.1, 0.2]}, "kl") is None  # not one value per example
    assert per_example_values({"kl": [0.1]}, "kl") is None  # no ids: nothing to pair by


def test_paired_examples_uses_mcnemar_for_0_1_values_and_a_paired_t_otherwise():
    rng = np.random.default_rng(0)
    ids = [f"q{i}" for i in range(30)]
    right_a, right_b = rng.integers(0, 2, 30), rng.integers(0, 2, 30)
    test = paired_examples({"id": ids, "accuracy": right_a.tolist()}, {"id": ids, "accuracy": right_b.tolist()},
                           "accuracy", "greater")
    assert test == mcnemar(right_a, right_b, "greater")
    a, b = rng.normal(size=30), rng.normal(0.5, 1, size=30)
    test = paired_examples({"id": ids, "kl": a.tolist()}, {"id": ids, "kl": b.tolist()}, "kl", "less")
    assert test["test"] == "paired t" and test["p"] == pytest.approx(stats.ttest_rel(a, b, alternative="less").pvalue)
    assert test == paired_t(a, b, "less")
    shuffled = paired_examples({"id": ids, "kl": a.tolist()}, {"id": ids[::-1], "kl": b.tolist()}, "kl")
    assert shuffled["p"] is None and "different examples" in shuffled["note"]
    assert paired_examples({"id": ids}, {"id": ids}, "kl") is None


def test_a_run_pairs_each_comparison_example_by_example(tmp_path):
    import json

    import loctest
    from conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path, """
[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 12
[scorers.acc]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 1
[arms.base]
[arms.zeroed]
locator = { plugin = "random", kind = "head", count = 4 }
editor = { plugin = "zero-ablation" }
[[comparisons]]
baseline = "base"
treatment = "zeroed"
metric = "acc.accuracy"
[[comparisons]]
baseline = "base"
treatment = "zeroed"
metric = "acc.correct_prob"
alternative = "two-sided"
""")
    results = loctest.run(recipe, progress=False)
    details = {arm: json.loads((results.run_dir / "details" / f"{arm}.acc.json").read_text()) for arm in ("base", "zeroed")}
    accuracy, prob = results.comparisons
    right = [np.asarray(details[arm]["per_repetition"]["accuracy"][0]) for arm in ("base", "zeroed")]
    assert accuracy["paired"] == mcnemar(*right, "greater")
    probs = [np.asarray(details[arm]["per_repetition"]["correct_prob"][0]) for arm in ("base", "zeroed")]
    assert prob["paired"]["test"] == "paired t"
    assert prob["paired"]["p"] == pytest.approx(stats.ttest_rel(*probs).pvalue)
    report = (results.run_dir / "report.md").read_text()
    assert f"| base | zeroed | acc.accuracy | exact McNemar, greater; right only under base {accuracy['paired']['baseline_only']}" in report
    assert "example by example, exact McNemar over 12 examples" in report.split("## Verdict", 1)[1]
