"""The activation-access interface every backend implements.

A backend wraps one loaded model and owns how that model's internals are reached. Subclasses implement
:meth:`Backend.run` (one forward pass over a left-padded :class:`Batch` with interventions applied, optionally
capturing site activations, kept in the autograd graph when ``grad=True``), :meth:`Backend.site_name` (the
backend's own name of a site, for this architecture) and :meth:`Backend.loaded_module`. Gradients and the
key/value prefill are built on them here. Plugins never call a backend directly: they use
:class:`loctest.model.Model` (``context.model``), which builds every derived operation on these primitives.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from pydantic import Field

from .base import Plugin, PluginConfig
from .components import ModelShape
from .interventions import Intervention, Site
from .selfcheck import SelfChecks

if TYPE_CHECKING:
    from .models import LoadedModel


IDENTITY_PROBE = "The quick brown fox jumps over the lazy dog. Question: is the sky green? Answer:"


@dataclass
class Batch:
    """Left-padded token ids: ``[pad..., prompt..., continuation...]`` per row."""

    input_ids: torch.Tensor  # [B, P]
    attention_mask: torch.Tensor  # [B, P], 0 on padding
    position_ids: torch.Tensor  # [B, P], counted from each row's first real token
    prompt_mask: torch.Tensor  # [B, P] bool, prompt tokens
    continuation_mask: torch.Tensor  # [B, P] bool, tokens after the prompt
    past_key_values: object | None = None  # a KV cache of earlier tokens (attention_mask then covers them too)

    @classmethod
    def from_ids(cls, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]] | None,
                 pad_id: int, device: torch.device | str = "cpu") -> "Batch":
        continuations = continuations or [[] for _ in prompts]
        width = max(len(p) + len(c) for p, c in zip(prompts, continuations))
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        kind = torch.zeros((len(prompts), width), dtype=torch.long)  # 0 pad, 1 prompt, 2 continuation
        for row, (p, c) in enumerate(zip(prompts, continuations)):
            start = width - len(p) - len(c)
            ids[row, start:] = torch.tensor(list(p) + list(c), dtype=torch.long)
            kind[row, start:start + len(p)] = 1
            kind[row, start + len(p):] = 2
        mask = (kind > 0).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return cls(ids.to(device), mask.to(device), positions.to(device), (kind == 1).to(device), (kind == 2).to(device))

    @property
    def last_prompt_index(self) -> torch.Tensor:
        """[B] index of each row's last prompt token."""
        return self.input_ids.shape[1] - 1 - self.continuation_mask.sum(-1)

    def position_mask(self, policy: str) -> torch.Tensor:
        """[B, P] bool mask of the positions a policy selects."""
        if policy == "prompt":
            return self.prompt_mask
        if policy == "continuation":
            return self.continuation_mask
        if policy == "all":
            return self.prompt_mask | self.continuation_mask
        mask = torch.zeros_like(self.prompt_mask)
        mask[torch.arange(mask.shape[0], device=mask.device), self.last_prompt_index] = True
        return mask & self.prompt_mask  # a step without prompt tokens (cached generation) has no "last"


@dataclass
class RunOutput:
    logits: torch.Tensor  # [B, P, vocab]
    activations: dict[Site, torch.Tensor]  # [B, P, width], after interventions


def apply_interventions(activation: torch.Tensor, interventions: Sequence[Intervention], batch: Batch) -> torch.Tensor:
    """Apply a site's interventions, in order, at the positions each selects. ``activation`` is [B, P, width]."""
    for iv in interventions:
        where = batch.position_mask(iv.positions).unsqueeze(-1)
        edited = iv.transform(activation, batch) if iv.with_batch else iv.transform(activation)
        activation = torch.where(where, edited, activation)
    return activation


