"""The report opens with a verdict: one sentence per comparison (arms in words, effect with its uncertainty, p with
its test and floor, chance level, the scorer's notes), warnings for designs that cannot support the claim, and the
located-vs-random-draws table; the CLI prints the same. The small-model caveat follows the run's datasets."""
from __future__ import annotations

import io
import numpy as np
import pytest
from rich.console import Console
from scipy import stats

import loctest
from loctest import models
from loctest.cli import main
from loctest.models import ModelConfig, model_caveat
from loctest.report import located_vs_draws_lines, located_vs_draws_rows, located_vs_draws_table
from loctest.verdict import sentence, unreachable_alpha_warnings, verdict_lines, warnings_of, welch_interval

from conftest import tiny_recipe, write_plugin

RESAMPLED = '''
from loctest import hookimpl
from loctest_plugins.scorers.binary_choice import BinaryChoice


class ResampledChoice(BinaryChoice):
    name = "resampled-choice"
    description = "binary-choice whose repetitions it declares not independent."
    independent_repetitions = False


@hookimpl
def register_scorers(register):
    register(ResampledChoice)
'''

RECIPE = """
[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 6

[scorers.acc]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 4

[scorers.boot]
plugin = "resampled-choice"
dataset = "tqa"
repetitions = 4

[arms.base]

[arms.fixed]
components = ["mlp:0:1", "mlp:0:7", "mlp:1:2", "mlp:1:3", "attn:0:1:2"]
editor = "zero-ablation"
""" + "".join(f"""
[arms.r{d}]
locator = {{ plugin = "random", match = "fixed", draw = {d} }}
editor = "zero-ablation"
""" for d in range(3)) + """
[[comparisons]]
baseline = "base"
treatment = "r0"
metric = "acc.correct_prob"

[[comparisons]]
baseline = "fixed"
treatment = "r0"
treatment_draws = ["r1", "r2"]
metric = "acc.correct_prob"
alternative = "two-sided"

[[comparisons]]
baseline = "base"
treatment = "fixed"
metric = "boot.accuracy"
alternative = "less"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verdict")
    write_plugin(folder / "plugins", "resampled", RESAMPLED)
    return loctest.run(tiny_recipe(folder, RECIPE), plugins_dirs=[folder / "plugins"], progress=False)


def verdict_of(report: str) -> list[str]:
    """The Verdict section's lines (up to the next heading)."""
    lines = report.splitlines()
    start = lines.index("## Verdict")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    return lines[start + 1:end]


def test_the_verdict_opens_the_report_with_a_sentence_per_comparison(run):
    report = (run.run_dir / "report.md").read_text()
    assert report.index("## Verdict") < report.index("## Scores")
    assert all(not line.startswith("## ") for line in report.splitlines()[1:report.splitlines().index("## Verdict")])
    sentences = [line[2:] for line in verdict_of(report) if line.startswith("- ") and "**Warning:**" not in line]
    assert sentences == [sentence(run.data, c) for c in run.comparisons]

    single, draws, boot = sentences
    c = run.comparisons[0]
    base, r0 = (np.mean(run.values(arm, "acc.correct_prob")) for arm in ("base", "r0"))
    assert single.startswith("Evidence that" if c["p"] < 0.05 else "No evidence that")
    assert "r0 (locator random, editor zero-ablation, 5 components) lowers acc.correct_prob relative to base (unedited)" in single
    assert f"{base:.3g} → {r0:.3g}" in single and f"p = {c['p']:.3g} (Welch's t-test across 4 repetitions, one-sided" in single
    assert "smallest possible p 0" in single and "chance" not in single  # correct_prob has no chance level
    notes = {run.data["arms"][arm]["scores"]["acc"]["note"] for arm in ("base", "r0")}
    assert single.endswith(f"; acc: {notes.pop()} (both arms).") if len(notes) == 1 else \
        single.endswith(f"; acc: base {run.data['arms']['base']['scores']['acc']['note']}, r0 "
                        f"{run.data['arms']['r0']['scores']['acc']['note']}.")

    rank = run.comparisons[1]
    means = [np.mean(run.values(arm, "acc.correct_prob")) for arm in ("r0", "r1", "r2")]
    assert "fixed (components listed in the recipe, editor zero-ablation, 5 components) scores differently from 3 random " \
           "draws like r0 (locator random, editor zero-ablation, 5 components) on acc.correct_prob" in draws
    assert f"against the draws' {np.mean(means):.3g} (range {min(means):.3g} to {max(means):.3g} over 3 draws)" in draws
    assert f"p = {rank['p']:.3g} (rank among 3 draws, two-sided, smallest possible p 0.5)" in draws

    assert "fixed (components listed in the recipe, editor zero-ablation, 5 components) raises boot.accuracy relative " \
           "to base (unedited)" in boot and "chance 0.5" in boot


