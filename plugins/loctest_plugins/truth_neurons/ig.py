"""Integrated gradients of layer activations, exact and fast, through the model interface only.

For one prompt, an objective ``f`` with T columns and one *site* (a layer's MLP neurons or attention
neurons), with the zero baseline and a right Riemann sum of ``m`` steps (Truth Neurons, Eq. 4):

    Attr(n) = x_n / m * sum_{k=1..m} df(k/m * x) / dx_n

``x`` is the site's activation at the scaled positions — ``"last"``: the last prompt token; ``"prompt"``: every
prompt token, a neuron's attribution then summed over positions — while every other site runs normally.

Why :func:`integrated_gradients` is fast and still exact under ``"last"``: attention is causal, so scaling the
last position leaves every earlier position unchanged in all steps. The prompt minus its last token runs once
(``Model.prefill``), the last token once over that cache (f and x, unedited). Every (site, step) pair is
then one copy of the last token: many copies (steps, sites and layers at once) side by side in *one* sequence
after the cache, each seeing the prompt and itself only (a 4D attention mask) at the last token's position,
each scaling only its own site. One forward pass gives every copy's objective; one backward pass per
objective column gives every copy's gradient (copies are independent, so the gradient of the sum is each
copy's own). Copies are ordered by layer so a backward pass stops at the chunk's lowest site, and step m
(nothing scaled) is one copy shared by all sites. None of this is taken on trust (self-checks, recorded on
``model.checks``): every prompt's last token over the cache must match a whole-prompt pass and two unedited copies
must match the last token alone; the first prompt's lowest site must match the reference. A failed check (e.g.
sliding-window attention shorter than the prompt) switches to whole-prompt rows; if those disagree with the
reference too, :class:`loctest.selfcheck.SelfCheckError` stops the run. :func:`reference_integrated_gradients` is the straightforward
computation (one full forward and backward pass over the prompt per site, step and column).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from loctest import Batch, Component, ComponentSet, ModelShape, interventions
from loctest.errors import UserError
from loctest.interventions import Intervention, Site
from loctest.selfcheck import logprob_difference, tolerance

POSITIONS = ("last", "prompt")
Objective = Callable[[torch.Tensor], torch.Tensor]  # next-token logits [R, vocab] -> [R, T]
UNEDITED = -1  # the row_site of a copy that scales nothing
FAST_PATHS = ("prefill", "token-copies", "ig-reference")  # self-checks that switch TokenCopies off when they fail


class _GroupProbabilities(torch.autograd.Function):
    """f[r, g] = sum of softmax(logits[r])[t] over the tokens t of group g, with the gradient written out:
    d f_g / d logits = p * (1[t in g] - f_g), so a backward pass per group costs one pass over the vocabulary."""

    @staticmethod
    def forward(ctx, logits, tokens, group, n_groups):
        probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(-1)
        out = probs.new_zeros(probs.shape[0], n_groups).index_add_(1, group, probs[:, tokens])
        ctx.save_for_backward(probs, out, tokens, group)
        ctx.dtype = logits.dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        probs, out, tokens, group = ctx.saved_tensors
        grad_logits = probs * -(grad * out).sum(-1, keepdim=True)
        grad_logits.index_add_(1, tokens, probs[:, tokens] * grad[:, group])
        return grad_logits.to(ctx.dtype), None, None, None


def label_objective(token_groups: Sequence[Sequence[int]]) -> Objective:
    """f with one column per token group: the summed next-token probabilities of the group's tokens (e.g.
    [[A, a], [B, b]] gives the paper's f(T|t) and f(T|f) when A is the correct label)."""
    tokens = torch.tensor([t for g in token_groups for t in g])
    group = torch.tensor([i for i, g in enumerate(token_groups) for _ in g])

    def objective(logits: torch.Tensor) -> torch.Tensor:
        return _GroupProbabilities.apply(logits, tokens.to(logits.device), group.to(logits.device), len(token_groups))
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


