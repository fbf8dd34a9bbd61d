"""Calibration of the statistics: two arms of *random* heads compared with each other should give p < 0.05 in
about 5% of seeds. Real pieces throughout (the ``random`` locator, ``zero-ablation``, ``binary-choice``,
``loctest.stats.welch``) on a tiny model; forwards are memoised because 200 seeds only ever draw the 28
possible pairs of its 8 heads.

Finding: Welch's test across an arm's *repetitions* (what a recipe comparison of two arms computes) is not
calibrated for this question. Repetitions only redraw answer orders, so they measure order noise around one
fixed set of heads (and for that noise the test is calibrated: same heads, independent orders, about 5%);
two different random sets differ by a fixed amount that order noise does not cover, and random-vs-random
comes out "significant" in about 65% of seeds (whether or not the arms share their answer orders: 65.5% both
ways, measured). Taking random *draws* as the unit (one value per draw, several draws per arm) is calibrated.

The rank test among draws (what a comparison with ``treatment_draws`` computes) is checked by simulation alone:
it is exact by construction, so what matters is that the runner's use of it keeps it so, and what p values its
design can reach (multiples of 1 / (draws + 1): with 4 draws, never below 0.2).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy.stats import binom, binomtest

from loctest import Example
from loctest.context import RunContext
from loctest.progress import Progress
from loctest.stats import rank_test, summary, welch
from loctest_plugins.editors.zero_ablation import ZeroAblation
from loctest_plugins.locators.random import RandomLocator
from loctest_plugins.scorers.binary_choice import BinaryChoice

from conftest import cached_model

SEEDS = 200
DRAWS = 4  # random draws per arm when draws are the unit
METRIC = "correct_prob"  # continuous; a random tiny model's accuracy never moves under ablation
WORDS = "sky cat dog sun ice tree fish rain moon salt".split()
EXAMPLES = [Example(f"q{i}", f"Is the {WORDS[i % 10]} {WORDS[(3 * i + 1) % 10]}?", (f"No, {WORDS[(i + 2) % 10]}.",),
                    (f"Yes, {WORDS[(i + 5) % 10]}.",)) for i in range(16)]


class MemoisedModel:
    """The model with ``next_token_logprobs`` memoised on (prompts, tokens, what each intervention does to a
    probe activation): a repeated head set costs no forward pass."""

    def __init__(self, backend):
        self.backend, self.memo = backend, {}

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def next_token_logprobs(self, prompts, interventions=(), token_ids=None, progress=None):
        def effect(iv):
            probe = torch.arange(1.0, self.backend.shape.site_width(iv.site[0]) + 1).view(1, 1, -1)
            return iv.site, iv.positions, tuple(iv.transform(probe).flatten().tolist())
        key = (tuple(prompts), tuple(token_ids or ()), tuple(effect(iv) for iv in interventions))
        if key not in self.memo:
            self.memo[key] = self.backend.next_token_logprobs(prompts, interventions, token_ids)
        return self.memo[key]


@functools.cache
def random_arm_values() -> dict[tuple, list[float]]:
    """Per (seed, arm, draw): the metric's per-repetition values of two random heads zero-ablated; and per
    (seed, "a", 0, "reordered"): the same heads scored under independent answer orders (another run seed)."""
    backend = MemoisedModel(cached_model("transformer-lens"))
    scorer = BinaryChoice({"dataset": "qa", "repetitions": 10, "system_prompt": "",
                           "user_prompt": "{question} A: {answer_a} B: {answer_b}"})

    def context(seed, arm):
        return RunContext(backend, seed, None, None, Progress(enabled=False), datasets={"qa": lambda: EXAMPLES}, arm=arm)

    values = {}
    for seed in range(SEEDS):
        for arm in ("a", "b"):
            for draw in range(DRAWS):
                heads = RandomLocator({"kind": "head", "count": 2, "draw": draw}).locate(context(seed, arm))
                edits = ZeroAblation({"positions": "last"}).interventions(context(seed, arm), heads)
                values[seed, arm, draw] = scorer.score(context(seed, arm), edits).values[METRIC]
                if (arm, draw) == ("a", 0):
                    values[seed, arm, draw, "reordered"] = scorer.score(context(SEEDS + seed, arm), edits).values[METRIC]
    return values


def assert_near_five_percent(p_values: list[float]):
    rejections = int(np.sum(np.asarray(p_values) < 0.05))
    assert binomtest(rejections, len(p_values), 0.05).pvalue > 0.01, f"{rejections} of {len(p_values)} seeds gave p < 0.05"


def test_random_draws_as_units_are_calibrated():
    """One value per random draw (its mean over repetitions), DRAWS draws per arm, Welch between arms."""
    values = random_arm_values()
    p = [welch([np.mean(values[s, "a", d]) for d in range(DRAWS)], [np.mean(values[s, "b", d]) for d in range(DRAWS)],
               "two-sided")["p"] for s in range(SEEDS)]
    assert_near_five_percent(p)


def test_repetitions_are_calibrated_for_the_answer_order_noise_they_sample():
    """The same heads under two independent draws of answer orders: what repetitions do measure is calibrated."""
    values = random_arm_values()
    assert_near_five_percent([welch(values[s, "a", 0], values[s, "a", 0, "reordered"], "two-sided")["p"]
                              for s in range(SEEDS)])


@pytest.mark.xfail(strict=True, reason="repetitions resample answer orders, not the random draw of heads: two random "
                                       "arms differ by more than order noise (measured: p < 0.05 in 131 of 200 seeds)")
def test_repetitions_of_one_draw_per_arm_are_calibrated():
    """What a recipe comparison of two arms computes: Welch across the repetitions of one draw per arm."""
    values = random_arm_values()
    assert_near_five_percent([welch(values[s, "a", 0], values[s, "b", 0], "two-sided")["p"] for s in range(SEEDS)])


# -- the rank test among random draws, by simulation ------------------------------------------------------
@functools.cache
def rank_p_values(draws: int, alternative: str, seeds: int) -> np.ndarray:
    """p of the baseline arm ranked among ``draws`` control arms, as runner.py computes it, under the null: all
    arms exchangeable (each arm's value drawn from one distribution, then 10 repetitions of noise around it)."""
    rng = np.random.default_rng(draws)
    arms = rng.normal(0.5, 0.02, (seeds, draws + 1, 1)) + rng.normal(0, 0.05, (seeds, draws + 1, 10))
    return np.array([rank_test(summary(a[0])["mean"], [summary(d)["mean"] for d in a[1:]], alternative)["p"]
                     for a in arms])


def assert_rate(p: np.ndarray, level: float, rate: float):
    """P(p <= level) lies in the binomial 99.9 % interval around ``rate`` (exactly 0 when ``rate`` is 0)."""
    hits = int(np.sum(p <= level + 1e-12))
    low, high = binom.interval(0.999, len(p), rate)
    assert low <= hits <= high, f"P(p <= {level}) = {hits / len(p):.4f} over {len(p)} seeds, expected {rate}"


def test_rank_test_with_19_draws_is_exact():
    """One-sided: P(p <= k/20) = k/20 for every k, with 4,000 seeds: the 99.9 % interval of the rejection rate at
    0.05 is 3.9-6.2 %, far from 10 %. Measured: 4.95 %, 10.15 %, 25.5 %, 50.4 % for k = 1, 2, 5, 10."""
    p = rank_p_values(19, "greater", 4000)
    assert binom.interval(0.999, len(p), 0.05)[1] < 0.075 * len(p)  # the check tells 5 % from 7.5 %, let alone 10 %
    assert np.allclose(p * 20, np.round(p * 20)) and p.min() == 1 / 20  # on the lattice k/20, down to 1/20
    for k in (1, 2, 5, 10):
        assert_rate(p, k / 20, k / 20)


def test_rank_test_two_sided_doubles_the_smallest_p():
    """Two-sided, 19 draws: p is a multiple of 2/20, so P(p <= 0.05) = 0 and P(p <= 0.1) = 0.1 (measured 10.05 %):
    a two-sided test needs 39 draws to reach 0.05."""
    p = rank_p_values(19, "two-sided", 2000)
    assert_rate(p, 0.05, 0)
    assert_rate(p, 0.1, 0.1)


def test_rank_test_with_4_draws_cannot_reach_five_percent():
    """4 draws (as recipes/iti.toml has): p is never below 1/5, and P(p <= 0.2) = 0.2 (measured 19.4 %)."""
    p = rank_p_values(4, "greater", 2000)
    assert_rate(p, 0.05, 0)
    assert_rate(p, 0.2, 0.2)