def test_design_warnings_name_exactly_the_comparisons_that_cannot_support_their_claim(run):
    warnings = warnings_of(run.data)
    single = [w for w in warnings if "rests on one random draw" in w]
    assert len(single) == 1 and single[0].startswith("base vs r0, acc.correct_prob:") and "65 %" in single[0]
    dependent = [w for w in warnings if "not independent" in w]
    assert len(dependent) == 1 and dependent[0].startswith("base vs fixed, boot.accuracy: scorer 'boot'")
    floor = [w for w in warnings if "cannot reach p ≤ 0.05" in w]
    assert len(floor) == 1 and floor[0].startswith("fixed vs r0, acc.correct_prob:") and "39 draws can reach it" in floor[0]
    assert len(warnings) == 3
    report = (run.run_dir / "report.md").read_text()
    assert all(f"- **Warning:** {w}" in verdict_of(report) for w in warnings)
    assert run.data["scorer_metrics"]["boot"]["independent_repetitions"] is False
    acc = run.data["scorer_metrics"]["acc"]
    assert (acc["chance"], acc["independent_repetitions"]) == ({"accuracy": 0.5}, True)


def test_the_located_arm_against_its_draws_in_the_report_and_the_terminal(run):
    (row,) = located_vs_draws_rows(run.data)
    base = np.mean(run.values("base", "acc.correct_prob"))
    effects = [np.mean(run.values(arm, "acc.correct_prob")) - base for arm in ("r0", "r1", "r2")]
    assert (row["locator"], row["editor"], row["arm"], row["draws"]) == ("listed components", "zero-ablation", "fixed", 3)
    assert row["effect"] == pytest.approx(np.mean(run.values("fixed", "acc.correct_prob")) - base, abs=1e-12)
    assert (row["random_min"], row["random_mean"], row["random_max"]) == pytest.approx(
        (min(effects), np.mean(effects), max(effects)), abs=1e-12)
    report = (run.run_dir / "report.md").read_text()
    assert "## Located vs matched random draws" in report and "| effect vs base |" in report
    assert (f"| listed components × zero-ablation | fixed | acc.correct_prob | {row['effect']:+.3g} | "
            f"{min(effects):+.3g} – {max(effects):+.3g} (3 draws) | {np.mean(effects):+.3g} | "
            f"{run.comparisons[1]['p']:.3g} (smallest 0.5; two-sided) |") in report
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(located_vs_draws_table(run.data))
    terminal = console.export_text()
    assert "listed components × zero-ablation" in terminal and f"{row['effect']:+.3g}" in terminal


def comparison(baseline: str, mean: float, metric: str, draw_means: list[float], p: float) -> dict:
    return {"baseline": baseline, "treatment": "rand~draw0", "metric": metric, "alternative": "greater", "unit": "arm",
            "baseline_mean": mean, "treatment_mean": draw_means[0], "draw_means": draw_means, "draws": len(draw_means),
            "p": p, "min_p": 1 / (len(draw_means) + 1), "test": "rank among draws"}