def check_arguments(sites: Sequence[Site], shape: ModelShape, steps: int, positions: str) -> None:
    for kind, layer in sites:
        if kind not in ("mlp", "attn") or not 0 <= layer < shape.n_layers:
            raise UserError(f"site {(kind, layer)}: expected ('mlp' or 'attn', a layer below {shape.n_layers})")
    if steps < 1:
        raise UserError(f"steps: expected an integer >= 1, got {steps}")
    if positions not in POSITIONS:
        raise UserError(f"positions: expected one of {', '.join(POSITIONS)}, got {positions!r}")


def _scale_rows(x: torch.Tensor, factor: torch.Tensor, row_dim: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[row_dim] = -1
    return x * factor.to(x).view(shape)


class Rows:
    """A way to lay out R independent copies of one prompt for one forward pass, each with its own scaling.

    ``TokenCopies``: copies of the last token in one sequence over the prompt's key/value cache (``"last"``);
    ``PromptCopies``: batch rows holding the whole prompt (either policy)."""

    tokens_per_row: int
    row_dim: int  # the dimension of a site's activation [B, P, width] that indexes copies
    policy: str  # the position policy the scaling interventions use

    def batch(self, rows: int) -> Batch:
        raise NotImplementedError

    def next_logits(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """[R, vocab] logits after each copy."""
        raise NotImplementedError

    def per_row(self, grad: torch.Tensor) -> torch.Tensor:
        """A site's gradient [..., B, P, width] as [..., R, P', width] (P' = positions of one copy)."""
        raise NotImplementedError

    def unedited(self, model, objective: Objective, sites: Sequence[Site]) -> tuple[torch.Tensor, dict[Site, torch.Tensor]]:
        """f of the unedited prompt [T] and each site's activation [P', width] at the scaled positions."""
        raise NotImplementedError

    def scaling(self, sites: Sequence[Site], row_site: torch.Tensor, alpha: torch.Tensor) -> list[Intervention]:
        """Per site in ``row_site``: multiply it by ``alpha`` in the copies that belong to it, else by 1."""
        out = []
        for i in sorted(set(row_site.tolist()) - {UNEDITED}):
            factor = torch.where(row_site == i, alpha, torch.ones_like(alpha))
            out.append(Intervention(sites[i], self.policy, lambda x, f=factor: _scale_rows(x, f, self.row_dim),
                                    f"scale {sites[i][0]}:{sites[i][1]} per copy"))
        return out


class TokenCopies(Rows):
    tokens_per_row, row_dim, policy = 1, 1, "prompt"

    def __init__(self, model, prompt: Batch):
        ids = prompt.input_ids
        self.dtype = model.dtype  # of the additive attention mask
        self.cache = model.prefill(ids[:, :-1], prompt.attention_mask[:, :-1])
        self.prompt = prompt
        self.last = ids[:, -1:]
        self.position = prompt.position_ids[:, -1:]
        self.prefix = ids.shape[1] - 1

    @torch.no_grad()
    def unedited(self, model, objective, sites):
        """The last token alone over the cache (ordinary incremental decoding)."""
        p = self.prompt
        batch = Batch(self.last, p.attention_mask, self.position, p.prompt_mask[:, -1:], p.continuation_mask[:, -1:],
                      copy.deepcopy(self.cache))
        out = model.run(batch, capture=sites)
        self.last_logits = out.logits[:, -1]
        return objective(self.last_logits).float()[0].cpu(), {s: out.activations[s][0].float() for s in sites}

    def batch(self, rows: int) -> Batch:
        mask = torch.full((1, 1, rows, self.prefix + rows), torch.finfo(self.dtype).min, dtype=self.dtype, device=self.last.device)
        mask[..., : self.prefix] = 0  # every copy sees the prompt ...
        mask[0, 0, torch.arange(rows), self.prefix + torch.arange(rows)] = 0  # ... and itself, no other copy
        ones = torch.ones(1, rows, dtype=torch.bool, device=self.last.device)
        return Batch(self.last.repeat(1, rows), mask, self.position.repeat(1, rows), ones, ~ones,
                     copy.deepcopy(self.cache))  # a forward pass appends to the cache

    def next_logits(self, logits, batch):
        return logits.flatten(0, 1)  # [1, R, vocab] as [R, vocab]: a view, free in the backward pass too

    @torch.no_grad()
    def verified(self, model) -> bool:
        """Self-checks "prefill" (the last token over the cache vs a whole-prompt pass) and "token-copies" (two
        unedited copies vs the last token over the cache: fails when a model ignores the 4D mask or limits
        attention, e.g. a sliding window shorter than the prompt). Call after :meth:`unedited`."""
        limit = tolerance(model.dtype)
        whole = model.run(self.prompt).logits[:, -1]
        if not model.checks.record("prefill", logprob_difference(self.last_logits, whole), limit):
            return False
        batch = self.batch(2)
        try:
            gap = logprob_difference(self.next_logits(model.run(batch).logits, batch), self.last_logits.expand(2, -1))
        except RuntimeError:  # the model rejects copies of the last token in one sequence
            gap = math.inf
        return model.checks.record("token-copies", gap, limit)

    def per_row(self, grad):
        return grad.select(-3, 0).unsqueeze(-2)


class PromptCopies(Rows):
    row_dim = 0

    def __init__(self, prompt: Batch, policy: str):
        self.prompt = prompt
        self.policy = policy
        self.tokens_per_row = prompt.input_ids.shape[1]

    def batch(self, rows: int) -> Batch:
        p = self.prompt
        return Batch(p.input_ids.repeat(rows, 1), p.attention_mask.repeat(rows, 1), p.position_ids.repeat(rows, 1),
                     p.prompt_mask.repeat(rows, 1), p.continuation_mask.repeat(rows, 1))

    def next_logits(self, logits, batch):
        return logits[torch.arange(logits.shape[0], device=logits.device), batch.last_prompt_index]

    def per_row(self, grad):
        return grad

    @torch.no_grad()
    def unedited(self, model, objective, sites):
        out = model.run(self.prompt, capture=sites)
        scaled = self.prompt.position_mask(self.policy)[0, :, None]
        value = objective(self.next_logits(out.logits, self.prompt)).float()[0].cpu()
        return value, {s: (out.activations[s][0] * scaled).float() for s in sites}  # zero where not scaled


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


@dataclass
class EngineInfo:
    layout: str  # "token-copies" or "prompt-copies"
    batch_tokens: int  # the batch size (in tokens) that fit


def integrated_gradients(model, prompt: str, objective: Objective, sites: Sequence[Site], steps: int = 20,
                         positions: str = "last", batch_tokens: int = 128) -> tuple[Attribution, EngineInfo]:
    """IG of every site for one prompt (see the module docstring). The first prompt of a model is also
    attributed by the reference at one site (self-check "ig-reference")."""
    check_arguments(sites, model.shape, steps, positions)
    sites = list(sites)
    full = model.encode([prompt])
    first = not model.checks.ran("ig-reference")
    if positions == "last" and full.input_ids.shape[1] > 1 and all(map(model.checks.usable, FAST_PATHS)):
        copies = TokenCopies(model, full)
        value, x = copies.unedited(model, objective, sites)
        if copies.verified(model):
            result = _attribute(model, copies, objective, sites, steps, x, value, batch_tokens)
            if not first or _matches_reference(model, prompt, objective, sites, steps, positions, result[0]):
                return result
    rows = PromptCopies(full, positions)
    value, x = rows.unedited(model, objective, sites)
    result = _attribute(model, rows, objective, sites, steps, x, value, batch_tokens)
    if first:  # no other layout is left: a mismatch stops the run
        _matches_reference(model, prompt, objective, sites, steps, positions, result[0], fallback=False)
    return result


def _matches_reference(model, prompt: str, objective: Objective, sites: list[Site], steps: int, positions: str,
                       attribution: Attribution, fallback: bool = True) -> bool:
    """Self-check "ig-reference": at the lowest site (the longest backward pass) and the first objective column,
    the attributions (relative to their largest magnitude), f and f at the baseline against
    :func:`reference_integrated_gradients`."""
    site = min(sites, key=lambda s: (s[1], s[0]))
    reference = reference_integrated_gradients(model, prompt, lambda logits: objective(logits)[:, :1], [site], steps, positions)
    exact = reference.attributions[site][0]
    gap = float((attribution.attributions[site][0] - exact).abs().max() / exact.abs().max().clamp_min(1e-30))
    gap = max(gap, float((attribution.value[0] - reference.value[0]).abs()),
              float((attribution.zeroed[site][0] - reference.zeroed[site][0]).abs()))
    return model.checks.record("ig-reference", gap if math.isfinite(gap) else math.inf,
                                 tolerance(model.dtype, factor=10), fallback)


def _attribute(model, rows: Rows, objective: Objective, sites: list[Site], steps: int, x: dict, value: torch.Tensor,
               batch_tokens: int) -> tuple[Attribution, EngineInfo]:
    """The Riemann sum over copies laid out by ``rows``; ``x`` and ``value`` from ``rows.unedited``."""
    def scored(logits, batch):
        return objective(rows.next_logits(logits, batch))

    # one copy per site and step k < m, in layer order, then one unedited copy: step m of every site at once
    by_layer = sorted(range(len(sites)), key=lambda i: (sites[i][1], sites[i][0]))
    plan = [(UNEDITED, steps)] + [(i, k) for i in by_layer for k in range(1, steps)]
    summed: dict[Site, torch.Tensor] = {}

    def gradient_chunk(part):
        row_site = torch.tensor([i for i, _ in part])
        alpha = torch.tensor([k / steps for _, k in part])
        unedited = row_site == UNEDITED
        chunk_sites = sites if unedited.any() else [sites[i] for i in sorted(set(row_site.tolist()))]
        _, grads, _ = model.gradients(rows.batch(len(part)), chunk_sites, scored, rows.scaling(sites, row_site, alpha))
        for s in chunk_sites:
            g = rows.per_row(grads[s])  # [T, R, P', width]
            mine = ((row_site == sites.index(s)) | unedited).to(g.device)
            g = g[:, mine].float().sum(1)
            summed[s] = summed[s] + g if s in summed else g

    per_row = rows.tokens_per_row
    size = run_in_chunks(plan, max(1, batch_tokens // per_row), gradient_chunk)
    zeroed: dict[Site, torch.Tensor] = {}

    @torch.no_grad()
    def zeroed_chunk(part):
        row_site = torch.tensor(part)
        batch = rows.batch(len(part))
        logits = model.run(batch, rows.scaling(sites, row_site, torch.zeros(len(part)))).logits
        for r, v in zip(part, scored(logits, batch).float()):
            zeroed[sites[r]] = v.cpu()

    size = run_in_chunks(list(range(len(sites))), size, zeroed_chunk)
    attributions = {s: (x[s].to(summed[s]) * summed[s] / steps).sum(-2).cpu() for s in sites}
    layout = "token-copies" if isinstance(rows, TokenCopies) else "prompt-copies"
    return Attribution(attributions, value.cpu(), zeroed), EngineInfo(layout, size * per_row)


def reference_integrated_gradients(model, prompt: str, objective: Objective, sites: Sequence[Site],
                                   steps: int = 20, positions: str = "last") -> Attribution:
    """The same quantity computed the straightforward way: for every site, step and objective column, one
    forward and backward pass over the whole prompt with the site scaled by ``interventions.scale``."""
    check_arguments(sites, model.shape, steps, positions)
    shape = model.shape
    batch = model.encode([prompt])
    last = batch.last_prompt_index

    def scored(logits, b):
        return objective(logits[torch.arange(logits.shape[0]), last])

    mask = batch.position_mask(positions)[0, :, None]
    with torch.no_grad():
        out = model.run(batch, capture=sites)
    value = scored(out.logits, batch)[0].float()
    attributions, zeroed = {}, {}
    for site in sites:
        neurons = ComponentSet(site_components(site, shape))
        x = out.activations[site][0].float() * mask
        per_column = []
        for t in range(value.shape[0]):
            total = torch.zeros_like(x)
            for k in range(1, steps + 1):
                scale = interventions.scale(neurons, shape, k / steps, positions)
                _, grads, _ = model.gradients(batch, [site], lambda logits, b: scored(logits, b)[:, t], scale)
                total += grads[site][0].float()
            per_column.append((x * total / steps).sum(0))
        attributions[site] = torch.stack(per_column).cpu()
        with torch.no_grad():
            zeroed[site] = scored(model.run(batch, interventions.zero(neurons, shape, positions)).logits, batch)[0].float().cpu()
    return Attribution(attributions, value.cpu(), zeroed)
