"""nnsight backend: ``nnsight.LanguageModel`` over the Hugging Face model, interventions at the inputs of
the MLP down projection and the attention output projection and at each block's output (the residual stream),
all sites inside one trace."""
from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import torch
from pydantic import Field

from loctest.architectures import architecture_of, shape_of
from loctest.backend import Backend, BackendConfig, Batch, RunOutput, apply_interventions, cache_arguments
from loctest.components import ModelShape
from loctest.errors import UserError
from loctest.models import EMBEDDED_MODEL, TINY_PREFIX
from loctest.interventions import Intervention, Site, group_by_site


EXECUTION_ORDER = ("attn", "mlp", "resid")


class NNsightConfig(BackendConfig):
    remote: bool = Field(False, description="Run on NDIF (nnsight remote execution); needs an NDIF API key. "
                                            "Only saved values come back; gradients must be enabled remotely.")


class NNsightBackend(Backend):
    name = "nnsight"
    description = "nnsight LanguageModel over the Hugging Face model (local, or remote on NDIF)."
    Config = NNsightConfig

    def __init__(self, model, config=None):
        super().__init__(model, config)
        from nnsight import LanguageModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nnsight 0.8 deprecates LanguageModel in name only
            if self.config.remote:
                if model.name == EMBEDDED_MODEL or model.name.startswith(TINY_PREFIX):
                    raise UserError(f"remote execution needs a Hugging Face model id that NDIF serves, not {model.name!r}")
                # NDIF holds the weights: build the model on the meta device from its Hugging Face id
                self.lm = LanguageModel(model.name, tokenizer=model.tokenizer)
                self._module = self.lm._module
                self.architecture = architecture_of(self._module)
                self._shape = shape_of(self._module, self.architecture)
            else:
                self._module = model.instantiate()
                self.lm = LanguageModel(self._module, tokenizer=model.tokenizer)
                self.architecture = model.architecture
                self._shape = model.shape

    @property
    def shape(self) -> ModelShape:
        return self._shape

    def loaded_module(self) -> torch.nn.Module:
        return self._module

    def site_name(self, site: Site) -> str:
        """The input of the layer's MLP down projection or attention output projection, or the output of the
        block (residual stream), as an nnsight path of this architecture: ``model.layers[3].mlp.down_proj.input``,
        ``transformer.h[3].attn.c_proj.input``, ``model.layers[3].output``."""
        path = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", self.architecture.layer_module_path(site))
        return path + (".output" if site[0] == "resid" else ".input")

    def _envoy(self, site: Site):
        envoy = self.lm
        for part in self.architecture.layer_module_path(site).split("."):
            envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
        return envoy

    @staticmethod
    def _read(envoy, site: Site):
        if site[0] != "resid":
            return envoy.input
        out = envoy.output
        return out[0] if isinstance(out, tuple) else out  # some blocks return (hidden states, ...)

    @staticmethod
    def _write(envoy, site: Site, value) -> None:
        if site[0] != "resid":
            envoy.input = value
        else:
            out = envoy.output
            envoy.output = (value, *out[1:]) if isinstance(out, tuple) else value

    def run(self, batch: Batch, interventions: Sequence[Intervention] = (), capture: Sequence[Site] = (),
            grad: bool = False) -> RunOutput:
        if grad and self.config.remote:
            raise UserError("gradients are not available through the remote nnsight backend")
        edits = group_by_site(interventions)
        # nnsight requires modules to be visited in execution order: attention, MLP, then the block's output
        sites = sorted(set(edits) | set(capture), key=lambda s: (s[1], EXECUTION_ORDER.index(s[0])))
        saved: dict[Site, torch.Tensor] = {}
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        past = cache_arguments(self._module, batch.past_key_values)
        with torch.set_grad_enabled(grad):
            with self.lm.trace(inputs, position_ids=batch.position_ids, remote=self.config.remote, **past):
                for site in sites:
                    envoy = self._envoy(site)
                    activation = self._read(envoy, site)
                    if site in edits:
                        activation = apply_interventions(activation, edits[site], batch)
                        self._write(envoy, site, activation)
                    if site in capture:
                        saved[site] = activation.save()
                logits = self.lm.output.logits.save()
        return RunOutput(logits, saved)
