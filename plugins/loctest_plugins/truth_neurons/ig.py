"""Integrated gradients of layer activations, exact and fast, through the backend interface only.

For one prompt, an objective ``f`` with T columns and one *site* (a layer's MLP neurons or attention
neurons), with the zero baseline and a right Riemann sum of ``m`` steps (Truth Neurons, Eq. 4):

    Attr(n) = x_n / m * sum_{k=1..m} df(k/m * x) / dx_n

``x`` is the site's activation at the scaled positions — ``"last"``: the last prompt token; ``"prompt"``: every
prompt token, a neuron's attribution then summed over positions — while every other site runs normally.

Why :func:`integrated_gradients` is fast and still exact under the ``"last"`` policy: attention is causal, so
scaling the last position leaves every earlier position unchanged in all steps. The prompt minus its last
token runs once (``Backend.prefill``); every (site, step) pair is then one *row* holding just the last token
over a copy of that key/value cache, many rows (steps, sites and layers at once) per forward pass, each row
scaling only its own site. Rows are grouped by layer so a backward pass stops at the chunk's lowest site;
all objective columns share one forward pass. :func:`reference_integrated_gradients` is the straightforward
computation (one full forward and backward pass per site, step and column) that tests compare against.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from loctest import Batch, Component, ComponentSet, ModelShape, interventions
from loctest.errors import UserError
from loctest.interventions import Intervention, Site

POSITIONS = ("last", "prompt")
Objective = Callable[[torch.Tensor, Batch], torch.Tensor]  # (logits [B, P, vocab], batch) -> [B, T]


def label_objective(token_groups: Sequence[Sequence[int]]) -> Objective:
    """f with one column per token group: the summed next-token probabilities of the group's tokens after the
    prompt (e.g. [[A, a], [B, b]] gives the paper's f(T|t) and f(T|f) when A is the correct label)."""
    groups = [list(g) for g in token_groups]

    def objective(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        probs = logits[rows, batch.last_prompt_index].float().softmax(-1)
        return torch.stack([probs[:, g].sum(-1) for g in groups], dim=-1)
    return objective


@dataclass
class Attribution:
    """IG of one prompt: ``attributions`` {site: [T, width]} (a row per objective column), ``value`` f at the
    unedited activations [T], ``zeroed`` {site: [T]} f with the site set to the baseline (the path's start)."""

    attributions: dict[Site, torch.Tensor]
    value: torch.Tensor
    zeroed: dict[Site, torch.Tensor]

    def completeness_delta(self) -> dict[Site, torch.Tensor]:
        """sum_n Attr(n) - (f(x) - f(baseline)) per site [T]: zero for exact integrals, O(1/m) for the sum."""
        return {s: a.sum(-1) - (self.value - self.zeroed[s]) for s, a in self.attributions.items()}


def site_components(site: Site, shape: ModelShape) -> list[Component]:
    """The site's neurons in column order: ``mlp:L:N``, or ``attn:L:H:D`` at column H * d_head + D."""
    kind, layer = site
    if kind == "mlp":
        return [Component("mlp", layer, n) for n in range(shape.d_mlp)]
    return [Component("attn", layer, h, d) for h in range(shape.n_heads) for d in range(shape.d_head)]


def check_sites(sites: Sequence[Site], shape: ModelShape) -> None:
    for kind, layer in sites:
        if kind not in ("mlp", "attn") or not 0 <= layer < shape.n_layers:
            raise UserError(f"site {(kind, layer)}: expected ('mlp' or 'attn', a layer below {shape.n_layers})")


class PromptRows:
    """Batches of identical rows of one prompt: under ``"last"`` its last token over the prompt's cached keys
    and values (each batch gets its own copy, since a forward pass appends to the cache), else the whole
    prompt."""

    def __init__(self, backend, prompt: str, positions: str):
        if positions not in POSITIONS:
            raise UserError(f"positions: expected one of {', '.join(POSITIONS)}, got {positions!r}")
        full = backend.encode([prompt])
        self.cache = None
        self.template = full
        if positions == "last" and full.input_ids.shape[1] > 1:
            self.cache = backend.prefill(full.input_ids[:, :-1], full.attention_mask[:, :-1])
            self.template = Batch(full.input_ids[:, -1:], full.attention_mask, full.position_ids[:, -1:],
                                  full.prompt_mask[:, -1:], full.continuation_mask[:, -1:])
        self.policy = positions

    def batch(self, rows: int) -> Batch:
        t = self.template
        past = None
        if self.cache is not None:
            past = copy.deepcopy(self.cache)
            past.batch_repeat_interleave(rows)
        return Batch(t.input_ids.repeat(rows, 1), t.attention_mask.repeat(rows, 1), t.position_ids.repeat(rows, 1),
                     t.prompt_mask.repeat(rows, 1), t.continuation_mask.repeat(rows, 1), past)


def row_scaling(sites: Sequence[Site], row_site: torch.Tensor, alpha: torch.Tensor, policy: str) -> list[Intervention]:
    """One intervention per site in ``row_site``: multiply the site by ``alpha`` in the rows that belong to it,
    leave it unchanged in the others."""
    out = []
    for i in sorted(set(row_site.tolist())):
        factor = torch.where(row_site == i, alpha, torch.ones_like(alpha))
        out.append(Intervention(sites[i], policy, lambda x, f=factor: x * f.to(x).view(-1, *([1] * (x.dim() - 1))),
                                f"scale {sites[i][0]}:{sites[i][1]} per row"))
    return out


def run_in_chunks(items: list, size: int, work: Callable[[list], None]) -> int:
    """``work`` on consecutive chunks of at most ``size`` items, halving the size on CUDA out-of-memory;
    returns the size that worked."""
    start = 0
    while start < len(items):
        try:
            work(items[start:start + size])
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            torch.cuda.empty_cache()
            continue
        start += size
    return size


def integrated_gradients(backend, prompt: str, objective: Objective, sites: Sequence[Site], steps: int = 20,
                         positions: str = "last", batch_rows: int = 128) -> tuple[Attribution, int]:
    """IG of every site for one prompt (see the module docstring); also returns the batch size that fit."""
    check_sites(sites, backend.shape)
    sites = list(sites)
    rows = PromptRows(backend, prompt, positions)
    one = rows.batch(1)
    with torch.no_grad():
        out = backend.run(one, capture=sites)
    value = objective(out.logits, one)[0].float()
    scaled = one.position_mask(positions)[0, :, None]
    x = {s: (out.activations[s][0] * scaled).float() for s in sites}  # [P, width], zero where not scaled

    by_layer = sorted(range(len(sites)), key=lambda i: (sites[i][1], sites[i][0]))
    plan = [(i, k) for i in by_layer for k in range(1, steps + 1)]
    summed: dict[Site, torch.Tensor] = {}

    def gradient_chunk(part):
        row_site = torch.tensor([i for i, _ in part])
        alpha = torch.tensor([k / steps for _, k in part])
        chunk_sites = [sites[i] for i in sorted(set(row_site.tolist()))]
        _, grads, _ = backend.gradients(rows.batch(len(part)), chunk_sites, objective,
                                        row_scaling(sites, row_site, alpha, positions))
        for s in chunk_sites:
            mine = (row_site == sites.index(s)).to(grads[s].device)
            g = grads[s][:, mine].float().sum(1)  # [T, P, width]
            summed[s] = summed[s] + g if s in summed else g

    size = run_in_chunks(plan, batch_rows, gradient_chunk)
    zeroed: dict[Site, torch.Tensor] = {}

    @torch.no_grad()
    def zeroed_chunk(part):
        row_site = torch.tensor(part)
        batch = rows.batch(len(part))
        logits = backend.run(batch, row_scaling(sites, row_site, torch.zeros(len(part)), positions)).logits
        for r, v in zip(part, objective(logits, batch).float()):
            zeroed[sites[r]] = v

    size = run_in_chunks(list(range(len(sites))), size, zeroed_chunk)
    attributions = {s: (x[s] * summed[s] / steps).sum(-2).cpu() for s in sites}
    return Attribution(attributions, value.cpu(), {s: v.cpu() for s, v in zeroed.items()}), size


def reference_integrated_gradients(backend, prompt: str, objective: Objective, sites: Sequence[Site],
                                   steps: int = 20, positions: str = "last") -> Attribution:
    """The same quantity computed the straightforward way: for every site, step and objective column, one
    forward and backward pass over the whole prompt with the site scaled by ``interventions.scale``."""
    check_sites(sites, backend.shape)
    if positions not in POSITIONS:
        raise UserError(f"positions: expected one of {', '.join(POSITIONS)}, got {positions!r}")
    shape = backend.shape
    batch = backend.encode([prompt])
    mask = batch.position_mask(positions)[0, :, None]
    with torch.no_grad():
        out = backend.run(batch, capture=sites)
    value = objective(out.logits, batch)[0].float()
    attributions, zeroed = {}, {}
    for site in sites:
        neurons = ComponentSet(site_components(site, shape))
        x = out.activations[site][0].float() * mask
        per_column = []
        for t in range(value.shape[0]):
            total = torch.zeros_like(x)
            for k in range(1, steps + 1):
                scale = interventions.scale(neurons, shape, k / steps, positions)
                _, grads, _ = backend.gradients(batch, [site], lambda logits, b: objective(logits, b)[:, t], scale)
                total += grads[site][0].float()
            per_column.append((x * total / steps).sum(0))
        attributions[site] = torch.stack(per_column).cpu()
        with torch.no_grad():
            zeroed[site] = objective(backend.run(batch, interventions.zero(neurons, shape, positions)).logits, batch)[0].float().cpu()
    return Attribution(attributions, value.cpu(), zeroed)
