"""Texts that scorers keep per example (prompts in ``details``), stored once in memory however many arms keep them."""
from __future__ import annotations

import sys


def shared(texts: list[str]) -> list[str]:
    """``texts`` with each string interned: every arm's details that list the same prompts share one copy."""
    return [sys.intern(t) for t in texts]
