"""Preference pairs: every (question, correct answer, incorrect answer) combination of the training questions."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loctest import Example
from loctest.cache import cache_key


@dataclass(frozen=True)
class PreferencePair:
    """A prompt with the answer to prefer (``chosen``) and the one to avoid (``rejected``), as continuations."""

    prompt: str
    chosen: str
    rejected: str


def preference_pairs(examples: Sequence[Example], prompt_of: Callable[[str], str], answer_prefix: str = "") -> list[PreferencePair]:
    """Every correct x incorrect answer combination of every example, in dataset order."""
    pairs = []
    for ex in examples:
        prompt = prompt_of(ex.question)
        pairs += [PreferencePair(prompt, answer_prefix + good, answer_prefix + bad)
                  for good in ex.correct for bad in ex.incorrect]
    return pairs


def pairs_digest(pairs: Sequence[PreferencePair]) -> str:
    """A stable hash of the pairs' exact text (what a trained edit and cached log-probabilities depend on)."""
    return cache_key([[p.prompt, p.chosen, p.rejected] for p in pairs])
