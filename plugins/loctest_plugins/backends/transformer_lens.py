"""TransformerLens 4.x backend: a ``TransformerBridge`` over the Hugging Face model, hooks at
``blocks.L.mlp.hook_post`` (MLP neurons), ``blocks.L.attn.hook_z`` (attention heads and their neurons) and
``blocks.L.hook_resid_post`` (the residual stream)."""
from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence

import torch

from loctest.backend import Backend, Batch, RunOutput, apply_interventions, cache_arguments
from loctest.interventions import Intervention, Site, group_by_site


def _cache_under_both_names(module, args, kwargs):
    """transformers >= 5.24 hands attention its key/value cache as ``cache``; TransformerLens 4.3's attention
    bridges read only ``past_key_values`` (else they attend without the prefix). Pass it under both names."""
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        kwargs["past_key_values"] = kwargs["cache"]
    return args, kwargs


class TransformerLensBackend(Backend):
    name = "transformer-lens"
    description = "TransformerLens 4.x TransformerBridge over the Hugging Face model."

    def __init__(self, model, config=None):
        super().__init__(model, config)
        from transformer_lens.model_bridge import TransformerBridge
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

        self._module = model.instantiate()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("transformer_lens").setLevel(logging.ERROR)
            self.bridge = TransformerBridge.boot_transformers(
                model.name, hf_model=self._module, tokenizer=copy.deepcopy(model.tokenizer))
        for module in self._module.modules():
            if isinstance(module, AttentionBridge):
                module.register_forward_pre_hook(_cache_under_both_names, with_kwargs=True)

    def loaded_module(self) -> torch.nn.Module:
        return self._module

    def site_name(self, site: Site) -> str:
        """The bridge's hook: ``blocks.L.mlp.hook_post`` [B, P, d_mlp], ``blocks.L.attn.hook_z`` [B, P, H, Dh] or
        ``blocks.L.hook_resid_post`` [B, P, d_model] (the same names on every architecture the bridge supports)."""
        kind, layer = site
        return f"blocks.{layer}." + {"mlp": "mlp.hook_post", "attn": "attn.hook_z", "resid": "hook_resid_post"}[kind]

    def run(self, batch: Batch, interventions: Sequence[Intervention] = (), capture: Sequence[Site] = (),
            grad: bool = False) -> RunOutput:
        edits = group_by_site(interventions)
        captured: dict[Site, torch.Tensor] = {}

        def make_hook(site: Site):
            def hook(activation, hook):
                flat = activation.reshape(*activation.shape[:2], -1)  # attention: [B, P, H, Dh] -> [B, P, H*Dh]
                flat = apply_interventions(flat, edits.get(site, ()), batch)
                if site in capture:
                    captured[site] = flat
                return flat.reshape(activation.shape)
            return hook

        fwd_hooks = [(self.site_name(site), make_hook(site)) for site in sorted(set(edits) | set(capture))]
        with torch.set_grad_enabled(grad), self.bridge.hooks(fwd_hooks=fwd_hooks):
            logits = self.bridge(batch.input_ids, attention_mask=batch.attention_mask,
                                 position_ids=batch.position_ids, return_type="logits",
                                 **cache_arguments(self._module, batch.past_key_values))
        return RunOutput(logits, captured)