def arm(locator: str | None, editor: str | None, mean: float, n_components: int = 4) -> dict:
    return {"locator": {"plugin": locator} if locator else None, "editor": {"plugin": editor} if editor else None,
            "n_components": n_components, "counts_by_layer": {}, "scores": {"s": {"m": {"mean": mean, "std": 0.1, "n": 5}}}}


def test_two_locators_by_four_editors_make_an_eight_row_table():
    editors = ["zero-ablation", "mean-ablation", "iti-shift", "ipo-lora"]
    arms = {"none": arm(None, None, 0.5), "rand~draw0": arm("random", "zero-ablation", 0.4)}
    comparisons = []
    for locator in ("ig-truth-neurons", "probe-heads"):
        for i, editor in enumerate(editors):
            arms[f"{locator}-{editor}"] = arm(locator, editor, 0.6 + i / 100)
            comparisons.append(comparison(f"{locator}-{editor}", 0.6 + i / 100, "s.m", [0.45, 0.55, 0.5 + i / 10], 0.25))
    data = {"arms": arms, "comparisons": comparisons}
    rows = located_vs_draws_rows(data)
    assert [(r["locator"], r["editor"]) for r in rows] == [(l, e) for l in ("ig-truth-neurons", "probe-heads") for e in editors]
    assert rows[2]["effect"] == pytest.approx(0.12) and rows[2]["random_max"] == pytest.approx(0.2)
    assert rows[2]["random_min"] == pytest.approx(-0.05) and rows[2]["random_mean"] == pytest.approx((-0.05 + 0.05 + 0.2) / 3)
    assert len([line for line in located_vs_draws_lines(data) if line.startswith("| ig-") or line.startswith("| probe-")]) == 8

    del data["arms"]["none"]  # no unedited arm: raw means, no effect
    rows = located_vs_draws_rows(data)
    assert rows[2]["effect"] == pytest.approx(0.62) and rows[2]["random_max"] == pytest.approx(0.7)
    assert "| mean | random: min – max | random mean | rank p |" in "\n".join(located_vs_draws_lines(data))


def test_welch_interval_is_scipys_confidence_interval():
    a, b = [0.41, 0.45, 0.5, 0.38, 0.44], [0.52, 0.47, 0.6, 0.55]
    result = stats.ttest_ind(b, a, equal_var=False)
    summary = [{"mean": np.mean(v), "std": np.std(v, ddof=1), "n": len(v)} for v in (a, b)]
    low, high = welch_interval(*summary, result.df)
    expected = result.confidence_interval(0.95)
    assert (low, high) == pytest.approx((expected.low, expected.high), rel=1e-9)


def welch_data(chance: float | None, caveat: str | None, notes=("chose A in 78% of prompts", "chose A in 93% of prompts")):
    values = {"base": [0.44, 0.47, 0.42], "edit": [0.49, 0.5, 0.46]}
    test = stats.ttest_ind(values["base"], values["edit"], equal_var=False, alternative="greater")
    arms = {name: {"locator": {"plugin": "random", "draw": 0} if name == "edit" else None,
                   "editor": {"plugin": "zero-ablation"} if name == "edit" else None, "n_components": 1000,
                   "scores": {"tqa": {"accuracy": {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "n": 3},
                                      "note": note}}}
            for (name, v), note in zip(values.items(), notes)}
    c = {"baseline": "base", "treatment": "edit", "metric": "tqa.accuracy", "alternative": "greater", "unit": "repetition",
         "baseline_mean": float(np.mean(values["base"])), "treatment_mean": float(np.mean(values["edit"])),
         "p": float(test.pvalue), "df": float(test.df), "min_p": 0.0, "test": "welch"}
    return {"arms": arms, "comparisons": [c], "model": {"caveat": caveat, "init": "pretrained"},
            "scorer_metrics": {"tqa": {"chance": {} if chance is None else {"accuracy": chance}}}}