def continuation_logprob_sums(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """[B] sum of the log-probabilities of each row's continuation tokens (differentiable: no grad mode is set)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    # the token at position p is predicted at position p - 1
    predicted = logprobs[:, :-1].gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return (predicted * batch.continuation_mask[:, 1:]).sum(-1)


@functools.cache
def _cache_keyword(forward_owner: type) -> str:
    return "cache" if "cache" in inspect.signature(forward_owner.forward).parameters else "past_key_values"


def cache_arguments(module: torch.nn.Module, cache) -> dict:
    """Keyword arguments that hand a Hugging Face model a key/value cache to extend in place (``cache`` from
    transformers 5.24 on, ``past_key_values`` before); none when ``cache`` is None."""
    return {} if cache is None else {_cache_keyword(type(module)): cache, "use_cache": True}


def returned_cache(output):
    """The key/value cache in a Hugging Face model output, under either name."""
    return output["cache"] if "cache" in output else output.past_key_values


class BackendConfig(PluginConfig):
    batch_size: int = Field(8, ge=1, description="Prompts per forward pass.")


class Backend(Plugin):
    """Activation access over one model. Subclasses implement :meth:`run`."""

    Config = BackendConfig

    def __init__(self, model: LoadedModel, config: PluginConfig | dict | None = None):
        super().__init__(config)
        self.loaded = model
        self.checks = SelfChecks()

    @property
    def shape(self) -> ModelShape:
        return self.loaded.shape

    # -- the one primitive ---------------------------------------------------------------------------
    def run(self, batch: Batch, interventions: Sequence[Intervention] = (), capture: Sequence[Site] = (),
            grad: bool = False) -> RunOutput:
        """One forward pass. Interventions apply at their sites and positions; ``capture`` sites come back
        [B, P, width] after interventions (in the autograd graph when ``grad``). Hooks never outlive the call."""
        raise NotImplementedError

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """The key/value cache of ``input_ids`` from an unedited forward pass, to run later tokens on
        (``Batch.past_key_values``) without recomputing the prefix. It relies on upstream internals: a caller
        checks what it computes over the cache against a whole-prompt pass (``self.checks``, check "prefill")."""
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return returned_cache(self.loaded_module()(input_ids=input_ids, attention_mask=attention_mask,
                                                   position_ids=positions, use_cache=True))

    def gradients(self, batch: Batch, sites: Sequence[Site], objective: Callable[[torch.Tensor, Batch], torch.Tensor],
                  interventions: Sequence[Intervention] = ()) -> tuple[dict[Site, torch.Tensor], dict[Site, torch.Tensor], torch.Tensor]:
        """Activations, d objective / d activation at ``sites`` ([B, P, width] each), and the objective [B].

        ``objective(logits, batch)`` returns one value per row; rows are independent so the gradient of the
        sum is each row's own gradient. Only activation gradients are computed, never weight gradients.
        An objective with T columns ([B, T]) gives gradients [T, B, P, width]: one forward pass, then one
        backward pass per column."""
        with torch.enable_grad(), self._inputs_require_grad():
            out = self.run(batch, interventions, capture=sites, grad=True)
            value = objective(out.logits, batch)
            tensors = [out.activations[s] for s in sites]
            if value.dim() == 1:
                grads = torch.autograd.grad(value.sum(), tensors)
            else:
                columns = [torch.autograd.grad(value[:, t].sum(), tensors, retain_graph=t + 1 < value.shape[1])
                           for t in range(value.shape[1])]
                grads = [torch.stack(per_site) for per_site in zip(*columns)]
        acts = {s: out.activations[s].detach() for s in sites}
        return acts, {s: g.detach() for s, g in zip(sites, grads)}, value.detach()

    @contextmanager
    def _inputs_require_grad(self):
        """Make the input embeddings require grad so every activation joins the autograd graph."""
        embedding = self.loaded_module().get_input_embeddings()
        handle = embedding.register_forward_hook(lambda module, args, output: output.requires_grad_(True))
        try:
            yield
        finally:
            handle.remove()

    def loaded_module(self) -> torch.nn.Module:
        """The Hugging Face model this backend runs (for the backend's own use; plugins never need it)."""
        raise NotImplementedError

    def site_name(self, site: Site) -> str:
        """This backend's name of a site's activation for the model at hand (a TransformerLens hook name, an
        nnsight module path, ...), as written into ``components/ARM.json``."""
        raise NotImplementedError

    def separate_copy(self, sites: Sequence[Site]) -> tuple[torch.nn.Module, dict[Site, str]]:
        """A Hugging Face model object of its own (never the one this backend runs) and, per site, the path of
        the projection whose input the site is: for training that changes weights (peft)."""
        paths = {site: self.loaded.architecture.layer_module_path(site) for site in sites}
        return self.loaded.instantiate(), paths
