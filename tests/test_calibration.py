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
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from loctest import Example
from loctest.context import RunContext
from loctest.progress import Progress
from loctest.stats import welch
from loctest_plugins.editors.zero_ablation import ZeroAblation
from loctest_plugins.locators.random import RandomLocator
from loctest_plugins.scorers.binary_choice import BinaryChoice

from conftest import cached_backend

SEEDS = 200
DRAWS = 4  # random draws per arm when draws are the unit
METRIC = "correct_prob"  # continuous; a random tiny model's accuracy never moves under ablation
WORDS = "sky cat dog sun ice tree fish rain moon salt".split()
EXAMPLES = [Example(f"q{i}", f"Is the {WORDS[i % 10]} {WORDS[(3 * i + 1) % 10]}?", (f"No, {WORDS[(i + 2) % 10]}.",),
                    (f"Yes, {WORDS[(i + 5) % 10]}.",)) for i in range(16)]


class MemoisedBackend:
    """The backend with ``next_token_logprobs`` memoised on (prompts, tokens, what each intervention does to a
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
    backend = MemoisedBackend(cached_backend("transformer-lens"))
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