def test_chance_the_caveat_and_the_scorers_notes_enter_where_the_data_calls_for_them():
    near = welch_data(0.5, "Small model.")
    text = sentence(near, near["comparisons"][0])
    assert text.startswith("No evidence that edit (locator random, editor zero-ablation, 1,000 components) lowers "
                           "tqa.accuracy relative to base (unedited): 0.443 → 0.483, difference +0.04 (95% CI ")
    assert "chance 0.5, every arm within 0.1 of it: mind the model caveat above" in text
    assert "tqa: base chose A in 78% of prompts, edit chose A in 93% of prompts" in text
    data = welch_data(0.25, None)
    far = sentence(data, data["comparisons"][0])
    assert "chance 0.25;" in far and "within" not in far and "caveat" not in far
    same = welch_data(None, None, notes=("6 questions", "6 questions"))
    assert sentence(same, same["comparisons"][0]).endswith("; tqa: 6 questions (both arms).")
    assert "chance" not in sentence(same, same["comparisons"][0])


def test_no_comparisons_no_verdict_and_no_test_says_why():
    data = welch_data(0.5, None)
    assert verdict_lines(data | {"comparisons": []}) == []
    untested = data["comparisons"][0] | {"p": None, "min_p": None, "df": None, "note": "needs at least 2 repetitions per arm"}
    text = sentence(data, untested)
    assert text.startswith("No test of whether edit") and "; no Welch's t-test across" in text
    assert "(needs at least 2 repetitions per arm)" in text
    assert warnings_of(data | {"comparisons": [untested]}) == []


def test_the_truthfulqa_caveat_only_for_runs_with_a_truthfulqa_dataset():
    embedded = ModelConfig()
    assert model_caveat(embedded, {"truthfulqa-binary"}) == models.TRUTHFULQA_SMALL_MODEL
    assert model_caveat(embedded, {"truthfulqa-mc", "truthfulqa-binary", "mmlu"}) == models.TRUTHFULQA_SMALL_MODEL
    assert model_caveat(embedded, {"mmlu", "triviaqa-iti"}) is None
    assert model_caveat(ModelConfig(name="gpt2"), {"truthfulqa-binary"}) is None
    assert model_caveat(ModelConfig(init="random"), {"mmlu"}).startswith("NULL MODEL")


def test_the_cli_prints_the_verdict_after_the_results_table(run, capsys):
    recipe = run.run_dir.parent.parent / "recipe.toml"
    assert main(["run", str(recipe), "--no-progress", "--plugins-dir", str(run.run_dir.parent.parent / "plugins")]) == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert out.index("located vs matched random draws") < out.index("No evidence that" if "No evidence" in out else "Evidence")
    for c in run.comparisons:
        assert " ".join(sentence(run.data, c).split()) in flat
    assert flat.count("warning:") == 3 and "rests on one random draw" in flat


def test_comparisons_of_one_design_share_one_floor_warning_under_their_declared_arm_names():
    arms = {"loc": {}, "ctl~draw0": {"draw": {"of": "ctl", "draw": 0}}}
    comparison = {"baseline": "loc", "treatment": "ctl~draw0", "draws": 9, "min_p": 0.1, "alternative": "greater"}
    comparisons = [{**comparison, "metric": f"s.m{i}"} for i in range(4)]
    comparisons.append({**comparison, "metric": "s.kl", "min_p": 0.2, "alternative": "two-sided"})
    comparisons.append({**comparison, "metric": "s.fine", "draws": 19, "min_p": 0.05})
    assert unreachable_alpha_warnings({"arms": arms, "comparisons": comparisons}) == [
        "4 comparisons (loc vs ctl, s.m0; loc vs ctl, s.m1; loc vs ctl, s.m2; and 1 more) cannot reach p ≤ 0.05 "
        "(smallest possible with 9 draws: 0.1); add draws (19 draws can reach it).",
        "loc vs ctl, s.kl: this design cannot reach p ≤ 0.05 (smallest possible with 9 draws: 0.2); add draws "
        "(39 draws can reach it)."]
