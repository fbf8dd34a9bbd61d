"""The verdict that opens a report: one plain sentence per comparison (what was compared, the effect with its
uncertainty, p with its test and the smallest p the design allows, the chance level, the model caveat where the
data calls for it), then warnings for designs that cannot support the claim.

It reads only ``results.json``'s content, so a loaded run gets the same verdict."""
from __future__ import annotations

import math

from scipy import stats

from .stats import draws_needed

ALPHA = 0.05  # the conventional level the report warns about
NEAR_CHANCE = 0.1  # a mean this close to the chance level says the model may not do the task at all
CONFIDENCE = 0.95
CLAIM = {  # alternative -> (what the treatment's edit does to the metric, how the baseline scores against it)
    "greater": ("lowers", "higher than"),
    "less": ("raises", "lower than"),
    "two-sided": ("changes", "differently from"),
}
SINGLE_DRAW_FALSE_POSITIVES = "65 %"  # docs/recipes.md, "treatment_draws": two random sets, Welch, p < 0.05


def is_random_draw(arm: dict) -> bool:
    """Whether an arm's components are a random draw: its locator takes a ``draw`` number (as ``random`` does)."""
    return bool(arm.get("locator")) and "draw" in arm["locator"]


def arm_text(name: str, arm: dict) -> str:
    """An arm in words: its name, then its locator, editor and number of components."""
    if not arm.get("editor"):
        return f"{name} (unedited)"
    source = f"locator {arm['locator']['plugin']}" if arm.get("locator") else "components listed in the recipe"
    return f"{name} ({source}, editor {arm['editor']['plugin']}, {arm['n_components']:,} components)"


def metric_summary(data: dict, arm: str, metric: str) -> dict:
    scorer, _, name = metric.partition(".")
    return data["arms"][arm]["scores"][scorer][name]


def number(x: float) -> str:
    return f"{x:.3g}"


def signed(x: float) -> str:
    return f"{x:+.3g}" if x else "0"


def welch_interval(baseline: dict, treatment: dict, df: float) -> tuple[float, float]:
    """The CONFIDENCE interval of treatment − baseline means (Welch: the t quantile at the test's ``df``)."""
    se = math.sqrt(baseline["std"] ** 2 / baseline["n"] + treatment["std"] ** 2 / treatment["n"])
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, df) * se
    difference = treatment["mean"] - baseline["mean"]
    return difference - half, difference + half


def effect_text(data: dict, c: dict) -> str:
    """The means and their difference, with its uncertainty: a Welch confidence interval, or the draws' range."""
    if c.get("unit") == "arm":
        draws = c["draw_means"]
        mean = sum(draws) / len(draws)
        return (f"{number(c['baseline_mean'])} against the draws' {number(mean)} (range {number(min(draws))} to "
                f"{number(max(draws))} over {len(draws)} draws), difference {signed(c['baseline_mean'] - mean)}")
    base, treated = (metric_summary(data, c[arm], c["metric"]) for arm in ("baseline", "treatment"))
    text = (f"{number(c['baseline_mean'])} → {number(c['treatment_mean'])}, difference "
            f"{signed(c['treatment_mean'] - c['baseline_mean'])}")
    if c.get("df"):
        low, high = welch_interval(base, treated, c["df"])
        text += f" ({CONFIDENCE:.0%} CI {signed(low)} to {signed(high)})"
    elif base["n"] > 1 and treated["n"] > 1 and not (base["std"] or treated["std"]):
        text += " (no spread across repetitions)"
    return text


def p_value_text(data: dict, c: dict) -> str:
    """p, its test and direction, and the smallest p the design allows; or why there is no test."""
    if c.get("unit") == "arm":
        test = f"rank among {c['draws']} draws"
    else:
        test = f"Welch's t-test across {metric_summary(data, c['baseline'], c['metric'])['n']} repetitions"
    sides = "two-sided" if c["alternative"] == "two-sided" else "one-sided"
    floor = f"smallest possible p {number(c['min_p'])}" if c.get("min_p") is not None else ""
    text = (f"p = {number(c['p'])} ({', '.join(filter(None, [test, sides, floor]))})" if c.get("p") is not None
            else f"no {test} ({c.get('note', 'no p-value')})")
    if (paired := c.get("paired")) and paired.get("p") is not None:
        text += (f"; example by example, {paired['test']} over {paired['n']} examples p = {number(paired['p'])} "
                 f"(smallest possible {number(paired['min_p'])})")
    return text


def claim_text(data: dict, c: dict) -> str:
    """What the alternative claims, in words: "zeroing ... lowers M" against an unedited baseline, else "B scores
    higher on M than T" (than its draws, for the rank test)."""
    arms = data["arms"]
    edits, scores = CLAIM[c["alternative"]]
    treatment = arm_text(c["treatment"], arms[c["treatment"]])
    if c.get("unit") == "arm":
        first = arms[c["treatment"]]
        drawn = first.get("draw", {}).get("of", c["treatment"])
        treatment = f"{c['draws']} random draws like {arm_text(drawn, first)}"
    elif not arms[c["baseline"]].get("editor"):
        return f"{treatment} {edits} {c['metric']} relative to {arm_text(c['baseline'], arms[c['baseline']])}"
    return f"{arm_text(c['baseline'], arms[c['baseline']])} scores {scores} {treatment} on {c['metric']}"


