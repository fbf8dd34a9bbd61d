"""The IPO objective as the paper writes it, and its training loop.

``log pi(y|x)`` is the sum of the answer tokens' log-probabilities given the question prompt (no length
normalisation); the loss of a pair is ``(log(pi/pi0)(y+|x) - log(pi/pi0)(y-|x) - 1/(2 tau))^2`` with ``pi0``
the unedited model; the optimiser is AdamW (the paper's "paged_adamw_32bit" is AdamW; no weight decay) under a
cosine schedule without warm-up, stepping once per batch of pairs.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from loctest.backend import Batch, continuation_logprob_sums
from loctest.cache import JsonCache
from loctest.model import Model

from .pairs import PreferencePair

LogitsOf = Callable[[Batch], torch.Tensor]


@dataclass(frozen=True)
class Schedule:
    tau: float
    lr: float
    epochs: int
    batch_size: int


def pair_logprobs(logits_of: LogitsOf, model: Model, pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] log pi(chosen | prompt) and [N] log pi(rejected | prompt), from one forward pass of 2N rows."""
    batch = model.encode([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    sums = continuation_logprob_sums(logits_of(batch), batch)
    return sums[:len(pairs)], sums[len(pairs):]


def reference_logprobs(model: Model, pairs: Sequence[PreferencePair], cache: JsonCache, key: str,
                       progress) -> torch.Tensor:
    """[N, 2] unedited log-probabilities of (chosen, rejected): computed once, then read from ``cache``."""
    cached = cache.get("ipo-reference", key)
    if cached is not None:
        return torch.tensor(cached, dtype=torch.float32)
    prompts = [p.prompt for p in pairs] * 2
    answers = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    with progress.task("IPO reference log-probs", total=len(prompts)) as advance:
        values = model.continuation_logprobs(prompts, answers, progress=advance)
    reference = torch.stack([values[:len(pairs)], values[len(pairs):]], dim=1)
    cache.put("ipo-reference", key, reference.tolist())
    return reference


def ipo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             tau: float) -> torch.Tensor:
    """Mean over pairs of ``(log(pi/pi0)(y+|x) - log(pi/pi0)(y-|x) - 1/(2 tau))^2``."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return ((margin - 1.0 / (2.0 * tau)) ** 2).mean()


def steps(n_pairs: int, schedule: Schedule) -> int:
    return math.ceil(n_pairs / schedule.batch_size) * schedule.epochs


def train(logits_of: LogitsOf, parameters: list[torch.nn.Parameter], model: Model, pairs: Sequence[PreferencePair],
          reference: torch.Tensor, schedule: Schedule, rng: np.random.Generator,
          advance: Callable[..., None], label: str = "IPO") -> list[float]:
    """Minimise the IPO loss over ``parameters`` (nothing else is handed to the optimiser); each epoch visits
    the pairs in a fresh order drawn from ``rng``. Returns the loss of every step."""
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(parameters, lr=schedule.lr, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=0,
                                                num_training_steps=steps(len(pairs), schedule))
    history: list[float] = []
    for epoch in range(schedule.epochs):
        order = rng.permutation(len(pairs))
        for start in range(0, len(pairs), schedule.batch_size):
            rows = order[start:start + schedule.batch_size]
            with torch.enable_grad():
                chosen, rejected = pair_logprobs(logits_of, model, [pairs[i] for i in rows])
                ref = reference[torch.as_tensor(rows)].to(chosen.device)
                loss = ipo_loss(chosen, rejected, ref[:, 0], ref[:, 1], schedule.tau)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            scheduler.step()
            history.append(float(loss.detach()))
            recent = history[-50:]
            advance(1, description=f"{label}: epoch {epoch + 1}/{schedule.epochs}, loss {sum(recent) / len(recent):.3f}")
    return history
