"""Statistics of comparisons, from scipy.stats: across repetitions (Welch), among control draws (rank), and paired
over examples (McNemar, paired t) for scorers' own statistics. Every test's result carries ``test``,
``alternative``, ``p`` and ``min_p``, the smallest p its design can reach (0 for a continuous statistic, None when
there is no test)."""
from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
from scipy import stats

Alternative = Literal["greater", "less", "two-sided"]


def welch(baseline: list[float], treatment: list[float], alternative: Alternative = "greater") -> dict:
    """Welch's t-test of baseline vs treatment ("greater": the baseline mean is larger)."""
    a, b = np.asarray(baseline, float), np.asarray(treatment, float)
    if len(a) < 2 or len(b) < 2:
        return {"test": "welch", "alternative": alternative, "t": None, "p": None, "min_p": None,
                "note": "needs at least 2 repetitions per arm"}
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        # no spread (tested exactly: the std of [0.7] * 3 is 1e-16, and scipy answers nan or a meaningless p):
        # the values either differ (certain) or not (no evidence)
        diff = {"greater": a[0] > b[0], "less": a[0] < b[0], "two-sided": a[0] != b[0]}[alternative]
        return {"test": "welch", "alternative": alternative, "t": None, "p": 0.0 if diff else 1.0, "min_p": 0.0,
                "note": "no spread across repetitions"}
    with warnings.catch_warnings():
        if np.ptp(a) == 0 or np.ptp(b) == 0:  # one constant arm: scipy's "precision loss" warning is about it, harmless
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    return {"test": "welch", "alternative": alternative, "t": float(res.statistic), "p": float(res.pvalue),
            "df": float(res.df), "min_p": 0.0}


def summary(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def rank_test(single: float, draws: list[float], alternative: Alternative = "greater") -> dict:
    """Exact rank p-value of one arm's mean among independent control draws' means ("greater": the single arm
    is larger). p = (1 + #draws at least as extreme) / (draws + 1), doubled for "two-sided": a multiple of
    1 / (draws + 1), never below :func:`rank_min_p`."""
    d = np.asarray(draws, float)
    at_least = {"greater": int((d >= single).sum()), "less": int((d <= single).sum())}
    if alternative == "two-sided":
        p = min(1.0, 2 * (1 + min(at_least.values())) / (len(d) + 1))
    else:
        p = (1 + at_least[alternative]) / (len(d) + 1)
    return {"test": "rank among draws", "alternative": alternative, "t": None, "p": float(p), "draws": int(len(d)),
            "min_p": rank_min_p(len(d), alternative)}


def sides(alternative: Alternative) -> int:
    return 2 if alternative == "two-sided" else 1


def rank_min_p(draws: int, alternative: Alternative = "greater") -> float:
    """The smallest p :func:`rank_test` can give with this many draws: 1 / (draws + 1), twice that two-sided."""
    return min(1.0, sides(alternative) / (draws + 1))


def draws_needed(alpha: float, alternative: Alternative = "greater") -> int:
    """The fewest draws with which :func:`rank_test` can reach p <= alpha (19 for 0.05 one-sided, 39 two-sided)."""
    return math.ceil(sides(alternative) / alpha - 1e-9) - 1


def sign_test_min_p(discordant: int, alternative: Alternative = "two-sided") -> float:
    """The smallest p of an exact McNemar (sign) test with this many discordant pairs: 0.5 ** n, doubled two-sided."""
    return min(1.0, sides(alternative) * 0.5 ** discordant)


def mcnemar(baseline, treatment, alternative: Alternative = "two-sided") -> dict:
    """Exact McNemar test of paired binary outcomes (say, each question right or wrong under two arms): a binomial
    test on the pairs where only one arm succeeds ("greater": the baseline succeeds more often)."""
    a, b = np.asarray(baseline, bool), np.asarray(treatment, bool)
    only_baseline, only_treatment = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_baseline + only_treatment
    p = stats.binomtest(only_baseline, discordant, 0.5, alternative=alternative).pvalue if discordant else 1.0
    return {"test": "exact McNemar", "alternative": alternative, "p": float(p),
            "min_p": sign_test_min_p(discordant, alternative), "n": int(len(a)),
            "mean_difference": float(b.mean() - a.mean()), "baseline_only": only_baseline,
            "treatment_only": only_treatment}


def paired_t(baseline, treatment, alternative: Alternative = "two-sided") -> dict:
    """Paired t-test of per-example values (scipy.stats.ttest_rel; "greater": the baseline is larger)."""
    a, b = np.asarray(baseline, float), np.asarray(treatment, float)
    diff = b - a
    out = {"test": "paired t", "alternative": alternative, "n": int(len(a)),
           "mean_difference": float(diff.mean()) if len(a) else None}
    if len(a) < 2:
        return {**out, "p": None, "min_p": None, "note": "needs at least 2 pairs"}
    if np.ptp(diff) == 0:  # scipy gives nan: a constant difference is certain, no difference is no evidence
        shifted = {"greater": diff[0] < 0, "less": diff[0] > 0, "two-sided": diff[0] != 0}[alternative]
        return {**out, "p": 0.0 if shifted else 1.0, "min_p": 0.0, "note": "the same difference in every pair"}
    return {**out, "p": float(stats.ttest_rel(a, b, alternative=alternative).pvalue), "min_p": 0.0}


def per_example_values(details: dict, metric: str) -> np.ndarray | None:
    """A metric's value per example from a scorer's ``details``: ``details[metric]`` (one number per ``id``), else
    the mean over repetitions of ``details["per_repetition"][metric]`` ([repetitions][examples]); None if neither."""
    ids = details.get("id") or []
    values = details.get(metric)
    if not ids or values is None:
        values = np.asarray((details.get("per_repetition") or {}).get(metric, []), float)
        return values.mean(0) if values.ndim == 2 and values.shape[1] == len(ids) and len(ids) else None
    values = np.asarray(values, float) if len(values) == len(ids) else np.empty(0)
    return values if values.ndim == 1 and len(values) else None


def paired_examples(baseline: dict, treatment: dict, metric: str, alternative: Alternative = "two-sided") -> dict | None:
    """A paired test of two arms' per-example values of ``metric`` (:func:`per_example_values` of each arm's
    details): exact McNemar when every value is 0 or 1, else a paired t-test; None when a scorer gives no
    per-example values. The examples must be the same, in the same order."""
    a, b = per_example_values(baseline, metric), per_example_values(treatment, metric)
    if a is None or b is None:
        return None
    if baseline.get("id") != treatment.get("id"):
        return {"test": "paired", "alternative": alternative, "p": None, "min_p": None,
                "note": "the arms scored different examples"}
    binary = np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()
    return mcnemar(a, b, alternative) if binary else paired_t(a, b, alternative)