def context_text(data: dict, c: dict) -> str:
    """The chance level, whether the arms sit near it (with the model caveat, if any), and the scorer's notes on
    the two arms (e.g. how often the model chose 'A'), once if they say the same."""
    scorer, _, metric = c["metric"].partition(".")
    parts = []
    chance = data.get("scorer_metrics", {}).get(scorer, {}).get("chance", {}).get(metric)
    means = [c["baseline_mean"], *c.get("draw_means", [c["treatment_mean"]])]
    if chance is not None:
        parts.append(f"chance {number(chance)}")
        if all(abs(m - chance) <= NEAR_CHANCE for m in means):
            parts[-1] += (f", every arm within {NEAR_CHANCE} of it"
                          + (": mind the model caveat above" if data["model"].get("caveat") else ""))
    elif data["model"].get("init") == "random" and data["model"].get("caveat"):
        parts.append("on the null model (see above)")
    notes = {arm: data["arms"][arm]["scores"][scorer].get("note") for arm in (c["baseline"], c["treatment"])}
    if len(set(notes.values())) > 1:
        parts.append(f"{scorer}: " + ", ".join(f"{arm} {note}" for arm, note in notes.items() if note))
    elif note := notes[c["baseline"]]:
        parts.append(f"{scorer}: {note} (both arms)")
    return "; ".join(parts)


def sentence(data: dict, c: dict) -> str:
    """One comparison's verdict in one sentence."""
    p = c["p"] if c.get("p") is not None else (c.get("paired") or {}).get("p")  # the paired test, without repetitions
    if p is None:
        opening = "No test of whether"
    else:
        opening = "Evidence that" if p < ALPHA else "No evidence that"
    details = "; ".join(filter(None, [effect_text(data, c), p_value_text(data, c), context_text(data, c)]))
    return f"{opening} {claim_text(data, c)}: {details}."


def p_floor(c: dict) -> str:
    """'smallest possible with N draws: X', from a comparison's ``min_p`` (the smallest p its design can reach)."""
    design = f" with {c['draws']} draws" if "draws" in c else ""
    return f"smallest possible{design}: {c['min_p']:.4g}"


def declared_arm(data: dict, name: str) -> str:
    """An arm as the recipe declares it: one drawn by ``draws = N`` goes by its declared name."""
    drawn = data["arms"].get(name, {}).get("draw")
    return drawn["of"] if drawn else name


def unreachable_alpha_warnings(data: dict) -> list[str]:
    """One warning per design (its floor and the draws it would need) under which comparisons cannot reach
    p <= ALPHA, whatever the data; naming the first three such comparisons."""
    groups: dict[str, list[str]] = {}
    for c in data["comparisons"]:
        if (c.get("min_p") or 0) > ALPHA:
            remedy = f"; add draws ({draws_needed(ALPHA, c['alternative'])} draws can reach it)" if "draws" in c else ""
            label = f"{c['baseline']} vs {declared_arm(data, c['treatment'])}, {c['metric']}"
            groups.setdefault(f"({p_floor(c)}){remedy}", []).append(label)
    warnings = []
    for design, labels in groups.items():
        named = "; ".join(labels[:3]) + (f"; and {len(labels) - 3} more" if len(labels) > 3 else "")
        subject = f"{len(labels)} comparisons ({named}) cannot" if len(labels) > 1 else f"{named}: this design cannot"
        warnings.append(f"{subject} reach p ≤ {ALPHA} {design}.")
    return warnings


def design_warnings(data: dict) -> list[str]:
    """Per comparison tested across repetitions: one resting on a single random draw (repetitions never redraw
    the components), or on repetitions the scorer declares not independent."""
    warnings = []
    for c in data["comparisons"]:
        if c.get("unit") == "arm" or c.get("p") is None:
            continue
        which = f"{c['baseline']} vs {c['treatment']}, {c['metric']}: "
        drawn = [arm for arm in (c["baseline"], c["treatment"]) if is_random_draw(data["arms"][arm])]
        if drawn:
            warnings.append(
                which + f"Welch's test rests on one random draw ({', '.join(drawn)}). Repetitions (answer orders, or "
                "questions) never redraw the components, so p speaks for this draw only: between two random component "
                "sets this design gave "
                f"p < {ALPHA} in {SINGLE_DRAW_FALSE_POSITIVES} of seeds (docs/recipes.md, `treatment_draws`). Compare "
                f"against independent draws instead ({draws_needed(ALPHA, c['alternative'])} draws can reach p ≤ {ALPHA}).")
        scorer = c["metric"].partition(".")[0]
        if not data.get("scorer_metrics", {}).get(scorer, {}).get("independent_repetitions", True):
            warnings.append(which + f"scorer {scorer!r} declares its repetitions not independent (e.g. resamples of "
                            "the same examples), so Welch's test across them is invalid and its p far too small.")
    return warnings


def warnings_of(data: dict) -> list[str]:
    """Every warning about a comparison's design, as plain sentences."""
    return design_warnings(data) + unreachable_alpha_warnings(data)


def verdict_lines(data: dict) -> list[str]:
    """The "Verdict" section: a sentence per comparison, then the design warnings."""
    if not data["comparisons"]:
        return []
    warnings = [f"- **Warning:** {w}" for w in warnings_of(data)]
    return ["## Verdict", "", *(f"- {sentence(data, c)}" for c in data["comparisons"]),
            *(["", "Designs that cannot support the claim:", ""] if warnings else []), *warnings, ""]
