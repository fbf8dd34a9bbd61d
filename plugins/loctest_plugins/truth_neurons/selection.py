"""Selecting truth neurons from attribution differences D (Truth Neurons, Sections 2.2-2.3).

D is a matrix [examples, neurons] for one layer type (all chosen layers of it side by side). The selection
half picks candidates (:func:`candidates`), the testing half tests them (:func:`significance`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from loctest.errors import UserError


def split_halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``n`` examples: the selection half (n // 2 examples) and the testing half (the rest),
    each in ascending order."""
    order = rng.permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def candidates(d: np.ndarray, threshold: float, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Neurons salient in enough examples: per example, D above ``threshold`` % of that example's largest D
    (examples whose largest D is not positive select nothing); kept when that holds in at least ``share`` % of
    the examples. Returns the kept columns and every column's share of examples (in [0, 1])."""
    if d.ndim != 2 or d.shape[0] == 0:
        raise UserError("truth neurons: the selection half has no examples (too few questions passed the manipulation check)")
    top = d.max(axis=1, keepdims=True)
    salient = (d > threshold / 100.0 * top) & (top > 0)
    fraction = salient.mean(axis=0)
    return np.flatnonzero(fraction >= share / 100.0 - 1e-12), fraction


@dataclass
class Significance:
    """Per tested neuron: mean D, t statistic, one-sided p, Bonferroni-corrected p, and whether it survives."""

    mean: np.ndarray
    t: np.ndarray
    p: np.ndarray
    p_bonferroni: np.ndarray
    significant: np.ndarray


def significance(d: np.ndarray, alpha: float) -> Significance:
    """One-sided one-sample t-test of D > 0 for every column of ``d`` [examples, candidates], Bonferroni-corrected
    over the columns; survivors have a corrected p below ``alpha``. A column without variance follows scipy
    (t = +-inf when its mean is not zero); an all-zero column has no defined test and never passes."""
    if d.shape[0] < 2:
        raise UserError(f"truth neurons: the testing half has {d.shape[0]} example(s); a t-test needs at least 2")
    if d.shape[1] == 0:
        empty = np.zeros(0)
        return Significance(empty, empty, empty, empty, np.zeros(0, dtype=bool))
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns about columns without variance
        t, p = stats.ttest_1samp(d, 0.0, axis=0, alternative="greater")
    p = np.where(np.isnan(p), 1.0, p)
    corrected = np.minimum(1.0, p * d.shape[1])
    return Significance(d.mean(axis=0), t, p, corrected, corrected < alpha)
