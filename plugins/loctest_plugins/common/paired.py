"""Arms compared example by example: the ``mc`` and ``kl`` scorers' comparison."""
from __future__ import annotations

from loctest import Scores
from loctest.stats import paired_t


def paired_comparison(baseline: Scores, treatment: Scores, metrics: tuple[str, ...]) -> dict:
    """Per metric, a two-sided :func:`loctest.stats.paired_t` over the examples both arms scored (the same
    questions or prompts, in the same order)."""
    out = {}
    for metric in metrics:
        a, b = baseline.values[metric], treatment.values[metric]
        if len(a) != len(b) or baseline.details.get("id") != treatment.details.get("id"):
            out[metric] = {"test": "paired t", "alternative": "two-sided", "p": None, "min_p": None,
                           "note": "the arms scored different examples"}
        else:
            out[metric] = paired_t(a, b)
    return out
