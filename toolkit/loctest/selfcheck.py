"""Run-time self-checks of the fast paths that lean on upstream internals.

Each shortcut (a prefix key/value cache, copies of a token under a 4D attention mask, cached generation, padded
batches, the integrated-gradients engine) is compared on the run's own model and input with the straightforward
computation. A check that fails switches its fast path off for the rest of the run (the caller uses the exact
path) and warns; when the exact path disagrees too, :class:`SelfCheckError` stops the run. Every check, its
largest measured difference and what was done go into ``results.json`` and the report.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch

from .errors import LoctestWarning, UserError

# What each check compares: (the fast path, the straightforward computation it must reproduce).
CHECKS = {
    "prefill": ("next-token log-probabilities of the last prompt token over a key/value cache of the prompt",
                "a whole-prompt forward pass"),
    "token-copies": ("copies of the last token side by side over the cache under a 4D attention mask",
                     "the last token alone over the cache"),
    "ig-reference": ("the integrated-gradients engine on one layer and the first objective column of the first attributed prompt",
                     "one full forward and backward pass per step (reference_integrated_gradients)"),
    "padded-batch": ("a left-padded batch of prompts of different lengths", "each prompt alone"),
    "cached-generation": ("greedy generation one cached token at a time",
                          "one uncached forward pass over each prompt and its generated tokens, alone"),
}
# Largest difference allowed between log-probabilities (or relative, for activations and attributions) per dtype.
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6, torch.float16: 5e-2, torch.bfloat16: 2.5e-1}


def tolerance(dtype: torch.dtype, factor: float = 1.0) -> float:
    return TOLERANCE.get(dtype, TOLERANCE[torch.float32]) * factor


class SelfCheckError(UserError):
    """A fast path and the exact computation disagree and no verified path is left."""


def difference(fast, exact) -> float:
    """Largest absolute difference, relative to max(1, largest |exact|), over tensors, or nested dicts/lists of
    them; 0 or inf for other values (equal or not)."""
    if isinstance(fast, dict):
        return max((difference(fast[k], exact[k]) for k in exact), default=0.0) if fast.keys() == exact.keys() else math.inf
    if isinstance(fast, (list, tuple)):
        return max((difference(a, b) for a, b in zip(fast, exact)), default=0.0) if len(fast) == len(exact) else math.inf
    if isinstance(fast, torch.Tensor):
        fast, exact = fast.detach().double().cpu(), exact.detach().double().cpu()
        if fast.shape != exact.shape:
            return math.inf
        scale = max(1.0, float(exact.abs().max())) if exact.numel() else 1.0
        gap = float((fast - exact).abs().max()) / scale if exact.numel() else 0.0
        return gap if math.isfinite(gap) else math.inf
    return 0.0 if fast == exact else math.inf


def logprob_difference(fast_logits: torch.Tensor, exact_logits: torch.Tensor) -> float:
    """Largest absolute difference of the log-softmax of two logit tensors."""
    fast, exact = (torch.log_softmax(x.double(), dim=-1) for x in (fast_logits, exact_logits))
    finite = exact > -1e30
    gap = float((fast - exact)[finite].abs().max()) if finite.any() else 0.0
    return gap if math.isfinite(gap) else math.inf


@dataclass
class Check:
    name: str
    fast: str
    exact: str
    tolerance: float
    runs: int = 0
    failures: int = 0
    max_difference: float = 0.0
    outcome: str = "verified"  # or "fell back to the exact path" / "stopped"


class SelfChecks:
    """The checks of one backend (one run): :meth:`record` each comparison, :meth:`usable` before a fast path."""

    def __init__(self):
        self.checks: dict[str, Check] = {}
        self.off: set[str] = set()

    def usable(self, name: str) -> bool:
        """False once the fast path ``name`` failed its check in this run."""
        return name not in self.off

    def ran(self, name: str) -> bool:
        return name in self.checks

    def record(self, name: str, measured: float, limit: float, fallback: bool = True) -> bool:
        """Record one comparison; True when ``measured <= limit``. A failure warns once and switches the fast path
        off (``fallback``) or stops the run with :class:`SelfCheckError` (no exact path left)."""
        fast, exact = CHECKS[name]
        check = self.checks.setdefault(name, Check(name, fast, exact, limit))
        check.runs += 1
        check.max_difference = max(check.max_difference, measured) if math.isfinite(measured) else math.inf
        if measured <= limit:
            return True
        check.failures += 1
        message = (f"self-check {name!r} failed: {fast} differs from {exact} by {measured:.3g} "
                   f"(tolerance {limit:.3g})")
        if not fallback:
            check.outcome = "stopped"
            raise SelfCheckError(message + "; no verified path is left, so the run stops rather than report "
                                           "numbers it could not verify")
        if name not in self.off:
            check.outcome = "fell back to the exact path"
            self.off.add(name)
            warnings.warn(message + "; using the exact path for the rest of the run (slower)", LoctestWarning, stacklevel=2)
        return False

    def summary(self) -> list[dict]:
        """One entry per check that ran, for ``results.json``."""
        return [asdict(c) | {"max_difference": c.max_difference if math.isfinite(c.max_difference) else "inf"}
                for c in self.checks.values()]
